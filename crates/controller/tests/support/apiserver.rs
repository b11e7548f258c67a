//! A Kubernetes API server stand-in on loopback: enough of list, watch (JSON event streams), get, create,
//! replace (with resourceVersion conflicts) and patch (server-side apply on `/status`, JSON merge patch) for the
//! real kube-rs client, watchers and reflectors to run against it.
//!
//! Tests change objects through [`ApiServer::apply`] / [`ApiServer::delete`], which emit watch events exactly as
//! writes through the HTTP API do, and read what the controller wrote from [`ApiServer::writes`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

type Body = BoxBody<Bytes, Infallible>;

/// Where a kind lives: (group/version as in the URL, plural, kind, namespaced).
const KINDS: &[(&str, &str, &str, bool)] = &[
    (
        "gateway.networking.k8s.io/v1",
        "gatewayclasses",
        "GatewayClass",
        false,
    ),
    ("gateway.networking.k8s.io/v1", "gateways", "Gateway", true),
    ("gateway.networking.k8s.io/v1", "httproutes", "HTTPRoute", true),
    ("gateway.networking.k8s.io/v1", "grpcroutes", "GRPCRoute", true),
    (
        "gateway.networking.k8s.io/v1",
        "referencegrants",
        "ReferenceGrant",
        true,
    ),
    (
        "gateway.networking.k8s.io/v1",
        "backendtlspolicies",
        "BackendTLSPolicy",
        true,
    ),
    ("v1", "services", "Service", true),
    ("v1", "configmaps", "ConfigMap", true),
    ("v1", "namespaces", "Namespace", false),
    ("v1", "secrets", "Secret", true),
    ("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", true),
    ("coordination.k8s.io/v1", "leases", "Lease", true),
    ("events.k8s.io/v1", "events", "Event", true),
    ("apps/v1", "deployments", "Deployment", true),
    (
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
];

/// One write the controller made through the HTTP API.
#[derive(Debug, Clone)]
pub struct Write {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    gv: String,
    plural: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(String, String), BTreeMap<(String, String), Value>>,
    history: Vec<Event>,
    writes: Vec<Write>,
    /// Statuses to answer the next matching requests with: (method, path suffix) → code.
    faults: Vec<(String, String, u16)>,
}

#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
}

fn kind_of(gv: &str, plural: &str) -> Option<(&'static str, bool)> {
    KINDS
        .iter()
        .find(|(g, p, _, _)| *g == gv && *p == plural)
        .map(|(_, _, k, n)| (*k, *n))
}

fn plural_of(api_version: &str, kind: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(g, _, k, _)| *g == api_version && *k == kind)
        .map(|(_, p, _, _)| *p)
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "reason": reason,
           "message": message, "code": code})
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The parsed request path.
struct Target {
    gv: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let owned = |s: &&str| (*s).to_owned();
    Some(match rest {
        ["namespaces", ns, plural, tail @ ..] => Target {
            gv,
            plural: (*plural).to_owned(),
            namespace: Some((*ns).to_owned()),
            name: tail.first().map(owned),
            subresource: tail.get(1).map(owned),
        },
        [plural, tail @ ..] => Target {
            gv,
            plural: (*plural).to_owned(),
            namespace: None,
            name: tail.first().map(owned),
            subresource: tail.get(1).map(owned),
        },
        [] => return None,
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality-only label selectors and `metadata.name`/`metadata.namespace` field selectors.
fn matches_selectors(object: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let label_ok = labels.is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            object["metadata"]["labels"][k.trim_end_matches('=')].as_str() == Some(v.trim_start_matches('='))
        })
    });
    let field_ok = fields.is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            let v = v.trim_start_matches('=');
            match k {
                "metadata.name" => object["metadata"]["name"].as_str() == Some(v),
                "metadata.namespace" => object["metadata"]["namespace"].as_str() == Some(v),
                // Secrets: the API server has `type` as a field selector.
                "type" => object["type"].as_str() == Some(v),
                _ => true,
            }
        })
    });
    label_ok && field_ok
}

impl ApiServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(4096);
        let server = Self {
            addr,
            state: Arc::default(),
            events,
        };
        let this = server.clone();
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
        server
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let url: http::Uri = format!("http://{}", self.addr).parse().unwrap();
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or updates an object (as `kubectl apply` would); a spec change bumps `metadata.generation`.
    pub fn apply(&self, mut object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap().to_owned();
        let kind = object["kind"].as_str().unwrap().to_owned();
        let plural =
            plural_of(&api_version, &kind).unwrap_or_else(|| panic!("unknown kind {api_version} {kind}"));
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let existing = st
            .objects
            .get(&(api_version.clone(), plural.to_owned()))
            .and_then(|m| m.get(&(ns.clone(), name.clone())))
            .cloned();
        let kind_static = kind_of(&api_version, plural).unwrap().0;
        let event_type;
        match existing {
            Some(old) => {
                let mut generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                if old.get("spec") != object.get("spec") {
                    generation += 1;
                }
                object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                object["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                object["metadata"]["generation"] = json!(generation);
                if object.get("status").is_none() && old.get("status").is_some() {
                    object["status"] = old["status"].clone();
                }
                event_type = "MODIFIED";
            }
            None => {
                object["metadata"]["uid"] = json!(format!("uid-{rv}"));
                object["metadata"]["generation"] = json!(1);
                if object["metadata"].get("creationTimestamp").is_none() {
                    let secs = 1_767_225_600 + rv;
                    let ts = k8s_openapi::jiff::Timestamp::from_second(secs as i64).unwrap();
                    object["metadata"]["creationTimestamp"] =
                        json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
                }
                event_type = "ADDED";
            }
        }
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store(
            &mut st,
            &api_version,
            plural,
            kind_static,
            &ns,
            &name,
            object.clone(),
            event_type,
        );
        object
    }

    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let plural = plural_of(api_version, kind).unwrap();
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let removed = st
            .objects
            .get_mut(&(api_version.to_owned(), plural.to_owned()))
            .and_then(|m| m.remove(&(namespace.to_owned(), name.to_owned())));
        if let Some(mut object) = removed {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let kind = kind_of(api_version, plural).unwrap().0;
            self.emit(
                &mut st,
                Event {
                    rv,
                    gv: api_version.to_owned(),
                    plural: plural.to_owned(),
                    kind,
                    object,
                },
                "DELETED",
            );
        }
    }

    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let plural = plural_of(api_version, kind).unwrap();
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(api_version.to_owned(), plural.to_owned()))?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every write the controller made, oldest first.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// The next `method` request whose path ends with `path_suffix` gets `code`.
    pub fn fail_next(&self, method: &str, path_suffix: &str, code: u16) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push((method.to_owned(), path_suffix.to_owned(), code));
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        st: &mut State,
        gv: &str,
        plural: &str,
        kind: &'static str,
        ns: &str,
        name: &str,
        object: Value,
        event_type: &str,
    ) {
        st.objects
            .entry((gv.to_owned(), plural.to_owned()))
            .or_default()
            .insert((ns.to_owned(), name.to_owned()), object.clone());
        let rv = st.rv;
        self.emit(
            st,
            Event {
                rv,
                gv: gv.to_owned(),
                plural: plural.to_owned(),
                kind,
                object,
            },
            event_type,
        );
    }

    fn emit(&self, st: &mut State, mut event: Event, event_type: &str) {
        event.object = json!({"type": event_type, "object": event.object});
        st.history.push(event.clone());
        let _ = self.events.send(event);
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if std::env::var_os("APISERVER_DEBUG").is_some() {
            eprintln!("apiserver: {method} {path}?{query}");
        }
        let Some(target) = parse_path(&path) else {
            return json_response(404, &status_body(404, "NotFound", "unknown path"));
        };
        let Some((kind, _)) = kind_of(&target.gv, &target.plural) else {
            return json_response(404, &status_body(404, "NotFound", "unknown resource"));
        };
        if method != Method::GET {
            let mut st = self.state.lock().unwrap();
            st.writes.push(Write {
                at: Instant::now(),
                method: method.to_string(),
                path: path.clone(),
                query: query.clone(),
                content_type: content_type.clone(),
                body: body.clone(),
            });
            if let Some(i) = st
                .faults
                .iter()
                .position(|(m, p, _)| *m == method.as_str() && path.ends_with(p.as_str()))
            {
                let (_, _, code) = st.faults.remove(i);
                return json_response(code, &status_body(code, "InternalError", "injected fault"));
            }
        }
        match (method, target.name.clone()) {
            (Method::GET, None) if query_param(&query, "watch").as_deref() == Some("true") => {
                self.watch(&target, kind, &query)
            }
            (Method::GET, None) => self.list(&target, kind, &query),
            (Method::GET, Some(name)) => match self.lookup(&target, &name) {
                Some(o) => json_response(200, &o),
                None => json_response(
                    404,
                    &status_body(404, "NotFound", &format!("{} {name} not found", target.plural)),
                ),
            },
            (Method::POST, None) => self.create(&target, kind, body),
            (Method::PUT, Some(name)) => self.replace(&target, kind, &name, body),
            (Method::PATCH, Some(name)) => self.patch(&target, kind, &name, &content_type, body),
            _ => json_response(405, &status_body(405, "MethodNotAllowed", "not supported here")),
        }
    }

    fn lookup(&self, t: &Target, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(t.gv.clone(), t.plural.clone()))?
            .get(&(t.namespace.clone().unwrap_or_default(), name.to_owned()))
            .cloned()
    }

    fn list(&self, t: &Target, kind: &str, query: &str) -> Response<Body> {
        let labels = query_param(query, "labelSelector");
        let fields = query_param(query, "fieldSelector");
        let st = self.state.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .get(&(t.gv.clone(), t.plural.clone()))
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|o| {
                t.namespace
                    .as_deref()
                    .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
            })
            .filter(|o| matches_selectors(o, labels.as_deref(), fields.as_deref()))
            .cloned()
            .collect();
        json_response(
            200,
            &json!({
                "apiVersion": t.gv, "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": st.rv.to_string()}, "items": items,
            }),
        )
    }

    fn watch(&self, t: &Target, _kind: &str, query: &str) -> Response<Body> {
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = query_param(query, "timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290u64);
        let labels = query_param(query, "labelSelector");
        let fields = query_param(query, "fieldSelector");
        let (gv, plural, ns) = (t.gv.clone(), t.plural.clone(), t.namespace.clone());
        let relevant = move |e: &Event| {
            e.gv == gv
                && e.plural == plural
                && ns
                    .as_deref()
                    .is_none_or(|ns| e.object["object"]["metadata"]["namespace"].as_str() == Some(ns))
                && matches_selectors(&e.object["object"], labels.as_deref(), fields.as_deref())
        };
        // Subscribe before reading history so nothing falls between the two.
        let live = self.events.subscribe();
        let past: Vec<Event> = {
            let st = self.state.lock().unwrap();
            st.history
                .iter()
                .filter(|e| e.rv > since && relevant(e))
                .cloned()
                .collect()
        };
        let last_past = past.last().map_or(since, |e| e.rv);
        let relevant_live = relevant.clone();
        let live = futures::stream::unfold(live, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |e| std::future::ready(e.rv > last_past && relevant_live(e)));
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        let stream = futures::stream::iter(past)
            .chain(live)
            .take_until(deadline)
            .map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{}\n", e.object)))));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(http_body_util::BodyExt::boxed(StreamBody::new(stream)))
            .unwrap()
    }

    fn create(&self, t: &Target, kind: &'static str, mut body: Value) -> Response<Body> {
        let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let ns = t.namespace.clone().unwrap_or_default();
        if self.lookup(t, &name).is_some() {
            return json_response(
                409,
                &status_body(409, "AlreadyExists", &format!("{name} already exists")),
            );
        }
        body["apiVersion"] = json!(t.gv);
        body["kind"] = json!(kind);
        body["metadata"]["namespace"] = if t.namespace.is_some() {
            json!(ns)
        } else {
            Value::Null
        };
        let created = self.apply(body);
        json_response(201, &created)
    }

    fn replace(&self, t: &Target, kind: &'static str, name: &str, mut body: Value) -> Response<Body> {
        let Some(current) = self.lookup(t, name) else {
            return json_response(404, &status_body(404, "NotFound", "not found"));
        };
        let sent_rv = body["metadata"]["resourceVersion"].as_str().map(str::to_owned);
        if sent_rv.is_some() && sent_rv.as_deref() != current["metadata"]["resourceVersion"].as_str() {
            return json_response(409, &status_body(409, "Conflict", "the object has been modified"));
        }
        body["apiVersion"] = json!(t.gv);
        body["kind"] = json!(kind);
        json_response(200, &self.apply(body))
    }

    fn patch(
        &self,
        t: &Target,
        kind: &'static str,
        name: &str,
        content_type: &str,
        body: Value,
    ) -> Response<Body> {
        let Some(mut current) = self.lookup(t, name) else {
            return json_response(404, &status_body(404, "NotFound", "not found"));
        };
        if t.subresource.as_deref() == Some("status") {
            if content_type != "application/apply-patch+yaml" {
                return json_response(
                    415,
                    &status_body(
                        415,
                        "UnsupportedMediaType",
                        "status is written by server-side apply here",
                    ),
                );
            }
            // Our fields replace the status wholesale: the controller sends the complete value.
            let mut st = self.state.lock().unwrap();
            st.rv += 1;
            let rv = st.rv;
            current["status"] = body["status"].clone();
            current["metadata"]["resourceVersion"] = json!(rv.to_string());
            let ns = t.namespace.clone().unwrap_or_default();
            self.store(
                &mut st,
                &t.gv,
                &t.plural,
                kind,
                &ns,
                name,
                current.clone(),
                "MODIFIED",
            );
            return json_response(200, &current);
        }
        merge(&mut current, &body);
        json_response(200, &self.apply(current))
    }
}
