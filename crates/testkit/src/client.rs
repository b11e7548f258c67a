//! A real HTTP client for tests (hyper-util, HTTP/1.1 keep-alive or h2c prior knowledge).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Request body type of [`Client`].
pub type ClientBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An HTTP/1.1 keep-alive client, plus h2c on demand.
#[derive(Clone)]
pub struct Client {
    h1: Legacy<HttpConnector, ClientBody>,
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        let h1 = Legacy::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Self { h1 }
    }

    /// GET `path` on `addr` with `Host: host`.
    pub async fn get(&self, addr: SocketAddr, host: &str, path: &str) -> Reply {
        self.send(
            Self::request(Method::GET, addr, host, path)
                .body(empty())
                .expect("request"),
        )
        .await
        .expect("GET through the proxy")
    }

    /// A request builder for `http://addr/path` with `Host: host`.
    pub fn request(method: Method, addr: SocketAddr, host: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("host", host)
    }

    /// Sends over HTTP/1.1 and reads the whole response.
    pub async fn send(
        &self,
        req: Request<ClientBody>,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let resp = self.h1.request(req).await?;
        collect(resp).await
    }

    /// Sends over h2c (prior knowledge) on a fresh connection to the URI's address and reads the whole response.
    /// The `Host` header becomes `:authority`.
    pub async fn send_h2(
        &self,
        mut req: Request<ClientBody>,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let addr = req
            .uri()
            .authority()
            .ok_or("request URI needs an authority")?
            .as_str()
            .to_owned();
        if let Some(host) = req.headers_mut().remove("host") {
            let mut parts = req.uri().clone().into_parts();
            parts.authority = Some(http::uri::Authority::try_from(host.as_bytes())?);
            *req.uri_mut() = http::Uri::from_parts(parts)?;
        }
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        collect(resp).await
    }
}

async fn collect(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// An empty request body.
pub fn empty() -> ClientBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

/// A request body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// `PUT /config` with a JSON body and an optional bearer token; returns the status and the JSON reply.
pub async fn put_config(
    addr: SocketAddr,
    token: Option<&str>,
    body: impl Into<Bytes>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{addr}/config"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let reply = Client::new()
        .send(req.body(full(body)).expect("request"))
        .await
        .expect("PUT /config");
    let json = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status, json)
}
