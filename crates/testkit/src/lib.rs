//! Test support for tunnelgate's black-box tests.
//!
//! What this crate does: starts real backends on loopback ([`Backend`]: HTTP/1.1 and h2c on one port, optionally
//! TLS, with WebSocket echo), counts the connections and requests they see, sends real HTTP requests
//! ([`Client`]), mints throw-away certificates ([`TestPki`]), and collects OTLP/HTTP trace exports
//! ([`otlp::OtlpCollector`]).
//!
//! What it does not do: fake anything. Every byte crosses a real socket. It is for tests only and never ships in
//! the binary.

// A harness that cannot bind a port or build a certificate must fail the test at once, with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod backend;
mod client;
pub mod otlp;
mod pki;

pub use backend::{Backend, BackendOptions, Echo, Recorded};
pub use client::{Client, ClientBody, Reply, empty, full, put_config};
pub use pki::{ServerCert, TestPki};

/// Deterministic byte pattern used by streaming endpoints and uploads: byte `i` is `(i * 31 + 7) % 251`.
pub fn pattern_byte(i: u64) -> u8 {
    ((i.wrapping_mul(31).wrapping_add(7)) % 251) as u8
}

/// Fills `buf` with the pattern starting at absolute offset `offset`.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + k as u64);
    }
}
