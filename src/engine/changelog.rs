//! The engine's state as keyed records, for a compacted changelog (Kafka
//! Streams' state store + changelog): [`Engine::take_changes`] says which
//! records changed since it was last called (a value, or a tombstone when the
//! state behind the key ended), and [`Engine::from_changelog`] rebuilds an
//! engine from the latest record of each key. Sans-IO: bytes in, bytes out.
//!
//! Records, one per key (keys are UTF-8, values JSON):
//! - `alert/<alert key>`: a remembered alert ([`StoredAlert`]) and the key of
//!   its group: `{"group": <group key>, "alert": {..}}`, pending inputs included;
//! - `flap/<alert key>`: flap history ([`FlapState`]);
//! - `group/<group key>`: a group's timer and notification sequence, not its
//!   members: an alert joining or leaving never rewrites its group's record
//!   with every other member, so a record's size and the work per change stay
//!   independent of the group's size;
//! - `storm/<squad>`: the squad's storm window;
//! - `shift/<squad>`: the squad's current shift book (digest, pages, noise figures);
//! - `source/<rule>/<n>/<equal values>`: firing sources of an inhibit rule.
//!
//! Derived data (group ids, members, the timer set, indexes) is never written:
//! restoring rebuilds it, so a record can be applied in any order relative to
//! others. Members are put back in the order they joined (`join`).
//! A restore tolerates what a crash between records can leave (an alert whose
//! group's record never arrived, a group none of whose alerts did): such
//! alerts and groups are left out and counted.
//!
//! Records written before alerts named their group (the group listed its
//! members, the alert was bare) are read too; a restore that finds any writes
//! the whole state again in the current form ([`RestoreReport::legacy`]),
//! alerts before groups, so a crash halfway leaves a readable mix.

use super::Engine;
use super::shift::Book;
use super::state::{
    FlapState, Group, GroupId, SourceIndex, State, StoredAlert, StormWindow, Timer,
};
use crate::model::AlertKey;
use crate::rules::RuleSet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// An inhibition source key touched: see [`Dirty::sources`].
pub(super) type DirtySource = (Arc<str>, Arc<str>, u32, Box<str>);

/// Keys touched since the last [`Engine::take_changes`].
#[derive(Debug, Default)]
pub(super) struct Dirty {
    pub alerts: HashSet<AlertKey>,
    /// Flap history that may have changed (never keys that had none: no
    /// tombstones for state that never existed).
    pub flaps: HashSet<AlertKey>,
    pub groups: HashSet<Arc<str>>,
    pub storms: HashSet<Arc<str>>,
    pub shifts: HashSet<Arc<str>>,
    /// (rule name, rule id in the shared table, source index, equal-label
    /// values): the id is the one the entry was made under, so a reload that
    /// changes a rule ends the entries of its earlier form in the table.
    pub sources: HashSet<DirtySource>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.flaps.is_empty()
            && self.groups.is_empty()
            && self.storms.is_empty()
            && self.shifts.is_empty()
            && self.sources.is_empty()
    }
}

/// One changelog record: a value, or `None` for a tombstone.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// What a restore found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    /// Records read (values and tombstones).
    pub records: u64,
    /// Records that could not be parsed, skipped.
    pub malformed: u64,
    /// Alerts without their group's record, and groups left without alerts: left out.
    pub orphans: u64,
    /// Records in the earlier form (a group listing its members); when any
    /// are found, the restored engine writes its whole state again.
    pub legacy: u64,
}

/// An alert's record: the alert and its group's key (its `group` id is
/// meaningless outside the engine that wrote it).
#[derive(serde::Serialize)]
struct AlertRecord<'a> {
    group: &'a str,
    alert: &'a StoredAlert,
}

#[derive(serde::Deserialize)]
struct ReadAlert {
    group: Box<str>,
    alert: StoredAlert,
}

fn key(prefix: &str, rest: impl std::fmt::Display) -> Vec<u8> {
    format!("{prefix}/{rest}").into_bytes()
}

fn source_key(rule: &str, n: u32, equal: &str) -> Vec<u8> {
    let mut k = format!("source/{}/{n}/", escape(rule)).into_bytes();
    k.extend_from_slice(equal.as_bytes());
    k
}

fn json(v: &impl serde::Serialize) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).expect("engine state serializes"))
}

impl Engine {
    /// Starts recording which state changes, for [`Engine::take_changes`]. Off
    /// by default: replay, tests and benches pay nothing for it.
    pub fn track_changes(&mut self) {
        self.dirty.get_or_insert_with(Dirty::default);
    }

    /// Marks the whole state changed: the next [`Engine::take_changes`] writes
    /// every record again (after restoring records in an earlier form).
    fn mark_all(&mut self) {
        self.mark_all_sources();
        let Some(d) = self.dirty.as_mut() else { return };
        let s = &self.state;
        d.alerts.extend(s.alerts.keys().copied());
        d.flaps.extend(s.flaps.keys().copied());
        d.groups
            .extend(s.groups.iter().flatten().map(|g| g.key.clone()));
        d.storms.extend(s.storms.keys().cloned());
        d.shifts.extend(s.shifts.keys().cloned());
    }

    /// Whether anything changed since the last [`Engine::take_changes`].
    pub fn has_changes(&self) -> bool {
        self.dirty.as_ref().is_some_and(|d| !d.is_empty())
    }

    /// The records that changed since the last call, in a deterministic order:
    /// each key's current value, or a tombstone when its state ended.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let Some(dirty) = self.dirty.as_mut().map(std::mem::take) else {
            return Vec::new();
        };
        let s = &self.state;
        let mut out: Vec<Change> = Vec::new();
        let mut alerts: Vec<AlertKey> = dirty.alerts.into_iter().collect();
        alerts.sort();
        for k in alerts {
            let value = s.alerts.get(&k).and_then(|alert| {
                let group = s.groups[alert.group as usize].as_ref();
                // Every remembered alert belongs to a live group (its group
                // ends only after its last member); a tombstone here would
                // lose the alert on restore.
                debug_assert!(group.is_some(), "alert {k:?} of an ended group");
                json(&AlertRecord {
                    group: &group?.key,
                    alert,
                })
            });
            out.push((key("alert", k), value));
        }
        let mut flaps: Vec<AlertKey> = dirty.flaps.into_iter().collect();
        flaps.sort();
        for k in flaps {
            out.push((key("flap", k), s.flaps.get(&k).and_then(json)));
        }
        let mut groups: Vec<Arc<str>> = dirty.groups.into_iter().collect();
        groups.sort();
        for g in groups {
            let value = self
                .group_index
                .get(&g)
                .and_then(|&id| s.groups[id as usize].as_ref())
                .and_then(json);
            out.push((key("group", &g), value));
        }
        let mut storms: Vec<Arc<str>> = dirty.storms.into_iter().collect();
        storms.sort();
        for sq in storms {
            out.push((key("storm", &sq), s.storms.get(&sq).and_then(json)));
        }
        let mut shifts: Vec<Arc<str>> = dirty.shifts.into_iter().collect();
        shifts.sort();
        for sq in shifts {
            out.push((key("shift", &sq), s.shifts.get(&sq).and_then(json)));
        }
        let mut sources: Vec<_> = dirty.sources.into_iter().collect();
        sources.sort();
        let mut written: Option<(&Arc<str>, u32, &str)> = None;
        for (rule, id, n, equal) in &sources {
            // State is aligned with the current rules: the rule of this name, if any.
            let current = self.rules.inhibit_rule_by_name(rule);
            let index = |i: usize| s.sources.get(i).and_then(|(_, idx)| idx.get(*n as usize));
            // The changelog keys by name: one record, the current rules' entries.
            if written != Some((rule, *n, equal)) {
                let value = current
                    .and_then(index)
                    .and_then(|idx| idx.by_key.get(equal))
                    .and_then(json);
                out.push((source_key(rule, *n, equal), value));
                written = Some((rule, *n, equal));
            }
            if self.shared.is_some() {
                // Entries made under an earlier form of the rule end (another id).
                let idx = current.filter(|&i| self.rule_ids[i] == *id).and_then(index);
                self.published.push((
                    super::sources::table_key(id, *n, equal).into_bytes(),
                    super::sources::record_value(idx, equal),
                ));
            }
        }
        out
    }

    /// The records that publish this engine's own inhibition sources to the
    /// shared table, made by the last [`Engine::take_changes`] (none unless
    /// [`Engine::share_sources`]): a value per changed key, a tombstone when
    /// no source is left under it.
    pub fn take_source_records(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.published)
    }

    /// Rebuilds an engine from changelog records in the order they were written
    /// (the latest record of a key wins; a tombstone removes it), under `rules`.
    /// Change tracking is on in the engine returned.
    pub fn from_changelog<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        rules: Arc<RuleSet>,
        records: impl IntoIterator<Item = (K, Option<V>)>,
    ) -> (Engine, RestoreReport) {
        let mut report = RestoreReport::default();
        let mut parts = Parts::default();
        // Only the last record of a key counts: parse nothing a later record replaces
        // (an uncompacted changelog holds every resend's update).
        let records: Vec<(K, Option<V>)> = records.into_iter().collect();
        let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(records.len());
        for (i, (k, _)) in records.iter().enumerate() {
            last.insert(k.as_ref(), i);
        }
        report.records = records.len() as u64;
        for (i, (k, v)) in records.iter().enumerate() {
            if last.get(k.as_ref()) != Some(&i) {
                continue;
            }
            if parts
                .apply(k.as_ref(), v.as_ref().map(AsRef::as_ref))
                .is_none()
            {
                report.malformed += 1;
            }
        }
        let Parts {
            mut alerts,
            flaps,
            groups,
            storms,
            shifts,
            mut sources,
            legacy,
        } = parts;
        report.legacy = legacy;

        let mut state = State {
            flaps,
            ..State::default()
        };
        // Each group's alerts: those naming it by key and (earlier records)
        // those its record lists.
        let mut joined: HashMap<Box<str>, Vec<(u32, AlertKey)>> = HashMap::new();
        let mut bare: HashSet<AlertKey> = HashSet::new();
        for (k, (group, a)) in alerts.iter_mut() {
            match group.take() {
                Some(g) => joined.entry(g).or_default().push((a.join, *k)),
                None => {
                    bare.insert(*k);
                }
            }
        }
        for (id, (_, mut g)) in groups.into_iter().enumerate() {
            let id = id as GroupId;
            let mut named = joined.remove(&*g.key).unwrap_or_default();
            named.sort_unstable();
            let listed = std::mem::take(&mut g.members);
            let members: Vec<(u32, AlertKey)> = if listed.is_empty() {
                named
            } else {
                // An earlier record's list is the order; alerts rewritten since
                // (a crash while upgrading) keep their place in it.
                let in_list: HashSet<AlertKey> = listed.iter().copied().collect();
                let named_set: HashSet<AlertKey> = named.iter().map(|&(_, k)| k).collect();
                listed
                    .into_iter()
                    .filter(|m| bare.remove(m) || named_set.contains(m))
                    .chain(
                        named
                            .into_iter()
                            .map(|(_, k)| k)
                            .filter(|k| !in_list.contains(k)),
                    )
                    .enumerate()
                    .map(|(n, k)| (n as u32, k))
                    .collect()
            };
            g.joins = g.joins.max(members.last().map_or(0, |&(j, _)| j + 1));
            g.members = Vec::with_capacity(members.len());
            for (join, m) in members {
                let Some((_, mut a)) = alerts.remove(&m) else {
                    continue;
                };
                a.group = id;
                a.join = join;
                state.alerts.insert(m, Box::new(a));
                g.members.push(m);
            }
            if g.members.is_empty() {
                report.orphans += 1;
                state.groups.push(None);
                state.free_groups.push(id);
                continue;
            }
            state.timers.insert((g.next_flush, Timer::flush(&g, id)));
            state.groups.push(Some(g));
        }
        report.orphans += alerts.len() as u64;
        for (squad, w) in storms {
            let interval = rules
                .squad_by_name(&squad)
                .and_then(|i| rules.squads[i as usize].storm)
                .map(|l| l.interval);
            if let (Some(interval), true) = (interval, w.folded.notifications > 0) {
                state
                    .timers
                    .insert((w.start.plus(interval), Timer::StormSummary(squad.clone())));
            }
            state.storms.insert(squad, w);
        }
        for (squad, book) in shifts {
            state
                .timers
                .insert((book.end, Timer::Handover(squad.clone())));
            state.shifts.insert(squad, book);
        }
        state.sources = rules
            .inhibit_rules
            .iter()
            .map(|r| {
                let idx = (0..r.sources.len() as u32)
                    .map(|n| SourceIndex {
                        by_key: sources
                            .remove(&(Box::<str>::from(&*r.name), n))
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    })
                    .collect();
                (r.name.clone(), idx)
            })
            .collect();

        let mut e = Engine::new(rules);
        e.state = state;
        e.rebuild_derived();
        e.track_changes();
        if report.legacy > 0 {
            e.mark_all();
        }
        (e, report)
    }
}

type Sources = HashMap<(Box<str>, u32), HashMap<Box<str>, Vec<(AlertKey, crate::model::Ts)>>>;

/// The state's parts as records are read, before groups get their ids.
#[derive(Default)]
struct Parts {
    /// Each alert with its group's key (`None`: an earlier record, bare).
    alerts: super::state::KeyMap<(Option<Box<str>>, StoredAlert)>,
    flaps: super::state::KeyMap<FlapState>,
    groups: BTreeMap<Arc<str>, Group>,
    storms: HashMap<Arc<str>, StormWindow>,
    shifts: BTreeMap<Arc<str>, Book>,
    sources: Sources,
    /// Records in the earlier form read.
    legacy: u64,
}

impl Parts {
    /// Applies one record; `None` when it cannot be parsed.
    fn apply(&mut self, k: &[u8], v: Option<&[u8]>) -> Option<()> {
        let Parts {
            alerts,
            flaps,
            groups,
            storms,
            shifts,
            sources,
            legacy,
        } = self;
        let k = std::str::from_utf8(k).ok()?;
        let (kind, rest) = k.split_once('/')?;
        match kind {
            "alert" | "flap" => {
                let ak = AlertKey(u128::from_str_radix(rest, 16).ok()?);
                match (kind, v) {
                    ("alert", Some(v)) => {
                        let read = match serde_json::from_slice::<ReadAlert>(v) {
                            Ok(r) => (Some(r.group), r.alert),
                            Err(_) => {
                                let bare = serde_json::from_slice(v).ok()?;
                                *legacy += 1;
                                (None, bare)
                            }
                        };
                        alerts.insert(ak, read);
                    }
                    ("alert", None) => {
                        alerts.remove(&ak);
                    }
                    (_, Some(v)) => {
                        flaps.insert(ak, serde_json::from_slice(v).ok()?);
                    }
                    (_, None) => {
                        flaps.remove(&ak);
                    }
                }
            }
            "group" => match v {
                Some(v) => {
                    let g: Group = serde_json::from_slice(v).ok()?;
                    if !g.members.is_empty() {
                        *legacy += 1;
                    }
                    groups.insert(g.key.clone(), g);
                }
                None => {
                    groups.remove(rest);
                }
            },
            "storm" => match v {
                Some(v) => {
                    storms.insert(rest.into(), serde_json::from_slice(v).ok()?);
                }
                None => {
                    storms.remove(rest);
                }
            },
            "shift" => match v {
                Some(v) => {
                    shifts.insert(rest.into(), serde_json::from_slice(v).ok()?);
                }
                None => {
                    shifts.remove(rest);
                }
            },
            "source" => {
                let (rule, n, equal) = split_source(rest)?;
                let entry = sources.entry((unescape(rule).into(), n)).or_default();
                match v {
                    Some(v) => {
                        entry.insert(equal.into(), serde_json::from_slice(v).ok()?);
                    }
                    None => {
                        entry.remove(equal);
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }
}

/// `<rule>/<n>/<equal>`: the rule name is escaped ([`escape`]), so the first
/// two slashes delimit it; the equal values may hold anything.
fn split_source(rest: &str) -> Option<(&str, u32, &str)> {
    let (rule, rest) = rest.split_once('/')?;
    let (n, equal) = rest.split_once('/')?;
    Some((rule, n.parse().ok()?, equal))
}

/// Rule names may hold any character: '%' and '/' are escaped in keys.
pub(super) fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(name: &str) -> String {
    name.replace("%2F", "/").replace("%25", "%")
}
