//! The edge's side of the protocol: serving `RegistrationServer` on a control stream and forwarding eyeball
//! requests to a connector over QUIC or HTTP/2. Policy (which credentials, which faults) belongs to the
//! caller, normally the edge emulator.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::framing;
use crate::origin::{BoxError, BoxFuture, OriginBody};
use crate::registration::RegistrationCall;
use crate::rpc::{RpcClient, RpcError, RpcServer, RpcStream, ServerReply};
use crate::serialized_headers as sh;
use crate::stream::{self, ConnectRequest, ConnectResponse};

/// A forwarding failure, reported to the eyeball as 502 (or an aborted response).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("tunnel stream: {0}")]
    Stream(String),
    #[error("connector answered with an error: {0}")]
    Origin(String),
    #[error("bad response from the connector: {0}")]
    Response(String),
}

/// The connector's answer to a forwarded request.
pub struct Forwarded {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: OriginBody,
    /// For a 101: the raw byte stream to the connector.
    pub upgraded: Option<Box<dyn UpgradedIo>>,
}

/// A bidirectional byte stream to the connector after a WebSocket upgrade.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// Serves `RegistrationServer` on a control stream until the connector closes it.
/// `on_call` decides each answer; it may delay or withhold it.
pub async fn serve_control<S, F>(io: S, mut on_call: F) -> Result<(), RpcError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(RegistrationCall) -> BoxFuture<ServerReply>,
{
    let mut server = RpcServer::new(RpcStream::new(io));
    while let Some((q, call)) = server.next_call(RegistrationCall::decode).await? {
        if let RegistrationCall::Unknown {
            interface_id,
            method_id,
        } = call
        {
            server.reply_unimplemented(q, interface_id, method_id).await?;
            continue;
        }
        let reply = on_call(call).await;
        server.reply(q, reply).await?;
    }
    Ok(())
}

/// Data-stream faults the edge can inject.
#[derive(Debug, Clone, Default)]
pub struct StreamFaults {
    /// Send a wrong signature (the connector must reset the stream).
    pub bad_signature: bool,
    /// Wait before opening the stream.
    pub delay_connect_ms: u64,
}

/// Forwards one request over a QUIC connection (edge side of §5).
pub async fn forward_quic(
    conn: &quinn::Connection,
    request: ConnectRequest,
    body: OriginBody,
    faults: &StreamFaults,
) -> Result<Forwarded, ForwardError> {
    if faults.delay_connect_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.delay_connect_ms)).await;
    }
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let mut head = Vec::new();
    head.extend_from_slice(if faults.bad_signature {
        b"BADSIG"
    } else {
        &stream::DATA_STREAM_SIGNATURE
    });
    head.extend_from_slice(&stream::PROTOCOL_VERSION);
    head.extend_from_slice(&request.encode());
    send.write_all(&head)
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let websocket = request.kind == stream::ConnectionType::Websocket;
    if !websocket {
        // Stream the request body concurrently with reading the response.
        tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(d) = f.into_data()
                            && send.write_all(&d).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = send.reset(quinn::VarInt::from_u32(0));
                        return;
                    }
                }
            }
            let _ = send.finish();
        });
        let (resp, rest) = read_response_head(&mut recv).await?;
        let (status, headers) = resp.to_head().map_err(|e| match e {
            stream::BadResponse::Origin(o) => ForwardError::Origin(o),
            other => ForwardError::Response(other.to_string()),
        })?;
        return Ok(Forwarded {
            status,
            headers,
            body: quic_response_body(rest.freeze(), recv),
            upgraded: None,
        });
    }
    let (resp, rest) = read_response_head(&mut recv).await?;
    let (status, headers) = resp.to_head().map_err(|e| match e {
        stream::BadResponse::Origin(o) => ForwardError::Origin(o),
        other => ForwardError::Response(other.to_string()),
    })?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let io = PrefixedIo {
            prefix: rest.freeze(),
            inner: tokio::io::join(recv, send),
        };
        return Ok(Forwarded {
            status,
            headers,
            body: crate::origin::empty_body(),
            upgraded: Some(Box::new(io)),
        });
    }
    let _ = send.finish();
    Ok(Forwarded {
        status,
        headers,
        body: quic_response_body(rest.freeze(), recv),
        upgraded: None,
    })
}

async fn read_response_head(
    recv: &mut quinn::RecvStream,
) -> Result<(ConnectResponse, BytesMut), ForwardError> {
    let mut sig = [0u8; 8];
    recv.read_exact(&mut sig)
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    if sig[..6] != stream::DATA_STREAM_SIGNATURE {
        return Err(ForwardError::Response("bad response signature".into()));
    }
    let mut buf = BytesMut::new();
    let msg = framing::read_message(recv, &mut buf)
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let resp = ConnectResponse::read(&msg).map_err(|e| ForwardError::Response(e.to_string()))?;
    Ok((resp, buf))
}

fn quic_response_body(prefix: Bytes, recv: quinn::RecvStream) -> OriginBody {
    let stream = futures::stream::unfold((Some(prefix), recv), |(prefix, mut recv)| async move {
        if let Some(p) = prefix.filter(|p| !p.is_empty()) {
            return Some((Ok(http_body::Frame::data(p)), (None, recv)));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => Some((Ok(http_body::Frame::data(c.bytes)), (None, recv))),
            Ok(None) => None,
            Err(e) => Some((Err(Box::new(e) as BoxError), (None, recv))),
        }
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// Opens an edge-initiated RPC stream (§6) on a QUIC connection.
pub async fn open_rpc_quic(
    conn: &quinn::Connection,
) -> Result<RpcClient<tokio::io::Join<quinn::RecvStream, quinn::SendStream>>, RpcError> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| RpcError::Protocol(e.to_string()))?;
    send.write_all(&stream::RPC_STREAM_SIGNATURE)
        .await
        .map_err(|e| RpcError::Protocol(e.to_string()))?;
    RpcClient::bootstrap(tokio::io::join(recv, send)).await
}

/// Bytes already read, then the inner stream.
struct PrefixedIo<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Edge side of an HTTP/2 connection: opens the control stream (§7.3) and returns its byte stream.
pub async fn open_control_h2(
    send_request: &mut h2::client::SendRequest<Bytes>,
) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + use<>, ForwardError> {
    let req = http::Request::builder()
        .method("GET")
        .uri("https://h2.cftunnel.com/")
        .header(sh::UPGRADE_MARKER, "control-stream")
        .body(())
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let mut sr = send_request
        .clone()
        .ready()
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let (resp, send) = sr
        .send_request(req, false)
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let resp = resp.await.map_err(|e| ForwardError::Stream(e.to_string()))?;
    if resp.status() != StatusCode::OK {
        return Err(ForwardError::Response(format!(
            "control stream answered {}",
            resp.status()
        )));
    }
    Ok(tokio::io::join(
        crate::h2io::H2Read::new(resp.into_body()),
        crate::h2io::H2Write::new(send),
    ))
}

/// Forwards one eyeball request over HTTP/2 (edge side of §7.4). `parts` already carry the edge headers.
pub async fn forward_h2(
    send_request: &h2::client::SendRequest<Bytes>,
    mut parts: http::request::Parts,
    body: OriginBody,
    scheme: &str,
    host: &str,
) -> Result<Forwarded, ForwardError> {
    let websocket = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    stream::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::HOST);
    if websocket {
        parts
            .headers
            .insert(sh::UPGRADE_MARKER, HeaderValue::from_static("websocket"));
    }
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let uri = format!("{scheme}://{host}{pq}")
        .parse::<http::Uri>()
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let mut req = http::Request::new(());
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers;
    let mut sr = send_request
        .clone()
        .ready()
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let (resp, mut send) = sr
        .send_request(req, false)
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    if !websocket {
        tokio::spawn(async move {
            let _ = crate::h2io::send_body(&mut send, body).await;
        });
        let resp = resp.await.map_err(|e| ForwardError::Stream(e.to_string()))?;
        let (status, headers, recv) = decode_h2_response(resp)?;
        return Ok(Forwarded {
            status,
            headers,
            body: crate::h2io::body(recv),
            upgraded: None,
        });
    }
    let resp = resp.await.map_err(|e| ForwardError::Stream(e.to_string()))?;
    let (status, headers, recv) = decode_h2_response(resp)?;
    if status == StatusCode::OK {
        let io = tokio::io::join(crate::h2io::H2Read::new(recv), crate::h2io::H2Write::new(send));
        return Ok(Forwarded {
            status: StatusCode::SWITCHING_PROTOCOLS,
            headers,
            body: crate::origin::empty_body(),
            upgraded: Some(Box::new(io)),
        });
    }
    let _ = send.send_data(Bytes::new(), true);
    Ok(Forwarded {
        status,
        headers,
        body: crate::h2io::body(recv),
        upgraded: None,
    })
}

fn decode_h2_response(
    resp: http::Response<h2::RecvStream>,
) -> Result<(StatusCode, HeaderMap, h2::RecvStream), ForwardError> {
    let (parts, recv) = resp.into_parts();
    let meta = parts
        .headers
        .get(sh::RESPONSE_META)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if meta.contains("cloudflared") {
        return Err(ForwardError::Origin(format!(
            "connector failed the request ({})",
            parts.status
        )));
    }
    let serialized = parts
        .headers
        .get(sh::RESPONSE_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let headers = sh::deserialize(serialized).map_err(|e| ForwardError::Response(e.to_string()))?;
    Ok((parts.status, headers, recv))
}

/// Sends an `update-configuration` request over HTTP/2 (§7.5) and returns the JSON answer.
pub async fn update_configuration_h2(
    send_request: &h2::client::SendRequest<Bytes>,
    version: i32,
    config: &serde_json::Value,
) -> Result<serde_json::Value, ForwardError> {
    let req = http::Request::builder()
        .method("PUT")
        .uri("https://h2.cftunnel.com/config")
        .header(sh::UPGRADE_MARKER, "update-configuration")
        .body(())
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let mut sr = send_request
        .clone()
        .ready()
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let (resp, mut send) = sr
        .send_request(req, false)
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let body = serde_json::json!({ "version": version, "config": config }).to_string();
    send.send_data(Bytes::from(body), true)
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    let resp = resp.await.map_err(|e| ForwardError::Stream(e.to_string()))?;
    let bytes = crate::h2io::body(resp.into_body())
        .collect()
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ForwardError::Response(e.to_string()))
}

/// Copies bytes both ways between an eyeball's upgraded connection and the connector.
pub async fn splice_upgraded<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
}
