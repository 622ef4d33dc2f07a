//! Numbers: the ranges of `numeric` and the key under which exact numbers are indexed.
//!
//! EventBridge compares numbers by value, so `5`, `5.0` and `5e0` are the same
//! number. busbar compares IEEE-754 doubles (what `serde_json` yields), which
//! covers every value AWS accepts (AWS limits numbers to ±5.0e9 with six
//! decimals; busbar accepts any finite double).

/// One bound of a numeric range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    pub value: f64,
    pub inclusive: bool,
}

/// A numeric range from `{"numeric": [...]}`; a missing bound is unbounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Range {
    pub lower: Option<Bound>,
    pub upper: Option<Bound>,
}

impl Range {
    pub fn equal(value: f64) -> Range {
        let b = Some(Bound {
            value,
            inclusive: true,
        });
        Range { lower: b, upper: b }
    }

    #[inline]
    pub fn contains(&self, n: f64) -> bool {
        let above = |lo: Bound| n > lo.value || (lo.inclusive && n == lo.value);
        let below = |hi: Bound| n < hi.value || (hi.inclusive && n == hi.value);
        self.lower.is_none_or(above) && self.upper.is_none_or(below)
    }
}

/// The hash key of an exact number: its bits, with `-0` folded into `0` so the
/// two compare equal as they do numerically.
#[inline]
pub(crate) fn number_key(n: f64) -> u64 {
    if n == 0.0 { 0 } else { n.to_bits() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_closed_bounds() {
        let r = Range {
            lower: Some(Bound {
                value: 0.0,
                inclusive: false,
            }),
            upper: Some(Bound {
                value: 5.0,
                inclusive: true,
            }),
        };
        assert!(!r.contains(0.0));
        assert!(r.contains(0.1));
        assert!(r.contains(5.0));
        assert!(!r.contains(5.000001));
        assert!(Range::equal(3.0).contains(3.0));
        assert!(!Range::equal(3.0).contains(3.0000001));
    }

    #[test]
    fn zero_keys_agree() {
        assert_eq!(number_key(0.0), number_key(-0.0));
        assert_eq!(number_key(5.0), number_key(5e0));
        assert_ne!(number_key(1.0), number_key(-1.0));
    }
}
