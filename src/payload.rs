//! A notification as the Alertmanager webhook v4 payload, plus squadron's own
//! fields (`squad`, `goalkeeper`, `reason`, `core`, `folded`). Receivers written
//! for Alertmanager's webhook read it unchanged; it is also what squad topics carry.

use crate::engine::{Folded, Notification};
use crate::model::{LabelSet, Labels, Status, Ts};
use serde::Serialize;
use std::collections::BTreeMap;

/// Go's zero time: what Alertmanager sends as `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload<'a> {
    pub version: &'static str,
    pub group_key: &'a str,
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
            group_key: &n.group_key,
            truncated_alerts: 0,
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
            reason: n.reason.as_str(),
            core: n.core,
            sent_at: n.at,
            folded: n.folded.as_ref(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("payload serializes")
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
            group_key: "payments:{alertname=\"A\"}".into(),
            group_labels: LabelSet::from_pairs([("alertname", "A")]),
            status: Status::Firing,
            reason: NotifyReason::GroupChanged,
            core: true,
            alerts: vec![alert("i1", Status::Firing), alert("i2", Status::Resolved)],
            folded: None,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&WebhookPayload::new(&n, "http://squadron").to_json()).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "payments");
        assert_eq!(v["groupKey"], "payments:{alertname=\"A\"}");
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
