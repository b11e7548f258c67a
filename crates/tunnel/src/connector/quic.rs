//! One QUIC connection to the edge: handshake, control stream registration, data and RPC streams,
//! graceful unregister (tunnel.md §3–§6, §10).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio_util::task::TaskTracker;

use super::{ConnEnd, Protocol, Shared, data};
use crate::registration::{ConnectionResponse, ControlSession};
use crate::rpc::RpcError;
use crate::stream::{self, StreamKind};
use crate::transport;

/// RPC timeout for `registerConnection`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// `updateLocalConfiguration` payload (informational, §4.2).
pub(crate) const LOCAL_CONFIG: &[u8] =
    br#"{"ingress":[{"service":"http_status:404"}],"warp-routing":{"enabled":false}}"#;

fn dial_failure(reason: &'static str, e: impl std::fmt::Display, udp_blocked: bool) -> ConnEnd {
    ConnEnd::Failed {
        reason,
        error: e.to_string(),
        rotate: true,
        udp_blocked,
    }
}

pub(crate) async fn serve(shared: &Arc<Shared>, conn_index: u8, addr: SocketAddr, attempts: u8) -> ConnEnd {
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .unwrap_or(addr);
    let endpoint = match quinn::Endpoint::client(bind) {
        Ok(e) => e,
        Err(e) => return dial_failure("dial", e, false),
    };
    let cfg = match transport::quic_client_config(shared.roots.clone(), addr.is_ipv6()) {
        Ok(c) => c,
        Err(e) => return dial_failure("tls", e, false),
    };
    let connecting = match endpoint.connect_with(cfg, addr, transport::QUIC_SERVER_NAME) {
        Ok(c) => c,
        Err(e) => return dial_failure("dial", e, false),
    };
    let conn = tokio::select! {
        r = tokio::time::timeout(transport::QUIC_HANDSHAKE_TIMEOUT, connecting) => match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let blocked = e.to_string().contains("operation not permitted");
                let timed_out = matches!(e, quinn::ConnectionError::TimedOut);
                return dial_failure("quic_handshake", e, blocked || timed_out);
            }
            Err(_) => return dial_failure("quic_handshake", "handshake timed out", true),
        },
        _ = shared.shutdown.cancelled() => return ConnEnd::Shutdown,
    };
    let end = serve_connection(shared, conn_index, addr, attempts, &endpoint, conn.clone()).await;
    conn.close(quinn::VarInt::from_u32(0), b"");
    // Give the CONNECTION_CLOSE a moment to leave before the socket goes away.
    let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle()).await;
    end
}

async fn serve_connection(
    shared: &Arc<Shared>,
    conn_index: u8,
    addr: SocketAddr,
    attempts: u8,
    endpoint: &quinn::Endpoint,
    conn: quinn::Connection,
) -> ConnEnd {
    let (send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            return ConnEnd::Failed {
                reason: "control_stream",
                error: e.to_string(),
                rotate: false,
                udp_blocked: false,
            };
        }
    };
    let local_ip = endpoint
        .local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let req = shared.register_request(conn_index, attempts, local_ip);
    let registered = tokio::time::timeout(
        REGISTER_TIMEOUT,
        ControlSession::register(tokio::io::join(recv, send), &req),
    );
    let (mut control, details) = tokio::select! {
        r = registered => match r {
            Ok(Ok((control, ConnectionResponse::Details(d)))) => (control, d),
            Ok(Ok((_, ConnectionResponse::Error(e)))) => return ConnEnd::Refused(e),
            Ok(Err(e)) => return ConnEnd::Failed { reason: "registration_rpc", error: e.to_string(), rotate: false, udp_blocked: false },
            Err(_) => return ConnEnd::Failed { reason: "registration_timeout", error: RpcError::Timeout.to_string(), rotate: false, udp_blocked: false },
        },
        _ = shared.shutdown.cancelled() => return ConnEnd::Shutdown,
    };
    shared.on_registered(conn_index, Protocol::Quic, &details, addr);
    let tracker = TaskTracker::new();
    let end = serve_registered(shared, conn_index, &conn, &mut control, &details, &tracker).await;
    shared.on_unregistered(conn_index, Protocol::Quic);
    if matches!(end, ConnEnd::Shutdown | ConnEnd::Migrated) {
        drain(shared, &conn, &tracker).await;
        control.close().await;
    }
    end
}

async fn serve_registered(
    shared: &Arc<Shared>,
    conn_index: u8,
    conn: &quinn::Connection,
    control: &mut ControlSession<tokio::io::Join<quinn::RecvStream, quinn::SendStream>>,
    details: &crate::registration::ConnectionDetails,
    tracker: &TaskTracker,
) -> ConnEnd {
    if conn_index == 0 && !details.remotely_managed {
        let sent =
            tokio::time::timeout(REGISTER_TIMEOUT, control.update_local_configuration(LOCAL_CONFIG)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "updateLocalConfiguration failed"),
            Err(_) => tracing::warn!("updateLocalConfiguration timed out"),
        }
    }
    let migrate = shared.migrate_token(conn_index);
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let shared = shared.clone();
                    tracker.spawn(async move { handle_stream(&shared, conn_index, send, recv).await });
                }
                Err(e) => {
                    let rotate = matches!(e, quinn::ConnectionError::TimedOut);
                    return ConnEnd::Lost { reason: lost_reason(&e), error: e.to_string(), rotate };
                }
            },
            e = control.closed() => {
                return ConnEnd::Lost { reason: "control_stream", error: e.to_string(), rotate: false };
            }
            _ = shared.shutdown.cancelled() => {
                unregister(shared, conn_index, control).await;
                return ConnEnd::Shutdown;
            }
            _ = migrate.cancelled() => {
                tracing::info!(conn_index, "leaving QUIC for HTTP/2: unregistering, then draining");
                unregister(shared, conn_index, control).await;
                return ConnEnd::Migrated;
            }
        }
    }
}

/// `unregisterConnection`, bounded by the grace period.
async fn unregister(
    shared: &Arc<Shared>,
    conn_index: u8,
    control: &mut ControlSession<tokio::io::Join<quinn::RecvStream, quinn::SendStream>>,
) {
    let grace = shared.config.grace_period;
    match tokio::time::timeout(grace.max(Duration::from_millis(100)), control.unregister()).await {
        Ok(Ok(())) => tracing::info!(conn_index, "unregistered tunnel connection"),
        Ok(Err(e)) => tracing::warn!(conn_index, error = %e, "unregisterConnection failed"),
        Err(_) => tracing::warn!(conn_index, "unregisterConnection timed out"),
    }
}

fn lost_reason(e: &quinn::ConnectionError) -> &'static str {
    match e {
        quinn::ConnectionError::TimedOut => "idle_timeout",
        quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::ConnectionClosed(_) => {
            "closed"
        }
        quinn::ConnectionError::Reset => "reset",
        _ => "connection_error",
    }
}

/// After `unregisterConnection`, the edge may still open streams it routed here just before it saw the
/// unregistration (QUIC has no GOAWAY to fence them off, unlike the HTTP/2 transport). The connection therefore
/// stays open at least this long, bounded by the grace period, even with nothing in flight; closing at once
/// would fail those requests.
const UNREGISTER_LINGER: Duration = Duration::from_millis(500);

/// Keeps serving in-flight streams until they finish or the grace period ends (§10).
async fn drain(shared: &Arc<Shared>, conn: &quinn::Connection, tracker: &TaskTracker) {
    tracker.close();
    let grace = shared.config.grace_period;
    let settled = async {
        tokio::time::sleep(UNREGISTER_LINGER.min(grace)).await;
        tracker.wait().await;
    };
    let accept_more = async {
        // Streams the edge opened just before our unregister landed are still served.
        while let Ok((send, recv)) = conn.accept_bi().await {
            let shared = shared.clone();
            tracker.spawn(async move { handle_stream(&shared, 0, send, recv).await });
        }
    };
    tokio::select! {
        () = settled => {}
        _ = tokio::time::sleep(grace) => {}
        _ = shared.abort.cancelled() => {}
        _ = accept_more => {}
    }
}

async fn handle_stream(
    shared: &Arc<Shared>,
    conn_index: u8,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut sig = [0u8; 6];
    if recv.read_exact(&mut sig).await.is_err() {
        let _ = send.reset(quinn::VarInt::from_u32(0));
        return;
    }
    match stream::classify(&sig) {
        StreamKind::Data => data::serve_quic_data_stream(shared, conn_index, send, recv).await,
        StreamKind::Rpc => {
            data::serve_quic_rpc_stream(shared, tokio::io::join(recv, send), BytesMut::new()).await
        }
        StreamKind::Unknown => {
            tracing::debug!(conn_index, "stream with an unknown signature; resetting it");
            let _ = send.reset(quinn::VarInt::from_u32(0));
            let _ = recv.stop(quinn::VarInt::from_u32(0));
        }
    }
}
