//! Runtime controls: what people change through the API while squadron runs
//! (silences, acknowledgements of groups, goalkeeper duty overrides), as
//! opposed to what rule files declare.
//!
//! They are a table of records keyed `silence/<id>`, `ack/<group key>` and
//! `override/<id>`, kept in a compacted Kafka topic that every instance reads
//! whole ([`crate::pipeline::control`]). This module is the sans-IO part:
//! the records, their validation, the table they build, and the questions
//! the engine asks of it. The engine reads a snapshot ([`Controls`]) the way
//! it reads rules: swapped in whole, never changed under it.

use crate::model::{Labels, Ts};
use crate::rules::matcher::Op;
use crate::rules::{Matcher, Silence, all_match};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long expired silences and overrides, and acknowledgements, stay in the
/// table (and so in the API) before they are removed: Alertmanager's default
/// `--data.retention`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(120 * 3600);

/// A matcher as Alertmanager's API writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    /// Absent means equal (Alertmanager before 0.22 had no `isEqual`).
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl ApiMatcher {
    pub fn of(m: &Matcher) -> ApiMatcher {
        ApiMatcher {
            name: m.name.to_string(),
            value: m.value.to_string(),
            is_regex: matches!(m.op, Op::Re | Op::NotRe),
            is_equal: matches!(m.op, Op::Eq | Op::Re),
        }
    }

    pub fn compile(&self) -> Result<Matcher, String> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => Op::Eq,
            (false, false) => Op::Ne,
            (true, true) => Op::Re,
            (true, false) => Op::NotRe,
        };
        if !valid_label_name(&self.name) {
            return Err(format!("invalid label name {:?}", self.name));
        }
        Matcher::new(&self.name, op, &self.value)
    }
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A silence made through the API (`postableSilence` / `gettableSilence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceRecord {
    pub id: String,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: Ts,
    pub ends_at: Ts,
    pub created_by: String,
    pub comment: String,
    pub updated_at: Ts,
    /// Free-form key/values (Alertmanager 0.35's silence annotations).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A group acknowledged by a person: its repeat notifications stop until the
/// group changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub group_key: String,
    pub by: String,
    #[serde(default)]
    pub comment: String,
    pub at: Ts,
}

/// Someone else on duty for a squad for a while (a swap, a sick day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    pub id: String,
    pub squad: String,
    pub person: String,
    pub starts_at: Ts,
    pub ends_at: Ts,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    pub updated_at: Ts,
}

/// One record of the controls topic: the value of its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Silence(SilenceRecord),
    Ack(Ack),
    Override(Override),
}

impl Record {
    /// The record's key in the compacted topic: the latest record of a key is its state.
    pub fn key(&self) -> String {
        match self {
            Record::Silence(s) => format!("silence/{}", s.id),
            Record::Ack(a) => format!("ack/{}", a.group_key),
            Record::Override(o) => format!("override/{}", o.id),
        }
    }
}

/// A runtime silence, compiled.
#[derive(Debug, Clone)]
pub struct RuntimeSilence {
    pub silence: Silence,
    pub record: SilenceRecord,
}

/// The table: every control in force or kept for the API, by key.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// Change only through [`Controls::apply`]: it keeps `silence_index` true.
    pub silences: BTreeMap<String, RuntimeSilence>,
    pub acks: BTreeMap<String, Ack>,
    pub overrides: BTreeMap<String, Override>,
    /// The silences indexed by what their matchers require (as rule lists
    /// are), built at the first lookup after a change: each engine's snapshot
    /// builds it once.
    silence_index: std::sync::OnceLock<SilenceIndex>,
}

#[derive(Debug, Clone)]
struct SilenceIndex {
    index: crate::rules::index::RuleIndex,
    /// Ids in `silences` order: the index's positions.
    ids: Vec<String>,
}

impl Controls {
    /// Applies one record of the topic (`None`: a tombstone). A record that
    /// does not parse is an error and changes nothing: one bad record must
    /// not stop an instance from reading the rest.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        if key.starts_with("silence/") {
            self.silence_index = std::sync::OnceLock::new();
        }
        let Some(value) = value else {
            if let Some(id) = key.strip_prefix("silence/") {
                self.silences.remove(id);
            } else if let Some(g) = key.strip_prefix("ack/") {
                self.acks.remove(g);
            } else if let Some(id) = key.strip_prefix("override/") {
                self.overrides.remove(id);
            }
            return Ok(());
        };
        let record: Record = serde_json::from_slice(value)
            .map_err(|e| format!("unreadable control {key:?}: {e}"))?;
        if record.key() != key {
            return Err(format!(
                "control record under key {key:?} is for {:?}",
                record.key()
            ));
        }
        match record {
            Record::Silence(s) => {
                let silence = compile_silence(&s)?;
                self.silences
                    .insert(s.id.clone(), RuntimeSilence { silence, record: s });
            }
            Record::Ack(a) => {
                self.acks.insert(a.group_key.clone(), a);
            }
            Record::Override(o) => {
                self.overrides.insert(o.id.clone(), o);
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.silences.is_empty() && self.acks.is_empty() && self.overrides.is_empty()
    }

    /// The runtime silence in force at `now` that matches `labels`, if any.
    pub fn silenced_by(&self, labels: &impl Labels, now: Ts) -> Option<&Silence> {
        use crate::rules::index::{RuleIndex, constraints};
        let idx = self.silence_index.get_or_init(|| SilenceIndex {
            index: RuleIndex::new(
                self.silences
                    .values()
                    .map(|s| constraints(&s.silence.matchers)),
            ),
            ids: self.silences.keys().cloned().collect(),
        });
        idx.index.first(labels, None, |i| {
            let s = &self.silences.get(&idx.ids[i])?.silence;
            (s.active_at(now) && all_match(&s.matchers, labels)).then_some(s)
        })
    }

    pub fn ack(&self, group_key: &str) -> Option<&Ack> {
        self.acks.get(group_key)
    }

    /// The person on duty for `squad` at `now` by an override, if one is in
    /// force (the most recently made wins when several overlap).
    pub fn on_duty(&self, squad: &str, now: Ts) -> Option<&str> {
        self.overrides
            .values()
            .filter(|o| o.squad == squad && o.starts_at <= now && now < o.ends_at)
            .max_by_key(|o| o.updated_at)
            .map(|o| o.person.as_str())
    }

    /// Keys whose records have outlived `retention`: silences and overrides
    /// that ended that long ago, acknowledgements made that long ago.
    pub fn outlived(&self, now: Ts, retention: Duration) -> Vec<String> {
        let old = |t: Ts| now.since(t) >= retention && t <= now;
        let silences = self
            .silences
            .values()
            .filter(|s| old(s.record.ends_at))
            .map(|s| format!("silence/{}", s.record.id));
        let acks = self
            .acks
            .values()
            .filter(|a| old(a.at))
            .map(|a| format!("ack/{}", a.group_key));
        let overrides = self
            .overrides
            .values()
            .filter(|o| old(o.ends_at))
            .map(|o| format!("override/{}", o.id));
        silences.chain(acks).chain(overrides).collect()
    }
}

fn compile_silence(s: &SilenceRecord) -> Result<Silence, String> {
    Ok(Silence {
        id: s.id.as_str().into(),
        matchers: s
            .matchers
            .iter()
            .map(ApiMatcher::compile)
            .collect::<Result<_, _>>()?,
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
    })
}

/// A silence as posted to `POST /api/v2/silences`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: Ts,
    pub ends_at: Ts,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What a posted silence does to the table.
#[derive(Debug, Clone, PartialEq)]
pub enum SilenceChange {
    /// A new silence, or a pending/active one updated in place (same id).
    Put(SilenceRecord),
    /// The existing silence (expired, or with a start that already passed
    /// and now changes) ends, and a new one with a new id takes its place,
    /// as Alertmanager does.
    Replace {
        expire: SilenceRecord,
        new: SilenceRecord,
    },
}

/// Why a posted silence is refused: a client error (400) or an unknown id (404).
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    Invalid(String),
    NotFound(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(m) | Refused::NotFound(m) => f.write_str(m),
        }
    }
}

/// Validates a posted silence as Alertmanager does (matchers, times,
/// creator, comment) and says what it changes. `new_id` makes ids.
pub fn post_silence(
    table: &Controls,
    p: PostableSilence,
    now: Ts,
    new_id: impl FnOnce() -> String,
) -> Result<SilenceChange, Refused> {
    let invalid = |m: String| Err(Refused::Invalid(m));
    if p.matchers.is_empty() {
        return invalid("at least one matcher is required".into());
    }
    let mut compiled = Vec::with_capacity(p.matchers.len());
    for m in &p.matchers {
        compiled.push(
            m.compile()
                .map_err(|e| Refused::Invalid(format!("matcher {}: {e}", m.name)))?,
        );
    }
    let empty = crate::model::LabelSet::default();
    if compiled.iter().all(|m| m.matches(&empty)) {
        return invalid(
            "at least one matcher must not match the empty string (it would silence every alert)"
                .into(),
        );
    }
    if p.ends_at <= p.starts_at {
        return invalid("endsAt must be after startsAt".into());
    }
    if p.ends_at <= now {
        return invalid("endsAt is in the past".into());
    }
    if p.created_by.trim().is_empty() {
        return invalid("createdBy is required".into());
    }
    if p.comment.trim().is_empty() {
        return invalid("comment is required".into());
    }
    let record = |id: String| SilenceRecord {
        id,
        matchers: p.matchers.clone(),
        // A start in the past starts now.
        starts_at: p.starts_at.max(now),
        ends_at: p.ends_at,
        created_by: p.created_by.clone(),
        comment: p.comment.clone(),
        updated_at: now,
        annotations: p.annotations.clone(),
    };
    let Some(id) = p.id.clone().filter(|id| !id.is_empty()) else {
        return Ok(SilenceChange::Put(record(new_id())));
    };
    let Some(old) = table.silences.get(&id) else {
        return Err(Refused::NotFound(format!(
            "silence {id} not found (a rule file's silence is changed in its file)"
        )));
    };
    let old = &old.record;
    let started = old.starts_at <= now;
    let expired = old.ends_at <= now;
    // Alertmanager's rule: an update in place may not rewrite the past.
    let in_place = old.matchers == p.matchers
        && !expired
        && if started {
            p.starts_at == old.starts_at
        } else {
            p.starts_at >= now
        };
    if in_place {
        let mut r = record(id);
        r.starts_at = p.starts_at;
        return Ok(SilenceChange::Put(r));
    }
    let mut expire = old.clone();
    if !expired {
        expire.ends_at = now;
        expire.updated_at = now;
    }
    Ok(SilenceChange::Replace {
        expire,
        new: record(new_id()),
    })
}

/// The record that expires silence `id` at `now` (`DELETE /api/v2/silence/{id}`).
/// A pending silence ends before it starts; an expired one stays as it is.
pub fn expire_silence(table: &Controls, id: &str, now: Ts) -> Option<SilenceRecord> {
    let mut r = table.silences.get(id)?.record.clone();
    if r.ends_at > now {
        r.ends_at = now;
        r.starts_at = r.starts_at.min(now);
        r.updated_at = now;
    }
    Some(r)
}

/// A group key as the engine keys groups (`payments:{alertname="X"}`),
/// from either that form or the Alertmanager form notifications carry in
/// `groupKey` (`{}/{squad="payments"}:{alertname="X"}`), so a goalkeeper can
/// acknowledge with the key of the page in front of them.
pub fn engine_group_key(key: &str) -> String {
    if let Some((squad, labels)) = key
        .strip_prefix("{}/{squad=\"")
        .and_then(|rest| rest.split_once("\"}:"))
    {
        return format!("{squad}:{labels}");
    }
    key.to_owned()
}

/// A random identifier in the UUID text form Alertmanager's silence ids have.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS: two of them give 128 unpredictable bits.
    let mut words = [0u64; 2];
    for w in &mut words {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        *w = h.finish();
    }
    let b: u128 = (words[0] as u128) << 64 | words[1] as u128;
    // Version 4, variant 1, as a UUID v4 has.
    let b = (b & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Shared by the reader of the controls topic and everyone who asks: the
/// latest snapshot and a version that changes with it.
#[derive(Debug, Default)]
pub struct Shared {
    current: std::sync::RwLock<Arc<Controls>>,
    version: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Controls> {
        self.current.read().expect("controls lock").clone()
    }

    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn publish(&self, c: Arc<Controls>) {
        *self.current.write().expect("controls lock") = c;
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelSet;

    fn at(s: &str) -> Ts {
        Ts::parse_rfc3339(s).unwrap().unwrap()
    }

    fn eq(name: &str, value: &str) -> ApiMatcher {
        ApiMatcher {
            name: name.into(),
            value: value.into(),
            is_regex: false,
            is_equal: true,
        }
    }

    fn posted(
        id: Option<&str>,
        matchers: Vec<ApiMatcher>,
        from: &str,
        to: &str,
    ) -> PostableSilence {
        PostableSilence {
            id: id.map(Into::into),
            matchers,
            starts_at: at(from),
            ends_at: at(to),
            created_by: "alice".into(),
            comment: "known issue".into(),
            annotations: BTreeMap::new(),
        }
    }

    /// A new silence of one matcher from 10:00 to 12:00 on 2026-11-27, posted at `now`.
    fn ten_to_noon(t: &Controls, m: ApiMatcher, now: Ts) -> SilenceRecord {
        let posted = posted(
            None,
            vec![m],
            "2026-11-27T10:00:00Z",
            "2026-11-27T12:00:00Z",
        );
        match post_silence(t, posted, now, new_id).unwrap() {
            SilenceChange::Put(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn put(table: &mut Controls, r: &SilenceRecord) {
        let rec = Record::Silence(r.clone());
        table
            .apply(&rec.key(), Some(&serde_json::to_vec(&rec).unwrap()))
            .unwrap();
    }

    #[test]
    fn a_posted_silence_is_validated_like_alertmanagers() {
        let t = Controls::default();
        let now = at("2026-11-27T10:00:00Z");
        let post = |p| post_silence(&t, p, now, || "id-1".into());
        let ok = posted(
            None,
            vec![eq("alertname", "Down")],
            "2026-11-27T09:00:00Z",
            "2026-11-27T12:00:00Z",
        );
        let SilenceChange::Put(r) = post(ok.clone()).unwrap() else {
            panic!("a new silence is put")
        };
        assert_eq!(r.id, "id-1");
        assert_eq!(r.starts_at, now, "a start in the past starts now");
        let refused = |p: PostableSilence| match post(p) {
            Err(Refused::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            refused(PostableSilence {
                matchers: vec![],
                ..ok.clone()
            })
            .contains("at least one matcher")
        );
        assert!(
            refused(PostableSilence {
                matchers: vec![eq("env", "")],
                ..ok.clone()
            })
            .contains("empty string")
        );
        assert!(
            refused(PostableSilence {
                matchers: vec![eq("bad-name", "x")],
                ..ok.clone()
            })
            .contains("label name")
        );
        let mut re = eq("job", "(");
        re.is_regex = true;
        assert!(
            refused(PostableSilence {
                matchers: vec![re],
                ..ok.clone()
            })
            .contains("regular expression")
        );
        assert!(
            refused(PostableSilence {
                ends_at: at("2026-11-27T08:00:00Z"),
                ..ok.clone()
            })
            .contains("after startsAt")
        );
        assert!(
            refused(PostableSilence {
                starts_at: at("2026-11-27T08:00:00Z"),
                ends_at: at("2026-11-27T09:00:00Z"),
                ..ok.clone()
            })
            .contains("past")
        );
        assert!(
            refused(PostableSilence {
                created_by: " ".into(),
                ..ok.clone()
            })
            .contains("createdBy")
        );
        assert!(
            refused(PostableSilence {
                comment: String::new(),
                ..ok.clone()
            })
            .contains("comment")
        );
        assert!(matches!(
            post(PostableSilence {
                id: Some("nope".into()),
                ..ok
            }),
            Err(Refused::NotFound(_))
        ));
    }

    #[test]
    fn updates_keep_the_id_unless_they_rewrite_the_past() {
        let mut t = Controls::default();
        let now = at("2026-11-27T10:00:00Z");
        let first = match post_silence(
            &t,
            posted(
                None,
                vec![eq("alertname", "Down")],
                "2026-11-27T10:00:00Z",
                "2026-11-27T12:00:00Z",
            ),
            now,
            || "a".into(),
        )
        .unwrap()
        {
            SilenceChange::Put(r) => r,
            other => panic!("{other:?}"),
        };
        put(&mut t, &first);
        let later = at("2026-11-27T11:00:00Z");
        // Extending an active silence: in place.
        match post_silence(
            &t,
            posted(
                Some("a"),
                vec![eq("alertname", "Down")],
                "2026-11-27T10:00:00Z",
                "2026-11-27T14:00:00Z",
            ),
            later,
            || "b".into(),
        )
        .unwrap()
        {
            SilenceChange::Put(r) => {
                assert_eq!(
                    (r.id.as_str(), r.starts_at, r.ends_at),
                    ("a", now, at("2026-11-27T14:00:00Z"))
                )
            }
            other => panic!("{other:?}"),
        }
        // Changing the matchers of an active silence: the old one ends, a new one starts.
        match post_silence(
            &t,
            posted(
                Some("a"),
                vec![eq("alertname", "Up")],
                "2026-11-27T10:00:00Z",
                "2026-11-27T14:00:00Z",
            ),
            later,
            || "b".into(),
        )
        .unwrap()
        {
            SilenceChange::Replace { expire, new } => {
                assert_eq!((expire.id.as_str(), expire.ends_at), ("a", later));
                assert_eq!((new.id.as_str(), new.starts_at), ("b", later));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Enough silences that lookups go through the index: it follows every
    /// change (an expired silence stops matching at once, a new one matches).
    #[test]
    fn many_silences_are_looked_up_through_an_index_that_follows_changes() {
        let mut t = Controls::default();
        let now = at("2026-11-27T10:00:00Z");
        let make = |t: &Controls, service: &str, regex: bool| {
            let mut m = eq("service", service);
            m.is_regex = regex;
            ten_to_noon(t, m, now)
        };
        let mut by_service = Vec::new();
        for i in 0..40 {
            let s = make(&t, &format!("svc-{i}"), false);
            put(&mut t, &s);
            by_service.push(s);
        }
        // A regex-only silence is a candidate for every alert.
        let wide = make(&t, "batch-.*", true);
        put(&mut t, &wide);
        let alert =
            |service: &str| LabelSet::from_pairs([("alertname", "Down"), ("service", service)]);
        let id = |t: &Controls, service: &str| {
            t.silenced_by(&alert(service), now)
                .map(|s| s.id.to_string())
        };
        assert_eq!(id(&t, "svc-7"), Some(by_service[7].id.clone()));
        assert_eq!(id(&t, "batch-eu"), Some(wide.id.clone()));
        assert_eq!(id(&t, "svc-99"), None);

        let expired = expire_silence(&t, &by_service[7].id, now).unwrap();
        put(&mut t, &expired);
        assert_eq!(id(&t, "svc-7"), None, "expired: the index was rebuilt");
        let again = make(&t, "svc-7", false);
        put(&mut t, &again);
        assert_eq!(id(&t, "svc-7"), Some(again.id.clone()));
        t.apply(&format!("silence/{}", again.id), None).unwrap();
        assert_eq!(
            id(&t, "svc-7"),
            None,
            "a tombstone removes it from the index too"
        );
    }

    #[test]
    fn the_table_follows_its_log_and_silences_like_a_rule_file() {
        let mut t = Controls::default();
        let now = at("2026-11-27T10:00:00Z");
        let s = ten_to_noon(&t, eq("alertname", "Down"), now);
        put(&mut t, &s);
        let down = LabelSet::from_pairs([("alertname", "Down"), ("job", "x")]);
        let other = LabelSet::from_pairs([("alertname", "Other")]);
        assert_eq!(
            t.silenced_by(&down, now).map(|s| s.id.to_string()),
            Some(s.id.clone())
        );
        assert!(t.silenced_by(&other, now).is_none());
        assert!(
            t.silenced_by(&down, at("2026-11-27T12:00:00Z")).is_none(),
            "ends at endsAt"
        );

        let expired = expire_silence(&t, &s.id, at("2026-11-27T11:00:00Z")).unwrap();
        put(&mut t, &expired);
        assert!(t.silenced_by(&down, at("2026-11-27T11:00:01Z")).is_none());
        assert_eq!(t.silences.len(), 1, "kept for the retention period");
        let key = format!("silence/{}", s.id);
        assert!(
            t.outlived(at("2026-11-28T11:00:00Z"), DEFAULT_RETENTION)
                .is_empty()
        );
        assert_eq!(
            t.outlived(at("2026-12-02T11:00:00Z"), DEFAULT_RETENTION),
            vec![key.clone()]
        );
        t.apply(&key, None).unwrap();
        assert!(t.silences.is_empty(), "a tombstone removes it");

        // Garbage and mismatched keys are refused without changing anything.
        assert!(t.apply("silence/x", Some(b"{")).is_err());
        let ack = Record::Ack(Ack {
            group_key: "g".into(),
            by: "bob".into(),
            comment: String::new(),
            at: now,
        });
        assert!(
            t.apply("ack/other", Some(&serde_json::to_vec(&ack).unwrap()))
                .is_err()
        );
        t.apply("ack/g", Some(&serde_json::to_vec(&ack).unwrap()))
            .unwrap();
        assert_eq!(t.ack("g").map(|a| a.by.as_str()), Some("bob"));
    }

    #[test]
    fn the_latest_override_in_force_names_the_goalkeeper() {
        let mut t = Controls::default();
        let o = |id: &str, person: &str, from: &str, to: &str, made: &str| Override {
            id: id.into(),
            squad: "payments".into(),
            person: person.into(),
            starts_at: at(from),
            ends_at: at(to),
            created_by: "lead".into(),
            comment: String::new(),
            updated_at: at(made),
        };
        for r in [
            o(
                "1",
                "carol",
                "2026-11-27T00:00:00Z",
                "2026-11-29T00:00:00Z",
                "2026-11-20T00:00:00Z",
            ),
            o(
                "2",
                "dave",
                "2026-11-28T00:00:00Z",
                "2026-11-28T12:00:00Z",
                "2026-11-21T00:00:00Z",
            ),
        ] {
            let rec = Record::Override(r);
            t.apply(&rec.key(), Some(&serde_json::to_vec(&rec).unwrap()))
                .unwrap();
        }
        assert_eq!(
            t.on_duty("payments", at("2026-11-27T12:00:00Z")),
            Some("carol")
        );
        assert_eq!(
            t.on_duty("payments", at("2026-11-28T06:00:00Z")),
            Some("dave")
        );
        assert_eq!(
            t.on_duty("payments", at("2026-11-28T12:00:00Z")),
            Some("carol")
        );
        assert_eq!(t.on_duty("payments", at("2026-11-29T00:00:00Z")), None);
        assert_eq!(t.on_duty("search", at("2026-11-27T12:00:00Z")), None);
    }

    #[test]
    fn group_keys_from_notifications_name_the_engines_group() {
        let engine = r#"payments:{alertname="DiskFull", service="checkout"}"#;
        assert_eq!(engine_group_key(engine), engine);
        assert_eq!(
            engine_group_key(r#"{}/{squad="payments"}:{alertname="DiskFull", service="checkout"}"#),
            engine
        );
    }

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
