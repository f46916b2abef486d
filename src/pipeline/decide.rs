//! The decide stage: a repartition record reaches the task of its partition,
//! whose engine decides the fates of its alerts. Each alert carries the input id of
//! its original message, so audit records name the input topic, partition and
//! offset across the extra hop; shift notes are added to the books of the
//! squads this task keeps, and notifications of squads with a storm limit
//! are decided against the storm windows it keeps (their inputs get their
//! fates here, not where the group was flushed). It must not route or produce
//! state itself:
//! changes reach the changelog at commit (`store`), shift notes are routed
//! at commit (`route`).
//!
//! Tasks are independent by construction (nothing one engine decides depends
//! on another's state), and routing an input message needs only the rules, so
//! a chunk of consumed messages is handled on two threads at once
//! ([`Core::handle`]): input messages are decoded and cut into repartition
//! records ([`super::route::plan`]), each task's records decided into its own
//! [`Outputs`]; then, on the loop's thread, the routed messages are produced
//! in the order consumed and the tasks' outputs turned into records one task
//! at a time. A task's own records are always decided in the order consumed.

use super::route::{Routed, plan};
use super::topology::{
    ROLE, ROLE_ALERTS, ROLE_DELIVERY, ROLE_SHIFT, ROLE_SOURCES, SOURCE_OFFSET, SOURCE_PARTITION,
    SOURCE_TIMESTAMP, SOURCE_TOPIC, Topology,
};
use super::{AuditMode, Core, wall_clock};
use crate::engine::{DeliveryPart, Engine, Outputs, ShiftNote};
use crate::ingest::{FeedOptions, InputIds, feed_with};
use crate::model::Ts;
use crate::rules::RuleSet;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::BTreeMap;

/// A chunk is handled on two threads only when its messages carry at least
/// this many bytes: below it, starting a thread costs more than it saves.
const PARALLEL_MIN_BYTES: usize = 32 << 10;

impl Core {
    /// Handles a chunk's input messages (routed, in order) and repartition
    /// records (decided, in the order consumed for each task); on two threads
    /// when the chunk holds more than one unit of work (an input message, a
    /// task's records) and is worth it.
    pub(super) fn handle(
        &mut self,
        inputs: &[&BorrowedMessage<'_>],
        records: &[&BorrowedMessage<'_>],
    ) {
        let mut by_task: BTreeMap<i32, Vec<&BorrowedMessage<'_>>> = BTreeMap::new();
        for &m in records {
            if !self.tasks.contains_key(&m.partition()) {
                // Only while a revocation is under way: the next owner reads it.
                tracing::debug!(
                    partition = m.partition(),
                    "record of a partition without a task; skipped"
                );
                continue;
            }
            by_task.entry(m.partition()).or_default().push(m);
        }
        let bytes: usize = inputs
            .iter()
            .chain(by_task.values().flatten())
            .map(|m| m.payload_len())
            .sum();
        if inputs.len() + by_task.len() < 2 || bytes < PARALLEL_MIN_BYTES {
            for &m in inputs {
                self.route(m);
            }
            for m in by_task.into_values().flatten() {
                self.decide(m);
            }
            return;
        }
        let now = wall_clock();
        let fingerprints = self.cfg.pipeline.audit != AuditMode::Off;
        let rules = self.rules.clone();
        let topo = &self.topo;
        let mut units: Vec<Unit<'_, '_, '_>> =
            inputs.iter().map(|&m| Unit::Route(m, None)).collect();
        units.extend(self.tasks.iter_mut().filter_map(|(p, task)| {
            let records = by_task.remove(p)?;
            Some(Unit::Decide(Job {
                engine: &mut task.engine,
                records,
                outputs: Outputs::default(),
                alerts: 0,
                latencies: Vec::new(),
            }))
        }));
        // The first units, up to about half the bytes, on a second thread.
        let mut first = 0;
        let mut taken = 0;
        while first < units.len() - 1 && taken < bytes / 2 {
            taken += units[first].bytes();
            first += 1;
        }
        let (theirs, ours) = units.split_at_mut(first.max(1));
        self.metrics.parallel_chunks.inc();
        std::thread::scope(|s| {
            s.spawn(|| {
                for u in theirs {
                    u.run(&rules, topo, fingerprints, now);
                }
            });
            for u in ours {
                u.run(&rules, topo, fingerprints, now);
            }
        });
        let done: Vec<Done<'_, '_>> = units.into_iter().map(Unit::done).collect();
        for d in done {
            match d {
                Done::Routed(m, routed) => self.routed(m, routed, now),
                Done::Decided(outputs, alerts, latencies) => {
                    self.decided(alerts, &latencies);
                    debug_assert!(self.outputs.is_empty(), "every emit clears the outputs");
                    self.outputs = outputs;
                    self.emit(Vec::new(), wall_clock());
                }
            }
        }
    }

    /// Decides one repartition record on this thread.
    pub(super) fn decide(&mut self, m: &BorrowedMessage<'_>) {
        let p = m.partition();
        let Some(task) = self.tasks.get_mut(&p) else {
            tracing::debug!(
                partition = p,
                "record of a partition without a task; skipped"
            );
            return;
        };
        let fingerprints = self.cfg.pipeline.audit != AuditMode::Off;
        let (alerts, latency) = decide_record(
            &mut task.engine,
            &self.topo,
            fingerprints,
            m,
            &mut self.outputs,
        );
        self.decided(alerts, latency.as_slice());
        self.emit(Vec::new(), wall_clock());
    }

    fn decided(&self, alerts: usize, latencies: &[f64]) {
        self.metrics.stage_alerts[1].inc_by(alerts as u64);
        for &l in latencies {
            self.metrics.processing_latency.observe(l);
        }
    }
}

/// A unit of a chunk's work, done on whichever thread runs it.
enum Unit<'e, 'r, 'm> {
    /// An input message, and what the route stage makes of it.
    Route(&'r BorrowedMessage<'m>, Option<Routed>),
    Decide(Job<'e, 'r, 'm>),
}

/// A unit's result, to be produced on the loop's thread.
enum Done<'r, 'm> {
    Routed(&'r BorrowedMessage<'m>, Routed),
    Decided(Outputs, usize, Vec<f64>),
}

impl<'r, 'm> Unit<'_, 'r, 'm> {
    fn bytes(&self) -> usize {
        match self {
            Unit::Route(m, _) => m.payload_len(),
            Unit::Decide(j) => j.records.iter().map(|m| m.payload_len()).sum(),
        }
    }

    fn run(&mut self, rules: &RuleSet, topo: &Topology, fingerprints: bool, now: Ts) {
        match self {
            Unit::Route(m, routed) => {
                *routed = Some(plan(m.payload().unwrap_or(b""), rules, topo, now));
            }
            Unit::Decide(job) => job.run(topo, fingerprints),
        }
    }

    fn done(self) -> Done<'r, 'm> {
        match self {
            Unit::Route(m, routed) => Done::Routed(m, routed.expect("every unit ran")),
            Unit::Decide(j) => Done::Decided(j.outputs, j.alerts, j.latencies),
        }
    }
}

/// One task's records of a chunk, decided in the order consumed.
struct Job<'e, 'r, 'm> {
    engine: &'e mut Engine,
    records: Vec<&'r BorrowedMessage<'m>>,
    outputs: Outputs,
    alerts: usize,
    latencies: Vec<f64>,
}

impl Job<'_, '_, '_> {
    fn run(&mut self, topo: &Topology, fingerprints: bool) {
        for m in &self.records {
            let (alerts, latency) =
                decide_record(self.engine, topo, fingerprints, m, &mut self.outputs);
            self.alerts += alerts;
            self.latencies.extend(latency);
        }
    }
}

/// A task's engine decides one repartition record (and fires the timers due
/// before and at once after it) into `out`. Returns the alerts it fed and,
/// for records of alerts, the time since their input was produced (seconds).
fn decide_record(
    engine: &mut Engine,
    topo: &Topology,
    fingerprints: bool,
    m: &BorrowedMessage<'_>,
    out: &mut Outputs,
) -> (usize, Option<f64>) {
    let now = wall_clock();
    let p = m.partition();
    let (mut topic, mut partition, mut offset) = (None, None, None);
    let mut role: &[u8] = ROLE_ALERTS;
    let mut source = None;
    if let Some(h) = m.headers() {
        for h in h.iter() {
            let v = h.value.unwrap_or_default();
            let num = || {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
            };
            match h.key {
                ROLE => role = v,
                SOURCE_TOPIC => topic = std::str::from_utf8(v).ok(),
                SOURCE_PARTITION => partition = num(),
                SOURCE_OFFSET => offset = num(),
                SOURCE_TIMESTAMP => source = num().map(crate::model::Ts),
                _ => {}
            }
        }
    }
    let origin = match (topic, partition, offset) {
        (Some(t), Some(p), Some(o)) => topo.input_id(t, p as i32, o),
        _ => None,
    }
    .unwrap_or(0);
    engine.tick_if_due(now, out);
    let payload = m.payload().unwrap_or(b"");
    match role {
        ROLE_SHIFT => {
            match serde_json::from_slice::<Vec<ShiftNote>>(payload) {
                Ok(notes) => {
                    for n in &notes {
                        engine.observe_shift(n);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, partition = p, "unreadable shift notes record; skipped")
                }
            }
            return (0, None);
        }
        ROLE_SOURCES => {
            // Broadcast by an earlier version (an upgrade's repartition
            // backlog): the owner of those alerts publishes them to the table.
            tracing::debug!(
                partition = p,
                "broadcast inhibition sources record of an earlier version; ignored"
            );
            return (0, None);
        }
        ROLE_DELIVERY => {
            match serde_json::from_slice::<DeliveryPart>(payload) {
                Ok(part) => engine.deliver(part, now, out),
                // Written by this program's own serializer: unreadable means
                // a newer version's record (README, Operations: upgrading).
                Err(error) => {
                    tracing::error!(%error, partition = p, "unreadable notification delivery record; skipped")
                }
            }
            return (0, None);
        }
        _ => {}
    }
    let opts = FeedOptions {
        ids: InputIds::PerMessage,
        fingerprints,
        observe: None,
    };
    let fed = feed_with(engine, payload, now, origin, out, opts);
    // Timers due at `now` (group_wait 0) fire without waiting for the next turn.
    engine.tick_if_due(now, out);
    (
        fed.alerts as usize,
        source.map(|ts| now.since(ts).as_secs_f64()),
    )
}
