//! The compiled routing table: hostname buckets of precedence-sorted arms, and the allocation-free lookup.
//!
//! The lookup's memory accesses are laid out for a table far bigger than the L1 cache: each step of a lookup
//! (hostname → bucket → path → arm) reads one small record that says where the next one is, so a lookup touches
//! a handful of cache lines whatever the rule count. The two hash indexes store only a hash tag and a record
//! number per slot; the key itself is compared in the record's own storage, a load that does not hold up the next
//! step.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;
use http::{HeaderMap, Method, StatusCode};

use crate::arm::{Arm, PathCondition, Precedence};
use crate::backend::{Backend, Upstream, WeightTable};
use crate::config;
use crate::error::CompileError;
use crate::filter::Filter;
use crate::host::{HOST_BUF, HostPattern, normalize_host, normalize_host_into, wildcard_suffixes};

/// Immutable compiled table; `Send + Sync`. Built off the hot path and swapped atomically by the proxy.
#[derive(Debug, Default)]
pub struct RouteTable {
    version: i64,
    rules: Vec<Rule>,
    upstreams: Vec<Arc<Upstream>>,
    /// Every hostname bucket; the indexes below hold positions in it.
    buckets: Vec<Bucket>,
    /// Exact hostnames → bucket.
    exact: HashIndex,
    /// Wildcard suffixes (`.example.com` for `*.example.com`) → bucket.
    wildcard: HashIndex,
    /// Length of the longest wildcard suffix: longer host suffixes need no hash probe.
    wildcard_max_len: usize,
    default: Option<u32>,
    /// The buckets' metrics labels, end to end in one allocation; an exact bucket's label is also its index key.
    labels: String,
    /// The arms of every bucket. Each bucket's RegularExpression arms are one run; its Exact and PathPrefix
    /// arms are one run per path string (Exact arms first), each in precedence order.
    arms: Vec<BucketArm>,
    /// (bucket, path string) → the first arm of that path's run.
    paths: HashIndex,
    /// The path strings of the runs, end to end.
    path_keys: String,
    /// Keyed per table: index keys come from the config and probes from clients, so neither can aim at a slot.
    hasher: RandomState,
}

/// The routing-relevant head of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Raw `Host` / authority as received; it may include a port. Lookup normalises it.
    pub host: &'a str,
    /// Raw path, still percent-encoded.
    pub path: &'a str,
    /// Raw query without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// The winning (rule, match arm) of a lookup.
#[derive(Debug, Clone, Copy)]
pub struct RouteHit<'t> {
    pub rule: &'t Rule,
    pub rule_index: usize,
    /// Index of the arm within the rule's `matches` (0 for the implicit arm of a rule without matches).
    pub arm_index: usize,
    /// Metrics label: the bucket key, i.e. the exact name, the `*.suffix` pattern, or `""` (default bucket).
    pub hostname: &'t str,
    /// The fired arm's normalised PathPrefix (trailing `/` removed; `/` gives `""`); `None` for other path types.
    pub prefix: Option<&'t str>,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Normalised hostnames (`*.x` for wildcards); empty for the default bucket.
    pub hostnames: Vec<String>,
    /// Rule-level filters in declared order.
    pub filters: Vec<Filter>,
    pub backends: Vec<Backend>,
    /// Minimum of the non-zero request/backend timeouts; `None` means no limit.
    pub timeout: Option<Duration>,
    /// When set, every request matched by this rule gets this status; no filter runs, no backend is contacted.
    pub unavailable_status: Option<StatusCode>,
    pub(crate) arms: Vec<Arm>,
    pub(crate) weights: WeightTable,
}

/// One hostname bucket: everything a lookup reads before its first path probe, in one cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Bucket {
    /// Byte lengths of the exact values and of the normalised prefixes: most candidate strings of a path skip
    /// the hash probe.
    exact_lens: LengthSet,
    prefix_lens: LengthSet,
    /// Byte range of the label in `RouteTable::labels`.
    label: (u32, u32),
    /// The run of RegularExpression arms in `RouteTable::arms`, in precedence order.
    regex: (u32, u32),
}

/// One arm in a bucket, with what the lookup needs to select it inline: its path string's range (the index key
/// of its run), the method as a small code, and whether header or query conditions must be checked on the
/// rule's arm. Aligned so that an arm never straddles two cache lines.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(32))]
struct BucketArm {
    /// Position in the bucket's precedence order (0 = best).
    rank: u32,
    rule: u32,
    arm: u32,
    bucket: u32,
    /// Byte range of the arm's path string (Exact value or normalised prefix) in `RouteTable::path_keys`.
    key: (u32, u32),
    /// The precedence length shared by every PathPrefix arm of the run (0 when it has none).
    prefix_len: u32,
    method: MethodCode,
    flags: u8,
}

/// The arm is a PathPrefix arm (the others of a path run are Exact arms).
const PREFIX: u8 = 1;
/// The arm has header or query conditions.
const MORE: u8 = 2;
/// The arm ends its path run.
const LAST: u8 = 4;
/// The arm starts its path run (the path index points at it).
const HEAD: u8 = 8;

/// A method condition as a byte: 0 for none, the standard methods by number, [`EXTENSION`] for any other (then
/// the rule's arm holds the method).
type MethodCode = u8;
const ANY_METHOD: MethodCode = 0;
const EXTENSION: MethodCode = u8::MAX;

/// A set of byte lengths: exact below 128, an upper bound above.
#[derive(Debug, Default, Clone, Copy)]
struct LengthSet {
    small: [u64; 2],
    max: u32,
}

/// An open-addressing hash index (linear probing) from a key to a `u32` record number. A slot holds the record
/// number and 32 more bits of the key's hash; the caller compares the key itself in the record. Built once with
/// its final size: at most three quarters full, so a probe rarely reads past one cache line.
#[derive(Debug, Default)]
struct HashIndex {
    /// A power of two in length, or empty.
    slots: Box<[Slot]>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    tag: u32,
    record: u32,
}

const EMPTY: u32 = u32::MAX;

impl RouteTable {
    /// Validates and compiles a document. On error, every bad field is reported, in document order.
    pub fn compile(cfg: &config::Config) -> Result<RouteTable, CompileError> {
        crate::compile::compile(cfg)
    }

    /// A table without rules: every lookup is `None`.
    pub fn empty() -> RouteTable {
        RouteTable::default()
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// Number of rules in the document (`cfg.rules.len()`).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every distinct upstream target that can be dialled: backends (except those with an `unavailableStatus`
    /// whose URL is a sentinel) and mirror targets.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.upstreams.iter().map(|u| &**u)
    }

    /// [`RouteTable::upstreams`] as the shared handles the table's backends hold, for callers that keep one.
    pub fn shared_upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The first full match over the host's candidate buckets: exact, wildcard suffixes longest first, default.
    /// A bucket with no matching arm falls through to the next. Does not allocate, except for a host longer than
    /// 256 bytes (no DNS name is) and for a regex query condition on a percent-encoded value over 512 bytes.
    pub fn lookup<'t>(&'t self, req: &RequestHead<'_>) -> Option<RouteHit<'t>> {
        let mut buf = [0u8; HOST_BUF];
        let long_host;
        let host = match normalize_host_into(req.host, &mut buf) {
            Some(host) => host,
            None => {
                long_host = normalize_host(req.host);
                long_host.as_bytes()
            }
        };
        let method = method_code(req.method);
        if let Some(bucket) = self
            .exact
            .get(self.hash(HOST_KEY, host), |b| self.label(b) == Some(host))
            && let Some(hit) = self.find_in(bucket, req, method)
        {
            return Some(hit);
        }
        if !self.wildcard.is_empty() {
            for suffix in wildcard_suffixes(host) {
                if suffix.len() > self.wildcard_max_len {
                    continue;
                }
                let is_suffix = |b| self.label(b).and_then(|label| label.get(1..)) == Some(suffix);
                if let Some(bucket) = self.wildcard.get(self.hash(HOST_KEY, suffix), is_suffix)
                    && let Some(hit) = self.find_in(bucket, req, method)
                {
                    return Some(hit);
                }
            }
        }
        self.default.and_then(|bucket| self.find_in(bucket, req, method))
    }

    /// The hash of an index key: a bucket number and a path, or [`HOST_KEY`] and a hostname or suffix.
    fn hash(&self, bucket: u32, key: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write_u32(bucket);
        hasher.write(key);
        hasher.finish()
    }

    fn label(&self, bucket: u32) -> Option<&[u8]> {
        let (start, end) = self.buckets.get(bucket as usize)?.label;
        self.labels.as_bytes().get(start as usize..end as usize)
    }

    fn key_of(&self, arm: &BucketArm) -> &str {
        let (start, end) = arm.key;
        self.path_keys
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The first arm of the run of `path` in bucket `bucket`.
    fn path_run(&self, bucket: u32, path: &[u8]) -> Option<u32> {
        self.paths.get(self.hash(bucket, path), |first| {
            self.arms
                .get(first as usize)
                .is_some_and(|arm| arm.bucket == bucket && self.key_of(arm).as_bytes() == path)
        })
    }

    /// The arms of the path run starting at `first`, Exact arms first.
    fn run(&self, first: u32) -> impl Iterator<Item = &BucketArm> {
        let mut ended = false;
        self.arms
            .get(first as usize..)
            .unwrap_or_default()
            .iter()
            .take_while(move |arm| {
                let more = !ended;
                ended = arm.flags & LAST != 0;
                more
            })
    }

    fn find_in<'t>(&'t self, index: u32, req: &RequestHead<'_>, method: MethodCode) -> Option<RouteHit<'t>> {
        let bucket = self.buckets.get(index as usize)?;
        let (hit, prefix) = self.find(index, bucket, req, method)?;
        let rule_index = hit.rule as usize;
        let (start, end) = bucket.label;
        Some(RouteHit {
            rule: self.rules.get(rule_index)?,
            rule_index,
            arm_index: hit.arm as usize,
            hostname: self.labels.get(start as usize..end as usize)?,
            prefix: prefix.then(|| self.key_of(hit)),
        })
    }

    /// The first arm of the bucket in precedence order whose conditions all hold, and whether it is a PathPrefix
    /// arm.
    fn find(
        &self,
        index: u32,
        bucket: &Bucket,
        req: &RequestHead<'_>,
        method: MethodCode,
    ) -> Option<(&BucketArm, bool)> {
        let path = req.path.as_bytes();
        let len = path.len();
        let whole = if bucket.exact_lens.contains(len) || bucket.prefix_lens.contains(len) {
            self.path_run(index, path)
        } else {
            None
        };
        // Tier 1: Exact arms rank above every other type; only those equal to the path can match.
        if let Some(first) = whole
            && let Some(hit) = self
                .run(first)
                .take_while(|a| a.flags & PREFIX == 0)
                .find(|a| self.rest_holds(a, req, method))
        {
            return Some((hit, false));
        }
        // Tier 2: RegularExpression arms, in precedence order.
        let (start, end) = bucket.regex;
        if let Some(hit) = self
            .arms
            .get(start as usize..end as usize)
            .unwrap_or_default()
            .iter()
            .find(|a| self.arm_of(a).is_some_and(|arm| arm.matches(req)))
        {
            return Some((hit, false));
        }
        // Tier 3: PathPrefix arms. The prefixes that can match are exactly the path itself and the path cut
        // before each `/`; longer ones have the greater (or equal) precedence length, so walk them longest first
        // and keep the best rank among runs of equal length (only `""` and `"/"` can tie).
        let mut best: Option<&BucketArm> = None;
        let mut probe = |first: Option<u32>| -> bool {
            let Some(head) = first.and_then(|first| self.arms.get(first as usize)) else {
                return true;
            };
            if let Some(current) = best
                && head.prefix_len < current.prefix_len
            {
                return false;
            }
            if let Some(first) = first
                && let Some(hit) = self
                    .run(first)
                    .filter(|a| a.flags & PREFIX != 0)
                    .find(|a| self.rest_holds(a, req, method))
            {
                best = match best {
                    Some(current) if current.rank < hit.rank => Some(current),
                    _ => Some(hit),
                };
            }
            true
        };
        if bucket.prefix_lens.contains(len) && !probe(whole) {
            return best.map(|hit| (hit, true));
        }
        // Cuts longer than the longest prefix cannot match; start the backwards scan there.
        let mut end = len.min((bucket.prefix_lens.max as usize).saturating_add(1));
        while end > 0 {
            end -= 1;
            if path.get(end) == Some(&b'/') && bucket.prefix_lens.contains(end) {
                let candidate = path.get(..end).unwrap_or_default();
                if !probe(self.path_run(index, candidate)) {
                    break;
                }
            }
        }
        best.map(|hit| (hit, true))
    }

    /// Method, header and query conditions of an arm the path index selected.
    fn rest_holds(&self, entry: &BucketArm, req: &RequestHead<'_>, method: MethodCode) -> bool {
        if entry.method != ANY_METHOD
            && (entry.method != method
                || (method == EXTENSION
                    && self.arm_of(entry).and_then(|arm| arm.method.as_ref()) != Some(req.method)))
        {
            return false;
        }
        entry.flags & MORE == 0
            || self
                .arm_of(entry)
                .is_some_and(|arm| arm.headers_and_query_match(req))
    }

    fn arm_of(&self, entry: &BucketArm) -> Option<&Arm> {
        self.rules.get(entry.rule as usize)?.arms.get(entry.arm as usize)
    }

    /// Assembles the table from compiled rules and their parsed hostnames (same order).
    pub(crate) fn assemble(
        version: i64,
        rules: Vec<Rule>,
        hosts: &[Vec<HostPattern>],
        upstreams: Vec<Arc<Upstream>>,
    ) -> RouteTable {
        // (pattern, rule) pairs grouped by pattern; the stable sort keeps each group in rule order.
        let mut members: Vec<(&HostPattern, u32)> = hosts
            .iter()
            .enumerate()
            .flat_map(|(r, patterns)| patterns.iter().map(move |p| (p, r as u32)))
            .collect();
        members.sort_by(|a, b| a.0.sort_key().cmp(&b.0.sort_key()));
        // A rule naming one host twice (e.g. in two cases) contributes its arms once.
        members.dedup();
        let defaults: Vec<u32> = hosts
            .iter()
            .enumerate()
            .filter_map(|(r, patterns)| patterns.is_empty().then_some(r as u32))
            .collect();

        let groups = members.chunk_by(|a, b| a.0 == b.0);
        let (exact_count, wildcard_count) =
            groups.clone().fold((0, 0), |(e, w), group| match group.first() {
                Some((HostPattern::Exact(_), _)) => (e + 1, w),
                _ => (e, w + 1),
            });
        let mut table = RouteTable {
            version,
            upstreams,
            buckets: Vec::with_capacity(exact_count + wildcard_count + 1),
            exact: HashIndex::with_capacity(exact_count),
            wildcard: HashIndex::with_capacity(wildcard_count),
            labels: String::with_capacity(members.iter().map(|(p, _)| p.label_len()).sum()),
            arms: Vec::with_capacity(
                rules
                    .iter()
                    .map(|r| r.arms.len() * r.hostnames.len().max(1))
                    .sum(),
            ),
            ..RouteTable::default()
        };
        let mut rule_indexes = Vec::new();
        for group in groups {
            let Some(&(pattern, _)) = group.first() else {
                continue;
            };
            rule_indexes.clear();
            rule_indexes.extend(group.iter().map(|&(_, r)| r));
            let start = table.labels.len();
            pattern.write_label(&mut table.labels);
            let label = (start as u32, table.labels.len() as u32);
            let index = table.buckets.len() as u32;
            let bucket = Bucket::new(index, label, &rules, &rule_indexes, &mut table);
            table.buckets.push(bucket);
            match pattern {
                HostPattern::Exact(name) => {
                    let hash = table.hash(HOST_KEY, name.as_bytes());
                    table.exact.insert(hash, index);
                }
                HostPattern::Wildcard(suffix) => {
                    table.wildcard_max_len = table.wildcard_max_len.max(suffix.len());
                    let hash = table.hash(HOST_KEY, suffix.as_bytes());
                    table.wildcard.insert(hash, index);
                }
            }
        }
        if !defaults.is_empty() {
            let end = table.labels.len() as u32;
            let index = table.buckets.len() as u32;
            table.default = Some(index);
            let bucket = Bucket::new(index, (end, end), &rules, &defaults, &mut table);
            table.buckets.push(bucket);
        }
        table.arms.shrink_to_fit();
        table.path_keys.shrink_to_fit();
        let mut paths = HashIndex::with_capacity(table.arms.iter().filter(|a| a.flags & HEAD != 0).count());
        for (i, arm) in table.arms.iter().enumerate() {
            if arm.flags & HEAD != 0 {
                paths.insert(table.hash(arm.bucket, table.key_of(arm).as_bytes()), i as u32);
            }
        }
        table.paths = paths;
        table.rules = rules;
        table
    }
}

/// The `bucket` half of a hostname's index key (no bucket has this number).
const HOST_KEY: u32 = u32::MAX;

/// The code of a method: the standard methods by number, [`EXTENSION`] for the others.
fn method_code(method: &Method) -> MethodCode {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    STANDARD
        .iter()
        .position(|m| m == method)
        .map_or(EXTENSION, |i| i as MethodCode + 1)
}

impl Rule {
    /// Weighted backend choice (routing.md §6). `draw(n)` must return a uniform integer in `[0, n)`. `None` when
    /// there is no backend or every weight is 0. Backends with an `unavailableStatus` keep their share.
    pub fn choose_backend(&self, draw: impl FnOnce(u64) -> u64) -> Option<usize> {
        if self.weights.is_empty() {
            crate::backend::choose_linear(self.backends.iter().map(|b| b.weight), draw)
        } else {
            self.weights.choose(draw)
        }
    }

    /// Number of match arms (1 for a rule without matches: the implicit PathPrefix `/`).
    pub fn arm_count(&self) -> usize {
        self.arms.len()
    }

    /// The precedence key of one arm, as used to order its buckets; `None` for an out-of-range arm.
    pub fn precedence(&self, rule_index: usize, arm_index: usize) -> Option<Precedence> {
        self.arms
            .get(arm_index)
            .map(|arm| arm.precedence(rule_index, arm_index))
    }
}

impl Bucket {
    /// Builds bucket number `index` of the arms of `rule_indexes`, appending its arms to `table.arms` and its
    /// path strings to `table.path_keys`.
    fn new(
        index: u32,
        label: (u32, u32),
        rules: &[Rule],
        rule_indexes: &[u32],
        table: &mut RouteTable,
    ) -> Bucket {
        let mut keyed: Vec<(Precedence, u32, u32)> = rule_indexes
            .iter()
            .filter_map(|&r| rules.get(r as usize).map(|rule| (r, rule)))
            .flat_map(|(r, rule)| {
                rule.arms
                    .iter()
                    .enumerate()
                    .map(move |(a, arm)| (arm.precedence(r as usize, a), r, a as u32))
            })
            .collect();
        // Best first: greater precedence wins. Keys are unique (rule and arm order are part of them).
        keyed.sort_unstable_by_key(|&(key, _, _)| std::cmp::Reverse(key));

        // Exact and PathPrefix arms as (path string, is prefix, prefix precedence length, arm), in rank order.
        let mut by_path: Vec<(&str, bool, u32, BucketArm)> = Vec::with_capacity(keyed.len());
        let mut bucket = Bucket {
            label,
            ..Bucket::default()
        };
        let regex_start = table.arms.len() as u32;
        for (rank, (key, r, a)) in keyed.into_iter().enumerate() {
            let Some(arm) = rules.get(r as usize).and_then(|rule| rule.arms.get(a as usize)) else {
                continue;
            };
            let mut entry = BucketArm {
                rank: rank as u32,
                rule: r,
                arm: a,
                bucket: index,
                method: arm.method.as_ref().map_or(ANY_METHOD, method_code),
                flags: if arm.headers.is_empty() && arm.query.is_empty() {
                    0
                } else {
                    MORE
                },
                ..BucketArm::default()
            };
            match &arm.path {
                PathCondition::Exact(value) => {
                    bucket.exact_lens.insert(value.len());
                    by_path.push((value, false, 0, entry));
                }
                PathCondition::RegularExpression(_) => table.arms.push(entry),
                PathCondition::Prefix { prefix, .. } => {
                    bucket.prefix_lens.insert(prefix.len());
                    entry.flags |= PREFIX;
                    by_path.push((prefix, true, key.path_len as u32, entry));
                }
            }
        }
        bucket.regex = (regex_start, table.arms.len() as u32);
        // Group by path string, Exact arms before PathPrefix arms; the sort is stable, so each run stays in
        // rank order.
        by_path.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        for group in by_path.chunk_by(|x, y| x.0 == y.0) {
            let Some(&(path, ..)) = group.first() else {
                continue;
            };
            let start = table.path_keys.len() as u32;
            table.path_keys.push_str(path);
            let key = (start, table.path_keys.len() as u32);
            let prefix_len = group.last().filter(|g| g.1).map_or(0, |g| g.2);
            let first = table.arms.len();
            table.arms.extend(group.iter().map(|g| BucketArm {
                key,
                prefix_len,
                ..g.3
            }));
            if let Some(head) = table.arms.get_mut(first) {
                head.flags |= HEAD;
            }
            if let Some(last) = table.arms.last_mut() {
                last.flags |= LAST;
            }
        }
        bucket
    }
}

impl HashIndex {
    /// An empty index with room for `records` keys.
    fn with_capacity(records: usize) -> HashIndex {
        if records == 0 {
            return HashIndex::default();
        }
        let len = (records + records / 3 + 1).next_power_of_two();
        HashIndex {
            slots: vec![
                Slot {
                    tag: 0,
                    record: EMPTY
                };
                len
            ]
            .into_boxed_slice(),
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds a key's record. The caller adds each key once and no more keys than the capacity.
    fn insert(&mut self, hash: u64, record: u32) {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = hash as usize & mask;
        for _ in 0..self.slots.len() {
            if let Some(slot) = self.slots.get_mut(i)
                && slot.record == EMPTY
            {
                *slot = Slot {
                    tag: (hash >> 32) as u32,
                    record,
                };
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The record whose key hashes to `hash` and for which `is_key` holds.
    #[inline]
    fn get(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.slots.len().wrapping_sub(1);
        let tag = (hash >> 32) as u32;
        let mut i = hash as usize & mask;
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(i)?;
            if slot.record == EMPTY {
                return None;
            }
            if slot.tag == tag && is_key(slot.record) {
                return Some(slot.record);
            }
            i = (i + 1) & mask;
        }
        None
    }
}

impl LengthSet {
    fn insert(&mut self, len: usize) {
        if let Some(word) = self.small.get_mut(len / 64) {
            *word |= 1u64 << (len % 64);
        }
        self.max = self.max.max(u32::try_from(len).unwrap_or(u32::MAX));
    }

    #[inline]
    fn contains(&self, len: usize) -> bool {
        match self.small.get(len / 64) {
            Some(word) => word & (1u64 << (len % 64)) != 0,
            None => len <= self.max as usize,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
