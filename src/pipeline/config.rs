//! `squadron run` settings: a YAML file, overridden by `SQUADRON_*` environment
//! variables, overridden by flags (see `cli::RunArgs`). Every field has a default.

use crate::model::parse_duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The rules directory.
    pub rules: PathBuf,
    pub kafka: KafkaConfig,
    pub http: HttpConfig,
    pub pipeline: PipelineConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub input_topics: Vec<String>,
    pub dead_letter_topic: String,
    pub audit_topic: String,
    /// The internal topic the route stage writes alerts to, keyed by group
    /// (default `<group_id>-repartition`).
    pub repartition_topic: Option<String>,
    /// The compacted topic holding the decide stage's state (default `<group_id>-changelog`).
    pub changelog_topic: Option<String>,
    /// The compacted topic of every task's inhibition sources, read whole by
    /// every instance (default `<group_id>-sources`).
    pub sources_topic: Option<String>,
    /// The compacted topic of runtime silences, acknowledgements and duty
    /// overrides, read whole by every instance (default `<group_id>-controls`).
    pub controls_topic: Option<String>,
    /// Replication factor of the internal topics when squadron creates them
    /// (-1: the broker's default).
    pub internal_replication_factor: i32,
    /// Static group membership (`group.instance.id`): a restarted instance with
    /// the same id takes its partitions back at once. Default:
    /// `<hostname>-<HTTP port>` (unique per host), or `<hostname>-<pid>` without HTTP.
    pub instance_id: Option<String>,
    /// librdkafka properties for both consumer and producer (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    pub properties: BTreeMap<String, String>,
    pub consumer_properties: BTreeMap<String, String>,
    pub producer_properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz`, `/readyz` and `/api/v1/status` are served; `null` disables.
    pub listen: Option<SocketAddr>,
    /// Alertmanager-compatible `POST /api/v2/alerts`.
    pub ingest: crate::sources::http::IngestConfig,
    /// The web configuration file Prometheus and Alertmanager read
    /// (exporter-toolkit: TLS, basic-auth users, response headers).
    pub web_config_file: Option<PathBuf>,
    /// Which of the web config's users may read and write.
    pub authorization: crate::telemetry::web::AuthorizationConfig,
    /// Open connections at most; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// A client must send a request's headers within this time; it also closes
    /// idle keep-alive connections.
    pub header_timeout: String,
    /// A client must send a request's body within this time (after its headers).
    pub body_timeout: String,
}

/// [`HttpConfig`] with its durations parsed.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl HttpConfig {
    /// The server's security: the web config file, the read/write policy and
    /// the bearer token (inline or from its file).
    pub fn web(&self) -> anyhow::Result<crate::telemetry::web::Web> {
        let token = match (&self.ingest.bearer_token, &self.ingest.bearer_token_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("http.ingest: give bearer_token or bearer_token_file, not both")
            }
            (Some(t), None) => Some(t.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        anyhow::anyhow!("http.ingest.bearer_token_file {}: {e}", f.display())
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        crate::telemetry::web::Web::load(
            self.web_config_file.as_deref(),
            &self.authorization,
            token,
        )
    }

    pub fn limits(&self) -> anyhow::Result<HttpLimits> {
        let parse = |key: &str, v: &str| {
            parse_duration(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| anyhow::anyhow!("http.{key}: {v:?} is not a positive duration"))
        };
        anyhow::ensure!(
            self.max_connections > 0,
            "http.max_connections must be at least 1"
        );
        Ok(HttpLimits {
            max_connections: self.max_connections,
            header_timeout: parse("header_timeout", &self.header_timeout)?,
            body_timeout: parse("body_timeout", &self.body_timeout)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    /// No audit records.
    Off,
    /// Every alert dropped, silenced, inhibited, throttled, flapping or invalid.
    Suppressed,
    /// Every input alert's fate.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Nothing is lost; after a crash, work since the last commit is done again
    /// (notifications may repeat, with the same id).
    AtLeastOnce,
    /// Outputs, state and input offsets commit in one Kafka transaction: a
    /// read_committed consumer sees every notification once.
    ExactlyOnce,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub processing_guarantee: Guarantee,
    /// Partitions of the repartition and changelog topics when squadron creates
    /// them: the most decide tasks (instances x cores) that can share the work.
    pub partitions: i32,
    /// Produced records awaiting acknowledgement before consumption pauses (backpressure).
    pub max_in_flight: u64,
    /// How often state, outputs and offsets are committed (default 1s at least
    /// once, 500ms exactly once).
    pub commit_interval: Option<String>,
    /// How long shutdown waits for acknowledgements before giving up (uncommitted input is re-read).
    pub shutdown_timeout: String,
    pub audit: AuditMode,
    /// `externalURL` in notification payloads.
    pub external_url: String,
    /// Deliver to the receivers declared in the rules (webhook, Slack,
    /// PagerDuty). `demo` and `bench` turn this off.
    pub deliver_receivers: bool,
    /// A notification message (squad topic, webhook) lists the alerts that fit
    /// in this many bytes; the rest are counted in `truncatedAlerts`.
    pub max_notification_bytes: usize,
    /// And at most this many alerts (0: no limit but the bytes), like
    /// Alertmanager's webhook `max_alerts`.
    pub max_notification_alerts: usize,
    /// How long expired silences and duty overrides, and acknowledgements,
    /// are kept (and listed by the API) before they are removed.
    pub controls_retention: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            rules: "rules".into(),
            kafka: KafkaConfig::default(),
            http: HttpConfig::default(),
            pipeline: PipelineConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "squadron".into(),
            input_topics: vec!["alerts.raw".into()],
            dead_letter_topic: "alerts.dead-letter".into(),
            audit_topic: "alerts.audit".into(),
            repartition_topic: None,
            changelog_topic: None,
            sources_topic: None,
            controls_topic: None,
            internal_replication_factor: -1,
            instance_id: None,
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            ingest: Default::default(),
            web_config_file: None,
            authorization: Default::default(),
            max_connections: 1024,
            header_timeout: "10s".into(),
            body_timeout: "20s".into(),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            processing_guarantee: Guarantee::AtLeastOnce,
            partitions: 12,
            max_in_flight: 100_000,
            commit_interval: None,
            shutdown_timeout: "30s".into(),
            audit: AuditMode::Off,
            external_url: "http://squadron".into(),
            deliver_receivers: true,
            max_notification_bytes: crate::payload::PayloadLimits::default().max_bytes,
            max_notification_alerts: 0,
            controls_retention: "120h".into(),
        }
    }
}

impl PipelineConfig {
    pub fn commit_interval(&self) -> anyhow::Result<Duration> {
        let default = match self.processing_guarantee {
            Guarantee::AtLeastOnce => "1s",
            // Each transaction holds the loop for its round trips (about
            // 50 ms here): at 100 ms the loop idled a third of the time
            // (BENCHMARKS.md). Alerts tolerate the extra half second.
            Guarantee::ExactlyOnce => "500ms",
        };
        parse_duration(self.commit_interval.as_deref().unwrap_or(default))
            .map_err(|e| anyhow::anyhow!("pipeline.commit_interval: {e}"))
    }
    pub fn payload_limits(&self) -> crate::payload::PayloadLimits {
        crate::payload::PayloadLimits {
            max_bytes: self.max_notification_bytes,
            max_alerts: self.max_notification_alerts,
        }
    }
    pub fn shutdown_timeout(&self) -> anyhow::Result<Duration> {
        parse_duration(&self.shutdown_timeout)
            .map_err(|e| anyhow::anyhow!("pipeline.shutdown_timeout: {e}"))
    }

    pub fn controls_retention(&self) -> anyhow::Result<Duration> {
        parse_duration(&self.controls_retention)
            .map_err(|e| anyhow::anyhow!("pipeline.controls_retention: {e}"))
    }
}

impl Config {
    /// Reads a config file; a missing `path` gives the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let cfg: Config = serde_yaml_ng::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!(
                "{}{at}: {}",
                path.display(),
                crate::rules::strip_location(&e.to_string())
            )
        })?;
        // Relative paths in the file are relative to the file.
        let mut cfg = cfg;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            for p in [
                Some(&mut cfg.rules),
                cfg.http.web_config_file.as_mut(),
                cfg.http.ingest.bearer_token_file.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.kafka.input_topics.is_empty(),
            "kafka.input_topics is empty"
        );
        anyhow::ensure!(
            !self.kafka.bootstrap_servers.is_empty(),
            "kafka.bootstrap_servers is empty"
        );
        anyhow::ensure!(
            self.pipeline.max_in_flight > 0,
            "pipeline.max_in_flight must be at least 1"
        );
        anyhow::ensure!(
            (1..=16384).contains(&self.pipeline.partitions),
            "pipeline.partitions must be between 1 and 16384"
        );
        anyhow::ensure!(
            self.kafka.input_topics.len() <= 255,
            "kafka.input_topics: at most 255 topics"
        );
        self.pipeline.commit_interval()?;
        self.pipeline.shutdown_timeout()?;
        self.pipeline.controls_retention()?;
        self.http.limits()?;
        anyhow::ensure!(
            self.pipeline.max_notification_bytes >= 16_384,
            "pipeline.max_notification_bytes must be at least 16384"
        );
        Ok(())
    }

    pub fn repartition_topic(&self) -> String {
        self.kafka
            .repartition_topic
            .clone()
            .unwrap_or_else(|| format!("{}-repartition", self.kafka.group_id))
    }

    pub fn changelog_topic(&self) -> String {
        self.kafka
            .changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}-changelog", self.kafka.group_id))
    }

    pub fn sources_topic(&self) -> String {
        self.kafka
            .sources_topic
            .clone()
            .unwrap_or_else(|| format!("{}-sources", self.kafka.group_id))
    }

    pub fn controls_topic(&self) -> String {
        self.kafka
            .controls_topic
            .clone()
            .unwrap_or_else(|| format!("{}-controls", self.kafka.group_id))
    }

    /// This instance's `group.instance.id` (see [`KafkaConfig::instance_id`]).
    pub fn instance_id(&self) -> String {
        if let Some(id) = self.kafka.instance_id.as_ref().filter(|s| !s.is_empty()) {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "squadron".into());
        match self.http.listen {
            Some(addr) if addr.port() != 0 => format!("{host}-{}", addr.port()),
            _ => format!("{host}-{}", std::process::id()),
        }
    }
}

/// Parses `key=value` (for `--kafka-property` and `SQUADRON_KAFKA_PROPERTIES`).
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected key=value"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: Config = serde_yaml_ng::from_str(
            "kafka: {bootstrap_servers: 'b:1', properties: {security.protocol: SSL}}",
        )
        .unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "b:1");
        assert_eq!(c.kafka.group_id, "squadron");
        assert_eq!(c.kafka.properties["security.protocol"], "SSL");
        assert_eq!(c.pipeline.audit, AuditMode::Off);
        assert!(
            serde_yaml_ng::from_str::<Config>("kafka: {brokers: x}")
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
        assert_eq!(
            parse_property("linger.ms = 5").unwrap(),
            ("linger.ms".into(), "5".into())
        );
        assert!(parse_property("nope").is_err());
    }

    #[test]
    fn guarantee_sets_the_default_commit_interval_and_names_derive_from_the_group() {
        let c: Config = serde_yaml_ng::from_str(
            "kafka: {group_id: g, instance_id: i-1}\npipeline: {processing_guarantee: exactly_once}",
        )
        .unwrap();
        assert_eq!(c.pipeline.processing_guarantee, Guarantee::ExactlyOnce);
        assert_eq!(
            c.pipeline.commit_interval().unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(c.repartition_topic(), "g-repartition");
        assert_eq!(c.changelog_topic(), "g-changelog");
        assert_eq!(c.sources_topic(), "g-sources");
        assert_eq!(c.instance_id(), "i-1");
        let d = Config::default();
        assert_eq!(
            d.pipeline.commit_interval().unwrap(),
            Duration::from_secs(1)
        );
        assert!(d.instance_id().ends_with("-9464"), "{}", d.instance_id());
        let mut bad = Config::default();
        bad.pipeline.partitions = 0;
        assert!(bad.validate().is_err());
    }
}
