//! `squadron run`: the Kafka pipeline, with its HTTP endpoints, until SIGTERM or SIGINT.

use crate::pipeline::{self, AuditMode, Config, Handles};
use crate::rules::{RuleSet, load_dir};
use crate::telemetry::http::{self, Shared, Status};
use crate::telemetry::metrics::Metrics;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Settings for `run`; each overrides the config file. Environment variables
/// override the file too, flags override both.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// YAML config file (README.md, "Configuration"). Without it, defaults apply.
    #[arg(long, short, env = "SQUADRON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Rules directory.
    #[arg(long, env = "SQUADRON_RULES")]
    pub rules: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SQUADRON_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// Consumer group.
    #[arg(long, env = "SQUADRON_GROUP_ID")]
    pub group_id: Option<String>,
    /// Input topics, comma-separated.
    #[arg(long, env = "SQUADRON_INPUT_TOPICS", value_delimiter = ',')]
    pub input_topics: Vec<String>,
    #[arg(long, env = "SQUADRON_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    #[arg(long, env = "SQUADRON_AUDIT_TOPIC")]
    pub audit_topic: Option<String>,
    /// Which fates go to the audit topic.
    #[arg(long, env = "SQUADRON_AUDIT", value_enum)]
    pub audit: Option<AuditMode>,
    /// HTTP address for /metrics, /healthz, /readyz, /api/v1/status; `off` disables.
    #[arg(long, env = "SQUADRON_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// A librdkafka property for consumer and producer, `key=value`; repeatable
    /// (environment: comma-separated).
    #[arg(long = "kafka-property", env = "SQUADRON_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = crate::pipeline::config::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Bearer token that may write (ingest, reload). Prefer the environment
    /// or --ingest-token-file: a flag's value shows in `ps`.
    #[arg(long, env = "SQUADRON_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// File holding the bearer token that may write.
    #[arg(long, env = "SQUADRON_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// Web configuration file (Prometheus' format: TLS, basic-auth users).
    #[arg(long, env = "SQUADRON_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Produced records awaiting acknowledgement before consumption pauses.
    #[arg(long, env = "SQUADRON_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<u64>,
    /// at-least-once (default) or exactly-once (Kafka transactions).
    #[arg(long, env = "SQUADRON_PROCESSING_GUARANTEE", value_enum)]
    pub processing_guarantee: Option<pipeline::config::Guarantee>,
    /// Static group membership id (default: `<hostname>-<HTTP port>`).
    #[arg(long, env = "SQUADRON_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How often state, outputs and offsets are committed (e.g. 1s, 100ms).
    #[arg(long, env = "SQUADRON_COMMIT_INTERVAL")]
    pub commit_interval: Option<String>,
}

impl RunArgs {
    /// The config file with every given setting applied over it.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(r) = &self.rules {
            cfg.rules = r.clone();
        }
        if let Some(v) = &self.bootstrap_servers {
            cfg.kafka.bootstrap_servers = v.clone();
        }
        if let Some(v) = &self.group_id {
            cfg.kafka.group_id = v.clone();
        }
        if !self.input_topics.is_empty() {
            cfg.kafka.input_topics = self.input_topics.clone();
        }
        if let Some(v) = &self.dead_letter_topic {
            cfg.kafka.dead_letter_topic = v.clone();
        }
        if let Some(v) = &self.audit_topic {
            cfg.kafka.audit_topic = v.clone();
        }
        if let Some(v) = self.audit {
            cfg.pipeline.audit = v;
        }
        if let Some(v) = &self.http_listen {
            cfg.http.listen = match v.as_str() {
                "off" | "" => None,
                addr => Some(addr.parse().with_context(|| {
                    format!("--http-listen {addr:?} is not an address (host:port)")
                })?),
            };
        }
        for (k, v) in &self.kafka_properties {
            cfg.kafka.properties.insert(k.clone(), v.clone());
        }
        if let Some(v) = &self.ingest_token {
            cfg.http.ingest.bearer_token = Some(v.clone());
            cfg.http.ingest.bearer_token_file = None;
        }
        if let Some(v) = &self.ingest_token_file {
            cfg.http.ingest.bearer_token_file = Some(v.clone());
            cfg.http.ingest.bearer_token = None;
        }
        if let Some(v) = &self.web_config_file {
            cfg.http.web_config_file = Some(v.clone());
        }
        if let Some(v) = self.max_in_flight {
            cfg.pipeline.max_in_flight = v;
        }
        if let Some(v) = self.processing_guarantee {
            cfg.pipeline.processing_guarantee = v;
        }
        if let Some(v) = &self.instance_id {
            cfg.kafka.instance_id = Some(v.clone());
        }
        if let Some(v) = &self.commit_interval {
            cfg.pipeline.commit_interval = Some(v.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn load_rules(dir: &std::path::Path) -> anyhow::Result<Arc<RuleSet>> {
    match load_dir(dir) {
        Ok(r) => Ok(Arc::new(r)),
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(error = %e, "rule file rejected");
            }
            anyhow::bail!(
                "rules in {} are invalid ({} errors)",
                dir.display(),
                errors.0.len()
            )
        }
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let cfg = args.resolve()?;
    let files = raise_open_file_limit();
    if files < cfg.http.max_connections as u64 + 256 {
        tracing::warn!(
            open_file_limit = files,
            max_connections = cfg.http.max_connections,
            "the open-file limit leaves little room beyond http.max_connections: raise the limit (ulimit -n) or lower max_connections"
        );
    }
    let rules = load_rules(&cfg.rules)?;
    tracing::info!(rules = %cfg.rules.display(), digest = %rules.digest, squads = rules.squads.len(), "rules loaded");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        spawn_signal_handler(shutdown.clone());
        spawn_reload_on_sighup(tx.clone());
        pipeline::spawn_rules_watcher(cfg.rules.clone(), tx.clone(), shutdown.clone());
        let shared = start_http(&cfg, shutdown.clone(), Some(tx)).await?;
        let handles = Handles {
            metrics: shared.metrics.clone(),
            status: shared.status.clone(),
            shutdown: shutdown.clone(),
            commands: Some(rx),
            controls: shared.controls.clone(),
        };
        // The pipeline logs its own one-line summary when it stops.
        pipeline::run(cfg, rules, handles).await?;
        shutdown.cancel();
        Ok(exit_code())
    })
}

/// Raises the soft open-file limit to the hard limit, as Go programs such as
/// Prometheus do at start (the default soft limit is often 1024). Returns the
/// limit in force.
#[allow(unsafe_code)]
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// SIGHUP reloads the rules (through the same path as startup).
pub(crate) fn spawn_reload_on_sighup(commands: tokio::sync::mpsc::Sender<pipeline::Command>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if commands
                .send(pipeline::Command::Reload {
                    source: "SIGHUP",
                    reply: None,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

/// Metrics, status and (when configured) the HTTP server serving them.
pub async fn start_http(
    cfg: &Config,
    shutdown: CancellationToken,
    commands: Option<tokio::sync::mpsc::Sender<pipeline::Command>>,
) -> anyhow::Result<Shared> {
    let ingest = match (&cfg.http.listen, cfg.http.ingest.enabled) {
        (Some(_), true) => {
            let topic = cfg
                .http
                .ingest
                .topic
                .clone()
                .or_else(|| cfg.kafka.input_topics.first().cloned())
                .context("no topic for ingest")?;
            let client = pipeline::client_config(cfg, &cfg.kafka.producer_properties);
            Some(Arc::new(crate::sources::http::HttpIngest::new(
                client,
                topic,
                &cfg.http.ingest,
            )?))
        }
        _ => None,
    };
    let web = cfg.http.web()?;
    if let Some(addr) = cfg.http.listen.filter(|a| !a.ip().is_loopback()) {
        if !web.auth.enabled() {
            tracing::warn!(%addr, "listening beyond loopback without authentication: anyone who reaches the port can send alerts and reload the rules (README, Security)");
        }
    }
    tracing::info!(
        tls = web.tls.is_some(),
        authentication = web.auth.enabled(),
        reads_protected = web.auth.protects_reads(),
        "http security"
    );
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new())?);
    // Runtime silences, acks and overrides: read before the API answers or the pipeline decides.
    let controls = pipeline::control::ControlLog::start(cfg, metrics.clone()).await?;
    tokio::spawn(controls.clone().sweep(shutdown.clone()));
    let shared = Shared {
        ingest,
        commands,
        web: Arc::new(web),
        metrics,
        status: Arc::new(Mutex::new(Status::default())),
        controls: Some(controls),
    };
    if let Some(addr) = cfg.http.listen {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let limits = cfg.http.limits()?;
        let server = tokio::spawn(http::serve(addr, limits, s, shutdown.clone(), tx));
        rx.await
            .context("the HTTP server ended before listening")?
            .with_context(|| format!("cannot serve HTTP on {addr}"))?;
        // Alive but deaf is the worst state for an orchestrator: if the server
        // ends while squadron runs, shut down and exit non-zero to be restarted.
        tokio::spawn(async move {
            let why = match server.await {
                Ok(Ok(())) if shutdown.is_cancelled() => return,
                Ok(Ok(())) => "stopped".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(panic) => format!("panicked: {panic}"),
            };
            tracing::error!(error = %why, %addr, "http server failed: shutting down to be restarted");
            HTTP_FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
            shutdown.cancel();
        });
    }
    Ok(shared)
}

/// Set when the HTTP server ended while squadron was running: the process
/// shuts down and exits non-zero.
pub static HTTP_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The exit code after a graceful shutdown: 0, or 1 when the HTTP server failed.
pub fn exit_code() -> i32 {
    i32::from(HTTP_FAILED.load(std::sync::atomic::Ordering::SeqCst))
}

/// SIGTERM and SIGINT start a graceful shutdown; a second one exits at once.
pub fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: shutting down");
        shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}
