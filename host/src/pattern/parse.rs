//! Parsing and validation: pattern JSON text to a list of conjunctions.
//!
//! A pattern is an object of fields; nesting joins keys with `.` into a path
//! (`{"detail":{"amount":[..]}}` and `{"detail.amount":[..]}` are the same), and
//! `$or` forks the pattern into alternatives. Like aws/event-ruler, the parser
//! expands every pattern into its disjunctive normal form: a list of [`Conj`]s,
//! each a set of path tests that must all hold. That form is what both the
//! reference interpreter and the compiled matcher consume.
//!
//! Error texts follow aws/event-ruler's (`JsonRuleCompiler`) wherever it has one.

use super::cidr::Cidr;
use super::numbers::{Bound, Range};
use super::wildcard::Wildcard;
use serde_json::{Map, Value};

/// The most alternatives (from `$or` and from `exists: false` mixed with other
/// tests) one pattern may expand into, so a short pattern cannot blow up.
pub(crate) const MAX_ALTERNATIVES: usize = 1024;

/// One test on the value found at a path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    ExactStr(String),
    ExactNum(f64),
    ExactBool(bool),
    ExactNull,
    Prefix(String),
    /// Stored lower-cased.
    PrefixIc(String),
    Suffix(String),
    /// Stored lower-cased.
    SuffixIc(String),
    /// Stored lower-cased.
    EqualsIc(String),
    AnythingBut(AnythingBut),
    Numeric(Range),
    Exists(bool),
    Cidr(Cidr),
    Wildcard(Wildcard),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnythingBut {
    Strings(Vec<String>),
    Numbers(Vec<f64>),
    Prefixes(Vec<String>),
    Suffixes(Vec<String>),
    Wildcards(Vec<Wildcard>),
    /// Stored lower-cased.
    EqualsIc(Vec<String>),
}

/// A scalar value from an event, the only thing tests look at.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
    Null,
}

impl Scalar<'_> {
    pub fn from_value(v: &Value) -> Option<Scalar<'_>> {
        Some(match v {
            Value::String(s) => Scalar::Str(s),
            Value::Number(n) => Scalar::Num(n.as_f64()?),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Null => Scalar::Null,
            Value::Array(_) | Value::Object(_) => return None,
        })
    }
}

impl Test {
    /// Whether a present value passes. `Exists(false)` never reaches here: the
    /// expansion into [`Conj`]s turns it into an absent path.
    pub fn matches(&self, v: Scalar<'_>) -> bool {
        match (self, v) {
            (Test::Exists(present), _) => *present,
            (Test::ExactStr(p), Scalar::Str(s)) => p == s,
            (Test::ExactNum(p), Scalar::Num(n)) => *p == n,
            (Test::ExactBool(p), Scalar::Bool(b)) => *p == b,
            (Test::ExactNull, Scalar::Null) => true,
            (Test::Prefix(p), Scalar::Str(s)) => s.starts_with(p.as_str()),
            (Test::Suffix(p), Scalar::Str(s)) => s.ends_with(p.as_str()),
            (Test::PrefixIc(p), Scalar::Str(s)) => s.to_lowercase().starts_with(p.as_str()),
            (Test::SuffixIc(p), Scalar::Str(s)) => s.to_lowercase().ends_with(p.as_str()),
            (Test::EqualsIc(p), Scalar::Str(s)) => s.to_lowercase() == *p,
            (Test::Numeric(r), Scalar::Num(n)) => r.contains(n),
            (Test::Cidr(c), Scalar::Str(s)) => c.contains_text(s),
            (Test::Wildcard(w), Scalar::Str(s)) => w.matches(s),
            (Test::AnythingBut(a), v) => a.matches(v),
            _ => false,
        }
    }
}

impl AnythingBut {
    /// A value of another type than the listed ones (null included) always passes.
    pub fn matches(&self, v: Scalar<'_>) -> bool {
        match (self, v) {
            (AnythingBut::Strings(list), Scalar::Str(s)) => !list.iter().any(|x| x == s),
            (AnythingBut::Numbers(list), Scalar::Num(n)) => !list.contains(&n),
            (AnythingBut::Prefixes(list), Scalar::Str(s)) => {
                !list.iter().any(|p| s.starts_with(p.as_str()))
            }
            (AnythingBut::Suffixes(list), Scalar::Str(s)) => {
                !list.iter().any(|p| s.ends_with(p.as_str()))
            }
            (AnythingBut::Wildcards(list), Scalar::Str(s)) => !list.iter().any(|w| w.matches(s)),
            (AnythingBut::EqualsIc(list), Scalar::Str(s)) => {
                let lower = s.to_lowercase();
                !list.contains(&lower)
            }
            _ => true,
        }
    }
}

/// One alternative of a pattern: every `pos` path must hold a value passing one of
/// its tests (all such values taken from one element of any array they share),
/// and no `neg` path may hold any value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conj {
    pub pos: Vec<(String, Vec<Test>)>,
    pub neg: Vec<String>,
}

/// A field's tests before `exists: false` is split out.
type Fields = Vec<(String, Vec<Test>)>;

/// Operator names, which event-ruler refuses as field names inside `$or`
/// (there they would be ambiguous with a match expression).
const RESERVED_IN_OR: &[&str] = &[
    "anything-but",
    "cidr",
    "equals-ignore-case",
    "exists",
    "numeric",
    "prefix",
    "suffix",
    "wildcard",
];

/// An error with the dotted path of the field it concerns, when there is one.
pub(crate) struct Invalid {
    pub reason: String,
    pub path: Option<String>,
}

type Res<T> = Result<T, Invalid>;

fn bad<T>(reason: impl Into<String>, path: &str) -> Res<T> {
    Err(Invalid {
        reason: reason.into(),
        path: if path.is_empty() {
            None
        } else {
            Some(path.to_string())
        },
    })
}

/// Parses a pattern already read as JSON into its alternatives.
pub(crate) fn parse_value(v: &Value) -> Res<Vec<Conj>> {
    let Value::Object(map) = v else {
        return bad("Filter is not an object", "");
    };
    let alternatives = parse_object(map, "", false)?;
    let mut conjs = Vec::new();
    for fields in alternatives {
        split_absent(fields, &mut conjs)?;
    }
    Ok(conjs)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Returns the alternatives an object expands to.
fn parse_object(map: &Map<String, Value>, prefix: &str, in_or: bool) -> Res<Vec<Fields>> {
    if map.is_empty() {
        return bad("Empty objects are not allowed", prefix);
    }
    let mut alts: Vec<Fields> = vec![Vec::new()];
    for (key, value) in map {
        let branch: Vec<Fields> = if key == "$or" {
            parse_or(value, prefix)?
        } else {
            let path = join(prefix, key);
            if in_or && RESERVED_IN_OR.contains(&key.as_str()) {
                return bad(
                    format!("{key} is Ruler reserved fieldName which cannot be used inside $or."),
                    &path,
                );
            }
            match value {
                Value::Object(inner) => parse_object(inner, &path, in_or)?,
                Value::Array(items) => vec![vec![(path.clone(), parse_leaf(items, &path)?)]],
                _ => return bad(format!("\"{key}\" must be an object or an array"), &path),
            }
        };
        alts = product(alts, branch, prefix)?;
    }
    Ok(alts)
}

fn parse_or(value: &Value, prefix: &str) -> Res<Vec<Fields>> {
    let Value::Array(items) = value else {
        return bad("It must be an Array followed with $or.", prefix);
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(map) = item else {
            return bad(
                "Only JSON object is allowed in array of $or relationship.",
                prefix,
            );
        };
        out.extend(parse_object(map, prefix, true)?);
        if out.len() > MAX_ALTERNATIVES {
            return too_complex(prefix);
        }
    }
    if items.len() < 2 {
        return bad(
            "There must have at least 2 Objects in $or relationship.",
            prefix,
        );
    }
    Ok(out)
}

fn too_complex<T>(prefix: &str) -> Res<T> {
    bad(
        format!(
            "Rule is too complex: it expands to more than {MAX_ALTERNATIVES} alternatives ($or and exists:false combinations)"
        ),
        prefix,
    )
}

/// Every combination of one alternative from each side, refusing a path twice in
/// one alternative as event-ruler does.
fn product(left: Vec<Fields>, right: Vec<Fields>, prefix: &str) -> Res<Vec<Fields>> {
    if left.len().saturating_mul(right.len()) > MAX_ALTERNATIVES {
        return too_complex(prefix);
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            let mut merged = l.clone();
            for (path, tests) in r {
                if merged.iter().any(|(p, _)| p == path) {
                    return bad(
                        format!("Path `{path}` cannot be allowed multiple times"),
                        path,
                    );
                }
                merged.push((path.clone(), tests.clone()));
            }
            out.push(merged);
        }
    }
    Ok(out)
}

/// A field whose list holds `exists: false` next to other tests means "absent, or
/// one of the others": two alternatives.
fn split_absent(fields: Fields, out: &mut Vec<Conj>) -> Res<()> {
    let mut conjs = vec![Conj {
        pos: Vec::new(),
        neg: Vec::new(),
    }];
    for (path, tests) in fields {
        let absent = tests.contains(&Test::Exists(false));
        let rest: Vec<Test> = tests
            .into_iter()
            .filter(|t| *t != Test::Exists(false))
            .collect();
        if !absent {
            for c in &mut conjs {
                c.pos.push((path.clone(), rest.clone()));
            }
            continue;
        }
        let mut next = Vec::new();
        for c in &conjs {
            let mut a = c.clone();
            a.neg.push(path.clone());
            next.push(a);
            if !rest.is_empty() {
                let mut b = c.clone();
                b.pos.push((path.clone(), rest.clone()));
                next.push(b);
            }
        }
        conjs = next;
        if out.len() + conjs.len() > MAX_ALTERNATIVES {
            return too_complex("");
        }
    }
    out.extend(conjs);
    if out.len() > MAX_ALTERNATIVES {
        return too_complex("");
    }
    Ok(())
}

fn parse_leaf(items: &[Value], path: &str) -> Res<Vec<Test>> {
    if items.is_empty() {
        return bad("Empty arrays are not allowed", path);
    }
    let mut tests = Vec::with_capacity(items.len());
    for item in items {
        let t = match item {
            Value::String(s) => Test::ExactStr(s.clone()),
            Value::Number(n) => Test::ExactNum(number(n)),
            Value::Bool(b) => Test::ExactBool(*b),
            Value::Null => Test::ExactNull,
            Value::Object(expr) => parse_expression(expr, path)?,
            Value::Array(_) => {
                return bad(
                    "Match value must be String, number, true, false, or null",
                    path,
                );
            }
        };
        tests.push(t);
    }
    Ok(tests)
}

fn number(n: &serde_json::Number) -> f64 {
    // Without serde_json's arbitrary_precision every number has an f64 form.
    n.as_f64().unwrap_or(f64::NAN)
}

/// The one key of a match expression object, or the matching error.
fn single<'a>(
    expr: &'a Map<String, Value>,
    path: &str,
    missing: &str,
) -> Res<(&'a str, &'a Value)> {
    let mut it = expr.iter();
    let Some((k, v)) = it.next() else {
        return bad(missing, path);
    };
    if it.next().is_some() {
        return bad("Only one key allowed in match expression", path);
    }
    Ok((k.as_str(), v))
}

fn parse_expression(expr: &Map<String, Value>, path: &str) -> Res<Test> {
    let (op, operand) = single(expr, path, "Match expression name not found")?;
    match op {
        "prefix" | "suffix" => {
            let is_prefix = op == "prefix";
            match operand {
                Value::String(s) => Ok(if is_prefix {
                    Test::Prefix(s.clone())
                } else {
                    Test::Suffix(s.clone())
                }),
                Value::Object(inner) => {
                    let missing = if is_prefix {
                        "Prefix expression name not found"
                    } else {
                        "Suffix expression name not found"
                    };
                    let (inner_op, inner_val) = single(inner, path, missing)?;
                    if inner_op != "equals-ignore-case" {
                        return bad(format!("Unsupported {op} pattern: {inner_op}"), path);
                    }
                    let Value::String(s) = inner_val else {
                        return bad("equals-ignore-case match pattern must be a string", path);
                    };
                    let lower = s.to_lowercase();
                    Ok(if is_prefix {
                        Test::PrefixIc(lower)
                    } else {
                        Test::SuffixIc(lower)
                    })
                }
                _ => bad(format!("{op} match pattern must be a string"), path),
            }
        }
        "equals-ignore-case" => match operand {
            Value::String(s) => Ok(Test::EqualsIc(s.to_lowercase())),
            _ => bad("equals-ignore-case match pattern must be a string", path),
        },
        "wildcard" => match operand {
            Value::String(s) => Wildcard::parse(s)
                .map(Test::Wildcard)
                .or_else(|e| bad(e, path)),
            _ => bad("wildcard match pattern must be a string", path),
        },
        "numeric" => match operand {
            Value::Array(items) => parse_numeric(items, path).map(Test::Numeric),
            _ => bad("Value of numeric must be an array.", path),
        },
        "exists" => match operand {
            Value::Bool(b) => Ok(Test::Exists(*b)),
            _ => bad("exists match pattern must be either true or false.", path),
        },
        "cidr" => match operand {
            // event-ruler reuses the prefix message here.
            Value::String(s) => Cidr::parse(s).map(Test::Cidr).or_else(|e| bad(e, path)),
            _ => bad("prefix match pattern must be a string", path),
        },
        "anything-but" => parse_anything_but(operand, path).map(Test::AnythingBut),
        other => bad(format!("Unrecognized match type {other}"), path),
    }
}

fn parse_numeric(items: &[Value], path: &str) -> Res<Range> {
    if items.is_empty() {
        return bad("Empty arrays are not allowed", path);
    }
    let op_at = |i: usize| -> Res<&str> {
        match items.get(i) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(other) => bad(format!("Invalid member in numeric match: {other}"), path),
            None => bad("Invalid member in numeric match: ]", path),
        }
    };
    let value_at = |i: usize, op: &str| -> Res<f64> {
        match items.get(i) {
            Some(Value::Number(n)) => Ok(number(n)),
            _ => {
                let name = if op == "=" { "equals" } else { op };
                bad(format!("Value of {name} must be numeric"), path)
            }
        }
    };
    let op = op_at(0)?;
    let first = value_at(1, op)?;
    let range = match op {
        "=" => {
            if items.len() > 2 {
                return bad("Too many elements in numeric expression", path);
            }
            return Ok(Range::equal(first));
        }
        "<" | "<=" => {
            if items.len() > 2 {
                return bad("Too many elements in numeric expression", path);
            }
            return Ok(Range {
                lower: None,
                upper: Some(Bound {
                    value: first,
                    inclusive: op == "<=",
                }),
            });
        }
        ">" | ">=" => Range {
            lower: Some(Bound {
                value: first,
                inclusive: op == ">=",
            }),
            upper: None,
        },
        other => {
            return bad(
                format!("Unrecognized numeric range operator: {other}"),
                path,
            );
        }
    };
    if items.len() == 2 {
        return Ok(range);
    }
    let top_op = match &items[2] {
        Value::String(s) => s.as_str(),
        other => return bad(format!("Bad value in numeric range: {other}"), path),
    };
    if top_op != "<" && top_op != "<=" {
        return bad(format!("Bad numeric range operator: {top_op}"), path);
    }
    let top = value_at(3, top_op)?;
    if items.len() > 4 {
        return bad("Too many terms in numeric range expression", path);
    }
    if first >= top {
        return bad("Bottom must be less than top", path);
    }
    Ok(Range {
        lower: range.lower,
        upper: Some(Bound {
            value: top,
            inclusive: top_op == "<=",
        }),
    })
}

fn parse_anything_but(operand: &Value, path: &str) -> Res<AnythingBut> {
    let shape_error = "Value of anything-but must be an array or single string/number value.";
    match operand {
        Value::String(s) => Ok(AnythingBut::Strings(vec![s.clone()])),
        Value::Number(n) => Ok(AnythingBut::Numbers(vec![number(n)])),
        Value::Array(items) => {
            if items.is_empty() {
                return bad("Empty arrays are not allowed", path);
            }
            let mut strings = Vec::new();
            let mut numbers = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => strings.push(s.clone()),
                    Value::Number(n) => numbers.push(number(n)),
                    _ => {
                        return bad(
                            "Inside anything but list, start|null|boolean is not supported.",
                            path,
                        );
                    }
                }
            }
            match (strings.is_empty(), numbers.is_empty()) {
                (false, true) => Ok(AnythingBut::Strings(strings)),
                (true, false) => Ok(AnythingBut::Numbers(numbers)),
                _ => bad(
                    "Inside anything but list, either all values are number or string, mixed type is not supported",
                    path,
                ),
            }
        }
        Value::Object(inner) => {
            let (op, value) = single(inner, path, "Anything-But expression name not found")?;
            let (type_error, empty_error) = match op {
                "prefix" | "suffix" => (
                    "prefix/suffix match pattern must be a string",
                    Some("Null prefix/suffix not allowed"),
                ),
                "wildcard" => ("wildcard match pattern must be a string", None),
                "equals-ignore-case" => (
                    "Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported.",
                    None,
                ),
                other => return bad(format!("Unsupported anything-but pattern: {other}"), path),
            };
            let texts: Vec<&str> = match value {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => {
                    if items.is_empty() {
                        return bad("Empty arrays are not allowed", path);
                    }
                    let mut texts = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            Value::String(s) => texts.push(s.as_str()),
                            _ => return bad(type_error, path),
                        }
                    }
                    texts
                }
                Value::Number(_) => return bad(type_error, path),
                _ => return bad(shape_error, path),
            };
            if let Some(msg) = empty_error
                && texts.iter().any(|t| t.is_empty())
            {
                return bad(msg, path);
            }
            let owned = || texts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
            Ok(match op {
                "prefix" => AnythingBut::Prefixes(owned()),
                "suffix" => AnythingBut::Suffixes(owned()),
                "wildcard" => AnythingBut::Wildcards(
                    texts
                        .iter()
                        .map(|t| Wildcard::parse(t))
                        .collect::<Result<_, _>>()
                        .or_else(|e| bad(e, path))?,
                ),
                _ => AnythingBut::EqualsIc(texts.iter().map(|t| t.to_lowercase()).collect()),
            })
        }
        _ => bad(shape_error, path),
    }
}
