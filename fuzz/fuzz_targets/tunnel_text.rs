//! Text decoders of the tunnel: `TUNNEL_TOKEN` (operator input) and the HTTP/2 transport's serialised
//! response headers (`cf-cloudflared-response-headers`, read by the edge side).
//!
//! Properties, beyond "nothing panics": a parsed token encodes and parses back to itself, and an error never
//! contains the secret (`s`); decoded headers serialise and decode back to the same headers, apart from
//! the names the serialiser deliberately leaves out.
#![no_main]

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tunnelgate_tunnel::{TokenError, TunnelToken};
use tunnelgate_tunnel::serialized_headers;

fn excluded(name: &str) -> bool {
    name.starts_with("cf-int-") || name.starts_with("cf-cloudflared-") || name.starts_with("cf-proxy-")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match TunnelToken::parse(text) {
        Ok(token) => {
            let back = TunnelToken::parse(&token.encode()).expect("an encoded token parses");
            assert!(back == token, "token round trip changed it");
        }
        // Only the JSON error carries text from the input; it must not carry the secret.
        Err(TokenError::Json(message)) => {
            let secret = STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
                .and_then(|v| v.get("s").and_then(|s| s.as_str()).map(str::to_owned));
            if let Some(secret) = secret.filter(|s| s.len() >= 8) {
                assert!(!message.contains(&secret), "token error echoes the secret: {message}");
            }
        }
        Err(_) => {}
    }

    if let Ok(headers) = serialized_headers::deserialize(text) {
        let mut expected = HeaderMap::new();
        for (name, value) in &headers {
            if !excluded(name.as_str()) {
                expected.append(name.clone(), value.clone());
            }
        }
        let back = serialized_headers::deserialize(&serialized_headers::serialize(&headers))
            .expect("serialised headers decode");
        assert_eq!(back, expected, "serialised header round trip changed the headers");
    }
});
