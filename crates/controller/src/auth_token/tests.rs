use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::json;

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const SECRETS: &str = "/api/v1/namespaces/tg/secrets";

fn api<K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>() -> (Api<K>, Handle)
{
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Api::namespaced(kube::Client::new(service, "tg"), "tg"), handle)
}

fn opts(generate: bool) -> AuthTokenOptions {
    AuthTokenOptions {
        secret: ObjectName::new("tg", "proxy-auth"),
        key: "auth-token".into(),
        generate,
    }
}

fn reply(code: u16, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn failure(code: u16, reason: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code})
}

fn secret_json(token: &str) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(token);
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "proxy-auth", "namespace": "tg"},
           "data": {"auth-token": b64}})
}

async fn body_of(request: Request<Body>) -> serde_json::Value {
    let bytes = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn generated_tokens_are_32_random_bytes_base64url() {
    let a = generate_token();
    let b = generate_token();
    assert_ne!(a, b);
    assert_eq!(a.len(), 43);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap()
            .len(),
        32
    );
}

#[test]
fn rotation_keeps_the_previous_token_for_ten_minutes() {
    let start = Instant::now();
    let mut tokens = AuthTokens::new(Some("old".into()));
    assert!(!tokens.rotate(Some("old".into()), start));
    assert!(tokens.rotate(Some("new".into()), start));
    assert_eq!(tokens.current(), Some("new"));
    assert_eq!(tokens.previous(start + Duration::from_secs(599)), Some("old"));
    assert_eq!(tokens.previous(start + Duration::from_secs(600)), None);
    assert!(
        !format!("{tokens:?}").contains("old"),
        "tokens never show in Debug output"
    );
}

#[test]
fn token_hash_is_16_hex_characters() {
    let h = token_hash("secret");
    assert_eq!(h.len(), 16);
    assert_eq!(h, "2bb80d537b1da3e3");
}

#[test]
fn unusable_secret_values_are_errors() {
    let s: Secret = serde_json::from_value(secret_json("  ")).unwrap();
    assert!(token_from_secret(&s, "auth-token").unwrap_err().contains("empty"));
    assert!(token_from_secret(&s, "other").unwrap_err().contains("missing"));
}

#[tokio::test]
async fn a_missing_secret_is_created_once_with_a_fresh_token() {
    let (api, mut handle) = api::<Secret>();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::GET, "/api/v1/namespaces/tg/secrets/proxy-auth")
        );
        send.send_response(reply(404, &failure(404, "NotFound")));
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!((request.method(), request.uri().path()), (&Method::POST, SECRETS));
        let body = body_of(request).await;
        assert_eq!(
            body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "tunnelgate-controller"
        );
        send.send_response(reply(201, &body));
        body
    });
    let token = ensure_token(&api, &opts(true)).await.unwrap();
    let created = server.await.unwrap();
    let stored = base64::engine::general_purpose::STANDARD
        .decode(created["data"]["auth-token"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(stored).unwrap(), token);
}

#[tokio::test]
async fn losing_the_creation_race_reads_the_winners_token() {
    let (api, mut handle) = api::<Secret>();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(404, &failure(404, "NotFound")));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(409, &failure(409, "AlreadyExists")));
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), Method::GET);
        send.send_response(reply(200, &secret_json("winner")));
    });
    assert_eq!(ensure_token(&api, &opts(true)).await.unwrap(), "winner");
    server.await.unwrap();
}

#[tokio::test]
async fn an_existing_secret_is_never_overwritten_and_a_missing_one_needs_generation() {
    let (api, mut handle) = api::<Secret>();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(200, &secret_json("byo-token")));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(404, &failure(404, "NotFound")));
        // No further request: with generation off nothing is created.
        assert!(handle.next_request().await.is_none());
    });
    assert_eq!(ensure_token(&api, &opts(true)).await.unwrap(), "byo-token");
    let err = ensure_token(&api, &opts(false)).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    drop(api);
    server.await.unwrap();
}

fn deployment(annotation: Option<&str>) -> serde_json::Value {
    let annotations = annotation
        .map(|a| json!({AUTH_TOKEN_HASH_ANNOTATION: a}))
        .unwrap_or(json!({}));
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "proxy", "namespace": "tg"},
           "spec": {"selector": {"matchLabels": {"app": "p"}},
                    "template": {"metadata": {"annotations": annotations}, "spec": {"containers": []}}}})
}

#[tokio::test]
async fn the_deployment_is_rolled_only_when_the_hash_differs() {
    let (api, mut handle) = api::<Deployment>();
    let server = tokio::spawn(async move {
        // 1: same hash → no patch
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(200, &deployment(Some("aaaa"))));
        // 2: absent and not asked to add → no patch
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(200, &deployment(None)));
        // 3: different → merge patch of the pod template annotation
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(200, &deployment(Some("aaaa"))));
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.headers()["content-type"], "application/merge-patch+json");
        let body = body_of(request).await;
        assert_eq!(
            body,
            json!({"spec": {"template": {"metadata": {"annotations": {AUTH_TOKEN_HASH_ANNOTATION: "bbbb"}}}}})
        );
        send.send_response(reply(200, &deployment(Some("bbbb"))));
    });
    let a = AUTH_TOKEN_HASH_ANNOTATION;
    assert!(!roll_deployment(&api, "proxy", a, "aaaa", true).await.unwrap());
    assert!(!roll_deployment(&api, "proxy", a, "bbbb", false).await.unwrap());
    assert!(roll_deployment(&api, "proxy", a, "bbbb", true).await.unwrap());
    server.await.unwrap();
}
