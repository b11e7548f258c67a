use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::registration::{
    ConnectionDetails, ConnectionError, ConnectionResponse, ControlSession, FEATURES, RegisterRequest,
    RegistrationCall,
};

fn request() -> RegisterRequest {
    RegisterRequest {
        account_tag: "0123456789abcdef0123456789abcdef".into(),
        tunnel_secret: vec![7; 32],
        tunnel_id: Uuid::new_v4(),
        conn_index: 2,
        client_id: Uuid::new_v4(),
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        version: "tunnelgate-test".into(),
        arch: "linux_amd64".into(),
        origin_local_ip: Some("127.0.0.1".parse().unwrap()),
        replace_existing: false,
        num_previous_attempts: 3,
    }
}

type Calls = Arc<Mutex<Vec<RegistrationCall>>>;

fn spawn_edge(
    io: tokio::io::DuplexStream,
    response: ConnectionResponse,
) -> (Calls, tokio::task::JoinHandle<Result<(), RpcError>>) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let task = tokio::spawn(crate::edge::serve_control(io, move |call| {
        seen.lock().unwrap().push(call.clone());
        let response = response.clone();
        Box::pin(async move {
            match call {
                RegistrationCall::Register(_) => ServerReply::Results(Box::new(move |c| response.write(c))),
                _ => ServerReply::Results(Box::new(|c| {
                    c.init_as::<capnp::any_pointer::Builder>().clear();
                    Ok(())
                })),
            }
        })
    }));
    (calls, task)
}

#[tokio::test]
async fn registration_round_trip_carries_every_field() {
    let (client_io, edge_io) = tokio::io::duplex(64 * 1024);
    let details = ConnectionDetails {
        uuid: Uuid::new_v4(),
        location: "TST".into(),
        remotely_managed: false,
    };
    let (calls, edge) = spawn_edge(edge_io, ConnectionResponse::Details(details.clone()));
    let req = request();
    let (mut control, resp) = ControlSession::register(client_io, &req).await.unwrap();
    assert_eq!(resp, ConnectionResponse::Details(details));
    control
        .update_local_configuration(b"{\"ingress\":[]}")
        .await
        .unwrap();
    control.unregister().await.unwrap();
    control.close().await;
    tokio::time::timeout(Duration::from_secs(5), edge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let calls = calls.lock().unwrap();
    assert_eq!(calls[0], RegistrationCall::Register(Box::new(req)));
    assert_eq!(
        calls[1],
        RegistrationCall::UpdateLocalConfiguration(b"{\"ingress\":[]}".to_vec())
    );
    assert_eq!(calls[2], RegistrationCall::Unregister);
}

#[tokio::test]
async fn registration_errors_keep_cause_retry_flag_and_delay() {
    let (client_io, edge_io) = tokio::io::duplex(64 * 1024);
    let err = ConnectionError {
        cause: "try later".into(),
        retry_after: Duration::from_millis(1500),
        should_retry: true,
    };
    let (_calls, _edge) = spawn_edge(edge_io, ConnectionResponse::Error(err.clone()));
    let (_control, resp) = ControlSession::register(client_io, &request()).await.unwrap();
    assert_eq!(resp, ConnectionResponse::Error(err));
}

#[tokio::test]
async fn a_call_pipelined_on_the_bootstrap_promise_is_served() {
    let (client_io, edge_io) = tokio::io::duplex(64 * 1024);
    let details = ConnectionDetails {
        uuid: Uuid::new_v4(),
        location: "LHR".into(),
        remotely_managed: true,
    };
    let (_calls, _edge) = spawn_edge(edge_io, ConnectionResponse::Details(details.clone()));
    let mut stream = RpcStream::new(client_io);
    let req = request();
    stream.send(&bootstrap(0).unwrap()).await.unwrap();
    let c = call(1, Target::PromisedAnswer(0), REGISTRATION_SERVER_ID, 0, |p| {
        req.write(p)
    })
    .unwrap();
    stream.send(&c).await.unwrap();
    let mut got = None;
    for _ in 0..2 {
        let msg = stream.recv().await.unwrap();
        if let Decoded::Return {
            answer_id: 1,
            outcome: ReturnOutcome::Results { content, .. },
        } = msg.decode().unwrap()
        {
            got = Some(ConnectionResponse::read(content).unwrap());
        }
    }
    assert_eq!(got, Some(ConnectionResponse::Details(details)));
}

#[test]
fn bootstrap_return_holds_a_capability_pointer_and_cap_table_entry() {
    let bytes = return_bootstrap(5, 0).unwrap();
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let msg = Incoming(crate::framing::try_decode(&mut buf).unwrap().unwrap());
    match msg.decode().unwrap() {
        Decoded::Return {
            answer_id: 5,
            outcome: ReturnOutcome::Results { content, first_cap },
        } => {
            assert_eq!(first_cap, Some(0));
            assert!(
                !content.is_null(),
                "content must be a capability pointer, not null"
            );
        }
        _ => panic!("not a bootstrap return"),
    }
}

#[tokio::test]
async fn unknown_methods_get_an_exception_not_a_hang() {
    let (client_io, edge_io) = tokio::io::duplex(64 * 1024);
    let (_calls, _edge) = spawn_edge(
        edge_io,
        ConnectionResponse::Details(ConnectionDetails {
            uuid: Uuid::new_v4(),
            location: "X".into(),
            remotely_managed: false,
        }),
    );
    let mut client = RpcClient::bootstrap(client_io).await.unwrap();
    let r = client
        .call(REGISTRATION_SERVER_ID, 9, |_| Ok(()), |_| Ok(()))
        .await;
    assert!(matches!(r, Err(RpcError::Exception(e)) if e.contains("not implemented")));
}
