//! The hot path does not allocate: `RouteTable::lookup` makes no heap allocation, whatever the outcome. This
//! test binary counts allocations with a counting global allocator (allocation-counter), per thread.

use std::hint::black_box;

use http::{HeaderMap, HeaderValue, Method};
use tunnelgate_route::config::Config;
use tunnelgate_route::{RequestHead, RouteTable};

const DOC: &str = r#"{"version":1,"rules":[
  {"hostnames":["shop.example.com"],
   "matches":[{"path":{"type":"PathPrefix","value":"/api/"},"method":"GET",
               "headers":[{"type":"Exact","name":"x-tenant","value":"blue"},
                          {"type":"RegularExpression","name":"user-agent","value":"^curl/"}],
               "queryParams":[{"type":"Exact","name":"debug","value":"a b"},
                              {"type":"RegularExpression","name":"q","value":"^x+ y$"}]},
              {"path":{"type":"Exact","value":"/health"}},
              {"path":{"type":"PathPrefix","value":"/flat"},"headers":[{"type":"Exact","name":"X-Tenant","value":"blue"}]}],
   "backends":[]},
  {"hostnames":["*.example.com","*.b.example.com"],
   "matches":[{"path":{"type":"RegularExpression","value":"^/f/[0-9a-f]{4,}$"}},{"path":{"type":"PathPrefix","value":"/web"}}],
   "backends":[]},
  {"matches":[{"path":{"type":"PathPrefix","value":"/"},"method":"POST"}],"backends":[]}
]}"#;

struct Req {
    method: Method,
    host: &'static str,
    path: &'static str,
    query: Option<&'static str>,
}

#[test]
fn lookup_makes_no_heap_allocation() {
    let table = RouteTable::compile(&Config::from_json_slice(DOC.as_bytes()).unwrap()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("blue"));
    headers.insert("user-agent", HeaderValue::from_static("curl/8.5"));
    let reqs = [
        // Exact host (mixed case, port), prefix arm with every condition kind, percent/plus-encoded query.
        Req {
            method: Method::GET,
            host: "Shop.Example.COM:8443",
            path: "/api/v1/items",
            query: Some("debug=a+b&q=xx%20y"),
        },
        Req {
            method: Method::GET,
            host: "shop.example.com",
            path: "/health",
            query: None,
        },
        // Exact header conditions only: checked from the table-wide condition array.
        Req {
            method: Method::PUT,
            host: "shop.example.com",
            path: "/flat/x",
            query: None,
        },
        // Falls through the exact bucket to the wildcard buckets, regex arm.
        Req {
            method: Method::GET,
            host: "shop.example.com",
            path: "/f/0123abcd",
            query: None,
        },
        Req {
            method: Method::GET,
            host: "a.b.example.com.",
            path: "/web/x",
            query: Some(""),
        },
        // Default bucket, and no match at all.
        Req {
            method: Method::POST,
            host: "other.test",
            path: "/anything/deep/path",
            query: None,
        },
        Req {
            method: Method::DELETE,
            host: "[::1]:8080",
            path: "/nothing",
            query: Some("a=1&b"),
        },
    ];
    let heads: Vec<RequestHead<'_>> = reqs
        .iter()
        .map(|r| RequestHead {
            method: &r.method,
            host: r.host,
            path: r.path,
            query: r.query,
            headers: &headers,
        })
        .collect();
    let expected: Vec<Option<usize>> = vec![Some(0), Some(0), Some(0), Some(1), Some(1), Some(2), None];
    // Warm-up: the regex crate creates its per-thread match cache on first use.
    let got: Vec<Option<usize>> = heads
        .iter()
        .map(|h| table.lookup(h).map(|hit| hit.rule_index))
        .collect();
    assert_eq!(got, expected);

    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            for head in &heads {
                black_box(table.lookup(black_box(head)).map(|hit| hit.rule_index));
            }
        }
    });
    assert_eq!(info.count_total, 0, "lookup allocated: {info:?}");

    // The counter works: a compile allocates.
    let info = allocation_counter::measure(|| {
        black_box(
            RouteTable::compile(&Config::default())
                .map(|t| t.rule_count())
                .ok(),
        );
        black_box(String::from("x"));
    });
    assert!(info.count_total > 0);
}
