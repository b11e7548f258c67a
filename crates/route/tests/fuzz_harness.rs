//! A bounded fuzz harness that runs under `cargo test`: the same bodies as the cargo-fuzz targets in `fuzz/`,
//! fed by a deterministic mutator (structure-aware JSON mutations plus raw byte edits) for a fixed number of
//! cases. A panic anywhere in decode → compile → lookup → filter math fails the test and prints the input.

// Test code: clippy exempts only `#[test]` bodies, not the helpers of an integration test.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../fuzz/bodies.rs"]
mod bodies;

use serde_json::Value;

const SPEC_EXAMPLE: &str = include_str!("../../config/testdata/spec-example.json");

/// Strings that reach interesting validation and matching branches.
const STRINGS: &[&str] = &[
    "",
    "/",
    "//",
    "/v1/",
    "/a%2Fb",
    "(",
    "^/f/[0-9]+$",
    "\\w{1000}\\w{1000}",
    "*",
    "*.",
    "*.example.com",
    "a.*.b",
    "http://a:0",
    "http://[::1]:8080/base/?q=1",
    "https://u@h",
    "ftp://x",
    "h2c",
    "h2",
    "GET",
    "G ET",
    "x-a",
    ":path",
    "a\r\nb",
    "-1s",
    "0s",
    "1m30s",
    "Exact",
    "PathPrefix",
    "RegularExpression",
    "ReplacePrefixMatch",
    "ReplaceFullPath",
    "https://*.example.org",
    "null",
    "é",
    "%zz",
    "+",
];
const NUMBERS: &[i64] = &[
    0,
    -1,
    1,
    100,
    101,
    301,
    304,
    500,
    599,
    600,
    65535,
    65536,
    2147483647,
    -2147483648,
];

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Replaces one random leaf (or drops one random array element or object member) of a JSON value.
fn mutate_value(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            if rng.below(10) == 0 {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                mutate_value(child, rng);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.below(items.len());
            match rng.below(10) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    items.push(copy);
                }
                _ => mutate_value(&mut items[i], rng),
            }
        }
        _ => {
            *v = match rng.below(4) {
                0 => Value::from(*rng.pick(NUMBERS)),
                1 => Value::Null,
                _ => Value::from(*rng.pick(STRINGS)),
            }
        }
    }
}

fn mutate_bytes(data: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(4) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] = *rng.pick(b"{}[]\":,0-9a*/.\\\x00\xff ");
            }
            1 if len > 0 => {
                let i = rng.below(len);
                let end = (i + rng.below(16)).min(len);
                data.drain(i..end);
            }
            2 => {
                let i = rng.below(len + 1);
                let s = rng.pick(STRINGS).as_bytes();
                data.splice(i..i, s.iter().copied());
            }
            _ if len > 0 => {
                let i = rng.below(len);
                let end = (i + rng.below(32)).min(len);
                let chunk = data[i..end].to_vec();
                data.splice(i..i, chunk);
            }
            _ => data.push(b'{'),
        }
    }
}

fn seeds() -> Vec<Value> {
    let mut seeds: Vec<Value> = vec![
        serde_json::from_str(SPEC_EXAMPLE).unwrap(),
        serde_json::from_str(bodies::LOOKUP_TABLE).unwrap(),
    ];
    // The spec example without its abbreviated PEM blocks compiles, so mutations of it reach deeper code.
    let mut valid = seeds[0].clone();
    valid["rules"][5]["backends"][0]
        .as_object_mut()
        .unwrap()
        .remove("tls");
    valid["rules"][6]["filters"][0]["requestMirror"]
        .as_object_mut()
        .unwrap()
        .remove("tls");
    seeds.push(valid.clone());
    seeds.push(valid);
    seeds
}

fn run_guarded(input: &[u8], body: fn(&[u8])) {
    if std::panic::catch_unwind(|| body(input)).is_err() {
        panic!("fuzz body panicked on input {:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn fuzz_config_json_to_compile_never_panics() {
    let seeds = seeds();
    let mut rng = Rng(0x5EED_0001);
    let mut compiled = 0;
    for case in 0..4_000 {
        let mut doc = rng.pick(&seeds).clone();
        for _ in 0..=rng.below(3) {
            mutate_value(&mut doc, &mut rng);
        }
        let mut bytes = serde_json::to_vec(&doc).unwrap();
        if case % 4 == 0 {
            mutate_bytes(&mut bytes, &mut rng);
        }
        run_guarded(&bytes, bodies::compile_config);
        let cfg = tunnelgate_route::config::Config::from_json_slice(&bytes);
        if cfg.is_ok_and(|c| tunnelgate_route::RouteTable::compile(&c).is_ok()) {
            compiled += 1;
        }
    }
    // The mutator must reach the compiled-table code paths, not only decode errors.
    eprintln!("{compiled} of 4000 mutated documents compiled");
    assert!(compiled > 400, "only {compiled} mutated documents compiled");
}

#[test]
fn fuzz_arbitrary_request_heads_never_panic() {
    let mut rng = Rng(0x5EED_0002);
    let seeds: &[&[u8]] = &[
        b"GET\nshop.example.com\n/api/x\ndebug=a+b\nuser-agent: curl/8\norigin: https://x.example.org",
        b"OPTIONS\nA.B.EXAMPLE.COM:8443\n//x\n\naccess-control-request-method: PUT\norigin: null",
        b"POST\n[::1]\n/f/abcd\nq=%a%\nx: ",
        b"\n\n\n",
    ];
    for _ in 0..20_000 {
        let mut data = rng.pick(seeds).to_vec();
        mutate_bytes(&mut data, &mut rng);
        run_guarded(&data, bodies::lookup_request);
    }
}
