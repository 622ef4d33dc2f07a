//! Any text given to `Pattern::parse` either parses or yields an error; never a
//! panic, and never a matcher that disagrees with the reference interpreter.
#![no_main]

use busbar::pattern::{Matcher, Pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pattern) = Pattern::parse(text) else {
        return;
    };
    let event = serde_json::json!({
        "source": "aws.ec2", "detail-type": "x", "resources": ["a", "b"],
        "detail": {"a": 1, "b": "foo", "c": [{"d": null, "e": true}, {"d": "10.0.0.1"}]}
    });
    let matcher = Matcher::new([(0u8, pattern.clone())]);
    let expected = pattern.matches(&event);
    assert_eq!(!matcher.matches(&event).is_empty(), expected);
    let bytes = serde_json::to_vec(&event).unwrap();
    assert_eq!(!matcher.matches_json(&bytes).unwrap().is_empty(), expected);
});
