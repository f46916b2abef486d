//! The glue every driver shares: one input message at a time `now` becomes
//! decoded alerts fed to the engine, and every fate is counted in a [`Ledger`].
//! Replay, tests and the Kafka pipeline all go through [`feed`], so they account
//! for alerts the same way.

use crate::decode::{self, Format, Invalid};
use crate::engine::{Engine, Fate, FateKind, FateRecord, InputId, Outputs};
use crate::model::{Alert, Ts};
use serde::Serialize;
use std::collections::BTreeMap;

/// What one message turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Input alerts counted (an undecodable message counts as one).
    pub alerts: u32,
    pub format: Option<Format>,
}

/// Decodes `message` and feeds its alerts to the engine, numbering them from
/// `first_input`. Invalid alerts get their fate at once; the rest get theirs
/// now or at a later flush, all written to `out`.
pub fn feed(
    engine: &mut Engine,
    message: &[u8],
    now: Ts,
    first_input: InputId,
    out: &mut Outputs,
) -> Fed {
    feed_with(
        engine,
        message,
        now,
        first_input,
        out,
        FeedOptions::default(),
    )
}

/// How input ids are given to a message's alerts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum InputIds {
    /// `first_input`, `first_input + 1`, ...: one id per alert (replay, tests).
    #[default]
    PerAlert,
    /// Every alert carries `first_input` (the Kafka driver counts per message).
    PerMessage,
}

/// Sees each valid alert with its input id (for reports that need labels).
/// Sees each valid alert once, with its input id and the time it is decided at.
pub type Observer<'o> = dyn FnMut(InputId, &Alert<'_>, Ts) + 'o;

/// Options of [`feed_with`].
#[derive(Default)]
pub struct FeedOptions<'o> {
    pub ids: InputIds,
    /// Fates decided on receipt carry the alert's fingerprint (an FNV pass per
    /// alert: for the audit trail and comparisons only).
    pub fingerprints: bool,
    /// Sees every valid alert with its input id before the engine does.
    pub observe: Option<&'o mut Observer<'o>>,
}

/// [`feed`] with options.
pub fn feed_with(
    engine: &mut Engine,
    message: &[u8],
    now: Ts,
    first_input: InputId,
    out: &mut Outputs,
    opts: FeedOptions<'_>,
) -> Fed {
    let decoded = decode::decode(message);
    let fed = feed_decoded(engine, &decoded, now, first_input, out, opts);
    if let Ok(d) = decoded {
        decode::recycle(d);
    }
    fed
}

/// [`feed_with`] for a message already decoded (a driver feeding several
/// engines decodes once).
pub fn feed_decoded(
    engine: &mut Engine,
    decoded: &Result<decode::Decoded<'_>, Invalid>,
    now: Ts,
    first_input: InputId,
    out: &mut Outputs,
    mut opts: FeedOptions<'_>,
) -> Fed {
    let invalid =
        |out: &mut Outputs, input, reason: Invalid| out.fates.push(invalid_fate(input, reason));
    match decoded {
        Err(reason) => {
            invalid(out, first_input, reason.clone());
            Fed {
                alerts: 1,
                format: None,
            }
        }
        Ok(decoded) => {
            for (i, alert) in decoded.alerts.iter().enumerate() {
                let input = match opts.ids {
                    InputIds::PerAlert => first_input + i as InputId,
                    InputIds::PerMessage => first_input,
                };
                match alert {
                    Ok(a) => {
                        if let Some(observe) = opts.observe.as_mut() {
                            observe(input, a, now);
                        }
                        let before = out.fates.len();
                        engine.receive(input, a, now, out);
                        if opts.fingerprints {
                            for f in &mut out.fates[before..] {
                                f.fingerprint.get_or_insert_with(|| a.fingerprint());
                            }
                        }
                    }
                    Err(reason) => invalid(out, input, reason.clone()),
                }
            }
            Fed {
                alerts: decoded.alerts.len() as u32,
                format: Some(decoded.format),
            }
        }
    }
}

/// The fate of an input that is invalid for `reason`.
pub fn invalid_fate(input: InputId, reason: Invalid) -> FateRecord {
    FateRecord {
        input,
        squad: NO_SQUAD,
        fingerprint: None,
        fate: Fate::Invalid { reason },
    }
}

/// Invalid alerts have no owner; they are recorded against no squad.
pub const NO_SQUAD: crate::rules::SquadId = crate::rules::SquadId::MAX;

/// Counts of fates and notifications: the accounting every driver reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Ledger {
    pub received: u64,
    pub fates: BTreeMap<FateKind, u64>,
    pub notifications: u64,
    /// Handover reports (not counted as notifications: they page no one).
    #[serde(default)]
    pub reports: u64,
    pub squads: BTreeMap<String, SquadCounts>,
    /// Fates by the rule or silence responsible: `dropped/drop-info`, `invalid/not_json`.
    pub causes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SquadCounts {
    pub notifications: u64,
    /// Input alerts owned by the squad.
    pub alerts: u64,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            fates: FateKind::ALL.iter().map(|k| (*k, 0)).collect(),
            ..Ledger::default()
        }
    }

    /// Counts the outputs of one engine call. `engine` names the squads.
    pub fn record(&mut self, engine: &Engine, out: &Outputs) {
        let rules = engine.rules();
        // Counted here first, then added once per kind and squad: the maps
        // are keyed by name, and a call's fates mostly share a few squads.
        let mut kinds = [0u64; FateKind::ALL.len()];
        let mut squads: Vec<(usize, u64)> = Vec::new();
        let mut causes: Vec<(FateKind, &str, u64)> = Vec::new();
        for f in &out.fates {
            let kind = f.fate.kind();
            kinds[kind as usize] += 1;
            if let Some(cause) = f.fate.cause() {
                match causes
                    .iter_mut()
                    .find(|(k, c, _)| *k == kind && *c == cause)
                {
                    Some((_, _, n)) => *n += 1,
                    None => causes.push((kind, cause, 1)),
                }
            }
            let sid = f.squad as usize;
            if sid < rules.squads.len() {
                match squads.iter_mut().find(|(s, _)| *s == sid) {
                    Some((_, n)) => *n += 1,
                    None => squads.push((sid, 1)),
                }
            }
        }
        for (kind, n) in FateKind::ALL.iter().zip(kinds) {
            if n > 0 {
                *self.fates.entry(*kind).or_default() += n;
            }
        }
        for (sid, n) in squads {
            self.squad(&rules.squads[sid].name).alerts += n;
        }
        // One buffer for the causes' names: most are counted before.
        let mut cause_name = String::new();
        for (kind, cause, n) in causes {
            cause_name.clear();
            cause_name.push_str(kind.as_str());
            cause_name.push('/');
            cause_name.push_str(cause);
            match self.causes.get_mut(cause_name.as_str()) {
                Some(c) => *c += n,
                None => {
                    self.causes.insert(cause_name.clone(), n);
                }
            }
        }
        for n in &out.notifications {
            if n.report.is_some() {
                self.reports += 1;
                continue;
            }
            self.notifications += 1;
            self.squad(&n.squad).notifications += 1;
        }
    }

    fn squad(&mut self, name: &str) -> &mut SquadCounts {
        if !self.squads.contains_key(name) {
            self.squads.insert(name.to_owned(), SquadCounts::default());
        }
        self.squads.get_mut(name).expect("just inserted")
    }

    pub fn decided(&self) -> u64 {
        self.fates.values().sum()
    }

    /// 1 - notifications / received: the share of input alerts that paged no one.
    pub fn noise_reduction(&self) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            1.0 - self.notifications as f64 / self.received as f64
        }
    }
}
