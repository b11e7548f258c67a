//! Lookup cost with 10, 1,000 and 10,000 rules spread over 100 hostnames, and compile cost of 10,000 rules.
//!
//! Each rule has two arms (a PathPrefix with a method, and an Exact health path) plus one backend; a catch-all
//! default rule closes the document. Requests cycle through paths that hit every rule, so a lookup walks the
//! same kind of bucket a real request would, not just the first arm.

// A bench is a test harness: a broken fixture should stop it loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use tunnelgate_route::RouteTable;

mod workload;

use workload::{document, requests};

fn lookup(c: &mut Criterion) {
    lookup_group(c, "lookup", |rules| rules);
    // The same ten requests against every table size: separates the algorithmic cost (which must not grow with
    // the rule count) from the cache footprint of routing to many different rules.
    lookup_group(c, "lookup_same_10_requests", |_| 10);
}

/// Benchmarks lookups against tables of 10, 1,000 and 10,000 rules, with requests spread over
/// `spread(rules)` distinct rules.
fn lookup_group(c: &mut Criterion, name: &str, spread: fn(usize) -> usize) {
    let mut group = c.benchmark_group(name);
    // Every seventh rule requires this header; sending it lets every rule match.
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", http::HeaderValue::from_static("blue"));
    for rules in [10usize, 1_000, 10_000] {
        let table = RouteTable::compile(&document(rules)).expect("bench document compiles");
        let reqs = requests(spread(rules));
        // Every request must hit its API rule, not the default: otherwise the bench measures something else.
        for (host, path) in &reqs {
            let head = workload::head(host, path, &headers);
            let hit = table.lookup(&head).expect("bench request routes");
            assert!(
                !hit.hostname.is_empty(),
                "{host}{path} fell through to the default rule"
            );
        }
        group.bench_with_input(BenchmarkId::from_parameter(rules), &rules, |b, _| {
            let mut k = 0usize;
            b.iter(|| {
                let (host, path) = &reqs[k % reqs.len()];
                k = k.wrapping_add(1);
                let head = workload::head(host, path, &headers);
                black_box(table.lookup(black_box(&head)).map(|hit| hit.rule_index))
            });
        });
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let doc = document(10_000);
    let mut group = c.benchmark_group("compile");
    group.sample_size(20);
    // The old table is dropped by whoever releases the last reference, not by the compile: keep drops out.
    group.bench_function("10000", |b| {
        b.iter_with_large_drop(|| RouteTable::compile(black_box(&doc)))
    });
    group.finish();
}

criterion_group!(benches, lookup, compile);
criterion_main!(benches);
