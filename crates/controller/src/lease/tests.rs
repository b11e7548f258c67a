use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::json;

use super::*;
use crate::options::ObjectName;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/tg/leases/tunnelgate-leader";

fn elector() -> (LeaderElector, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "tg");
    let opts = LeaderElectionOptions::new(ObjectName::new("tg", "tunnelgate-leader"), "me".into());
    (LeaderElector::new(Api::namespaced(client, "tg"), opts), handle)
}

fn lease(holder: &str, rv: &str, renew: &str) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "tunnelgate-leader", "namespace": "tg", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew,
                 "acquireTime": renew, "leaseTransitions": 3}
    })
}

fn reply(code: u16, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn failure(code: u16, reason: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
) -> (serde_json::Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = handle.next_request().await.expect("the elector made no request");
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    let bytes = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

#[test]
fn decide_follows_holder_and_expiry() {
    let fifteen = Duration::from_secs(15);
    let l: Lease = serde_json::from_value(lease("other", "1", "2026-01-01T00:00:00.000000Z")).unwrap();
    assert_eq!(decide(None, "me", Duration::ZERO, fifteen), LeaseAction::Create);
    assert_eq!(
        decide(Some(&l), "me", Duration::from_secs(14), fifteen),
        LeaseAction::Wait
    );
    assert_eq!(
        decide(Some(&l), "me", Duration::from_secs(15), fifteen),
        LeaseAction::Acquire
    );
    assert_eq!(
        decide(Some(&l), "other", Duration::ZERO, fifteen),
        LeaseAction::Renew
    );
    let mut free = l.clone();
    free.spec.as_mut().unwrap().holder_identity = Some(String::new());
    assert_eq!(
        decide(Some(&free), "me", Duration::ZERO, fifteen),
        LeaseAction::Acquire
    );
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none() {
    let (mut elector, mut handle) = elector();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
        send.send_response(reply(404, &failure(404, "NotFound")));
        let (body, send) = expect(
            &mut handle,
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/tg/leases",
        )
        .await;
        assert_eq!(body["spec"]["holderIdentity"], "me");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        send.send_response(reply(201, &lease("me", "1", "2026-01-01T00:00:00.000000Z")));
    });
    elector.acquire().await.unwrap();
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn takes_over_a_lease_whose_holder_stopped_renewing() {
    let (mut elector, mut handle) = elector();
    let server = tokio::spawn(async move {
        // The holder's record never changes: after the lease duration on our clock, it is ours to take.
        let mut gets = 0;
        loop {
            let (request, send) = handle.next_request().await.unwrap();
            if request.method() == Method::GET {
                gets += 1;
                send.send_response(reply(200, &lease("other", "7", "2026-01-01T00:00:00.000000Z")));
                continue;
            }
            assert_eq!(request.method(), Method::PUT);
            let bytes = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            // Optimistic concurrency: the replace carries the resourceVersion we read.
            assert_eq!(body["metadata"]["resourceVersion"], "7");
            assert_eq!(body["spec"]["holderIdentity"], "me");
            assert_eq!(body["spec"]["leaseTransitions"], 4);
            send.send_response(reply(200, &lease("me", "8", "2026-01-01T00:00:20.000000Z")));
            return gets;
        }
    });
    let started = Instant::now();
    elector.acquire().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(15));
    // One GET every retry period (2 s) until 15 s passed.
    assert_eq!(server.await.unwrap(), 9);
}

#[tokio::test(start_paused = true)]
async fn a_conflicting_write_means_someone_else_won() {
    let (mut elector, mut handle) = elector();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
        send.send_response(reply(200, &lease("", "3", "2026-01-01T00:00:00.000000Z")));
        let (_, send) = expect(&mut handle, Method::PUT, LEASE_PATH).await;
        send.send_response(reply(409, &failure(409, "Conflict")));
    });
    assert!(!elector.step().await.unwrap());
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_leader_gives_up_when_it_cannot_renew_within_the_deadline() {
    let (mut elector, mut handle) = elector();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
        send.send_response(reply(200, &lease("me", "1", "2026-01-01T00:00:00.000000Z")));
        let (_, send) = expect(&mut handle, Method::PUT, LEASE_PATH).await;
        send.send_response(reply(200, &lease("me", "2", "2026-01-01T00:00:00.000000Z")));
        // From now on the API server fails every request.
        let mut failures = 0;
        while let Some((_, send)) = handle.next_request().await {
            failures += 1;
            send.send_response(reply(500, &failure(500, "InternalError")));
        }
        failures
    });
    elector.acquire().await.unwrap();
    let started = Instant::now();
    let err = elector.keep_leading().await;
    assert!(matches!(err, Error::LeaseLost(_)), "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_secs(12),
        "{waited:?}"
    );
    assert!(server.await.unwrap() >= 4);
}

#[tokio::test(start_paused = true)]
async fn the_leader_exits_when_another_replica_holds_the_lease() {
    let (mut elector, mut handle) = elector();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
        send.send_response(reply(200, &lease("me", "1", "2026-01-01T00:00:00.000000Z")));
        let (_, send) = expect(&mut handle, Method::PUT, LEASE_PATH).await;
        send.send_response(reply(200, &lease("me", "2", "2026-01-01T00:00:00.000000Z")));
        let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
        send.send_response(reply(200, &lease("usurper", "3", "2026-01-01T00:00:05.000000Z")));
    });
    elector.acquire().await.unwrap();
    let err = elector.keep_leading().await;
    assert!(err.to_string().contains("another replica"), "{err}");
    server.await.unwrap();
}
