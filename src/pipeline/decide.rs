//! The decide stage: a repartition record, or a batch routed by this
//! instance to a task it owns ([`super::lane`]), reaches its task, whose
//! engine decides the fates of its alerts. Each alert carries the input id of
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
//! a chunk of consumed messages is handled in two steps, each on two threads
//! when it is worth it ([`Core::handle`]): input messages are decoded and cut
//! into batches per task ([`super::route::plan`]), which the loop's thread
//! then produces, holds or keeps for a local task in the order consumed; then
//! each task decides its consumed records in the order consumed, followed by
//! the batches routed to it directly, into its own [`Outputs`], turned into
//! records one task at a time on the loop's thread.

use super::lane::{Batch, parse_marker};
use super::route::{Routed, plan};
use super::topology::{
    MARKER, ROLE, ROLE_ALERTS, ROLE_DELIVERY, ROLE_MARKER, ROLE_SHIFT, ROLE_SOURCES, SOURCE_OFFSET,
    SOURCE_PARTITION, SOURCE_TIMESTAMP, SOURCE_TOPIC, Topology,
};
use super::{AuditMode, Core, Task, wall_clock};
use crate::engine::{DeliveryPart, Engine, Outputs, ShiftNote};
use crate::ingest::{FeedOptions, InputIds, feed_with};
use crate::model::Ts;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::BTreeMap;

/// A step is done on two threads only when its work carries at least this
/// many bytes: below it, starting a thread costs more than it saves.
const PARALLEL_MIN_BYTES: usize = 32 << 10;

impl Core {
    /// Handles a chunk's input messages (routed, in order) and repartition
    /// records (decided, in the order consumed for each task, then the
    /// batches this chunk routed to the task directly).
    pub(super) fn handle(
        &mut self,
        inputs: &[&BorrowedMessage<'_>],
        records: &[&BorrowedMessage<'_>],
    ) {
        let now = wall_clock();
        let plans = self.plan_all(inputs, now);
        let mut direct: BTreeMap<i32, Vec<Batch>> = BTreeMap::new();
        for (&m, routed) in inputs.iter().zip(plans) {
            self.routed(m, routed, now, &mut direct);
        }
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
        self.decide_all(by_task, direct);
    }

    /// The route stage's plan of each input message, in order.
    fn plan_all(&mut self, inputs: &[&BorrowedMessage<'_>], now: Ts) -> Vec<Routed> {
        let (rules, topo) = (&*self.rules, &self.topo);
        let plan_one = |m: &BorrowedMessage<'_>| plan(m.payload().unwrap_or(b""), rules, topo, now);
        let bytes: usize = inputs.iter().map(|m| m.payload_len()).sum();
        if inputs.len() < 2 || bytes < PARALLEL_MIN_BYTES {
            return inputs.iter().map(|m| plan_one(m)).collect();
        }
        let split = half(inputs.iter().map(|m| m.payload_len()), bytes);
        self.metrics.parallel_chunks.inc();
        let (theirs, ours) = inputs.split_at(split);
        std::thread::scope(|s| {
            let first = s.spawn(|| theirs.iter().map(|m| plan_one(m)).collect::<Vec<_>>());
            let second: Vec<Routed> = ours.iter().map(|m| plan_one(m)).collect();
            let mut all = first.join().expect("routing is guarded against panics");
            all.extend(second);
            all
        })
    }

    /// Each task decides its records and direct batches, then its outputs
    /// become records, one task at a time.
    fn decide_all(
        &mut self,
        mut by_task: BTreeMap<i32, Vec<&BorrowedMessage<'_>>>,
        mut direct: BTreeMap<i32, Vec<Batch>>,
    ) {
        let fingerprints = self.cfg.pipeline.audit != AuditMode::Off;
        let (topo, run) = (&self.topo, self.run);
        let mut jobs: Vec<Job<'_, '_, '_>> = self
            .tasks
            .iter_mut()
            .filter_map(|(p, task)| {
                let records = by_task.remove(p).unwrap_or_default();
                let direct = direct.remove(p).unwrap_or_default();
                (!records.is_empty() || !direct.is_empty()).then(|| Job {
                    partition: *p,
                    task,
                    records,
                    direct,
                    outputs: Outputs::default(),
                    alerts: 0,
                    latencies: Vec::new(),
                })
            })
            .collect();
        let bytes: usize = jobs.iter().map(Job::bytes).sum();
        if jobs.len() < 2 || bytes < PARALLEL_MIN_BYTES {
            for j in &mut jobs {
                j.run(topo, fingerprints, run);
            }
        } else {
            let split = half(jobs.iter().map(Job::bytes), bytes);
            self.metrics.parallel_chunks.inc();
            let (theirs, ours) = jobs.split_at_mut(split);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for j in theirs {
                        j.run(topo, fingerprints, run);
                    }
                });
                for j in ours {
                    j.run(topo, fingerprints, run);
                }
            });
        }
        let done: Vec<(Outputs, usize, Vec<f64>)> = jobs
            .into_iter()
            .map(|j| (j.outputs, j.alerts, j.latencies))
            .collect();
        for (outputs, alerts, latencies) in done {
            self.metrics.stage_alerts[1].inc_by(alerts as u64);
            for l in latencies {
                self.metrics.processing_latency.observe(l);
            }
            debug_assert!(self.outputs.is_empty(), "every emit clears the outputs");
            self.outputs = outputs;
            self.emit(Vec::new(), wall_clock());
        }
    }
}

/// Where to cut units of these sizes (adding up to `total`) so that the first
/// part holds about half the bytes; at least one unit on each side.
fn half(sizes: impl Iterator<Item = usize>, total: usize) -> usize {
    let sizes: Vec<usize> = sizes.collect();
    let (mut cut, mut taken) = (0, 0);
    while cut < sizes.len() - 1 && taken < total / 2 {
        taken += sizes[cut];
        cut += 1;
    }
    cut.max(1)
}

/// One task's work of a chunk: its consumed records in the order consumed,
/// then the batches routed to it directly.
struct Job<'t, 'r, 'm> {
    /// The task's repartition partition.
    partition: i32,
    task: &'t mut Task,
    records: Vec<&'r BorrowedMessage<'m>>,
    direct: Vec<Batch>,
    outputs: Outputs,
    alerts: usize,
    latencies: Vec<f64>,
}

impl Job<'_, '_, '_> {
    fn bytes(&self) -> usize {
        self.records.iter().map(|m| m.payload_len()).sum::<usize>()
            + self.direct.iter().map(|b| b.body.len()).sum::<usize>()
    }

    fn run(&mut self, topo: &Topology, fingerprints: bool, run: u64) {
        let decide = Decide { fingerprints };
        for m in std::mem::take(&mut self.records) {
            let meta = Meta::of(m, topo);
            if meta.role == ROLE_MARKER {
                // One of this run's markers back: the lane may open, and what
                // it held is decided here, after everything before the marker.
                let held = meta
                    .marker
                    .and_then(|v| parse_marker(run, v))
                    .and_then(|n| self.task.lane.marker_read(n));
                for b in held.into_iter().flatten() {
                    self.batch(&decide, &b);
                }
                continue;
            }
            let (alerts, latency) = decide.payload(
                &mut self.task.engine,
                m.partition(),
                &meta,
                m.payload().unwrap_or(b""),
                &mut self.outputs,
            );
            self.alerts += alerts;
            self.latencies.extend(latency);
        }
        for b in std::mem::take(&mut self.direct) {
            self.batch(&decide, &b);
        }
    }

    fn batch(&mut self, decide: &Decide, b: &Batch) {
        let meta = Meta {
            role: ROLE_ALERTS,
            origin: b.input,
            source: b.source,
            marker: None,
        };
        let (alerts, latency) = decide.payload(
            &mut self.task.engine,
            self.partition,
            &meta,
            &b.body,
            &mut self.outputs,
        );
        self.alerts += alerts;
        self.latencies.extend(latency);
    }
}

/// What a repartition record's headers say.
struct Meta<'a> {
    role: &'a [u8],
    /// The input id of the message its alerts came from (0: none).
    origin: u64,
    /// The input message's broker timestamp.
    source: Option<Ts>,
    /// A marker's value ([`super::lane::marker_value`]).
    marker: Option<&'a [u8]>,
}

impl<'a> Meta<'a> {
    fn of(m: &'a BorrowedMessage<'_>, topo: &Topology) -> Meta<'a> {
        let (mut topic, mut partition, mut offset) = (None, None, None);
        let mut meta = Meta {
            role: ROLE_ALERTS,
            origin: 0,
            source: None,
            marker: None,
        };
        if let Some(h) = m.headers() {
            for h in h.iter() {
                let v = h.value.unwrap_or_default();
                let num = || {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                };
                match h.key {
                    ROLE => meta.role = v,
                    SOURCE_TOPIC => topic = std::str::from_utf8(v).ok(),
                    SOURCE_PARTITION => partition = num(),
                    SOURCE_OFFSET => offset = num(),
                    SOURCE_TIMESTAMP => meta.source = num().map(Ts),
                    MARKER => meta.marker = Some(v),
                    _ => {}
                }
            }
        }
        meta.origin = match (topic, partition, offset) {
            (Some(t), Some(p), Some(o)) => topo.input_id(t, p as i32, o),
            _ => None,
        }
        .unwrap_or(0);
        meta
    }
}

/// How a task's engine decides what reaches it.
struct Decide {
    fingerprints: bool,
}

impl Decide {
    /// The engine decides one record's payload (and fires the timers due
    /// before and at once after it) into `out`. Returns the alerts it fed and,
    /// for alerts, the time since their input was produced (seconds).
    /// `partition` names the task's partition in logs.
    fn payload(
        &self,
        engine: &mut Engine,
        partition: i32,
        meta: &Meta<'_>,
        payload: &[u8],
        out: &mut Outputs,
    ) -> (usize, Option<f64>) {
        let now = wall_clock();
        let p = partition;
        engine.tick_if_due(now, out);
        match meta.role {
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
            fingerprints: self.fingerprints,
            observe: None,
        };
        let fed = feed_with(engine, payload, now, meta.origin, out, opts);
        // Timers due at `now` (group_wait 0) fire without waiting for the next turn.
        engine.tick_if_due(now, out);
        (
            fed.alerts as usize,
            meta.source.map(|ts| now.since(ts).as_secs_f64()),
        )
    }
}
