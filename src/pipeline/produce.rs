//! Producing: every record squadron writes (repartition, changelog,
//! notifications, dead letters, audit) goes through one [`Output`] producer,
//! which is transactional in exactly-once mode. Acknowledgements arrive on
//! librdkafka's thread; failed records are kept and sent again (at least once)
//! or fail the transaction (exactly once). It decides nothing about alerts.

use super::polled::Polled;
use crate::telemetry::metrics::Metrics;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a produced record goes: bounded, a metric label.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Repartition,
    Changelog,
    /// This instance's tasks' inhibition sources, for every instance's table.
    Sources,
    Notification,
    DeadLetter,
    Audit,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Repartition,
        Kind::Changelog,
        Kind::Sources,
        Kind::Notification,
        Kind::DeadLetter,
        Kind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Repartition => "repartition",
            Kind::Changelog => "changelog",
            Kind::Sources => "sources",
            Kind::Notification => "notification",
            Kind::DeadLetter => "dead_letter",
            Kind::Audit => "audit",
        }
    }
}

/// A record to produce. `partition: None` lets the partitioner choose by key.
pub struct Record {
    pub kind: Kind,
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone (changelog).
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// Delivery reports, on librdkafka's polling thread.
pub struct Deliveries {
    metrics: Arc<Metrics>,
    /// Records the broker did not take, to send again (at least once).
    failed: Mutex<Vec<(Kind, OwnedMessage)>>,
    /// Records the broker will never take (too large, unknown topic, not
    /// authorized), with the error: they go to the dead-letter topic.
    rejected: Mutex<Vec<(Kind, OwnedMessage, KafkaError)>>,
    logs: super::throttle::Throttle,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.logs.kafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.kafka_error(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, kind: usize) {
        if let Err((error, msg)) = result {
            let kind = Kind::ALL[kind];
            self.metrics
                .produce_errors
                .with_label_values(&[kind.as_str()])
                .inc();
            let left_out = self.logs.check(&format!(
                "delivery/{}/{:?}",
                kind.as_str(),
                error.rdkafka_error_code()
            ));
            if is_permanent(error) {
                if let Some(left_out) = left_out {
                    tracing::error!(%error, topic = msg.topic(), output = kind.as_str(), left_out, "the broker refuses this record for good: dead-lettering it");
                }
                self.rejected.lock().expect("rejected lock").push((
                    kind,
                    msg.detach(),
                    error.clone(),
                ));
            } else {
                if let Some(left_out) = left_out {
                    tracing::warn!(%error, topic = msg.topic(), output = kind.as_str(), left_out, "delivery failed; will retry");
                }
                self.failed
                    .lock()
                    .expect("failed lock")
                    .push((kind, msg.detach()));
            }
        }
    }
}

/// Produce errors that sending again cannot fix. A record failing with one is
/// dead-lettered with the error instead of blocking its partition for ever.
pub fn is_permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | MessageBatchTooLarge
                | InvalidMessageSize
                | InvalidRecord
                | UnknownTopic
                | UnknownPartition
                | UnknownTopicOrPartition
                | InvalidTopic
                | TopicAuthorizationFailed
                | PolicyViolation
        )
    )
}

/// Headers of a dead letter for a record the broker refused.
pub const PRODUCE_FAILED: &str = "produce_failed";

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The one producer, and the transaction it may have open.
pub struct Output {
    producer: Polled<Deliveries>,
    /// Where records the broker refuses for good go.
    dead_letter_topic: String,
    /// The producer's `message.max.bytes`: larger records are dead-lettered
    /// before they are sent (in exactly-once mode a refused record would abort
    /// every transaction holding it, for ever).
    max_message_bytes: usize,
    /// Exactly once: records go into transactions.
    transactional: bool,
    /// A transaction is open (begun, not yet committed or aborted).
    in_transaction: bool,
    /// Ids of notifications dead-lettered because the broker refused them.
    refused_notifications: Vec<String>,
    /// A record of the open transaction could not be handed to librdkafka:
    /// the transaction must not commit.
    poisoned: Option<KafkaError>,
}

/// Why committing failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Not everything was acknowledged in time (at least once): try again later.
    #[error("{0} records not acknowledged yet")]
    Unacknowledged(usize),
    /// The transaction failed and was aborted: state and offsets must rewind.
    #[error("transaction aborted: {0}")]
    Aborted(KafkaError),
    /// Another instance took over this one's transactional id (fenced), or the
    /// producer is in a state it cannot leave: the process must stop.
    #[error("fatal producer error: {0}")]
    Fatal(KafkaError),
}

impl Output {
    pub fn new(
        mut config: rdkafka::ClientConfig,
        transactional_id: Option<String>,
        dead_letter_topic: String,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Output> {
        let transactional = transactional_id.is_some();
        let max_message_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if let Some(id) = &transactional_id {
            config.set("transactional.id", id);
        }
        // Only failures need a report (`Deliveries` acts on nothing else); a
        // report per acknowledged record cost an event and its allocations
        // each. Flushes still wait for every acknowledgement.
        if config.get("delivery.report.only.error").is_none() {
            config.set("delivery.report.only.error", "true");
        }
        let producer = Polled::new(
            &config,
            Deliveries {
                metrics,
                failed: Mutex::new(Vec::new()),
                rejected: Mutex::new(Vec::new()),
                logs: Default::default(),
            },
        )?;
        if transactional {
            // Fences any earlier producer with the same id and aborts its open transaction.
            producer.init_transactions(Duration::from_secs(60))?;
        }
        Ok(Output {
            producer,
            dead_letter_topic,
            max_message_bytes,
            transactional,
            in_transaction: false,
            refused_notifications: Vec::new(),
            poisoned: None,
        })
    }

    /// Records handed to librdkafka and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.producer.in_flight_count().max(0) as u64
    }

    /// Hands a record to librdkafka. A record it refuses at once is kept and
    /// sent again at the next commit (at least once), or fails the open
    /// transaction (exactly once): nothing is dropped silently.
    pub fn send(&mut self, r: Record) {
        if self.transactional && !self.in_transaction {
            if let Err(e) = self.producer.begin_transaction() {
                self.poisoned.get_or_insert(e);
                return;
            }
            self.in_transaction = true;
        }
        let size = r.payload.as_ref().map_or(0, Vec::len)
            + r.key.as_ref().map_or(0, Vec::len)
            + r.headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > self.max_message_bytes && r.kind != Kind::DeadLetter {
            let error = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
            return self.send_refused(&r, &error);
        }
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        // librdkafka takes the headers when it takes the record; a refused
        // record hands them back, for the copy kept to send again.
        if let Err((error, headers)) = self.send_raw(
            r.kind,
            &r.topic,
            r.partition,
            r.key.as_deref(),
            r.payload.as_deref(),
            headers,
        ) {
            self.producer
                .context()
                .metrics
                .produce_errors
                .with_label_values(&[r.kind.as_str()])
                .inc();
            if is_permanent(&error) && r.kind != Kind::DeadLetter {
                tracing::error!(%error, topic = %r.topic, "the broker refuses this record for good: dead-lettering it");
                return self.send_refused(&r, &error);
            }
            tracing::error!(%error, topic = %r.topic, "cannot produce; will retry");
            if self.transactional {
                self.poisoned.get_or_insert(error);
            } else {
                let m = OwnedMessage::new(
                    r.payload,
                    r.key,
                    r.topic,
                    rdkafka::Timestamp::NotAvailable,
                    r.partition.unwrap_or(-1),
                    -1,
                    headers,
                );
                self.producer
                    .context()
                    .failed
                    .lock()
                    .expect("lock")
                    .push((r.kind, m));
            }
        }
    }

    fn send_raw(
        &self,
        kind: Kind,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<(), (KafkaError, Option<OwnedHeaders>)> {
        let opaque = Kind::ALL.iter().position(|k| *k == kind).expect("listed");
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, opaque).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let mut attempt = 0u32;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // librdkafka's queue is full: let it drain. Rare: consumption
                    // pauses at max_in_flight, well below the queue's size.
                    record = r;
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5));
                    if attempt % 200 == 0 {
                        tracing::warn!(topic, "producer queue full; waiting");
                    }
                }
                Err((error, r)) => return Err((error, r.headers)),
            }
        }
    }

    /// Dead-letters `r`, which the broker refuses for good.
    fn send_refused(&mut self, r: &Record, error: &KafkaError) {
        let headers = r.headers.iter().map(|(k, v)| (*k, v.as_slice()));
        let dead = self.refused(
            r.kind,
            &r.topic,
            r.key.as_deref(),
            r.payload.as_deref(),
            headers,
            error,
        );
        self.send(dead);
    }

    /// A dead letter for a record the broker refuses for good: its key, its
    /// headers, its payload when that fits (else none: `squadron.bytes` says how
    /// large it was), and why.
    fn refused<'h>(
        &mut self,
        kind: Kind,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        error: &KafkaError,
    ) -> Record {
        self.producer.context().metrics.dead_letter(PRODUCE_FAILED);
        let bytes = payload.map_or(0, <[u8]>::len);
        let mut h: Vec<(&'static str, Vec<u8>)> = vec![
            (
                "squadron.reason",
                format!("cannot produce to {topic}: {error}").into_bytes(),
            ),
            ("squadron.reason.kind", PRODUCE_FAILED.as_bytes().to_vec()),
            ("squadron.output", kind.as_str().as_bytes().to_vec()),
            ("squadron.topic", topic.as_bytes().to_vec()),
            ("squadron.bytes", bytes.to_string().into_bytes()),
        ];
        for (k, v) in headers {
            if kind == Kind::Notification && k == "squadron.notification.id" {
                self.refused_notifications
                    .push(String::from_utf8_lossy(v).into_owned());
            }
            // The record's own headers, renamed where a dead letter's take their name.
            let k = match k {
                "squadron.reason" => "squadron.original.reason",
                "squadron.notification.id" => "squadron.notification.id",
                "squadron.role" => "squadron.role",
                _ => continue,
            };
            h.push((k, v.to_vec()));
        }
        let fits = bytes + 4096 <= self.max_message_bytes;
        Record {
            kind: Kind::DeadLetter,
            topic: self.dead_letter_topic.clone(),
            partition: None,
            key: key.map(<[u8]>::to_vec),
            payload: payload.filter(|_| fits).map(<[u8]>::to_vec),
            headers: h,
        }
    }

    /// Ids of the notifications dead-lettered since the last call.
    pub fn take_refused_notifications(&mut self) -> Vec<String> {
        std::mem::take(&mut self.refused_notifications)
    }

    /// Dead-letters what the broker refused for good. Returns how many.
    fn dead_letter_rejected(&mut self) -> usize {
        let rejected = std::mem::take(&mut *self.producer.context().rejected.lock().expect("lock"));
        let n = rejected.len();
        for (kind, m, error) in rejected {
            if kind == Kind::DeadLetter {
                tracing::error!(%error, topic = m.topic(), "a dead letter was refused too: it is lost (see squadron_produce_errors_total)");
                continue;
            }
            let headers: Vec<(String, Vec<u8>)> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            let dead = self.refused(
                kind,
                m.topic(),
                m.key(),
                m.payload(),
                headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                &error,
            );
            self.send(dead);
        }
        n
    }

    /// Sends again what the broker did not take (at least once). Returns how many.
    fn resend_failed(&self) -> usize {
        let failed = std::mem::take(&mut *self.producer.context().failed.lock().expect("lock"));
        let n = failed.len();
        for (kind, m) in failed {
            let headers = m.headers().cloned().unwrap_or_else(OwnedHeaders::new);
            let partition = (m.partition() >= 0).then_some(m.partition());
            if let Err((error, _)) =
                self.send_raw(kind, m.topic(), partition, m.key(), m.payload(), headers)
            {
                tracing::error!(%error, topic = m.topic(), "cannot produce; will retry");
                self.producer
                    .context()
                    .failed
                    .lock()
                    .expect("lock")
                    .push((kind, m));
            }
        }
        n
    }

    /// Makes everything produced so far durable, with `offsets` (input and
    /// repartition positions) committed with it:
    /// - at least once: waits up to `timeout` for every acknowledgement, then
    ///   commits the offsets through `commit_offsets`; records the broker refused
    ///   are sent again and the offsets wait for the next call;
    /// - exactly once: sends the offsets into the open transaction and commits it.
    pub fn commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: Option<&rdkafka::consumer::ConsumerGroupMetadata>,
        timeout: Duration,
        commit_offsets: impl FnOnce(&TopicPartitionList) -> Result<(), KafkaError>,
    ) -> Result<(), CommitError> {
        if !self.transactional {
            let _ = self.producer.flush(timeout);
            let resent = self.resend_failed() + self.dead_letter_rejected();
            let left = self.in_flight() as usize;
            if resent > 0 || left > 0 {
                return Err(CommitError::Unacknowledged(resent + left));
            }
            if offsets.count() > 0 {
                commit_offsets(offsets).map_err(|e| {
                    tracing::warn!(error = %e, "offset commit failed; will retry");
                    CommitError::Unacknowledged(0)
                })?;
            }
            return Ok(());
        }
        if !self.in_transaction && offsets.count() == 0 {
            return Ok(());
        }
        let poisoned = self.poisoned.take();
        let result = (|| {
            if let Some(e) = poisoned {
                return Err(e);
            }
            if !self.in_transaction {
                self.producer.begin_transaction()?;
                self.in_transaction = true;
            }
            if offsets.count() > 0 {
                match group {
                    Some(g) => self
                        .producer
                        .send_offsets_to_transaction(offsets, g, timeout)?,
                    // Without group metadata the offsets cannot join the
                    // transaction: abort rather than commit outputs without them.
                    None => {
                        return Err(KafkaError::Subscription(
                            "no consumer group metadata".into(),
                        ));
                    }
                }
            }
            // commit_transaction flushes by itself, but once in its commit
            // state that took 100 ms per call here whatever was outstanding
            // (librdkafka 2.12), holding the loop; flushed first, the commit
            // itself takes about a millisecond (BENCHMARKS.md).
            let started = std::time::Instant::now();
            let _ = self.producer.flush(timeout);
            let left = timeout.saturating_sub(started.elapsed());
            self.producer
                .commit_transaction(left.max(Duration::from_secs(1)))
        })();
        self.in_transaction = false;
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.abort(e)),
        }
    }

    /// Aborts the open transaction after `error`; says whether the process can go on.
    fn abort(&mut self, error: KafkaError) -> CommitError {
        let fatal = match &error {
            KafkaError::Transaction(e) => e.is_fatal(),
            _ => false,
        };
        if fatal {
            return CommitError::Fatal(error);
        }
        match self.producer.abort_transaction(Duration::from_secs(30)) {
            Ok(()) => {
                // What failed inside the aborted transaction is gone with it.
                self.producer.context().failed.lock().expect("lock").clear();
                CommitError::Aborted(error)
            }
            Err(e) => CommitError::Fatal(e),
        }
    }
}
