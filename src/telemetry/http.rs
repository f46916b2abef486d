//! squadron's HTTP server (hyper 1.x): `/metrics`, `/healthz`, `/readyz`,
//! `/api/v1/status`. It reads shared state published by the pipeline; it never
//! touches the engine directly.

use super::metrics::Metrics;
use bytes_body::{Body, full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the pipeline publishes for the HTTP endpoints, refreshed every second.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub rules_digest: String,
    pub rules_loaded_at: Option<String>,
    pub rules_error: Option<String>,
    pub squads: Vec<SquadStatus>,
    pub input_topics: Vec<String>,
    pub assigned_partitions: Vec<String>,
    pub active_alerts: usize,
    pub active_groups: usize,
    pub received: u64,
    /// When the pipeline loop last published this (every commit interval).
    pub heartbeat: Option<crate::model::Ts>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SquadStatus {
    pub name: String,
    pub topic: String,
    pub goalkeeper: Option<String>,
}

#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Mutex<Status>>,
    /// To the task that owns the engine (reloads, active state); `None` in the demo.
    pub commands: Option<tokio::sync::mpsc::Sender<crate::pipeline::Command>>,
    /// Alertmanager-compatible ingest, when enabled.
    pub ingest: Option<Arc<crate::sources::http::HttpIngest>>,
}

impl Shared {
    pub fn ready(&self) -> Result<(), String> {
        let s = self.status.lock().expect("status lock");
        if s.rules_digest.is_empty() {
            return Err("rules not loaded".into());
        }
        if s.assigned_partitions.is_empty() {
            return Err("no input partitions assigned".into());
        }
        let restoring = self.metrics.restoring.get();
        if restoring > 0 {
            return Err(format!(
                "restoring the state of {restoring} partitions from the changelog"
            ));
        }
        let now = crate::pipeline::wall_clock();
        if s.heartbeat
            .is_some_and(|h| now.since(h) > std::time::Duration::from_secs(30))
        {
            return Err("pipeline stalled: no heartbeat for 30 s".into());
        }
        Ok(())
    }
}

/// Serves until `shutdown` is cancelled. Returns the bound address through `bound`.
pub async fn serve(
    addr: SocketAddr,
    shared: Shared,
    shutdown: CancellationToken,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let _ = bound.send(listener.local_addr()?);
    tracing::info!(addr = %listener.local_addr()?, "http server listening");
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&shared, req, peer.ip()).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
}

async fn route(shared: &Shared, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(full(shared.metrics.render()))
            .expect("response"),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match shared.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {why}\n"),
            ),
        },
        (&Method::GET, "/api/v1/status") => {
            let s = shared.status.lock().expect("status lock").clone();
            json(StatusCode::OK, &s)
        }
        (&Method::POST, "/api/v2/alerts") => {
            let reply = ingest(shared, req, peer).await;
            shared
                .metrics
                .ingest_requests
                .with_label_values(&[&reply.status().as_u16().to_string()])
                .inc();
            reply
        }
        (&Method::POST, "/-/reload") => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let cmd = crate::pipeline::Command::Reload {
                source: "http",
                reply: Some(tx),
            };
            match ask(shared, cmd, rx).await {
                Ok(outcome @ crate::pipeline::ReloadOutcome::RolledBack { .. }) => {
                    json(StatusCode::UNPROCESSABLE_ENTITY, &outcome)
                }
                Ok(outcome) => json(StatusCode::OK, &outcome),
                Err(resp) => resp,
            }
        }
        (&Method::GET, path @ ("/api/v1/groups" | "/api/v1/alerts")) => {
            let query = Query::parse(req.uri().query().unwrap_or(""));
            let matchers = match query
                .all("filter")
                .map(crate::rules::Matcher::parse)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(m) => m,
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad filter: {e}\n")),
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let cmd = crate::pipeline::Command::Groups {
                squad: query.first("squad").map(str::to_owned),
                matchers,
                reply: tx,
            };
            match ask(shared, cmd, rx).await {
                Ok(groups) if path == "/api/v1/groups" => json(StatusCode::OK, &groups),
                Ok(groups) => {
                    let alerts: Vec<serde_json::Value> = groups
                        .iter()
                        .flat_map(|g| {
                            g.alerts.iter().map(move |a| {
                                let mut v = serde_json::to_value(a).expect("alert serializes");
                                v["squad"] = serde_json::Value::from(&*g.squad);
                                v["group_key"] = serde_json::Value::from(&*g.key);
                                v
                            })
                        })
                        .collect();
                    json(StatusCode::OK, &alerts)
                }
                Err(resp) => resp,
            }
        }
        (
            _,
            "/metrics" | "/healthz" | "/readyz" | "/api/v1/status" | "/-/reload" | "/api/v1/groups"
            | "/api/v1/alerts" | "/api/v2/alerts",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz, /api/v1/status, /api/v1/groups, /api/v1/alerts, POST /-/reload\n",
        ),
    }
}

/// `POST /api/v2/alerts`: token, size limit, then the ingest decides.
async fn ingest(shared: &Shared, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<Body> {
    use http_body_util::BodyExt;
    let Some(ingest) = &shared.ingest else {
        return text(
            StatusCode::NOT_FOUND,
            "ingest is disabled (http.ingest.enabled)\n",
        );
    };
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !ingest.authorized(auth) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer")
            .body(full(b"missing or wrong bearer token\n".to_vec()))
            .expect("response");
    }
    let limited = http_body_util::Limited::new(req.into_body(), ingest.max_body_bytes);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body over {} bytes\n", ingest.max_body_bytes),
            );
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}\n"),
            );
        }
    };
    let reply = ingest.accept(&body, peer.to_string().as_bytes()).await;
    text(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &reply.body,
    )
}

/// Sends a command to the pipeline task and waits (bounded) for its answer.
async fn ask<T>(
    shared: &Shared,
    cmd: crate::pipeline::Command,
    rx: tokio::sync::oneshot::Receiver<T>,
) -> Result<T, Response<Body>> {
    let Some(commands) = &shared.commands else {
        return Err(text(
            StatusCode::NOT_IMPLEMENTED,
            "not available in this mode\n",
        ));
    };
    if commands.send(cmd).await.is_err() {
        return Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline is not running\n",
        ));
    }
    match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline did not answer within 10 s\n",
        )),
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec_pretty(v).expect("serializes")))
        .expect("response")
}

/// A URL query string: `squad=payments&filter=severity%3D%22critical%22`.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }
    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(body.as_bytes().to_vec()))
        .expect("response")
}

mod bytes_body {
    use http_body_util::Full;
    use hyper::body::Bytes;
    pub type Body = Full<Bytes>;
    pub fn full(v: Vec<u8>) -> Body {
        Full::new(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = Query::parse(
            "squad=payments&filter=severity%3D%22critical%22&filter=env%21%3Dstaging&x=%ZZ%",
        );
        assert_eq!(q.first("squad"), Some("payments"));
        assert_eq!(
            q.all("filter").collect::<Vec<_>>(),
            vec!["severity=\"critical\"", "env!=staging"]
        );
        assert_eq!(q.first("x"), Some("%ZZ%"));
        assert_eq!(percent_decode("%C3%A9t%C3%A9+x"), "été x");
    }
}
