//! Validation and compilation of a config document (config-api.md §5) into checked domain types.
//!
//! The walk follows the schema's field order, so errors come out in document order, each with its JSON path.
//! The path is kept as a stack of segments that grows and shrinks with the walk and is written out only for an
//! error, so a valid document formats no path at all.

use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, StatusCode};
use rustc_hash::{FxBuildHasher, FxHashMap};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::arm::{Arm, HeaderCondition, PathCondition, QueryCondition, RegexPattern, ValueCondition};
use crate::backend::{Backend, Upstream, UpstreamProtocol, WeightTable};
use crate::config::{self, FilterType, PathMatchType, PathModifierType, ValueMatchType};
use crate::cors::{Cors, OriginPattern};
use crate::error::{CompileError, FieldError};
use crate::filter::{Filter, HeaderModifier, Mirror, PathModifier, Redirect, Rewrite};
use crate::host::HostPattern;
use crate::table::{RouteTable, Rule};

/// Compiled-size limit of every regular expression (config-api.md §5).
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest accepted rule hostname (a DNS name is at most 253 bytes; `*.` adds 2).
const MAX_HOSTNAME_LEN: usize = 255;

struct Compiler<'c, 'p> {
    errors: Vec<FieldError>,
    /// JSON path of the value being compiled.
    path: Vec<Seg>,
    /// Index into `upstream_order` of each distinct upstream.
    upstreams: FxHashMap<Arc<Upstream>, usize>,
    /// Upstreams in first-seen order, with whether anything may dial them.
    upstream_order: Vec<(Arc<Upstream>, bool)>,
    /// Backend URLs without TLS settings already parsed, by (url, protocol): a big document names the same
    /// service from many rules, and parsing a URL costs more than the rest of a backend.
    parsed: FxHashMap<UrlKey<'c>, usize>,
    /// In a two-thread compile, the upstreams of the backend URLs either thread has parsed (see [`SharedUrls`]).
    shared: Option<&'p SharedUrls<'c>>,
}

/// A backend URL without TLS settings and its wire protocol: together they determine the upstream.
type UrlKey<'c> = (&'c str, UpstreamProtocol);

/// The upstreams of the backend URLs without TLS settings that the two compile threads have parsed (`None`: the
/// URL does not parse, and the walk reports it). A big document names the same few thousand services from both
/// halves: through this map each URL is parsed once, and both halves hold the same object for it, so that
/// joining them ([`Part::absorb`]) needs no pass over the second half's backends to share their upstreams.
/// A thread looks here only for a URL its own cache (`Compiler::parsed`) lacks, and parses without a lock.
/// The map is cut into [`URL_SHARDS`] shards by the key's hash, each behind its own lock: both threads meet new
/// URLs at the same pace from the start of their halves, and with one lock one in six to one in ten of the
/// ~4,500 lookups of a 10,000-rule document found it taken (each a wait and a wake-up).
type SharedUrls<'c> = [Mutex<FxHashMap<UrlKey<'c>, Option<Arc<Upstream>>>>; URL_SHARDS];

const URL_SHARDS: usize = 16;

/// From this many rules on, the two halves of the rules array are compiled on two threads (when the machine has
/// two cores). The rules compile independently; about two thirds of a 10,000-rule compile is spent on them, the
/// rest in [`RouteTable::assemble`].
const PARALLEL_MIN_RULES: usize = 2_000;

pub(crate) fn compile(cfg: &config::Config) -> Result<RouteTable, CompileError> {
    let n = cfg.rules.len();
    let (mut first, second) = if n >= PARALLEL_MIN_RULES && two_cores() {
        let mid = n / 2;
        let shared: SharedUrls<'_> = Default::default();
        let shared = &shared;
        std::thread::scope(|scope| {
            let other = std::thread::Builder::new()
                .name("route-compile".into())
                .spawn_scoped(scope, move || compile_rules(cfg, mid..n, false, Some(shared)));
            match other {
                Ok(handle) => {
                    let first = compile_rules(cfg, 0..mid, true, Some(shared));
                    match handle.join() {
                        Ok(second) => (first, Some(second)),
                        // Not expected; the one-thread compile then does the second half again.
                        Err(_) => (compile_rules(cfg, 0..n, true, None), None),
                    }
                }
                Err(_) => (compile_rules(cfg, 0..n, true, None), None),
            }
        })
    } else {
        (compile_rules(cfg, 0..n, true, None), None)
    };
    if let Some(second) = second {
        first.absorb(second);
    }
    let Part {
        errors,
        rules,
        hosts,
        upstream_order,
        ..
    } = first;
    if !errors.is_empty() {
        return Err(CompileError { errors });
    }
    let upstreams = upstream_order
        .into_iter()
        .filter_map(|(upstream, dialable)| dialable.then_some(upstream))
        .collect();
    Ok(RouteTable::assemble(cfg.version, rules, &hosts, upstreams))
}

fn two_cores() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)) >= 2
}

/// The compiled rules of a range of the rules array, with their errors and upstreams.
struct Part {
    errors: Vec<FieldError>,
    rules: Vec<Rule>,
    hosts: Vec<Vec<HostPattern>>,
    upstreams: FxHashMap<Arc<Upstream>, usize>,
    upstream_order: Vec<(Arc<Upstream>, bool)>,
}

/// Compiles `cfg.rules[range]` (their error paths carry their index in the whole array); `first` also checks the
/// document's own fields, so that a one-part compile reports everything in document order. With `shared` (a
/// two-thread compile), the first part's arrays have room for the second's rules, which [`Part::absorb`]
/// appends.
fn compile_rules<'c>(
    cfg: &'c config::Config,
    range: std::ops::Range<usize>,
    first: bool,
    shared: Option<&SharedUrls<'c>>,
) -> Part {
    let mut cx = Compiler {
        errors: Vec::new(),
        path: Vec::with_capacity(16),
        upstreams: FxHashMap::default(),
        upstream_order: Vec::new(),
        parsed: FxHashMap::default(),
        shared,
    };
    if first && cfg.version < 0 {
        cx.error_at(Seg::Field("version"), "version must be >= 0");
    }
    let room = if first && shared.is_some() {
        cfg.rules.len()
    } else {
        range.len()
    };
    let mut rules = Vec::with_capacity(room);
    let mut hosts = Vec::with_capacity(room);
    for (i, rule) in cfg.rules.iter().enumerate().skip(range.start).take(range.len()) {
        let (compiled, patterns) = cx.within(Seg::Item("rules", i), |cx| cx.rule(rule));
        rules.push(compiled);
        hosts.push(patterns);
    }
    Part {
        errors: cx.errors,
        rules,
        hosts,
        upstreams: cx.upstreams,
        upstream_order: cx.upstream_order,
    }
}

impl Part {
    /// Appends `later`, the part that follows this one: its errors after ours, its rules after ours, and its
    /// upstreams merged into ours so that equal upstreams share one `Arc` across the whole table (one object
    /// in memory, one entry in the upstream list). The upstreams both parts took from [`SharedUrls`] are the
    /// same objects already and are matched by address; only the others are compared by value, and the
    /// backends are visited only when one holds an object that is not kept.
    fn absorb(&mut self, mut later: Part) {
        self.errors.append(&mut later.errors);
        let mut ours: FxHashMap<*const Upstream, usize> = self
            .upstream_order
            .iter()
            .enumerate()
            .map(|(index, (upstream, _))| (Arc::as_ptr(upstream), index))
            .collect();
        // Objects of `later` equal to one of ours, and the object of ours that replaces them.
        let mut replaced: FxHashMap<*const Upstream, Arc<Upstream>> = FxHashMap::default();
        for (upstream, dialable) in later.upstream_order {
            let address = Arc::as_ptr(&upstream);
            let index = match ours.get(&address) {
                Some(&index) => index,
                None => match self.upstreams.get(&upstream) {
                    Some(&index) => {
                        if let Some((shared, _)) = self.upstream_order.get(index) {
                            replaced.insert(address, Arc::clone(shared));
                        }
                        index
                    }
                    None => {
                        let index = self.upstream_order.len();
                        ours.insert(address, index);
                        self.upstreams.insert(Arc::clone(&upstream), index);
                        self.upstream_order.push((upstream, false));
                        index
                    }
                },
            };
            if let Some((_, flag)) = self.upstream_order.get_mut(index) {
                *flag |= dialable;
            }
        }
        if !replaced.is_empty() {
            let share = |upstream: &mut Arc<Upstream>| {
                if let Some(shared) = replaced.get(&Arc::as_ptr(upstream)) {
                    *upstream = Arc::clone(shared);
                }
            };
            for rule in &mut later.rules {
                share_filters(&mut rule.filters, &share);
                for backend in &mut rule.backends {
                    share(&mut backend.upstream);
                    share_filters(&mut backend.filters, &share);
                }
            }
        }
        self.rules.append(&mut later.rules);
        self.hosts.append(&mut later.hosts);
    }
}

fn share_filters(filters: &mut [Filter], share: &impl Fn(&mut Arc<Upstream>)) {
    for filter in filters {
        if let Filter::RequestMirror(mirror) = filter {
            share(&mut mirror.upstream);
        }
    }
}

impl<'c> Compiler<'c, '_> {
    /// Records an error at the current path.
    fn error(&mut self, message: impl Into<String>) {
        let mut path = String::with_capacity(64);
        for segment in &self.path {
            segment.push_to(&mut path);
        }
        self.errors.push(FieldError {
            path,
            message: message.into(),
        });
    }

    /// Records an error at the current path extended by `segment`.
    fn error_at(&mut self, segment: Seg, message: impl Into<String>) {
        self.within(segment, |cx| cx.error(message));
    }

    /// Runs `f` with the path extended by `segment`.
    fn within<R>(&mut self, segment: Seg, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(segment);
        let out = f(self);
        self.path.pop();
        out
    }

    fn rule(&mut self, rule: &'c config::RouteRule) -> (Rule, Vec<HostPattern>) {
        let mut patterns = Vec::with_capacity(rule.hostnames.len());
        for (j, raw) in rule.hostnames.iter().enumerate() {
            match HostPattern::parse(raw).filter(|_| raw.len() <= MAX_HOSTNAME_LEN) {
                Some(pattern) => patterns.push(pattern),
                None => self.error_at(Seg::Item("hostnames", j), "invalid hostname"),
            }
        }
        let arms = if rule.matches.is_empty() {
            vec![Arm::match_all()]
        } else {
            rule.matches
                .iter()
                .enumerate()
                .map(|(k, m)| self.within(Seg::Item("matches", k), |cx| cx.arm(m)))
                .collect()
        };
        let filters = self.within(Seg::Field("filters"), |cx| cx.filters(&rule.filters));
        let backends: Vec<Backend> = rule
            .backends
            .iter()
            .enumerate()
            .map(|(b, backend)| self.within(Seg::Item("backends", b), |cx| cx.backend(backend)))
            .collect();
        let timeout = self.within(Seg::Field("timeouts"), |cx| cx.timeouts(&rule.timeouts));
        let unavailable_status = self.within(Seg::Field("unavailableStatus"), |cx| {
            cx.unavailable_status(rule.unavailable_status)
        });
        let weights = WeightTable::for_backends(&backends);
        let compiled = Rule {
            hostnames: patterns.iter().map(HostPattern::label).collect(),
            filters,
            backends,
            timeout,
            unavailable_status,
            arms,
            weights,
        };
        (compiled, patterns)
    }

    fn arm(&mut self, m: &config::RouteMatch) -> Arm {
        let path_condition = match &m.path {
            None => Arm::match_all().path,
            Some(p) => self.within(Seg::Field("path.value"), |cx| cx.path_match(p)),
        };
        let mut headers: Vec<HeaderCondition> = Vec::with_capacity(m.headers.len());
        for (n, h) in m.headers.iter().enumerate() {
            let condition = self.within(Seg::Item("headers", n), |cx| {
                let name = if h.name.is_empty() {
                    cx.error_at(Seg::Field("name"), "header name must not be empty");
                    None
                } else {
                    match HeaderName::from_bytes(h.name.as_bytes()) {
                        Ok(name) => Some(name),
                        Err(_) => {
                            cx.error_at(Seg::Field("name"), "invalid header name");
                            None
                        }
                    }
                };
                let value = cx.within(Seg::Field("value"), |cx| cx.value_match(h.kind, &h.value));
                name.zip(value)
            });
            // Only the first entry of a name counts (Gateway API).
            if let Some((name, value)) = condition
                && !headers.iter().any(|c| c.name == name)
            {
                headers.push(HeaderCondition { name, value });
            }
        }
        let mut query: Vec<QueryCondition> = Vec::with_capacity(m.query_params.len());
        for (n, q) in m.query_params.iter().enumerate() {
            let value = self.within(Seg::Item("queryParams", n), |cx| {
                if q.name.is_empty() {
                    cx.error_at(Seg::Field("name"), "query parameter name must not be empty");
                }
                cx.within(Seg::Field("value"), |cx| cx.value_match(q.kind, &q.value))
            });
            if let Some(value) = value
                && !q.name.is_empty()
                && !query.iter().any(|c| c.name == q.name)
            {
                query.push(QueryCondition {
                    name: q.name.clone(),
                    value,
                });
            }
        }
        let method = if m.method.is_empty() {
            None
        } else {
            match Method::from_bytes(m.method.as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    self.error_at(Seg::Field("method"), "invalid method");
                    None
                }
            }
        };
        Arm {
            path: path_condition,
            method,
            headers,
            query,
        }
    }

    fn path_match(&mut self, p: &config::PathMatch) -> PathCondition {
        let fallback = Arm::match_all().path;
        if p.value.is_empty() {
            self.error("path value must not be empty");
            return fallback;
        }
        match p.kind {
            PathMatchType::Exact | PathMatchType::PathPrefix if !p.value.starts_with('/') => {
                self.error("path value must start with \"/\"");
                fallback
            }
            PathMatchType::Exact => PathCondition::Exact(p.value.clone()),
            PathMatchType::PathPrefix => PathCondition::prefix(&p.value),
            PathMatchType::RegularExpression => match RegexPattern::new(&p.value, true, REGEX_SIZE_LIMIT) {
                Ok(re) => PathCondition::RegularExpression(re),
                Err(e) => {
                    self.error(regex_message(&e));
                    fallback
                }
            },
        }
    }

    fn value_match(&mut self, kind: ValueMatchType, value: &str) -> Option<ValueCondition> {
        match kind {
            ValueMatchType::Exact => Some(ValueCondition::Exact(value.as_bytes().to_vec())),
            ValueMatchType::RegularExpression => match RegexPattern::new(value, false, REGEX_SIZE_LIMIT) {
                Ok(re) => Some(ValueCondition::RegularExpression(re)),
                Err(e) => {
                    self.error(regex_message(&e));
                    None
                }
            },
        }
    }

    fn filters(&mut self, filters: &[config::RouteFilter]) -> Vec<Filter> {
        filters
            .iter()
            .enumerate()
            .filter_map(|(f, filter)| self.within(Seg::Index(f), |cx| cx.filter(filter)))
            .collect()
    }

    fn filter(&mut self, filter: &config::RouteFilter) -> Option<Filter> {
        fn missing<T>(cx: &mut Compiler<'_, '_>, field: &'static str) -> Option<T> {
            cx.error_at(Seg::Field(field), format!("missing {field} payload"));
            None
        }
        match filter.kind {
            FilterType::RequestHeaderModifier => match &filter.request_header_modifier {
                Some(m) => Some(Filter::RequestHeaderModifier(
                    self.within(Seg::Field("requestHeaderModifier"), |cx| cx.header_modifier(m)),
                )),
                None => missing(self, "requestHeaderModifier"),
            },
            FilterType::ResponseHeaderModifier => match &filter.response_header_modifier {
                Some(m) => Some(Filter::ResponseHeaderModifier(
                    self.within(Seg::Field("responseHeaderModifier"), |cx| cx.header_modifier(m)),
                )),
                None => missing(self, "responseHeaderModifier"),
            },
            FilterType::RequestRedirect => match &filter.request_redirect {
                Some(r) => self
                    .within(Seg::Field("requestRedirect"), |cx| cx.redirect(r))
                    .map(Filter::RequestRedirect),
                None => missing(self, "requestRedirect"),
            },
            FilterType::UrlRewrite => match &filter.url_rewrite {
                Some(r) => self
                    .within(Seg::Field("urlRewrite"), |cx| cx.rewrite(r))
                    .map(Filter::UrlRewrite),
                None => missing(self, "urlRewrite"),
            },
            FilterType::RequestMirror => match &filter.request_mirror {
                Some(m) => self
                    .within(Seg::Field("requestMirror"), |cx| cx.mirror(m))
                    .map(Filter::RequestMirror),
                None => missing(self, "requestMirror"),
            },
            FilterType::Cors => match &filter.cors {
                Some(c) => self.within(Seg::Field("cors"), |cx| cx.cors(c)).map(Filter::Cors),
                None => missing(self, "cors"),
            },
        }
    }

    fn header_modifier(&mut self, m: &config::HeaderModifier) -> HeaderModifier {
        let mut out = HeaderModifier::default();
        for (list, entries, target) in [("set", &m.set, &mut out.set), ("add", &m.add, &mut out.add)] {
            for (n, h) in entries.iter().enumerate() {
                let entry = self.within(Seg::Item(list, n), |cx| {
                    let name = cx.within(Seg::Field("name"), |cx| cx.header_name(&h.name));
                    let value = cx.within(Seg::Field("value"), |cx| cx.header_value(&h.value));
                    name.zip(value)
                });
                if let Some(entry) = entry {
                    target.push(entry);
                }
            }
        }
        for (n, name) in m.remove.iter().enumerate() {
            if let Some(name) = self.within(Seg::Item("remove", n), |cx| cx.header_name(name)) {
                out.remove.push(name);
            }
        }
        out
    }

    /// An RFC 9110 token; a pseudo-header (`:path`) is not one.
    fn header_name(&mut self, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error("invalid header name");
                None
            }
        }
    }

    fn header_value(&mut self, value: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(value) {
            Ok(value) => Some(value),
            Err(_) => {
                self.error("invalid header value");
                None
            }
        }
    }

    fn redirect(&mut self, r: &config::RequestRedirect) -> Option<Redirect> {
        let errors_before = self.errors.len();
        let scheme = match r.scheme.as_str() {
            "" => None,
            "http" => Some("http"),
            "https" => Some("https"),
            _ => {
                self.error_at(Seg::Field("scheme"), "unsupported redirect scheme");
                None
            }
        };
        let hostname = if r.hostname.is_empty() {
            None
        } else if valid_redirect_hostname(&r.hostname) {
            Some(r.hostname.clone())
        } else {
            self.error_at(Seg::Field("hostname"), "invalid redirect hostname");
            None
        };
        let port = match r.port {
            0 => None,
            p => match u16::try_from(p) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.error_at(Seg::Field("port"), "port must be within 1..65535");
                    None
                }
            },
        };
        let path = r.path.as_ref().and_then(|p| {
            self.within(Seg::Field("path.value"), |cx| match p.kind {
                PathModifierType::ReplaceFullPath => cx
                    .replacement_path(&p.value, false)
                    .map(PathModifier::ReplaceFullPath),
                PathModifierType::ReplacePrefixMatch => cx
                    .replacement_path(&p.value, true)
                    .map(PathModifier::ReplacePrefixMatch),
            })
        });
        let status = match r.status_code {
            0 => StatusCode::FOUND,
            301 | 302 | 303 | 307 | 308 => u16::try_from(r.status_code)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::FOUND),
            _ => {
                self.error_at(Seg::Field("statusCode"), "unsupported redirect status");
                StatusCode::FOUND
            }
        };
        (self.errors.len() == errors_before).then_some(Redirect {
            status,
            scheme,
            hostname,
            port,
            path,
        })
    }

    /// A redirect or rewrite path value: it must start with `/` (ReplacePrefixMatch may be `""`), and consist of
    /// visible ASCII other than `?` and `#`, so that it is a valid URI path and header value.
    fn replacement_path(&mut self, value: &str, may_be_empty: bool) -> Option<String> {
        if value.is_empty() {
            if may_be_empty {
                return Some(String::new());
            }
            self.error("path value must not be empty");
            return None;
        }
        if !value.starts_with('/') {
            self.error("path value must start with \"/\"");
            return None;
        }
        // `<`, `>` and `` ` `` are visible ASCII but not URI path characters: such a value would make every
        // forwarded request on the rule unbuildable (a 502), so it is rejected here.
        if !value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
            || value.parse::<http::uri::PathAndQuery>().is_err()
        {
            self.error("invalid path value");
            return None;
        }
        Some(value.to_owned())
    }

    fn rewrite(&mut self, r: &config::UrlRewrite) -> Option<Rewrite> {
        let errors_before = self.errors.len();
        let hostname = if r.hostname.is_empty() {
            None
        } else {
            match (
                Authority::try_from(r.hostname.as_str()),
                HeaderValue::from_str(&r.hostname),
            ) {
                (Ok(authority), Ok(value)) if !authority.as_str().contains('@') => Some(value),
                _ => {
                    self.error_at(Seg::Field("hostname"), "invalid rewrite hostname");
                    None
                }
            }
        };
        let path =
            r.path.as_ref().and_then(|p| match p.kind {
                PathModifierType::ReplaceFullPath => self.within(Seg::Field("path.replaceFullPath"), |cx| {
                    match &p.replace_full_path {
                        None => {
                            cx.error("missing replaceFullPath");
                            None
                        }
                        Some(value) => cx
                            .replacement_path(value, false)
                            .map(PathModifier::ReplaceFullPath),
                    }
                }),
                PathModifierType::ReplacePrefixMatch => {
                    self.within(Seg::Field("path.replacePrefixMatch"), |cx| {
                        match &p.replace_prefix_match {
                            None => {
                                cx.error("missing replacePrefixMatch");
                                None
                            }
                            Some(value) => cx
                                .replacement_path(value, true)
                                .map(PathModifier::ReplacePrefixMatch),
                        }
                    })
                }
            });
        (self.errors.len() == errors_before).then_some(Rewrite { hostname, path })
    }

    fn mirror(&mut self, m: &config::RequestMirror) -> Option<Mirror> {
        let errors_before = self.errors.len();
        let tls = m.tls.as_ref().map(|tls| Arc::new(config::BackendTls::clone(tls)));
        let upstream = Upstream::parse(&m.backend_url, parse_protocol(&m.protocol), tls);
        if upstream.is_none() {
            self.error_at(Seg::Field("backendUrl"), "invalid mirror backendUrl");
        }
        let percent = match m.percent {
            None => 100,
            Some(p) => match u8::try_from(p) {
                Ok(p) if p <= 100 => p,
                _ => {
                    self.error_at(Seg::Field("percent"), "percent must be within 0..100");
                    100
                }
            },
        };
        if let Some(tls) = &m.tls {
            self.within(Seg::Field("tls"), |cx| cx.tls(tls));
        }
        self.within(Seg::Field("protocol"), |cx| cx.protocol(&m.protocol, "mirror"));
        let upstream = upstream.filter(|_| self.errors.len() == errors_before)?;
        Some(Mirror {
            upstream: self.intern(upstream, true),
            percent,
        })
    }

    fn cors(&mut self, c: &config::Cors) -> Option<Cors> {
        let errors_before = self.errors.len();
        let mut any_origin = false;
        let mut origins = Vec::new();
        for (n, entry) in c.allow_origins.iter().enumerate() {
            if entry == "*" {
                any_origin = true;
            } else if let Some(pattern) = OriginPattern::parse(entry) {
                origins.push(pattern);
            } else {
                self.error_at(Seg::Item("allowOrigins", n), "invalid origin pattern");
            }
        }
        let methods = self.within(Seg::Field("allowMethods"), |cx| {
            cx.token_list(&c.allow_methods, "invalid method")
        });
        let headers = self.within(Seg::Field("allowHeaders"), |cx| {
            cx.token_list(&c.allow_headers, "invalid header name")
        });
        let exposed = self.within(Seg::Field("exposeHeaders"), |cx| {
            cx.token_list(&c.expose_headers, "invalid header name")
        });
        let max_age = match c.max_age {
            0 => 5,
            n if n > 0 => n,
            _ => {
                self.error_at(Seg::Field("maxAge"), "maxAge must be >= 0");
                5
            }
        };
        if self.errors.len() != errors_before {
            return None;
        }
        // With credentials, `*` is not a wildcard for browsers, so it is dropped rather than sent.
        let expose_headers = if exposed.any && !c.allow_credentials {
            Some(HeaderValue::from_static("*"))
        } else {
            exposed.joined
        };
        Some(Cors {
            any_origin,
            origins,
            allow_credentials: c.allow_credentials,
            any_method: methods.any,
            allow_methods: methods.joined,
            any_header: headers.any,
            allow_headers: headers.joined,
            expose_headers,
            max_age: HeaderValue::from(max_age),
        })
    }

    /// A CORS list of tokens or `*`: whether `*` is present, and the other entries joined with `, `.
    fn token_list(&mut self, entries: &[String], message: &str) -> TokenList {
        let mut any = false;
        let mut joined = String::new();
        for (n, entry) in entries.iter().enumerate() {
            if entry == "*" {
                any = true;
            } else if !entry.is_empty() && entry.bytes().all(is_tchar) {
                if !joined.is_empty() {
                    joined.push_str(", ");
                }
                joined.push_str(entry);
            } else {
                self.error_at(Seg::Index(n), message);
            }
        }
        TokenList {
            any,
            joined: (!joined.is_empty())
                .then(|| HeaderValue::from_str(&joined).ok())
                .flatten(),
        }
    }

    fn timeouts(&mut self, t: &config::Timeouts) -> Option<Duration> {
        let mut limit: Option<Duration> = None;
        for (field, value) in [("request", t.request), ("backend", t.backend)] {
            let Some(value) = value else { continue };
            match value.to_std() {
                None => self.error_at(Seg::Field(field), "invalid duration: must not be negative"),
                Some(d) if d.is_zero() => {}
                Some(d) => limit = Some(limit.map_or(d, |l| l.min(d))),
            }
        }
        limit
    }

    fn unavailable_status(&mut self, status: i32) -> Option<StatusCode> {
        match status {
            0 => None,
            400..=599 => u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok()),
            _ => {
                self.error("unavailableStatus must be 0 or 400..599");
                None
            }
        }
    }

    fn protocol(&mut self, protocol: &str, what: &str) {
        if !matches!(protocol, "" | "h2c") {
            self.error(format!("unsupported {what} protocol"));
        }
    }

    fn backend(&mut self, b: &'c config::BackendRef) -> Backend {
        let protocol = parse_protocol(&b.protocol);
        let cached = b
            .tls
            .is_none()
            .then(|| self.parsed.get(&(b.url.as_str(), protocol)).copied())
            .flatten();
        let parsed = match cached {
            Some(index) => Some(index),
            None => {
                let upstream = match b.tls.as_ref() {
                    None => self.parse_url((b.url.as_str(), protocol)),
                    Some(tls) => {
                        Upstream::parse(&b.url, protocol, Some(Arc::new(config::BackendTls::clone(tls))))
                            .map(Arc::new)
                    }
                };
                let index = upstream.map(|u| self.intern_index(u));
                if let Some(index) = index
                    && b.tls.is_none()
                {
                    self.parsed.insert((b.url.as_str(), protocol), index);
                }
                index
            }
        };
        // With an unavailableStatus the backend is never dialled, and the Go controller may leave a sentinel
        // in `url`: only non-empty is required then.
        let upstream = match (parsed, b.unavailable_status) {
            (Some(index), 0) => self.upstream_at(index, true),
            (None, 0) => {
                self.error_at(Seg::Field("url"), "invalid backend url");
                Arc::new(Upstream::unreachable())
            }
            _ if b.url.is_empty() => {
                self.error_at(Seg::Field("url"), "invalid backend url");
                Arc::new(Upstream::unreachable())
            }
            (Some(index), _) => self.upstream_at(index, false),
            (None, _) => Arc::new(Upstream::unreachable()),
        };
        let weight = match u32::try_from(b.weight) {
            Ok(w) => w,
            Err(_) => {
                self.error_at(Seg::Field("weight"), "weight out of range");
                0
            }
        };
        self.within(Seg::Field("protocol"), |cx| cx.protocol(&b.protocol, "backend"));
        if let Some(tls) = &b.tls {
            self.within(Seg::Field("tls"), |cx| cx.tls(tls));
        }
        let filters = self.within(Seg::Field("filters"), |cx| cx.filters(&b.filters));
        let unavailable_status = self.within(Seg::Field("unavailableStatus"), |cx| {
            cx.unavailable_status(b.unavailable_status)
        });
        Backend {
            upstream,
            weight,
            filters,
            websocket: b.websocket,
            unavailable_status,
        }
    }

    fn tls(&mut self, tls: &config::BackendTls) {
        if !tls.ca_bundle.is_empty() && !is_pem_certificates(tls.ca_bundle.as_bytes()) {
            self.error_at(Seg::Field("caBundle"), "invalid caBundle");
        }
        match (tls.client_cert_pem.is_empty(), tls.client_key_pem.is_empty()) {
            (true, true) => {}
            (false, true) => self.error_at(Seg::Field("clientCertPem"), "client certificate without key"),
            (true, false) => self.error_at(Seg::Field("clientKeyPem"), "client key without certificate"),
            (false, false) => {
                let cert_ok =
                    decode_base64(&tls.client_cert_pem).is_some_and(|pem| is_pem_certificates(&pem));
                if !cert_ok {
                    self.error_at(Seg::Field("clientCertPem"), "invalid clientCertPem");
                }
                let key_ok = decode_base64(&tls.client_key_pem).is_some_and(|pem| is_pem_private_key(&pem));
                if !key_ok {
                    self.error_at(Seg::Field("clientKeyPem"), "invalid clientKeyPem");
                }
            }
        }
    }

    /// The upstream of a backend URL without TLS settings, parsed here or taken from the other compile thread.
    fn parse_url(&self, key: UrlKey<'c>) -> Option<Arc<Upstream>> {
        let parse = || Upstream::parse(key.0, key.1, None).map(Arc::new);
        let Some(shared) = self.shared else {
            return parse();
        };
        let shard = (FxBuildHasher.hash_one(key) >> 32) as usize % URL_SHARDS;
        let Some(shared) = shared.get(shard) else {
            return parse();
        };
        let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = lock().get(&key) {
            return known.clone();
        }
        let parsed = parse();
        // The other thread may have parsed it meanwhile: its object is kept.
        lock().entry(key).or_insert(parsed).clone()
    }

    /// One shared `Arc` per distinct upstream; `dialable` marks targets a pool may be opened for.
    fn intern(&mut self, upstream: Upstream, dialable: bool) -> Arc<Upstream> {
        let index = self.intern_index(Arc::new(upstream));
        self.upstream_at(index, dialable)
    }

    /// The index in `upstream_order` of `upstream`, added when new (not dialable until `upstream_at` says so).
    fn intern_index(&mut self, shared: Arc<Upstream>) -> usize {
        if let Some(&index) = self.upstreams.get(&shared) {
            return index;
        }
        let index = self.upstream_order.len();
        self.upstreams.insert(Arc::clone(&shared), index);
        self.upstream_order.push((shared, false));
        index
    }

    /// The shared upstream at `index`, marked dialable when `dialable`.
    fn upstream_at(&mut self, index: usize, dialable: bool) -> Arc<Upstream> {
        match self.upstream_order.get_mut(index) {
            Some((shared, flag)) => {
                *flag |= dialable;
                Arc::clone(shared)
            }
            None => Arc::new(Upstream::unreachable()),
        }
    }
}

/// One step of a JSON path. Written by hand rather than with `format!`: the walk pushes several per rule.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// `.name` (or `name` at the root); `name` may itself be dotted (`path.value`).
    Field(&'static str),
    /// `.name[i]`.
    Item(&'static str, usize),
    /// `[i]`.
    Index(usize),
}

impl Seg {
    fn push_to(self, path: &mut String) {
        match self {
            Seg::Field(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
            }
            Seg::Item(name, i) => {
                Seg::Field(name).push_to(path);
                Seg::Index(i).push_to(path);
            }
            Seg::Index(mut i) => {
                path.push('[');
                let mut digits = [0u8; 20];
                let mut n = 0;
                loop {
                    digits[n] = b'0' + (i % 10) as u8;
                    n += 1;
                    i /= 10;
                    if i == 0 {
                        break;
                    }
                }
                path.extend(digits[..n].iter().rev().map(|&d| char::from(d)));
                path.push(']');
            }
        }
    }
}

struct TokenList {
    any: bool,
    joined: Option<HeaderValue>,
}

/// The wire protocol; anything but `h2c` is HTTP/1.1 (an unknown value is reported separately).
fn parse_protocol(protocol: &str) -> UpstreamProtocol {
    if protocol == "h2c" {
        UpstreamProtocol::H2c
    } else {
        UpstreamProtocol::Http1
    }
}

/// At least one PEM certificate, and every PEM certificate section well-formed: what a `caBundle` must hold.
pub fn is_pem_certificates(pem: &[u8]) -> bool {
    let mut certs = CertificateDer::pem_slice_iter(pem);
    matches!(certs.next(), Some(Ok(_))) && certs.all(|c| c.is_ok())
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1) that rustls can load: what a client key must be.
pub fn is_pem_private_key(pem: &[u8]) -> bool {
    PrivateKeyDer::from_pem_slice(pem).is_ok()
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A redirect hostname ends up in `Location`: no whitespace or controls, and nothing that would change the
/// URL's structure (`/ ? # @`, or a `:` outside an IPv6 literal).
fn valid_redirect_hostname(h: &str) -> bool {
    let ipv6 = h.starts_with('[') && h.ends_with(']');
    h.bytes().all(|b| {
        b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\') && (b != b':' || ipv6)
    })
        // An unbalanced `[` passes the byte check but breaks the URL (found by fuzzing redirect computation).
        && http::uri::Authority::try_from(h).is_ok()
}

/// `invalid regular expression: <reason>`, with the reason on one line.
fn regex_message(e: &regex_automata::meta::BuildError) -> String {
    let reason = match (e.size_limit(), e.syntax_error()) {
        (Some(limit), _) => format!("compiled size exceeds the limit of {limit} bytes"),
        (None, syntax) => {
            let text = syntax.map_or_else(|| e.to_string(), ToString::to_string);
            text.lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .map_or_else(|| text.replace('\n', " "), str::to_owned)
        }
    };
    format!("invalid regular expression: {reason}")
}

#[cfg(test)]
mod tests;
