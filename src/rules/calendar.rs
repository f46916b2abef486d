//! Calendar logic evaluated at a given instant: Alertmanager-style time intervals
//! and goalkeeper rotations. Pure functions of (rule, time); no clock is read.

use super::file::{GoalkeeperFile, TimeRangeFile, TimeSpecFile};
use crate::model::Ts;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A named set of time specs; it is active when any spec matches.
#[derive(Debug, Clone)]
pub struct TimeInterval {
    pub name: Arc<str>,
    pub specs: Vec<TimeSpec>,
}

/// One Alertmanager `time_intervals` entry: every field given must match.
#[derive(Debug, Clone)]
pub struct TimeSpec {
    /// Minutes since local midnight, `[start, end)`.
    times: Vec<(u32, u32)>,
    weekdays: Vec<(u8, u8)>,
    days_of_month: Vec<(i32, i32)>,
    months: Vec<(u8, u8)>,
    years: Vec<(i32, i32)>,
    tz: TimeZone,
}

impl TimeInterval {
    pub fn contains(&self, at: Ts) -> bool {
        self.specs.iter().any(|s| s.contains(at))
    }
}

impl TimeSpec {
    pub fn compile(f: &TimeSpecFile) -> Result<TimeSpec, String> {
        let tz = match &f.location {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| format!("unknown time zone {name:?}"))?,
        };
        let times = f
            .times
            .iter()
            .map(parse_time_range)
            .collect::<Result<_, _>>()?;
        let weekdays = ranges(&f.weekdays, "weekday", |s| {
            weekday(s).map(|w| w.to_monday_zero_offset() as i64)
        })?
        .into_iter()
        .map(|(a, b)| (a as u8, b as u8))
        .collect();
        let days_of_month = ranges(&f.days_of_month, "day of month", |s| {
            s.parse::<i64>()
                .ok()
                .filter(|d| (1..=31).contains(&d.abs()))
        })?
        .into_iter()
        .map(|(a, b)| (a as i32, b as i32))
        .collect();
        let months = ranges(&f.months, "month", month)?
            .into_iter()
            .map(|(a, b)| (a as u8, b as u8))
            .collect();
        let years = ranges(&f.years, "year", |s| {
            s.parse::<i64>().ok().filter(|y| *y > 0)
        })?
        .into_iter()
        .map(|(a, b)| (a as i32, b as i32))
        .collect();
        Ok(TimeSpec {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            tz,
        })
    }

    pub fn contains(&self, at: Ts) -> bool {
        let z = at.to_jiff().to_zoned_datetime(self.tz.clone());
        let minute = z.hour() as u32 * 60 + z.minute() as u32;
        let wd = z.weekday().to_monday_zero_offset() as u8;
        let dim = z.date().days_in_month() as i32;
        let day = z.day() as i32;
        let resolve = |d: i32| if d < 0 { dim + 1 + d } else { d };
        (self.times.is_empty() || self.times.iter().any(|&(s, e)| minute >= s && minute < e))
            && (self.weekdays.is_empty() || self.weekdays.iter().any(|&(a, b)| wd >= a && wd <= b))
            && (self.days_of_month.is_empty()
                || self
                    .days_of_month
                    .iter()
                    .any(|&(a, b)| day >= resolve(a) && day <= resolve(b)))
            && (self.months.is_empty()
                || self
                    .months
                    .iter()
                    .any(|&(a, b)| (z.month() as u8) >= a && (z.month() as u8) <= b))
            && (self.years.is_empty()
                || self
                    .years
                    .iter()
                    .any(|&(a, b)| (z.year() as i32) >= a && (z.year() as i32) <= b))
    }
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn parse_time_range(t: &TimeRangeFile) -> Result<(u32, u32), String> {
    let start = parse_hhmm(&t.start_time)
        .ok_or_else(|| format!("start_time {:?} is not HH:MM", t.start_time))?;
    let end =
        parse_hhmm(&t.end_time).ok_or_else(|| format!("end_time {:?} is not HH:MM", t.end_time))?;
    if start >= end {
        return Err(format!(
            "start_time {} must be before end_time {}",
            t.start_time, t.end_time
        ));
    }
    Ok((start, end))
}

/// Parses `a`, or `a:b` ranges (inclusive), with `one` reading a single value.
fn ranges(
    items: &[String],
    what: &str,
    one: impl Fn(&str) -> Option<i64>,
) -> Result<Vec<(i64, i64)>, String> {
    items
        .iter()
        .map(|item| {
            let bad = || format!("invalid {what} {item:?}");
            let (a, b) = match item.split_once(':') {
                Some((a, b)) => (
                    one(a.trim()).ok_or_else(bad)?,
                    one(b.trim()).ok_or_else(bad)?,
                ),
                None => {
                    let v = one(item.trim()).ok_or_else(bad)?;
                    (v, v)
                }
            };
            if a > b && (a > 0) == (b > 0) {
                return Err(format!("invalid {what} range {item:?}: start after end"));
            }
            Ok((a, b))
        })
        .collect()
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn month(s: &str) -> Option<i64> {
    const NAMES: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let lower = s.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as i64 + 1)
        .or_else(|| s.parse().ok().filter(|m| (1..=12).contains(m)))
}

/// Who is on first-line duty for a squad at a given moment.
#[derive(Debug, Clone)]
pub struct Goalkeeper {
    tz: TimeZone,
    /// Minutes after local midnight at which duty changes hands.
    handover: u32,
    schedule: Schedule,
    /// `[start, end)` and who is on duty then instead; later entries win.
    overrides: Vec<(Ts, Ts, Arc<str>)>,
}

/// One goalkeeper's shift: from one handover to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub start: Ts,
    pub end: Ts,
    pub person: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
enum Schedule {
    /// Indexed by `Weekday::to_monday_zero_offset`.
    Weekdays([Option<Arc<str>>; 7]),
    /// One person a day, in order, starting at `start`.
    Daily { start: Date, people: Vec<Arc<str>> },
}

impl Goalkeeper {
    pub fn compile(f: &GoalkeeperFile) -> Result<Goalkeeper, String> {
        let tz = TimeZone::get(&f.timezone)
            .map_err(|_| format!("unknown time zone {:?}", f.timezone))?;
        let handover = match &f.handover {
            None => 0,
            Some(h) => parse_hhmm(h)
                .filter(|m| *m < 24 * 60)
                .ok_or_else(|| format!("handover {h:?} is not HH:MM"))?,
        };
        let schedule = match (&f.weekdays, &f.rotation) {
            (Some(days), None) => Schedule::Weekdays(weekday_table(days)?),
            (None, Some(r)) => {
                if r.people.is_empty() {
                    return Err("rotation.people is empty".into());
                }
                let start: Date = r.start.parse().map_err(|_| {
                    format!("rotation.start {:?} is not a date (YYYY-MM-DD)", r.start)
                })?;
                Schedule::Daily {
                    start,
                    people: r.people.iter().map(|p| Arc::from(p.as_str())).collect(),
                }
            }
            (Some(_), Some(_)) => return Err("give either weekdays or rotation, not both".into()),
            (None, None) => {
                return Err(
                    "give weekdays (day -> person) or rotation (people taking a day each)".into(),
                );
            }
        };
        let local = |what: &str, s: &str| -> Result<Ts, String> {
            if let Ok(Some(t)) = Ts::parse_rfc3339(s) {
                return Ok(t);
            }
            let dt: jiff::civil::DateTime = s.parse().map_err(|_| {
                format!(
                    "override {what} {s:?} is not a local date-time (2026-12-24T09:00) or RFC 3339"
                )
            })?;
            let t = tz
                .to_timestamp(dt)
                .map_err(|e| format!("override {what} {s:?}: {e}"))?;
            Ok(Ts(t.as_millisecond()))
        };
        let mut overrides = Vec::with_capacity(f.overrides.len());
        for o in &f.overrides {
            let (start, end) = (local("start", &o.start)?, local("end", &o.end)?);
            if end <= start {
                return Err(format!(
                    "override for {}: end {:?} is not after start {:?}",
                    o.person, o.end, o.start
                ));
            }
            overrides.push((start, end, Arc::from(o.person.as_str())));
        }
        Ok(Goalkeeper {
            tz,
            handover,
            schedule,
            overrides,
        })
    }

    /// Who is on duty at `at`: an override in force, else the schedule.
    pub fn on_duty(&self, at: Ts) -> Option<Arc<str>> {
        if let Some((_, _, p)) = self
            .overrides
            .iter()
            .rev()
            .find(|(s, e, _)| *s <= at && at < *e)
        {
            return Some(p.clone());
        }
        self.scheduled(at)
    }

    /// The overrides declared in the rule file: `[start, end)` and the person.
    pub fn overrides(&self) -> &[(Ts, Ts, Arc<str>)] {
        &self.overrides
    }

    /// The shifts (handover to handover, in the squad's time zone, so a day
    /// across a DST change is 23 or 25 hours) that overlap `[from, to)`, each
    /// with the person the schedule and the overrides put on duty at its start.
    pub fn shifts(&self, from: Ts, to: Ts) -> Vec<Shift> {
        let handover = |date: Date| -> Option<Ts> {
            let dt = date.to_datetime(
                jiff::civil::Time::new(
                    (self.handover / 60) as i8,
                    (self.handover % 60) as i8,
                    0,
                    0,
                )
                .ok()?,
            );
            Some(Ts(self.tz.to_timestamp(dt).ok()?.as_millisecond()))
        };
        let z = from.to_jiff().to_zoned_datetime(self.tz.clone());
        let mut date = z.date();
        if handover(date).is_some_and(|h| h > from) {
            date = date.yesterday().unwrap_or(date);
        }
        let mut out = Vec::new();
        while let (Some(start), Some(next)) = (handover(date), date.tomorrow().ok()) {
            if start >= to || out.len() > 10_000 {
                break;
            }
            let Some(end) = handover(next) else { break };
            out.push(Shift {
                start,
                end,
                person: self.on_duty(start),
            });
            date = next;
        }
        out
    }

    /// The shift `at` falls in.
    pub fn shift_at(&self, at: Ts) -> Option<Shift> {
        self.shifts(at, at.plus(std::time::Duration::from_millis(1)))
            .into_iter()
            .find(|s| s.start <= at && at < s.end)
    }

    fn scheduled(&self, at: Ts) -> Option<Arc<str>> {
        let z = at.to_jiff().to_zoned_datetime(self.tz.clone());
        let minute = z.hour() as u32 * 60 + z.minute() as u32;
        let mut date = z.date();
        if minute < self.handover {
            date = date.yesterday().ok()?;
        }
        match &self.schedule {
            Schedule::Weekdays(table) => {
                table[date.weekday().to_monday_zero_offset() as usize].clone()
            }
            Schedule::Daily { start, people } => {
                let days = (date - *start).get_days() as i64;
                Some(people[days.rem_euclid(people.len() as i64) as usize].clone())
            }
        }
    }
}

fn weekday_table(days: &BTreeMap<String, String>) -> Result<[Option<Arc<str>>; 7], String> {
    let mut table: [Option<Arc<str>>; 7] = Default::default();
    for (day, person) in days {
        // Accept ranges like "monday:friday" as in time intervals.
        let r = ranges(std::slice::from_ref(day), "weekday", |s| {
            weekday(s).map(|w| w.to_monday_zero_offset() as i64)
        })?;
        for (a, b) in r {
            for d in a..=b {
                table[d as usize] = Some(Arc::from(person.as_str()));
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file::RotationFile;

    fn at(s: &str) -> Ts {
        Ts::parse_rfc3339(s).unwrap().unwrap()
    }

    fn spec(yaml: &str) -> TimeSpec {
        TimeSpec::compile(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn office_hours_in_a_time_zone() {
        let s = spec(
            "{times: [{start_time: '09:00', end_time: '17:00'}], weekdays: ['monday:friday'], location: Europe/Stockholm}",
        );
        // 2026-11-26 is a Thursday; Stockholm is UTC+1 in November.
        assert!(s.contains(at("2026-11-26T08:00:00Z")));
        assert!(!s.contains(at("2026-11-26T07:59:00Z")));
        assert!(!s.contains(at("2026-11-26T16:00:00Z")), "end is exclusive");
        assert!(!s.contains(at("2026-11-28T10:00:00Z")), "saturday");
    }

    #[test]
    fn days_months_and_negative_days() {
        let s = spec("{days_of_month: ['-1'], months: ['november']}");
        assert!(s.contains(at("2026-11-30T12:00:00Z")));
        assert!(!s.contains(at("2026-11-29T12:00:00Z")));
        assert!(!s.contains(at("2026-12-31T12:00:00Z")));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let err = |y: &str| TimeSpec::compile(&serde_yaml_ng::from_str(y).unwrap()).unwrap_err();
        assert!(err("{weekdays: [funday]}").contains("invalid weekday"));
        assert!(err("{times: [{start_time: '18:00', end_time: '09:00'}]}").contains("before"));
        assert!(err("{location: Mars/Olympus}").contains("unknown time zone"));
        assert!(err("{months: ['13']}").contains("invalid month"));
    }

    #[test]
    fn goalkeeper_weekdays_with_handover() {
        let f = GoalkeeperFile {
            overrides: Vec::new(),
            page_budget: None,
            working_hours: None,
            timezone: "Europe/Stockholm".into(),
            handover: Some("09:00".into()),
            weekdays: Some(BTreeMap::from([
                ("monday:wednesday".into(), "alice".into()),
                ("thursday".into(), "bob".into()),
                ("friday:sunday".into(), "carol".into()),
            ])),
            rotation: None,
        };
        let g = Goalkeeper::compile(&f).unwrap();
        // Thursday 08:59 local is still Wednesday's shift.
        assert_eq!(
            g.on_duty(at("2026-11-26T07:59:00Z")).as_deref(),
            Some("alice")
        );
        assert_eq!(
            g.on_duty(at("2026-11-26T08:00:00Z")).as_deref(),
            Some("bob")
        );
        assert_eq!(
            g.on_duty(at("2026-11-29T12:00:00Z")).as_deref(),
            Some("carol")
        );
    }

    #[test]
    fn goalkeeper_daily_rotation() {
        let f = GoalkeeperFile {
            overrides: Vec::new(),
            page_budget: None,
            working_hours: None,
            timezone: "UTC".into(),
            handover: None,
            weekdays: None,
            rotation: Some(RotationFile {
                start: "2026-11-01".into(),
                people: vec!["a".into(), "b".into(), "c".into()],
            }),
        };
        let g = Goalkeeper::compile(&f).unwrap();
        assert_eq!(g.on_duty(at("2026-11-01T00:00:00Z")).as_deref(), Some("a"));
        assert_eq!(g.on_duty(at("2026-11-02T23:59:00Z")).as_deref(), Some("b"));
        assert_eq!(g.on_duty(at("2026-11-04T00:00:00Z")).as_deref(), Some("a"));
        assert_eq!(
            g.on_duty(at("2026-10-31T12:00:00Z")).as_deref(),
            Some("c"),
            "before start wraps backwards"
        );
    }

    /// Shifts run handover to handover in local time: across the end of
    /// summer time in Stockholm (2026-10-25, 03:00 CEST -> 02:00 CET) the
    /// shift is 25 hours, and a rule-file override (local times) wins.
    #[test]
    fn shifts_follow_local_handover_across_dst_and_overrides_win() {
        let f: GoalkeeperFile = serde_yaml_ng::from_str(
            "{timezone: Europe/Stockholm, handover: '09:00', rotation: {start: '2026-10-20', people: [ann, ben]}, \
              overrides: [{person: cat, start: '2026-10-26T09:00', end: '2026-10-26T21:00', reason: swap}]}",
        )
        .unwrap();
        let g = Goalkeeper::compile(&f).unwrap();
        let shifts = g.shifts(at("2026-10-24T12:00:00Z"), at("2026-10-26T12:00:00Z"));
        let got: Vec<(String, String, Option<&str>)> = shifts
            .iter()
            .map(|s| (s.start.to_string(), s.end.to_string(), s.person.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                // 09:00 CEST = 07:00Z; the day after, 09:00 CET = 08:00Z: 25 hours.
                (
                    "2026-10-24T07:00:00Z".into(),
                    "2026-10-25T08:00:00Z".into(),
                    Some("ann")
                ),
                (
                    "2026-10-25T08:00:00Z".into(),
                    "2026-10-26T08:00:00Z".into(),
                    Some("ben")
                ),
                // The override starts at this handover: cat.
                (
                    "2026-10-26T08:00:00Z".into(),
                    "2026-10-27T08:00:00Z".into(),
                    Some("cat")
                ),
            ]
        );
        // The override ends at 21:00 local (20:00Z): ann's shift resumes.
        assert_eq!(
            g.on_duty(at("2026-10-26T19:59:00Z")).as_deref(),
            Some("cat")
        );
        assert_eq!(
            g.on_duty(at("2026-10-26T20:00:00Z")).as_deref(),
            Some("ann")
        );
        // Before the handover, yesterday's goalkeeper is still on duty.
        assert_eq!(
            g.on_duty(at("2026-10-25T07:59:00Z")).as_deref(),
            Some("ann")
        );
        let bad: GoalkeeperFile = serde_yaml_ng::from_str(
            "{timezone: UTC, weekdays: {monday: a}, overrides: [{person: b, start: '2026-10-26T09:00', end: '2026-10-26T08:00'}]}",
        )
        .unwrap();
        assert!(
            Goalkeeper::compile(&bad)
                .unwrap_err()
                .contains("not after start")
        );
    }
}
