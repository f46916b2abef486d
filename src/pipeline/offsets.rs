//! Which input offsets may be committed: the at-least-once bookkeeping.
//!
//! An input message is *done* when every alert in it has a fate and every
//! record derived from those fates (notifications, dead letters, audit records)
//! has been acknowledged by the broker. A partition's committable offset is the
//! offset of its first message not done (or the next offset to read, when all
//! are). Pure data structure: no Kafka types, unit-tested here.
//!
//! Input ids handed to the engine encode (partition slot, offset); all alerts
//! of one message share it, and the tracker counts them.

use crate::engine::InputId;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const OFFSET_BITS: u32 = 44;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// A topic partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tp {
    pub topic: Arc<str>,
    pub partition: i32,
}

#[derive(Debug, Default)]
struct Outstanding {
    /// Alerts without a fate yet.
    undecided: u32,
    /// Derived records not yet acknowledged.
    unacked: u32,
}

#[derive(Debug)]
struct Partition {
    slot: u32,
    /// Messages not done, by offset.
    open: BTreeMap<i64, Outstanding>,
    /// The offset after the highest one seen.
    next: i64,
    /// The last offset committed (or handed out for committing).
    committed: Option<i64>,
}

/// Produced records awaiting acknowledgement, and the inputs waiting on them.
#[derive(Debug)]
struct Ticket {
    remaining: u32,
    inputs: Vec<InputId>,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<Tp, Partition>,
    /// Slot -> partition. Slots are never reused, so ids of revoked partitions stay stale.
    slots: Vec<Option<Tp>>,
    tickets: HashMap<u64, Ticket>,
    next_ticket: u64,
}

impl OffsetTracker {
    pub fn new() -> OffsetTracker {
        OffsetTracker::default()
    }

    /// Starts tracking a partition (on assignment). Idempotent.
    pub fn assign(&mut self, tp: Tp) {
        if self.partitions.contains_key(&tp) {
            return;
        }
        let slot = self.slots.len() as u32;
        self.slots.push(Some(tp.clone()));
        self.partitions.insert(
            tp,
            Partition {
                slot,
                open: BTreeMap::new(),
                next: -1,
                committed: None,
            },
        );
    }

    /// Stops tracking a partition (on revocation). Fates and acks for its
    /// inputs are ignored from now on: the next owner re-reads them.
    pub fn revoke(&mut self, tp: &Tp) {
        if let Some(p) = self.partitions.remove(tp) {
            self.slots[p.slot as usize] = None;
        }
    }

    pub fn assigned(&self) -> impl Iterator<Item = &Tp> {
        self.partitions.keys()
    }

    /// How many alerts a message begun with 0 turned out to hold (known after decoding).
    pub fn expect(&mut self, tp: &Tp, offset: i64, alerts: u32) {
        self.begin(tp, offset, alerts);
    }

    /// Records a message with `alerts` alerts; returns the input id its alerts carry.
    pub fn begin(&mut self, tp: &Tp, offset: i64, alerts: u32) -> InputId {
        self.assign(tp.clone());
        let p = self.partitions.get_mut(tp).expect("assigned above");
        p.next = p.next.max(offset + 1);
        if alerts > 0 {
            p.open.entry(offset).or_default().undecided += alerts;
        }
        ((p.slot as u64) << OFFSET_BITS) | (offset as u64 & OFFSET_MASK)
    }

    /// The partition and offset an input id came from (while the partition is assigned).
    pub fn source_of(&self, input: InputId) -> Option<(Tp, i64)> {
        let tp = self.slots.get((input >> OFFSET_BITS) as usize)?.as_ref()?;
        Some((tp.clone(), (input & OFFSET_MASK) as i64))
    }

    fn outstanding(&mut self, input: InputId) -> Option<&mut Outstanding> {
        let slot = (input >> OFFSET_BITS) as usize;
        let offset = (input & OFFSET_MASK) as i64;
        let tp = self.slots.get(slot)?.as_ref()?;
        self.partitions.get_mut(tp)?.open.get_mut(&offset)
    }

    /// One alert of `input` has its fate, and nothing derived from it needs acknowledging.
    pub fn decided(&mut self, input: InputId) {
        if let Some(o) = self.outstanding(input) {
            o.undecided = o.undecided.saturating_sub(1);
        }
    }

    /// Alerts of `inputs` have their fates, and `records` produced records derive from
    /// them: they count as done once all those records are acknowledged ([`Self::acked`]).
    /// Returns the ticket to pass to `acked` with each acknowledgement.
    pub fn decided_pending(&mut self, inputs: Vec<InputId>, records: u32) -> u64 {
        for &i in &inputs {
            if let Some(o) = self.outstanding(i) {
                o.undecided = o.undecided.saturating_sub(1);
                o.unacked += 1;
            }
        }
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(
            id,
            Ticket {
                remaining: records,
                inputs,
            },
        );
        if records == 0 {
            self.acked(id);
        }
        id
    }

    /// A record of `ticket` was acknowledged by the broker.
    pub fn acked(&mut self, ticket: u64) {
        let Some(t) = self.tickets.get_mut(&ticket) else {
            return;
        };
        t.remaining = t.remaining.saturating_sub(1);
        if t.remaining > 0 {
            return;
        }
        let t = self.tickets.remove(&ticket).expect("present");
        for i in t.inputs {
            if let Some(o) = self.outstanding(i) {
                o.unacked = o.unacked.saturating_sub(1);
            }
        }
    }

    /// Records produced but not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.tickets.values().map(|t| t.remaining as u64).sum()
    }

    /// The offset to commit for each partition whose committable offset moved
    /// since the last call. Done messages are forgotten here.
    pub fn committable(&mut self) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        for (tp, p) in &mut self.partitions {
            while let Some((&offset, o)) = p.open.first_key_value() {
                if o.undecided == 0 && o.unacked == 0 {
                    p.open.remove(&offset);
                } else {
                    break;
                }
            }
            let commit = p.open.first_key_value().map(|(&o, _)| o).unwrap_or(p.next);
            if commit >= 0 && p.committed != Some(commit) && commit > p.committed.unwrap_or(-1) {
                p.committed = Some(commit);
                out.push((tp.clone(), commit));
            }
        }
        out.sort();
        out
    }

    /// Messages not done yet, over all partitions.
    pub fn open_messages(&self) -> usize {
        self.partitions.values().map(|p| p.open.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        Tp {
            topic: "in".into(),
            partition: p,
        }
    }

    #[test]
    fn a_message_is_committable_when_every_alert_is_decided() {
        let mut t = OffsetTracker::new();
        let a = t.begin(&tp(0), 10, 2);
        let b = t.begin(&tp(0), 11, 1);
        assert_eq!(
            t.committable(),
            vec![(tp(0), 10)],
            "nothing done: commit up to the first open message"
        );
        t.decided(b);
        assert_eq!(
            t.committable(),
            vec![],
            "a later message being done does not move the offset"
        );
        t.decided(a);
        assert_eq!(t.committable(), vec![], "one of two alerts decided");
        t.decided(a);
        assert_eq!(t.committable(), vec![(tp(0), 12)]);
        assert_eq!(t.open_messages(), 0);
    }

    #[test]
    fn derived_records_hold_the_offset_until_acknowledged() {
        let mut t = OffsetTracker::new();
        let a = t.begin(&tp(0), 0, 1);
        let b = t.begin(&tp(0), 1, 1);
        let ticket = t.decided_pending(vec![a, b], 2);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.committable(), vec![(tp(0), 0)]);
        t.acked(ticket);
        assert_eq!(t.committable(), vec![], "one of two records acknowledged");
        t.acked(ticket);
        assert_eq!(t.committable(), vec![(tp(0), 2)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn empty_messages_and_partitions_are_independent() {
        let mut t = OffsetTracker::new();
        t.begin(&tp(0), 5, 0);
        let x = t.begin(&tp(1), 7, 1);
        assert_eq!(t.committable(), vec![(tp(0), 6), (tp(1), 7)]);
        t.decided(x);
        assert_eq!(t.committable(), vec![(tp(1), 8)]);
    }

    #[test]
    fn revoked_partitions_ignore_late_fates_and_acks() {
        let mut t = OffsetTracker::new();
        let a = t.begin(&tp(0), 3, 1);
        let ticket = t.decided_pending(vec![a], 1);
        t.revoke(&tp(0));
        t.acked(ticket);
        t.decided(a);
        assert_eq!(t.committable(), vec![]);
        // Re-assigned: a new slot; the old id stays stale.
        let b = t.begin(&tp(0), 3, 1);
        assert_ne!(a, b);
        t.decided(a);
        assert_eq!(t.committable(), vec![(tp(0), 3)]);
        t.decided(b);
        assert_eq!(t.committable(), vec![(tp(0), 4)]);
    }
}
