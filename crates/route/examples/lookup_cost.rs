//! Lookup cost at 10, 1,000 and 10,000 rules with the workload of `benches/lookup.rs`, measured so that a busy
//! machine disturbs it little: the time per lookup is the minimum, over many batches of 1,024 lookups (one pass
//! over the bench's distinct requests, about 0.1 ms), of the batch's wall time. A batch that another process
//! interrupted is slow and never the minimum; criterion's mean keeps such interruptions.
//!
//! `cargo run --release -p tunnelgate-route --example lookup_cost -- [BATCHES [RULES [SPREAD]]]` (default 20,000
//! batches per size; the sizes are interleaved round by round, so a slow phase of the machine hits all of them
//! alike). With RULES (not 0), only that size is measured: a driver for `valgrind --tool=callgrind
//! --cache-sim=yes`, whose counts of one size are then not mixed with the others'. With SPREAD, the requests hit
//! only the first SPREAD rules (as the bench's `lookup_same_10_requests` with 10): a table's lookup with its data
//! in cache, which separates the cost of the lookup's code from the cache misses of a big table.

// The fixture is the bench's; a broken one should stop this tool loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use tunnelgate_route::RouteTable;

#[path = "../benches/workload/mod.rs"]
mod workload;

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const ROUNDS: usize = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let batches: usize = std::env::args().nth(1).map_or(Ok(20_000), |b| b.parse())?;
    let only: usize = std::env::args().nth(2).map_or(Ok(0), |r| r.parse())?;
    let spread: Option<usize> = std::env::args().nth(3).map(|s| s.parse()).transpose()?;
    let sizes: Vec<usize> = SIZES.into_iter().filter(|&s| only == 0 || only == s).collect();
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("blue"));
    let tables: Vec<(RouteTable, Vec<(String, String)>)> = sizes
        .iter()
        .map(|&rules| {
            let table = RouteTable::compile(&workload::document(rules)).expect("bench document compiles");
            (table, workload::requests(spread.unwrap_or(rules)))
        })
        .collect();
    let mut best = vec![Duration::MAX; sizes.len()];
    for _ in 0..ROUNDS {
        for ((table, reqs), best) in tables.iter().zip(best.iter_mut()) {
            for _ in 0..batches / ROUNDS {
                let t = Instant::now();
                for (host, path) in reqs {
                    let head = workload::head(host, path, &headers);
                    black_box(table.lookup(black_box(&head)).map(|hit| hit.rule_index));
                }
                *best = (*best).min(t.elapsed());
            }
        }
    }
    let per_lookup: Vec<f64> = tables
        .iter()
        .zip(best)
        .map(|((_, reqs), d)| d.as_secs_f64() * 1e9 / reqs.len() as f64)
        .collect();
    for (rules, ns) in sizes.iter().zip(&per_lookup) {
        let over = spread.map_or_else(String::new, |s| format!(", requests to {s} rules"));
        println!("lookup/{rules}: {ns:.1} ns (minimum over {batches} batches{over})");
    }
    if let (Some(small), Some(large)) = (per_lookup.first(), per_lookup.last())
        && sizes.len() > 1
    {
        println!("lookup/10000 / lookup/10 = {:.2}", large / small);
    }
    Ok(())
}
