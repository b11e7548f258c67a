use super::*;

const SPEC_EXAMPLE: &str = include_str!("../testdata/spec-example.json");

#[test]
fn spec_example_document_decodes() {
    let c = Config::from_json_slice(SPEC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(c.version, 1767225600123);
    assert_eq!(c.rules.len(), 9);
    let r0 = &c.rules[0];
    assert_eq!(r0.matches[0].headers[1].kind, ValueMatchType::RegularExpression);
    assert_eq!(r0.filters[2].kind, FilterType::UrlRewrite);
    assert_eq!(
        r0.filters[2]
            .url_rewrite
            .as_ref()
            .unwrap()
            .path
            .as_ref()
            .unwrap()
            .replace_prefix_match
            .as_deref(),
        Some("/v2")
    );
    assert_eq!(r0.timeouts.request, Some(GoDuration::parse("10s").unwrap()));
    assert_eq!(r0.backends[2].unavailable_status, 500);
    assert_eq!(
        c.rules[1].filters[0]
            .request_redirect
            .as_ref()
            .unwrap()
            .status_code,
        308
    );
    assert_eq!(c.rules[5].filters[0].cors.as_ref().unwrap().max_age, 600);
}

#[test]
fn absent_null_and_zero_values_are_the_same() {
    let a = Config::from_json_slice(br#"{"version":1,"rules":[{"backends":[]}]}"#).unwrap();
    let b = Config::from_json_slice(
        br#"{"version":1,"rules":[{"hostnames":null,"matches":null,"filters":null,"backends":null,
            "unavailableStatus":0,"timeouts":null}],"hasGrpcRoute":null}"#,
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn unknown_fields_are_ignored_at_every_level() {
    let c = Config::from_json_slice(
        br#"{"version":2,"future":1,"rules":[{"x":{},"backends":[{"url":"http://a","weight":1,"zone":"z"}]}]}"#,
    )
    .unwrap();
    assert_eq!(c.rules[0].backends[0].url, "http://a");
}

#[test]
fn type_error_carries_the_json_path() {
    let e = Config::from_json_slice(br#"{"rules":[{},{"backends":[{"url":"http://a","weight":"x"}]}]}"#)
        .unwrap_err();
    assert_eq!(e.path.as_deref(), Some("rules[1].backends[0].weight"));
    assert!(e.message.starts_with("invalid JSON:"), "{}", e.message);
}

#[test]
fn malformed_duration_is_a_type_error_with_its_path() {
    let e =
        Config::from_json_slice(br#"{"rules":[{},{},{"timeouts":{"request":"10 parsecs"}}]}"#).unwrap_err();
    assert_eq!(e.path.as_deref(), Some("rules[2].timeouts.request"));
}

#[test]
fn unknown_enum_value_is_rejected_with_path() {
    let e = Config::from_json_slice(br#"{"rules":[{"matches":[{"path":{"type":"Glob","value":"/"}}]}]}"#)
        .unwrap_err();
    assert_eq!(e.path.as_deref(), Some("rules[0].matches[0].path.type"));
}

#[test]
fn trailing_whitespace_is_allowed_but_trailing_bytes_are_not() {
    assert!(Config::from_json_slice(b"{\"version\":1}\n \t").is_ok());
    assert!(Config::from_json_slice(b"{\"version\":1} x").is_err());
}

#[test]
fn duplicate_keys_are_rejected() {
    assert!(Config::from_json_slice(br#"{"version":1,"version":2}"#).is_err());
}

#[test]
fn invalid_utf8_is_rejected() {
    assert!(Config::from_json_slice(b"{\"rules\":[{\"hostnames\":[\"\xff\"]}]}").is_err());
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    // In an ignored field the nesting is skipped without recursion; where a value is expected it is an error.
    let ignored = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Config::from_json_slice(ignored.as_bytes()).is_ok());
    let nested = format!("{{\"rules\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Config::from_json_slice(nested.as_bytes()).is_err());
}

#[test]
fn yaml_document_decodes_to_the_same_config() {
    let yaml = r#"
version: 7
rules:
  - hostnames: ["a.example.com"]
    matches:
      - path: {type: PathPrefix, value: /api}
        method: GET
    backends:
      - url: http://127.0.0.1:9000
        weight: 1
    timeouts: {request: 1m30s}
"#;
    let c = Config::from_json_or_yaml(yaml.as_bytes()).unwrap();
    let json = Config::from_json_or_yaml(&c.to_json_vec()).unwrap();
    assert_eq!(c, json);
    assert_eq!(
        c.rules[0].timeouts.request.unwrap().to_std(),
        Some(std::time::Duration::from_secs(90))
    );
}

#[test]
fn yaml_error_carries_path() {
    let e = Config::from_yaml_str("rules:\n  - backends:\n      - weight: lots\n").unwrap_err();
    assert_eq!(e.path.as_deref(), Some("rules[0].backends[0].weight"));
}

#[test]
fn serialisation_omits_empty_fields_like_go_omitempty() {
    let c = Config {
        version: 3,
        rules: vec![RouteRule {
            backends: vec![BackendRef {
                url: "http://a:1".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        has_grpc_route: false,
    };
    assert_eq!(
        String::from_utf8(c.to_json_vec()).unwrap(),
        r#"{"version":3,"rules":[{"backends":[{"url":"http://a:1","weight":1}]}]}"#
    );
}

#[test]
fn spec_example_round_trips_through_serialisation() {
    let c = Config::from_json_slice(SPEC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(Config::from_json_slice(&c.to_json_vec()).unwrap(), c);
}

#[test]
fn go_duration_parses_go_syntax() {
    let cases = [
        ("0", 0),
        ("0s", 0),
        ("500ms", 500_000_000),
        ("1m30s", 90_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("2us", 2_000),
        ("2µs", 2_000),
        ("3ns", 3),
        ("-1s", -1_000_000_000),
        ("+1s", 1_000_000_000),
        (".5s", 500_000_000),
        ("1h1m1s1ms1us1ns", 3_661_001_001_001),
    ];
    for (input, nanos) in cases {
        assert_eq!(GoDuration::parse(input).unwrap().as_nanos(), nanos, "{input}");
    }
}

#[test]
fn go_duration_rejects_bad_syntax() {
    for bad in [
        "",
        "s",
        "1",
        "10",
        "1x",
        "1.s.",
        "ms",
        "-",
        "1 s",
        "99999999999999999999h",
        "3000000h",
    ] {
        assert!(GoDuration::parse(bad).is_err(), "{bad:?} should fail");
    }
}

#[test]
fn go_duration_formats_like_go_duration_string() {
    let cases = [
        (0, "0s"),
        (500_000_000, "500ms"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (1_500, "1.5µs"),
        (1_500_000_000, "1.5s"),
        (-2_000_000_000, "-2s"),
        (12, "12ns"),
    ];
    for (nanos, text) in cases {
        assert_eq!(GoDuration::from_nanos(nanos).to_string(), text);
        assert_eq!(GoDuration::parse(text).unwrap().as_nanos(), nanos);
    }
}

#[test]
fn array_field_of_the_wrong_type_is_a_type_error_with_its_path() {
    let e =
        Config::from_json_slice(br#"{"rules":[{"backends":[]},{"hostnames":"a.example.com"}]}"#).unwrap_err();
    assert_eq!(e.path.as_deref(), Some("rules[1].hostnames"));
    assert!(e.message.contains("expected a sequence"), "{}", e.message);
}

#[test]
fn arrays_of_any_length_decode_in_order() {
    let c = Config::from_json_slice(
        br#"{"rules":[{"hostnames":["a"]},{"hostnames":["a","b"]},{"hostnames":["a","b","c","d","e"]},{"hostnames":[]}]}"#,
    )
    .unwrap();
    let lens: Vec<_> = c.rules.iter().map(|r| r.hostnames.join(",")).collect();
    assert_eq!(lens, ["a", "a,b", "a,b,c,d,e", ""]);
}

#[test]
fn decoded_arrays_keep_no_spare_capacity() {
    let c = Config::from_json_slice(
        br#"{"rules":[{"hostnames":["a"],"matches":[{"path":{"type":"Exact","value":"/"}}],
            "backends":[{"url":"http://a","weight":1},{"url":"http://b","weight":1},{"url":"http://c","weight":1}]}]}"#,
    )
    .unwrap();
    let rule = &c.rules[0];
    assert_eq!(c.rules.capacity(), 1);
    assert_eq!(rule.hostnames.capacity(), 1);
    assert_eq!(rule.matches.capacity(), 1);
    assert_eq!(rule.backends.capacity(), 3);
}
