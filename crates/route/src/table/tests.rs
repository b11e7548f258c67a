use super::*;

fn table(json: &str) -> RouteTable {
    let cfg = config::Config::from_json_slice(json.as_bytes()).unwrap();
    RouteTable::compile(&cfg).unwrap()
}

#[test]
fn empty_table_matches_nothing() {
    let t = RouteTable::empty();
    let headers = HeaderMap::new();
    let req = RequestHead {
        method: &Method::GET,
        host: "a.example.com",
        path: "/",
        query: None,
        headers: &headers,
    };
    assert!(t.lookup(&req).is_none());
    let t = table(r#"{"rules":[{"backends":[]}]}"#);
    let hit = t.lookup(&req).unwrap();
    assert_eq!((hit.rule_index, hit.arm_index, hit.hostname), (0, 0, ""));
}
