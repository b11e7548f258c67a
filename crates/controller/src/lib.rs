//! tunnelgate-controller: placeholder until the crate lands (see crates/controller).
