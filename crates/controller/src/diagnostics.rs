//! `/healthz`, `/readyz` (on `--health-addr`) and `/metrics` (on `--metrics-addr`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Error;
use crate::metrics::Metrics;

/// What the endpoints report on.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// Set once every informer cache has synced; standbys are ready too.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl Diagnostics {
    /// Binds `addr` and serves in a background task. Returns the bound address (useful with port 0).
    pub async fn serve(
        &self,
        addr: SocketAddr,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Result<SocketAddr, Error> {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            // `:PORT` asks for every interface; without IPv6 that is every IPv4 interface.
            Err(_) if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                TcpListener::bind(v4)
                    .await
                    .map_err(|source| Error::Bind { addr, source })?
            }
            Err(source) => return Err(Error::Bind { addr, source }),
        };
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let this = self.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, std::convert::Infallible>(this.answer(&req)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
        Ok(bound)
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            }
            "/readyz" => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "informer caches not synced\n".into(),
            ),
            "/metrics" => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
