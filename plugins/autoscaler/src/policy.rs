//! The scaling policy, kept free of host calls so it can be tested natively.

/// Tunables from the plugin's `[config]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Queued plus in-flight deliveries one worker is meant to carry.
    pub target_backlog_per_worker: f64,
    /// How long after the last scale-out a target may shrink again.
    pub scale_in_cooldown_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target_backlog_per_worker: 10.0,
            scale_in_cooldown_ms: 30_000,
        }
    }
}

/// What the host reported for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetMetrics {
    pub target: String,
    pub backlog: u64,
    pub in_flight: u64,
    pub concurrency: u64,
    pub min_concurrency: u64,
    pub max_concurrency: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Change the target's concurrency.
    Scale {
        desired: u64,
        /// True when this grows the target, which restarts its cooldown.
        scale_out: bool,
        reason: String,
    },
    /// Stay as is; the text says why when it is not simply "already right".
    Hold(Option<String>),
}

/// Decides one target's concurrency. `now_ms` is the metrics event's time and
/// `last_scale_out_ms` the time of this target's last scale-out, if any.
pub fn decide(
    m: &TargetMetrics,
    settings: &Settings,
    now_ms: i64,
    last_scale_out_ms: Option<i64>,
) -> Decision {
    let current = m.concurrency;
    // A misconfigured range must not make the target flap: the upper bound wins.
    let max = m.max_concurrency.max(1);
    let min = m.min_concurrency.clamp(1, max);
    let demand = m.backlog.saturating_add(m.in_flight);
    let wanted = (demand as f64 / settings.target_backlog_per_worker).ceil() as u64;
    let clamped = wanted.clamp(min, max);

    let mut reason = format!("backlog {}", m.backlog);
    if m.in_flight > 0 {
        reason.push_str(&format!(" (+{} in flight)", m.in_flight));
    }
    reason.push_str(&format!(
        " over {current} {}, target {} per worker",
        if current == 1 { "worker" } else { "workers" },
        settings.target_backlog_per_worker
    ));
    if clamped > wanted {
        reason.push_str(&format!(", raised to min_concurrency {min}"));
    } else if clamped < wanted {
        reason.push_str(&format!(", capped at max_concurrency {max}"));
    }

    if clamped > current {
        return Decision::Scale {
            desired: clamped,
            scale_out: true,
            reason,
        };
    }
    if clamped == current {
        return Decision::Hold(None);
    }

    // Over the range's top: come back into bounds at once, without waiting.
    if current > max {
        return Decision::Scale {
            desired: max,
            scale_out: false,
            reason: format!("concurrency {current} is above max_concurrency {max}; {reason}"),
        };
    }

    if let Some(last) = last_scale_out_ms {
        let since = now_ms.saturating_sub(last);
        if since < settings.scale_in_cooldown_ms {
            return Decision::Hold(Some(format!(
                "{reason}: would scale in to {clamped}, but the last scale-out was {}s ago (cooldown {}s)",
                since as f64 / 1000.0,
                settings.scale_in_cooldown_ms as f64 / 1000.0
            )));
        }
    }

    // Shrinking by at most half per step keeps a brief lull from draining a busy target.
    let floor = current.div_ceil(2);
    let desired = clamped.max(floor);
    if desired > clamped {
        reason.push_str(&format!(
            ", scale-in limited to half per step (wanted {clamped})"
        ));
    }
    Decision::Scale {
        desired,
        scale_out: false,
        reason,
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp such as
/// `2024-05-01T12:00:00Z` or `2024-05-01T14:00:00.250+02:00`.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // 60 allows a leap second; it counts as the next second's start.
    if second > 60 {
        return None;
    }

    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac[..digits].bytes().take(3).enumerate() {
            millis += i64::from(c - b'0') * 10i64.pow(2 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 60 + m)
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(backlog: u64, in_flight: u64, concurrency: u64) -> TargetMetrics {
        TargetMetrics {
            target: "orders/payment-check".into(),
            backlog,
            in_flight,
            concurrency,
            min_concurrency: 1,
            max_concurrency: 16,
        }
    }

    fn desired(d: Decision) -> Option<u64> {
        match d {
            Decision::Scale { desired, .. } => Some(desired),
            Decision::Hold(_) => None,
        }
    }

    #[test]
    fn scales_out_at_once_by_backlog_per_worker() {
        let d = decide(&metrics(120, 2, 2), &Settings::default(), 0, Some(0));
        match d {
            Decision::Scale {
                desired,
                scale_out,
                reason,
            } => {
                assert_eq!(desired, 13);
                assert!(scale_out);
                assert_eq!(
                    reason,
                    "backlog 120 (+2 in flight) over 2 workers, target 10 per worker"
                );
            }
            other => panic!("expected a scale-out, got {other:?}"),
        }
    }

    #[test]
    fn caps_at_max_concurrency() {
        let d = decide(&metrics(1000, 0, 4), &Settings::default(), 0, None);
        let Decision::Scale {
            desired, reason, ..
        } = d
        else {
            panic!("expected a scale-out, got {d:?}");
        };
        assert_eq!(desired, 16);
        assert!(reason.ends_with("capped at max_concurrency 16"), "{reason}");
    }

    #[test]
    fn holds_when_already_right() {
        assert_eq!(
            decide(&metrics(35, 5, 4), &Settings::default(), 0, None),
            Decision::Hold(None)
        );
    }

    #[test]
    fn scale_in_waits_for_the_cooldown() {
        let s = Settings::default();
        let d = decide(&metrics(0, 0, 8), &s, 29_999, Some(0));
        assert!(matches!(d, Decision::Hold(Some(_))), "{d:?}");
        assert_eq!(
            desired(decide(&metrics(0, 0, 8), &s, 30_000, Some(0))),
            Some(4)
        );
    }

    #[test]
    fn scale_in_at_most_halves() {
        let s = Settings::default();
        assert_eq!(desired(decide(&metrics(0, 0, 16), &s, 0, None)), Some(8));
        assert_eq!(desired(decide(&metrics(0, 0, 5), &s, 0, None)), Some(3));
        assert_eq!(desired(decide(&metrics(0, 0, 2), &s, 0, None)), Some(1));
        // A small step is not held back by the halving rule.
        assert_eq!(desired(decide(&metrics(55, 0, 8), &s, 0, None)), Some(6));
    }

    #[test]
    fn never_below_min_concurrency() {
        let mut m = metrics(0, 0, 3);
        m.min_concurrency = 3;
        assert_eq!(
            decide(&m, &Settings::default(), 0, None),
            Decision::Hold(None)
        );
        m.concurrency = 1;
        assert_eq!(desired(decide(&m, &Settings::default(), 0, None)), Some(3));
    }

    #[test]
    fn above_max_comes_back_at_once() {
        let mut m = metrics(0, 0, 40);
        m.max_concurrency = 8;
        assert_eq!(
            desired(decide(&m, &Settings::default(), 5, Some(0))),
            Some(8)
        );
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:30.25Z"),
            Some(1_714_564_830_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:00:30+02:00"),
            Some(1_714_564_830_000)
        );
        assert_eq!(parse_rfc3339_ms("2024-05-01 12:00:30"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
