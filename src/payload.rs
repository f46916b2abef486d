//! A notification as the Alertmanager webhook v4 payload, plus squadron's own
//! fields (`squad`, `goalkeeper`, `reason`, `core`, `folded`). Receivers written
//! for Alertmanager's webhook read it unchanged; it is also what squad topics carry.

use crate::engine::{Folded, HandoverReport, Notification};
use crate::model::{LabelSet, Labels, Status, Ts};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Go's zero time: what Alertmanager sends as `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload<'a> {
    pub version: &'static str,
    /// Alertmanager's format: `{}/{squad="payments"}:{alertname="X"}`.
    pub group_key: String,
    pub truncated_alerts: u32,
    pub status: Status,
    pub receiver: &'a str,
    pub group_labels: &'a LabelSet,
    pub common_labels: BTreeMap<&'a str, &'a str>,
    pub common_annotations: BTreeMap<&'a str, &'a str>,
    #[serde(rename = "externalURL")]
    pub external_url: &'a str,
    pub alerts: Vec<WebhookAlert<'a>>,
    // squadron's additions.
    /// The same on every copy of one notification (at-least-once redelivery).
    pub notification_id: &'a str,
    pub squad: &'a str,
    pub goalkeeper: Option<&'a str>,
    pub reason: &'static str,
    pub core: bool,
    pub sent_at: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<&'a Folded>,
    /// Who acknowledged the group, and when (their acknowledgement stopped
    /// the repeats; this notification is about a change since).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<&'a crate::control::Ack>,
    /// A handover's report (reason `handover`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Cow<'a, HandoverReport>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert<'a> {
    pub status: Status,
    pub labels: &'a LabelSet,
    pub annotations: &'a LabelSet,
    pub starts_at: Ts,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: &'a str,
    pub fingerprint: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
}

impl<'a> WebhookPayload<'a> {
    pub fn new(n: &'a Notification, external_url: &'a str) -> WebhookPayload<'a> {
        WebhookPayload {
            version: "4",
            group_key: alertmanager_group_key(n),
            truncated_alerts: n.omitted,
            status: n.status,
            receiver: &n.squad,
            group_labels: &n.group_labels,
            common_labels: common(n.alerts.iter().map(|a| &a.labels)),
            common_annotations: common(n.alerts.iter().map(|a| &a.annotations)),
            external_url,
            alerts: n
                .alerts
                .iter()
                .map(|a| WebhookAlert {
                    status: a.status,
                    labels: &a.labels,
                    annotations: &a.annotations,
                    starts_at: a.starts_at,
                    ends_at: a
                        .ends_at
                        .map_or_else(|| ZERO_TIME.to_owned(), |t| t.to_string()),
                    generator_url: a.generator_url.as_deref().unwrap_or(""),
                    fingerprint: a.fingerprint.to_string(),
                    flapping: a.flapping,
                })
                .collect(),
            notification_id: &n.id,
            squad: &n.squad,
            goalkeeper: n.goalkeeper.as_deref(),
            acknowledged: n.acknowledged.as_ref(),
            reason: n.reason.as_str(),
            core: n.core,
            sent_at: n.at,
            folded: n.folded.as_ref(),
            report: n.report.as_deref().map(Cow::Borrowed),
        }
    }

    /// As a receiver gets it: `receiver` is the receiver's configured name
    /// (in the squad topic it is the squad's).
    pub fn for_receiver(mut self, receiver: &'a str) -> WebhookPayload<'a> {
        self.receiver = receiver;
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("payload serializes")
    }

    /// Serialized with as many alerts as `limits` allow, in order; the others
    /// are counted in `truncatedAlerts` (as Alertmanager's `max_alerts` does), so
    /// a group of any size makes a message the broker and receivers take.
    /// `commonLabels` and `status` still describe the whole group.
    pub fn to_json_within(mut self, limits: PayloadLimits) -> Vec<u8> {
        if limits.max_alerts > 0 && self.alerts.len() > limits.max_alerts {
            self.truncated_alerts += (self.alerts.len() - limits.max_alerts) as u32;
            self.alerts.truncate(limits.max_alerts);
        }
        let json = self.to_json();
        if json.len() <= limits.max_bytes {
            return json;
        }
        let sizes: Vec<usize> = self
            .alerts
            .iter()
            .map(|a| serde_json::to_vec(a).expect("alert serializes").len() + 1)
            .collect();
        // The payload without its alerts, plus room for the larger count.
        let mut total = json.len() - sizes.iter().sum::<usize>() + 10;
        let keep = sizes
            .iter()
            .take_while(|&&s| {
                total += s;
                total <= limits.max_bytes
            })
            .count();
        self.truncated_alerts += (self.alerts.len() - keep) as u32;
        self.alerts.truncate(keep);
        let mut json = self.to_json();
        // A report has no alerts: its lists are cut instead, longest first.
        while json.len() > limits.max_bytes {
            let Some(r) = self.report.as_mut().map(Cow::to_mut) else {
                break;
            };
            let cut = |n: usize| n - n / 2;
            if r.digest.len() >= r.pages.len() && !r.digest.is_empty() {
                let keep = r.digest.len() / 2;
                r.truncated += cut(r.digest.len()) as u32;
                r.digest.truncate(keep);
            } else if !r.pages.is_empty() {
                let keep = r.pages.len() / 2;
                r.truncated += cut(r.pages.len()) as u32;
                r.pages.truncate(keep);
            } else if !r.still_firing.is_empty() {
                let keep = r.still_firing.len() / 2;
                r.truncated += cut(r.still_firing.len()) as u32;
                r.still_firing.truncate(keep);
            } else {
                break;
            }
            json = self.to_json();
        }
        json
    }
}

/// A group's key as Alertmanager writes it (`groupKey` in its webhook): the
/// route's matchers, here the squad, then the group's labels. Stable for the
/// group's life; PagerDuty's `dedup_key` is its hash.
pub fn alertmanager_group_key(n: &Notification) -> String {
    format!("{{}}/{{squad={:?}}}:{}", &*n.squad, n.group_labels)
}

/// How large one notification message may be.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Serialized bytes at most (alerts beyond are left out and counted).
    pub max_bytes: usize,
    /// Alerts listed at most; 0: no limit but `max_bytes`.
    pub max_alerts: usize,
}

impl Default for PayloadLimits {
    fn default() -> PayloadLimits {
        PayloadLimits {
            max_bytes: 900_000,
            max_alerts: 0,
        }
    }
}

/// The pairs every set has in common (Alertmanager's commonLabels).
fn common<'a>(mut sets: impl Iterator<Item = &'a LabelSet>) -> BTreeMap<&'a str, &'a str> {
    let Some(first) = sets.next() else {
        return BTreeMap::new();
    };
    let mut common: BTreeMap<&str, &str> = first.iter().collect();
    for s in sets {
        common.retain(|k, v| s.get(k) == Some(*v));
    }
    common
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{NotifiedAlert, NotifyReason};
    use crate::model::Fingerprint;

    /// A handover report has no alerts to cut: its lists are cut instead, and counted.
    #[test]
    fn a_large_handover_report_is_cut_to_fit_and_counts_what_it_left_out() {
        let report = crate::engine::sample_report(5_000);
        let n = Notification {
            id: "payments:handover:1".into(),
            at: Ts(0),
            squad: "payments".into(),
            goalkeeper: Some("chen".into()),
            acknowledged: None,
            group_key: "payments:handover".into(),
            group_labels: LabelSet::default(),
            status: Status::Firing,
            reason: NotifyReason::Handover,
            core: false,
            alerts: Vec::new(),
            folded: None,
            report: Some(Box::new(report)),
            omitted: 0,
        };
        let limits = PayloadLimits::default();
        let full = WebhookPayload::new(&n, "http://s").to_json();
        assert!(full.len() > limits.max_bytes, "{}", full.len());
        let cut = WebhookPayload::new(&n, "http://s").to_json_within(limits);
        assert!(cut.len() <= limits.max_bytes);
        let v: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        let r = &v["report"];
        let listed = r["digest"].as_array().unwrap().len() as u64;
        assert!(listed > 100, "{listed}");
        assert_eq!(listed + r["truncated"].as_u64().unwrap(), 5_000);
        assert_eq!(r["noise"]["digested"], 18, "the figures are never cut");
        assert_eq!(v["reason"], "handover");
    }

    /// 20 POSTs of 1,000 alerts in one group once made an 11 MB notification
    /// the broker refused for ever. Now it lists what fits and counts the rest.
    #[test]
    fn a_large_group_is_cut_to_fit_and_counts_what_it_left_out() {
        let summary = "x".repeat(400);
        let alerts: Vec<NotifiedAlert> = (0..20_000)
            .map(|i| NotifiedAlert {
                fingerprint: Fingerprint(i),
                status: Status::Firing,
                labels: LabelSet::from_pairs([
                    ("alertname", "PodDown"),
                    ("pod", &format!("checkout-{i:05}")),
                ]),
                annotations: LabelSet::from_pairs([("summary", summary.as_str())]),
                starts_at: Ts(0),
                ends_at: None,
                generator_url: None,
                flapping: false,
            })
            .collect();
        let n = Notification {
            id: "n-1".into(),
            at: Ts(0),
            squad: "payments".into(),
            goalkeeper: None,
            acknowledged: None,
            group_key: "k".into(),
            group_labels: LabelSet::from_pairs([("alertname", "PodDown")]),
            status: Status::Firing,
            reason: NotifyReason::GroupChanged,
            core: false,
            alerts,
            folded: None,
            report: None,
            omitted: 0,
        };
        let full = WebhookPayload::new(&n, "http://s").to_json();
        assert!(full.len() > 9_000_000);
        let limits = PayloadLimits::default();
        let cut = WebhookPayload::new(&n, "http://s").to_json_within(limits);
        assert!(cut.len() <= limits.max_bytes);
        let v: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        let listed = v["alerts"].as_array().unwrap().len();
        assert!(listed > 1000, "{listed}");
        assert_eq!(
            listed as u64 + v["truncatedAlerts"].as_u64().unwrap(),
            20_000
        );
        assert_eq!(v["alerts"][0]["labels"]["pod"], "checkout-00000");
        assert_eq!(v["commonLabels"]["alertname"], "PodDown");
        let few = WebhookPayload::new(&n, "http://s").to_json_within(PayloadLimits {
            max_alerts: 10,
            ..limits
        });
        let v: serde_json::Value = serde_json::from_slice(&few).unwrap();
        assert_eq!(v["alerts"].as_array().unwrap().len(), 10);
        assert_eq!(v["truncatedAlerts"], 19_990);
        // A group that fits is unchanged.
        let mut small = n.clone();
        small.alerts.truncate(3);
        assert_eq!(
            WebhookPayload::new(&small, "http://s").to_json_within(limits),
            WebhookPayload::new(&small, "http://s").to_json()
        );
    }

    #[test]
    fn carries_alertmanager_webhook_fields() {
        let alert = |inst: &str, status| NotifiedAlert {
            fingerprint: Fingerprint(0xabc),
            status,
            labels: LabelSet::from_pairs([
                ("alertname", "A"),
                ("instance", inst),
                ("service", "s"),
            ]),
            annotations: LabelSet::from_pairs([("summary", "x")]),
            starts_at: Ts(0),
            ends_at: (status == Status::Resolved).then_some(Ts(60_000)),
            generator_url: None,
            flapping: false,
        };
        let n = Notification {
            id: "n-1".into(),
            at: Ts(90_000),
            squad: "payments".into(),
            goalkeeper: Some("bob".into()),
            acknowledged: None,
            group_key: r#"{}/{squad="payments"}:{alertname="A"}"#.into(),
            group_labels: LabelSet::from_pairs([("alertname", "A")]),
            status: Status::Firing,
            reason: NotifyReason::GroupChanged,
            core: true,
            alerts: vec![alert("i1", Status::Firing), alert("i2", Status::Resolved)],
            folded: None,
            report: None,
            omitted: 0,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&WebhookPayload::new(&n, "http://squadron").to_json()).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "payments");
        assert_eq!(v["groupKey"], r#"{}/{squad="payments"}:{alertname="A"}"#);
        assert_eq!(
            v["commonLabels"],
            serde_json::json!({"alertname": "A", "service": "s"})
        );
        assert_eq!(v["commonAnnotations"], serde_json::json!({"summary": "x"}));
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][1]["endsAt"], "1970-01-01T00:01:00Z");
        assert_eq!(v["alerts"][0]["fingerprint"], "0000000000000abc");
        assert_eq!(v["alerts"][0]["generatorURL"], "");
        assert_eq!(
            (
                v["squad"].as_str(),
                v["goalkeeper"].as_str(),
                v["reason"].as_str()
            ),
            (Some("payments"), Some("bob"), Some("group_changed"))
        );
        // What a receiver written for Alertmanager decodes with: the same decoder squadron uses.
        let bytes = WebhookPayload::new(&n, "").to_json();
        let d = crate::decode::decode(&bytes).unwrap();
        assert_eq!(d.format, crate::decode::Format::AlertmanagerWebhook);
        assert_eq!(d.alerts.iter().filter(|a| a.is_ok()).count(), 2);
    }
}
