//! `squadron loadgen`: offers alerts to an Alertmanager-compatible
//! `POST /api/v2/alerts` (squadron's ingest, or Alertmanager itself) over
//! keep-alive HTTP/1.1 or HTTP/2 connections, and reports what was accepted.
//!
//! The bodies are what Prometheus sends: batches of firing alerts (8 labels,
//! an annotation, `startsAt`/`endsAt`), encoded once before the run so the
//! generator spends its time on the wire, not on JSON. Each worker sends one
//! request at a time and the next when it is answered (closed loop); with
//! `--rate` the workers share a fixed offered rate instead.
//!
//! The side-by-side harness (`scripts/compare-alertmanager.py --ingest`) runs
//! it against Alertmanager and squadron in turn.

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {
    /// The endpoint, e.g. http://127.0.0.1:9090/api/v2/alerts.
    #[arg(long)]
    pub url: String,
    /// Requests in flight at once: one per HTTP/1.1 connection, or streams
    /// shared over --http2-connections.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Speak HTTP/2 (prior knowledge, as over h2c) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// HTTP/2 connections the requests are multiplexed over.
    #[arg(long, default_value_t = 1)]
    pub http2_connections: usize,
    /// Alerts per request (Prometheus sends up to 256; 64 is typical).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Distinct alerts the batches cycle through (each is sent again and
    /// again while firing, as Prometheus re-sends every evaluation).
    #[arg(long, default_value_t = 10_000)]
    pub distinct: usize,
    /// How long to send.
    #[arg(long, default_value = "20s", value_parser = |s: &str| crate::model::parse_duration(s))]
    pub duration: Duration,
    /// Offered alerts per second in total; without it, as fast as answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// `Authorization: Bearer` for the endpoint.
    #[arg(long, env = "SQUADRON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the result as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What a run measured.
#[derive(Debug, Default, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub protocol: &'static str,
    pub concurrency: usize,
    pub batch: usize,
    pub seconds: f64,
    pub requests: u64,
    /// Alerts in requests answered 2xx.
    pub accepted_alerts: u64,
    pub accepted_per_second: f64,
    /// Answers by status code; `error` counts requests that got no answer.
    pub answers: BTreeMap<String, u64>,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    accepted: u64,
    answers: BTreeMap<String, u64>,
    /// Request latencies in microseconds.
    latencies: Vec<u32>,
}

pub fn loadgen(args: &LoadgenArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        args.http2_connections > 0,
        "--http2-connections must be at least 1"
    );
    anyhow::ensure!(
        args.rate.is_none_or(|r| r.is_finite() && r > 0.0),
        "--rate must be a positive number of alerts per second"
    );
    let uri: hyper::Uri = args.url.parse().context("--url")?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "--url: only http:// is supported (the generator measures the server, not TLS)"
    );
    let host = uri.host().context("--url has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let bodies = bodies(args.distinct.max(args.batch), args.batch);
    // One thread: the generator shares the machine with what it measures.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let senders = connect(args, &host, port).await?;
        let started = Instant::now();
        let deadline = started + args.duration;
        // Each worker paces itself at its share of --rate.
        let interval = args
            .rate
            .map(|r| Duration::from_secs_f64(args.batch as f64 * args.concurrency as f64 / r));
        let workers: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(w, sender)| {
                let bodies = bodies.clone();
                // Workers start at different batches so they do not send the same alerts at once.
                let first = w * bodies.len() / args.concurrency;
                let request = RequestParts {
                    uri: uri.clone(),
                    host: format!("{host}:{port}"),
                    token: args.token.clone(),
                };
                let batch = args.batch as u64;
                tokio::spawn(async move {
                    worker(sender, request, bodies, first, batch, deadline, interval).await
                })
            })
            .collect();
        let mut tally = Tally::default();
        for w in workers {
            let t = w.await?;
            tally.accepted += t.accepted;
            for (k, v) in t.answers {
                *tally.answers.entry(k).or_default() += v;
            }
            tally.latencies.extend(t.latencies);
        }
        let seconds = started.elapsed().as_secs_f64();
        tally.latencies.sort_unstable();
        let quantile = |q: f64| -> f64 {
            let l = &tally.latencies;
            if l.is_empty() {
                return 0.0;
            }
            l[((l.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
        };
        anyhow::Ok(LoadReport {
            url: args.url.clone(),
            protocol: if args.http2 { "HTTP/2" } else { "HTTP/1.1" },
            concurrency: args.concurrency,
            batch: args.batch,
            seconds: round3(seconds),
            requests: tally.latencies.len() as u64,
            accepted_alerts: tally.accepted,
            accepted_per_second: (tally.accepted as f64 / seconds).round(),
            latency_ms_p50: round3(quantile(0.5)),
            latency_ms_p99: round3(quantile(0.99)),
            latency_ms_max: round3(quantile(1.0)),
            answers: tally.answers,
        })
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: {} alerts/s accepted ({} alerts in {:.1} s, {} requests of {} over {} at a time, {}); latency p50 {} ms, p99 {} ms, max {} ms; answers {:?}",
            report.url,
            report.accepted_per_second,
            report.accepted_alerts,
            report.seconds,
            report.requests,
            report.batch,
            report.concurrency,
            report.protocol,
            report.latency_ms_p50,
            report.latency_ms_p99,
            report.latency_ms_max,
            report.answers,
        );
    }
    // Not one request accepted: say so in the exit status too.
    Ok(if report.accepted_alerts > 0 { 0 } else { 1 })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The request bodies: `distinct` alerts in batches of `batch`, firing from
/// now for an hour (longer than any run), encoded once.
fn bodies(distinct: usize, batch: usize) -> std::sync::Arc<Vec<Bytes>> {
    let alerts = crate::sim::distinct_alerts(distinct, crate::pipeline::wall_clock(), 7);
    let bodies = alerts
        .chunks(batch)
        .filter(|c| c.len() == batch)
        .map(|chunk| {
            let mut body = Vec::with_capacity(chunk.iter().map(|a| a.len() + 1).sum::<usize>() + 1);
            body.push(b'[');
            for (i, a) in chunk.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(a);
            }
            body.push(b']');
            Bytes::from(body)
        })
        .collect();
    std::sync::Arc::new(bodies)
}

/// One worker's way to send: its own HTTP/1.1 connection, or a handle on a
/// shared HTTP/2 connection (one stream per request).
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One sender per worker (`--concurrency`).
async fn connect(args: &LoadgenArgs, host: &str, port: u16) -> anyhow::Result<Vec<Sender>> {
    let count = if args.http2 {
        args.http2_connections
    } else {
        args.concurrency
    };
    let mut http2 = Vec::new();
    let mut senders = Vec::with_capacity(args.concurrency);
    for _ in 0..count {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        if args.http2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(conn);
            http2.push(send);
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(conn);
            senders.push(Sender::Http1(send));
        }
    }
    if !http2.is_empty() {
        senders
            .extend((0..args.concurrency).map(|w| Sender::Http2(http2[w % http2.len()].clone())));
    }
    Ok(senders)
}

struct RequestParts {
    uri: hyper::Uri,
    host: String,
    token: Option<String>,
}

async fn worker(
    mut sender: Sender,
    parts: RequestParts,
    bodies: std::sync::Arc<Vec<Bytes>>,
    first: usize,
    batch: u64,
    deadline: Instant,
    interval: Option<Duration>,
) -> Tally {
    let mut tally = Tally::default();
    let mut next = first;
    let mut due = tokio::time::Instant::now();
    while Instant::now() < deadline {
        if let Some(every) = interval {
            tokio::time::sleep_until(due).await;
            due += every;
        }
        let mut req = Request::post(parts.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if matches!(sender, Sender::Http1(_)) {
            req = req.header(hyper::header::HOST, &parts.host);
        }
        if let Some(token) = &parts.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(bodies[next % bodies.len()].clone()))
            .expect("request");
        next += 1;
        let t = Instant::now();
        let answer = match &mut sender {
            Sender::Http1(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            Sender::Http2(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
        };
        let status = match answer {
            Ok(resp) => {
                let status = resp.status();
                // Read the answer to its end so the connection can be reused.
                let _ = resp.into_body().collect().await;
                Some(status)
            }
            Err(_) => None,
        };
        tally
            .latencies
            .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        let key = status.map_or_else(|| "error".to_owned(), |s| s.as_u16().to_string());
        *tally.answers.entry(key).or_default() += 1;
        match status {
            Some(s) if s.is_success() => tally.accepted += batch,
            Some(_) => {}
            // The connection is gone: this worker is done.
            None => break,
        }
    }
    tally
}
