//! Replaying a recorded stream through the engine in virtual time.
//!
//! The replay format is JSON Lines, one input message a line:
//! - `{"received_at": "<RFC 3339>", "message": <the message as JSON>}`
//! - `{"received_at": "<RFC 3339>", "raw": "<a payload that is not JSON>"}`
//! - a bare message, received at the previous line's time.
//!
//! Time never goes backwards: a line older than the one before it is taken as
//! received at the later time (and counted in [`ReplayReport::reordered`]).
//! At the end of input, virtual time runs on until every input alert has its
//! fate (every group holding one has flushed).

use crate::engine::{Engine, Outputs};
use crate::ingest::{FeedOptions, Ledger, Observer, feed_with};
use crate::model::Ts;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::{self, BufRead};

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub ledger: Ledger,
    pub lines: u64,
    /// Lines whose `received_at` was earlier than the line before.
    pub reordered: u64,
    /// Lines whose envelope was unusable (bad `received_at`, no `message`/`raw`),
    /// each counted as one invalid input; with line numbers.
    pub bad_lines: Vec<(u64, String)>,
    /// Virtual time at the end of the replay.
    pub end: Ts,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    received_at: Option<&'a str>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(default)]
    raw: Option<String>,
}

/// One line of a replay file, split into its time and payload.
pub enum Line<'a> {
    /// Received at the given time (or at the previous line's time when `None`).
    Message {
        at: Option<Ts>,
        payload: std::borrow::Cow<'a, [u8]>,
    },
    /// An envelope that cannot be used; the reason.
    Bad(String),
}

pub fn parse_line(line: &str) -> Line<'_> {
    match serde_json::from_str::<Envelope>(line) {
        Ok(Envelope {
            received_at: Some(at),
            message,
            raw,
        }) => {
            let at = match Ts::parse_rfc3339(at) {
                Ok(Some(t)) => t,
                _ => return Line::Bad(format!("received_at {at:?} is not an RFC 3339 timestamp")),
            };
            match (message, raw) {
                (Some(m), None) => Line::Message {
                    at: Some(at),
                    payload: m.get().as_bytes().into(),
                },
                (None, Some(r)) => Line::Message {
                    at: Some(at),
                    payload: r.into_bytes().into(),
                },
                _ => Line::Bad("an envelope needs exactly one of \"message\" or \"raw\"".into()),
            }
        }
        _ => Line::Message {
            at: None,
            payload: line.as_bytes().into(),
        },
    }
}

/// Replays `input` through `engine`. Virtual time starts at the first
/// envelope's `received_at`; `start` is only the time of bare lines before it.
/// `on_output` sees every engine output after it is counted.
pub fn replay(
    engine: &mut Engine,
    input: impl BufRead,
    start: impl FnOnce() -> Ts,
    mut on_output: impl FnMut(&Engine, &Outputs) -> io::Result<()>,
) -> io::Result<ReplayReport> {
    let engines = std::slice::from_mut(engine);
    let mut reports = replay_many(engines, input, start, |_, e, o| on_output(e, o), None)?;
    Ok(reports.pop().expect("one engine, one report"))
}

/// Replays `input` through several engines in lockstep (same inputs, same
/// virtual times, same input ids), one report each. `on_output` gets the
/// engine's index; `observe` sees each valid alert once, with its input id.
pub fn replay_many(
    engines: &mut [Engine],
    input: impl BufRead,
    start: impl FnOnce() -> Ts,
    mut on_output: impl FnMut(usize, &Engine, &Outputs) -> io::Result<()>,
    mut observe: Option<&mut Observer<'_>>,
) -> io::Result<Vec<ReplayReport>> {
    let mut reports: Vec<ReplayReport> = engines
        .iter()
        .map(|_| ReplayReport {
            ledger: Ledger::new(),
            ..ReplayReport::default()
        })
        .collect();
    let mut out = Outputs::default();
    let mut clock = VirtualClock::new(start);
    let mut next_input = 0u64;
    let mut step = |i: usize,
                    engine: &Engine,
                    out: &mut Outputs,
                    report: &mut ReplayReport|
     -> io::Result<()> {
        report.ledger.record(engine, out);
        on_output(i, engine, out)?;
        out.clear();
        Ok(())
    };
    let mut lines = 0u64;
    let mut bad_lines = Vec::new();
    for line in input.lines() {
        let line = line?;
        lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        let (at, payload) = match parse_line(&line) {
            Line::Message { at, payload } => (at, payload),
            Line::Bad(reason) => {
                bad_lines.push((lines, reason));
                (None, std::borrow::Cow::Borrowed(&b""[..]))
            }
        };
        let now = clock.observe(at);
        let mut alerts = 0;
        for (i, (engine, report)) in engines.iter_mut().zip(reports.iter_mut()).enumerate() {
            advance(engine, now, &mut out, &mut |e, o| step(i, e, o, report))?;
            // Reborrowed per message: the trait object's lifetime shrinks to this call.
            let observe: Option<&mut Observer<'_>> = match (i, observe.as_mut()) {
                (0, Some(f)) => Some(&mut **f),
                _ => None,
            };
            let opts = FeedOptions {
                observe,
                ..FeedOptions::default()
            };
            let fed = feed_with(engine, &payload, now, next_input, &mut out, opts);
            alerts = fed.alerts as u64;
            report.ledger.received += alerts;
            step(i, engine, &mut out, report)?;
        }
        next_input += alerts;
    }
    let end = clock.now.unwrap_or_default();
    for (i, (engine, report)) in engines.iter_mut().zip(reports.iter_mut()).enumerate() {
        let mut now = end;
        while report.ledger.decided() < report.ledger.received {
            let Some(due) = engine.next_deadline() else {
                break;
            };
            now = now.max(due);
            advance(engine, now, &mut out, &mut |e, o| step(i, e, o, report))?;
        }
        report.end = now;
        report.lines = lines;
        report.reordered = clock.reordered;
        report.bad_lines = bad_lines.clone();
    }
    Ok(reports)
}

/// Replay time: starts at the first envelope, never goes backwards.
struct VirtualClock<F: FnOnce() -> Ts> {
    start: Option<F>,
    now: Option<Ts>,
    reordered: u64,
}

impl<F: FnOnce() -> Ts> VirtualClock<F> {
    fn new(start: F) -> Self {
        VirtualClock {
            start: Some(start),
            now: None,
            reordered: 0,
        }
    }

    /// The time of a line received at `at` (`None`: at the previous line's time).
    fn observe(&mut self, at: Option<Ts>) -> Ts {
        match (self.now.as_mut(), at) {
            (Some(now), Some(at)) => {
                if at < *now {
                    self.reordered += 1;
                }
                *now = (*now).max(at);
                *now
            }
            (Some(now), None) => *now,
            (None, at) => *self
                .now
                .insert(at.unwrap_or_else(|| self.start.take().expect("taken once")())),
        }
    }
}

/// Runs every timer due at or before `to`, in order, at its own time.
pub fn advance(
    engine: &mut Engine,
    to: Ts,
    out: &mut Outputs,
    step: &mut impl FnMut(&Engine, &mut Outputs) -> io::Result<()>,
) -> io::Result<()> {
    engine.advance_to(to, out);
    step(engine, out)
}
