use super::*;
use crate::Filter;

fn table(json: &str) -> RouteTable {
    let cfg = config::Config::from_json_slice(json.as_bytes()).unwrap();
    RouteTable::compile(&cfg).unwrap()
}

/// A request builder: `Req::get("host", "/path?query")`.
struct Req {
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

impl Req {
    fn new(method: Method, host: &str, target: &str) -> Req {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Req {
            method,
            host: host.to_owned(),
            path,
            query,
            headers: HeaderMap::new(),
        }
    }

    fn get(host: &str, target: &str) -> Req {
        Req::new(Method::GET, host, target)
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.append(name, http::HeaderValue::from_static(value));
        self
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        }
    }
}

/// (rule index, arm index) of the winner, or None.
fn route(t: &RouteTable, req: &Req) -> Option<(usize, usize)> {
    t.lookup(&req.head()).map(|hit| (hit.rule_index, hit.arm_index))
}

fn rule_of(t: &RouteTable, req: &Req) -> Option<usize> {
    route(t, req).map(|(r, _)| r)
}

#[test]
fn empty_table_matches_nothing() {
    let t = RouteTable::empty();
    assert_eq!(route(&t, &Req::get("a.example.com", "/")), None);
    assert_eq!(t.rule_count(), 0);
    assert_eq!(t.upstreams().count(), 0);
}

#[test]
fn rule_without_matches_matches_everything_with_an_implicit_prefix_slash() {
    let t = table(r#"{"version":7,"rules":[{"backends":[]}]}"#);
    assert_eq!(t.version(), 7);
    let req = Req::new(Method::DELETE, "anything.test:99", "/deep/path?x=1");
    let hit = t.lookup(&req.head()).unwrap();
    assert_eq!(
        (hit.rule_index, hit.arm_index, hit.hostname, hit.prefix),
        (0, 0, "", Some(""))
    );
}

#[test]
fn exact_hostname_is_case_insensitive_and_ignores_the_port_and_one_trailing_dot() {
    let t = table(r#"{"rules":[{"hostnames":["Very.Specific.com"],"backends":[]}]}"#);
    for host in [
        "very.specific.com",
        "VERY.specific.COM:1234",
        "very.specific.com.",
        "very.specific.com.:80",
    ] {
        let hit = t.lookup(&Req::get(host, "/").head()).unwrap();
        assert_eq!(hit.hostname, "very.specific.com", "{host}");
    }
    assert_eq!(route(&t, &Req::get("other.specific.com", "/")), None);
    assert_eq!(route(&t, &Req::get("", "/")), None);
}

#[test]
fn wildcard_hostname_matches_one_or_more_labels_but_never_the_apex() {
    let t = table(r#"{"rules":[{"hostnames":["*.example.com"],"backends":[]}]}"#);
    assert_eq!(rule_of(&t, &Req::get("a.example.com", "/")), Some(0));
    assert_eq!(rule_of(&t, &Req::get("a.b.example.com", "/")), Some(0));
    assert_eq!(rule_of(&t, &Req::get("A.Example.Com:8080", "/")), Some(0));
    assert_eq!(rule_of(&t, &Req::get("example.com", "/")), None);
    assert_eq!(rule_of(&t, &Req::get("aexample.com", "/")), None);
    assert_eq!(rule_of(&t, &Req::get(".example.com", "/")), None);
    let hit = t.lookup(&Req::get("a.example.com", "/").head()).unwrap();
    assert_eq!(hit.hostname, "*.example.com");
}

#[test]
fn longest_wildcard_suffix_is_tried_first() {
    let t = table(
        r#"{"rules":[{"hostnames":["*.example.com"],"backends":[]},
                     {"hostnames":["*.b.example.com"],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("a.b.example.com", "/")), Some(1));
    assert_eq!(rule_of(&t, &Req::get("a.c.example.com", "/")), Some(0));
    assert_eq!(rule_of(&t, &Req::get("b.example.com", "/")), Some(0));
}

#[test]
fn exact_hostname_beats_wildcard_beats_default() {
    let t = table(
        r#"{"rules":[{"backends":[]},
                     {"hostnames":["*.example.com"],"backends":[]},
                     {"hostnames":["a.example.com"],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("a.example.com", "/")), Some(2));
    assert_eq!(rule_of(&t, &Req::get("b.example.com", "/")), Some(1));
    assert_eq!(rule_of(&t, &Req::get("example.com", "/")), Some(0));
}

#[test]
fn hostname_precedence_beats_match_precedence() {
    // An Exact path under the default bucket never outranks a PathPrefix / under the exact hostname.
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"Exact","value":"/x"}}],"backends":[]},
                     {"hostnames":["a.com"],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("a.com", "/x")), Some(1));
}

#[test]
fn bucket_without_a_matching_arm_falls_through_to_the_next_candidate() {
    let t = table(
        r#"{"rules":[{"hostnames":["a.example.com"],"matches":[{"path":{"type":"PathPrefix","value":"/api"}}],"backends":[]},
                     {"hostnames":["*.example.com"],"matches":[{"path":{"type":"PathPrefix","value":"/web"}}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("a.example.com", "/api/x")), Some(0));
    assert_eq!(rule_of(&t, &Req::get("a.example.com", "/web/x")), Some(1));
    assert_eq!(rule_of(&t, &Req::get("a.example.com", "/other")), Some(2));
    let hit = t.lookup(&Req::get("a.example.com", "/other").head()).unwrap();
    assert_eq!(hit.hostname, "");
}

#[test]
fn rule_with_several_hostnames_joins_each_bucket_once() {
    let t = table(
        r#"{"rules":[{"hostnames":["a.com","A.com","*.b.com"],"matches":[{"path":{"type":"Exact","value":"/x"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("a.com", "/x")), Some(0));
    assert_eq!(rule_of(&t, &Req::get("z.b.com", "/x")), Some(0));
    // One arm in `a.com`, one in `*.b.com`: the rule joined `a.com` once (twice would make a run of two arms,
    // which keeps its arms in `t.arms`).
    let indexed = t.lines.iter().flat_map(|line| &line.0);
    let runs = indexed.chain(&t.few_runs).filter(|s| s.flags & FREE == 0);
    assert_eq!(runs.count(), 2);
    assert!(t.arms.is_empty());
    assert_eq!(t.rules()[0].hostnames, ["a.com", "a.com", "*.b.com"]);
}

#[test]
fn path_prefix_matches_on_segment_boundaries() {
    let t = table(r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/v1"}}],"backends":[]}]}"#);
    for (path, want) in [
        ("/v1", true),
        ("/v1/", true),
        ("/v1/x", true),
        ("/v1x", false),
        ("/v10", false),
        ("/", false),
        ("/V1", false),
    ] {
        assert_eq!(route(&t, &Req::get("h", path)).is_some(), want, "{path}");
    }
}

#[test]
fn path_prefix_trailing_slash_in_the_value_is_ignored() {
    let t = table(r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/v1/"}}],"backends":[]}]}"#);
    for (path, want) in [
        ("/v1", true),
        ("/v1/", true),
        ("/v1/x", true),
        ("/v1x", false),
        ("/", false),
    ] {
        assert_eq!(route(&t, &Req::get("h", path)).is_some(), want, "{path}");
    }
    let hit = t.lookup(&Req::get("h", "/v1/x").head()).unwrap();
    assert_eq!(hit.prefix, Some("/v1"));
}

#[test]
fn path_prefix_slash_matches_every_path() {
    let t = table(r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backends":[]}]}"#);
    for path in ["/", "/v1", "/v1/", "/v1x", "//x"] {
        assert!(route(&t, &Req::get("h", path)).is_some(), "{path}");
    }
}

#[test]
fn exact_path_is_byte_exact_and_case_sensitive() {
    let t = table(r#"{"rules":[{"matches":[{"path":{"type":"Exact","value":"/foo"}}],"backends":[]}]}"#);
    assert!(route(&t, &Req::get("h", "/foo")).is_some());
    assert!(route(&t, &Req::get("h", "/foo?x=1")).is_some());
    for path in ["/foo/", "/Foo", "/fo", "/foo/bar", "/%66oo"] {
        assert!(route(&t, &Req::get("h", path)).is_none(), "{path}");
    }
    let hit = t.lookup(&Req::get("h", "/foo").head()).unwrap();
    assert_eq!(hit.prefix, None);
}

#[test]
fn path_is_matched_raw_without_percent_decoding() {
    let t =
        table(r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/a%2Fb"}}],"backends":[]}]}"#);
    assert!(route(&t, &Req::get("h", "/a%2Fb/c")).is_some());
    assert!(route(&t, &Req::get("h", "/a/b/c")).is_none());
}

#[test]
fn regular_expression_path_is_an_unanchored_search() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"/f/[0-9]+"}}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/f/123")).is_some());
    assert!(route(&t, &Req::get("h", "/x/f/123/y")).is_some());
    assert!(route(&t, &Req::get("h", "/f/x")).is_none());
    let anchored = table(
        r#"{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"^/f/[0-9]+$"}}],"backends":[]}]}"#,
    );
    assert!(route(&anchored, &Req::get("h", "/f/123")).is_some());
    assert!(route(&anchored, &Req::get("h", "/x/f/123")).is_none());
    assert!(route(&anchored, &Req::get("h", "/f/123/y")).is_none());
}

#[test]
fn method_is_exact_and_case_sensitive_and_head_does_not_match_get() {
    let t = table(r#"{"rules":[{"matches":[{"method":"GET"}],"backends":[]}]}"#);
    assert!(route(&t, &Req::get("h", "/")).is_some());
    assert!(route(&t, &Req::new(Method::HEAD, "h", "/")).is_none());
    assert!(route(&t, &Req::new(Method::from_bytes(b"get").unwrap(), "h", "/")).is_none());
}

#[test]
fn every_standard_method_and_extension_methods_match_only_themselves() {
    let names = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PURGE", "PURGEX",
    ];
    let matches: Vec<String> = names
        .iter()
        .map(|m| format!(r#"{{"path":{{"type":"Exact","value":"/{m}"}},"method":"{m}"}}"#))
        .collect();
    let t = table(&format!(
        r#"{{"rules":[{{"matches":[{}],"backends":[]}}]}}"#,
        matches.join(",")
    ));
    for (a, arm_method) in names.iter().enumerate() {
        for request_method in names {
            let req = Req::new(
                Method::from_bytes(request_method.as_bytes()).unwrap(),
                "h",
                &format!("/{arm_method}"),
            );
            let want = (*arm_method == request_method).then_some((0, a));
            assert_eq!(route(&t, &req), want, "{request_method} /{arm_method}");
        }
    }
}

#[test]
fn header_name_case_is_ignored_and_value_case_is_not() {
    let t = table(
        r#"{"rules":[{"matches":[{"headers":[{"type":"Exact","name":"X-Tenant","value":"Blue"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/").header("x-tenant", "Blue")).is_some());
    assert!(route(&t, &Req::get("h", "/").header("X-TENANT", "Blue")).is_some());
    assert!(route(&t, &Req::get("h", "/").header("x-tenant", "blue")).is_none());
    assert!(route(&t, &Req::get("h", "/")).is_none());
}

#[test]
fn header_exact_matches_any_field_line_without_comma_splitting() {
    let t = table(
        r#"{"rules":[{"matches":[{"headers":[{"type":"Exact","name":"x-v","value":"b"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/").header("x-v", "a").header("x-v", "b")).is_some());
    assert!(route(&t, &Req::get("h", "/").header("x-v", "a,b")).is_none());
}

#[test]
fn header_exact_empty_value_matches_only_a_present_empty_header() {
    let t = table(
        r#"{"rules":[{"matches":[{"headers":[{"type":"Exact","name":"x-e","value":""}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/").header("x-e", "")).is_some());
    assert!(route(&t, &Req::get("h", "/").header("x-e", "x")).is_none());
    assert!(route(&t, &Req::get("h", "/")).is_none());
}

#[test]
fn header_regular_expression_is_an_unanchored_search_of_any_field_line() {
    let t = table(
        r#"{"rules":[{"matches":[{"headers":[{"type":"RegularExpression","name":"User-Agent","value":"^curl/"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/").header("user-agent", "curl/8.0")).is_some());
    assert!(
        route(
            &t,
            &Req::get("h", "/")
                .header("user-agent", "x")
                .header("user-agent", "curl/1")
        )
        .is_some()
    );
    assert!(route(&t, &Req::get("h", "/").header("user-agent", "wget curl/8.0")).is_none());
}

#[test]
fn duplicate_header_name_in_one_arm_only_the_first_entry_counts() {
    let t = table(
        r#"{"rules":[{"matches":[{"headers":[{"type":"Exact","name":"X-A","value":"1"},
                                              {"type":"Exact","name":"x-a","value":"2"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/").header("x-a", "1")).is_some());
    assert!(route(&t, &Req::get("h", "/").header("x-a", "2")).is_none());
    assert_eq!(t.rules()[0].precedence(0, 0).unwrap().header_count, 1);
}

#[test]
fn query_param_name_case_is_significant() {
    let t = table(
        r#"{"rules":[{"matches":[{"queryParams":[{"type":"Exact","name":"animal","value":"whale"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/?animal=whale")).is_some());
    assert!(route(&t, &Req::get("h", "/?ANIMAL=whale")).is_none());
    assert!(route(&t, &Req::get("h", "/?animal=Whale")).is_none());
    assert!(route(&t, &Req::get("h", "/")).is_none());
}

#[test]
fn query_params_are_form_decoded() {
    let t = table(
        r#"{"rules":[{"matches":[{"queryParams":[{"type":"Exact","name":"a b","value":"c d/é"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/?a+b=c%20d%2F%C3%A9")).is_some());
    assert!(route(&t, &Req::get("h", "/?a%20b=c+d/%c3%a9")).is_some());
    assert!(route(&t, &Req::get("h", "/?a+b=c+d")).is_none());
}

#[test]
fn query_param_repeated_only_the_first_occurrence_counts() {
    let t = table(
        r#"{"rules":[{"matches":[{"queryParams":[{"type":"Exact","name":"k","value":"2"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/?k=2&k=1")).is_some());
    assert!(route(&t, &Req::get("h", "/?k=1&k=2")).is_none());
}

#[test]
fn query_param_without_equals_has_the_empty_value() {
    let t = table(
        r#"{"rules":[{"matches":[{"queryParams":[{"type":"Exact","name":"flag","value":""}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/?x=1&flag")).is_some());
    assert!(route(&t, &Req::get("h", "/?flag=")).is_some());
    assert!(route(&t, &Req::get("h", "/?flag=1")).is_none());
}

#[test]
fn query_param_regular_expression_searches_the_decoded_value() {
    let t = table(
        r#"{"rules":[{"matches":[{"queryParams":[{"type":"RegularExpression","name":"q","value":"^a b$"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", "/?q=a+b")).is_some());
    assert!(route(&t, &Req::get("h", "/?q=a%20b")).is_some());
    assert!(route(&t, &Req::get("h", "/?q=xa+b")).is_none());
    // Longer than the stack buffer: still decoded correctly.
    let long = format!("/?q={}", "a%20".repeat(400));
    let t = table(
        r#"{"rules":[{"matches":[{"queryParams":[{"type":"RegularExpression","name":"q","value":"^(a )+$"}]}],"backends":[]}]}"#,
    );
    assert!(route(&t, &Req::get("h", &long)).is_some());
}

#[test]
fn conditions_in_an_arm_are_anded_and_arms_are_ored() {
    let t = table(
        r#"{"rules":[{"matches":[
            {"path":{"type":"PathPrefix","value":"/api"},"method":"POST","headers":[{"type":"Exact","name":"x","value":"1"}]},
            {"path":{"type":"Exact","value":"/health"}}],"backends":[]}]}"#,
    );
    let post = |target| Req::new(Method::POST, "h", target);
    assert_eq!(route(&t, &post("/api/a").header("x", "1")), Some((0, 0)));
    assert_eq!(route(&t, &post("/api/a")), None);
    assert_eq!(route(&t, &Req::get("h", "/api/a").header("x", "1")), None);
    assert_eq!(route(&t, &Req::get("h", "/health")), Some((0, 1)));
}

#[test]
fn precedence_exact_beats_regex_beats_prefix() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/a/very/long/prefix"}}],"backends":[]},
                     {"matches":[{"path":{"type":"RegularExpression","value":"^/a/.*"}}],"backends":[]},
                     {"matches":[{"path":{"type":"Exact","value":"/a/very/long/prefix/x"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("h", "/a/very/long/prefix/x")), Some(2));
    assert_eq!(rule_of(&t, &Req::get("h", "/a/very/long/prefix/y")), Some(1));
    assert_eq!(rule_of(&t, &Req::get("h", "/b")), None);
}

#[test]
fn precedence_is_per_arm_not_per_rule() {
    // Rule 0's Exact arm must not lift its PathPrefix / arm above rule 1's longer prefix.
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}},{"path":{"type":"Exact","value":"/admin"}}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"/app"}}],"backends":[]}]}"#,
    );
    assert_eq!(route(&t, &Req::get("h", "/app/x")), Some((1, 0)));
    assert_eq!(route(&t, &Req::get("h", "/admin")), Some((0, 1)));
    assert_eq!(route(&t, &Req::get("h", "/other")), Some((0, 0)));
}

#[test]
fn precedence_longer_prefix_beats_method_header_and_query() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/path"},"method":"GET",
                                   "headers":[{"type":"Exact","name":"a","value":"1"}],
                                   "queryParams":[{"type":"Exact","name":"animal","value":"hydra"}]}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"/path5"}}],"backends":[]}]}"#,
    );
    assert_eq!(
        rule_of(&t, &Req::get("h", "/path5?animal=hydra").header("a", "1")),
        Some(1)
    );
}

#[test]
fn precedence_trailing_slash_prefixes_tie_on_length_and_rule_order_decides() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/v1/"}}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"/v1"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("h", "/v1/x")), Some(0));
    let swapped = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/v1"}}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"/v1/"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&swapped, &Req::get("h", "/v1/x")), Some(0));
}

#[test]
fn precedence_slash_and_double_slash_prefixes_tie_on_length_one() {
    // "/" normalises to "" and "//" to "/": both have precedence length 1, so rule order decides.
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"//"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("h", "//x")), Some(0));
    let swapped = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"//"}}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&swapped, &Req::get("h", "//x")), Some(0));
    assert_eq!(rule_of(&swapped, &Req::get("h", "/x")), Some(1));
}

#[test]
fn precedence_method_beats_any_number_of_header_matches() {
    let headers: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"type":"Exact","name":"h{i}","value":"v"}}"#))
        .collect();
    let doc = format!(
        r#"{{"rules":[{{"matches":[{{"headers":[{}]}}],"backends":[]}},
                      {{"matches":[{{"method":"PATCH"}}],"backends":[]}}]}}"#,
        headers.join(",")
    );
    let t = table(&doc);
    let mut req = Req::new(Method::PATCH, "h", "/");
    for i in 0..12 {
        req.headers.insert(
            http::HeaderName::try_from(format!("h{i}")).unwrap(),
            http::HeaderValue::from_static("v"),
        );
    }
    assert_eq!(rule_of(&t, &req), Some(1));
    req.method = Method::GET;
    assert_eq!(rule_of(&t, &req), Some(0));
}

#[test]
fn precedence_one_header_beats_any_number_of_query_matches() {
    let params: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"type":"Exact","name":"q{i}","value":"v"}}"#))
        .collect();
    let doc = format!(
        r#"{{"rules":[{{"matches":[{{"queryParams":[{}]}}],"backends":[]}},
                      {{"matches":[{{"headers":[{{"type":"Exact","name":"version","value":"four"}}]}}],"backends":[]}}]}}"#,
        params.join(",")
    );
    let t = table(&doc);
    let query: Vec<String> = (0..12).map(|i| format!("q{i}=v")).collect();
    let req = Req::get("h", &format!("/?{}", query.join("&"))).header("version", "four");
    assert_eq!(rule_of(&t, &req), Some(1));
}

#[test]
fn precedence_more_headers_beat_fewer_and_more_query_params_beat_fewer() {
    let t = table(
        r#"{"rules":[{"matches":[{"headers":[{"type":"Exact","name":"a","value":"1"}]}],"backends":[]},
                     {"matches":[{"headers":[{"type":"Exact","name":"a","value":"1"},{"type":"Exact","name":"b","value":"2"}]}],"backends":[]},
                     {"matches":[{"queryParams":[{"type":"Exact","name":"x","value":"1"}]}],"backends":[]},
                     {"matches":[{"queryParams":[{"type":"Exact","name":"x","value":"1"},{"type":"Exact","name":"y","value":"2"}]}],"backends":[]}]}"#,
    );
    assert_eq!(
        rule_of(&t, &Req::get("h", "/").header("a", "1").header("b", "2")),
        Some(1)
    );
    assert_eq!(rule_of(&t, &Req::get("h", "/").header("a", "1")), Some(0));
    assert_eq!(rule_of(&t, &Req::get("h", "/?x=1&y=2")), Some(3));
    assert_eq!(rule_of(&t, &Req::get("h", "/?x=1")), Some(2));
}

#[test]
fn precedence_ties_are_broken_by_config_order_then_arm_order() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/b"}},{"path":{"type":"PathPrefix","value":"/a"}},{"path":{"type":"PathPrefix","value":"/a"}}],"backends":[]},
                     {"matches":[{"path":{"type":"PathPrefix","value":"/a"}}],"backends":[]}]}"#,
    );
    assert_eq!(route(&t, &Req::get("h", "/a/x")), Some((0, 1)));
    let t = table(
        r#"{"rules":[{"hostnames":["h"],"matches":[{"path":{"type":"Exact","value":"/x"}}],"backends":[]},
                     {"hostnames":["h"],"matches":[{"path":{"type":"Exact","value":"/x"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("h", "/x")), Some(0));
}

#[test]
fn precedence_longer_regex_pattern_wins() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"/a"}}],"backends":[]},
                     {"matches":[{"path":{"type":"RegularExpression","value":"/a.*z"}}],"backends":[]}]}"#,
    );
    assert_eq!(rule_of(&t, &Req::get("h", "/abcz")), Some(1));
    assert_eq!(rule_of(&t, &Req::get("h", "/abc")), Some(0));
}

#[test]
fn precedence_key_fields_follow_the_spec_order() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/v1/"},"method":"GET",
            "headers":[{"type":"Exact","name":"a","value":"1"}],"queryParams":[{"type":"Exact","name":"q","value":"1"}]}],"backends":[]}]}"#,
    );
    let key = t.rules()[0].precedence(0, 0).unwrap();
    assert_eq!(key.path_rank, crate::arm::PathRank::PathPrefix);
    assert_eq!(
        (key.path_len, key.has_method, key.header_count, key.query_count),
        (3, true, 1, 1)
    );
    assert!(t.rules()[0].precedence(0, 1).is_none());
}

#[test]
fn hit_reports_the_fired_arm_prefix_for_replace_prefix_match() {
    let t = table(
        r#"{"rules":[{"matches":[{"path":{"type":"Exact","value":"/old"}},{"path":{"type":"PathPrefix","value":"/old/"}}],
            "filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":"/new"}}}],
            "backends":[]}]}"#,
    );
    let req = Req::get("h", "/old/page");
    let hit = t.lookup(&req.head()).unwrap();
    assert_eq!((hit.arm_index, hit.prefix), (1, Some("/old")));
    let Filter::UrlRewrite(rewrite) = &hit.rule.filters[0] else {
        panic!("expected a rewrite");
    };
    assert_eq!(
        rewrite.rewrite_path(&req.path, hit.prefix).as_deref(),
        Some("/new/page")
    );
    let exact = Req::get("h", "/old");
    let hit = t.lookup(&exact.head()).unwrap();
    assert_eq!((hit.arm_index, hit.prefix), (0, None));
}

#[test]
fn weighted_choice_uses_compiled_backend_weights() {
    let t = table(
        r#"{"rules":[{"backends":[{"url":"http://a:1","weight":0},{"url":"http://b:1","weight":3},
                                  {"url":"http://c:1","weight":1,"unavailableStatus":503}]}]}"#,
    );
    let rule = &t.rules()[0];
    let picks: Vec<_> = (0..4)
        .map(|x| {
            rule.choose_backend(|n| {
                assert_eq!(n, 4);
                x
            })
        })
        .collect();
    assert_eq!(picks, [Some(1), Some(1), Some(1), Some(2)]);
    assert_eq!(
        rule.backends[2].unavailable_status,
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    let none = table(r#"{"rules":[{"backends":[{"url":"http://a:1","weight":0}]},{"backends":[]}]}"#);
    assert_eq!(none.rules()[0].choose_backend(|_| 0), None);
    assert_eq!(none.rules()[1].choose_backend(|_| 0), None);
    // One backend with a weight is chosen without a draw.
    let one = table(r#"{"rules":[{"backends":[{"url":"http://a:1","weight":5}]}]}"#);
    assert_eq!(
        one.rules()[0].choose_backend(|_| panic!("no draw for one backend")),
        Some(0)
    );
}

#[test]
fn timeout_is_the_minimum_of_the_non_zero_values() {
    let t = table(
        r#"{"rules":[{"timeouts":{"request":"10s","backend":"5s"},"backends":[]},
                     {"timeouts":{"request":"0s","backend":"1m30s"},"backends":[]},
                     {"timeouts":{"request":"0s"},"backends":[]},
                     {"backends":[]}]}"#,
    );
    let timeouts: Vec<_> = t.rules().iter().map(|r| r.timeout).collect();
    assert_eq!(
        timeouts,
        [
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(90)),
            None,
            None
        ]
    );
}

#[test]
fn upstreams_are_distinct_and_include_mirrors_but_not_unavailable_backends() {
    let t = table(
        r#"{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendUrl":"http://shadow:8080","percent":10}}],
                      "backends":[{"url":"http://a:80","weight":1},{"url":"http://A","weight":1},
                                  {"url":"http://gone:80","weight":1,"unavailableStatus":500},
                                  {"url":"sentinel-not-a-url","weight":1,"unavailableStatus":500},
                                  {"url":"http://a:80","weight":1,"protocol":"h2c"}]},
                     {"backends":[{"url":"http://shadow:8080","weight":1}]}]}"#,
    );
    let mut got: Vec<String> = t
        .upstreams()
        .map(|u| format!("{} {:?}", u.authority, u.protocol))
        .collect();
    got.sort();
    assert_eq!(got, ["a:80 H2c", "a:80 Http1", "shadow:8080 Http1"]);
    let rule = &t.rules()[0];
    assert!(Arc::ptr_eq(
        &rule.backends[0].upstream,
        &rule.backends[1].upstream
    ));
    let Filter::RequestMirror(mirror) = &rule.filters[0] else {
        panic!("expected a mirror");
    };
    assert!(Arc::ptr_eq(&mirror.upstream, &t.rules()[1].backends[0].upstream));
    assert_eq!(
        rule.backends[3].unavailable_status,
        Some(http::StatusCode::INTERNAL_SERVER_ERROR)
    );
}

#[test]
fn route_table_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RouteTable>();
}

#[test]
fn spec_example_document_compiles_and_routes() {
    let mut cfg =
        config::Config::from_json_slice(include_bytes!("../../../config/testdata/spec-example.json"))
            .unwrap();
    // The example abbreviates its PEM and base64 values ("MIIB…"), so they are rejected, each with its path.
    let err = RouteTable::compile(&cfg).unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "rules[5].backends[0].tls.caBundle",
            "rules[5].backends[0].tls.clientCertPem",
            "rules[5].backends[0].tls.clientKeyPem",
            "rules[6].filters[0].requestMirror.tls.caBundle",
        ]
    );
    cfg.rules[5].backends[0].tls = None;
    cfg.rules[6].filters[0].request_mirror.as_mut().unwrap().tls = None;
    let t = RouteTable::compile(&cfg).unwrap();
    assert_eq!(t.rule_count(), cfg.rules.len());
    let req = Req::get("shop.example.com", "/api/items?debug=0")
        .header("x-tenant", "blue")
        .header("user-agent", "curl/8");
    let hit = t.lookup(&req.head()).unwrap();
    assert_eq!(
        (hit.rule_index, hit.arm_index, hit.hostname, hit.prefix),
        (0, 0, "shop.example.com", Some("/api"))
    );
    assert_eq!(rule_of(&t, &Req::get("x.example.com", "/old/a")), Some(1));
    assert_eq!(
        rule_of(
            &t,
            &Req::get("files.example.com", "/f/0123456789abcdef0123456789abcdef")
        ),
        Some(2)
    );
    // files.example.com has no arm for /other: falls through past *.example.com (no match) to the default.
    assert_eq!(rule_of(&t, &Req::get("files.example.com", "/other")), Some(8));
    assert_eq!(rule_of(&t, &Req::get("unknown.test", "/")), Some(8));
}

#[test]
fn big_indexes_find_every_hostname_and_path_and_nothing_else() {
    // 3,000 rules: 1,000 exact hostnames, 500 wildcard suffixes and 30 hosts with 50 paths each, so the
    // hash indexes hold thousands of keys and probes run through occupied slots.
    let mut rules = Vec::new();
    for i in 0..1000 {
        rules.push(format!(r#"{{"hostnames":["h{i}.example.com"],"backends":[]}}"#));
    }
    for i in 0..500 {
        rules.push(format!(r#"{{"hostnames":["*.w{i}.example.com"],"backends":[]}}"#));
    }
    for i in 0..1500 {
        let (host, path) = (i % 30, i / 30);
        rules.push(format!(
            r#"{{"hostnames":["p{host}.example.org"],"matches":[{{"path":{{"type":"PathPrefix","value":"/s{path}/"}}}},{{"path":{{"type":"Exact","value":"/e{path}"}}}}],"backends":[]}}"#
        ));
    }
    let t = table(&format!(r#"{{"rules":[{}]}}"#, rules.join(",")));
    for i in 0..1000 {
        assert_eq!(
            rule_of(&t, &Req::get(&format!("H{i}.example.com"), "/x")),
            Some(i)
        );
    }
    for i in 0..500 {
        assert_eq!(
            rule_of(&t, &Req::get(&format!("a.b.w{i}.example.com"), "/")),
            Some(1000 + i)
        );
    }
    for i in 0..1500 {
        let (host, path) = (i % 30, i / 30);
        let host = format!("p{host}.example.org");
        assert_eq!(
            route(&t, &Req::get(&host, &format!("/s{path}/a/b"))),
            Some((1500 + i, 0))
        );
        assert_eq!(
            route(&t, &Req::get(&host, &format!("/e{path}"))),
            Some((1500 + i, 1))
        );
        assert_eq!(route(&t, &Req::get(&host, &format!("/e{path}/x"))), None);
        assert_eq!(route(&t, &Req::get(&host, &format!("/s{path}x"))), None);
    }
    assert_eq!(rule_of(&t, &Req::get("h1000.example.com", "/")), None);
    assert_eq!(rule_of(&t, &Req::get("w1.example.com", "/")), None);
    assert_eq!(rule_of(&t, &Req::get("p30.example.org", "/s1/")), None);
}

#[test]
fn path_strings_of_255_bytes_and_more_are_found_in_scanned_and_hashed_buckets() {
    let long = format!("/{}", "a".repeat(70_000));
    // As long as `LONG_KEY`: kept in `long_keys`, like every longer one.
    let edge = format!("/{}", "b".repeat(usize::from(LONG_KEY) - 1));
    for fillers in [0, FEW_RUNS] {
        let mut matches = vec![
            format!(r#"{{"path":{{"type":"PathPrefix","value":"{long}"}}}}"#),
            format!(r#"{{"path":{{"type":"Exact","value":"{edge}"}}}}"#),
        ];
        matches.extend((0..fillers).map(|k| format!(r#"{{"path":{{"type":"Exact","value":"/f{k}"}}}}"#)));
        let t = table(&format!(
            r#"{{"rules":[{{"hostnames":["h"],"matches":[{}],"backends":[]}}]}}"#,
            matches.join(",")
        ));
        assert_eq!(t.buckets[0].paths.1 & HASHED != 0, fillers > 0);
        let hit = t.lookup(&Req::get("h", &format!("{long}/x")).head()).unwrap();
        assert_eq!((hit.arm_index, hit.prefix), (0, Some(long.as_str())));
        assert_eq!(route(&t, &Req::get("h", &long[..long.len() - 1])), None);
        assert_eq!(route(&t, &Req::get("h", &edge)), Some((0, 1)));
        assert_eq!(route(&t, &Req::get("h", &format!("{edge}b"))), None);
        assert_eq!(route(&t, &Req::get("h", &edge[..edge.len() - 1])), None);
    }
}

#[test]
fn arms_with_the_same_exact_header_conditions_share_one_run_and_stay_in_their_path_slots() {
    // Six path strings make the bucket hashed; rules 0, 2 and 4 need `x-tenant: blue`, rule 1 `x-tenant: red`
    // and `x-zone: a`, rule 3 the same two conditions in the other order (another list), rule 5 none.
    let conditions = [
        r#"[{"type":"Exact","name":"x-tenant","value":"blue"}]"#,
        r#"[{"type":"Exact","name":"x-tenant","value":"red"},{"type":"Exact","name":"x-zone","value":"a"}]"#,
        r#"[{"type":"Exact","name":"X-Tenant","value":"blue"}]"#,
        r#"[{"type":"Exact","name":"x-zone","value":"a"},{"type":"Exact","name":"x-tenant","value":"red"}]"#,
        r#"[{"type":"Exact","name":"x-tenant","value":"blue"}]"#,
        "[]",
    ];
    let rules: Vec<String> = conditions
        .iter()
        .enumerate()
        .map(|(i, headers)| {
            format!(
                r#"{{"hostnames":["h.example.com"],"matches":[{{"path":{{"type":"PathPrefix","value":"/p{i}"}},"headers":{headers}}}],"backends":[]}}"#
            )
        })
        .collect();
    let t = table(&format!(r#"{{"rules":[{}]}}"#, rules.join(",")));
    assert!(t.buckets[0].paths.1 & HASHED != 0);
    assert_eq!(t.header_runs.len(), 3);
    assert_eq!(t.headers.len(), 5);
    // Every run is one arm, kept in its slot with its conditions.
    assert!(t.arms.is_empty());
    let get = |path: &str| Req::get("h.example.com", path);
    for i in [0, 2, 4] {
        let path = format!("/p{i}/x");
        assert_eq!(rule_of(&t, &get(&path).header("x-tenant", "blue")), Some(i));
        assert_eq!(rule_of(&t, &get(&path).header("x-tenant", "red")), None);
        assert_eq!(rule_of(&t, &get(&path)), None);
    }
    for i in [1, 3] {
        let path = format!("/p{i}");
        let both = get(&path).header("x-tenant", "red").header("x-zone", "a");
        assert_eq!(rule_of(&t, &both), Some(i));
        assert_eq!(rule_of(&t, &get(&path).header("x-tenant", "red")), None);
        assert_eq!(rule_of(&t, &get(&path).header("x-zone", "a")), None);
    }
    assert_eq!(rule_of(&t, &get("/p5")), Some(5));
}

#[test]
fn prefixes_on_either_side_of_64_bytes_are_found_in_scanned_and_hashed_buckets() {
    // The cut walk takes 64-bit words below 64 bytes and 128-bit ones above: prefixes of 63, 64 and 65 bytes.
    let p63 = format!("/{}", "a".repeat(62));
    let p65 = format!("{p63}/b");
    let p64 = format!("/{}", "a".repeat(63));
    for fillers in [0, FEW_RUNS] {
        let mut matches: Vec<String> = [&p63, &p65, &p64]
            .iter()
            .map(|p| format!(r#"{{"path":{{"type":"PathPrefix","value":"{p}"}}}}"#))
            .collect();
        matches.extend((0..fillers).map(|k| format!(r#"{{"path":{{"type":"Exact","value":"/f{k}"}}}}"#)));
        let t = table(&format!(
            r#"{{"rules":[{{"hostnames":["h"],"matches":[{}],"backends":[]}}]}}"#,
            matches.join(",")
        ));
        assert_eq!(t.buckets[0].paths.1 & HASHED != 0, fillers > 0);
        let arm = |path: &str| route(&t, &Req::get("h", path)).map(|(_, arm)| arm);
        assert_eq!(arm(&p63), Some(0));
        assert_eq!(arm(&format!("{p63}/x")), Some(0));
        assert_eq!(arm(&format!("{p63}/bx")), Some(0));
        assert_eq!(arm(&p65), Some(1));
        assert_eq!(arm(&format!("{p65}/")), Some(1));
        assert_eq!(arm(&format!("{p65}/x/{}", "y".repeat(70))), Some(1));
        assert_eq!(arm(&p64), Some(2));
        assert_eq!(arm(&format!("{p64}/x")), Some(2));
        assert_eq!(arm(&format!("{p64}a/x")), None);
        assert_eq!(arm(&p63[..62]), None);
    }
}
