use super::*;

#[test]
fn invalid_regular_expression_is_reported_with_its_path() {
    let cfg = config::Config::from_json_slice(
        br#"{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"("}}],"backends":[]}]}"#,
    )
    .unwrap();
    let err = compile(&cfg).unwrap_err();
    assert_eq!(err.errors[0].path, "rules[0].matches[0].path.value");
    assert!(err.errors[0].message.starts_with("invalid regular expression: "));
}
