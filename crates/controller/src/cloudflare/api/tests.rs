use super::*;

#[test]
fn base_urls() {
    let api =
        ConfigurationsApi::new("https://api.cloudflare.com/client/v4/", Duration::from_secs(1)).unwrap();
    assert!(api.https);
    assert_eq!(
        (api.host.as_str(), api.port, api.base_path.as_str()),
        ("api.cloudflare.com", 443, "/client/v4")
    );
    let api = ConfigurationsApi::new("http://127.0.0.1:8999", Duration::from_secs(1)).unwrap();
    assert_eq!((api.https, api.port, api.base_path.as_str()), (false, 8999, ""));
    let api = ConfigurationsApi::new("http://[::1]:8999/v4", Duration::from_secs(1)).unwrap();
    assert_eq!(
        (api.host.as_str(), api.host_for_header()),
        ("::1", "[::1]".to_owned())
    );
    for bad in ["ftp://x", "api.cloudflare.com", "https://", "https://x/?q=1", ""] {
        assert!(
            ConfigurationsApi::new(bad, Duration::from_secs(1)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn ids_are_one_safe_path_segment() {
    assert!(
        TunnelRef::new(
            "0123456789abcdef0123456789abcdef",
            "6ff42ae2-765d-4adf-8112-31c55c1551ef"
        )
        .is_ok()
    );
    assert!(TunnelRef::new("../x", "t").is_err());
    assert!(TunnelRef::new("a", "t/configurations?x").is_err());
    assert!(TunnelRef::new("", "t").is_err());
}

#[test]
fn which_failures_back_off() {
    let status = |s| ApiError::Status {
        status: s,
        message: String::new(),
        retry_after: None,
    };
    assert!(status(429).is_transient());
    assert!(status(503).is_transient());
    assert!(ApiError::Timeout(Duration::from_secs(1)).is_transient());
    assert!(!status(403).is_transient());
    assert!(!status(400).is_transient());
    assert_eq!(status(429).reason(), "RateLimited");
    assert_eq!(status(401).reason(), "Unauthorized");
    assert_eq!(status(502).reason(), "ApiUnavailable");
}

#[test]
fn error_messages_come_from_cloudflare_errors() {
    let body =
        br#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[]}"#;
    assert_eq!(error_message(body), "Authentication error (code 10000)");
    assert_eq!(error_message(b"upstream connect error"), "upstream connect error");
    assert_eq!(error_message(b""), "no error message");
    assert!(error_message("x".repeat(1000).as_bytes()).chars().count() <= 301);
}

/// 2026-11-27T16:00:00Z, the `now` of the `Retry-After` tests.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_795_200)
}

#[test]
fn retry_after_delay_seconds() {
    let secs = |s| retry_after(s, now());
    assert_eq!(secs("120"), Some(Duration::from_secs(120)));
    assert_eq!(secs("0"), Some(Duration::ZERO));
    assert_eq!(secs(" 7 "), Some(Duration::from_secs(7)), "surrounding blanks");
    assert_eq!(secs("007"), Some(Duration::from_secs(7)));
    // Huge values are kept as asked; the sync clamps them to its longest backoff.
    assert_eq!(secs("1000000000"), Some(Duration::from_secs(1_000_000_000)));
    assert_eq!(
        secs("99999999999999999999999999"),
        Some(Duration::from_secs(u64::MAX)),
        "more than a u64 holds is the most there is, not garbage"
    );
}

#[test]
fn retry_after_http_dates_in_the_three_forms() {
    let date = |s| retry_after(s, now());
    assert_eq!(
        date("Fri, 27 Nov 2026 16:01:30 GMT"),
        Some(Duration::from_secs(90)),
        "IMF-fixdate"
    );
    assert_eq!(
        date("Friday, 27-Nov-26 16:01:30 GMT"),
        Some(Duration::from_secs(90)),
        "RFC 850"
    );
    assert_eq!(
        date("Fri Nov 27 16:01:30 2026"),
        Some(Duration::from_secs(90)),
        "asctime"
    );
    assert_eq!(
        date("Sat, 27 Nov 2066 16:00:00 GMT"),
        Some(Duration::from_secs(1_262_304_000)),
        "forty years ahead is kept as asked; the sync clamps it"
    );
    assert_eq!(date("Fri, 27 Nov 2026 16:00:00 GMT"), Some(Duration::ZERO), "now");
    assert_eq!(
        date("Thu, 26 Nov 2026 16:00:00 GMT"),
        Some(Duration::ZERO),
        "a date already past asks for no wait"
    );
}

#[test]
fn retry_after_garbage_is_none() {
    for garbage in [
        "",
        "   ",
        "soon",
        "-5",
        "+5",
        "1.5",
        "5s",
        "0x10",
        "1 2",
        "Fri, 32 Nov 2026 16:00:00 GMT",
        "2026-11-27T16:01:30Z",
        "Fri, 27 Nov 2026 16:01:30 CET",
    ] {
        assert_eq!(retry_after(garbage, now()), None, "{garbage:?}");
    }
}

#[test]
fn retry_after_is_read_from_the_first_field() {
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after_header(&headers, now()), None);
    headers.append(header::RETRY_AFTER, http::HeaderValue::from_static("30"));
    headers.append(header::RETRY_AFTER, http::HeaderValue::from_static("60"));
    assert_eq!(retry_after_header(&headers, now()), Some(Duration::from_secs(30)));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::RETRY_AFTER,
        http::HeaderValue::from_bytes(b"3\xff").unwrap(),
    );
    assert_eq!(retry_after_header(&headers, now()), None, "not visible ASCII");
}

#[test]
fn only_a_status_reply_carries_retry_after() {
    let error = |status, retry_after| ApiError::Status {
        status,
        message: String::new(),
        retry_after,
    };
    assert_eq!(
        error(429, Some(Duration::from_secs(3))).retry_after(),
        Some(Duration::from_secs(3))
    );
    assert_eq!(error(503, None).retry_after(), None);
    assert_eq!(ApiError::Timeout(Duration::from_secs(1)).retry_after(), None);
}
