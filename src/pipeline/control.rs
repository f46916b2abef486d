//! The controls topic: the Kafka edge of [`crate::control`] (runtime
//! silences, acknowledgements, duty overrides).
//!
//! The topic (`<group_id>-controls`, one partition, compacted) is a global
//! table: every instance reads it whole, from the beginning, on a thread of
//! its own, and publishes each new table to [`control::Shared`], where the
//! decide tasks and the HTTP API take it. A write ([`ControlLog::write`])
//! returns once this instance has read it back, so the API lists a silence
//! as soon as it answers its creation; other instances see it as fast as
//! the broker hands it to their readers (a long-polling fetch: milliseconds).
//!
//! It lives as long as the process, independent of the pipeline's clients
//! (which are rebuilt after failures): the API keeps answering meanwhile.

use crate::control::{self, Controls, Record};
use crate::pipeline::Config;
use crate::pipeline::polled::AsyncProducer;
use crate::telemetry::metrics::Metrics;
use futures_util::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// How long a write waits for the broker and then for its own read-back.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often records that outlived the retention are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct ControlLog {
    topic: String,
    audit_topic: Option<String>,
    /// Made at the first write: changes are rare, and every producer costs a
    /// polling thread while idle (`polled.rs`).
    producer_cfg: rdkafka::ClientConfig,
    producer: std::sync::OnceLock<AsyncProducer>,
    shared: Arc<control::Shared>,
    /// The next offset the reader will apply.
    applied: tokio::sync::watch::Receiver<i64>,
    /// Whether the reader has applied everything that was in the topic at start.
    caught_up: tokio::sync::watch::Receiver<bool>,
    stop: tokio_util::sync::CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    retention: Duration,
    /// Keeps writes of one instance in order (a replace is two records).
    writing: tokio::sync::Mutex<()>,
}

impl ControlLog {
    /// Creates the topic when missing and starts reading it.
    pub async fn start(cfg: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<ControlLog>> {
        let topic = super::topology::ensure_controls(cfg).await?;
        let consumer_cfg = super::table_reader_config(cfg, "controls");
        // A stream consumer wakes on librdkafka's events: an idle reader
        // costs no polling, and stopping it is immediate.
        let consumer: StreamConsumer<super::throttle::Throttled> =
            consumer_cfg.create_with_context(super::throttle::Throttled::default())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let (consumer, high) = {
            let topic = topic.clone();
            super::off_runtime(consumer, move |c| {
                let (_, high) = c.fetch_watermarks(&topic, 0, Duration::from_secs(10))?;
                Ok(high)
            })
            .await?
        };

        let mut producer_cfg = super::client_config(cfg, &cfg.kafka.producer_properties);
        for (k, v) in [
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "10000"),
            ("linger.ms", "0"),
        ] {
            super::set_default(&mut producer_cfg, k, v);
        }

        let (applied_tx, applied) = tokio::sync::watch::channel(0i64);
        let (caught_tx, caught_up) = tokio::sync::watch::channel(high <= 0);
        let shared = Arc::new(control::Shared::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let reader = Reader {
            consumer,
            shared: shared.clone(),
            applied: applied_tx,
            caught_up: caught_tx,
            start_high: high,
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(reader.run(stop.clone()));
        tracing::info!(topic, records = high, "reading runtime controls");
        Ok(Arc::new(ControlLog {
            topic,
            audit_topic: Some(cfg.kafka.audit_topic.clone()).filter(|t| !t.is_empty()),
            producer_cfg,
            producer: std::sync::OnceLock::new(),
            shared,
            applied,
            caught_up,
            stop,
            task: std::sync::Mutex::new(Some(task)),
            metrics,
            retention: cfg.pipeline.controls_retention()?,
            writing: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn shared(&self) -> &Arc<control::Shared> {
        &self.shared
    }

    pub fn snapshot(&self) -> Arc<Controls> {
        self.shared.snapshot()
    }

    pub fn caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    /// Waits until everything that was in the topic at start is applied.
    pub async fn wait_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        super::wait_caught_up(&self.caught_up, timeout, "controls", &self.topic).await
    }

    /// Writes records (in order) and waits until this instance's table has
    /// them. `who` and `action` go to the audit trail.
    pub async fn write(&self, records: &[Record], who: &str, action: &str) -> anyhow::Result<()> {
        let _order = self.writing.lock().await;
        let mut last = -1;
        for r in records {
            let value = serde_json::to_vec(r)?;
            last = self.put(&r.key(), Some(&value)).await?;
            let kind = match r {
                Record::Silence(_) => "silence",
                Record::Ack(_) => "ack",
                Record::Override(_) => "override",
            };
            self.metrics
                .control_changes
                .with_label_values(&[kind, action])
                .inc();
            self.audit(kind, action, who, &r.key(), Some(r)).await;
        }
        self.wait_applied(last).await
    }

    /// Removes a record (a tombstone) and waits until this instance's table has it.
    pub async fn remove(&self, key: &str, who: &str) -> anyhow::Result<()> {
        let _order = self.writing.lock().await;
        let offset = self.put(key, None).await?;
        let kind = key.split('/').next().unwrap_or("unknown");
        let kind = match kind {
            "silence" | "ack" | "override" => kind,
            _ => "unknown",
        };
        self.metrics
            .control_changes
            .with_label_values(&[kind, "removed"])
            .inc();
        self.audit(kind, "removed", who, key, None).await;
        self.wait_applied(offset).await
    }

    fn producer(&self) -> anyhow::Result<&AsyncProducer> {
        if let Some(p) = self.producer.get() {
            return Ok(p);
        }
        let p = AsyncProducer::new(&self.producer_cfg)?;
        Ok(self.producer.get_or_init(|| p))
    }

    async fn put(&self, key: &str, value: Option<&[u8]>) -> anyhow::Result<i64> {
        let producer = self.producer()?;
        let delivered = match value {
            Some(v) => {
                producer
                    .send(&self.topic, Some(key.as_bytes()), v, None, WRITE_TIMEOUT)
                    .await
            }
            None => {
                producer
                    .send_tombstone(&self.topic, key.as_bytes(), WRITE_TIMEOUT)
                    .await
            }
        };
        let (_, offset) = delivered
            .map_err(|e| anyhow::anyhow!("writing to the controls topic {}: {e}", self.topic))?;
        Ok(offset)
    }

    async fn wait_applied(&self, offset: i64) -> anyhow::Result<()> {
        if offset < 0 {
            return Ok(());
        }
        let mut rx = self.applied.clone();
        tokio::time::timeout(WRITE_TIMEOUT, rx.wait_for(|next| *next > offset))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the change was written but not read back within {WRITE_TIMEOUT:?}")
            })?
            .map_err(|_| anyhow::anyhow!("the controls reader stopped"))?;
        Ok(())
    }

    /// Every change is audited: a log line, and a record on the audit topic.
    async fn audit(&self, kind: &str, action: &str, who: &str, key: &str, r: Option<&Record>) {
        tracing::info!(target: "squadron::audit", kind, action, who, key, "control changed");
        let Some(topic) = &self.audit_topic else {
            return;
        };
        let record = serde_json::json!({
            "control": kind,
            "action": action,
            "by": who,
            "key": key,
            "at": super::wall_clock(),
            "record": r,
        });
        let payload = serde_json::to_vec(&record).expect("audit record serializes");
        let Ok(producer) = self.producer() else {
            return;
        };
        if let Err(e) = producer
            .send(topic, Some(key.as_bytes()), &payload, None, WRITE_TIMEOUT)
            .await
        {
            tracing::warn!(error = %e, topic, "could not write the audit record of a control change");
        }
    }

    /// Removes, every minute, records that outlived the retention. Every
    /// instance does it; a tombstone written twice is harmless.
    pub async fn sweep(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if !self.caught_up() {
                continue;
            }
            for key in self
                .snapshot()
                .outlived(super::wall_clock(), self.retention)
            {
                if let Err(e) = self.remove(&key, "squadron (retention)").await {
                    tracing::warn!(error = %format!("{e:#}"), key, "could not remove an outlived control");
                    break;
                }
            }
        }
    }
}

impl ControlLog {
    /// Stops the reader and closes its consumer (before an in-process broker
    /// goes away, so the reader does not report it gone).
    pub async fn close(&self) {
        self.stop.cancel();
        let task = self.task.lock().expect("task lock").take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for ControlLog {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Reader {
    consumer: StreamConsumer<super::throttle::Throttled>,
    shared: Arc<control::Shared>,
    applied: tokio::sync::watch::Sender<i64>,
    caught_up: tokio::sync::watch::Sender<bool>,
    start_high: i64,
    metrics: Arc<Metrics>,
}

impl Reader {
    async fn run(self, stop: tokio_util::sync::CancellationToken) {
        let mut table = Controls::default();
        let errors = super::throttle::Throttle::default();
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                m = self.consumer.recv() => m,
            };
            let mut next = None;
            let mut apply = |r: Result<
                rdkafka::message::BorrowedMessage<'_>,
                rdkafka::error::KafkaError,
            >| match r {
                Ok(m) => {
                    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                    // A record without a value is a tombstone; an empty one counts as one too.
                    let value = m.payload().filter(|v| !v.is_empty());
                    if let Err(error) = table.apply(&key, value) {
                        tracing::warn!(
                            error,
                            offset = m.offset(),
                            "unreadable control record; skipped"
                        );
                    }
                    next = Some(m.offset() + 1);
                    true
                }
                Err(e) => {
                    if let Some(left_out) = errors.check(&format!("{e:?}")) {
                        tracing::warn!(error = %e, left_out, "reading the controls topic");
                    }
                    false
                }
            };
            // Apply everything already fetched, then publish one table.
            if apply(first) {
                while let Some(r) = self.consumer.recv().now_or_never() {
                    if !apply(r) {
                        break;
                    }
                }
            }
            let Some(next) = next else {
                // An error: do not spin on it.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            for (kind, n) in [
                ("silence", table.silences.len()),
                ("ack", table.acks.len()),
                ("override", table.overrides.len()),
            ] {
                self.metrics
                    .controls
                    .with_label_values(&[kind])
                    .set(n as i64);
            }
            self.shared.publish(Arc::new(table.clone()));
            let _ = self.applied.send(next);
            if next >= self.start_high {
                let _ = self.caught_up.send(true);
            }
        }
    }
}
