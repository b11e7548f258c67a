//! tunnelgate-gateway: placeholder until the crate lands (see crates/gateway).
