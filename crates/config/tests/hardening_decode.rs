//! Decoding inputs found by the config API hardening tests (`crates/proxy/tests/hardening_config_api.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tunnelgate_config::Config;

/// A derived struct also accepts a JSON array (fields by position): `[]` decoded as an empty version-0
/// document, which `PUT /config` applies, replacing every route with none.
#[test]
fn a_document_that_is_not_an_object_is_refused() {
    for body in [&b"[]"[..], b" [8, []]", b"null", b"8", b"\"config\"", b"true"] {
        let err = Config::from_json_slice(body).expect_err(&String::from_utf8_lossy(body));
        assert!(err.message.starts_with("invalid JSON:"), "{}", err.message);
        assert_eq!(err.path, None);
    }
    assert!(Config::from_json_slice(b" \n{\"version\": 1}").is_ok());
}

/// serde_json skips an unknown field's string without checking its UTF-8.
#[test]
fn invalid_utf8_in_an_ignored_field_is_refused() {
    let err = Config::from_json_slice(b"{\"version\": 8, \"note\": \"\xc3\x28\"}").unwrap_err();
    assert_eq!(err.message, "invalid JSON: not valid UTF-8 at byte 24");
    assert!(Config::from_json_slice("{\"version\": 8, \"note\": \"ünïcode ✓\"}".as_bytes()).is_ok());
}
