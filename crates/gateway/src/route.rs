//! HTTPRoute and GRPCRoute read into one shape, so binding, backend resolution and rule emission are written
//! once. Matches and plain filters are converted to wire types here; references (backends, mirror targets) stay
//! unresolved for [`crate::backend`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use serde_json::Value;
use tunnelgate_config as wire;

use crate::{GATEWAY_GROUP, GrpcRoute, HttpRoute};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Http,
    Grpc,
}

/// A route of either kind, normalised.
#[derive(Debug)]
pub(crate) struct Route {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub created: Option<Time>,
    pub hostnames: Vec<String>,
    pub parent_refs: Vec<ParentRef>,
    pub rules: Vec<Rule>,
    /// `status.parents` as found on the object, verbatim.
    pub current_parents: Vec<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct ParentRef {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub port: Option<i32>,
    pub section_name: Option<String>,
    /// The parentRef exactly as written, echoed into the status entry.
    pub echo: Value,
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

impl RouteKind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

impl Route {
    pub(crate) fn from_http(route: &HttpRoute) -> Route {
        let spec = &route.spec;
        let parent_refs = spec
            .parent_refs
            .iter()
            .flatten()
            .map(|p| ParentRef {
                group: p.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_owned()),
                kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_owned()),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                port: p.port,
                section_name: p.section_name.clone(),
                echo: serde_json::to_value(p).unwrap_or(Value::Null),
            })
            .collect();
        let rules = match &spec.rules {
            // The CRD defaults an absent rule list to one rule matching every path, without backends.
            None => vec![Rule::empty()],
            Some(rules) => rules.iter().map(http_rule).collect(),
        };
        let current_parents = route
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.parents).ok())
            .and_then(|v| match v {
                Value::Array(a) => Some(a),
                _ => None,
            })
            .unwrap_or_default();
        Route::new(
            RouteKind::Http,
            &route.metadata,
            spec.hostnames.clone(),
            parent_refs,
            rules,
            current_parents,
        )
    }

    pub(crate) fn from_grpc(route: &GrpcRoute) -> Route {
        let spec = &route.spec;
        let parent_refs = spec
            .parent_refs
            .iter()
            .flatten()
            .map(|p| ParentRef {
                group: p.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_owned()),
                kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_owned()),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                port: p.port,
                section_name: p.section_name.clone(),
                echo: serde_json::to_value(p).unwrap_or(Value::Null),
            })
            .collect();
        let rules = match &spec.rules {
            None => vec![Rule::empty()],
            Some(rules) => rules.iter().map(grpc_rule).collect(),
        };
        let current_parents = route
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.parents).ok())
            .and_then(|v| match v {
                Value::Array(a) => Some(a),
                _ => None,
            })
            .unwrap_or_default();
        Route::new(
            RouteKind::Grpc,
            &route.metadata,
            spec.hostnames.clone(),
            parent_refs,
            rules,
            current_parents,
        )
    }

    fn new(
        kind: RouteKind,
        meta: &ObjectMeta,
        hostnames: Option<Vec<String>>,
        parent_refs: Vec<ParentRef>,
        rules: Vec<Rule>,
        current_parents: Vec<Value>,
    ) -> Route {
        Route {
            kind,
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            name: meta.name.clone().unwrap_or_default(),
            generation: meta.generation,
            created: meta.creation_timestamp.clone(),
            hostnames: hostnames.unwrap_or_default(),
            parent_refs,
            rules,
            current_parents,
        }
    }

    /// Our current conditions for `parent`, to carry `lastTransitionTime` over.
    pub(crate) fn current_conditions(&self, parent: &ParentRef, controller_name: &str) -> Vec<Condition> {
        self.current_parents
            .iter()
            .find(|p| {
                p.get("controllerName").and_then(Value::as_str) == Some(controller_name)
                    && p.get("parentRef")
                        .is_some_and(|r| same_parent_ref(r, &parent.echo))
            })
            .and_then(|p| p.get("conditions"))
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default()
    }
}

/// Parent refs are equal when their fields are, with defaults applied.
pub(crate) fn same_parent_ref(a: &Value, b: &Value) -> bool {
    let field = |v: &Value, k: &str, default: &str| -> String {
        match v.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => default.to_owned(),
        }
    };
    [
        ("group", GATEWAY_GROUP),
        ("kind", "Gateway"),
        ("namespace", ""),
        ("name", ""),
        ("port", ""),
        ("sectionName", ""),
    ]
    .iter()
    .all(|(k, d)| field(a, k, d) == field(b, k, d))
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

fn http_rule(rule: &gateway_api::httproutes::HttpRouteRules) -> Rule {
    use gateway_api::httproutes::{
        HttpRouteRulesMatchesHeadersType as HeaderType, HttpRouteRulesMatchesPathType as PathType,
        HttpRouteRulesMatchesQueryParamsType as QueryType,
    };
    let mut out = Rule::empty();
    out.name = rule.name.clone();
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
        let headers = m
            .headers
            .iter()
            .flatten()
            .map(|h| wire::ValueMatch {
                kind: match h.r#type {
                    Some(HeaderType::RegularExpression) => wire::ValueMatchType::RegularExpression,
                    _ => wire::ValueMatchType::Exact,
                },
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect();
        let query_params = m
            .query_params
            .iter()
            .flatten()
            .map(|q| wire::ValueMatch {
                kind: match q.r#type {
                    Some(QueryType::RegularExpression) => wire::ValueMatchType::RegularExpression,
                    _ => wire::ValueMatchType::Exact,
                },
                name: q.name.clone(),
                value: q.value.clone(),
            })
            .collect();
        let method = m
            .method
            .as_ref()
            .and_then(|me| serde_json::to_value(me).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.matches.push(wire::RouteMatch {
            path: Some(wire::PathMatch { kind, value }),
            headers,
            query_params,
            method,
        });
    }
    out.filters = rule.filters.iter().flatten().map(|f| http_filter!(f)).collect();
    for b in rule.backend_refs.iter().flatten() {
        out.backends.push(BackendRef {
            target: ObjectRef {
                group: b.group.clone().unwrap_or_default(),
                kind: b.kind.clone().unwrap_or_else(|| "Service".to_owned()),
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
            },
            weight: b.weight.unwrap_or(1),
            filters: b.filters.iter().flatten().map(|f| http_filter!(f)).collect(),
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
    let mut out = Rule::empty();
    out.name = rule.name.clone();
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
        let headers = m
            .headers
            .iter()
            .flatten()
            .map(|h| wire::ValueMatch {
                kind: match h.r#type {
                    Some(HeaderType::RegularExpression) => wire::ValueMatchType::RegularExpression,
                    _ => wire::ValueMatchType::Exact,
                },
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect();
        out.matches.push(wire::RouteMatch {
            path,
            headers,
            query_params: Vec::new(),
            method: String::new(),
        });
    }
    out.filters = rule.filters.iter().flatten().map(|f| grpc_filter!(f)).collect();
    for b in rule.backend_refs.iter().flatten() {
        out.backends.push(BackendRef {
            target: ObjectRef {
                group: b.group.clone().unwrap_or_default(),
                kind: b.kind.clone().unwrap_or_else(|| "Service".to_owned()),
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
            },
            weight: b.weight.unwrap_or(1),
            filters: b.filters.iter().flatten().map(|f| grpc_filter!(f)).collect(),
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
