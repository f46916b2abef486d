//! The engine: a deterministic, sans-IO state machine that decides every
//! alert's fate. It is fed alerts with the time they were received
//! ([`Engine::receive`]) and the passage of time ([`Engine::tick`]); it writes
//! fates and notifications into [`Outputs`].
//!
//! It knows nothing about Kafka, HTTP, files, threads or clocks. Given the same
//! rules, inputs and times it produces the same outputs, and its state can be
//! snapshotted to bytes and restored ([`Engine::snapshot`], [`Engine::restore`]).
//!
//! Pipeline for one input alert (see ARCHITECTURE.md):
//! inhibition sources are updated from every valid alert; a remembered alert
//! whose state is unchanged is deduplicated at once; a new alert is owned,
//! then checked against impact rules, silences and inhibit rules, and admitted
//! to its group. Its fate waits for the group's flush, where suppression is
//! checked again (time intervals and sources may have changed), and the storm
//! limit and flap detection apply.

mod changelog;
mod output;
mod shift;
mod sources;
mod state;

pub use changelog::{Change, RestoreReport};
pub use sources::{SharedSources, Unreadable};

pub use output::{
    DELIVERY_PART_INPUTS, DeliveryPart, Fate, FateKind, FateRecord, Folded, InputId, Limit,
    Notification, NotifiedAlert, NotifyReason, Outputs,
};
#[cfg(test)]
pub use shift::sample_report;
pub use shift::{
    AckedGroup, Book, DigestEntry, DigestReport, DigestUpdate, EndingSilence, FiringGroup,
    HandoverReport, Noise, Page, ShiftMode, ShiftNote, interrupts,
};
use state::{FlapState, Group, GroupId, SourceIndex, State, StoredAlert, Timer};

use crate::control::Controls;
use crate::model::{Alert, AlertKey, LabelSet, Labels, Status, Ts};
use crate::rules::file::Action;
use crate::rules::{Owner, RuleSet, SquadId};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Folded notifications a storm window remembers at most while their later
/// parts are due (they come right after the first, so a few suffice).
const MAX_FOLDING: usize = 1024;

/// How often expired inhibition sources are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Engine {
    rules: Arc<RuleSet>,
    /// Silences, acknowledgements and duty overrides made at runtime.
    controls: Arc<Controls>,
    state: State,
    /// Derived from `state.groups`: group key -> id.
    group_index: HashMap<Arc<str>, GroupId>,
    /// Derived from `state.groups` and the rules: each group's squad id.
    group_squad: Vec<SquadId>,
    /// Derived: active alerts (group members) per squad id, for the limits.
    squad_alerts: Vec<usize>,
    /// Per time interval: (minute since epoch, active). Intervals have minute resolution.
    interval_cache: Vec<Cell<(i64, bool)>>,
    core_protected: Cell<u64>,
    /// Reused for computing alert keys without an allocation per alert.
    scratch: Vec<u8>,
    /// Keys changed since the last `take_changes`, when tracking is on.
    dirty: Option<changelog::Dirty>,
    shift_mode: ShiftMode,
    /// Per squad id: what this step decided, not yet in a book or handed out.
    tally: Vec<Option<ShiftNote>>,
    /// The squad ids with a note in `tally`: a step touches a few squads, and
    /// settling must not walk all of them (1,000 squads made it a fifth of
    /// replay's time).
    tallied: Vec<SquadId>,
    /// Notes for the driver to deliver ([`ShiftMode::Routed`]).
    routed: Vec<ShiftNote>,
    /// The process's table of every task's inhibition sources, when this
    /// engine is one of several ([`Engine::share_sources`]).
    shared: Option<(Arc<SharedSources>, i32)>,
    /// Per inhibit rule: its id in the shared table ([`sources::rule_id`]).
    rule_ids: Vec<Arc<str>>,
    /// Records for the sources topic, made by [`Engine::take_changes`] (and
    /// the tombstones of [`Engine::share_sources`]), drained by
    /// [`Engine::take_source_records`].
    published: Vec<Change>,
}

/// What the impact rules say about an alert.
enum Impact {
    Page,
    /// To the squad's digest, by this rule.
    Digest(Arc<str>),
    Suppress(Fate),
}

/// Counters that are not fates: kept for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    /// Drop rules that matched an alert from a core service and were skipped.
    pub core_protected: u64,
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>) -> Engine {
        let mut e = Engine {
            rules: rules.clone(),
            controls: Arc::default(),
            state: State::default(),
            group_index: HashMap::new(),
            group_squad: Vec::new(),
            squad_alerts: Vec::new(),
            interval_cache: Vec::new(),
            core_protected: Cell::new(0),
            scratch: Vec::with_capacity(512),
            dirty: None,
            shift_mode: ShiftMode::Off,
            tally: Vec::new(),
            tallied: Vec::new(),
            routed: Vec::new(),
            shared: None,
            rule_ids: Vec::new(),
            published: Vec::new(),
        };
        e.set_rules(rules);
        e
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Makes this engine the task of `partition`, one of several deciding
    /// together: it consults `table` (every task's inhibition sources)
    /// besides its own, writes its own into the table as they change, and
    /// [`Engine::take_changes`] also makes the records that publish them to
    /// other instances ([`Engine::take_source_records`]). Sources of alerts
    /// other engines own are never kept in this engine's state.
    pub fn share_sources(&mut self, table: Arc<SharedSources>, partition: i32) {
        self.shared = Some((table, partition));
        // What the topic has of this partition may not be this state (at
        // least once, a crash between the changelog and the sources topic):
        // every key this engine has is written again, every other key ends.
        let stale = self.write_table();
        self.published
            .extend(stale.into_iter().map(|k| (k.into_bytes(), None)));
        self.mark_all_sources();
    }

    /// Writes every source of this engine into the shared table, in place of
    /// what its partition had there. Returns the keys the table had for the
    /// partition that this engine has not.
    fn write_table(&self) -> Vec<String> {
        let Some((table, p)) = &self.shared else {
            return Vec::new();
        };
        let before = table.own(*p);
        let mut written = std::collections::HashSet::new();
        for ((_, idx), id) in self.state.sources.iter().zip(&self.rule_ids) {
            for (n, i) in idx.iter().enumerate() {
                for (equal, list) in &i.by_key {
                    let key = sources::table_key(id, n as u32, equal);
                    table.set(*p, &key, list.clone());
                    written.insert(key);
                }
            }
        }
        before
            .into_iter()
            .map(String::from)
            .filter(|k| !written.contains(k))
            .collect()
    }

    /// Swaps in the runtime controls (silences, acknowledgements, duty
    /// overrides). They apply from the next decision on, as rules do.
    pub fn set_controls(&mut self, controls: Arc<Controls>) {
        self.controls = controls;
    }

    /// Who is on duty for squad `squad` at `now`: a runtime override, else the rule files.
    fn goalkeeper(&self, squad: SquadId, now: Ts) -> Option<Arc<str>> {
        let sq = &self.rules.squads[squad as usize];
        if let Some(p) = self.controls.on_duty(&sq.name, now) {
            return Some(p.into());
        }
        sq.goalkeeper.as_ref().and_then(|g| g.on_duty(now))
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            core_protected: self.core_protected.get(),
        }
    }

    /// Swaps in new rules, keeping all state: groups keep their timers,
    /// remembered alerts stay, inhibition sources carry over for rules whose
    /// name, sources and `equal` labels are unchanged.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        // The tally is by squad id, which the new rules may number differently.
        self.settle();
        self.mark_all_sources();
        let mut old: HashMap<Arc<str>, Vec<SourceIndex>> = std::mem::take(&mut self.state.sources)
            .into_iter()
            .collect();
        let old_rules = std::mem::replace(&mut self.rules, rules);
        self.state.sources = self
            .rules
            .inhibit_rules
            .iter()
            .map(|r| {
                let same = old_rules
                    .inhibit_rules
                    .iter()
                    .find(|o| o.name == r.name)
                    .is_some_and(|o| {
                        o.equal == r.equal
                            && o.sources.len() == r.sources.len()
                            && o.sources
                                .iter()
                                .zip(&r.sources)
                                .all(|(a, b)| display(a) == display(b))
                    });
                let idx = old
                    .remove(&r.name)
                    .filter(|i| same && i.len() == r.sources.len());
                (
                    r.name.clone(),
                    idx.unwrap_or_else(|| vec![SourceIndex::default(); r.sources.len()]),
                )
            })
            .collect();
        self.rule_ids = self
            .rules
            .inhibit_rules
            .iter()
            .map(|r| Arc::from(sources::rule_id(r)))
            .collect();
        self.interval_cache = vec![Cell::new((i64::MIN, false)); self.rules.time_intervals.len()];
        self.rebuild_derived();
        self.mark_all_sources();
        // Keys of changed rules' earlier forms end through the marks above.
        self.write_table();
    }

    /// Every inhibition source entry is written again (rules realign them by name).
    fn mark_all_sources(&mut self) {
        let Some(d) = self.dirty.as_mut() else { return };
        for ((rule, idx), id) in self.state.sources.iter().zip(&self.rule_ids) {
            for (n, i) in idx.iter().enumerate() {
                for equal in i.by_key.keys() {
                    d.sources
                        .insert((rule.clone(), id.clone(), n as u32, equal.clone()));
                }
            }
        }
    }

    fn mark_alert(&mut self, key: AlertKey) {
        if let Some(d) = self.dirty.as_mut() {
            d.alerts.insert(key);
        }
    }

    fn mark_group(&mut self, key: &Arc<str>) {
        if let Some(d) = self.dirty.as_mut() {
            d.groups.insert(key.clone());
        }
    }

    fn rebuild_derived(&mut self) {
        self.group_index.clear();
        self.group_squad.clear();
        self.squad_alerts.clear();
        self.squad_alerts.resize(self.rules.squads.len(), 0);
        for (id, g) in self.state.groups.iter().enumerate() {
            let squad = g
                .as_ref()
                .and_then(|g| self.rules.squad_by_name(&g.squad))
                .unwrap_or(self.rules.fallback);
            self.group_squad.push(squad);
            if let Some(g) = g {
                self.group_index.insert(g.key.clone(), id as GroupId);
                self.squad_alerts[squad as usize] += g.members.len();
            }
        }
    }

    /// Serializes the whole state (not the rules).
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).expect("engine state serializes")
    }

    /// Restores a snapshot taken by [`Engine::snapshot`] under `rules`.
    pub fn restore(rules: Arc<RuleSet>, bytes: &[u8]) -> Result<Engine, serde_json::Error> {
        let mut e = Engine::new(rules.clone());
        e.state = serde_json::from_slice(bytes)?;
        e.state.rebuild_members();
        // Aligns the restored inhibition sources with these rules by name, as a reload does.
        e.set_rules(rules);
        Ok(e)
    }

    /// Alerts remembered (admitted and not yet resolved and notified).
    pub fn active_alerts(&self) -> usize {
        self.state.alerts.len()
    }

    pub fn active_groups(&self) -> usize {
        self.group_index.len()
    }

    /// Input alerts whose fate waits for a group flush.
    pub fn pending_inputs(&self) -> usize {
        self.state.alerts.values().map(|a| a.pending.len()).sum()
    }

    /// Approximate heap bytes of the state, for the state-size metric.
    pub fn state_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one slot plus one control byte per bucket.
        let slots = |cap: usize, slot: usize| cap * (slot + 1);
        let alerts = slots(
            self.state.alerts.capacity(),
            size_of::<(AlertKey, Box<StoredAlert>)>(),
        ) + self
            .state
            .alerts
            .values()
            .map(|a| size_of::<StoredAlert>() + a.heap_bytes())
            .sum::<usize>();
        let groups = self.state.groups.capacity() * size_of::<Option<Group>>()
            + self
                .state
                .groups
                .iter()
                .flatten()
                .map(|g| {
                    g.key.len()
                        + g.labels.heap_bytes()
                        + g.members.capacity() * size_of::<AlertKey>()
                })
                .sum::<usize>();
        let sources = self
            .state
            .sources
            .iter()
            .flat_map(|(_, idx)| idx)
            .map(|idx| {
                slots(
                    idx.by_key.capacity(),
                    size_of::<(Box<str>, Vec<(AlertKey, Ts)>)>(),
                ) + idx
                    .by_key
                    .iter()
                    .map(|(k, v)| k.len() + v.capacity() * size_of::<(AlertKey, Ts)>())
                    .sum::<usize>()
            })
            .sum::<usize>();
        let flaps = slots(
            self.state.flaps.capacity(),
            size_of::<(AlertKey, FlapState)>(),
        ) + self
            .state
            .flaps
            .values()
            .map(|f| f.changes.capacity() * size_of::<Ts>())
            .sum::<usize>();
        alerts + groups + sources + flaps
    }

    /// The active groups and their alerts, for the status API. `keep` filters alerts
    /// (squad name, labels); groups left without alerts are omitted.
    pub fn groups(&self, now: Ts, mut keep: impl FnMut(&str, &LabelSet) -> bool) -> Vec<GroupView> {
        let mut out: Vec<GroupView> = self
            .state
            .groups
            .iter()
            .enumerate()
            .filter_map(|(gid, g)| Some((gid, g.as_ref()?)))
            .filter_map(|(gid, g)| {
                let squad = self.group_squad[gid];
                let alerts: Vec<AlertView> = g
                    .members
                    .iter()
                    .filter_map(|k| Some((k, self.state.alerts.get(k)?)))
                    .filter(|(_, a)| keep(&g.squad, &a.labels))
                    .map(|(k, a)| {
                        // What its group's next flush will find (silences and
                        // sources may have changed since it was admitted).
                        let owner = Owner {
                            squad,
                            core: a.core,
                        };
                        let (silenced_by, inhibited_by) =
                            match self.silenced_or_inhibited(*k, &a.labels, owner, now) {
                                Some(Fate::Silenced { silence, .. }) => (Some(silence), None),
                                Some(Fate::Inhibited { rule }) => (None, Some(rule)),
                                _ => (None, None),
                            };
                        AlertView {
                            fingerprint: a.fingerprint,
                            status: a.status(now),
                            labels: a.labels.clone(),
                            annotations: a.annotations.clone(),
                            starts_at: a.starts_at,
                            ends_at: a.ends_at,
                            generator_url: a.generator_url.clone(),
                            notified: a.notified,
                            core: a.core,
                            silenced_by,
                            inhibited_by,
                        }
                    })
                    .collect();
                (!alerts.is_empty()).then(|| GroupView {
                    key: g.key.clone(),
                    squad: g.squad.clone(),
                    labels: g.labels.clone(),
                    next_flush: g.next_flush,
                    last_notified: g.last_notified,
                    alerts,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// When [`Engine::tick`] next has work to do.
    pub fn next_deadline(&self) -> Option<Ts> {
        self.state.timers.first().map(|(t, _)| *t)
    }

    /// Decides what to do with one valid input alert received at `now`.
    /// Its fate is written to `out` now, or at the flush of its group.
    pub fn receive(&mut self, input: InputId, alert: &Alert<'_>, now: Ts, out: &mut Outputs) {
        let marks = Marks::of(out);
        self.decide(input, alert, now, out);
        self.tally(out, marks, now);
    }

    fn decide(&mut self, input: InputId, alert: &Alert<'_>, now: Ts, out: &mut Outputs) {
        let key = AlertKey::of(&alert.labels, &mut self.scratch);
        let status = alert.status_at(now);
        if !self.rules.inhibit_rules.is_empty() {
            self.update_sources(key, &alert.labels, alert.ends_at, status, now);
        }

        if let Some(d) = self.dirty.as_mut() {
            if self.state.alerts.contains_key(&key) {
                d.alerts.insert(key);
            }
            // Any flap history this alert has may change below (a new one is marked where made).
            if self.state.flaps.contains_key(&key) {
                d.flaps.insert(key);
            }
        }
        if let Some(stored) = self.state.alerts.get_mut(&key) {
            let squad = self.group_squad[stored.group as usize];
            let before = stored.status(now);
            match status {
                Status::Firing => {
                    stored.resolved = false;
                    stored.ends_at = firing_until(alert.ends_at, now, self.rules.resolve_timeout);
                }
                Status::Resolved => {
                    stored.resolved = true;
                    stored.ends_at = stored.ends_at.min(alert.ends_at.unwrap_or(now));
                }
            }
            if !stored.annotations.same_as(&alert.annotations) {
                stored.annotations = LabelSet::from_labels(&alert.annotations);
            }
            let fate = if before == status {
                if is_flapping(&self.state.flaps, &key) {
                    Some(Fate::Flapping)
                } else {
                    Some(Fate::Deduplicated)
                }
            } else {
                if let Some(d) = self.dirty.as_mut() {
                    d.flaps.insert(key);
                }
                if record_change(&mut self.state.flaps, key, now, self.rules.flap.as_ref()) {
                    Some(Fate::Flapping)
                } else {
                    stored.pending.push(input);
                    None
                }
            };
            if let Some(fate) = fate {
                out.fates.push(FateRecord {
                    input,
                    squad,
                    fingerprint: Some(stored.fingerprint),
                    fate,
                });
            }
            return;
        }

        let owner = self.rules.owner(&alert.labels);
        let record = |fate| FateRecord {
            input,
            squad: owner.squad,
            fingerprint: None,
            fate,
        };
        let digest = match self.impact(&alert.labels, owner, now) {
            Impact::Suppress(fate) => {
                out.fates.push(record(fate));
                return;
            }
            Impact::Digest(rule) => Some(rule),
            Impact::Page => None,
        };
        if status == Status::Resolved {
            // Nothing to resolve: it was never notified firing (or was already resolved).
            out.fates.push(record(Fate::Deduplicated));
            return;
        }
        if let Some(fate) = self.silenced_or_inhibited(key, &alert.labels, owner, now) {
            out.fates.push(record(fate));
            return;
        }
        if let Some(limit) = self.over_limit(owner) {
            out.fates.push(record(Fate::Shed { limit }));
            return;
        }
        // A fingerprint with flap history resolved before: this firing is a change too.
        let flapping = self.state.flaps.contains_key(&key)
            && record_change(&mut self.state.flaps, key, now, self.rules.flap.as_ref());
        if flapping {
            out.fates.push(record(Fate::Flapping));
        }
        let group = self.group_for(&alert.labels, owner.squad, input, now, digest);
        let g = self.state.groups[group as usize]
            .as_mut()
            .expect("live group");
        if g.joins == u32::MAX {
            // Once in four billion admissions: number the members afresh.
            for (n, k) in g.members.iter().enumerate() {
                if let Some(a) = self.state.alerts.get_mut(k) {
                    a.join = n as u32;
                    if let Some(d) = self.dirty.as_mut() {
                        d.alerts.insert(*k);
                    }
                }
            }
            g.joins = g.members.len() as u32;
        }
        let join = g.joins;
        g.joins += 1;
        g.members.push(key);
        self.squad_alerts[owner.squad as usize] += 1;
        let group_key = g.key.clone();
        self.mark_group(&group_key);
        self.mark_alert(key);
        self.state.alerts.insert(
            key,
            Box::new(StoredAlert {
                fingerprint: alert.fingerprint(),
                labels: LabelSet::from_labels(&alert.labels),
                annotations: LabelSet::from_labels(&alert.annotations),
                generator_url: alert.generator_url.as_deref().map(Into::into),
                starts_at: alert.starts_at.unwrap_or(now),
                ends_at: firing_until(alert.ends_at, now, self.rules.resolve_timeout),
                resolved: false,
                notified: None,
                group,
                core: owner.core,
                join,
                pending: if flapping { Vec::new() } else { vec![input] },
            }),
        );
    }

    /// The limit a new alert of `owner` would exceed, if any. A core service's
    /// alert may use the last tenth of `max_active_alerts`; others may not.
    fn over_limit(&self, owner: Owner) -> Option<Limit> {
        let limits = self.rules.limits;
        let active = self.state.alerts.len();
        if limits.max_active_alerts > 0 {
            let cap = if owner.core {
                limits.max_active_alerts
            } else {
                limits.max_active_alerts - limits.max_active_alerts / 10
            };
            if active >= cap {
                return Some(Limit::MaxActiveAlerts);
            }
        }
        let squad = self
            .squad_alerts
            .get(owner.squad as usize)
            .copied()
            .unwrap_or(0);
        if limits.max_active_alerts_per_squad > 0
            && !owner.core
            && squad >= limits.max_active_alerts_per_squad
        {
            return Some(Limit::MaxActiveAlertsPerSquad);
        }
        None
    }

    /// Runs every timer due at or before `to`, in order, each at its own time
    /// (virtual-time drivers: replay, rule tests). Outputs accumulate in `out`.
    pub fn advance_to(&mut self, to: Ts, out: &mut Outputs) {
        while let Some(due) = self.next_deadline().filter(|d| *d <= to) {
            self.tick(due, out);
        }
    }

    /// [`Engine::tick`] when a timer is due by `now` (wall-clock drivers: the
    /// pipeline); says whether it ran.
    pub fn tick_if_due(&mut self, now: Ts, out: &mut Outputs) -> bool {
        let due = self.next_deadline().is_some_and(|d| d <= now);
        if due {
            self.tick(now, out);
        }
        due
    }

    /// Advances time to `now`: flushes every group due, emits storm summaries.
    pub fn tick(&mut self, now: Ts, out: &mut Outputs) {
        let mut marks = Marks::of(out);
        while let Some((due, _)) = self.state.timers.first() {
            if *due > now {
                break;
            }
            let (due, timer) = self.state.timers.pop_first().expect("non-empty");
            match timer {
                Timer::Flush { group, .. } => self.flush(group, now, out),
                Timer::StormSummary(squad) => self.storm_summary(&squad, due, out),
                Timer::Handover(squad) => {
                    // What this tick decided so far belongs to the closing shift.
                    self.tally(out, marks, now);
                    self.handover(&squad, due, out);
                    marks = Marks::of(out);
                }
            }
        }
        self.tally(out, marks, now);
        if now >= self.state.last_sweep.plus(SWEEP_EVERY) {
            self.sweep_sources(now);
            self.sweep_flaps(now);
            self.state.last_sweep = now;
        }
    }

    /// Finds or creates the group for a new alert.
    fn group_for(
        &mut self,
        labels: &impl Labels,
        squad: SquadId,
        input: InputId,
        now: Ts,
        digest: Option<Arc<str>>,
    ) -> GroupId {
        let (group_labels, key) = self.rules.group_of(squad, labels);
        let sq = &self.rules.squads[squad as usize];
        // A digest group never mixes with the page group of the same labels.
        let key: Arc<str> = match digest {
            Some(_) => format!("{}:digest:{}", sq.name, group_labels).into(),
            None => key.into(),
        };
        if let Some(&id) = self.group_index.get(&key) {
            return id;
        }
        let due = now.plus(sq.grouping.group_wait);
        let group = Group {
            key: key.clone(),
            squad: sq.name.clone(),
            labels: group_labels,
            members: Vec::new(),
            joins: 0,
            next_flush: due,
            last_notified: None,
            changed_at: None,
            origin: input,
            sequence: 0,
            digest,
        };
        let id = match self.state.free_groups.pop() {
            Some(id) => {
                self.state.groups[id as usize] = Some(group);
                self.group_squad[id as usize] = squad;
                id
            }
            None => {
                self.state.groups.push(Some(group));
                self.group_squad.push(squad);
                (self.state.groups.len() - 1) as GroupId
            }
        };
        self.group_index.insert(key, id);
        let timer = Timer::flush(
            self.state.groups[id as usize].as_ref().expect("just set"),
            id,
        );
        self.state.timers.insert((due, timer));
        id
    }

    fn interval_active(&self, i: usize, now: Ts) -> bool {
        let minute = now.millis().div_euclid(60_000);
        let cell = &self.interval_cache[i];
        let (m, active) = cell.get();
        if m == minute {
            return active;
        }
        let active = self.rules.interval_active(i, now);
        cell.set((minute, active));
        active
    }

    /// The first impact rule that applies decides; `keep` stops the search.
    /// A drop or digest rule never applies to a core service's alert unless it
    /// says `applies_to_core`: the search goes on.
    fn impact(&self, labels: &impl Labels, owner: Owner, now: Ts) -> Impact {
        self.rules
            .impact_rule(labels, owner.squad, |r| {
                if (!r.squads.is_empty() && !r.squads.contains(&owner.squad))
                    || (!r.intervals.is_empty()
                        && !r.intervals.iter().any(|&i| self.interval_active(i, now)))
                {
                    return None;
                }
                match r.action {
                    Action::Keep => Some(Impact::Page),
                    Action::Drop | Action::Digest if owner.core && !r.applies_to_core => {
                        self.core_protected.set(self.core_protected.get() + 1);
                        None
                    }
                    Action::Drop => Some(Impact::Suppress(Fate::Dropped {
                        rule: r.name.clone(),
                    })),
                    Action::Digest => Some(Impact::Digest(r.name.clone())),
                }
            })
            .unwrap_or(Impact::Page)
    }

    fn silenced_or_inhibited(
        &self,
        key: AlertKey,
        labels: &impl Labels,
        owner: Owner,
        now: Ts,
    ) -> Option<Fate> {
        if let Some(s) = self.rules.silence_of(labels, now) {
            return Some(Fate::Silenced {
                silence: s.id.clone(),
                runtime: false,
            });
        }
        if let Some(s) = self.controls.silenced_by(labels, now) {
            return Some(Fate::Silenced {
                silence: s.id.clone(),
                runtime: true,
            });
        }
        self.rules.inhibiting_rule(labels, owner.squad, |i, r| {
            let (_, sources) = self.state.sources.get(i)?;
            let equal = equal_key(&r.equal, labels);
            let table = self
                .shared
                .as_ref()
                .map(|(t, _)| &**t)
                .zip(self.rule_ids.get(i));
            let live = |(n, idx): (usize, &SourceIndex)| {
                idx.by_key
                    .get(equal.as_str())
                    .is_some_and(|v| v.iter().any(|&(src, until)| src != key && until > now))
                    || table.is_some_and(|(t, id)| {
                        t.live(&sources::table_key(id, n as u32, &equal), key, now)
                    })
            };
            sources
                .iter()
                .enumerate()
                .all(live)
                .then(|| Fate::Inhibited {
                    rule: r.name.clone(),
                })
        })
    }

    /// Records a firing alert as a potential inhibition source (or forgets a resolved one).
    fn update_sources(
        &mut self,
        key: AlertKey,
        labels: &impl Labels,
        ends_at: Option<Ts>,
        status: Status,
        now: Ts,
    ) {
        for (rule, entry) in source_entries(&self.rules, key, labels, ends_at, status, now) {
            self.apply_source(rule, &entry);
        }
    }

    fn apply_source(&mut self, rule: usize, e: &SourceEntry) {
        let Some(idx) = self
            .state
            .sources
            .get_mut(rule)
            .and_then(|(_, idx)| idx.get_mut(e.source as usize))
        else {
            return;
        };
        if let Some(d) = self.dirty.as_mut() {
            d.sources.insert((
                e.rule.clone(),
                self.rule_ids[rule].clone(),
                e.source,
                e.equal.clone(),
            ));
        }
        match e.until {
            Some(until) => {
                // A resend finds its key: no copy of it is made for the lookup.
                let entries = match idx.by_key.get_mut(&e.equal) {
                    Some(entries) => entries,
                    None => idx.by_key.entry(e.equal.clone()).or_default(),
                };
                match entries.iter_mut().find(|(f, _)| *f == e.key) {
                    Some(x) => x.1 = until,
                    None => {
                        // Usually one source per key: do not over-allocate.
                        entries.reserve_exact(1);
                        entries.push((e.key, until));
                    }
                }
            }
            None => {
                if let Some(entries) = idx.by_key.get_mut(&e.equal) {
                    entries.retain(|(f, _)| *f != e.key);
                    if entries.is_empty() {
                        idx.by_key.remove(&e.equal);
                    }
                }
            }
        }
        if let Some((table, p)) = &self.shared {
            let list = idx.by_key.get(&e.equal).cloned().unwrap_or_default();
            let key = sources::table_key(&self.rule_ids[rule], e.source, &e.equal);
            table.set(*p, &key, list);
        }
    }

    /// Forgets flap history that has been calm for a whole window.
    fn sweep_flaps(&mut self, now: Ts) {
        let Some(cfg) = self.rules.flap else {
            self.state.flaps.clear();
            return;
        };
        let alerts = &self.state.alerts;
        let dirty = &mut self.dirty;
        self.state.flaps.retain(|key, f| {
            let calm = f.changes.back().is_none_or(|&t| now.since(t) >= cfg.window);
            // A flapping alert still stored is cleared at its group's flush.
            let keep = !(calm && !(f.flapping && alerts.contains_key(key)));
            if !keep {
                if let Some(d) = dirty.as_mut() {
                    d.flaps.insert(*key);
                }
            }
            keep
        });
    }

    fn sweep_sources(&mut self, now: Ts) {
        for ((rule, sources), id) in self.state.sources.iter_mut().zip(&self.rule_ids) {
            for (n, idx) in sources.iter_mut().enumerate() {
                idx.by_key.retain(|equal, v| {
                    let before = v.len();
                    v.retain(|&(_, until)| until > now);
                    if v.len() != before {
                        if let Some(d) = self.dirty.as_mut() {
                            d.sources
                                .insert((rule.clone(), id.clone(), n as u32, equal.clone()));
                        }
                        if let Some((table, p)) = &self.shared {
                            table.set(*p, &sources::table_key(id, n as u32, equal), v.clone());
                        }
                    }
                    !v.is_empty()
                });
            }
        }
    }

    fn flush(&mut self, gid: GroupId, now: Ts, out: &mut Outputs) {
        let Some(mut group) = self.state.groups[gid as usize].take() else {
            return;
        };
        if let Some(d) = self.dirty.as_mut() {
            d.groups.insert(group.key.clone());
        }
        // Members whose record (alert, flap history) this flush changes: a
        // member that changed nothing is not written again.
        let mut touched = Touched::new(self.dirty.is_some());
        let squad = self.group_squad[gid as usize];
        let flap_window = self.rules.flap.map(|f| f.window);
        let mut changed = false;
        let mut included: Vec<AlertKey> = Vec::new();
        let mut members = std::mem::take(&mut group.members);
        let members_before = members.len();
        members.retain(|key| {
            let Some(a) = self.state.alerts.get(key) else {
                return false;
            };
            let owner = Owner {
                squad,
                core: a.core,
            };
            // Whether it pages or goes to the digest was decided on admission:
            // its group says. Only a drop can end it here.
            let suppressed = match self.impact(&a.labels, owner, now) {
                Impact::Suppress(f) => Some(f),
                _ => self.silenced_or_inhibited(*key, &a.labels, owner, now),
            };
            let a = self.state.alerts.get_mut(key).expect("checked above");
            if let Some(fate) = suppressed {
                touched.alert(*key);
                for input in std::mem::take(&mut a.pending) {
                    out.fates.push(FateRecord {
                        input,
                        squad,
                        fingerprint: Some(a.fingerprint),
                        fate: fate.clone(),
                    });
                }
                self.state.alerts.remove(key);
                return false;
            }
            if let (Some(f), Some(window)) = (self.state.flaps.get_mut(key), flap_window) {
                if f.flapping && f.changes.back().is_none_or(|&t| now.since(t) >= window) {
                    // Calm for a whole window: no longer flapping; its state is notified normally.
                    touched.flap(*key);
                    f.flapping = false;
                    f.announced = false;
                    f.changes.clear();
                }
            }
            let status = a.status(now);
            if let Some(f) = self.state.flaps.get(key).filter(|f| f.flapping) {
                if !f.announced {
                    changed = true;
                }
                included.push(*key);
                return true;
            }
            if a.notified != Some(status) {
                if status == Status::Resolved && a.notified.is_none() {
                    // Resolved before anyone heard of it: nothing to tell.
                    touched.alert(*key);
                    for input in std::mem::take(&mut a.pending) {
                        out.fates.push(FateRecord {
                            input,
                            squad,
                            fingerprint: Some(a.fingerprint),
                            fate: Fate::Deduplicated,
                        });
                    }
                    self.state.alerts.remove(key);
                    return false;
                }
                changed = true;
            }
            if status == Status::Firing || a.notified == Some(Status::Firing) {
                included.push(*key);
            }
            true
        });
        group.members = members;

        let any_firing = included
            .iter()
            .any(|key| self.state.alerts[key].status(now) == Status::Firing);
        let grouping = &self.rules.squads[squad as usize].grouping;
        let reason = match group.last_notified {
            None if any_firing => Some(NotifyReason::NewGroup),
            None => None,
            Some(_) if changed && !any_firing => Some(NotifyReason::Resolved),
            Some(_) if changed => Some(NotifyReason::GroupChanged),
            // An acknowledged group repeats nothing until it changes.
            // A digest has no repeats: the handover says what still fires.
            Some(last)
                if any_firing
                    && group.digest.is_none()
                    && now.since(last) >= grouping.repeat_interval
                    && !self.acknowledged(&group) =>
            {
                Some(NotifyReason::Repeat)
            }
            Some(_) => None,
        };
        let group_interval = grouping.group_interval;

        if let Some(reason) = reason.filter(|_| !included.is_empty()) {
            let core = included.iter().any(|key| self.state.alerts[key].core);
            let mut delivery = None;
            let fate = if let Some(rule) = group.digest.clone() {
                group.sequence += 1;
                let n = self.notification(&group, squad, reason, core, &included, now);
                out.digests
                    .push((squad, DigestUpdate::of(&n, rule.clone())));
                Fate::Digested { rule }
            } else if self.routes_storms(squad) {
                // The engine of the squad's storm window decides, and gives the
                // inputs their fates: `deliver`.
                group.sequence += 1;
                delivery = Some(self.notification(&group, squad, reason, core, &included, now));
                Fate::Notified
            } else if self.storm_allows(squad, core, &group.key, included.len() as u32, now) {
                group.sequence += 1;
                out.notifications
                    .push(self.notification(&group, squad, reason, core, &included, now));
                Fate::Notified
            } else {
                Fate::Throttled
            };
            let mut delivered = Vec::new();
            for key in &included {
                let a = self
                    .state
                    .alerts
                    .get_mut(key)
                    .expect("included alerts are stored");
                let status = a.status(now);
                if a.notified != Some(status) || !a.pending.is_empty() {
                    touched.alert(*key);
                }
                a.notified = Some(status);
                if let Some(f) = self.state.flaps.get_mut(key).filter(|f| f.flapping) {
                    if !f.announced {
                        touched.flap(*key);
                    }
                    f.announced = true;
                }
                for input in std::mem::take(&mut a.pending) {
                    if delivery.is_some() {
                        delivered.push((input, a.fingerprint));
                        continue;
                    }
                    out.fates.push(FateRecord {
                        input,
                        squad,
                        fingerprint: Some(a.fingerprint),
                        fate: fate.clone(),
                    });
                }
            }
            if let Some(n) = delivery {
                out.deliveries.extend(DeliveryPart::split(n, delivered));
            }
            group.last_notified = Some(now);
            if reason != NotifyReason::Repeat {
                group.changed_at = Some(now);
            }
        }

        // Inputs still pending changed nothing that needed telling (e.g. a flip and back).
        // Resolved alerts that have been notified are forgotten.
        group.members.retain(|key| {
            let a = self.state.alerts.get_mut(key).expect("members are stored");
            if !a.pending.is_empty() {
                touched.alert(*key);
            }
            for input in std::mem::take(&mut a.pending) {
                out.fates.push(FateRecord {
                    input,
                    squad,
                    fingerprint: Some(a.fingerprint),
                    fate: Fate::Deduplicated,
                });
            }
            if a.status(now) == Status::Resolved
                && a.notified == Some(Status::Resolved)
                && !is_flapping(&self.state.flaps, key)
            {
                touched.alert(*key);
                self.state.alerts.remove(key);
                return false;
            }
            true
        });
        if let Some(d) = self.dirty.as_mut() {
            d.alerts.extend(touched.alerts);
            d.flaps.extend(touched.flaps);
        }

        if let Some(n) = self.squad_alerts.get_mut(squad as usize) {
            *n = n.saturating_sub(members_before - group.members.len());
        }
        if group.members.is_empty() {
            self.group_index.remove(&group.key);
            self.state.free_groups.push(gid);
        } else {
            group.next_flush = now.plus(group_interval);
            self.state
                .timers
                .insert((group.next_flush, Timer::flush(&group, gid)));
            self.state.groups[gid as usize] = Some(group);
        }
    }

    /// Whether the group's latest acknowledgement came after its latest change
    /// was notified (an acknowledgement covers what the goalkeeper has seen).
    fn acknowledged(&self, group: &Group) -> bool {
        self.controls
            .ack(&group.key)
            .is_some_and(|a| group.changed_at.is_none_or(|c| a.at >= c))
    }

    fn notification(
        &self,
        group: &Group,
        squad: SquadId,
        reason: NotifyReason,
        core: bool,
        included: &[AlertKey],
        now: Ts,
    ) -> Notification {
        let alerts: Vec<NotifiedAlert> = included
            .iter()
            .map(|key| {
                let a = &self.state.alerts[key];
                let status = a.status(now);
                NotifiedAlert {
                    fingerprint: a.fingerprint,
                    status,
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.starts_at,
                    ends_at: (status == Status::Resolved).then_some(a.ends_at.min(now)),
                    generator_url: a.generator_url.clone(),
                    flapping: is_flapping(&self.state.flaps, key),
                }
            })
            .collect();
        let status = if alerts.iter().any(|a| a.status == Status::Firing) {
            Status::Firing
        } else {
            Status::Resolved
        };
        let sq = &self.rules.squads[squad as usize];
        Notification {
            id: notification_id(&group.key, group.origin, group.sequence),
            at: now,
            squad: sq.name.clone(),
            goalkeeper: self.goalkeeper(squad, now),
            acknowledged: self.controls.ack(&group.key).cloned(),
            group_key: group.key.clone(),
            group_labels: group.labels.clone(),
            status,
            reason,
            core,
            alerts,
            folded: None,
            report: None,
            omitted: 0,
        }
    }

    /// Whether this squad's notifications go to the engine that keeps its storm
    /// window instead of being counted here: a storm limit is per squad, and a
    /// squad's groups are decided by many engines ([`ShiftMode::Routed`]).
    fn routes_storms(&self, squad: SquadId) -> bool {
        self.shift_mode == ShiftMode::Routed && self.rules.squads[squad as usize].storm.is_some()
    }

    /// Decides a routed notification against its squad's storm window, kept
    /// by this engine: sends it or folds it into the window's summary, and
    /// gives its inputs their fates (`notified` or `throttled`). Later parts
    /// of a notification get the fate its first part got. A squad the rules
    /// no longer have is the fallback squad's; a squad without a storm limit
    /// now is sent.
    pub fn deliver(&mut self, part: DeliveryPart, now: Ts, out: &mut Outputs) {
        let marks = Marks::of(out);
        let squad = self
            .rules
            .squad_by_name(&part.squad)
            .unwrap_or(self.rules.fallback);
        // The window the decision is counted in: the fallback's, for a squad
        // the rules no longer have.
        let window = self.rules.squads[squad as usize].name.clone();
        let throttled = match part.notification {
            Some(n) => {
                let allowed =
                    self.storm_allows(squad, n.core, &n.group_key, n.alert_count() as u32, now);
                if allowed {
                    out.notifications.push(n);
                } else if part.more {
                    let w = self.state.storms.entry(window).or_default();
                    if w.folding.len() >= MAX_FOLDING {
                        w.folding.remove(0);
                    }
                    w.folding.push(part.id.clone());
                }
                !allowed
            }
            None => {
                let w = self.state.storms.get_mut(&window);
                let found = w.and_then(|w| {
                    let i = w.folding.iter().position(|id| *id == part.id)?;
                    if !part.more {
                        w.folding.remove(i);
                    }
                    Some(())
                });
                if let Some(d) = self.dirty.as_mut().filter(|_| found.is_some()) {
                    d.storms.insert(window);
                }
                found.is_some()
            }
        };
        let fate = if throttled {
            Fate::Throttled
        } else {
            Fate::Notified
        };
        for (input, fingerprint) in part.inputs {
            out.fates.push(FateRecord {
                input,
                squad,
                fingerprint: Some(fingerprint),
                fate: fate.clone(),
            });
        }
        self.tally(out, marks, now);
    }

    /// Counts a notification against the squad's storm limit. Groups with a core
    /// service's alert are counted but never folded.
    fn storm_allows(
        &mut self,
        squad: SquadId,
        core: bool,
        key: &Arc<str>,
        alerts: u32,
        now: Ts,
    ) -> bool {
        let sq = &self.rules.squads[squad as usize];
        let Some(limit) = sq.storm else { return true };
        if let Some(d) = self.dirty.as_mut() {
            d.storms.insert(sq.name.clone());
        }
        let w = self.state.storms.entry(sq.name.clone()).or_default();
        if now >= w.start.plus(limit.interval) {
            // What was folded stays until its summary timer fires (summaries sort
            // before flushes at the same instant, so normally it already has).
            w.start = now;
            w.sent = 0;
        }
        w.sent += 1;
        if core || w.sent <= limit.max_notifications {
            return true;
        }
        if w.folded.notifications == 0 {
            self.state.timers.insert((
                w.start.plus(limit.interval),
                Timer::StormSummary(sq.name.clone()),
            ));
        }
        w.folded.notifications += 1;
        w.folded.alerts += alerts;
        if w.folded.groups.len() < 10 {
            w.folded.groups.push(key.clone());
        }
        false
    }

    fn storm_summary(&mut self, squad_name: &Arc<str>, now: Ts, out: &mut Outputs) {
        let Some(w) = self.state.storms.get_mut(squad_name) else {
            return;
        };
        if let Some(d) = self.dirty.as_mut() {
            d.storms.insert(squad_name.clone());
        }
        let folded = std::mem::take(&mut w.folded);
        if folded.notifications == 0 {
            return;
        }
        let squad = self
            .rules
            .squad_by_name(squad_name)
            .unwrap_or(self.rules.fallback);
        let sq = &self.rules.squads[squad as usize];
        out.notifications.push(Notification {
            id: format!("{}:storm-summary:{}", sq.name, now.millis()).into(),
            at: now,
            squad: sq.name.clone(),
            goalkeeper: self.goalkeeper(squad, now),
            acknowledged: None,
            group_key: format!("{}:storm-summary", sq.name).into(),
            group_labels: LabelSet::default(),
            status: Status::Firing,
            reason: NotifyReason::StormSummary,
            core: false,
            alerts: Vec::new(),
            folded: Some(folded),
            report: None,
            omitted: 0,
        });
    }

    /// Where this engine's shift notes go (off by default).
    pub fn set_shift_mode(&mut self, mode: ShiftMode) {
        self.settle();
        self.shift_mode = mode;
    }

    /// The notes of what was decided since the last call, one per squad and
    /// step, for the driver to deliver to the engine keeping each squad's
    /// book ([`ShiftMode::Routed`]; empty otherwise).
    pub fn take_shift_notes(&mut self) -> Vec<ShiftNote> {
        self.settle();
        std::mem::take(&mut self.routed)
            .into_iter()
            .flat_map(ShiftNote::split)
            .collect()
    }

    /// The current shift books (squad name, book).
    pub fn shift_books(&self) -> impl Iterator<Item = (&Arc<str>, &Book)> {
        self.state.shifts.iter()
    }

    /// The handover report each book this engine keeps would make if its
    /// shift ended at `now` (the shift so far), with when the shift ends.
    /// `squad` filters by name.
    pub fn shift_previews(&self, squad: Option<&str>, now: Ts) -> Vec<ShiftPreview> {
        self.state
            .shifts
            .iter()
            .filter(|(name, _)| squad.is_none_or(|s| s == &***name))
            .filter_map(|(name, book)| {
                let sid = self.rules.squad_by_name(name)?;
                let ctx = self.handover_context(sid, book.start, book.end);
                let next_end = self.shift_bounds(sid, book.end).1;
                let (report, _) = book.clone().close(&ctx, now.min(book.end), next_end);
                Some(ShiftPreview {
                    squad: name.clone(),
                    handover_at: book.end,
                    report,
                })
            })
            .collect()
    }

    /// Adds a note to its squad's book, opening the book (and the handover
    /// timer) if this is the shift's first. Notes of squads the rules do
    /// not have are ignored.
    pub fn observe_shift(&mut self, note: &ShiftNote) {
        if let Some(sid) = self.rules.squad_by_name(&note.squad) {
            self.observe_shift_of(sid, note);
        }
    }

    /// [`Engine::observe_shift`] for squad `sid` of these rules, the note's squad.
    fn observe_shift_of(&mut self, sid: SquadId, note: &ShiftNote) {
        if let Some(d) = self.dirty.as_mut() {
            d.shifts.insert(note.squad.clone());
        }
        if let Some(book) = self.state.shifts.get_mut(&note.squad) {
            book.observe(note);
            return;
        }
        let (start, end) = self.shift_bounds(sid, note.at);
        self.state
            .timers
            .insert((end, Timer::Handover(note.squad.clone())));
        let mut book = Book::new(start, end);
        book.observe(note);
        self.state.shifts.insert(note.squad.clone(), book);
    }

    /// The shift `at` falls in: handover to handover in the goalkeeper's time
    /// zone, or the UTC day for a squad without a goalkeeper.
    fn shift_bounds(&self, squad: SquadId, at: Ts) -> (Ts, Ts) {
        const DAY: i64 = 86_400_000;
        self.rules.squads[squad as usize]
            .goalkeeper
            .as_ref()
            .and_then(|g| g.shift_at(at))
            .map(|s| (s.start, s.end))
            .unwrap_or_else(|| {
                let start = at.millis().div_euclid(DAY) * DAY;
                (Ts(start), Ts(start + DAY))
            })
    }

    /// What closing squad `sid`'s book needs besides the book: who hands over
    /// at `start`'s shift's end (`handover`), to whom, and the budget.
    fn handover_context(&self, sid: SquadId, start: Ts, handover: Ts) -> shift::Handover<'_> {
        shift::Handover {
            controls: &self.controls,
            rule_silences: &self.rules.silences,
            outgoing: self.goalkeeper(sid, start),
            incoming: self.goalkeeper(sid, handover),
            page_budget: self.rules.squads[sid as usize].shift.page_budget,
        }
    }

    /// Closes a squad's book at its handover `at`: the report goes out as a
    /// notification to the incoming goalkeeper; what still fires opens the
    /// next shift's book.
    fn handover(&mut self, squad: &Arc<str>, at: Ts, out: &mut Outputs) {
        let Some(book) = self.state.shifts.remove(squad) else {
            return;
        };
        if let Some(d) = self.dirty.as_mut() {
            d.shifts.insert(squad.clone());
        }
        // A squad the rules no longer have: its book ends unreported.
        let Some(sid) = self.rules.squad_by_name(squad) else {
            return;
        };
        let (_, next_end) = self.shift_bounds(sid, at);
        let ctx = self.handover_context(sid, book.start, at);
        let incoming = ctx.incoming.clone();
        let (report, next) = book.close(&ctx, at, next_end);
        out.notifications.push(Notification {
            id: format!("{squad}:handover:{}", at.millis()).into(),
            at,
            squad: squad.clone(),
            goalkeeper: incoming,
            acknowledged: None,
            group_key: format!("{squad}:handover").into(),
            group_labels: LabelSet::default(),
            status: Status::Firing,
            reason: NotifyReason::Handover,
            core: false,
            alerts: Vec::new(),
            folded: None,
            report: Some(Box::new(report)),
            omitted: 0,
        });
        if let Some(next) = next {
            self.state
                .timers
                .insert((next.end, Timer::Handover(squad.clone())));
            self.state.shifts.insert(squad.clone(), next);
        }
    }

    /// Tallies what was written to `out` since `from` into per-squad notes.
    fn tally(&mut self, out: &Outputs, from: Marks, now: Ts) {
        if self.shift_mode == ShiftMode::Off {
            return;
        }
        for f in &out.fates[from.fates..] {
            let Some(note) = self.note(f.squad, now) else {
                continue;
            };
            note.noise.count(f.fate.kind());
            if let Fate::Silenced { silence, .. } = &f.fate {
                if !note.silences.contains(silence) {
                    note.silences.push(silence.clone());
                }
            }
        }
        for n in &out.notifications[from.notifications..] {
            if n.reason == NotifyReason::Handover {
                continue;
            }
            let Some(sid) = self.rules.squad_by_name(&n.squad) else {
                continue;
            };
            let out_of_hours = self.rules.squads[sid as usize]
                .shift
                .working_hours
                .is_some_and(|i| !self.interval_active(i, n.at));
            let note = self.note(sid, now).expect("squad of these rules");
            note.noise.notifications += 1;
            if n.reason == NotifyReason::StormSummary {
                continue;
            }
            let page = Page::of(n, out_of_hours);
            if page.interrupts() {
                note.noise.pages += 1;
                note.noise.pages_out_of_hours += out_of_hours as u64;
            }
            note.pages.push(page);
        }
        for (sid, d) in &out.digests[from.digests..] {
            if let Some(note) = self.note(*sid, now) {
                note.digest.push(d.clone());
            }
        }
        if self.shift_mode == ShiftMode::Local {
            self.settle();
        }
    }

    fn note(&mut self, squad: SquadId, now: Ts) -> Option<&mut ShiftNote> {
        let i = squad as usize;
        let name = &self.rules.squads.get(i)?.name;
        if self.tally.len() <= i {
            self.tally.resize(self.rules.squads.len(), None);
        }
        let tallied = &mut self.tallied;
        Some(self.tally[i].get_or_insert_with(|| {
            tallied.push(squad);
            ShiftNote {
                squad: name.clone(),
                at: now,
                ..ShiftNote::default()
            }
        }))
    }

    /// Moves the tally into books (local) or out to the driver (routed).
    fn settle(&mut self) {
        let mut tallied = std::mem::take(&mut self.tallied);
        // In squad order, as the notes always went.
        tallied.sort_unstable();
        for &i in &tallied {
            let Some(n) = self.tally[i as usize].take().filter(|n| !n.is_empty()) else {
                continue;
            };
            match self.shift_mode {
                ShiftMode::Off => {}
                ShiftMode::Local => self.observe_shift_of(i, &n),
                ShiftMode::Routed => self.routed.push(n),
            }
        }
        tallied.clear();
        self.tallied = tallied;
    }
}

/// How far `Outputs` was written when a step began.
#[derive(Clone, Copy)]
struct Marks {
    fates: usize,
    notifications: usize,
    digests: usize,
}

impl Marks {
    fn of(out: &Outputs) -> Marks {
        Marks {
            fates: out.fates.len(),
            notifications: out.notifications.len(),
            digests: out.digests.len(),
        }
    }
}

/// A squad's current shift as the API shows it: the report so far.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShiftPreview {
    pub squad: Arc<str>,
    /// When the shift ends and the report goes out.
    pub handover_at: Ts,
    /// What the report would say if the shift ended now.
    pub report: HandoverReport,
}

/// A group as the status API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupView {
    pub key: Arc<str>,
    pub squad: Arc<str>,
    pub labels: LabelSet,
    pub next_flush: Ts,
    pub last_notified: Option<Ts>,
    pub alerts: Vec<AlertView>,
}

/// Keys whose records a flush changed, collected only while changes are
/// tracked (replay and tests pay nothing).
struct Touched {
    on: bool,
    alerts: Vec<AlertKey>,
    flaps: Vec<AlertKey>,
}

impl Touched {
    fn new(on: bool) -> Touched {
        Touched {
            on,
            alerts: Vec::new(),
            flaps: Vec::new(),
        }
    }

    fn alert(&mut self, key: AlertKey) {
        if self.on {
            self.alerts.push(key);
        }
    }

    fn flap(&mut self, key: AlertKey) {
        if self.on {
            self.flaps.push(key);
        }
    }
}

/// An alert the engine remembers, as the status API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertView {
    pub fingerprint: crate::model::Fingerprint,
    pub status: Status,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: Ts,
    pub ends_at: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<Box<str>>,
    /// What the last notification said about it.
    pub notified: Option<Status>,
    pub core: bool,
    /// The silence that covers it now: its group's next flush removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<Arc<str>>,
    /// The inhibit rule that holds it now, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inhibited_by: Option<Arc<str>>,
}

fn is_flapping(flaps: &state::KeyMap<FlapState>, key: &AlertKey) -> bool {
    flaps.get(key).is_some_and(|f| f.flapping)
}

/// Records a state change for flap detection; returns whether the alert is now flapping.
fn record_change(
    flaps: &mut state::KeyMap<FlapState>,
    key: AlertKey,
    now: Ts,
    flap: Option<&crate::rules::FlapConfig>,
) -> bool {
    let Some(cfg) = flap else { return false };
    let f = flaps.entry(key).or_default();
    f.changes.push_back(now);
    while f
        .changes
        .front()
        .is_some_and(|&t| now.since(t) > cfg.window)
    {
        f.changes.pop_front();
    }
    while f.changes.len() > cfg.max_changes as usize + 1 {
        f.changes.pop_front();
    }
    if f.changes.len() > cfg.max_changes as usize {
        f.flapping = true;
    }
    f.flapping
}

/// `<xxh3 of the group key>-<creating input>-<sequence>`: the same for the
/// same notification of the same group episode, whoever decides it.
fn notification_id(group_key: &str, origin: InputId, sequence: u64) -> Arc<str> {
    format!(
        "{:016x}-{}-{sequence}",
        xxhash_rust::xxh3::xxh3_64(group_key.as_bytes()),
        origin
    )
    .into()
}

/// When a firing alert stops firing unless resent.
fn firing_until(ends_at: Option<Ts>, now: Ts, resolve_timeout: Duration) -> Ts {
    match ends_at {
        Some(t) if t > now => t,
        _ => now.plus(resolve_timeout),
    }
}

/// One inhibit-rule source an alert matches, as its owner's source index
/// records it: `until` is when it stops firing, `None` when it resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceEntry {
    rule: Arc<str>,
    source: u32,
    equal: Box<str>,
    key: AlertKey,
    until: Option<Ts>,
}

/// The inhibition source entries of one alert under `rules`, each with the
/// index of its inhibit rule. Empty for the many alerts that are no source.
fn source_entries(
    rules: &RuleSet,
    key: AlertKey,
    labels: &impl Labels,
    ends_at: Option<Ts>,
    status: Status,
    now: Ts,
) -> Vec<(usize, SourceEntry)> {
    let mut out = Vec::new();
    rules.each_source(labels, |ri, n| {
        let r = &rules.inhibit_rules[ri];
        out.push((
            ri,
            SourceEntry {
                rule: r.name.clone(),
                source: n as u32,
                equal: equal_key(&r.equal, labels).into_boxed_str(),
                key,
                until: (status == Status::Firing)
                    .then(|| firing_until(ends_at, now, rules.resolve_timeout)),
            },
        ));
    });
    out
}

/// The values of the `equal` labels, joined: sources and targets must agree on it.
fn equal_key(equal: &[Box<str>], labels: &impl Labels) -> String {
    let mut key = String::new();
    for l in equal {
        key.push_str(labels.get(l).unwrap_or(""));
        key.push('\u{ff}');
    }
    key
}

fn display(m: &[crate::rules::Matcher]) -> Vec<String> {
    m.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests;
