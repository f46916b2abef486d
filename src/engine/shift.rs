//! A squad's shift, from one goalkeeper handover to the next: what was paged,
//! what went to the digest instead, and the noise figures. Sans-IO, like the
//! rest of the engine.
//!
//! Every engine step tallies what it decided per squad into a [`ShiftNote`].
//! A squad's notes must all reach one [`Book`], wherever its groups were
//! decided: replay and rule tests keep the books in the one engine
//! ([`ShiftMode::Local`]); the Kafka pipeline sends each note to the task that
//! owns the squad's book, through the repartition topic keyed by squad
//! ([`ShiftMode::Routed`]). At the handover the book becomes a
//! [`HandoverReport`], delivered like a notification to the incoming
//! goalkeeper, and a new book starts with what is still firing.

use super::output::{Notification, NotifyReason};
use crate::control::{Ack, Controls};
use crate::model::{Fingerprint, LabelSet, Labels, Status, Ts};
use crate::rules::Silence;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where an engine's shift notes go.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ShiftMode {
    /// No books, no handover reports (benchmarks, property tests).
    #[default]
    Off,
    /// This engine keeps every squad's book (one engine sees everything).
    Local,
    /// Notes are handed to the driver ([`super::Engine::take_shift_notes`]),
    /// which delivers each to the engine that keeps the squad's book
    /// ([`super::Engine::observe_shift`]).
    Routed,
}

/// Pages listed in one report at most (all are counted).
pub const MAX_PAGES: usize = 200;
/// Alerts listed per digest group at most (all are counted).
pub const MAX_DIGEST_ALERTS: usize = 50;

/// Input alerts of one squad by fate, and what was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Noise {
    pub received: u64,
    pub notified: u64,
    pub deduplicated: u64,
    pub dropped: u64,
    pub silenced: u64,
    pub inhibited: u64,
    pub digested: u64,
    pub flapping: u64,
    pub throttled: u64,
    pub shed: u64,
    /// Notifications sent to the squad (pages, resolves, storm summaries).
    pub notifications: u64,
    /// Firing notifications of groups: each one interrupted the goalkeeper.
    pub pages: u64,
    /// Pages outside the goalkeeper's `working_hours`.
    pub pages_out_of_hours: u64,
}

impl Noise {
    pub fn count(&mut self, fate: super::FateKind) {
        use super::FateKind as K;
        self.received += 1;
        let n = match fate {
            K::Notified => &mut self.notified,
            K::Deduplicated => &mut self.deduplicated,
            K::Dropped => &mut self.dropped,
            K::Silenced => &mut self.silenced,
            K::Inhibited => &mut self.inhibited,
            K::Digested => &mut self.digested,
            K::Flapping => &mut self.flapping,
            K::Throttled => &mut self.throttled,
            K::Shed => &mut self.shed,
            K::Invalid => return,
        };
        *n += 1;
    }

    fn add(&mut self, o: &Noise) {
        self.received += o.received;
        self.notified += o.notified;
        self.deduplicated += o.deduplicated;
        self.dropped += o.dropped;
        self.silenced += o.silenced;
        self.inhibited += o.inhibited;
        self.digested += o.digested;
        self.flapping += o.flapping;
        self.throttled += o.throttled;
        self.shed += o.shed;
        self.notifications += o.notifications;
        self.pages += o.pages;
        self.pages_out_of_hours += o.pages_out_of_hours;
    }
}

/// What one engine step decided for one squad.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShiftNote {
    pub squad: Arc<str>,
    pub at: Ts,
    #[serde(default)]
    pub noise: Noise,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<Page>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digest: Vec<DigestUpdate>,
    /// Silences that held alerts of the squad.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silences: Vec<Arc<str>>,
}

impl ShiftNote {
    /// Cuts a note into notes of bounded size (a few hundred kilobytes as
    /// JSON), for records the broker takes. The figures go with the first.
    pub fn split(mut self) -> Vec<ShiftNote> {
        const PAGES: usize = 200;
        const DIGESTS: usize = 16;
        if self.pages.len() <= PAGES && self.digest.len() <= DIGESTS {
            return vec![self];
        }
        let mut out = Vec::new();
        let (mut pages, mut digest) = (
            std::mem::take(&mut self.pages).into_iter(),
            std::mem::take(&mut self.digest).into_iter(),
        );
        loop {
            let mut n = ShiftNote {
                squad: self.squad.clone(),
                at: self.at,
                ..ShiftNote::default()
            };
            if out.is_empty() {
                n.noise = std::mem::take(&mut self.noise);
                n.silences = std::mem::take(&mut self.silences);
            }
            n.pages.extend(pages.by_ref().take(PAGES));
            n.digest.extend(digest.by_ref().take(DIGESTS));
            if n.is_empty() {
                return out;
            }
            out.push(n);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.noise == Noise::default()
            && self.pages.is_empty()
            && self.digest.is_empty()
            && self.silences.is_empty()
    }
}

/// Whether a notification interrupts the goalkeeper (counts as a page): a
/// group's firing notification, not a resolve, a storm summary or a report.
pub fn interrupts(reason: NotifyReason, status: Status) -> bool {
    status == Status::Firing
        && matches!(
            reason,
            NotifyReason::NewGroup | NotifyReason::GroupChanged | NotifyReason::Repeat
        )
}

/// A notification sent for a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub at: Ts,
    pub group_key: Arc<str>,
    pub group_labels: LabelSet,
    pub reason: NotifyReason,
    pub status: Status,
    pub alerts: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub core: bool,
    /// The earliest start of its firing alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<Ts>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_hours: bool,
}

impl Page {
    pub fn of(n: &Notification, out_of_hours: bool) -> Page {
        Page {
            at: n.at,
            group_key: n.group_key.clone(),
            group_labels: n.group_labels.clone(),
            reason: n.reason,
            status: n.status,
            alerts: n.alerts.len() as u32,
            core: n.core,
            firing_since: n
                .alerts
                .iter()
                .filter(|a| a.status == Status::Firing)
                .map(|a| a.starts_at)
                .min(),
            out_of_hours,
        }
    }

    /// A page interrupts: a group's firing notification.
    pub fn interrupts(&self) -> bool {
        interrupts(self.reason, self.status)
    }
}

/// A digest group's flush: the state of its alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestUpdate {
    pub at: Ts,
    pub group_key: Arc<str>,
    pub group_labels: LabelSet,
    pub rule: Arc<str>,
    /// At most [`MAX_DIGEST_ALERTS`].
    pub alerts: Vec<DigestAlert>,
    /// Alerts of the flush not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestAlert {
    pub fingerprint: Fingerprint,
    pub name: Box<str>,
    pub status: Status,
    pub starts_at: Ts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Box<str>>,
}

impl DigestUpdate {
    pub fn of(n: &Notification, rule: Arc<str>) -> DigestUpdate {
        DigestUpdate {
            at: n.at,
            group_key: n.group_key.clone(),
            group_labels: n.group_labels.clone(),
            rule,
            more: n.alerts.len().saturating_sub(MAX_DIGEST_ALERTS) as u32,
            alerts: n
                .alerts
                .iter()
                .take(MAX_DIGEST_ALERTS)
                .map(|a| DigestAlert {
                    fingerprint: a.fingerprint,
                    name: a.labels.get("alertname").unwrap_or("").into(),
                    status: a.status,
                    starts_at: a.starts_at,
                    ends_at: a.ends_at,
                    summary: a.annotations.get("summary").map(Into::into),
                    link: a
                        .generator_url
                        .clone()
                        .or_else(|| a.annotations.get("runbook_url").map(Into::into)),
                })
                .collect(),
        }
    }
}

/// A group paged during the shift (or still firing from an earlier one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PagedGroup {
    pub labels: LabelSet,
    /// Pages in this shift.
    pub pages: u32,
    /// Pages in this shift that told something new (not repeats).
    #[serde(default)]
    pub news: u32,
    pub last_page: Ts,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<Ts>,
}

/// One alert of a digest group, over the shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestLine {
    pub fingerprint: Fingerprint,
    pub name: Box<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Box<str>>,
    /// Times it started firing during the shift.
    pub fired: u32,
    /// Milliseconds it fired during the shift, up to its last resolve.
    pub firing_ms: u64,
    /// Firing now, since then (counted from the shift's start at the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<Ts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestGroup {
    pub labels: LabelSet,
    pub rule: Arc<str>,
    pub alerts: Vec<DigestLine>,
    /// Alerts beyond [`MAX_DIGEST_ALERTS`], not listed.
    #[serde(default)]
    pub more: u32,
}

/// A squad's shift so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pub start: Ts,
    /// The handover that ends it.
    pub end: Ts,
    pub noise: Noise,
    pub pages: Vec<Page>,
    pub groups: BTreeMap<Arc<str>, PagedGroup>,
    pub digest: BTreeMap<Arc<str>, DigestGroup>,
    pub silences: BTreeSet<Arc<str>>,
}

impl Book {
    pub fn new(start: Ts, end: Ts) -> Book {
        Book {
            start,
            end,
            noise: Noise::default(),
            pages: Vec::new(),
            groups: BTreeMap::new(),
            digest: BTreeMap::new(),
            silences: BTreeSet::new(),
        }
    }

    pub fn observe(&mut self, note: &ShiftNote) {
        self.noise.add(&note.noise);
        for p in &note.pages {
            if p.interrupts() && self.pages.len() < MAX_PAGES {
                self.pages.push(p.clone());
            }
            let g = self
                .groups
                .entry(p.group_key.clone())
                .or_insert_with(|| PagedGroup {
                    labels: p.group_labels.clone(),
                    pages: 0,
                    news: 0,
                    last_page: p.at,
                    status: p.status,
                    firing_since: None,
                });
            if p.interrupts() {
                g.pages += 1;
                g.news += (p.reason != NotifyReason::Repeat) as u32;
            }
            g.last_page = g.last_page.max(p.at);
            g.status = p.status;
            g.firing_since = p.firing_since;
        }
        for d in &note.digest {
            let g = self
                .digest
                .entry(d.group_key.clone())
                .or_insert_with(|| DigestGroup {
                    labels: d.group_labels.clone(),
                    rule: d.rule.clone(),
                    alerts: Vec::new(),
                    more: 0,
                });
            for a in &d.alerts {
                let line = match g
                    .alerts
                    .iter_mut()
                    .position(|l| l.fingerprint == a.fingerprint)
                {
                    Some(i) => &mut g.alerts[i],
                    None if g.alerts.len() >= MAX_DIGEST_ALERTS => {
                        g.more += 1;
                        continue;
                    }
                    None => {
                        g.alerts.push(DigestLine {
                            fingerprint: a.fingerprint,
                            name: a.name.clone(),
                            summary: a.summary.clone(),
                            link: a.link.clone(),
                            fired: 0,
                            firing_ms: 0,
                            firing_since: None,
                        });
                        g.alerts.last_mut().expect("pushed")
                    }
                };
                match (a.status, line.firing_since) {
                    // Counted from the shift's start at the latest.
                    (Status::Firing, None) => {
                        line.fired += 1;
                        line.firing_since = Some(a.starts_at.max(self.start));
                    }
                    (Status::Resolved, Some(since)) => {
                        let end = a.ends_at.unwrap_or(d.at).max(since);
                        line.firing_ms += end.since(since).as_millis() as u64;
                        line.firing_since = None;
                    }
                    _ => {}
                }
            }
        }
        self.silences.extend(note.silences.iter().cloned());
    }

    /// Groups paged this shift with something new, not only repeats
    /// (incidents, for the page budget).
    pub fn incidents(&self) -> u32 {
        self.groups.values().filter(|g| g.news > 0).count() as u32
    }

    /// The report at the handover `now`, and the book of the shift that begins
    /// (ending at `next_end`), which carries over what still fires.
    pub fn close(
        self,
        ctx: &Handover<'_>,
        now: Ts,
        next_end: Ts,
    ) -> (HandoverReport, Option<Book>) {
        let mut next = Book::new(now, next_end);
        let acked = |key: &str| ctx.controls.ack(key).cloned();
        let mut still_firing = Vec::new();
        let mut acknowledged = Vec::new();
        for (key, g) in &self.groups {
            if let Some(ack) = acked(key) {
                acknowledged.push(AckedGroup {
                    group_key: key.clone(),
                    labels: g.labels.clone(),
                    ack,
                });
            }
            if g.status == Status::Firing {
                still_firing.push(FiringGroup {
                    group_key: key.clone(),
                    labels: g.labels.clone(),
                    since: g.firing_since,
                    last_page: g.last_page,
                });
                next.groups.insert(
                    key.clone(),
                    PagedGroup {
                        pages: 0,
                        news: 0,
                        ..g.clone()
                    },
                );
            }
        }
        let mut digest = Vec::new();
        for (key, g) in &self.digest {
            let mut carried = Vec::new();
            let alerts = g
                .alerts
                .iter()
                .map(|l| {
                    let firing_ms = l.firing_ms
                        + l.firing_since
                            .map_or(0, |s| now.since(s).as_millis() as u64);
                    if l.firing_since.is_some() {
                        carried.push(DigestLine {
                            fired: 0,
                            firing_ms: 0,
                            firing_since: Some(now),
                            ..l.clone()
                        });
                    }
                    DigestEntry {
                        name: l.name.clone(),
                        summary: l.summary.clone(),
                        link: l.link.clone(),
                        fired: l.fired,
                        firing_seconds: firing_ms / 1000,
                        still_firing: l.firing_since.is_some(),
                    }
                })
                .collect();
            digest.push(DigestReport {
                group_key: key.clone(),
                labels: g.labels.clone(),
                rule: g.rule.clone(),
                alerts,
                more: g.more,
            });
            if !carried.is_empty() {
                next.digest.insert(
                    key.clone(),
                    DigestGroup {
                        alerts: carried,
                        more: 0,
                        ..g.clone()
                    },
                );
            }
        }
        // Rule-file silences first, then runtime ones (their ids never collide: UUIDs).
        let silences_ending: Vec<EndingSilence> = self
            .silences
            .iter()
            .filter_map(|id| {
                let (ends_at, by, comment) = match ctx.rule_silences.iter().find(|s| s.id == *id) {
                    Some(s) => (s.ends_at, s.created_by.as_str(), s.comment.as_str()),
                    None => {
                        let r = &ctx.controls.silences.get(&**id)?.record;
                        (r.ends_at, r.created_by.as_str(), r.comment.as_str())
                    }
                };
                (ends_at > now && ends_at <= next_end).then(|| EndingSilence {
                    id: id.clone(),
                    ends_at,
                    created_by: by.into(),
                    comment: comment.into(),
                })
            })
            .collect();
        let incidents = self.incidents();
        let report = HandoverReport {
            shift_start: self.start,
            shift_end: now,
            outgoing: ctx.outgoing.clone(),
            incoming: ctx.incoming.clone(),
            incidents,
            page_budget: ctx.page_budget,
            over_budget: incidents > ctx.page_budget,
            noise: self.noise,
            pages: self.pages,
            still_firing,
            acknowledged,
            silences_ending,
            digest,
            truncated: 0,
        };
        let keep = !next.groups.is_empty() || !next.digest.is_empty();
        (report, keep.then_some(next))
    }
}

/// What closing a book needs to know besides the book.
pub struct Handover<'a> {
    pub controls: &'a Controls,
    pub rule_silences: &'a [Silence],
    pub outgoing: Option<Arc<str>>,
    pub incoming: Option<Arc<str>>,
    pub page_budget: u32,
}

/// The outgoing shift's report, addressed to the incoming goalkeeper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoverReport {
    pub shift_start: Ts,
    pub shift_end: Ts,
    pub outgoing: Option<Arc<str>>,
    pub incoming: Option<Arc<str>>,
    /// Groups paged during the shift with something new (first pages and
    /// changes; a group only repeated is not a new incident).
    pub incidents: u32,
    pub page_budget: u32,
    pub over_budget: bool,
    pub noise: Noise,
    /// Firing notifications, in order (at most [`MAX_PAGES`]; `noise.pages` counts all).
    pub pages: Vec<Page>,
    pub still_firing: Vec<FiringGroup>,
    pub acknowledged: Vec<AckedGroup>,
    /// Silences that held the squad's alerts and end during the next shift.
    pub silences_ending: Vec<EndingSilence>,
    pub digest: Vec<DigestReport>,
    /// Entries left out to fit a message (pages, digest groups, firing groups).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FiringGroup {
    pub group_key: Arc<str>,
    pub labels: LabelSet,
    pub since: Option<Ts>,
    pub last_page: Ts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckedGroup {
    pub group_key: Arc<str>,
    pub labels: LabelSet,
    pub ack: Ack,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndingSilence {
    pub id: Arc<str>,
    pub ends_at: Ts,
    pub created_by: Box<str>,
    pub comment: Box<str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestReport {
    pub group_key: Arc<str>,
    pub labels: LabelSet,
    pub rule: Arc<str>,
    pub alerts: Vec<DigestEntry>,
    pub more: u32,
}

/// One alert in the digest: what fired, how often, for how long, whether it still fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestEntry {
    pub name: Box<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Box<str>>,
    pub fired: u32,
    pub firing_seconds: u64,
    pub still_firing: bool,
}

/// A report with `digest_groups` digest groups of three alerts each, two pages
/// and one group still firing, for tests of what carries reports.
#[cfg(test)]
pub fn sample_report(digest_groups: usize) -> HandoverReport {
    use crate::model::Fingerprint;
    let at = |m: i64| Ts(1_764_000_000_000 + m * 60_000);
    let mut book = Book::new(at(0), at(24 * 60));
    let page = |m: i64, reason, status| Page {
        at: at(m),
        group_key: "payments:{alertname=\"HighErrorRate\"}".into(),
        group_labels: LabelSet::from_pairs([("alertname", "HighErrorRate")]),
        reason,
        status,
        alerts: 1,
        core: true,
        firing_since: Some(at(m)),
        out_of_hours: m > 600,
    };
    let mut note = ShiftNote {
        squad: "payments".into(),
        at: at(10),
        noise: Noise {
            received: 120,
            deduplicated: 100,
            digested: 18,
            notified: 2,
            notifications: 2,
            pages: 2,
            pages_out_of_hours: 1,
            ..Noise::default()
        },
        pages: vec![
            page(10, NotifyReason::NewGroup, Status::Firing),
            page(700, NotifyReason::Repeat, Status::Firing),
        ],
        digest: Vec::new(),
        silences: vec!["maintenance-window".into()],
    };
    for g in 0..digest_groups {
        note.digest.push(DigestUpdate {
            at: at(20),
            group_key: format!("payments:digest:{{disk=\"{g}\"}}").into(),
            group_labels: LabelSet::from_pairs([("alertname", "DiskWillFillIn4Hours")]),
            rule: "slow-burn".into(),
            alerts: (0..3)
                .map(|i| DigestAlert {
                    fingerprint: Fingerprint((g * 3 + i) as u64),
                    name: "DiskWillFillIn4Hours".into(),
                    status: Status::Firing,
                    starts_at: at(20),
                    ends_at: None,
                    summary: Some(format!("/var/lib/db{i} is 85% full <b>").into()),
                    link: Some("http://prometheus:9090/graph?g0.expr=disk".into()),
                })
                .collect(),
            more: 0,
        });
    }
    book.observe(&note);
    let controls = Controls::default();
    let ctx = Handover {
        controls: &controls,
        rule_silences: &[],
        outgoing: Some("bob".into()),
        incoming: Some("chen".into()),
        page_budget: 2,
    };
    book.close(&ctx, at(24 * 60), at(48 * 60)).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_book_reports_the_shift_and_carries_what_still_fires() {
        let r = sample_report(2);
        assert_eq!(r.noise.pages, 2);
        assert_eq!(r.pages.len(), 2);
        assert_eq!(r.incidents, 1, "a repeat is a page, not a new incident");
        assert!(!r.over_budget);
        assert_eq!(r.still_firing.len(), 1);
        assert_eq!(r.digest.len(), 2);
        let a = &r.digest[0].alerts[0];
        assert_eq!((a.fired, a.still_firing), (1, true));
        // From minute 20 to the handover at 24 h.
        assert_eq!(a.firing_seconds, (24 * 60 - 20) * 60);
    }

    #[test]
    fn a_large_note_splits_into_bounded_notes_that_add_up_to_it() {
        let mut note = ShiftNote {
            squad: "s".into(),
            at: Ts(5),
            ..ShiftNote::default()
        };
        note.noise.received = 1_000;
        let report = sample_report(1);
        for i in 0..1_000 {
            note.pages.push(report.pages[i % 2].clone());
        }
        for _ in 0..100 {
            note.digest.push(DigestUpdate {
                at: Ts(5),
                group_key: "g".into(),
                group_labels: LabelSet::default(),
                rule: "r".into(),
                alerts: Vec::new(),
                more: 0,
            });
        }
        let parts = note.clone().split();
        assert!(parts.len() >= 7, "{}", parts.len());
        assert!(
            parts
                .iter()
                .all(|p| p.pages.len() <= 200 && p.digest.len() <= 16)
        );
        assert_eq!(parts.iter().map(|p| p.noise.received).sum::<u64>(), 1_000);
        assert_eq!(parts.iter().map(|p| p.pages.len()).sum::<usize>(), 1_000);
        assert_eq!(parts.iter().map(|p| p.digest.len()).sum::<usize>(), 100);
        let mut a = Book::new(Ts(0), Ts(10));
        let mut b = Book::new(Ts(0), Ts(10));
        a.observe(&note);
        for p in &parts {
            b.observe(p);
        }
        assert_eq!(
            a, b,
            "a book sees the same whether the note came whole or split"
        );
    }
}
