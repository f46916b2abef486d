//! The HTTP server under hostile and broken clients: slowloris headers, bodies
//! that never end or never arrive, more connections than it allows, and a
//! process out of file descriptors. None of these may stop it serving.
//! Timeouts here are made short through the config; the assertions are about
//! what happens (a connection is closed, an answer comes), with generous bounds.

use squadron::pipeline::config::HttpLimits;
use squadron::sources::http::{HttpIngest, IngestConfig};
use squadron::telemetry::http::{Shared, Status, serve};
use squadron::telemetry::metrics::Metrics;
use squadron::telemetry::web::{AuthorizationConfig, Web};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod common;

struct Server {
    addr: SocketAddr,
    shared: Shared,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn server(limits: HttpLimits) -> Server {
    server_with(limits, Web::open())
}

fn server_with(limits: HttpLimits, web: Web) -> Server {
    server_with_ingest(limits, web, &IngestConfig::default())
}

fn server_with_ingest(limits: HttpLimits, web: Web, ingest: &IngestConfig) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // An ingest whose broker does not exist: requests that reach it get 503
    // after the produce timeout; the tests here are answered before that.
    let ingest = runtime.block_on(async {
        let mut client = rdkafka::ClientConfig::new();
        client.set("bootstrap.servers", "127.0.0.1:1");
        HttpIngest::new(client, "t".into(), ingest).unwrap()
    });
    let shared = Shared {
        metrics: Arc::new(Metrics::new(prometheus::Registry::new()).unwrap()),
        status: Arc::new(Mutex::new(Status::default())),
        commands: None,
        ingest: Some(Arc::new(ingest)),
        web: Arc::new(web),
        controls: None,
    };
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    runtime.spawn(serve(
        "127.0.0.1:0".parse().unwrap(),
        limits,
        shared.clone(),
        shutdown.clone(),
        tx,
    ));
    let addr = runtime.block_on(rx).unwrap().unwrap();
    Server {
        addr,
        shared,
        shutdown,
        _runtime: runtime,
    }
}

fn limits() -> HttpLimits {
    HttpLimits {
        max_connections: 64,
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes the connection; what it said before that.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&out).into_owned();
            }
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_to_close(&mut s)
}

#[test]
fn slow_and_idle_clients_are_disconnected() {
    let srv = server(limits());
    // Slowloris: a header that never ends.
    let mut slow = connect(srv.addr);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    // Idle: connected, says nothing.
    let mut idle = connect(srv.addr);
    // Keep-alive: one request answered, then idle.
    let mut kept = connect(srv.addr);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    read_to_close(&mut slow);
    read_to_close(&mut idle);
    assert!(read_to_close(&mut kept).starts_with("HTTP/1.1 200"));
    // Closed by the server's timeouts (0.5 s), long before the client's 20 s.
    assert!(started.elapsed() < Duration::from_secs(15));
    let m = String::from_utf8(srv.shared.metrics.render()).unwrap();
    assert!(
        m.lines()
            .any(|l| l
                .starts_with("squadron_http_connection_errors_total{reason=\"header_timeout\"}")),
        "{m}"
    );
    assert!(get(srv.addr, "/healthz").starts_with("HTTP/1.1 200"));
}

#[test]
fn bodies_that_never_arrive_get_an_answer() {
    let srv = server(limits());
    // A declared length over the limit is refused before reading it.
    let mut huge = connect(srv.addr);
    huge.write_all(
        b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n[{}]",
    )
    .unwrap();
    let reply = read_to_close(&mut huge);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // A declared length that is never sent, and a chunked body that never ends.
    let mut short = connect(srv.addr);
    short
        .write_all(b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[{}")
        .unwrap();
    let mut chunked = connect(srv.addr);
    chunked
        .write_all(
            b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[{}]\r\n",
        )
        .unwrap();
    for s in [&mut short, &mut chunked] {
        let reply = read_to_close(s);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
    let m = String::from_utf8(srv.shared.metrics.render()).unwrap();
    assert!(m.contains("squadron_http_connection_errors_total{reason=\"body_timeout\"} 2"));
}

/// curl's answer and the HTTP version it spoke.
fn curl_version(args: &[&str]) -> (String, String) {
    common::curl_writing("%{http_version}", args)
}

#[test]
fn http2_is_spoken_by_prior_knowledge_and_a_stalled_preface_is_disconnected() {
    let srv = server(limits());
    let url = format!("http://{}/healthz", srv.addr);
    // h2c with prior knowledge, as load balancers and gRPC-style clients speak it.
    assert_eq!(
        curl_version(&["--http2-prior-knowledge", &url]),
        ("ok\n".to_owned(), "2".to_owned())
    );
    // Plain HTTP/1.1 on the same port.
    assert_eq!(
        curl_version(&["--http1.1", &url]),
        ("ok\n".to_owned(), "1.1".to_owned())
    );
    // An invalid batch is refused over HTTP/2 as over HTTP/1.1 (the body is read).
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data",
            "[{\"labels\": {}}]",
        ])
        .arg(format!("http://{}/api/v2/alerts", srv.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "422");
    // Half a preface, then nothing: the server cannot tell the protocol and
    // must not hold the connection (and its slot) for ever.
    let mut half = connect(srv.addr);
    half.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    // The whole preface, then nothing: HTTP/2 has started; the server's
    // pings go unanswered and it closes the connection.
    let mut silent = connect(srv.addr);
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    assert_eq!(read_to_close(&mut half), "");
    read_to_close(&mut silent);
    assert!(started.elapsed() < Duration::from_secs(15));
    common::wait_until(Duration::from_secs(10), "connections to close", || {
        srv.shared.metrics.http_connections.get() == 0
    });
    let m = String::from_utf8(srv.shared.metrics.render()).unwrap();
    assert!(
        m.contains("squadron_http_connection_errors_total{reason=\"header_timeout\"}"),
        "{m}"
    );
}

type H2Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, std::convert::Infallible>;

/// An HTTP/2 (prior knowledge) client connection to `addr`, driven on the
/// current runtime.
async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<H2Body> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// HTTP/2 carries many requests on one connection: their bodies still share
/// the `max_connections` slots HTTP/1.1 connections would hold, so the memory
/// bound is the same. Two bodies that never end, one slot: one is read, the
/// other waits (whichever arrives first), and both get their 408 in turn.
#[test]
fn http2_request_bodies_share_the_max_connections_slots() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Bytes, Frame};
    let srv = server(HttpLimits {
        max_connections: 1,
        // Keep-alive pings are acknowledged within header_timeout: a busy
        // machine must not close the connection under the client.
        header_timeout: Duration::from_secs(5),
        ..limits()
    });
    let metrics = srv.shared.metrics.clone();
    let waiting = move || metrics.http_requests_waiting.get();
    let client = tokio::runtime::Runtime::new().unwrap();
    let statuses = client.block_on(async {
        let send = h2c(srv.addr).await;
        let requests: Vec<_> = (0..2)
            .map(|_| {
                let never = StreamBody::new(futures_util::stream::pending::<
                    Result<Frame<Bytes>, std::convert::Infallible>,
                >());
                let req = hyper::Request::post(format!("http://{}/api/v2/alerts", srv.addr))
                    .header("content-type", "application/json")
                    .body(never.boxed())
                    .unwrap();
                let mut send = send.clone();
                tokio::spawn(async move { send.send_request(req).await.map(|r| r.status()) })
            })
            .collect();
        let one_waits = waiting.clone();
        tokio::task::spawn_blocking(move || {
            common::wait_until(Duration::from_secs(10), "one request waiting", || {
                one_waits() == 1
            })
        })
        .await
        .unwrap();
        let mut statuses = Vec::new();
        for r in requests {
            statuses.push(r.await.unwrap().unwrap().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [408, 408]);
    assert_eq!(waiting(), 0);
}

/// Over HTTP/2 an early answer waits for the request's body to be drained;
/// a body that never ends must not hold the answer, or the body slot, past
/// `body_timeout`. One slot, three refused requests (404) whose bodies never
/// end: each is answered in turn.
#[test]
fn a_refused_body_that_never_ends_is_answered_after_body_timeout() {
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Bytes, Frame};
    let srv = server(HttpLimits {
        max_connections: 1,
        // HTTP/2 keep-alive pings must be acknowledged within header_timeout:
        // 500 ms, on a machine busy with the rest of the suite, sometimes
        // closed the connection under this test's client (BrokenPipe). The
        // test is about body_timeout, which stays 500 ms.
        header_timeout: Duration::from_secs(5),
        ..limits()
    });
    let client = tokio::runtime::Runtime::new().unwrap();
    let statuses = client.block_on(async {
        let send = h2c(srv.addr).await;
        let requests: Vec<_> = (0..3)
            .map(|_| {
                let first: Result<_, std::convert::Infallible> =
                    Ok(Frame::data(Bytes::from_static(b"[")));
                let never =
                    futures_util::stream::iter([first]).chain(futures_util::stream::pending());
                let req = hyper::Request::post(format!("http://{}/nowhere", srv.addr))
                    .body(BodyExt::boxed(StreamBody::new(never)))
                    .unwrap();
                let mut send = send.clone();
                tokio::spawn(async move { send.send_request(req).await.map(|r| r.status()) })
            })
            .collect();
        let mut statuses = Vec::new();
        for r in requests {
            let answered = tokio::time::timeout(Duration::from_secs(20), r).await;
            statuses.push(answered.expect("answered").unwrap().unwrap().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [404, 404, 404]);
    assert_eq!(srv.shared.metrics.http_requests_waiting.get(), 0);
}

#[test]
fn connections_over_the_limit_wait_and_are_then_served() {
    let srv = server(HttpLimits {
        max_connections: 4,
        ..limits()
    });
    let held: Vec<TcpStream> = (0..4).map(|_| connect(srv.addr)).collect();
    // The fifth waits in the backlog until a held one times out, then is served.
    assert!(get(srv.addr, "/healthz").starts_with("HTTP/1.1 200"));
    drop(held);
    common::wait_until(Duration::from_secs(10), "connections to close", || {
        srv.shared.metrics.http_connections.get() == 0
    });
}

/// The process, limited to 256 open files, is sent far more connections than
/// that. It must keep running, and serve again once they close.
#[test]
fn running_out_of_file_descriptors_does_not_deafen_the_server() {
    let port = common::free_port();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let script = format!(
        "ulimit -n 256 && exec {} demo --rules {rules} --duration 600s --http-listen 127.0.0.1:{port}",
        env!("CARGO_BIN_EXE_squadron")
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("SQUADRON_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_until(Duration::from_secs(30), "the demo to serve", || {
        TcpStream::connect(addr).is_ok()
    });
    let mut flood = Vec::new();
    for _ in 0..600 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "squadron exited while out of file descriptors"
    );
    drop(flood);
    let (status, _) = common::http(port, "GET", "/healthz");
    assert_eq!(status, 200);
    let (_, metrics) = common::http(port, "GET", "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("squadron_http_accept_errors_total{error=\"emfile\"}")),
        "the flood never exhausted the descriptors, so this test proved nothing"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A server whose web config (`dir/web.yml`) is `config` and two basic-auth
/// users: `scraper` (password scrape-pw) may read, `sender` (send-pw) may
/// also write.
fn server_with_users(dir: &std::path::Path, config: &str) -> Server {
    server_with_users_ingest(dir, config, &IngestConfig::default())
}

fn server_with_users_ingest(dir: &std::path::Path, config: &str, ingest: &IngestConfig) -> Server {
    let hash = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "{config}basic_auth_users:\n  scraper: '{}'\n  sender: '{}'\n",
            hash("scrape-pw"),
            hash("send-pw"),
        ),
    )
    .unwrap();
    let policy = AuthorizationConfig {
        writers: vec!["sender".into()],
        ..Default::default()
    };
    server_with_ingest(
        limits(),
        Web::load(Some(&dir.join("web.yml")), &policy, None).unwrap(),
        ingest,
    )
}

/// A web config as Prometheus and Alertmanager read it: HTTPS with the
/// configured certificate, basic-auth users with bcrypt hashes, a security
/// header; and squadron's split: `scraper` may read, only `sender` may write.
#[test]
fn https_and_basic_auth_from_a_web_config() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(common::unique("web"));
    let (ca, cert, key) = common::make_certificate(&dir);
    let tls_config = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        cert.file_name().unwrap().to_str().unwrap(),
        key.display(),
    );
    let srv = server_with_users(
        &dir,
        &format!("{tls_config}http_server_config:\n  headers: {{X-Frame-Options: deny}}\n"),
    );
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", srv.addr.port());
    let ca = ca.display().to_string();
    let curl = |extra: &[&str], path: &str| {
        let mut args = vec!["--cacert", ca.as_str()];
        args.extend_from_slice(extra);
        let u = url(path);
        args.push(&u);
        common::curl(&args)
    };
    // ALPN negotiates HTTP/2 with a client that offers it.
    let u = url("/healthz");
    assert_eq!(
        curl_version(&["--cacert", ca.as_str(), "--http2", &u]),
        ("ok\n".to_owned(), "2".to_owned())
    );
    assert_eq!(
        curl_version(&["--cacert", ca.as_str(), "--http1.1", &u]),
        ("ok\n".to_owned(), "1.1".to_owned())
    );
    // HTTP/2 negotiated, then silence (not even the preface, where hyper
    // waits without a timeout): the connection is closed, not held.
    let mut tls = {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_alpn_protos(b"\x02h2").unwrap();
        b.build().connect("127.0.0.1", connect(srv.addr)).unwrap()
    };
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while matches!(tls.read(&mut buf), Ok(n) if n > 0) {}
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a silent HTTP/2 client was held for {:?}",
        started.elapsed()
    );
    // The certificate verifies against its CA for 127.0.0.1.
    assert_eq!(
        curl(&[], "/healthz"),
        (200, "ok\n".into()),
        "health is open"
    );
    assert_eq!(curl(&[], "/metrics").0, 401);
    assert_eq!(curl(&["-u", "scraper:wrong"], "/metrics").0, 401);
    let (code, body) = curl(&["-u", "scraper:scrape-pw"], "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("squadron_http_denied_total{reason=\"unauthenticated\"} 2"),
        "{body}"
    );
    // Writes: the reader is forbidden, the writer gets through to the
    // endpoint (no pipeline here: 501), nobody else.
    let post = ["-X", "POST"];
    assert_eq!(curl(&post, "/-/reload").0, 401);
    assert_eq!(
        curl(
            &[&post[..], &["-u", "scraper:scrape-pw"]].concat(),
            "/-/reload"
        )
        .0,
        403
    );
    assert_eq!(
        curl(
            &[&post[..], &["-u", "sender:send-pw"]].concat(),
            "/-/reload"
        )
        .0,
        501
    );
    let ingest = [&post[..], &["-u", "sender:send-pw", "-d", "{not json"]].concat();
    assert_eq!(
        curl(&ingest, "/api/v2/alerts").0,
        400,
        "the ingest itself answered"
    );
    // The configured response header, on every answer.
    let (_, headers) = curl(&["-D", "-", "-o", "/dev/null"], "/healthz");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-frame-options: deny"),
        "{headers}"
    );
    // Plain HTTP to the TLS port gets no answer; the server goes on.
    let plain = common::curl(&[&format!("http://127.0.0.1:{}/healthz", srv.addr.port())]);
    assert_eq!(plain.0, 0, "{plain:?}");
    assert_eq!(curl(&[], "/healthz").0, 200);

    // `http_server_config.http2: false`: HTTP/1.1 even for a client offering h2.
    let h1 = server_with_users(
        &dir,
        &format!("{tls_config}http_server_config:\n  http2: false\n"),
    );
    let u = format!("https://127.0.0.1:{}/healthz", h1.addr.port());
    assert_eq!(
        curl_version(&["--cacert", ca.as_str(), "--http2", &u]),
        ("ok\n".to_owned(), "1.1".to_owned())
    );
}

/// The authenticated setup docker-compose.yml ships: deploy/web.yml's users
/// take the passwords in deploy/secrets/, and deploy/squadron.yaml lets the
/// scraper read but not write.
#[test]
fn the_shipped_compose_setup_authenticates_as_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = squadron::pipeline::Config::load(Some(&root.join("deploy/squadron.yaml"))).unwrap();
    assert!(cfg.http.web_config_file.is_some());
    let web = Web::load(
        Some(&root.join("deploy/web.yml")),
        &cfg.http.authorization,
        None,
    )
    .unwrap();
    let password = |user: &str| {
        std::fs::read_to_string(root.join(format!("deploy/secrets/{user}-password")))
            .unwrap()
            .trim()
            .to_owned()
    };
    let srv = server_with(limits(), web);
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", srv.addr.port());
    let scraper = format!("scraper:{}", password("scraper"));
    let sender = format!("sender:{}", password("sender"));
    assert_eq!(common::curl(&["-u", &scraper, &url("/metrics")]).0, 200);
    assert_eq!(
        common::curl(&["-u", &scraper, "-X", "POST", &url("/-/reload")]).0,
        403
    );
    assert_eq!(
        common::curl(&["-u", &sender, "-X", "POST", &url("/-/reload")]).0,
        501
    );
    assert_eq!(common::curl(&[&url("/metrics")]).0, 401);
    assert_eq!(
        common::curl(&[&url("/readyz")]).0,
        503,
        "health needs no credentials"
    );
}

/// Over HTTP/2 an answer given before the request's body is read ends the
/// stream early, and curl 7.88 then reports a framing error instead of the
/// status (about one time in ten with a 1 MiB body before the server read
/// refused bodies first): 401 and 403 must reach the client every time.
#[test]
fn early_answers_over_http2_reach_the_client() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(common::unique("web-h2"));
    std::fs::create_dir_all(&dir).unwrap();
    let ingest = IngestConfig {
        max_body_bytes: 64 << 10,
        ..IngestConfig::default()
    };
    let srv = server_with_users_ingest(&dir, "", &ingest);
    let url = |path: &str| format!("http://{}{path}", srv.addr);
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; 1 << 20]).unwrap();
    let big = format!("@{}", big.display());
    // Every answer a handler gives without reading the body: credentials,
    // unknown path and method, the declared length over the ingest's limit,
    // and an endpoint not ready (the rules are never published here).
    let sender = Some("sender:send-pw");
    let cases = [
        (None, "/api/v2/alerts", 401, "[]"),
        (Some("scraper:scrape-pw"), "/api/v2/alerts", 403, "[]"),
        (sender, "/nowhere", 404, "[]"),
        (sender, "/metrics", 405, "[]"),
        (sender, "/api/v2/silences", 503, "{}"),
        (sender, "/api/v2/alerts", 413, ""),
    ];
    for (user, path, status, small) in cases {
        for body in [small, big.as_str()] {
            if body.is_empty() {
                continue;
            }
            for round in 0..25 {
                let url = url(path);
                let mut args = vec!["--http2-prior-knowledge", "--data-binary", body];
                if let Some(u) = user {
                    args.extend(["-u", u]);
                }
                args.push(&url);
                let (_, written) = common::curl_writing("%{http_code} %{http_version}", &args);
                assert_eq!(
                    written,
                    format!("{status} 2"),
                    "round {round}, {user:?} {path}, body {body}"
                );
            }
        }
    }
}
