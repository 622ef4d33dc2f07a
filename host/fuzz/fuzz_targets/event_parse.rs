//! Any bytes given to `Matcher::matches_json` are refused exactly when
//! serde_json refuses them, and otherwise match as the parsed `Value` does;
//! `Matcher::matches_trusted` never panics on them and, on valid JSON, agrees
//! with both.
#![no_main]

use busbar::pattern::{Matcher, Pattern};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const PATTERNS: &[&str] = &[
    r#"{"source":["a"]}"#,
    r#"{"detail":{"n":[{"numeric":[">",0]}]}}"#,
    r#"{"detail":{"s":[{"prefix":"x"},{"suffix":"y"},{"equals-ignore-case":"Z"}]}}"#,
    r#"{"detail":{"arr":{"x":[1],"y":["b"]}}}"#,
    r#"{"detail":{"gone":[{"exists":false}]}}"#,
    r#"{"$or":[{"a.b":[{"wildcard":"*q*"}]},{"ip":[{"cidr":"10.0.0.0/8"}]}]}"#,
    r#"{"detail":{"s":[{"anything-but":["x","y"]}]}}"#,
];

fuzz_target!(|data: &[u8]| {
    static MATCHER: OnceLock<(Vec<Pattern>, Matcher<usize>)> = OnceLock::new();
    let (patterns, matcher) = MATCHER.get_or_init(|| {
        let ps: Vec<Pattern> = PATTERNS
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        let m = Matcher::new(ps.iter().cloned().enumerate());
        (ps, m)
    });
    let scanned = matcher.matches_json(data);
    // Any bytes at all: the trusted path answers without panicking.
    let trusted = matcher.matches_trusted(data);
    match serde_json::from_slice::<serde_json::Value>(data) {
        Err(_) => assert!(scanned.is_err()),
        Ok(value) => {
            let mut got = scanned.expect("serde_json accepts this input");
            // On valid JSON the trusted path sees what the validating one sees,
            // duplicate keys included; and on busbar's own serialization of the
            // value, what the parsed value gives.
            assert_eq!(trusted, got);
            let mut stored = matcher.matches_trusted(&serde_json::to_vec(&value).unwrap());
            stored.sort();
            got.sort();
            let mut by_value = matcher.matches(&value);
            by_value.sort();
            // Duplicate keys are the one documented divergence: serde_json keeps
            // the last, the scanner sees every one.
            if serde_json::from_slice::<NoDuplicates>(data).is_ok() {
                assert_eq!(got, by_value);
            }
            assert_eq!(stored, by_value);
            let reference: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| p.matches(&value))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(by_value, reference);
        }
    }
});

/// Deserializes only when no object repeats a key.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without duplicate keys")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
}
