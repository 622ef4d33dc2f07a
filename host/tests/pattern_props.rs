//! Property tests: the compiled matcher (both front doors) agrees with the
//! reference interpreter on random patterns and random events, one rule at a
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
