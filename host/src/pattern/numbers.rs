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

/// Every `numeric` range tested at one path, sorted so that a value finds the
/// ranges holding it without trying the others: ranges are ordered by lower
/// bound, a binary search finds the last one starting at or below the value,
/// and the walk back stops where no earlier range reaches the value. Disjoint
/// ranges (10,000 price bands) cost a search and a step or two; a set where
/// one range is unbounded above still walks back to it.
#[derive(Default)]
pub(crate) struct RangeIndex {
    ranges: Vec<(Range, u32)>,
    /// `reach[i]`: the highest upper bound among `ranges[..=i]`.
    reach: Vec<f64>,
}

impl RangeIndex {
    pub fn insert(&mut self, range: Range, pred: u32) {
        self.ranges.push((range, pred));
        self.reach.clear();
    }

    /// Sorts after the last insert; lookups need it.
    pub fn finish(&mut self) {
        let low = |r: &Range| r.lower.map_or(f64::NEG_INFINITY, |b| b.value);
        self.ranges.sort_by(|a, b| low(&a.0).total_cmp(&low(&b.0)));
        let mut reach = f64::NEG_INFINITY;
        self.reach = self
            .ranges
            .iter()
            .map(|(r, _)| {
                reach = reach.max(r.upper.map_or(f64::INFINITY, |b| b.value));
                reach
            })
            .collect();
    }

    #[inline]
    pub fn containing(&self, n: f64, hit: &mut impl FnMut(u32)) {
        let end = self
            .ranges
            .partition_point(|(r, _)| r.lower.is_none_or(|b| b.value <= n));
        for j in (0..end).rev() {
            if self.reach[j] < n {
                break;
            }
            let (r, p) = &self.ranges[j];
            if r.contains(n) {
                hit(*p);
            }
        }
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
    fn range_index_finds_what_a_scan_finds() {
        let bound = |value: f64, inclusive: bool| Some(Bound { value, inclusive });
        let ranges = [
            Range {
                lower: bound(0.0, true),
                upper: bound(10.0, false),
            },
            Range {
                lower: bound(5.0, false),
                upper: bound(6.0, true),
            },
            Range {
                lower: None,
                upper: bound(-3.0, true),
            },
            Range {
                lower: bound(100.0, true),
                upper: None,
            },
            Range::equal(7.5),
            Range {
                lower: bound(-10.0, false),
                upper: bound(200.0, false),
            },
            Range {
                lower: bound(10.0, true),
                upper: bound(11.0, true),
            },
        ];
        let mut index = RangeIndex::default();
        for (p, r) in ranges.iter().enumerate() {
            index.insert(*r, p as u32);
        }
        index.finish();
        for n in [
            -20.0, -10.0, -3.0, -2.5, 0.0, 5.0, 5.5, 6.0, 7.5, 10.0, 11.0, 99.0, 100.0, 1e9,
        ] {
            let mut got = Vec::new();
            index.containing(n, &mut |p| got.push(p));
            got.sort();
            let want: Vec<u32> = (0..ranges.len() as u32)
                .filter(|&p| ranges[p as usize].contains(n))
                .collect();
            assert_eq!(got, want, "at {n}");
        }
    }

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
