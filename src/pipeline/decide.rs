//! The decide stage: a repartition record reaches the task of its partition,
//! whose engine decides the fates of its alerts (or, for inhibition sources
//! another task owns, only records them). Each alert carries the input id of
//! its original message, so audit records name the input topic, partition and
//! offset across the extra hop; shift notes are added to the books of the
//! squads this task keeps, and notifications of squads with a storm limit
//! are decided against the storm windows it keeps (their inputs get their
//! fates here, not where the group was flushed). It must not route or produce
//! state itself:
//! changes reach the changelog at commit (`store`), shift notes are routed
//! at commit (`route`).

use super::topology::{
    ROLE, ROLE_ALERTS, ROLE_DELIVERY, ROLE_SHIFT, ROLE_SOURCES, SOURCE_OFFSET, SOURCE_PARTITION,
    SOURCE_TIMESTAMP, SOURCE_TOPIC,
};
use super::{Core, wall_clock};
use crate::engine::{DeliveryPart, ShiftNote, SourceEntry};
use crate::ingest::{FeedOptions, InputIds, feed_with};
use rdkafka::message::{BorrowedMessage, Headers, Message};

impl Core {
    pub(super) fn decide(&mut self, m: &BorrowedMessage<'_>) {
        let now = wall_clock();
        let p = m.partition();
        if !self.tasks.contains_key(&p) {
            // Only while a revocation is under way: the next owner reads it.
            tracing::debug!(
                partition = p,
                "record of a partition without a task; skipped"
            );
            return;
        }
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
            (Some(t), Some(p), Some(o)) => self.topo.input_id(t, p as i32, o),
            _ => None,
        }
        .unwrap_or(0);
        self.advance_task(p, now);
        let payload = m.payload().unwrap_or(b"");
        let task = self.tasks.get_mut(&p).expect("checked above");
        match role {
            ROLE_SHIFT => {
                match serde_json::from_slice::<Vec<ShiftNote>>(payload) {
                    Ok(notes) => {
                        for n in &notes {
                            task.engine.observe_shift(n);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, partition = p, "unreadable shift notes record; skipped")
                    }
                }
                return;
            }
            ROLE_SOURCES => {
                match serde_json::from_slice::<Vec<SourceEntry>>(payload) {
                    Ok(entries) => task.engine.observe_sources(&entries),
                    Err(error) => {
                        tracing::warn!(%error, partition = p, "unreadable inhibition sources record; skipped")
                    }
                }
                return;
            }
            ROLE_DELIVERY => {
                match serde_json::from_slice::<DeliveryPart>(payload) {
                    Ok(part) => {
                        task.engine.deliver(part, now, &mut self.outputs);
                        self.emit(Vec::new(), now);
                    }
                    // Written by this program's own serializer: unreadable means
                    // a newer version's record (README, Operations: upgrading).
                    Err(error) => {
                        tracing::error!(%error, partition = p, "unreadable notification delivery record; skipped")
                    }
                }
                return;
            }
            _ => {}
        }
        let opts = FeedOptions {
            ids: InputIds::PerMessage,
            fingerprints: self.cfg.pipeline.audit != super::AuditMode::Off,
            observe: None,
        };
        let fed = feed_with(
            &mut task.engine,
            payload,
            now,
            origin,
            &mut self.outputs,
            opts,
        );
        self.metrics.stage_alerts[1].inc_by(fed.alerts as u64);
        if let Some(ts) = source {
            self.metrics
                .processing_latency
                .observe(now.since(ts).as_secs_f64());
        }
        self.emit(Vec::new(), now);
        // Timers due at `now` (group_wait 0) fire without waiting for the next turn.
        self.advance_task(p, now);
    }

    fn advance_task(&mut self, p: i32, now: crate::model::Ts) {
        let Some(task) = self.tasks.get_mut(&p) else {
            return;
        };
        if task.engine.next_deadline().is_some_and(|d| d <= now) {
            task.engine.tick(now, &mut self.outputs);
            self.emit(Vec::new(), now);
        }
    }
}
