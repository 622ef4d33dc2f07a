//! The EventBridge pattern language: parse and validate, compile, match.
// Interface placeholder; the engine replaces this file.
use std::sync::Arc;
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub max_pattern_chars: usize,
}
#[derive(Debug, Clone)]
pub struct Pattern(String);
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(String);
impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PatternError {}
impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        Ok(Pattern(text.into()))
    }
    pub fn parse_with(text: &str, _l: &Limits) -> Result<Pattern, PatternError> {
        Ok(Pattern(text.into()))
    }
    pub fn matches(&self, _event: &serde_json::Value) -> bool {
        false
    }
    pub fn source(&self) -> &str {
        &self.0
    }
}
pub struct Matcher<T> {
    rules: Vec<(T, Pattern)>,
}
impl<T: Clone> Matcher<T> {
    pub fn new(rules: impl IntoIterator<Item = (T, Pattern)>) -> Matcher<T> {
        Matcher {
            rules: rules.into_iter().collect(),
        }
    }
    pub fn matches(&self, event: &serde_json::Value) -> Vec<T> {
        self.rules
            .iter()
            .filter(|r| r.1.matches(event))
            .map(|r| r.0.clone())
            .collect()
    }
    pub fn matches_json(&self, json: &[u8]) -> Result<Vec<T>, serde_json::Error> {
        Ok(self.matches(&serde_json::from_slice(json)?))
    }
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
pub struct SharedMatcher<T>(arc_swap::ArcSwap<Matcher<T>>);
impl<T: Clone> SharedMatcher<T> {
    pub fn new(m: Matcher<T>) -> Self {
        SharedMatcher(arc_swap::ArcSwap::from_pointee(m))
    }
    pub fn load(&self) -> Arc<Matcher<T>> {
        self.0.load_full()
    }
    pub fn store(&self, m: Matcher<T>) {
        self.0.store(Arc::new(m))
    }
}
