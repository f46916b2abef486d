//! What the engine says: each input alert's fate, and notifications.

use crate::decode::Invalid;
use crate::model::{Fingerprint, LabelSet, Status, Ts};
use crate::rules::SquadId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Identifies one input alert for the driver (for Kafka: derived from the
/// partition, offset and index in the message). The engine never interprets it.
pub type InputId = u64;

/// What became of one input alert. Every input alert gets exactly one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    /// Part of a notification that was sent.
    Notified,
    /// Told nothing new: a resend, a state already notified, or a resolve of an
    /// alert that was never notified firing.
    Deduplicated,
    /// Dropped by an impact rule (the rule's name).
    Dropped {
        rule: Arc<str>,
    },
    Silenced {
        silence: Arc<str>,
        /// Made at runtime through the API (its id is not from a rule file).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        runtime: bool,
    },
    Inhibited {
        rule: Arc<str>,
    },
    /// Held because the alert is flapping; the flap itself is notified once.
    Flapping,
    /// Collected for the squad's digest by an impact rule (its name), not notified.
    Digested {
        rule: Arc<str>,
    },
    /// Folded into a storm summary notification.
    Throttled,
    Invalid {
        reason: Invalid,
    },
    /// Not admitted: the engine holds as many active alerts as a limit allows.
    Shed {
        limit: Limit,
    },
}

/// Which state limit shed an alert (`limits` in the rule files).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    MaxActiveAlerts,
    MaxActiveAlertsPerSquad,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxActiveAlerts => "max_active_alerts",
            Limit::MaxActiveAlertsPerSquad => "max_active_alerts_per_squad",
        }
    }
}

/// The bounded kind of a [`Fate`], for counting and metric labels.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FateKind {
    Notified,
    Deduplicated,
    Dropped,
    Silenced,
    Inhibited,
    Flapping,
    Throttled,
    Invalid,
    Shed,
    Digested,
}

// `FateKind::ALL[k as usize] == k`, checked when compiling.
const _: () = {
    let mut i = 0;
    while i < FateKind::ALL.len() {
        assert!(FateKind::ALL[i] as usize == i);
        i += 1;
    }
};

impl FateKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [FateKind; 10] = [
        FateKind::Notified,
        FateKind::Deduplicated,
        FateKind::Dropped,
        FateKind::Silenced,
        FateKind::Inhibited,
        FateKind::Flapping,
        FateKind::Throttled,
        FateKind::Invalid,
        FateKind::Shed,
        FateKind::Digested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FateKind::Notified => "notified",
            FateKind::Deduplicated => "deduplicated",
            FateKind::Dropped => "dropped",
            FateKind::Silenced => "silenced",
            FateKind::Inhibited => "inhibited",
            FateKind::Flapping => "flapping",
            FateKind::Throttled => "throttled",
            FateKind::Invalid => "invalid",
            FateKind::Shed => "shed",
            FateKind::Digested => "digested",
        }
    }
}

impl Fate {
    pub fn kind(&self) -> FateKind {
        match self {
            Fate::Notified => FateKind::Notified,
            Fate::Deduplicated => FateKind::Deduplicated,
            Fate::Dropped { .. } => FateKind::Dropped,
            Fate::Silenced { .. } => FateKind::Silenced,
            Fate::Inhibited { .. } => FateKind::Inhibited,
            Fate::Flapping => FateKind::Flapping,
            Fate::Throttled => FateKind::Throttled,
            Fate::Invalid { .. } => FateKind::Invalid,
            Fate::Shed { .. } => FateKind::Shed,
            Fate::Digested { .. } => FateKind::Digested,
        }
    }

    /// The rule, silence or reason responsible, if any.
    pub fn cause(&self) -> Option<&str> {
        match self {
            Fate::Dropped { rule } | Fate::Inhibited { rule } | Fate::Digested { rule } => {
                Some(rule)
            }
            Fate::Silenced { silence, .. } => Some(silence),
            Fate::Invalid { reason } => Some(reason.kind.as_str()),
            Fate::Shed { limit } => Some(limit.as_str()),
            _ => None,
        }
    }
}

/// A fate decided for an input alert, with the squad that owns it
/// (an index valid for the engine's current rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FateRecord {
    pub input: InputId,
    pub squad: SquadId,
    /// Known for alerts the engine remembers; `None` for a fate decided on
    /// receipt (the driver holds that alert: [`crate::model::Alert::fingerprint`]).
    pub fingerprint: Option<Fingerprint>,
    pub fate: Fate,
}

/// Why a notification was sent.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyReason {
    /// The group's first notification, after `group_wait`.
    NewGroup,
    /// Alerts joined, resolved, re-fired or started flapping since the last one.
    GroupChanged,
    /// Nothing changed for `repeat_interval`; still firing.
    Repeat,
    /// Every alert in the group has resolved.
    Resolved,
    /// The squad hit its storm limit; this summarizes what was folded.
    StormSummary,
    /// The goalkeeper's handover: the outgoing shift's report.
    Handover,
}

impl NotifyReason {
    pub const ALL: [NotifyReason; 6] = [
        NotifyReason::NewGroup,
        NotifyReason::GroupChanged,
        NotifyReason::Repeat,
        NotifyReason::Resolved,
        NotifyReason::StormSummary,
        NotifyReason::Handover,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyReason::NewGroup => "new_group",
            NotifyReason::GroupChanged => "group_changed",
            NotifyReason::Repeat => "repeat",
            NotifyReason::Resolved => "resolved",
            NotifyReason::StormSummary => "storm_summary",
            NotifyReason::Handover => "handover",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Deterministic: the same notification decided again (after a crash, by a
    /// restored engine) carries the same id, so consumers can drop duplicates.
    #[serde(default)]
    pub id: Arc<str>,
    pub at: Ts,
    pub squad: Arc<str>,
    /// The person on first-line duty for the squad at `at`.
    pub goalkeeper: Option<Arc<str>>,
    /// The group's acknowledgement, if a person acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<crate::control::Ack>,
    pub group_key: Arc<str>,
    pub group_labels: LabelSet,
    pub status: Status,
    pub reason: NotifyReason,
    /// Whether any alert in it belongs to a core service.
    pub core: bool,
    pub alerts: Vec<NotifiedAlert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<Folded>,
    /// A handover's report (reason `handover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<super::shift::HandoverReport>>,
    /// Alerts it tells of beyond those in `alerts` (cut to fit a record on
    /// the way to its squad's storm window: [`DeliveryPart`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
}

impl Notification {
    /// How many alerts it tells of, listed or not.
    pub fn alert_count(&self) -> usize {
        self.alerts.len() + self.omitted as usize
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Inputs a [`DeliveryPart`] carries at most.
pub const DELIVERY_PART_INPUTS: usize = 8192;

/// A notification of a squad with a storm limit, on its way from the engine
/// that flushed the group to the engine that keeps the squad's storm window
/// ([`super::ShiftMode::Routed`]). That engine decides whether it is sent or
/// folded and gives its inputs their fates ([`super::Engine::deliver`]).
/// A notification with many inputs comes in several parts: the first holds
/// the notification, the others only inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryPart {
    /// The notification's id.
    pub id: Arc<str>,
    pub squad: Arc<str>,
    /// In the first part only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// Inputs it decides, each with its alert's fingerprint (at most
    /// [`DELIVERY_PART_INPUTS`]).
    pub inputs: Vec<(InputId, Fingerprint)>,
    /// Whether more parts follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

impl DeliveryPart {
    /// One notification and its inputs, as parts.
    pub fn split(n: Notification, inputs: Vec<(InputId, Fingerprint)>) -> Vec<DeliveryPart> {
        let chunks: Vec<&[(InputId, Fingerprint)]> = if inputs.is_empty() {
            vec![&[]]
        } else {
            inputs.chunks(DELIVERY_PART_INPUTS).collect()
        };
        let last = chunks.len() - 1;
        let mut parts: Vec<DeliveryPart> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| DeliveryPart {
                id: n.id.clone(),
                squad: n.squad.clone(),
                notification: None,
                inputs: c.to_vec(),
                more: i < last,
            })
            .collect();
        parts[0].notification = Some(n);
        parts
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    pub fingerprint: Fingerprint,
    pub status: Status,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: Ts,
    pub ends_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
}

/// What a storm summary folded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Folded {
    pub notifications: u32,
    pub alerts: u32,
    /// Up to ten of the group keys folded, for a first look.
    pub groups: Vec<Arc<str>>,
}

/// The engine writes here; the driver drains it after every call.
#[derive(Debug, Default)]
pub struct Outputs {
    pub fates: Vec<FateRecord>,
    pub notifications: Vec<Notification>,
    /// Digest groups' flushes: collected for the squad's handover, never sent.
    pub digests: Vec<(SquadId, super::shift::DigestUpdate)>,
    /// Notifications for the engine that keeps their squad's storm window
    /// ([`super::ShiftMode::Routed`] only).
    pub deliveries: Vec<DeliveryPart>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.fates.is_empty()
            && self.notifications.is_empty()
            && self.digests.is_empty()
            && self.deliveries.is_empty()
    }

    pub fn clear(&mut self) {
        self.fates.clear();
        self.notifications.clear();
        self.digests.clear();
        self.deliveries.clear();
    }
}
