//! RequestMirror delivery (routing.md §5.5): fire-and-forget copies on detached tasks, bounded to 1,024 in
//! flight, up to 3 attempts on transport errors, 5 s per attempt. Nothing here can delay or change the primary
//! response.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, oneshot};
use tunnelgate_route::UpstreamScheme;

use crate::body;
use crate::forward::strip_hop_by_hop;
use crate::metrics::MirrorResult;
use crate::observe::TeeAbandoned;
use crate::pool::UpstreamClient;
use crate::state::ProxyState;

const MAX_IN_FLIGHT: usize = 1024;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(200)];

/// A copy of the request taken at the mirror filter's position in the chain.
pub struct MirrorCopy {
    pub client: Arc<UpstreamClient>,
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
}

/// The mirror body: none, or the teed primary body once it is complete.
pub enum MirrorBody {
    Empty,
    Teed(oneshot::Receiver<Result<Bytes, TeeAbandoned>>),
}

/// Launches mirrors, bounded by a process-wide semaphore.
pub struct Mirrors {
    permits: Arc<Semaphore>,
    state: ProxyState,
}

impl Mirrors {
    pub fn new(state: ProxyState) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            state,
        }
    }

    /// Sends every copy on one detached task; returns at once.
    pub fn launch(&self, copies: Vec<MirrorCopy>, body: MirrorBody) {
        let mut admitted = Vec::with_capacity(copies.len());
        for copy in copies {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => admitted.push((copy, permit)),
                Err(_) => self.state.metrics().mirror(MirrorResult::DroppedOverload),
            }
        }
        if admitted.is_empty() {
            return;
        }
        let state = self.state.clone();
        tokio::spawn(async move {
            let metrics = state.metrics();
            let body = match body {
                MirrorBody::Empty => Bytes::new(),
                MirrorBody::Teed(rx) => match rx.await {
                    Ok(Ok(b)) => b,
                    Ok(Err(TeeAbandoned::TooLarge)) => {
                        for _ in &admitted {
                            metrics.mirror(MirrorResult::SkippedBody);
                        }
                        return;
                    }
                    // A read error, or the primary dropped its body before the end.
                    Ok(Err(TeeAbandoned::ReadError)) | Err(_) => {
                        for _ in &admitted {
                            metrics.mirror(MirrorResult::Failed);
                        }
                        return;
                    }
                },
            };
            let sends = admitted.into_iter().map(|(copy, permit)| {
                let body = body.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let result = deliver(&copy, body).await;
                    state.metrics().mirror(result);
                    drop(permit);
                })
            });
            for task in sends.collect::<Vec<_>>() {
                let _ = task.await;
            }
        });
    }
}

async fn deliver(copy: &MirrorCopy, body: Bytes) -> MirrorResult {
    for attempt in 0..=BACKOFF.len() {
        let Some(req) = build_request(copy, body.clone()) else {
            return MirrorResult::Failed;
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, copy.client.request(req)).await {
            Ok(Ok(resp)) => {
                // Any HTTP response counts as delivered; drain it so the connection can be reused.
                let _ = tokio::time::timeout(ATTEMPT_TIMEOUT, resp.into_body().collect()).await;
                return MirrorResult::Sent;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, attempt, upstream = %copy.client.upstream.authority, "mirror attempt failed");
            }
            Err(_) => {
                tracing::debug!(attempt, upstream = %copy.client.upstream.authority, "mirror attempt timed out");
            }
        }
        if let Some(pause) = BACKOFF.get(attempt) {
            tokio::time::sleep(*pause).await;
        }
    }
    MirrorResult::Failed
}

fn build_request(copy: &MirrorCopy, body: Bytes) -> Option<Request<body::ProxyBody>> {
    let upstream = &copy.client.upstream;
    let scheme = match upstream.scheme {
        UpstreamScheme::Http => Scheme::HTTP,
        UpstreamScheme::Https => Scheme::HTTPS,
    };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(upstream.authority.clone())
        .path_and_query(copy.path_and_query.clone())
        .build()
        .ok()?;
    let mut headers = copy.headers.clone();
    strip_hop_by_hop(&mut headers, false);
    // The mirror's Host is the authority of its backendUrl; hyper fills it in from the URI.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let mut req = Request::new(if body.is_empty() {
        body::empty()
    } else {
        body::full(body)
    });
    *req.method_mut() = copy.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some(req)
}
