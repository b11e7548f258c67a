//! Arbitrary request heads against a fixed table, plus the filter math of the hit. Nothing may panic.
#![no_main]

// Each target uses one of the shared bodies.
#[allow(dead_code)]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::lookup_request(data));
