//! One HTTP/2 connection to the edge (tunnel.md §7): TCP + TLS as the client, then HTTP/2 as the server;
//! the control stream carries the registration RPC, other streams are eyeball requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ConnEnd, Protocol, Shared, data};
use crate::h2io::{self, H2Read, H2Write};
use crate::origin::{StreamInfo, empty_body};
use crate::registration::{ConnectionDetails, ConnectionError, ConnectionResponse, ControlSession};
use crate::serialized_headers::{self as sh, META_CLOUDFLARED, META_ORIGIN, RESPONSE_HEADERS, RESPONSE_META};
use crate::transport;

const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Remote-config bodies are small JSON documents.
const MAX_CONFIG_BODY: usize = 1024 * 1024;

enum ControlEvent {
    Registered(ConnectionDetails),
    Refused(ConnectionError),
    Failed(String),
    Lost(String),
    Unregistered,
}

fn failed(reason: &'static str, e: impl std::fmt::Display) -> ConnEnd {
    ConnEnd::Failed {
        reason,
        error: e.to_string(),
        rotate: true,
        udp_blocked: false,
    }
}

pub(crate) async fn serve(shared: &Arc<Shared>, conn_index: u8, addr: SocketAddr, attempts: u8) -> ConnEnd {
    let tls = match transport::h2_client_tls(shared.roots.clone()) {
        Ok(t) => tokio_rustls::TlsConnector::from(Arc::new(t)),
        Err(e) => return failed("tls", e),
    };
    let dial = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ("dial", e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let local_ip = tcp.local_addr().ok().map(|a| a.ip());
        let name = rustls::pki_types::ServerName::try_from(transport::H2_SERVER_NAME)
            .map_err(|e| ("tls", e.to_string()))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| ("tls", e.to_string()))?;
        Ok::<_, (&'static str, String)>((stream, local_ip))
    };
    let (stream, local_ip) = tokio::select! {
        r = tokio::time::timeout(transport::H2_DIAL_TIMEOUT, dial) => match r {
            Ok(Ok(s)) => s,
            Ok(Err((reason, e))) => return failed(reason, e),
            Err(_) => return failed("dial", "dial and TLS timed out"),
        },
        _ = shared.shutdown.cancelled() => return ConnEnd::Shutdown,
    };
    let mut conn = match h2::server::Builder::new()
        .max_concurrent_streams(u32::MAX)
        .initial_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .handshake::<_, Bytes>(stream)
        .await
    {
        Ok(c) => c,
        Err(e) => return failed("h2_handshake", e),
    };

    let (events_tx, mut events) = mpsc::channel::<ControlEvent>(4);
    let unregister = CancellationToken::new();
    let tracker = TaskTracker::new();
    let requests = TaskTracker::new();
    let mut control_started = false;
    let mut registered = false;
    let mut draining: Option<tokio::time::Instant> = None;
    let grace = shared.config.grace_period;
    let end = loop {
        let drain_deadline = async {
            match draining {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((req, respond))) => {
                    let marker = req.headers().get(sh::UPGRADE_MARKER).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
                    if marker.as_deref() == Some("control-stream") && !control_started {
                        control_started = true;
                        let register = shared.register_request(conn_index, attempts, local_ip);
                        let task = control_stream(conn_index, req, respond, register, events_tx.clone(), unregister.clone());
                        tracker.spawn(task);
                    } else {
                        let shared = shared.clone();
                        requests.spawn(async move { handle_request(&shared, conn_index, req, respond).await });
                    }
                }
                Some(Err(e)) => break lost_or_failed(registered, "h2_error", e),
                None => break lost_or_failed(registered, "closed", "edge closed the connection"),
            },
            ev = events.recv() => match ev {
                Some(ControlEvent::Registered(d)) => {
                    registered = true;
                    shared.on_registered(conn_index, Protocol::Http2, &d, addr);
                }
                Some(ControlEvent::Refused(e)) => break ConnEnd::Refused(e),
                Some(ControlEvent::Failed(e)) => break ConnEnd::Failed { reason: "registration_rpc", error: e, rotate: false, udp_blocked: false },
                Some(ControlEvent::Lost(e)) => break ConnEnd::Lost { reason: "control_stream", error: e, rotate: false },
                Some(ControlEvent::Unregistered) | None => {
                    if draining.is_none() {
                        draining = Some(tokio::time::Instant::now() + grace);
                    }
                }
            },
            _ = shared.shutdown.cancelled(), if draining.is_none() && !unregister.is_cancelled() => {
                if registered {
                    unregister.cancel();
                } else {
                    break ConnEnd::Shutdown;
                }
            }
            _ = drain_deadline => break ConnEnd::Shutdown,
            _ = shared.abort.cancelled() => break ConnEnd::Shutdown,
            // Drained early: only the control stream is left.
            _ = tokio::time::sleep(Duration::from_millis(50)), if draining.is_some() && requests.is_empty() => break ConnEnd::Shutdown,
        }
    };
    if registered {
        shared.on_unregistered(conn_index, Protocol::Http2);
    }
    // GOAWAY, then let the connection flush it.
    conn.graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while conn.accept().await.is_some() {}
    })
    .await;
    end
}

fn lost_or_failed(registered: bool, reason: &'static str, e: impl std::fmt::Display) -> ConnEnd {
    if registered {
        ConnEnd::Lost {
            reason,
            error: e.to_string(),
            rotate: false,
        }
    } else {
        failed(reason, e)
    }
}

async fn control_stream(
    conn_index: u8,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    register: crate::registration::RegisterRequest,
    events: mpsc::Sender<ControlEvent>,
    unregister: CancellationToken,
) {
    let send = match respond.send_response(Response::new(()), false) {
        Ok(s) => s,
        Err(e) => {
            let _ = events.send(ControlEvent::Failed(e.to_string())).await;
            return;
        }
    };
    let io = tokio::io::join(H2Read::new(req.into_body()), H2Write::new(send));
    let mut control =
        match tokio::time::timeout(REGISTER_TIMEOUT, ControlSession::register(io, &register)).await {
            Ok(Ok((control, ConnectionResponse::Details(d)))) => {
                let remotely_managed = d.remotely_managed;
                let _ = events.send(ControlEvent::Registered(d)).await;
                let mut control = control;
                if conn_index == 0 && !remotely_managed {
                    match tokio::time::timeout(
                        REGISTER_TIMEOUT,
                        control.update_local_configuration(super::quic::LOCAL_CONFIG),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "updateLocalConfiguration failed"),
                        Err(_) => tracing::warn!("updateLocalConfiguration timed out"),
                    }
                }
                control
            }
            Ok(Ok((_, ConnectionResponse::Error(e)))) => {
                let _ = events.send(ControlEvent::Refused(e)).await;
                return;
            }
            Ok(Err(e)) => {
                let _ = events.send(ControlEvent::Failed(e.to_string())).await;
                return;
            }
            Err(_) => {
                let _ = events
                    .send(ControlEvent::Failed("registration timed out".into()))
                    .await;
                return;
            }
        };
    tokio::select! {
        e = control.closed() => {
            let _ = events.send(ControlEvent::Lost(e.to_string())).await;
        }
        _ = unregister.cancelled() => {
            match control.unregister().await {
                Ok(()) => tracing::info!(conn_index, "unregistered tunnel connection"),
                Err(e) => tracing::warn!(conn_index, error = %e, "unregisterConnection failed"),
            }
            let _ = events.send(ControlEvent::Unregistered).await;
            control.close().await;
        }
    }
}

fn error_response(respond: &mut h2::server::SendResponse<Bytes>) {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp.headers_mut()
        .insert(RESPONSE_META, HeaderValue::from_static(META_CLOUDFLARED));
    let _ = respond.send_response(resp, true);
}

async fn handle_request(
    shared: &Arc<Shared>,
    conn_index: u8,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (mut parts, recv) = req.into_parts();
    let marker = parts
        .headers
        .remove(sh::UPGRADE_MARKER)
        .and_then(|v| v.to_str().ok().map(str::to_ascii_lowercase));
    match marker.as_deref() {
        Some("update-configuration") => return update_configuration(shared, recv, respond).await,
        Some("control-stream") => return error_response(&mut respond),
        _ => {}
    }
    if parts.headers.contains_key(sh::PROXY_SRC) {
        return error_response(&mut respond);
    }
    let websocket = marker.as_deref() == Some("websocket");
    let scheme: &'static str = if parts.uri.scheme_str() == Some("https") {
        "https"
    } else {
        "http"
    };
    let authority = parts
        .uri
        .authority()
        .map_or_else(|| "localhost:8080".to_string(), |a| a.to_string());
    if let Ok(v) = HeaderValue::from_str(&authority) {
        parts.headers.insert(http::header::HOST, v);
    }
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let Ok(uri) = pq.parse::<http::Uri>() else {
        return error_response(&mut respond);
    };
    parts.uri = uri;
    // The edge's HTTP/2 hop is not the eyeball's protocol; requests reach the origin exactly as over QUIC.
    parts.version = http::Version::HTTP_11;
    let (body, recv) = if websocket {
        crate::stream::strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
        parts
            .headers
            .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        parts
            .headers
            .entry(http::header::SEC_WEBSOCKET_VERSION)
            .or_insert(HeaderValue::from_static("13"));
        (empty_body(), Some(recv))
    } else {
        (h2io::body(recv), None)
    };
    let mut request = http::Request::from_parts(parts, body);
    let upgrade = if websocket {
        let (ext, tx, io) = data::upgrade_pair();
        request.extensions_mut().insert(ext);
        Some((tx, io))
    } else {
        None
    };
    shared.metrics.request("http2");
    let response = shared
        .origin
        .serve(
            request,
            StreamInfo {
                scheme,
                transport: "http2",
                conn_index,
            },
        )
        .await;
    let (parts, body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let mut head = Response::new(());
    *head.status_mut() = if switching { StatusCode::OK } else { parts.status };
    let serialized = sh::serialize(&parts.headers);
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    head.headers_mut().insert(RESPONSE_HEADERS, hv(&serialized));
    head.headers_mut()
        .insert(RESPONSE_META, HeaderValue::from_static(META_ORIGIN));
    if let Some(cl) = parts.headers.get(http::header::CONTENT_LENGTH) {
        head.headers_mut()
            .insert(http::header::CONTENT_LENGTH, cl.clone());
    }
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    if let (Some((tx, io)), true, Some(recv)) = (upgrade, switching, recv) {
        let _ = tx.send(());
        data::splice(io, H2Read::new(recv), H2Write::new(send)).await;
        return;
    }
    let _ = h2io::send_body(&mut send, body).await;
}

async fn update_configuration(
    shared: &Arc<Shared>,
    mut recv: h2::RecvStream,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let mut body = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| recv.poll_data(cx)).await {
        let Ok(chunk) = chunk else {
            return error_response(&mut respond);
        };
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CONFIG_BODY {
            return error_response(&mut respond);
        }
    }
    #[derive(serde::Deserialize)]
    struct Update {
        version: i32,
    }
    let Ok(update) = serde_json::from_slice::<Update>(&body) else {
        return error_response(&mut respond);
    };
    let latest = shared.note_config_version(update.version);
    let answer = serde_json::json!({ "lastAppliedVersion": latest, "err": null }).to_string();
    let mut head = Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(mut send) = respond.send_response(head, false) {
        let _ = send.send_data(Bytes::from(answer), true);
    }
}
