//! Serving edge streams on a QUIC connection: data streams into the origin (tunnel.md §5) and
//! edge-initiated RPC streams (§6).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Shared;
use crate::framing;
use crate::origin::{BoxError, OriginBody, StreamInfo, TunnelUpgrade, empty_body};
use crate::registration::{self, CloudflaredCall};
use crate::rpc::{RpcServer, RpcStream, ServerReply};
use crate::stream::{self, ConnectRequest, ConnectResponse, ConnectionType};

/// How long an edge-initiated RPC session may last.
const RPC_SESSION_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer between the origin's upgraded stream and the tunnel stream.
const SPLICE_BUFFER: usize = 64 * 1024;

/// A request body read from a QUIC stream: the bytes buffered after the `ConnectRequest`, then the stream.
fn quic_body(prefix: Bytes, recv: quinn::RecvStream) -> OriginBody {
    let stream = futures::stream::unfold((Some(prefix), recv), |(prefix, mut recv)| async move {
        if let Some(p) = prefix.filter(|p| !p.is_empty()) {
            return Some((Ok(http_body::Frame::data(p)), (None, recv)));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => Some((Ok(http_body::Frame::data(chunk.bytes)), (None, recv))),
            Ok(None) => None,
            Err(e) => Some((Err(Box::new(e) as BoxError), (None, recv))),
        }
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// Sends FIN and waits (bounded) until the edge has acknowledged everything, so that closing the connection
/// right after a drain does not discard the tail of a response.
async fn finish(send: &mut quinn::SendStream) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), send.stopped()).await;
    }
}

fn head_bytes(resp: &ConnectResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&stream::DATA_STREAM_SIGNATURE);
    out.extend_from_slice(&stream::PROTOCOL_VERSION);
    out.extend_from_slice(&resp.encode());
    out
}

async fn answer_error(mut send: quinn::SendStream, recv: Option<quinn::RecvStream>, error: String) {
    tracing::debug!(%error, "data stream failed before the response");
    if send
        .write_all(&head_bytes(&ConnectResponse::error(error)))
        .await
        .is_ok()
    {
        finish(&mut send).await;
    }
    if let Some(mut r) = recv {
        let _ = r.stop(quinn::VarInt::from_u32(0));
    }
}

/// Creates the `TunnelUpgrade` extension for a WebSocket request.
///
/// hyper only hands out `Upgraded` values from its own connections, so the tunnel runs a one-request
/// HTTP/1.1 upgrade over an in-memory pipe: the origin gets hyper's `Upgraded` end, the tunnel keeps the raw
/// end (delivered through the returned receiver) and splices it with the edge stream. `go` is fired once the
/// 101 has been relayed to the edge.
pub(crate) fn upgrade_pair() -> (
    TunnelUpgrade,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<tokio::io::DuplexStream>,
) {
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (raw_tx, raw_rx) = tokio::sync::oneshot::channel::<tokio::io::DuplexStream>();
    let fut = async move {
        go_rx
            .await
            .map_err(|_| BoxError::from("tunnel stream closed before the 101 was relayed"))?;
        let (server_io, mut raw) = tokio::io::duplex(SPLICE_BUFFER);
        let (up_tx, up_rx) = tokio::sync::oneshot::channel::<hyper::upgrade::Upgraded>();
        let up_tx = std::sync::Mutex::new(Some(up_tx));
        let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let on = hyper::upgrade::on(&mut req);
            let tx = up_tx.lock().ok().and_then(|mut t| t.take());
            tokio::spawn(async move {
                if let (Ok(u), Some(tx)) = (on.await, tx) {
                    let _ = tx.send(u);
                }
            });
            async {
                http::Response::builder()
                    .status(http::StatusCode::SWITCHING_PROTOCOLS)
                    .header(http::header::CONNECTION, "upgrade")
                    .header(http::header::UPGRADE, "tunnel")
                    .body(http_body_util::Empty::<Bytes>::new())
            }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server_io), svc);
            let _ = conn.with_upgrades().await;
        });
        raw.write_all(b"GET / HTTP/1.1\r\nHost: tunnel\r\nConnection: upgrade\r\nUpgrade: tunnel\r\n\r\n")
            .await?;
        // Read the 101 head byte by byte so that no upgraded byte is consumed here.
        let mut head = Vec::with_capacity(128);
        while !head.ends_with(b"\r\n\r\n") {
            let b = raw.read_u8().await?;
            head.push(b);
            if head.len() > 4096 {
                return Err(BoxError::from(
                    "in-memory upgrade answered with an oversized head",
                ));
            }
        }
        let upgraded = up_rx
            .await
            .map_err(|_| BoxError::from("in-memory upgrade failed"))?;
        raw_tx
            .send(raw)
            .map_err(|_| BoxError::from("tunnel stream went away"))?;
        Ok(upgraded)
    };
    (TunnelUpgrade::new(Box::pin(fut)), go_tx, raw_rx)
}

/// Copies bytes both ways; EOF on one side half-closes the other.
pub(crate) async fn splice<R, W>(
    tunnel_io: tokio::sync::oneshot::Receiver<tokio::io::DuplexStream>,
    mut from_edge: R,
    mut to_edge: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The origin takes the upgrade right after it answered 101; if it never does, give up.
    let Ok(Ok(tunnel_io)) = tokio::time::timeout(std::time::Duration::from_secs(30), tunnel_io).await else {
        let _ = to_edge.shutdown().await;
        return;
    };
    let (mut origin_read, mut origin_write) = tokio::io::split(tunnel_io);
    let up = async {
        let _ = tokio::io::copy(&mut from_edge, &mut origin_write).await;
        let _ = origin_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut origin_read, &mut to_edge).await;
        let _ = to_edge.shutdown().await;
    };
    tokio::join!(up, down);
}

pub(crate) async fn serve_quic_data_stream(
    shared: &Arc<Shared>,
    conn_index: u8,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut version = [0u8; 2];
    if recv.read_exact(&mut version).await.is_err() {
        let _ = send.reset(quinn::VarInt::from_u32(0));
        return;
    }
    let mut buf = BytesMut::new();
    let msg = match framing::read_message(&mut recv, &mut buf).await {
        Ok(m) => m,
        Err(e) => return answer_error(send, Some(recv), format!("malformed ConnectRequest: {e}")).await,
    };
    let req = match ConnectRequest::read(&msg) {
        Ok(r) => r,
        Err(e) => return answer_error(send, Some(recv), format!("malformed ConnectRequest: {e}")).await,
    };
    if req.kind == ConnectionType::Tcp {
        return answer_error(send, Some(recv), stream::TCP_UNSUPPORTED.to_string()).await;
    }
    let head = match req.to_head() {
        Ok(h) => h,
        Err(e) => return answer_error(send, Some(recv), format!("malformed request: {e}")).await,
    };
    let (body, mut recv) = if head.has_body {
        (quic_body(buf.freeze(), recv), None)
    } else {
        (empty_body(), Some(recv))
    };
    let mut builder = http::Request::builder()
        .method(head.method)
        .uri(head.path_and_query);
    if let Some(h) = builder.headers_mut() {
        *h = head.headers;
    }
    let mut request = match builder.body(body) {
        Ok(r) => r,
        Err(e) => return answer_error(send, recv, format!("malformed request: {e}")).await,
    };
    let upgrade = if head.websocket {
        let (ext, tx, io) = upgrade_pair();
        request.extensions_mut().insert(ext);
        Some((tx, io))
    } else {
        None
    };
    shared.metrics.request("quic");
    let info = StreamInfo {
        scheme: head.scheme,
        transport: "quic",
        conn_index,
    };
    let response = shared.origin.serve(request, info).await;
    let (parts, mut body) = response.into_parts();
    let meta = ConnectResponse {
        error: String::new(),
        metadata: stream::response_metadata(parts.status, &parts.headers),
    };
    if send.write_all(&head_bytes(&meta)).await.is_err() {
        return;
    }
    if let (Some((tx, io)), true) = (upgrade, parts.status == http::StatusCode::SWITCHING_PROTOCOLS) {
        let Some(recv) = recv.take() else { return };
        let _ = tx.send(());
        splice(io, recv, send).await;
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                // Trailers cannot be carried over QUIC (§5.6) and are dropped.
                if let Ok(data) = f.into_data()
                    && send.write_all(&data).await.is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "response body failed after the head; resetting the stream");
                let _ = send.reset(quinn::VarInt::from_u32(0));
                return;
            }
        }
    }
    finish(&mut send).await;
    if let Some(mut r) = recv {
        let _ = r.stop(quinn::VarInt::from_u32(0));
    }
}

/// Serves `CloudflaredServer` on an edge-initiated RPC stream (§6).
pub(crate) async fn serve_quic_rpc_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    io: S,
    buf: BytesMut,
) {
    let mut server = RpcServer::new(RpcStream::with_buffer(io, buf));
    let session = async {
        loop {
            let (q, call) = match server.next_call(CloudflaredCall::decode).await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "edge RPC stream ended");
                    break;
                }
            };
            let reply = match call {
                CloudflaredCall::UpdateConfiguration { version, .. } => {
                    let latest = shared.note_config_version(version);
                    tracing::info!(
                        version,
                        latest,
                        "remote configuration update acknowledged (content ignored)"
                    );
                    ServerReply::Results(Box::new(move |c| {
                        registration::write_update_configuration_result(c, latest)
                    }))
                }
                CloudflaredCall::RegisterUdpSession => {
                    ServerReply::Results(Box::new(registration::write_register_udp_session_error))
                }
                CloudflaredCall::UnregisterUdpSession => ServerReply::Results(Box::new(|c| {
                    c.init_as::<crate::tunnel_capnp::session_manager::unregister_udp_session_results::Builder>();
                    Ok(())
                })),
                CloudflaredCall::Unknown {
                    interface_id,
                    method_id,
                } => {
                    if server
                        .reply_unimplemented(q, interface_id, method_id)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
            };
            if server.reply(q, reply).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(RPC_SESSION_TIMEOUT, session).await;
    server.shutdown().await;
}
