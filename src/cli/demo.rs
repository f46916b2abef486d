//! `squadron demo`: the whole pipeline with nothing installed. An in-process
//! Kafka (librdkafka's mock cluster), a generator producing a live alert storm
//! into the input topic, the real pipeline consuming it with the rules given,
//! a live summary in the terminal and `/metrics` served.

use super::run::{load_rules, spawn_signal_handler, start_http};
use crate::engine::FateKind;
use crate::pipeline::{self, Config, Handles, wall_clock};
use crate::sim::{Scenario, generate};
use crate::telemetry::metrics::Metrics;
use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Rules directory.
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// How long the generated traffic runs (then the summary is printed).
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Where /metrics, /healthz, /readyz and /api/v1/status are served; `off` disables.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http_listen: String,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::model::parse_duration(s)
}

pub fn demo(args: &DemoArgs) -> anyhow::Result<i32> {
    let rules = load_rules(&args.rules)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // First, so a SIGTERM during startup also ends with the summary.
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone());
        let mock = MockCluster::new(1).context("starting the in-process Kafka")?;
        let brokers = mock.bootstrap_servers();
        let mut cfg = Config { rules: args.rules.clone(), ..Config::default() };
        cfg.kafka.bootstrap_servers = brokers.clone();
        cfg.kafka.group_id = "squadron-demo".into();
        // A demo must not call the receivers declared in the rules.
        cfg.pipeline.deliver_receivers = false;
        cfg.http.listen = match args.http_listen.as_str() {
            "off" => None,
            a => Some(a.parse().with_context(|| format!("--http-listen {a:?}"))?),
        };
        mock.create_topic(&cfg.kafka.input_topics[0], 4, 1)?;
        mock.create_topic(&cfg.kafka.dead_letter_topic, 1, 1)?;
        // The mock cluster cannot create topics through the admin API.
        mock.create_topic(&cfg.repartition_topic(), cfg.pipeline.partitions, 1)?;
        mock.create_topic(&cfg.changelog_topic(), cfg.pipeline.partitions, 1)?;
        mock.create_topic(&cfg.sources_topic(), cfg.pipeline.partitions, 1)?;
        mock.create_topic(&cfg.controls_topic(), 1, 1)?;
        for s in &rules.squads {
            mock.create_topic(&s.topic, 1, 1)?;
        }
        // The same commands as `run`: /api/v1/groups, /api/v1/alerts, /-/reload,
        // SIGHUP and rule file changes.
        let (commands, commands_rx) = tokio::sync::mpsc::channel(16);
        super::run::spawn_reload_on_sighup(commands.clone());
        pipeline::spawn_rules_watcher(cfg.rules.clone(), commands.clone(), shutdown.clone());
        let shared = start_http(&cfg, shutdown.clone(), Some(commands)).await?;
        if let Some(addr) = cfg.http.listen {
            eprintln!("squadron demo: in-process Kafka at {brokers}; metrics at http://{addr}/metrics; Ctrl-C stops");
        }
        let pipeline = tokio::spawn(pipeline::run(
            cfg.clone(),
            rules,
            Handles { metrics: shared.metrics.clone(), status: shared.status.clone(), shutdown: shutdown.clone(), commands: Some(commands_rx), controls: shared.controls.clone() },
        ));
        let generator = tokio::spawn(generate_traffic(brokers, cfg.kafka.input_topics[0].clone(), args.duration, shutdown.clone()));

        let tty = std::io::stdout().is_terminal();
        let started = tokio::time::Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut tick = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            tick += 1;
            let elapsed = started.elapsed();
            if tty {
                print!("\x1b[2J\x1b[H{}", summary(&shared.metrics, elapsed, args.duration));
                std::io::stdout().flush()?;
            } else if tick % 10 == 0 {
                println!("{}", one_line(&shared.metrics, elapsed));
            }
            // Traffic over, and a group_interval for the last groups to flush.
            if elapsed > args.duration + Duration::from_secs(5) && generator.is_finished() {
                break;
            }
        }
        shutdown.cancel();
        let produced = generator.await??;
        let summary_run = pipeline.await??;
        println!("{}", summary(&shared.metrics, started.elapsed().min(args.duration), args.duration));
        let (decided, _, _) = counts(&shared.metrics);
        println!(
            "generated {produced} messages; the pipeline read {} messages holding {} alerts; {} alerts were still waiting in groups (kept in the state store: a restart restores them)",
            summary_run.messages,
            summary_run.received,
            summary_run.received.saturating_sub(decided)
        );
        // Every client of the in-process broker goes before the broker, so
        // none of them reports it gone.
        if let Some(c) = &shared.controls {
            c.close().await;
        }
        drop(shared);
        drop(mock);
        Ok(super::run::exit_code())
    })
}

/// Produces the demo scenario into the input topic in real time.
async fn generate_traffic(
    brokers: String,
    topic: String,
    duration: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<u64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()?;
    let start = wall_clock();
    let events = generate(&Scenario::demo(start, duration));
    let mut sent = 0u64;
    for e in events {
        let wait = e.at.millis() - wall_clock().millis();
        if wait > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&topic).payload(&e.message[..]);
        producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("demo generator: {e}"))?;
        sent += 1;
    }
    Ok(sent)
}

fn counts(m: &Metrics) -> (u64, Vec<(FateKind, u64)>, u64) {
    let fates = m.fate_counts();
    let received: u64 = fates.iter().map(|(_, n)| n).sum();
    let notifications: u64 = m.notifications_by_squad().values().sum();
    (received, fates, notifications)
}

fn one_line(m: &Metrics, elapsed: Duration) -> String {
    let (received, fates, notifications) = counts(m);
    let parts: Vec<String> = fates
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{}={n}", k.as_str()))
        .collect();
    format!(
        "[{:>4}s] decided {received} alerts: {}; {notifications} notifications",
        elapsed.as_secs(),
        parts.join(" ")
    )
}

fn summary(m: &Metrics, elapsed: Duration, duration: Duration) -> String {
    let (received, fates, notifications) = counts(m);
    let mut s = if elapsed <= duration {
        format!(
            "squadron demo  {:>3}s / {}s of generated traffic\n\n",
            elapsed.as_secs(),
            duration.as_secs()
        )
    } else {
        format!(
            "squadron demo  {}s of generated traffic, done; the last groups flush\n\n",
            duration.as_secs()
        )
    };
    s.push_str(&format!("alerts decided  {received:>9}\n"));
    for (k, n) in &fates {
        let pct = if received == 0 {
            0.0
        } else {
            100.0 * *n as f64 / received as f64
        };
        s.push_str(&format!("  {:<13} {n:>9}  {pct:>6.2}%\n", k.as_str()));
    }
    let reduction = if received == 0 {
        0.0
    } else {
        100.0 * (1.0 - notifications as f64 / received as f64)
    };
    s.push_str(&format!("notifications   {notifications:>9}\nnoise reduction {reduction:>8.2}%\n\nnotifications by squad\n"));
    for (squad, n) in m.notifications_by_squad() {
        s.push_str(&format!("  {squad:<14} {n:>6}\n"));
    }
    s
}
