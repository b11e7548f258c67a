//! Header rules for forwarded requests and relayed responses (routing.md §7.2): hop-by-hop removal,
//! `X-Forwarded-For`, upgrade detection.

use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fixed hop-by-hop names removed in both directions. `te` is handled separately (`te: trailers` is kept).
///
/// `Trailer` is deliberately not in the list although routing.md §7.2 names it: an HTTP/1.1 hop can only carry
/// trailer fields that a `Trailer` header declared (hyper drops undeclared ones), so removing it would break
/// trailer relay between HTTP/1.1 peers. `Connection` stays first: [`strip_hop_by_hop`] relies on its index.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers: every header named in `Connection`, the fixed list, `Upgrade` and `TE` except
/// `te: trailers`. With `upgrade` set, `Connection: Upgrade` and `Upgrade` survive (the upgrade path).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the few names first: removing an absent name still hashes and probes, and this runs twice
    // per request while most messages carry no hop-by-hop field, or only `Connection`.
    // Bit i: `HOP_BY_HOP[i]` is present.
    let mut present = 0u32;
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
            any = true;
        } else if name == header::UPGRADE || name == header::TE {
            any = true;
        }
    }
    if !any {
        return;
    }
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    if present & 1 != 0 {
        // Removing by `&str` needs no owned `HeaderName`; the values are cloned (reference counts) because the
        // removals below need the map mutably.
        let named: Vec<HeaderValue> = headers.get_all(header::CONNECTION).iter().cloned().collect();
        for value in &named {
            for token in value.as_bytes().split(|b| *b == b',') {
                if let Ok(token) = std::str::from_utf8(token.trim_ascii())
                    && !token.is_empty()
                {
                    headers.remove(token);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    headers.remove(header::UPGRADE);
    if let Some(te) = headers.get(header::TE) {
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
    let name = HeaderName::from_static("x-forwarded-for");
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; backends expect the plain IPv4 form.
    let mut ip = [0u8; 64];
    let ip = format_ip(peer.to_canonical(), &mut ip);
    let existing_len: usize = headers.get_all(&name).iter().map(|v| v.len() + 2).sum();
    let mut buf = BytesMut::with_capacity(existing_len + ip.len());
    for existing in headers.get_all(&name) {
        let v = existing.as_bytes().trim_ascii();
        if v.is_empty() {
            continue;
        }
        buf.extend_from_slice(v);
        buf.extend_from_slice(b", ");
    }
    buf.extend_from_slice(ip);
    if let Ok(value) = HeaderValue::from_maybe_shared(buf.freeze()) {
        headers.insert(name, value);
    }
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
    fn forwarded_for_writes_ipv4_mapped_peers_as_ipv4() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "::ffff:192.0.2.9".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
    }
}
