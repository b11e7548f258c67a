//! The plain eyeball listener (tunnel.md §13.3): HTTP/1.1 and h2c requests are forwarded over a
//! registered tunnel connection with the headers the edge adds.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tunnelgate_tunnel::edge::{self, Forwarded, StreamFaults};
use tunnelgate_tunnel::origin::{BoxError, OriginBody, full_body};
use tunnelgate_tunnel::stream::{self, EdgeRequestOptions};

use crate::{Action, ConnHandle, Inner};

/// Request header that forces the connection index.
const FORCE_CONN: &str = "x-emu-conn-index";

pub(crate) async fn serve(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(inner, req, peer).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<OriginBody> {
    let mut r = Response::new(full_body(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn cf_ray(inner: &Inner) -> String {
    let n = u64::from_le_bytes(inner.random_bytes());
    format!("{n:016x}-TST")
}

async fn handle(
    inner: Arc<Inner>,
    mut req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<OriginBody> {
    let forced = req
        .headers_mut()
        .remove(FORCE_CONN)
        .and_then(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u8>().ok()));
    let Some((id, conn_index, handle)) = inner.pick(forced) else {
        return text(
            StatusCode::from_u16(530).unwrap_or(StatusCode::BAD_GATEWAY),
            "no tunnel connection",
        );
    };
    let scheme = inner.config.eyeball_scheme.clone();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let h = req.headers_mut();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    h.insert("cf-ray", hv(&cf_ray(&inner)));
    h.insert("cf-connecting-ip", hv(&peer.ip().to_string()));
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    h.insert("x-forwarded-for", hv(&xff));
    h.insert("x-forwarded-proto", hv(&scheme));
    h.insert("cf-visitor", hv(&format!(r#"{{"scheme":"{scheme}"}}"#)));

    let path = req.uri().path().to_string();
    let mut opts = EdgeRequestOptions::default();
    let mut faults = StreamFaults::default();
    let mut reset_after: Option<u64> = None;
    for action in inner.take_request_faults(&path, conn_index) {
        match action {
            Action::ResetAfterBytes(n) => reset_after = Some(n),
            Action::DelayConnectMs(ms) => faults.delay_connect_ms = ms,
            Action::BarePathDest => opts.bare_path_dest = true,
            Action::LowercaseMethod => opts.lowercase_method = true,
            Action::KeepHopHeaders => opts.keep_hop_headers = true,
            Action::BadSignature => faults.bad_signature = true,
            Action::UnknownMetadataKey => opts.unknown_metadata_key = true,
            _ => {}
        }
    }
    let websocket = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let on_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // The connector reads a body only when the head announces one; an h2c body without a length is
    // announced as chunked, as the edge does.
    if !websocket
        && !http_body::Body::is_end_stream(&body)
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && !parts.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        parts.headers.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let body: OriginBody = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    inner.count_request(id);
    let protocol = match handle {
        ConnHandle::Quic(_) => "quic",
        ConnHandle::H2 { .. } => "http2",
    };
    inner.emit("request", json!({"id": id, "connIndex": conn_index, "protocol": protocol, "method": parts.method.as_str(), "path": path, "websocket": websocket}));
    let forwarded = match &handle {
        ConnHandle::Quic(conn) => {
            let cr = stream::connect_request_for(&parts, &scheme, &host, &opts);
            edge::forward_quic(conn, cr, body, &faults).await
        }
        ConnHandle::H2 { send, .. } => edge::forward_h2(send, parts, body, &scheme, &host).await,
    };
    let f = match forwarded {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "forwarding failed");
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the tunnel connector failed the request",
            );
        }
    };
    relay(f, on_upgrade, reset_after)
}

fn relay(
    f: Forwarded,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    reset_after: Option<u64>,
) -> Response<OriginBody> {
    let Forwarded {
        status,
        mut headers,
        body,
        upgraded,
    } = f;
    let mut resp = Response::new(limit(body, reset_after));
    *resp.status_mut() = status;
    if let (Some(conn_io), Some(on_upgrade)) = (upgraded, on_upgrade) {
        stream::strip_hop_by_hop(&mut headers);
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        *resp.headers_mut() = headers;
        tokio::spawn(async move {
            if let Ok(eyeball) = on_upgrade.await {
                edge::splice_upgraded(hyper_util::rt::TokioIo::new(eyeball), conn_io).await;
            }
        });
        return resp;
    }
    stream::strip_hop_by_hop(&mut headers);
    *resp.headers_mut() = headers;
    resp
}

/// Aborts the body after `limit` bytes (the `reset_after_bytes` fault).
fn limit(body: OriginBody, limit: Option<u64>) -> OriginBody {
    let Some(limit) = limit else { return body };
    let stream = futures::stream::unfold((body, 0u64), move |(mut body, sent)| async move {
        if sent == u64::MAX {
            return None;
        }
        if sent >= limit {
            return Some((Err(BoxError::from("reset_after_bytes fault")), (body, u64::MAX)));
        }
        match body.frame().await? {
            Ok(f) => match f.into_data() {
                Ok(mut d) => {
                    let room = limit - sent;
                    if d.len() as u64 > room {
                        d.truncate(room as usize);
                    }
                    let n = d.len() as u64;
                    Some((Ok(http_body::Frame::data(d)), (body, sent + n)))
                }
                Err(f) => Some((Ok(f), (body, sent))),
            },
            Err(e) => Some((Err(e), (body, sent))),
        }
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}
