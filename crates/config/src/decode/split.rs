//! Decoding a large document's `rules` array on several threads.
//!
//! A 10,000-rule document takes about 10 ms to decode on one core, most of a config apply's time besides the
//! compile. The rules are independent, so the array is cut into parts that threads decode at once. Where a rule
//! starts can only be known by parsing everything before it, so each cut is a guess: a separator followed by a
//! key that only a rule object has (`},{"hostnames":`). Every part is decoded by a real JSON parser from its
//! start, element by element; a part whose start is known to be an element boundary is trusted, and it proves
//! the next cut it lands on exactly to be one too. The first part starts at the array's `[`, so the chain of
//! trusted parts runs from there to the closing `]`. A guess that was wrong (a cut inside a string, or between
//! two objects nested in a rule) only wastes the work of the part that started there: the part before it keeps
//! going past it. Anything unexpected gives up, and the caller decodes the whole document on one thread.
//!
//! Each rule is decoded by the same `Deserialize` impl as in a one-thread decode; the rest of the document is
//! decoded with the rules array replaced by `[]`. The result is therefore the same document.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

use serde::Deserialize as _;

use crate::{Config, RouteRule};

/// Below this size a document is decoded on one thread: a thread start costs more than it would save.
pub(super) const MIN_PARALLEL_BYTES: usize = 256 * 1024;

/// At most this many parts, each of at least [`MIN_PART_BYTES`].
const MAX_PARTS: usize = 4;
const MIN_PART_BYTES: usize = 128 * 1024;

/// How far past a guessed position a rule boundary is looked for. Rules are a few hundred bytes.
const CUT_SEARCH_BYTES: usize = 64 * 1024;

/// A part sizes its array of rules after decoding this many (see [`decode_part`]).
const SIZING_SAMPLE_RULES: usize = 32;

/// The size a rule is assumed to have at least when an array is sized up front (`{"backends":[]}` has 15
/// bytes): a document whose first rules are much smaller than the rest reserves no more than this allows.
const MIN_SIZED_RULE_BYTES: usize = 16;

/// Keys of a rule object (`RouteRule`) that no object nested inside a rule has. A cut is guessed only where an
/// object starting with one of them follows `},`.
const RULE_KEYS: [&[u8]; 6] = [
    b"hostnames",
    b"matches",
    b"filters",
    b"backends",
    b"timeouts",
    b"unavailableStatus",
];

/// Decodes `text` (valid UTF-8, starting with `{` after whitespace) with its rules array split over threads.
/// `None` when the document does not lend itself to that or any part fails: the caller then decodes it on one
/// thread, which also finds the error and its path.
pub(super) fn decode(text: &str) -> Option<Config> {
    decode_in_parts(text, part_count(text.len()))
}

/// [`decode`] with at most `parts` parts (fewer when fewer cuts are found).
fn decode_in_parts(text: &str, parts: usize) -> Option<Config> {
    if parts < 2 {
        return None;
    }
    let bytes = text.as_bytes();
    let open = rules_array_start(text)?;
    let cuts = guess_cuts(bytes, open, parts);
    if cuts.is_empty() {
        return None;
    }
    // Part 0 starts right after `[`; part i > 0 right after the comma at cuts[i - 1].
    // A part whose thread could not be started counts as failed; the part before it then goes on past its cut.
    // Each part sizes its `Vec` from its first rules (see `decode_part`); the first part's becomes the whole
    // array, so it makes room for every rule up to the end of the text.
    let decoded: Vec<Part> = std::thread::scope(|scope| {
        let others: Vec<_> = cuts
            .iter()
            .enumerate()
            .map(|(i, &cut)| {
                let later = cuts.get(i + 1..).unwrap_or_default();
                let span = later.first().copied().unwrap_or(text.len()) - cut;
                std::thread::Builder::new()
                    .name("config-decode".into())
                    .spawn_scoped(scope, move || decode_part(text, cut + 1, later, false, span))
                    .ok()
            })
            .collect();
        let mut decoded = Vec::with_capacity(cuts.len() + 1);
        decoded.push(decode_part(text, open + 1, &cuts, true, text.len() - open));
        for handle in others {
            decoded.push(handle.and_then(|h| h.join().ok()).unwrap_or(Part::FAILED));
        }
        decoded
    });

    // Follow the chain of trusted parts from the first one.
    let mut chain = Vec::with_capacity(decoded.len());
    let mut index = 0;
    let end = loop {
        let part = decoded.get(index)?;
        chain.push(index);
        match part.stop {
            Stop::Cut(k) => index = index + 1 + k,
            Stop::End(end) => break end,
            Stop::Failed => return None,
        }
    };
    let total: usize = chain.iter().map(|&i| decoded[i].rules.len()).sum();
    let mut decoded = decoded;
    // The first part's `Vec` normally has room for all rules already: the others move in without a new array
    // of 10,000 rules and a copy of the first part's. The shrink to the exact length releases the unused tail
    // in place (a large allocation), as every array of the document is allocated to its length.
    let mut rules = std::mem::take(&mut decoded.first_mut()?.rules);
    rules.reserve_exact(total - rules.len());
    for &i in chain.iter().skip(1) {
        rules.append(&mut decoded[i].rules);
    }
    rules.shrink_to_fit();
    drop(decoded);

    // The rest of the document with the rules array emptied: version, other fields, duplicate and trailing-byte
    // checks, exactly as a one-thread decode sees them.
    let mut outer = String::with_capacity(open + 2 + (text.len() - end));
    outer.push_str(text.get(..open)?);
    outer.push_str("[]");
    outer.push_str(text.get(end..)?);
    let mut de = serde_json::Deserializer::from_str(&outer);
    let mut config = Config::deserialize(&mut de).ok()?;
    de.end().ok()?;
    if !config.rules.is_empty() {
        return None;
    }
    config.rules = rules;
    Some(config)
}

/// How many parts a document of `len` bytes is cut into on this machine.
fn part_count(len: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    cores.min(MAX_PARTS).min(len / MIN_PART_BYTES)
}

/// The offset of the `[` of the top-level `"rules"` array. Walks the top-level object's members, skipping the
/// values of other keys with the JSON parser. `None` when there is no such array (absent, `null`, another type,
/// or a key spelled with escapes).
fn rules_array_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut pos = skip_ws(bytes, 0);
    if bytes.get(pos) != Some(&b'{') {
        return None;
    }
    pos += 1;
    loop {
        pos = skip_ws(bytes, pos);
        if bytes.get(pos) != Some(&b'"') {
            return None;
        }
        let key_start = pos + 1;
        let key_len = bytes
            .get(key_start..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\')?;
        let key_end = key_start + key_len;
        if bytes.get(key_end) != Some(&b'"') {
            return None;
        }
        pos = skip_ws(bytes, key_end + 1);
        if bytes.get(pos) != Some(&b':') {
            return None;
        }
        pos = skip_ws(bytes, pos + 1);
        if &bytes[key_start..key_end] == b"rules" {
            return (bytes.get(pos) == Some(&b'[')).then_some(pos);
        }
        // A slice of the text, not `from_utf8` of the bytes: that would check the whole rest of the document
        // again (the rules array of a large document comes after `version`).
        let value = text.get(pos..)?;
        let mut stream = serde_json::Deserializer::from_str(value).into_iter::<serde::de::IgnoredAny>();
        stream.next()?.ok()?;
        pos = skip_ws(bytes, pos + stream.byte_offset());
        if bytes.get(pos) != Some(&b',') {
            return None;
        }
        pos += 1;
    }
}

/// Up to `parts - 1` ascending offsets of commas that probably separate two rules, near even shares of the
/// bytes after `open`.
fn guess_cuts(bytes: &[u8], open: usize, parts: usize) -> Vec<usize> {
    let span = bytes.len() - open;
    let mut cuts: Vec<usize> = Vec::with_capacity(parts - 1);
    for i in 1..parts {
        let from = (open + span * i / parts).max(cuts.last().map_or(0, |c| c + 1));
        if let Some(cut) = find_rule_separator(bytes, from) {
            cuts.push(cut);
        }
    }
    cuts
}

/// The first comma at or after `from` (within [`CUT_SEARCH_BYTES`]) that has `}` before it and an object
/// starting with a rule-only key after it, whitespace allowed between the tokens.
fn find_rule_separator(bytes: &[u8], from: usize) -> Option<usize> {
    let window = bytes.get(from..bytes.len().min(from.saturating_add(CUT_SEARCH_BYTES)))?;
    let mut search = 0;
    while let Some(found) = window.get(search..)?.iter().position(|&b| b == b'}') {
        let close = from + search + found;
        search += found + 1;
        let comma = skip_ws(bytes, close + 1);
        if bytes.get(comma) != Some(&b',') {
            continue;
        }
        let brace = skip_ws(bytes, comma + 1);
        if bytes.get(brace) != Some(&b'{') {
            continue;
        }
        let quote = skip_ws(bytes, brace + 1);
        if bytes.get(quote) != Some(&b'"') {
            continue;
        }
        let key = bytes.get(quote + 1..).unwrap_or_default();
        let is_rule_key = RULE_KEYS
            .iter()
            .any(|k| key.starts_with(k) && key.get(k.len()) == Some(&b'"'));
        if is_rule_key {
            return Some(comma);
        }
    }
    None
}

/// How many rules `span` bytes hold if they are like the `sampled` rules that took `sampled_bytes`: an eighth
/// more than the average says, so that a part somewhat denser than its start still fits.
fn expected_rules(span: usize, sampled_bytes: usize, sampled: usize) -> usize {
    let average = sampled_bytes.div_ceil(sampled.max(1)).max(1);
    let count = span / average;
    (count + count / 8 + 8).min(span / MIN_SIZED_RULE_BYTES)
}

fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while matches!(bytes.get(pos), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        pos += 1;
    }
    pos
}

/// The rules of one part, and where it stopped.
struct Part {
    rules: Vec<RouteRule>,
    stop: Stop,
}

enum Stop {
    /// Stopped on the comma at `cuts[k]` of the cuts after this part's start: that cut is a rule boundary.
    Cut(usize),
    /// Reached the array's `]`; the offset just after it.
    End(usize),
    /// Not a sequence of rules from here (a wrong guess, or an invalid document).
    Failed,
}

impl Part {
    const FAILED: Part = Part {
        rules: Vec::new(),
        stop: Stop::Failed,
    };
}

/// Decodes rules from `start` (just after `[` or after a comma) until the comma of one of `cuts` (ascending
/// offsets after `start`) or the closing `]`. `may_be_empty`: the part starts at `[`, so `]` may come first.
/// `span`: how many bytes of rules the returned `Vec` should have room for. Once the first
/// [`SIZING_SAMPLE_RULES`] rules are decoded, their average size turns it into a rule count and the `Vec` is
/// grown once to that (plus an eighth): letting it double from 4 elements instead copies every rule decoded so
/// far at each step (a 10,000-rule document: about 3 MiB of arrays allocated, copied and freed on the way).
fn decode_part(text: &str, start: usize, cuts: &[usize], may_be_empty: bool, span: usize) -> Part {
    let bytes = text.as_bytes();
    let mut rules = Vec::new();
    let mut pos = skip_ws(bytes, start);
    if may_be_empty && bytes.get(pos) == Some(&b']') {
        return Part {
            rules,
            stop: Stop::End(pos + 1),
        };
    }
    let mut next_cut = 0;
    loop {
        let Some(rest) = text.get(pos..) else {
            return Part::FAILED;
        };
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<RouteRule>();
        match stream.next() {
            Some(Ok(rule)) => rules.push(rule),
            _ => return Part::FAILED,
        }
        pos = skip_ws(bytes, pos + stream.byte_offset());
        if rules.len() == SIZING_SAMPLE_RULES {
            rules.reserve_exact(expected_rules(span, pos - start, rules.len()).saturating_sub(rules.len()));
        }
        match bytes.get(pos) {
            Some(b',') => {
                while cuts.get(next_cut).is_some_and(|&c| c < pos) {
                    next_cut += 1;
                }
                if cuts.get(next_cut) == Some(&pos) {
                    return Part {
                        rules,
                        stop: Stop::Cut(next_cut),
                    };
                }
                pos += 1;
            }
            Some(b']') => {
                return Part {
                    rules,
                    stop: Stop::End(pos + 1),
                };
            }
            _ => return Part::FAILED,
        }
    }
}

#[cfg(test)]
mod tests;
