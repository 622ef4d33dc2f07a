//! Property tests: the compiled matcher (all three front doors: a parsed
//! `Value`, validated bytes, trusted bytes) agrees with the reference interpreter on random patterns and random events, one rule at a
//! time and many rules at once.
//!
//! Patterns and events draw from one small vocabulary of keys and values so that
//! matches, near misses and array-consistency conflicts all happen often.

use busbar::pattern::{Matcher, Pattern};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const STRINGS: &[&str] = &[
    "",
    "foo",
    "Foo",
    "foobar",
    "barfoo",
    "bar",
    "10.0.0.7",
    "10.1.2.3",
    "2001:db8::1",
    "a*b",
];
const NUMBERS: &[f64] = &[0.0, 1.0, 5.0, 5.5, -2.0, 100.0];

fn string() -> impl Strategy<Value = String> {
    prop::sample::select(STRINGS).prop_map(str::to_string)
}

fn number() -> impl Strategy<Value = f64> {
    prop::sample::select(NUMBERS)
}

fn num_json(n: f64) -> Value {
    if n.fract() == 0.0 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => string().prop_map(Value::String),
        3 => number().prop_map(num_json),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

/// One element of a pattern's value list.
fn test_json() -> impl Strategy<Value = Value> {
    let affix = || prop::sample::select(&["", "f", "foo", "bar", "F", "10."][..]);
    prop_oneof![
        3 => scalar(),
        1 => affix().prop_map(|s| json!({"prefix": s})),
        1 => affix().prop_map(|s| json!({"suffix": s})),
        1 => string().prop_map(|s| json!({"equals-ignore-case": s})),
        1 => affix().prop_map(|s| json!({"prefix": {"equals-ignore-case": s}})),
        1 => affix().prop_map(|s| json!({"suffix": {"equals-ignore-case": s}})),
        1 => string().prop_map(|s| json!({"anything-but": s})),
        1 => prop::collection::vec(number(), 1..3).prop_map(|v| json!({"anything-but": v})),
        1 => prop::sample::select(&["f", "bar", "10."][..]).prop_map(|s| json!({"anything-but": {"prefix": s}})),
        1 => prop::sample::select(&["o", "bar"][..]).prop_map(|s| json!({"anything-but": {"suffix": s}})),
        1 => prop::sample::select(&["foo*", "*"][..]).prop_map(|s| json!({"anything-but": {"wildcard": s}})),
        1 => string().prop_map(|s| json!({"anything-but": {"equals-ignore-case": [s]}})),
        2 => (prop::sample::select(&[">", ">=", "<", "<=", "="][..]), number()).prop_map(|(op, n)| json!({"numeric": [op, n]})),
        1 => (number(), prop::sample::select(&["<", "<="][..]), 1.0..10.0f64)
            .prop_map(|(lo, op, w)| json!({"numeric": [">=", lo, op, lo + w.round()]})),
        2 => any::<bool>().prop_map(|b| json!({"exists": b})),
        1 => prop::sample::select(&["10.0.0.0/24", "10.0.0.0/8", "2001:db8::/32"][..]).prop_map(|c| json!({"cidr": c})),
        1 => prop::sample::select(&["foo*", "*foo", "*o*", "f*r", "a\\*b", "*"][..]).prop_map(|w| json!({"wildcard": w})),
    ]
}

/// Leaf paths; `arr` holds objects in events, so `arr.x`/`arr.y` exercise array consistency.
const PATHS: &[&str] = &["a", "b", "c.d", "c.e", "arr.x", "arr.y", "list"];

fn insert_path(obj: &mut Map<String, Value>, path: &str, leaf: Value) {
    let mut parts = path.splitn(2, '.');
    let head = parts.next().unwrap();
    match parts.next() {
        None => {
            obj.insert(head.to_string(), leaf);
        }
        Some(rest) => {
            let child = obj
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = child {
                insert_path(m, rest, leaf);
            }
        }
    }
}

fn fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        prop::sample::select(PATHS),
        prop::collection::vec(test_json(), 1..3),
        1..4,
    )
    .prop_map(|m| {
        let mut obj = Map::new();
        for (path, tests) in m {
            insert_path(&mut obj, path, Value::Array(tests));
        }
        obj
    })
}

fn pattern() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => fields().prop_map(Value::Object),
        1 => (prop::collection::vec(fields(), 2..4)).prop_map(|alts| {
            json!({"$or": alts.into_iter().map(Value::Object).collect::<Vec<_>>()})
        }),
        1 => (fields(), prop::collection::vec(fields(), 2..3)).prop_map(|(base, alts)| {
            // `$or` nested under `c`, beside other fields.
            let mut base = base;
            base.remove("c");
            let nested: Vec<Value> = alts
                .into_iter()
                .map(|mut a| a.remove("c").unwrap_or_else(|| json!({"d": [{"exists": true}]})))
                .collect();
            base.insert("c".into(), json!({"$or": nested}));
            Value::Object(base)
        }),
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
    ]
}

fn event() -> impl Strategy<Value = Value> {
    let item = (
        prop::option::of(field_value()),
        prop::option::of(field_value()),
    )
        .prop_map(|(x, y)| {
            let mut m = Map::new();
            if let Some(x) = x {
                m.insert("x".into(), x);
            }
            if let Some(y) = y {
                m.insert("y".into(), y);
            }
            Value::Object(m)
        });
    (
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of((
            prop::option::of(field_value()),
            prop::option::of(field_value()),
        )),
        prop::option::of(prop::collection::vec(item, 0..4)),
        prop::option::of(field_value()),
    )
        .prop_map(|(a, b, c, arr, list)| {
            let mut m = Map::new();
            if let Some(a) = a {
                m.insert("a".into(), a);
            }
            if let Some(b) = b {
                m.insert("b".into(), b);
            }
            if let Some((d, e)) = c {
                let mut cm = Map::new();
                if let Some(d) = d {
                    cm.insert("d".into(), d);
                }
                if let Some(e) = e {
                    cm.insert("e".into(), e);
                }
                m.insert("c".into(), Value::Object(cm));
            }
            if let Some(arr) = arr {
                m.insert("arr".into(), Value::Array(arr));
            }
            if let Some(list) = list {
                m.insert("list".into(), list);
            }
            Value::Object(m)
        })
}

fn parse_all(patterns: &[Value]) -> Vec<Pattern> {
    patterns
        .iter()
        .filter_map(|p| Pattern::parse(&p.to_string()).ok())
        .collect()
}

fn check(patterns: &[Pattern], events: &[Value]) -> Result<(), TestCaseError> {
    let matcher = Matcher::new(patterns.iter().cloned().enumerate());
    for e in events {
        let want: Vec<usize> = patterns
            .iter()
            .enumerate()
            .filter(|(_, p)| p.matches(e))
            .map(|(i, _)| i)
            .collect();
        let mut got = matcher.matches(e);
        got.sort();
        prop_assert_eq!(
            &got,
            &want,
            "matches() on {} with {:?}",
            e,
            patterns.iter().map(|p| p.source()).collect::<Vec<_>>()
        );
        let mut got = matcher.matches_json(e.to_string().as_bytes()).unwrap();
        got.sort();
        prop_assert_eq!(&got, &want, "matches_json() on {}", e);
        let mut got = matcher.matches_trusted(&serde_json::to_vec(e).unwrap());
        got.sort();
        prop_assert_eq!(&got, &want, "matches_trusted() on {}", e);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn one_rule_agrees_with_reference(p in pattern(), events in prop::collection::vec(event(), 1..6)) {
        let patterns = parse_all(&[p]);
        check(&patterns, &events)?;
    }

    #[test]
    fn many_rules_agree_with_reference(ps in prop::collection::vec(pattern(), 1..24), events in prop::collection::vec(event(), 1..8)) {
        let patterns = parse_all(&ps);
        check(&patterns, &events)?;
    }

    #[test]
    fn whitespace_and_escapes_do_not_change_matches_json(p in pattern(), e in event()) {
        let patterns = parse_all(&[p]);
        let matcher = Matcher::new(patterns.iter().cloned().enumerate());
        let compact = matcher.matches_json(e.to_string().as_bytes()).unwrap();
        let pretty = serde_json::to_string_pretty(&e).unwrap();
        prop_assert_eq!(&matcher.matches_json(pretty.as_bytes()).unwrap(), &compact);
        // The same text with every 'o' written as a \u escape.
        let escaped = e.to_string().replace('o', "\\u006f");
        prop_assert_eq!(&matcher.matches_json(escaped.as_bytes()).unwrap(), &compact);
    }
}

/// A subtree no rule reads, so the scanner only validates it: long numbers and
/// strings (several eight-byte words), escapes, non-ASCII text, nesting.
fn noise() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(&[-122.46618192450234, 37.75602937, 0.0, 1e-7, 6.02e23, -0.5][..])
            .prop_map(|n| json!(n)),
        prop::sample::select(&[0u64, 7, 1234567890123456789][..]).prop_map(|n| json!(n)),
        prop::sample::select(
            &[
                "",
                "plain ascii text",
                "déjà vu – €",
                "tab\there \"q\"",
                "😀x",
                "a.b.c"
            ][..]
        )
        .prop_map(|s| json!(s)),
        Just(json!(null)),
        Just(json!(true)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(&["k", "a.b", "ключ"][..]),
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Bytes that make or break JSON: structure, number and literal letters,
/// escapes, controls, and UTF-8 lead, continuation and invalid bytes.
const MUTATION_BYTES: &[u8] = b"{}[],:\"\\ \t0123456789-+.eEutfnlrDd\x01\x1f\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xed\xa0\xff\xc0";

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// The scanner validates skipped subtrees as strictly as the parts it reads:
    /// however a document is damaged, `matches_json` refuses it exactly when
    /// serde_json does, and agrees with `matches` when both accept it.
    #[test]
    fn matches_json_refuses_exactly_what_serde_json_refuses(
        e in event(),
        extra in noise(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(MUTATION_BYTES)), 1..4),
        escape_some in any::<bool>(),
    ) {
        let patterns = parse_all(&[
            json!({"a": ["foo"], "c": {"d": [{"exists": true}]}}),
            json!({"arr": {"x": [{"prefix": "f"}]}}),
            json!({"list": [{"numeric": [">", 0]}]}),
        ]);
        let matcher = Matcher::new(patterns.iter().cloned().enumerate());
        let mut doc = e;
        doc.as_object_mut().unwrap().insert("noise".into(), extra);
        let mut text = doc.to_string();
        if escape_some {
            // Escapes of every kind, a surrogate pair among them.
            text = text.replace('o', "\\u006f").replace('😀', "\\ud83d\\ude00").replace('x', "\\u0078");
        }
        let mut bytes = text.into_bytes();
        for (at, op, byte) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => bytes.push(byte),
            }
        }
        let scanned = matcher.matches_json(&bytes);
        // Whatever the bytes, the trusted path answers without panicking.
        let trusted = matcher.matches_trusted(&bytes);
        match serde_json::from_slice::<Value>(&bytes) {
            Err(_) => prop_assert!(scanned.is_err(), "accepted {:?}", String::from_utf8_lossy(&bytes)),
            Ok(value) => {
                let scanned = scanned.map_err(|e| TestCaseError::fail(format!("refused {:?}: {e}", String::from_utf8_lossy(&bytes))))?;
                // On valid JSON (noise with escapes, non-ASCII and deep nesting
                // included) the trusted and validating paths agree exactly.
                prop_assert_eq!(&trusted, &scanned, "trusted on {:?}", String::from_utf8_lossy(&bytes));
                // Duplicate keys are the one documented difference (serde_json
                // keeps the last); an edit can make one.
                if !has_duplicate_keys(&bytes) {
                    prop_assert_eq!(scanned, matcher.matches(&value), "on {:?}", String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
}

/// Whether any object in a valid JSON document repeats a key, found by
/// comparing each object's member count in the text with serde_json's map.
fn has_duplicate_keys(bytes: &[u8]) -> bool {
    let value: Value = serde_json::from_slice(bytes).unwrap();
    let mut from_value = Vec::new();
    fn sizes(v: &Value, out: &mut Vec<usize>) {
        match v {
            Value::Object(m) => {
                out.push(m.len());
                m.values().for_each(|v| sizes(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| sizes(v, out)),
            _ => {}
        }
    }
    sizes(&value, &mut from_value);
    // serde_json's streaming deserializer sees every member, duplicates too.
    struct Count<'a>(&'a mut Vec<usize>);
    impl<'de> serde::de::DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> serde::de::Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let at = self.0.len();
            self.0.push(0);
            let mut n = 0;
            while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                map.next_value_seed(Count(self.0))?;
                n += 1;
            }
            self.0[at] = n;
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Count(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let mut from_text = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::de::DeserializeSeed::deserialize(Count(&mut from_text), &mut de).unwrap();
    from_text != from_value
}

#[test]
fn generated_cases_parse_and_match_often() {
    // Guards the generators: patterns that never parse, or never match, would
    // make the properties above vacuous.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (patterns, events) = (pattern(), event());
    let total = 400;
    let (mut parsed, mut matched) = (0, 0);
    for _ in 0..total {
        let text = patterns
            .new_tree(&mut runner)
            .unwrap()
            .current()
            .to_string();
        if let Ok(p) = Pattern::parse(&text) {
            parsed += 1;
            let e = events.new_tree(&mut runner).unwrap().current();
            matched += usize::from(p.matches(&e));
        }
    }
    assert!(
        parsed * 2 > total,
        "only {parsed} of {total} generated patterns parse"
    );
    assert!(
        matched * 10 > parsed,
        "only {matched} of {parsed} patterns matched their event"
    );
}
