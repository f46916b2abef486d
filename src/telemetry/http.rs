//! squadron's HTTP server (hyper 1.x): `/metrics`, `/healthz`, `/readyz`,
//! `/api/v1/status`. It reads shared state published by the pipeline; it never
//! touches the engine directly.

use super::metrics::Metrics;
use crate::pipeline::config::HttpLimits;
use bytes_body::{Body, full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// Since when commits have failed (outputs not acknowledged); `None` while they succeed.
    pub commit_stalled_since: Option<crate::model::Ts>,
    /// The rules in force, for the Alertmanager API (silences, receivers).
    #[serde(skip)]
    pub rules: Option<Arc<crate::rules::RuleSet>>,
    /// This instance's name (`group.instance.id`) and start, for `/api/v2/status`.
    pub instance: String,
    pub started_at: Option<crate::model::Ts>,
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
    /// TLS, users and who may read and write.
    pub web: Arc<super::web::Web>,
    /// Runtime silences, acknowledgements and overrides; `None` without a broker.
    pub controls: Option<Arc<crate::pipeline::control::ControlLog>>,
}

impl Shared {
    pub fn ready(&self) -> Result<(), String> {
        let s = self.status.lock().expect("status lock");
        readiness(
            &s,
            self.metrics.restoring.get(),
            crate::pipeline::wall_clock(),
        )
    }
}

/// How long the pipeline may go without a heartbeat, or without committing
/// the work it has done, before it is not ready.
pub const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What `/readyz` and `squadron_ready` say: ready, or why not.
pub fn readiness(s: &Status, restoring: i64, now: crate::model::Ts) -> Result<(), String> {
    if s.rules_digest.is_empty() {
        return Err("rules not loaded".into());
    }
    if s.assigned_partitions.is_empty() {
        return Err("no input partitions assigned".into());
    }
    if restoring > 0 {
        return Err(format!(
            "restoring the state of {restoring} partitions from the changelog"
        ));
    }
    if s.heartbeat.is_some_and(|h| now.since(h) > STALL_LIMIT) {
        return Err("pipeline stalled: no heartbeat for 30 s".into());
    }
    if let Some(since) = s
        .commit_stalled_since
        .filter(|t| now.since(*t) > STALL_LIMIT)
    {
        return Err(format!(
            "cannot commit since {since}: the broker has not acknowledged the output (input stays uncommitted)"
        ));
    }
    Ok(())
}

/// Serves until `shutdown` is cancelled. Returns the bound address through `bound`.
///
/// Hostile or broken clients cannot take the server down: at most
/// `limits.max_connections` are open (more wait in the kernel's backlog), a
/// client that does not send its headers or body in time is disconnected, and
/// a failed accept (e.g. out of file descriptors) is counted and retried after
/// a pause instead of ending the server.
pub async fn serve(
    addr: SocketAddr,
    limits: HttpLimits,
    shared: Shared,
    shutdown: CancellationToken,
    bound: tokio::sync::oneshot::Sender<std::io::Result<SocketAddr>>,
) -> std::io::Result<()> {
    let listener = match TcpListener::bind(addr).await.and_then(|l| {
        let local = l.local_addr()?;
        Ok((l, local))
    }) {
        Ok((l, local)) => {
            let _ = bound.send(Ok(local));
            l
        }
        Err(e) => {
            let kind = e.kind();
            let _ = bound.send(Err(e));
            return Err(std::io::Error::new(
                kind,
                format!("cannot listen on {addr}"),
            ));
        }
    };
    tracing::info!(addr = %listener.local_addr()?, max_connections = limits.max_connections, "http server listening");
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // Bodies being read, over all connections: as many as HTTP/1.1 connections
    // could hold, so HTTP/2's streams do not multiply the memory bound.
    let bodies = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let builder = Arc::new(Builders::new(limits));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    // Answers are small writes (HTTP/2 writes a frame at a
                    // time): Nagle's algorithm would hold them for the peer's
                    // delayed ACK, about 40 ms.
                    let _ = conn.0.set_nodelay(true);
                    conn
                }
                Err(error) => {
                    // A connection that failed before we took it concerns only its client.
                    if is_connection_error(&error) {
                        continue;
                    }
                    // Out of file descriptors or memory: back off and keep
                    // serving; the connections we hold will close.
                    shared
                        .metrics
                        .http_accept_errors
                        .with_label_values(&[accept_error_kind(&error)])
                        .inc();
                    tracing::warn!(%error, retry_in = ?backoff, "http server cannot accept a connection");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let metrics = shared.metrics.clone();
            metrics.http_connections.inc();
            match &shared.web.tls {
                None => match plain_protocol(&stream, limits.header_timeout).await {
                    Some(protocol) => {
                        connection(&builder, protocol, stream, &shared, &bodies, peer, limits).await
                    }
                    None => metrics
                        .http_connection_errors
                        .with_label_values(&["header_timeout"])
                        .inc(),
                },
                Some(acceptor) => {
                    // The handshake shares the header timeout: a client that
                    // stalls in it holds a slot no longer than one that stalls
                    // in its headers.
                    let handshake = async {
                        let ssl = openssl::ssl::Ssl::new(acceptor.context()).ok()?;
                        let mut tls = tokio_openssl::SslStream::new(ssl, stream).ok()?;
                        std::pin::Pin::new(&mut tls).accept().await.ok()?;
                        Some(tls)
                    };
                    match tokio::time::timeout(limits.header_timeout, handshake).await {
                        Ok(Some(tls)) => {
                            let protocol = match tls.ssl().selected_alpn_protocol() {
                                Some(b"h2") => Protocol::Http2,
                                _ => Protocol::Http1,
                            };
                            connection(&builder, protocol, tls, &shared, &bodies, peer, limits)
                                .await
                        }
                        _ => metrics
                            .http_connection_errors
                            .with_label_values(&["tls_handshake"])
                            .inc(),
                    }
                }
            }
            metrics.http_connections.dec();
        });
    }
}

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Requests an HTTP/2 connection may have open at once. A connection is one of
/// `max_connections`; this bounds what one client can hold in flight (and in
/// memory: each request body is at most the ingest's `max_body_bytes`).
const HTTP2_MAX_STREAMS: u32 = 32;
/// Largest header block an HTTP/2 request may send.
const HTTP2_MAX_HEADER_LIST: u32 = 64 << 10;

/// How connections are served, one builder per protocol.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: HttpLimits) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // A peer that stops answering pings (gone without closing) is
        // disconnected after twice the header timeout, freeing its slot.
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.header_timeout)
            .keep_alive_timeout(limits.header_timeout)
            .max_concurrent_streams(HTTP2_MAX_STREAMS)
            .max_header_list_size(HTTP2_MAX_HEADER_LIST);
        Builders { http1, http2 }
    }
}

/// What a plain (not TLS) connection speaks: HTTP/2 when it opens with the
/// HTTP/2 connection preface (prior knowledge, as `curl --http2-prior-knowledge`
/// and gRPC-style clients do), HTTP/1.1 otherwise. `None`: the client sent
/// too little to tell within `timeout` (it holds no slot longer than a client
/// that stalls in its headers).
async fn plain_protocol(stream: &tokio::net::TcpStream, timeout: Duration) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let look = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            // peek leaves the bytes for the connection to read.
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 || buf[..n] != PREFACE[..n] {
                // Closed (hyper sees it too), or not the preface.
                return Some(Protocol::Http1);
            }
            if n == PREFACE.len() {
                return Some(Protocol::Http2);
            }
            // A prefix of the preface: peek returns at once while those bytes
            // wait, so give the rest time to arrive.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, look).await.ok().flatten()
}

/// Serves one connection (plain or TLS) until it closes.
async fn connection<I>(
    builders: &Builders,
    protocol: Protocol,
    io: I,
    shared: &Shared,
    bodies: &Arc<tokio::sync::Semaphore>,
    peer: SocketAddr,
    limits: HttpLimits,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_shared = shared.clone();
    let bodies = bodies.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = service_shared.clone();
        let bodies = bodies.clone();
        async move {
            // A request that may carry a body holds a body slot while served.
            let _slot = if matches!(*req.method(), Method::GET | Method::HEAD) {
                None
            } else {
                // Counted while waiting, also when the peer gives up (drop).
                struct Waiting<'a>(&'a prometheus::IntGauge);
                impl Drop for Waiting<'_> {
                    fn drop(&mut self) {
                        self.0.dec();
                    }
                }
                shared.metrics.http_requests_waiting.inc();
                let _waiting = Waiting(&shared.metrics.http_requests_waiting);
                let slot = bodies.acquire_owned().await;
                Some(slot.expect("the semaphore is never closed"))
            };
            let started = tokio::time::Instant::now();
            let (req, unread) = RequestBody::wrap(req);
            let mut resp = authorized(&shared, req, peer.ip(), limits).await;
            if let Some(rest) = unread.and_then(|u| u.lock().expect("unread body").take()) {
                drain_before_early_answer(rest, started + limits.body_timeout).await;
            }
            for (name, value) in &shared.web.headers {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let served = match protocol {
        Protocol::Http1 => {
            builders
                .http1
                .serve_connection(TokioIo::new(io), service)
                .await
        }
        Protocol::Http2 => {
            // A live HTTP/2 peer sends at least a ping acknowledgement every
            // keep-alive interval; one silent for three (e.g. stalled in its
            // handshake, where hyper has no timeout) is disconnected.
            let io = ReadDeadline::new(io, limits.header_timeout * 3);
            builders
                .http2
                .serve_connection(TokioIo::new(io), service)
                .await
        }
    };
    if let Err(error) = served {
        let timed_out = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        let reason = if error.is_timeout() || timed_out {
            "header_timeout"
        } else {
            "protocol"
        };
        shared
            .metrics
            .http_connection_errors
            .with_label_values(&[reason])
            .inc();
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// A connection whose reads fail with `TimedOut` once one has waited `limit`
/// without a byte arriving.
struct ReadDeadline<I> {
    io: I,
    limit: Duration,
    /// Armed while a read waits.
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> ReadDeadline<I> {
    fn new(io: I, limit: Duration) -> ReadDeadline<I> {
        ReadDeadline {
            io,
            limit,
            waiting: None,
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ReadDeadline<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.waiting = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = this.limit;
                let sleep = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("nothing read for {limit:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ReadDeadline<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Checks the request's credentials for what its endpoint needs, then routes it.
async fn authorized(
    shared: &Shared,
    req: Req,
    peer: std::net::IpAddr,
    limits: HttpLimits,
) -> Response<Body> {
    use super::web::{Access, Verdict};
    let access = Access::of(req.method(), req.uri().path());
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match shared.web.auth.check(access, header).await {
        Verdict::Allowed => route(shared, req, peer, limits).await,
        Verdict::Unauthenticated => {
            shared
                .metrics
                .http_denied
                .with_label_values(&["unauthenticated"])
                .inc();
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(
                    "www-authenticate",
                    "Basic realm=\"squadron\", charset=\"UTF-8\"",
                )
                .body(full(
                    b"unauthorized: credentials needed (README, Security)\n".to_vec(),
                ))
                .expect("response")
        }
        Verdict::Forbidden(why) => {
            shared
                .metrics
                .http_denied
                .with_label_values(&["forbidden"])
                .inc();
            text(StatusCode::FORBIDDEN, &format!("forbidden: {why}\n"))
        }
    }
}

/// A request as the handlers see it.
pub(super) type Req = Request<RequestBody>;

/// The body the handlers read. Over HTTP/2, a body a handler drops before its
/// end (an answer given early: 401, 403, 404, 405, 413, 503...) is handed
/// back to the connection, which drains it before sending the answer
/// ([`drain_before_early_answer`]).
pub(super) struct RequestBody {
    inner: Option<Incoming>,
    /// Where an unfinished body goes when dropped; `None` over HTTP/1.1.
    unread: Option<Arc<Mutex<Option<Incoming>>>>,
}

type Unread = Arc<Mutex<Option<Incoming>>>;

impl RequestBody {
    fn wrap(req: Request<Incoming>) -> (Req, Option<Unread>) {
        let (parts, body) = req.into_parts();
        let unread = (parts.version == hyper::Version::HTTP_2).then(Unread::default);
        let body = RequestBody {
            inner: Some(body),
            unread: unread.clone(),
        };
        (Request::from_parts(parts, body), unread)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let (Some(body), Some(unread)) = (self.inner.take(), &self.unread)
            && !hyper::body::Body::is_end_stream(&body)
        {
            *unread.lock().expect("unread body") = Some(body);
        }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Bytes of a refused request's body read and discarded before the answer.
const EARLY_ANSWER_DRAIN: u64 = 4 << 20;

/// Over HTTP/2 an answer sent before the request's body has been read ends
/// the stream with a reset, and some clients (curl 7.88) then report a
/// framing error instead of the status. So what a handler left of a body is
/// read and discarded first: at most [`EARLY_ANSWER_DRAIN`] bytes, until
/// `deadline` (the request's `body_timeout`, so a body that timed out is not
/// waited for again). It holds the request's body slot meanwhile. A body
/// declared longer than that is not drained at all: the reset comes either
/// way. HTTP/1.1 needs none of this: the connection closes after the answer.
async fn drain_before_early_answer(mut body: Incoming, deadline: tokio::time::Instant) {
    use http_body_util::BodyExt;
    if hyper::body::Body::size_hint(&body).lower() > EARLY_ANSWER_DRAIN {
        return;
    }
    let drain = async {
        let mut read = 0;
        while read <= EARLY_ANSWER_DRAIN {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, drain).await;
}

const ACCEPT_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Errors of one incoming connection (not of the listener).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// A bounded label for an accept error.
fn accept_error_kind(e: &std::io::Error) -> &'static str {
    // EMFILE (24) and ENFILE (23): the process or the system is out of file descriptors.
    match e.raw_os_error() {
        Some(24) => "emfile",
        Some(23) => "enfile",
        _ if e.kind() == std::io::ErrorKind::OutOfMemory => "out_of_memory",
        _ => "other",
    }
}

async fn route(
    shared: &Shared,
    req: Req,
    peer: std::net::IpAddr,
    limits: HttpLimits,
) -> Response<Body> {
    let req = match super::controls_api::route(shared, req, peer, limits.body_timeout).await {
        Ok(answered) => return answered,
        Err(req) => req,
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(full(shared.metrics.render()))
            .expect("response"),
        (&Method::GET, "/healthz" | "/-/healthy") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz" | "/-/ready") => match shared.ready() {
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
            let reply = ingest(shared, req, peer, limits.body_timeout).await;
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
        (&Method::GET, "/api/v2/status") => {
            let s = shared.status.lock().expect("status lock");
            let started = s.started_at.unwrap_or(crate::pipeline::wall_clock());
            json(
                StatusCode::OK,
                &super::amapi::status(s.rules.as_deref(), &s.instance, started),
            )
        }
        (&Method::GET, "/api/v2/receivers") => match rules(shared) {
            Ok(r) => json(StatusCode::OK, &super::amapi::receiver_list(&r)),
            Err(resp) => *resp,
        },
        (&Method::GET, path @ ("/api/v2/alerts" | "/api/v2/alerts/groups")) => {
            let query = Query::parse(req.uri().query().unwrap_or(""));
            let q = match super::amapi::AlertQuery::parse(&query) {
                Ok(q) => q,
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            };
            let r = match rules(shared) {
                Ok(r) => r,
                Err(resp) => return *resp,
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let cmd = crate::pipeline::Command::Groups {
                squad: None,
                matchers: Vec::new(),
                reply: tx,
            };
            let now = crate::pipeline::wall_clock();
            let controls = shared
                .controls
                .as_ref()
                .map(|c| c.snapshot())
                .unwrap_or_default();
            match ask(shared, cmd, rx).await {
                Ok(groups) if path == "/api/v2/alerts" => json(
                    StatusCode::OK,
                    &super::amapi::alerts(&groups, &r, &controls, &q, now),
                ),
                Ok(groups) => json(
                    StatusCode::OK,
                    &super::amapi::alert_groups(&groups, &r, &controls, &q, now),
                ),
                Err(resp) => resp,
            }
        }
        (&Method::GET, "/api/v1/shifts") => {
            let query = Query::parse(req.uri().query().unwrap_or(""));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let cmd = crate::pipeline::Command::Shifts {
                squad: query.first("squad").map(str::to_owned),
                reply: tx,
            };
            match ask(shared, cmd, rx).await {
                Ok(shifts) => json(StatusCode::OK, &shifts),
                Err(resp) => resp,
            }
        }
        (&Method::GET, path @ ("/api/v1/groups" | "/api/v1/alerts")) => {
            let query = Query::parse(req.uri().query().unwrap_or(""));
            let matchers = match query.matchers("filter") {
                Ok(m) => m,
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
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
            "/metrics"
            | "/healthz"
            | "/readyz"
            | "/-/healthy"
            | "/-/ready"
            | "/api/v1/status"
            | "/-/reload"
            | "/api/v1/groups"
            | "/api/v1/alerts"
            | "/api/v1/shifts"
            | "/api/v2/alerts"
            | "/api/v2/alerts/groups"
            | "/api/v2/status"
            | "/api/v2/receivers",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz, /api/v1/status, /api/v1/groups, /api/v1/alerts, /api/v1/shifts, POST /-/reload\n",
        ),
    }
}

/// `POST /api/v2/alerts` (credentials already checked): size limit, then the ingest decides.
async fn ingest(
    shared: &Shared,
    req: Req,
    peer: std::net::IpAddr,
    body_timeout: std::time::Duration,
) -> Response<Body> {
    let Some(ingest) = &shared.ingest else {
        return text(
            StatusCode::NOT_FOUND,
            "ingest is disabled (http.ingest.enabled)\n",
        );
    };
    let body = match read_body(shared, req, ingest.max_body_bytes, body_timeout).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let reply = ingest.accept(&body, peer.to_string().as_bytes()).await;
    text(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &reply.body,
    )
}

/// Reads a request body of at most `max` bytes within `timeout`, or the answer
/// that refuses it (413, 408 closing the connection, 400).
pub(super) async fn read_body(
    shared: &Shared,
    req: Req,
    max: usize,
    timeout: std::time::Duration,
) -> Result<hyper::body::Bytes, Response<Body>> {
    use http_body_util::BodyExt;
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body over {max} bytes\n"),
        )
    };
    // A declared length over the limit is refused before reading a byte.
    if hyper::body::Body::size_hint(req.body())
        .lower()
        .try_into()
        .map_or(true, |n: usize| n > max)
    {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(req.into_body(), max);
    let Ok(collected) = tokio::time::timeout(timeout, limited.collect()).await else {
        shared
            .metrics
            .http_connection_errors
            .with_label_values(&["body_timeout"])
            .inc();
        // The rest of the body is not read: the connection closes after this answer.
        return Err(Response::builder()
            .status(StatusCode::REQUEST_TIMEOUT)
            .header(hyper::header::CONNECTION, "close")
            .body(full(
                format!("the body did not arrive within {timeout:?}\n").into_bytes(),
            ))
            .expect("response"));
    };
    match collected {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the body: {e}\n"),
        )),
    }
}

/// The rules in force, or 503 before the pipeline has published them.
pub(super) fn rules(shared: &Shared) -> Result<Arc<crate::rules::RuleSet>, Box<Response<Body>>> {
    shared
        .status
        .lock()
        .expect("status lock")
        .rules
        .clone()
        .ok_or_else(|| {
            Box::new(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "rules not loaded yet\n",
            ))
        })
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

pub(super) fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec_pretty(v).expect("serializes")))
        .expect("response")
}

/// A URL query string: `squad=payments&filter=severity%3D%22critical%22`.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: &str) -> Query {
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
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Every `key` parameter as an Alertmanager matcher (`filter=...`).
    pub(crate) fn matchers(&self, key: &str) -> Result<Vec<crate::rules::Matcher>, String> {
        self.all(key)
            .map(crate::rules::Matcher::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad {key}: {e}"))
    }

    pub(crate) fn first(&self, key: &str) -> Option<&str> {
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

pub(super) fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(body.as_bytes().to_vec()))
        .expect("response")
}

pub(super) mod bytes_body {
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
