//! Routing-host normalisation (routing.md §2.1) and hostname patterns (§3).

use std::borrow::Cow;

/// Longest host the allocation-free lookup handles on the stack; longer hosts (never a valid DNS name, which is
/// at most 253 bytes) fall back to [`normalize_host`].
pub(crate) const HOST_BUF: usize = 256;

/// A rule hostname after validation: lowercase, without one trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Wildcard(String),
}

/// Routing-host normalisation: strip the port, lowercase ASCII, drop one trailing `.`. Borrowed when already
/// normal.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let host = strip_port(raw);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Normalises into `buf` without allocating; `None` when the host does not fit. Bytes, because the host index
/// is keyed by bytes and ASCII lowercasing needs no UTF-8 re-validation that way.
pub(crate) fn normalize_host_into<'b>(raw: &str, buf: &'b mut [u8; HOST_BUF]) -> Option<&'b [u8]> {
    let host = strip_port(raw);
    let host = host.strip_suffix('.').unwrap_or(host);
    let out = buf.get_mut(..host.len())?;
    for (dst, src) in out.iter_mut().zip(host.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    Some(out)
}

/// The host without its port: `[v6]:p` keeps `[v6]`; otherwise cut at the last `:` when the rest is all digits.
pub(crate) fn strip_port(raw: &str) -> &str {
    split_port(raw).0
}

/// Splits `host[:port]` into the host and the explicit port text (digits only, possibly empty).
pub(crate) fn split_port(raw: &str) -> (&str, Option<&str>) {
    if raw.starts_with('[') {
        return match raw.find(']') {
            Some(end) => {
                let (host, rest) = raw.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
                    _ => (host, None),
                }
            }
            None => (raw, None),
        };
    }
    // The last `:` has only digits after it exactly when the trailing run of digits is preceded by a `:`.
    let digits = raw.bytes().rev().take_while(u8::is_ascii_digit).count();
    let colon = raw.len() - digits;
    if colon > 0 && raw.as_bytes()[colon - 1] == b':' {
        (&raw[..colon - 1], Some(&raw[colon..]))
    } else {
        (raw, None)
    }
}

impl HostPattern {
    /// Parses a rule hostname (config-api.md §5): non-empty, at most one leading `*.`, no `*` elsewhere, no
    /// whitespace, `/` or `:`. Case is folded and one trailing dot dropped, as for request hosts.
    pub(crate) fn parse(raw: &str) -> Option<HostPattern> {
        if raw.is_empty()
            || raw
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/' || b == b':')
        {
            return None;
        }
        let mut folded = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        match folded.strip_prefix("*.") {
            Some(base) if !base.is_empty() && !base.contains('*') && !base.starts_with('.') => {
                // `*.example.com` becomes `.example.com` in place.
                folded.remove(0);
                Some(HostPattern::Wildcard(folded))
            }
            Some(_) => None,
            None if folded.is_empty() || folded.contains('*') => None,
            None => Some(HostPattern::Exact(folded)),
        }
    }

    /// The metrics label: the exact name or `*.suffix`.
    pub(crate) fn label(&self) -> String {
        let mut label = String::with_capacity(self.label_len());
        self.write_label(&mut label);
        label
    }

    pub(crate) fn write_label(&self, out: &mut String) {
        match self {
            HostPattern::Exact(name) => out.push_str(name),
            HostPattern::Wildcard(suffix) => {
                out.push('*');
                out.push_str(suffix);
            }
        }
    }

    pub(crate) fn label_len(&self) -> usize {
        match self {
            HostPattern::Exact(name) => name.len(),
            HostPattern::Wildcard(suffix) => suffix.len() + 1,
        }
    }

    /// Orders patterns for grouping: exact names first, then wildcard suffixes, each by bytes.
    pub(crate) fn sort_key(&self) -> (bool, &str) {
        match self {
            HostPattern::Exact(name) => (false, name),
            HostPattern::Wildcard(suffix) => (true, suffix),
        }
    }
}

/// The wildcard suffixes a normalised host can match, longest first: the host from each `.` that has at least
/// one byte before it.
pub(crate) fn wildcard_suffixes(host: &[u8]) -> impl Iterator<Item = &[u8]> {
    host.iter()
        .enumerate()
        .skip(1)
        .filter(|&(_, &b)| b == b'.')
        .map(move |(i, _)| host.get(i..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_host_strips_port_lowercases_and_drops_one_trailing_dot() {
        assert_eq!(normalize_host("Very.Specific.COM:1234"), "very.specific.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("example.com..:80"), "example.com.");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("host:abc"), "host:abc");
        assert_eq!(normalize_host("a:1:b:80"), "a:1:b");
        assert_eq!(normalize_host(":80"), "");
        assert_eq!(normalize_host("host:"), "host");
        assert_eq!(normalize_host(""), "");
        assert!(matches!(normalize_host("a.b"), Cow::Borrowed(_)));
    }

    #[test]
    fn normalize_host_into_agrees_with_normalize_host() {
        let mut buf = [0u8; HOST_BUF];
        for raw in ["A.Example.com:443", "x.", "[FE80::1]:1", "", "ü.Example"] {
            assert_eq!(
                normalize_host_into(raw, &mut buf),
                Some(normalize_host(raw).as_bytes())
            );
        }
        let long = "a".repeat(HOST_BUF + 1);
        assert_eq!(normalize_host_into(&long, &mut buf), None);
    }

    #[test]
    fn hostname_pattern_allows_one_leading_wildcard_label_only() {
        assert_eq!(
            HostPattern::parse("*.Example.com"),
            Some(HostPattern::Wildcard(".example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("Shop.Example.com."),
            Some(HostPattern::Exact("shop.example.com".into()))
        );
        for bad in [
            "", "*", "*.", "a.*.com", "*.*.com", "**.com", "a b", "a/b", "a:80", "*a.com",
        ] {
            assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn wildcard_suffixes_are_longest_first_and_never_the_whole_host() {
        let got: Vec<&[u8]> = wildcard_suffixes(b"a.b.example.com").collect();
        assert_eq!(got, [&b".b.example.com"[..], b".example.com", b".com"]);
        assert_eq!(
            wildcard_suffixes(b".example.com").collect::<Vec<_>>(),
            [&b".com"[..]]
        );
    }
}
