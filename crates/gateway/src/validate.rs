//! Pre-push validation (`controller.md` §5.6): each rule is checked with the proxy's own compiler, so that a
//! pushed document is never rejected with a 400.

use tunnelgate_config as wire;

/// Compiles `rule` alone as the proxy would; the error names the first bad field relative to the rule.
pub(crate) fn check_rule(rule: &wire::RouteRule) -> Result<(), String> {
    let document = wire::Config {
        version: 0,
        rules: vec![rule.clone()],
        has_grpc_route: false,
    };
    match tunnelgate_route::RouteTable::compile(&document) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.first() {
            Some(first) => {
                let path = first.path.strip_prefix("rules[0].").unwrap_or(&first.path);
                format!("{} at {path}", first.message)
            }
            None => e.to_string(),
        }),
    }
}
