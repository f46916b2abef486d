//! The sources topic: the Kafka edge of [`SharedSources`], the table of
//! every task's inhibition sources.
//!
//! Task p writes its own sources to partition p of `<group_id>-sources`
//! (compacted, partitioned like the repartition topic) with its changelog
//! records, in the same commit or transaction (`store::write_changes`). Every
//! instance reads every partition, from the beginning and then as it grows,
//! on a task of its own, into one table its engines consult: one copy of the
//! sources per instance, not one per task. The pipeline consumes nothing
//! before the reader has caught up with what the topic held at start.
//!
//! Guarantees: read_committed, so in exactly-once mode the table holds only
//! committed sources. A source becomes visible to other tasks once its
//! owner's commit is done and the reader has fetched it (about one commit
//! interval); until then a target is inhibited only by its group's flush
//! re-check, as a target that arrives before its source always was.
//!
//! The reader lives as long as the pipeline's Kafka clients and is rebuilt
//! with them (reading the topic again).

use crate::engine::SharedSources;
use crate::pipeline::Config;
use crate::telemetry::metrics::Metrics;
use futures_util::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct SourcesReader {
    table: Arc<SharedSources>,
    caught_up: tokio::sync::watch::Receiver<bool>,
    topic: String,
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SourcesReader {
    /// Starts reading every partition of `topic` into a new table.
    pub async fn start(
        cfg: &Config,
        topic: &str,
        partitions: i32,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<SourcesReader> {
        let mut c = super::table_reader_config(cfg, "sources");
        // Not overridable: an aborted transaction's sources must never count,
        // and a partition's end is how it knows it caught up.
        c.set("isolation.level", "read_committed");
        c.set("enable.partition.eof", "true");
        let consumer: StreamConsumer<super::store::Quiet> =
            c.create_with_context(super::store::Quiet::default())?;
        // What the topic holds now: caught up once every partition is read to here.
        let owned = topic.to_owned();
        let (consumer, (behind, tpl)) = super::off_runtime(consumer, move |consumer| {
            let topic = owned.as_str();
            let mut behind = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            let started = std::time::Instant::now();
            for p in 0..partitions {
                // A topic just created answers NotLeaderForPartition for a moment: retry.
                let (low, high) = loop {
                    match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                        Ok(w) => break w,
                        Err(error) if started.elapsed() < Duration::from_secs(30) => {
                            tracing::debug!(%error, partition = p, "sources topic watermarks; retrying");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Err(error) => return Err(error.into()),
                    }
                };
                if high > low {
                    behind.insert(p, high);
                }
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
            Ok((behind, tpl))
        })
        .await?;
        consumer.assign(&tpl)?;
        tracing::info!(
            topic,
            partitions,
            behind = behind.len(),
            "reading inhibition sources"
        );
        let table = Arc::new(SharedSources::default());
        let (caught_tx, caught_up) = tokio::sync::watch::channel(behind.is_empty());
        let stop = tokio_util::sync::CancellationToken::new();
        let reader = Reader {
            consumer,
            table: table.clone(),
            behind,
            caught_up: caught_tx,
            metrics,
        };
        let task = tokio::spawn(reader.run(stop.clone()));
        Ok(SourcesReader {
            table,
            caught_up,
            topic: topic.to_owned(),
            stop,
            task: Some(task),
        })
    }

    pub fn table(&self) -> &Arc<SharedSources> {
        &self.table
    }

    /// Waits until everything the topic held at start is in the table.
    pub async fn wait_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        super::wait_caught_up(&self.caught_up, timeout, "inhibition sources", &self.topic).await
    }

    /// Stops reading and closes the consumer before returning, so nothing of
    /// it outlives the pipeline's clients (dropping only asks it to stop).
    pub async fn close(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SourcesReader {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Reader {
    consumer: StreamConsumer<super::store::Quiet>,
    table: Arc<SharedSources>,
    /// Partitions not read up to their end at start yet, with that end.
    behind: HashMap<i32, i64>,
    caught_up: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Reader {
    async fn run(mut self, stop: tokio_util::sync::CancellationToken) {
        let errors = super::throttle::Throttle::default();
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                m = self.consumer.recv() => m,
            };
            // Apply everything already fetched, then publish the gauge once.
            let mut next = Some(first);
            let mut failed = false;
            while let Some(r) = next {
                match r {
                    Ok(m) => {
                        let value = m.payload();
                        if let Err(error) =
                            self.table
                                .apply_read(m.partition(), m.key().unwrap_or_default(), value)
                        {
                            if let Some(left_out) = errors.check("unreadable") {
                                tracing::warn!(%error, partition = m.partition(), offset = m.offset(), left_out, "inhibition sources record skipped");
                            }
                        }
                        if self
                            .behind
                            .get(&m.partition())
                            .is_some_and(|&end| m.offset() + 1 >= end)
                        {
                            self.behind.remove(&m.partition());
                        }
                    }
                    // read_committed ends a partition at its last committed
                    // record, which a transaction's marker may follow.
                    Err(KafkaError::PartitionEOF(p)) => {
                        self.behind.remove(&p);
                    }
                    Err(e) => {
                        if let Some(left_out) = errors.check(&format!("{e:?}")) {
                            tracing::warn!(error = %e, left_out, "reading the inhibition sources topic");
                        }
                        failed = true;
                        break;
                    }
                }
                next = self.consumer.recv().now_or_never();
            }
            self.metrics
                .inhibition_sources
                .set(self.table.alerts() as i64);
            if self.behind.is_empty() && !*self.caught_up.borrow() {
                let _ = self.caught_up.send(true);
            }
            if failed {
                // Do not spin on an error.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
