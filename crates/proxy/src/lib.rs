//! tunnelgate-proxy: placeholder until the crate lands (see crates/proxy).
