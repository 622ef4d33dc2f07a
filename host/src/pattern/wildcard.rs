//! `wildcard`: `*` matches any run of characters (including none); `\*` is a
//! literal star and `\\` a literal backslash. As in aws/event-ruler, two stars in
//! a row and any other escape are errors; positions in the messages count from 1
//! (event-ruler counts the opening quote of the JSON string).

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wildcard {
    /// The literal pieces between stars; a leading or trailing star shows as an
    /// empty first or last piece.
    pieces: Vec<Vec<u8>>,
}

impl Wildcard {
    pub fn parse(text: &str) -> Result<Wildcard, String> {
        let bytes = text.as_bytes();
        let mut pieces = vec![Vec::new()];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'*' => {
                    if bytes.get(i + 1) == Some(&b'*') {
                        return Err(format!("Consecutive wildcard characters at pos {}", i + 1));
                    }
                    pieces.push(Vec::new());
                    i += 1;
                }
                b'\\' => match bytes.get(i + 1) {
                    Some(&c @ (b'*' | b'\\')) => {
                        pieces.last_mut().expect("non-empty").push(c);
                        i += 2;
                    }
                    _ => return Err(format!("Invalid escape character at pos {}", i + 1)),
                },
                c => {
                    pieces.last_mut().expect("non-empty").push(c);
                    i += 1;
                }
            }
        }
        Ok(Wildcard { pieces })
    }

    /// The literal text every matching value starts with (before the first star).
    pub fn literal_start(&self) -> &[u8] {
        &self.pieces[0]
    }

    /// Glob matching with `*` only: the first piece anchors at the start, the last
    /// at the end, and the middle ones are found leftmost-first in order, which is
    /// exact for this grammar and linear in the value.
    pub fn matches(&self, value: &str) -> bool {
        let v = value.as_bytes();
        let n = self.pieces.len();
        if n == 1 {
            return v == self.pieces[0].as_slice();
        }
        let first = &self.pieces[0];
        let last = &self.pieces[n - 1];
        if v.len() < first.len() + last.len() || !v.starts_with(first) || !v.ends_with(last) {
            return false;
        }
        let mut rest = &v[first.len()..v.len() - last.len()];
        for piece in &self.pieces[1..n - 1] {
            match find(rest, piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, v: &str) -> bool {
        Wildcard::parse(p).unwrap().matches(v)
    }

    #[test]
    fn globbing() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("a*", "a"));
        assert!(m("a*c", "abc"));
        assert!(m("a*c", "ac"));
        assert!(!m("a*c", "ab"));
        assert!(m("*.png", "dir/x.png"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxcyyb"));
        assert!(m("ab*ba", "aba*ba"));
        assert!(!m("ab*ba", "aba"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn escapes() {
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "axb"));
        assert!(m(r"a\\*", r"a\anything"));
        assert_eq!(
            Wildcard::parse("abc**def").unwrap_err(),
            "Consecutive wildcard characters at pos 4"
        );
        assert_eq!(
            Wildcard::parse(r"a\bc").unwrap_err(),
            "Invalid escape character at pos 2"
        );
        assert_eq!(
            Wildcard::parse(r"a\").unwrap_err(),
            "Invalid escape character at pos 2"
        );
    }
}
