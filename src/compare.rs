//! `squadron replay --compare`: one recorded stream through two rule sets, and
//! what changes: each input alert's fate under both (transitions, with counts
//! and examples), notifications gained and lost per squad, pages per goalkeeper.
//! This is how a rule change is reviewed before it pages anyone.

use crate::engine::{Engine, Fate, Outputs};
use crate::model::{Fingerprint, LabelSet, Ts};
use crate::replay::{ReplayReport, replay_many};
use crate::rules::RuleSet;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead};
use std::sync::Arc;

/// Examples kept per transition.
const EXAMPLES: usize = 3;

#[derive(Debug, Serialize)]
pub struct CompareReport {
    pub received: u64,
    /// Input alerts whose fate differs between the rule sets.
    pub changed: u64,
    /// Most frequent first.
    pub transitions: Vec<Transition>,
    /// Notifications per squad under the old and the new rules.
    pub squads: BTreeMap<String, OldNew>,
    /// Notifications (pages) per goalkeeper on duty when they were sent.
    pub goalkeepers: BTreeMap<String, OldNew>,
    pub notifications: OldNew,
}

#[derive(Debug, Serialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub count: u64,
    pub examples: Vec<Example>,
}

#[derive(Debug, Serialize)]
pub struct Example {
    pub fingerprint: Option<Fingerprint>,
    pub labels: Option<LabelSet>,
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct OldNew {
    pub old: u64,
    pub new: u64,
}

/// A fate with the rule responsible, as shown in the report: `dropped (drop-info)`.
fn describe(f: &Fate) -> String {
    match f {
        Fate::Invalid { reason } => format!("invalid ({})", reason.kind.as_str()),
        f => match f.cause() {
            Some(c) => format!("{} ({c})", f.kind().as_str()),
            None => f.kind().as_str().to_owned(),
        },
    }
}

/// Replays `input` under `old` and `new` rules side by side.
pub fn compare(
    old: Arc<RuleSet>,
    new: Arc<RuleSet>,
    input: impl BufRead,
    start: impl FnOnce() -> Ts,
) -> io::Result<(CompareReport, Vec<ReplayReport>)> {
    let (mut compared, reports) = compare_many(old, vec![new], input, start)?;
    Ok((compared.pop().expect("one rule set, one report"), reports))
}

/// What one engine decided over the stream.
#[derive(Default)]
struct Side {
    fates: Vec<Option<Fate>>,
    squads: BTreeMap<String, u64>,
    goalkeepers: BTreeMap<String, u64>,
    notifications: u64,
}

/// `old` against each of `news`, in one pass over the stream (the engines run
/// in lockstep): one report per new rule set, each exactly what [`compare`]
/// gives for that pair.
pub fn compare_many(
    old: Arc<RuleSet>,
    news: Vec<Arc<RuleSet>>,
    input: impl BufRead,
    start: impl FnOnce() -> Ts,
) -> io::Result<(Vec<CompareReport>, Vec<ReplayReport>)> {
    let mut engines: Vec<Engine> = std::iter::once(old).chain(news).map(Engine::new).collect();
    for e in &mut engines {
        e.set_shift_mode(crate::engine::ShiftMode::Local);
    }
    let mut sides: Vec<Side> = engines.iter().map(|_| Side::default()).collect();
    let mut fingerprint_of: Vec<Option<Fingerprint>> = Vec::new();
    let mut labels_of: HashMap<Fingerprint, LabelSet> = HashMap::new();
    let mut observe = |input: u64, alert: &crate::model::Alert<'_>, _: Ts| {
        let fp = alert.fingerprint();
        let i = input as usize;
        if fingerprint_of.len() <= i {
            fingerprint_of.resize(i + 1, None);
        }
        fingerprint_of[i] = Some(fp);
        labels_of
            .entry(fp)
            .or_insert_with(|| LabelSet::from_labels(&alert.labels));
    };
    let reports = replay_many(
        &mut engines,
        input,
        start,
        |side, _engine, out: &Outputs| {
            let s = &mut sides[side];
            for rec in &out.fates {
                let i = rec.input as usize;
                if s.fates.len() <= i {
                    s.fates.resize(i + 1, None);
                }
                s.fates[i] = Some(rec.fate.clone());
            }
            for n in out.notifications.iter().filter(|n| n.report.is_none()) {
                s.notifications += 1;
                *s.squads.entry(n.squad.to_string()).or_default() += 1;
                *s.goalkeepers
                    .entry(
                        n.goalkeeper
                            .as_deref()
                            .unwrap_or("(no goalkeeper)")
                            .to_owned(),
                    )
                    .or_default() += 1;
            }
            Ok(())
        },
        Some(&mut observe),
    )?;

    let received = reports[0].ledger.received;
    let old = &sides[0];
    let pair = |new: &Side| -> CompareReport {
        let mut by_pair: HashMap<(String, String), (u64, Vec<Example>)> = HashMap::new();
        let mut changed = 0;
        for i in 0..received as usize {
            let (a, b) = (
                old.fates.get(i).and_then(Option::as_ref),
                new.fates.get(i).and_then(Option::as_ref),
            );
            let (from, to) = (
                a.map_or_else(|| "undecided".to_owned(), describe),
                b.map_or_else(|| "undecided".to_owned(), describe),
            );
            if from == to {
                continue;
            }
            changed += 1;
            let entry = by_pair.entry((from, to)).or_default();
            entry.0 += 1;
            if entry.1.len() < EXAMPLES {
                let fingerprint = fingerprint_of.get(i).copied().flatten();
                entry.1.push(Example {
                    fingerprint,
                    labels: fingerprint.and_then(|fp| labels_of.get(&fp).cloned()),
                });
            }
        }
        let mut transitions: Vec<Transition> = by_pair
            .into_iter()
            .map(|((from, to), (count, examples))| Transition {
                from,
                to,
                count,
                examples,
            })
            .collect();
        transitions.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
        });
        let merge = |o: &BTreeMap<String, u64>, n: &BTreeMap<String, u64>| {
            let mut m: BTreeMap<String, OldNew> = BTreeMap::new();
            for (k, v) in o {
                m.entry(k.clone()).or_default().old = *v;
            }
            for (k, v) in n {
                m.entry(k.clone()).or_default().new = *v;
            }
            m
        };
        CompareReport {
            received,
            changed,
            transitions,
            squads: merge(&old.squads, &new.squads),
            goalkeepers: merge(&old.goalkeepers, &new.goalkeepers),
            notifications: OldNew {
                old: old.notifications,
                new: new.notifications,
            },
        }
    };
    let compared = sides[1..].iter().map(pair).collect();
    Ok((compared, reports))
}

impl CompareReport {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let pct = |n: u64| {
            if self.received == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.received as f64
            }
        };
        s.push_str(&format!(
            "{} input alerts; {} change fate ({:.2}%); notifications {} -> {}\n",
            self.received,
            self.changed,
            pct(self.changed),
            self.notifications.old,
            self.notifications.new
        ));
        if !self.transitions.is_empty() {
            s.push_str("\nfate changes (old -> new)\n");
            for t in &self.transitions {
                s.push_str(&format!("  {:>8}  {} -> {}\n", t.count, t.from, t.to));
                for e in &t.examples {
                    let fp = e
                        .fingerprint
                        .map(|f| f.to_string())
                        .unwrap_or_else(|| "-".into());
                    let labels = e
                        .labels
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    s.push_str(&format!("            e.g. {fp} {labels}\n"));
                }
            }
        }
        let table = |s: &mut String, title: &str, rows: &BTreeMap<String, OldNew>| {
            s.push_str(&format!(
                "\n{title:<22}{:>8}{:>8}{:>8}\n",
                "old", "new", "diff"
            ));
            for (k, v) in rows {
                let diff = v.new as i64 - v.old as i64;
                let mark = if diff == 0 {
                    String::new()
                } else {
                    format!("{diff:+}")
                };
                s.push_str(&format!("  {k:<20}{:>8}{:>8}{mark:>8}\n", v.old, v.new));
            }
        };
        table(&mut s, "notifications by squad", &self.squads);
        table(&mut s, "pages by goalkeeper", &self.goalkeepers);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;
    use std::path::PathBuf;

    fn rules(text: &str) -> Arc<RuleSet> {
        Arc::new(crate::rules::compile(&[(PathBuf::from("r.yaml"), text.to_owned())]).unwrap())
    }

    /// Widening one drop rule changes exactly the fates it now drops.
    #[test]
    fn a_widened_drop_rule_changes_exactly_the_alerts_it_now_drops() {
        let base = "squads: [{name: a, services: [x], goalkeeper: {timezone: UTC, rotation: {start: '2026-01-01', people: [ann]}}}]\ngrouping: {group_wait: 10s}\nimpact_rules:\n  - name: drop-info\n    match: ['severity=~\"RE\"']\n    action: drop\n";
        let old = rules(&base.replace("RE", "info"));
        let new = rules(&base.replace("RE", "info|warning"));
        let mut lines = String::new();
        for (i, sev) in ["info", "warning", "warning", "critical", "info", "warning"]
            .iter()
            .enumerate()
        {
            lines.push_str(&format!(
                "{{\"received_at\":\"2026-11-26T10:00:0{i}Z\",\"message\":{{\"labels\":{{\"alertname\":\"A{i}\",\"service\":\"x\",\"severity\":\"{sev}\"}}}}}}\n"
            ));
        }
        let (report, runs) = compare(old, new, lines.as_bytes(), || Ts(0)).unwrap();
        assert_eq!(report.received, 6);
        assert_eq!(report.changed, 3);
        assert_eq!(report.transitions.len(), 1);
        let t = &report.transitions[0];
        assert_eq!(
            (t.from.as_str(), t.to.as_str(), t.count),
            ("notified", "dropped (drop-info)", 3)
        );
        assert_eq!(
            t.examples[0].labels.as_ref().unwrap().get("severity"),
            Some("warning")
        );
        assert_eq!(report.notifications, OldNew { old: 4, new: 1 });
        assert_eq!(report.squads["a"], OldNew { old: 4, new: 1 });
        assert_eq!(report.goalkeepers["ann"], OldNew { old: 4, new: 1 });
        assert_eq!(runs[0].ledger.decided(), 6);
        assert!(report.render().contains("notified -> dropped (drop-info)"));
    }
}
