//! The Kafka driver: consumes the input topics as one consumer group, feeds
//! the engine, and produces notifications to squad topics, undecodable input to
//! the dead-letter topic and (optionally) fates to the audit topic.
//!
//! # Delivery guarantees
//!
//! **At least once.** An input offset is committed only when every alert in the
//! message has its fate and every record derived from it (notification, dead
//! letter, audit record) is acknowledged by the broker ([`offsets`]). Alerts
//! still waiting in an unflushed group keep their message uncommitted, so a
//! crash re-reads them. A produce that fails is retried until acknowledged.
//!
//! **Not yet guaranteed:** after a crash or restart, engine state (which alerts
//! were already notified) is lost, so re-read input and the next resends can
//! notify again: duplicate notifications, never lost ones. Several instances
//! each hold the state of the alerts they consumed: deduplication across
//! instances holds only when all messages of an alert land in one partition
//! (key input messages by alert group). Keeping engine state in a compacted topic
//! lifts both; it is not built yet.
//!
//! # Concurrency
//!
//! One task owns the engine, the consumer and the offset tracker. Deliveries are
//! pipelined: sends are queued without waiting and their acknowledgements are
//! awaited together. When more than `max_in_flight` records await
//! acknowledgement the task stops consuming until acknowledgements arrive
//! (backpressure); memory stays bounded. The rebalance callback (run by the
//! consumer inside `recv`) shares the tracker through a mutex to commit what is
//! done for revoked partitions before they go.

pub mod config;
pub mod offsets;

use crate::decode::Invalid;
use crate::engine::{Engine, Fate, FateKind, FateRecord, Outputs};
use crate::ingest::{FeedOptions, InputIds, feed_with};
use crate::model::Ts;
use crate::payload::WebhookPayload;
use crate::rules::RuleSet;
use crate::telemetry::http::{SquadStatus, Status};
use crate::telemetry::metrics::{HandleCache, Metrics};
pub use config::{AuditMode, Config};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use offsets::{OffsetTracker, Tp};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Messages handled per turn of the loop when the consumer already holds them.
const BURST: usize = 256;

/// Where a produced record goes: bounded, a metric label.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Output {
    Notification,
    DeadLetter,
    Audit,
}

impl Output {
    fn as_str(self) -> &'static str {
        match self {
            Output::Notification => "notification",
            Output::DeadLetter => "dead_letter",
            Output::Audit => "audit",
        }
    }
}

struct Record {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    output: Output,
}

type Delivery =
    Pin<Box<dyn Future<Output = (u64, Output, Result<(), (KafkaError, OwnedMessage)>)> + Send>>;

/// The consumer's context: commits what is done for partitions being revoked,
/// tracks assignments, and reads consumer lag from librdkafka's statistics.
pub struct PipelineContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
}

impl ClientContext for PipelineContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic, &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut tracker = self.tracker.lock().expect("tracker lock");
            let revoked: Vec<Tp> = tpl
                .elements()
                .iter()
                .map(|e| Tp {
                    topic: e.topic().into(),
                    partition: e.partition(),
                })
                .collect();
            let done: Vec<(Tp, i64)> = tracker
                .committable()
                .into_iter()
                .filter(|(tp, _)| revoked.contains(tp))
                .collect();
            if !done.is_empty() {
                match commit_list(&done).and_then(|l| consumer.commit(&l, CommitMode::Sync)) {
                    Ok(()) => tracing::info!(
                        partitions = done.len(),
                        "committed done offsets of revoked partitions"
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "commit on revocation failed; the next owner re-reads")
                    }
                }
            }
            for tp in &revoked {
                tracker.revoke(tp);
                let partition = tp.partition.to_string();
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[tp.topic.as_ref(), partition.as_str()]);
            }
            tracing::info!(partitions = revoked.len(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut tracker = self.tracker.lock().expect("tracker lock");
            for e in tpl.elements() {
                tracker.assign(Tp {
                    topic: e.topic().into(),
                    partition: e.partition(),
                });
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

fn commit_list(offsets: &[(Tp, i64)]) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

/// Sets a property unless the configuration already gives it.
fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

pub(crate) fn client_config(
    cfg: &Config,
    specific: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    for (k, v) in cfg.kafka.properties.iter().chain(specific) {
        c.set(k, v);
    }
    c
}

/// What a finished run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunSummary {
    pub received: u64,
    pub messages: u64,
    pub notifications: u64,
    pub dead_letters: u64,
    pub uncommitted_messages: usize,
}

/// Everything the pipeline needs from its caller.
pub struct Handles {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Mutex<Status>>,
    pub shutdown: CancellationToken,
    /// Requests from the HTTP server, signal handlers and the rules watcher.
    pub commands: Option<tokio::sync::mpsc::Receiver<Command>>,
}

/// A request to the task that owns the engine.
pub enum Command {
    /// Load the rules directory again (`source` says why, for the log).
    Reload {
        source: &'static str,
        reply: Option<tokio::sync::oneshot::Sender<ReloadOutcome>>,
    },
    /// Active groups, filtered by squad and label matchers.
    Groups {
        squad: Option<String>,
        matchers: Vec<crate::rules::Matcher>,
        reply: tokio::sync::oneshot::Sender<Vec<crate::engine::GroupView>>,
    },
}

/// What a reload did. A failed reload never leaves the process without rules.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    Reloaded {
        digest: String,
    },
    Unchanged {
        digest: String,
    },
    /// The new files are invalid; the previous rules keep serving.
    RolledBack {
        digest: String,
        errors: Vec<String>,
    },
}

/// Runs the pipeline until `handles.shutdown` is cancelled, then drains and commits.
pub async fn run(cfg: Config, rules: Arc<RuleSet>, handles: Handles) -> anyhow::Result<RunSummary> {
    cfg.validate()?;
    let Handles {
        metrics,
        status,
        shutdown,
        mut commands,
    } = handles;
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let mut consumer_cfg = client_config(&cfg, &cfg.kafka.consumer_properties);
    consumer_cfg.set("group.id", &cfg.kafka.group_id);
    for (k, v) in [
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "5000"),
        // librdkafka pauses fetching this long once its prefetch queue is full
        // (default 1 s). A consumer that decides slower than the broker serves
        // fills the queue, then drains it dry waiting: measured at 74% idle.
        ("fetch.queue.backoff.ms", "5"),
    ] {
        set_default(&mut consumer_cfg, k, v);
    }
    let consumer: StreamConsumer<PipelineContext> =
        consumer_cfg.create_with_context(PipelineContext {
            tracker: tracker.clone(),
            metrics: metrics.clone(),
        })?;
    let mut producer_cfg = client_config(&cfg, &cfg.kafka.producer_properties);
    for (k, v) in [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "2"),
        ("queue.buffering.max.messages", "1000000"),
        ("message.timeout.ms", "30000"),
    ] {
        set_default(&mut producer_cfg, k, v);
    }
    let producer: FutureProducer = producer_cfg.create()?;
    let topics: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(topics = ?topics, group = %cfg.kafka.group_id, brokers = %cfg.kafka.bootstrap_servers, "consuming");

    let producer_for_receivers = producer.clone();
    let metrics_for_receivers = metrics.clone();
    let mut p = Pipeline {
        engine: Engine::new(rules),
        out: Outputs::default(),
        tracker,
        producer,
        deliveries: FuturesUnordered::new(),
        metrics,
        cache: HandleCache::default(),
        cfg: cfg.clone(),
        summary: RunSummary::default(),
        core_protected: 0,
        status: status.clone(),
        receivers: crate::sinks::receivers::Receivers::new(
            metrics_for_receivers.receiver_deliveries.clone(),
            cfg.pipeline.external_url.clone(),
        )?,
        dead: Arc::new(ReceiverDeadLetters {
            producer: producer_for_receivers,
            topic: cfg.kafka.dead_letter_topic.clone(),
            metrics: metrics_for_receivers.clone(),
        }),
    };
    p.rules_loaded("startup");
    p.publish_status(&status, &consumer);
    let mut commit_every = tokio::time::interval(cfg.pipeline.commit_interval()?);
    commit_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_in_flight = cfg.pipeline.max_in_flight;

    loop {
        let deadline = p.engine.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => {
                    tokio::time::sleep(Duration::from_millis(
                        (d.millis() - wall_clock().millis()).max(0) as u64,
                    ))
                    .await
                }
                None => std::future::pending().await,
            }
        };
        let in_flight = p.tracker().in_flight();
        let command = async {
            match commands.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(cmd) = command => p.command(cmd),
            Some((ticket, output, result)) = p.deliveries.next(), if !p.deliveries.is_empty() => p.delivered(ticket, output, result),
            _ = sleep => {
                let t = std::time::Instant::now();
                p.advance(wall_clock(), None);
                p.metrics.busy.inc_by(t.elapsed().as_secs_f64());
            }
            _ = commit_every.tick() => {
                p.commit(&consumer, CommitMode::Async);
                p.publish_status(&status, &consumer);
            }
            msg = consumer.recv(), if in_flight < max_in_flight => match msg {
                Ok(m) => {
                    let t = std::time::Instant::now();
                    p.message(&m);
                    drop(m);
                    // Take what the consumer already holds without another turn
                    // of the select (bounded, so timers and acks keep their turn).
                    for _ in 0..BURST {
                        match consumer.recv().now_or_never() {
                            Some(Ok(m)) => p.message(&m),
                            _ => break,
                        }
                        if p.tracker().in_flight() >= max_in_flight {
                            break;
                        }
                    }
                    p.metrics.busy.inc_by(t.elapsed().as_secs_f64());
                }
                Err(error) => {
                    tracing::warn!(%error, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    // Shutdown: stop consuming, emit what is due, wait for acknowledgements, commit.
    tracing::info!("shutting down: flushing due groups and waiting for acknowledgements");
    p.advance(wall_clock(), None);
    let deadline = tokio::time::Instant::now() + cfg.pipeline.shutdown_timeout()?;
    while !p.deliveries.is_empty() {
        match tokio::time::timeout_at(deadline, p.deliveries.next()).await {
            Ok(Some((ticket, output, result))) => p.delivered(ticket, output, result),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    in_flight = p.deliveries.len(),
                    "shutdown timeout: unacknowledged output; its input stays uncommitted"
                );
                break;
            }
        }
    }
    p.commit(&consumer, CommitMode::Sync);
    let open = p.tracker().open_messages();
    p.summary.uncommitted_messages = open;
    p.publish_status(&status, &consumer);
    let _ = p.producer.flush(Duration::from_secs(5));
    tracing::info!(summary = ?p.summary, "stopped");
    Ok(p.summary)
}

/// The engine's clock at the edge: wall time.
pub fn wall_clock() -> Ts {
    Ts(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

struct Pipeline {
    receivers: crate::sinks::receivers::Receivers,
    dead: Arc<dyn crate::sinks::receivers::DeadLetter>,
    status: Arc<Mutex<Status>>,
    engine: Engine,
    out: Outputs,
    tracker: Arc<Mutex<OffsetTracker>>,
    producer: FutureProducer,
    deliveries: FuturesUnordered<Delivery>,
    metrics: Arc<Metrics>,
    cache: HandleCache,
    cfg: Config,
    summary: RunSummary,
    core_protected: u64,
}

#[derive(Serialize)]
struct AuditRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    fingerprint: Option<String>,
    squad: Option<&'a str>,
    fate: FateKind,
    cause: Option<&'a str>,
    at: Ts,
}

impl Pipeline {
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Reload { source, reply } => {
                let outcome = self.reload(source);
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            Command::Groups {
                squad,
                matchers,
                reply,
            } => {
                let groups = self.engine.groups(wall_clock(), |sq, labels| {
                    squad.as_deref().is_none_or(|s| s == sq)
                        && crate::rules::all_match(&matchers, labels)
                });
                let _ = reply.send(groups);
            }
        }
    }

    /// The same loading as startup (`rules::load_dir`). Invalid files leave the
    /// current rules serving; state (groups, timers) carries over either way.
    fn reload(&mut self, source: &'static str) -> ReloadOutcome {
        let current = self.engine.rules().digest.clone();
        match crate::rules::load_dir(&self.cfg.rules) {
            Ok(rules) if rules.digest == current => ReloadOutcome::Unchanged { digest: current },
            Ok(rules) => {
                let digest = rules.digest.clone();
                self.engine.set_rules(Arc::new(rules));
                self.cache.clear_rules();
                self.rules_loaded(source);
                tracing::info!(source, digest = %digest, "rules reloaded");
                ReloadOutcome::Reloaded { digest }
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::warn!(source, error = %e, "rule file rejected; the previous rules keep serving");
                }
                self.metrics
                    .rule_reloads
                    .with_label_values(&["failure"])
                    .inc();
                self.metrics.rules_valid.set(0);
                let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                self.status.lock().expect("status lock").rules_error = Some(list.join("\n"));
                ReloadOutcome::RolledBack {
                    digest: current,
                    errors: list,
                }
            }
        }
    }

    fn rules_loaded(&mut self, source: &'static str) {
        let now = wall_clock();
        if source != "startup" {
            self.metrics
                .rule_reloads
                .with_label_values(&["success"])
                .inc();
        }
        self.metrics.rules_valid.set(1);
        self.metrics.last_reload.set(now.millis() / 1000);
        let mut s = self.status.lock().expect("status lock");
        s.rules_loaded_at = Some(now.to_string());
        s.rules_error = None;
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().expect("tracker lock")
    }

    fn message(&mut self, m: &BorrowedMessage<'_>) {
        let now = wall_clock();
        self.advance(now, None);
        let tp = Tp {
            topic: m.topic().into(),
            partition: m.partition(),
        };
        let payload = m.payload().unwrap_or(b"");
        // The id first (the engine needs it); how many alerts it holds is known after decoding.
        let first = self.tracker().begin(&tp, m.offset(), 0);
        let audit = self.cfg.pipeline.audit != AuditMode::Off;
        let opts = FeedOptions {
            ids: InputIds::PerMessage,
            fingerprints: audit,
            observe: None,
        };
        let fed = feed_with(&mut self.engine, payload, now, first, &mut self.out, opts);
        self.tracker().expect(&tp, m.offset(), fed.alerts);
        self.summary.messages += 1;
        self.summary.received += fed.alerts as u64;
        self.metrics.received(fed.format, fed.alerts);
        let mut records = Vec::new();
        let invalid: Vec<&Invalid> = self
            .out
            .fates
            .iter()
            .filter_map(|f| match &f.fate {
                Fate::Invalid { reason } if f.input == first => Some(reason),
                _ => None,
            })
            .collect();
        if let Some(first_reason) = invalid.first() {
            records.push(self.dead_letter(m, first_reason, invalid.len(), fed.alerts, now));
        }
        let source = m.timestamp().to_millis().map(Ts);
        self.emit(records, source, now);
        // Timers due at `now` (group_wait 0) fire without waiting for the next turn.
        self.advance(now, source);
    }

    fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        reason: &Invalid,
        invalid: usize,
        alerts: u32,
        now: Ts,
    ) -> Record {
        let mut headers = vec![
            ("squadron.reason", reason.to_string().into_bytes()),
            (
                "squadron.reason.kind",
                reason.kind.as_str().as_bytes().to_vec(),
            ),
            ("squadron.source.topic", m.topic().as_bytes().to_vec()),
            (
                "squadron.source.partition",
                m.partition().to_string().into_bytes(),
            ),
            (
                "squadron.source.offset",
                m.offset().to_string().into_bytes(),
            ),
            ("squadron.time", now.to_string().into_bytes()),
            (
                "squadron.invalid.alerts",
                format!("{invalid}/{alerts}").into_bytes(),
            ),
        ];
        if let Some(h) = m.headers() {
            for header in h.iter() {
                if header.key == "content-type" {
                    headers.push((
                        "squadron.source.content-type",
                        header.value.unwrap_or_default().to_vec(),
                    ));
                }
            }
        }
        Record {
            topic: self.cfg.kafka.dead_letter_topic.clone(),
            key: m.key().unwrap_or_default().to_vec(),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            output: Output::DeadLetter,
        }
    }

    /// Runs every timer due by `now`. `source_ts`: the broker time of the message
    /// just fed, when this flush follows it at once (for the latency histogram).
    fn advance(&mut self, now: Ts, source_ts: Option<Ts>) {
        if self.engine.next_deadline().is_some_and(|d| d <= now) {
            self.engine.tick(now, &mut self.out);
            self.emit(Vec::new(), source_ts, now);
        }
    }

    /// Turns one engine step's outputs into records and tells the tracker which
    /// inputs wait for them.
    fn emit(&mut self, mut records: Vec<Record>, source_ts: Option<Ts>, now: Ts) {
        let rules = self.engine.rules().clone();
        self.metrics
            .record(&mut self.cache, &self.out.fates, &self.out.notifications);
        for n in &self.out.notifications {
            let squad = rules
                .squad_by_name(&n.squad)
                .map(|i| &rules.squads[i as usize]);
            let topic = squad
                .map(|s| s.topic.clone())
                .unwrap_or_else(|| format!("alerts.squad.{}", n.squad));
            records.push(Record {
                topic,
                key: n.group_key.as_bytes().to_vec(),
                payload: WebhookPayload::new(n, &self.cfg.pipeline.external_url).to_json(),
                headers: vec![("squadron.reason", n.reason.as_str().as_bytes().to_vec())],
                output: Output::Notification,
            });
            if let Some(ts) = source_ts {
                self.metrics.latency.observe(now.since(ts).as_secs_f64());
            }
            if let Some(sq) =
                squad.filter(|sq| self.cfg.pipeline.deliver_receivers && !sq.receivers.is_empty())
            {
                self.receivers.deliver(n, &sq.receivers, self.dead.clone());
            }
        }
        self.summary.notifications += self.out.notifications.len() as u64;
        if self.cfg.pipeline.audit != AuditMode::Off {
            for f in &self.out.fates {
                if self.cfg.pipeline.audit == AuditMode::All
                    || f.fate.kind() != FateKind::Notified
                        && f.fate.kind() != FateKind::Deduplicated
                {
                    records.push(self.audit(f, &rules, now));
                }
            }
        }
        let inputs: Vec<u64> = self.out.fates.iter().map(|f| f.input).collect();
        self.out.clear();
        if records.is_empty() {
            let mut t = self.tracker();
            for i in inputs {
                t.decided(i);
            }
            return;
        }
        let ticket = self.tracker().decided_pending(inputs, records.len() as u32);
        for r in records {
            self.send(ticket, r);
        }
        let stats = self.engine.stats();
        self.metrics
            .core_protected
            .inc_by(stats.core_protected - self.core_protected);
        self.core_protected = stats.core_protected;
    }

    fn audit(&self, f: &FateRecord, rules: &RuleSet, now: Ts) -> Record {
        let (topic, partition, offset) = match self.tracker().source_of(f.input) {
            Some((tp, off)) => (tp.topic.to_string(), tp.partition, off),
            None => (String::new(), -1, -1),
        };
        let rec = AuditRecord {
            topic: &topic,
            partition,
            offset,
            fingerprint: f.fingerprint.map(|fp| fp.to_string()),
            squad: rules.squads.get(f.squad as usize).map(|s| &*s.name),
            fate: f.fate.kind(),
            cause: f.fate.cause(),
            at: now,
        };
        let mut headers = vec![("squadron.input", f.input.to_string().into_bytes())];
        if let Fate::Invalid { reason } = &f.fate {
            headers.push(("squadron.reason", reason.to_string().into_bytes()));
        }
        Record {
            topic: self.cfg.kafka.audit_topic.clone(),
            key: f
                .fingerprint
                .map(|fp| fp.to_string().into_bytes())
                .unwrap_or_default(),
            payload: serde_json::to_vec(&rec).expect("audit serializes"),
            headers,
            output: Output::Audit,
        }
    }

    fn send(&mut self, ticket: u64, r: Record) {
        match r.output {
            Output::DeadLetter => self.metrics.dead_letters.inc(),
            Output::Audit => self.metrics.audit_records.inc(),
            Output::Notification => {}
        }
        if r.output == Output::DeadLetter {
            self.summary.dead_letters += 1;
        }
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        self.send_owned(ticket, r.output, r.topic, r.key, r.payload, headers);
    }

    fn send_owned(
        &mut self,
        ticket: u64,
        output: Output,
        topic: String,
        key: Vec<u8>,
        payload: Vec<u8>,
        headers: OwnedHeaders,
    ) {
        let mut attempt = 0u32;
        loop {
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers.clone());
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.deliveries.push(Box::pin(async move {
                        let result = match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(e),
                            Err(_canceled) => {
                                Err((KafkaError::Canceled, unsent(topic, key, payload, headers)))
                            }
                        };
                        (ticket, output, result)
                    }));
                    self.metrics.in_flight.set(self.deliveries.len() as i64);
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: let it drain. Rare: consumption
                    // pauses at max_in_flight, well below the queue's size.
                    attempt += 1;
                    self.producer.poll(Duration::from_millis(10));
                    if attempt % 100 == 0 {
                        tracing::warn!(topic = %topic, "producer queue full; waiting");
                    }
                }
                Err((error, _)) => {
                    // Not a full queue (e.g. an unknown topic): retry in a second,
                    // through the delivery path, without blocking the loop.
                    self.metrics
                        .produce_errors
                        .with_label_values(&[output.as_str()])
                        .inc();
                    tracing::error!(%error, topic = %topic, "cannot produce; retrying in 1s");
                    self.deliveries.push(Box::pin(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let msg = unsent(topic, key, payload, headers);
                        (ticket, output, Err((error, msg)))
                    }));
                    return;
                }
            }
        }
    }

    fn delivered(
        &mut self,
        ticket: u64,
        output: Output,
        result: Result<(), (KafkaError, OwnedMessage)>,
    ) {
        match result {
            Ok(()) => self.tracker().acked(ticket),
            Err((error, msg)) => {
                // At least once: a record that did not make it is sent again.
                self.metrics
                    .produce_errors
                    .with_label_values(&[output.as_str()])
                    .inc();
                tracing::warn!(%error, topic = msg.topic(), "delivery failed; retrying");
                let headers = msg.headers().cloned().unwrap_or_else(OwnedHeaders::new);
                let (topic, key, payload) = (
                    msg.topic().to_owned(),
                    msg.key().unwrap_or_default().to_vec(),
                    msg.payload().unwrap_or_default().to_vec(),
                );
                self.send_owned(ticket, output, topic, key, payload, headers);
            }
        }
        self.metrics.in_flight.set(self.deliveries.len() as i64);
    }

    fn commit(&mut self, consumer: &StreamConsumer<PipelineContext>, mode: CommitMode) {
        let offsets = self.tracker().committable();
        if offsets.is_empty() {
            return;
        }
        match commit_list(&offsets).and_then(|l| consumer.commit(&l, mode)) {
            Ok(()) => self.metrics.commits.inc(),
            Err(error) => tracing::warn!(%error, "offset commit failed; will retry"),
        }
    }

    fn publish_status(&self, status: &Mutex<Status>, consumer: &StreamConsumer<PipelineContext>) {
        let rules = self.engine.rules();
        let now = wall_clock();
        self.metrics
            .active_alerts
            .set(self.engine.active_alerts() as i64);
        self.metrics
            .active_groups
            .set(self.engine.active_groups() as i64);
        self.metrics
            .state_bytes
            .set(self.engine.state_bytes() as i64);
        let open = self.tracker().open_messages();
        self.metrics.open_messages.set(open as i64);
        let assigned: Vec<String> = consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        let mut s = status.lock().expect("status lock");
        s.version = env!("CARGO_PKG_VERSION");
        s.rules_digest = rules.digest.clone();
        s.squads = rules
            .squads
            .iter()
            .map(|q| SquadStatus {
                name: q.name.to_string(),
                topic: q.topic.clone(),
                goalkeeper: q
                    .goalkeeper
                    .as_ref()
                    .and_then(|g| g.on_duty(now))
                    .map(|p| p.to_string()),
            })
            .collect();
        s.input_topics = self.cfg.kafka.input_topics.clone();
        s.assigned_partitions = assigned;
        s.active_alerts = self.engine.active_alerts();
        s.active_groups = self.engine.active_groups();
        s.received = self.summary.received;
        self.metrics.ready.set(i64::from(
            !s.assigned_partitions.is_empty() && !s.rules_digest.is_empty(),
        ));
        s.heartbeat = Some(now);
    }
}

/// Polls the rules directory and asks for a reload when its files change
/// (debounced: the change must be stable for one poll, so an editor's
/// several writes make one reload).
pub fn spawn_rules_watcher(
    dir: std::path::PathBuf,
    commands: tokio::sync::mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    type Signature = Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>;
    fn signature(dir: &std::path::Path) -> Signature {
        let mut v: Signature = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| {
                matches!(
                    e.path().extension().and_then(|x| x.to_str()),
                    Some("yaml" | "yml")
                )
            })
            .filter_map(|e| {
                e.metadata()
                    .ok()
                    .map(|m| (e.path(), m.len(), m.modified().ok()))
            })
            .collect();
        v.sort();
        v
    }
    tokio::spawn(async move {
        let mut loaded = signature(&dir);
        let mut seen = loaded.clone();
        let mut every = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = signature(&dir);
            if now != loaded && now == seen {
                loaded = now.clone();
                if commands
                    .send(Command::Reload {
                        source: "file change",
                        reply: None,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            seen = now;
        }
    });
}

/// Receiver deliveries that exhausted their retries go to the dead-letter topic.
struct ReceiverDeadLetters {
    producer: FutureProducer,
    topic: String,
    metrics: Arc<Metrics>,
}

impl crate::sinks::receivers::DeadLetter for ReceiverDeadLetters {
    fn dead_letter(&self, receiver: &str, squad: &str, error: &str, payload: Vec<u8>) {
        self.metrics.dead_letters.inc();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "squadron.reason",
                value: Some(&format!("receiver {receiver} failed: {error}")),
            })
            .insert(Header {
                key: "squadron.reason.kind",
                value: Some("receiver_failed"),
            })
            .insert(Header {
                key: "squadron.receiver",
                value: Some(receiver),
            })
            .insert(Header {
                key: "squadron.squad",
                value: Some(squad),
            })
            .insert(Header {
                key: "squadron.time",
                value: Some(&wall_clock().to_string()),
            });
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        tokio::spawn(async move {
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&topic)
                .payload(&payload[..])
                .headers(headers);
            if let Err((error, _)) = producer.send(record, Duration::from_secs(30)).await {
                tracing::error!(%error, "cannot dead-letter a failed receiver delivery");
            }
        });
    }
}

/// A record that never reached the broker, in the form a failed delivery
/// reports, so both go through the same retry.
fn unsent(topic: String, key: Vec<u8>, payload: Vec<u8>, headers: OwnedHeaders) -> OwnedMessage {
    OwnedMessage::new(
        Some(payload),
        Some(key),
        topic,
        rdkafka::Timestamp::NotAvailable,
        -1,
        -1,
        Some(headers),
    )
}
