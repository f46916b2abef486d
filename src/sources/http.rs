//! Alertmanager-compatible HTTP ingest: `POST /api/v2/alerts` with the body
//! Prometheus sends to Alertmanager. The body is checked with the same decoder
//! the pipeline uses and produced, unchanged, into the input topic: Kafka stays
//! the backbone, and the pipeline decides. A Prometheus server lists squadron
//! under `alerting.alertmanagers` and needs nothing else.
//!
//! The reply waits for the broker's acknowledgement, so a sender retries
//! whatever was not stored (at least once from sender to topic). Messages are
//! keyed by the sender's address, which keeps each sender's messages in order.

use crate::decode::{InvalidKind, decode};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Serve `POST /api/v2/alerts`.
    pub enabled: bool,
    /// Topic to produce to; default: the first input topic.
    pub topic: Option<String>,
    /// When set, write endpoints (ingest, reload) accept `Authorization:
    /// Bearer <token>` (README, Security). Prefer `bearer_token_file` or the
    /// environment: a token in a flag shows in `ps`.
    pub bearer_token: Option<String>,
    /// The token read from this file (its trailing newline dropped) at start.
    pub bearer_token_file: Option<std::path::PathBuf>,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig {
            enabled: true,
            topic: None,
            bearer_token: None,
            bearer_token_file: None,
            max_body_bytes: 4 << 20,
        }
    }
}

pub struct HttpIngest {
    producer: crate::pipeline::polled::AsyncProducer,
    topic: String,
    pub max_body_bytes: usize,
}

/// The answer to an ingest request: status code and a short body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
        }
    }
}

impl HttpIngest {
    pub fn new(
        client: ClientConfig,
        topic: String,
        cfg: &IngestConfig,
    ) -> anyhow::Result<HttpIngest> {
        let mut client = client;
        client
            .set("linger.ms", "1")
            .set("acks", "all")
            .set("enable.idempotence", "true");
        // The sender waits for the answer: 503 after 10 s (README), so it
        // retries, rather than librdkafka's default of 5 minutes.
        if client.get("message.timeout.ms").is_none() {
            client.set("message.timeout.ms", "10000");
        }
        let producer = crate::pipeline::polled::AsyncProducer::new(&client)?;
        Ok(HttpIngest {
            producer,
            topic,
            max_body_bytes: cfg.max_body_bytes,
        })
    }

    /// Checks a body and stores it in the input topic, keyed by `sender` (its
    /// address): one sender's messages stay in one partition, in the order sent,
    /// so an alert's resolve never overtakes its firing.
    pub async fn accept(&self, body: &[u8], sender: &[u8]) -> Reply {
        match decode(body) {
            Err(e) => return Reply::new(400, format!("invalid alerts: {e}\n")),
            Ok(d) => {
                if d.alerts.is_empty() {
                    return Reply::new(200, "no alerts\n");
                }
                if let Some(Err(e)) = d.alerts.iter().find(|a| a.is_err()) {
                    // Alertmanager rejects a batch with an invalid alert; so do we,
                    // so the sender sees it (valid neighbours are not stored twice).
                    let kind = e.kind;
                    let status = if kind == InvalidKind::NotJson {
                        400
                    } else {
                        422
                    };
                    return Reply::new(status, format!("invalid alert: {e}\n"));
                }
            }
        }
        let sent = self
            .producer
            .send(
                &self.topic,
                Some(sender),
                body,
                None,
                Duration::from_secs(10),
            )
            .await;
        match sent {
            Ok(_) => Reply::new(200, ""),
            Err(e) => {
                tracing::warn!(error = %e, topic = %self.topic, "ingest: cannot store alerts");
                Reply::new(503, format!("cannot store the alerts in Kafka: {e}\n"))
            }
        }
    }
}
