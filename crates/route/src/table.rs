//! The compiled routing table: hostname buckets of precedence-sorted arms, and the allocation-free lookup.
//!
//! The layout is made for tables far bigger than the L1 cache, so that a lookup touches about the same few
//! cache lines whatever the rule count. A hostname probe reads one 8-byte slot of a keyed hash index, then its
//! bucket (one line: label, path lengths, regex run, where its path runs are). A bucket of at most four path
//! strings keeps its runs in a short array of slots, scanned length first; a bigger bucket has its own hash index
//! of 16-byte path slots, four to a cache line, about three quarters full. A slot holds the path string's place
//! and, for a run of one arm without query conditions or RegularExpression header values, that arm (rule, arm,
//! method code, flags, and its run of Exact header conditions), so such a path string is decided by one line.
//! Because each bucket's index holds only its own runs, the path's hash does not depend on the bucket: the lookup
//! hashes the path's first candidates before the hostname lookup, and the CPU does that while it waits for the
//! hostname index and the bucket. As soon as the bucket is known, the lookup loads the index line of the first
//! candidate (a plain load whose value is not used), before the checks that precede the first probe: in a big
//! table that line is the one likely cache miss, and the wait for it then overlaps those checks. Keys are
//! compared in their own storage (bucket labels, `path_keys`, where the hashed buckets share each distinct path
//! string), a load that the next step does not wait for. Runs of several arms and RegularExpression arms read
//! 16-byte arm records. Exact header conditions are copied into one table-wide array, one run per distinct list
//! of conditions (arms that need the same headers, common in big tables, share a run that stays in the cache);
//! only query conditions and RegularExpression header values are checked on the rule's own arm.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::arm::{Arm, PathCondition, Precedence, ValueCondition};
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
    /// Each bucket's RegularExpression arms, as one run in precedence order, and the Exact and PathPrefix arms
    /// of each path string that has several (Exact arms first, each type in precedence order). A path string
    /// with one arm (most have one) keeps it in its path index slot.
    arms: Vec<BucketArm>,
    /// The path indexes of the buckets with more than [`FEW_RUNS`] path strings, one region of lines each.
    lines: Vec<SlotLine>,
    /// The path runs of the other buckets, each bucket's contiguous.
    few_runs: Vec<PathSlot>,
    /// The distinct path strings of the runs, end to end.
    path_keys: String,
    /// (start, length) in `path_keys` of the path strings of [`LONG_KEY`] bytes or more.
    long_keys: Vec<(u32, u32)>,
    /// The Exact header conditions of the arms in `arms` that have header conditions (and no others that need
    /// the rule's arm), each arm's contiguous: checking them reads these records, not the rule, its arms and
    /// their conditions one after the other.
    headers: Vec<FlatHeader>,
    /// The values of `headers`, end to end.
    header_values: Vec<u8>,
    /// Each distinct run of `headers` (start, count): an inline arm of a path slot names its run here.
    header_runs: Vec<(u32, u16)>,
    /// The lengths of the path strings of the hashed buckets (Exact values and prefixes; prefixes): a lookup
    /// hashes the path's candidates of these lengths before it looks up the hostname.
    hashed_lens: LengthSet,
    hashed_prefix_lens: LengthSet,
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
    /// Where the bucket's path runs are. A bucket with at most [`FEW_RUNS`] path strings keeps their slots in
    /// `RouteTable::few_runs` (start, count) and looks them up by a length-first scan, not by hash. A bigger
    /// bucket has its own hash index: (first line, [`HASHED`] | line count) in `RouteTable::lines`.
    paths: (u32, u32),
}

/// Marks `Bucket::paths` as a hashed region.
const HASHED: u32 = 1 << 31;

/// Up to this many path strings a bucket scans its runs: cheaper than hashing the path, in two cache lines.
const FEW_RUNS: usize = 4;

/// One arm in a bucket, with what the lookup needs to select it inline: the method as a small code, and
/// whether header or query conditions must be checked on the rule's arm. Aligned so that an arm never straddles
/// two cache lines.
#[derive(Debug, Clone, Copy)]
#[repr(align(16))]
struct BucketArm {
    rule: u32,
    arm: u32,
    /// The arm's header conditions in `RouteTable::headers` (with `MORE` and without `SLOW`).
    headers: u32,
    header_count: u16,
    method: MethodCode,
    flags: u8,
}

/// An Exact header condition: the field must have a line equal to the value.
#[derive(Debug)]
struct FlatHeader {
    /// One per distinct name in a table, so that the arms naming a header share its bytes.
    name: HeaderName,
    /// Start and length in `RouteTable::header_values`.
    value: (u32, u32),
}

/// The arm is a PathPrefix arm (the others of a path run are Exact arms).
const PREFIX: u8 = 1;
/// The arm has header or query conditions.
const MORE: u8 = 2;
/// The arm ends its path run.
const LAST: u8 = 4;
/// The arm's conditions are checked on the rule's arm: it has query conditions or a RegularExpression header
/// value.
const SLOW: u8 = 16;

/// A method condition as a byte: 0 for none, the standard methods by number, [`EXTENSION`] for any other (then
/// the rule's arm holds the method).
type MethodCode = u8;
const ANY_METHOD: MethodCode = 0;
const EXTENSION: MethodCode = u8::MAX;

/// A set of byte lengths: exact below [`SMALL_LEN`], an upper bound above.
#[derive(Debug, Default, Clone, Copy)]
struct LengthSet {
    small: [u32; 4],
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

/// Four path slots in one cache line: a bucket's hash index is a region of lines, about three quarters full.
/// A probe starts at a line found by multiplying the path's hash (any line count works) and reads the line's
/// slots in order, then the next line's (wrapping within the region). Lines fill their slots in order, so a
/// free slot ends the probe. A bucket's index holds only its own runs, so a slot needs no bucket number and the
/// path's hash does not depend on the bucket.
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct SlotLine([PathSlot; 4]);

/// One path run: its path string and, when the run is a single arm, that arm; 16 bytes, so that the indexes of
/// a big table stay small enough for the CPU's second-level cache. A probe reads the slot, then the key bytes
/// (to check them) and, only for a run of several arms or an arm with more conditions, further records.
#[derive(Debug, Clone, Copy)]
#[repr(align(16))]
struct PathSlot {
    /// 16 bits of the key's hash (other bits than those that choose the line).
    tag: u16,
    /// The inline arm's method code and flags; `LAST` is set when the slot holds the run's only arm, [`FREE`]
    /// marks a free slot.
    method: MethodCode,
    flags: u8,
    /// The path string's byte length, or [`LONG_KEY`]: then `key` is an index into `RouteTable::long_keys`.
    key_len: u8,
    /// The inline arm's index in its rule.
    arm: u8,
    /// With `MORE` set, the inline arm's Exact header conditions: an index into `RouteTable::header_runs`.
    conditions: u16,
    /// The path string (Exact value or normalised prefix): its start in `RouteTable::path_keys`.
    key: u32,
    /// The inline arm's rule; for any other run, its first arm in `RouteTable::arms`.
    rule: u32,
}

/// A free slot of a hash index.
const FREE: u8 = 8;

// Four slots to a cache line.
const _: () = assert!(std::mem::size_of::<PathSlot>() == 16);

/// `PathSlot::key_len` of path strings this long or longer (rare; they are valid).
const LONG_KEY: u8 = u8::MAX;

/// Lengths below this are kept exactly in a [`LengthSet`].
const SMALL_LEN: usize = 128;

/// The hashes of a path's first candidates for a hashed bucket's probes (the path itself and its cuts before a
/// `/`, longest first), by length. Computed from the path alone, before the hostname lookup, so that the CPU
/// hashes the path while it waits for the hostname index and the bucket: the probe then starts as soon as the
/// bucket's region is known.
#[derive(Debug, Clone, Copy, Default)]
struct EarlyHashes {
    lens: [u32; EARLY],
    hashes: [u64; EARLY],
}

/// How many candidates [`EarlyHashes`] holds: the first probe almost always decides.
const EARLY: usize = 2;

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
        let early = &self.early_hashes(req.path.as_bytes());
        if let Some(bucket) = self.exact.get(self.hash(host), |b| {
            self.label(b).is_some_and(|label| bytes_eq(label, host))
        }) && let Some(hit) = self.find_in(bucket, req, method, early)
        {
            return Some(hit);
        }
        if !self.wildcard.is_empty() {
            for suffix in wildcard_suffixes(host) {
                if suffix.len() > self.wildcard_max_len {
                    continue;
                }
                let is_suffix = |b| {
                    self.label(b)
                        .and_then(|label| label.get(1..))
                        .is_some_and(|label| bytes_eq(label, suffix))
                };
                if let Some(bucket) = self.wildcard.get(self.hash(suffix), is_suffix)
                    && let Some(hit) = self.find_in(bucket, req, method, early)
                {
                    return Some(hit);
                }
            }
        }
        self.default
            .and_then(|bucket| self.find_in(bucket, req, method, early))
    }

    /// The hashes of the first [`EARLY`] candidates of `path` whose lengths some hashed bucket has.
    #[inline]
    fn early_hashes(&self, path: &[u8]) -> EarlyHashes {
        let mut early = EarlyHashes {
            lens: [u32::MAX; EARLY],
            hashes: [0; EARLY],
        };
        let len = path.len();
        if len >= SMALL_LEN || self.hashed_lens.max == 0 && self.hashed_lens.small == [0; 4] {
            return early;
        }
        let mut n = 0;
        if self.hashed_lens.contains(len) {
            early.lens[0] = len as u32;
            early.hashes[0] = self.hash(path);
            n = 1;
        }
        // The prefix lengths below the path's, longest first (see `LengthBits` for the two word widths).
        let push = |cut: u32| {
            if path.get(cut as usize) == Some(&b'/')
                && let (Some(slot), Some(hash)) = (early.lens.get_mut(n), early.hashes.get_mut(n))
            {
                *slot = cut;
                *hash = self.hash(path.get(..cut as usize).unwrap_or_default());
                n += 1;
            }
            n < EARLY
        };
        if len < 64 {
            longest_first(u64::below(&self.hashed_prefix_lens, len), push);
        } else {
            longest_first(u128::below(&self.hashed_prefix_lens, len), push);
        }
        early
    }

    /// The hash of an index key: a hostname, a wildcard suffix or a path string.
    fn hash(&self, key: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        hasher.finish()
    }

    fn label(&self, bucket: u32) -> Option<&[u8]> {
        let (start, end) = self.buckets.get(bucket as usize)?.label;
        self.labels.as_bytes().get(start as usize..end as usize)
    }

    /// The path string of a run; `None` for a free slot.
    fn key_of(&self, slot: &PathSlot) -> Option<&str> {
        self.path_keys.get(self.key_range(slot)?)
    }

    /// The place of a run's path string in `path_keys`.
    #[inline]
    fn key_range(&self, slot: &PathSlot) -> Option<std::ops::Range<usize>> {
        let (start, len) = if slot.key_len == LONG_KEY {
            *self.long_keys.get(slot.key as usize)?
        } else {
            (slot.key, u32::from(slot.key_len))
        };
        Some(start as usize..(start + len) as usize)
    }

    /// Whether `slot` holds the run of `path`, whose length (as in `PathSlot::key_len`) is `len`. The key is
    /// compared as bytes: `path_keys` is only cut at whole path strings, so no character boundary check.
    #[inline]
    fn is_run_of(&self, slot: &PathSlot, len: u8, path: &[u8]) -> bool {
        slot.key_len == len
            && self
                .key_range(slot)
                .and_then(|range| self.path_keys.as_bytes().get(range))
                .is_some_and(|key| bytes_eq(key, path))
    }

    /// The run of `path` (a candidate of the request's path) in `bucket`.
    fn path_run(&self, bucket: &Bucket, path: &[u8], early: &EarlyHashes) -> Option<&PathSlot> {
        let len = u8::try_from(path.len()).unwrap_or(LONG_KEY);
        let (start, count) = bucket.paths;
        if count & HASHED == 0 {
            return self
                .few_runs
                .get(start as usize..(start + count) as usize)?
                .iter()
                .find(|slot| self.is_run_of(slot, len, path));
        }
        let region = self
            .lines
            .get(start as usize..(start + (count & !HASHED)) as usize)?;
        let hash = match early.lens.iter().position(|&l| l as usize == path.len()) {
            Some(i) => early.hashes.get(i).copied().unwrap_or_default(),
            None => self.hash(path),
        };
        let tag = hash as u16;
        let mut i = SlotLine::home(hash, region.len());
        for _ in 0..region.len() {
            for slot in &region.get(i)?.0 {
                if slot.tag == tag && self.is_run_of(slot, len, path) {
                    return Some(slot);
                }
                if slot.flags & FREE != 0 {
                    return None;
                }
            }
            i = if i + 1 == region.len() { 0 } else { i + 1 };
        }
        None
    }

    /// The first arm (rule, arm) of the run at `slot` of the wanted type (`PREFIX` or 0) whose other conditions
    /// hold.
    #[inline]
    fn run_hit(
        &self,
        slot: &PathSlot,
        want: u8,
        req: &RequestHead<'_>,
        method: MethodCode,
    ) -> Option<(u32, u32)> {
        if slot.flags & LAST != 0 {
            let (headers, header_count) = match slot.flags & MORE {
                0 => (0, 0),
                _ => self.header_runs.get(usize::from(slot.conditions)).copied()?,
            };
            let head = BucketArm {
                rule: slot.rule,
                arm: u32::from(slot.arm),
                headers,
                header_count,
                method: slot.method,
                flags: slot.flags,
            };
            return (slot.flags & PREFIX == want && self.holds(&head, req, method))
                .then_some((head.rule, head.arm));
        }
        self.run(slot.rule)
            .find(|a| a.flags & PREFIX == want && self.holds(a, req, method))
            .map(|a| (a.rule, a.arm))
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

    fn find_in<'t>(
        &'t self,
        index: u32,
        req: &RequestHead<'_>,
        method: MethodCode,
        early: &EarlyHashes,
    ) -> Option<RouteHit<'t>> {
        let bucket = self.buckets.get(index as usize)?;
        self.prefetch_first_line(bucket, early);
        let ((rule, arm), prefix) = self.find(bucket, req, method, early)?;
        let rule_index = rule as usize;
        let (start, end) = bucket.label;
        Some(RouteHit {
            rule: self.rules.get(rule_index)?,
            rule_index,
            arm_index: arm as usize,
            hostname: self.labels.get(start as usize..end as usize)?,
            prefix: match prefix {
                Some(slot) => Some(self.key_of(slot)?),
                None => None,
            },
        })
    }

    /// Loads the path index line of the path's first early candidate in a hashed bucket, and nothing else: in a
    /// big table that line is the lookup's one likely cache miss, and loading it here, before the checks that
    /// come first in `find`, lets the CPU wait for it while it works through them. A probe made here instead
    /// was slower: its branches on the line's slots, when mispredicted, discard the work after them. Safe Rust
    /// has no prefetch; `black_box` keeps the plain load.
    #[inline]
    fn prefetch_first_line(&self, bucket: &Bucket, early: &EarlyHashes) {
        let (start, count) = bucket.paths;
        if count & HASHED == 0 || early.lens[0] == u32::MAX {
            return;
        }
        let line = start as usize + SlotLine::home(early.hashes[0], (count & !HASHED) as usize);
        std::hint::black_box(self.lines.get(line).map(|line| line.0[0].tag));
    }

    /// The first arm of the bucket in precedence order whose conditions all hold, and its run when it is a
    /// PathPrefix arm.
    fn find<'t>(
        &'t self,
        bucket: &Bucket,
        req: &RequestHead<'_>,
        method: MethodCode,
        early: &EarlyHashes,
    ) -> Option<((u32, u32), Option<&'t PathSlot>)> {
        let path = req.path.as_bytes();
        let len = path.len();
        let whole = if bucket.exact_lens.contains(len) || bucket.prefix_lens.contains(len) {
            self.path_run(bucket, path, early)
        } else {
            None
        };
        // Tier 1: Exact arms rank above every other type; only those equal to the path can match.
        if let Some(slot) = whole
            && let Some(hit) = self.run_hit(slot, 0, req, method)
        {
            return Some((hit, None));
        }
        // Tier 2: RegularExpression arms, in precedence order.
        let (start, end) = bucket.regex;
        if let Some(hit) = self
            .arms
            .get(start as usize..end as usize)
            .unwrap_or_default()
            .iter()
            .map(|a| (a.rule, a.arm))
            .find(|&hit| self.arm_at(hit).is_some_and(|arm| arm.matches(req)))
        {
            return Some((hit, None));
        }
        // Tier 3: PathPrefix arms. The prefixes that can match are exactly the path itself and the path cut
        // before each `/`, walked longest first. A prefix's precedence length is its character count (at least
        // 1), so a shorter cut of the same path ranks lower, except that `""` and `"/"` tie: after a hit at a
        // cut of two bytes or more (a prefix starts with `/`, so that is two characters or more) nothing shorter
        // can win, and below that the better rank of the two is kept.
        // The best hit so far: its arm and run.
        let mut best: Option<((u32, u32), &'t PathSlot)> = None;
        if bucket.prefix_lens.contains(len) {
            let more = match whole {
                Some(slot) => {
                    if let Some(hit) = self.run_hit(slot, PREFIX, req, method) {
                        best = Some((hit, slot));
                    }
                    best.is_none() || len < 2
                }
                None => true,
            };
            if !more {
                return best.map(|(hit, slot)| (hit, Some(slot)));
            }
        }
        // Looks up the cut of `cut` bytes; false when the walk is over.
        let mut probe = |cut: usize| -> bool {
            let candidate = path.get(..cut).unwrap_or_default();
            if let Some(slot) = self.path_run(bucket, candidate, early)
                && let Some(hit) = self.run_hit(slot, PREFIX, req, method)
            {
                best = match best {
                    Some(current) if self.precedence(current.0) > self.precedence(hit) => Some(current),
                    _ => Some((hit, slot)),
                };
            }
            best.is_none() || cut < 2
        };
        // Cuts longer than the longest prefix cannot match; start the backwards scan there.
        let mut end = len.min((bucket.prefix_lens.max as usize).saturating_add(1));
        while end > SMALL_LEN {
            end -= 1;
            if path.get(end) == Some(&b'/') && bucket.prefix_lens.contains(end) && !probe(end) {
                return best.map(|(hit, slot)| (hit, Some(slot)));
            }
        }
        // Below 128 bytes the cuts worth a probe are the prefix lengths at which the path has a `/`.
        let probe = |cut: u32| probe(cut as usize);
        if end < 64 {
            longest_first(slash_cuts(u64::below(&bucket.prefix_lens, end), path), probe);
        } else {
            longest_first(slash_cuts(u128::below(&bucket.prefix_lens, end), path), probe);
        }
        best.map(|(hit, slot)| (hit, Some(slot)))
    }

    /// Method, header and query conditions of an Exact or PathPrefix arm; the path index selected it.
    fn holds(&self, a: &BucketArm, req: &RequestHead<'_>, method: MethodCode) -> bool {
        let hit = (a.rule, a.arm);
        if a.method != ANY_METHOD
            && (a.method != method
                || (method == EXTENSION
                    && self.arm_at(hit).and_then(|arm| arm.method.as_ref()) != Some(req.method)))
        {
            return false;
        }
        if a.flags & MORE == 0 {
            return true;
        }
        if a.flags & SLOW != 0 {
            return self
                .arm_at(hit)
                .is_some_and(|arm| arm.headers_and_query_match(req));
        }
        let start = a.headers as usize;
        let headers = self.headers.get(start..start + usize::from(a.header_count));
        headers.unwrap_or_default().iter().all(|h| {
            let (start, len) = h.value;
            let expected = self.header_values.get(start as usize..(start + len) as usize);
            let expected = expected.unwrap_or_default();
            req.headers
                .get_all(&h.name)
                .iter()
                .any(|v| v.as_bytes() == expected)
        })
    }

    fn arm_at(&self, (rule, arm): (u32, u32)) -> Option<&Arm> {
        self.rules.get(rule as usize)?.arms.get(arm as usize)
    }

    fn precedence(&self, (rule, arm): (u32, u32)) -> Option<Precedence> {
        self.rules
            .get(rule as usize)?
            .precedence(rule as usize, arm as usize)
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
            ..RouteTable::default()
        };
        let mut rule_indexes = Vec::new();
        let mut runs = Vec::new();
        // The hashed buckets keep each distinct path string once: many hostnames route the same paths, and a
        // probe then checks its key in the same few cache lines. (Not worth the map for the scanned buckets.)
        let mut keys = FxHashMap::default();
        let mut flat = FlatConditions::default();
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
                &mut table,
                &mut runs,
                &mut keys,
                &mut flat,
            );
            table.buckets.push(bucket);
            match pattern {
                HostPattern::Exact(name) => {
                    let hash = table.hash(name.as_bytes());
                    table.exact.insert(hash, index);
                }
                HostPattern::Wildcard(suffix) => {
                    table.wildcard_max_len = table.wildcard_max_len.max(suffix.len());
                    let hash = table.hash(suffix.as_bytes());
                    table.wildcard.insert(hash, index);
                }
            }
        }
        if !defaults.is_empty() {
            let end = table.labels.len() as u32;
            let index = table.buckets.len() as u32;
            table.default = Some(index);
            let bucket = Bucket::new(
                (end, end),
                &rules,
                &defaults,
                &mut table,
                &mut runs,
                &mut keys,
                &mut flat,
            );
            table.buckets.push(bucket);
        }
        table.arms.shrink_to_fit();
        table.headers.shrink_to_fit();
        table.header_values.shrink_to_fit();
        table.header_runs.shrink_to_fit();
        table.few_runs.shrink_to_fit();
        table.lines.shrink_to_fit();
        table.path_keys.shrink_to_fit();
        table.rules = rules;
        table
    }
}

/// The code of a method: the standard methods by number, [`EXTENSION`] for the others.
fn method_code(method: &Method) -> MethodCode {
    // A `static`, not a `const`: a const array would be built (and dropped) on every call.
    static STANDARD: [Method; 9] = [
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

/// Byte equality of index keys. Most keys (paths, hostnames) are at most 32 bytes: those are compared as a few
/// overlapping 8-byte words, without the branches and the call of a general `memcmp`.
#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    let differ = |at: usize| word(a, at) ^ word(b, at);
    match len {
        8..=16 => differ(0) | differ(len - 8) == 0,
        17..=32 => differ(0) | differ(8) | differ(len - 16) | differ(len - 8) == 0,
        _ => a == b,
    }
}

/// The 8 bytes of `bytes` at `at` (the caller keeps them in range).
#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map_or(0, u64::from_ne_bytes)
}

impl Rule {
    /// Weighted backend choice (routing.md §6). `draw(n)` must return a uniform integer in `[0, n)`. `None` when
    /// there is no backend or every weight is 0. Backends with an `unavailableStatus` keep their share.
    pub fn choose_backend(&self, draw: impl FnOnce(u64) -> u64) -> Option<usize> {
        // The common rule has one backend: the draw could only pick it.
        if let [only] = self.backends.as_slice() {
            return (only.weight > 0).then_some(0);
        }
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
    /// Builds a bucket of the arms of `rule_indexes`, appending its arms to `table.arms`, its path strings to
    /// `table.path_keys` and its path runs to `table.few_runs` or `table.lines`; `runs` is scratch space.
    fn new<'r>(
        label: (u32, u32),
        rules: &'r [Rule],
        rule_indexes: &[u32],
        table: &mut RouteTable,
        runs: &mut Vec<PathSlot>,
        keys: &mut FxHashMap<&'r str, u32>,
        flat: &mut FlatConditions<'r>,
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

        // Exact and PathPrefix arms as (path string, is prefix, header run, arm), in rank order; the header run
        // (in `header_runs`) is `NO_RUN` for an arm without Exact header conditions.
        let mut by_path: Vec<(&str, bool, u32, BucketArm)> = Vec::with_capacity(keyed.len());
        let mut bucket = Bucket {
            label,
            ..Bucket::default()
        };
        runs.clear();
        let regex_start = table.arms.len() as u32;
        for (_, r, a) in keyed {
            let Some(arm) = rules.get(r as usize).and_then(|rule| rule.arms.get(a as usize)) else {
                continue;
            };
            let mut entry = BucketArm {
                rule: r,
                arm: a,
                headers: 0,
                header_count: 0,
                method: arm.method.as_ref().map_or(ANY_METHOD, method_code),
                flags: 0,
            };
            let run = match arm.path {
                PathCondition::RegularExpression(_) => NO_RUN,
                _ => table.flatten_conditions(arm, &mut entry, flat),
            };
            match &arm.path {
                PathCondition::Exact(value) => {
                    bucket.exact_lens.insert(value.len());
                    by_path.push((value, false, run, entry));
                }
                PathCondition::RegularExpression(_) => table.arms.push(entry),
                PathCondition::Prefix { prefix, .. } => {
                    bucket.prefix_lens.insert(prefix.len());
                    entry.flags |= PREFIX;
                    by_path.push((prefix, true, run, entry));
                }
            }
        }
        bucket.regex = (regex_start, table.arms.len() as u32);
        // Group by path string, Exact arms before PathPrefix arms; the sort is stable, so each run stays in
        // rank order.
        by_path.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        let hashed = by_path.chunk_by(|x, y| x.0 == y.0).nth(FEW_RUNS).is_some();
        for group in by_path.chunk_by(|x, y| x.0 == y.0) {
            let Some(&(path, _, run, head)) = group.first() else {
                continue;
            };
            let mut push = || {
                let start = table.path_keys.len() as u32;
                table.path_keys.push_str(path);
                start
            };
            let start = if hashed {
                *keys.entry(path).or_insert_with(push)
            } else {
                push()
            };
            let (key, key_len) = match u8::try_from(path.len()) {
                Ok(len) if len < LONG_KEY => (start, len),
                _ => {
                    table.long_keys.push((start, path.len() as u32));
                    (table.long_keys.len() as u32 - 1, LONG_KEY)
                }
            };
            // A single arm is kept in the slot unless its conditions need the rule's arm.
            let conditions = match head.flags & MORE {
                0 => Some(0),
                _ => u16::try_from(run).ok(),
            };
            let inline = u8::try_from(head.arm)
                .ok()
                .zip(conditions)
                .filter(|_| group.len() == 1);
            let (flags, rule, arm, conditions) = match inline {
                Some((arm, conditions)) => (head.flags | LAST, head.rule, arm, conditions),
                None => {
                    let first = table.arms.len() as u32;
                    table.arms.extend(group.iter().map(|g| g.3));
                    if let Some(last) = table.arms.last_mut() {
                        last.flags |= LAST;
                    }
                    (head.flags, first, 0, 0)
                }
            };
            runs.push(PathSlot {
                tag: 0,
                method: head.method,
                flags,
                key_len,
                arm,
                conditions,
                key,
                rule,
            });
        }
        bucket.paths = if !hashed {
            let start = table.few_runs.len() as u32;
            let count = runs.len() as u32;
            table.few_runs.append(runs);
            (start, count)
        } else {
            // About three quarters full.
            table.hashed_lens.union(&bucket.exact_lens);
            table.hashed_lens.union(&bucket.prefix_lens);
            table.hashed_prefix_lens.union(&bucket.prefix_lens);
            let start = table.lines.len();
            let count = (runs.len() + runs.len() / 3 + 1).div_ceil(4);
            table.lines.resize(start + count, SlotLine([PathSlot::FREE; 4]));
            for run in runs.drain(..) {
                let hash = table.hash(table.key_of(&run).unwrap_or_default().as_bytes());
                if let Some(region) = table.lines.get_mut(start..) {
                    SlotLine::insert(region, hash, run);
                }
            }
            (start as u32, HASHED | count as u32)
        };
        bucket
    }
}

impl RouteTable {
    /// Sets `MORE` on `entry` when `arm` has header or query conditions, and points it at its Exact header
    /// conditions in `headers` (or sets `SLOW` when the rule's arm must be checked). Arms with the same
    /// conditions share one run of `headers`: in a big table many rules carry the same condition, and a shared
    /// run stays in the cache.
    /// Returns the run's number in `header_runs`, or [`NO_RUN`].
    fn flatten_conditions<'r>(
        &mut self,
        arm: &'r Arm,
        entry: &mut BucketArm,
        flat: &mut FlatConditions<'r>,
    ) -> u32 {
        if arm.headers.is_empty() && arm.query.is_empty() {
            return NO_RUN;
        }
        entry.flags |= MORE;
        let exact_only = arm
            .headers
            .iter()
            .all(|h| matches!(h.value, ValueCondition::Exact(_)));
        let count = u16::try_from(arm.headers.len()).ok();
        let (Some(count), true, true) = (count, exact_only, arm.query.is_empty()) else {
            entry.flags |= SLOW;
            return NO_RUN;
        };
        let next = self.header_runs.len() as u32;
        let run = *flat.runs.entry(ExactHeaders(&arm.headers)).or_insert(next);
        if let Some(&(start, count)) = self.header_runs.get(run as usize) {
            entry.headers = start;
            entry.header_count = count;
            return run;
        }
        entry.headers = self.headers.len() as u32;
        entry.header_count = count;
        self.header_runs.push((entry.headers, count));
        for h in &arm.headers {
            let ValueCondition::Exact(value) = &h.value else {
                continue;
            };
            let name = match flat.names.get(&h.name) {
                Some(name) => name.clone(),
                None => {
                    flat.names.insert(h.name.clone());
                    h.name.clone()
                }
            };
            let start = self.header_values.len() as u32;
            self.header_values.extend_from_slice(value);
            self.headers.push(FlatHeader {
                name,
                value: (start, value.len() as u32),
            });
        }
        run
    }
}

/// The header conditions already copied into `RouteTable::headers` while a table is assembled.
#[derive(Default)]
struct FlatConditions<'r> {
    /// One per distinct name, so that the arms naming a header share its bytes.
    names: FxHashSet<HeaderName>,
    /// Each distinct list of Exact header conditions → its run in `header_runs`.
    runs: FxHashMap<ExactHeaders<'r>, u32>,
}

/// An arm's header conditions, all Exact, compared and hashed by name and value in order.
#[derive(Clone, Copy)]
struct ExactHeaders<'r>(&'r [crate::arm::HeaderCondition]);

impl PartialEq for ExactHeaders<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(other.0).all(|(a, b)| {
                a.name == b.name
                    && matches!((&a.value, &b.value), (ValueCondition::Exact(x), ValueCondition::Exact(y)) if x == y)
            })
    }
}

impl Eq for ExactHeaders<'_> {}

impl std::hash::Hash for ExactHeaders<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        for h in self.0 {
            h.name.hash(state);
            if let ValueCondition::Exact(value) = &h.value {
                value.hash(state);
            }
        }
    }
}

/// No run of Exact header conditions.
const NO_RUN: u32 = u32::MAX;

impl PathSlot {
    const FREE: PathSlot = PathSlot {
        tag: 0,
        method: ANY_METHOD,
        flags: FREE,
        key_len: LONG_KEY,
        arm: 0,
        conditions: 0,
        key: EMPTY,
        rule: 0,
    };
}

impl SlotLine {
    /// The line of a region of `lines` lines where the probe for `hash` starts: where `insert` puts a key, the
    /// lookup reads it, and the early load fetches it.
    #[inline]
    fn home(hash: u64, lines: usize) -> usize {
        ((u128::from(hash) * lines as u128) >> 64) as usize
    }

    /// Adds a run to the hash index `region`, which has a free slot. The caller adds each key once.
    fn insert(region: &mut [SlotLine], hash: u64, run: PathSlot) {
        let home = Self::home(hash, region.len());
        let (wrapped, from_home) = region.split_at_mut(home);
        let free = from_home
            .iter_mut()
            .chain(wrapped)
            .flat_map(|line| &mut line.0)
            .find(|slot| slot.flags & FREE != 0);
        if let Some(free) = free {
            *free = PathSlot {
                tag: hash as u16,
                ..run
            };
        }
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

/// The lengths of a [`LengthSet`] below 64 or below [`SMALL_LEN`] as the bits of one word. The prefix walks
/// take the 64-bit word for paths shorter than 64 bytes (most are): fewer instructions than 128-bit shifts and
/// bit scans.
trait LengthBits: Copy {
    const NONE: Self;
    /// The members of `set` below `end`, which is at most the word's width.
    fn below(set: &LengthSet, end: usize) -> Self;
    /// Removes and returns the largest member.
    fn pop_largest(&mut self) -> Option<u32>;
    /// Removes and returns the smallest member.
    fn pop_smallest(&mut self) -> Option<u32>;
    /// Adds `len` when `yes`, without a branch.
    fn add_if(&mut self, len: u32, yes: bool);
}

macro_rules! length_bits {
    ($word:ty, $words:literal) => {
        impl LengthBits for $word {
            const NONE: Self = 0;

            #[inline]
            fn below(set: &LengthSet, end: usize) -> Self {
                let mut bits: $word = 0;
                for (i, word) in set.small.iter().take($words).enumerate() {
                    bits |= <$word>::from(*word) << (32 * i);
                }
                let mask = (1 as $word)
                    .checked_shl(end as u32)
                    .map_or(<$word>::MAX, |bit| bit - 1);
                bits & mask
            }

            #[inline]
            fn pop_largest(&mut self) -> Option<u32> {
                let len = (<$word>::BITS - 1).checked_sub(self.leading_zeros())?;
                *self &= !(1 << len);
                Some(len)
            }

            #[inline]
            fn pop_smallest(&mut self) -> Option<u32> {
                if *self == 0 {
                    return None;
                }
                let len = self.trailing_zeros();
                *self &= *self - 1;
                Some(len)
            }

            #[inline]
            fn add_if(&mut self, len: u32, yes: bool) {
                *self |= <$word>::from(yes) << len;
            }
        }
    };
}

length_bits!(u64, 2);
length_bits!(u128, 4);

/// Calls `f` with the members of `lens`, largest first, until it returns false.
#[inline]
fn longest_first<W: LengthBits>(mut lens: W, mut f: impl FnMut(u32) -> bool) {
    while let Some(len) = lens.pop_largest() {
        if !f(len) {
            break;
        }
    }
}

/// The members of `lens` at which `path` has a `/`: the cuts of the path that can be prefixes. Gathered as bits
/// first, so that the walk has no branch per candidate length.
#[inline]
fn slash_cuts<W: LengthBits>(mut lens: W, path: &[u8]) -> W {
    let mut cuts = W::NONE;
    while let Some(len) = lens.pop_smallest() {
        cuts.add_if(len, path.get(len as usize) == Some(&b'/'));
    }
    cuts
}

impl LengthSet {
    fn union(&mut self, other: &LengthSet) {
        for (word, other) in self.small.iter_mut().zip(other.small) {
            *word |= other;
        }
        self.max = self.max.max(other.max);
    }

    fn insert(&mut self, len: usize) {
        if let Some(word) = self.small.get_mut(len / 32) {
            *word |= 1u32 << (len % 32);
        }
        self.max = self.max.max(u32::try_from(len).unwrap_or(u32::MAX));
    }

    #[inline]
    fn contains(&self, len: usize) -> bool {
        match self.small.get(len / 32) {
            Some(word) => word & (1u32 << (len % 32)) != 0,
            None => len <= self.max as usize,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
