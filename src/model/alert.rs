//! A decoded alert, borrowing from the message it came in.

use super::{Fingerprint, LabelPairs, Labels, Ts};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert as decoded from any supported format. Labels and annotations are
/// sorted by name with unique names.
#[derive(Debug, Clone)]
pub struct Alert<'a> {
    pub labels: LabelPairs<'a>,
    pub annotations: LabelPairs<'a>,
    pub starts_at: Option<Ts>,
    pub ends_at: Option<Ts>,
    pub generator_url: Option<Cow<'a, str>>,
    /// An explicit status, as Alertmanager webhook payloads carry. Prometheus
    /// alerts have none: their status follows from `ends_at`.
    pub status: Option<Status>,
}

impl Alert<'_> {
    /// Alertmanager's fingerprint of the labels (computed on demand: FNV is slow).
    pub fn fingerprint(&self) -> Fingerprint {
        self.labels.fingerprint()
    }

    /// An alert is resolved when it says so, or when its `endsAt` is at or before
    /// the time it was received (Alertmanager's rule).
    pub fn status_at(&self, received: Ts) -> Status {
        match (self.status, self.ends_at) {
            (Some(s), _) => s,
            (None, Some(end)) if end <= received => Status::Resolved,
            _ => Status::Firing,
        }
    }
}
