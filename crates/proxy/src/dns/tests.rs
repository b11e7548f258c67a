//! The resolver against a real name server on loopback (UDP) that counts its queries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use super::Dns;

/// A name server for `app.test.` only: an A record with `ttl` seconds and the address 127.0.0.`last` (which the
/// test may change), NXDOMAIN for anything else. Counts the A queries it answers.
struct Server {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    last: Arc<AtomicU32>,
}

async fn server(ttl: u32) -> Server {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(AtomicU32::new(7));
    let (seen, octet) = (queries.clone(), last.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let request = Message::from_vec(&buf[..n]).unwrap();
            let mut response = Message::response(request.metadata.id, OpCode::Query);
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            response.queries = request.queries.clone();
            let q = &request.queries[0];
            match (q.name().to_ascii().as_str(), q.query_type()) {
                ("app.test.", RecordType::A) => {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let ip = Ipv4Addr::new(127, 0, 0, octet.load(Ordering::SeqCst) as u8);
                    response
                        .answers
                        .push(Record::from_rdata(q.name().clone(), ttl, RData::A(A::from(ip))));
                }
                ("app.test.", _) => {}
                _ => response.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
        }
    });
    Server { addr, queries, last }
}

fn dns(server: &Server) -> Dns {
    let mut ns = NameServerConfig::udp(server.addr.ip());
    ns.connections[0].port = server.addr.port();
    Dns::with_config(ResolverConfig::from_parts(None, Vec::new(), vec![ns])).unwrap()
}

fn at(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], 8080))
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl_then_asked_again() {
    let s = server(1).await;
    let dns = dns(&s);
    assert_eq!(dns.resolve("app.test.", 8080).await.unwrap(), [at(7)]);
    assert_eq!(dns.resolve("app.test.", 8080).await.unwrap(), [at(7)]);
    assert_eq!(
        s.queries.load(Ordering::SeqCst),
        1,
        "the second lookup came from the cache"
    );

    // The record changes; the cache keeps the old answer until its TTL has run out.
    s.last.store(9, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(dns.resolve("app.test.", 8080).await.unwrap(), [at(9)]);
    assert_eq!(s.queries.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn ip_literals_are_not_looked_up_and_unknown_names_are_errors() {
    let s = server(60).await;
    let dns = dns(&s);
    assert_eq!(
        dns.resolve("127.0.0.3", 80).await.unwrap(),
        [SocketAddr::from(([127, 0, 0, 3], 80))]
    );
    assert_eq!(
        dns.resolve("::1", 443).await.unwrap(),
        ["[::1]:443".parse().unwrap()]
    );
    assert_eq!(s.queries.load(Ordering::SeqCst), 0);
    let err = dns.resolve("missing.test.", 80).await.unwrap_err();
    assert!(err.to_string().contains("missing.test."), "{err}");
}

#[tokio::test]
async fn backend_ip_literals_resolve_without_the_system_resolver() {
    assert_eq!(
        super::resolve_backend("10.1.2.3", 8080).await.unwrap(),
        [SocketAddr::from(([10, 1, 2, 3], 8080))]
    );
    assert_eq!(
        super::resolve_backend("fd00::7", 443).await.unwrap(),
        ["[fd00::7]:443".parse().unwrap()]
    );
}
