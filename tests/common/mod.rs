//! Helpers the broker tests share: the broker from the environment, topics,
//! producing, reading back (committed or not), and driving `squadron` processes.
#![allow(dead_code)]

pub mod openapi;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub fn broker() -> Option<String> {
    match std::env::var("SQUADRON_TEST_KAFKA") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            eprintln!(
                "SQUADRON_TEST_KAFKA is not set: skipping (scripts/test.sh starts a broker and sets it)"
            );
            None
        }
    }
}

pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Creates a topic with topic configs (e.g. `max.message.bytes`).
pub fn create_with(broker: &str, name: &str, partitions: i32, config: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
}

/// Creates topics: (name, partitions).
pub fn create(broker: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
}

pub fn producer(broker: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

/// A record read back: (partition, offset, headers, payload).
pub type Record = (i32, i64, HashMap<String, String>, Vec<u8>);
/// Where [`read_all`] puts a record's key among its headers (absent: null key).
pub const KEY: &str = ":key";
/// Every record of a topic.
pub fn read_all(broker: &str, topic: &str, want_at_least: usize, timeout: Duration) -> Vec<Record> {
    read(
        broker,
        topic,
        want_at_least,
        timeout,
        "read_uncommitted",
        false,
    )
}

/// Every committed record of a topic (what exactly-once consumers see).
pub fn read_committed(
    broker: &str,
    topic: &str,
    want_at_least: usize,
    timeout: Duration,
) -> Vec<Record> {
    read(
        broker,
        topic,
        want_at_least,
        timeout,
        "read_committed",
        false,
    )
}

/// [`read_committed`] with goalkeeper handover reports, which the other
/// readers leave out: a run that crosses a handover (midnight UTC for squads
/// without a goalkeeper) gets one in a squad topic, whatever the test is about.
pub fn read_committed_with_reports(
    broker: &str,
    topic: &str,
    want_at_least: usize,
    timeout: Duration,
) -> Vec<Record> {
    read(
        broker,
        topic,
        want_at_least,
        timeout,
        "read_committed",
        true,
    )
}

fn read(
    broker: &str,
    topic: &str,
    want_at_least: usize,
    timeout: Duration,
    isolation: &str,
    reports: bool,
) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("isolation.level", isolation)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    while start.elapsed() < timeout {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers: HashMap<String, String> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                // The record's key, when it has one (absent: a null key).
                if let Some(k) = m.key() {
                    headers.insert(KEY.into(), String::from_utf8_lossy(k).into_owned());
                }
                if !reports
                    && headers.get("squadron.reason").map(String::as_str) == Some("handover")
                {
                    continue;
                }
                out.push((
                    m.partition(),
                    m.offset(),
                    headers,
                    m.payload().unwrap_or_default().to_vec(),
                ));
                quiet_since = Instant::now();
            }
            _ if out.len() >= want_at_least && quiet_since.elapsed() > Duration::from_secs(2) => {
                break;
            }
            _ => {}
        }
    }
    out
}

/// Committed offset of the group per input partition.
pub fn committed(broker: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(topic, p);
    }
    // A coordinator that is still moving (a fresh broker, a new group) answers
    // NOT_COORDINATOR for a moment: ask again.
    let mut tries = 0;
    let got = loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => break got,
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("committed offsets: {e}; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("committed offsets of {group}: {e}"),
        }
    };
    got.elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                if let Offset::Offset(o) = e.offset() {
                    o
                } else {
                    -1
                },
            )
        })
        .collect()
}

pub fn end_offsets(broker: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    (0..4)
        .map(|p| {
            (
                p,
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1,
            )
        })
        .collect()
}

pub fn wait_until(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn alert(labels: Value) -> Value {
    json!({"labels": labels, "annotations": {"summary": "test"}})
}

pub fn squadron(args: &[&str], envs: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_squadron"));
    cmd.args(args).env("SQUADRON_LOG", "squadron=info,warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs squadron to its end in the repository (where `rules/` is); panics
/// unless it succeeds. Its standard output.
pub fn squadron_output(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stop(mut child: std::process::Child) -> String {
    // SAFETY-free SIGTERM: ask politely through the kill command.
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "squadron exited with {status}: {err}");
            return err;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "squadron did not stop within 40s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 exchange over loopback: (status, body).
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn metric(port: u16, line_prefix: &str) -> Option<f64> {
    let (_, body) = http(port, "GET", "/metrics");
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it,
/// made with the openssl command: (ca.pem, cert.pem, key.pem) in `dir`.
pub fn make_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// curl with `args` (a URL among them): (status, body); status 0 when no
/// HTTP answer came (e.g. a TLS failure).
pub fn curl(args: &[&str]) -> (u16, String) {
    let (body, code) = curl_writing("%{http_code}", args);
    (code.parse().unwrap_or(0), body)
}

/// curl's answer and what `-w write_out` says of the transfer (e.g. `%{http_version}`).
pub fn curl_writing(write_out: &str, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "15", "-w"])
        .arg(format!("\n{write_out}"))
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, written) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_owned(), written.trim().to_owned())
}
