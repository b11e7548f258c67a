//! tunnelgate-route: placeholder until the crate lands (see crates/route).
