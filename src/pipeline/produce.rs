//! Producing: every record squadron writes (repartition, changelog,
//! notifications, dead letters, audit) goes through one [`Output`] producer,
//! which is transactional in exactly-once mode. Acknowledgements arrive on
//! librdkafka's thread; failed records are kept and sent again (at least once)
//! or fail the transaction (exactly once). It decides nothing about alerts.

use crate::telemetry::metrics::Metrics;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a produced record goes: bounded, a metric label.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Repartition,
    Changelog,
    Notification,
    DeadLetter,
    Audit,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Repartition,
        Kind::Changelog,
        Kind::Notification,
        Kind::DeadLetter,
        Kind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Repartition => "repartition",
            Kind::Changelog => "changelog",
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
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, kind: usize) {
        if let Err((error, msg)) = result {
            let kind = Kind::ALL[kind];
            self.metrics
                .produce_errors
                .with_label_values(&[kind.as_str()])
                .inc();
            tracing::warn!(%error, topic = msg.topic(), output = kind.as_str(), "delivery failed");
            self.failed
                .lock()
                .expect("failed lock")
                .push((kind, msg.detach()));
        }
    }
}

/// The one producer, and the transaction it may have open.
pub struct Output {
    producer: ThreadedProducer<Deliveries>,
    /// Exactly once: records go into transactions.
    transactional: bool,
    /// A transaction is open (begun, not yet committed or aborted).
    in_transaction: bool,
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
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Output> {
        let transactional = transactional_id.is_some();
        if let Some(id) = &transactional_id {
            config.set("transactional.id", id);
        }
        let producer: ThreadedProducer<Deliveries> = config.create_with_context(Deliveries {
            metrics,
            failed: Mutex::new(Vec::new()),
        })?;
        if transactional {
            // Fences any earlier producer with the same id and aborts its open transaction.
            producer.init_transactions(Duration::from_secs(60))?;
        }
        Ok(Output {
            producer,
            transactional,
            in_transaction: false,
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
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        if let Err(error) = self.send_raw(
            r.kind,
            &r.topic,
            r.partition,
            r.key.as_deref(),
            r.payload.as_deref(),
            headers.clone(),
        ) {
            self.producer
                .context()
                .metrics
                .produce_errors
                .with_label_values(&[r.kind.as_str()])
                .inc();
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
                    Some(headers),
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
    ) -> Result<(), KafkaError> {
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
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Sends again what the broker did not take (at least once). Returns how many.
    fn resend_failed(&self) -> usize {
        let failed = std::mem::take(&mut *self.producer.context().failed.lock().expect("lock"));
        let n = failed.len();
        for (kind, m) in failed {
            let headers = m.headers().cloned().unwrap_or_else(OwnedHeaders::new);
            let partition = (m.partition() >= 0).then_some(m.partition());
            if let Err(error) =
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
            let resent = self.resend_failed();
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
            self.producer.commit_transaction(timeout)
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
