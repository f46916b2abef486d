//! Rule files: loading, validating and compiling them into a [`RuleSet`].
//!
//! Phase one is [`file`] (serde structs as written); phase two is [`compile`],
//! which resolves names across files and collects *all* errors, each with file,
//! line, column and the rule's name. Startup and reload both go through
//! [`load_dir`]: there is one way to get rules.
//!
//! A `RuleSet` is immutable and shared (`Arc`); nothing here reads a clock.

pub mod calendar;
pub mod catalog;
pub mod file;
pub mod index;
pub mod matcher;

use crate::model::{LabelSet, Labels, Ts, parse_duration};
pub use calendar::{Goalkeeper, TimeInterval, TimeSpec};
use file::{Action, GroupingFile, RuleFile, StormFile};
use index::{Constraint, RuleIndex, constraints};
pub use matcher::{Matcher, all_match};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Index of a squad in [`RuleSet::squads`].
pub type SquadId = u16;

pub const DEFAULT_FALLBACK_SQUAD: &str = "unowned";

/// Alertmanager's defaults.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A validated, compiled set of rules.
#[derive(Debug)]
pub struct RuleSet {
    pub squads: Vec<Squad>,
    pub fallback: SquadId,
    pub service_labels: Vec<Box<str>>,
    service_owner: crate::model::StrMap<SquadId>,
    squad_matchers: Vec<(SquadId, Vec<Matcher>)>,
    // The three lists below and `squad_matchers` are indexed when compiled
    // (`indexes`): they must not change afterwards.
    pub impact_rules: Vec<ImpactRule>,
    pub silences: Vec<Silence>,
    pub inhibit_rules: Vec<InhibitRule>,
    pub time_intervals: Vec<TimeInterval>,
    /// How long a firing alert without `endsAt` stays firing without a resend.
    pub resolve_timeout: Duration,
    pub flap: Option<FlapConfig>,
    pub limits: Limits,
    /// Hex digest of the files' names and contents, to tell rule sets apart.
    pub digest: String,
    pub files: Vec<PathBuf>,
    /// `ownership.catalog`, applied by [`load_dir`].
    pub catalog: Option<catalog::CatalogFile>,
    /// What the catalog contributed, when there is one.
    pub catalog_report: Option<catalog::CatalogReport>,
    /// The rule lists above, indexed (built with them; the lists never change after).
    indexes: Indexes,
}

/// One [`RuleIndex`] per rule list searched per alert.
#[derive(Debug)]
struct Indexes {
    squads: RuleIndex,
    impact: RuleIndex,
    silences: RuleIndex,
    inhibit_targets: RuleIndex,
    /// Over every (inhibit rule, source) pair, in that order: `sources[i]` names the pair.
    inhibit_sources: RuleIndex,
    sources: Vec<(u32, u32)>,
    inhibit_by_name: crate::model::StrMap<usize>,
}

impl Indexes {
    fn new(
        squad_matchers: &[(SquadId, Vec<Matcher>)],
        impact_rules: &[ImpactRule],
        silences: &[Silence],
        inhibit_rules: &[InhibitRule],
    ) -> Indexes {
        let sources: Vec<(u32, u32)> = inhibit_rules
            .iter()
            .enumerate()
            .flat_map(|(r, rule)| (0..rule.sources.len()).map(move |n| (r as u32, n as u32)))
            .collect();
        Indexes {
            squads: RuleIndex::new(squad_matchers.iter().map(|(_, m)| constraints(m))),
            impact: RuleIndex::new(impact_rules.iter().map(|r| {
                let mut c = constraints(&r.matchers);
                if !r.squads.is_empty() {
                    c.push(Constraint::Squads(r.squads.clone()));
                }
                c
            })),
            silences: RuleIndex::new(silences.iter().map(|s| constraints(&s.matchers))),
            inhibit_targets: RuleIndex::new(inhibit_rules.iter().map(|r| {
                let mut c = constraints(&r.targets);
                c.extend(r.squad.map(|s| Constraint::Squads(vec![s])));
                c
            })),
            inhibit_sources: RuleIndex::new(
                sources
                    .iter()
                    .map(|&(r, n)| constraints(&inhibit_rules[r as usize].sources[n as usize])),
            ),
            sources,
            inhibit_by_name: inhibit_rules
                .iter()
                .enumerate()
                .map(|(i, r)| ((*r.name).into(), i))
                .collect(),
        }
    }
}

#[derive(Debug)]
pub struct Squad {
    pub name: Arc<str>,
    pub topic: String,
    pub services: Vec<String>,
    pub core_services: HashSet<Box<str>>,
    pub goalkeeper: Option<Goalkeeper>,
    pub receivers: Vec<file::ReceiverFile>,
    pub grouping: Grouping,
    pub storm: Option<StormLimit>,
    pub shift: ShiftSettings,
}

/// How a squad's shifts are measured (`goalkeeper.page_budget`, `goalkeeper.working_hours`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftSettings {
    /// Groups paged in one shift before it counts as over budget.
    pub page_budget: u32,
    /// Index into [`RuleSet::time_intervals`]: pages outside it are out of hours.
    pub working_hours: Option<usize>,
}

/// The SRE rule of thumb, two incidents per 12 hours, over a day-long shift.
pub const DEFAULT_PAGE_BUDGET: u32 = 4;

impl Default for ShiftSettings {
    fn default() -> ShiftSettings {
        ShiftSettings {
            page_budget: DEFAULT_PAGE_BUDGET,
            working_hours: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Grouping {
    pub group_by: Vec<Box<str>>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

/// Caps on the state of one engine. New alerts over a cap are shed (a fate of
/// their own); a core service's alerts may use the last tenth of
/// `max_active_alerts` that others may not, and no per-squad cap applies to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Active alerts (remembered in a group) at most; 0: no cap.
    pub max_active_alerts: usize,
    /// Active alerts of one squad at most; 0: no cap.
    pub max_active_alerts_per_squad: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_active_alerts: DEFAULT_MAX_ACTIVE_ALERTS,
            max_active_alerts_per_squad: 0,
        }
    }
}

/// About 160 MB of state at ~650 bytes an alert.
pub const DEFAULT_MAX_ACTIVE_ALERTS: usize = 250_000;

#[derive(Debug, Clone, Copy)]
pub struct StormLimit {
    pub max_notifications: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct FlapConfig {
    pub max_changes: u32,
    pub window: Duration,
}

#[derive(Debug)]
pub struct ImpactRule {
    pub name: Arc<str>,
    pub matchers: Vec<Matcher>,
    pub action: Action,
    /// Indices into [`RuleSet::time_intervals`]; empty means always.
    pub intervals: Vec<usize>,
    /// Empty means every squad.
    pub squads: Vec<SquadId>,
    pub applies_to_core: bool,
}

#[derive(Debug, Clone)]
pub struct Silence {
    pub id: Arc<str>,
    pub matchers: Vec<Matcher>,
    pub starts_at: Ts,
    pub ends_at: Ts,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn active_at(&self, t: Ts) -> bool {
        self.starts_at <= t && t < self.ends_at
    }
}

#[derive(Debug)]
pub struct InhibitRule {
    pub name: Arc<str>,
    /// Each source must have a firing alert with equal `equal` labels (AND).
    pub sources: Vec<Vec<Matcher>>,
    pub targets: Vec<Matcher>,
    pub equal: Vec<Box<str>>,
    pub squad: Option<SquadId>,
}

/// Who owns an alert, and whether it belongs to a core service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub squad: SquadId,
    pub core: bool,
}

impl RuleSet {
    pub fn squad_by_name(&self, name: &str) -> Option<SquadId> {
        self.squads
            .iter()
            .position(|s| &*s.name == name)
            .map(|i| i as SquadId)
    }

    /// The service an alert belongs to: the first non-empty ownership label.
    pub fn service_of<'l>(&self, labels: &'l impl Labels) -> Option<&'l str> {
        self.service_labels
            .iter()
            .find_map(|l| labels.get(l).filter(|v| !v.is_empty()))
    }

    /// The group an alert of `squad` belongs to: its labels (the squad's
    /// `group_by`, or all labels for `...`) and its key, `<squad>:<labels>`.
    /// The engine groups by it and the pipeline partitions by the key.
    pub fn group_of(&self, squad: SquadId, labels: &impl Labels) -> (LabelSet, String) {
        let sq = &self.squads[squad as usize];
        let group_labels = if sq.grouping.group_by.iter().any(|l| &**l == "...") {
            LabelSet::from_labels(labels)
        } else {
            LabelSet::from_pairs(
                sq.grouping
                    .group_by
                    .iter()
                    .filter_map(|l| labels.get(l).map(|v| (&**l, v))),
            )
        };
        let key = format!("{}:{}", sq.name, group_labels);
        (group_labels, key)
    }

    /// A hash of the group [`RuleSet::group_of`] names, without building it
    /// (the route stage partitions every alert by it). Stable across
    /// processes and versions: instances must agree on it.
    pub fn group_hash(&self, squad: SquadId, labels: &impl Labels) -> u64 {
        let sq = &self.squads[squad as usize];
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(sq.name.as_bytes());
        h.update(&[0xff]);
        let mut pair = |n: &str, v: &str| {
            h.update(n.as_bytes());
            h.update(&[0xfe]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        };
        if sq.grouping.group_by.iter().any(|l| &**l == "...") {
            for i in 0..labels.len() {
                let (n, v) = labels.pair(i);
                pair(n, v);
            }
        } else {
            // In `group_by` order: alerts of one group agree on every value.
            for l in &sq.grouping.group_by {
                if let Some(v) = labels.get(l) {
                    pair(l, v);
                }
            }
        }
        h.digest()
    }

    pub fn owner(&self, labels: &impl Labels) -> Owner {
        let service = self.service_of(labels);
        let squad = service
            .and_then(|s| self.service_owner.get(s).copied())
            .or_else(|| {
                self.indexes.squads.first(labels, None, |i| {
                    let (id, m) = &self.squad_matchers[i];
                    all_match(m, labels).then_some(*id)
                })
            })
            .unwrap_or(self.fallback);
        let core = service.is_some_and(|s| self.squads[squad as usize].core_services.contains(s));
        Owner { squad, core }
    }

    /// Calls `f` with each impact rule that may apply to an alert of `squad`
    /// with these labels, in order, until `f` returns `Some`. The rules'
    /// matchers are checked here; their squads and time intervals are not.
    pub fn impact_rule<T>(
        &self,
        labels: &impl Labels,
        squad: SquadId,
        mut f: impl FnMut(&ImpactRule) -> Option<T>,
    ) -> Option<T> {
        self.indexes.impact.first(labels, Some(squad), |i| {
            let r = &self.impact_rules[i];
            if all_match(&r.matchers, labels) {
                f(r)
            } else {
                None
            }
        })
    }

    /// The first rule-file silence active at `now` that matches.
    pub fn silence_of(&self, labels: &impl Labels, now: Ts) -> Option<&Silence> {
        self.indexes.silences.first(labels, None, |i| {
            let s = &self.silences[i];
            (s.active_at(now) && all_match(&s.matchers, labels)).then_some(s)
        })
    }

    /// Calls `f` with each inhibit rule (and its position) whose targets match
    /// an alert of `squad` with these labels, in order, until `f` returns `Some`.
    pub fn inhibiting_rule<T>(
        &self,
        labels: &impl Labels,
        squad: SquadId,
        mut f: impl FnMut(usize, &InhibitRule) -> Option<T>,
    ) -> Option<T> {
        self.indexes
            .inhibit_targets
            .first(labels, Some(squad), |i| {
                let r = &self.inhibit_rules[i];
                if r.squad.is_some_and(|s| s != squad) || !all_match(&r.targets, labels) {
                    return None;
                }
                f(i, r)
            })
    }

    /// Calls `f(rule, source)` for every inhibit rule source these labels match,
    /// in rule order.
    pub fn each_source(&self, labels: &impl Labels, mut f: impl FnMut(usize, usize)) {
        self.indexes.inhibit_sources.each(labels, None, |i| {
            let (r, n) = self.indexes.sources[i];
            if all_match(&self.inhibit_rules[r as usize].sources[n as usize], labels) {
                f(r as usize, n as usize);
            }
        });
    }

    /// The position of the inhibit rule of this name.
    pub fn inhibit_rule_by_name(&self, name: &str) -> Option<usize> {
        self.indexes.inhibit_by_name.get(name).copied()
    }

    /// A minimal rule set: one fallback squad, Alertmanager's defaults.
    pub fn empty() -> RuleSet {
        compile(&[("<empty>".into(), String::new())]).expect("the empty rule set compiles")
    }
}

/// One problem in the rule files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// What the error is in, e.g. `impact rule "drop-staging"`.
    pub rule: Option<String>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(r) = &self.rule {
            write!(f, "{r}: ")?;
        }
        // One line per error, whatever the YAML parser wrote (logs promise it).
        let mut lines = self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        if let Some(first) = lines.next() {
            f.write_str(first)?;
        }
        for l in lines {
            write!(f, "; {l}")?;
        }
        Ok(())
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// Loads every `*.yaml` and `*.yml` file directly inside `dir` (not subfolders:
/// `rules/tests/` holds rule tests), in name order, and compiles them together.
pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
    load_dir_with(dir, &[])
}

/// [`load_dir`] with more rule files, as if they were in the directory
/// (file names only; `squadron report` measures suggested rules this way).
pub fn load_dir_with(dir: &Path, extra: &[(String, String)]) -> Result<RuleSet, RuleErrors> {
    let fail = |message: String| {
        RuleErrors(vec![RuleError {
            file: dir.into(),
            line: 0,
            column: 0,
            rule: None,
            message,
        }])
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read rules directory: {e}")))?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| fail(format!("cannot read rules directory: {e}")))?;
        let p = e.path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            paths.push(p);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(fail("no rule files (*.yaml, *.yml) in directory".into()));
    }
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    let not_a_file = |p: &Path, message: String| RuleError {
        file: p.into(),
        line: 0,
        column: 0,
        rule: None,
        message,
    };
    for p in paths {
        // Anything named like a rule file must be one: a dangling symlink, a
        // directory or a FIFO is an error, never silently left out.
        match std::fs::metadata(&p) {
            Err(e) => {
                let why = if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_symlink()) {
                    format!("a symlink that cannot be followed (dangling or a loop): {e}")
                } else {
                    format!("cannot read: {e}")
                };
                errors.push(not_a_file(&p, why));
                continue;
            }
            Ok(m) if m.is_dir() => {
                errors.push(not_a_file(&p, "a directory, not a rule file".into()));
                continue;
            }
            Ok(m) if !m.is_file() => {
                errors.push(not_a_file(
                    &p,
                    "not a regular file (a FIFO, socket or device)".into(),
                ));
                continue;
            }
            Ok(_) => {}
        }
        match std::fs::read_to_string(&p) {
            Ok(text) => sources.push((p, text)),
            Err(e) => errors.push(RuleError {
                file: p,
                line: 0,
                column: 0,
                rule: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(RuleErrors(errors));
    }
    for (name, text) in extra {
        sources.retain(|(p, _)| p.file_name() != Some(std::ffi::OsStr::new(name)));
        sources.push((dir.join(name), text.clone()));
    }
    sources.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rules = compile(&sources)?;
    if let Some(cat) = rules.catalog.clone() {
        let path = dir.join(&cat.path);
        let annotation = cat
            .core_annotation
            .as_deref()
            .unwrap_or(catalog::CORE_ANNOTATION);
        let files = catalog::files(&path)
            .map_err(|e| fail(format!("cannot read the catalog {}: {e}", path.display())))?;
        let mut components = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => match catalog::parse(&f, &text, annotation) {
                    Ok(mut c) => components.append(&mut c),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(RuleError {
                    file: f,
                    line: 0,
                    column: 0,
                    rule: Some("catalog".into()),
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(RuleErrors(errors));
        }
        let report = rules.apply_catalog(&components);
        // The catalog is part of what the rules are: it changes the digest.
        let mut h = u64::from_str_radix(&rules.digest, 16).unwrap_or(0);
        for c in &components {
            h = crate::model::Fingerprint::of([(c.name.as_str(), c.owner.as_str())]).0
                ^ h.rotate_left(5)
                ^ u64::from(c.core);
        }
        rules.digest = format!("{h:016x}");
        rules.catalog_report = Some(report);
    }
    Ok(rules)
}

/// Compiles rule files given as (path, text). Collects every error.
pub fn compile(sources: &[(PathBuf, String)]) -> Result<RuleSet, RuleErrors> {
    let mut errs = Vec::new();
    let mut files: Vec<(usize, RuleFile)> = Vec::new();
    for (i, (path, text)) in sources.iter().enumerate() {
        match serde_yaml_ng::from_str::<Option<RuleFile>>(text) {
            Ok(f) => files.push((i, f.unwrap_or_default())),
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                errs.push(RuleError {
                    file: path.clone(),
                    line,
                    column,
                    rule: None,
                    message: strip_location(&e.to_string()),
                });
            }
        }
    }
    let mut c = Compiler {
        sources,
        errs,
        names: Vec::new(),
    };
    let rules = c.compile(&files);
    if c.errs.is_empty() {
        return Ok(rules);
    }
    let order = |e: &RuleError| {
        (
            sources.iter().position(|(p, _)| *p == e.file),
            e.line,
            e.column,
        )
    };
    c.errs.sort_by_key(order);
    Err(RuleErrors(c.errs))
}

/// serde_yaml appends " at line L column C"; we print the location up front.
pub(crate) fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

struct Compiler<'s> {
    sources: &'s [(PathBuf, String)],
    errs: Vec<RuleError>,
    /// Rule names of the anchors handed out.
    names: Vec<Box<str>>,
}

/// Where in a file a piece of a rule is: found by searching the text for the
/// rule's name, then for the offending value after it. serde_yaml keeps no
/// spans for values, and this finds the right line for any file a person writes.
/// The search runs only when an error is reported: finding every rule's
/// line up front made compiling quadratic in the number of rules.
#[derive(Clone, Copy)]
struct Anchor {
    file: usize,
    section: &'static str,
    /// Index into [`Compiler::names`].
    name: usize,
}

impl Compiler<'_> {
    fn anchor(&mut self, file: usize, section: &'static str, name: &str) -> Anchor {
        self.names.push(name.into());
        Anchor {
            file,
            section,
            name: self.names.len() - 1,
        }
    }

    /// Where the anchor's rule is in its file.
    fn offset(&self, at: Anchor) -> usize {
        let text = &self.sources[at.file].1;
        let start = text.find(&format!("{}:", at.section)).unwrap_or(0);
        find_value(text, &self.names[at.name], start).unwrap_or(start)
    }

    fn error(
        &mut self,
        at: Anchor,
        needle: Option<&str>,
        rule: Option<String>,
        message: impl Into<String>,
    ) {
        let text = &self.sources[at.file].1;
        let start = self.offset(at);
        let offset = needle
            .and_then(|n| find_value(text, n, start))
            .unwrap_or(start);
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        self.errs.push(RuleError {
            file: self.sources[at.file].0.clone(),
            line,
            column,
            rule,
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        at: Anchor,
        rule: &Option<String>,
        field: &str,
        v: &Option<String>,
        default: Duration,
    ) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    self.error(at, Some(s), rule.clone(), format!("{field}: {e}"));
                    default
                }
            },
        }
    }

    fn matchers(
        &mut self,
        at: Anchor,
        rule: &Option<String>,
        field: &str,
        items: &[String],
    ) -> Vec<Matcher> {
        items
            .iter()
            .filter_map(|s| match Matcher::parse(s) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.error(at, Some(s), rule.clone(), format!("{field}: {e}"));
                    None
                }
            })
            .collect()
    }

    fn grouping(
        &mut self,
        at: Anchor,
        rule: &Option<String>,
        f: &GroupingFile,
        base: &Grouping,
    ) -> Grouping {
        let g = Grouping {
            group_by: f
                .group_by
                .as_ref()
                .map(|v| v.iter().map(|s| s.as_str().into()).collect())
                .unwrap_or_else(|| base.group_by.clone()),
            group_wait: self.duration(at, rule, "group_wait", &f.group_wait, base.group_wait),
            group_interval: self.duration(
                at,
                rule,
                "group_interval",
                &f.group_interval,
                base.group_interval,
            ),
            repeat_interval: self.duration(
                at,
                rule,
                "repeat_interval",
                &f.repeat_interval,
                base.repeat_interval,
            ),
        };
        if g.group_interval.is_zero() || g.repeat_interval.is_zero() {
            self.error(
                at,
                Some("interval"),
                rule.clone(),
                "group_interval and repeat_interval must be greater than 0",
            );
        }
        g
    }

    fn storm(&mut self, at: Anchor, rule: &Option<String>, f: &StormFile) -> Option<StormLimit> {
        let interval = self.duration(
            at,
            rule,
            "storm_limit.interval",
            &Some(f.interval.clone()),
            Duration::ZERO,
        );
        if f.max_notifications == 0 || interval.is_zero() {
            self.error(
                at,
                Some("max_notifications"),
                rule.clone(),
                "storm_limit needs max_notifications >= 1 and an interval > 0",
            );
            return None;
        }
        Some(StormLimit {
            max_notifications: f.max_notifications,
            interval,
        })
    }

    /// Takes a section that may appear in at most one file.
    fn single<'f, T>(
        &mut self,
        files: &'f [(usize, RuleFile)],
        section: &'static str,
        get: impl Fn(&'f RuleFile) -> Option<&'f T>,
    ) -> Option<(Anchor, &'f T)> {
        let mut found: Option<(Anchor, &T)> = None;
        for (i, f) in files {
            if let Some(v) = get(f) {
                let at = self.anchor(*i, section, "");
                if let Some((first, _)) = found {
                    let other = self.sources[first.file].0.display().to_string();
                    self.error(
                        at,
                        None,
                        None,
                        format!("{section} is already set in {other}; set it in one file"),
                    );
                } else {
                    found = Some((at, v));
                }
            }
        }
        found
    }

    fn compile(&mut self, files: &[(usize, RuleFile)]) -> RuleSet {
        let ownership = self.single(files, "ownership", |f| f.ownership.as_ref());
        let grouping_file = self.single(files, "grouping", |f| f.grouping.as_ref());
        let resolve_file = self.single(files, "resolve_timeout", |f| f.resolve_timeout.as_ref());
        let flap_file = self.single(files, "flap_detection", |f| f.flap_detection.as_ref());
        let storm_file = self.single(files, "storm_limit", |f| f.storm_limit.as_ref());
        let limits = match self.single(files, "limits", |f| f.limits.as_ref()) {
            Some((_, l)) => Limits {
                max_active_alerts: l.max_active_alerts.unwrap_or(DEFAULT_MAX_ACTIVE_ALERTS),
                max_active_alerts_per_squad: l.max_active_alerts_per_squad.unwrap_or(0),
            },
            None => Limits::default(),
        };

        let defaults = Grouping {
            group_by: vec!["alertname".into(), "service".into()],
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
        };
        let global_grouping = match grouping_file {
            Some((at, g)) => self.grouping(at, &Some("grouping".into()), g, &defaults),
            None => defaults,
        };
        let resolve_timeout = match resolve_file {
            Some((at, s)) => self.duration(
                at,
                &None,
                "resolve_timeout",
                &Some(s.clone()),
                DEFAULT_RESOLVE_TIMEOUT,
            ),
            None => DEFAULT_RESOLVE_TIMEOUT,
        };
        let flap = flap_file.and_then(|(at, f)| {
            let rule = Some("flap_detection".to_owned());
            let window =
                self.duration(at, &rule, "window", &Some(f.window.clone()), Duration::ZERO);
            if f.max_changes == 0 || window.is_zero() {
                self.error(
                    at,
                    Some("max_changes"),
                    rule,
                    "needs max_changes >= 1 and a window > 0",
                );
                return None;
            }
            Some(FlapConfig {
                max_changes: f.max_changes,
                window,
            })
        });
        let global_storm =
            storm_file.and_then(|(at, f)| self.storm(at, &Some("storm_limit".into()), f));

        // Time intervals, by name.
        let mut time_intervals: Vec<TimeInterval> = Vec::new();
        let mut seen_intervals = std::collections::HashSet::new();
        for (fi, f) in files {
            for ti in &f.time_intervals {
                let at = self.anchor(*fi, "time_intervals", &ti.name);
                let rule = Some(format!("time interval {:?}", ti.name));
                if !seen_intervals.insert(ti.name.as_str()) {
                    self.error(at, None, rule.clone(), "duplicate time interval name");
                }
                let mut specs = Vec::new();
                for s in &ti.time_intervals {
                    match TimeSpec::compile(s) {
                        Ok(spec) => specs.push(spec),
                        Err(e) => self.error(at, None, rule.clone(), e),
                    }
                }
                time_intervals.push(TimeInterval {
                    name: ti.name.as_str().into(),
                    specs,
                });
            }
        }

        // Squads.
        let mut squads: Vec<Squad> = Vec::new();
        let mut seen_squads = std::collections::HashSet::new();
        let mut squad_at: Vec<Anchor> = Vec::new();
        let mut service_owner = crate::model::StrMap::default();
        let mut squad_matchers = Vec::new();
        for (fi, f) in files {
            for s in &f.squads {
                let at = self.anchor(*fi, "squads", &s.name);
                let rule = Some(format!("squad {:?}", s.name));
                if s.name.is_empty() {
                    self.error(at, None, rule.clone(), "squad name is empty");
                }
                if !seen_squads.insert(s.name.as_str()) {
                    self.error(at, None, rule.clone(), "duplicate squad name");
                    continue;
                }
                let id = squads.len() as SquadId;
                for svc in &s.services {
                    if let Some(prev) = service_owner.insert(svc.as_str().into(), id) {
                        // `prev == id`: this squad lists the service twice (the
                        // squad itself is not in `squads` yet).
                        let message = match squads.get(prev as usize) {
                            Some(other) => format!(
                                "service {svc:?} is already owned by squad {:?}",
                                other.name
                            ),
                            None => format!("service {svc:?} is listed twice"),
                        };
                        self.error(at, Some(svc), rule.clone(), message);
                    }
                }
                for core in &s.core_services {
                    if !s.services.contains(core) {
                        self.error(
                            at,
                            Some(core),
                            rule.clone(),
                            format!("core service {core:?} is not among the squad's services"),
                        );
                    }
                }
                let m = self.matchers(at, &rule, "match", &s.match_);
                if !m.is_empty() {
                    squad_matchers.push((id, m));
                }
                let goalkeeper = s
                    .goalkeeper
                    .as_ref()
                    .and_then(|g| match Goalkeeper::compile(g) {
                        Ok(g) => Some(g),
                        Err(e) => {
                            self.error(
                                at,
                                Some("goalkeeper"),
                                rule.clone(),
                                format!("goalkeeper: {e}"),
                            );
                            None
                        }
                    });
                let topic = s
                    .topic
                    .clone()
                    .unwrap_or_else(|| format!("alerts.squad.{}", s.name));
                if let Err(e) = check_topic(&topic) {
                    self.error(at, Some(&topic), rule.clone(), e);
                }
                self.receivers(at, &rule, &s.receivers);
                let grouping = match &s.grouping {
                    Some(g) => self.grouping(at, &rule, g, &global_grouping),
                    None => global_grouping.clone(),
                };
                let storm = match &s.storm_limit {
                    Some(st) => self.storm(at, &rule, st),
                    None => global_storm,
                };
                let mut shift = ShiftSettings::default();
                if let Some(g) = &s.goalkeeper {
                    shift.page_budget = g.page_budget.unwrap_or(DEFAULT_PAGE_BUDGET);
                    if let Some(n) = &g.working_hours {
                        shift.working_hours = time_intervals.iter().position(|t| *t.name == **n);
                        if shift.working_hours.is_none() {
                            self.error(
                                at,
                                Some(n),
                                rule.clone(),
                                format!("goalkeeper.working_hours: unknown time interval {n:?}"),
                            );
                        }
                    }
                }
                squads.push(Squad {
                    name: s.name.as_str().into(),
                    topic,
                    services: s.services.clone(),
                    core_services: s.core_services.iter().map(|c| c.as_str().into()).collect(),
                    goalkeeper,
                    receivers: s.receivers.clone(),
                    grouping,
                    storm,
                    shift,
                });
                squad_at.push(at);
            }
        }

        let (fallback_name, service_labels) = match ownership {
            Some((at, o)) => {
                let labels = o
                    .service_labels
                    .clone()
                    .unwrap_or_else(|| vec!["service".into()]);
                if labels.is_empty() {
                    self.error(
                        at,
                        Some("service_labels"),
                        Some("ownership".into()),
                        "service_labels is empty",
                    );
                }
                if !squads.iter().any(|s| *s.name == *o.fallback_squad) {
                    self.error(
                        at,
                        Some(&o.fallback_squad),
                        Some("ownership".into()),
                        format!("fallback_squad {:?} is not a squad", o.fallback_squad),
                    );
                }
                (o.fallback_squad.clone(), labels)
            }
            None => (DEFAULT_FALLBACK_SQUAD.to_owned(), vec!["service".into()]),
        };
        let fallback = match squads.iter().position(|s| *s.name == *fallback_name) {
            Some(i) => i as SquadId,
            None => {
                squads.push(Squad {
                    name: fallback_name.as_str().into(),
                    topic: format!("alerts.squad.{fallback_name}"),
                    services: Vec::new(),
                    core_services: HashSet::new(),
                    goalkeeper: None,
                    receivers: Vec::new(),
                    grouping: global_grouping.clone(),
                    storm: global_storm,
                    shift: ShiftSettings::default(),
                });
                (squads.len() - 1) as SquadId
            }
        };
        let squad_id =
            |c: &mut Self, at: Anchor, rule: &Option<String>, name: &str| -> Option<SquadId> {
                let id = squads
                    .iter()
                    .position(|s| *s.name == *name)
                    .map(|i| i as SquadId);
                if id.is_none() {
                    c.error(
                        at,
                        Some(name),
                        rule.clone(),
                        format!("unknown squad {name:?}"),
                    );
                }
                id
            };

        // Impact rules, in file order then rule order.
        let mut impact_rules: Vec<ImpactRule> = Vec::new();
        let mut seen_impact = std::collections::HashSet::new();
        for (fi, f) in files {
            for r in &f.impact_rules {
                let at = self.anchor(*fi, "impact_rules", &r.name);
                let rule = Some(format!("impact rule {:?}", r.name));
                if !seen_impact.insert(r.name.as_str()) {
                    self.error(
                        at,
                        None,
                        rule.clone(),
                        "duplicate impact rule name (names are drop reasons and must be unique)",
                    );
                }
                if r.match_.is_empty() {
                    self.error(
                        at,
                        None,
                        rule.clone(),
                        "match is empty: a rule must say which alerts it applies to",
                    );
                }
                let matchers = self.matchers(at, &rule, "match", &r.match_);
                let intervals = r
                    .active_time_intervals
                    .iter()
                    .filter_map(|n| {
                        let i = time_intervals.iter().position(|t| *t.name == **n);
                        if i.is_none() {
                            self.error(
                                at,
                                Some(n),
                                rule.clone(),
                                format!("unknown time interval {n:?}"),
                            );
                        }
                        i
                    })
                    .collect();
                let sq = r
                    .squads
                    .iter()
                    .filter_map(|n| squad_id(self, at, &rule, n))
                    .collect();
                impact_rules.push(ImpactRule {
                    name: r.name.as_str().into(),
                    matchers,
                    action: r.action,
                    intervals,
                    squads: sq,
                    applies_to_core: r.applies_to_core,
                });
            }
        }

        let mut silences: Vec<Silence> = Vec::new();
        let mut seen_silences = std::collections::HashSet::new();
        for (fi, f) in files {
            for (n, s) in f.silences.iter().enumerate() {
                let stem = self.sources[*fi]
                    .0
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let id = s.id.clone().unwrap_or_else(|| format!("{stem}#{}", n + 1));
                let at = match &s.id {
                    Some(i) => self.anchor(*fi, "silences", i),
                    None => self.anchor(
                        *fi,
                        "silences",
                        s.matchers.first().map(String::as_str).unwrap_or(""),
                    ),
                };
                let rule = Some(format!("silence {id:?}"));
                if !seen_silences.insert(id.to_string()) {
                    self.error(at, None, rule.clone(), "duplicate silence id");
                }
                if s.matchers.is_empty() {
                    self.error(
                        at,
                        None,
                        rule.clone(),
                        "matchers is empty: a silence must say what it silences",
                    );
                }
                let matchers = self.matchers(at, &rule, "matchers", &s.matchers);
                let time = |field: &str, v: &str, c: &mut Self| match Ts::parse_rfc3339(v) {
                    Ok(Some(t)) => Some(t),
                    _ => {
                        c.error(
                            at,
                            Some(v),
                            rule.clone(),
                            format!("{field} {v:?} is not an RFC 3339 timestamp"),
                        );
                        None
                    }
                };
                let (starts, ends) = (
                    time("starts_at", &s.starts_at, self),
                    time("ends_at", &s.ends_at, self),
                );
                if let (Some(a), Some(b)) = (starts, ends) {
                    if b <= a {
                        self.error(
                            at,
                            Some(&s.ends_at),
                            rule.clone(),
                            "ends_at must be after starts_at",
                        );
                    }
                }
                silences.push(Silence {
                    id: id.into(),
                    matchers,
                    starts_at: starts.unwrap_or_default(),
                    ends_at: ends.unwrap_or_default(),
                    created_by: s.created_by.clone(),
                    comment: s.comment.clone(),
                });
            }
        }

        let mut inhibit_rules: Vec<InhibitRule> = Vec::new();
        let mut seen_inhibit = std::collections::HashSet::new();
        for (fi, f) in files {
            for r in &f.inhibit_rules {
                let at = self.anchor(*fi, "inhibit_rules", &r.name);
                let rule = Some(format!("inhibit rule {:?}", r.name));
                if !seen_inhibit.insert(r.name.as_str()) {
                    self.error(at, None, rule.clone(), "duplicate inhibit rule name");
                }
                let mut sources = Vec::new();
                if !r.source_matchers.is_empty() {
                    sources.push(self.matchers(at, &rule, "source_matchers", &r.source_matchers));
                }
                for s in &r.sources {
                    if s.matchers.is_empty() {
                        self.error(
                            at,
                            Some("sources"),
                            rule.clone(),
                            "a source with no matchers would match every alert",
                        );
                    }
                    sources.push(self.matchers(at, &rule, "sources", &s.matchers));
                }
                if sources.is_empty() {
                    self.error(at, None, rule.clone(), "give source_matchers or sources");
                }
                if r.target_matchers.is_empty() {
                    self.error(
                        at,
                        None,
                        rule.clone(),
                        "target_matchers is empty: the rule would inhibit every alert",
                    );
                }
                let targets = self.matchers(at, &rule, "target_matchers", &r.target_matchers);
                let squad = r.squad.as_ref().and_then(|n| squad_id(self, at, &rule, n));
                inhibit_rules.push(InhibitRule {
                    name: r.name.as_str().into(),
                    sources,
                    targets,
                    equal: r.equal.iter().map(|s| s.as_str().into()).collect(),
                    squad,
                });
            }
        }

        // File names, not paths: the digest of `check rules` in CI equals the
        // one `/api/v1/status` shows for /etc/squadron/rules.
        let mut h = crate::model::Fingerprint::of([]).0;
        for (p, t) in self.sources {
            let name = p.file_name().unwrap_or(p.as_os_str()).to_string_lossy();
            h = crate::model::Fingerprint::of([(&*name, t.as_str())]).0 ^ h.rotate_left(7);
        }
        let indexes = Indexes::new(&squad_matchers, &impact_rules, &silences, &inhibit_rules);
        RuleSet {
            indexes,
            squads,
            fallback,
            service_labels: service_labels
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            service_owner,
            squad_matchers,
            impact_rules,
            silences,
            inhibit_rules,
            time_intervals,
            resolve_timeout,
            flap,
            limits,
            digest: format!("{h:016x}"),
            files: self.sources.iter().map(|(p, _)| p.clone()).collect(),
            catalog: ownership.and_then(|(_, o)| o.catalog.clone()),
            catalog_report: None,
        }
    }

    fn receivers(&mut self, at: Anchor, rule: &Option<String>, receivers: &[file::ReceiverFile]) {
        let mut names = HashSet::new();
        for r in receivers {
            if !names.insert(&r.name) {
                self.error(
                    at,
                    Some(&r.name),
                    rule.clone(),
                    format!("duplicate receiver name {:?}", r.name),
                );
            }
            let kinds = [
                r.webhook.is_some(),
                r.slack.is_some(),
                r.pagerduty.is_some(),
            ]
            .iter()
            .filter(|k| **k)
            .count();
            if kinds != 1 {
                self.error(
                    at,
                    Some(&r.name),
                    rule.clone(),
                    format!(
                        "receiver {:?} needs exactly one of webhook, slack, pagerduty",
                        r.name
                    ),
                );
            }
            let mut urls: Vec<&str> = Vec::new();
            let mut secrets: Vec<(&str, Option<&file::Secret>, bool)> = Vec::new();
            if let Some(w) = &r.webhook {
                secrets.push(("url or url_file", w.url.as_ref(), w.url_file.is_some()));
                for v in w.headers.values() {
                    secrets.push(("header", Some(v), false));
                }
            }
            if let Some(sl) = &r.slack {
                secrets.push(("url or url_file", sl.url.as_ref(), sl.url_file.is_some()));
            }
            if let Some(p) = &r.pagerduty {
                secrets.push((
                    "routing_key or routing_key_file",
                    p.routing_key.as_ref(),
                    p.routing_key_file.is_some(),
                ));
                urls.extend(p.url.as_deref());
                urls.extend(p.client_url.as_deref());
            }
            for (what, value, from_file) in secrets {
                let problem = match (value, from_file) {
                    (None, false) => Some(format!("needs {what}")),
                    (Some(_), true) => Some(format!("takes one of {what}, not both")),
                    (Some(file::Secret::File { file: f }), _) if f.is_empty() => {
                        Some("a secret's file is empty".into())
                    }
                    (Some(file::Secret::Env { env }), _) if env.is_empty() => {
                        Some("a secret's env is empty".into())
                    }
                    _ => None,
                };
                if let Some(problem) = problem {
                    self.error(
                        at,
                        Some(&r.name),
                        rule.clone(),
                        format!("receiver {:?}: {problem}", r.name),
                    );
                }
                // A URL written inline is checked now; one read from a file
                // or the environment at each delivery.
                if what.starts_with("url") {
                    if let Some(file::Secret::Value(u)) = value {
                        urls.push(u);
                    }
                }
            }
            if let Some(t) = &r.timeout {
                if let Err(e) = parse_duration(t).and_then(|d| {
                    if d.is_zero() {
                        Err("must be greater than 0".into())
                    } else {
                        Ok(d)
                    }
                }) {
                    self.error(
                        at,
                        Some(t),
                        rule.clone(),
                        format!("receiver {:?}: timeout: {e}", r.name),
                    );
                }
            }
            if let Some(retry) = &r.retry {
                if retry.attempts == 0 {
                    self.error(
                        at,
                        Some(&r.name),
                        rule.clone(),
                        format!("receiver {:?}: retry.attempts must be at least 1", r.name),
                    );
                }
                if let Err(e) = parse_duration(&retry.backoff) {
                    self.error(
                        at,
                        Some(&retry.backoff),
                        rule.clone(),
                        format!("receiver {:?}: retry.backoff: {e}", r.name),
                    );
                }
            }
            for url in urls {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.error(
                        at,
                        Some(url),
                        rule.clone(),
                        format!(
                            "receiver {:?}: url must start with http:// or https://",
                            r.name
                        ),
                    );
                }
            }
        }
    }
}

/// Finds `needle` as a YAML value at or after `from`: the first occurrence that
/// is not part of a longer word.
fn find_value(text: &str, needle: &str, from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    let mut start = from.min(text.len());
    while let Some(i) = text[start..].find(needle) {
        let pos = start + i;
        let before = text[..pos].chars().next_back();
        let after = text[pos + needle.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if !word(before) && !word(after) {
            return Some(pos);
        }
        start = pos + needle.len();
    }
    None
}

fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty()
        || t.len() > 249
        || t == "."
        || t == ".."
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "topic {t:?} is not a legal Kafka topic name ([a-zA-Z0-9._-], at most 249 characters)"
        ));
    }
    Ok(())
}

impl RuleSet {
    /// Whether a named time interval is active: used by impact rules.
    pub fn interval_active(&self, i: usize, at: Ts) -> bool {
        self.time_intervals[i].contains(at)
    }
}

#[cfg(test)]
mod tests;
