//! WebSocket and other HTTP/1.1 upgrades (routing.md §10): a fresh backend connection, the request head with
//! `Upgrade` preserved, and after a 101 a byte splice in both directions with no idle or total timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tunnelgate_route::UpstreamProtocol;

use crate::body::{self, BoxError, ProxyBody};
use crate::metrics::BackendErrorReason;
use crate::pool::UpstreamClient;

/// Inserted into request extensions by a transport that can hand over the raw client byte stream after the
/// proxy answers 101. The future resolves once the 101 has been written to the client.
///
/// Request extensions must be `Clone + Sync`, so the future sits behind a shared slot; the proxy takes it once.
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<UpgradeFuture>>>);

type UpgradeFuture = Pin<Box<dyn Future<Output = Result<Upgraded, BoxError>> + Send>>;

/// Why an upgrade failed before a response head arrived; every variant is a 502.
#[derive(Debug)]
pub enum UpgradeError {
    /// h2c backends cannot take HTTP/1.1 upgrades.
    NotHttp1,
    /// The transport cannot hand over the client stream.
    NoClientStream,
    Dial,
    Handshake,
}

impl UpgradeError {
    pub fn reason(&self) -> BackendErrorReason {
        match self {
            Self::NotHttp1 | Self::NoClientStream => BackendErrorReason::Other,
            Self::Dial => BackendErrorReason::WsDial,
            Self::Handshake => BackendErrorReason::WsHandshake,
        }
    }
}

impl ClientUpgrade {
    pub fn new(upgraded: impl Future<Output = Result<Upgraded, BoxError>> + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(Some(Box::pin(upgraded)))))
    }

    /// The future, once; later calls (and clones) get `None`.
    pub fn take(&self) -> Option<UpgradeFuture> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for ClientUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientUpgrade")
    }
}

/// Sends `req` (head already prepared, `Upgrade` kept) over a fresh connection. On 101 the splice runs on a
/// detached task and the 101 response is returned for relaying; any other status is returned with its body.
pub async fn forward(
    client: &UpstreamClient,
    req: Request<ProxyBody>,
    client_io: Option<ClientUpgrade>,
    dial_timeout: Duration,
    handshake_timeout: Duration,
    sessions: Gauge,
) -> Result<Response<ProxyBody>, UpgradeError> {
    if client.upstream.protocol == UpstreamProtocol::H2c {
        return Err(UpgradeError::NotHttp1);
    }
    let Some(client_io) = client_io.as_ref().and_then(ClientUpgrade::take) else {
        return Err(UpgradeError::NoClientStream);
    };
    let stream = match tokio::time::timeout(dial_timeout, client.connector.connect()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, upstream = %client.upstream.authority, "upgrade dial failed");
            return Err(UpgradeError::Dial);
        }
        Err(_) => return Err(UpgradeError::Dial),
    };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpgradeError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upgrade backend connection ended with an error");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(|_| UpgradeError::Handshake)
    };
    let mut resp = match tokio::time::timeout(handshake_timeout, exchange).await {
        Ok(r) => r?,
        Err(_) => return Err(UpgradeError::Handshake),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(body::boxed));
    }
    let backend_io = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client_side, backend_side) = tokio::join!(client_io, backend_io);
        let (Ok(client_side), Ok(backend_side)) = (client_side, backend_side) else {
            tracing::debug!("upgrade abandoned: one side did not complete the switch");
            return;
        };
        sessions.inc();
        let mut a = TokioIo::new(client_side);
        let mut b = TokioIo::new(backend_side);
        // Half-closes are propagated: EOF on one side shuts down writing on the other.
        if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
            tracing::debug!(error = %e, "upgraded session ended with an error");
        }
        sessions.dec();
    });
    Ok(resp.map(|_| body::empty()))
}
