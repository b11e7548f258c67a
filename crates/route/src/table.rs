//! The compiled routing table: hostname buckets of precedence-sorted arms, and the allocation-free lookup.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

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
    /// Every hostname bucket; the maps below hold indexes into it, which keeps their slots small (a map sized
    /// for 10,000 hostnames has room for 16,384).
    buckets: Vec<Bucket>,
    exact: FxHashMap<IndexKey, u32>,
    /// Keyed by suffix (`.example.com` for `*.example.com`).
    wildcard: FxHashMap<IndexKey, u32>,
    /// Length of the longest wildcard suffix: longer host suffixes need no hash probe.
    wildcard_max_len: usize,
    default: Option<u32>,
    /// The buckets' metrics labels, end to end in one allocation.
    labels: String,
    /// The arms of every bucket, each bucket's a contiguous run: one allocation instead of one per hostname.
    arms: Vec<BucketArm>,
    /// The path lists of every bucket with few paths ([`PathIndex::Few`]), likewise.
    few_paths: Vec<(IndexKey, PathEntry)>,
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

/// The arms of one hostname bucket with an index by path. Arms are stored grouped by path string (so one lookup
/// reads one contiguous run), each group in precedence order; `rank` orders arms across groups.
#[derive(Debug)]
struct Bucket {
    /// Byte range of the label in `RouteTable::labels`.
    label: (u32, u32),
    /// Exact path values and normalised prefixes → their runs of `RouteTable::arms`.
    paths: PathIndex,
    /// The run of RegularExpression arms, in precedence order.
    regex: (u32, u32),
    /// Byte lengths of the exact values and of the normalised prefixes: most candidate strings of a path skip
    /// the hash probe.
    exact_lens: LengthSet,
    prefix_lens: LengthSet,
}

/// One arm in a bucket. The method is kept inline because most arms need nothing else once the path index has
/// selected them; header and query conditions are checked on the rule's arm only when `more` is set.
#[derive(Debug, Clone)]
struct BucketArm {
    /// Position in the bucket's precedence order (0 = best).
    rank: u32,
    rule: u32,
    arm: u32,
    method: Option<Method>,
    more: bool,
}

/// The path index of a bucket. Most buckets (one rule with one to three arms) have a handful of paths: a short
/// array compared length first costs less to build, to keep and to probe than a hash map.
#[derive(Debug)]
enum PathIndex {
    /// A run of `RouteTable::few_paths`.
    Few(u32, u32),
    Many(FxHashMap<IndexKey, PathEntry>),
}

/// Up to this many paths a bucket keeps them in an array.
const FEW_PATHS: usize = 8;

#[derive(Debug, Clone, Default)]
struct PathEntry {
    /// Exact arms with this value (a run of `Bucket::arms`).
    exact: (u32, u32),
    /// PathPrefix arms with this normalised prefix.
    prefix: (u32, u32),
    /// The precedence length shared by every PathPrefix arm of the entry.
    prefix_len: usize,
}

#[derive(Debug, Default)]
struct LengthSet {
    small: u128,
    max: usize,
}

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
        if let Some(&bucket) = self.exact.get(host)
            && let Some(hit) = self.find_in(bucket, req)
        {
            return Some(hit);
        }
        if !self.wildcard.is_empty() {
            for suffix in wildcard_suffixes(host) {
                if suffix.len() > self.wildcard_max_len {
                    continue;
                }
                if let Some(&bucket) = self.wildcard.get(suffix)
                    && let Some(hit) = self.find_in(bucket, req)
                {
                    return Some(hit);
                }
            }
        }
        self.default.and_then(|bucket| self.find_in(bucket, req))
    }

    fn find_in<'t>(&'t self, bucket: u32, req: &RequestHead<'_>) -> Option<RouteHit<'t>> {
        let bucket = self.buckets.get(bucket as usize)?;
        let (entry, prefix) = bucket.find(&self.arms, &self.few_paths, &self.rules, req)?;
        let rule_index = entry.rule as usize;
        let (start, end) = bucket.label;
        Some(RouteHit {
            rule: self.rules.get(rule_index)?,
            rule_index,
            arm_index: entry.arm as usize,
            hostname: self.labels.get(start as usize..end as usize)?,
            prefix,
        })
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
            exact: FxHashMap::with_capacity_and_hasher(exact_count, Default::default()),
            wildcard: FxHashMap::with_capacity_and_hasher(wildcard_count, Default::default()),
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
            let bucket = Bucket::new(
                label,
                &rules,
                &rule_indexes,
                &mut table.arms,
                &mut table.few_paths,
            );
            table.buckets.push(bucket);
            match pattern {
                HostPattern::Exact(name) => {
                    table.exact.insert(IndexKey::new(name.as_bytes()), index);
                }
                HostPattern::Wildcard(suffix) => {
                    table.wildcard_max_len = table.wildcard_max_len.max(suffix.len());
                    table.wildcard.insert(IndexKey::new(suffix.as_bytes()), index);
                }
            }
        }
        if !defaults.is_empty() {
            let end = table.labels.len() as u32;
            table.default = Some(table.buckets.len() as u32);
            let bucket = Bucket::new(
                (end, end),
                &rules,
                &defaults,
                &mut table.arms,
                &mut table.few_paths,
            );
            table.buckets.push(bucket);
        }
        table.arms.shrink_to_fit();
        table.few_paths.shrink_to_fit();
        table.rules = rules;
        table
    }
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
    /// Builds a bucket of the arms of `rule_indexes`, appending its arms and (when few) its paths to the
    /// table-wide `arms` and `few_paths`.
    fn new(
        label: (u32, u32),
        rules: &[Rule],
        rule_indexes: &[u32],
        arms: &mut Vec<BucketArm>,
        few_paths: &mut Vec<(IndexKey, PathEntry)>,
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
        let mut by_path: Vec<(&str, bool, usize, BucketArm)> = Vec::with_capacity(keyed.len());
        let mut regex = Vec::new();
        let mut exact_lens = LengthSet::default();
        let mut prefix_lens = LengthSet::default();
        for (rank, (key, r, a)) in keyed.into_iter().enumerate() {
            let arm = &rules[r as usize].arms[a as usize];
            let entry = BucketArm {
                rank: rank as u32,
                rule: r,
                arm: a,
                method: arm.method.clone(),
                more: !arm.headers.is_empty() || !arm.query.is_empty(),
            };
            match &arm.path {
                PathCondition::Exact(value) => {
                    exact_lens.insert(value.len());
                    by_path.push((value, false, 0, entry));
                }
                PathCondition::RegularExpression(_) => regex.push(entry),
                PathCondition::Prefix { prefix, .. } => {
                    prefix_lens.insert(prefix.len());
                    by_path.push((prefix, true, key.path_len, entry));
                }
            }
        }
        // Group by path string, Exact arms before PathPrefix arms; the sort is stable, so each run stays in
        // rank order.
        by_path.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        let first = arms.len() as u32;
        arms.extend(regex);
        let regex = (first, arms.len() as u32);
        let mut paths = Vec::new();
        for group in by_path.chunk_by(|x, y| x.0 == y.0) {
            let Some(&(path, ..)) = group.first() else {
                continue;
            };
            let exact_end = group.partition_point(|g| !g.1);
            let start = arms.len() as u32;
            arms.extend(group.iter().map(|g| g.3.clone()));
            let middle = start + exact_end as u32;
            let entry = PathEntry {
                exact: (start, middle),
                prefix: (middle, arms.len() as u32),
                prefix_len: group.last().filter(|g| g.1).map_or(0, |g| g.2),
            };
            paths.push((IndexKey::new(path.as_bytes()), entry));
        }
        let paths = if paths.len() <= FEW_PATHS {
            let start = few_paths.len() as u32;
            few_paths.extend(paths);
            PathIndex::Few(start, few_paths.len() as u32)
        } else {
            PathIndex::Many(paths.into_iter().collect())
        };
        Bucket {
            label,
            paths,
            regex,
            exact_lens,
            prefix_lens,
        }
    }

    fn run(arms: &[BucketArm], (start, end): (u32, u32)) -> &[BucketArm] {
        arms.get(start as usize..end as usize).unwrap_or(&[])
    }

    /// Method, header and query conditions of an arm the path index selected.
    fn rest_holds(rules: &[Rule], entry: &BucketArm, req: &RequestHead<'_>) -> bool {
        if let Some(method) = &entry.method
            && method != req.method
        {
            return false;
        }
        !entry.more || Self::arm_of(rules, entry).is_some_and(|arm| arm.headers_and_query_match(req))
    }

    fn arm_of<'r>(rules: &'r [Rule], entry: &BucketArm) -> Option<&'r Arm> {
        rules.get(entry.rule as usize)?.arms.get(entry.arm as usize)
    }

    /// The first arm in precedence order whose conditions all hold, and the normalised prefix when it is a
    /// PathPrefix arm.
    fn find<'b>(
        &'b self,
        arms: &'b [BucketArm],
        few_paths: &'b [(IndexKey, PathEntry)],
        rules: &[Rule],
        req: &RequestHead<'_>,
    ) -> Option<(&'b BucketArm, Option<&'b str>)> {
        let len = req.path.len();
        let whole = if self.exact_lens.contains(len) || self.prefix_lens.contains(len) {
            self.paths.get(few_paths, req.path.as_bytes())
        } else {
            None
        };
        // Tier 1: Exact arms rank above every other type; only those equal to the path can match.
        if let Some((_, entry)) = whole
            && let Some(hit) = Self::run(arms, entry.exact)
                .iter()
                .find(|a| Self::rest_holds(rules, a, req))
        {
            return Some((hit, None));
        }
        // Tier 2: RegularExpression arms, in precedence order.
        if let Some(hit) = Self::run(arms, self.regex)
            .iter()
            .find(|a| Self::arm_of(rules, a).is_some_and(|arm| arm.matches(req)))
        {
            return Some((hit, None));
        }
        // Tier 3: PathPrefix arms. The prefixes that can match are exactly the path itself and the path cut
        // before each `/`; longer ones have the greater (or equal) precedence length, so walk them longest first
        // and keep the best rank among groups of equal length (only `""` and `"/"` can tie).
        let mut best: Option<(&'b BucketArm, usize, &'b IndexKey)> = None;
        let mut probe = |found: Option<(&'b IndexKey, &'b PathEntry)>| -> bool {
            let Some((prefix, entry)) = found else {
                return true;
            };
            if let Some((_, best_len, _)) = best
                && entry.prefix_len < best_len
            {
                return false;
            }
            if let Some(hit) = Self::run(arms, entry.prefix)
                .iter()
                .find(|a| Self::rest_holds(rules, a, req))
            {
                best = match best {
                    Some(current) if current.0.rank < hit.rank => Some(current),
                    _ => Some((hit, entry.prefix_len, prefix)),
                };
            }
            true
        };
        let path = req.path.as_bytes();
        if self.prefix_lens.contains(len) && !probe(whole) {
            return best.map(|(hit, _, prefix)| (hit, prefix.as_str()));
        }
        // Cuts longer than the longest prefix cannot match; start the backwards scan there.
        let mut end = len.min(self.prefix_lens.max.saturating_add(1));
        while end > 0 {
            end -= 1;
            if path.get(end) == Some(&b'/') && self.prefix_lens.contains(end) {
                let candidate = path.get(..end).unwrap_or_default();
                if !probe(self.paths.get(few_paths, candidate)) {
                    break;
                }
            }
        }
        best.map(|(hit, _, prefix)| (hit, prefix.as_str()))
    }
}

/// A hash key of bytes kept inline when short (most hostnames and paths), so that a probe compares the key
/// without another memory load.
#[derive(Debug, Clone)]
enum IndexKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

const INLINE_KEY: usize = 30;

impl IndexKey {
    fn new(key: &[u8]) -> IndexKey {
        match key.len() {
            len @ 0..=INLINE_KEY => {
                let mut bytes = [0u8; INLINE_KEY];
                bytes[..len].copy_from_slice(key);
                IndexKey::Inline {
                    len: len as u8,
                    bytes,
                }
            }
            _ => IndexKey::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IndexKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            IndexKey::Heap(bytes) => bytes,
        }
    }

    /// Keys are built from `str`s, so this never fails.
    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }
}

// `Hash`, `Eq` and `Borrow<[u8]>` all go through `as_bytes`, so map lookups by `&[u8]` are consistent.
impl std::hash::Hash for IndexKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for IndexKey {}

impl std::borrow::Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PathIndex {
    fn get<'a>(
        &'a self,
        few_paths: &'a [(IndexKey, PathEntry)],
        path: &[u8],
    ) -> Option<(&'a IndexKey, &'a PathEntry)> {
        match self {
            PathIndex::Few(start, end) => few_paths
                .get(*start as usize..*end as usize)
                .unwrap_or_default()
                .iter()
                .find(|(key, _)| key.as_bytes() == path)
                .map(|(key, entry)| (key, entry)),
            PathIndex::Many(map) => map.get_key_value(path),
        }
    }
}

impl LengthSet {
    fn insert(&mut self, len: usize) {
        if len < 128 {
            self.small |= 1u128 << len;
        }
        self.max = self.max.max(len);
    }

    fn contains(&self, len: usize) -> bool {
        if len < 128 {
            self.small & (1u128 << len) != 0
        } else {
            len <= self.max
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
