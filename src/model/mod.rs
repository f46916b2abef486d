//! The vocabulary every stage shares: time, label sets, fingerprints, alerts.
//! Nothing here performs I/O or knows which wire format an alert came in.

mod alert;
mod labels;
mod time;

pub use alert::{Alert, Status};
pub use labels::{AlertKey, Fingerprint, FnvHasher, LabelPairs, LabelSet, Labels, StrMap};
pub use time::{TimeError, Ts, format_duration, parse_duration};
