//! The pure routing core of tunnelgate's data plane.
//!
//! What this crate does:
//! - compiles a [`config::Config`] (the `PUT /config` document) into an immutable [`RouteTable`], validating every
//!   field and reporting each bad one with its JSON path ([`CompileError`]);
//! - matches a request head ([`RequestHead`]: method, host, raw path, raw query, headers) to the winning
//!   (rule, match arm) with the Gateway API semantics of `shared/spec/routing.md` §3–§4: hostname buckets
//!   (exact, wildcard longest suffix first, default) with fall-through, and a per-arm precedence key sorted once at
//!   compile time. [`RouteTable::lookup`] does not allocate;
//! - the pure parts of filters: redirect `Location` math, URL rewrite paths, header modifiers, mirror sampling,
//!   CORS origin matching and header computation, and weighted backend choice.
//!
//! What it does not do: any I/O, async, networking, TLS handshakes or body handling. The proxy crate owns those
//! and calls into this crate per request. Random numbers are passed in by the caller (`draw` arguments), so every
//! decision here is deterministic and testable.

pub use tunnelgate_config as config;

mod arm;
mod backend;
mod compile;
mod cors;
mod error;
mod filter;
mod host;
mod table;

pub use arm::Precedence;
pub use backend::{Backend, Upstream, UpstreamProtocol, UpstreamScheme};
pub use compile::{is_pem_certificates, is_pem_private_key};
pub use cors::Cors;
pub use error::{CompileError, FieldError};
pub use filter::{Filter, HeaderModifier, Mirror, Redirect, RedirectInput, Rewrite, is_hop_by_hop};
pub use host::normalize_host;
pub use table::{RequestHead, RouteHit, RouteTable, Rule};
