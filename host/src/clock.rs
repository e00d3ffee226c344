//! The one place that reads a clock. Time of day, expiry and deadlines that tests must
//! control come from the injected [`Clock`] (tests use a [`ManualClock`]); how long
//! something took, and budgets a plugin call must not outlive, from the monotonic
//! [`Stopwatch`] and [`monotonic_now`]. `clippy.toml` refuses `Instant::now`,
//! `SystemTime::now` and `OffsetDateTime::now_utc` everywhere else.

#![expect(
    clippy::disallowed_methods,
    reason = "the clock module is the one place that reads the system clocks"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A source of the current time in UTC.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;

    fn now_ms(&self) -> i64 {
        unix_ms(self.now())
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Shared handle to the gateway's clock.
pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    unix_ms: AtomicI64,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock {
            unix_ms: AtomicI64::new((start.unix_timestamp_nanos() / 1_000_000) as i64),
        }
    }

    pub fn advance_ms(&self, ms: i64) {
        self.unix_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        from_unix_ms(self.unix_ms.load(Ordering::SeqCst))
    }
}

/// The monotonic clock, for budgets measured in real time (a plugin call's deadline).
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// Measures how long something took, on the monotonic clock (metrics and latency).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// `2026-02-01T00:00:00.000Z`: the reference's timestamp format (JavaScript `toISOString`).
pub fn iso(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    // Every audit event and answer carries one: written digit by digit, not through
    // `format!`'s machinery, which cost ten times as many instructions.
    // A negative year (`time` holds them down to -9999) takes `format!`'s sign.
    if let Ok(year) = u16::try_from(t.year()) {
        let mut out = String::with_capacity(24);
        digits(&mut out, year, 4);
        for (separator, value, width) in [
            ('-', u16::from(u8::from(t.month())), 2),
            ('-', u16::from(t.day()), 2),
            ('T', u16::from(t.hour()), 2),
            (':', u16::from(t.minute()), 2),
            (':', u16::from(t.second()), 2),
            ('.', t.millisecond(), 3),
        ] {
            out.push(separator);
            digits(&mut out, value, width);
        }
        out.push('Z');
        return out;
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `value`'s last `width` decimal digits, zero-padded.
fn digits(out: &mut String, value: u16, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (value / 10u16.pow(place) % 10) as u8));
    }
}

/// [`iso`] of a Unix time in milliseconds.
pub fn iso_ms(ms: i64) -> String {
    iso(from_unix_ms(ms))
}

/// The instant `ms` Unix milliseconds name; the epoch for one out of range.
fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Parses an RFC 3339 timestamp; `None` when it is not one.
pub fn parse_iso(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// A time bound of an audit query, as the stored timestamps compare: an RFC 3339
/// timestamp, or a time relative to `now` (`-90s`, `-30m`, `-1h`, `-7d`, `-2w`). Anything
/// else is an error that says what is accepted, never a silently empty answer.
pub fn parse_time_bound(text: &str, now: OffsetDateTime) -> Result<String, String> {
    if let Some(t) = parse_iso(text) {
        return Ok(iso(t));
    }
    let relative = text.strip_prefix('-').and_then(|rest| {
        let split = rest.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = rest.split_at(split);
        let n: i64 = number.parse().ok()?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return None,
        };
        Some(now - time::Duration::seconds(n.checked_mul(seconds)?))
    });
    relative.map(iso).ok_or_else(|| {
        format!(
            "`{text}` is not a time: use RFC 3339 (2026-11-22T00:00:00Z) or a relative time (-90s, -30m, -1h, -7d, -2w)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_are_rfc_3339_or_relative_and_nothing_else() {
        let now = OffsetDateTime::from_unix_timestamp(1_769_904_000).expect("valid");
        assert_eq!(
            parse_time_bound("2026-02-01T01:00:00+01:00", now).as_deref(),
            Ok("2026-02-01T00:00:00.000Z")
        );
        assert_eq!(parse_time_bound("-1h", now).as_deref(), Ok("2026-01-31T23:00:00.000Z"));
        assert_eq!(parse_time_bound("-7d", now).as_deref(), Ok("2026-01-25T00:00:00.000Z"));
        for bad in ["yesterday", "-1y", "1h", "-h", "2026-02-01", ""] {
            let err = parse_time_bound(bad, now).expect_err(bad);
            assert!(err.contains("RFC 3339") && err.contains("-1h"), "{err}");
        }
    }

    #[test]
    fn iso_matches_javascript_to_iso_string() {
        let t = OffsetDateTime::from_unix_timestamp(1_769_904_000).expect("valid");
        assert_eq!(iso(t), "2026-02-01T00:00:00.000Z");
        assert_eq!(parse_iso("2026-02-01T00:00:00.000Z"), Some(t));
        for text in [
            "1999-12-31T23:59:59.007Z",
            "0987-03-04T05:06:07.089Z",
            "9999-10-11T12:13:14.999Z",
        ] {
            let t = parse_iso(text).expect(text);
            assert_eq!(iso(t), text);
        }
        // Offsets become UTC.
        assert_eq!(
            iso(parse_iso("2026-03-01T01:30:00.250+02:00").expect("valid")),
            "2026-02-28T23:30:00.250Z"
        );
    }
}
