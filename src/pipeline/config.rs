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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Produced records awaiting acknowledgement before consumption pauses (backpressure).
    pub max_in_flight: u64,
    /// How often committable offsets are committed.
    pub commit_interval: String,
    /// How long shutdown waits for acknowledgements before giving up (uncommitted input is re-read).
    pub shutdown_timeout: String,
    pub audit: AuditMode,
    /// `externalURL` in notification payloads.
    pub external_url: String,
    /// Deliver to the receivers declared in the rules (webhook, Slack,
    /// PagerDuty). `demo` and `bench` turn this off.
    pub deliver_receivers: bool,
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
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            max_in_flight: 100_000,
            commit_interval: "1s".into(),
            shutdown_timeout: "30s".into(),
            audit: AuditMode::Off,
            external_url: "http://squadron".into(),
            deliver_receivers: true,
        }
    }
}

impl PipelineConfig {
    pub fn commit_interval(&self) -> anyhow::Result<Duration> {
        parse_duration(&self.commit_interval)
            .map_err(|e| anyhow::anyhow!("pipeline.commit_interval: {e}"))
    }
    pub fn shutdown_timeout(&self) -> anyhow::Result<Duration> {
        parse_duration(&self.shutdown_timeout)
            .map_err(|e| anyhow::anyhow!("pipeline.shutdown_timeout: {e}"))
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
        if cfg.rules.is_relative() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                cfg.rules = dir.join(&cfg.rules);
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
        self.pipeline.commit_interval()?;
        self.pipeline.shutdown_timeout()?;
        Ok(())
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
}
