//! `squadron bench`: the end-to-end load generator against a real broker.
//!
//! 1. Throughput: preloads N alerts (Prometheus-style batches of 64, the
//!    generated hour repeated) into a fresh input topic, then measures
//!    - the baseline: a bare consumer reading the same topic (no decoding), and
//!    - the pipeline: `pipeline::run` with the rules given, from its first
//!      consumed message until all N alerts are decided or waiting in a group.
//! 2. Latency: rules with `group_wait: 0`, input paced at a fraction of the
//!    measured rate; each batch carries one new probe alert whose notification
//!    is timed from the input's broker append time to the notification's broker
//!    append time (both topics use LogAppendTime: one clock).

use crate::model::Ts;
use crate::pipeline::{self, Config, Guarantee, Handles, wall_clock};
use crate::sim::{Scenario, generate};
use crate::telemetry::http::Status;
use crate::telemetry::metrics::Metrics;
use anyhow::Context;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Kafka bootstrap servers (scripts/kafka.sh start: 127.0.0.1:19092).
    #[arg(
        long,
        env = "SQUADRON_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    pub bootstrap_servers: String,
    /// Rules for the throughput run.
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Alerts to preload for the throughput run. At half a million alerts a
    /// second a million last two seconds, of which start-up (the first lane
    /// markers, the first transaction) is a third: three give the steady rate.
    #[arg(long, default_value_t = 3_000_000)]
    pub alerts: u64,
    /// Latency run: input rate as a fraction of the measured pipeline throughput.
    #[arg(long, default_value_t = 0.5)]
    pub latency_load: f64,
    /// Latency run: input rate in alerts/s (overrides --latency-load).
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Latency run: how long to send.
    #[arg(long, default_value = "15s", value_parser = |s: &str| crate::model::parse_duration(s))]
    pub latency_duration: Duration,
    /// Partitions of the internal topics (decide tasks) in the throughput runs.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Restore run: active alerts in one task's state, written to a changelog
    /// partition and restored from it (0 skips the run).
    #[arg(long, default_value_t = 100_000)]
    pub restore_alerts: usize,
    /// Commit interval of the exactly-once run (default: the pipeline's,
    /// `pipeline.commit_interval`); the at-least-once run keeps its default.
    #[arg(long)]
    pub exactly_once_commit_interval: Option<String>,
    /// A librdkafka property for the pipeline's producers in the throughput
    /// runs, as `name=value` (repeatable; like `kafka.producer_properties`).
    #[arg(long = "producer-property", value_name = "NAME=VALUE", value_parser = property)]
    pub producer_properties: Vec<(String, String)>,
    /// A librdkafka property for the pipeline's consumer in the throughput
    /// runs, as `name=value` (repeatable; like `kafka.consumer_properties`).
    #[arg(long = "consumer-property", value_name = "NAME=VALUE", value_parser = property)]
    pub consumer_properties: Vec<(String, String)>,
    /// The broker's process id (`scripts/kafka.sh status` prints it): the
    /// throughput runs then also report the broker's CPU per alert.
    #[arg(long, env = "SQUADRON_BENCH_BROKER_PID")]
    pub broker_pid: Option<u32>,
    /// Keep the topics the run made (by default they are deleted at the end).
    #[arg(long)]
    pub keep_topics: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let id = format!(
        "{}-{}",
        std::process::id(),
        wall_clock().millis() % 100_000_000
    );
    let result = runtime.block_on(run(args, &id));
    if !args.keep_topics {
        // Also after a failed run: each run makes about 120 partitions, and a
        // broker left holding thousands works (and varies) more in every
        // later run.
        if let Err(error) = runtime.block_on(delete_topics_of(&args.bootstrap_servers, &id)) {
            eprintln!("bench: could not delete this run's topics (*{id}*): {error:#}");
        }
    }
    result
}

async fn run(args: &BenchArgs, id: &str) -> anyhow::Result<i32> {
    let b = &args.bootstrap_servers;
    // Throughput.
    let input = format!("bench-in-{id}");
    create_topics(b, &[(&input, 4)]).await?;
    eprintln!("bench: preloading {} alerts into {input}", args.alerts);
    let (messages, alerts) = preload(b, &input, args.alerts).await?;
    eprintln!("bench: preloaded {messages} messages, {alerts} alerts; baseline: a bare consumer");
    let baseline = consume_all(b, &input, messages).await?;
    eprintln!(
        "bench: baseline read {messages} messages in {:.2}s; now the pipeline",
        baseline.as_secs_f64()
    );
    let rules = super::run::load_rules(&args.rules)?;
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = b.clone();
    cfg.kafka.input_topics = vec![input.clone()];
    cfg.kafka.dead_letter_topic = format!("bench-dlq-{id}");
    cfg.http.listen = None;
    cfg.pipeline.deliver_receivers = false;
    cfg.pipeline.partitions = args.partitions;
    cfg.kafka
        .producer_properties
        .extend(args.producer_properties.iter().cloned());
    cfg.kafka
        .consumer_properties
        .extend(args.consumer_properties.iter().cloned());
    let mut runs = Vec::new();
    for guarantee in [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce] {
        let mut cfg = cfg.clone();
        cfg.kafka.group_id = format!("bench-{id}-{guarantee:?}");
        cfg.kafka.instance_id = Some(format!("bench-{id}"));
        cfg.pipeline.processing_guarantee = guarantee;
        if guarantee == Guarantee::ExactlyOnce {
            cfg.pipeline.commit_interval = args.exactly_once_commit_interval.clone();
        }
        let cpu_before = Cpu::now(args.broker_pid);
        let (elapsed, metrics) = run_until(cfg, rules.clone(), alerts).await?;
        let cpu = Cpu::now(args.broker_pid).per_alert_since(&cpu_before, alerts);
        let rate = alerts as f64 / elapsed.as_secs_f64();
        eprintln!(
            "bench: {guarantee:?}: {alerts} alerts through both stages in {:.2}s: {rate:.0} alerts/s (the pipeline task was busy {:.2}s of it; {} steps done on two threads; {} changelog records, {} commits holding the loop {:.2}s; batches routed {})",
            elapsed.as_secs_f64(),
            metrics.busy.get(),
            metrics.parallel_chunks.get(),
            metrics.changelog_records.get(),
            metrics.commits.get(),
            metrics.commit_seconds.get_sample_sum(),
            routed_paths(&metrics),
        );
        eprintln!("bench: {guarantee:?}: {cpu}");
        runs.push((elapsed, rate, metrics, cpu));
    }
    let (elapsed, rate, metrics, cpu) = &runs[0];
    let (elapsed, rate) = (*elapsed, *rate);
    let (eos_elapsed, eos_rate, eos_cpu) = (runs[1].0, runs[1].1, &runs[1].3);
    let baseline_rate = alerts as f64 / baseline.as_secs_f64();
    let fates = metrics.fate_counts();

    // Latency.
    let latency_rate = args.latency_rate.unwrap_or(rate * args.latency_load);
    let (lat_in, lat_out) = (format!("bench-lat-in-{id}"), format!("bench-lat-out-{id}"));
    create_topics(b, &[(&lat_in, 4), (&lat_out, 1)]).await?;
    let dir = std::env::temp_dir().join(format!("squadron-bench-rules-{id}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("bench.yaml"),
        format!(
            "ownership: {{fallback_squad: bench}}\nsquads:\n  - name: bench\n    topic: {lat_out}\n    grouping: {{group_by: [alertname, probe], group_wait: 0s, group_interval: 5m}}\n"
        ),
    )?;
    let rules = super::run::load_rules(&dir)?;
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = b.clone();
    cfg.kafka.group_id = format!("bench-lat-{id}");
    cfg.kafka.input_topics = vec![lat_in.clone()];
    cfg.kafka.dead_letter_topic = format!("bench-dlq-{id}");
    cfg.http.listen = None;
    cfg.pipeline.deliver_receivers = false;
    eprintln!(
        "bench: latency run at {latency_rate:.0} alerts/s for {}s (group_wait 0)",
        args.latency_duration.as_secs()
    );
    let (latencies, sent_batches) = latency_run(
        cfg,
        rules,
        b,
        &lat_in,
        &lat_out,
        latency_rate,
        args.latency_duration,
    )
    .await?;
    // What the generator achieved, which can fall short of the target on a loaded machine.
    let achieved_rate = sent_batches as f64 * 64.0 / args.latency_duration.as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    // Restore.
    let restore = if args.restore_alerts > 0 {
        Some(restore_run(b, &args.rules, id, args.restore_alerts).await?)
    } else {
        None
    };
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };

    let result = json!({
        "alerts": alerts,
        "messages": messages,
        "pipeline_seconds": elapsed.as_secs_f64(),
        "pipeline_alerts_per_second": rate,
        "exactly_once_seconds": eos_elapsed.as_secs_f64(),
        "exactly_once_alerts_per_second": eos_rate,
        "ratio_exactly_once_to_at_least_once": eos_rate / rate,
        "cpu_us_per_alert": {"at_least_once": cpu.json(), "exactly_once": eos_cpu.json()},
        "routed_batches": {"at_least_once": routed_paths(metrics), "exactly_once": routed_paths(&runs[1].2)},
        "commit_seconds": {"at_least_once": metrics.commit_seconds.get_sample_sum(), "exactly_once": runs[1].2.commit_seconds.get_sample_sum()},
        "baseline_consume_seconds": baseline.as_secs_f64(),
        "baseline_alerts_per_second": baseline_rate,
        "ratio_pipeline_to_baseline": rate / baseline_rate,
        "fates": fates.iter().map(|(k, n)| (k.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "restore": restore.as_ref().map(|r| json!({"active_alerts": r.alerts, "records": r.records, "compacted_records": r.live, "seconds": r.took.as_secs_f64(), "alerts_per_second": r.alerts as f64 / r.took.as_secs_f64()})),
        "latency": {"target_alerts_per_second": latency_rate, "achieved_alerts_per_second": achieved_rate, "probes": latencies.len(), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": latencies.last().copied().unwrap_or(-1)},
    });
    if args.json {
        println!("{result}");
    } else {
        println!("end-to-end through {b}");
        println!(
            "  throughput  {alerts} alerts in {:.2}s = {rate:.0} alerts/s (at least once)",
            elapsed.as_secs_f64()
        );
        println!(
            "  exactly     {alerts} alerts in {:.2}s = {eos_rate:.0} alerts/s (exactly once; {:.2} of at least once)",
            eos_elapsed.as_secs_f64(),
            eos_rate / rate
        );
        println!("  cpu         at least once: {cpu}; exactly once: {eos_cpu}");
        println!(
            "  baseline    bare consumer over the same topic: {baseline_rate:.0} alerts/s (pipeline/baseline = {:.2})",
            rate / baseline_rate
        );
        if let Some(r) = &restore {
            println!(
                "  restore     {} active alerts ({} changelog records, {} after compaction) restored in {:.2}s",
                r.alerts,
                r.records,
                r.live,
                r.took.as_secs_f64()
            );
        }
        println!(
            "  latency     at {achieved_rate:.0} alerts/s (target {latency_rate:.0}), group_wait 0, {} probes: p50 {} ms, p99 {} ms, max {} ms",
            latencies.len(),
            pct(0.5),
            pct(0.99),
            latencies.last().copied().unwrap_or(-1)
        );
    }
    Ok(0)
}

/// Deletes every topic whose name holds `id`: what one bench run made (its
/// own topics and the pipelines' internal ones).
async fn delete_topics_of(brokers: &str, id: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    // The metadata call blocks: off the runtime.
    let admin = std::sync::Arc::new(admin);
    let (reader, id) = (admin.clone(), id.to_owned());
    let names = tokio::task::spawn_blocking(move || {
        let m = reader
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))?;
        anyhow::Ok(
            m.topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|n| n.contains(id.as_str()))
                .collect::<Vec<_>>(),
        )
    })
    .await??;
    if names.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for r in admin.delete_topics(&names, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("deleting {t}: {e}"))?;
    }
    eprintln!("bench: deleted this run's {} topics", names.len());
    Ok(())
}

/// CPU time per alert of one throughput run: squadron's process (the
/// pipeline: nothing else of the bench runs meanwhile) and, when its pid is
/// given, the broker's. Counted over the whole run, start-up and shut-down
/// included.
struct Cpu {
    squadron_us: Option<f64>,
    broker_us: Option<f64>,
}

impl Cpu {
    /// CPU seconds so far (not yet per alert): squadron's and the broker's.
    fn now(broker: Option<u32>) -> Cpu {
        Cpu {
            squadron_us: cpu_seconds("self"),
            broker_us: broker.and_then(|p| cpu_seconds(&p.to_string())),
        }
    }

    /// What was spent between `before` and this reading, in µs per alert.
    fn per_alert_since(&self, before: &Cpu, alerts: u64) -> Cpu {
        let per_alert =
            |b: Option<f64>, a: Option<f64>| Some((a? - b?) * 1e6 / alerts.max(1) as f64);
        Cpu {
            squadron_us: per_alert(before.squadron_us, self.squadron_us),
            broker_us: per_alert(before.broker_us, self.broker_us),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"squadron": self.squadron_us, "broker": self.broker_us})
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |v: Option<f64>| v.map_or("unknown".to_owned(), |v| format!("{v:.2}"));
        write!(
            f,
            "CPU per alert: squadron {} us, broker {} us",
            us(self.squadron_us),
            match self.broker_us {
                None => "unmeasured (--broker-pid)".to_owned(),
                v => us(v),
            }
        )
    }
}

/// A process' user and system CPU time so far, from `/proc/<pid>/stat`
/// (`pid` may be "self"); `None` where there is no such file.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (in parentheses, which may hold spaces):
    // utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // In USER_HZ ticks: 100 per second, fixed by the kernel's ABI on every
    // architecture squadron builds for.
    Some(ticks as f64 / 100.0)
}

async fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| {
            NewTopic::new(t, *p, TopicReplication::Fixed(1))
                .set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    for r in admin.create_topics(&new, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Preloads at least `want` alerts: the generated hour's messages, repeated.
async fn preload(brokers: &str, topic: &str, want: u64) -> anyhow::Result<(u64, u64)> {
    let events = generate(&Scenario::hour(wall_clock()));
    let p = producer(brokers)?;
    let (mut messages, mut alerts) = (0u64, 0u64);
    let mut pending = FuturesUnordered::new();
    'outer: loop {
        for e in &events {
            if alerts >= want {
                break 'outer;
            }
            let n = crate::decode::decode(&e.message)
                .map(|d| d.alerts.len() as u64)
                .unwrap_or(1);
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
                .payload(&e.message[..])
                .partition((messages % 4) as i32);
            pending.push(p.send(record, Duration::from_secs(30)));
            messages += 1;
            alerts += n;
            if pending.len() > 10_000 {
                pending
                    .next()
                    .await
                    .expect("non-empty")
                    .map_err(|(e, _)| anyhow::anyhow!("preload: {e}"))?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        r.map_err(|(e, _)| anyhow::anyhow!("preload: {e}"))?;
    }
    Ok((messages, alerts))
}

/// The baseline: reads `messages` messages with a bare consumer; timed from the first.
async fn consume_all(brokers: &str, topic: &str, messages: u64) -> anyhow::Result<Duration> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("bench-baseline-{}", wall_clock().millis()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    let mut n = 0u64;
    let mut bytes = 0usize;
    let mut first: Option<Instant> = None;
    while n < messages {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .context("baseline consumer stalled")??;
        first.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, <[u8]>::len);
        n += 1;
    }
    std::hint::black_box(bytes);
    Ok(first.expect("read at least one").elapsed())
}

/// How many batches of alerts took each path to their task.
fn routed_paths(m: &Metrics) -> serde_json::Value {
    crate::pipeline::RoutePath::ALL
        .iter()
        .zip(&m.routed_batches)
        .map(|(path, n)| ((*path).to_owned(), json!(n.get())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Runs the pipeline until `alerts` alerts were received; timed from the first.
async fn run_until(
    cfg: Config,
    rules: Arc<crate::rules::RuleSet>,
    alerts: u64,
) -> anyhow::Result<(Duration, Arc<Metrics>)> {
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new())?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pipeline::run(
        cfg,
        rules,
        Handles {
            metrics: metrics.clone(),
            status: Arc::new(Mutex::new(Status::default())),
            shutdown: shutdown.clone(),
            commands: None,
            controls: None,
        },
    ));
    // Through both stages: decided, waiting in a group, or invalid.
    let received = |m: &Metrics| -> u64 { m.through_total() };
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let r = received(&metrics);
        if r > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if r >= alerts {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pipeline did not receive {alerts} alerts within 10 minutes (got {r})"
        );
        anyhow::ensure!(!task.is_finished(), "pipeline stopped early");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = first.expect("received").elapsed();
    shutdown.cancel();
    task.await??;
    Ok((elapsed, metrics))
}

async fn latency_run(
    cfg: Config,
    rules: Arc<crate::rules::RuleSet>,
    brokers: &str,
    input: &str,
    output: &str,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<(Vec<i64>, u64)> {
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new())?);
    let shutdown = CancellationToken::new();
    let status = Arc::new(Mutex::new(Status::default()));
    let task = tokio::spawn(pipeline::run(
        cfg,
        rules,
        Handles {
            metrics: metrics.clone(),
            status: status.clone(),
            shutdown: shutdown.clone(),
            commands: None,
            controls: None,
        },
    ));
    // Wait for the partition assignment before sending.
    let start = Instant::now();
    while status
        .lock()
        .expect("status")
        .assigned_partitions
        .is_empty()
    {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "no partitions assigned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No batching delay: each batch goes out when it is due.
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()?;
    let background: Vec<serde_json::Value> = (0..63)
        .map(|i| json!({"labels": {"alertname": "Background", "instance": format!("i{i}")}, "endsAt": Ts(wall_clock().millis() + 3_600_000).to_string()}))
        .collect();
    let batch_interval = Duration::from_secs_f64(64.0 / rate.max(64.0));
    let mut sent_at: HashMap<u64, i64> = HashMap::new();
    let mut pending = FuturesUnordered::new();
    let mut next = Instant::now();
    let mut probe = 0u64;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let mut batch = background.clone();
        batch.push(json!({"labels": {"alertname": "Probe", "probe": probe.to_string()}, "endsAt": Ts(wall_clock().millis() + 3_600_000).to_string()}));
        let payload = serde_json::to_vec(&batch)?;
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(input)
            .payload(&payload[..])
            .partition((probe % 4) as i32);
        let id = probe;
        let delivery = p
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("latency producer: {e}"))?;
        pending.push(async move { (id, delivery.await.ok().and_then(Result::ok)) });
        probe += 1;
        next += batch_interval;
        // Collect acknowledgements until the next batch is due.
        let due = tokio::time::Instant::from_std(next);
        loop {
            tokio::select! {
                Some((id, delivered)) = pending.next(), if !pending.is_empty() => {
                    if let Some(ms) = delivered.and_then(|d| d.timestamp.to_millis()) {
                        sent_at.insert(id, ms);
                    }
                }
                _ = tokio::time::sleep_until(due) => break,
            }
        }
    }
    while let Some((id, delivered)) = pending.next().await {
        if let Some(ms) = delivered.and_then(|d| d.timestamp.to_millis()) {
            sent_at.insert(id, ms);
        }
    }
    // Read the notifications: one per probe.
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-out-{}", wall_clock().millis()))
        .set("auto.offset.reset", "earliest")
        .create()?;
    c.subscribe(&[output])?;
    let mut latencies = Vec::new();
    let read_until = Instant::now() + Duration::from_secs(30);
    while latencies.len() < sent_at.len() && Instant::now() < read_until {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), c.recv()).await else {
            break;
        };
        let Some(ts) = m.timestamp().to_millis() else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        for a in v["alerts"].as_array().into_iter().flatten() {
            if let Some(p) = a["labels"]["probe"]
                .as_str()
                .and_then(|p| p.parse::<u64>().ok())
            {
                if let Some(sent) = sent_at.get(&p) {
                    latencies.push(ts - sent);
                }
            }
        }
    }
    shutdown.cancel();
    task.await??;
    latencies.sort_unstable();
    anyhow::ensure!(!latencies.is_empty(), "no probe notification arrived");
    Ok((latencies, probe))
}

struct RestoreRun {
    alerts: usize,
    records: usize,
    live: usize,
    took: Duration,
}

/// One task's state with `alerts` active alerts (each resent once, so the log
/// holds history as well as live state), written to a one-partition changelog
/// as the pipeline writes it, then restored the way an assignment restores it.
async fn restore_run(
    brokers: &str,
    rules_dir: &std::path::Path,
    id: &str,
    alerts: usize,
) -> anyhow::Result<RestoreRun> {
    use crate::engine::{Engine, Outputs};
    let rules = super::run::load_rules(rules_dir)?;
    let topic = format!("bench-changelog-{id}");
    create_topics(brokers, &[(&topic, 1)]).await?;
    eprintln!("bench: restore run: {alerts} active alerts into {topic}");
    let now = wall_clock();
    let mut engine = Engine::new(rules.clone());
    engine.track_changes();
    let mut out = Outputs::default();
    let messages = crate::sim::distinct_alerts(alerts, now, 7);
    let mut log = Vec::new();
    for round in 0..2 {
        for (i, m) in messages.iter().enumerate() {
            crate::ingest::feed(
                &mut engine,
                m,
                now.plus(Duration::from_millis(round)),
                i as u64,
                &mut out,
            );
            out.clear();
        }
        log.extend(engine.take_changes());
    }
    let live = engine.active_alerts();
    let p = producer(brokers)?;
    let mut pending = FuturesUnordered::new();
    for (k, v) in &log {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).key(&k[..]).partition(0);
        if let Some(v) = v {
            r = r.payload(&v[..]);
        }
        pending.push(p.send(r, Duration::from_secs(30)));
        if pending.len() > 10_000 {
            pending
                .next()
                .await
                .expect("non-empty")
                .map_err(|(e, _)| anyhow::anyhow!("changelog: {e}"))?;
        }
    }
    while let Some(r) = pending.next().await {
        r.map_err(|(e, _)| anyhow::anyhow!("changelog: {e}"))?;
    }
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = brokers.to_owned();
    cfg.kafka.group_id = format!("bench-restore-{id}");
    let metrics = Metrics::new(prometheus::Registry::new())?;
    let mut restorer = crate::pipeline::store::Restorer::new(&cfg, topic.clone())?;
    let started = Instant::now();
    let restored = tokio::task::block_in_place(|| {
        restorer.restore(&[0], rules, &metrics, Duration::from_secs(300))
    })?;
    let took = started.elapsed();
    let engine = &restored.first().context("restored one partition")?.engine;
    anyhow::ensure!(
        engine.active_alerts() == live,
        "restored {} alerts, wrote {live}",
        engine.active_alerts()
    );
    let distinct: std::collections::HashSet<&[u8]> = log.iter().map(|(k, _)| &k[..]).collect();
    Ok(RestoreRun {
        alerts: live,
        records: log.len(),
        live: distinct.len(),
        took,
    })
}
