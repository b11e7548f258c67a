//! Tunnel decoders on bytes an edge (or a hostile middlebox) controls: the data-stream preamble, the framed
//! `ConnectRequest` and its conversion into an HTTP head, `ConnectResponse` (edge side), and the RPC messages
//! of control and edge-initiated streams.
//!
//! The first input byte picks the shape, so the fuzzer does not have to discover signatures first:
//! - 0: a data stream after its signature and version: one `ConnectRequest`, then the request body;
//! - 1: a sequence of framed RPC messages;
//! - 2: a framed `ConnectResponse` (what the edge side reads back);
//! - 3: a raw stream, signature included.
//!
//! Properties, beyond "nothing panics":
//! - the decoder consumes exactly one framed message and leaves the body bytes in the buffer;
//! - a decoded `ConnectRequest` re-encodes and decodes to the same value;
//! - decoding work is bounded: a decoded request has no more metadata entries than its message has bytes, or
//!   than `MAX_METADATA_ENTRIES` (zero-sized list elements cost no bytes; libFuzzer's `-malloc_limit_mb` catches
//!   other amplification).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tunnelgate_tunnel::framing;
use tunnelgate_tunnel::registration::{CloudflaredCall, ConnectionResponse, RegistrationCall};
use tunnelgate_tunnel::rpc::{
    CLOUDFLARED_SERVER_ID, CONFIGURATION_MANAGER_ID, Decoded, Incoming, REGISTRATION_SERVER_ID, ReturnOutcome,
    SESSION_MANAGER_ID,
};
use tunnelgate_tunnel::stream::{self, ConnectRequest, ConnectResponse, StreamKind};

fn data_stream(after_preamble: &[u8]) {
    let mut buf = BytesMut::from(after_preamble);
    let msg = match framing::try_decode(&mut buf) {
        Ok(Some(msg)) => msg,
        Ok(None) | Err(_) => return,
    };
    let consumed = after_preamble.len() - buf.len();
    assert_eq!(
        framing::framed_len(after_preamble).ok().flatten(),
        Some(consumed),
        "decoder consumed a different length than the frame declares"
    );
    assert_eq!(&buf[..], &after_preamble[consumed..], "body bytes were changed");
    let Ok(req) = ConnectRequest::read(&msg) else {
        return;
    };
    assert!(
        req.metadata.len() <= consumed.max(stream::MAX_METADATA_ENTRIES as usize),
        "{} metadata entries decoded from a {consumed}-byte message",
        req.metadata.len()
    );
    let _ = req.to_head();
    let encoded = req.encode();
    let mut again = BytesMut::from(&encoded[..]);
    let msg = framing::try_decode(&mut again)
        .expect("re-encoded request frames")
        .expect("re-encoded request is complete");
    assert!(again.is_empty());
    let back = ConnectRequest::read(&msg).expect("re-encoded request decodes");
    assert_eq!(back, req);
}

fn rpc_messages(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    // A stream carries several messages; stop at the first that does not frame.
    for _ in 0..16 {
        let Ok(Some(msg)) = framing::try_decode(&mut buf) else {
            return;
        };
        let incoming = Incoming(msg);
        let Ok(decoded) = incoming.decode() else {
            continue;
        };
        match decoded {
            Decoded::Call {
                interface_id,
                method_id,
                params,
                ..
            } => {
                let _ = RegistrationCall::decode(interface_id, method_id, params);
                let _ = CloudflaredCall::decode(interface_id, method_id, params);
                // Also read the parameters as every call we serve, whatever the message claims.
                for method in 0..3 {
                    let _ = RegistrationCall::decode(REGISTRATION_SERVER_ID, method, params);
                }
                for id in [CONFIGURATION_MANAGER_ID, SESSION_MANAGER_ID, CLOUDFLARED_SERVER_ID] {
                    for method in 0..2 {
                        let _ = CloudflaredCall::decode(id, method, params);
                    }
                }
            }
            Decoded::Return {
                outcome: ReturnOutcome::Results { content, .. },
                ..
            } => {
                let _ = ConnectionResponse::read(content);
            }
            _ => {}
        }
    }
}

fn connect_response(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    if let Ok(Some(msg)) = framing::try_decode(&mut buf)
        && let Ok(resp) = ConnectResponse::read(&msg)
    {
        let _ = resp.to_head();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    match shape % 4 {
        0 => data_stream(rest),
        1 => rpc_messages(rest),
        2 => connect_response(rest),
        _ => {
            let Some(signature) = rest.get(..6).and_then(|s| <[u8; 6]>::try_from(s).ok()) else {
                return;
            };
            match stream::classify(&signature) {
                StreamKind::Data => data_stream(rest.get(8..).unwrap_or_default()),
                StreamKind::Rpc => rpc_messages(&rest[6..]),
                StreamKind::Unknown => {}
            }
        }
    }
});
