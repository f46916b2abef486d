//! The engine's state as keyed records, for a compacted changelog (Kafka
//! Streams' state store + changelog): [`Engine::take_changes`] says which
//! records changed since it was last called (a value, or a tombstone when the
//! state behind the key ended), and [`Engine::from_changelog`] rebuilds an
//! engine from the latest record of each key. Sans-IO: bytes in, bytes out.
//!
//! Records, one per key (keys are UTF-8, values JSON):
//! - `alert/<alert key>`: a remembered alert ([`StoredAlert`]), pending inputs included;
//! - `flap/<alert key>`: flap history ([`FlapState`]);
//! - `group/<group key>`: a group with its members, timer and notification sequence;
//! - `storm/<squad>`: the squad's storm window;
//! - `shift/<squad>`: the squad's current shift book (digest, pages, noise figures);
//! - `source/<rule>/<n>/<equal values>`: firing sources of an inhibit rule.
//!
//! Derived data (group ids, the timer set, indexes) is never written: restoring
//! rebuilds it, so a record can be applied in any order relative to others.
//! A restore tolerates what a crash between records can leave (a group naming
//! an alert whose record never arrived, an alert no group claims): such
//! members and orphans are left out and counted.

use super::Engine;
use super::shift::Book;
use super::state::{
    FlapState, Group, GroupId, SourceIndex, State, StoredAlert, StormWindow, Timer,
};
use crate::model::AlertKey;
use crate::rules::RuleSet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

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
    /// (rule name, source index, equal-label values).
    pub sources: HashSet<(Arc<str>, u32, Box<str>)>,
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
    /// Alerts no group claimed and group members without an alert record, left out.
    pub orphans: u64,
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
            out.push((key("alert", k), s.alerts.get(&k).and_then(json)));
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
        for (rule, n, equal) in sources {
            let value = s
                .sources
                .iter()
                .find(|(name, _)| *name == rule)
                .and_then(|(_, idx)| idx.get(n as usize))
                .and_then(|idx| idx.by_key.get(&equal))
                .and_then(json);
            out.push((source_key(&rule, n, &equal), value));
        }
        out
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
        } = parts;

        let mut state = State {
            flaps,
            ..State::default()
        };
        for (id, (_, mut g)) in groups.into_iter().enumerate() {
            let id = id as GroupId;
            g.members.retain(|m| match alerts.remove(m) {
                Some(mut a) => {
                    a.group = id;
                    state.alerts.insert(*m, Box::new(a));
                    true
                }
                None => {
                    report.orphans += 1;
                    false
                }
            });
            if g.members.is_empty() {
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
        (e, report)
    }
}

type Sources = HashMap<(Box<str>, u32), HashMap<Box<str>, Vec<(AlertKey, crate::model::Ts)>>>;

/// The state's parts as records are read, before groups get their ids.
#[derive(Default)]
struct Parts {
    alerts: super::state::KeyMap<StoredAlert>,
    flaps: super::state::KeyMap<FlapState>,
    groups: BTreeMap<Arc<str>, Group>,
    storms: HashMap<Arc<str>, StormWindow>,
    shifts: BTreeMap<Arc<str>, Book>,
    sources: Sources,
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
        } = self;
        let k = std::str::from_utf8(k).ok()?;
        let (kind, rest) = k.split_once('/')?;
        match kind {
            "alert" | "flap" => {
                let ak = AlertKey(u128::from_str_radix(rest, 16).ok()?);
                match (kind, v) {
                    ("alert", Some(v)) => {
                        alerts.insert(ak, serde_json::from_slice(v).ok()?);
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
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(name: &str) -> String {
    name.replace("%2F", "/").replace("%25", "%")
}
