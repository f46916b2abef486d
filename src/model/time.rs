//! Time as the engine sees it: milliseconds since the Unix epoch, UTC, plus the
//! RFC 3339 parsing and formatting the wire formats need. No clock is read here:
//! "now" is always passed in by a driver.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub i64);

impl Ts {
    pub const MAX: Ts = Ts(i64::MAX);

    pub fn from_millis(ms: i64) -> Ts {
        Ts(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Ts {
        Ts(self.0.saturating_add(d.as_millis() as i64))
    }

    /// Milliseconds from `earlier` to `self`, never negative.
    pub fn since(self, earlier: Ts) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Milliseconds since the epoch, when RFC 3339 can write them (years 0001-9999).
    pub fn from_millis_checked(ms: i64) -> Option<Ts> {
        /// 10000-01-01T00:00:00Z.
        const YEAR_10000_MS: i64 = 253_402_300_800_000;
        (GO_ZERO_TIME_MS..YEAR_10000_MS)
            .contains(&ms)
            .then_some(Ts(ms))
    }

    pub fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::MAX)
    }

    /// Parses an RFC 3339 timestamp (what Prometheus, Alertmanager and Go emit).
    /// Go's zero time (`0001-01-01T00:00:00Z`), which Prometheus sends for "unset",
    /// parses as `Ok(None)`.
    pub fn parse_rfc3339(s: &str) -> Result<Option<Ts>, TimeError> {
        let ms = parse_rfc3339_millis(s.as_bytes()).ok_or_else(|| TimeError(s.to_owned()))?;
        Ok(if ms <= GO_ZERO_TIME_MS {
            None
        } else {
            Some(Ts(ms))
        })
    }
}

impl Ts {
    /// ISO 8601 as PagerDuty's documentation writes it: RFC 3339, or with the
    /// offset's colon left out (`2015-07-17T08:42:58.315+0000`) or only hours
    /// (`+02`).
    pub fn parse_iso8601(s: &str) -> Result<Option<Ts>, TimeError> {
        if let Ok(t) = Ts::parse_rfc3339(s) {
            return Ok(t);
        }
        let b = s.as_bytes();
        let sign_at = |from_end: usize| {
            b.len()
                .checked_sub(from_end)
                .filter(|&i| i >= 19 && matches!(b[i], b'+' | b'-'))
                .filter(|&i| b[i + 1..].iter().all(u8::is_ascii_digit))
        };
        let fixed = if let Some(i) = sign_at(5) {
            format!("{}:{}", &s[..i + 3], &s[i + 3..])
        } else if sign_at(3).is_some() {
            format!("{s}:00")
        } else {
            return Err(TimeError(s.to_owned()));
        };
        Ts::parse_rfc3339(&fixed).map_err(|_| TimeError(s.to_owned()))
    }
}

impl fmt::Display for Ts {
    /// RFC 3339 in UTC with millisecond precision when needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_jiff())
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match Ts::parse_rfc3339(&s) {
            Ok(Some(ts)) => Ok(ts),
            Ok(None) => Ok(Ts(GO_ZERO_TIME_MS)),
            Err(e) => Err(serde::de::Error::custom(e)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {0:?}")]
pub struct TimeError(pub String);

/// Go's `time.Time{}` in milliseconds since the epoch.
const GO_ZERO_TIME_MS: i64 = -62_135_596_800_000;

/// Hot-path parser for `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
/// Written by hand because it runs once or twice per alert; checked against jiff in tests.
fn parse_rfc3339_millis(b: &[u8]) -> Option<i64> {
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                frac_ms = frac_ms * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            frac_ms *= 10;
        }
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec.min(59) - offset_s;
    Some(secs * 1000 + frac_ms)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a Prometheus-style duration: `30s`, `5m`, `4h`, `1h30m`, `1d`, `1w`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number, e.g. 30s, 5m, 4h"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ms, s, m, h, d, w)"
                ));
            }
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (ms, s, m, h, d, w)"
                ));
            }
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way it is written in rule files (`1h30m`, `30s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_offsets_as_pagerduty_writes_them() {
        let want = Ts::parse_rfc3339("2015-07-17T08:42:58.315+00:00").unwrap();
        assert!(want.is_some());
        for s in [
            "2015-07-17T08:42:58.315+0000",
            "2015-07-17T08:42:58.315+00",
            "2015-07-17T08:42:58.315Z",
        ] {
            assert_eq!(Ts::parse_iso8601(s), Ok(want), "{s}");
        }
        assert_eq!(Ts::parse_iso8601("2015-07-17T10:42:58.315+0200"), Ok(want));
        for bad in [
            "2015-07-17T08:42:58+00é0",
            "2015-07-17T08:42:58.315+00000",
            "x+0000",
            "",
        ] {
            assert!(Ts::parse_iso8601(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_agrees_with_jiff() {
        for s in [
            "2026-11-26T14:46:39Z",
            "2026-11-26T14:46:39.123Z",
            "2026-11-26T14:46:39.123456789Z",
            "2026-11-26T14:46:39.1+02:00",
            "2024-02-29T23:59:59-05:30",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "2000-03-01T00:00:00z",
        ] {
            let ours = Ts::parse_rfc3339(s).unwrap().unwrap();
            let theirs: jiff::Timestamp = s.parse().unwrap();
            assert_eq!(ours.0, theirs.as_millisecond(), "{s}");
        }
    }

    #[test]
    fn go_zero_time_is_unset() {
        assert_eq!(Ts::parse_rfc3339("0001-01-01T00:00:00Z").unwrap(), None);
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for s in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T14:46:39",
            "2026-11-26T14:46:39.Z",
            "2026-11-26T14:46:39+0200",
            "2026-11-26T14:46:39Zjunk",
        ] {
            assert!(Ts::parse_rfc3339(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        let ts = Ts::parse_rfc3339("2026-11-26T14:46:39.123Z")
            .unwrap()
            .unwrap();
        assert_eq!(ts.to_string(), "2026-11-26T14:46:39.123Z");
        assert_eq!(Ts::parse_rfc3339(&ts.to_string()).unwrap(), Some(ts));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m5").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
