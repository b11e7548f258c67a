//! Validation and compilation of a config document (config-api.md §5) into checked domain types.
//!
//! The walk follows the schema's field order, so errors come out in document order, each with its JSON path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, StatusCode};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::arm::{Arm, HeaderCondition, PathCondition, QueryCondition, ValueCondition};
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

struct Compiler {
    errors: Vec<FieldError>,
    upstreams: HashMap<Arc<Upstream>, bool>,
    /// Upstreams in first-seen order, with whether anything may dial them.
    upstream_order: Vec<Arc<Upstream>>,
}

pub(crate) fn compile(cfg: &config::Config) -> Result<RouteTable, CompileError> {
    let mut cx = Compiler {
        errors: Vec::new(),
        upstreams: HashMap::new(),
        upstream_order: Vec::new(),
    };
    if cfg.version < 0 {
        cx.error("version".to_owned(), "version must be >= 0");
    }
    let mut rules = Vec::with_capacity(cfg.rules.len());
    let mut hosts = Vec::with_capacity(cfg.rules.len());
    for (i, rule) in cfg.rules.iter().enumerate() {
        let (compiled, patterns) = cx.rule(&format!("rules[{i}]"), rule);
        rules.push(compiled);
        hosts.push(patterns);
    }
    if !cx.errors.is_empty() {
        return Err(CompileError { errors: cx.errors });
    }
    let upstreams = cx
        .upstream_order
        .iter()
        .filter(|u| cx.upstreams.get(*u).copied().unwrap_or(false))
        .cloned()
        .collect();
    Ok(RouteTable::assemble(cfg.version, rules, &hosts, upstreams))
}

impl Compiler {
    fn error(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(FieldError {
            path,
            message: message.into(),
        });
    }

    fn rule(&mut self, path: &str, rule: &config::RouteRule) -> (Rule, Vec<HostPattern>) {
        let mut patterns = Vec::with_capacity(rule.hostnames.len());
        for (j, raw) in rule.hostnames.iter().enumerate() {
            match HostPattern::parse(raw).filter(|_| raw.len() <= MAX_HOSTNAME_LEN) {
                Some(pattern) => patterns.push(pattern),
                None => self.error(format!("{path}.hostnames[{j}]"), "invalid hostname"),
            }
        }
        let arms = if rule.matches.is_empty() {
            vec![Arm::match_all()]
        } else {
            rule.matches
                .iter()
                .enumerate()
                .map(|(k, m)| self.arm(&format!("{path}.matches[{k}]"), m))
                .collect()
        };
        let filters = self.filters(&format!("{path}.filters"), &rule.filters);
        let backends: Vec<Backend> = rule
            .backends
            .iter()
            .enumerate()
            .map(|(b, backend)| self.backend(&format!("{path}.backends[{b}]"), backend))
            .collect();
        let timeout = self.timeouts(&format!("{path}.timeouts"), &rule.timeouts);
        let unavailable_status =
            self.unavailable_status(&format!("{path}.unavailableStatus"), rule.unavailable_status);
        let weights = WeightTable::new(backends.iter().map(|b| b.weight));
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

    fn arm(&mut self, path: &str, m: &config::RouteMatch) -> Arm {
        let path_condition = match &m.path {
            None => Arm::match_all().path,
            Some(p) => self.path_match(&format!("{path}.path.value"), p),
        };
        let mut headers: Vec<HeaderCondition> = Vec::with_capacity(m.headers.len());
        for (n, h) in m.headers.iter().enumerate() {
            let at = format!("{path}.headers[{n}]");
            let name = if h.name.is_empty() {
                self.error(format!("{at}.name"), "header name must not be empty");
                None
            } else {
                match HeaderName::from_bytes(h.name.as_bytes()) {
                    Ok(name) => Some(name),
                    Err(_) => {
                        self.error(format!("{at}.name"), "invalid header name");
                        None
                    }
                }
            };
            let value = self.value_match(&format!("{at}.value"), h.kind, &h.value);
            if let (Some(name), Some(value)) = (name, value)
                && !headers.iter().any(|c| c.name == name)
            {
                headers.push(HeaderCondition { name, value });
            }
        }
        let mut query: Vec<QueryCondition> = Vec::with_capacity(m.query_params.len());
        for (n, q) in m.query_params.iter().enumerate() {
            let at = format!("{path}.queryParams[{n}]");
            if q.name.is_empty() {
                self.error(format!("{at}.name"), "query parameter name must not be empty");
            }
            let value = self.value_match(&format!("{at}.value"), q.kind, &q.value);
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
                    self.error(format!("{path}.method"), "invalid method");
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

    fn path_match(&mut self, at: &str, p: &config::PathMatch) -> PathCondition {
        let fallback = Arm::match_all().path;
        if p.value.is_empty() {
            self.error(at.to_owned(), "path value must not be empty");
            return fallback;
        }
        match p.kind {
            PathMatchType::Exact | PathMatchType::PathPrefix if !p.value.starts_with('/') => {
                self.error(at.to_owned(), "path value must start with \"/\"");
                fallback
            }
            PathMatchType::Exact => PathCondition::Exact(p.value.clone()),
            PathMatchType::PathPrefix => PathCondition::prefix(&p.value),
            PathMatchType::RegularExpression => {
                match regex::RegexBuilder::new(&p.value)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                {
                    Ok(re) => PathCondition::RegularExpression(re),
                    Err(e) => {
                        self.error(at.to_owned(), regex_message(&e));
                        fallback
                    }
                }
            }
        }
    }

    fn value_match(&mut self, at: &str, kind: ValueMatchType, value: &str) -> Option<ValueCondition> {
        match kind {
            ValueMatchType::Exact => Some(ValueCondition::Exact(value.as_bytes().to_vec())),
            ValueMatchType::RegularExpression => {
                match regex::bytes::RegexBuilder::new(value)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                {
                    Ok(re) => Some(ValueCondition::RegularExpression(re)),
                    Err(e) => {
                        self.error(at.to_owned(), regex_message(&e));
                        None
                    }
                }
            }
        }
    }

    fn filters(&mut self, path: &str, filters: &[config::RouteFilter]) -> Vec<Filter> {
        filters
            .iter()
            .enumerate()
            .filter_map(|(f, filter)| self.filter(&format!("{path}[{f}]"), filter))
            .collect()
    }

    fn filter(&mut self, path: &str, filter: &config::RouteFilter) -> Option<Filter> {
        let missing = |cx: &mut Compiler, field: &str| {
            cx.error(format!("{path}.{field}"), format!("missing {field} payload"));
            None
        };
        match filter.kind {
            FilterType::RequestHeaderModifier => match &filter.request_header_modifier {
                Some(m) => Some(Filter::RequestHeaderModifier(
                    self.header_modifier(&format!("{path}.requestHeaderModifier"), m),
                )),
                None => missing(self, "requestHeaderModifier"),
            },
            FilterType::ResponseHeaderModifier => match &filter.response_header_modifier {
                Some(m) => Some(Filter::ResponseHeaderModifier(
                    self.header_modifier(&format!("{path}.responseHeaderModifier"), m),
                )),
                None => missing(self, "responseHeaderModifier"),
            },
            FilterType::RequestRedirect => match &filter.request_redirect {
                Some(r) => self
                    .redirect(&format!("{path}.requestRedirect"), r)
                    .map(Filter::RequestRedirect),
                None => missing(self, "requestRedirect"),
            },
            FilterType::UrlRewrite => match &filter.url_rewrite {
                Some(r) => self
                    .rewrite(&format!("{path}.urlRewrite"), r)
                    .map(Filter::UrlRewrite),
                None => missing(self, "urlRewrite"),
            },
            FilterType::RequestMirror => match &filter.request_mirror {
                Some(m) => self
                    .mirror(&format!("{path}.requestMirror"), m)
                    .map(Filter::RequestMirror),
                None => missing(self, "requestMirror"),
            },
            FilterType::Cors => match &filter.cors {
                Some(c) => self.cors(&format!("{path}.cors"), c).map(Filter::Cors),
                None => missing(self, "cors"),
            },
        }
    }

    fn header_modifier(&mut self, path: &str, m: &config::HeaderModifier) -> HeaderModifier {
        let mut out = HeaderModifier::default();
        for (list, entries, target) in [("set", &m.set, &mut out.set), ("add", &m.add, &mut out.add)] {
            for (n, h) in entries.iter().enumerate() {
                let name = self.header_name(&format!("{path}.{list}[{n}].name"), &h.name);
                let value = self.header_value(&format!("{path}.{list}[{n}].value"), &h.value);
                if let (Some(name), Some(value)) = (name, value) {
                    target.push((name, value));
                }
            }
        }
        for (n, name) in m.remove.iter().enumerate() {
            if let Some(name) = self.header_name(&format!("{path}.remove[{n}]"), name) {
                out.remove.push(name);
            }
        }
        out
    }

    /// An RFC 9110 token, not a pseudo-header.
    fn header_name(&mut self, at: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error(at.to_owned(), "invalid header name");
                None
            }
        }
    }

    fn header_value(&mut self, at: &str, value: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(value) {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(at.to_owned(), "invalid header value");
                None
            }
        }
    }

    fn redirect(&mut self, path: &str, r: &config::RequestRedirect) -> Option<Redirect> {
        let errors_before = self.errors.len();
        let scheme = match r.scheme.as_str() {
            "" => None,
            "http" => Some("http"),
            "https" => Some("https"),
            _ => {
                self.error(format!("{path}.scheme"), "unsupported redirect scheme");
                None
            }
        };
        let hostname = if r.hostname.is_empty() {
            None
        } else if valid_redirect_hostname(&r.hostname) {
            Some(r.hostname.clone())
        } else {
            self.error(format!("{path}.hostname"), "invalid redirect hostname");
            None
        };
        let port = match r.port {
            0 => None,
            p => match u16::try_from(p) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.error(format!("{path}.port"), "port must be within 1..65535");
                    None
                }
            },
        };
        let path_modifier = r.path.as_ref().and_then(|p| {
            let at = format!("{path}.path.value");
            match p.kind {
                PathModifierType::ReplaceFullPath => self
                    .replacement_path(&at, &p.value, false)
                    .map(PathModifier::ReplaceFullPath),
                PathModifierType::ReplacePrefixMatch => self
                    .replacement_path(&at, &p.value, true)
                    .map(PathModifier::ReplacePrefixMatch),
            }
        });
        let status = match r.status_code {
            0 => StatusCode::FOUND,
            301 | 302 | 303 | 307 | 308 => {
                StatusCode::from_u16(r.status_code as u16).unwrap_or(StatusCode::FOUND)
            }
            _ => {
                self.error(format!("{path}.statusCode"), "unsupported redirect status");
                StatusCode::FOUND
            }
        };
        (self.errors.len() == errors_before).then_some(Redirect {
            status,
            scheme,
            hostname,
            port,
            path: path_modifier,
        })
    }

    /// A redirect or rewrite path value: it must start with `/` (ReplacePrefixMatch may be `""`), and consist of
    /// visible ASCII other than `?` and `#`, so that it is a valid URI path and header value.
    fn replacement_path(&mut self, at: &str, value: &str, may_be_empty: bool) -> Option<String> {
        if value.is_empty() {
            if may_be_empty {
                return Some(String::new());
            }
            self.error(at.to_owned(), "path value must not be empty");
            return None;
        }
        if !value.starts_with('/') {
            self.error(at.to_owned(), "path value must start with \"/\"");
            return None;
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
        {
            self.error(at.to_owned(), "invalid path value");
            return None;
        }
        Some(value.to_owned())
    }

    fn rewrite(&mut self, path: &str, r: &config::UrlRewrite) -> Option<Rewrite> {
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
                    self.error(format!("{path}.hostname"), "invalid rewrite hostname");
                    None
                }
            }
        };
        let path_modifier = r.path.as_ref().and_then(|p| match p.kind {
            PathModifierType::ReplaceFullPath => {
                let at = format!("{path}.path.replaceFullPath");
                match &p.replace_full_path {
                    None => {
                        self.error(at, "missing replaceFullPath");
                        None
                    }
                    Some(value) => self
                        .replacement_path(&at, value, false)
                        .map(PathModifier::ReplaceFullPath),
                }
            }
            PathModifierType::ReplacePrefixMatch => {
                let at = format!("{path}.path.replacePrefixMatch");
                match &p.replace_prefix_match {
                    None => {
                        self.error(at, "missing replacePrefixMatch");
                        None
                    }
                    Some(value) => self
                        .replacement_path(&at, value, true)
                        .map(PathModifier::ReplacePrefixMatch),
                }
            }
        });
        (self.errors.len() == errors_before).then_some(Rewrite {
            hostname,
            path: path_modifier,
        })
    }

    fn mirror(&mut self, path: &str, m: &config::RequestMirror) -> Option<Mirror> {
        let errors_before = self.errors.len();
        let protocol = self.protocol(&format!("{path}.protocol"), &m.protocol, "mirror");
        let percent = match m.percent {
            None => 100,
            Some(p) => match u8::try_from(p) {
                Ok(p) if p <= 100 => p,
                _ => {
                    self.error(format!("{path}.percent"), "percent must be within 0..100");
                    100
                }
            },
        };
        let tls = m.tls.as_ref().map(|tls| {
            self.tls(&format!("{path}.tls"), tls);
            Arc::new(tls.clone())
        });
        let upstream = Upstream::parse(&m.backend_url, protocol, tls);
        if upstream.is_none() {
            self.error(format!("{path}.backendUrl"), "invalid mirror backendUrl");
        }
        let upstream = upstream.filter(|_| self.errors.len() == errors_before)?;
        Some(Mirror {
            upstream: self.intern(upstream, true),
            percent,
        })
    }

    fn cors(&mut self, path: &str, c: &config::Cors) -> Option<Cors> {
        let errors_before = self.errors.len();
        let mut any_origin = false;
        let mut origins = Vec::new();
        for (n, entry) in c.allow_origins.iter().enumerate() {
            if entry == "*" {
                any_origin = true;
            } else if let Some(pattern) = OriginPattern::parse(entry) {
                origins.push(pattern);
            } else {
                self.error(format!("{path}.allowOrigins[{n}]"), "invalid origin pattern");
            }
        }
        let methods = self.token_list(
            &format!("{path}.allowMethods"),
            &c.allow_methods,
            "invalid method",
        );
        let headers = self.token_list(
            &format!("{path}.allowHeaders"),
            &c.allow_headers,
            "invalid header name",
        );
        let exposed = self.token_list(
            &format!("{path}.exposeHeaders"),
            &c.expose_headers,
            "invalid header name",
        );
        let max_age = match c.max_age {
            0 => 5,
            n if n > 0 => n,
            _ => {
                self.error(format!("{path}.maxAge"), "maxAge must be >= 0");
                5
            }
        };
        if self.errors.len() != errors_before {
            return None;
        }
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
    fn token_list(&mut self, path: &str, entries: &[String], message: &str) -> TokenList {
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
                self.error(format!("{path}[{n}]"), message);
            }
        }
        TokenList {
            any,
            joined: (!joined.is_empty())
                .then(|| HeaderValue::from_str(&joined).ok())
                .flatten(),
        }
    }

    fn timeouts(&mut self, path: &str, t: &config::Timeouts) -> Option<Duration> {
        let mut limit: Option<Duration> = None;
        for (field, value) in [("request", t.request), ("backend", t.backend)] {
            let Some(value) = value else { continue };
            match value.to_std() {
                None => self.error(
                    format!("{path}.{field}"),
                    "invalid duration: must not be negative",
                ),
                Some(d) if d.is_zero() => {}
                Some(d) => limit = Some(limit.map_or(d, |l| l.min(d))),
            }
        }
        limit
    }

    fn unavailable_status(&mut self, at: &str, status: i32) -> Option<StatusCode> {
        match status {
            0 => None,
            400..=599 => StatusCode::from_u16(status as u16).ok(),
            _ => {
                self.error(at.to_owned(), "unavailableStatus must be 0 or 400..599");
                None
            }
        }
    }

    fn protocol(&mut self, at: &str, protocol: &str, what: &str) -> UpstreamProtocol {
        match protocol {
            "" => UpstreamProtocol::Http1,
            "h2c" => UpstreamProtocol::H2c,
            _ => {
                self.error(at.to_owned(), format!("unsupported {what} protocol"));
                UpstreamProtocol::Http1
            }
        }
    }

    fn backend(&mut self, path: &str, b: &config::BackendRef) -> Backend {
        let unavailable_status =
            self.unavailable_status(&format!("{path}.unavailableStatus"), b.unavailable_status);
        let weight = match u32::try_from(b.weight) {
            Ok(w) => w,
            Err(_) => {
                self.error(format!("{path}.weight"), "weight out of range");
                0
            }
        };
        let protocol = self.protocol(&format!("{path}.protocol"), &b.protocol, "backend");
        let tls = b.tls.as_ref().map(|tls| {
            self.tls(&format!("{path}.tls"), tls);
            Arc::new(tls.clone())
        });
        let parsed = Upstream::parse(&b.url, protocol, tls);
        let upstream = match (parsed, b.unavailable_status) {
            (Some(upstream), 0) => self.intern(upstream, true),
            (None, 0) => {
                self.error(format!("{path}.url"), "invalid backend url");
                Arc::new(Upstream::unreachable())
            }
            _ if b.url.is_empty() => {
                self.error(format!("{path}.url"), "invalid backend url");
                Arc::new(Upstream::unreachable())
            }
            (Some(upstream), _) => self.intern(upstream, false),
            (None, _) => Arc::new(Upstream::unreachable()),
        };
        let filters = self.filters(&format!("{path}.filters"), &b.filters);
        Backend {
            upstream,
            weight,
            filters,
            websocket: b.websocket,
            unavailable_status,
        }
    }

    fn tls(&mut self, path: &str, tls: &config::BackendTls) {
        if !tls.ca_bundle.is_empty() {
            let mut certs = CertificateDer::pem_slice_iter(tls.ca_bundle.as_bytes());
            let first_ok = matches!(certs.next(), Some(Ok(_)));
            if !first_ok || certs.any(|c| c.is_err()) {
                self.error(format!("{path}.caBundle"), "invalid caBundle");
            }
        }
        match (tls.client_cert_pem.is_empty(), tls.client_key_pem.is_empty()) {
            (true, true) => {}
            (false, true) => self.error(format!("{path}.clientCertPem"), "client certificate without key"),
            (true, false) => self.error(format!("{path}.clientKeyPem"), "client key without certificate"),
            (false, false) => {
                let cert_ok = decode_base64(&tls.client_cert_pem).is_some_and(|pem| {
                    let mut certs = CertificateDer::pem_slice_iter(&pem);
                    matches!(certs.next(), Some(Ok(_))) && certs.all(|c| c.is_ok())
                });
                if !cert_ok {
                    self.error(format!("{path}.clientCertPem"), "invalid clientCertPem");
                }
                let key_ok = decode_base64(&tls.client_key_pem)
                    .is_some_and(|pem| PrivateKeyDer::from_pem_slice(&pem).is_ok());
                if !key_ok {
                    self.error(format!("{path}.clientKeyPem"), "invalid clientKeyPem");
                }
            }
        }
    }

    /// One shared `Arc` per distinct upstream; `dialable` marks targets a pool may be opened for.
    fn intern(&mut self, upstream: Upstream, dialable: bool) -> Arc<Upstream> {
        if let Some((shared, flag)) = self.upstreams.get_key_value(&upstream) {
            let shared = Arc::clone(shared);
            if dialable && !*flag {
                self.upstreams.insert(Arc::clone(&shared), true);
            }
            return shared;
        }
        let shared = Arc::new(upstream);
        self.upstreams.insert(Arc::clone(&shared), dialable);
        self.upstream_order.push(Arc::clone(&shared));
        shared
    }
}

struct TokenList {
    any: bool,
    joined: Option<HeaderValue>,
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
}

/// `invalid regular expression: <reason>`, with the reason on one line.
fn regex_message(e: &regex::Error) -> String {
    let reason = match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("compiled size exceeds the limit of {limit} bytes")
        }
        other => {
            let text = other.to_string();
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
