//! The EventBridge pattern language: parse and validate, compile, match.
//!
//! - [`Pattern`] is one parsed, validated pattern; [`Pattern::matches`] is the
//!   reference interpreter (`reference.rs`), simple and slow.
//! - [`Matcher`] compiles many patterns into one automaton (`automaton.rs`) whose
//!   cost per event does not grow with the number of rules, and matches parsed
//!   events or raw JSON bytes (`flatten.rs` scans the bytes without building a
//!   `Value`; for bytes busbar wrote itself, `skip.rs` passes over what no rule
//!   reads without validating it).
//! - [`SharedMatcher`] lets a bus swap in a recompiled matcher while readers
//!   keep matching.
//!
//! The language itself is described in `host/PATTERNS.md`.

mod automaton;
mod cidr;
mod flatten;
mod hash;
mod numbers;
mod parse;
mod reference;
mod skip;
mod wildcard;

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Limits applied when parsing a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The longest pattern accepted, in characters (Unicode scalar values).
    pub max_pattern_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pattern_chars: 2048,
        }
    }
}

/// Why a pattern was refused. `Display` gives the AWS-style reason, followed by
/// the field it concerns when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    reason: String,
    path: Option<String>,
}

impl PatternError {
    /// The reason alone, as aws/event-ruler words it (e.g. `Empty arrays are not allowed`).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The dotted path of the field at fault, when the error concerns one.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{} (at field \"{}\")", self.reason, p),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for PatternError {}

/// A parsed and validated event pattern.
#[derive(Clone)]
pub struct Pattern {
    source: Arc<str>,
    conjs: Arc<[parse::Conj]>,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pattern")
            .field("source", &self.source)
            .field("alternatives", &self.conjs.len())
            .finish()
    }
}

impl Pattern {
    /// Parses with the default [`Limits`].
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        Pattern::parse_with(text, &Limits::default())
    }

    pub fn parse_with(text: &str, limits: &Limits) -> Result<Pattern, PatternError> {
        let chars = text.chars().count();
        if chars > limits.max_pattern_chars {
            return Err(PatternError {
                reason: format!(
                    "Event pattern is too long: {chars} characters, the limit is {}",
                    limits.max_pattern_chars
                ),
                path: None,
            });
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| PatternError {
            reason: format!("Event pattern is not valid JSON: {e}"),
            path: None,
        })?;
        let conjs = parse::parse_value(&value).map_err(|e| PatternError {
            reason: e.reason,
            path: e.path,
        })?;
        Ok(Pattern {
            source: text.into(),
            conjs: conjs.into(),
        })
    }

    /// Whether `event` (the full envelope as JSON) matches, by the reference
    /// interpreter. Use a [`Matcher`] to match many patterns quickly.
    pub fn matches(&self, event: &serde_json::Value) -> bool {
        reference::matches(&self.conjs, event)
    }

    /// The text the pattern was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Many patterns compiled together; `matches` returns the keys of those that match.
pub struct Matcher<T> {
    /// Distinct keys; compiled sub-rules refer to them by index.
    targets: Vec<T>,
    rules: usize,
    compiled: automaton::Compiled,
}

impl<T> fmt::Debug for Matcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matcher")
            .field("rules", &self.rules)
            .field("keys", &self.targets.len())
            .finish()
    }
}

impl<T: Clone + Eq + Hash + Send + Sync> Matcher<T> {
    /// Compiles every rule. A key given more than once matches if any of its
    /// patterns does (and is returned once).
    pub fn new(rules: impl IntoIterator<Item = (T, Pattern)>) -> Matcher<T> {
        let mut index: HashMap<T, u32> = HashMap::new();
        let mut targets = Vec::new();
        let mut patterns = Vec::new();
        for (key, pattern) in rules {
            let t = *index.entry(key.clone()).or_insert_with(|| {
                targets.push(key);
                (targets.len() - 1) as u32
            });
            patterns.push((t, pattern));
        }
        let compiled = automaton::Compiled::new(
            patterns.iter().map(|(t, p)| (*t, &p.conjs[..])),
            targets.len(),
        );
        Matcher {
            targets,
            rules: patterns.len(),
            compiled,
        }
    }

    /// The keys of the rules `event` matches, each once, in the order the keys
    /// were first given.
    pub fn matches(&self, event: &serde_json::Value) -> Vec<T> {
        let mut out = Vec::new();
        self.compiled.match_value(event, &mut out);
        self.keys(&out)
    }

    /// Like [`Matcher::matches`], on raw JSON: the bytes are scanned in place and
    /// only the fields some rule reads are decoded. Malformed JSON is an error.
    pub fn matches_json(&self, json: &[u8]) -> Result<Vec<T>, serde_json::Error> {
        let mut out = Vec::new();
        match self.compiled.match_json::<false>(json, &mut out) {
            Ok(()) => Ok(self.keys(&out)),
            // The scanner refuses what serde_json refuses (lone surrogates,
            // numbers out of range, nesting beyond 128 included); serde_json
            // gives the precise error, and should the two ever disagree about
            // an input, its verdict and the `Value` path decide.
            Err(flatten::Malformed) => {
                let value: serde_json::Value = serde_json::from_slice(json)?;
                Ok(self.matches(&value))
            }
        }
    }

    /// Like [`Matcher::matches_json`], for bytes busbar serialized itself
    /// (`serde_json::to_vec` of an event validated at ingest), as the router
    /// and the archive hold them. Values no rule reads are passed over without
    /// checking their grammar, which is most of the work on untrusted input.
    /// Input that is not valid JSON never panics: it falls back to the
    /// validating path and, refused there, matches nothing. Use
    /// [`Matcher::matches_json`] for bytes from outside.
    pub fn matches_trusted(&self, json: &[u8]) -> Vec<T> {
        let mut out = Vec::new();
        match self.compiled.match_json::<true>(json, &mut out) {
            Ok(()) => self.keys(&out),
            Err(flatten::Malformed) => self.matches_json(json).unwrap_or_default(),
        }
    }

    /// The number of rules given (not of distinct keys).
    pub fn len(&self) -> usize {
        self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    fn keys(&self, indices: &[u32]) -> Vec<T> {
        indices
            .iter()
            .map(|&i| self.targets[i as usize].clone())
            .collect()
    }
}

/// A matcher that can be replaced while readers keep matching: readers `load` a
/// snapshot and keep it for as long as they need; `store` never waits for them.
pub struct SharedMatcher<T> {
    inner: ArcSwap<Matcher<T>>,
}

impl<T> SharedMatcher<T> {
    pub fn new(m: Matcher<T>) -> Self {
        SharedMatcher {
            inner: ArcSwap::from_pointee(m),
        }
    }

    pub fn load(&self) -> Arc<Matcher<T>> {
        self.inner.load_full()
    }

    pub fn store(&self, m: Matcher<T>) {
        self.inner.store(Arc::new(m));
    }
}

impl<T> fmt::Debug for SharedMatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMatcher")
            .field("current", &*self.inner.load())
            .finish()
    }
}
