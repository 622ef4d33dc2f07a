//! Skipping values of trusted JSON: bytes busbar serialized itself (serde_json's
//! output of an event validated at ingest), where a value no rule reads only
//! needs its end found, not its grammar checked.
//!
//! A container ends at the bracket that brings the nesting back to zero. The
//! structural bytes (`"`, `[`, `]`, `{`, `}`) are found eight at a time, every
//! one of them exactly, so a word holding several brackets (`]],[[`) costs one
//! load; strings are stepped over whole so brackets inside them do not count,
//! and inside a string only `"` and `\` matter. On bytes that are not JSON the
//! answer is some position or `None`, never a panic or an out-of-bounds read:
//! the caller then hands the input to the validating scanner.

use super::flatten::{HIGH, ONES, number_end};

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// The high bit of every byte of `x` equal to `c`. Exact for every byte (the
/// borrow-based test is exact only for the lowest), so all the structural bytes
/// of a word can be taken from one mask.
#[inline(always)]
fn eq_bytes(x: u64, c: u8) -> u64 {
    let y = x ^ (ONES * c as u64);
    !(((y & !HIGH) + !HIGH) | y) & HIGH
}

/// At a skipped value's first byte: the position just after the value.
#[inline]
pub(crate) fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => container_end(b, i),
        // A number or a literal runs to the next delimiter.
        _ => Some(number_end(b, i)),
    }
}

/// At an opening quote: the position just after the closing one.
#[inline]
pub(crate) fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut i = i + 1;
    loop {
        while let Some(w) = b.get(i..i + 8) {
            let x = word(w);
            let m = eq_bytes(x, b'"') | eq_bytes(x, b'\\');
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match b.get(i)? {
            b'"' => return Some(i + 1),
            // The escaped byte is never a quote that ends the string; `\uXXXX`'s
            // hex digits are neither quotes nor backslashes.
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// At a member key's opening quote: the position of its closing quote, whether
/// it has escapes and whether it has a raw `.` (so the path automaton knows to
/// split it). Trusted bytes need no check for controls or UTF-8.
#[inline]
pub(crate) fn key_at(b: &[u8], i: usize) -> Option<(usize, bool, bool)> {
    let mut i = i + 1;
    let (mut escaped, mut dotted) = (false, false);
    loop {
        while let Some(w) = b.get(i..i + 8) {
            let x = word(w);
            let m = eq_bytes(x, b'"') | eq_bytes(x, b'\\') | eq_bytes(x, b'.');
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match b.get(i)? {
            b'"' => return Some((i, escaped, dotted)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b'.' => {
                dotted = true;
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// The high bit of every `"`, `[`, `]`, `{` and `}` in `x`.
#[inline(always)]
fn structural(x: u64) -> u64 {
    // `[`/`{` and `]`/`}` differ only in bit 5.
    let folded = x | (ONES * 0x20);
    eq_bytes(x, b'"') | eq_bytes(folded, b'{') | eq_bytes(folded, b'}')
}

/// At `[` or `{`: the position just after the matching close.
fn container_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0u32;
    loop {
        if let Some(w) = b.get(i..i + 16) {
            // Two words per round: most of a skipped number array is digits,
            // and one branch per sixteen bytes keeps the loop short.
            let mut m = structural(word(&w[..8]));
            if m == 0 {
                i += 8;
                m = structural(word(&w[8..]));
            }
            loop {
                if m == 0 {
                    i += 8;
                    break;
                }
                let at = i + (m.trailing_zeros() / 8) as usize;
                match b[at] {
                    b'"' => {
                        // The rest of this word may be inside the string.
                        i = string_end(b, at)?;
                        break;
                    }
                    b'[' | b'{' => depth += 1,
                    _ => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                }
                m &= m - 1;
            }
            continue;
        }
        if let Some(w) = b.get(i..i + 8) {
            let m = structural(word(w));
            if m == 0 {
                i += 8;
                continue;
            }
            i += (m.trailing_zeros() / 8) as usize;
        }
        match b.get(i)? {
            b'"' => i = string_end(b, i)?,
            b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(text: &str) -> Option<usize> {
        value_end(text.as_bytes(), 0)
    }

    #[test]
    fn finds_the_end_of_every_kind_of_value() {
        for (json, rest) in [
            (r#""plain""#, ",x"),
            (r#""a \"quoted\" ]} word and a long tail \\""#, "}"),
            (r#""\u005c""#, "]"),
            ("[[[-122.5,37.7,0.0],[1,2,3]],[]]", ",\"k\":1}"),
            (r#"{"a":{"b":["]","}",{"c":"\"{"}]},"d":null}"#, "}"),
            ("12.5e-3", ",\"next\":2"),
            ("true", "}"),
            ("null", "]"),
            ("{}", ","),
        ] {
            let text = format!("{json}{rest}");
            assert_eq!(end(&text), Some(json.len()), "in {text}");
        }
    }

    #[test]
    fn every_alignment_of_brackets_and_quotes() {
        // Structural bytes at every offset of the eight-byte words, several in one word.
        for pad in 0..16 {
            let spaces = " ".repeat(pad);
            let json = format!(r#"[{spaces}"]{spaces}\"[",[[{spaces}]],{{"k{spaces}":[]}}]"#);
            let text = format!("{json},1]");
            assert_eq!(end(&text), Some(json.len()), "in {text}");
        }
    }

    #[test]
    fn unterminated_input_gives_none() {
        for text in [r#""abc"#, r#""abc\"#, "[[1,2]", r#"{"a":"}"#, ""] {
            assert_eq!(end(text), None, "{text:?}");
        }
    }
}
