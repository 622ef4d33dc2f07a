//! Conformance with the EventBridge pattern language as the AWS user guide
//! describes it (event patterns, comparison operators, content filtering,
//! arrays, data types), and with aws/event-ruler's validation messages.
//!
//! Every case runs through the reference interpreter (`Pattern::matches`) and
//! the compiled matcher (`Matcher::matches`, `Matcher::matches_json` and
//! `Matcher::matches_trusted`).

use busbar::pattern::{Limits, Matcher, Pattern};
use serde_json::{Value, json};

/// A full envelope around `detail`, like the events busbar matches.
fn envelope(detail: Value) -> Value {
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "111122223333",
        "time": "2017-12-22T18:43:48Z",
        "region": "us-west-1",
        "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
        "detail": detail
    })
}

#[track_caller]
fn check(pattern: &str, event: &Value, expected: bool) {
    let p =
        Pattern::parse(pattern).unwrap_or_else(|e| panic!("pattern {pattern} should parse: {e}"));
    assert_eq!(
        p.matches(event),
        expected,
        "reference: {pattern} on {event}"
    );
    let m = Matcher::new([("rule", p.clone())]);
    let want: Vec<&str> = if expected { vec!["rule"] } else { vec![] };
    assert_eq!(m.matches(event), want, "matcher: {pattern} on {event}");
    let bytes = serde_json::to_vec(event).unwrap();
    assert_eq!(
        m.matches_json(&bytes).unwrap(),
        want,
        "matches_json: {pattern} on {event}"
    );
    assert_eq!(
        m.matches_trusted(&bytes),
        want,
        "matches_trusted: {pattern} on {event}"
    );
    // Alongside unrelated rules, the answer must not change.
    let noise =
        Pattern::parse(r#"{"source":["nothing.matches.this"],"detail":{"zz":[{"prefix":"q"}]}}"#)
            .unwrap();
    let m = Matcher::new([("noise", noise), ("rule", p)]);
    assert_eq!(
        m.matches_json(&bytes).unwrap(),
        want,
        "matches_json with noise: {pattern} on {event}"
    );
    assert_eq!(
        m.matches_trusted(&bytes),
        want,
        "matches_trusted with noise: {pattern} on {event}"
    );
}

#[track_caller]
fn yes(pattern: &str, event: &Value) {
    check(pattern, event, true)
}

#[track_caller]
fn no(pattern: &str, event: &Value) {
    check(pattern, event, false)
}

#[track_caller]
fn invalid(pattern: &str, reason: &str) {
    match Pattern::parse(pattern) {
        Ok(_) => panic!("pattern {pattern} should be refused with {reason:?}"),
        Err(e) => assert!(
            e.to_string().contains(reason),
            "pattern {pattern}: expected {reason:?}, got {:?}",
            e.to_string()
        ),
    }
}

// ---- event patterns: structure -------------------------------------------------

#[test]
fn top_level_fields_and_nesting() {
    let e = envelope(json!({"state": "running", "instance-id": "i-1"}));
    yes(r#"{"source":["aws.ec2"]}"#, &e);
    yes(
        r#"{"source":["aws.ec2"],"detail-type":["EC2 Instance State-change Notification"]}"#,
        &e,
    );
    yes(r#"{"detail":{"state":["running"]}}"#, &e);
    yes(r#"{"detail.state":["running"]}"#, &e);
    no(r#"{"source":["aws.s3"]}"#, &e);
    no(
        r#"{"source":["aws.ec2"],"detail":{"state":["stopped"]}}"#,
        &e,
    );
    no(r#"{"detail":{"missing":["running"]}}"#, &e);
}

#[test]
fn structure_errors() {
    invalid(r#"["source"]"#, "Filter is not an object");
    invalid(r#""x""#, "Filter is not an object");
    invalid(
        r#"{"source":"aws.ec2"}"#,
        "\"source\" must be an object or an array",
    );
    invalid(r#"{"source":5}"#, "must be an object or an array");
    invalid(r#"{"source":[]}"#, "Empty arrays are not allowed");
    invalid(r#"{"detail":{}}"#, "Empty objects are not allowed");
    invalid("{}", "Empty objects are not allowed");
    invalid(
        r#"{"source":[["a"]]}"#,
        "Match value must be String, number, true, false, or null",
    );
    invalid(r#"{"source":["a"]"#, "not valid JSON");
    invalid(
        r#"{"detail.a":["x"],"detail":{"a":["y"]}}"#,
        "Path `detail.a` cannot be allowed multiple times",
    );
}

#[test]
fn keys_and_operators_are_case_sensitive() {
    let e = envelope(json!({"State": "running"}));
    yes(r#"{"detail":{"State":["running"]}}"#, &e);
    no(r#"{"detail":{"state":["running"]}}"#, &e);
    no(r#"{"detail":{"State":["RUNNING"]}}"#, &e);
    invalid(
        r#"{"detail":{"State":[{"Prefix":"r"}]}}"#,
        "Unrecognized match type Prefix",
    );
    invalid(
        r#"{"detail":{"State":[{"contains":"r"}]}}"#,
        "Unrecognized match type contains",
    );
}

#[test]
fn pattern_size_limit() {
    let long = format!(r#"{{"source":["{}"]}}"#, "a".repeat(2100));
    invalid(&long, "too long");
    let e = Pattern::parse(&long).unwrap_err();
    assert!(e.to_string().contains("2048"), "{e}");
    let p = Pattern::parse_with(
        &long,
        &Limits {
            max_pattern_chars: 4096,
        },
    )
    .unwrap();
    assert_eq!(p.source(), long);
    assert!(
        Pattern::parse_with(
            r#"{"source":["aws.ec2"]}"#,
            &Limits {
                max_pattern_chars: 10
            }
        )
        .is_err()
    );
}

// ---- exact values and data types ---------------------------------------------------

#[test]
fn exact_strings_numbers_booleans_null() {
    let e = envelope(json!({"s": "5", "n": 5, "f": 5.0, "t": true, "z": null, "empty": ""}));
    yes(r#"{"detail":{"s":["5"]}}"#, &e);
    no(r#"{"detail":{"s":[5]}}"#, &e);
    yes(r#"{"detail":{"n":[5]}}"#, &e);
    yes(r#"{"detail":{"n":[5.0]}}"#, &e);
    yes(r#"{"detail":{"n":[5e0]}}"#, &e);
    yes(r#"{"detail":{"f":[5]}}"#, &e);
    no(r#"{"detail":{"n":["5"]}}"#, &e);
    no(r#"{"detail":{"n":[6]}}"#, &e);
    yes(r#"{"detail":{"t":[true]}}"#, &e);
    no(r#"{"detail":{"t":[false]}}"#, &e);
    no(r#"{"detail":{"t":["true"]}}"#, &e);
    yes(r#"{"detail":{"z":[null]}}"#, &e);
    no(r#"{"detail":{"z":["null"]}}"#, &e);
    no(r#"{"detail":{"missing":[null]}}"#, &e);
    yes(r#"{"detail":{"empty":[""]}}"#, &e);
    no(r#"{"detail":{"empty":[null]}}"#, &e);
    no(r#"{"detail":{"z":[""]}}"#, &e);
    yes(r#"{"detail":{"s":["4","5","6"]}}"#, &e);
    invalid(
        r#"{"detail":{"n":[{}]}}"#,
        "Match expression name not found",
    );
}

#[test]
fn numbers_have_no_string_form_and_strings_no_number_form() {
    let e = envelope(json!({"account": "123456789012", "count": 123456789012u64}));
    yes(r#"{"detail":{"account":["123456789012"]}}"#, &e);
    no(r#"{"detail":{"account":[123456789012]}}"#, &e);
    yes(r#"{"detail":{"count":[123456789012]}}"#, &e);
    no(r#"{"detail":{"count":["123456789012"]}}"#, &e);
}

// ---- arrays ------------------------------------------------------------------

#[test]
fn array_values_match_any_element() {
    let e = envelope(json!({"tags": ["a", "b", "c"]}));
    yes(
        r#"{"resources":["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"]}"#,
        &e,
    );
    yes(r#"{"detail":{"tags":["b"]}}"#, &e);
    yes(r#"{"detail":{"tags":["x","c"]}}"#, &e);
    no(r#"{"detail":{"tags":["x","y"]}}"#, &e);
    let nested = envelope(json!({"m": [[1, 2], [3, [4]]]}));
    yes(r#"{"detail":{"m":[4]}}"#, &nested);
    no(r#"{"detail":{"m":[5]}}"#, &nested);
}

#[test]
fn empty_array_in_event_has_no_values() {
    let e = envelope(json!({"tags": []}));
    no(r#"{"detail":{"tags":[{"exists":true}]}}"#, &e);
    yes(r#"{"detail":{"tags":[{"exists":false}]}}"#, &e);
    no(r#"{"detail":{"tags":[{"anything-but":"a"}]}}"#, &e);
}

#[test]
fn arrays_of_objects_keep_elements_apart() {
    let e = envelope(json!({"items": [
        {"name": "apple", "qty": 2},
        {"name": "pear", "qty": 7}
    ]}));
    yes(r#"{"detail":{"items":{"name":["apple"]}}}"#, &e);
    yes(r#"{"detail":{"items":{"name":["apple"],"qty":[2]}}}"#, &e);
    yes(
        r#"{"detail":{"items":{"name":["pear"],"qty":[{"numeric":[">",5]}]}}}"#,
        &e,
    );
    no(r#"{"detail":{"items":{"name":["apple"],"qty":[7]}}}"#, &e);
    no(
        r#"{"detail":{"items":{"name":["pear"],"qty":[{"numeric":["<",5]}]}}}"#,
        &e,
    );
    // A field outside the array combines with any element.
    yes(
        r#"{"source":["aws.ec2"],"detail":{"items":{"name":["pear"],"qty":[7]}}}"#,
        &e,
    );
    // Deeper: each level's elements stay apart.
    let deep = envelope(json!({"orders": [
        {"id": 1, "lines": [{"sku": "a", "n": 1}, {"sku": "b", "n": 2}]},
        {"id": 2, "lines": [{"sku": "a", "n": 2}]}
    ]}));
    yes(
        r#"{"detail":{"orders":{"id":[2],"lines":{"sku":["a"],"n":[2]}}}}"#,
        &deep,
    );
    yes(
        r#"{"detail":{"orders":{"id":[1],"lines":{"sku":["b"],"n":[2]}}}}"#,
        &deep,
    );
    no(
        r#"{"detail":{"orders":{"id":[1],"lines":{"sku":["a"],"n":[2]}}}}"#,
        &deep,
    );
    no(
        r#"{"detail":{"orders":{"id":[2],"lines":{"sku":["b"]}}}}"#,
        &deep,
    );
}

// ---- prefix / suffix / equals-ignore-case ---------------------------------------

#[test]
fn prefix() {
    let e = envelope(json!({"time": "2017-10-02", "n": 20171002, "empty": ""}));
    yes(r#"{"time":[{"prefix":"2017-12-"}]}"#, &e);
    yes(r#"{"detail":{"time":[{"prefix":"2017"}]}}"#, &e);
    yes(r#"{"detail":{"time":[{"prefix":""}]}}"#, &e);
    yes(r#"{"detail":{"empty":[{"prefix":""}]}}"#, &e);
    no(r#"{"detail":{"time":[{"prefix":"2018"}]}}"#, &e);
    no(r#"{"detail":{"n":[{"prefix":"2017"}]}}"#, &e);
    no(r#"{"detail":{"time":[{"prefix":"2017-10-02-"}]}}"#, &e);
    invalid(
        r#"{"detail":{"time":[{"prefix":2017}]}}"#,
        "prefix match pattern must be a string",
    );
    invalid(
        r#"{"detail":{"time":[{"prefix":"a","suffix":"b"}]}}"#,
        "Only one key allowed in match expression",
    );
    invalid(
        r#"{"detail":{"time":[{"prefix":{"wildcard":"a"}}]}}"#,
        "Unsupported prefix pattern: wildcard",
    );
}

#[test]
fn suffix() {
    let e = envelope(json!({"file": "photo.PNG", "path": "a/b.png"}));
    yes(r#"{"detail":{"path":[{"suffix":".png"}]}}"#, &e);
    no(r#"{"detail":{"file":[{"suffix":".png"}]}}"#, &e);
    no(r#"{"detail":{"missing":[{"suffix":".png"}]}}"#, &e);
    invalid(
        r#"{"detail":{"file":[{"suffix":null}]}}"#,
        "suffix match pattern must be a string",
    );
}

#[test]
fn equals_ignore_case_and_ignore_case_affixes() {
    let e = envelope(json!({"name": "Alice.Smith", "n": 1}));
    yes(
        r#"{"detail":{"name":[{"equals-ignore-case":"alice.SMITH"}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"name":[{"equals-ignore-case":"alice"}]}}"#,
        &e,
    );
    no(r#"{"detail":{"n":[{"equals-ignore-case":"1"}]}}"#, &e);
    yes(
        r#"{"detail":{"name":[{"prefix":{"equals-ignore-case":"ALICE"}}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"name":[{"prefix":{"equals-ignore-case":"BOB"}}]}}"#,
        &e,
    );
    yes(
        r#"{"detail":{"name":[{"suffix":{"equals-ignore-case":".smITH"}}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"name":[{"suffix":{"equals-ignore-case":"alice"}}]}}"#,
        &e,
    );
    invalid(
        r#"{"detail":{"name":[{"equals-ignore-case":["a"]}]}}"#,
        "equals-ignore-case match pattern must be a string",
    );
    invalid(
        r#"{"detail":{"name":[{"prefix":{"equals-ignore-case":5}}]}}"#,
        "equals-ignore-case match pattern must be a string",
    );
    invalid(
        r#"{"detail":{"name":[{"suffix":{}}]}}"#,
        "Suffix expression name not found",
    );
}

// ---- anything-but ------------------------------------------------------------------

#[test]
fn anything_but_values() {
    let e = envelope(json!({"state": "running", "code": 3, "z": null, "b": false}));
    yes(r#"{"detail":{"state":[{"anything-but":"stopped"}]}}"#, &e);
    no(r#"{"detail":{"state":[{"anything-but":"running"}]}}"#, &e);
    yes(
        r#"{"detail":{"state":[{"anything-but":["stopped","pending"]}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"state":[{"anything-but":["stopped","running"]}]}}"#,
        &e,
    );
    yes(r#"{"detail":{"code":[{"anything-but":[1,2]}]}}"#, &e);
    no(r#"{"detail":{"code":[{"anything-but":[3.0]}]}}"#, &e);
    no(r#"{"detail":{"code":[{"anything-but":3}]}}"#, &e);
    // Other types, null included, are "anything but" a string or number.
    yes(r#"{"detail":{"code":[{"anything-but":"3"}]}}"#, &e);
    yes(r#"{"detail":{"state":[{"anything-but":[1]}]}}"#, &e);
    yes(r#"{"detail":{"z":[{"anything-but":"x"}]}}"#, &e);
    yes(r#"{"detail":{"b":[{"anything-but":"x"}]}}"#, &e);
    // Never a missing field.
    no(r#"{"detail":{"missing":[{"anything-but":"x"}]}}"#, &e);
    // Arrays: any element that is not excluded matches.
    let arr = envelope(json!({"tags": ["a", "b"]}));
    yes(r#"{"detail":{"tags":[{"anything-but":"a"}]}}"#, &arr);
    no(r#"{"detail":{"tags":[{"anything-but":["a","b"]}]}}"#, &arr);
    invalid(
        r#"{"detail":{"state":[{"anything-but":["a",1]}]}}"#,
        "mixed type is not supported",
    );
    invalid(
        r#"{"detail":{"state":[{"anything-but":[null]}]}}"#,
        "Inside anything but list, start|null|boolean is not supported.",
    );
    invalid(
        r#"{"detail":{"state":[{"anything-but":true}]}}"#,
        "Value of anything-but must be an array or single string/number value.",
    );
    invalid(
        r#"{"detail":{"state":[{"anything-but":[]}]}}"#,
        "Empty arrays are not allowed",
    );
}

#[test]
fn anything_but_prefix_suffix_wildcard_ignore_case() {
    let e = envelope(json!({"state": "init-ok", "file": "a.txt", "n": 4, "z": null}));
    no(
        r#"{"detail":{"state":[{"anything-but":{"prefix":"init"}}]}}"#,
        &e,
    );
    yes(
        r#"{"detail":{"state":[{"anything-but":{"prefix":"run"}}]}}"#,
        &e,
    );
    yes(r#"{"detail":{"n":[{"anything-but":{"prefix":"4"}}]}}"#, &e);
    yes(r#"{"detail":{"z":[{"anything-but":{"prefix":"x"}}]}}"#, &e);
    no(
        r#"{"detail":{"state":[{"anything-but":{"prefix":["x","init"]}}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"file":[{"anything-but":{"suffix":".txt"}}]}}"#,
        &e,
    );
    yes(
        r#"{"detail":{"file":[{"anything-but":{"suffix":".png"}}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"file":[{"anything-but":{"wildcard":"*.txt"}}]}}"#,
        &e,
    );
    yes(
        r#"{"detail":{"file":[{"anything-but":{"wildcard":["*.png","b*"]}}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"state":[{"anything-but":{"equals-ignore-case":"INIT-OK"}}]}}"#,
        &e,
    );
    yes(
        r#"{"detail":{"state":[{"anything-but":{"equals-ignore-case":["x","y"]}}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"missing":[{"anything-but":{"suffix":"x"}}]}}"#,
        &e,
    );
    invalid(
        r#"{"detail":{"s":[{"anything-but":{"prefix":""}}]}}"#,
        "Null prefix/suffix not allowed",
    );
    invalid(
        r#"{"detail":{"s":[{"anything-but":{"suffix":5}}]}}"#,
        "prefix/suffix match pattern must be a string",
    );
    invalid(
        r#"{"detail":{"s":[{"anything-but":{"numeric":[">",1]}}]}}"#,
        "Unsupported anything-but pattern: numeric",
    );
    invalid(
        r#"{"detail":{"s":[{"anything-but":{"wildcard":"a**"}}]}}"#,
        "Consecutive wildcard characters at pos 2",
    );
    invalid(
        r#"{"detail":{"s":[{"anything-but":{"equals-ignore-case":[1]}}]}}"#,
        "Inside anything-but/equals-ignore-case list",
    );
    invalid(
        r#"{"detail":{"s":[{"anything-but":{}}]}}"#,
        "Anything-But expression name not found",
    );
}

// ---- numeric ---------------------------------------------------------------

#[test]
fn numeric_ranges() {
    let e = envelope(json!({"c-count": 5, "d-count": 0, "x-limit": 301.8, "s": "5", "neg": -2.5}));
    yes(r#"{"detail":{"c-count":[{"numeric":[">",0,"<=",5]}]}}"#, &e);
    no(r#"{"detail":{"c-count":[{"numeric":[">",0,"<",5]}]}}"#, &e);
    yes(r#"{"detail":{"d-count":[{"numeric":["<",10]}]}}"#, &e);
    no(r#"{"detail":{"d-count":[{"numeric":[">",0]}]}}"#, &e);
    yes(r#"{"detail":{"d-count":[{"numeric":[">=",0]}]}}"#, &e);
    yes(r#"{"detail":{"x-limit":[{"numeric":["=",3.018e2]}]}}"#, &e);
    no(r#"{"detail":{"x-limit":[{"numeric":["=",301]}]}}"#, &e);
    yes(r#"{"detail":{"neg":[{"numeric":[">=",-3,"<",-2]}]}}"#, &e);
    // Numeric never applies to strings that look like numbers.
    no(r#"{"detail":{"s":[{"numeric":["=",5]}]}}"#, &e);
    no(r#"{"detail":{"missing":[{"numeric":[">",0]}]}}"#, &e);
    invalid(
        r#"{"detail":{"c":[{"numeric":">"}]}}"#,
        "Value of numeric must be an array",
    );
    invalid(
        r#"{"detail":{"c":[{"numeric":[">",0,">",5]}]}}"#,
        "Bad numeric range operator: >",
    );
    invalid(
        r#"{"detail":{"c":[{"numeric":["!=",5]}]}}"#,
        "Unrecognized numeric range operator: !=",
    );
    invalid(
        r#"{"detail":{"c":[{"numeric":["<","5"]}]}}"#,
        "Value of < must be numeric",
    );
    invalid(
        r#"{"detail":{"c":[{"numeric":["=",5,"<",7]}]}}"#,
        "Too many elements in numeric expression",
    );
    invalid(
        r#"{"detail":{"c":[{"numeric":[">",5,"<",1]}]}}"#,
        "Bottom must be less than top",
    );
    invalid(
        r#"{"detail":{"c":[{"numeric":[5]}]}}"#,
        "Invalid member in numeric match: 5",
    );
    invalid(
        r#"{"detail":{"c":[{"numeric":[]}]}}"#,
        "Empty arrays are not allowed",
    );
}

// ---- exists --------------------------------------------------------------------

#[test]
fn exists() {
    let e = envelope(json!({"state": "x", "z": null, "empty": "", "arr": [1], "obj": {"k": 1}}));
    yes(r#"{"detail":{"state":[{"exists":true}]}}"#, &e);
    yes(r#"{"detail":{"z":[{"exists":true}]}}"#, &e);
    yes(r#"{"detail":{"empty":[{"exists":true}]}}"#, &e);
    yes(r#"{"detail":{"arr":[{"exists":true}]}}"#, &e);
    no(r#"{"detail":{"arr":[{"exists":false}]}}"#, &e);
    no(r#"{"detail":{"missing":[{"exists":true}]}}"#, &e);
    yes(r#"{"detail":{"missing":[{"exists":false}]}}"#, &e);
    no(r#"{"detail":{"state":[{"exists":false}]}}"#, &e);
    // Only leaves exist: an object-valued field does not.
    no(r#"{"detail":{"obj":[{"exists":true}]}}"#, &e);
    yes(r#"{"detail":{"obj":{"k":[{"exists":true}]}}}"#, &e);
    // Absent, or one of the listed values.
    yes(r#"{"detail":{"missing":[{"exists":false},"v"]}}"#, &e);
    yes(r#"{"detail":{"state":[{"exists":false},"x"]}}"#, &e);
    no(r#"{"detail":{"state":[{"exists":false},"y"]}}"#, &e);
    // A rule of only absences matches an event that lacks the field.
    yes(
        r#"{"source":[{"exists":true}],"detail":{"c-count":[{"exists":false}]}}"#,
        &e,
    );
    invalid(
        r#"{"detail":{"state":[{"exists":"true"}]}}"#,
        "exists match pattern must be either true or false.",
    );
    invalid(
        r#"{"detail":{"state":[{"exists":true,"prefix":"a"}]}}"#,
        "Only one key allowed in match expression",
    );
}

// ---- cidr ----------------------------------------------------------------------

#[test]
fn cidr() {
    let e = envelope(json!({"ip": "10.0.0.7", "ip6": "2001:db8::ff", "name": "host", "n": 10}));
    yes(r#"{"detail":{"ip":[{"cidr":"10.0.0.0/24"}]}}"#, &e);
    no(r#"{"detail":{"ip":[{"cidr":"10.0.1.0/24"}]}}"#, &e);
    yes(r#"{"detail":{"ip":[{"cidr":"10.0.0.0/8"}]}}"#, &e);
    yes(r#"{"detail":{"ip6":[{"cidr":"2001:db8::/64"}]}}"#, &e);
    no(r#"{"detail":{"ip6":[{"cidr":"2001:db9::/64"}]}}"#, &e);
    no(r#"{"detail":{"ip6":[{"cidr":"10.0.0.0/8"}]}}"#, &e);
    no(r#"{"detail":{"name":[{"cidr":"10.0.0.0/8"}]}}"#, &e);
    no(r#"{"detail":{"n":[{"cidr":"10.0.0.0/8"}]}}"#, &e);
    invalid(
        r#"{"detail":{"ip":[{"cidr":"10.0.0.0"}]}}"#,
        "Malformed CIDR, one '/' required",
    );
    invalid(
        r#"{"detail":{"ip":[{"cidr":"10.0.0.0/8/8"}]}}"#,
        "Malformed CIDR, one '/' required",
    );
    invalid(
        r#"{"detail":{"ip":[{"cidr":"10.0.0.0/x"}]}}"#,
        "mask bits must be an integer",
    );
    invalid(
        r#"{"detail":{"ip":[{"cidr":"10.0.0.300/8"}]}}"#,
        "Invalid IP address",
    );
    invalid(
        r#"{"detail":{"ip":[{"cidr":"10.0.0.0/33"}]}}"#,
        "IPv4 mask bits must be < 32",
    );
    invalid(
        r#"{"detail":{"ip":[{"cidr":10}]}}"#,
        "prefix match pattern must be a string",
    );
}

// ---- wildcard -------------------------------------------------------------------

#[test]
fn wildcard() {
    let e = envelope(json!({"key": "dir/sub/file.png", "star": "a*b", "n": 5}));
    yes(r#"{"detail":{"key":[{"wildcard":"dir/*.png"}]}}"#, &e);
    yes(r#"{"detail":{"key":[{"wildcard":"*sub*"}]}}"#, &e);
    yes(
        r#"{"detail":{"key":[{"wildcard":"dir/sub/file.png"}]}}"#,
        &e,
    );
    no(r#"{"detail":{"key":[{"wildcard":"dir/*.jpg"}]}}"#, &e);
    no(r#"{"detail":{"key":[{"wildcard":"sub*"}]}}"#, &e);
    yes(r#"{"detail":{"star":[{"wildcard":"a\\*b"}]}}"#, &e);
    no(r#"{"detail":{"key":[{"wildcard":"dir\\*"}]}}"#, &e);
    no(r#"{"detail":{"n":[{"wildcard":"*"}]}}"#, &e);
    invalid(
        r#"{"detail":{"key":[{"wildcard":"abc**def"}]}}"#,
        "Consecutive wildcard characters at pos 4",
    );
    invalid(
        r#"{"detail":{"key":[{"wildcard":"a\\bc"}]}}"#,
        "Invalid escape character at pos 2",
    );
    invalid(
        r#"{"detail":{"key":[{"wildcard":7}]}}"#,
        "wildcard match pattern must be a string",
    );
}

// ---- $or ---------------------------------------------------------------------

#[test]
fn or_at_top_and_nested() {
    let e = envelope(json!({"c-count": 3, "d-count": 20, "scope": "Service"}));
    yes(
        r#"{"detail":{"$or":[{"c-count":[{"numeric":[">",0,"<=",5]}]},{"d-count":[{"numeric":["<",10]}]}]}}"#,
        &e,
    );
    no(
        r#"{"detail":{"$or":[{"c-count":[{"numeric":[">",5]}]},{"d-count":[{"numeric":["<",10]}]}]}}"#,
        &e,
    );
    yes(
        r#"{"source":["aws.ec2"],"$or":[{"detail-type":["nope"]},{"detail":{"scope":["Service"]}}]}"#,
        &e,
    );
    no(
        r#"{"source":["aws.s3"],"$or":[{"detail-type":["nope"]},{"detail":{"scope":["Service"]}}]}"#,
        &e,
    );
    // $or inside $or.
    yes(
        r#"{"$or":[{"source":["x"]},{"$or":[{"region":["nope"]},{"detail":{"$or":[{"scope":["no"]},{"d-count":[20]}]}}]}]}"#,
        &e,
    );
    no(
        r#"{"$or":[{"source":["x"]},{"$or":[{"region":["nope"]},{"detail":{"scope":["no"]}}]}]}"#,
        &e,
    );
    // Two $or blocks at one level multiply out.
    yes(
        r#"{"detail":{"$or":[{"c-count":[3]},{"c-count":[4]}],"scope":[{"prefix":"Serv"}]}}"#,
        &e,
    );
    invalid(
        r#"{"$or":[{"source":["x"]}]}"#,
        "There must have at least 2 Objects in $or relationship.",
    );
    invalid(
        r#"{"$or":{"source":["x"]}}"#,
        "It must be an Array followed with $or.",
    );
    invalid(
        r#"{"$or":[{"source":["x"]},["y"]]}"#,
        "Only JSON object is allowed in array of $or relationship.",
    );
    invalid(
        r#"{"$or":[]}"#,
        "There must have at least 2 Objects in $or relationship.",
    );
    invalid(
        r#"{"$or":[{"source":["x"]},{"prefix":["y"]}]}"#,
        "prefix is Ruler reserved fieldName",
    );
}

#[test]
fn or_is_not_a_field_name_outside_its_role() {
    // "$or" with objects inside an array at a leaf is just a bad match expression.
    invalid(
        r#"{"source":[{"$or":["a"]}]}"#,
        "Unrecognized match type $or",
    );
}

// ---- the matcher with many rules ------------------------------------------------

#[test]
fn matcher_returns_every_matching_key_once() {
    let rules = [
        ("ec2", r#"{"source":["aws.ec2"]}"#),
        ("ec2", r#"{"region":["us-west-1"]}"#),
        ("west", r#"{"region":[{"prefix":"us-west"}]}"#),
        ("s3", r#"{"source":["aws.s3"]}"#),
        ("absent", r#"{"detail":{"nothing":[{"exists":false}]}}"#),
    ];
    let m = Matcher::new(
        rules
            .iter()
            .map(|(k, p)| (k.to_string(), Pattern::parse(p).unwrap())),
    );
    assert_eq!(m.len(), 5);
    assert!(!m.is_empty());
    let e = envelope(json!({"x": 1}));
    let mut got = m.matches(&e);
    got.sort();
    assert_eq!(got, vec!["absent", "ec2", "west"]);
    let mut got = m
        .matches_json(serde_json::to_string(&e).unwrap().as_bytes())
        .unwrap();
    got.sort();
    assert_eq!(got, vec!["absent", "ec2", "west"]);
    let empty: Matcher<u32> = Matcher::new([]);
    assert!(empty.is_empty());
    assert!(empty.matches(&e).is_empty());
}

#[test]
fn matches_json_rejects_malformed_json() {
    let m = Matcher::new([(1, Pattern::parse(r#"{"source":["a"]}"#).unwrap())]);
    for bad in [
        &b"{"[..],
        b"{\"source\":\"a\"",
        b"{\"source\":\"a\",}",
        b"{\"source\":'a'}",
        b"{\"x\":[1,2,]}",
        b"{\"x\":01}",
        b"{\"x\":\"\\q\"}",
        b"{\"x\":tru}",
        b"{\"source\":\"a\"} x",
        b"\xff",
        b"",
        // In fields no rule reads, too: bad UTF-8, lone surrogates, numbers
        // out of range, a number cut short inside an array.
        b"{\"x\":\"\xc3\",\"source\":\"a\"}",
        b"{\"x\":\"\\ud800\",\"source\":\"a\"}",
        b"{\"x\":\"\\udc00\",\"source\":\"a\"}",
        b"{\"x\":1e400,\"source\":\"a\"}",
        b"{\"x\":[1,2.,3],\"source\":\"a\"}",
        b"{\"x\":[1,2\"y\"],\"source\":\"a\"}",
    ] {
        assert!(
            m.matches_json(bad).is_err(),
            "{:?} should be refused",
            String::from_utf8_lossy(bad)
        );
        // The trusted path is never given such bytes by busbar; given them
        // anyway it must not panic, and what it cannot scan matches nothing.
        let _ = m.matches_trusted(bad);
    }
    assert_eq!(
        m.matches_json(br#" {"x":{"deep":[1,{"y":"\u00e9\ud83d\ude00"}]},"source":"a"} "#)
            .unwrap(),
        vec![1]
    );
    assert_eq!(m.matches_json(br#"{"source":"\u0061"}"#).unwrap(), vec![1]);
    assert_eq!(m.matches_json(br#"[1,2]"#).unwrap(), Vec::<i32>::new());
}

#[test]
fn dotted_event_keys_meet_nested_patterns() {
    let e = json!({"detail": {"a.b": "x"}});
    yes(r#"{"detail":{"a":{"b":["x"]}}}"#, &e);
    yes(r#"{"detail.a.b":["x"]}"#, &e);
}

#[test]
fn shared_matcher_swaps() {
    use busbar::pattern::SharedMatcher;
    let shared = SharedMatcher::new(Matcher::new([(
        "a",
        Pattern::parse(r#"{"source":["x"]}"#).unwrap(),
    )]));
    let e = json!({"source": "x"});
    let before = shared.load();
    shared.store(Matcher::new([(
        "b",
        Pattern::parse(r#"{"source":["x"]}"#).unwrap(),
    )]));
    assert_eq!(before.matches(&e), vec!["a"]);
    assert_eq!(shared.load().matches(&e), vec!["b"]);
}
