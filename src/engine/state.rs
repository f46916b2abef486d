//! The engine's state: remembered alerts, groups, timers, inhibition sources and
//! storm windows. Plain data, serializable as one snapshot; the logic is in
//! `engine/mod.rs`.

use super::output::{Folded, InputId};
use crate::model::{AlertKey, Fingerprint, LabelSet, Status, Ts};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Alert keys are already hashes: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

pub type KeyMap<V> = HashMap<AlertKey, V, BuildHasherDefault<KeyHasher>>;

pub type GroupId = u32;

/// An alert the engine remembers: admitted to a group, not yet resolved and notified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAlert {
    pub fingerprint: Fingerprint,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<Box<str>>,
    pub starts_at: Ts,
    /// When it stops firing unless resent (its `endsAt`, or receipt + resolve_timeout).
    pub ends_at: Ts,
    /// The last input said resolved.
    pub resolved: bool,
    /// What the last notification including it said.
    pub notified: Option<Status>,
    pub group: GroupId,
    pub core: bool,
    /// Its place among its group's members: the group's `joins` when it was
    /// admitted. A restore orders members by it (members are not written).
    #[serde(default)]
    pub join: u32,
    /// Inputs whose fate waits for the group's next flush.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<InputId>,
}

impl StoredAlert {
    pub fn status(&self, now: Ts) -> Status {
        if self.resolved || self.ends_at <= now {
            Status::Resolved
        } else {
            Status::Firing
        }
    }

    /// Heap bytes owned by this alert (not counting the map slot).
    pub fn heap_bytes(&self) -> usize {
        self.labels.heap_bytes()
            + self.annotations.heap_bytes()
            + self.generator_url.as_ref().map_or(0, |u| u.len())
            + self.pending.capacity() * 8
    }
}

/// State changes of one fingerprint within the flap window. Kept apart from
/// [`StoredAlert`] because an alert that resolves and re-fires is forgotten and
/// re-admitted in between: its history must outlive it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlapState {
    pub changes: VecDeque<Ts>,
    pub flapping: bool,
    /// The flap has been announced in a notification.
    pub announced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub key: Arc<str>,
    pub squad: Arc<str>,
    pub labels: LabelSet,
    /// Its alerts in the order they joined. Derived: never written (a group's
    /// record would grow with it and be rewritten whenever it changes); a
    /// restore rebuilds it from the alerts' `group` and `join`. Read from
    /// records written before that, which listed them.
    #[serde(default, skip_serializing)]
    pub members: Vec<AlertKey>,
    /// Alerts admitted so far: the next member's `join`.
    #[serde(default)]
    pub joins: u32,
    pub next_flush: Ts,
    pub last_notified: Option<Ts>,
    /// When a change (not a repeat) was last notified: an acknowledgement
    /// made after it stops the repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<Ts>,
    /// The input whose alert created the group. With `sequence`, it makes the
    /// notification id: deciding the same input again (after a crash, at least
    /// once) gives the same id, where a clock would not.
    #[serde(default)]
    pub origin: InputId,
    /// Notifications sent for this group so far.
    #[serde(default)]
    pub sequence: u64,
    /// A digest group: its alerts go to the squad's digest (this impact rule), not to a page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Arc<str>>,
}

/// A point in time at which the engine has work to do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    /// Sorts first: a window's summary goes out before the next window's flushes.
    StormSummary(Arc<str>),
    /// Flushes due at one instant run in the order of the groups' identity
    /// (creating input, key hash), not of their ids: ids are not kept across a
    /// restore, and a restored engine must decide in the same order.
    Flush {
        origin: InputId,
        key_hash: u64,
        group: GroupId,
    },
    /// Sorts last: a handover's report includes the flushes of its instant.
    Handover(Arc<str>),
}

impl Timer {
    pub fn flush(g: &Group, id: GroupId) -> Timer {
        Timer::Flush {
            origin: g.origin,
            key_hash: xxhash_rust::xxh3::xxh3_64(g.key.as_bytes()),
            group: id,
        }
    }
}

/// Per squad: notifications in the current window and what was folded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormWindow {
    pub start: Ts,
    pub sent: u32,
    pub folded: Folded,
    /// Folded notifications whose later parts are still to come, by id
    /// (routed deliveries: [`super::DeliveryPart`]); a part not listed here
    /// belongs to a notification that was sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folding: Vec<Arc<str>>,
}

/// Firing alerts matching one inhibit rule's source, by the values of its
/// `equal` labels, each with the time it stops firing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceIndex {
    pub by_key: crate::model::StrMap<Vec<(AlertKey, Ts)>>,
}

/// Everything a snapshot holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Boxed: a table slot is a key and a pointer, so spare capacity and the
    /// tables left behind when it grows cost little (BENCHMARKS.md, memory).
    pub alerts: KeyMap<Box<StoredAlert>>,
    pub groups: Vec<Option<Group>>,
    pub free_groups: Vec<GroupId>,
    pub timers: BTreeSet<(Ts, Timer)>,
    /// Aligned with the rule set's inhibit rules: (rule name, one index per source).
    pub sources: Vec<(Arc<str>, Vec<SourceIndex>)>,
    pub storms: HashMap<Arc<str>, StormWindow>,
    /// Flap history of fingerprints that changed state within the window.
    pub flaps: KeyMap<FlapState>,
    pub last_sweep: Ts,
    /// Per squad: the current shift's book (only squads this engine keeps books for).
    #[serde(default)]
    pub shifts: std::collections::BTreeMap<Arc<str>, super::shift::Book>,
}

impl State {
    /// Rebuilds every group's members from the alerts' `group` and `join`
    /// (a snapshot does not hold them). Alerts naming no live group are forgotten.
    pub fn rebuild_members(&mut self) {
        let mut by_group: Vec<Vec<(u32, AlertKey)>> = vec![Vec::new(); self.groups.len()];
        let groups = &self.groups;
        self.alerts.retain(|&k, a| {
            let live = groups.get(a.group as usize).is_some_and(Option::is_some);
            if live {
                by_group[a.group as usize].push((a.join, k));
            }
            live
        });
        for (g, mut joined) in self.groups.iter_mut().zip(by_group) {
            if let Some(g) = g {
                joined.sort_unstable();
                g.members = joined.into_iter().map(|(_, k)| k).collect();
            }
        }
    }
}
