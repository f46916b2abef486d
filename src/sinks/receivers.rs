//! Delivering notifications to a squad's receivers besides its Kafka topic:
//! a generic webhook (the Alertmanager webhook v4 payload, so receivers written
//! for Alertmanager work unchanged), Slack incoming webhooks, and PagerDuty
//! Events v2 (`dedup_key` = a hash of the group key, as Alertmanager sends;
//! resolved groups resolve the incident).
//!
//! Each delivery retries with exponential backoff; after the retry budget the
//! notification goes to the dead-letter topic with the receiver and the last
//! error.
//!
//! # Secrets
//! URLs, header values and routing keys are secrets. They may be written in
//! the rule file, or read at each delivery from a file or the environment
//! ([`Secret`]). Only the receiver's name and the URL's host ever appear in
//! logs, metrics, status or dead letters: error texts are built here from the
//! error's kind and causes (never the HTTP library's message, which prints the
//! URL), then scrubbed of every secret and every piece of the URL
//! ([`Redactor`]). A dead letter carries the notification, never the request
//! body (a PagerDuty event holds its routing key).
//!
//! Guarantee: the notification is durable in the squad topic before delivery
//! starts; deliveries in progress when the process stops are not resumed (the
//! squad topic has them).

use crate::engine::Notification;
use crate::model::{Labels, Status};
use crate::payload::{PayloadLimits, WebhookPayload, alertmanager_group_key};
use crate::rules::file::{PagerDutyFile, ReceiverFile, Secret, SlackFile, SlackFormat};
use prometheus::{HistogramVec, IntCounterVec};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// What to do with a notification a receiver would not take.
pub trait DeadLetter: Send + Sync + 'static {
    fn dead_letter(&self, receiver: &str, squad: &str, error: &str, payload: Vec<u8>);
}

#[derive(Clone)]
pub struct Receivers {
    client: reqwest::Client,
    deliveries: IntCounterVec,
    seconds: HistogramVec,
    external_url: String,
    limits: PayloadLimits,
}

/// A delivery ready to go, but for its secrets (resolved when it starts, off
/// the pipeline's lock).
struct Prepared {
    receiver: String,
    url: Secret,
    headers: Vec<(String, Secret)>,
    /// PagerDuty: the event, which takes its routing key when resolved.
    routing_key: Option<Secret>,
    body: Body,
    /// What a failed delivery dead-letters: the notification, no credentials.
    notification: Vec<u8>,
    attempts: u32,
    backoff: Duration,
    timeout: Duration,
}

enum Body {
    Bytes(Vec<u8>),
    Json(serde_json::Value),
}

/// One resolved request.
struct Request {
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    redactor: Redactor,
}

impl Receivers {
    pub fn new(
        deliveries: IntCounterVec,
        seconds: HistogramVec,
        external_url: String,
        limits: PayloadLimits,
    ) -> anyhow::Result<Receivers> {
        let client = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .user_agent(concat!("squadron/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Receivers {
            client,
            deliveries,
            seconds,
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
            let Some(p) = self.prepare(n, r) else {
                continue;
            };
            let this = self.clone();
            let dead = dead.clone();
            let squad = n.squad.to_string();
            tokio::spawn(async move { this.send(p, &squad, &*dead).await });
        }
    }

    fn prepare(&self, n: &Notification, r: &ReceiverFile) -> Option<Prepared> {
        let (attempts, backoff) =
            r.retry
                .as_ref()
                .map_or((DEFAULT_ATTEMPTS, DEFAULT_BACKOFF), |p| {
                    (
                        p.attempts.max(1),
                        crate::model::parse_duration(&p.backoff).unwrap_or(DEFAULT_BACKOFF),
                    )
                });
        let timeout = r
            .timeout
            .as_deref()
            .and_then(|t| crate::model::parse_duration(t).ok())
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT);
        let payload = |max_alerts: usize| {
            let limits = PayloadLimits {
                max_alerts: if max_alerts > 0 {
                    max_alerts
                } else {
                    self.limits.max_alerts
                },
                ..self.limits
            };
            WebhookPayload::new(n, &self.external_url)
                .for_receiver(&r.name)
                .to_json_within(limits)
        };
        let notification = payload(0);
        let (url, headers, routing_key, body) = if let Some(w) = &r.webhook {
            let headers = w
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let body = if w.max_alerts > 0 {
                payload(w.max_alerts)
            } else {
                notification.clone()
            };
            (w.url()?, headers, None, Body::Bytes(body))
        } else if let Some(s) = &r.slack {
            let body = slack_message(n, s, &self.external_url).to_string();
            (s.url()?, Vec::new(), None, Body::Bytes(body.into_bytes()))
        } else if let Some(p) = &r.pagerduty {
            // A handover report is for reading, not an incident.
            if n.reason == crate::engine::NotifyReason::Handover {
                return None;
            }
            let url = Secret::Value(p.url.clone().unwrap_or_else(|| PAGERDUTY_URL.into()));
            let event = pagerduty_event(n, p, &self.external_url);
            (url, Vec::new(), Some(p.routing_key()?), Body::Json(event))
        } else {
            return None;
        };
        Some(Prepared {
            receiver: r.name.clone(),
            url,
            headers,
            routing_key,
            body,
            notification,
            attempts,
            backoff,
            timeout,
        })
    }

    async fn send(&self, p: Prepared, squad: &str, dead: &dyn DeadLetter) {
        let req = match resolve_request(&p) {
            Ok(req) => req,
            Err(error) => {
                self.deliveries
                    .with_label_values(&[&p.receiver, "failed"])
                    .inc();
                tracing::error!(receiver = %p.receiver, %error, "delivery impossible; dead-lettered");
                return dead.dead_letter(&p.receiver, squad, &error, p.notification);
            }
        };
        let host = host(&req.url);
        let mut backoff = p.backoff;
        let mut last_error = String::new();
        for attempt in 1..=p.attempts {
            let mut builder = self
                .client
                .post(&req.url)
                .timeout(p.timeout)
                .header("content-type", "application/json")
                .body(req.body.clone());
            for (k, v) in &req.headers {
                builder = builder.header(k, v);
            }
            let started = std::time::Instant::now();
            let result = builder.send().await;
            self.seconds
                .with_label_values(&[&p.receiver])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(resp) if resp.status().is_success() => {
                    self.deliveries
                        .with_label_values(&[&p.receiver, "success"])
                        .inc();
                    return;
                }
                Ok(resp) => last_error = format!("HTTP {}", resp.status().as_u16()),
                Err(e) => last_error = req.redactor.scrub(&describe(&e)),
            }
            if attempt < p.attempts {
                self.deliveries
                    .with_label_values(&[&p.receiver, "retry"])
                    .inc();
                tracing::warn!(receiver = %p.receiver, %host, attempt, error = %last_error, "delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.deliveries
            .with_label_values(&[&p.receiver, "failed"])
            .inc();
        tracing::error!(receiver = %p.receiver, %host, attempts = p.attempts, error = %last_error, "delivery failed; dead-lettered");
        dead.dead_letter(&p.receiver, squad, &last_error, p.notification);
    }
}

const DEFAULT_ATTEMPTS: u32 = 6;
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Reads a secret: the value written, a file (without its trailing newline) or
/// an environment variable. The error names where, never what.
pub fn resolve(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Value(v) => Ok(v.clone()),
        Secret::File { file } => std::fs::read_to_string(file)
            .map(|v| v.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("cannot read secret file {file}: {}", e.kind())),
        Secret::Env { env } => {
            std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))
        }
    }
}

fn resolve_request(p: &Prepared) -> Result<Request, String> {
    let url = resolve(&p.url)?;
    let mut redactor = Redactor::default();
    redactor.url(&url);
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("the url must start with http:// or https://".into());
    }
    let mut headers = Vec::with_capacity(p.headers.len());
    for (name, value) in &p.headers {
        let value = resolve(value)?;
        redactor.secret(&value);
        headers.push((name.clone(), value));
    }
    let body = match &p.body {
        Body::Bytes(b) => b.clone(),
        Body::Json(event) => {
            let key = resolve(p.routing_key.as_ref().expect("a PagerDuty receiver"))?;
            redactor.secret(&key);
            let mut event = event.clone();
            event["routing_key"] = key.into();
            event.to_string().into_bytes()
        }
    };
    Ok(Request {
        url,
        headers,
        body,
        redactor,
    })
}

/// An error's kind and causes, without the HTTP library's own message (it
/// prints the URL).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_builder() {
        "invalid request (check the url)"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        causes.push(c.to_string());
        source = c.source();
    }
    if causes.is_empty() {
        what.into()
    } else {
        format!("{what}: {}", causes.join(": "))
    }
}

/// Removes secrets from a text, ignoring ASCII case (hosts print lowercased).
#[derive(Default)]
pub struct Redactor(Vec<String>);

impl Redactor {
    /// Pieces shorter than this are left alone: they would mangle the text
    /// and hide nothing.
    const MIN: usize = 4;

    pub fn secret(&mut self, s: &str) {
        if s.len() >= Self::MIN {
            self.0.push(s.to_ascii_lowercase());
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// The URL as written and as parsed, its path and query and each of
    /// their parts, and any credentials in it. Only the host may be shown.
    pub fn url(&mut self, url: &str) {
        self.secret(url);
        let Ok(u) = reqwest::Url::parse(url) else {
            return;
        };
        self.secret(u.as_str());
        let (path, query) = (u.path().to_owned(), u.query().unwrap_or("").to_owned());
        self.secret(&path);
        self.secret(&query);
        for segment in path.split('/') {
            self.secret(segment);
        }
        for pair in query.split('&') {
            self.secret(pair);
            self.secret(pair.split_once('=').map_or(pair, |(_, v)| v));
        }
        for (_, v) in u.query_pairs() {
            self.secret(&v);
        }
        self.secret(u.fragment().unwrap_or(""));
        self.secret(u.username());
        self.secret(u.password().unwrap_or(""));
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            let mut from = 0;
            while let Some(i) = out[from..].to_ascii_lowercase().find(secret.as_str()) {
                let at = from + i;
                out.replace_range(at..at + secret.len(), REDACTED);
                from = at + REDACTED.len();
            }
        }
        out
    }
}

const REDACTED: &str = "[redacted]";

/// The URL's host, the only part of it that may be logged (Slack and many
/// webhooks carry their secret in the path or query).
fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "(invalid url)".into())
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<url|text>` when `url` is an http(s) link Slack can show.
fn slack_link(url: &str, text: &str) -> Option<String> {
    (url.starts_with("http://") || url.starts_with("https://"))
        .then(|| format!("<{}|{text}>", url.replace('|', "%7C").replace('>', "%3E")))
}

/// Where squadron shows a squad's active groups.
fn group_view(external_url: &str, squad: &str) -> String {
    format!(
        "{}/api/v1/groups?squad={}",
        external_url.trim_end_matches('/'),
        url_escape(squad)
    )
}

/// Percent-encodes a URL path segment or query value (RFC 3986 unreserved kept).
pub(crate) fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Cuts `s` to at most `max` characters, marking the cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if s[i..].chars().count() > 1 => format!("{}…", &s[..i]),
        _ => s.to_owned(),
    }
}

/// Slack's advice for a message's text: keep it under 4,000 characters.
const SLACK_TEXT_CHARS: usize = 3_500;

/// A readable Slack message naming the goalkeeper, with each alert's links.
pub fn slack_message(n: &Notification, opts: &SlackFile, external_url: &str) -> serde_json::Value {
    if let Some(r) = &n.report {
        return slack_options(
            json!({"text": cut(&handover_text(n, r), SLACK_TEXT_CHARS)}),
            opts,
        );
    }
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
    let view = slack_link(&group_view(external_url, &n.squad), "groups");
    let mut text = format!(
        "*[{state}] {}* ({})",
        slack_escape(&group.join(" ")),
        slack_escape(&n.squad)
    );
    if opts.format == SlackFormat::Compact {
        if let Some(g) = &n.goalkeeper {
            text.push_str(&format!(" · goalkeeper *{}*", slack_escape(g)));
        }
        if let Some(v) = view {
            text.push_str(&format!(" · {v}"));
        }
    } else {
        if let Some(g) = &n.goalkeeper {
            text.push_str(&format!("\nGoalkeeper on duty: *{}*", slack_escape(g)));
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
            text.push_str(&format!("\n{mark} {}", slack_escape(&cut(summary, 300))));
            let links: Vec<String> = [
                a.generator_url
                    .as_deref()
                    .and_then(|u| slack_link(u, "source")),
                a.annotations
                    .get("runbook_url")
                    .and_then(|u| slack_link(u, "runbook")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !links.is_empty() {
                text.push_str(&format!(" ({})", links.join(" · ")));
            }
        }
        let listed = n.alerts.len().min(10);
        if n.alert_count() > listed {
            text.push_str(&format!("\n… and {} more", n.alert_count() - listed));
        }
        if let Some(v) = view {
            text.push_str(&format!("\n{v}"));
        }
    }
    slack_options(json!({"text": cut(&text, SLACK_TEXT_CHARS)}), opts)
}

fn slack_options(mut message: serde_json::Value, opts: &SlackFile) -> serde_json::Value {
    for (key, value) in [
        ("channel", &opts.channel),
        ("username", &opts.username),
        ("icon_emoji", &opts.icon_emoji),
    ] {
        if let Some(v) = value {
            message[key] = v.as_str().into();
        }
    }
    message
}

/// A handover report as Slack text: who takes over, the shift's figures,
/// what still fires, acknowledgements, silences ending, and the digest.
pub fn handover_text(n: &Notification, r: &crate::engine::HandoverReport) -> String {
    use std::fmt::Write;
    let name = |p: &Option<Arc<str>>| p.as_deref().map_or("nobody".to_owned(), slack_escape);
    let labels = |l: &crate::model::LabelSet| {
        slack_escape(
            &l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    };
    let mut t = format!(
        "*Handover for {}*: {} takes over from {} ({} to {})",
        slack_escape(&n.squad),
        name(&r.incoming),
        name(&r.outgoing),
        r.shift_start,
        r.shift_end
    );
    let z = &r.noise;
    let _ = write!(
        t,
        "\nPages: {} in {} groups (budget {}{}), {} out of hours",
        z.pages,
        r.incidents,
        r.page_budget,
        if r.over_budget { ", *over budget*" } else { "" },
        z.pages_out_of_hours
    );
    let _ = write!(
        t,
        "\nAlerts: {} received; {} deduplicated, {} dropped, {} digested, {} silenced, {} inhibited",
        z.received, z.deduplicated, z.dropped, z.digested, z.silenced, z.inhibited
    );
    if !r.still_firing.is_empty() {
        let _ = write!(t, "\n*Still firing* ({}):", r.still_firing.len());
        for g in r.still_firing.iter().take(10) {
            let _ = write!(t, "\n• {}", labels(&g.labels));
            if let Some(s) = g.since {
                let _ = write!(t, " since {s}");
            }
        }
    }
    if !r.acknowledged.is_empty() {
        let _ = write!(t, "\n*Acknowledged*:");
        for a in r.acknowledged.iter().take(10) {
            let _ = write!(
                t,
                "\n• {} by {}",
                labels(&a.labels),
                slack_escape(&a.ack.by)
            );
        }
    }
    if !r.silences_ending.is_empty() {
        let _ = write!(t, "\n*Silences ending this shift*:");
        for s in r.silences_ending.iter().take(10) {
            let _ = write!(
                t,
                "\n• {} ends {} ({}: {})",
                slack_escape(&s.id),
                s.ends_at,
                slack_escape(&s.created_by),
                slack_escape(&cut(&s.comment, 200))
            );
        }
    }
    if !r.digest.is_empty() {
        let _ = write!(t, "\n*Digest* ({} groups):", r.digest.len());
        for d in r.digest.iter().take(15) {
            let _ = write!(t, "\n• {}", labels(&d.labels));
            for a in d.alerts.iter().take(5) {
                let what = a.summary.as_deref().unwrap_or(&a.name);
                let _ = write!(
                    t,
                    "\n    {} fired {}×, {} firing{}",
                    slack_escape(&cut(what, 200)),
                    a.fired,
                    crate::model::format_duration(std::time::Duration::from_secs(a.firing_seconds)),
                    if a.still_firing { ", still firing" } else { "" }
                );
                if let Some(l) = a.link.as_deref().and_then(|u| slack_link(u, "source")) {
                    let _ = write!(t, " ({l})");
                }
            }
        }
    }
    t
}

/// PagerDuty's limits: summary characters, links, and alerts listed in
/// `custom_details` (the whole event must stay under 512 KB).
const PD_SUMMARY_CHARS: usize = 1_024;
const PD_LINKS: usize = 10;
const PD_DETAIL_ALERTS: usize = 50;
const PD_DETAIL_CHARS: usize = 1_024;

/// The PagerDuty `dedup_key` of a group: the SHA-256 of its Alertmanager-style
/// group key in hex (64 characters, what Alertmanager sends), the same for
/// every trigger and resolve of the group.
pub fn pagerduty_dedup_key(n: &Notification) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(alertmanager_group_key(n).as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A PagerDuty Events API v2 event (without its `routing_key`, added when the
/// secret is read): trigger while firing, resolve when the group resolves.
pub fn pagerduty_event(
    n: &Notification,
    opts: &PagerDutyFile,
    external_url: &str,
) -> serde_json::Value {
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
    let view = group_view(external_url, &n.squad);
    let mut links: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for a in &n.alerts {
        let name = a.labels.get("alertname").unwrap_or("alert");
        for (href, text) in [
            (a.annotations.get("runbook_url"), format!("{name}: runbook")),
            (a.generator_url.as_deref(), format!("{name}: source")),
        ] {
            if let Some(href) = href.filter(|h| h.starts_with("http")) {
                if links.len() < PD_LINKS && seen.insert(href) {
                    links.push(json!({"href": href, "text": cut(&text, 200)}));
                }
            }
        }
    }
    let alerts: Vec<String> = n
        .alerts
        .iter()
        .take(PD_DETAIL_ALERTS)
        .map(|a| cut(&a.labels.to_string(), PD_DETAIL_CHARS))
        .collect();
    json!({
        "event_action": action,
        "dedup_key": pagerduty_dedup_key(n),
        "client": opts.client.as_deref().unwrap_or("squadron"),
        "client_url": opts.client_url.as_deref().unwrap_or(&view),
        "links": links,
        "payload": {
            "summary": cut(&format!("[{}] {} ({} alerts)", n.squad, group.join(" "), n.alert_count()), PD_SUMMARY_CHARS),
            "source": "squadron",
            "severity": severity,
            "group": cut(&n.squad, 255),
            "custom_details": {
                "goalkeeper": n.goalkeeper.as_deref(),
                "reason": n.reason.as_str(),
                "group_key": cut(&alertmanager_group_key(n), PD_DETAIL_CHARS),
                "alerts": alerts,
                "alerts_not_listed": n.alert_count().saturating_sub(PD_DETAIL_ALERTS.min(n.alerts.len())),
            },
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
            acknowledged: None,
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
            report: None,
            omitted: 0,
        }
    }

    fn handover() -> Notification {
        Notification {
            id: "payments:handover:1".into(),
            group_key: "payments:handover".into(),
            group_labels: LabelSet::default(),
            reason: NotifyReason::Handover,
            alerts: Vec::new(),
            goalkeeper: Some("chen".into()),
            report: Some(Box::new(crate::engine::sample_report(2))),
            omitted: 0,
            ..notification(Status::Firing)
        }
    }

    #[test]
    fn a_handover_report_reads_in_slack_and_never_pages() {
        let n = handover();
        let m = slack_message(&n, &slack(SlackFormat::Detailed), "http://squadron:9464");
        let text = m["text"].as_str().unwrap();
        for want in [
            "*Handover for payments*: chen takes over from bob",
            "Pages: 2 in 1 groups (budget 2), 1 out of hours",
            "120 received; 100 deduplicated",
            "18 digested",
            "*Still firing* (1):",
            "alertname=HighErrorRate",
            "*Digest* (2 groups):",
            "fired 1×",
            "still firing",
            "&lt;b&gt;",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        assert_eq!(m["channel"], "#payments-oncall");
        let r = ReceiverFile {
            name: "pay-pager".into(),
            webhook: None,
            slack: None,
            pagerduty: Some(pagerduty()),
            retry: None,
            timeout: None,
        };
        let d = Receivers::new(
            IntCounterVec::new(prometheus::Opts::new("d", "d"), &["receiver", "result"]).unwrap(),
            HistogramVec::new(prometheus::HistogramOpts::new("s", "s"), &["receiver"]).unwrap(),
            "http://squadron".into(),
            PayloadLimits::default(),
        )
        .unwrap();
        assert!(d.prepare(&n, &r).is_none(), "a report is not an incident");
        assert!(d.prepare(&notification(Status::Firing), &r).is_some());
    }

    fn slack(format: SlackFormat) -> SlackFile {
        SlackFile {
            url: None,
            url_file: None,
            channel: Some("#payments-oncall".into()),
            username: None,
            icon_emoji: None,
            format,
        }
    }

    fn pagerduty() -> PagerDutyFile {
        PagerDutyFile {
            routing_key: Some(Secret::Value("R0UTING".into())),
            routing_key_file: None,
            url: None,
            client: None,
            client_url: None,
        }
    }

    #[test]
    fn slack_names_the_goalkeeper_and_links_the_alerts() {
        let mut n = notification(Status::Firing);
        n.alerts[0].generator_url = Some("http://prometheus:9090/graph?g0.expr=up".into());
        n.alerts[0].annotations = LabelSet::from_pairs([
            ("summary", "checkout errors at 5% <b>"),
            ("runbook_url", "https://runbooks/checkout"),
        ]);
        let m = slack_message(&n, &slack(SlackFormat::Detailed), "http://squadron:9464");
        let t = m["text"].as_str().unwrap();
        assert!(
            t.contains("FIRING:1")
                && t.contains("Goalkeeper on duty: *bob*")
                && t.contains("checkout errors at 5% &lt;b&gt;")
                && t.contains("<http://prometheus:9090/graph?g0.expr=up|source>")
                && t.contains("<https://runbooks/checkout|runbook>")
                && t.contains("<http://squadron:9464/api/v1/groups?squad=payments|groups>"),
            "{t}"
        );
        assert_eq!(m["channel"], "#payments-oncall");
        assert!(m.get("username").is_none());
        let compact = slack_message(&n, &slack(SlackFormat::Compact), "http://s");
        let c = compact["text"].as_str().unwrap();
        assert!(!c.contains('\n') && c.contains("goalkeeper *bob*"), "{c}");
    }

    /// A squad grouping by all labels of a 12-label alert with long values:
    /// its group key is far over PagerDuty's 255 characters; the dedup key is
    /// its 64-character hash, the same when the group resolves.
    #[test]
    fn pagerduty_dedup_key_fits_and_resolves_the_same_incident() {
        let pairs: Vec<(String, String)> = (0..12)
            .map(|i| {
                (
                    format!("label_{i:02}"),
                    format!("value-{i}-{}", "x".repeat(60)),
                )
            })
            .collect();
        let labels = LabelSet::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut n = notification(Status::Firing);
        n.group_labels = labels.clone();
        n.alerts[0].labels = labels;
        n.alerts[0].generator_url = Some("http://prometheus/graph".into());
        assert!(alertmanager_group_key(&n).len() > 800);
        let trigger = pagerduty_event(&n, &pagerduty(), "http://squadron");
        let key = trigger["dedup_key"].as_str().unwrap().to_owned();
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(
            trigger["payload"]["summary"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 1024
        );
        assert_eq!(
            (
                trigger["event_action"].as_str(),
                trigger["payload"]["severity"].as_str()
            ),
            (Some("trigger"), Some("error"))
        );
        assert_eq!(trigger["client"], "squadron");
        assert_eq!(trigger["links"][0]["href"], "http://prometheus/graph");
        // The routing key is added only when the secret is read.
        assert!(trigger.get("routing_key").is_none());
        n.status = Status::Resolved;
        let resolve = pagerduty_event(&n, &pagerduty(), "http://squadron");
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"].as_str(), Some(key.as_str()));
    }

    #[test]
    fn cut_counts_characters_not_bytes() {
        assert_eq!(cut("héllo", 10), "héllo");
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo wörld", 5), "héll…");
        assert_eq!(cut("ééééé", 2).chars().count(), 2);
    }

    #[test]
    fn the_redactor_hides_every_piece_of_a_url_in_any_case() {
        for (url, text) in [
            (
                "http://127.0.0.1:80/PATH?token=SECRET",
                "error sending request for url (http://127.0.0.1/PATH?token=SECRET)",
            ),
            (
                "http://LOCALHOST:9/SECRET",
                "http://localhost:9/SECRET failed",
            ),
            ("https://user:PASSWORD@h/x", "auth PASSWORD rejected"),
            (
                "https://hooks.slack.com/services/T000/B000/SECRET",
                "... /services/T000/B000/SECRET ... secret",
            ),
        ] {
            let mut r = Redactor::default();
            r.url(url);
            let out = r.scrub(text);
            assert!(!out.to_ascii_lowercase().contains("secret"), "{url}: {out}");
            assert!(
                !out.contains("PASSWORD") && !out.contains("PATH"),
                "{url}: {out}"
            );
        }
        // A secret that is also the replacement's text does not loop.
        let mut r = Redactor::default();
        r.secret("redacted");
        assert_eq!(r.scrub("x redacted y"), "x [redacted] y");
    }

    #[test]
    fn secrets_come_from_files_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("squadron-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "FROMFILE\n").unwrap();
        let f = file.display().to_string();
        assert_eq!(
            resolve(&Secret::File { file: f }).as_deref(),
            Ok("FROMFILE")
        );
        let missing = resolve(&Secret::File {
            file: dir.join("nope").display().to_string(),
        })
        .unwrap_err();
        assert!(
            missing.contains("nope") && missing.contains("not found"),
            "{missing}"
        );
        assert_eq!(
            resolve(&Secret::Env { env: "PATH".into() }).ok(),
            std::env::var("PATH").ok()
        );
        assert!(
            resolve(&Secret::Env {
                env: "SQUADRON_NO_SUCH_VARIABLE".into()
            })
            .unwrap_err()
            .contains("SQUADRON_NO_SUCH_VARIABLE")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[derive(Default)]
    struct Captured(std::sync::Mutex<Vec<(String, String, Vec<u8>)>>);

    impl DeadLetter for Captured {
        fn dead_letter(&self, receiver: &str, _squad: &str, error: &str, payload: Vec<u8>) {
            self.0
                .lock()
                .unwrap()
                .push((receiver.into(), error.into(), payload));
        }
    }

    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Receivers with secrets in URL forms the HTTP library prints its own
    /// way, pointing at closed ports: the secrets reach no log line, metric
    /// label or dead letter, and the dead letter is the notification.
    #[test]
    fn secrets_reach_no_log_metric_or_dead_letter() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let rules: Vec<ReceiverFile> = serde_yaml_ng::from_str(&format!(
            r#"
- name: hook-a
  webhook: {{url: "http://127.0.0.1:{closed}/PATHSECRET?token=QUERYSECRET", headers: {{Authorization: "Bearer HEADERSECRET"}}}}
  retry: {{attempts: 2, backoff: 1ms}}
- name: hook-b
  webhook: {{url: "http://LOCALHOST:{closed}/CASESECRET"}}
  retry: {{attempts: 1, backoff: 1ms}}
- name: pager
  pagerduty: {{routing_key: ROUTINGSECRET, url: "http://user:PASSSECRET@127.0.0.1:{closed}/pd"}}
  retry: {{attempts: 1, backoff: 1ms}}
- name: from-env
  slack: {{url: {{env: SQUADRON_TEST_NO_SUCH_URL}}}}
"#
        ))
        .unwrap();
        let registry = prometheus::Registry::new();
        let deliveries =
            IntCounterVec::new(prometheus::Opts::new("d", "d"), &["receiver", "result"]).unwrap();
        let seconds =
            HistogramVec::new(prometheus::HistogramOpts::new("s", "s"), &["receiver"]).unwrap();
        registry.register(Box::new(deliveries.clone())).unwrap();
        registry.register(Box::new(seconds.clone())).unwrap();
        let receivers = Receivers::new(
            deliveries,
            seconds,
            "http://squadron".into(),
            PayloadLimits::default(),
        )
        .unwrap();
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .finish();
        let dead = std::sync::Arc::new(Captured::default());
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            receivers.deliver(&notification(Status::Firing), &rules, dead.clone());
            for _ in 0..500 {
                if dead.0.lock().unwrap().len() == 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let dead = dead.0.lock().unwrap();
        assert_eq!(dead.len(), 4, "every receiver failed and dead-lettered");
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let metrics = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut out,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        let mut everything = format!("{logs}\n{metrics}\n");
        for (receiver, error, payload) in dead.iter() {
            everything.push_str(&format!(
                "{receiver} {error} {}\n",
                String::from_utf8_lossy(payload)
            ));
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(
                v["receiver"].as_str(),
                Some(receiver.as_str()),
                "the notification, for its receiver"
            );
            assert_eq!(v["alerts"][0]["labels"]["alertname"], "A");
        }
        assert!(
            !everything.to_ascii_lowercase().contains("secret"),
            "a secret leaked:\n{everything}"
        );
        assert!(logs.contains("cannot connect"), "{logs}");
        assert!(
            logs.contains("SQUADRON_TEST_NO_SUCH_URL"),
            "says which variable: {logs}"
        );
        assert!(
            metrics.contains(r#"d{receiver="hook-a",result="retry"} 1"#),
            "{metrics}"
        );
    }

    /// What a webhook receiver written for Alertmanager decodes: its
    /// `notify/webhook.Message` (template.Data, version, groupKey,
    /// truncatedAlerts) with every field and its type, and the receiver's
    /// configured name in `receiver`.
    #[test]
    fn the_webhook_payload_is_alertmanagers_message() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Message {
            version: String,
            group_key: String,
            truncated_alerts: u64,
            receiver: String,
            status: String,
            alerts: Vec<AmAlert>,
            group_labels: BTreeMap<String, String>,
            common_labels: BTreeMap<String, String>,
            common_annotations: BTreeMap<String, String>,
            #[serde(rename = "externalURL")]
            external_url: String,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct AmAlert {
            status: String,
            labels: BTreeMap<String, String>,
            annotations: BTreeMap<String, String>,
            // Go's time.Time: RFC 3339.
            starts_at: String,
            ends_at: String,
            #[serde(rename = "generatorURL")]
            generator_url: String,
            fingerprint: String,
        }
        use std::collections::BTreeMap;
        let n = notification(Status::Firing);
        let body = WebhookPayload::new(&n, "http://squadron")
            .for_receiver("pay-hook")
            .to_json();
        let m: Message = serde_json::from_slice(&body).unwrap();
        assert_eq!(m.version, "4");
        assert_eq!(m.receiver, "pay-hook");
        assert_eq!(m.group_key, r#"{}/{squad="payments"}:{alertname="A"}"#);
        assert_eq!(m.alerts[0].fingerprint.len(), 16);
        for t in [&m.alerts[0].starts_at, &m.alerts[0].ends_at] {
            assert!(t.parse::<jiff::Timestamp>().is_ok(), "{t}");
        }
    }
}
