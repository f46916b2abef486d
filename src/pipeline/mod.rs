//! The Kafka driver: squadron as a Kafka Streams-style topology (see
//! [`topology`]) of two stages in one consumer group. The *route* stage reads
//! the input topics (any key, any partition), dead-letters what cannot be
//! decoded and writes each alert to the repartition topic partition that owns
//! its group. The *decide* stage runs one task per repartition partition: an
//! engine whose state is a store backed by a compacted changelog partition
//! ([`store`]), restored before the task processes anything.
//!
//! # Delivery guarantees
//!
//! Committing (every `commit_interval`, on revocation and at shutdown) writes
//! each task's state changes to the changelog, makes every produced record
//! durable, then commits the positions of both stages' inputs:
//!
//! - **At least once** (default): the producer is flushed and every record
//!   acknowledged before the offsets are committed; refused records are sent
//!   again and hold the commit back. A crash loses nothing: input since the
//!   last commit is read again by an engine restored to the state of that
//!   commit, so outputs since then may repeat. A repeated notification carries
//!   the same `squadron.notification.id` (header and `notificationId`).
//! - **Exactly once**: one Kafka transaction per commit holds the repartition
//!   records, changelog records, notifications, dead letters, audit records and
//!   the input offsets (KIP-447 fencing through the consumer group metadata;
//!   `transactional.id` = `<group>-<instance id>`). read_committed consumers see
//!   each output once. A failed transaction is aborted and the Kafka clients
//!   are rebuilt: the new ones restore the committed state (see [`run`]).
//! - Receivers (webhook, Slack, PagerDuty) are called after the commit that
//!   made their notification durable, so an aborted or lost batch never
//!   reaches them; after a crash between commit and call, a notification can
//!   reach them late or twice (same id, as a header).
//!
//! # Concurrency
//!
//! The processing state ([`Core`]: tasks, positions, producer) sits behind one
//! mutex shared with the consumer's rebalance callbacks, which commit before
//! partitions are revoked and restore state when they are assigned. The loop
//! never holds the lock while polling the consumer (callbacks run inside the
//! poll). It polls a chunk of up to 128 messages, then handles it under the
//! lock, on two threads when it holds several units of work (input messages to
//! route, tasks' records to decide; scoped: both end before the lock is
//! released; see [`decide`]). A message
//! whose partition was revoked while it waited is skipped, and one whose
//! offset was already handled (revoked and assigned again while it waited) is
//! not handled twice. When more than `max_in_flight` records await
//! acknowledgement the loop stops consuming (backpressure), checked between
//! chunks.

pub mod config;
pub mod control;
mod decide;
mod lane;
pub mod memory;
pub(crate) mod polled;
mod produce;
mod route;
mod sources;
pub mod store;
pub mod throttle;
pub mod topology;

use crate::engine::{Engine, Fate, FateKind, FateRecord, Notification, Outputs};
use crate::payload::WebhookPayload;
use crate::rules::RuleSet;
use crate::telemetry::http::{SquadStatus, Status};
use crate::telemetry::metrics::{HandleCache, Metrics};
pub use config::{AuditMode, Config, Guarantee};
pub(crate) use route::Path as RoutePath;

use futures_util::FutureExt;
use produce::{CommitError, Kind, Output, Record};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use topology::Topology;

/// Messages handled per turn of the loop when the consumer already holds them.
const BURST: usize = 256;
/// Messages handled together within a burst (`max_in_flight` is checked
/// between chunks, so it may be passed by one chunk's records).
const CHUNK: usize = 128;
/// How long a restore may take before the process gives up.
const RESTORE_LIMIT: Duration = Duration::from_secs(300);
/// The changelog reader is closed after this long without a restore (an
/// idle client still wakes its threads); a rebalance opens it again.
const RESTORER_IDLE: Duration = Duration::from_secs(60);

/// Benchmarks only, not an API: the route stage's plan of one input message
/// (`route::plan`), as the bytes of the repartition records it makes.
#[doc(hidden)]
pub fn route_for_bench(
    payload: &[u8],
    rules: &crate::rules::RuleSet,
    topo: &topology::Topology,
    now: crate::model::Ts,
) -> usize {
    route::plan(payload, rules, topo, now).record_bytes()
}

/// The consumer's context: rebalances reach the processing state through it.
pub struct PipelineContext {
    core: Arc<Mutex<Core>>,
    metrics: Arc<Metrics>,
    logs: throttle::Throttle,
}

impl ClientContext for PipelineContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.logs.kafka_log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.logs.kafka_error(&error, reason);
    }

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
            self.core.lock().expect("core lock").revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.core.lock().expect("core lock").assign(tpl);
        }
    }
}

fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock().expect("core lock")
}

/// A consumer for reading a compacted topic whole into a table (`reader`
/// names it): assigned, never subscribed, never committing.
fn table_reader_config(cfg: &Config, reader: &str) -> ClientConfig {
    let mut c = client_config(cfg, &cfg.kafka.consumer_properties);
    for (k, v) in [
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        // librdkafka's consumer needs a group; this one never joins or commits.
        (
            "group.id",
            &format!("{}-{reader}-reader", cfg.kafka.group_id),
        ),
        // An idle reader costs one fetch round trip per this; a record
        // written meanwhile is answered at once, so it adds no latency.
        ("fetch.wait.max.ms", "5000"),
    ] {
        set_default(&mut c, k, v);
    }
    c.remove("group.instance.id");
    c
}

/// Runs `f`'s blocking librdkafka calls on `client` (metadata, watermarks: up
/// to their timeout each while the broker is away) on a blocking thread, off
/// the runtime's workers, and hands the client back with the answer.
async fn off_runtime<C: Send + 'static, T: Send + 'static>(
    client: C,
    f: impl FnOnce(&C) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<(C, T)> {
    tokio::task::spawn_blocking(move || f(&client).map(|t| (client, t))).await?
}

/// Waits until a table reader has read what its topic held at start.
async fn wait_caught_up(
    caught_up: &tokio::sync::watch::Receiver<bool>,
    timeout: Duration,
    what: &str,
    topic: &str,
) -> anyhow::Result<()> {
    let mut rx = caught_up.clone();
    tokio::time::timeout(timeout, rx.wait_for(|c| *c))
        .await
        .map_err(|_| anyhow::anyhow!("the {what} topic {topic} was not read within {timeout:?}"))?
        .map_err(|_| anyhow::anyhow!("the {what} reader stopped"))?;
    Ok(())
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
}

/// Everything the pipeline needs from its caller.
pub struct Handles {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Mutex<Status>>,
    pub shutdown: CancellationToken,
    /// Requests from the HTTP server, signal handlers and the rules watcher.
    pub commands: Option<tokio::sync::mpsc::Receiver<Command>>,
    /// Runtime silences, acknowledgements and duty overrides (the controls
    /// topic); `None` runs without them.
    pub controls: Option<Arc<control::ControlLog>>,
}

/// A request to the task that owns the engines.
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
    /// The current goalkeeper shifts whose books this instance keeps, as reports so far.
    Shifts {
        squad: Option<String>,
        reply: tokio::sync::oneshot::Sender<Vec<crate::engine::ShiftPreview>>,
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

/// Shortest and longest wait before the Kafka clients are rebuilt after a failure.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// Clients that ran this long before failing start the backoff over.
const RESTART_RESET: Duration = Duration::from_secs(600);

/// How one lifetime of the pipeline's Kafka clients ended.
enum Ended {
    /// Shutdown was asked for; the last commit is done.
    Stopped(RunSummary),
    /// A client failed in a way it cannot recover from (a consumer fenced
    /// after a broker outage, an aborted transaction, a failed restore). What
    /// was not committed is read again by the next clients, as after a crash.
    Failed {
        error: anyhow::Error,
        reason: &'static str,
        /// The rules in force (a reload may have replaced the ones started with).
        rules: Arc<RuleSet>,
        summary: RunSummary,
    },
}

/// Runs the pipeline until `handles.shutdown` is cancelled, then commits.
///
/// A failure once consuming has begun does not end the process: the Kafka
/// clients are dropped and built again (after a backoff of 1 s doubling to
/// 60 s), the consumer rejoins its group and every task restores its state
/// from the changelog, exactly as a restarted process would, while the HTTP
/// server, metrics and rules stay up. Errors before consuming (configuration,
/// topics) are returned.
pub async fn run(
    cfg: Config,
    mut rules: Arc<RuleSet>,
    mut handles: Handles,
) -> anyhow::Result<RunSummary> {
    cfg.validate()?;
    let mut total = RunSummary::default();
    let mut backoff = RESTART_BACKOFF.0;
    let mut restarting = false;
    loop {
        let started = std::time::Instant::now();
        let ended = match run_clients(&cfg, rules.clone(), &mut handles).await {
            Ok(ended) => ended,
            // At start a setup error is the caller's to report; after a
            // failure it is one more attempt that failed (the broker may
            // still be away).
            Err(error) if restarting => Ended::Failed {
                error,
                reason: "setup_failed",
                rules: rules.clone(),
                summary: RunSummary::default(),
            },
            Err(error) => return Err(error),
        };
        restarting = true;
        let (summary, failure) = match ended {
            Ended::Stopped(summary) => (summary, None),
            Ended::Failed {
                error,
                reason,
                rules: current,
                summary,
            } => {
                rules = current;
                (summary, Some((error, reason)))
            }
        };
        total.received += summary.received;
        total.messages += summary.messages;
        total.notifications += summary.notifications;
        let Some((error, reason)) = failure else {
            break;
        };
        if started.elapsed() > RESTART_RESET {
            backoff = RESTART_BACKOFF.0;
        }
        handles
            .metrics
            .pipeline_restarts
            .with_label_values(&[reason])
            .inc();
        let hint = match reason {
            "fenced_instance_id" => {
                "after a broker outage librdkafka can fence its own static member; if this repeats, two instances may share group.instance.id"
            }
            _ => "uncommitted input is read again by the new clients",
        };
        tracing::error!(error = %format!("{error:#}"), reason, retry_in_ms = backoff.as_millis() as u64, hint, "the pipeline's Kafka clients failed: rebuilding them and restoring state from the changelog");
        tokio::select! {
            _ = handles.shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF.1);
    }
    // Every kind: bad input, refused outputs and failed receiver deliveries.
    total.dead_letters = handles.metrics.dead_letters_total();
    tracing::info!(
        received = total.received,
        messages = total.messages,
        notifications = total.notifications,
        dead_letters = total.dead_letters,
        "stopped"
    );
    Ok(total)
}

/// One lifetime of the pipeline's Kafka clients: from building them to a
/// shutdown (with its last commit) or a failure they cannot recover from.
async fn run_clients(
    cfg: &Config,
    rules: Arc<RuleSet>,
    handles: &mut Handles,
) -> anyhow::Result<Ended> {
    let metrics = handles.metrics.clone();
    let status = handles.status.clone();
    let shutdown = handles.shutdown.clone();
    let commands = &mut handles.commands;
    let topo = topology::ensure(cfg).await?;
    let instance = cfg.instance_id();
    // Silences made at runtime apply to the first alert decided.
    let controls = match &handles.controls {
        Some(log) => {
            log.wait_caught_up(Duration::from_secs(30)).await?;
            log.shared().clone()
        }
        None => Arc::default(),
    };
    // Every task's inhibition sources, before the first alert is decided.
    let sources =
        sources::SourcesReader::start(cfg, &topo.sources, topo.partitions, metrics.clone()).await?;
    // Everything after the reader started runs in this block, so that every
    // way out of it (an error included) closes the reader before returning:
    // its consumer must not outlive the pipeline's clients.
    let ended: anyhow::Result<Ended> = async {
        sources.wait_caught_up(RESTORE_LIMIT).await?;
        let exactly_once = cfg.pipeline.processing_guarantee == Guarantee::ExactlyOnce;

        let mut producer_cfg = client_config(cfg, &cfg.kafka.producer_properties);
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("queue.buffering.max.messages", "1000000"),
            ("message.timeout.ms", "30000"),
        ] {
            set_default(&mut producer_cfg, k, v);
        }
        let transactional_id = exactly_once.then(|| format!("{}-{instance}", cfg.kafka.group_id));
        let out = Output::new(
            producer_cfg.clone(),
            transactional_id,
            cfg.kafka.dead_letter_topic.clone(),
            metrics.clone(),
        )?;
        let core = Arc::new(Mutex::new(Core {
            topo: topo.clone(),
            rules: rules.clone(),
            tasks: BTreeMap::new(),
            kept: HashMap::new(),
            assigned: Default::default(),
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            out,
            restorer: store::Restorer::new(cfg, topo.changelog.clone())?,
            outputs: Outputs::default(),
            cache: HandleCache::default(),
            summary: RunSummary::default(),
            status: status.clone(),
            receivers: crate::sinks::receivers::Receivers::new(
                metrics.receiver_deliveries.clone(),
                metrics.receiver_seconds.clone(),
                cfg.pipeline.external_url.clone(),
                cfg.pipeline.payload_limits(),
            )?,
            dead: Arc::new(ReceiverDeadLetters {
                config: producer_cfg.clone(),
                producer: std::sync::OnceLock::new(),
                topic: cfg.kafka.dead_letter_topic.clone(),
                metrics: metrics.clone(),
            }),
            unacknowledged: Vec::new(),
            commit_stalled_since: None,
            fatal: None,
            failed: false,
            core_protected: 0,
            runtime: tokio::runtime::Handle::current(),
            controls,
            controls_seen: u64::MAX,
            sources: sources.table().clone(),
            run: lane::run_token(),
            markers: 0,
            commit_soon: false,
            metrics: metrics.clone(),
            cfg: cfg.clone(),
        }));

        let mut consumer_cfg = client_config(cfg, &cfg.kafka.consumer_properties);
        consumer_cfg.set("group.id", &cfg.kafka.group_id);
        for (k, v) in [
            ("group.instance.id", instance.as_str()),
            // A replaced instance's partitions move after this long (static
            // membership brings them back at once to a restart with the same id).
            ("session.timeout.ms", "10000"),
            // An input topic created after startup (or not yet in the broker's
            // metadata at subscribe) is picked up within this, not librdkafka's 5 minutes.
            ("topic.metadata.refresh.interval.ms", "10000"),
            ("heartbeat.interval.ms", "2000"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            // The repartition topic is written in transactions in exactly-once mode.
            ("isolation.level", "read_committed"),
            ("statistics.interval.ms", "5000"),
            // librdkafka pauses fetching this long once its prefetch queue is full
            // (default 1 s). A consumer that decides slower than the broker serves
            // fills the queue, then drains it dry waiting: measured at 74% idle.
            ("fetch.queue.backoff.ms", "5"),
            // A lane marker (see `lane`) comes back behind what the consumer
            // already holds: 4 MB instead of 64 MB keeps that short (exactly
            // once with 64 MB decided nine tenths of its alerts through the
            // topic; BENCHMARKS.md).
            ("queued.max.messages.kbytes", "4096"),
        ] {
            set_default(&mut consumer_cfg, k, v);
        }
        let consumer: StreamConsumer<PipelineContext> =
            consumer_cfg.create_with_context(PipelineContext {
                core: core.clone(),
                metrics: metrics.clone(),
                logs: Default::default(),
            })?;
        let consumer_errors = throttle::Throttle::default();
        let mut topics: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
        topics.push(&topo.repartition);
        consumer.subscribe(&topics)?;
        tracing::info!(
            topics = ?topics,
            group = %cfg.kafka.group_id,
            instance = %instance,
            guarantee = ?cfg.pipeline.processing_guarantee,
            partitions = topo.partitions,
            brokers = %cfg.kafka.bootstrap_servers,
            "consuming"
        );

        {
            let mut c = lock(&core);
            c.rules_loaded("startup");
            c.publish_status(&consumer);
        }
        let mut commit_every = tokio::time::interval(cfg.pipeline.commit_interval()?);
        commit_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_in_flight = cfg.pipeline.max_in_flight;
        let mut trim = memory::Trim::default();

        let failure: Option<(anyhow::Error, &'static str)> = loop {
            let (deadline, in_flight) = {
                let mut c = lock(&core);
                if let Some(e) = c.fatal.take() {
                    break Some((e, "commit_failed"));
                }
                (c.next_deadline(), c.out.in_flight())
            };
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
            let command = async {
                match commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break None,
                Some(cmd) = command => lock(&core).command(cmd),
                _ = sleep => {
                    let t = std::time::Instant::now();
                    lock(&core).advance(wall_clock());
                    trim.worked();
                    metrics.busy.inc_by(t.elapsed().as_secs_f64());
                }
                _ = commit_every.tick() => {
                    {
                        let mut c = lock(&core);
                        // Ok(false): not all acknowledged yet; the next tick tries again.
                        if let Err(e) = c.try_commit(&consumer, CommitMode::Async) {
                            break Some((e, "commit_failed"));
                        }
                        c.publish_status(&consumer);
                        if c.restorer.release_idle(RESTORER_IDLE) {
                            tracing::debug!("changelog reader closed until the next rebalance");
                        }
                    }
                    match trim.maybe() {
                        Some(took) if took >= Duration::from_millis(100) => {
                            tracing::info!(took_ms = took.as_millis() as u64, "returned free heap memory (slow: the next trim waits 100 times as long)")
                        }
                        Some(took) => tracing::debug!(took_us = took.as_micros() as u64, "returned free heap memory"),
                        None => {}
                    }
                }
                msg = consumer.recv(), if in_flight < max_in_flight => match msg {
                    Ok(m) => {
                        trim.worked();
                        let t = std::time::Instant::now();
                        // Take what the consumer already holds without another turn
                        // of the select (bounded, so timers and commits keep their
                        // turn), in chunks handled together (on two threads when a
                        // chunk holds several units of work). The lock is not held while polling:
                        // rebalance callbacks run there.
                        let mut chunk = vec![m];
                        let mut taken = 1;
                        loop {
                            while chunk.len() < CHUNK && taken < BURST {
                                let Some(Ok(m)) = consumer.recv().now_or_never() else { break };
                                chunk.push(m);
                                taken += 1;
                            }
                            let more = chunk.len() == CHUNK && taken < BURST;
                            let mut c = lock(&core);
                            c.messages(&chunk);
                            chunk.clear();
                            if !more || c.out.in_flight() >= max_in_flight {
                                break;
                            }
                        }
                        {
                            // A lane marker in a transaction is read back only
                            // once that commits: commit now, not at the next tick.
                            let mut c = lock(&core);
                            if std::mem::take(&mut c.commit_soon)
                                && let Err(e) = c.try_commit(&consumer, CommitMode::Async)
                            {
                                break Some((e, "commit_failed"));
                            }
                        }
                        metrics.busy.inc_by(t.elapsed().as_secs_f64());
                    }
                    Err(error) => {
                        // A fatal error leaves the consumer unusable for good.
                        if let Some((code, why)) = consumer.client().fatal_error() {
                            let reason = match code {
                                rdkafka::types::RDKafkaErrorCode::FencedInstanceId => "fenced_instance_id",
                                _ => "consumer_fatal",
                            };
                            break Some((anyhow::anyhow!("fatal consumer error: {why}"), reason));
                        }
                        if let Some(left_out) = consumer_errors.check(&format!("{:?}", error.rdkafka_error_code())) {
                            tracing::warn!(%error, left_out, "consumer error");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        };

        if let Some((error, reason)) = failure {
            // Nothing more is committed through these clients: a revocation while
            // the consumer closes only lets its tasks go.
            let (rules, summary) = {
                let mut c = lock(&core);
                c.failed = true;
                c.unacknowledged.clear();
                // Not ready until the new clients have partitions again.
                c.status
                    .lock()
                    .expect("status lock")
                    .assigned_partitions
                    .clear();
                (c.rules.clone(), c.summary.clone())
            };
            drop(consumer);
            return Ok(Ended::Failed {
                error,
                reason,
                rules,
                summary,
            });
        }

        // Shutdown: stop consuming, emit what is due, make it durable, commit.
        tracing::info!("shutting down: flushing due groups and committing");
        let summary = {
            let mut c = lock(&core);
            c.advance(wall_clock());
            let deadline = tokio::time::Instant::now() + cfg.pipeline.shutdown_timeout()?;
            loop {
                match c.try_commit(&consumer, CommitMode::Sync) {
                    Ok(true) => break,
                    Ok(false) if tokio::time::Instant::now() < deadline => continue,
                    Ok(false) => {
                        tracing::warn!(
                            "shutdown timeout: unacknowledged output; its input stays uncommitted"
                        );
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            c.publish_status(&consumer);
            c.summary.clone()
        };
        // Closing the consumer revokes its partitions (a last, empty commit) without the lock held.
        drop(consumer);
        Ok(Ended::Stopped(summary))
    }
    .await;
    sources.close().await;
    ended
}

/// The engine's clock at the edge: wall time.
pub fn wall_clock() -> crate::model::Ts {
    crate::model::Ts(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
}

/// One decide task: the engine of one repartition partition.
struct Task {
    engine: Engine,
    /// Whether what this instance routes to the task may skip the topic.
    lane: lane::Lane,
}

/// The processing state, shared by the loop and the rebalance callbacks.
struct Core {
    cfg: Config,
    topo: Topology,
    /// The current rules (the route stage's; every task's engine holds the same).
    rules: Arc<RuleSet>,
    tasks: BTreeMap<i32, Task>,
    /// Tasks of revoked partitions, with their changelog's end offset after
    /// their last commit: reused when the partition comes back unchanged.
    kept: HashMap<i32, (Task, i64)>,
    /// Partitions assigned to this instance (input and repartition). Messages
    /// of others (prefetched before a revocation) are left to their new owner.
    assigned: std::collections::HashSet<(Arc<str>, i32)>,
    /// Per consumed partition: the offset after the last message processed.
    positions: BTreeMap<(Arc<str>, i32), i64>,
    /// What was last committed, to commit only what moved.
    committed: BTreeMap<(Arc<str>, i32), i64>,
    out: Output,
    restorer: store::Restorer,
    /// Scratch for engine outputs, drained after every step.
    outputs: Outputs,
    metrics: Arc<Metrics>,
    cache: HandleCache,
    summary: RunSummary,
    status: Arc<Mutex<Status>>,
    receivers: crate::sinks::receivers::Receivers,
    dead: Arc<dyn crate::sinks::receivers::DeadLetter>,
    /// Notifications for receivers, called once the next commit succeeds.
    /// Notifications produced since the last commit: counted, and handed to
    /// the receivers, once that commit made them durable.
    unacknowledged: Vec<Notification>,
    /// Since when commits have been deferred (output not acknowledged).
    commit_stalled_since: Option<crate::model::Ts>,
    /// The clients failed: revocations no longer commit.
    failed: bool,
    /// Set by a rebalance callback that cannot go on; the loop stops with it.
    fatal: Option<anyhow::Error>,
    core_protected: u64,
    /// Receiver calls are spawned on it (commits may run on librdkafka's thread).
    runtime: tokio::runtime::Handle,
    /// The runtime controls' table, and the version every task has.
    controls: Arc<crate::control::Shared>,
    controls_seen: u64,
    /// Every task's inhibition sources (the sources topic), which every task's engine consults.
    sources: Arc<crate::engine::SharedSources>,
    /// Tells this run's lane markers from any other's ([`lane`]).
    run: u64,
    /// The last lane marker number written.
    markers: u64,
    /// A lane marker was written in the open transaction (exactly once):
    /// the loop commits after this chunk.
    commit_soon: bool,
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
    at: crate::model::Ts,
}

impl Core {
    /// Handles a chunk of consumed messages ([`Core::handle`]).
    fn messages(&mut self, ms: &[rdkafka::message::BorrowedMessage<'_>]) {
        use rdkafka::Message;
        self.sync_controls();
        let (mut inputs, mut records) = (Vec::new(), Vec::new());
        for m in ms {
            let tp: (Arc<str>, i32) = (m.topic().into(), m.partition());
            if !self.assigned.contains(&tp) {
                continue;
            }
            // A chunk is polled before it is handled, so a partition may be
            // revoked and assigned again while some of its messages wait here;
            // the consumer then delivers them again. Handle each offset once.
            if self
                .positions
                .get(&tp)
                .is_some_and(|&next| m.offset() < next)
            {
                continue;
            }
            self.positions.insert(tp, m.offset() + 1);
            if self.topo.is_repartition(m.topic()) {
                records.push(m);
            } else {
                inputs.push(m);
            }
        }
        self.handle(&inputs, &records);
        // Held batches wait in memory that the producer's bound does not
        // count: when a lane's marker is slow to come back (behind a backlog
        // in its partition), they would pile up until the next commit. At
        // max_in_flight they go through the topic, where the bound applies.
        let held: usize = self.tasks.values().map(|t| t.lane.held()).sum();
        if held as u64 >= self.cfg.pipeline.max_in_flight {
            self.metrics.lane_overflows.inc();
            self.flush_lanes();
            // Its markers are readable once their transaction commits.
            if self.cfg.pipeline.processing_guarantee == Guarantee::ExactlyOnce {
                self.commit_soon = true;
            }
        }
    }

    fn next_deadline(&self) -> Option<crate::model::Ts> {
        self.tasks
            .values()
            .filter_map(|t| t.engine.next_deadline())
            .min()
    }

    /// Writes state changes, makes outputs durable and commits positions.
    /// `Ok(false)`: not everything was acknowledged yet (at least once); the
    /// next call tries again.
    fn try_commit<C: Consumer<PipelineContext>>(
        &mut self,
        consumer: &C,
        mode: CommitMode,
    ) -> anyhow::Result<bool> {
        let started = std::time::Instant::now();
        let result = self.commit_now(consumer, mode);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn commit_now<C: Consumer<PipelineContext>>(
        &mut self,
        consumer: &C,
        mode: CommitMode,
    ) -> anyhow::Result<bool> {
        // Shift notes gathered since the last commit, one record per squad's task: few records,
        // in this commit (this transaction) with the decisions they count.
        self.flush_lanes();
        let mut notes = Vec::new();
        self.route_shift_notes(&mut notes);
        for r in notes {
            self.out.send(r);
        }
        for (p, task) in &mut self.tasks {
            store::write_changes(
                &mut task.engine,
                &self.topo,
                *p,
                &mut self.out,
                &self.metrics,
            );
        }
        let moved: Vec<(&(Arc<str>, i32), &i64)> = self
            .positions
            .iter()
            .filter(|(tp, o)| self.committed.get(*tp) != Some(*o))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), o) in &moved {
            tpl.add_partition_offset(topic, *p, Offset::Offset(**o))?;
        }
        let group = consumer.group_metadata();
        let exactly_once = self.cfg.pipeline.processing_guarantee == Guarantee::ExactlyOnce;
        let timeout = self
            .cfg
            .pipeline
            .shutdown_timeout()?
            .min(Duration::from_secs(10));
        match self
            .out
            .commit(&tpl, group.as_ref(), timeout, |l| consumer.commit(l, mode))
        {
            Ok(()) => {
                self.metrics.commits.inc();
                if exactly_once {
                    self.metrics
                        .transactions
                        .with_label_values(&["commit"])
                        .inc();
                }
                self.committed = self.positions.clone();
                self.commit_stalled_since = None;
                self.acknowledged();
                Ok(true)
            }
            Err(CommitError::Unacknowledged(n)) => {
                tracing::debug!(records = n, "not all output acknowledged; commit deferred");
                self.commit_stalled_since.get_or_insert_with(wall_clock);
                Ok(false)
            }
            Err(e @ (CommitError::Aborted(_) | CommitError::Fatal(_))) => {
                self.metrics
                    .transactions
                    .with_label_values(&["abort"])
                    .inc();
                self.unacknowledged.clear();
                Err(anyhow::anyhow!(
                    "{e}: rebuilding the clients, which restore the committed state"
                ))
            }
        }
    }

    /// The last commit made these notifications durable (or dead-lettered
    /// them, when the broker refused them): count them and call the receivers.
    fn acknowledged(&mut self) {
        if self.unacknowledged.is_empty() {
            return;
        }
        let refused = self.out.take_refused_notifications();
        let notifications = std::mem::take(&mut self.unacknowledged);
        let now = wall_clock();
        for n in &notifications {
            if !refused.iter().any(|r| **r == *n.id) {
                self.metrics.notified(&mut self.cache, n);
                self.metrics
                    .notification_latency
                    .observe(now.since(n.at).as_secs_f64());
                self.summary.notifications += 1;
            }
        }
        if !self.cfg.pipeline.deliver_receivers {
            return;
        }
        let _entered = self.runtime.enter();
        for n in notifications {
            if let Some(sq) = self
                .rules
                .squad_by_name(&n.squad)
                .map(|i| &self.rules.squads[i as usize])
                .filter(|sq| !sq.receivers.is_empty())
            {
                self.receivers.deliver(&n, &sq.receivers, self.dead.clone());
            }
        }
    }

    /// Partitions are being revoked: commit everything first, then let their tasks go.
    fn revoke(&mut self, consumer: &BaseConsumer<PipelineContext>, tpl: &TopicPartitionList) {
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
        let result = if self.failed {
            Ok(true)
        } else {
            self.try_commit(consumer, CommitMode::Sync)
        };
        match result {
            Ok(true) => {}
            Ok(false) => tracing::warn!("commit on revocation incomplete; the next owner re-reads"),
            Err(e) => {
                tracing::error!(error = %e, "commit on revocation failed");
                self.fatal.get_or_insert(e);
            }
        }
        for e in tpl.elements() {
            let key: (Arc<str>, i32) = (e.topic().into(), e.partition());
            self.assigned.remove(&key);
            self.positions.remove(&key);
            self.committed.remove(&key);
            if self.topo.is_repartition(e.topic()) {
                // Its next owner's sources reach this instance through the topic.
                self.sources.release(e.partition());
                if let Some(task) = self.tasks.remove(&e.partition()) {
                    let _ = self
                        .metrics
                        .task_state_bytes
                        .remove_label_values(&[&e.partition().to_string()]);
                    if let Some(end) = self.restorer.end(e.partition()) {
                        self.kept.insert(e.partition(), (task, end));
                    }
                }
            }
            let _ = self
                .metrics
                .consumer_lag
                .remove_label_values(&[e.topic(), &e.partition().to_string()]);
        }
        tracing::info!(partitions = tpl.count(), "partitions revoked");
    }

    /// Partitions were assigned: restore each new task's state before it processes anything.
    fn assign(&mut self, tpl: &TopicPartitionList) {
        self.metrics.rebalances.with_label_values(&["assign"]).inc();
        for e in tpl.elements() {
            self.assigned.insert((e.topic().into(), e.partition()));
        }
        let wanted: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| self.topo.is_repartition(e.topic()))
            .map(|e| e.partition())
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        // Records routed before this assignment (by the previous owners of
        // the input partitions now assigned) come first: lanes close.
        for t in self.tasks.values_mut() {
            t.lane.reassigned();
        }
        self.metrics.restoring.set(wanted.len() as i64);
        self.metrics.ready.set(0);
        let mut restore = Vec::new();
        for p in wanted {
            match self.kept.remove(&p) {
                Some((mut task, end)) if self.restorer.end(p) == Some(end) => {
                    tracing::info!(partition = p, "state kept: the changelog did not move");
                    task.lane = lane::Lane::default();
                    task.engine.share_sources(self.sources.clone(), p);
                    self.tasks.insert(p, task);
                    self.metrics.restoring.dec();
                }
                _ => restore.push(p),
            }
        }
        if !restore.is_empty() {
            match self
                .restorer
                .restore(&restore, self.rules.clone(), &self.metrics, RESTORE_LIMIT)
            {
                Ok(restored) => {
                    let (mut records, mut alerts, mut slowest) = (0, 0, Duration::ZERO);
                    for store::Restored {
                        partition,
                        engine,
                        report,
                        took,
                    } in restored
                    {
                        self.metrics.restores.inc();
                        self.metrics.restore_seconds.observe(took.as_secs_f64());
                        if report.malformed > 0 || report.orphans > 0 {
                            tracing::warn!(
                                partition,
                                malformed = report.malformed,
                                orphans = report.orphans,
                                "changelog records left out of the restored state"
                            );
                        }
                        records += report.records;
                        alerts += engine.active_alerts();
                        slowest = slowest.max(took);
                        let mut engine = engine;
                        engine.set_shift_mode(crate::engine::ShiftMode::Routed);
                        engine.share_sources(self.sources.clone(), partition);
                        self.tasks.insert(
                            partition,
                            Task {
                                engine,
                                lane: lane::Lane::default(),
                            },
                        );
                    }
                    tracing::info!(
                        partitions = restore.len(),
                        records,
                        alerts,
                        took_ms = slowest.as_millis() as u64,
                        "state restored"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "state restore failed");
                    self.fatal.get_or_insert(e);
                }
            }
            self.metrics.restoring.set(0);
        }
        self.kept.clear();
        // New and kept tasks get the current controls at the next step.
        self.controls_seen = u64::MAX;
        tracing::info!(
            partitions = tpl.count(),
            tasks = self.tasks.len(),
            "partitions assigned"
        );
    }

    /// Hands every task the latest runtime controls, when they changed.
    fn sync_controls(&mut self) {
        let version = self.controls.version();
        if version == self.controls_seen {
            return;
        }
        let snapshot = self.controls.snapshot();
        for t in self.tasks.values_mut() {
            t.engine.set_controls(snapshot.clone());
        }
        self.controls_seen = version;
    }

    /// Runs every task's timers due by `now`.
    fn advance(&mut self, now: crate::model::Ts) {
        self.sync_controls();
        let tasks: Vec<i32> = self.tasks.keys().copied().collect();
        for p in tasks {
            let task = self.tasks.get_mut(&p).expect("listed");
            if task.engine.tick_if_due(now, &mut self.outputs) {
                self.emit(Vec::new(), now);
            }
        }
    }

    /// Turns the outputs of one step into records: notifications, audit
    /// records, plus `records` the step already made (dead letters).
    fn emit(&mut self, mut records: Vec<Record>, now: crate::model::Ts) {
        let rules = self.rules.clone();
        self.metrics.record(&mut self.cache, &self.outputs.fates);
        let notifications = std::mem::take(&mut self.outputs.notifications);
        for n in &notifications {
            if let Some(r) = &n.report {
                self.metrics.handover(&n.squad, r);
            } else if n.reason == crate::engine::NotifyReason::Resolved {
                self.metrics.group_resolved(&n.squad, n);
            }
            let squad = rules
                .squad_by_name(&n.squad)
                .map(|i| &rules.squads[i as usize]);
            let topic = squad
                .map(|s| s.topic.clone())
                .unwrap_or_else(|| format!("alerts.squad.{}", n.squad));
            records.push(Record {
                kind: Kind::Notification,
                topic,
                partition: None,
                key: Some(n.group_key.as_bytes().to_vec()),
                payload: Some(
                    WebhookPayload::new(n, &self.cfg.pipeline.external_url)
                        .to_json_within(self.cfg.pipeline.payload_limits()),
                ),
                headers: vec![
                    ("squadron.reason", n.reason.as_str().as_bytes().to_vec()),
                    ("squadron.notification.id", n.id.as_bytes().to_vec()),
                ],
            });
        }
        self.unacknowledged.extend(notifications);
        for part in std::mem::take(&mut self.outputs.deliveries) {
            records.push(self.delivery_record(part));
        }
        if self.cfg.pipeline.audit != AuditMode::Off {
            for f in &self.outputs.fates {
                if self.cfg.pipeline.audit == AuditMode::All
                    || f.fate.kind() != FateKind::Notified
                        && f.fate.kind() != FateKind::Deduplicated
                {
                    records.push(self.audit(f, &rules, now));
                }
            }
        }
        self.outputs.clear();
        for r in records {
            match r.kind {
                Kind::DeadLetter => self.metrics.dead_letter("invalid_input"),
                Kind::Audit => self.metrics.audit_records.inc(),
                _ => {}
            }
            self.out.send(r);
        }
        let protected: u64 = self
            .tasks
            .values()
            .map(|t| t.engine.stats().core_protected)
            .sum();
        self.metrics
            .core_protected
            .inc_by(protected.saturating_sub(self.core_protected));
        self.core_protected = self.core_protected.max(protected);
    }

    fn audit(&self, f: &FateRecord, rules: &RuleSet, now: crate::model::Ts) -> Record {
        let (topic, partition, offset) = self.topo.origin(f.input).unwrap_or(("", -1, -1));
        let rec = AuditRecord {
            topic,
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
            kind: Kind::Audit,
            topic: self.cfg.kafka.audit_topic.clone(),
            partition: None,
            key: f.fingerprint.map(|fp| fp.to_string().into_bytes()),
            payload: Some(serde_json::to_vec(&rec).expect("audit serializes")),
            headers,
        }
    }

    fn command(&mut self, cmd: Command) {
        // Answers about held alerts reflect the silences in force now.
        self.sync_controls();
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
                let now = wall_clock();
                let mut groups: Vec<crate::engine::GroupView> = self
                    .tasks
                    .values()
                    .flat_map(|t| {
                        t.engine.groups(now, |sq, labels| {
                            squad.as_deref().is_none_or(|s| s == sq)
                                && crate::rules::all_match(&matchers, labels)
                        })
                    })
                    .collect();
                groups.sort_by(|a, b| a.key.cmp(&b.key));
                let _ = reply.send(groups);
            }
            Command::Shifts { squad, reply } => {
                let now = wall_clock();
                let mut shifts: Vec<crate::engine::ShiftPreview> = self
                    .tasks
                    .values()
                    .flat_map(|t| t.engine.shift_previews(squad.as_deref(), now))
                    .collect();
                shifts.sort_by(|a, b| a.squad.cmp(&b.squad));
                let _ = reply.send(shifts);
            }
        }
    }

    /// The same loading as startup (`rules::load_dir`). Invalid files leave the
    /// current rules serving; state (groups, timers) carries over either way.
    fn reload(&mut self, source: &'static str) -> ReloadOutcome {
        let current = self.rules.digest.clone();
        match crate::rules::load_dir(&self.cfg.rules) {
            Ok(rules) if rules.digest == current => ReloadOutcome::Unchanged { digest: current },
            Ok(rules) => {
                let digest = rules.digest.clone();
                let rules = Arc::new(rules);
                for t in self.tasks.values_mut() {
                    t.engine.set_rules(rules.clone());
                }
                self.rules = rules;
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
        // With the load time, at once: /api/v1/status never pairs a new load time with the old digest.
        s.rules_digest = self.rules.digest.clone();
        s.rules_loaded_at = Some(now.to_string());
        s.rules_error = None;
    }

    fn publish_status(&self, consumer: &StreamConsumer<PipelineContext>) {
        let rules = &self.rules;
        let now = wall_clock();
        let (mut alerts, mut groups) = (0, 0);
        let mut bytes = 0;
        for (p, t) in &self.tasks {
            alerts += t.engine.active_alerts();
            groups += t.engine.active_groups();
            let b = t.engine.state_bytes();
            bytes += b;
            self.metrics
                .task_state_bytes
                .with_label_values(&[&p.to_string()])
                .set(b as i64);
        }
        self.metrics.active_alerts.set(alerts as i64);
        self.metrics.active_groups.set(groups as i64);
        self.metrics.state_bytes.set(bytes as i64);
        self.metrics.in_flight.set(self.out.in_flight() as i64);
        let assigned: Vec<String> = consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        let mut s = self.status.lock().expect("status lock");
        s.version = env!("CARGO_PKG_VERSION");
        s.rules_digest = rules.digest.clone();
        s.rules = Some(rules.clone());
        s.instance = self.cfg.instance_id();
        s.started_at.get_or_insert(now);
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
        s.active_alerts = alerts;
        s.active_groups = groups;
        s.received = self.summary.received;
        s.heartbeat = Some(now);
        s.commit_stalled_since = self.commit_stalled_since;
        let ready = crate::telemetry::http::readiness(&s, self.metrics.restoring.get(), now);
        self.metrics.ready.set(i64::from(ready.is_ok()));
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
    config: ClientConfig,
    /// Made at the first dead letter: most runs never need one, and an idle
    /// producer still costs a thread, a connection and some CPU.
    producer: std::sync::OnceLock<Result<polled::AsyncProducer, String>>,
    topic: String,
    metrics: Arc<Metrics>,
}

impl crate::sinks::receivers::DeadLetter for ReceiverDeadLetters {
    fn dead_letter(&self, receiver: &str, squad: &str, error: &str, payload: Vec<u8>) {
        self.metrics.dead_letter("receiver_failed");
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
        let producer = match self
            .producer
            .get_or_init(|| polled::AsyncProducer::new(&self.config).map_err(|e| e.to_string()))
        {
            Ok(p) => p.clone(),
            Err(error) => {
                tracing::error!(%error, "cannot dead-letter a failed receiver delivery: no producer");
                return;
            }
        };
        let topic = self.topic.clone();
        tokio::spawn(async move {
            let sent = producer
                .send(
                    &topic,
                    None,
                    &payload,
                    Some(headers),
                    Duration::from_secs(30),
                )
                .await;
            if let Err(error) = sent {
                tracing::error!(%error, "cannot dead-letter a failed receiver delivery");
            }
        });
    }
}
