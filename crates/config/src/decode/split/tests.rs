use serde_json::{Value, json};

use super::*;

/// The one-thread decode the split one must agree with.
fn serial(text: &str) -> Result<Config, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let config = Config::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(config)
}

/// A rule of one of several shapes, like a controller emits: hostnames or none, 1–3 matches, filters, one or
/// two backends, timeouts. `note` goes into a header value, where a test can plant text that looks like a rule
/// boundary.
fn rule(i: usize, note: &str) -> Value {
    let mut rule = json!({
        "matches": [{"path": {"type": "PathPrefix", "value": format!("/api/{i}")}}],
        "backends": [{"url": format!("http://svc-{}.ns.svc:80", i % 7), "weight": 1}],
    });
    if !i.is_multiple_of(5) {
        rule["hostnames"] = json!([format!("app-{i}.example.com")]);
    }
    if i.is_multiple_of(3) {
        rule["matches"]
            .as_array_mut()
            .unwrap()
            .push(json!({"path": {"type": "Exact", "value": "/x"}, "method": "GET",
                         "headers": [{"type": "Exact", "name": "x-n", "value": note}]}));
        rule["backends"]
            .as_array_mut()
            .unwrap()
            .push(json!({"url": "http://other.ns.svc:8080", "weight": 9}));
    }
    if i.is_multiple_of(4) {
        rule["filters"] = json!([{"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x-r", "value": note}], "remove": ["x-d"]}}]);
    }
    if i.is_multiple_of(6) {
        rule["timeouts"] = json!({"request": "30s", "backend": "10s"});
    }
    rule
}

fn document(rules: usize, note: &str) -> Value {
    json!({
        "version": 42,
        "rules": (0..rules).map(|i| rule(i, note)).collect::<Vec<_>>(),
        "hasGrpcRoute": true,
    })
}

#[test]
fn split_decode_equals_the_one_thread_decode() {
    let doc = document(400, "plain");
    for text in [doc.to_string(), serde_json::to_string_pretty(&doc).unwrap()] {
        let want = serial(&text).unwrap();
        assert_eq!(want.rules.len(), 400);
        for parts in 2..=4 {
            let got = decode_in_parts(&text, parts).expect("a document of rules splits");
            assert_eq!(got, want, "{parts} parts");
            assert_eq!(got.rules.capacity(), got.rules.len());
        }
    }
}

#[test]
fn a_part_sizes_its_array_once_from_its_first_rules() {
    let text = document(400, "plain").to_string();
    let open = rules_array_start(&text).unwrap();
    let part = decode_part(&text, open + 1, &[], true, text.len() - open);
    assert_eq!(part.rules.len(), 400);
    // Room for all 400 after the sample of 32, without doubling past the estimate's eighth of slack.
    assert!(part.rules.capacity() >= 400, "{}", part.rules.capacity());
    assert!(part.rules.capacity() <= 400 * 5 / 4, "{}", part.rules.capacity());
}

#[test]
fn the_size_estimate_is_bounded_by_the_smallest_rule() {
    // 32 rules in 3,200 bytes: 100 bytes each, so 10,000 bytes hold 100, plus an eighth and 8.
    assert_eq!(expected_rules(10_000, 3_200, 32), 120);
    // First rules of 2 bytes would ask for 5,000; a rule is taken to have at least 16 bytes.
    assert_eq!(expected_rules(10_000, 64, 32), 625);
    assert_eq!(expected_rules(0, 0, 0), 0);
}

#[test]
fn every_cut_is_a_rule_boundary_the_first_part_reaches() {
    let text = document(300, "plain").to_string();
    let open = rules_array_start(&text).unwrap();
    let cuts = guess_cuts(text.as_bytes(), open, 4);
    assert_eq!(cuts.len(), 3);
    // Part 0 decodes from `[` and must land exactly on the first cut.
    let first = decode_part(&text, open + 1, &cuts, true, text.len());
    assert!(matches!(first.stop, Stop::Cut(0)));
    // The parts together hold every rule once, in order.
    let mut rules = first.rules;
    for (i, &cut) in cuts.iter().enumerate() {
        let part = decode_part(&text, cut + 1, &cuts[i + 1..], false, text.len());
        let last = i + 1 == cuts.len();
        match part.stop {
            Stop::Cut(0) => assert!(!last),
            Stop::End(end) => assert!(last && end == text.rfind(']').unwrap() + 1),
            _ => panic!("part {} stopped elsewhere", i + 1),
        }
        rules.extend(part.rules);
    }
    assert_eq!(rules, serial(&text).unwrap().rules);
}

#[test]
fn a_wrong_guess_is_skipped_over() {
    // Inside a string the look-alike cannot occur (its quote would be escaped), but an unknown field may hold
    // objects that start with a rule's key. Every rule here carries one, so guessed cuts fall inside rules; the
    // part before such a cut must go on past it and the result must not change.
    let mut doc = document(400, "n");
    for rule in doc["rules"].as_array_mut().unwrap() {
        rule["zz"] = json!([{"a": 1}, {"hostnames": ["evil.example.com"]}, {"backends": []}]);
    }
    let text = doc.to_string();
    let open = rules_array_start(&text).unwrap();
    let mut wrong = 0;
    for parts in 2..=4 {
        for cut in guess_cuts(text.as_bytes(), open, parts) {
            // A cut is a rule boundary exactly when a decode from `[` lands on it.
            if !matches!(
                decode_part(&text, open + 1, &[cut], true, text.len()).stop,
                Stop::Cut(0)
            ) {
                wrong += 1;
            }
        }
    }
    assert!(wrong > 0, "the test must plant at least one wrong guess");
    let want = serial(&text).unwrap();
    for parts in 2..=4 {
        assert_eq!(decode_in_parts(&text, parts).unwrap(), want, "{parts} parts");
    }
}

#[test]
fn the_rules_key_anywhere_in_the_object() {
    let rules: Vec<Value> = (0..200).map(|i| rule(i, "n")).collect();
    let big_unknown: Vec<Value> = (0..50).map(|i| json!({"a": [i, {"b": "}],{"}]})).collect();
    let text = json!({"zzz": big_unknown, "hasGrpcRoute": false, "rules": rules, "version": 7}).to_string();
    let want = serial(&text).unwrap();
    assert_eq!(decode_in_parts(&text, 3).unwrap(), want);
    assert_eq!(want.version, 7);
}

#[test]
fn documents_that_do_not_split_are_left_to_the_one_thread_decode() {
    let one = document(1, "n").to_string();
    let cases = [
        // No rules array, or not one that can be split.
        r#"{"version": 1}"#.to_owned(),
        r#"{"version": 1, "rules": null}"#.to_owned(),
        r#"{"version": 1, "rules": []}"#.to_owned(),
        // One rule: no boundary to cut at.
        one,
        // A key spelled with an escape is not recognised.
        document(50, "n")
            .to_string()
            .replacen("\"rules\"", "\"rul\\u0065s\"", 1),
    ];
    for text in cases {
        assert!(decode_in_parts(&text, 2).is_none(), "{text}");
    }
    assert!(decode_in_parts(&document(200, "n").to_string(), 1).is_none());
}

#[test]
fn invalid_documents_are_refused_with_the_one_thread_error() {
    let good = document(300, "n").to_string();
    let tail_rule = good.rfind("\"weight\":1").unwrap();
    let mut bad_type = good.clone();
    bad_type.replace_range(tail_rule..tail_rule + 10, "\"weight\":\"1\"");
    let trailing_comma = good.replacen("]}]", "]},]", 1);
    let duplicate = good.replacen("\"version\":42", "\"version\":42,\"rules\":[]", 1);
    let trailing_bytes = format!("{good} x");
    let truncated = good[..good.len() - 10].to_owned();
    for text in [bad_type, trailing_comma, duplicate, trailing_bytes, truncated] {
        assert!(serial(&text).is_err());
        assert!(decode_in_parts(&text, 3).is_none());
        // The public decode reports the error (with its path) as before.
        let err = Config::from_json_slice(text.as_bytes()).unwrap_err();
        assert!(err.message.starts_with("invalid JSON: "), "{}", err.message);
    }
}

#[test]
fn a_large_document_takes_the_split_path_through_the_public_decode() {
    let doc = document(2500, "n");
    let text = doc.to_string();
    assert!(text.len() >= MIN_PARALLEL_BYTES, "{} bytes", text.len());
    assert_eq!(
        Config::from_json_slice(text.as_bytes()).unwrap(),
        serial(&text).unwrap()
    );
    let bad = text.replacen("\"weight\":9", "\"weight\":null9", 1);
    let err = Config::from_json_slice(bad.as_bytes()).unwrap_err();
    assert!(
        err.path.as_deref().is_some_and(|p| p.starts_with("rules[")),
        "{err:?}"
    );
}
