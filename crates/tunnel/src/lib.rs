//! tunnelgate-tunnel: the Cloudflare Tunnel client ("connector") and the edge side of the same protocol.
//!
//! It does:
//! - parse `TUNNEL_TOKEN` ([`token`]), discover edge addresses ([`edge_addr`]), and build the TLS/QUIC
//!   parameters cloudflared uses ([`transport`]);
//! - speak the wire protocol as a sans-IO core: capnp framing ([`framing`]), a minimal level-0 capnp RPC
//!   ([`rpc`]), the registration messages ([`registration`]), data-stream heads ([`stream`]) and the
//!   HTTP/2 response-header serialisation ([`serialized_headers`]);
//! - run HA connections over QUIC (quinn) or HTTP/2 (h2) with reconnect, backoff and graceful unregister
//!   ([`connector`]), handing every eyeball request to an [`origin::Origin`];
//! - provide the edge's side of registration and request forwarding ([`edge`]) for the local edge emulator
//!   and tests.
//!
//! It does not: route requests (that is the proxy's request service, plugged in as an `Origin`), proxy TCP
//! or UDP sessions (refused cleanly), or read environment variables (the binary does).

pub mod backoff;
pub mod connector;
pub mod edge;
pub mod edge_addr;
pub mod framing;
pub mod h2io;
pub mod metrics;
pub mod origin;
pub mod registration;
pub mod rpc;
pub mod serialized_headers;
pub mod stream;
pub mod token;
pub mod transport;

#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unimplemented,
    unused,
    missing_docs
)]
#[rustfmt::skip]
pub mod tunnel_capnp;

pub use connector::{EdgeSource, Protocol, ProtocolChoice, Tunnel, TunnelConfig};
pub use metrics::TunnelMetrics;
pub use origin::{BoxError, Origin, OriginBody, StreamInfo, TunnelUpgrade};
pub use token::{TokenError, TunnelToken};
