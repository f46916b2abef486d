//! The route stage: an input message, from any producer with any key, becomes
//! repartition records, one per task that owns some of its alerts (the task is
//! chosen by the alert's group key, so every message of a group meets the same
//! engine). Inhibition sources are not its business: the task that owns an
//! alert publishes its source entries to the shared sources table.
//! Undecodable messages and invalid alerts get their fate here and go to the
//! dead-letter topic. It must not decide any other fate.
//! At commit it also routes the engines' shift notes to the task that keeps
//! each squad's book (the repartition partition of the squad's name); as they
//! are decided, notifications of squads with a storm limit go to the same task,
//! which keeps the squad's storm window.

use super::Core;
use super::lane::{Batch, MARKER_BODY, Routing, marker_value};
use super::produce::{Kind, Record};
use super::topology::Topology;
use super::topology::{
    MARKER, ROLE, ROLE_ALERTS, ROLE_DELIVERY, ROLE_MARKER, ROLE_SHIFT, SOURCE_OFFSET,
    SOURCE_PARTITION, SOURCE_TIMESTAMP, SOURCE_TOPIC,
};
use crate::decode::{self, Invalid};
use crate::engine::{DeliveryPart, Fate, FateRecord, ShiftNote};
use crate::ingest::NO_SQUAD;
use crate::model::{Alert, Status, Ts};
use crate::rules::RuleSet;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the route stage makes of one input message, computed without the
/// processing state (so on any thread): [`plan`], then [`Core::routed`].
pub(super) struct Routed {
    /// The message's format; `None` when it does not decode at all.
    format: Option<crate::decode::Format>,
    /// Alerts the message holds (an undecodable message counts as one).
    alerts: u32,
    /// Valid alerts routed to a task (not counting oversized ones).
    routed: u64,
    invalid: Vec<Invalid>,
    /// Each task's records.
    batches: BTreeMap<i32, Vec<Vec<u8>>>,
}

impl Routed {
    /// The bytes of the repartition records planned.
    pub(super) fn record_bytes(&self) -> usize {
        self.batches.values().flatten().map(Vec::len).sum()
    }

    /// A message that cannot be routed at all: one invalid input.
    fn unusable(reason: Invalid) -> Routed {
        Routed {
            format: None,
            alerts: 1,
            routed: 0,
            invalid: vec![reason],
            batches: BTreeMap::new(),
        }
    }
}

/// Decodes an input message and cuts it into its tasks' repartition records.
///
/// A panic on the way (a bug in squadron, never the input's fault) makes the
/// message invalid (`internal`) and dead-lettered, instead of stopping the
/// loop on it again after every restart: the message is the one input every
/// instance of the group would otherwise crash on. Only this stage is
/// guarded: it reads nothing but the payload and the rules, so a panic leaves
/// no state half-changed. A panic while deciding (engine state) still ends
/// the process, and the restart restores the state from the changelog.
pub(super) fn plan(payload: &[u8], rules: &RuleSet, topo: &Topology, now: Ts) -> Routed {
    guarded(|| plan_unguarded(payload, rules, topo, now))
}

fn guarded(plan: impl FnOnce() -> Routed) -> Routed {
    // Unwind safety: `plan` only reads what it borrows and builds its result.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(plan)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        tracing::error!(
            panic = what,
            "squadron failed on an input message; dead-lettered as internal"
        );
        Routed::unusable(Invalid::new(
            crate::decode::InvalidKind::Internal,
            format!(
                "squadron failed on this message ({what}); please report it with the dead letter"
            ),
        ))
    })
}

fn plan_unguarded(payload: &[u8], rules: &RuleSet, topo: &Topology, now: Ts) -> Routed {
    let mut invalid: Vec<Invalid> = Vec::new();
    let decoded = match decode::decode(payload) {
        Err(reason) => return Routed::unusable(reason),
        Ok(decoded) => decoded,
    };
    // Each valid alert's task.
    let mut owners: Vec<(usize, i32)> = Vec::with_capacity(decoded.alerts.len());
    for (i, alert) in decoded.alerts.iter().enumerate() {
        let a = match alert {
            Ok(a) => a,
            Err(reason) => {
                invalid.push(reason.clone());
                continue;
            }
        };
        let owner = rules.owner(&a.labels);
        let p = topo.partition_for(rules.group_hash(owner.squad, &a.labels));
        owners.push((i, p));
    }
    // Each task's alerts, in records of at most REPARTITION_BYTES (the
    // broker takes 1 MB by default): a message of any size gets through.
    let mut batches: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut oversized = 0u64;
    match owners.first() {
        // One task owns every alert of a valid message: it gets the bytes as they came.
        Some(&(_, p))
            if invalid.is_empty()
                && payload.len() <= REPARTITION_BYTES
                && owners.iter().all(|(_, q)| *q == p) =>
        {
            batches.insert(p, vec![payload.to_vec()]);
        }
        _ => {
            let room = (payload.len() / decoded.alerts.len().max(1) + 64) * 8;
            // A Prometheus batch's alerts pass on as they came (the decide
            // stage decodes them as this stage did); other formats carry a
            // status that is written into `endsAt`, so they are encoded again.
            let verbatim = (decoded.format == decode::Format::PrometheusBatch)
                .then(|| decode::array_elements(payload))
                .flatten()
                .filter(|e| e.len() == decoded.alerts.len());
            for &(i, p) in &owners {
                let a = decoded.alerts[i].as_ref().expect("valid");
                let chunks = batches.entry(p).or_default();
                if chunks.last().is_none_or(|c| c.len() >= REPARTITION_BYTES) {
                    chunks.push(Vec::with_capacity(room.min(REPARTITION_BYTES)));
                }
                let buf = chunks.last_mut().expect("pushed");
                let before = buf.len();
                match &verbatim {
                    Some(elements) => {
                        buf.push(if buf.is_empty() { b'[' } else { b',' });
                        buf.extend_from_slice(elements[i]);
                    }
                    None => append(buf, a, now),
                }
                if buf.len() - before > REPARTITION_BYTES {
                    // One alert larger than a record may be: invalid, with its size.
                    let size = buf.len() - before;
                    buf.truncate(before);
                    if buf.is_empty() {
                        chunks.pop();
                    }
                    invalid.push(crate::decode::Invalid {
                        kind: crate::decode::InvalidKind::TooLarge,
                        detail: format!(
                            "alert {i}: {size} bytes, over the {REPARTITION_BYTES} an alert may have"
                        ),
                    });
                    oversized += 1;
                }
            }
            for body in batches.values_mut().flatten() {
                body.push(b']');
            }
        }
    }
    let routed = Routed {
        format: Some(decoded.format),
        alerts: decoded.alerts.len() as u32,
        routed: owners.len() as u64 - oversized,
        invalid,
        batches,
    };
    decode::recycle(decoded);
    routed
}

impl Core {
    /// Produces what [`plan`] made of an input message: its alerts go to
    /// their tasks (through the repartition topic, or kept in `direct` for a
    /// task of this instance whose lane is open, see [`super::lane`]), and
    /// the dead letter and fates of what was invalid.
    pub(super) fn routed(
        &mut self,
        m: &BorrowedMessage<'_>,
        routed: Routed,
        now: Ts,
        direct: &mut BTreeMap<i32, Vec<Batch>>,
    ) {
        let Routed {
            format,
            alerts,
            routed,
            invalid,
            batches,
        } = routed;
        let origin = self
            .topo
            .input_id(m.topic(), m.partition(), m.offset())
            .unwrap_or(0);
        self.summary.messages += 1;
        self.summary.received += alerts as u64;
        self.metrics.received(format, alerts);
        self.metrics.stage_alerts[0].inc_by(routed);
        let topic: Arc<str> = match self.topo.inputs.iter().find(|t| ***t == *m.topic()) {
            Some(t) => t.clone(),
            None => m.topic().into(),
        };
        for (p, body) in batches
            .into_iter()
            .flat_map(|(p, chunks)| chunks.into_iter().map(move |c| (p, c)))
        {
            let batch = Batch {
                body,
                input: origin,
                topic: topic.clone(),
                partition: m.partition(),
                offset: m.offset(),
                // The input's broker timestamp, for the decide stage's latency
                // histogram. A header on the way, not the record's timestamp:
                // the broker may refuse odd timestamps.
                source: m.timestamp().to_millis().map(Ts),
            };
            let Some(task) = self.tasks.get_mut(&p) else {
                self.metrics.routed_batches[Path::Topic as usize].inc();
                let record = self.alerts_record(p, batch);
                self.out.send(record);
                continue;
            };
            match task.lane.route(batch, &mut self.markers) {
                Routing::Decide(batch) => {
                    self.metrics.routed_batches[Path::Direct as usize].inc();
                    direct.entry(p).or_default().push(batch);
                }
                Routing::Mark(marker) => {
                    self.metrics.routed_batches[Path::Held as usize].inc();
                    let record = self.marker_record(p, marker);
                    self.out.send(record);
                    if self.cfg.pipeline.processing_guarantee == super::Guarantee::ExactlyOnce {
                        self.commit_soon = true;
                    }
                }
                Routing::Held => self.metrics.routed_batches[Path::Held as usize].inc(),
            }
        }
        if invalid.is_empty() {
            return;
        }
        let record = dead_letter(
            m,
            &invalid[0],
            invalid.len(),
            alerts,
            now,
            &self.cfg.kafka.dead_letter_topic,
        );
        for reason in invalid {
            self.outputs.fates.push(FateRecord {
                input: origin,
                squad: NO_SQUAD,
                fingerprint: None,
                fate: Fate::Invalid { reason },
            });
        }
        self.emit(vec![record], now);
    }
}

/// Which way a batch of alerts went to its task (`squadron_routed_batches_total`).
#[derive(Clone, Copy)]
pub(crate) enum Path {
    /// Through the repartition topic.
    Topic,
    /// Decided at once by a task of this instance.
    Direct,
    /// Held by a task of this instance until its lane's marker is back.
    Held,
}

impl Path {
    pub(crate) const ALL: [&str; 3] = ["topic", "direct", "held"];
}

impl Core {
    /// A batch of alerts as a repartition record for task `p`.
    fn alerts_record(&self, p: i32, b: Batch) -> Record {
        Record {
            kind: Kind::Repartition,
            topic: self.topo.repartition.clone(),
            partition: Some(p),
            key: None,
            payload: Some(b.body),
            headers: vec![
                (ROLE, ROLE_ALERTS.to_vec()),
                (SOURCE_TOPIC, b.topic.as_bytes().to_vec()),
                (SOURCE_PARTITION, b.partition.to_string().into_bytes()),
                (SOURCE_OFFSET, b.offset.to_string().into_bytes()),
                (
                    SOURCE_TIMESTAMP,
                    b.source
                        .map(|t| t.millis().to_string().into_bytes())
                        .unwrap_or_default(),
                ),
            ],
        }
    }

    /// Lane marker `marker` of this run, for task `p`'s partition.
    fn marker_record(&self, p: i32, marker: u64) -> Record {
        Record {
            kind: Kind::Repartition,
            topic: self.topo.repartition.clone(),
            partition: Some(p),
            key: None,
            payload: Some(MARKER_BODY.to_vec()),
            headers: vec![
                (ROLE, ROLE_MARKER.to_vec()),
                (MARKER, marker_value(self.run, marker)),
            ],
        }
    }

    /// Before a commit, or when too many are held: batches still held behind
    /// a marker go through the topic, each lane's followed by a new marker
    /// ([`super::lane`]).
    pub(super) fn flush_lanes(&mut self) {
        let markers = &mut self.markers;
        let flushed: Vec<(i32, Vec<Batch>, u64)> = self
            .tasks
            .iter_mut()
            .filter_map(|(&p, task)| {
                let (held, marker) = task.lane.at_commit(markers)?;
                Some((p, held, marker))
            })
            .collect();
        for (p, held, marker) in flushed {
            for b in held {
                let record = self.alerts_record(p, b);
                self.out.send(record);
            }
            let record = self.marker_record(p, marker);
            self.out.send(record);
        }
    }
}

/// Shift notes records are cut after this many bytes.
const SHIFT_RECORD_BYTES: usize = 256 * 1024;

impl Core {
    /// Every engine's shift notes since the last call, as records for the task
    /// that keeps each squad's book (made at commit: in the same commit as the
    /// steps that wrote them); counts pages.
    pub(super) fn route_shift_notes(&mut self, records: &mut Vec<Record>) {
        let mut by_task: std::collections::BTreeMap<i32, Vec<ShiftNote>> = Default::default();
        for task in self.tasks.values_mut() {
            for n in task.engine.take_shift_notes() {
                self.metrics.pages(&n.squad, &n.noise);
                by_task
                    .entry(self.topo.partition_for_squad(&n.squad))
                    .or_default()
                    .push(n);
            }
        }
        for (p, notes) in by_task {
            // In records the broker takes: a note holds at most a few hundred
            // kilobytes (digest alerts are capped), so a record never grows past
            // one note beyond the limit.
            let mut body = Vec::new();
            for (i, n) in notes.iter().enumerate() {
                body.push(if body.is_empty() { b'[' } else { b',' });
                serde_json::to_writer(&mut body, n).expect("notes serialize");
                if body.len() >= SHIFT_RECORD_BYTES || i + 1 == notes.len() {
                    body.push(b']');
                    records.push(Record {
                        kind: Kind::Repartition,
                        topic: self.topo.repartition.clone(),
                        partition: Some(p),
                        key: None,
                        payload: Some(std::mem::take(&mut body)),
                        headers: vec![(ROLE, ROLE_SHIFT.to_vec())],
                    });
                }
            }
        }
    }
}

impl Core {
    /// A notification on its way to the task that keeps its squad's storm
    /// window. Its alerts are cut to fit what the broker takes (counted in
    /// `omitted`); the inputs of a part always fit
    /// ([`crate::engine::DELIVERY_PART_INPUTS`]).
    pub(super) fn delivery_record(&self, mut part: DeliveryPart) -> Record {
        let mut payload = serde_json::to_vec(&part).expect("deliveries serialize");
        if let Some(n) = part
            .notification
            .as_mut()
            .filter(|_| payload.len() > REPARTITION_BYTES)
        {
            // Room for the count's digits, too.
            let mut excess = payload.len() - REPARTITION_BYTES + 16;
            while excess > 0 {
                let Some(a) = n.alerts.pop() else { break };
                let size = serde_json::to_vec(&a).expect("alerts serialize").len() + 1;
                excess = excess.saturating_sub(size);
                n.omitted += 1;
            }
            payload = serde_json::to_vec(&part).expect("deliveries serialize");
        }
        Record {
            kind: Kind::Repartition,
            topic: self.topo.repartition.clone(),
            partition: Some(self.topo.partition_for_squad(&part.squad)),
            key: None,
            payload: Some(payload),
            headers: vec![(ROLE, ROLE_DELIVERY.to_vec())],
        }
    }
}

/// The largest repartition record the route stage writes (the broker's and
/// librdkafka's default limit is 1 MB); a larger message is split.
const REPARTITION_BYTES: usize = 900_000;

/// Appends `a` to a JSON array being built, as a Prometheus alert. An explicit
/// status (webhook formats) is carried by `endsAt`, as Alertmanager does:
/// resolved ends at the latest now; firing has no past end.
fn append(buf: &mut Vec<u8>, a: &Alert<'_>, now: Ts) {
    buf.push(if buf.is_empty() { b'[' } else { b',' });
    let ends_at = match a.status {
        Some(Status::Resolved) => Some(a.ends_at.map_or(now, |e| e.min(now))),
        Some(Status::Firing) => a.ends_at.filter(|e| *e > now),
        None => a.ends_at,
    };
    let wire = Wire {
        labels: Pairs(&a.labels),
        annotations: Pairs(&a.annotations),
        starts_at: a.starts_at,
        ends_at,
        generator_url: a.generator_url.as_deref(),
    };
    serde_json::to_writer(&mut *buf, &wire).expect("alerts serialize");
}

#[derive(serde::Serialize)]
struct Wire<'a> {
    labels: Pairs<'a>,
    annotations: Pairs<'a>,
    #[serde(rename = "startsAt", skip_serializing_if = "Option::is_none")]
    starts_at: Option<Ts>,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    ends_at: Option<Ts>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

struct Pairs<'a>(&'a [(Cow<'a, str>, Cow<'a, str>)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The message, verbatim, with why and where it came from.
fn dead_letter(
    m: &BorrowedMessage<'_>,
    reason: &Invalid,
    invalid: usize,
    alerts: u32,
    now: Ts,
    topic: &str,
) -> Record {
    let mut headers = vec![
        ("squadron.reason", reason.to_string().into_bytes()),
        (
            "squadron.reason.kind",
            reason.kind.as_str().as_bytes().to_vec(),
        ),
        (SOURCE_TOPIC, m.topic().as_bytes().to_vec()),
        (SOURCE_PARTITION, m.partition().to_string().into_bytes()),
        (SOURCE_OFFSET, m.offset().to_string().into_bytes()),
        ("squadron.time", now.to_string().into_bytes()),
        (
            "squadron.invalid.alerts",
            format!("{invalid}/{alerts}").into_bytes(),
        ),
    ];
    if let Some(h) = m.headers() {
        for header in h.iter() {
            if header.key == "content-type" {
                headers.push((
                    "squadron.source.content-type",
                    header.value.unwrap_or_default().to_vec(),
                ));
            }
        }
    }
    Record {
        kind: Kind::DeadLetter,
        topic: topic.to_owned(),
        partition: None,
        key: m.key().map(<[u8]>::to_vec),
        payload: Some(m.payload().unwrap_or_default().to_vec()),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while routing becomes one invalid input with its message,
    /// whatever the panic carried.
    #[test]
    fn a_panic_while_routing_makes_the_message_invalid() {
        let with_text = guarded(|| panic!("index {} out of range", 7));
        let with_str = guarded(|| std::panic::panic_any("static text"));
        let with_other = guarded(|| std::panic::panic_any(42u8));
        for (routed, says) in [
            (with_text, "index 7 out of range"),
            (with_str, "static text"),
            (with_other, "a panic without a message"),
        ] {
            assert_eq!((routed.format, routed.alerts, routed.routed), (None, 1, 0));
            assert!(routed.batches.is_empty());
            let [reason] = &routed.invalid[..] else {
                panic!("{:?}", routed.invalid)
            };
            assert_eq!(reason.kind, crate::decode::InvalidKind::Internal);
            assert!(reason.detail.contains(says), "{}", reason.detail);
        }
        // Without a panic, the plan is what the route stage made.
        let fine =
            guarded(|| Routed::unusable(Invalid::new(crate::decode::InvalidKind::NotJson, "x")));
        assert_eq!(fine.invalid[0].kind, crate::decode::InvalidKind::NotJson);
    }

    /// A batch cut between tasks: each task's records hold exactly its alerts,
    /// as decoded from the message, in the message's order; a Prometheus
    /// batch's alerts pass on as written, other formats are encoded again.
    #[test]
    fn a_batch_cut_between_tasks_loses_and_changes_no_alert() {
        let rules = crate::rules::load_dir(std::path::Path::new("rules")).unwrap();
        let topo = Topology {
            inputs: vec!["in".into()],
            repartition: "r".into(),
            changelog: "c".into(),
            sources: "s".into(),
            partitions: 12,
        };
        let now = Ts::parse_rfc3339("2026-11-28T10:00:00Z").unwrap().unwrap();
        let alert = |i: usize| {
            format!(
                r#"{{"labels":{{"alertname":"Cut{i}","service":"checkout","instance":"h{i}","severity":"warning"}},"annotations":{{"s":"[\"{i}\"]"}},"startsAt":"2026-11-28T09:00:00Z","extra":{{"n":[{i}]}}}}"#
            )
        };
        let alerts: Vec<String> = (0..40).map(alert).collect();
        let prometheus = format!("[ {} ]", alerts.join(" ,\n"));
        let webhook = format!(
            r#"{{"version":"4","status":"firing","alerts":[{}]}}"#,
            alerts
                .iter()
                .map(|a| a.replacen('{', r#"{"status":"resolved","#, 1))
                .collect::<Vec<_>>()
                .join(",")
        );
        for (payload, verbatim) in [(prometheus, true), (webhook, false)] {
            let routed = plan(payload.as_bytes(), &rules, &topo, now);
            assert!(routed.invalid.is_empty(), "{:?}", routed.invalid);
            assert!(routed.batches.len() > 1, "the alerts fall to several tasks");
            let mut seen = Vec::new();
            for (p, records) in &routed.batches {
                let mut last = None;
                for r in records {
                    let text = std::str::from_utf8(r).unwrap();
                    assert_eq!(text.contains(r#""extra":{"n":["#), verbatim, "{text}");
                    for a in decode::decode(r).unwrap().alerts {
                        let a = a.unwrap();
                        let owner = rules.owner(&a.labels);
                        assert_eq!(
                            topo.partition_for(rules.group_hash(owner.squad, &a.labels)),
                            *p
                        );
                        assert_eq!(a.annotations.len(), 1);
                        if !verbatim {
                            assert_eq!(a.ends_at, Some(now), "a resolve carries its end");
                        }
                        let name = a
                            .labels
                            .iter()
                            .find(|l| l.0 == "alertname")
                            .unwrap()
                            .1
                            .to_string();
                        let n: usize = name["Cut".len()..].parse().unwrap();
                        assert!(last < Some(n), "in the message's order");
                        last = Some(n);
                        seen.push(name);
                    }
                }
            }
            seen.sort();
            let mut want: Vec<String> = (0..40).map(|i| format!("Cut{i}")).collect();
            want.sort();
            assert_eq!(seen, want, "every alert once");
        }
    }
}
