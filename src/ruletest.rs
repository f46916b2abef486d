//! Declarative rule tests (`squadron test`): alerts in at virtual times,
//! expected notifications and fates out, compared with a readable diff.
//!
//! The engine's own data-driven tests use the same format (tests/engine/), so a
//! rule test is a YAML case, not a page of Rust. Format reference: README.md.

use crate::engine::{Engine, Fate, FateRecord, Notification, Outputs};
use crate::model::{Alert, LabelSet, Labels, Status, Ts, format_duration, parse_duration};
use crate::rules::{self, RuleSet};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Rules directory, relative to the test file. Default: the parent of the
    /// folder holding the test file (`rules/tests/x.yaml` tests `rules/`).
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// Rule files written inline (name -> YAML), instead of a directory.
    #[serde(default)]
    pub inline_rules: Option<BTreeMap<String, String>>,
    /// Virtual time of `at: 0s` (RFC 3339). Default 2026-01-05T10:00:00Z, a Monday.
    #[serde(default)]
    pub start: Option<String>,
    pub tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Overrides the file's start for this case.
    #[serde(default)]
    pub start: Option<String>,
    pub alerts: Vec<InputAlert>,
    /// Run virtual time to here (after `at: 0s`). Default: until every input has its fate.
    #[serde(default)]
    pub until: Option<String>,
    /// When given, the notifications sent must be exactly these, in order
    /// (handover reports are not among them: see `reports`).
    #[serde(default)]
    pub notifications: Option<Vec<ExpectedNotification>>,
    /// When given, the handover reports sent until `until` must be exactly
    /// these, in order.
    #[serde(default)]
    pub reports: Option<Vec<ExpectedReport>>,
}

/// A goalkeeper handover's report, as a test expects it. Fields left out are not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedReport {
    /// The handover, relative to `at: 0s`.
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub squad: Option<String>,
    /// The incoming goalkeeper (the report is addressed to them).
    #[serde(default)]
    pub to: Option<String>,
    /// The outgoing goalkeeper.
    #[serde(default)]
    pub from: Option<String>,
    /// When the reported shift began, relative to `at: 0s` (may be negative: `-3h`).
    #[serde(default)]
    pub shift_start: Option<String>,
    #[serde(default)]
    pub pages: Option<u64>,
    #[serde(default)]
    pub pages_out_of_hours: Option<u64>,
    /// Groups paged.
    #[serde(default)]
    pub incidents: Option<u32>,
    #[serde(default)]
    pub over_budget: Option<bool>,
    /// Input alerts by fate (`received`, `dropped`, `digested`, ...), each checked.
    #[serde(default)]
    pub noise: Option<BTreeMap<String, u64>>,
    /// One label subset per group still firing, any order; the count must match.
    #[serde(default)]
    pub still_firing: Option<Vec<BTreeMap<String, String>>>,
    /// Silence ids, any order; exactly these.
    #[serde(default)]
    pub silences_ending: Option<Vec<String>>,
    /// The digest's groups, any order; the count must match.
    #[serde(default)]
    pub digest: Option<Vec<ExpectedDigest>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDigest {
    /// A subset of the group's labels.
    #[serde(default)]
    pub group: BTreeMap<String, String>,
    #[serde(default)]
    pub rule: Option<String>,
    /// The group's alerts, any order; the count must match.
    #[serde(default)]
    pub alerts: Option<Vec<ExpectedDigestAlert>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDigestAlert {
    pub name: String,
    /// Times it started firing during the shift.
    #[serde(default)]
    pub fired: Option<u32>,
    /// How long it fired during the shift (`1h30m`).
    #[serde(default)]
    pub firing_for: Option<String>,
    #[serde(default)]
    pub still_firing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputAlert {
    pub at: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `firing` (default) or `resolved` (endsAt = at).
    #[serde(default)]
    pub status: Option<Status>,
    /// Firing alerts: endsAt = at + this. Default: none (resolve_timeout applies).
    #[serde(default)]
    pub ends_after: Option<String>,
    /// Send it again every `every` until `until` (relative to `at: 0s`), as
    /// Prometheus does each evaluation. Resends are deduplicated unless stated.
    #[serde(default)]
    pub repeat: Option<Repeat>,
    /// The expected fate of this input (the first send when repeated).
    #[serde(default)]
    pub fate: Option<String>,
    /// The rule or silence expected to be responsible for the fate.
    #[serde(default)]
    pub rule: Option<String>,
    /// Expected fate of every resend.
    #[serde(default)]
    pub repeat_fate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    pub every: String,
    pub until: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedNotification {
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub squad: Option<String>,
    #[serde(default)]
    pub goalkeeper: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// The group labels, exactly.
    #[serde(default)]
    pub group: Option<BTreeMap<String, String>>,
    /// One label subset per alert in the notification, any order; the count must match.
    #[serde(default)]
    pub alerts: Option<Vec<BTreeMap<String, String>>>,
    #[serde(default)]
    pub folded_notifications: Option<u32>,
    /// Whether any alert in it is marked flapping.
    #[serde(default)]
    pub flapping: Option<bool>,
}

/// The outcome of one test case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// Empty when the case passed; otherwise the readable differences.
    pub diff: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.diff.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: rules are invalid:\n{errors}")]
    Rules {
        path: PathBuf,
        errors: rules::RuleErrors,
    },
    #[error("{path}: test {test:?}: {message}")]
    Case {
        path: PathBuf,
        test: String,
        message: String,
    },
}

const DEFAULT_START: &str = "2026-01-05T10:00:00Z";

/// Runs every case in a test file.
pub fn run_file(path: &Path) -> Result<Vec<CaseResult>, TestFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TestFileError::Read {
        path: path.into(),
        source,
    })?;
    let file: TestFile = serde_yaml_ng::from_str(&text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        TestFileError::Parse {
            path: path.into(),
            line,
            column,
            message: rules::strip_location(&e.to_string()),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rules = load_rules(&file, base).map_err(|errors| TestFileError::Rules {
        path: path.into(),
        errors,
    })?;
    file.tests
        .iter()
        .map(|case| {
            run_case(&rules, file.start.as_deref(), case).map_err(|message| TestFileError::Case {
                path: path.into(),
                test: case.name.clone(),
                message,
            })
        })
        .collect()
}

fn load_rules(file: &TestFile, base: &Path) -> Result<Arc<RuleSet>, rules::RuleErrors> {
    let rules = match (&file.inline_rules, &file.rules) {
        (Some(inline), _) => {
            let sources: Vec<(PathBuf, String)> = inline
                .iter()
                .map(|(n, t)| (PathBuf::from(n), t.clone()))
                .collect();
            rules::compile(&sources)?
        }
        (None, Some(dir)) => rules::load_dir(&base.join(dir))?,
        (None, None) => rules::load_dir(base.parent().unwrap_or(Path::new("..")))?,
    };
    Ok(Arc::new(rules))
}

fn offset(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn time(s: &str) -> Result<Ts, String> {
    match Ts::parse_rfc3339(s) {
        Ok(Some(t)) => Ok(t),
        _ => Err(format!("start {s:?} is not an RFC 3339 timestamp")),
    }
}

struct Sent {
    /// Index in the case's `alerts`, and whether this is a resend.
    source: usize,
    resend: bool,
    at: Ts,
    labels: LabelSet,
    annotations: LabelSet,
    status: Status,
    ends_at: Option<Ts>,
}

/// Runs one case against `rules`.
pub fn run_case(
    rules: &Arc<RuleSet>,
    file_start: Option<&str>,
    case: &TestCase,
) -> Result<CaseResult, String> {
    let start = time(
        case.start
            .as_deref()
            .or(file_start)
            .unwrap_or(DEFAULT_START),
    )?;
    let mut sent: Vec<Sent> = Vec::new();
    for (i, a) in case.alerts.iter().enumerate() {
        let at = start.plus(offset(&a.at).map_err(|e| format!("alert {}: at: {e}", i + 1))?);
        let status = a.status.unwrap_or(Status::Firing);
        let ends_after = a
            .ends_after
            .as_deref()
            .map(offset)
            .transpose()
            .map_err(|e| format!("alert {}: ends_after: {e}", i + 1))?;
        let labels = LabelSet::from_pairs(a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if labels.is_empty() {
            return Err(format!("alert {}: labels are empty", i + 1));
        }
        let annotations =
            LabelSet::from_pairs(a.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut times = vec![at];
        if let Some(r) = &a.repeat {
            let every =
                offset(&r.every).map_err(|e| format!("alert {}: repeat.every: {e}", i + 1))?;
            let until = start
                .plus(offset(&r.until).map_err(|e| format!("alert {}: repeat.until: {e}", i + 1))?);
            if every.is_zero() {
                return Err(format!(
                    "alert {}: repeat.every must be greater than 0",
                    i + 1
                ));
            }
            let mut t = at.plus(every);
            while t <= until {
                times.push(t);
                t = t.plus(every);
            }
        }
        for (n, t) in times.into_iter().enumerate() {
            let ends_at = match status {
                Status::Resolved => Some(t),
                Status::Firing => ends_after.map(|d| t.plus(d)),
            };
            sent.push(Sent {
                source: i,
                resend: n > 0,
                at: t,
                labels: labels.clone(),
                annotations: annotations.clone(),
                status,
                ends_at,
            });
        }
    }
    // Stable: inputs at the same time keep the order they are written in.
    sent.sort_by_key(|s| s.at);

    let mut engine = Engine::new(rules.clone());
    engine.set_shift_mode(crate::engine::ShiftMode::Local);
    let mut out = Outputs::default();
    let mut fates: Vec<Option<FateRecord>> = vec![None; sent.len()];
    let mut notifications: Vec<Notification> = Vec::new();
    let mut collect = |out: &mut Outputs, fates: &mut Vec<Option<FateRecord>>| {
        for f in out.fates.drain(..) {
            let i = f.input as usize;
            fates[i] = Some(f);
        }
        notifications.append(&mut out.notifications);
        out.digests.clear();
    };
    for (i, s) in sent.iter().enumerate() {
        engine.advance_to(s.at, &mut out);
        collect(&mut out, &mut fates);
        let alert = Alert {
            labels: s.labels.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            annotations: s
                .annotations
                .iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            starts_at: Some(s.at),
            ends_at: s.ends_at,
            generator_url: None,
            status: (s.status == Status::Resolved).then_some(Status::Resolved),
        };
        engine.receive(i as u64, &alert, s.at, &mut out);
        collect(&mut out, &mut fates);
    }
    let until = case
        .until
        .as_deref()
        .map(offset)
        .transpose()
        .map_err(|e| format!("until: {e}"))?
        .map(|d| start.plus(d));
    while let Some(due) = engine.next_deadline() {
        let undecided = fates.iter().any(Option::is_none);
        match until {
            Some(u) if due > u => break,
            None if !undecided => break,
            _ => {}
        }
        engine.tick(due, &mut out);
        collect(&mut out, &mut fates);
    }

    let mut diff = Vec::new();
    let rel = |t: Ts| format_duration(t.since(start));
    for (i, s) in sent.iter().enumerate() {
        let a = &case.alerts[s.source];
        let want = if s.resend {
            a.repeat_fate.as_deref()
        } else {
            a.fate.as_deref()
        };
        let got = fates[i].as_ref().map(|f| &f.fate);
        let what = format!(
            "alert {} {} at {}{}",
            s.source + 1,
            s.labels,
            rel(s.at),
            if s.resend { " (resend)" } else { "" }
        );
        match (want, got) {
            (Some(w), Some(g)) => {
                let rule_ok = s.resend || a.rule.as_deref().is_none_or(|r| g.cause() == Some(r));
                if g.kind().as_str() != w || !rule_ok {
                    let expected = match (&a.rule, s.resend) {
                        (Some(r), false) => format!("{w} by {r}"),
                        _ => w.to_owned(),
                    };
                    diff.push(format!(
                        "{what}:\n    - expected fate: {expected}\n    + actual fate:   {}",
                        describe(g)
                    ));
                }
            }
            (Some(w), None) => diff.push(format!(
                "{what}:\n    - expected fate: {w}\n    + actual: no fate yet (extend `until`?)"
            )),
            (None, _) => {}
        }
    }
    let (reports, notifications): (Vec<Notification>, Vec<Notification>) =
        notifications.into_iter().partition(|n| n.report.is_some());
    if let Some(expected) = &case.reports {
        diff_in_order(
            &mut diff,
            "report",
            expected,
            &reports,
            |e, got| compare_report(e, got, start),
            |_| "a report, but it was not sent (is `until` after the handover?)".to_owned(),
            |got| summarize(got, start),
        );
    }
    if let Some(expected) = &case.notifications {
        diff_in_order(
            &mut diff,
            "notification",
            expected,
            &notifications,
            |e, got| compare_notification(e, got, start),
            |e| format!("{}, but it was not sent", summarize_expected(e)),
            |got| summarize(got, start),
        );
    }
    Ok(CaseResult {
        name: case.name.clone(),
        diff,
    })
}

/// Compares an expected list with what was sent, in order: each pair's
/// mismatches, then what was expected and not sent, then what was not expected.
fn diff_in_order<E>(
    diff: &mut Vec<String>,
    what: &str,
    expected: &[E],
    got: &[Notification],
    compare: impl Fn(&E, &Notification) -> Vec<String>,
    missing: impl Fn(&E) -> String,
    unexpected: impl Fn(&Notification) -> String,
) {
    for (n, (e, g)) in expected.iter().zip(got).enumerate() {
        let mismatches = compare(e, g);
        if !mismatches.is_empty() {
            let mut s = format!("{what} {}:", n + 1);
            for m in mismatches {
                let _ = write!(s, "\n{m}");
            }
            diff.push(s);
        }
    }
    for (n, e) in expected.iter().enumerate().skip(got.len()) {
        diff.push(format!("{what} {}: - expected {}", n + 1, missing(e)));
    }
    for (n, g) in got.iter().enumerate().skip(expected.len()) {
        diff.push(format!("{what} {}: + unexpected: {}", n + 1, unexpected(g)));
    }
}

fn describe(f: &Fate) -> String {
    match f.cause() {
        Some(c) => format!("{} by {c}", f.kind().as_str()),
        None => f.kind().as_str().to_owned(),
    }
}

fn summarize(n: &Notification, start: Ts) -> String {
    format!(
        "at {} squad={} reason={} status={} group={} alerts={} goalkeeper={}",
        format_duration(n.at.since(start)),
        n.squad,
        n.reason.as_str(),
        n.status.as_str(),
        n.group_labels,
        n.alerts.len(),
        n.goalkeeper.as_deref().unwrap_or("-")
    )
}

fn summarize_expected(e: &ExpectedNotification) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("at", &e.at),
        ("squad", &e.squad),
        ("reason", &e.reason),
        ("status", &e.status),
        ("goalkeeper", &e.goalkeeper),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}

fn compare_notification(e: &ExpectedNotification, got: &Notification, start: Ts) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, want: Option<String>, have: String| {
        if let Some(w) = want {
            if w != have {
                out.push(format!(
                    "    - expected {name}: {w}\n    + actual {name}:   {have}"
                ));
            }
        }
    };
    field(
        "at",
        e.at.as_ref().map(|a| {
            parse_duration(a)
                .map(format_duration)
                .unwrap_or_else(|_| a.clone())
        }),
        format_duration(got.at.since(start)),
    );
    field("squad", e.squad.clone(), got.squad.to_string());
    field(
        "goalkeeper",
        e.goalkeeper.clone(),
        got.goalkeeper.as_deref().unwrap_or("(none)").to_owned(),
    );
    field("reason", e.reason.clone(), got.reason.as_str().to_owned());
    field("status", e.status.clone(), got.status.as_str().to_owned());
    field(
        "group",
        e.group.as_ref().map(|g| {
            LabelSet::from_pairs(g.iter().map(|(k, v)| (k.as_str(), v.as_str()))).to_string()
        }),
        got.group_labels.to_string(),
    );
    field(
        "folded_notifications",
        e.folded_notifications.map(|n| n.to_string()),
        got.folded
            .as_ref()
            .map_or(0, |f| f.notifications)
            .to_string(),
    );
    field(
        "flapping",
        e.flapping.map(|f| f.to_string()),
        got.alerts.iter().any(|a| a.flapping).to_string(),
    );
    if let Some(want) = &e.alerts {
        let mut unmatched: Vec<&crate::engine::NotifiedAlert> = got.alerts.iter().collect();
        let mut missing = Vec::new();
        for subset in want {
            let pos = unmatched.iter().position(|a| {
                subset
                    .iter()
                    .all(|(k, v)| a.labels.get(k) == Some(v.as_str()))
            });
            match pos {
                Some(p) => {
                    unmatched.remove(p);
                }
                None => missing.push(format!("{subset:?}")),
            }
        }
        for m in missing {
            out.push(format!("    - expected an alert with labels {m}"));
        }
        for a in unmatched {
            out.push(format!(
                "    + unexpected alert {} ({})",
                a.labels,
                a.status.as_str()
            ));
        }
    }
    out
}

fn compare_report(e: &ExpectedReport, got: &Notification, start: Ts) -> Vec<String> {
    let r = got.report.as_deref().expect("a report");
    let mut out = Vec::new();
    let mut field = |name: &str, want: Option<String>, have: String| {
        if let Some(w) = want {
            if w != have {
                out.push(format!(
                    "    - expected {name}: {w}\n    + actual {name}:   {have}"
                ));
            }
        }
    };
    let rel = |t: Ts| {
        if t >= start {
            format_duration(t.since(start))
        } else {
            format!("-{}", format_duration(start.since(t)))
        }
    };
    let norm = |d: &String| {
        let (neg, d) = d
            .strip_prefix('-')
            .map_or((false, d.as_str()), |d| (true, d));
        let f = parse_duration(d)
            .map(format_duration)
            .unwrap_or_else(|_| d.to_owned());
        if neg { format!("-{f}") } else { f }
    };
    let name = |p: &Option<Arc<str>>| p.as_deref().unwrap_or("(none)").to_owned();
    field("at", e.at.as_ref().map(norm), rel(got.at));
    field(
        "shift_start",
        e.shift_start.as_ref().map(norm),
        rel(r.shift_start),
    );
    field("squad", e.squad.clone(), got.squad.to_string());
    field("to", e.to.clone(), name(&r.incoming));
    field("from", e.from.clone(), name(&r.outgoing));
    field(
        "pages",
        e.pages.map(|n| n.to_string()),
        r.noise.pages.to_string(),
    );
    field(
        "pages_out_of_hours",
        e.pages_out_of_hours.map(|n| n.to_string()),
        r.noise.pages_out_of_hours.to_string(),
    );
    field(
        "incidents",
        e.incidents.map(|n| n.to_string()),
        r.incidents.to_string(),
    );
    field(
        "over_budget",
        e.over_budget.map(|b| b.to_string()),
        r.over_budget.to_string(),
    );
    if let Some(noise) = &e.noise {
        let have = serde_json::to_value(&r.noise).expect("noise serializes");
        for (k, v) in noise {
            // Written snake_case in tests, camelCase in the report.
            let camel: String = k
                .split('_')
                .enumerate()
                .map(|(i, w)| match i {
                    0 => w.to_owned(),
                    _ => {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect())
                            .unwrap_or_default()
                    }
                })
                .collect();
            let h = have.get(&camel).and_then(serde_json::Value::as_u64);
            field(
                &format!("noise.{k}"),
                Some(v.to_string()),
                h.map_or_else(|| "(no such figure)".to_owned(), |h| h.to_string()),
            );
        }
    }
    if let Some(want) = &e.silences_ending {
        let mut w: Vec<&str> = want.iter().map(String::as_str).collect();
        let mut h: Vec<&str> = r.silences_ending.iter().map(|s| &*s.id).collect();
        w.sort();
        h.sort();
        if w != h {
            out.push(format!(
                "    - expected silences_ending: {w:?}\n    + actual silences_ending:   {h:?}"
            ));
        }
    }
    let subset = |want: &BTreeMap<String, String>, l: &LabelSet| {
        want.iter().all(|(k, v)| l.get(k) == Some(v.as_str()))
    };
    if let Some(want) = &e.still_firing {
        let mut left: Vec<&crate::engine::FiringGroup> = r.still_firing.iter().collect();
        for w in want {
            match left.iter().position(|g| subset(w, &g.labels)) {
                Some(p) => {
                    left.remove(p);
                }
                None => out.push(format!("    - expected a group still firing with {w:?}")),
            }
        }
        for g in left {
            out.push(format!("    + unexpected group still firing {}", g.labels));
        }
    }
    if let Some(want) = &e.digest {
        let mut left: Vec<&crate::engine::DigestReport> = r.digest.iter().collect();
        for w in want {
            let Some(p) = left.iter().position(|g| subset(&w.group, &g.labels)) else {
                out.push(format!("    - expected a digest group with {:?}", w.group));
                continue;
            };
            let g = left.remove(p);
            if let Some(rule) = &w.rule {
                if **rule != *g.rule {
                    out.push(format!(
                        "    - digest group {}: expected rule {rule}, actual {}",
                        g.labels, g.rule
                    ));
                }
            }
            let Some(alerts) = &w.alerts else { continue };
            let mut rest: Vec<&crate::engine::DigestEntry> = g.alerts.iter().collect();
            for wa in alerts {
                let ok = |a: &crate::engine::DigestEntry| {
                    *a.name == *wa.name
                        && wa.fired.is_none_or(|f| f == a.fired)
                        && wa.still_firing.is_none_or(|s| s == a.still_firing)
                        && wa.firing_for.as_ref().is_none_or(|d| {
                            parse_duration(d).is_ok_and(|d| d.as_secs() == a.firing_seconds)
                        })
                };
                match rest.iter().position(|a| ok(a)) {
                    Some(p) => {
                        rest.remove(p);
                    }
                    None => out.push(format!(
                        "    - digest group {}: expected {wa:?}; it has {}",
                        g.labels,
                        g.alerts
                            .iter()
                            .map(|a| format!(
                                "{} fired {} for {} still_firing={}",
                                a.name,
                                a.fired,
                                format_duration(Duration::from_secs(a.firing_seconds)),
                                a.still_firing
                            ))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )),
                }
            }
            for a in rest {
                out.push(format!(
                    "    + digest group {}: unexpected alert {}",
                    g.labels, a.name
                ));
            }
        }
        for g in left {
            out.push(format!("    + unexpected digest group {}", g.labels));
        }
    }
    out
}

/// Runs test files and prints a report; returns (passed, failed).
pub fn run_and_report(
    paths: &[PathBuf],
    w: &mut impl std::io::Write,
) -> std::io::Result<(usize, usize)> {
    let (mut passed, mut failed) = (0, 0);
    for path in paths {
        match run_file(path) {
            Ok(results) => {
                for r in results {
                    if r.passed() {
                        passed += 1;
                        writeln!(w, "ok    {}: {}", path.display(), r.name)?;
                    } else {
                        failed += 1;
                        writeln!(w, "FAIL  {}: {}", path.display(), r.name)?;
                        for d in &r.diff {
                            for line in d.lines() {
                                writeln!(w, "      {line}")?;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                writeln!(w, "ERROR {e}")?;
            }
        }
    }
    writeln!(w, "{passed} passed, {failed} failed")?;
    Ok((passed, failed))
}
