//! Pre-push validation (`controller.md` §5.6): the candidate document is compiled with the proxy's own
//! compiler, so that a pushed document is never rejected with a 400. The compiler reports every bad field with
//! its JSON path, so one pass tells which rules to drop.

use std::collections::HashMap;

use tunnelgate_config as wire;
use tunnelgate_route::RouteTable;

/// Index of every rule of `document` the proxy would reject → `<error> at <path within the rule>` for the
/// first bad field of that rule.
pub(crate) fn invalid_rules(document: &wire::Config) -> HashMap<usize, String> {
    let mut invalid = HashMap::new();
    let Err(error) = RouteTable::compile(document) else {
        return invalid;
    };
    for field in &error.errors {
        match rule_index(&field.path) {
            Some((index, path)) => {
                invalid
                    .entry(index)
                    .or_insert_with(|| format!("{} at {path}", field.message));
            }
            // An error outside any rule cannot come from our rules; check them one by one instead.
            None => return invalid_rules_one_by_one(document),
        }
    }
    invalid
}

/// `rules[12].matches[0].path.value` → (12, `matches[0].path.value`).
fn rule_index(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix("rules[")?;
    let (index, rest) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    Some((index, rest.strip_prefix('.').unwrap_or(rest)))
}

fn invalid_rules_one_by_one(document: &wire::Config) -> HashMap<usize, String> {
    let mut invalid = HashMap::new();
    for (index, rule) in document.rules.iter().enumerate() {
        let single = wire::Config {
            version: 0,
            rules: vec![rule.clone()],
            has_grpc_route: false,
        };
        if let Err(e) = RouteTable::compile(&single) {
            let message = match e.first() {
                Some(first) => {
                    let path = rule_index(&first.path).map_or(first.path.as_str(), |(_, p)| p);
                    format!("{} at {path}", first.message)
                }
                None => e.to_string(),
            };
            invalid.insert(index, message);
        }
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_index_splits_the_document_path() {
        assert_eq!(
            rule_index("rules[12].matches[0].path.value"),
            Some((12, "matches[0].path.value"))
        );
        assert_eq!(rule_index("rules[3]"), Some((3, "")));
        assert_eq!(rule_index("version"), None);
    }

    #[test]
    fn only_the_bad_rules_are_reported() {
        let document: wire::Config = serde_json::from_str(
            r#"{"rules": [
                {"matches": [{"path": {"type": "RegularExpression", "value": "(("}}], "backends": []},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/ok"}}], "backends": []},
                {"backends": [{"url": "ftp://x", "weight": 1}]}
            ]}"#,
        )
        .unwrap();
        let invalid = invalid_rules(&document);
        assert_eq!(invalid.len(), 2, "{invalid:?}");
        assert!(
            invalid[&0].ends_with("at matches[0].path.value"),
            "{}",
            invalid[&0]
        );
        assert!(invalid[&2].ends_with("at backends[0].url"), "{}", invalid[&2]);
    }
}
