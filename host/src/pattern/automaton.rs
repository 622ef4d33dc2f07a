//! The compiled matcher: every rule of a bus in one structure whose cost per
//! event follows the event, not the number of rules.
//!
//! Compilation turns each alternative ([`Conj`]) of each rule into a *sub-rule*:
//! a set of positive *predicates* (one path and its list of tests, shared by
//! every sub-rule that names the same path with the same tests) and a set of
//! paths that must be absent. All paths go into one [`PathTrie`] (the
//! field-name automaton), and each path gets a [`PathIndex`] over the values
//! found there: hash maps for exact strings and numbers and for the lower-cased
//! forms, hash maps keyed by every distinct prefix (or suffix) length for
//! `prefix`/`suffix` (and, by the literal text before the first star, for
//! `wildcard`), ranges sorted by first value for `numeric` and `cidr`, and a
//! short list for `anything-but`, evaluated one by one.
//!
//! Matching walks the event along the trie (fields no rule reads are skipped),
//! looks each value up in its path's index and records the predicates it fires.
//! Each sub-rule is filed under one *key* predicate, its rarest; a sub-rule is
//! looked at only when its key fires (then its other predicates are checked by
//! their stamps), plus the few with no positive predicate at all (`exists:
//! false` only). When the event has objects inside arrays, a
//! firing sub-rule is confirmed by choosing one value per predicate such that no
//! two come from different elements of the same array (event-ruler's array
//! consistency).
//!
//! Per-event working memory lives in a thread-local scratch area whose arrays
//! are stamped with a generation number, so nothing is cleared or allocated per
//! event once it has warmed up.

use super::cidr::{CidrIndex, parse_ip};
use super::flatten::{self, Malformed, PathTrie, Sink, Trail};
use super::hash::FxHashMap;
use super::numbers::{RangeIndex, number_key};
use super::parse::{AnythingBut, Conj, Scalar, Test};
use super::wildcard::Wildcard;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

const NONE: u32 = u32::MAX;

/// Values keyed by byte strings that are looked up by every prefix (or
/// suffix) of an event's value: one hash probe per distinct key length.
struct Affix<V = u32> {
    /// Distinct key lengths, ascending.
    lens: Vec<usize>,
    map: FxHashMap<Box<[u8]>, Vec<V>>,
}

impl<V> Default for Affix<V> {
    fn default() -> Self {
        Affix {
            lens: Vec::new(),
            map: FxHashMap::default(),
        }
    }
}

impl<V: PartialEq> Affix<V> {
    fn insert(&mut self, key: &[u8], value: V) {
        let len = key.len();
        if let Err(at) = self.lens.binary_search(&len) {
            self.lens.insert(at, len);
        }
        let list = self.map.entry(key.into()).or_default();
        if list.last() != Some(&value) {
            list.push(value);
        }
    }

    #[inline]
    fn prefixes_of(&self, v: &[u8], hit: &mut impl FnMut(&V)) {
        for &len in &self.lens {
            if len > v.len() {
                break;
            }
            if let Some(found) = self.map.get(&v[..len]) {
                found.iter().for_each(&mut *hit);
            }
        }
    }

    #[inline]
    fn suffixes_of(&self, v: &[u8], hit: &mut impl FnMut(&V)) {
        for &len in &self.lens {
            if len > v.len() {
                break;
            }
            if let Some(found) = self.map.get(&v[v.len() - len..]) {
                found.iter().for_each(&mut *hit);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }
}

fn push_unique(list: &mut Vec<u32>, pred: u32) {
    if list.last() != Some(&pred) {
        list.push(pred);
    }
}

/// Everything rules test at one path.
#[derive(Default)]
struct PathIndex {
    any: Vec<u32>,
    exact_str: FxHashMap<Box<[u8]>, Vec<u32>>,
    exact_num: FxHashMap<u64, Vec<u32>>,
    exact_true: Vec<u32>,
    exact_false: Vec<u32>,
    exact_null: Vec<u32>,
    prefix: Affix,
    suffix: Affix,
    prefix_ic: Affix,
    suffix_ic: Affix,
    equals_ic: FxHashMap<Box<[u8]>, Vec<u32>>,
    numeric: RangeIndex,
    cidr: CidrIndex,
    /// Wildcards by the literal text before their first star: a value only
    /// tries those whose literal start it begins with (a leading star files
    /// under the empty text, tried for every value).
    wildcard: Affix<(Wildcard, u32)>,
    anything_but: Vec<(AnythingBut, u32)>,
}

impl PathIndex {
    fn insert(&mut self, test: &Test, pred: u32) {
        match test {
            Test::ExactStr(s) => {
                push_unique(self.exact_str.entry(s.as_bytes().into()).or_default(), pred)
            }
            Test::ExactNum(n) => {
                push_unique(self.exact_num.entry(number_key(*n)).or_default(), pred)
            }
            Test::ExactBool(true) => push_unique(&mut self.exact_true, pred),
            Test::ExactBool(false) => push_unique(&mut self.exact_false, pred),
            Test::ExactNull => push_unique(&mut self.exact_null, pred),
            Test::Prefix(s) => self.prefix.insert(s.as_bytes(), pred),
            Test::Suffix(s) => self.suffix.insert(s.as_bytes(), pred),
            Test::PrefixIc(s) => self.prefix_ic.insert(s.as_bytes(), pred),
            Test::SuffixIc(s) => self.suffix_ic.insert(s.as_bytes(), pred),
            Test::EqualsIc(s) => {
                push_unique(self.equals_ic.entry(s.as_bytes().into()).or_default(), pred)
            }
            Test::Numeric(r) => self.numeric.insert(*r, pred),
            Test::Cidr(c) => self.cidr.insert(*c, pred),
            Test::Wildcard(w) => self.wildcard.insert(w.literal_start(), (w.clone(), pred)),
            Test::AnythingBut(a) => self.anything_but.push((a.clone(), pred)),
            // Absence never reaches a path index: it became a `neg` path.
            Test::Exists(true) => push_unique(&mut self.any, pred),
            Test::Exists(false) => {}
        }
    }

    fn needs_lower(&self) -> bool {
        !self.prefix_ic.is_empty() || !self.suffix_ic.is_empty() || !self.equals_ic.is_empty()
    }

    #[inline]
    fn eval(&self, v: Scalar<'_>, lower: &mut String, hit: &mut impl FnMut(u32)) {
        self.any.iter().for_each(|&p| hit(p));
        match v {
            Scalar::Str(s) => {
                let bytes = s.as_bytes();
                if let Some(preds) = self.exact_str.get(bytes) {
                    preds.iter().for_each(|&p| hit(p));
                }
                self.prefix.prefixes_of(bytes, &mut |&p| hit(p));
                self.suffix.suffixes_of(bytes, &mut |&p| hit(p));
                if self.needs_lower() {
                    lower.clear();
                    lower.extend(s.chars().flat_map(char::to_lowercase));
                    // `str::to_lowercase` handles final sigma; stay identical to it.
                    if s.contains('Σ') {
                        *lower = s.to_lowercase();
                    }
                    let lb = lower.as_bytes();
                    if let Some(preds) = self.equals_ic.get(lb) {
                        preds.iter().for_each(|&p| hit(p));
                    }
                    self.prefix_ic.prefixes_of(lb, &mut |&p| hit(p));
                    self.suffix_ic.suffixes_of(lb, &mut |&p| hit(p));
                }
                self.wildcard.prefixes_of(bytes, &mut |(w, p)| {
                    if w.matches(s) {
                        hit(*p);
                    }
                });
                if !self.cidr.is_empty()
                    && let Some(ip) = parse_ip(s)
                {
                    self.cidr.containing(ip, hit);
                }
            }
            Scalar::Num(n) => {
                if let Some(preds) = self.exact_num.get(&number_key(n)) {
                    preds.iter().for_each(|&p| hit(p));
                }
                self.numeric.containing(n, hit);
            }
            Scalar::Bool(true) => self.exact_true.iter().for_each(|&p| hit(p)),
            Scalar::Bool(false) => self.exact_false.iter().for_each(|&p| hit(p)),
            Scalar::Null => self.exact_null.iter().for_each(|&p| hit(p)),
        }
        for (a, p) in &self.anything_but {
            if a.matches(v) {
                hit(*p);
            }
        }
    }
}

/// How much less selective a predicate is than an exact value: operators such
/// as `anything-but`, `exists` and `numeric` fire on most values.
fn selectivity_weight(tests: &[Test]) -> u32 {
    let selective = tests.iter().all(|t| match t {
        Test::ExactStr(_)
        | Test::ExactNum(_)
        | Test::EqualsIc(_)
        | Test::Cidr(_)
        | Test::Wildcard(_) => true,
        Test::Prefix(p) | Test::Suffix(p) | Test::PrefixIc(p) | Test::SuffixIc(p) => !p.is_empty(),
        _ => false,
    });
    if selective { 1 } else { 8 }
}

struct Sub {
    target: u32,
    pos: Box<[u32]>,
    neg: Box<[u32]>,
}

/// The rule-independent part of a matcher (kept apart from `T` so it is
/// compiled once, not per target type).
pub(crate) struct Compiled {
    id: u64,
    trie: PathTrie,
    paths: Vec<PathIndex>,
    pred_subs_start: Vec<u32>,
    pred_subs: Vec<u32>,
    subs: Vec<Sub>,
    /// Sub-rules with no positive predicate: candidates for every event.
    always: Vec<u32>,
    targets: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Compiled {
    /// `rules` pairs a target index with the alternatives of one pattern.
    pub fn new<'a>(rules: impl IntoIterator<Item = (u32, &'a [Conj])>, targets: usize) -> Compiled {
        let mut trie = PathTrie::new();
        let mut path_ids: FxHashMap<String, u32> = FxHashMap::default();
        let mut paths: Vec<PathIndex> = Vec::new();
        let mut pred_ids: FxHashMap<(u32, String), u32> = FxHashMap::default();
        let mut pred_lists: Vec<Vec<u32>> = Vec::new();
        let mut weights: Vec<u32> = Vec::new();
        let mut subs = Vec::new();
        let mut always = Vec::new();

        let mut path_id = |path: &str, trie: &mut PathTrie, paths: &mut Vec<PathIndex>| -> u32 {
            if let Some(&id) = path_ids.get(path) {
                return id;
            }
            let id = paths.len() as u32;
            paths.push(PathIndex::default());
            trie.insert(path, id);
            path_ids.insert(path.to_string(), id);
            id
        };

        for (target, conjs) in rules {
            for conj in conjs {
                let sub_id = subs.len() as u32;
                let mut pos = Vec::with_capacity(conj.pos.len());
                for (path, tests) in &conj.pos {
                    let pid = path_id(path, &mut trie, &mut paths);
                    // Debug text is a faithful key: tests hold only strings,
                    // finite numbers and small enums.
                    let key = (pid, format!("{tests:?}"));
                    let pred = match pred_ids.get(&key) {
                        Some(&p) => p,
                        None => {
                            let p = pred_lists.len() as u32;
                            pred_lists.push(Vec::new());
                            weights.push(selectivity_weight(tests));
                            for t in tests {
                                paths[pid as usize].insert(t, p);
                            }
                            pred_ids.insert(key, p);
                            p
                        }
                    };
                    pos.push(pred);
                }
                let neg: Vec<u32> = conj
                    .neg
                    .iter()
                    .map(|p| path_id(p, &mut trie, &mut paths))
                    .collect();
                if pos.is_empty() {
                    always.push(sub_id);
                }
                subs.push(Sub {
                    target,
                    pos: pos.into(),
                    neg: neg.into(),
                });
            }
        }

        for index in &mut paths {
            index.numeric.finish();
            index.cidr.finish();
        }

        // Each sub-rule is filed under one key predicate only: the one the fewest
        // sub-rules share (weighted against operators that fire on most values).
        // A predicate common to thousands of rules (`"ODD_EVEN": ["E"]`) then
        // costs nothing when it fires; the rare one finds the sub-rule, which
        // checks its other predicates by their stamps.
        let mut refs = vec![0u32; pred_lists.len()];
        for sub in &subs {
            for &p in sub.pos.iter() {
                refs[p as usize] += 1;
            }
        }
        for (i, sub) in subs.iter().enumerate() {
            if let Some(&key) = sub
                .pos
                .iter()
                .min_by_key(|&&p| refs[p as usize].saturating_mul(weights[p as usize]))
            {
                pred_lists[key as usize].push(i as u32);
            }
        }

        let mut pred_subs_start = Vec::with_capacity(pred_lists.len() + 1);
        let mut pred_subs = Vec::new();
        for list in &pred_lists {
            pred_subs_start.push(pred_subs.len() as u32);
            pred_subs.extend_from_slice(list);
        }
        pred_subs_start.push(pred_subs.len() as u32);

        Compiled {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            trie,
            paths,
            pred_subs_start,
            pred_subs,
            subs,
            always,
            targets,
        }
    }

    fn preds(&self) -> usize {
        self.pred_subs_start.len() - 1
    }

    /// Target indices matched by a parsed event, ascending.
    pub fn match_value(&self, event: &serde_json::Value, out: &mut Vec<u32>) {
        with_scratch(self, |s| {
            let mut sink = Run {
                c: self,
                st: &mut s.st,
            };
            flatten::walk_value(&self.trie, event, &mut s.trail, &mut sink);
            s.st.finish(self, out);
        })
    }

    /// Target indices matched by raw JSON, ascending; `TRUSTED` as in
    /// [`flatten::scan_json`].
    pub fn match_json<const TRUSTED: bool>(
        &self,
        json: &[u8],
        out: &mut Vec<u32>,
    ) -> Result<(), Malformed> {
        with_scratch(self, |s| {
            let mut sink = Run {
                c: self,
                st: &mut s.st,
            };
            flatten::scan_json::<TRUSTED>(&self.trie, json, &mut s.trail, &mut sink)?;
            s.st.finish(self, out);
            Ok(())
        })
    }
}

/// Per-event state, reused across events on one thread.
#[derive(Default)]
struct State {
    owner: u64,
    epoch: u32,
    pred_stamp: Vec<u32>,
    pred_head: Vec<u32>,
    path_stamp: Vec<u32>,
    target_stamp: Vec<u32>,
    /// (trail context, next hit of the same predicate).
    hits: Vec<(u32, u32)>,
    fired: Vec<u32>,
    candidates: Vec<u32>,
    /// Trail snapshots; context 0 is the root (no array).
    arena: Vec<(u32, u32)>,
    ctxs: Vec<(u32, u32)>,
    ctx_version: u32,
    ctx_current: u32,
    nested: bool,
    lower: String,
    chosen: Vec<u32>,
}

#[derive(Default)]
struct Scratch {
    trail: Trail,
    st: State,
}

thread_local! {
    // A few matchers (one per bus) may take turns on one thread; keep each one's
    // stamped arrays rather than resizing them back and forth.
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

const SCRATCH_SLOTS: usize = 4;

fn with_scratch<R>(c: &Compiled, f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slots) => {
            let at = match slots.iter().position(|s| s.st.owner == c.id) {
                Some(at) => at,
                None => {
                    if slots.len() >= SCRATCH_SLOTS {
                        slots.pop();
                    }
                    slots.insert(0, Scratch::default());
                    0
                }
            };
            if at != 0 {
                let s = slots.remove(at);
                slots.insert(0, s);
            }
            let s = &mut slots[0];
            s.st.begin(c);
            s.trail.reset();
            f(s)
        }
        Err(_) => {
            let mut s = Scratch::default();
            s.st.begin(c);
            f(&mut s)
        }
    })
}

impl State {
    fn begin(&mut self, c: &Compiled) {
        if self.owner != c.id {
            self.owner = c.id;
            self.epoch = 0;
            self.pred_stamp = vec![0; c.preds()];
            self.pred_head = vec![NONE; c.preds()];
            self.path_stamp = vec![0; c.paths.len()];
            self.target_stamp = vec![0; c.targets];
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.pred_stamp.fill(0);
            self.path_stamp.fill(0);
            self.target_stamp.fill(0);
            self.epoch = 1;
        }
        self.hits.clear();
        self.fired.clear();
        self.candidates.clear();
        self.arena.clear();
        self.ctxs.clear();
        self.ctxs.push((0, 0));
        self.ctx_current = NONE;
        self.nested = false;
    }

    fn context(&mut self, trail: &Trail) -> u32 {
        if trail.stack.is_empty() {
            return 0;
        }
        if self.ctx_current != NONE && self.ctx_version == trail.version {
            return self.ctx_current;
        }
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(&trail.stack);
        self.ctxs.push((start, trail.stack.len() as u32));
        self.ctx_current = (self.ctxs.len() - 1) as u32;
        self.ctx_version = trail.version;
        self.ctx_current
    }

    fn trail_of(&self, ctx: u32) -> &[(u32, u32)] {
        let (start, len) = self.ctxs[ctx as usize];
        &self.arena[start as usize..(start + len) as usize]
    }

    fn finish(&mut self, c: &Compiled, out: &mut Vec<u32>) {
        let epoch = self.epoch;
        for &pred in &self.fired {
            let pred = pred as usize;
            let (from, to) = (
                c.pred_subs_start[pred] as usize,
                c.pred_subs_start[pred + 1] as usize,
            );
            for &sub in &c.pred_subs[from..to] {
                if c.subs[sub as usize]
                    .pos
                    .iter()
                    .all(|&p| self.pred_stamp[p as usize] == epoch)
                {
                    self.candidates.push(sub);
                }
            }
        }
        let before = out.len();
        let candidates = std::mem::take(&mut self.candidates);
        for &sub in candidates.iter().chain(&c.always) {
            let s = &c.subs[sub as usize];
            if self.target_stamp[s.target as usize] == epoch {
                continue;
            }
            if s.neg.iter().any(|&p| self.path_stamp[p as usize] == epoch) {
                continue;
            }
            if self.nested && s.pos.len() >= 2 && !self.consistent_choice(&s.pos) {
                continue;
            }
            self.target_stamp[s.target as usize] = epoch;
            out.push(s.target);
        }
        self.candidates = candidates;
        out[before..].sort_unstable();
    }

    fn consistent_choice(&mut self, preds: &[u32]) -> bool {
        let mut chosen = std::mem::take(&mut self.chosen);
        chosen.clear();
        let ok = self.choose(preds, &mut chosen);
        self.chosen = chosen;
        ok
    }

    fn choose(&self, preds: &[u32], chosen: &mut Vec<u32>) -> bool {
        let Some(&pred) = preds.get(chosen.len()) else {
            return true;
        };
        let mut h = self.pred_head[pred as usize];
        while h != NONE {
            let (ctx, next) = self.hits[h as usize];
            if chosen.iter().all(|&c| self.agree(c, ctx)) {
                chosen.push(ctx);
                if self.choose(preds, chosen) {
                    return true;
                }
                chosen.pop();
            }
            h = next;
        }
        false
    }

    fn agree(&self, a: u32, b: u32) -> bool {
        a == 0
            || b == 0
            || a == b
            || super::reference::consistent(self.trail_of(a), self.trail_of(b))
    }
}

struct Run<'a> {
    c: &'a Compiled,
    st: &'a mut State,
}

impl Sink for Run<'_> {
    #[inline]
    fn leaf(&mut self, path: u32, value: Scalar<'_>, trail: &Trail) {
        let st = &mut *self.st;
        let epoch = st.epoch;
        st.path_stamp[path as usize] = epoch;
        let ctx = st.context(trail);
        let State {
            pred_stamp,
            pred_head,
            hits,
            fired,
            lower,
            ..
        } = st;
        self.c.paths[path as usize].eval(value, lower, &mut |pred| {
            let p = pred as usize;
            if pred_stamp[p] != epoch {
                pred_stamp[p] = epoch;
                pred_head[p] = NONE;
                fired.push(pred);
            }
            hits.push((ctx, pred_head[p]));
            pred_head[p] = (hits.len() - 1) as u32;
        });
    }

    #[inline]
    fn object_in_array(&mut self) {
        self.st.nested = true;
    }
}
