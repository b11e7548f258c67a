use super::*;

fn req(dest: &str, kind: ConnectionType, md: &[(&str, &str)]) -> ConnectRequest {
    ConnectRequest {
        dest: dest.into(),
        kind,
        metadata: md.iter().map(|(k, v)| Metadata::new(*k, *v)).collect(),
    }
}

fn round_trip(r: &ConnectRequest) -> ConnectRequest {
    let bytes = r.encode();
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    ConnectRequest::read(&crate::framing::try_decode(&mut buf).unwrap().unwrap()).unwrap()
}

#[test]
fn connect_request_round_trips_and_maps_to_an_http_head() {
    let r = req(
        "https://shop.example.com/cart?x=1",
        ConnectionType::Http,
        &[
            ("HttpMethod", "POST"),
            ("HttpHost", "shop.example.com"),
            ("HttpHeader:Accept", "a"),
            ("HttpHeader:Accept", "b"),
            ("HttpHeader:Content-Length", "5"),
            ("cf-trace-id", "t"),
            ("Unknown", "ignored"),
        ],
    );
    let r = round_trip(&r);
    let head = r.to_head().unwrap();
    assert_eq!(head.method, Method::POST);
    assert_eq!(head.scheme, "https");
    assert_eq!(head.path_and_query, "/cart?x=1");
    assert_eq!(head.headers.get("host").unwrap(), "shop.example.com");
    assert_eq!(head.headers.get_all("accept").iter().count(), 2);
    assert!(head.has_body);
    assert!(!head.websocket);
}

#[test]
fn bare_paths_and_lowercase_methods_are_used_as_given() {
    let head = req("/p", ConnectionType::Http, &[("HttpMethod", "get")])
        .to_head()
        .unwrap();
    assert_eq!(head.path_and_query, "/p");
    assert_eq!(head.method.as_str(), "get");
    assert!(
        !head.has_body,
        "no Content-Length and no chunked TE means no body"
    );
    let head = req("http://h", ConnectionType::Http, &[]).to_head().unwrap();
    assert_eq!((head.scheme, head.path_and_query.as_str()), ("http", "/"));
}

#[test]
fn malformed_metadata_is_rejected() {
    let bad_key = req("/", ConnectionType::Http, &[("HttpHeader:A:B", "x")]);
    assert!(matches!(bad_key.to_head(), Err(MalformedRequest::Key(_))));
    let empty = req("/", ConnectionType::Http, &[("HttpHeader:", "x")]);
    assert!(matches!(empty.to_head(), Err(MalformedRequest::Key(_))));
    let cl = req("/", ConnectionType::Http, &[("HttpHeader:Content-Length", "ten")]);
    assert_eq!(cl.to_head().unwrap_err(), MalformedRequest::ContentLength);
}

#[test]
fn websocket_requests_get_hop_headers_resynthesised() {
    let r = req(
        "https://h/ws",
        ConnectionType::Websocket,
        &[
            ("HttpHeader:Cf-Cloudflared-Proxy-Connection-Upgrade", "WebSocket"),
            ("HttpHeader:Sec-Websocket-Key", "k"),
        ],
    );
    let head = r.to_head().unwrap();
    assert!(head.websocket);
    assert_eq!(head.headers.get("connection").unwrap(), "Upgrade");
    assert_eq!(head.headers.get("upgrade").unwrap(), "websocket");
    assert_eq!(head.headers.get("sec-websocket-version").unwrap(), "13");
    assert!(head.headers.get(UPGRADE_MARKER).is_none());
}

#[test]
fn response_metadata_strips_hop_headers_and_round_trips_on_the_edge() {
    let mut h = HeaderMap::new();
    h.append("set-cookie", HeaderValue::from_static("a=1"));
    h.append("set-cookie", HeaderValue::from_static("b=2"));
    h.insert("connection", HeaderValue::from_static("close"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let md = response_metadata(StatusCode::CREATED, &h);
    assert_eq!(md[0], Metadata::new("HttpStatus", "201"));
    assert!(
        md.iter()
            .all(|m| m.key != "HttpHeader:Connection" && m.key != "HttpHeader:Transfer-Encoding")
    );
    let resp = ConnectResponse {
        error: String::new(),
        metadata: md,
    };
    let (status, headers) = resp.to_head().unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
    assert!(matches!(
        ConnectResponse::error("boom").to_head(),
        Err(BadResponse::Origin(_))
    ));
}

#[test]
fn signatures_are_classified() {
    assert_eq!(classify(&DATA_STREAM_SIGNATURE), StreamKind::Data);
    assert_eq!(classify(&RPC_STREAM_SIGNATURE), StreamKind::Rpc);
    assert_eq!(classify(b"BADSIG"), StreamKind::Unknown);
}
