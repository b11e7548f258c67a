//! HTTPRoute and GRPCRoute read into one shape, so binding, backend resolution and rule emission are written
//! once. The `gateway-api` crate generates a separate type per kind for every part of a route (parentRefs,
//! backendRefs, header matches, status parents, ...) with the same field names, so the shared parts are read by
//! macros over those field names; only the match and filter kinds that exist for one route kind alone are read by
//! kind-specific code. Matches and plain filters are converted to wire types here; references (backends, mirror
//! targets) stay unresolved for [`crate::backend`].
//!
//! A [`Route`] borrows from the object it was read from, so reading 5,000 routes copies no names and no status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;
use tunnelgate_config as wire;

use crate::{GATEWAY_GROUP, GrpcRoute, HttpRoute};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Http,
    Grpc,
}

/// A route of either kind, normalised, borrowing from the object.
pub(crate) struct Route<'a> {
    pub kind: RouteKind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub generation: Option<i64>,
    pub created: Option<&'a Time>,
    pub hostnames: &'a [String],
    pub parent_refs: Vec<ParentRef<'a>>,
    pub rules: Vec<Rule>,
    /// `status.parents` as found on the object, in order.
    pub current_parents: Vec<CurrentParent<'a>>,
}

/// A `parentRef` with the API defaults applied (group `gateway.networking.k8s.io`, kind `Gateway`).
pub(crate) struct ParentRef<'a> {
    pub key: ParentKey<'a>,
    /// The route's namespace when `namespace` is unset.
    pub namespace: &'a str,
    pub section_name: Option<&'a str>,
    /// The parentRef exactly as written, for the status entry; serialised only when the entry is written.
    pub echo: &'a dyn ToJson,
}

/// The identity of a parentRef: two refs with equal keys share one status entry. Unset optional fields compare
/// as empty, so `namespace: <route namespace>` and an unset namespace are different refs, as in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParentKey<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub port: Option<i32>,
    pub section_name: &'a str,
}

/// One entry of the route's current `status.parents`.
pub(crate) struct CurrentParent<'a> {
    pub controller_name: &'a str,
    pub key: ParentKey<'a>,
    pub conditions: &'a [Condition],
    /// The whole entry, for entries of other controllers, which are copied unchanged.
    pub entry: &'a dyn ToJson,
}

/// A generated parentRef or status parent type, serialised only when a status entry needs it.
pub(crate) trait ToJson {
    fn to_json(&self) -> Value;
}

#[derive(Debug)]
pub(crate) struct Rule {
    /// `rules[i].name`, used in "Dropped Rule" messages.
    pub name: Option<String>,
    pub matches: Vec<wire::RouteMatch>,
    pub filters: Vec<Filter>,
    pub backends: Vec<BackendRef>,
    pub timeouts: wire::Timeouts,
    /// Problems found while reading the rule that make it invalid (e.g. an unparsable timeout).
    pub invalid: Vec<String>,
}

/// A filter as read: either already a wire filter, a mirror whose target still needs resolving, or one we
/// cannot honour (fail closed).
#[derive(Debug)]
pub(crate) enum Filter {
    Wire(Box<wire::RouteFilter>),
    Mirror { target: ObjectRef, percent: Option<i32> },
    Unsupported(String),
}

#[derive(Debug)]
pub(crate) struct BackendRef {
    pub target: ObjectRef,
    pub weight: i32,
    pub filters: Vec<Filter>,
}

/// A reference to a backend object; `group` "" and `kind` "Service" by default.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
}

/// A Gateway API route object of either kind.
pub(crate) trait RouteObject {
    fn read(&self) -> Route<'_>;
}

impl RouteKind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

impl<T: serde::Serialize> ToJson for T {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The [`ParentKey`] of a generated parentRef type (spec or status).
macro_rules! parent_key {
    ($p:expr) => {{
        let p = $p;
        ParentKey {
            group: p.group.as_deref().unwrap_or(GATEWAY_GROUP),
            kind: p.kind.as_deref().unwrap_or("Gateway"),
            namespace: p.namespace.as_deref().unwrap_or(""),
            name: p.name.as_str(),
            port: p.port,
            section_name: p.section_name.as_deref().unwrap_or(""),
        }
    }};
}

/// [`RouteObject`] for a generated route type; `$rule` converts one of its rules.
macro_rules! route_object {
    ($route:ty, $kind:expr, $rule:path) => {
        impl RouteObject for $route {
            fn read(&self) -> Route<'_> {
                let meta = &self.metadata;
                let namespace = meta.namespace.as_deref().unwrap_or("default");
                let spec = &self.spec;
                Route {
                    kind: $kind,
                    namespace,
                    name: meta.name.as_deref().unwrap_or(""),
                    generation: meta.generation,
                    created: meta.creation_timestamp.as_ref(),
                    hostnames: spec.hostnames.as_deref().unwrap_or(&[]),
                    parent_refs: spec
                        .parent_refs
                        .iter()
                        .flatten()
                        .map(|p| ParentRef {
                            key: parent_key!(p),
                            namespace: p.namespace.as_deref().unwrap_or(namespace),
                            section_name: p.section_name.as_deref(),
                            echo: p,
                        })
                        .collect(),
                    rules: match &spec.rules {
                        // The CRD defaults an absent rule list to one rule matching every path, without backends.
                        None => vec![Rule::empty()],
                        Some(rules) => rules.iter().map($rule).collect(),
                    },
                    current_parents: self
                        .status
                        .iter()
                        .flat_map(|s| s.parents.iter())
                        .map(|p| CurrentParent {
                            controller_name: p.controller_name.as_str(),
                            key: parent_key!(&p.parent_ref),
                            conditions: &p.conditions,
                            entry: p,
                        })
                        .collect(),
                }
            }
        }
    };
}

route_object!(HttpRoute, RouteKind::Http, http_rule);
route_object!(GrpcRoute, RouteKind::Grpc, grpc_rule);

impl Route<'_> {
    /// Our current conditions for `parent`, to carry `lastTransitionTime` over.
    pub(crate) fn current_conditions(&self, parent: &ParentKey<'_>, controller_name: &str) -> &[Condition] {
        self.current_parents
            .iter()
            .find(|p| p.controller_name == controller_name && p.key == *parent)
            .map_or(&[], |p| p.conditions)
    }
}

impl Rule {
    fn empty() -> Rule {
        Rule {
            name: None,
            matches: Vec::new(),
            filters: Vec::new(),
            backends: Vec::new(),
            timeouts: wire::Timeouts::default(),
            invalid: Vec::new(),
        }
    }
}

/// Header matches of either route kind → wire matches; `$regex` is the generated `RegularExpression` variant.
macro_rules! header_matches {
    ($headers:expr, $regex:path) => {
        $headers
            .iter()
            .flatten()
            .map(|h| wire::ValueMatch {
                kind: match h.r#type {
                    Some($regex) => wire::ValueMatchType::RegularExpression,
                    _ => wire::ValueMatchType::Exact,
                },
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
}

/// The name, filters and backendRefs of a rule of either kind; `$filter` converts one filter (rule or
/// backendRef level) of that kind.
macro_rules! rule_common {
    ($rule:expr, $filter:ident) => {{
        let rule = $rule;
        let mut out = Rule::empty();
        out.name = rule.name.clone();
        out.filters = rule.filters.iter().flatten().map(|f| $filter!(f)).collect();
        out.backends = rule
            .backend_refs
            .iter()
            .flatten()
            .map(|b| BackendRef {
                target: ObjectRef {
                    group: b.group.clone().unwrap_or_default(),
                    kind: b.kind.clone().unwrap_or_else(|| "Service".to_owned()),
                    name: b.name.clone(),
                    namespace: b.namespace.clone(),
                    port: b.port,
                },
                weight: b.weight.unwrap_or(1),
                filters: b.filters.iter().flatten().map(|f| $filter!(f)).collect(),
            })
            .collect();
        out
    }};
}

fn http_rule(rule: &gateway_api::httproutes::HttpRouteRules) -> Rule {
    use gateway_api::httproutes::{
        HttpRouteRulesMatchesHeadersType as HeaderType, HttpRouteRulesMatchesPathType as PathType,
        HttpRouteRulesMatchesQueryParamsType as QueryType,
    };
    let mut out = rule_common!(rule, http_filter);
    for m in rule.matches.iter().flatten() {
        let path = m.path.as_ref();
        let kind = match path.and_then(|p| p.r#type.as_ref()) {
            None | Some(PathType::PathPrefix) => wire::PathMatchType::PathPrefix,
            Some(PathType::Exact) => wire::PathMatchType::Exact,
            Some(PathType::RegularExpression) => wire::PathMatchType::RegularExpression,
        };
        let value = path
            .and_then(|p| p.value.clone())
            .unwrap_or_else(|| "/".to_owned());
        let method = m.method.as_ref().map(crate::filter::enum_str).unwrap_or_default();
        out.matches.push(wire::RouteMatch {
            path: Some(wire::PathMatch { kind, value }),
            headers: header_matches!(m.headers, HeaderType::RegularExpression),
            query_params: header_matches!(m.query_params, QueryType::RegularExpression),
            method,
        });
    }
    if let Some(t) = &rule.timeouts {
        for (field, value, slot) in [
            ("timeouts.request", &t.request, &mut out.timeouts.request),
            (
                "timeouts.backendRequest",
                &t.backend_request,
                &mut out.timeouts.backend,
            ),
        ] {
            if let Some(v) = value {
                match wire::GoDuration::parse(v) {
                    Ok(d) if !d.is_negative() => *slot = Some(d),
                    _ => out.invalid.push(format!("invalid duration {v:?} at {field}")),
                }
            }
        }
    }
    out
}

fn grpc_rule(rule: &gateway_api::grpcroutes::GrpcRouteRules) -> Rule {
    use gateway_api::grpcroutes::{
        GrpcRouteRulesMatchesHeadersType as HeaderType, GrpcRouteRulesMatchesMethodType as MethodType,
    };
    let mut out = rule_common!(rule, grpc_filter);
    for m in rule.matches.iter().flatten() {
        let path = m.method.as_ref().and_then(|method| {
            let service = method.service.as_deref().filter(|s| !s.is_empty());
            let name = method.method.as_deref().filter(|s| !s.is_empty());
            match method.r#type {
                Some(MethodType::RegularExpression) => Some(wire::PathMatch {
                    kind: wire::PathMatchType::RegularExpression,
                    value: format!(
                        "^/(?:{})/(?:{})$",
                        service.unwrap_or("[^/]+"),
                        name.unwrap_or("[^/]+")
                    ),
                }),
                _ => match (service, name) {
                    (Some(s), Some(n)) => Some(wire::PathMatch {
                        kind: wire::PathMatchType::Exact,
                        value: format!("/{s}/{n}"),
                    }),
                    (Some(s), None) => Some(wire::PathMatch {
                        kind: wire::PathMatchType::PathPrefix,
                        value: format!("/{s}/"),
                    }),
                    (None, Some(n)) => Some(wire::PathMatch {
                        kind: wire::PathMatchType::RegularExpression,
                        value: format!("^/[^/]+/{}$", regex_escape(n)),
                    }),
                    (None, None) => None,
                },
            }
        });
        out.matches.push(wire::RouteMatch {
            path,
            headers: header_matches!(m.headers, HeaderType::RegularExpression),
            query_params: Vec::new(),
            method: String::new(),
        });
    }
    out
}

/// Escapes regex metacharacters so a gRPC method name matches literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `percent`, or `fraction` as `floor(numerator*100/denominator)` (a denominator ≤ 0 counts as 100), clamped to
/// 0..=100; `None` for 100%, which is the wire default.
pub(crate) fn mirror_percent(percent: Option<i32>, fraction: Option<(i32, Option<i32>)>) -> Option<i32> {
    let p = match (percent, fraction) {
        (Some(p), _) => i64::from(p),
        (None, Some((num, den))) => {
            let den = den.filter(|d| *d > 0).unwrap_or(100);
            i64::from(num) * 100 / i64::from(den)
        }
        (None, None) => 100,
    };
    let p = p.clamp(0, 100);
    (p != 100).then(|| i32::try_from(p).unwrap_or(100))
}

pub(crate) fn header_modifier<'a>(
    set: impl Iterator<Item = (&'a String, &'a String)>,
    add: impl Iterator<Item = (&'a String, &'a String)>,
    remove: Option<&Vec<String>>,
) -> wire::HeaderModifier {
    let header = |(name, value): (&String, &String)| wire::Header {
        name: name.clone(),
        value: value.clone(),
    };
    wire::HeaderModifier {
        set: set.map(header).collect(),
        add: add.map(header).collect(),
        remove: remove.cloned().unwrap_or_default(),
    }
}
