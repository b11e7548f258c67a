//! Edge discovery by SRV (tunnel.md §2) against real DNS servers on loopback: a "system" resolver over UDP and a
//! DNS-over-TLS server with a test CA, both answering from the same little zone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnelgate_testkit::TestPki;
use tunnelgate_tunnel::edge_addr::{Discovery, DotServer, discover_srv_with};

const SRV_NAME: &str = "_v2-origintunneld._tcp.argotunnel.com.";

/// The answer to `query` from a zone with the SRV record (two targets on port 7844) and their A records; any
/// other name is NXDOMAIN.
fn answer(query: &[u8]) -> Vec<u8> {
    let request = Message::from_vec(query).unwrap();
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    let q = &request.queries[0];
    let name = q.name().to_ascii();
    let record = |data: RData| Record::from_rdata(q.name().clone(), 60, data);
    match (name.as_str(), q.query_type()) {
        (SRV_NAME, RecordType::SRV) => {
            for (priority, target) in [(1, "region1.edge.test."), (2, "region2.edge.test.")] {
                let target = Name::from_ascii(target).unwrap();
                response
                    .answers
                    .push(record(RData::SRV(SRV::new(priority, 1, 7844, target))));
            }
        }
        ("region1.edge.test.", RecordType::A) => {
            for ip in [[127, 0, 0, 11], [127, 0, 0, 12]] {
                response
                    .answers
                    .push(record(RData::A(A::from(Ipv4Addr::from(ip)))));
            }
        }
        ("region2.edge.test.", RecordType::A) => {
            response
                .answers
                .push(record(RData::A(A::from(Ipv4Addr::new(127, 0, 0, 21)))));
        }
        ("region1.edge.test." | "region2.edge.test.", _) => {}
        _ => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().unwrap()
}

/// A UDP name server on loopback: it answers from the zone, or with SERVFAIL to everything when `broken`.
async fn udp_server(broken: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let seen = queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            seen.fetch_add(1, Ordering::SeqCst);
            let reply = if broken {
                let request = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::error_msg(request.metadata.id, OpCode::Query, ResponseCode::ServFail);
                r.queries = request.queries;
                r.to_vec().unwrap()
            } else {
                answer(&buf[..n])
            };
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    (addr, queries)
}

/// A DNS-over-TLS server on loopback (RFC 7858: two-byte length, then the message) answering from the zone,
/// with a certificate for `name` from `pki`. Counts the queries it answers.
async fn dot_server(pki: &TestPki, name: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let config = pki.leaf(&[name], &[]).server_config(None, &[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let seen = queries.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                loop {
                    let Ok(len) = tls.read_u16().await else {
                        return;
                    };
                    let mut query = vec![0u8; usize::from(len)];
                    if tls.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let reply = answer(&query);
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    if tls.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, queries)
}

fn udp_resolver(addr: SocketAddr) -> ResolverConfig {
    let mut server = NameServerConfig::udp(addr.ip());
    server.connections[0].port = addr.port();
    ResolverConfig::from_parts(None, Vec::new(), vec![server])
}

fn dot(addr: SocketAddr, pki: &TestPki) -> DotServer {
    DotServer {
        addr,
        server_name: "cloudflare-dns.com".to_owned(),
        ca_pem: Some(pki.ca_pem.clone()),
        timeout: Duration::from_secs(5),
    }
}

/// A "system" resolver (answering, or SERVFAIL to everything) and a DNS-over-TLS fallback whose certificate
/// carries `dot_name`, with their query counters.
struct Servers {
    discovery: Discovery,
    dot_addr: SocketAddr,
    system_queries: Arc<AtomicUsize>,
    dot_queries: Arc<AtomicUsize>,
}

async fn servers(system_broken: bool, dot_name: &str) -> Servers {
    let pki = TestPki::new();
    let (system, system_queries) = udp_server(system_broken).await;
    let (dot_addr, dot_queries) = dot_server(&pki, dot_name).await;
    Servers {
        discovery: Discovery {
            primary: Some(udp_resolver(system)),
            fallback: Some(dot(dot_addr, &pki)),
        },
        dot_addr,
        system_queries,
        dot_queries,
    }
}

fn ips(region: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v = region.to_vec();
    v.sort();
    v
}

fn edge(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 7844)
}

#[tokio::test]
async fn the_system_resolver_answers_and_the_fallback_is_not_asked() {
    let s = servers(false, "cloudflare-dns.com").await;
    let regions = discover_srv_with(None, &s.discovery).await.unwrap();
    assert_eq!(ips(&regions[0]), [edge(11), edge(12)]);
    assert_eq!(ips(&regions[1]), [edge(21)]);
    assert_eq!(s.dot_queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failing_system_resolver_falls_back_to_dns_over_tls() {
    let s = servers(true, "cloudflare-dns.com").await;
    let regions = discover_srv_with(None, &s.discovery).await.unwrap();
    assert_eq!(ips(&regions[0]), [edge(11), edge(12)]);
    assert_eq!(ips(&regions[1]), [edge(21)]);
    assert!(s.system_queries.load(Ordering::SeqCst) >= 1);
    // The SRV query and the address lookups of both targets went over TLS.
    assert!(s.dot_queries.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn without_a_fallback_the_system_resolver_error_stands() {
    let mut s = servers(true, "cloudflare-dns.com").await;
    s.discovery.fallback = None;
    let err = discover_srv_with(None, &s.discovery)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(SRV_NAME), "{err}");
    assert!(!err.contains("DNS-over-TLS"), "{err}");
    assert_eq!(s.dot_queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_dot_server_with_the_wrong_certificate_is_not_trusted_and_both_failures_are_reported() {
    let s = servers(true, "dns.example.net").await;
    let err = discover_srv_with(None, &s.discovery)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("DNS-over-TLS"), "{err}");
    assert!(err.contains(&s.dot_addr.to_string()), "{err}");
    assert_eq!(s.dot_queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_region_changes_the_service_name() {
    let s = servers(false, "cloudflare-dns.com").await;
    // `_us-v2-origintunneld` is not in the zone: NXDOMAIN from both servers.
    let err = discover_srv_with(Some("us"), &s.discovery)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("_us-v2-origintunneld._tcp.argotunnel.com."), "{err}");
}
