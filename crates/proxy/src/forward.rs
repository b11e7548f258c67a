//! Header rules for forwarded requests and relayed responses (routing.md §7.2): hop-by-hop removal,
//! `X-Forwarded-For`, upgrade detection.

use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// Fixed hop-by-hop names removed in both directions, by bit: bit i set in a [`scan`] result means
/// `HOP_BY_HOP[i]` is present. `te` is handled separately (`te: trailers` is kept).
///
/// `Trailer` is deliberately not in the list although routing.md §7.2 names it: an HTTP/1.1 hop can only carry
/// trailer fields that a `Trailer` header declared (hyper drops undeclared ones), so removing it would break
/// trailer relay between HTTP/1.1 peers.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const CONNECTION_BIT: u32 = 1;
const UPGRADE_BIT: u32 = 1 << 6;
const TE_BIT: u32 = 1 << 7;
/// Not hop-by-hop, but never forwarded on a request: the proxy answers `Expect` on its own hop.
const EXPECT_BIT: u32 = 1 << 8;

/// One pass over the names: which hop-by-hop fields are present. Removing an absent name still hashes and probes,
/// and this runs twice per request while most messages carry no hop-by-hop field, or only `Connection`.
/// Names are compared as the lowercase strings `HeaderName` holds (a length switch, then a short compare).
fn scan(headers: &HeaderMap) -> u32 {
    let mut present = 0u32;
    for name in headers.keys() {
        present |= match name.as_str() {
            "connection" => CONNECTION_BIT,
            "proxy-connection" => 1 << 1,
            "keep-alive" => 1 << 2,
            "proxy-authenticate" => 1 << 3,
            "proxy-authorization" => 1 << 4,
            "transfer-encoding" => 1 << 5,
            "upgrade" => UPGRADE_BIT,
            "te" => TE_BIT,
            "expect" => EXPECT_BIT,
            _ => 0,
        };
    }
    present
}

/// Removes hop-by-hop headers: every header named in `Connection`, the fixed list, `Upgrade` and `TE` except
/// `te: trailers`. With `upgrade` set, `Connection: Upgrade` and `Upgrade` survive (the upgrade path).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let present = scan(headers);
    strip_present(headers, upgrade, present);
}

/// [`strip_hop_by_hop`] for a request going to a backend, which also loses `Expect` (found by the same scan
/// instead of a lookup of its own).
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let present = scan(headers);
    strip_present(headers, upgrade, present);
    if present & EXPECT_BIT != 0 {
        headers.remove(header::EXPECT);
    }
}

fn strip_present(headers: &mut HeaderMap, upgrade: bool, present: u32) {
    if present & !EXPECT_BIT == 0 {
        return;
    }
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    if present & CONNECTION_BIT != 0 {
        // Most `Connection` fields (a bare `keep-alive`, which most backends send with every response) name
        // nothing beyond the fixed list: those are removed outright, which costs less than taking their lines
        // out one by one. Otherwise the lines naming other fields are kept, and only then is anything allocated.
        let mut named: Vec<HeaderValue> = Vec::new();
        if !headers.get_all(header::CONNECTION).iter().any(names_other_fields) {
            headers.remove(header::CONNECTION);
        } else if let Entry::Occupied(connection) = headers.entry(header::CONNECTION) {
            let (_, values) = connection.remove_entry_mult();
            named.extend(values.filter(names_other_fields));
        }
        for value in &named {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() || is_fixed_hop_by_hop(token) {
                    continue;
                }
                if let Ok(token) = std::str::from_utf8(token) {
                    headers.remove(token);
                }
            }
        }
    }
    // The standard names are constants; matching them needs no parsing. `Connection` is gone already.
    let fixed = [
        (1 << 1, None),
        (1 << 2, None),
        (1 << 3, Some(header::PROXY_AUTHENTICATE)),
        (1 << 4, Some(header::PROXY_AUTHORIZATION)),
        (1 << 5, Some(header::TRANSFER_ENCODING)),
    ];
    for (i, (bit, standard)) in fixed.into_iter().enumerate() {
        if present & bit != 0 {
            match standard {
                Some(name) => headers.remove(name),
                None => headers.remove(HOP_BY_HOP[i + 1]),
            };
        }
    }
    if present & UPGRADE_BIT != 0 {
        headers.remove(header::UPGRADE);
    }
    if present & TE_BIT != 0
        && let Some(te) = headers.get(header::TE)
    {
        if te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers") {
            let keep = HeaderValue::from_static("trailers");
            headers.insert(header::TE, keep);
        } else {
            headers.remove(header::TE);
        }
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// A `Connection` token naming a field the fixed list removes anyway (`keep-alive`, which nginx and most clients
/// send).
fn is_fixed_hop_by_hop(token: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| token.eq_ignore_ascii_case(h.as_bytes()))
}

/// Whether a `Connection` line names any field beyond the fixed list, i.e. whether its tokens need lookups.
fn names_other_fields(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|token| !token.is_empty() && !is_fixed_hop_by_hop(token))
}

/// An HTTP/1.1 upgrade request: a non-empty `Upgrade` and a `Connection` carrying the `upgrade` token.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty());
    has_upgrade
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

/// Appends the peer IP to `X-Forwarded-For`, merging existing field lines into one `a, b, peer` line.
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; backends expect the plain IPv4 form.
    let peer = peer.to_canonical();
    // One lookup (a custom name is hashed byte by byte) whether or not the client sent the field.
    let mut existing = match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(missing) => {
            missing.insert(peer_value(peer));
            return;
        }
        Entry::Occupied(existing) => existing,
    };
    let mut ip = [0u8; 64];
    let ip = format_ip(peer, &mut ip);
    let existing_len: usize = existing.iter().map(|v| v.len() + 2).sum();
    let mut buf = BytesMut::with_capacity(existing_len + ip.len());
    for line in existing.iter() {
        let v = line.as_bytes().trim_ascii();
        if v.is_empty() {
            continue;
        }
        buf.extend_from_slice(v);
        buf.extend_from_slice(b", ");
    }
    buf.extend_from_slice(ip);
    if let Ok(value) = HeaderValue::from_maybe_shared(buf.freeze()) {
        // Replaces every existing line with the merged one.
        existing.insert(value);
    }
}

/// The header value of a lone peer IP. The last one is kept per thread: a keep-alive connection sends many
/// requests from one peer, and a clone is a reference count where formatting and validating is an allocation.
fn peer_value(peer: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, value)) = last.as_ref()
            && *ip == peer
        {
            return value.clone();
        }
        let mut buf = [0u8; 64];
        let text = format_ip(peer, &mut buf);
        // An IP's text is always a valid header value.
        let value = HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((peer, value.clone()));
        value
    })
}

/// Formats an IP into a stack buffer (no heap allocation). IPv4 digits are written directly: the formatting
/// machinery costs more than the rest of the header work of a request.
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        let mut n = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if octet >= 100 {
                buf[n] = b'0' + octet / 100;
                n += 1;
            }
            if octet >= 10 {
                buf[n] = b'0' + octet / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + octet % 10;
            n += 1;
        }
        return &buf[..n];
    }
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "x"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn every_connection_line_is_read_whether_or_not_the_first_names_a_field() {
        // The fast path (nothing named beyond the fixed list) and the slow one, over several lines.
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "Close"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-late"),
            ("x-late", "1"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn ipv4_digits_are_formatted_like_display() {
        let mut buf = [0u8; 64];
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.7",
            "10.0.100.1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(format_ip(addr, &mut buf), ip.as_bytes());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(format_ip(v6, &mut buf), b"2001:db8::1");
    }

    #[test]
    fn messages_without_hop_by_hop_fields_are_untouched() {
        let mut h = map(&[
            ("host", "a.example"),
            ("x-one", "1"),
            ("x-one", "2"),
            ("accept", "*/*"),
        ]);
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        let mut h = map(&[
            ("connection", "close, X-Named"),
            ("x-named", "1"),
            ("x-other", "2"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-other"], "2");
    }

    #[test]
    fn requests_to_a_backend_also_lose_expect() {
        let mut h = map(&[("expect", "100-continue"), ("x-kept", "1")]);
        strip_request_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "1");
        let mut h = map(&[
            ("expect", "100-continue"),
            ("connection", "x-named"),
            ("x-named", "1"),
        ]);
        strip_request_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        // Responses keep it: only the request direction drops `Expect`.
        let mut h = map(&[("expect", "100-continue")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["expect"], "100-continue");
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrade_path_keeps_upgrade_headers() {
        let mut h = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "Upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&map(&[("connection", "upgrade"), ("upgrade", "")])));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2")]);
        append_forwarded_for(&mut h, "192.0.2.7".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "::1");
    }

    #[test]
    fn the_peer_value_follows_the_peer() {
        for peer in ["192.0.2.7", "192.0.2.7", "198.51.100.1", "::1", "192.0.2.7"] {
            let mut h = HeaderMap::new();
            append_forwarded_for(&mut h, peer.parse().unwrap());
            assert_eq!(h["x-forwarded-for"], peer);
        }
    }

    #[test]
    fn connection_naming_only_fixed_fields_needs_no_lookups() {
        assert!(!names_other_fields(&HeaderValue::from_static(
            "keep-alive, Keep-Alive"
        )));
        assert!(!names_other_fields(&HeaderValue::from_static(" keep-alive ,")));
        // `close` is not in the fixed list: it is looked up (and removed) like any other named field.
        assert!(names_other_fields(&HeaderValue::from_static("close")));
        assert!(names_other_fields(&HeaderValue::from_static(
            "keep-alive, x-private"
        )));
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-private"),
            ("x-private", "1"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "1");
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn forwarded_for_writes_ipv4_mapped_peers_as_ipv4() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "::ffff:192.0.2.9".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
    }
}
