//! Hostile HTTP on the data listener, sent byte for byte over raw TCP: oversized heads, request smuggling
//! shapes, bad Host headers, invalid header bytes and slow clients. Every case must be answered (or cut) by
//! the HTTP layer without reaching a backend, and without the proxy buffering what the client keeps sending.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;
mod harness;

use std::time::{Duration, Instant};

use hardening_support::{RawReply, raw_exchange, read_head, read_until_close};
use harness::Proxy;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tunnelgate_proxy::ProxySettings;
use tunnelgate_testkit::Backend;

const WAIT: Duration = Duration::from_secs(10);

/// A proxy routing every host to one echo backend, with a short header-read timeout for the slow-client tests.
async fn proxy_with_backend() -> (Proxy, Backend) {
    let proxy = Proxy::start_with(ProxySettings {
        header_read_timeout: Duration::from_secs(1),
        ..ProxySettings::loopback()
    })
    .await;
    let backend = Backend::start("echo").await;
    proxy
        .push(json!({"version": 1, "rules": [
            {"hostnames": ["named.example.com"], "backends": [{"url": backend.url(), "weight": 1}]},
            {"backends": [{"url": backend.url(), "weight": 1}]}
        ]}))
        .await;
    (proxy, backend)
}

async fn send(proxy: &Proxy, request: &[u8]) -> RawReply {
    raw_exchange(proxy.data, request, WAIT).await
}

fn assert_status(reply: &RawReply, want: u16, case: &str) {
    assert_eq!(reply.status(), Some(want), "{case}: got {:?}", reply.text());
}

#[tokio::test]
async fn a_well_formed_raw_request_is_proxied() {
    // The control case: the raw client below is not what makes the other cases fail.
    let (proxy, backend) = proxy_with_backend().await;
    let reply = send(
        &proxy,
        b"GET /ok HTTP/1.1\r\nHost: named.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_status(&reply, 200, "control");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn request_line_over_the_uri_limit_gets_414() {
    let (proxy, backend) = proxy_with_backend().await;
    let mut req = b"GET /".to_vec();
    req.extend(std::iter::repeat_n(b'a', 70_000));
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = send(&proxy, &req).await;
    assert_status(&reply, 414, "70 kB request target");
    assert!(reply.closed, "the connection is closed after a 414");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn too_many_headers_or_one_huge_header_get_431() {
    let (proxy, backend) = proxy_with_backend().await;
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_status(&send(&proxy, &many).await, 431, "200 header fields");

    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'b', 600 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_status(&send(&proxy, &huge).await, 431, "one 600 KiB header");
    assert_eq!(backend.requests(), 0);
}

/// A client that never ends its head is answered and cut once the head buffer limit is reached: the proxy
/// does not keep reading (and buffering) what the client keeps sending.
#[tokio::test]
async fn endless_heads_are_cut_early_with_bounded_buffering() {
    let (proxy, backend) = proxy_with_backend().await;
    for (case, start, filler) in [
        ("endless request line", &b"GET /"[..], &b"aaaaaaaaaaaaaaaa"[..]),
        (
            "endless header block",
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
            &b"X-Pad: 0123456789\r\n"[..],
        ),
    ] {
        let mut stream = TcpStream::connect(proxy.data).await.unwrap();
        stream.write_all(start).await.unwrap();
        let chunk: Vec<u8> = filler.iter().copied().cycle().take(64 * 1024).collect();
        // Far more than any socket buffer on loopback can hold: if the proxy kept reading, this would all go.
        let budget = 64usize << 20;
        let mut written = 0usize;
        while written < budget {
            match tokio::time::timeout(WAIT, stream.write_all(&chunk)).await {
                Ok(Ok(())) => written += chunk.len(),
                Ok(Err(_)) => break,
                Err(_) => panic!("{case}: writes stalled without the proxy answering"),
            }
        }
        assert!(
            written < budget,
            "{case}: the proxy accepted {written} bytes of an unfinished head"
        );
        let reply = read_until_close(&mut stream, WAIT).await;
        // Depending on where the limit hits, the status line may or may not make it before the reset.
        if let Some(status) = reply.status() {
            assert!(status == 431 || status == 414, "{case}: status {status}");
        }
        assert!(reply.closed, "{case}: connection left open");
    }
    assert_eq!(backend.requests(), 0);
}

/// Content-Length together with Transfer-Encoding (RFC 9112 §6.1) is refused with 400 and the connection is
/// closed: the request never reaches a backend, and nothing after it on the connection is read as a request.
#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400_and_cannot_smuggle_a_request() {
    let (proxy, backend) = proxy_with_backend().await;
    for (case, head) in [
        (
            "CL then TE",
            "Content-Length: 44\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 44\r\n",
        ),
        (
            "lower case, TE list ending in chunked",
            "content-length: 0\r\ntransfer-encoding: gzip, chunked\r\n",
        ),
    ] {
        let before = backend.requests();
        let req = format!(
            "POST /first HTTP/1.1\r\nHost: x\r\n{head}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let reply = send(&proxy, req.as_bytes()).await;
        assert_status(&reply, 400, case);
        assert!(
            reply.closed,
            "{case}: connection kept open after an ambiguous request"
        );
        assert_eq!(reply.responses(), 1, "{case}: {}", reply.text());
        assert_eq!(
            backend.requests(),
            before,
            "{case}: a request reached the backend"
        );
    }
}

/// The check follows a keep-alive connection through Content-Length and chunked bodies (whose contents look like
/// an ambiguous head), so a later ambiguous request on the same connection is refused too, after the earlier
/// requests were answered normally.
#[tokio::test]
async fn an_ambiguous_request_later_on_a_keep_alive_connection_gets_400() {
    let (proxy, backend) = proxy_with_backend().await;
    let decoy = "POST /decoy HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let stream = format!(
        "POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n{decoy}\
         POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{len:x};ext\r\n{decoy}\r\n0\r\nX-Trailer: t\r\n\r\n\
         POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n\
         GET /four HTTP/1.1\r\nHost: x\r\n\r\n",
        len = decoy.len()
    );
    let reply = send(&proxy, stream.as_bytes()).await;
    let text = reply.text();
    assert_eq!(reply.responses(), 3, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(reply.closed);
    let paths: Vec<_> = backend.recorded().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/one", "/two"]);
}

#[tokio::test]
async fn invalid_framing_headers_get_400() {
    let (proxy, backend) = proxy_with_backend().await;
    for (case, head) in [
        (
            "two different Content-Length",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
        ("Content-Length list that disagrees", "Content-Length: 5, 6\r\n"),
        ("non-numeric Content-Length", "Content-Length: abc\r\n"),
        ("signed Content-Length", "Content-Length: +5\r\n"),
        ("negative Content-Length", "Content-Length: -1\r\n"),
        (
            "Transfer-Encoding without final chunked",
            "Transfer-Encoding: chunked, gzip\r\n",
        ),
        ("unknown Transfer-Encoding", "Transfer-Encoding: identity\r\n"),
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: x\r\n{head}\r\nhello");
        let reply = send(&proxy, req.as_bytes()).await;
        assert_status(&reply, 400, case);
        assert!(reply.closed, "{case}: connection left open");
    }
    let reply = send(
        &proxy,
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_status(&reply, 400, "Transfer-Encoding on HTTP/1.0");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn missing_duplicate_or_malformed_host_gets_400() {
    let (proxy, backend) = proxy_with_backend().await;
    for (case, head) in [
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n"),
        (
            "two Host fields",
            "GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n",
        ),
        ("space in Host", "GET / HTTP/1.1\r\nHost: a b.example.com\r\n"),
        ("slash in Host", "GET / HTTP/1.1\r\nHost: a.example.com/x\r\n"),
        (
            "userinfo in Host",
            "GET / HTTP/1.1\r\nHost: user@a.example.com\r\n",
        ),
        ("unclosed IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1\r\n"),
        (
            "non-numeric port",
            "GET / HTTP/1.1\r\nHost: a.example.com:http\r\n",
        ),
        (
            "port out of range",
            "GET / HTTP/1.1\r\nHost: a.example.com:99999\r\n",
        ),
        ("empty Host", "GET / HTTP/1.1\r\nHost: \r\n"),
    ] {
        let reply = send(&proxy, format!("{head}\r\n").as_bytes()).await;
        assert_status(&reply, 400, case);
        assert!(reply.closed, "{case}: connection left open after a 400");
    }
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn host_forms_that_are_valid_still_route() {
    let (proxy, backend) = proxy_with_backend().await;
    for (case, req) in [
        // HTTP/1.0 has no Host requirement: routing.md §2.1 gives it the empty host (the default bucket).
        ("HTTP/1.0 without Host", "GET /a HTTP/1.0\r\n\r\n"),
        (
            "port and trailing dot",
            "GET /b HTTP/1.1\r\nHost: NAMED.example.com.:8080\r\nConnection: close\r\n\r\n",
        ),
        (
            "IPv6 literal",
            "GET /c HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute form",
            "GET http://named.example.com/d HTTP/1.1\r\nHost: named.example.com\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let reply = send(&proxy, req.as_bytes()).await;
        assert_status(&reply, 200, case);
    }
    assert_eq!(backend.requests(), 4);
}

#[tokio::test]
async fn invalid_header_bytes_get_400() {
    let (proxy, backend) = proxy_with_backend().await;
    for (case, line) in [
        ("NUL in a value", &b"X-A: a\x00b\r\n"[..]),
        ("bare CR in a value", b"X-A: a\rb\r\n"),
        ("DEL in a value", b"X-A: a\x7fb\r\n"),
        ("space in a name", b"X A: b\r\n"),
        ("space before the colon", b"X-A : b\r\n"),
        ("no colon", b"X-A b\r\n"),
        ("non-token byte in a name", b"X-\xc3\xa9: b\r\n"),
        ("obsolete line folding", b"X-A: a\r\n b\r\n"),
    ] {
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        req.extend_from_slice(line);
        req.extend_from_slice(b"\r\n");
        let reply = send(&proxy, &req).await;
        assert_status(&reply, 400, case);
        assert!(reply.closed, "{case}: connection left open");
    }
    let reply = send(&proxy, b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_status(&reply, 400, "control byte in the request target");
    assert_eq!(backend.requests(), 0);
}

/// Slow-loris: a head trickled in a byte at a time is cut at the header-read timeout.
#[tokio::test]
async fn a_trickled_head_is_cut_at_the_header_read_timeout() {
    let (proxy, backend) = proxy_with_backend().await;
    let mut stream = TcpStream::connect(proxy.data).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(3) {
            // Writes into a closed socket can succeed until the peer's reset arrives; check by reading.
            let reply = read_until_close(&mut stream, Duration::from_secs(2)).await;
            cut = reply.closed;
            break;
        }
    }
    assert!(cut, "a head trickled for {:?} was never cut", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(backend.requests(), 0);
}

/// Connections that send nothing, or stop inside the HTTP/2 preface, hold a socket as surely as a slow head.
#[tokio::test]
async fn silent_and_half_preface_connections_are_cut_at_the_header_read_timeout() {
    let (proxy, _backend) = proxy_with_backend().await;
    for (case, first) in [
        ("silent", &b""[..]),
        ("half HTTP/2 preface", &b"PRI * HTTP/2.0\r\n"[..]),
        (
            "full HTTP/2 preface, no frames",
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        ),
        ("one byte of a request line", &b"G"[..]),
    ] {
        let mut stream = TcpStream::connect(proxy.data).await.unwrap();
        stream.write_all(first).await.unwrap();
        let started = Instant::now();
        let reply = read_until_close(&mut stream, Duration::from_secs(6)).await;
        assert!(reply.closed, "{case}: still open after {:?}", started.elapsed());
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{case}: cut before the timeout ({:?})",
            started.elapsed()
        );
    }
}

/// An idle keep-alive connection waits for its next head under the same timeout.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed_at_the_header_read_timeout() {
    let (proxy, _backend) = proxy_with_backend().await;
    let mut stream = TcpStream::connect(proxy.data).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: named.example.com\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream, WAIT).await.expect("response head");
    assert_eq!(hardening_support::status_of(&head), Some(200));
    let started = Instant::now();
    let reply = read_until_close(&mut stream, Duration::from_secs(6)).await;
    assert!(
        reply.closed,
        "idle keep-alive connection still open after {:?}",
        started.elapsed()
    );
}
