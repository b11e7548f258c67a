//! tunnelgate-tunnel: placeholder until the crate lands (see crates/tunnel).
