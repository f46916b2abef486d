//! State stores: restoring a task's engine from its changelog partition, and
//! writing the engine's changes back to it. The engine never knows whether its
//! state was just restored (the processor/store split of Kafka Streams).
//!
//! Guarantees: a restore reads the partition from its beginning to its end as a
//! read_committed consumer, so in exactly-once mode it sees exactly the state
//! of the last committed transaction; at least once, the state of the last
//! acknowledged changes (at least what the last offset commit covered).

use super::produce::{Kind, Output, Record};
use crate::engine::{Engine, RestoreReport};
use crate::rules::RuleSet;
use crate::telemetry::metrics::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads changelog partitions, never in a group and never committing.
pub struct Restorer {
    config: rdkafka::ClientConfig,
    topic: String,
    /// The consumer and when it was last used. Rebalances need it; an
    /// instance whose partitions stay put does not, and a client costs its
    /// threads' wakeups even unassigned: [`Restorer::release_idle`].
    consumer: Option<(BaseConsumer<Quiet>, Instant)>,
}

/// Reaching the end of a partition is how a restore knows it is done, not an
/// error worth a log line.
#[derive(Default)]
pub struct Quiet {
    logs: super::throttle::Throttle,
}

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.logs.kafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(&error, KafkaError::Global(c) if *c == rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            self.logs.kafka_error(&error, reason);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// One partition's restored engine.
pub struct Restored {
    pub partition: i32,
    pub engine: Engine,
    pub report: RestoreReport,
    pub took: Duration,
}

impl Restorer {
    pub fn new(cfg: &super::Config, topic: String) -> anyhow::Result<Restorer> {
        let mut c = super::client_config(cfg, &cfg.kafka.consumer_properties);
        // Never committed: the group id only satisfies librdkafka.
        c.set("group.id", format!("{}-restore", cfg.kafka.group_id));
        c.set("enable.auto.commit", "false");
        c.set("enable.partition.eof", "true");
        c.set("isolation.level", "read_committed");
        c.set("auto.offset.reset", "earliest");
        c.set("fetch.wait.max.ms", "50");
        c.remove("group.instance.id");
        // Made now, so that a bad setting fails the start, not a rebalance.
        let consumer = c.create_with_context(Quiet::default())?;
        Ok(Restorer {
            config: c,
            topic,
            consumer: Some((consumer, Instant::now())),
        })
    }

    /// The consumer, made again if it was released (a function of the two
    /// fields, so that callers keep borrowing the topic).
    fn consumer<'c>(
        slot: &'c mut Option<(BaseConsumer<Quiet>, Instant)>,
        config: &rdkafka::ClientConfig,
    ) -> Result<&'c BaseConsumer<Quiet>, KafkaError> {
        let (consumer, used) = match slot {
            Some(c) => c,
            none => none.insert((
                config.create_with_context(Quiet::default())?,
                Instant::now(),
            )),
        };
        *used = Instant::now();
        Ok(consumer)
    }

    /// Closes the consumer if nothing used it for `idle`; the next restore
    /// or [`Restorer::end`] makes another (a few milliseconds).
    pub fn release_idle(&mut self, idle: Duration) -> bool {
        let unused = self
            .consumer
            .as_ref()
            .is_some_and(|(_, used)| used.elapsed() >= idle);
        if unused {
            self.consumer = None;
        }
        unused
    }

    /// Rebuilds the engines of `partitions` from their changelog partitions
    /// under `rules`, reading them together. An empty partition costs one
    /// watermark request.
    pub fn restore(
        &mut self,
        partitions: &[i32],
        rules: Arc<RuleSet>,
        metrics: &Metrics,
        give_up: Duration,
    ) -> anyhow::Result<Vec<Restored>> {
        let started = Instant::now();
        let mut done = Vec::new();
        let mut reading: HashMap<i32, Vec<crate::engine::Change>> = HashMap::new();
        for &p in partitions {
            // A fresh or moving partition answers NotLeaderForPartition for a moment: retry.
            let (low, high) = loop {
                match Self::consumer(&mut self.consumer, &self.config)?.fetch_watermarks(
                    &self.topic,
                    p,
                    Duration::from_secs(30),
                ) {
                    Ok(w) => break w,
                    Err(error) if started.elapsed() < give_up => {
                        tracing::warn!(%error, partition = p, "changelog watermarks; retrying");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(error) => return Err(error.into()),
                }
            };
            if high <= low {
                let (engine, report) =
                    Engine::from_changelog(rules.clone(), Vec::<crate::engine::Change>::new());
                done.push(Restored {
                    partition: p,
                    engine,
                    report,
                    took: started.elapsed(),
                });
            } else {
                reading.insert(p, Vec::new());
            }
        }
        if reading.is_empty() {
            return Ok(done);
        }
        let mut tpl = TopicPartitionList::new();
        for p in reading.keys() {
            tpl.add_partition_offset(&self.topic, *p, Offset::Beginning)?;
        }
        let consumer = Self::consumer(&mut self.consumer, &self.config)?;
        consumer.assign(&tpl)?;
        let result = loop {
            if reading.is_empty() {
                break Ok(());
            }
            if started.elapsed() > give_up {
                break Err(anyhow::anyhow!(
                    "restoring {} partitions {:?}: not at the end after {give_up:?}",
                    self.topic,
                    reading.keys().collect::<Vec<_>>()
                ));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some(records) = reading.get_mut(&m.partition()) {
                        records.push((
                            m.key().unwrap_or_default().to_vec(),
                            m.payload().map(<[u8]>::to_vec),
                        ));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(records) = reading.remove(&p) {
                        metrics.restore_records.inc_by(records.len() as u64);
                        let (engine, report) = Engine::from_changelog(rules.clone(), records);
                        done.push(Restored {
                            partition: p,
                            engine,
                            report,
                            took: started.elapsed(),
                        });
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "changelog read failed; retrying");
                }
                None => {}
            }
        };
        consumer.unassign()?;
        result.map(|()| done)
    }

    /// The changelog partition's end offset (to tell whether a kept engine is current).
    pub fn end(&mut self, p: i32) -> Option<i64> {
        Self::consumer(&mut self.consumer, &self.config)
            .ok()?
            .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
            .ok()
            .map(|(_, high)| high)
    }
}

/// Writes what changed in task `p`'s engine since the last call: to
/// changelog partition `p`, and its own inhibition sources to partition `p`
/// of the sources topic (in the same commit or transaction).
pub fn write_changes(
    engine: &mut Engine,
    topo: &super::topology::Topology,
    p: i32,
    out: &mut Output,
    metrics: &Metrics,
) {
    let changes = engine.take_changes();
    metrics.changelog_records.inc_by(changes.len() as u64);
    let sources = engine.take_source_records();
    metrics.source_records.inc_by(sources.len() as u64);
    for (kind, topic, records) in [
        (Kind::Changelog, &topo.changelog, changes),
        (Kind::Sources, &topo.sources, sources),
    ] {
        for (key, value) in records {
            out.send(Record {
                kind,
                topic: topic.clone(),
                partition: Some(p),
                key: Some(key),
                payload: value,
                headers: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changelog reader closes once unused for the idle time, not before,
    /// and is made again when wanted (no broker needed: librdkafka connects
    /// in the background).
    #[test]
    fn the_changelog_reader_closes_when_idle_and_opens_again() {
        let mut cfg = super::super::Config::default();
        cfg.kafka.bootstrap_servers = "127.0.0.1:1".into();
        let mut r = Restorer::new(&cfg, "changelog".into()).unwrap();
        assert!(
            r.consumer.is_some(),
            "made at start, so bad settings fail it"
        );
        assert!(!r.release_idle(Duration::from_secs(3600)), "used just now");
        assert!(r.consumer.is_some());
        assert!(r.release_idle(Duration::ZERO));
        assert!(r.consumer.is_none());
        assert!(!r.release_idle(Duration::ZERO), "nothing left to close");
        Restorer::consumer(&mut r.consumer, &r.config).unwrap();
        assert!(r.consumer.is_some(), "made again when wanted");
        assert!(!r.release_idle(Duration::from_secs(3600)));
    }
}
