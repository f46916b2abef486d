//! Alertmanager's HTTP API v2, read side: the JSON shapes of its OpenAPI spec
//! (`gettableAlert`, `alertGroup`, `gettableSilence`, `alertmanagerStatus`,
//! `receiver`), built from what squadron knows, so that `amtool alert query`,
//! `amtool silence query` and Alertmanager data sources read squadron.
//!
//! What squadron shows: the alerts it holds in groups (admitted, waiting or
//! notified, not yet resolved), each with its squad, goalkeeper and
//! acknowledgement; every silence, the rule files' (read-only) and the
//! runtime ones (`crate::control`). Alerts dropped, silenced or inhibited on
//! arrival are not kept, so they are not listed (their fates are in the audit
//! topic). Each instance shows the groups of its own partitions.

use crate::control::Controls;
use crate::engine::GroupView;
use crate::model::{Status, Ts};
use crate::rules::{Matcher, RuleSet, Silence};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The query of `GET /api/v2/alerts` and `/api/v2/alerts/groups`.
pub struct AlertQuery {
    pub active: bool,
    pub silenced: bool,
    pub inhibited: bool,
    pub filter: Vec<Matcher>,
    /// A regex on receiver names.
    pub receiver: Option<regex::Regex>,
}

impl AlertQuery {
    /// Alertmanager's parameters; booleans default to true.
    pub(crate) fn parse(q: &super::http::Query) -> Result<AlertQuery, String> {
        let flag = |name: &str| match q.first(name) {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!("{name}={other:?} is not true or false")),
        };
        Ok(AlertQuery {
            active: flag("active")?,
            silenced: flag("silenced")?,
            inhibited: flag("inhibited")?,
            filter: q.matchers("filter")?,
            receiver: q
                .first("receiver")
                .map(|r| regex::Regex::new(&format!("^(?:{r})$")))
                .transpose()
                .map_err(|e| format!("bad receiver regex: {e}"))?,
        })
    }
}

/// The receivers a group's notifications reach: its squad (the squad's
/// topic) and the squad's configured receivers.
fn receivers(rules: &RuleSet, squad: &str) -> Vec<String> {
    let mut names = vec![squad.to_owned()];
    if let Some(i) = rules.squad_by_name(squad) {
        names.extend(
            rules.squads[i as usize]
                .receivers
                .iter()
                .map(|r| r.name.clone()),
        );
    }
    names
}

fn goalkeeper(rules: &RuleSet, controls: &Controls, squad: &str, now: Ts) -> Option<String> {
    if let Some(p) = controls.on_duty(squad, now) {
        return Some(p.to_owned());
    }
    let i = rules.squad_by_name(squad)?;
    rules.squads[i as usize]
        .goalkeeper
        .as_ref()?
        .on_duty(now)
        .map(|p| p.to_string())
}

/// `alertGroup`s, and each alert as a `gettableAlert`, filtered by `q`.
pub fn alert_groups(
    groups: &[GroupView],
    rules: &RuleSet,
    controls: &Controls,
    q: &AlertQuery,
    now: Ts,
) -> Vec<Value> {
    groups
        .iter()
        .filter_map(|g| {
            let receivers = receivers(rules, &g.squad);
            if let Some(re) = &q.receiver {
                if !receivers.iter().any(|r| re.is_match(r)) {
                    return None;
                }
            }
            let goalkeeper = goalkeeper(rules, controls, &g.squad, now);
            let ack = controls.ack(&g.key);
            let alerts: Vec<Value> = g
                .alerts
                .iter()
                .filter(|a| a.status == Status::Firing)
                .filter(|a| q.filter.iter().all(|m| m.matches(&a.labels)))
                .filter_map(|a| {
                    // A held alert that a silence or an inhibition covers now
                    // is suppressed, and leaves its group at the next flush.
                    let silenced_by: Vec<&str> = a.silenced_by.as_deref().into_iter().collect();
                    let inhibited_by: Vec<&str> = a.inhibited_by.as_deref().into_iter().collect();
                    let (state, shown) = match (silenced_by.is_empty(), inhibited_by.is_empty()) {
                        (true, true) => ("active", q.active),
                        (false, _) => ("suppressed", q.silenced),
                        (true, false) => ("suppressed", q.inhibited),
                    };
                    shown.then_some((a, silenced_by, inhibited_by, state))
                })
                .map(|(a, silenced_by, inhibited_by, state)| {
                    json!({
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "startsAt": a.starts_at,
                        "endsAt": a.ends_at,
                        "updatedAt": g.last_notified.unwrap_or(a.starts_at),
                        "generatorURL": a.generator_url.as_deref().unwrap_or(""),
                        "fingerprint": a.fingerprint.to_string(),
                        "receivers": receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
                        // inhibitedBy names the inhibit rule (Alertmanager lists source fingerprints).
                        "status": {"state": state, "silencedBy": silenced_by, "inhibitedBy": inhibited_by, "mutedBy": []},
                        // squadron's additions.
                        "squad": &*g.squad,
                        "goalkeeper": goalkeeper,
                        "groupKey": &*g.key,
                        "acknowledged": ack,
                    })
                })
                .collect();
            (!alerts.is_empty()).then(|| {
                json!({
                    "labels": g.labels,
                    // The route that grouped them: the squad's.
                    "routeLabels": {"squad": &*g.squad},
                    "receiver": {"name": &*g.squad},
                    "alerts": alerts,
                })
            })
        })
        .collect()
}

/// The alerts of [`alert_groups`], flat.
pub fn alerts(
    groups: &[GroupView],
    rules: &RuleSet,
    controls: &Controls,
    q: &AlertQuery,
    now: Ts,
) -> Vec<Value> {
    alert_groups(groups, rules, controls, q, now)
        .into_iter()
        .flat_map(|mut g| match g["alerts"].take() {
            Value::Array(a) => a,
            _ => Vec::new(),
        })
        .collect()
}

fn silence_state(s: &Silence, now: Ts) -> &'static str {
    if now < s.starts_at {
        "pending"
    } else if now < s.ends_at {
        "active"
    } else {
        "expired"
    }
}

/// A silence as a `gettableSilence`.
pub fn silence(
    s: &Silence,
    updated_at: Ts,
    annotations: Option<&BTreeMap<String, String>>,
    now: Ts,
) -> Value {
    json!({
        "annotations": annotations.cloned().unwrap_or_default(),
        "id": &*s.id,
        "status": {"state": silence_state(s, now)},
        "updatedAt": updated_at,
        "matchers": s.matchers.iter().map(crate::control::ApiMatcher::of).collect::<Vec<_>>(),
        "startsAt": s.starts_at,
        "endsAt": s.ends_at,
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

/// Every silence, the rule files' (read-only; updated when they start) and
/// the runtime ones, with the time each was last changed and its annotations.
fn all_silences<'a>(
    rules: &'a RuleSet,
    controls: &'a Controls,
) -> impl Iterator<Item = (&'a Silence, Ts, Option<&'a BTreeMap<String, String>>)> + 'a {
    let runtime = controls
        .silences
        .values()
        .map(|r| (&r.silence, r.record.updated_at, Some(&r.record.annotations)));
    rules
        .silences
        .iter()
        .map(|s| (s, s.starts_at, None))
        .chain(runtime)
}

pub fn silence_by_id(rules: &RuleSet, controls: &Controls, id: &str, now: Ts) -> Option<Value> {
    all_silences(rules, controls)
        .find(|(s, _, _)| &*s.id == id)
        .map(|(s, updated, a)| silence(s, updated, a, now))
}

/// `GET /api/v2/silences?filter=...`: a silence is listed when every filter
/// matcher matches the labels its equality matchers describe (Alertmanager's
/// rule). Sorted as Alertmanager sorts them: active (ending first), pending
/// (starting first), expired (ended last first).
pub fn silences(rules: &RuleSet, controls: &Controls, filter: &[Matcher], now: Ts) -> Vec<Value> {
    let mut listed: Vec<_> = all_silences(rules, controls)
        .filter(|(s, _, _)| {
            let labels = crate::model::LabelSet::from_pairs(
                s.matchers
                    .iter()
                    .filter(|m| m.op == crate::rules::matcher::Op::Eq)
                    .map(|m| (&*m.name, &*m.value)),
            );
            filter.iter().all(|f| f.matches(&labels))
        })
        .collect();
    let rank = |s: &Silence| match silence_state(s, now) {
        "active" => (0, s.ends_at.millis()),
        "pending" => (1, s.starts_at.millis()),
        _ => (2, -s.ends_at.millis()),
    };
    listed.sort_by_key(|(s, _, _)| rank(s));
    listed
        .into_iter()
        .map(|(s, updated, a)| silence(s, updated, a, now))
        .collect()
}

/// `GET /api/v2/status`. Clustering is Kafka's business: `disabled`, no peers.
pub fn status(rules: Option<&RuleSet>, instance: &str, started: Ts) -> Value {
    let original = match rules {
        Some(r) => format!(
            "# squadron rules, digest {}\n# squads: {}\n# silences: {}\n",
            r.digest,
            r.squads
                .iter()
                .map(|s| &*s.name)
                .collect::<Vec<_>>()
                .join(", "),
            r.silences.len()
        ),
        None => "# rules not loaded yet\n".into(),
    };
    json!({
        "cluster": {"name": instance, "peers": [], "status": "disabled"},
        "config": {"original": original},
        "uptime": started,
        "versionInfo": {
            "branch": "",
            "buildDate": "",
            "buildUser": "",
            "goVersion": "",
            "revision": "",
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

/// `GET /api/v2/receivers`: every squad and every receiver it declares.
pub fn receiver_list(rules: &RuleSet) -> Vec<Value> {
    rules
        .squads
        .iter()
        .flat_map(|s| receivers(rules, &s.name))
        .map(|name| json!({"name": name}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        crate::rules::compile(&[(
            "r.yaml".into(),
            "squads:\n  - name: payments\n    services: [checkout]\n    receivers: [{name: pay-hook, webhook: {url: 'http://x'}}]\nsilences:\n  - matchers: ['alertname=\"Deploy\"', 'env=~\"stag.*\"']\n    starts_at: '2026-01-01T00:00:00Z'\n    ends_at: '2026-01-02T00:00:00Z'\n    created_by: ops\n    comment: release window\n"
                .into(),
        )])
        .unwrap()
    }

    #[test]
    fn silences_have_alertmanagers_shape_and_filter() {
        let r = rules();
        let now = Ts::parse_rfc3339("2026-01-01T12:00:00Z").unwrap().unwrap();
        let none = Controls::default();
        let all = silences(&r, &none, &[], now);
        assert_eq!(all.len(), 1);
        let s = &all[0];
        assert_eq!(s["status"]["state"], "active");
        assert_eq!(s["createdBy"], "ops");
        assert_eq!(s["matchers"][1]["isRegex"], true);
        assert_eq!(s["matchers"][1]["isEqual"], true);
        let f = |m: &str| vec![Matcher::parse(m).unwrap()];
        assert_eq!(silences(&r, &none, &f("alertname=Deploy"), now).len(), 1);
        assert_eq!(silences(&r, &none, &f("alertname=Other"), now).len(), 0);
        let later = Ts::parse_rfc3339("2026-01-03T00:00:00Z").unwrap().unwrap();
        assert_eq!(
            silence(&r.silences[0], later, None, later)["status"]["state"],
            "expired"
        );
        assert_eq!(
            receiver_list(&r),
            // The fallback squad for alerts no squad owns is a receiver too.
            vec![
                json!({"name": "payments"}),
                json!({"name": "pay-hook"}),
                json!({"name": "unowned"})
            ]
        );
    }
}
