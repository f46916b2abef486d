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
    /// Set when the pipeline loop has not turned for too long.
    pub stalled: bool,
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
        if s.stalled {
            return Err("pipeline stalled".into());
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
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&shared, req)) }
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

fn route(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
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
            Response::builder()
                .header("content-type", "application/json")
                .body(full(
                    serde_json::to_vec_pretty(&s).expect("status serializes"),
                ))
                .expect("response")
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/api/v1/status") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz, /api/v1/status\n",
        ),
    }
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
