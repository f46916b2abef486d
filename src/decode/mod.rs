//! Decoding input messages into alerts, detecting the format from the shape.
//!
//! Supported shapes:
//! - a single Prometheus alert object (`labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`);
//! - a JSON array of them (the body Prometheus POSTs to Alertmanager's `/api/v2/alerts`);
//! - an Alertmanager webhook payload (`"version": "4"`, `alerts` with `status`).
//!
//! A bad message is data, not an error of the process: [`decode`] returns a precise
//! reason and never panics. In a batch, one bad alert is invalid alone.
//! Strings are borrowed from the input whenever they contain no escapes.

use crate::model::{Alert, LabelPairs, Status, Ts};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

mod fast;

/// Which wire format a message was in. Bounded: used as a metric label.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    PrometheusAlert,
    PrometheusBatch,
    AlertmanagerWebhook,
    GrafanaWebhook,
    PagerDutyEvent,
    CloudEvent,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::PrometheusAlert,
        Format::PrometheusBatch,
        Format::AlertmanagerWebhook,
        Format::GrafanaWebhook,
        Format::PagerDutyEvent,
        Format::CloudEvent,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Format::PrometheusAlert => "prometheus_alert",
            Format::PrometheusBatch => "prometheus_batch",
            Format::AlertmanagerWebhook => "alertmanager_webhook",
            Format::GrafanaWebhook => "grafana_webhook",
            Format::PagerDutyEvent => "pagerduty_event",
            Format::CloudEvent => "cloudevent",
        }
    }
}

/// Why a message or an alert is invalid. The kind is bounded (a metric label);
/// the detail says exactly what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalid {
    pub kind: InvalidKind,
    pub detail: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    NotUtf8,
    NotJson,
    UnknownShape,
    EmptyLabels,
    BadLabel,
    BadTimestamp,
    BadField,
    /// Nested deeper than a supported message can be: a CloudEvent inside a
    /// CloudEvent, or a field serde_json refuses past its recursion limit (128).
    TooDeep,
    /// One alert larger than squadron passes between its stages (900 KB).
    TooLarge,
    /// squadron itself failed on the message (a bug): it is dead-lettered
    /// instead of stopping the pipeline on it again after every restart.
    Internal,
}

impl InvalidKind {
    pub const ALL: [InvalidKind; 10] = [
        InvalidKind::NotUtf8,
        InvalidKind::NotJson,
        InvalidKind::UnknownShape,
        InvalidKind::EmptyLabels,
        InvalidKind::BadLabel,
        InvalidKind::BadTimestamp,
        InvalidKind::BadField,
        InvalidKind::TooDeep,
        InvalidKind::TooLarge,
        InvalidKind::Internal,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidKind::NotUtf8 => "not_utf8",
            InvalidKind::NotJson => "not_json",
            InvalidKind::UnknownShape => "unknown_shape",
            InvalidKind::EmptyLabels => "empty_labels",
            InvalidKind::BadLabel => "bad_label",
            InvalidKind::BadTimestamp => "bad_timestamp",
            InvalidKind::BadField => "bad_field",
            InvalidKind::TooDeep => "too_deep",
            InvalidKind::TooLarge => "too_large",
            InvalidKind::Internal => "internal",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl Invalid {
    pub(crate) fn new(kind: InvalidKind, detail: impl Into<String>) -> Invalid {
        Invalid {
            kind,
            detail: detail.into(),
        }
    }

    /// Names the alert's position in its message.
    fn at(mut self, index: usize) -> Invalid {
        self.detail = format!("alert {index}: {}", self.detail);
        self
    }
}

/// A decoded message: its format and each alert in it, valid or not.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub format: Format,
    pub alerts: Vec<Result<Alert<'a>, Invalid>>,
}

/// Decodes one message. `Err` means the whole message is unusable (it counts as
/// one invalid input); otherwise each alert is valid or invalid on its own.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, Invalid> {
    decode_with(bytes, Paths::Fast)
}

/// [`decode`] without its shortcut for Prometheus batches: what the shortcut
/// must agree with (the `decode` fuzz target compares them).
#[doc(hidden)]
pub fn decode_reference(bytes: &[u8]) -> Result<Decoded<'_>, Invalid> {
    decode_with(bytes, Paths::General)
}

/// Whether a Prometheus batch may take [`fast::prometheus_batch`].
#[derive(Copy, Clone, PartialEq)]
enum Paths {
    Fast,
    General,
}

fn decode_with(bytes: &[u8], paths: Paths) -> Result<Decoded<'_>, Invalid> {
    // One SIMD pass validates UTF-8; serde_json then reads strings without re-checking.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Invalid::new(InvalidKind::NotUtf8, e.to_string()))?;
    decode_text(text, true, paths)
}

/// Decodes checked text; `envelope` says whether a CloudEvent may wrap it
/// (CloudEvents nest one level: an event's `data` is never another event).
fn decode_text(text: &str, envelope: bool, paths: Paths) -> Result<Decoded<'_>, Invalid> {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => decode_batch(text, paths),
        Some(b'{') => decode_object(text, envelope, paths),
        Some(_) => match serde_json::from_str::<IgnoredAny>(text) {
            // Valid JSON of another type (a string, a number) is a shape error.
            Ok(_) => Err(Invalid::new(
                InvalidKind::UnknownShape,
                "expected a JSON object or array",
            )),
            Err(e) => Err(not_json(e)),
        },
        None => Err(Invalid::new(InvalidKind::NotJson, "empty message")),
    }
}

fn decode_batch(text: &str, paths: Paths) -> Result<Decoded<'_>, Invalid> {
    if paths == Paths::Fast {
        if let Some(alerts) = fast::prometheus_batch(text) {
            return Ok(Decoded {
                format: Format::PrometheusBatch,
                alerts,
            });
        }
    }
    // One pass when every element is an alert object (the common case). If any
    // element is not, split the array and decode each element on its own, so
    // one bad alert is invalid alone.
    let alerts = match serde_json::from_str::<Batch>(text) {
        Ok(Batch(alerts)) => alerts,
        Err(_) => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(not_json)?;
            decode_items(&items, false)
        }
    };
    Ok(Decoded {
        format: Format::PrometheusBatch,
        alerts,
    })
}

fn decode_object(text: &str, envelope: bool, paths: Paths) -> Result<Decoded<'_>, Invalid> {
    let obj: AlertObject = serde_json::from_str(text).map_err(not_json)?;
    if obj.specversion.is_some() {
        if !envelope {
            return Err(Invalid::new(
                InvalidKind::TooDeep,
                "a CloudEvent inside a CloudEvent's data",
            ));
        }
        return decode_cloudevent(&obj, paths);
    }
    if let Some(Str(action)) = &obj.event_action {
        let action = action.to_string();
        return Ok(Decoded {
            format: Format::PagerDutyEvent,
            alerts: vec![pagerduty_alert(&action, obj)],
        });
    }
    if let Some(items) = &obj.alerts {
        // Grafana's webhook is Alertmanager's shape with version "1" and an orgId.
        let grafana = obj.org_id.is_some() || obj.version.as_ref().is_some_and(|v| v.0 == "1");
        if !grafana {
            if let Some(Str(v)) = obj.version.as_ref().filter(|v| v.0 != "4") {
                return Err(Invalid::new(
                    InvalidKind::UnknownShape,
                    format!("unsupported Alertmanager webhook version {v:?} (expected \"4\")"),
                ));
            }
        }
        let format = if grafana {
            Format::GrafanaWebhook
        } else {
            Format::AlertmanagerWebhook
        };
        Ok(Decoded {
            format,
            alerts: decode_items(items, true),
        })
    } else if obj.labels.is_some() {
        Ok(Decoded {
            format: Format::PrometheusAlert,
            alerts: vec![obj.into_alert(false, &mut TimeCache::default())],
        })
    } else {
        Err(Invalid::new(
            InvalidKind::UnknownShape,
            "a JSON object that is not an alert (no \"labels\"), a webhook payload (no \"alerts\"), a PagerDuty event (no \"event_action\") or a CloudEvent (no \"specversion\")",
        ))
    }
}

/// A structured-mode CloudEvent whose `data` is any supported message.
fn decode_cloudevent<'a>(obj: &AlertObject<'a>, paths: Paths) -> Result<Decoded<'a>, Invalid> {
    if let Some(Str(v)) = obj.specversion.as_ref().filter(|v| v.0 != "1.0") {
        return Err(Invalid::new(
            InvalidKind::UnknownShape,
            format!("unsupported CloudEvents specversion {v:?} (expected \"1.0\")"),
        ));
    }
    let Some(data) = obj.data else {
        return Err(Invalid::new(
            InvalidKind::UnknownShape,
            "a CloudEvent without \"data\"",
        ));
    };
    let inner = decode_text(data.get(), false, paths).map_err(|mut e| {
        e.detail = format!("CloudEvent data: {}", e.detail);
        e
    })?;
    Ok(Decoded {
        format: Format::CloudEvent,
        alerts: inner.alerts,
    })
}

/// PagerDuty Events API v2. Resolve and acknowledge events usually carry only
/// the `dedup_key`, so that key alone is the alert's identity: labels are
/// `alertname="PagerDutyEvent"` and `dedup_key`; the payload's fields
/// (summary, source, severity, component, group, class) become annotations.
fn pagerduty_alert<'a>(action: &str, obj: AlertObject<'a>) -> Result<Alert<'a>, Invalid> {
    #[derive(Deserialize)]
    struct Payload<'p> {
        #[serde(borrow, default)]
        summary: Option<Str<'p>>,
        #[serde(borrow, default)]
        source: Option<Str<'p>>,
        #[serde(borrow, default)]
        severity: Option<Str<'p>>,
        #[serde(borrow, default)]
        component: Option<Str<'p>>,
        #[serde(borrow, default)]
        group: Option<Str<'p>>,
        #[serde(borrow, default)]
        class: Option<Str<'p>>,
        #[serde(borrow, default)]
        timestamp: Option<Str<'p>>,
    }
    let status = match action {
        "trigger" | "acknowledge" => Status::Firing,
        "resolve" => Status::Resolved,
        other => {
            return Err(Invalid::new(
                InvalidKind::BadField,
                format!("PagerDuty event_action {other:?} is not trigger, acknowledge or resolve"),
            ));
        }
    };
    let payload: Option<Payload<'a>> =
        match obj.payload {
            None => None,
            Some(raw) => Some(serde_json::from_str(raw.get()).map_err(|e| {
                Invalid::new(InvalidKind::BadField, format!("PagerDuty payload: {e}"))
            })?),
        };
    let dedup_key = match (obj.dedup_key, &payload) {
        (Some(Str(k)), _) if !k.is_empty() => k,
        // A trigger without a key: PagerDuty derives one; we use the summary and source.
        (_, Some(p)) if status == Status::Firing => {
            let part =
                |s: &Option<Str<'a>>| s.as_ref().map(|s| s.0.to_string()).unwrap_or_default();
            Cow::Owned(format!("{}|{}", part(&p.summary), part(&p.source)))
        }
        _ => {
            return Err(Invalid::new(
                InvalidKind::BadField,
                "a PagerDuty event without dedup_key",
            ));
        }
    };
    let labels: LabelPairs<'a> = vec![
        (Cow::Borrowed("alertname"), Cow::Borrowed("PagerDutyEvent")),
        (Cow::Borrowed("dedup_key"), dedup_key),
    ];
    let mut annotations: LabelPairs<'a> = Vec::new();
    let mut starts_at = None;
    if let Some(p) = payload {
        for (name, v) in [
            ("class", p.class),
            ("component", p.component),
            ("group", p.group),
            ("severity", p.severity),
            ("source", p.source),
            ("summary", p.summary),
        ] {
            if let Some(Str(v)) = v {
                annotations.push((Cow::Borrowed(name), v));
            }
        }
        // Optional in PagerDuty's API: one it cannot read does not lose the
        // event. It starts when received, and the text is kept as an annotation.
        if let Some(Str(t)) = p.timestamp {
            match Ts::parse_iso8601(&t) {
                Ok(t) => starts_at = t,
                Err(_) => annotations.push((Cow::Borrowed("timestamp_unparsed"), t)),
            }
        }
    }
    Ok(Alert {
        labels,
        annotations,
        starts_at,
        ends_at: None,
        generator_url: None,
        status: Some(status),
    })
}

/// The elements of a JSON array as they lie in `bytes`, without surrounding
/// whitespace, for passing on alerts of a batch without encoding them again
/// (the route stage). `bytes` must be an array that decoded (valid JSON): the
/// scan only finds where each element ends. `None` when it is not an array.
pub fn array_elements(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut i = bytes.iter().position(|b| !ws(b))?;
    if bytes[i] != b'[' {
        return None;
    }
    i += 1;
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                start.get_or_insert(i);
                // To the closing quote: skip escaped characters.
                i += 1;
                loop {
                    i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
                    if bytes[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
            }
            b'{' | b'[' => {
                start.get_or_insert(i);
                depth += 1;
            }
            b'}' | b']' if depth > 0 => depth -= 1,
            b',' | b']' if depth == 0 => {
                if let Some(s) = start.take() {
                    let end = i - bytes[s..i].iter().rev().take_while(|b| ws(b)).count();
                    out.push(&bytes[s..end]);
                }
                if b == b']' {
                    return Some(out);
                }
            }
            _ if ws(&b) => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    None
}

/// Nesting is bounded without a pass of its own: serde_json refuses typed
/// values nested past 128 levels and skips ignored ones iteratively (linear
/// time, constant stack); the decoder itself recurses once, into a CloudEvent.
fn not_json(e: serde_json::Error) -> Invalid {
    let kind = if is_too_deep(&e) {
        InvalidKind::TooDeep
    } else {
        InvalidKind::NotJson
    };
    Invalid::new(kind, e.to_string())
}

fn is_too_deep(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

fn decode_items<'a>(items: &[&'a RawValue], with_status: bool) -> Vec<Result<Alert<'a>, Invalid>> {
    let mut times = TimeCache::default();
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let obj: AlertObject<'a> = serde_json::from_str(raw.get()).map_err(|e| {
                let kind = if is_too_deep(&e) {
                    InvalidKind::TooDeep
                } else if raw.get().starts_with('{') {
                    InvalidKind::BadField
                } else {
                    InvalidKind::UnknownShape
                };
                Invalid::new(kind, e.to_string()).at(i)
            })?;
            obj.into_alert(with_status, &mut times).map_err(|e| e.at(i))
        })
        .collect()
}

/// A JSON array of alert objects, each converted as soon as it is parsed (no
/// intermediate vector of objects: this is the hot path).
struct Batch<'a>(Vec<Result<Alert<'a>, Invalid>>);

impl<'de: 'a, 'a> Deserialize<'de> for Batch<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Batch<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Batch<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of alert objects")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Batch<'de>, A::Error> {
                // Prometheus sends up to 64 alerts a request.
                let mut alerts = Vec::with_capacity(seq.size_hint().unwrap_or(64));
                let mut times = TimeCache::default();
                while let Some(obj) = seq.next_element::<AlertObject<'de>>()? {
                    let i = alerts.len();
                    alerts.push(obj.into_alert(false, &mut times).map_err(|e| e.at(i)));
                }
                Ok(Batch(alerts))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Every field any supported object shape may carry; unknown fields are ignored
/// (webhook payloads carry `groupKey`, `receiver` and more).
#[derive(Deserialize, Default)]
struct AlertObject<'a> {
    #[serde(borrow, default)]
    labels: Option<LabelField<'a>>,
    #[serde(borrow, default)]
    annotations: Option<LabelField<'a>>,
    #[serde(borrow, default, rename = "startsAt")]
    starts_at: Option<Str<'a>>,
    #[serde(borrow, default, rename = "endsAt")]
    ends_at: Option<Str<'a>>,
    #[serde(borrow, default, rename = "generatorURL")]
    generator_url: Option<Str<'a>>,
    #[serde(borrow, default)]
    status: Option<Str<'a>>,
    #[serde(borrow, default)]
    version: Option<Str<'a>>,
    #[serde(borrow, default)]
    alerts: Option<Vec<&'a RawValue>>,
    /// Grafana's webhook carries its organisation.
    #[serde(default, rename = "orgId")]
    org_id: Option<IgnoredAny>,
    /// PagerDuty Events API v2.
    #[serde(borrow, default)]
    event_action: Option<Str<'a>>,
    #[serde(borrow, default)]
    dedup_key: Option<Str<'a>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    /// CloudEvents (structured mode).
    #[serde(borrow, default)]
    specversion: Option<Str<'a>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

impl<'a> AlertObject<'a> {
    fn into_alert(
        self,
        with_status: bool,
        times: &mut TimeCache<'a>,
    ) -> Result<Alert<'a>, Invalid> {
        let labels = match self.labels {
            None => {
                return Err(Invalid::new(
                    InvalidKind::EmptyLabels,
                    "alert has no labels",
                ));
            }
            Some(l) => l.into_pairs("label")?,
        };
        if labels.is_empty() {
            return Err(Invalid::new(
                InvalidKind::EmptyLabels,
                "alert has an empty label set",
            ));
        }
        let annotations = match self.annotations {
            None => Vec::new(),
            Some(a) => a.into_pairs("annotation")?,
        };
        let starts_at = times.starts.parse("startsAt", self.starts_at)?;
        let ends_at = times.ends.parse("endsAt", self.ends_at)?;
        let status = match (with_status, self.status) {
            (_, None) => None,
            (false, Some(_)) => None,
            (true, Some(Str(s))) => match &*s {
                "firing" => Some(Status::Firing),
                "resolved" => Some(Status::Resolved),
                other => {
                    return Err(Invalid::new(
                        InvalidKind::BadField,
                        format!("status {other:?} is neither \"firing\" nor \"resolved\""),
                    ));
                }
            },
        };
        Ok(Alert {
            labels,
            annotations,
            starts_at,
            ends_at,
            generator_url: self.generator_url.map(|s| s.0).filter(|s| !s.is_empty()),
            status,
        })
    }
}

/// The last timestamp parsed per field. Prometheus stamps a whole batch with
/// one `endsAt` and re-sends the same `startsAt`: most parses are repeats.
#[derive(Default)]
struct TimeCache<'a> {
    starts: LastTime<'a>,
    ends: LastTime<'a>,
}

#[derive(Default)]
struct LastTime<'a>(Option<(Cow<'a, str>, Option<Ts>)>);

impl<'a> LastTime<'a> {
    fn parse(&mut self, field: &str, v: Option<Str<'a>>) -> Result<Option<Ts>, Invalid> {
        let s = match v {
            None => return Ok(None),
            Some(Str(s)) if s.is_empty() => return Ok(None),
            Some(Str(s)) => s,
        };
        if let Some((last, ts)) = &self.0 {
            if *last == s {
                return Ok(*ts);
            }
        }
        let ts = Ts::parse_rfc3339(&s).map_err(|_| {
            Invalid::new(
                InvalidKind::BadTimestamp,
                format!("{field} {s:?} is not an RFC 3339 timestamp"),
            )
        })?;
        self.0 = Some((s, ts));
        Ok(ts)
    }
}

/// A string borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The label vectors of decoded alerts, kept for the next message's alerts.
///
/// Two vectors per alert (labels, annotations) were more than half of all
/// allocations in a replay (BENCHMARKS.md, "Replay: reading the file"). The
/// hot loops (replay, the route and decide stages) hand a decoded message back
/// with [`recycle`] once decided; its vectors, emptied, serve the next
/// message's alerts. Per thread, bounded in count and in each vector's size,
/// so a message with huge label sets does not stay resident through it.
mod spare {
    use super::{Cow, LabelPairs};
    use std::cell::RefCell;

    type Pairs = Vec<(Cow<'static, str>, Cow<'static, str>)>;

    /// Vectors kept per thread (a few messages' worth).
    const KEPT: usize = 512;
    /// Larger vectors are freed, not kept.
    const LARGEST: usize = 32;

    thread_local! {
        static SPARE: RefCell<Vec<Pairs>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty vector: a spare one, or a new one with room for `n` pairs.
    pub(super) fn take<'a>(n: usize) -> LabelPairs<'a> {
        SPARE
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(n))
    }

    /// Keeps `v`'s allocation for [`take`] when there is room.
    pub(super) fn give(s: &mut Vec<Pairs>, mut v: LabelPairs<'_>) {
        if s.len() >= KEPT || v.capacity() == 0 || v.capacity() > LARGEST {
            return;
        }
        v.clear();
        // Empty, so no pair outlives its message. The standard library
        // collects a vector's `into_iter().map(..)` into its own allocation
        // when the layouts agree (they do: only the lifetime differs); were it
        // ever to stop, this would give back an unallocated vector, still correct.
        s.push(v.into_iter().map(|_| unreachable!("empty")).collect());
    }

    pub(super) fn with<T>(f: impl FnOnce(&mut Vec<Pairs>) -> T) -> T {
        SPARE.with(|s| f(&mut s.borrow_mut()))
    }
}

/// Hands a decoded message's label vectors back for the next message's
/// alerts (see `spare`); dropping it instead is always correct.
pub fn recycle(decoded: Decoded<'_>) {
    spare::with(|s| {
        for a in decoded.alerts.into_iter().flatten() {
            spare::give(s, a.labels);
            spare::give(s, a.annotations);
        }
    });
}

/// A JSON object of string pairs. Problems that make the alert (not the message)
/// invalid are recorded instead of failing the parse, so the reason is precise.
struct LabelField<'a> {
    pairs: LabelPairs<'a>,
    problem: Option<String>,
}

impl<'a> LabelField<'a> {
    fn with_capacity(n: usize) -> LabelField<'a> {
        LabelField {
            pairs: spare::take(n),
            problem: None,
        }
    }

    /// One field of the object; the first problem is the one reported.
    /// Always inlined: called once per label on the hot path, where a call
    /// passed the pair through the stack (2–4% of a replay's CPU, measured).
    #[inline(always)]
    fn add(&mut self, name: Cow<'a, str>, value: StrOrOther<'a>) {
        match value {
            StrOrOther::Str(v) => {
                if name.is_empty() && self.problem.is_none() {
                    self.problem = Some("name is empty".into());
                }
                self.pairs.push((name, v));
            }
            StrOrOther::Other(kind) => {
                if self.problem.is_none() {
                    self.problem = Some(format!(
                        "{name:?} has a {kind} value; values must be strings"
                    ));
                }
            }
        }
    }

    fn into_pairs(mut self, what: &str) -> Result<LabelPairs<'a>, Invalid> {
        if let Some(p) = self.problem {
            return Err(Invalid::new(InvalidKind::BadLabel, format!("{what} {p}")));
        }
        // Prometheus (Go) writes a map's keys in order: one comparison a pair
        // finds them sorted and distinct.
        if !self.pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            self.pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if let Some(w) = self.pairs.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(Invalid::new(
                    InvalidKind::BadLabel,
                    format!("{what} {:?} appears twice", w[0].0),
                ));
            }
        }
        Ok(self.pairs)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for LabelField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LabelField<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelField<'de>, A::Error> {
                let mut field = LabelField::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Str(name)) = map.next_key::<Str<'de>>()? {
                    let value = map.next_value::<StrOrOther<'de>>()?;
                    field.add(name, value);
                }
                Ok(field)
            }
        }
        d.deserialize_map(V)
    }
}

/// A string, or the name of the JSON type found instead.
enum StrOrOther<'a> {
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for StrOrOther<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrOrOther<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrOther<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrOther::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrOther::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("null"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrOther::Other("array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrOther::Other("object"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recycled vectors serve the next message, which decodes exactly as it
    /// would have with new ones; oversized vectors are not kept.
    #[test]
    fn recycled_label_vectors_serve_the_next_message_unchanged() {
        let first = br#"[{"labels":{"alertname":"A","job":"j"},"annotations":{"s":"x"}},
            {"labels":{"alertname":"B"}}]"#;
        let second = br#"[{"labels":{"alertname":"C","z":"\u00e9"},"annotations":{"s":"y"}},
            {"labels":{"alertname":"D","e":""}},{"labels":{"alertname":"E"}}]"#;
        let pointers = |d: &Decoded<'_>| -> Vec<usize> {
            d.alerts
                .iter()
                .flatten()
                .flat_map(|a| [&a.labels, &a.annotations])
                .filter(|v| v.capacity() > 0)
                .map(|v| v.as_ptr() as usize)
                .collect()
        };
        let want = format!("{:?}", decode_reference(second));
        // Empty the thread's spares, so what the second message gets is the first's.
        spare::with(|s| s.clear());
        let d = decode(first).unwrap();
        let given = pointers(&d);
        recycle(d);
        let d = decode(second).unwrap();
        let reused = pointers(&d).iter().filter(|p| given.contains(p)).count();
        assert_eq!(given.len(), 3, "A's labels and annotations, B's labels");
        assert_eq!(reused, 3, "the first message's vectors serve the second");
        assert_eq!(format!("{:?}", Ok::<_, Invalid>(d)), want);

        // A vector grown past the size kept is freed.
        spare::with(|s| s.clear());
        let many: String = (0..100).map(|i| format!(r#""l{i:03}":"v","#)).collect();
        let big = format!(r#"[{{"labels":{{{}"alertname":"X"}}}}]"#, many);
        let d = decode(big.as_bytes()).unwrap();
        assert_eq!(d.alerts[0].as_ref().unwrap().labels.len(), 101);
        recycle(d);
        assert!(
            spare::with(|s| s.iter().all(|v| v.capacity() <= 32)),
            "a vector of 101 pairs is freed, not kept"
        );
    }

    /// Each element exactly as written, whatever its strings and nesting hold.
    #[test]
    fn array_elements_are_the_bytes_of_each_element() {
        let text = br#" [ {"labels":{"a":"x]\"}{,"}} ,
            {"labels":{"b":"[["},"n":[1,[2]],"s":"\\"}, 7 ,"str",[] ]  "#;
        let got = array_elements(text).unwrap();
        let want: [&[u8]; 5] = [
            br#"{"labels":{"a":"x]\"}{,"}}"#,
            br#"{"labels":{"b":"[["},"n":[1,[2]],"s":"\\"}"#,
            b"7",
            br#""str""#,
            b"[]",
        ];
        assert_eq!(got, want);
        assert_eq!(array_elements(b"[]").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(array_elements(b"{\"a\":1}"), None);
        assert_eq!(array_elements(b"[1,2"), None, "an array that does not end");
        assert_eq!(
            array_elements(br#"["\"#),
            None,
            "a string that does not end"
        );
        // What a decoded batch yields, element by element.
        let batch = br#"[{"labels":{"alertname":"A"}},{"labels":{"alertname":"B","x":"\u00e9"}}]"#;
        let decoded = decode(batch).unwrap();
        let again: Vec<_> = array_elements(batch)
            .unwrap()
            .into_iter()
            .map(|e| decode(e).unwrap().alerts.remove(0).unwrap())
            .collect();
        let whole: Vec<_> = decoded.alerts.into_iter().map(Result::unwrap).collect();
        assert_eq!(format!("{again:?}"), format!("{whole:?}"));
    }

    use crate::model::Labels;

    fn one(msg: &str) -> Result<Alert<'_>, Invalid> {
        let d = decode(msg.as_bytes())?;
        assert_eq!(d.alerts.len(), 1);
        d.alerts.into_iter().next().unwrap()
    }

    #[test]
    fn single_prometheus_alert() {
        let msg = r#"{"labels":{"service":"checkout","alertname":"HighErrorRate"},
            "annotations":{"summary":"5% errors"},"startsAt":"2026-11-26T10:00:00Z",
            "endsAt":"2026-11-26T10:04:00Z","generatorURL":"http://prom/graph"}"#;
        let d = decode(msg.as_bytes()).unwrap();
        assert_eq!(d.format, Format::PrometheusAlert);
        let a = d.alerts.into_iter().next().unwrap().unwrap();
        assert_eq!(a.labels[0].0, "alertname", "labels are sorted by name");
        assert_eq!(
            a.fingerprint(),
            crate::model::LabelSet::from_labels(&a.labels).fingerprint()
        );
        let at = |s| Ts::parse_rfc3339(s).unwrap().unwrap();
        assert_eq!(a.status_at(at("2026-11-26T10:01:00Z")), Status::Firing);
        assert_eq!(
            a.status_at(at("2026-11-26T10:04:00Z")),
            Status::Resolved,
            "endsAt at receipt is resolved"
        );
        assert!(
            matches!(a.labels[0].0, Cow::Borrowed(_)),
            "unescaped strings are borrowed"
        );
    }

    #[test]
    fn batch_keeps_good_neighbours_of_a_bad_alert() {
        let msg = r#"[{"labels":{"a":"1"}},{"labels":{"a":2}},{"labels":{}},"nope",{"labels":{"b":"x"},"startsAt":"soon"}]"#;
        let d = decode(msg.as_bytes()).unwrap();
        assert_eq!(d.format, Format::PrometheusBatch);
        let kinds: Vec<_> = d
            .alerts
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                None,
                Some(InvalidKind::BadLabel),
                Some(InvalidKind::EmptyLabels),
                Some(InvalidKind::UnknownShape),
                Some(InvalidKind::BadTimestamp)
            ]
        );
        let err = d.alerts[1].as_ref().unwrap_err();
        assert!(
            err.detail.contains("alert 1") && err.detail.contains("\"a\" has a number value"),
            "{err}"
        );
    }

    #[test]
    fn webhook_payload_carries_status() {
        let msg = r#"{"version":"4","groupKey":"{}:{}","status":"resolved","receiver":"x",
            "alerts":[{"status":"resolved","labels":{"alertname":"A"},"startsAt":"2026-11-26T10:00:00Z",
            "endsAt":"2026-11-26T10:05:00Z","fingerprint":"0000000000000000"},
            {"status":"firing","labels":{"alertname":"B"}}]}"#;
        let d = decode(msg.as_bytes()).unwrap();
        assert_eq!(d.format, Format::AlertmanagerWebhook);
        let statuses: Vec<_> = d
            .alerts
            .iter()
            .map(|a| a.as_ref().unwrap().status)
            .collect();
        assert_eq!(statuses, vec![Some(Status::Resolved), Some(Status::Firing)]);
    }

    #[test]
    fn invalid_messages_have_precise_reasons() {
        let kind = |m: &str| {
            decode(m.as_bytes())
                .err()
                .map(|e| e.kind)
                .or_else(|| one(m).err().map(|e| e.kind))
        };
        assert_eq!(kind("not json at all"), Some(InvalidKind::NotJson));
        assert_eq!(kind("{\"labels\": "), Some(InvalidKind::NotJson));
        assert_eq!(kind("42"), Some(InvalidKind::UnknownShape));
        assert_eq!(kind(r#"{"foo":"bar"}"#), Some(InvalidKind::UnknownShape));
        assert_eq!(kind(r#"{"labels":{}}"#), Some(InvalidKind::EmptyLabels));
        assert_eq!(
            kind(r#"{"labels":{"a":null}}"#),
            Some(InvalidKind::BadLabel)
        );
        assert_eq!(
            kind(r#"{"labels":{"a":"1","a":"2"}}"#),
            Some(InvalidKind::BadLabel)
        );
        assert_eq!(kind(r#"{"labels":{"":"1"}}"#), Some(InvalidKind::BadLabel));
        assert_eq!(
            kind(r#"{"labels":{"a":"1"},"endsAt":"2026-99-01T00:00:00Z"}"#),
            Some(InvalidKind::BadTimestamp)
        );
        assert_eq!(
            kind(r#"{"labels":{"a":"1"},"annotations":{"x":[1]}}"#),
            Some(InvalidKind::BadLabel)
        );
        assert_eq!(
            kind(r#"{"version":"3","alerts":[]}"#),
            Some(InvalidKind::UnknownShape)
        );
        assert_eq!(
            decode(&[0xff, 0xfe]).unwrap_err().kind,
            InvalidKind::NotUtf8
        );
        assert_eq!(decode(b"   ").unwrap_err().kind, InvalidKind::NotJson);
    }

    /// A message nested thousands of levels deep once overflowed the stack
    /// (a poison pill that crash-looped every instance) and decoded in
    /// quadratic time. Now it is refused, whatever nests.
    #[test]
    fn deep_nesting_is_refused_not_followed() {
        let cloudevents = |n: usize| {
            let mut m = r#"{"labels":{"alertname":"A"}}"#.to_string();
            for _ in 0..n {
                m = format!(r#"{{"specversion":"1.0","type":"x","data":{m}}}"#);
            }
            m
        };
        for n in [2, 2_000, 8_000] {
            let e = decode(cloudevents(n).as_bytes()).unwrap_err();
            assert_eq!(e.kind, InvalidKind::TooDeep, "{n} levels: {e}");
        }
        assert!(decode(cloudevents(1).as_bytes()).unwrap().alerts[0].is_ok());
        let nest =
            |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
            let deep = nest(open, close, 100_000);
            // A field no shape reads is skipped (iteratively, in linear time).
            let ignored = format!(r#"{{"labels":{{"a":"1"}},"extra":{deep}}}"#);
            assert!(decode(ignored.as_bytes()).unwrap().alerts[0].is_ok());
            // Where a value is read, the nesting is refused with its reason.
            let read = format!(r#"{{"labels":{{"a":"1"}},"annotations":{{"x":{deep}}}}}"#);
            let kind = |m: &str| match decode(m.as_bytes()) {
                Err(e) => e.kind,
                Ok(d) => d.alerts[0].as_ref().unwrap_err().kind,
            };
            assert!(matches!(
                kind(&read),
                InvalidKind::TooDeep | InvalidKind::BadLabel
            ));
            // Nothing deep is an alert; the reason depends on the shape.
            kind(&deep);
            kind(&format!("[{deep}]"));
        }
    }

    #[test]
    fn escaped_strings_decode_and_unset_times_are_none() {
        let a = one(r#"{"labels":{"msg":"a \"quoted\"\nline"},"startsAt":"0001-01-01T00:00:00Z","endsAt":""}"#).unwrap();
        assert_eq!(a.labels[0].1, "a \"quoted\"\nline");
        assert_eq!((a.starts_at, a.ends_at), (None, None));
    }

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/formats")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn grafana_webhook() {
        let bytes = sample("grafana.json");
        let d = decode(&bytes).unwrap();
        assert_eq!(d.format, Format::GrafanaWebhook);
        let a = d.alerts[0].as_ref().unwrap();
        assert_eq!((a.status, a.ends_at), (Some(Status::Firing), None));
        assert_eq!(a.labels.get("service"), Some("indexer"));
    }

    #[test]
    fn pagerduty_events_share_an_identity_by_dedup_key() {
        let (t, r) = (
            sample("pagerduty-trigger.json"),
            sample("pagerduty-resolve.json"),
        );
        let (trigger, resolve) = (decode(&t).unwrap(), decode(&r).unwrap());
        assert_eq!(trigger.format, Format::PagerDutyEvent);
        let (a, b) = (
            trigger.alerts[0].as_ref().unwrap(),
            resolve.alerts[0].as_ref().unwrap(),
        );
        assert_eq!(
            a.fingerprint(),
            b.fingerprint(),
            "the resolve matches the trigger"
        );
        assert_eq!(
            (a.status, b.status),
            (Some(Status::Firing), Some(Status::Resolved))
        );
        assert_eq!(
            a.annotations.get("summary"),
            Some("Checkout p99 latency over 2s")
        );
        assert_eq!(a.annotations.get("component"), Some("checkout"));
        let bad = decode(br#"{"event_action":"snooze","dedup_key":"x"}"#).unwrap();
        assert_eq!(
            bad.alerts[0].as_ref().unwrap_err().kind,
            InvalidKind::BadField
        );
        let keyless = decode(br#"{"event_action":"resolve"}"#).unwrap();
        assert!(keyless.alerts[0].is_err());
    }

    /// The example event of PagerDuty's Events API v2 documentation, as
    /// written there (an ISO 8601 offset without a colon, custom details,
    /// images, links, client).
    #[test]
    fn pagerduty_documented_example_is_accepted() {
        let raw = sample("pagerduty-documented.json");
        let d = decode(&raw).unwrap();
        let a = d.alerts[0].as_ref().unwrap();
        assert_eq!(a.starts_at, Some(Ts(1_437_122_578_315)));
        assert_eq!(a.annotations.get("component"), Some("postgres"));
        // An optional timestamp it cannot read does not lose the event.
        let odd = decode(
            br#"{"event_action":"trigger","dedup_key":"k","payload":{"summary":"s","source":"x","severity":"info","timestamp":"last tuesday"}}"#,
        )
        .unwrap();
        let a = odd.alerts[0].as_ref().unwrap();
        assert_eq!(a.starts_at, None);
        assert_eq!(
            a.annotations.get("timestamp_unparsed"),
            Some("last tuesday")
        );
    }

    #[test]
    fn cloudevents_carry_any_supported_message() {
        let bytes = sample("cloudevent.json");
        let d = decode(&bytes).unwrap();
        assert_eq!(d.format, Format::CloudEvent);
        assert_eq!(
            d.alerts[0].as_ref().unwrap().labels.get("alertname"),
            Some("HighErrorRate")
        );
        assert_eq!(
            decode(br#"{"specversion":"0.3","data":{}}"#)
                .unwrap_err()
                .kind,
            InvalidKind::UnknownShape
        );
        assert!(
            decode(br#"{"specversion":"1.0","data":"not an alert"}"#)
                .unwrap_err()
                .detail
                .contains("CloudEvent data")
        );
    }
}
