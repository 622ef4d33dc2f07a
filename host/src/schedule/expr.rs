//! Schedule expressions as EventBridge writes them: `rate(N unit)`, the
//! six-field `cron(minutes hours day-of-month month day-of-week year)` and, for
//! the Scheduler API, the one-time `at(yyyy-mm-ddThh:mm:ss)`; and the one
//! question the scheduler asks of them: when is the next fire after a moment.
//!
//! Calendars are not written here: `croner` matches the cron fields (Quartz
//! weekdays, `L`, `W`, `#`, years) on wall-clock time, and `chrono-tz` maps
//! wall-clock time to instants in an IANA zone. Daylight saving time follows
//! what AWS documents for EventBridge Scheduler: a wall-clock time that does
//! not exist (the hour skipped in spring) fires nothing, and one that exists
//! twice (the hour repeated in autumn) fires once, at its first occurrence.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Which API an expression comes from: rules take `rate` and `cron` only,
/// the Scheduler API also `at`; the error message is each API's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Rule,
    Scheduler,
}

/// A parsed schedule expression.
#[derive(Debug, Clone)]
pub enum Expression {
    /// Every `every_ms`, counted from the moment the schedule's clock starts.
    Rate { every_ms: i64 },
    /// Wall-clock times matching the fields, in the schedule's zone.
    Cron(Box<Cron>),
    /// Once, at this wall-clock time in the schedule's zone.
    At(NaiveDateTime),
}

/// Why an expression was refused: the API's own message, then what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpressionError {
    pub message: String,
}

impl Dialect {
    fn error(self, text: &str, why: impl std::fmt::Display) -> ExpressionError {
        let message = match self {
            Dialect::Rule => format!("Parameter ScheduleExpression is not valid: {text}: {why}"),
            Dialect::Scheduler => format!("Invalid Schedule Expression {text}: {why}"),
        };
        ExpressionError { message }
    }
}

impl Expression {
    /// Parses `text`, refusing what EventBridge refuses, with its message.
    pub fn parse(text: &str, dialect: Dialect) -> Result<Expression, ExpressionError> {
        let err = |why: &str| dialect.error(text, why);
        let trimmed = text.trim();
        let (kind, body) = trimmed
            .split_once('(')
            .and_then(|(k, rest)| Some((k, rest.strip_suffix(')')?)))
            .ok_or_else(|| err("expected rate(...), cron(...) or, for schedules, at(...)"))?;
        match kind {
            "rate" => parse_rate(body).map_err(|w| err(&w)),
            "cron" => parse_cron(body).map_err(|w| err(&w)),
            "at" if dialect == Dialect::Scheduler => {
                NaiveDateTime::parse_from_str(body.trim(), "%Y-%m-%dT%H:%M:%S")
                    .map(Expression::At)
                    .map_err(|_| err("at() takes a date and time as yyyy-mm-ddThh:mm:ss"))
            }
            "at" => Err(err(
                "rules take rate() or cron(); one-time at() schedules belong to the Scheduler API",
            )),
            _ => Err(err(
                "expected rate(...), cron(...) or, for schedules, at(...)",
            )),
        }
    }

    /// True for a one-time `at()` schedule.
    pub fn is_one_time(&self) -> bool {
        matches!(self, Expression::At(_))
    }

    /// The first fire strictly after `after_ms`, in milliseconds since the
    /// epoch; `None` when there is none (an `at()` in the past, a cron whose
    /// years are over). A rate counts from `anchor_ms`: it fires at
    /// `anchor + k * every` for k >= 1.
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64, zone: Tz) -> Option<i64> {
        match self {
            Expression::Rate { every_ms } => {
                let k = if after_ms < anchor_ms {
                    1
                } else {
                    (after_ms - anchor_ms) / every_ms + 1
                };
                Some(anchor_ms + k * every_ms)
            }
            Expression::At(at) => {
                let ms = first_instant(zone, *at)?;
                (ms > after_ms).then_some(ms)
            }
            Expression::Cron(cron) => next_cron(cron, after_ms, zone),
        }
    }
}

fn parse_rate(body: &str) -> Result<Expression, String> {
    let mut parts = body.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("rate() takes a value and a unit, e.g. rate(5 minutes)".into());
    };
    let value: i64 = value
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or("the rate value must be a positive whole number")?;
    let (unit_ms, singular) = match unit {
        "minute" => (60_000, true),
        "minutes" => (60_000, false),
        "hour" => (3_600_000, true),
        "hours" => (3_600_000, false),
        "day" => (86_400_000, true),
        "days" => (86_400_000, false),
        other => {
            return Err(format!(
                "unknown unit {other:?}; use minute(s), hour(s) or day(s)"
            ));
        }
    };
    // EventBridge's own rule: rate(1 minute) and rate(5 minutes), never rate(1 minutes).
    if singular != (value == 1) {
        return Err(if value == 1 {
            format!(
                "a value of 1 takes the singular unit ({})",
                &unit[..unit.len() - 1]
            )
        } else {
            format!("a value above 1 takes the plural unit ({unit}s)")
        });
    }
    let every_ms = value.checked_mul(unit_ms).ok_or("the rate is too long")?;
    Ok(Expression::Rate { every_ms })
}

fn parse_cron(body: &str) -> Result<Expression, String> {
    let fields: Vec<&str> = body.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "cron() takes six fields (minutes hours day-of-month month day-of-week year), got {}",
            fields.len()
        ));
    }
    let (dom, dow) = (fields[2], fields[4]);
    // EventBridge's rule: one of the two day fields must be '?', never both.
    match (dom == "?", dow == "?") {
        (true, true) => return Err("day-of-month and day-of-week cannot both be '?'".into()),
        (false, false) => {
            return Err(
                "one of day-of-month and day-of-week must be '?' (EventBridge cannot combine them)"
                    .into(),
            );
        }
        _ => {}
    }
    for (name, field) in [("minutes", fields[0]), ("hours", fields[1])] {
        if field.contains(['L', 'W', '#', '?']) {
            return Err(format!("the {name} field cannot use L, W, # or ?"));
        }
    }
    // croner reads Quartz's seven fields; EventBridge's fire at second 0.
    let quartz = format!("0 {}", fields.join(" "));
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .alternative_weekdays(true)
        // Quartz's and EventBridge's `0/15`: from 0, every 15.
        .sloppy_ranges(true)
        .build()
        .parse(&quartz)
        .map_err(|e| e.to_string())?;
    Ok(Expression::Cron(Box::new(cron)))
}

/// The first instant a wall-clock time has in `zone`: none in a gap, the
/// earlier of two in an overlap.
fn first_instant(zone: Tz, wall: NaiveDateTime) -> Option<i64> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp_millis().min(b.timestamp_millis())),
        LocalResult::None => None,
    }
}

fn next_cron(cron: &Cron, after_ms: i64, zone: Tz) -> Option<i64> {
    let after = DateTime::from_timestamp_millis(after_ms)?.with_timezone(&zone);
    let mut wall = after.naive_local();
    // Each turn moves to a later wall-clock match; gaps (at most a few per
    // year) and a repeated hour's second half are the only reasons to go round.
    for _ in 0..1000 {
        wall = cron.find_next_occurrence(&wall, false).ok()?;
        match first_instant(zone, wall) {
            Some(ms) if ms > after_ms => return Some(ms),
            // The first occurrence of a repeated wall-clock time is past: it fired then.
            Some(_) => continue,
            // A time the clock skips: no fire, as AWS documents.
            None => continue,
        }
    }
    None
}

/// An IANA zone name (`ScheduleExpressionTimezone`), or UTC when absent.
pub fn zone(name: Option<&str>) -> Result<Tz, String> {
    match name {
        None => Ok(Tz::UTC),
        Some(n) => n
            .parse::<Tz>()
            .map_err(|_| format!("Invalid ScheduleExpressionTimezone {n}: not an IANA time zone")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn rule(text: &str) -> Result<Expression, ExpressionError> {
        Expression::parse(text, Dialect::Rule)
    }

    fn fires(e: &Expression, from: &str, zone: Tz, n: usize) -> Vec<String> {
        let mut at = ms(from);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(next) = e.next_after(at, ms(from), zone) else {
                break;
            };
            out.push(
                DateTime::from_timestamp_millis(next)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            at = next;
        }
        out
    }

    #[test]
    fn rates_take_eventbridges_units_and_count_from_the_anchor() {
        for ok in [
            "rate(1 minute)",
            "rate(5 minutes)",
            "rate(1 hour)",
            "rate(2 days)",
        ] {
            assert!(rule(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("rate(1 minutes)", "singular"),
            ("rate(5 minute)", "plural"),
            ("rate(0 minutes)", "positive"),
            ("rate(5 seconds)", "unknown unit"),
            ("rate(5)", "a value and a unit"),
            ("rate(-1 minute)", "positive"),
            ("every 5 minutes", "expected rate"),
        ] {
            let e = rule(bad).unwrap_err().message;
            assert!(
                e.starts_with("Parameter ScheduleExpression is not valid") && e.contains(why),
                "{bad}: {e}"
            );
        }
        let e = rule("rate(5 minutes)").unwrap();
        assert_eq!(
            fires(&e, "2026-01-01T00:00:30Z", Tz::UTC, 3),
            [
                "2026-01-01T00:05:30Z",
                "2026-01-01T00:10:30Z",
                "2026-01-01T00:15:30Z"
            ]
        );
        // Long after the anchor: the next multiple, not a catch-up of every missed one.
        let anchor = ms("2026-01-01T00:00:00Z");
        assert_eq!(
            e.next_after(ms("2026-01-01T10:02:00Z"), anchor, Tz::UTC),
            Some(ms("2026-01-01T10:05:00Z"))
        );
    }

    #[test]
    fn cron_is_eventbridges_six_fields() {
        for ok in [
            "cron(0 12 * * ? *)",
            "cron(15 10 ? * 6L 2022-2099)",
            "cron(0/15 * ? * MON-FRI *)",
            "cron(0 8 1 * ? *)",
            "cron(0 18 ? * MON#1 *)",
        ] {
            assert!(rule(ok).is_ok(), "{ok}: {:?}", rule(ok).err());
        }
        for (bad, why) in [
            ("cron(0 12 * * * *)", "must be '?'"),
            ("cron(0 12 ? * ? *)", "both be '?'"),
            ("cron(0 12 * * ?)", "six fields"),
            ("cron(0 0 12 * * ? *)", "six fields"),
            ("cron(61 12 * * ? *)", ""),
            ("cron(0 12 * 13 ? *)", ""),
        ] {
            let e = rule(bad).unwrap_err().message;
            assert!(
                e.starts_with("Parameter ScheduleExpression is not valid: ") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn cron_weekdays_are_sunday_first_as_in_eventbridge() {
        // 2026-01-02 is a Friday; 6 is Friday in EventBridge (1 = Sunday).
        let e = rule("cron(0 9 ? * 6 *)").unwrap();
        assert_eq!(
            fires(&e, "2026-01-01T00:00:00Z", Tz::UTC, 2),
            ["2026-01-02T09:00:00Z", "2026-01-09T09:00:00Z"]
        );
        let e = rule("cron(30 7 ? * MON-FRI *)").unwrap();
        assert_eq!(
            fires(&e, "2026-01-02T08:00:00Z", Tz::UTC, 2),
            ["2026-01-05T07:30:00Z", "2026-01-06T07:30:00Z"]
        );
        // The last day of the month, and the years field ending the schedule.
        let e = rule("cron(0 0 L * ? 2026)").unwrap();
        assert_eq!(
            fires(&e, "2026-11-15T00:00:00Z", Tz::UTC, 5),
            ["2026-11-30T00:00:00Z", "2026-12-31T00:00:00Z"]
        );
    }

    #[test]
    fn at_is_for_the_scheduler_api_only() {
        let e = rule("at(2026-01-01T00:00:00)").unwrap_err().message;
        assert!(e.contains("Scheduler API"), "{e}");
        let at = Expression::parse("at(2026-03-01T10:00:00)", Dialect::Scheduler).unwrap();
        let zone: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            at.next_after(ms("2026-01-01T00:00:00Z"), 0, zone),
            Some(ms("2026-03-01T09:00:00Z"))
        );
        assert_eq!(at.next_after(ms("2026-03-01T09:00:00Z"), 0, zone), None);
        let e = Expression::parse("at(2026-03-01 10:00)", Dialect::Scheduler)
            .unwrap_err()
            .message;
        assert!(
            e.starts_with("Invalid Schedule Expression at(2026-03-01 10:00)"),
            "{e}"
        );
    }

    #[test]
    fn daylight_saving_skips_missing_times_and_fires_repeated_ones_once() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day.
        let e = Expression::parse("cron(30 2 * * ? *)", Dialect::Scheduler).unwrap();
        assert_eq!(
            fires(&e, "2026-03-07T00:00:00Z", ny, 2),
            ["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"]
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice: fire once.
        let e = Expression::parse("cron(30 1 * * ? *)", Dialect::Scheduler).unwrap();
        assert_eq!(
            fires(&e, "2026-10-31T12:00:00Z", ny, 3),
            [
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
                "2026-11-03T06:30:00Z"
            ]
        );
        // Hourly across the fall-back: every instant once, 01:xx not twice.
        let e = Expression::parse("cron(0 * * * ? *)", Dialect::Scheduler).unwrap();
        assert_eq!(
            fires(&e, "2026-11-01T04:30:00Z", ny, 3),
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T07:00:00Z",
                "2026-11-01T08:00:00Z"
            ]
        );
    }

    #[test]
    fn zones_are_iana_names() {
        assert_eq!(zone(None).unwrap(), Tz::UTC);
        assert!(zone(Some("Asia/Tokyo")).is_ok());
        assert!(
            zone(Some("Mars/Olympus"))
                .unwrap_err()
                .contains("Mars/Olympus")
        );
    }
}
