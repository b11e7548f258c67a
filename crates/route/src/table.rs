//! The compiled routing table: hostname buckets of precedence-sorted arms, and the allocation-free lookup.

use std::collections::HashMap;
use std::ops::Range;
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
    exact: HashMap<Box<str>, Bucket>,
    /// Keyed by suffix (`.example.com` for `*.example.com`).
    wildcard: HashMap<Box<str>, Bucket>,
    /// Length of the longest wildcard suffix: longer host suffixes need no hash probe.
    wildcard_max_len: usize,
    default: Option<Bucket>,
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

/// The arms of one hostname bucket, sorted by precedence (best first), with indexes by path.
#[derive(Debug)]
struct Bucket {
    label: Box<str>,
    arms: Vec<BucketArm>,
    /// Exact path value → positions in `arms`, ascending (so in precedence order).
    exact_paths: HashMap<Box<str>, Vec<u32>>,
    /// Positions of the RegularExpression arms; they sit between the Exact and the PathPrefix arms.
    regex: Range<usize>,
    /// Normalised prefix → its arms.
    prefixes: HashMap<Box<str>, PrefixGroup>,
    /// Byte lengths of the normalised prefixes, so most candidate prefixes of a path skip the hash probe.
    prefix_lens: LengthSet,
}

#[derive(Debug, Clone, Copy)]
struct BucketArm {
    rule: u32,
    arm: u32,
}

#[derive(Debug, Default)]
struct PrefixGroup {
    /// The precedence length shared by every arm of the group.
    len: usize,
    positions: Vec<u32>,
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
                &long_host
            }
        };
        if let Some(bucket) = self.exact.get(host)
            && let Some(hit) = self.find_in(bucket, req)
        {
            return Some(hit);
        }
        if !self.wildcard.is_empty() {
            for suffix in wildcard_suffixes(host) {
                if suffix.len() > self.wildcard_max_len {
                    continue;
                }
                if let Some(bucket) = self.wildcard.get(suffix)
                    && let Some(hit) = self.find_in(bucket, req)
                {
                    return Some(hit);
                }
            }
        }
        self.default.as_ref().and_then(|bucket| self.find_in(bucket, req))
    }

    fn find_in<'t>(&'t self, bucket: &'t Bucket, req: &RequestHead<'_>) -> Option<RouteHit<'t>> {
        let position = bucket.find(&self.rules, req)?;
        let entry = bucket.arms.get(position)?;
        let rule_index = entry.rule as usize;
        let arm_index = entry.arm as usize;
        let rule = self.rules.get(rule_index)?;
        let arm = rule.arms.get(arm_index)?;
        Some(RouteHit {
            rule,
            rule_index,
            arm_index,
            hostname: &bucket.label,
            prefix: arm.prefix(),
        })
    }

    /// Assembles the table from compiled rules and their parsed hostnames (same order).
    pub(crate) fn assemble(
        version: i64,
        rules: Vec<Rule>,
        hosts: &[Vec<HostPattern>],
        upstreams: Vec<Arc<Upstream>>,
    ) -> RouteTable {
        let mut members: HashMap<&HostPattern, Vec<usize>> = HashMap::new();
        let mut default_members = Vec::new();
        for (rule_index, patterns) in hosts.iter().enumerate() {
            if patterns.is_empty() {
                default_members.push(rule_index);
            }
            for pattern in patterns {
                let list = members.entry(pattern).or_default();
                // A rule naming one host twice (e.g. in two cases) contributes its arms once.
                if list.last() != Some(&rule_index) {
                    list.push(rule_index);
                }
            }
        }
        let mut table = RouteTable {
            version,
            upstreams,
            ..RouteTable::default()
        };
        for (pattern, rule_indexes) in members {
            let bucket = Bucket::new(pattern.label(), &rules, &rule_indexes);
            match pattern {
                HostPattern::Exact(name) => {
                    table.exact.insert(name.as_str().into(), bucket);
                }
                HostPattern::Wildcard(suffix) => {
                    table.wildcard_max_len = table.wildcard_max_len.max(suffix.len());
                    table.wildcard.insert(suffix.as_str().into(), bucket);
                }
            }
        }
        if !default_members.is_empty() {
            table.default = Some(Bucket::new(String::new(), &rules, &default_members));
        }
        table.rules = rules;
        table
    }
}

impl Rule {
    /// Weighted backend choice (routing.md §6). `draw(n)` must return a uniform integer in `[0, n)`. `None` when
    /// there is no backend or every weight is 0. Backends with an `unavailableStatus` keep their share.
    pub fn choose_backend(&self, draw: impl FnOnce(u64) -> u64) -> Option<usize> {
        self.weights.choose(draw)
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
    fn new(label: String, rules: &[Rule], rule_indexes: &[usize]) -> Bucket {
        let mut keyed: Vec<(Precedence, BucketArm)> = rule_indexes
            .iter()
            .filter_map(|&r| rules.get(r).map(|rule| (r, rule)))
            .flat_map(|(r, rule)| {
                rule.arms.iter().enumerate().map(move |(a, arm)| {
                    (
                        arm.precedence(r, a),
                        BucketArm {
                            rule: r as u32,
                            arm: a as u32,
                        },
                    )
                })
            })
            .collect();
        // Best first: greater precedence wins. Keys are unique (rule and arm order are part of them).
        keyed.sort_unstable_by_key(|&(key, _)| std::cmp::Reverse(key));
        let mut bucket = Bucket {
            label: label.into_boxed_str(),
            arms: Vec::with_capacity(keyed.len()),
            exact_paths: HashMap::new(),
            regex: 0..0,
            prefixes: HashMap::new(),
            prefix_lens: LengthSet::default(),
        };
        let mut regex_start = None;
        let mut regex_end = 0;
        for (position, (key, entry)) in keyed.into_iter().enumerate() {
            let arm = &rules[entry.rule as usize].arms[entry.arm as usize];
            match &arm.path {
                PathCondition::Exact(value) => bucket
                    .exact_paths
                    .entry(value.as_str().into())
                    .or_default()
                    .push(position as u32),
                PathCondition::RegularExpression(_) => {
                    regex_start.get_or_insert(position);
                    regex_end = position + 1;
                }
                PathCondition::Prefix { prefix, .. } => {
                    bucket.prefix_lens.insert(prefix.len());
                    let group = bucket.prefixes.entry(prefix.as_str().into()).or_default();
                    group.len = key.path_len;
                    group.positions.push(position as u32);
                }
            }
            bucket.arms.push(entry);
        }
        if let Some(start) = regex_start {
            bucket.regex = start..regex_end;
        }
        bucket
    }

    /// Position (in `arms`) of the first arm in precedence order whose conditions all hold.
    fn find(&self, rules: &[Rule], req: &RequestHead<'_>) -> Option<usize> {
        let arm_at = |position: usize| -> Option<&Arm> {
            let entry = self.arms.get(position)?;
            rules.get(entry.rule as usize)?.arms.get(entry.arm as usize)
        };
        let rest_holds = |position: usize| arm_at(position).is_some_and(|arm| arm.matches_except_path(req));

        // Tier 1: Exact arms, all ranked above every other type; only those equal to the path can match.
        if !self.exact_paths.is_empty()
            && let Some(positions) = self.exact_paths.get(req.path)
            && let Some(&p) = positions.iter().find(|&&p| rest_holds(p as usize))
        {
            return Some(p as usize);
        }
        // Tier 2: RegularExpression arms, in precedence order.
        for position in self.regex.clone() {
            if arm_at(position).is_some_and(|arm| arm.matches(req)) {
                return Some(position);
            }
        }
        // Tier 3: PathPrefix arms. The prefixes that can match are exactly the path itself and the path cut
        // before each `/`; longer ones have the greater (or equal) precedence length, so walk them longest first
        // and keep the best position among groups of equal length (only `""` and `"/"` can tie).
        if self.prefixes.is_empty() {
            return None;
        }
        let mut best: Option<(usize, usize)> = None; // (position, precedence length)
        for candidate in prefix_candidates(req.path) {
            if !self.prefix_lens.contains(candidate.len()) {
                continue;
            }
            let Some(group) = self.prefixes.get(candidate) else {
                continue;
            };
            if let Some((_, best_len)) = best
                && group.len < best_len
            {
                break;
            }
            if let Some(&p) = group.positions.iter().find(|&&p| rest_holds(p as usize)) {
                let p = p as usize;
                best = match best {
                    Some((q, len)) if q < p => Some((q, len)),
                    _ => Some((p, group.len)),
                };
            }
        }
        best.map(|(position, _)| position)
    }
}

/// The normalised prefixes that can match `path`, longest first: the path itself, then the path cut before each
/// `/`, right to left (ending with `""`).
fn prefix_candidates(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once(path).chain(path.match_indices('/').rev().map(move |(i, _)| &path[..i]))
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
