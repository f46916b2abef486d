//! The HTTP server under hostile and broken clients: slowloris headers, bodies
//! that never end or never arrive, more connections than it allows, and a
//! process out of file descriptors. None of these may stop it serving.
//! Timeouts here are made short through the config; the assertions are about
//! what happens (a connection is closed, an answer comes), with generous bounds.

use squadron::pipeline::config::HttpLimits;
use squadron::sources::http::{HttpIngest, IngestConfig};
use squadron::telemetry::http::{Shared, Status, serve};
use squadron::telemetry::metrics::Metrics;
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
        HttpIngest::new(client, "t".into(), &IngestConfig::default()).unwrap()
    });
    let shared = Shared {
        metrics: Arc::new(Metrics::new(prometheus::Registry::new()).unwrap()),
        status: Arc::new(Mutex::new(Status::default())),
        commands: None,
        ingest: Some(Arc::new(ingest)),
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
