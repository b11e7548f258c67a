//! Wall time of decoding one document with [`Config::from_json_slice`]: the minimum over REPS runs, so a loaded
//! machine inflates it less. Used for issue 7 (BENCHMARKS.md, "Config apply").
//!
//! `cargo run --release -p tunnelgate-config --example decode_cost -- FILE [REPS]`, with FILE a document such as
//! `python3 bench/gen_config.py --rules 10000 > /tmp/c.json`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tunnelgate_config::Config;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: decode_cost FILE [REPS]")?;
    let reps: usize = args.next().map_or(Ok(15), |r| r.parse())?;
    let bytes = std::fs::read(&path)?;
    let mut best = Duration::MAX;
    let mut rules = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let config = Config::from_json_slice(black_box(&bytes))?;
        best = best.min(t.elapsed());
        rules = config.rules.len();
        drop(black_box(config));
    }
    println!(
        "{} bytes, {rules} rules: decode {:.2} ms (min of {reps})",
        bytes.len(),
        best.as_secs_f64() * 1e3
    );
    Ok(())
}
