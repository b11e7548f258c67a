//! The `PUT /config` and `--config FILE` path: arbitrary bytes → JSON or YAML decode → compile.
//!
//! Properties, beyond "nothing panics":
//! - a decoded document re-encodes to JSON that decodes to the same document (the status and file-mode paths
//!   rely on that round trip);
//! - a rejected document always names at least one field, with a non-empty JSON path (the config API reports it);
//! - an accepted document's table has exactly the document's rules and version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnelgate_config::Config;
use tunnelgate_route::RouteTable;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = Config::from_json_or_yaml(data) else {
        return;
    };
    let encoded = cfg.to_json_vec();
    let again = match Config::from_json_slice(&encoded) {
        Ok(c) => c,
        Err(e) => panic!("re-encoded document does not decode: {e} at {:?}", e.path),
    };
    assert_eq!(again, cfg, "JSON round trip changed the document");

    match RouteTable::compile(&cfg) {
        Ok(table) => {
            assert_eq!(table.rule_count(), cfg.rules.len());
            assert_eq!(table.version(), cfg.version);
            for (i, rule) in table.rules().iter().enumerate() {
                assert!(rule.arm_count() >= 1, "rule {i} has no arm");
                let weights: u64 = cfg.rules[i]
                    .backends
                    .iter()
                    .map(|b| u64::try_from(b.weight).unwrap_or(0))
                    .sum();
                // The weighted choice stays in range for every draw the proxy can make.
                for draw in [0u64, 1, weights / 2, weights.saturating_sub(1), u64::MAX] {
                    if let Some(b) = rule.choose_backend(|n| if n == 0 { 0 } else { draw % n }) {
                        assert!(b < rule.backends.len(), "backend index {b} out of range");
                    }
                }
            }
            let _ = table.upstreams().count();
        }
        Err(e) => {
            let first = e.first().expect("a rejected document names a field");
            assert!(!first.path.is_empty(), "error without a path: {}", first.message);
            assert!(!first.message.is_empty());
        }
    }
});
