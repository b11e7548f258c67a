//! Bodies through the real proxy: ≥ 20 MB both ways, chunked uploads, trailers, and keep-alive reuse of backend
//! connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::convert::Infallible;

use bytes::Bytes;
use harness::{Proxy, single_route};
use http::{HeaderMap, HeaderValue, Method};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tunnelgate_testkit::{Backend, Client, ClientBody, Echo, fill_pattern, pattern_byte};

const TWENTY_MB: u64 = 20 * 1024 * 1024;

fn pattern_stream(total: u64, trailers: Option<HeaderMap>) -> ClientBody {
    const CHUNK: u64 = 256 * 1024;
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::new();
    let mut offset = 0;
    while offset < total {
        let n = CHUNK.min(total - offset);
        let mut buf = vec![0u8; n as usize];
        fill_pattern(&mut buf, offset);
        frames.push(Ok(Frame::data(Bytes::from(buf))));
        offset += n;
    }
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    StreamBody::new(futures::stream::iter(frames))
        .map_err(|e| match e {})
        .boxed()
}

#[tokio::test]
async fn twenty_megabytes_down_and_up() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("big").await;
    proxy.push(single_route(1, "", &backend.url())).await;

    let r = proxy
        .get("big.example.com", &format!("/stream/{TWENTY_MB}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len() as u64, TWENTY_MB);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(i as u64)),
        "download corrupted"
    );

    // Chunked upload (no Content-Length) over HTTP/1.1.
    let req = Client::request(Method::POST, proxy.data, "big.example.com", "/upload")
        .body(pattern_stream(TWENTY_MB, None))
        .unwrap();
    let echo = Echo::parse(&proxy.client.send(req).await.unwrap().body);
    assert_eq!(echo.body_len(), TWENTY_MB);
    assert!(echo.body_pattern_ok());
    assert_eq!(echo.header("transfer-encoding").as_deref(), Some("chunked"));

    // The same over h2c.
    let req = Client::request(Method::PUT, proxy.data, "big.example.com", "/upload")
        .body(pattern_stream(TWENTY_MB, None))
        .unwrap();
    let echo = Echo::parse(&proxy.client.send_h2(req).await.unwrap().body);
    assert_eq!(echo.body_len(), TWENTY_MB);
    assert!(echo.body_pattern_ok());
}

#[tokio::test]
async fn trailers_pass_both_ways() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("trailers").await;
    proxy
        .push(serde_json::json!({"version": 1, "rules": [
            {"hostnames": ["h1.example.com"], "backends": [{"url": backend.url(), "weight": 1}]},
            {"hostnames": ["h2.example.com"], "backends": [{"url": backend.url(), "weight": 1, "protocol": "h2c"}]}
        ]}))
        .await;
    for host in ["h2.example.com", "h1.example.com"] {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        let req = Client::request(Method::POST, proxy.data, host, "/trailers")
            .header("te", "trailers")
            .header("trailer", "x-checksum")
            .body(pattern_stream(1000, Some(trailers)))
            .unwrap();
        let r = proxy.client.send_h2(req).await.unwrap();
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(&r.body[..], b"trailers");
        let got = r
            .trailers
            .unwrap_or_else(|| panic!("no response trailers via {host}"));
        assert_eq!(got["x-backend-trailer"], "done", "{host}");
        assert_eq!(
            got["x-checksum"], "abc123",
            "request trailers reached the backend via {host}"
        );
    }
}

#[tokio::test]
async fn backend_connections_are_reused_across_1000_requests() {
    let proxy = Proxy::start().await;
    let backend = Backend::start("pool").await;
    proxy.push(single_route(1, "", &backend.url())).await;
    for i in 0..1000 {
        let r = proxy.get("pool.example.com", &format!("/n/{i}")).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(backend.requests(), 1000);
    let conns = backend.connections();
    assert!(
        conns <= 4,
        "1000 sequential requests used {conns} backend connections"
    );
}
