//! Regression inputs from fuzzing the tunnel decoders (`fuzz/fuzz_targets/tunnel_stream.rs`): hostile
//! data-stream heads must fail alone, quickly and without large allocations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use tunnelgate_tunnel::framing;
use tunnelgate_tunnel::stream::{ConnectRequest, ConnectResponse, MAX_METADATA_ENTRIES};

/// A framed one-segment message whose root is a `ConnectRequest` (or `ConnectResponse`: both keep `metadata`
/// in pointer 1) with a metadata list of `n` zero-sized structs: 48 bytes on the wire whatever `n` is.
fn zero_sized_metadata_list(n: u32) -> Vec<u8> {
    let words: [u64; 5] = [
        // root: struct pointer to the next word, 1 data word, 2 pointers
        0x0002_0001_0000_0000,
        // data: type = http
        0,
        // pointer 0: dest = null
        0,
        // pointer 1: inline-composite list right after, 0 words of content
        0x0000_0007_0000_0001,
        // list tag: n elements of 0 data words and 0 pointers
        u64::from(n) << 2,
    ];
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> capnp::message::Reader<capnp::serialize::OwnedSegments> {
    let mut buf = BytesMut::from(bytes);
    framing::try_decode(&mut buf).unwrap().expect("a complete frame")
}

/// Found by `tunnel_stream` (malloc of 384 MB from a 49-byte input): 8 million zero-sized metadata entries
/// cost the sender nothing but made the reader allocate and walk all of them.
#[test]
fn a_metadata_list_of_millions_of_zero_sized_entries_is_refused() {
    let frame = zero_sized_metadata_list(8_000_000);
    assert_eq!(frame.len(), 48);
    let err = ConnectRequest::read(&decode(&frame)).expect_err("an amplified metadata list is refused");
    assert!(err.to_string().contains("metadata entries"), "{err}");
    let err = ConnectResponse::read(&decode(&frame)).expect_err("the edge side refuses it too");
    assert!(err.to_string().contains("metadata entries"), "{err}");
}

#[test]
fn metadata_lists_up_to_the_limit_still_decode() {
    let msg = decode(&zero_sized_metadata_list(MAX_METADATA_ENTRIES));
    let req = ConnectRequest::read(&msg).unwrap();
    assert_eq!(req.metadata.len(), MAX_METADATA_ENTRIES as usize);
    assert!(req.metadata.iter().all(|m| m.key.is_empty() && m.val.is_empty()));
    // Its destination is null, so the stream is answered with an error, alone.
    assert!(req.to_head().is_err());
}

#[test]
fn truncated_and_oversized_frames_fail_without_consuming_the_stream() {
    let frame = zero_sized_metadata_list(1);
    for cut in 0..frame.len() {
        let mut buf = BytesMut::from(&frame[..cut]);
        assert!(framing::try_decode(&mut buf).unwrap().is_none(), "prefix {cut}");
        assert_eq!(buf.len(), cut);
    }
    // A segment table that claims 4 GiB is refused from its first 8 bytes.
    let mut buf = BytesMut::from(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..]);
    assert!(framing::try_decode(&mut buf).is_err());
}

/// The two inputs `tunnel_stream` found, as it saved them (first byte: the shape the target fed them to).
#[test]
fn fuzzer_found_amplified_metadata_lists_are_refused() {
    // Shape 0: a data stream after its preamble; 450,560 metadata entries from a 192-byte ConnectRequest.
    let crash = include_bytes!("fuzz_regressions/tunnel_stream-crash-710a08cc");
    assert_eq!(crash[0], 0);
    let msg = decode(&crash[1..]);
    assert!(ConnectRequest::read(&msg).is_err());
    // Shape 2: a ConnectResponse read by the edge side; a 302 MB allocation before the fix.
    let oom = include_bytes!("fuzz_regressions/tunnel_stream-oom-d4727721");
    assert_eq!(oom[0], 2);
    let msg = decode(&oom[1..]);
    assert!(ConnectResponse::read(&msg).is_err());
}
