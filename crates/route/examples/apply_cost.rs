//! The CPU and heap cost of one config apply, phase by phase: JSON decode, compile, and the drops of the
//! decoded document and of the compiled table. Used for issue 7 (BENCHMARKS.md, "Config apply").
//!
//! `cargo run --release -p tunnelgate-route --example apply_cost -- FILE [REPS]`, with FILE a document such as
//! `python3 bench/gen_config.py --rules 10000 > /tmp/c.json`. Times are the minimum over REPS (default 7) of the
//! wall time of each phase on this thread, so a loaded machine inflates them less; heap figures come from a
//! counting allocator (allocation-counter, this thread only) and are exact.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tunnelgate_route::RouteTable;
use tunnelgate_route::config::Config;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: apply_cost FILE [REPS]")?;
    let reps: usize = args.next().map_or(Ok(7), |r| r.parse())?;
    let bytes = std::fs::read(&path)?;

    let mut best = [Duration::MAX; 4];
    for _ in 0..reps {
        let t = Instant::now();
        let cfg = Config::from_json_slice(black_box(&bytes))?;
        let decode = t.elapsed();
        let t = Instant::now();
        let table = RouteTable::compile(black_box(&cfg))?;
        let compile = t.elapsed();
        let t = Instant::now();
        drop(black_box(cfg));
        let drop_cfg = t.elapsed();
        let t = Instant::now();
        drop(black_box(table));
        let drop_table = t.elapsed();
        for (b, d) in best.iter_mut().zip([decode, compile, drop_cfg, drop_table]) {
            *b = (*b).min(d);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{} bytes, min of {reps}: decode {:.1} ms, compile {:.1} ms, drop document {:.1} ms, drop table {:.1} ms",
        bytes.len(),
        ms(best[0]),
        ms(best[1]),
        ms(best[2]),
        ms(best[3])
    );

    let mut cfg = None;
    let decode = allocation_counter::measure(|| cfg = Config::from_json_slice(&bytes).ok());
    let cfg = cfg.ok_or("decode failed")?;
    let mut table = None;
    let compile = allocation_counter::measure(|| table = RouteTable::compile(&cfg).ok());
    let table = table.ok_or("compile failed")?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "decoded document: {:.2} MiB live in {} allocations (peak {:.2} MiB during decode)",
        mib(decode.bytes_current as u64),
        decode.count_current,
        mib(decode.bytes_max as u64)
    );
    println!(
        "compiled table: {:.2} MiB live in {} allocations (peak {:.2} MiB during compile, {} allocations made)",
        mib(compile.bytes_current as u64),
        compile.count_current,
        mib(compile.bytes_max as u64),
        compile.count_total
    );
    println!("{} rules", table.rule_count());
    Ok(())
}
