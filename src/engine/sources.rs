//! The inhibition sources table: every task's firing sources, in one table per
//! process that every engine consults (a global table, as Kafka Streams calls
//! it). Sans-IO: records in, answers out; the pipeline feeds it from the
//! compacted sources topic (`pipeline/sources.rs`).
//!
//! Each engine keeps the sources of the alerts it owns in its own state (and
//! changelog) and publishes them ([`Engine::share_sources`]) as records, one
//! per (rule, source, `equal` values) and task:
//! - key `<rule id>/<n>/<equal values>`, where the rule id is the rule's
//!   escaped name and a digest of its sources and `equal` labels, so an entry
//!   written under other rules (a reload, an instance not yet reloaded) never
//!   matches a rule that reads differently;
//! - value: the firing alerts (key, until) as JSON; a tombstone when none is left;
//! - the task's own partition of the topic, so tasks never write each other's keys.
//!
//! The tasks of this instance also write their entries into the table
//! directly as they change ([`SharedSources::own`]): a source is visible at
//! once to the instance's other tasks, and to other instances once its
//! commit is read. The reader skips records of partitions owned here (its
//! own writes, older than what the table has).
//!
//! [`Engine::share_sources`]: super::Engine::share_sources

use super::state::SourceIndex;
use crate::model::{AlertKey, Ts};
use crate::rules::InhibitRule;
use std::sync::atomic::{AtomicI64, Ordering};

/// One key's firing sources, per task partition that wrote them.
type Entries = Vec<(i32, Vec<(AlertKey, Ts)>)>;

#[derive(Default)]
pub struct SharedSources {
    map: dashmap::DashMap<Box<str>, Entries>,
    /// Alerts listed, over all keys (a gauge; signed, as concurrent writers
    /// may count a removal before the addition it removes).
    alerts: AtomicI64,
    /// Partitions whose task runs here: their engines write the table directly.
    owned: std::sync::RwLock<std::collections::HashSet<i32>>,
}

/// A record the table cannot read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable inhibition sources record: {0}")]
pub struct Unreadable(String);

impl SharedSources {
    /// Applies one record of task `partition` read from the sources topic:
    /// its current list for the key, or the end of it (a tombstone, `None`).
    /// Records of partitions this instance owns are skipped.
    pub fn apply_read(
        &self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), Unreadable> {
        if self.owned.read().expect("owned lock").contains(&partition) {
            return Ok(());
        }
        self.apply(partition, key, value)
    }

    /// Applies one record of task `partition`, whoever owns it.
    pub fn apply(
        &self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), Unreadable> {
        let key = std::str::from_utf8(key).map_err(|e| Unreadable(e.to_string()))?;
        let list: Vec<(AlertKey, Ts)> = match value {
            Some(v) if !v.is_empty() => {
                serde_json::from_slice(v).map_err(|e| Unreadable(format!("{key}: {e}")))?
            }
            _ => Vec::new(),
        };
        self.set(partition, key, list);
        Ok(())
    }

    /// The task of `partition` runs here from now on: its entries are
    /// forgotten, for its engine to write them again
    /// ([`super::Engine::share_sources`]), and records read are skipped.
    /// Returns the keys it had for the partition.
    pub fn own(&self, partition: i32) -> Vec<Box<str>> {
        self.owned.write().expect("owned lock").insert(partition);
        let (mut removed, mut keys) = (0, Vec::new());
        self.map.retain(|key, e| {
            e.retain(|(p, l)| {
                let other = *p != partition;
                if !other {
                    removed += l.len();
                    keys.push(key.clone());
                }
                other
            });
            !e.is_empty()
        });
        self.alerts.fetch_sub(removed as i64, Ordering::Relaxed);
        keys
    }

    /// The task of `partition` moved away: its entries come from the topic again.
    pub fn release(&self, partition: i32) {
        self.owned.write().expect("owned lock").remove(&partition);
    }

    /// Sets task `partition`'s list for `key` (empty: removes it).
    pub(super) fn set(&self, partition: i32, key: &str, list: Vec<(AlertKey, Ts)>) {
        let added = list.len();
        let mut removed = 0;
        if list.is_empty() {
            if let Some(mut e) = self.map.get_mut(key) {
                if let Some(i) = e.iter().position(|(p, _)| *p == partition) {
                    removed = e.swap_remove(i).1.len();
                }
                let empty = e.is_empty();
                drop(e);
                if empty {
                    self.map.remove_if(key, |_, e| e.is_empty());
                }
            }
        } else {
            let mut e = self.map.entry(key.into()).or_default();
            match e.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, old)) => removed = std::mem::replace(old, list).len(),
                None => e.push((partition, list)),
            }
        }
        self.alerts.fetch_add(added as i64, Ordering::Relaxed);
        self.alerts.fetch_sub(removed as i64, Ordering::Relaxed);
    }

    /// Whether an alert other than `except` fires for this key at `now`.
    pub(super) fn live(&self, key: &str, except: AlertKey, now: Ts) -> bool {
        self.map.get(key).is_some_and(|e| {
            e.iter()
                .flat_map(|(_, l)| l)
                .any(|&(k, until)| k != except && until > now)
        })
    }

    /// Source alerts listed (expired ones until their task sweeps them).
    pub fn alerts(&self) -> usize {
        self.alerts.load(Ordering::Relaxed).max(0) as usize
    }

    /// Keys (rule, source, `equal` values) with at least one alert.
    pub fn keys(&self) -> usize {
        self.map.len()
    }
}

/// A rule's id in the table: its name, escaped as in changelog keys, and a
/// digest of what makes an alert its source.
pub(super) fn rule_id(r: &InhibitRule) -> Box<str> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in &r.sources {
        for m in s {
            h.update(m.to_string().as_bytes());
            h.update(&[0]);
        }
        h.update(&[1]);
    }
    for l in &r.equal {
        h.update(l.as_bytes());
        h.update(&[0]);
    }
    format!("{}#{:016x}", super::changelog::escape(&r.name), h.digest()).into()
}

/// The table key of source `n` of a rule, for the `equal` values given.
pub(super) fn table_key(rule_id: &str, n: u32, equal: &str) -> String {
    format!("{rule_id}/{n}/{equal}")
}

/// The value of a record: the index's list for `equal`, `None` (a tombstone) when empty.
pub(super) fn record_value(idx: Option<&SourceIndex>, equal: &str) -> Option<Vec<u8>> {
    let list = idx?.by_key.get(equal)?;
    (!list.is_empty()).then(|| serde_json::to_vec(list).expect("sources serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(u128, i64)]) -> Vec<u8> {
        let l: Vec<(AlertKey, Ts)> = entries.iter().map(|&(k, t)| (AlertKey(k), Ts(t))).collect();
        serde_json::to_vec(&l).unwrap()
    }

    /// Each task's list for a key is its own: one task's tombstone leaves
    /// another's entries; junk is refused and changes nothing; records of a
    /// partition owned here are skipped until it is released.
    #[test]
    fn the_table_keeps_each_tasks_list_and_refuses_junk() {
        let t = SharedSources::default();
        t.apply(0, b"r#1/0/x", Some(&list(&[(1, 100), (2, 50)])))
            .unwrap();
        t.apply(3, b"r#1/0/x", Some(&list(&[(3, 100)]))).unwrap();
        assert_eq!((t.alerts(), t.keys()), (3, 1));
        assert!(t.live("r#1/0/x", AlertKey(1), Ts(60)), "3 fires");
        assert!(!t.live("r#1/0/x", AlertKey(9), Ts(100)), "all ended at 100");
        assert!(!t.live("r#2/0/x", AlertKey(9), Ts(0)), "another rule id");

        t.apply(3, b"r#1/0/x", None).unwrap();
        assert_eq!((t.alerts(), t.keys()), (2, 1));
        assert!(
            !t.live("r#1/0/x", AlertKey(1), Ts(60)),
            "2 ended at 50, 1 is the target"
        );
        // An empty value counts as a tombstone.
        t.apply(0, b"r#1/0/x", Some(b"")).unwrap();
        assert_eq!((t.alerts(), t.keys()), (0, 0));

        for (key, value) in [
            (&b"r#1/0/x"[..], &b"{not json"[..]),
            (b"r#1/0/x", br#"[["nope", 1]]"#),
            (b"\xff\xfe", b"[]"),
        ] {
            assert!(t.apply(1, key, Some(value)).is_err());
        }
        assert_eq!((t.alerts(), t.keys()), (0, 0));

        t.apply(5, b"k", Some(&list(&[(1, 100)]))).unwrap();
        t.own(5);
        assert_eq!(
            t.keys(),
            0,
            "owning a partition forgets what was read of it"
        );
        t.apply_read(5, b"k", Some(&list(&[(1, 100)]))).unwrap();
        assert_eq!(t.keys(), 0, "its own writes, read back, are skipped");
        t.release(5);
        t.apply_read(5, b"k", Some(&list(&[(1, 100)]))).unwrap();
        assert_eq!((t.alerts(), t.keys()), (1, 1));
    }
}
