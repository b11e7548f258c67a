//! The JSON admin API (tunnel.md §13.4).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tunnelgate_tunnel::edge;
use tunnelgate_tunnel::origin::{OriginBody, full_body};
use tunnelgate_tunnel::registration;

use crate::{CloseMode, ConnHandle, FaultRule, Inner};

pub(crate) async fn serve(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(inner, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, v: Value) -> Response<OriginBody> {
    let mut r = Response::new(full_body(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn bad(msg: impl std::fmt::Display) -> Response<OriginBody> {
    reply(StatusCode::BAD_REQUEST, json!({"error": msg.to_string()}))
}

async fn handle(inner: Arc<Inner>, req: Request<hyper::body::Incoming>) -> Response<OriginBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(e),
    };
    let json_body = || -> Result<Value, serde_json::Error> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&body)
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["state"]) => reply(StatusCode::OK, inner.state_json()),
        (&Method::POST, ["faults"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(e) => return bad(e),
            };
            match FaultRule::from_json(&v) {
                Ok(rule) => reply(StatusCode::OK, json!({"id": inner.add_fault(rule)})),
                Err(e) => bad(e),
            }
        }
        (&Method::DELETE, ["faults"]) => reply(StatusCode::OK, json!({"removed": inner.remove_faults(None)})),
        (&Method::DELETE, ["faults", id]) => match id.parse::<u64>() {
            Ok(id) => reply(StatusCode::OK, json!({"removed": inner.remove_faults(Some(id))})),
            Err(e) => bad(e),
        },
        (&Method::POST, ["rpc", "update-configuration"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(e) => return bad(e),
            };
            let Some(conn_index) = v
                .get("connIndex")
                .and_then(Value::as_u64)
                .and_then(|n| u8::try_from(n).ok())
            else {
                return bad("connIndex is required");
            };
            let version = v
                .get("version")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(0);
            let config = v.get("config").cloned().unwrap_or(json!({}));
            let Some((_, _, handle)) = inner.pick(Some(conn_index)) else {
                return bad("no registered connection with that connIndex");
            };
            match handle {
                ConnHandle::Quic(conn) => {
                    let answer = async {
                        let mut client = edge::open_rpc_quic(&conn).await?;
                        let a = registration::call_update_configuration(
                            &mut client,
                            version,
                            config.to_string().as_bytes(),
                        )
                        .await?;
                        let _ = client.release().await;
                        Ok::<_, tunnelgate_tunnel::rpc::RpcError>(a)
                    };
                    match answer.await {
                        Ok(a) => reply(
                            StatusCode::OK,
                            json!({"latestAppliedVersion": a.latest_applied_version, "err": a.err}),
                        ),
                        Err(e) => reply(StatusCode::BAD_GATEWAY, json!({"error": e.to_string()})),
                    }
                }
                ConnHandle::H2 { send, .. } => {
                    match edge::update_configuration_h2(&send, version, &config).await {
                        Ok(a) => reply(StatusCode::OK, a),
                        Err(e) => reply(StatusCode::BAD_GATEWAY, json!({"error": e.to_string()})),
                    }
                }
            }
        }
        (&Method::POST, ["rpc", "register-udp-session"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(e) => return bad(e),
            };
            let conn_index = v
                .get("connIndex")
                .and_then(Value::as_u64)
                .and_then(|n| u8::try_from(n).ok())
                .unwrap_or(0);
            let Some((_, _, handle)) = inner.pick(Some(conn_index)) else {
                return bad("no registered connection with that connIndex");
            };
            let ConnHandle::Quic(conn) = handle else {
                return bad("UDP sessions exist only on QUIC connections");
            };
            let answer = async {
                let mut client = edge::open_rpc_quic(&conn).await?;
                let err = registration::call_register_udp_session(&mut client).await?;
                let _ = client.release().await;
                Ok::<_, tunnelgate_tunnel::rpc::RpcError>(err)
            };
            match answer.await {
                Ok(err) => reply(StatusCode::OK, json!({"err": err, "refused": !err.is_empty()})),
                Err(e) => reply(StatusCode::BAD_GATEWAY, json!({"error": e.to_string()})),
            }
        }
        (&Method::POST, ["connections", n, "close"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(e) => return bad(e),
            };
            let mode = match v.get("mode").and_then(Value::as_str).unwrap_or("close") {
                "close" => CloseMode::Close,
                "reset" => CloseMode::Reset,
                "blackhole" => CloseMode::Blackhole,
                other => return bad(format!("unknown mode {other:?}")),
            };
            let Ok(conn_index) = n.parse::<u8>() else {
                return bad("connection index must be a number");
            };
            let Some((id, _, _)) = inner.pick(Some(conn_index)) else {
                return bad("no registered connection with that connIndex");
            };
            match inner.close_conn(id, mode) {
                Ok(()) => reply(StatusCode::OK, json!({"closed": id})),
                Err(e) => bad(e),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}
