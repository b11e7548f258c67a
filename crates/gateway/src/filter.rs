//! Filter conversion (`controller.md` §5.5). The `gateway-api` crate generates a separate, field-for-field
//! identical type per place a filter can appear (HTTPRoute rule, HTTPRoute backendRef, GRPCRoute rule, ...), so
//! the conversion is written once as macros over the shared field names: `route_filter!` holds the filters
//! of every route kind, and each route kind adds the arms of the filters only it has.

use serde::Serialize;

/// The wire spelling of a generated enum value (`"URLRewrite"`, `"https"`), through its serde rename.
pub(crate) fn enum_str<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

macro_rules! header_filter {
    ($kind:ident, $payload:expr, $field:ident) => {
        match $payload {
            Some(m) => {
                let mut filter =
                    ::tunnelgate_config::RouteFilter::new(::tunnelgate_config::FilterType::$kind);
                filter.$field = Some(Box::new($crate::route::header_modifier(
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.as_ref(),
                )));
                $crate::route::Filter::Wire(Box::new(filter))
            }
            None => $crate::route::Filter::Unsupported(format!(
                "{} filter without its {} payload",
                stringify!($kind),
                stringify!($field)
            )),
        }
    };
}

macro_rules! mirror_filter {
    ($payload:expr) => {
        match $payload {
            Some(m) => $crate::route::Filter::Mirror {
                target: $crate::route::ObjectRef {
                    group: m.backend_ref.group.clone().unwrap_or_default(),
                    kind: m.backend_ref.kind.clone().unwrap_or_else(|| "Service".to_owned()),
                    name: m.backend_ref.name.clone(),
                    namespace: m.backend_ref.namespace.clone(),
                    port: m.backend_ref.port,
                },
                percent: $crate::route::mirror_percent(
                    m.percent,
                    m.fraction.as_ref().map(|f| (f.numerator, f.denominator)),
                ),
            },
            None => $crate::route::Filter::Unsupported(
                "RequestMirror filter without its requestMirror payload".to_owned(),
            ),
        }
    };
}

macro_rules! extension_ref_filter {
    ($payload:expr) => {
        $crate::route::Filter::Unsupported(match $payload {
            Some(e) => format!(
                "ExtensionRef filter {}/{} {} is not supported",
                e.group, e.kind, e.name
            ),
            None => "ExtensionRef filter is not supported".to_owned(),
        })
    };
}

/// The filters every route kind has (header modifiers, mirror, extension refs); `$extra` are the arms of the
/// filter types only some route kinds have, matched on the type's wire name. `$f` is the filter.
macro_rules! route_filter {
    ($f:ident $(, $name:literal => $extra:expr)* $(,)?) => {
        match $crate::filter::enum_str(&$f.r#type).as_str() {
            "RequestHeaderModifier" => {
                header_filter!(
                    RequestHeaderModifier,
                    &$f.request_header_modifier,
                    request_header_modifier
                )
            }
            "ResponseHeaderModifier" => {
                header_filter!(
                    ResponseHeaderModifier,
                    &$f.response_header_modifier,
                    response_header_modifier
                )
            }
            "RequestMirror" => mirror_filter!(&$f.request_mirror),
            "ExtensionRef" => extension_ref_filter!(&$f.extension_ref),
            $($name => $extra,)*
            other => $crate::route::Filter::Unsupported(format!("filter type {other} is not supported")),
        }
    };
}

macro_rules! request_redirect_filter {
    ($payload:expr) => {
        match $payload {
            Some(r) => {
                let mut filter =
                    ::tunnelgate_config::RouteFilter::new(::tunnelgate_config::FilterType::RequestRedirect);
                filter.request_redirect = Some(Box::new(::tunnelgate_config::RequestRedirect {
                    scheme: r
                        .scheme
                        .as_ref()
                        .map($crate::filter::enum_str)
                        .unwrap_or_default(),
                    hostname: r.hostname.clone().unwrap_or_default(),
                    port: r.port.unwrap_or(0),
                    path: r.path.as_ref().map(|p| {
                        let full = $crate::filter::enum_str(&p.r#type) == "ReplaceFullPath";
                        ::tunnelgate_config::RedirectPath {
                            kind: if full {
                                ::tunnelgate_config::PathModifierType::ReplaceFullPath
                            } else {
                                ::tunnelgate_config::PathModifierType::ReplacePrefixMatch
                            },
                            value: if full {
                                p.replace_full_path.clone()
                            } else {
                                p.replace_prefix_match.clone()
                            }
                            .unwrap_or_default(),
                        }
                    }),
                    // Out of range status codes become -1 so that validation rejects the rule.
                    status_code: r.status_code.map(|c| i32::try_from(c).unwrap_or(-1)).unwrap_or(0),
                }));
                $crate::route::Filter::Wire(Box::new(filter))
            }
            None => $crate::route::Filter::Unsupported(
                "RequestRedirect filter without its requestRedirect payload".to_owned(),
            ),
        }
    };
}

macro_rules! url_rewrite_filter {
    ($payload:expr) => {
        match $payload {
            Some(r) => {
                let mut filter =
                    ::tunnelgate_config::RouteFilter::new(::tunnelgate_config::FilterType::UrlRewrite);
                filter.url_rewrite = Some(Box::new(::tunnelgate_config::UrlRewrite {
                    hostname: r.hostname.clone().unwrap_or_default(),
                    path: r.path.as_ref().map(|p| {
                        if $crate::filter::enum_str(&p.r#type) == "ReplaceFullPath" {
                            ::tunnelgate_config::RewritePath {
                                kind: ::tunnelgate_config::PathModifierType::ReplaceFullPath,
                                replace_full_path: Some(p.replace_full_path.clone().unwrap_or_default()),
                                replace_prefix_match: None,
                            }
                        } else {
                            ::tunnelgate_config::RewritePath {
                                kind: ::tunnelgate_config::PathModifierType::ReplacePrefixMatch,
                                replace_full_path: None,
                                replace_prefix_match: Some(
                                    p.replace_prefix_match.clone().unwrap_or_default(),
                                ),
                            }
                        }
                    }),
                }));
                $crate::route::Filter::Wire(Box::new(filter))
            }
            None => $crate::route::Filter::Unsupported(
                "URLRewrite filter without its urlRewrite payload".to_owned(),
            ),
        }
    };
}

macro_rules! cors_filter {
    ($payload:expr) => {
        match $payload {
            Some(c) => {
                let mut filter = ::tunnelgate_config::RouteFilter::new(::tunnelgate_config::FilterType::Cors);
                filter.cors = Some(Box::new(::tunnelgate_config::Cors {
                    allow_origins: c.allow_origins.clone().unwrap_or_default(),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                    allow_methods: c.allow_methods.clone().unwrap_or_default(),
                    allow_headers: c.allow_headers.clone().unwrap_or_default(),
                    expose_headers: c.expose_headers.clone().unwrap_or_default(),
                    max_age: c.max_age.unwrap_or(0),
                }));
                $crate::route::Filter::Wire(Box::new(filter))
            }
            None => $crate::route::Filter::Unsupported("CORS filter without its cors payload".to_owned()),
        }
    };
}

/// An HTTPRoute filter (rule or backendRef level) → [`crate::route::Filter`].
macro_rules! http_filter {
    ($f:expr) => {{
        let f = $f;
        route_filter!(
            f,
            "RequestRedirect" => request_redirect_filter!(&f.request_redirect),
            "URLRewrite" => url_rewrite_filter!(&f.url_rewrite),
            "CORS" => cors_filter!(&f.cors),
        )
    }};
}

/// A GRPCRoute filter (rule or backendRef level) → [`crate::route::Filter`].
macro_rules! grpc_filter {
    ($f:expr) => {{
        let f = $f;
        route_filter!(f)
    }};
}
