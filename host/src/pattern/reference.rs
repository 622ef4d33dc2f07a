//! The reference interpreter: a direct reading of the semantics, kept simple so
//! the compiled [`Matcher`](super::Matcher) can be checked against it.
//!
//! The event is flattened into leaves: every scalar (string, number, boolean,
//! null) with its dotted path and its *trail*, the list of (array, index) pairs
//! on the way down from the root. Arrays add no path step, so an array's
//! elements sit at the array's own path. A conjunction matches when every
//! positive path has a leaf that passes one of its tests, all the chosen leaves
//! agree on the element of every array they have in common (event-ruler's
//! "array consistency"), and no absent path has any leaf at all.

use super::parse::{Conj, Scalar};
use serde_json::Value;

struct Leaf<'a> {
    path: String,
    value: Scalar<'a>,
    trail: Vec<(u32, u32)>,
}

pub(crate) fn matches(conjs: &[Conj], event: &Value) -> bool {
    let mut leaves = Vec::new();
    if let Value::Object(map) = event {
        let mut arrays = 0u32;
        let mut trail = Vec::new();
        for (k, v) in map {
            flatten(k.clone(), v, &mut trail, &mut arrays, &mut leaves);
        }
    }
    conjs.iter().any(|c| conj_matches(c, &leaves))
}

fn flatten<'a>(
    path: String,
    v: &'a Value,
    trail: &mut Vec<(u32, u32)>,
    arrays: &mut u32,
    out: &mut Vec<Leaf<'a>>,
) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                flatten(format!("{path}.{k}"), child, trail, arrays, out);
            }
        }
        Value::Array(items) => {
            let id = *arrays;
            *arrays += 1;
            for (i, item) in items.iter().enumerate() {
                trail.push((id, i as u32));
                flatten(path.clone(), item, trail, arrays, out);
                trail.pop();
            }
        }
        scalar => {
            if let Some(value) = Scalar::from_value(scalar) {
                out.push(Leaf {
                    path,
                    value,
                    trail: trail.clone(),
                });
            }
        }
    }
}

/// Two trails agree unless they pass through different elements of one array.
pub(crate) fn consistent(a: &[(u32, u32)], b: &[(u32, u32)]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if x.0 != y.0 {
            // Different arrays inside the same element: separate branches.
            return true;
        }
        if x.1 != y.1 {
            return false;
        }
    }
    true
}

fn conj_matches(c: &Conj, leaves: &[Leaf<'_>]) -> bool {
    if c.neg.iter().any(|p| leaves.iter().any(|l| &l.path == p)) {
        return false;
    }
    let candidates: Vec<Vec<&[(u32, u32)]>> = c
        .pos
        .iter()
        .map(|(path, tests)| {
            leaves
                .iter()
                .filter(|l| &l.path == path && tests.iter().any(|t| t.matches(l.value)))
                .map(|l| l.trail.as_slice())
                .collect()
        })
        .collect();
    if candidates.iter().any(|c| c.is_empty()) {
        return false;
    }
    let mut chosen = Vec::with_capacity(candidates.len());
    choose(&candidates, &mut chosen)
}

fn choose<'a>(candidates: &[Vec<&'a [(u32, u32)]>], chosen: &mut Vec<&'a [(u32, u32)]>) -> bool {
    let Some(options) = candidates.get(chosen.len()) else {
        return true;
    };
    for &t in options {
        if chosen.iter().all(|c| consistent(c, t)) {
            chosen.push(t);
            if choose(candidates, chosen) {
                return true;
            }
            chosen.pop();
        }
    }
    false
}
