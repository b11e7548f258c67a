//! A Cloudflare API stand-in on loopback: `GET` and `PUT /client/v4/accounts/{a}/cfd_tunnel/{t}/configurations`
//! for one account and tunnel, checking the bearer token, keeping the last document put, recording every request,
//! and answering with queued error statuses, with or without `Retry-After`, when told to.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    /// The status it was answered with.
    pub status: u16,
    /// The `Retry-After` it was answered with.
    pub retry_after: Option<String>,
}

/// The `Retry-After` of a queued failure.
#[derive(Clone, Debug)]
pub enum RetryAfter {
    /// This field value as it is: delay-seconds, or something malformed.
    Value(String),
    /// An IMF-fixdate this long after the moment of the answer (whole seconds, so up to 1 s less in effect).
    DateAfter(Duration),
    /// An IMF-fixdate this long before the moment of the answer.
    DateBefore(Duration),
}

#[derive(Clone)]
pub struct FakeCloudflare {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

struct State {
    account: String,
    tunnel: String,
    token: String,
    ingress: Value,
    faults: VecDeque<(u16, Option<RetryAfter>)>,
    calls: Vec<Call>,
}

impl FakeCloudflare {
    /// A fake that accepts `token` for `account`/`tunnel`, whose tunnel starts with `ingress` (`null`: a tunnel
    /// never configured remotely).
    pub async fn start(account: &str, tunnel: &str, token: &str, ingress: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self {
            addr,
            state: Arc::new(Mutex::new(State {
                account: account.to_owned(),
                tunnel: tunnel.to_owned(),
                token: token.to_owned(),
                ingress,
                faults: VecDeque::new(),
                calls: Vec::new(),
            })),
        };
        let this = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        fake
    }

    /// The base URL to give the controller.
    pub fn url(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    /// The path of the configurations endpoint.
    pub fn path(&self) -> String {
        let st = self.state.lock().unwrap();
        format!(
            "/client/v4/accounts/{}/cfd_tunnel/{}/configurations",
            st.account, st.tunnel
        )
    }

    /// The next requests get these statuses, one each, before normal service resumes.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .extend(statuses.iter().map(|s| (*s, None)));
    }

    /// The next request gets `status` with this `Retry-After` (after the failures queued before).
    pub fn fail_next_with(&self, status: u16, retry_after: RetryAfter) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push_back((status, Some(retry_after)));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The tunnel's current ingress list.
    pub fn ingress(&self) -> Value {
        self.state.lock().unwrap().ingress.clone()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        // Taken before any Retry-After date is written, so the gap to the next call is measured from no later
        // than the moment the date was computed from.
        let at = Instant::now();
        let mut retry_after = None;
        let mut st = self.state.lock().unwrap();
        let expected_path = format!(
            "/client/v4/accounts/{}/cfd_tunnel/{}/configurations",
            st.account, st.tunnel
        );
        let (status, reply) = if let Some((code, after)) = st.faults.pop_front() {
            retry_after = after.map(|after| match after {
                RetryAfter::Value(v) => v,
                RetryAfter::DateAfter(d) => httpdate::fmt_http_date(SystemTime::now() + d),
                RetryAfter::DateBefore(d) => httpdate::fmt_http_date(SystemTime::now() - d),
            });
            (code, errors(code, "injected failure"))
        } else if authorization.as_deref() != Some(format!("Bearer {}", st.token).as_str()) {
            (403, errors(10000, "Authentication error"))
        } else if path != expected_path {
            (404, errors(1003, "tunnel not found"))
        } else if method == "GET" {
            let config = if st.ingress.is_null() {
                Value::Null
            } else {
                json!({"ingress": st.ingress, "warp-routing": {"enabled": false}})
            };
            (
                200,
                success(
                    json!({"tunnel_id": st.tunnel, "version": 1, "source": "cloudflare", "config": config}),
                ),
            )
        } else if method == "PUT" {
            match body["config"]["ingress"].as_array() {
                Some(list) => {
                    st.ingress = Value::Array(list.clone());
                    (
                        200,
                        success(json!({"tunnel_id": st.tunnel, "version": 2, "config": body["config"]})),
                    )
                }
                None => (400, errors(1001, "config.ingress missing")),
            }
        } else {
            (405, errors(1000, "method not allowed"))
        };
        st.calls.push(Call {
            at,
            method,
            path,
            authorization,
            body,
            status,
            retry_after: retry_after.clone(),
        });
        let mut reply_head = Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json");
        if let Some(v) = retry_after {
            reply_head = reply_head.header(http::header::RETRY_AFTER, v);
        }
        reply_head
            .body(Full::new(Bytes::from(reply.to_string())))
            .unwrap()
    }
}

fn success(result: Value) -> Value {
    json!({"success": true, "errors": [], "messages": [], "result": result})
}

fn errors(code: u16, message: &str) -> Value {
    json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})
}
