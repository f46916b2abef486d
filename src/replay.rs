//! Replaying a recorded stream through the engine in virtual time.
//!
//! The replay format is JSON Lines, one input message a line:
//! - `{"received_at": "<RFC 3339>", "message": <the message as JSON>}`
//! - `{"received_at": "<RFC 3339>", "raw": "<a payload that is not JSON>"}`
//! - `{"received_at": "<RFC 3339>", "raw_base64": "<a payload that is not UTF-8>"}`
//! - a bare message, received at the previous line's time.
//!
//! `squadron record` writes each message's exact bytes: JSON on one line as
//! `message`, other text as `raw`, anything else as `raw_base64`. A line that
//! cannot be used (not UTF-8, a bad `received_at`, an envelope without a
//! payload) is counted as one invalid input with its reason and line number,
//! exactly as production counts a bad message, and the replay goes on.
//!
//! Time never goes backwards: a line older than the one before it is taken as
//! received at the later time (and counted in [`ReplayReport::reordered`]).
//! At the end of input, virtual time runs on until every input alert has its
//! fate (every group holding one has flushed).

use crate::decode::{Invalid, InvalidKind};
use crate::engine::{Engine, Outputs};
use crate::ingest::{FeedOptions, Ledger, Observer, feed_decoded, invalid_fate};
use crate::model::Ts;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::{self, BufRead};

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub ledger: Ledger,
    pub lines: u64,
    /// Lines whose `received_at` was earlier than the line before.
    pub reordered: u64,
    /// Lines that could not be used (not UTF-8, bad `received_at`, no
    /// payload), each counted as one invalid input; with line numbers.
    pub bad_lines: Vec<(u64, Invalid)>,
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
    #[serde(borrow, default)]
    raw_base64: Option<&'a str>,
}

/// One line of a replay file, split into its time and payload.
pub enum Line<'a> {
    /// Received at the given time (or at the previous line's time when `None`).
    Message {
        at: Option<Ts>,
        payload: std::borrow::Cow<'a, [u8]>,
    },
    /// A line that cannot be used, and why: counted as one invalid input.
    Bad(Invalid),
}

/// The envelope `squadron record` and `generate` write, read without a JSON
/// pass of its own: `{"received_at":"<ts>","message":<message>}`. Only the
/// decoder, which parses the message anyway, checks it: when the message
/// does not decode, the caller reads the line again with [`parse_line`]
/// (another field after the message would be legal JSON).
pub fn canonical_envelope(line: &[u8]) -> Option<(Ts, &[u8])> {
    let rest = line.strip_prefix(br#"{"received_at":""#)?;
    let q = rest.iter().position(|&b| b == b'"')?;
    let (at, rest) = (&rest[..q], &rest[q + 1..]);
    let message = rest.strip_prefix(br#","message":"#)?.strip_suffix(b"}")?;
    let at = Ts::parse_rfc3339(std::str::from_utf8(at).ok()?).ok()??;
    Some((at, message))
}

pub fn parse_line(line: &[u8]) -> Line<'_> {
    let bad = |kind, detail: String| Line::Bad(Invalid { kind, detail });
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => return bad(InvalidKind::NotUtf8, format!("the line is not UTF-8: {e}")),
    };
    let Ok(Envelope {
        received_at: Some(at),
        message,
        raw,
        raw_base64,
    }) = serde_json::from_str::<Envelope>(text)
    else {
        return Line::Message {
            at: None,
            payload: line.into(),
        };
    };
    let at = match Ts::parse_rfc3339(at) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return bad(
                InvalidKind::BadTimestamp,
                format!("received_at {at:?} is Go's zero time (unset)"),
            );
        }
        Err(_) => {
            return bad(
                InvalidKind::BadTimestamp,
                format!(
                    "received_at {at:?} is not an RFC 3339 timestamp between years 0001 and 9999"
                ),
            );
        }
    };
    let payload: std::borrow::Cow<'_, [u8]> = match (message, raw, raw_base64) {
        (Some(m), None, None) => m.get().as_bytes().into(),
        (None, Some(r), None) => r.into_bytes().into(),
        (None, None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(bytes) => bytes.into(),
            Err(e) => return bad(InvalidKind::BadField, format!("raw_base64: {e}")),
        },
        _ => {
            return bad(
                InvalidKind::UnknownShape,
                "an envelope needs exactly one of \"message\", \"raw\" or \"raw_base64\"".into(),
            );
        }
    };
    Line::Message {
        at: Some(at),
        payload,
    }
}

/// The envelope `squadron record` writes for a message received at `at`:
/// the message's exact bytes, whatever they are. No trailing newline.
pub fn envelope(at: Ts, payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        // JSON on one line is embedded as is (RawValue keeps its bytes).
        Ok(text)
            if !text.contains(['\n', '\r'])
                && serde_json::from_str::<&RawValue>(text).is_ok_and(|v| v.get() == text) =>
        {
            format!("{{\"received_at\":\"{at}\",\"message\":{text}}}")
        }
        Ok(text) => serde_json::json!({"received_at": at.to_string(), "raw": text}).to_string(),
        Err(_) => serde_json::json!({
            "received_at": at.to_string(),
            "raw_base64": base64::engine::general_purpose::STANDARD.encode(payload),
        })
        .to_string(),
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
    let mut line_of = |buf: &[u8]| -> io::Result<()> {
        lines += 1;
        let line = buf.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        // One pass over the bytes: the message is decoded once, for every engine.
        let fast = canonical_envelope(line)
            .and_then(|(at, m)| crate::decode::decode(m).ok().map(|d| (at, d)));
        let slow_payload;
        let (at, decoded) = match fast {
            Some((at, d)) => (Some(at), Ok(d)),
            None => match parse_line(line) {
                Line::Message { at, payload } => {
                    slow_payload = payload;
                    (at, crate::decode::decode(&slow_payload))
                }
                Line::Bad(reason) => {
                    let now = clock.observe(None);
                    for (i, (engine, report)) in
                        engines.iter_mut().zip(reports.iter_mut()).enumerate()
                    {
                        advance(engine, now, &mut out, &mut |e, o| step(i, e, o, report))?;
                        out.fates.push(invalid_fate(next_input, reason.clone()));
                        report.ledger.received += 1;
                        step(i, engine, &mut out, report)?;
                    }
                    next_input += 1;
                    bad_lines.push((lines, reason));
                    return Ok(());
                }
            },
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
            let fed = feed_decoded(engine, &decoded, now, next_input, &mut out, opts);
            alerts = fed.alerts as u64;
            report.ledger.received += alerts;
            step(i, engine, &mut out, report)?;
        }
        next_input += alerts;
        if let Ok(d) = decoded {
            crate::decode::recycle(d);
        }
        Ok(())
    };
    for_each_line(input, &mut line_of)?;
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

/// Calls `f` with each line of `input` (without its newline), read in place
/// from the reader's buffer: a line is copied only when it spans two reads.
fn for_each_line(
    mut input: impl BufRead,
    f: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return if partial.is_empty() {
                Ok(())
            } else {
                f(&partial)
            };
        }
        let Some(end) = memchr::memchr(b'\n', available) else {
            let n = available.len();
            partial.extend_from_slice(available);
            input.consume(n);
            continue;
        };
        if partial.is_empty() {
            f(&available[..end])?;
        } else {
            partial.extend_from_slice(&available[..end]);
            f(&partial)?;
            partial.clear();
        }
        input.consume(end + 1);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_whatever_the_reads_cut() {
        let text = b"first line\r\n\nsecond, longer than a read\nno newline at the end";
        for capacity in [1, 3, 7, 64, 4096] {
            let reader = io::BufReader::with_capacity(capacity, &text[..]);
            let mut lines: Vec<String> = Vec::new();
            for_each_line(reader, &mut |l: &[u8]| {
                lines.push(String::from_utf8(l.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
            assert_eq!(
                lines,
                [
                    "first line\r",
                    "",
                    "second, longer than a read",
                    "no newline at the end"
                ],
                "read {capacity} bytes at a time"
            );
        }
    }
    use crate::engine::FateKind;
    use std::sync::Arc;

    fn replay_text(input: &[u8]) -> ReplayReport {
        let mut engine = Engine::new(Arc::new(crate::rules::RuleSet::empty()));
        replay(&mut engine, input, || Ts(0), |_, _| Ok(())).unwrap()
    }

    /// The one-pass reading of canonical envelopes decides exactly what the
    /// general reading does, including the lines it must leave to it.
    #[test]
    fn canonical_envelopes_read_in_one_pass_agree_with_the_general_reading() {
        let line =
            br#"{"received_at":"2026-11-26T10:00:00Z","message":{"labels":{"alertname":"A"}}}"#;
        let (at, m) = canonical_envelope(line).unwrap();
        assert_eq!(
            at,
            Ts::parse_rfc3339("2026-11-26T10:00:00Z").unwrap().unwrap()
        );
        assert_eq!(m, br#"{"labels":{"alertname":"A"}}"#);
        // Another field after the message is legal: the message slice does
        // not decode, so the general reading takes the line.
        let extra = br#"{"received_at":"2026-11-26T10:00:00Z","message":{"labels":{"alertname":"A"}},"note":"x"}"#;
        assert!(canonical_envelope(extra).is_some_and(|(_, m)| crate::decode::decode(m).is_err()));
        let r = replay_text(
            &[
                &line[..],
                b"
",
                &extra[..],
                b"
",
            ]
            .concat(),
        );
        let invalid = r.ledger.fates.get(&FateKind::Invalid).copied().unwrap_or(0);
        assert_eq!((r.ledger.received, invalid), (2, 0), "{:?}", r.bad_lines);
        // Not canonical: a bad time, another order, raw payloads.
        for other in [
            &br#"{"received_at":"yesterday","message":{}}"#[..],
            br#"{"message":{"labels":{}},"received_at":"2026-11-26T10:00:00Z"}"#,
            br#"{"received_at":"2026-11-26T10:00:00Z","raw":"<html>"}"#,
        ] {
            assert!(canonical_envelope(other).is_none());
        }
    }

    /// A recording keeps each message's exact bytes, so replay decodes what
    /// production decoded: a non-UTF-8 message is invalid/not_utf8 in both.
    #[test]
    fn envelopes_keep_exact_bytes() {
        let payloads: Vec<Vec<u8>> = vec![
            br#"{"labels":{"alertname":"A"}}"#.to_vec(),
            b"[{\"labels\": {\"alertname\": \"A\"}}]".to_vec(),
            b"{\n  \"labels\": {\"alertname\": \"A\"}\n}\n".to_vec(),
            b"<html>502</html>".to_vec(),
            b"  {\"labels\":{\"a\":\"1\"}}  ".to_vec(),
            vec![0xff, 0xfe, b'{', b'}'],
            b"{\"labels\":{\"a\":\"\xc3\"}}".to_vec(),
            Vec::new(),
            (0..=255u8).collect(),
        ];
        for p in &payloads {
            let line = envelope(Ts(1_000), p);
            assert!(!line.contains('\n'), "{line}");
            let Line::Message { at, payload } = parse_line(line.as_bytes()) else {
                panic!("{line} is not an envelope");
            };
            assert_eq!(at, Some(Ts(1_000)));
            assert_eq!(&*payload, &p[..], "{line}");
        }
    }

    #[test]
    fn bad_lines_are_counted_with_their_reason_and_the_replay_goes_on() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"received_at\":\"2026-01-01T00:00:00Z\",\"message\":{\"labels\":{\"alertname\":\"A\"}}}\n");
        input.extend_from_slice(b"{\"labels\":{\"alertname\":\"\xff\"}}\n");
        input.extend_from_slice(b"{\"received_at\":\"0001-01-01T00:00:00Z\",\"message\":{\"labels\":{\"alertname\":\"B\"}}}\n");
        input.extend_from_slice(b"{\"received_at\":\"2026-01-01T00:00:01Z\"}\n");
        input.extend_from_slice(
            b"{\"received_at\":\"2026-01-01T00:00:02Z\",\"raw_base64\":\"//4=\"}\n",
        );
        input.extend_from_slice(b"{\"received_at\":\"2026-01-01T00:00:03Z\",\"message\":{\"labels\":{\"alertname\":\"C\"}}}\n");
        let r = replay_text(&input);
        assert_eq!(r.lines, 6);
        assert_eq!(r.ledger.received, 6);
        assert_eq!(r.ledger.decided(), 6);
        let lines: Vec<(u64, InvalidKind)> =
            r.bad_lines.iter().map(|(n, e)| (*n, e.kind)).collect();
        assert_eq!(
            lines,
            vec![
                (2, InvalidKind::NotUtf8),
                (3, InvalidKind::BadTimestamp),
                (4, InvalidKind::UnknownShape)
            ]
        );
        // The raw_base64 line decodes to bytes that are not UTF-8, as production saw them.
        assert_eq!(r.ledger.causes["invalid/not_utf8"], 2);
        assert_eq!(r.ledger.causes["invalid/bad_timestamp"], 1);
        assert_eq!(r.ledger.fates[&FateKind::Invalid], 4);
        assert_eq!(r.ledger.received - r.ledger.fates[&FateKind::Invalid], 2);
    }
}
