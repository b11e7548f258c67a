//! Failing backends: refused, reset or closed mid-response, silent, garbled; pools after a backend restart;
//! mirror targets that hang or refuse. The client must get a clear status before the response head, an aborted
//! (never complete-looking) response after it, and the proxy must keep serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hardening_support;
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hardening_support::{
    KillableBackend, ScriptedBackend, read_head, read_request_head, read_until_close, refused_addr,
};
use harness::Proxy;
use http::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tunnelgate_testkit::{Backend, Client, full};

const WAIT: Duration = Duration::from_secs(10);

fn route_to(url: &str, timeout: Option<&str>) -> serde_json::Value {
    let mut rule = json!({"backends": [{"url": url, "weight": 1}]});
    if let Some(t) = timeout {
        rule["timeouts"] = json!({"request": t});
    }
    json!({"version": 1, "rules": [rule]})
}

/// Sends `GET /` on a raw connection and returns the response head and everything after it until close.
async fn raw_get(proxy: &Proxy) -> (Option<Vec<u8>>, Vec<u8>, bool) {
    let mut stream = TcpStream::connect(proxy.data).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await
        .unwrap();
    let Some(head) = read_head(&mut stream, WAIT).await else {
        return (None, Vec::new(), true);
    };
    let rest = read_until_close(&mut stream, WAIT).await;
    (Some(head), rest.bytes, rest.closed)
}

/// A backend that answers the head, sends part of the body, then resets (`linger = 0`) or closes.
async fn truncating_backend(head: &'static [u8], body: &'static [u8], reset: bool) -> ScriptedBackend {
    ScriptedBackend::start(move |mut stream: TcpStream| async move {
        if read_request_head(&mut stream).await.is_none() {
            return;
        }
        let _ = stream.write_all(head).await;
        let _ = stream.write_all(body).await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if reset {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        drop(stream);
    })
    .await
}

#[tokio::test]
async fn a_refused_backend_gets_502_and_the_client_connection_stays_usable() {
    let proxy = Proxy::start().await;
    let refused = refused_addr().await;
    proxy.push(route_to(&format!("http://{refused}"), None)).await;
    let client = Client::new();
    for _ in 0..3 {
        let reply = client.get(proxy.data, "app.example.com", "/").await;
        assert_eq!(reply.status, 502);
        assert_eq!(&reply.body[..], b"bad gateway\n");
    }
}

#[tokio::test]
async fn a_backend_that_closes_or_garbles_before_the_head_gets_502() {
    let proxy = Proxy::start().await;
    let closes = ScriptedBackend::start(|mut stream: TcpStream| async move {
        let _ = read_request_head(&mut stream).await;
    })
    .await;
    let garbles = ScriptedBackend::start(|mut stream: TcpStream| async move {
        let _ = read_request_head(&mut stream).await;
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    })
    .await;
    let bad_status = ScriptedBackend::start(|mut stream: TcpStream| async move {
        let _ = read_request_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 2000 Nope\r\nContent-Length: 0\r\n\r\n")
            .await;
    })
    .await;
    for (case, backend) in [
        ("closes", &closes),
        ("garbles", &garbles),
        ("bad status", &bad_status),
    ] {
        proxy.push(route_to(&backend.url(), Some("5s"))).await;
        let reply = Client::new().get(proxy.data, "app.example.com", "/").await;
        assert_eq!(reply.status, 502, "{case}");
    }
}

/// After the head has gone out, a backend failure must reach the client as a broken response: a short body
/// for Content-Length, a missing last chunk for chunked, never something that parses as complete.
#[tokio::test]
async fn a_backend_failing_mid_body_aborts_the_client_response() {
    let proxy = Proxy::start().await;
    let cases = [
        (
            "Content-Length, reset",
            truncating_backend(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
                &[b'x'; 1000],
                true,
            )
            .await,
        ),
        (
            "Content-Length, clean close",
            truncating_backend(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
                &[b'x'; 1000],
                false,
            )
            .await,
        ),
        (
            "chunked, reset",
            truncating_backend(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"5\r\nhello\r\n",
                true,
            )
            .await,
        ),
        (
            "chunked, clean close",
            truncating_backend(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"5\r\nhello\r\n",
                false,
            )
            .await,
        ),
    ];
    for (case, backend) in &cases {
        proxy.push(route_to(&backend.url(), None)).await;
        let (head, rest, closed) = raw_get(&proxy).await;
        let head = String::from_utf8(head.expect("a response head")).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{case}: {head}");
        assert!(closed, "{case}: connection left open after a broken body");
        let lower = head.to_ascii_lowercase();
        if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap())
        {
            assert!(
                rest.len() < len,
                "{case}: {} of {len} body bytes looks complete",
                rest.len()
            );
        } else {
            assert!(
                lower.contains("transfer-encoding: chunked"),
                "{case}: no framing in {head}"
            );
            assert!(
                !rest.ends_with(b"0\r\n\r\n"),
                "{case}: chunked body was terminated: {rest:?}"
            );
        }

        // The same over h2c: the stream is reset, so the client sees an error, not a short success.
        let req = Client::request(Method::GET, proxy.data, "app.example.com", "/")
            .body(tunnelgate_testkit::empty())
            .unwrap();
        let h2 = Client::new().send_h2(req).await;
        assert!(h2.is_err(), "{case}: h2c client got a complete response: {h2:?}");
    }
}

#[tokio::test]
async fn a_silent_backend_gets_504_at_the_route_timeout() {
    let proxy = Proxy::start().await;
    // One backend reads the request and never answers; one stops inside its response head.
    let silent = ScriptedBackend::start(|mut stream: TcpStream| async move {
        let _ = read_request_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let half_head = ScriptedBackend::start(|mut stream: TcpStream| async move {
        let _ = read_request_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Partial: ").await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    for (case, backend) in [("silent", &silent), ("half a head", &half_head)] {
        proxy.push(route_to(&backend.url(), Some("400ms"))).await;
        let started = Instant::now();
        let reply = Client::new().get(proxy.data, "app.example.com", "/").await;
        let took = started.elapsed();
        assert_eq!(reply.status, 504, "{case}");
        assert_eq!(&reply.body[..], b"gateway timeout\n");
        assert!(
            took >= Duration::from_millis(400),
            "{case}: 504 before the timeout ({took:?})"
        );
        assert!(took < Duration::from_secs(5), "{case}: 504 took {took:?}");
    }
}

#[tokio::test]
async fn backend_pools_recover_after_the_backend_restarts() {
    let proxy = Proxy::start().await;
    let backend = KillableBackend::start().await;
    proxy.push(route_to(&backend.url(), Some("5s"))).await;
    let client = Client::new();
    for _ in 0..20 {
        assert_eq!(client.get(proxy.data, "app.example.com", "/").await.status, 200);
    }
    let served_before = backend.requests.load(Ordering::SeqCst);
    let addr = backend.kill().await;
    // Down: every request fails fast with 502, none hangs on a dead pooled connection.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(client.get(proxy.data, "app.example.com", "/").await.status, 502);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let backend = KillableBackend::start_on(addr).await;
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(
            client
                .get(proxy.data, "app.example.com", "/")
                .await
                .status
                .as_u16(),
        );
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "after the restart: {statuses:?}"
    );
    assert_eq!(backend.requests.load(Ordering::SeqCst), 50);
    assert_eq!(served_before, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_or_refusing_mirrors_never_affect_the_primary() {
    let proxy = Proxy::start().await;
    let primary = Backend::start("primary").await;
    let refused = refused_addr().await;
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    let hanging = ScriptedBackend::start(move |mut stream: TcpStream| {
        let count = count.clone();
        async move {
            if read_request_head(&mut stream).await.is_some() {
                count.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    })
    .await;
    proxy
        .push(json!({"version": 1, "rules": [{
            "filters": [
                {"type": "RequestMirror", "requestMirror": {"backendUrl": format!("http://{refused}")}},
                {"type": "RequestMirror", "requestMirror": {"backendUrl": hanging.url()}}
            ],
            "backends": [{"url": primary.url(), "weight": 1}]
        }]}))
        .await;

    // Far more requests than the 1,024 mirror copies allowed in flight, 64 at a time, with and without bodies.
    let failures = Arc::new(AtomicUsize::new(0));
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let mut tasks = Vec::new();
    for worker in 0..64 {
        let (addr, failures, slowest) = (proxy.data, failures.clone(), slowest.clone());
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            for i in 0..20 {
                let body = if (worker + i) % 2 == 0 {
                    vec![b'm'; 4096]
                } else {
                    Vec::new()
                };
                let req = Client::request(Method::POST, addr, "app.example.com", "/mirrored")
                    .body(full(body))
                    .unwrap();
                let started = Instant::now();
                match client.send(req).await {
                    Ok(r) if r.status == 200 => {}
                    other => {
                        eprintln!("primary failed: {other:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let took = started.elapsed();
                let mut s = slowest.lock().unwrap();
                *s = (*s).max(took);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(primary.requests(), 64 * 20);
    // A mirror attempt waits 5 s for a hanging target; the primary never waits for it.
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < Duration::from_secs(4),
        "slowest primary request took {slowest:?}"
    );
    assert!(
        held.load(Ordering::SeqCst) > 0,
        "the hanging mirror target never received a copy"
    );
    let metrics = Client::new().get(proxy.config, "proxy", "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let dropped = text
        .lines()
        .find(|l| l.starts_with("tunnelgate_proxy_mirror_requests_total") && l.contains("dropped_overload"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "mirror copies beyond the in-flight bound were not dropped:\n{text}"
    );
}
