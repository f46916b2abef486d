//! `squadron report`: where a squad's noise comes from, over a recording.
//!
//! One replay of the stream (virtual time, shift books kept) gives the load
//! per squad and goalkeeper shift, and the noisiest alert names and label
//! sets. From those figures come suggested rules (digest, drop, inhibit),
//! each measured by a second pass that replays the stream through the rules
//! with and without it ([`crate::compare::compare_many`], the same code as
//! `replay --compare`): the effect claimed is what `replay --compare` reports
//! with the snippet added as `rules/99-suggested.yaml`.

use crate::compare::{CompareReport, compare_many};
use crate::engine::{Engine, FateKind, HandoverReport, Notification, Outputs};
use crate::model::{Alert, Fingerprint, LabelSet, Labels, Status, Ts};
use crate::rules::{RuleErrors, RuleSet, load_dir_with};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead};
use std::path::Path;
use std::sync::Arc;

/// The file a suggested rule is measured in (and meant to be pasted into).
pub const SUGGESTED_FILE: &str = "99-suggested.yaml";

/// Labels an inhibition may share between source and target, tried in order.
const EQUAL_CANDIDATES: [&str; 4] = ["node", "host", "instance", "cluster"];

/// A target episode counts as caused by a source whose own episode began at
/// most this long before it (a steady source explains nothing).
const CAUSE_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Rows in the noisiest tables.
    pub top: usize,
    /// Suggestions at most.
    pub suggestions: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            top: 10,
            suggestions: 6,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub from: Ts,
    pub to: Ts,
    pub received: u64,
    pub notifications: u64,
    pub pages: u64,
    pub squads: Vec<SquadLoad>,
    pub goalkeepers: Vec<GoalkeeperLoad>,
    pub noisiest: Vec<AlertStats>,
    pub label_sets: Vec<LabelSetStats>,
    pub suggestions: Vec<Suggestion>,
}

#[derive(Debug, Serialize)]
pub struct SquadLoad {
    pub squad: String,
    pub received: u64,
    pub pages: u64,
    pub pages_out_of_hours: u64,
    pub digested: u64,
    pub dropped: u64,
    pub page_budget: u32,
    pub shifts_over_budget: u32,
    pub shifts: Vec<ShiftLine>,
}

#[derive(Debug, Serialize)]
pub struct ShiftLine {
    pub start: Ts,
    pub end: Ts,
    pub goalkeeper: Option<String>,
    pub pages: u64,
    pub incidents: u32,
    pub pages_out_of_hours: u64,
    pub over_budget: bool,
    /// The recording ended before this shift did.
    pub partial: bool,
}

#[derive(Debug, Serialize)]
pub struct GoalkeeperLoad {
    pub person: String,
    pub squad: String,
    pub shifts: u32,
    pub pages: u64,
    pub busiest_shift_pages: u64,
    pub shifts_over_budget: u32,
}

/// One alert name within a squad.
#[derive(Debug, Serialize)]
pub struct AlertStats {
    pub alertname: String,
    pub squad: String,
    pub received: u64,
    /// Pages (firing notifications of groups) it was part of.
    pub paged: u64,
    pub fates: BTreeMap<&'static str, u64>,
    /// Label sets (fingerprints) seen.
    pub label_sets: u64,
    /// Label sets that fired and resolved before their group's first
    /// notification (within group_wait): nobody was told, nobody needed to be.
    pub resolved_unseen: u64,
    /// Inputs with severity="critical".
    pub critical: u64,
}

#[derive(Debug, Serialize)]
pub struct LabelSetStats {
    pub fingerprint: Fingerprint,
    pub squad: String,
    pub labels: LabelSet,
    pub received: u64,
    pub paged: u64,
    pub flapping: u64,
}

#[derive(Debug, Serialize)]
pub struct Suggestion {
    /// `digest`, `drop` or `inhibit`.
    pub kind: &'static str,
    pub rule: String,
    pub why: String,
    /// Where the snippet is measured: this file added to the rules directory.
    pub file: &'static str,
    pub snippet: String,
    /// What `replay --compare` reports with the snippet added (old: the rules as they are).
    pub effect: CompareReport,
}

/// Per input: what the observer saw.
#[derive(Clone, Copy, Default)]
struct Seen {
    name: u32,
    fingerprint: Fingerprint,
    critical: bool,
}

#[derive(Default)]
struct Tally {
    received: u64,
    paged: u64,
    fates: [u64; FateKind::ALL.len()],
    critical: u64,
    fingerprints: HashMap<Fingerprint, FpTally>,
}

#[derive(Default, Clone, Copy)]
struct FpTally {
    received: u64,
    paged: u64,
    flapping: u64,
    suppressed: bool,
    notified: bool,
}

/// Runs the report over `input` (read twice when suggestions are measured:
/// `reopen` gives it again).
pub fn report(
    rules_dir: &Path,
    rules: Arc<RuleSet>,
    mut reopen: impl FnMut() -> io::Result<Box<dyn BufRead>>,
    start: Ts,
    opts: Options,
) -> io::Result<Report> {
    let mut names: Vec<String> = Vec::new();
    let mut name_ids: HashMap<String, u32> = HashMap::new();
    let mut seen: Vec<Seen> = Vec::new();
    let mut labels_of: HashMap<Fingerprint, LabelSet> = HashMap::new();
    let mut co = CoOccurrence::default();
    let mut first: Option<Ts> = None;
    let resolve_timeout = rules.resolve_timeout;
    let mut observe = |input: u64, a: &Alert<'_>, now: Ts| {
        first.get_or_insert(now);
        let name = a.labels.get("alertname").unwrap_or("");
        let id = match name_ids.get(name) {
            Some(&id) => id,
            None => {
                names.push(name.to_owned());
                name_ids.insert(name.to_owned(), names.len() as u32 - 1);
                names.len() as u32 - 1
            }
        };
        let fp = a.fingerprint();
        labels_of
            .entry(fp)
            .or_insert_with(|| LabelSet::from_labels(&a.labels));
        let i = input as usize;
        if seen.len() <= i {
            seen.resize(i + 1, Seen::default());
        }
        seen[i] = Seen {
            name: id,
            fingerprint: fp,
            critical: a.labels.get("severity") == Some("critical"),
        };
        co.observe(id, fp, a, now, resolve_timeout);
    };
    let mut engine = Engine::new(rules.clone());
    engine.set_shift_mode(crate::engine::ShiftMode::Local);
    let mut fates: Vec<(u8, u16)> = Vec::new();
    let mut pages_by_fp: HashMap<Fingerprint, u64> = HashMap::new();
    let mut handovers: Vec<Notification> = Vec::new();
    let mut notifications = 0u64;
    let mut pages = 0u64;
    let mut closing = false;
    let mut collect = |out: &Outputs, closing: bool| {
        for f in &out.fates {
            let i = f.input as usize;
            if fates.len() <= i {
                fates.resize(i + 1, (u8::MAX, u16::MAX));
            }
            fates[i] = (f.fate.kind() as u8, f.squad);
        }
        for n in &out.notifications {
            if n.report.is_some() {
                handovers.push(n.clone());
                continue;
            }
            // After the recording only the reports count (what replay counts ends there).
            if closing {
                continue;
            }
            notifications += 1;
            if crate::engine::interrupts(n.reason, n.status) {
                pages += 1;
                for a in &n.alerts {
                    *pages_by_fp.entry(a.fingerprint).or_default() += 1;
                }
            }
        }
    };
    let replayed = {
        let mut on = |_: &Engine, out: &Outputs| {
            collect(out, closing);
            Ok(())
        };
        let engines = std::slice::from_mut(&mut engine);
        crate::replay::replay_many(
            engines,
            reopen()?,
            || start,
            |_, e, o| on(e, o),
            Some(&mut observe),
        )?
        .pop()
        .expect("one engine")
    };
    // Close every open shift: its report, marked partial.
    let end = replayed.end;
    let last = engine.shift_books().map(|(_, b)| b.end).max();
    if let Some(last) = last {
        closing = true;
        let mut out = Outputs::default();
        engine.advance_to(last, &mut out);
        collect(&out, closing);
    }

    // Per (alert name, squad) and per label set.
    let mut by_name: BTreeMap<(u32, u16), Tally> = BTreeMap::new();
    for (i, s) in seen.iter().enumerate() {
        let Some(&(kind, squad)) = fates.get(i).filter(|f| f.0 != u8::MAX) else {
            continue;
        };
        let t = by_name.entry((s.name, squad)).or_default();
        t.received += 1;
        t.fates[kind as usize] += 1;
        t.critical += s.critical as u64;
        let fp = t.fingerprints.entry(s.fingerprint).or_default();
        fp.received += 1;
        let k = FateKind::ALL[kind as usize];
        fp.flapping += (k == FateKind::Flapping) as u64;
        fp.suppressed |= matches!(
            k,
            FateKind::Dropped
                | FateKind::Silenced
                | FateKind::Inhibited
                | FateKind::Digested
                | FateKind::Shed
        );
        fp.notified |= matches!(k, FateKind::Notified | FateKind::Throttled);
    }
    let squad_name = |id: u16| {
        rules
            .squads
            .get(id as usize)
            .map_or_else(|| "(none)".to_owned(), |s| s.name.to_string())
    };
    let mut noisiest: Vec<AlertStats> = Vec::new();
    let mut label_sets: Vec<LabelSetStats> = Vec::new();
    for ((name, squad), t) in &mut by_name {
        for (fp, f) in t.fingerprints.iter_mut() {
            f.paged = pages_by_fp.get(fp).copied().unwrap_or(0);
            t.paged += f.paged;
            label_sets.push(LabelSetStats {
                fingerprint: *fp,
                squad: squad_name(*squad),
                labels: labels_of.get(fp).cloned().unwrap_or_default(),
                received: f.received,
                paged: f.paged,
                flapping: f.flapping,
            });
        }
        noisiest.push(AlertStats {
            alertname: names[*name as usize].clone(),
            squad: squad_name(*squad),
            received: t.received,
            paged: t.paged,
            fates: FateKind::ALL
                .iter()
                .filter(|k| t.fates[**k as usize] > 0)
                .map(|k| (k.as_str(), t.fates[*k as usize]))
                .collect(),
            label_sets: t.fingerprints.len() as u64,
            resolved_unseen: t
                .fingerprints
                .values()
                .filter(|f| !f.suppressed && !f.notified && f.paged == 0 && f.flapping == 0)
                .count() as u64,
            critical: t.critical,
        });
    }
    let order = |a: (u64, u64), b: (u64, u64)| b.cmp(&a);
    noisiest.sort_by(|a, b| {
        order((a.paged, a.received), (b.paged, b.received))
            .then_with(|| (&a.alertname, &a.squad).cmp(&(&b.alertname, &b.squad)))
    });
    label_sets.sort_by(|a, b| {
        order((a.paged, a.received), (b.paged, b.received))
            .then_with(|| a.fingerprint.0.cmp(&b.fingerprint.0))
    });
    label_sets.truncate(opts.top);

    let (squads, goalkeepers) = load(&rules, &handovers, &fates, end);

    // Suggestions: candidates from the figures, each measured against the rules as they are.
    let candidates = candidates(&rules, &noisiest, &co, &names, opts);
    let mut suggestions = Vec::new();
    if !candidates.is_empty() {
        let mut news = Vec::new();
        let mut kept = Vec::new();
        for c in candidates {
            match load_dir_with(rules_dir, &[(SUGGESTED_FILE.to_owned(), c.snippet.clone())]) {
                Ok(r) => {
                    news.push(Arc::new(r));
                    kept.push(c);
                }
                Err(RuleErrors(e)) => {
                    tracing::warn!(rule = %c.rule, errors = ?e, "a suggested rule does not compile; left out")
                }
            }
        }
        let (effects, _) = compare_many(rules.clone(), news, reopen()?, || start)?;
        for (c, effect) in kept.into_iter().zip(effects) {
            if effect.changed == 0 {
                continue;
            }
            suggestions.push(Suggestion {
                kind: c.kind,
                rule: c.rule,
                why: c.why,
                file: SUGGESTED_FILE,
                snippet: c.snippet,
                effect,
            });
        }
        suggestions.sort_by_key(|s| {
            std::cmp::Reverse(s.effect.notifications.old as i64 - s.effect.notifications.new as i64)
        });
    }
    noisiest.truncate(opts.top);
    Ok(Report {
        from: first.unwrap_or(start),
        to: end,
        received: replayed.ledger.received,
        notifications,
        pages,
        squads,
        goalkeepers,
        noisiest,
        label_sets,
        suggestions,
    })
}

/// Shifts and goalkeepers from the handover reports.
fn load(
    rules: &RuleSet,
    handovers: &[Notification],
    fates: &[(u8, u16)],
    end: Ts,
) -> (Vec<SquadLoad>, Vec<GoalkeeperLoad>) {
    // (received, digested, dropped) per squad id, in one pass.
    let mut counts = vec![(0u64, 0u64, 0u64); rules.squads.len()];
    for &(kind, squad) in fates {
        if let Some(c) = counts.get_mut(squad as usize) {
            c.0 += 1;
            c.1 += (kind == FateKind::Digested as u8) as u64;
            c.2 += (kind == FateKind::Dropped as u8) as u64;
        }
    }
    let mut squads: BTreeMap<String, SquadLoad> = BTreeMap::new();
    for (s, &(received, digested, dropped)) in rules.squads.iter().zip(&counts) {
        if received == 0 {
            continue;
        }
        squads.insert(
            s.name.to_string(),
            SquadLoad {
                squad: s.name.to_string(),
                received,
                pages: 0,
                pages_out_of_hours: 0,
                digested,
                dropped,
                page_budget: s.shift.page_budget,
                shifts_over_budget: 0,
                shifts: Vec::new(),
            },
        );
    }
    let mut people: BTreeMap<(String, String), GoalkeeperLoad> = BTreeMap::new();
    for n in handovers {
        let r: &HandoverReport = n.report.as_deref().expect("handover");
        let Some(s) = squads.get_mut(&*n.squad) else {
            continue;
        };
        s.pages += r.noise.pages;
        s.pages_out_of_hours += r.noise.pages_out_of_hours;
        s.shifts_over_budget += r.over_budget as u32;
        let person = r.outgoing.as_deref().map(str::to_owned);
        s.shifts.push(ShiftLine {
            start: r.shift_start,
            end: r.shift_end,
            goalkeeper: person.clone(),
            pages: r.noise.pages,
            incidents: r.incidents,
            pages_out_of_hours: r.noise.pages_out_of_hours,
            over_budget: r.over_budget,
            partial: r.shift_end > end,
        });
        let g = people
            .entry((
                person.unwrap_or_else(|| "(nobody)".into()),
                n.squad.to_string(),
            ))
            .or_insert_with_key(|(p, sq)| GoalkeeperLoad {
                person: p.clone(),
                squad: sq.clone(),
                shifts: 0,
                pages: 0,
                busiest_shift_pages: 0,
                shifts_over_budget: 0,
            });
        g.shifts += 1;
        g.pages += r.noise.pages;
        g.busiest_shift_pages = g.busiest_shift_pages.max(r.noise.pages);
        g.shifts_over_budget += r.over_budget as u32;
    }
    let mut goalkeepers: Vec<GoalkeeperLoad> = people.into_values().collect();
    goalkeepers.sort_by(|a, b| b.pages.cmp(&a.pages).then(a.person.cmp(&b.person)));
    (squads.into_values().collect(), goalkeepers)
}

/// Which alert names fire together on the same node, host, instance or
/// cluster: for each new firing episode of a target, the sources firing then
/// with the same value of a candidate label.
#[derive(Default)]
struct CoOccurrence {
    /// (label, value) hash -> (alert name, episode start, firing until).
    active: HashMap<u64, Vec<(u32, Ts, Ts)>>,
    /// When each label set stops firing.
    until: HashMap<Fingerprint, Ts>,
    episodes: HashMap<u32, u64>,
    /// (target, source, label index) -> episodes of the target that began while the source fired.
    together: HashMap<(u32, u32, u8), u64>,
}

impl CoOccurrence {
    fn observe(
        &mut self,
        name: u32,
        fp: Fingerprint,
        a: &Alert<'_>,
        now: Ts,
        resolve_timeout: std::time::Duration,
    ) {
        let firing = a.status_at(now) == Status::Firing;
        let until = match a.ends_at {
            Some(e) if e > now && firing => e,
            _ if firing => now.plus(resolve_timeout),
            _ => now,
        };
        let new_episode = firing && self.until.get(&fp).is_none_or(|u| *u <= now);
        self.until.insert(fp, until);
        if new_episode {
            *self.episodes.entry(name).or_default() += 1;
        }
        for (li, l) in EQUAL_CANDIDATES.iter().enumerate() {
            let Some(v) = a.labels.get(l) else { continue };
            let key = xxhash_rust::xxh3::xxh3_64_with_seed(v.as_bytes(), li as u64);
            let slot = self.active.entry(key).or_default();
            if new_episode {
                let mut counted: Vec<u32> = Vec::new();
                for &(src, since, u) in slot.iter() {
                    if src != name
                        && u > now
                        && now.since(since) <= CAUSE_WINDOW
                        && !counted.contains(&src)
                    {
                        counted.push(src);
                        *self.together.entry((name, src, li as u8)).or_default() += 1;
                    }
                }
            }
            slot.retain(|(_, _, u)| *u > now);
            match slot.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => e.2 = e.2.max(until),
                None if firing => slot.push((name, now, until)),
                None => {}
            }
        }
    }
}

struct Candidate {
    kind: &'static str,
    rule: String,
    why: String,
    snippet: String,
}

/// A rule name from parts: lowercase letters, digits and dashes.
fn rule_name(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        for c in p.chars() {
            if c.is_ascii_alphanumeric() {
                s.push(c.to_ascii_lowercase());
            } else if !s.ends_with('-') {
                s.push('-');
            }
        }
        if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_owned()
}

/// A matcher on one label's exact value, quoted as Alertmanager's syntax needs.
fn equals(label: &str, value: &str) -> String {
    format!(
        "{label}=\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn yaml(v: serde_json::Value) -> String {
    serde_yaml_ng::to_string(&v).expect("suggestions serialize")
}

fn candidates(
    rules: &RuleSet,
    noisiest: &[AlertStats],
    co: &CoOccurrence,
    names: &[String],
    opts: Options,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let known_squad = |s: &str| rules.squad_by_name(s).is_some();
    // Digest: alert names that page a squad often but are rarely critical.
    for a in noisiest.iter().filter(|a| {
        a.paged >= 3
            && a.critical * 5 < a.received
            && known_squad(&a.squad)
            && !a.alertname.is_empty()
    }) {
        if out.iter().filter(|c| c.kind == "digest").count() >= 3 {
            break;
        }
        let rule = rule_name(&["digest", &a.alertname, "for", &a.squad]);
        out.push(Candidate {
            kind: "digest",
            why: format!(
                "{} paged {} {} times ({} alerts received, {} critical): its non-critical alerts could wait for the handover digest",
                a.alertname, a.squad, a.paged, a.received, a.critical
            ),
            snippet: yaml(serde_json::json!({"impact_rules": [{
                "name": rule,
                "squads": [a.squad],
                "match": [equals("alertname", &a.alertname), "severity!=\"critical\""],
                "action": "digest",
            }]})),
            rule,
        });
    }
    // Drop: alert names that flap, or fire and resolve before anyone is told.
    for a in noisiest.iter().filter(|a| !a.alertname.is_empty()) {
        if out.iter().filter(|c| c.kind == "drop").count() >= 2 {
            break;
        }
        let flapping = a.fates.get("flapping").copied().unwrap_or(0);
        let why = if flapping * 5 >= a.received && flapping >= 5 {
            format!(
                "{} flapped in {flapping} of {} alerts for {}: a check this unstable tells nobody anything",
                a.alertname, a.received, a.squad
            )
        } else if a.resolved_unseen * 2 >= a.label_sets && a.resolved_unseen >= 5 {
            format!(
                "{} of {} label sets of {} ({}) resolved before their group's first notification",
                a.resolved_unseen, a.label_sets, a.alertname, a.squad
            )
        } else {
            continue;
        };
        let rule = rule_name(&["drop", &a.alertname, "for", &a.squad]);
        out.push(Candidate {
            kind: "drop",
            why,
            snippet: yaml(serde_json::json!({"impact_rules": [{
                "name": rule,
                "squads": [a.squad],
                "match": [equals("alertname", &a.alertname)],
                "action": "drop",
            }]})),
            rule,
        });
    }
    // Inhibit: a target whose episodes nearly all begin while a source fires on the same label.
    let paged: HashMap<&str, u64> = noisiest
        .iter()
        .map(|a| (a.alertname.as_str(), a.paged))
        .fold(HashMap::new(), |mut m, (n, p)| {
            *m.entry(n).or_default() += p;
            m
        });
    let mut pairs: Vec<(&(u32, u32, u8), &u64)> = co
        .together
        .iter()
        .filter(|((t, _, _), n)| {
            let episodes = co.episodes.get(t).copied().unwrap_or(0);
            **n >= 5 && **n * 5 >= episodes * 4
        })
        .collect();
    pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut used: Vec<u32> = Vec::new();
    for ((target, source, label), n) in pairs {
        if out.iter().filter(|c| c.kind == "inhibit").count() >= 2 || used.contains(target) {
            continue;
        }
        let (t, s) = (&names[*target as usize], &names[*source as usize]);
        if paged.get(t.as_str()).copied().unwrap_or(0) == 0 || t.is_empty() || s.is_empty() {
            continue;
        }
        used.push(*target);
        let l = EQUAL_CANDIDATES[*label as usize];
        let rule = rule_name(&[s, "inhibits", t]);
        out.push(Candidate {
            kind: "inhibit",
            why: format!(
                "{n} of {} firing episodes of {t} began while {s} fired with the same {l}",
                co.episodes.get(target).copied().unwrap_or(0)
            ),
            snippet: yaml(serde_json::json!({"inhibit_rules": [{
                "name": rule,
                "source_matchers": [equals("alertname", s)],
                "target_matchers": [equals("alertname", t)],
                "equal": [l],
            }]})),
            rule,
        });
    }
    out.truncate(opts.suggestions);
    out
}

impl Report {
    /// Terminal tables.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} to {}: {} alerts received, {} notifications, {} pages",
            self.from, self.to, self.received, self.notifications, self.pages
        );
        let _ = writeln!(
            s,
            "\n{:<14}{:>10}{:>8}{:>8}{:>10}{:>9}{:>8}{:>8}",
            "squad", "received", "pages", "o-o-h", "digested", "dropped", "shifts", "over"
        );
        for q in &self.squads {
            let _ = writeln!(
                s,
                "{:<14}{:>10}{:>8}{:>8}{:>10}{:>9}{:>8}{:>8}",
                q.squad,
                q.received,
                q.pages,
                q.pages_out_of_hours,
                q.digested,
                q.dropped,
                q.shifts.len(),
                q.shifts_over_budget
            );
        }
        let _ = writeln!(
            s,
            "\n{:<14}{:<12}{:>8}{:>8}{:>10}{:>8}",
            "goalkeeper", "squad", "shifts", "pages", "busiest", "over"
        );
        for g in &self.goalkeepers {
            let _ = writeln!(
                s,
                "{:<14}{:<12}{:>8}{:>8}{:>10}{:>8}",
                g.person, g.squad, g.shifts, g.pages, g.busiest_shift_pages, g.shifts_over_budget
            );
        }
        let _ = writeln!(
            s,
            "\nnoisiest alerts\n{:<28}{:<12}{:>10}{:>8}{:>10}{:>10}",
            "alertname", "squad", "received", "paged", "flapping", "unseen"
        );
        for a in &self.noisiest {
            let _ = writeln!(
                s,
                "{:<28}{:<12}{:>10}{:>8}{:>10}{:>10}",
                a.alertname,
                a.squad,
                a.received,
                a.paged,
                a.fates.get("flapping").copied().unwrap_or(0),
                a.resolved_unseen
            );
        }
        let _ = writeln!(s, "\nnoisiest label sets");
        for l in &self.label_sets {
            let _ = writeln!(
                s,
                "  {:>8} received {:>6} paged  {} {}",
                l.received, l.paged, l.squad, l.labels
            );
        }
        if self.suggestions.is_empty() {
            let _ = writeln!(s, "\nno suggested rules");
        }
        for (i, x) in self.suggestions.iter().enumerate() {
            let e = &x.effect;
            let _ = writeln!(
                s,
                "\nsuggestion {}: {} ({})\n  {}\n  measured (replay --compare with rules/{}): notifications {} -> {}, {} alerts change fate",
                i + 1,
                x.rule,
                x.kind,
                x.why,
                x.file,
                e.notifications.old,
                e.notifications.new,
                e.changed
            );
            for t in e.transitions.iter().take(3) {
                let _ = writeln!(s, "    {:>8}  {} -> {}", t.count, t.from, t.to);
            }
            let _ = writeln!(s, "  # rules/{}", x.file);
            for line in x.snippet.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
        s
    }

    /// One self-contained HTML file: tables, and charts drawn from the
    /// embedded figures by an inline script (no network, no libraries).
    pub fn html(&self) -> String {
        let data = serde_json::to_string(self)
            .expect("report serializes")
            .replace("</", "<\\/");
        HTML.replace("{{DATA}}", &data).replace(
            "{{TITLE}}",
            &format!("squadron report {} to {}", self.from, self.to),
        )
    }
}

const HTML: &str = include_str!("report.html");
