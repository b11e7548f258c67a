use super::*;

use base64::engine::general_purpose::STANDARD;

const CERT_PEM: &str = include_str!("../../testdata/cert.pem");
const KEY_PEM: &str = include_str!("../../testdata/client-key.pem");

fn compile_json(json: &str) -> Result<RouteTable, CompileError> {
    let cfg = config::Config::from_json_slice(json.as_bytes()).unwrap();
    compile(&cfg)
}

/// (path, message) of every error.
fn errors(json: &str) -> Vec<(String, String)> {
    match compile_json(json) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.into_iter().map(|e| (e.path, e.message)).collect(),
    }
}

fn one_error(json: &str) -> (String, String) {
    let mut all = errors(json);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// A document with one rule whose body is `rule` (JSON object members).
fn rule(members: &str) -> String {
    format!(r#"{{"rules":[{{{members}}}]}}"#)
}

fn filter(payload: &str) -> String {
    rule(&format!(r#""filters":[{payload}],"backends":[]"#))
}

fn assert_error(json: &str, path: &str, message: &str) {
    let (p, m) = one_error(json);
    assert_eq!((p.as_str(), m.as_str()), (path, message));
}

#[test]
fn version_must_not_be_negative() {
    assert_error(r#"{"version":-1}"#, "version", "version must be >= 0");
    assert!(compile_json(r#"{"version":0}"#).is_ok());
}

#[test]
fn hostname_must_be_a_name_or_a_single_leading_wildcard() {
    for bad in [
        "", "*", "a.*.com", "*.*.com", "a b.com", "a/b", "a.com:80", "*x.com",
    ] {
        let doc = rule(&format!(r#""hostnames":["ok.com",{bad:?}],"backends":[]"#));
        assert_error(&doc, "rules[0].hostnames[1]", "invalid hostname");
    }
    let long = format!("{}.com", "a".repeat(300));
    assert_error(
        &rule(&format!(r#""hostnames":[{long:?}],"backends":[]"#)),
        "rules[0].hostnames[0]",
        "invalid hostname",
    );
    assert!(
        compile_json(&rule(
            r#""hostnames":["UPPER.Example.com","*.Example.com"],"backends":[]"#
        ))
        .is_ok()
    );
}

#[test]
fn path_value_must_be_non_empty_and_start_with_slash() {
    assert_error(
        &rule(r#""matches":[{"path":{"type":"PathPrefix","value":""}}],"backends":[]"#),
        "rules[0].matches[0].path.value",
        "path value must not be empty",
    );
    for kind in ["Exact", "PathPrefix"] {
        assert_error(
            &rule(&format!(
                r#""matches":[{{"path":{{"type":"{kind}","value":"api"}}}}],"backends":[]"#
            )),
            "rules[0].matches[0].path.value",
            "path value must start with \"/\"",
        );
    }
    // A regex need not start with a slash.
    assert!(
        compile_json(&rule(
            r#""matches":[{"path":{"type":"RegularExpression","value":"api$"}}],"backends":[]"#
        ))
        .is_ok()
    );
}

#[test]
fn path_regular_expression_must_compile() {
    let (path, message) = one_error(&rule(
        r#""matches":[{"path":{"type":"RegularExpression","value":"(unclosed"}}],"backends":[]"#,
    ));
    assert_eq!(path, "rules[0].matches[0].path.value");
    assert_eq!(message, "invalid regular expression: unclosed group");
    // Look-around and back-references are not in the dialect.
    for pattern in ["(?=x)", "(a)\\\\1"] {
        let (_, message) = one_error(&rule(&format!(
            r#""matches":[{{"path":{{"type":"RegularExpression","value":"{pattern}"}}}}],"backends":[]"#
        )));
        assert!(message.starts_with("invalid regular expression: "), "{message}");
    }
}

#[test]
fn regular_expression_compiled_size_is_limited_to_1_mib() {
    let (path, message) = one_error(&rule(
        r#""matches":[{"path":{"type":"RegularExpression","value":"\\w{1000}\\w{1000}\\w{1000}"}}],"backends":[]"#,
    ));
    assert_eq!(path, "rules[0].matches[0].path.value");
    assert!(
        message.contains("compiled size exceeds the limit of 1048576 bytes"),
        "{message}"
    );
}

#[test]
fn header_and_query_conditions_need_a_name_and_a_valid_regex() {
    let doc = rule(
        r#""matches":[{"headers":[{"type":"Exact","name":"","value":"x"},
                                  {"type":"Exact","name":"bad name","value":"x"},
                                  {"type":"Exact","name":":authority","value":"x"},
                                  {"type":"RegularExpression","name":"x-ok","value":"["}],
                       "queryParams":[{"type":"Exact","name":"","value":"x"},
                                      {"type":"RegularExpression","name":"q","value":"("}]}],"backends":[]"#,
    );
    let got = errors(&doc);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "rules[0].matches[0].headers[0].name",
            "rules[0].matches[0].headers[1].name",
            "rules[0].matches[0].headers[2].name",
            "rules[0].matches[0].headers[3].value",
            "rules[0].matches[0].queryParams[0].name",
            "rules[0].matches[0].queryParams[1].value",
        ]
    );
    assert_eq!(got[0].1, "header name must not be empty");
    assert_eq!(got[1].1, "invalid header name");
    assert!(got[3].1.starts_with("invalid regular expression: "));
}

#[test]
fn unknown_match_type_is_rejected_when_decoding_with_its_path() {
    let err = config::Config::from_json_slice(
        br#"{"rules":[{"matches":[{"headers":[{"type":"Prefix","name":"a","value":"b"}]}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.path.as_deref(), Some("rules[0].matches[0].headers[0].type"));
}

#[test]
fn method_must_be_a_token() {
    assert_error(
        &rule(r#""matches":[{"method":"GE T"}],"backends":[]"#),
        "rules[0].matches[0].method",
        "invalid method",
    );
    assert!(compile_json(&rule(r#""matches":[{"method":"PURGE"}],"backends":[]"#)).is_ok());
}

#[test]
fn filter_payload_matching_its_type_must_be_present() {
    for (kind, field) in [
        ("RequestHeaderModifier", "requestHeaderModifier"),
        ("ResponseHeaderModifier", "responseHeaderModifier"),
        ("RequestRedirect", "requestRedirect"),
        ("URLRewrite", "urlRewrite"),
        ("RequestMirror", "requestMirror"),
        ("CORS", "cors"),
    ] {
        // A payload of another type does not count.
        let doc = filter(&format!(r#"{{"type":"{kind}","cors2":{{}}}}"#));
        assert_error(
            &doc,
            &format!("rules[0].filters[0].{field}"),
            &format!("missing {field} payload"),
        );
    }
}

#[test]
fn header_modifier_names_must_be_tokens_and_values_free_of_cr_lf_nul() {
    let doc = filter(
        r#"{"type":"RequestHeaderModifier","requestHeaderModifier":{
            "set":[{"name":"X-Ok","value":"v"},{"name":":path","value":"v"}],
            "add":[{"name":"x-a","value":"a\r\nb"},{"name":"x-b","value":"a\u0000b"}],
            "remove":["ok","bad name"]}}"#,
    );
    let got = errors(&doc);
    assert_eq!(
        got,
        [
            (
                "rules[0].filters[0].requestHeaderModifier.set[1].name".into(),
                "invalid header name".into()
            ),
            (
                "rules[0].filters[0].requestHeaderModifier.add[0].value".into(),
                "invalid header value".into()
            ),
            (
                "rules[0].filters[0].requestHeaderModifier.add[1].value".into(),
                "invalid header value".into()
            ),
            (
                "rules[0].filters[0].requestHeaderModifier.remove[1]".into(),
                "invalid header name".into()
            ),
        ]
    );
}

#[test]
fn redirect_scheme_port_status_and_path_are_checked() {
    let doc = filter(
        r#"{"type":"RequestRedirect","requestRedirect":{"scheme":"ftp","hostname":"a b","port":70000,
            "path":{"type":"ReplaceFullPath","value":"x"},"statusCode":304}}"#,
    );
    let got = errors(&doc);
    assert_eq!(
        got,
        [
            (
                "rules[0].filters[0].requestRedirect.scheme".into(),
                "unsupported redirect scheme".into()
            ),
            (
                "rules[0].filters[0].requestRedirect.hostname".into(),
                "invalid redirect hostname".into()
            ),
            (
                "rules[0].filters[0].requestRedirect.port".into(),
                "port must be within 1..65535".into()
            ),
            (
                "rules[0].filters[0].requestRedirect.path.value".into(),
                "path value must start with \"/\"".into()
            ),
            (
                "rules[0].filters[0].requestRedirect.statusCode".into(),
                "unsupported redirect status".into()
            ),
        ]
    );
    assert_error(
        &filter(r#"{"type":"RequestRedirect","requestRedirect":{"port":-1}}"#),
        "rules[0].filters[0].requestRedirect.port",
        "port must be within 1..65535",
    );
    for status in [0, 301, 302, 303, 307, 308] {
        let doc = filter(&format!(
            r#"{{"type":"RequestRedirect","requestRedirect":{{"statusCode":{status}}}}}"#
        ));
        let table = compile_json(&doc).unwrap();
        let Filter::RequestRedirect(r) = &table.rules()[0].filters[0] else {
            panic!("not a redirect");
        };
        assert_eq!(r.status.as_u16(), if status == 0 { 302 } else { status as u16 });
    }
}

#[test]
fn redirect_path_may_be_empty_only_for_replace_prefix_match() {
    assert!(compile_json(&filter(
        r#"{"type":"RequestRedirect","requestRedirect":{"path":{"type":"ReplacePrefixMatch","value":""}}}"#
    ))
    .is_ok());
    assert_error(
        &filter(
            r#"{"type":"RequestRedirect","requestRedirect":{"path":{"type":"ReplaceFullPath","value":""}}}"#,
        ),
        "rules[0].filters[0].requestRedirect.path.value",
        "path value must not be empty",
    );
    assert_error(
        &filter(
            r#"{"type":"RequestRedirect","requestRedirect":{"path":{"type":"ReplaceFullPath","value":"/a b"}}}"#,
        ),
        "rules[0].filters[0].requestRedirect.path.value",
        "invalid path value",
    );
}

#[test]
fn rewrite_path_field_named_after_the_type_must_be_present() {
    assert_error(
        &filter(
            r#"{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplaceFullPath","replacePrefixMatch":"/x"}}}"#,
        ),
        "rules[0].filters[0].urlRewrite.path.replaceFullPath",
        "missing replaceFullPath",
    );
    assert_error(
        &filter(r#"{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch"}}}"#),
        "rules[0].filters[0].urlRewrite.path.replacePrefixMatch",
        "missing replacePrefixMatch",
    );
    assert_error(
        &filter(
            r#"{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplaceFullPath","replaceFullPath":""}}}"#,
        ),
        "rules[0].filters[0].urlRewrite.path.replaceFullPath",
        "path value must not be empty",
    );
    assert!(compile_json(&filter(
        r#"{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":""}}}"#
    ))
    .is_ok());
    assert_error(
        &filter(r#"{"type":"URLRewrite","urlRewrite":{"hostname":"a b"}}"#),
        "rules[0].filters[0].urlRewrite.hostname",
        "invalid rewrite hostname",
    );
}

#[test]
fn mirror_needs_an_absolute_url_percent_in_range_and_a_known_protocol() {
    let doc = filter(
        r#"{"type":"RequestMirror","requestMirror":{"backendUrl":"shadow:8080","percent":101,"protocol":"h3"}}"#,
    );
    assert_eq!(
        errors(&doc),
        [
            (
                "rules[0].filters[0].requestMirror.backendUrl".into(),
                "invalid mirror backendUrl".into()
            ),
            (
                "rules[0].filters[0].requestMirror.percent".into(),
                "percent must be within 0..100".into()
            ),
            (
                "rules[0].filters[0].requestMirror.protocol".into(),
                "unsupported mirror protocol".into()
            ),
        ]
    );
    assert_error(
        &filter(r#"{"type":"RequestMirror","requestMirror":{"backendUrl":"http://a","percent":-1}}"#),
        "rules[0].filters[0].requestMirror.percent",
        "percent must be within 0..100",
    );
    let table = compile_json(&filter(
        r#"{"type":"RequestMirror","requestMirror":{"backendUrl":"https://a"}}"#,
    ))
    .unwrap();
    let Filter::RequestMirror(m) = &table.rules()[0].filters[0] else {
        panic!("not a mirror");
    };
    assert_eq!((m.percent, m.upstream.port), (100, 443));
}

#[test]
fn cors_max_age_and_origin_patterns_are_checked() {
    let doc = filter(
        r#"{"type":"CORS","cors":{"allowOrigins":["*","https://a.com","a.com","https://*.b.com:8443"],
            "allowMethods":["GET","BAD METHOD"],"allowHeaders":["x-ok","*","bad header"],"exposeHeaders":["x"],
            "maxAge":-5}}"#,
    );
    assert_eq!(
        errors(&doc),
        [
            (
                "rules[0].filters[0].cors.allowOrigins[2]".into(),
                "invalid origin pattern".into()
            ),
            (
                "rules[0].filters[0].cors.allowMethods[1]".into(),
                "invalid method".into()
            ),
            (
                "rules[0].filters[0].cors.allowHeaders[2]".into(),
                "invalid header name".into()
            ),
            (
                "rules[0].filters[0].cors.maxAge".into(),
                "maxAge must be >= 0".into()
            ),
        ]
    );
}

#[test]
fn timeouts_must_not_be_negative() {
    assert_error(
        &rule(r#""timeouts":{"request":"-1s"},"backends":[]"#),
        "rules[0].timeouts.request",
        "invalid duration: must not be negative",
    );
    assert_error(
        &rule(r#""timeouts":{"backend":"-5ms"},"backends":[]"#),
        "rules[0].timeouts.backend",
        "invalid duration: must not be negative",
    );
}

#[test]
fn unparsable_duration_is_rejected_when_decoding_with_its_path() {
    let err =
        config::Config::from_json_slice(br#"{"rules":[{"timeouts":{"request":"10 parsecs"}}]}"#).unwrap_err();
    assert_eq!(err.path.as_deref(), Some("rules[0].timeouts.request"));
}

#[test]
fn unavailable_status_must_be_zero_or_4xx_5xx() {
    for bad in [1, 200, 399, 600] {
        assert_error(
            &rule(&format!(r#""unavailableStatus":{bad},"backends":[]"#)),
            "rules[0].unavailableStatus",
            "unavailableStatus must be 0 or 400..599",
        );
        assert_error(
            &rule(&format!(
                r#""backends":[{{"url":"http://a","weight":1,"unavailableStatus":{bad}}}]"#
            )),
            "rules[0].backends[0].unavailableStatus",
            "unavailableStatus must be 0 or 400..599",
        );
    }
    let table = compile_json(&rule(r#""unavailableStatus":500,"backends":[]"#)).unwrap();
    assert_eq!(
        table.rules()[0].unavailable_status,
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    );
}

#[test]
fn backend_url_is_checked_unless_the_backend_is_unavailable() {
    for bad in [
        "",
        "api:8080",
        "ftp://a",
        "http://u:p@a",
        "http://a/#f",
        "http://a:0",
        "http://a:99999",
        "http://",
    ] {
        assert_error(
            &rule(&format!(r#""backends":[{{"url":{bad:?},"weight":1}}]"#)),
            "rules[0].backends[0].url",
            "invalid backend url",
        );
    }
    // The Go controller's sentinel: only non-empty is required when unavailableStatus is set.
    assert!(
        compile_json(&rule(
            r#""backends":[{"url":"invalid-ref","weight":1,"unavailableStatus":500}]"#
        ))
        .is_ok()
    );
    assert_error(
        &rule(r#""backends":[{"url":"","weight":1,"unavailableStatus":500}]"#),
        "rules[0].backends[0].url",
        "invalid backend url",
    );
}

#[test]
fn backend_weight_must_not_be_negative() {
    assert_error(
        &rule(r#""backends":[{"url":"http://a","weight":-1}]"#),
        "rules[0].backends[0].weight",
        "weight out of range",
    );
    let table = compile_json(&rule(r#""backends":[{"url":"http://a","weight":2147483647}]"#)).unwrap();
    assert_eq!(table.rules()[0].backends[0].weight, 2_147_483_647);
}

#[test]
fn weight_beyond_int32_is_a_decode_error() {
    assert!(
        config::Config::from_json_slice(
            br#"{"rules":[{"backends":[{"url":"http://a","weight":2147483648}]}]}"#
        )
        .is_err()
    );
}

#[test]
fn backend_protocol_is_empty_or_h2c() {
    assert_error(
        &rule(r#""backends":[{"url":"http://a","weight":1,"protocol":"h2"}]"#),
        "rules[0].backends[0].protocol",
        "unsupported backend protocol",
    );
}

fn tls_doc(tls: &str) -> String {
    rule(&format!(
        r#""backends":[{{"url":"https://a","weight":1,"tls":{tls}}}]"#
    ))
}

#[test]
fn tls_ca_bundle_must_hold_a_pem_certificate() {
    assert!(compile_json(&tls_doc(&format!(r#"{{"caBundle":{CERT_PEM:?}}}"#))).is_ok());
    let two = format!("{CERT_PEM}{CERT_PEM}");
    assert!(compile_json(&tls_doc(&format!(r#"{{"caBundle":{two:?}}}"#))).is_ok());
    for bad in [
        "not pem",
        "-----BEGIN CERTIFICATE-----\nMIIB…\n-----END CERTIFICATE-----\n",
    ] {
        assert_error(
            &tls_doc(&format!(r#"{{"caBundle":{bad:?}}}"#)),
            "rules[0].backends[0].tls.caBundle",
            "invalid caBundle",
        );
    }
    // A key is not a certificate.
    assert_error(
        &tls_doc(&format!(r#"{{"caBundle":{KEY_PEM:?}}}"#)),
        "rules[0].backends[0].tls.caBundle",
        "invalid caBundle",
    );
}

#[test]
fn tls_client_certificate_and_key_come_together_as_base64_pem() {
    let cert = STANDARD.encode(CERT_PEM);
    let key = STANDARD.encode(KEY_PEM);
    assert!(
        compile_json(&tls_doc(&format!(
            r#"{{"clientCertPem":"{cert}","clientKeyPem":"{key}"}}"#
        )))
        .is_ok()
    );
    assert_error(
        &tls_doc(&format!(r#"{{"clientCertPem":"{cert}"}}"#)),
        "rules[0].backends[0].tls.clientCertPem",
        "client certificate without key",
    );
    assert_error(
        &tls_doc(&format!(r#"{{"clientKeyPem":"{key}"}}"#)),
        "rules[0].backends[0].tls.clientKeyPem",
        "client key without certificate",
    );
    // Plain PEM (not base64-wrapped) is not the Go []byte encoding.
    let plain = CERT_PEM.replace('\n', "\\n");
    assert_eq!(
        errors(&tls_doc(&format!(
            r#"{{"clientCertPem":"{plain}","clientKeyPem":"!!"}}"#
        ))),
        [
            (
                "rules[0].backends[0].tls.clientCertPem".into(),
                "invalid clientCertPem".into()
            ),
            (
                "rules[0].backends[0].tls.clientKeyPem".into(),
                "invalid clientKeyPem".into()
            ),
        ]
    );
}

#[test]
fn backend_filters_are_validated_like_rule_filters() {
    assert_error(
        &rule(
            r#""backends":[{"url":"http://a","weight":1,"filters":[{"type":"RequestMirror","requestMirror":{"backendUrl":"x"}}]}]"#,
        ),
        "rules[0].backends[0].filters[0].requestMirror.backendUrl",
        "invalid mirror backendUrl",
    );
}

#[test]
fn all_errors_are_collected_in_document_order() {
    let doc = r#"{"version":-3,"rules":[
        {"hostnames":["bad host"],"matches":[{"path":{"type":"RegularExpression","value":"("}}],"backends":[]},
        {"backends":[{"url":"http://a","weight":-1},{"url":"nope","weight":1}],"timeouts":{"request":"-1s"},"unavailableStatus":7}]}"#;
    let err = compile_json(doc).unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "version",
            "rules[0].hostnames[0]",
            "rules[0].matches[0].path.value",
            "rules[1].backends[0].weight",
            "rules[1].backends[1].url",
            "rules[1].timeouts.request",
            "rules[1].unavailableStatus",
        ]
    );
    assert_eq!(err.first().unwrap().path, "version");
    assert_eq!(err.to_string(), "version: version must be >= 0");
}

#[test]
fn not_validated_duplicates_overlaps_and_unreachable_rules_compile() {
    let doc = r#"{"rules":[
        {"hostnames":["a.com"],"matches":[{"path":{"type":"Exact","value":"/x"}}],"backends":[]},
        {"hostnames":["a.com"],"matches":[{"path":{"type":"Exact","value":"/x"}}],"backends":[]},
        {"hostnames":["*.a.com","b.a.com"],"backends":[]}]}"#;
    assert!(compile_json(doc).is_ok());
}

#[test]
fn json_path_segments_render_like_serde_path_to_error() {
    let mut path = String::new();
    Seg::Item("rules", 1234).push_to(&mut path);
    Seg::Field("matches").push_to(&mut path);
    Seg::Index(0).push_to(&mut path);
    Seg::Field("path.value").push_to(&mut path);
    assert_eq!(path, "rules[1234].matches[0].path.value");
    let doc = format!(
        r#"{{"rules":[{}{{"hostnames":["bad host"],"backends":[]}}]}}"#,
        r#"{"backends":[]},"#.repeat(10)
    );
    assert_error(&doc, "rules[10].hostnames[0]", "invalid hostname");
}

/// A document big enough for the two-thread compile: rules over 150 hostnames that share backend URLs (and a
/// mirror URL) across both halves, with `bad` invalid rules spread over the whole array.
fn large_document(rules: usize, bad: &[usize]) -> String {
    let items: Vec<String> = (0..rules)
        .map(|i| {
            let path = if bad.contains(&i) { "no-slash".to_owned() } else { format!("/r{i}") };
            format!(
                r#"{{"hostnames":["h{}.example.com"],"matches":[{{"path":{{"type":"PathPrefix","value":"{path}"}}}}],"filters":[{{"type":"RequestMirror","requestMirror":{{"backendUrl":"http://mirror:9000"}}}}],"backends":[{{"url":"http://svc{}.ns:8080","weight":1}}]}}"#,
                i % 150,
                i % 40
            )
        })
        .collect();
    format!(r#"{{"version":3,"rules":[{}]}}"#, items.join(","))
}

/// The one-thread compile, for comparison.
fn compile_on_one_thread(cfg: &config::Config) -> Result<RouteTable, CompileError> {
    let part = compile_rules(cfg, 0..cfg.rules.len(), true, None);
    if !part.errors.is_empty() {
        return Err(CompileError { errors: part.errors });
    }
    let upstreams = part
        .upstream_order
        .into_iter()
        .filter_map(|(upstream, dialable)| dialable.then_some(upstream))
        .collect();
    Ok(RouteTable::assemble(
        cfg.version,
        part.rules,
        &part.hosts,
        upstreams,
    ))
}

#[test]
fn a_large_document_compiles_on_two_threads_to_the_same_table_with_shared_upstreams() {
    let n = PARALLEL_MIN_RULES * 2;
    let cfg = config::Config::from_json_slice(large_document(n, &[]).as_bytes()).unwrap();
    let two = compile(&cfg).unwrap();
    let one = compile_on_one_thread(&cfg).unwrap();
    assert_eq!(two.rule_count(), one.rule_count());
    // One entry and one object per distinct upstream (40 services and the mirror), whichever half named it.
    let listed: Vec<&Arc<Upstream>> = two.shared_upstreams().iter().collect();
    assert_eq!(listed.len(), 41);
    assert_eq!(listed.len(), one.shared_upstreams().len());
    for rule in two.rules() {
        for backend in &rule.backends {
            assert!(
                listed.iter().any(|u| Arc::ptr_eq(u, &backend.upstream)),
                "{:?}",
                backend.upstream
            );
        }
        for filter in &rule.filters {
            if let Filter::RequestMirror(m) = filter {
                assert!(listed.iter().any(|u| Arc::ptr_eq(u, &m.upstream)));
            }
        }
    }
    let headers = http::HeaderMap::new();
    for i in (0..n).step_by(7) {
        let host = format!("h{}.example.com", i % 150);
        let path = format!("/r{i}/x");
        let head = crate::RequestHead {
            method: &http::Method::GET,
            host: &host,
            path: &path,
            query: None,
            headers: &headers,
        };
        let (a, b) = (two.lookup(&head), one.lookup(&head));
        assert_eq!(
            a.map(|h| (h.rule_index, h.arm_index)),
            b.map(|h| (h.rule_index, h.arm_index)),
            "{host}{path}"
        );
        assert_eq!(a.map(|h| h.rule_index), Some(i));
    }
}

#[test]
fn errors_of_a_two_thread_compile_come_in_document_order_with_whole_array_indexes() {
    let n = PARALLEL_MIN_RULES * 2;
    let bad = [3, n / 2 - 1, n / 2, n - 1];
    let mut json = large_document(n, &bad);
    json = json.replacen(r#""version":3"#, r#""version":-1"#, 1);
    let cfg = config::Config::from_json_slice(json.as_bytes()).unwrap();
    let error_list = |result: Result<RouteTable, CompileError>| match result {
        Err(e) => e
            .errors
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect::<Vec<_>>(),
        Ok(_) => panic!("invalid document compiled"),
    };
    let two = error_list(compile(&cfg));
    assert_eq!(two, error_list(compile_on_one_thread(&cfg)));
    let paths: Vec<&str> = two.iter().map(|(p, _)| p.as_str()).collect();
    let mut want = vec!["version".to_owned()];
    want.extend(bad.iter().map(|i| format!("rules[{i}].matches[0].path.value")));
    assert_eq!(paths, want.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn equal_upstreams_named_by_different_urls_in_the_two_halves_are_one_object() {
    // The second half spells every service URL differently (upper-case host, explicit default path): each
    // half parses its own spelling, and joining the halves has to find the equal upstreams by value.
    let n = PARALLEL_MIN_RULES * 2;
    let json = large_document(n, &[]);
    let (head, tail) = json.split_at(json.len() / 2);
    let tail = tail
        .replace("http://svc", "http://SVC")
        .replace(":8080\"", ":8080/\"");
    let cfg = config::Config::from_json_slice(format!("{head}{tail}").as_bytes()).unwrap();
    let table = compile(&cfg).unwrap();
    let listed = table.shared_upstreams();
    assert_eq!(listed.len(), 41);
    for (i, rule) in table.rules().iter().enumerate() {
        for backend in &rule.backends {
            assert!(
                listed.iter().any(|u| Arc::ptr_eq(u, &backend.upstream)),
                "rule {i}"
            );
            assert_eq!(backend.upstream.host, format!("svc{}.ns", i % 40));
        }
    }
}
