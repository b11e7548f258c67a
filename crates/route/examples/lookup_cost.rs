//! Lookup cost at 10, 1,000 and 10,000 rules with the workload of `benches/lookup.rs`, measured so that a busy
//! machine disturbs it little: the time per lookup is the minimum, over many batches of 1,024 lookups (one pass
//! over the bench's distinct requests, about 0.1 ms), of the batch's wall time. A batch that another process
//! interrupted is slow and never the minimum; criterion's mean keeps such interruptions.
//!
//! `cargo run --release -p tunnelgate-route --example lookup_cost -- [BATCHES]` (default 20,000 per size; the
//! sizes are interleaved round by round, so a slow phase of the machine hits all of them alike).

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
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("blue"));
    let tables: Vec<(RouteTable, Vec<(String, String)>)> = SIZES
        .iter()
        .map(|&rules| {
            let table = RouteTable::compile(&workload::document(rules)).expect("bench document compiles");
            (table, workload::requests(rules))
        })
        .collect();
    let mut best = [Duration::MAX; SIZES.len()];
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
    for (rules, ns) in SIZES.iter().zip(&per_lookup) {
        println!("lookup/{rules}: {ns:.1} ns (minimum over {batches} batches)");
    }
    if let (Some(small), Some(large)) = (per_lookup.first(), per_lookup.last()) {
        println!("lookup/10000 / lookup/10 = {:.2}", large / small);
    }
    Ok(())
}
