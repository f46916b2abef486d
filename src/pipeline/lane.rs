//! The local lane: alerts this instance routes to a task it owns itself are
//! decided at once, without the round trip through the repartition topic
//! (produce, append, fetch, a second decode), once doing so cannot reorder
//! them. It must not decide fates or produce records itself: it says what
//! happens to each batch, and the caller does it.
//!
//! # Why a barrier
//!
//! A task decides the alerts of each input partition in the order they were
//! consumed. Records for it already in its repartition partition (routed by
//! the input partition's previous owner before a rebalance, or by this
//! instance before its lane opened) come before anything routed now. So after
//! every assignment a task starts [`Lane::Through`] and its lane opens only
//! when a *marker* record this instance wrote to the task's partition has
//! come back: everything before the marker has then been decided. Batches
//! routed between writing the marker and reading it back wait in the lane
//! (queued, not produced) and are decided, in order, right where the marker
//! was read. Records other instances write later are of other input
//! partitions, whose order relative to ours was never defined.
//!
//! At a commit, batches still waiting go to the topic after all (their input
//! offsets are about to be committed, and only a durable record may carry
//! them past it), followed by a fresh marker in the same commit: in exactly
//! once mode a marker is visible only once its transaction commits, so it is
//! written where the commit makes it readable at once.

use crate::model::Ts;
use std::sync::Arc;

/// A batch of alerts routed to a task: a Prometheus array, with where its
/// input message came from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Batch {
    pub body: Vec<u8>,
    /// The input message's engine input id (0 when it has none).
    pub input: u64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The input message's broker timestamp.
    pub source: Option<Ts>,
}

/// What to do with a batch routed to a task of this instance.
#[derive(Debug, PartialEq)]
pub(super) enum Routing {
    /// Decide it now.
    Decide(Batch),
    /// Kept in the lane; write this marker to the task's partition first.
    Mark(u64),
    /// Kept in the lane behind the marker already written.
    Held,
}

/// The state of one task's local lane.
#[derive(Debug, Default)]
pub(super) enum Lane {
    /// Records routed earlier may still be in the topic, and no marker is out.
    #[default]
    Through,
    /// Marker `marker` is on its way back; `held` were routed since it was written.
    Waiting { marker: u64, held: Vec<Batch> },
    /// Everything routed to this task before now has been decided.
    Open,
}

impl Lane {
    /// A batch this instance routed to the lane's task; `markers` counts the
    /// markers written (this run's last number), for a new one when needed.
    pub fn route(&mut self, batch: Batch, markers: &mut u64) -> Routing {
        match self {
            Lane::Open => Routing::Decide(batch),
            Lane::Waiting { held, .. } => {
                held.push(batch);
                Routing::Held
            }
            Lane::Through => {
                let marker = next(markers);
                *self = Lane::Waiting {
                    marker,
                    held: vec![batch],
                };
                Routing::Mark(marker)
            }
        }
    }

    /// A marker of this instance came back through the task's partition: if
    /// it is the one awaited, the lane opens and the held batches are to be
    /// decided now, in this order. Older markers (sent before a commit wrote
    /// a newer one) are ignored.
    pub fn marker_read(&mut self, marker: u64) -> Option<Vec<Batch>> {
        match self {
            Lane::Waiting { marker: m, held } if *m == marker => {
                let held = std::mem::take(held);
                *self = Lane::Open;
                Some(held)
            }
            _ => None,
        }
    }

    /// A commit is about to be made: the held batches, to be produced to the
    /// topic, and the marker to write after them, if any were held.
    pub fn at_commit(&mut self, markers: &mut u64) -> Option<(Vec<Batch>, u64)> {
        match self {
            Lane::Waiting { marker, held } if !held.is_empty() => {
                *marker = next(markers);
                Some((std::mem::take(held), *marker))
            }
            _ => None,
        }
    }

    /// Partitions were assigned: records their previous owners routed may
    /// now precede what this instance routes, so the lane closes. Batches
    /// held stay, behind no marker: the next commit sends them through and
    /// writes a new one.
    pub fn reassigned(&mut self) {
        match self {
            Lane::Waiting { marker, held } if !held.is_empty() => *marker = 0,
            _ => *self = Lane::Through,
        }
    }

    /// Batches held.
    pub fn held(&self) -> usize {
        match self {
            Lane::Waiting { held, .. } => held.len(),
            _ => 0,
        }
    }

    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        matches!(self, Lane::Open)
    }
}

/// The next marker number (numbers start at 1: 0 is never written).
fn next(markers: &mut u64) -> u64 {
    *markers += 1;
    *markers
}

/// A marker's payload: an empty Prometheus batch, so that a version that
/// does not know the marker role feeds it no alert.
pub(super) const MARKER_BODY: &[u8] = b"[]";

/// The marker header's value: this run's token and the marker's number.
pub(super) fn marker_value(run: u64, marker: u64) -> Vec<u8> {
    format!("{run:016x}/{marker}").into_bytes()
}

/// The marker number in a marker header's value, if this run wrote it.
pub(super) fn parse_marker(run: u64, value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    let (r, m) = s.split_once('/')?;
    (u64::from_str_radix(r, 16).ok()? == run)
        .then(|| m.parse().ok())
        .flatten()
}

/// A token that tells this run's markers from those of other instances and
/// of earlier runs of this one.
pub(super) fn run_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> Batch {
        Batch {
            body: vec![n],
            input: u64::from(n),
            topic: "in".into(),
            partition: 0,
            offset: i64::from(n),
            source: None,
        }
    }

    /// The first batch writes a marker; batches wait behind it until it is
    /// read back, then come out in the order routed, and later ones go direct.
    #[test]
    fn batches_wait_behind_the_marker_then_go_direct() {
        let mut next = 0;
        let mut lane = Lane::default();
        assert_eq!(lane.route(batch(1), &mut next), Routing::Mark(1));
        assert_eq!(lane.route(batch(2), &mut next), Routing::Held);
        assert_eq!(lane.held(), 2);
        // Someone else's or an older marker number opens nothing.
        assert_eq!(lane.marker_read(7), None);
        assert!(!lane.is_open());
        assert_eq!(lane.marker_read(1), Some(vec![batch(1), batch(2)]));
        assert!(lane.is_open());
        assert_eq!(lane.route(batch(3), &mut next), Routing::Decide(batch(3)));
        // A marker read again (a resend) changes nothing.
        assert_eq!(lane.marker_read(1), None);
        assert_eq!(lane.at_commit(&mut next), None);
    }

    /// A commit sends what waits to the topic with a new marker after it;
    /// only that marker opens the lane.
    #[test]
    fn a_commit_sends_the_held_batches_through_and_marks_again() {
        let mut next = 0;
        let mut lane = Lane::default();
        assert_eq!(
            lane.at_commit(&mut next),
            None,
            "nothing held, nothing to do"
        );
        assert_eq!(lane.route(batch(1), &mut next), Routing::Mark(1));
        assert_eq!(lane.at_commit(&mut next), Some((vec![batch(1)], 2)));
        assert_eq!(lane.held(), 0);
        assert_eq!(lane.at_commit(&mut next), None, "the marker is still out");
        assert_eq!(lane.route(batch(2), &mut next), Routing::Held);
        assert_eq!(lane.marker_read(1), None, "superseded");
        assert_eq!(lane.marker_read(2), Some(vec![batch(2)]));
        assert!(lane.is_open());
    }

    #[test]
    fn a_marker_holds_no_alert_for_a_version_that_does_not_know_it() {
        let decoded = crate::decode::decode(MARKER_BODY).expect("a marker decodes");
        assert!(decoded.alerts.is_empty());
    }

    #[test]
    fn markers_name_their_run() {
        let v = marker_value(0xabc, 42);
        assert_eq!(parse_marker(0xabc, &v), Some(42));
        assert_eq!(parse_marker(0xabd, &v), None);
        assert_eq!(parse_marker(0xabc, b"garbage"), None);
        assert_ne!(run_token(), run_token());
    }
}
