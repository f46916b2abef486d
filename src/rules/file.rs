//! The rule file schema as people write it (phase one of two). Every struct
//! rejects unknown fields; [`super::compile`] turns these into a validated
//! [`super::RuleSet`]. Field documentation lives in README.md ("Rule files").

use serde::Deserialize;
use std::collections::BTreeMap;

/// One YAML file in the rules directory. Every section is optional; files merge.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub ownership: Option<OwnershipFile>,
    #[serde(default)]
    pub grouping: Option<GroupingFile>,
    #[serde(default)]
    pub resolve_timeout: Option<String>,
    #[serde(default)]
    pub flap_detection: Option<FlapFile>,
    #[serde(default)]
    pub storm_limit: Option<StormFile>,
    #[serde(default)]
    pub limits: Option<LimitsFile>,
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalFile>,
    #[serde(default)]
    pub squads: Vec<SquadFile>,
    #[serde(default)]
    pub impact_rules: Vec<ImpactRuleFile>,
    #[serde(default)]
    pub silences: Vec<SilenceFile>,
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleFile>,
}

/// Caps on the state one engine (one decide task) holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    #[serde(default)]
    pub max_active_alerts: Option<usize>,
    #[serde(default)]
    pub max_active_alerts_per_squad: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipFile {
    /// Labels naming the service, tried in order. Default `[service]`.
    #[serde(default)]
    pub service_labels: Option<Vec<String>>,
    /// The squad that receives alerts no squad owns.
    pub fallback_squad: String,
    /// Ownership from a Backstage service catalog.
    #[serde(default)]
    pub catalog: Option<super::catalog::CatalogFile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupingFile {
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub group_wait: Option<String>,
    #[serde(default)]
    pub group_interval: Option<String>,
    #[serde(default)]
    pub repeat_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlapFile {
    /// More than this many state changes within `window` makes an alert flapping.
    pub max_changes: u32,
    pub window: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormFile {
    /// At most this many notifications per squad per `interval`.
    pub max_notifications: u32,
    pub interval: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalFile {
    pub name: String,
    pub time_intervals: Vec<TimeSpecFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSpecFile {
    #[serde(default)]
    pub times: Vec<TimeRangeFile>,
    #[serde(default)]
    pub weekdays: Vec<String>,
    #[serde(default)]
    pub days_of_month: Vec<String>,
    #[serde(default)]
    pub months: Vec<String>,
    #[serde(default)]
    pub years: Vec<String>,
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeFile {
    pub start_time: String,
    pub end_time: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SquadFile {
    pub name: String,
    /// Service names this squad owns (matched against the ownership labels).
    #[serde(default)]
    pub services: Vec<String>,
    /// Alternatively, alerts matching all of these matchers belong to the squad.
    #[serde(default, rename = "match")]
    pub match_: Vec<String>,
    /// Services on the path that delivers the product to users.
    #[serde(default)]
    pub core_services: Vec<String>,
    #[serde(default)]
    pub goalkeeper: Option<GoalkeeperFile>,
    /// Kafka topic for this squad's notifications. Default `alerts.squad.<name>`.
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub receivers: Vec<ReceiverFile>,
    #[serde(default)]
    pub grouping: Option<GroupingFile>,
    #[serde(default)]
    pub storm_limit: Option<StormFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalkeeperFile {
    pub timezone: String,
    /// Local time at which duty changes hands (`HH:MM`, default `00:00`).
    #[serde(default)]
    pub handover: Option<String>,
    /// Weekday (or `monday:friday` range) -> person.
    #[serde(default)]
    pub weekdays: Option<BTreeMap<String, String>>,
    /// People taking one day each, in order, from `start`.
    #[serde(default)]
    pub rotation: Option<RotationFile>,
    /// Someone else on duty for a while (swaps, sick days); later entries win.
    #[serde(default)]
    pub overrides: Vec<DutyOverrideFile>,
    /// Groups paged (incidents) one shift may take before the handover report
    /// and `squadron_shifts_over_budget_total` say it was too many.
    #[serde(default)]
    pub page_budget: Option<u32>,
    /// A time interval (by name): pages outside it count as out of hours.
    #[serde(default)]
    pub working_hours: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutyOverrideFile {
    pub person: String,
    /// Local time in the goalkeeper's time zone (`2026-12-24T09:00`), or RFC 3339 with an offset.
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationFile {
    pub start: String,
    pub people: Vec<String>,
}

/// Declared now, delivered by the receivers stage. Exactly one kind per receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverFile {
    pub name: String,
    #[serde(default)]
    pub webhook: Option<WebhookFile>,
    #[serde(default)]
    pub slack: Option<SlackFile>,
    #[serde(default)]
    pub pagerduty: Option<PagerDutyFile>,
    /// Delivery attempts and the first backoff (doubling, at most 60 s). Default 6, 500ms.
    #[serde(default)]
    pub retry: Option<RetryFile>,
    /// How long one attempt may take (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub attempts: u32,
    pub backoff: String,
}

/// A secret: the value itself, or where to read it at each delivery (so a
/// rotated file or a changed environment needs no reload).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string, {file: PATH} or {env: NAME}")]
pub enum Secret {
    Value(String),
    File { file: String },
    Env { env: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Exactly one of `url` and `url_file` (Alertmanager's name).
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_file: Option<String>,
    /// Sent with every request; values are secrets (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Alerts listed at most (Alertmanager's `max_alerts`; 0: all that fit).
    #[serde(default)]
    pub max_alerts: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFile {
    /// The incoming webhook: exactly one of `url` and `url_file`.
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_file: Option<String>,
    /// Overrides the webhook's channel, user name and icon (where Slack allows it).
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub icon_emoji: Option<String>,
    /// `detailed` (default: goalkeeper, each alert with its links) or `compact` (one line).
    #[serde(default)]
    pub format: SlackFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlackFormat {
    #[default]
    Detailed,
    Compact,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyFile {
    /// The integration's routing key: exactly one of `routing_key` and `routing_key_file`.
    #[serde(default)]
    pub routing_key: Option<Secret>,
    #[serde(default)]
    pub routing_key_file: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// Shown in PagerDuty as the event's origin (default `squadron`) and its link.
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub client_url: Option<String>,
}

impl WebhookFile {
    pub fn url(&self) -> Option<Secret> {
        either(&self.url, &self.url_file)
    }
}

impl SlackFile {
    pub fn url(&self) -> Option<Secret> {
        either(&self.url, &self.url_file)
    }
}

impl PagerDutyFile {
    pub fn routing_key(&self) -> Option<Secret> {
        either(&self.routing_key, &self.routing_key_file)
    }
}

/// The secret given either inline or as Alertmanager's `*_file` field; None
/// when neither or both are given (the compiler reports it).
fn either(value: &Option<Secret>, file: &Option<String>) -> Option<Secret> {
    match (value, file) {
        (Some(v), None) => Some(v.clone()),
        (None, Some(f)) => Some(Secret::File { file: f.clone() }),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drop,
    Keep,
    /// Grouped and accounted for, but delivered in the squad's digest at the
    /// goalkeeper's handover instead of notified.
    Digest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpactRuleFile {
    pub name: String,
    #[serde(rename = "match")]
    pub match_: Vec<String>,
    pub action: Action,
    /// The rule applies only while one of these named time intervals is active.
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    /// The rule applies only to alerts owned by these squads.
    #[serde(default)]
    pub squads: Vec<String>,
    /// Without this a drop or digest rule never applies to an alert from a core service.
    #[serde(default)]
    pub applies_to_core: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceFile {
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<String>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleFile {
    pub name: String,
    /// Alertmanager's single source: a firing alert matching these inhibits.
    #[serde(default)]
    pub source_matchers: Vec<String>,
    /// Several sources that must all be firing at once (AND).
    #[serde(default)]
    pub sources: Vec<InhibitSourceFile>,
    pub target_matchers: Vec<String>,
    /// Labels whose values must be equal in source and target.
    #[serde(default)]
    pub equal: Vec<String>,
    /// The rule inhibits only targets owned by this squad.
    #[serde(default)]
    pub squad: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitSourceFile {
    pub matchers: Vec<String>,
}
