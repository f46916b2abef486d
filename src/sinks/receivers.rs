//! Delivering notifications to a squad's receivers besides its Kafka topic:
//! a generic webhook (the Alertmanager webhook v4 payload, so receivers written
//! for Alertmanager work unchanged), Slack incoming webhooks, and PagerDuty
//! Events v2 (`dedup_key` = group key; resolved groups resolve the incident).
//!
//! Each delivery retries with exponential backoff; after the retry budget the
//! notification goes to the dead-letter topic with the receiver and the last
//! error. URLs and headers carry secrets: only the receiver's name and the URL's
//! host ever appear in logs, metrics or status.
//!
//! Guarantee: the notification is durable in the squad topic before delivery
//! starts; deliveries in progress when the process stops are not resumed (the
//! squad topic has them).

use crate::engine::Notification;
use crate::model::{Labels, Status};
use crate::payload::WebhookPayload;
use crate::rules::file::ReceiverFile;
use prometheus::IntCounterVec;
use serde_json::json;
use std::time::Duration;

/// What to do with a notification a receiver would not take.
pub trait DeadLetter: Send + Sync + 'static {
    fn dead_letter(&self, receiver: &str, squad: &str, error: &str, payload: Vec<u8>);
}

#[derive(Clone)]
pub struct Receivers {
    client: reqwest::Client,
    deliveries: IntCounterVec,
    external_url: String,
    limits: crate::payload::PayloadLimits,
}

/// One prepared request: where, what, and how often to try.
struct Request {
    receiver: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    attempts: u32,
    backoff: Duration,
}

impl Receivers {
    pub fn new(
        deliveries: IntCounterVec,
        external_url: String,
        limits: crate::payload::PayloadLimits,
    ) -> anyhow::Result<Receivers> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("squadron/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Receivers {
            client,
            deliveries,
            external_url,
            limits,
        })
    }

    /// Starts delivering `n` to each receiver (in the background).
    pub fn deliver(
        &self,
        n: &Notification,
        receivers: &[ReceiverFile],
        dead: std::sync::Arc<dyn DeadLetter>,
    ) {
        for r in receivers {
            let Some(req) = self.request(n, r) else {
                continue;
            };
            let this = self.clone();
            let dead = dead.clone();
            let squad = n.squad.to_string();
            tokio::spawn(async move { this.send(req, &squad, &*dead).await });
        }
    }

    fn request(&self, n: &Notification, r: &ReceiverFile) -> Option<Request> {
        let (attempts, backoff) =
            r.retry
                .as_ref()
                .map_or((DEFAULT_ATTEMPTS, DEFAULT_BACKOFF), |p| {
                    (
                        p.attempts.max(1),
                        crate::model::parse_duration(&p.backoff).unwrap_or(DEFAULT_BACKOFF),
                    )
                });
        let base = |url: &str, headers: Vec<(String, String)>, body: Vec<u8>| Request {
            receiver: r.name.clone(),
            url: url.to_owned(),
            headers,
            body,
            attempts,
            backoff,
        };
        if let Some(w) = &r.webhook {
            let body = WebhookPayload::new(n, &self.external_url).to_json_within(self.limits);
            return Some(base(
                &w.url,
                w.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body,
            ));
        }
        if let Some(s) = &r.slack {
            return Some(base(
                &s.url,
                Vec::new(),
                slack_message(n).to_string().into_bytes(),
            ));
        }
        if let Some(p) = &r.pagerduty {
            let url = p
                .url
                .clone()
                .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into());
            return Some(base(
                &url,
                Vec::new(),
                pagerduty_event(n, &p.routing_key).to_string().into_bytes(),
            ));
        }
        None
    }

    async fn send(&self, req: Request, squad: &str, dead: &dyn DeadLetter) {
        let mut backoff = req.backoff;
        let mut last_error = String::new();
        for attempt in 1..=req.attempts {
            let mut builder = self
                .client
                .post(&req.url)
                .header("content-type", "application/json")
                .body(req.body.clone());
            for (k, v) in &req.headers {
                builder = builder.header(k, v);
            }
            match builder.send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.deliveries
                        .with_label_values(&[&req.receiver, "success"])
                        .inc();
                    return;
                }
                Ok(resp) => last_error = format!("HTTP {}", resp.status().as_u16()),
                Err(e) => last_error = redact(&e.to_string(), &req.url),
            }
            if attempt < req.attempts {
                self.deliveries
                    .with_label_values(&[&req.receiver, "retry"])
                    .inc();
                tracing::warn!(receiver = %req.receiver, host = %host(&req.url), attempt, error = %last_error, "delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.deliveries
            .with_label_values(&[&req.receiver, "failed"])
            .inc();
        tracing::error!(receiver = %req.receiver, host = %host(&req.url), attempts = req.attempts, error = %last_error, "delivery failed; dead-lettered");
        dead.dead_letter(&req.receiver, squad, &last_error, req.body);
    }
}

const DEFAULT_ATTEMPTS: u32 = 6;
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The URL's host, the only part of it that may be logged (Slack and many
/// webhooks carry their secret in the path or query).
fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "(invalid url)".into())
}

/// An error text with the URL replaced by its host.
fn redact(error: &str, url: &str) -> String {
    error.replace(url, &host(url))
}

/// A readable Slack message naming the goalkeeper.
pub fn slack_message(n: &Notification) -> serde_json::Value {
    let firing = n
        .alerts
        .iter()
        .filter(|a| a.status == Status::Firing)
        .count();
    let state = match n.status {
        Status::Firing => format!(":rotating_light: FIRING:{firing}"),
        Status::Resolved => ":white_check_mark: RESOLVED".to_owned(),
    };
    let group: Vec<String> = n
        .group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut text = format!("*[{state}] {}* ({})", group.join(" "), n.squad);
    if let Some(g) = &n.goalkeeper {
        text.push_str(&format!("\nGoalkeeper on duty: *{g}*"));
    }
    if let Some(f) = &n.folded {
        text.push_str(&format!(
            "\nStorm summary: {} notifications with {} alerts were folded.",
            f.notifications, f.alerts
        ));
    }
    for a in n.alerts.iter().take(10) {
        let summary = a
            .annotations
            .get("summary")
            .or_else(|| a.labels.get("alertname"))
            .unwrap_or("");
        let mark = if a.status == Status::Firing {
            "•"
        } else {
            "✓"
        };
        text.push_str(&format!("\n{mark} {summary}"));
    }
    if n.alerts.len() > 10 {
        text.push_str(&format!("\n… and {} more", n.alerts.len() - 10));
    }
    json!({"text": text})
}

/// A PagerDuty Events API v2 event: trigger while firing, resolve when the group resolves.
pub fn pagerduty_event(n: &Notification, routing_key: &str) -> serde_json::Value {
    let action = match n.status {
        Status::Firing => "trigger",
        Status::Resolved => "resolve",
    };
    let severity = n
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("severity"))
        .map(|s| match s {
            "critical" | "page" => "critical",
            "error" => "error",
            "warning" => "warning",
            _ => "info",
        })
        .min_by_key(|s| {
            ["critical", "error", "warning", "info"]
                .iter()
                .position(|x| x == s)
        })
        .unwrap_or("error");
    let group: Vec<String> = n
        .group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": &*n.group_key,
        "payload": {
            "summary": format!("[{}] {} ({} alerts)", n.squad, group.join(" "), n.alerts.len()),
            "source": "squadron",
            "severity": severity,
            "group": &*n.squad,
            "custom_details": {"goalkeeper": n.goalkeeper.as_deref(), "reason": n.reason.as_str(), "alerts": n.alerts.iter().map(|a| a.labels.to_string()).collect::<Vec<_>>()},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{NotifiedAlert, NotifyReason};
    use crate::model::{Fingerprint, LabelSet, Ts};

    fn notification(status: Status) -> Notification {
        Notification {
            id: "n-1".into(),
            at: Ts(0),
            squad: "payments".into(),
            goalkeeper: Some("bob".into()),
            group_key: "payments:{alertname=\"A\"}".into(),
            group_labels: LabelSet::from_pairs([("alertname", "A")]),
            status,
            reason: NotifyReason::NewGroup,
            core: false,
            alerts: vec![NotifiedAlert {
                fingerprint: Fingerprint(1),
                status,
                labels: LabelSet::from_pairs([("alertname", "A"), ("severity", "warning")]),
                annotations: LabelSet::from_pairs([("summary", "checkout errors at 5%")]),
                starts_at: Ts(0),
                ends_at: None,
                generator_url: None,
                flapping: false,
            }],
            folded: None,
        }
    }

    #[test]
    fn slack_names_the_goalkeeper() {
        let t = slack_message(&notification(Status::Firing))["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            t.contains("FIRING:1")
                && t.contains("Goalkeeper on duty: *bob*")
                && t.contains("checkout errors at 5%"),
            "{t}"
        );
    }

    #[test]
    fn pagerduty_triggers_and_resolves_by_group() {
        let e = pagerduty_event(&notification(Status::Firing), "key");
        assert_eq!(
            (
                e["event_action"].as_str(),
                e["dedup_key"].as_str(),
                e["payload"]["severity"].as_str()
            ),
            (
                Some("trigger"),
                Some("payments:{alertname=\"A\"}"),
                Some("warning")
            )
        );
        assert_eq!(
            pagerduty_event(&notification(Status::Resolved), "key")["event_action"],
            "resolve"
        );
    }

    #[test]
    fn secrets_in_urls_are_not_logged() {
        let url = "https://hooks.slack.com/services/T000/B000/SECRET";
        assert_eq!(host(url), "hooks.slack.com");
        assert!(!redact(&format!("error sending request for url ({url})"), url).contains("SECRET"));
    }
}
