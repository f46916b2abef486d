//! The HTTP API of runtime controls ([`crate::control`]):
//!
//! - Alertmanager's silence endpoints (`GET|POST /api/v2/silences`,
//!   `GET|DELETE /api/v2/silence/{id}`), so `amtool silence add|query|expire`
//!   work unchanged. Rule-file silences are listed read-only beside runtime ones.
//! - squadron's own: `GET|POST|DELETE /api/v1/acks` (acknowledge a group),
//!   `GET|POST /api/v1/overrides`, `DELETE /api/v1/overrides/{id}` (someone
//!   else on duty), and `GET /api/v1/goalkeepers` (who is on duty, and the rota).
//!
//! Writes go to the controls topic and are answered once this instance has
//! read them back. Who made a change (the authenticated user, or the client's
//! address) goes to the audit trail with it.

use super::http::bytes_body::{self, Body};
use super::http::{Query, Req, Shared, json, read_body, rules, text};
use crate::control::{self, Ack, Override, Record, Refused, SilenceChange};
use crate::model::Ts;
use crate::pipeline::wall_clock;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// Request bodies of these endpoints are small.
const MAX_BODY: usize = 64 * 1024;

/// Answers the request when its path is one of these endpoints.
pub(super) async fn route(
    shared: &Shared,
    req: Req,
    peer: std::net::IpAddr,
    body_timeout: std::time::Duration,
) -> Result<Response<Body>, Req> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let ours = matches!(
        path.as_str(),
        "/api/v2/silences" | "/api/v1/acks" | "/api/v1/overrides" | "/api/v1/goalkeepers"
    ) || path.starts_with("/api/v2/silence/")
        || path.starts_with("/api/v1/overrides/");
    if !ours {
        return Err(req);
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let who = principal(&req, peer);
    let now = wall_clock();
    let rules = match rules(shared) {
        Ok(r) => r,
        Err(resp) => return Ok(*resp),
    };
    if shared.controls.as_ref().is_some_and(|c| !c.caught_up()) {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "still reading the controls topic (silences, acknowledgements, overrides): try again in a moment\n",
        ));
    }
    let table = shared
        .controls
        .as_ref()
        .map(|c| c.snapshot())
        .unwrap_or_default();
    Ok(match (&method, path.as_str()) {
        (&Method::GET, "/api/v2/silences") => match query.matchers("filter") {
            Ok(filter) => json(
                StatusCode::OK,
                &super::amapi::silences(&rules, &table, &filter, now),
            ),
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        },
        (&Method::GET, p) if p.starts_with("/api/v2/silence/") => {
            let id = &p["/api/v2/silence/".len()..];
            match super::amapi::silence_by_id(&rules, &table, id, now) {
                Some(s) => json(StatusCode::OK, &s),
                None => text(StatusCode::NOT_FOUND, "silence not found\n"),
            }
        }
        (&Method::POST, "/api/v2/silences") => {
            let Some(log) = writable(shared) else {
                return Ok(no_controls());
            };
            let body = match read_body(shared, req, MAX_BODY, body_timeout).await {
                Ok(b) => b,
                Err(resp) => return Ok(resp),
            };
            let posted: control::PostableSilence = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => return Ok(bad_request(&format!("not a postable silence: {e}"))),
            };
            if let Some(id) = posted.id.as_deref() {
                if rules.silences.iter().any(|s| &*s.id == id) {
                    return Ok(bad_request(&format!(
                        "silence {id} comes from a rule file: change it there"
                    )));
                }
            }
            let (records, id, action) =
                match control::post_silence(&table, posted, now, control::new_id) {
                    Ok(SilenceChange::Put(r)) => {
                        let action = if table.silences.contains_key(&r.id) {
                            "updated"
                        } else {
                            "created"
                        };
                        let id = r.id.clone();
                        (vec![Record::Silence(r)], id, action)
                    }
                    Ok(SilenceChange::Replace { expire, new }) => {
                        let id = new.id.clone();
                        (
                            vec![Record::Silence(expire), Record::Silence(new)],
                            id,
                            "replaced",
                        )
                    }
                    Err(Refused::Invalid(m)) => return Ok(bad_request(&m)),
                    Err(Refused::NotFound(m)) => {
                        return Ok(text(StatusCode::NOT_FOUND, &format!("{m}\n")));
                    }
                };
            match log.write(&records, &who, action).await {
                Ok(()) => json(StatusCode::OK, &json!({"silenceID": id})),
                Err(e) => unavailable(e),
            }
        }
        (&Method::DELETE, p) if p.starts_with("/api/v2/silence/") => {
            let Some(log) = writable(shared) else {
                return Ok(no_controls());
            };
            let id = &p["/api/v2/silence/".len()..];
            if rules.silences.iter().any(|s| &*s.id == id) {
                return Ok(bad_request(&format!(
                    "silence {id} comes from a rule file: remove it there"
                )));
            }
            match control::expire_silence(&table, id, now) {
                None => text(StatusCode::NOT_FOUND, "silence not found\n"),
                Some(r) => match log.write(&[Record::Silence(r)], &who, "expired").await {
                    Ok(()) => Response::builder()
                        .status(StatusCode::OK)
                        .body(bytes_body::full(Vec::new()))
                        .expect("response"),
                    Err(e) => unavailable(e),
                },
            }
        }
        (&Method::GET, "/api/v1/acks") => {
            json(StatusCode::OK, &table.acks.values().collect::<Vec<_>>())
        }
        (&Method::POST, "/api/v1/acks") => {
            let Some(log) = writable(shared) else {
                return Ok(no_controls());
            };
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct PostAck {
                group_key: String,
                by: String,
                #[serde(default)]
                comment: String,
            }
            let body = match read_body(shared, req, MAX_BODY, body_timeout).await {
                Ok(b) => b,
                Err(resp) => return Ok(resp),
            };
            let p: PostAck = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    return Ok(bad_request(&format!(
                        "not an acknowledgement ({{\"groupKey\": ..., \"by\": ..., \"comment\": ...}}): {e}"
                    )));
                }
            };
            if p.group_key.is_empty() || p.by.trim().is_empty() {
                return Ok(bad_request("groupKey and by are required"));
            }
            let ack = Ack {
                group_key: control::engine_group_key(&p.group_key),
                by: p.by,
                comment: p.comment,
                at: now,
            };
            match log
                .write(&[Record::Ack(ack.clone())], &who, "created")
                .await
            {
                Ok(()) => json(StatusCode::OK, &ack),
                Err(e) => unavailable(e),
            }
        }
        (&Method::DELETE, "/api/v1/acks") => {
            let Some(log) = writable(shared) else {
                return Ok(no_controls());
            };
            let Some(key) = query.first("groupKey").map(control::engine_group_key) else {
                return Ok(bad_request("give the group as ?groupKey=..."));
            };
            if table.ack(&key).is_none() {
                return Ok(text(
                    StatusCode::NOT_FOUND,
                    "no acknowledgement for that group\n",
                ));
            }
            match log.remove(&format!("ack/{key}"), &who).await {
                Ok(()) => text(StatusCode::OK, "acknowledgement removed\n"),
                Err(e) => unavailable(e),
            }
        }
        (&Method::GET, "/api/v1/overrides") => json(
            StatusCode::OK,
            &table.overrides.values().collect::<Vec<_>>(),
        ),
        (&Method::POST, "/api/v1/overrides") => {
            let Some(log) = writable(shared) else {
                return Ok(no_controls());
            };
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct PostOverride {
                squad: String,
                person: String,
                starts_at: Ts,
                ends_at: Ts,
                created_by: String,
                #[serde(default)]
                comment: String,
            }
            let body = match read_body(shared, req, MAX_BODY, body_timeout).await {
                Ok(b) => b,
                Err(resp) => return Ok(resp),
            };
            let p: PostOverride = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => return Ok(bad_request(&format!("not a duty override: {e}"))),
            };
            if rules.squad_by_name(&p.squad).is_none() {
                return Ok(bad_request(&format!("no squad {:?} in the rules", p.squad)));
            }
            if p.person.trim().is_empty() || p.created_by.trim().is_empty() {
                return Ok(bad_request("person and createdBy are required"));
            }
            if p.ends_at <= p.starts_at || p.ends_at <= now {
                return Ok(bad_request(
                    "endsAt must be after startsAt and in the future",
                ));
            }
            let o = Override {
                id: control::new_id(),
                squad: p.squad,
                person: p.person,
                starts_at: p.starts_at,
                ends_at: p.ends_at,
                created_by: p.created_by,
                comment: p.comment,
                updated_at: now,
            };
            match log
                .write(&[Record::Override(o.clone())], &who, "created")
                .await
            {
                Ok(()) => json(StatusCode::OK, &o),
                Err(e) => unavailable(e),
            }
        }
        (&Method::DELETE, p) if p.starts_with("/api/v1/overrides/") => {
            let Some(log) = writable(shared) else {
                return Ok(no_controls());
            };
            let id = &p["/api/v1/overrides/".len()..];
            if !table.overrides.contains_key(id) {
                return Ok(text(StatusCode::NOT_FOUND, "override not found\n"));
            }
            match log.remove(&format!("override/{id}"), &who).await {
                Ok(()) => text(StatusCode::OK, "override removed\n"),
                Err(e) => unavailable(e),
            }
        }
        (&Method::GET, "/api/v1/goalkeepers") => {
            let at = match query.first("at").map(Ts::parse_rfc3339) {
                None => now,
                Some(Ok(Some(t))) => t,
                Some(_) => return Ok(bad_request("at: not an RFC 3339 time")),
            };
            let days = match query.first("days").map(str::parse::<u32>) {
                None => 0,
                Some(Ok(d)) if d <= 366 => d,
                Some(_) => return Ok(bad_request("days: a number of days up to 366")),
            };
            json(
                StatusCode::OK,
                &goalkeepers(&rules, &table, query.first("squad"), at, days),
            )
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    })
}

/// Who is on duty per squad at `at` (overrides included), and the next
/// `days` shifts: what `squadron goalkeeper` prints.
pub fn goalkeepers(
    rules: &crate::rules::RuleSet,
    table: &control::Controls,
    squad: Option<&str>,
    at: Ts,
    days: u32,
) -> Vec<Value> {
    let on_duty = |name: &str, g: Option<&crate::rules::Goalkeeper>, t: Ts| {
        table
            .on_duty(name, t)
            .map(|p| (Some(p.to_string()), "override"))
            .unwrap_or_else(|| {
                let p = g.and_then(|g| g.on_duty(t));
                let source = match g {
                    Some(g) if g.overrides().iter().any(|(s, e, _)| *s <= t && t < *e) => {
                        "rule file override"
                    }
                    Some(_) => "rota",
                    None => "none",
                };
                (p.map(|p| p.to_string()), source)
            })
    };
    rules
        .squads
        .iter()
        .filter(|s| squad.is_none_or(|q| q == &*s.name))
        .filter(|s| s.goalkeeper.is_some() || squad.is_some())
        .map(|s| {
            let g = s.goalkeeper.as_ref();
            let (person, source) = on_duty(&s.name, g, at);
            let shifts: Vec<Value> = g
                .map(|g| g.shifts(at, at.plus(std::time::Duration::from_secs(86_400 * days as u64))))
                .unwrap_or_default()
                .into_iter()
                .filter(|_| days > 0)
                .map(|sh| {
                    let (person, source) = on_duty(&s.name, g, sh.start);
                    json!({"start": sh.start, "end": sh.end, "goalkeeper": person, "source": source})
                })
                .collect();
            json!({
                "squad": &*s.name,
                "at": at,
                "goalkeeper": person,
                "source": source,
                "shifts": shifts,
            })
        })
        .collect()
}

/// The authenticated user, or the client's address when there is none.
fn principal(req: &Req, peer: std::net::IpAddr) -> String {
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some((user, _)) =
        super::web::strip_scheme(header, "Basic").and_then(super::web::decode_basic)
    {
        return format!("{user} ({peer})");
    }
    if super::web::strip_scheme(header, "Bearer").is_some() {
        return format!("bearer token ({peer})");
    }
    format!("anonymous ({peer})")
}

fn writable(shared: &Shared) -> Option<&std::sync::Arc<crate::pipeline::control::ControlLog>> {
    shared.controls.as_ref()
}

fn no_controls() -> Response<Body> {
    text(
        StatusCode::NOT_IMPLEMENTED,
        "runtime controls need the controls topic, which this mode does not run\n",
    )
}

/// Alertmanager answers client errors of the silence API with a JSON string.
fn bad_request(m: &str) -> Response<Body> {
    json(StatusCode::BAD_REQUEST, &m)
}

fn unavailable(e: anyhow::Error) -> Response<Body> {
    tracing::warn!(error = %format!("{e:#}"), "a control change failed");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("not saved: {e:#}\n"),
    )
}
