//! Match arms: the checked form of one `RouteMatch`, its conditions, and its precedence key.

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, Method};

use crate::table::RequestHead;

/// The checked conditions of one match arm; all must hold (routing.md §4).
#[derive(Debug, Clone)]
pub(crate) struct Arm {
    pub(crate) path: PathCondition,
    pub(crate) method: Option<Method>,
    /// De-duplicated by name (case-insensitively): the first entry of a name counts.
    pub(crate) headers: Vec<HeaderCondition>,
    /// De-duplicated by name (case-sensitively): the first entry of a name counts.
    pub(crate) query: Vec<QueryCondition>,
}

#[derive(Debug, Clone)]
pub(crate) enum PathCondition {
    Exact(String),
    /// The value with one trailing `/` removed (`"/"` becomes `""`), and the precedence length of the value.
    Prefix {
        prefix: String,
        len: usize,
    },
    RegularExpression(RegexPattern),
}

#[derive(Debug, Clone)]
pub(crate) struct HeaderCondition {
    pub(crate) name: HeaderName,
    pub(crate) value: ValueCondition,
}

#[derive(Debug, Clone)]
pub(crate) struct QueryCondition {
    pub(crate) name: String,
    pub(crate) value: ValueCondition,
}

#[derive(Debug, Clone)]
pub(crate) enum ValueCondition {
    Exact(Vec<u8>),
    RegularExpression(RegexPattern),
}

/// A compiled regular expression and its source text (the text's length is part of the precedence key).
///
/// Built with `regex-automata`'s meta engine rather than the `regex` crate, whose builder offers no way to turn
/// off the full DFA: once another crate in the binary enables `regex-automata/dfa-build` (tracing-subscriber's
/// env filter does), every small pattern is determinized into a dense DFA at compile time, about a million
/// instructions and tens of KiB each. Matching uses the lazy DFA and the NFA engines, as `regex` does without
/// that feature. The syntax and match semantics are those of `regex::Regex` (paths, UTF-8) and
/// `regex::bytes::Regex` (header and query values).
#[derive(Debug, Clone)]
pub(crate) struct RegexPattern {
    regex: regex_automata::meta::Regex,
    text: Box<str>,
}

/// Rank of the path type in precedence: Exact, then RegularExpression, then PathPrefix. Greater is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathRank {
    PathPrefix,
    RegularExpression,
    Exact,
}

/// Precedence of one (rule, match) arm inside a hostname bucket. **Greater wins.**
///
/// routing.md §4.6, compared lexicographically, the first key that differs decides (so tiers never overlap):
/// 1. Path type: Exact, then RegularExpression, then PathPrefix. An implicit path counts as PathPrefix `/`.
/// 2. Path length: the longer value wins. For PathPrefix, the character count of the value after removing one
///    trailing `/`, with `/` itself counting as 1 (`/v1` and `/v1/` tie). For RegularExpression, the length of
///    the pattern string.
/// 3. Method condition present beats absent.
/// 4. Number of header conditions, after de-duplication: more wins.
/// 5. Number of query conditions, after de-duplication: more wins.
/// 6. Rule order in the pushed document: the lower index wins.
/// 7. Arm order within the rule: the lower index wins.
///
/// The field order below is that list; `derive(Ord)` compares fields in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Precedence {
    pub path_rank: PathRank,
    pub path_len: usize,
    pub has_method: bool,
    pub header_count: usize,
    pub query_count: usize,
    pub rule_order: Reverse<usize>,
    pub arm_order: Reverse<usize>,
}

/// Longest query value decoded on the stack for a regex match; longer values that need decoding allocate.
const QUERY_BUF: usize = 512;

impl RegexPattern {
    /// Compiles `pattern` with the `regex` crate's defaults, a `size_limit` on the compiled program, and no full
    /// DFA. `utf8`: match `str` haystacks (`regex::Regex`) rather than bytes (`regex::bytes::Regex`).
    pub(crate) fn new(
        pattern: &str,
        utf8: bool,
        size_limit: usize,
    ) -> Result<RegexPattern, Box<regex_automata::meta::BuildError>> {
        use regex_automata::{MatchKind, meta, util::syntax};
        let config = meta::Config::new()
            .match_kind(MatchKind::LeftmostFirst)
            .utf8_empty(utf8)
            .nfa_size_limit(Some(size_limit))
            .hybrid_cache_capacity(2 * (1 << 20))
            .dfa(false);
        let regex = meta::Builder::new()
            .configure(config)
            .syntax(syntax::Config::new().utf8(utf8))
            .build(pattern)
            .map_err(Box::new)?;
        Ok(RegexPattern {
            regex,
            text: pattern.into(),
        })
    }

    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        self.regex.is_match(haystack)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

impl Arm {
    /// The implicit arm of a rule without matches: PathPrefix `/`.
    pub(crate) fn match_all() -> Arm {
        Arm {
            path: PathCondition::Prefix {
                prefix: String::new(),
                len: 1,
            },
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    pub(crate) fn precedence(&self, rule_index: usize, arm_index: usize) -> Precedence {
        let (path_rank, path_len) = match &self.path {
            PathCondition::Exact(value) => (PathRank::Exact, value.chars().count()),
            PathCondition::RegularExpression(re) => {
                (PathRank::RegularExpression, re.as_str().chars().count())
            }
            PathCondition::Prefix { len, .. } => (PathRank::PathPrefix, *len),
        };
        Precedence {
            path_rank,
            path_len,
            has_method: self.method.is_some(),
            header_count: self.headers.len(),
            query_count: self.query.len(),
            rule_order: Reverse(rule_index),
            arm_order: Reverse(arm_index),
        }
    }

    /// Every condition, path included.
    pub(crate) fn matches(&self, req: &RequestHead<'_>) -> bool {
        self.path.matches(req.path) && self.matches_except_path(req)
    }

    /// Method, headers and query; the caller has already established the path.
    pub(crate) fn matches_except_path(&self, req: &RequestHead<'_>) -> bool {
        if let Some(method) = &self.method
            && method != req.method
        {
            return false;
        }
        self.headers_and_query_match(req)
    }

    pub(crate) fn headers_and_query_match(&self, req: &RequestHead<'_>) -> bool {
        self.headers.iter().all(|h| h.matches(req.headers)) && self.query.iter().all(|q| q.matches(req.query))
    }

    /// The normalised prefix when this is a PathPrefix arm (the lookup reads it from its path index instead).
    #[cfg(test)]
    pub(crate) fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathCondition::Prefix { prefix, .. } => Some(prefix),
            _ => None,
        }
    }
}

impl PathCondition {
    pub(crate) fn prefix(value: &str) -> PathCondition {
        let prefix = value.strip_suffix('/').unwrap_or(value);
        PathCondition::Prefix {
            prefix: prefix.to_owned(),
            len: prefix.chars().count().max(1),
        }
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathCondition::Exact(value) => path == value,
            PathCondition::Prefix { prefix, .. } => prefix_matches(prefix, path),
            PathCondition::RegularExpression(re) => re.is_match(path.as_bytes()),
        }
    }
}

/// Segment-boundary prefix match of a normalised prefix `p`: `path == p`, or `path` starts with `p` followed by `/`.
pub(crate) fn prefix_matches(p: &str, path: &str) -> bool {
    match path.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl HeaderCondition {
    fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| self.value.matches(v.as_bytes()))
    }
}

impl QueryCondition {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        // Only the first occurrence of a repeated parameter counts (Gateway API recommendation).
        for part in query.split('&') {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, v),
                None => (part, ""),
            };
            if form_decode(name.as_bytes()).eq(self.name.bytes()) {
                return self.value.matches_form_encoded(value.as_bytes());
            }
        }
        false
    }
}

impl ValueCondition {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueCondition::Exact(expected) => value == expected.as_slice(),
            ValueCondition::RegularExpression(re) => re.is_match(value),
        }
    }

    /// Compares against a form-encoded value without allocating for Exact and for short or plain values.
    fn matches_form_encoded(&self, raw: &[u8]) -> bool {
        match self {
            ValueCondition::Exact(expected) => form_decode(raw).eq(expected.iter().copied()),
            ValueCondition::RegularExpression(re) => {
                if !raw.iter().any(|&b| b == b'%' || b == b'+') {
                    return re.is_match(raw);
                }
                let mut buf = [0u8; QUERY_BUF];
                let mut len = 0;
                let mut decoded = form_decode(raw);
                for (slot, byte) in buf.iter_mut().zip(decoded.by_ref()) {
                    *slot = byte;
                    len += 1;
                }
                match decoded.next() {
                    None => re.is_match(&buf[..len]),
                    Some(_) => re.is_match(&form_decode(raw).collect::<Vec<u8>>()),
                }
            }
        }
    }
}

/// `application/x-www-form-urlencoded` decoding as an iterator: `+` is a space, `%XX` a byte; a `%` not followed
/// by two hex digits stays literal.
pub(crate) fn form_decode(raw: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *raw.get(i)?;
        i += 1;
        match b {
            b'+' => Some(b' '),
            b'%' => {
                let hi = raw.get(i).copied().and_then(hex_value);
                let lo = raw.get(i + 1).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        i += 2;
                        Some(hi << 4 | lo)
                    }
                    _ => Some(b'%'),
                }
            }
            other => Some(other),
        }
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
