//! The pipeline against a real Apache Kafka broker (scripts/kafka.sh).
//!
//! Needs `SQUADRON_TEST_KAFKA=host:port`; scripts/test.sh starts the broker and
//! sets it, and checks that these tests ran. Without it each test says so and
//! returns. Every test uses its own topics and consumer group.

mod common;

use common::*;
use rdkafka::producer::{BaseRecord, Producer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Topics {
    input: String,
    dead_letter: String,
    audit: String,
    payments: String,
    platform: String,
    group: String,
}

impl Topics {
    fn new(test: &str) -> Topics {
        let id = unique(test);
        Topics {
            input: format!("in-{id}"),
            dead_letter: format!("dlq-{id}"),
            audit: format!("audit-{id}"),
            payments: format!("payments-{id}"),
            platform: format!("platform-{id}"),
            group: format!("group-{id}"),
        }
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.input,
            &self.dead_letter,
            &self.audit,
            &self.payments,
            &self.platform,
        ]
    }
}

/// A test's broker, its own topics (created), and rules writing to them.
fn setup(test: &str, group_wait: &str) -> Option<(String, Topics, PathBuf)> {
    let broker = broker()?;
    let t = Topics::new(test);
    create_topics(&broker, &t);
    let rules = rules_dir(&t, group_wait);
    Some((broker, t, rules))
}

fn rules_dir(t: &Topics, group_wait: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("rules"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        format!(
            r#"
ownership: {{fallback_squad: platform}}
grouping: {{group_wait: {group_wait}, group_interval: 1s, repeat_interval: 4h}}
squads:
  - name: payments
    services: [checkout]
    topic: {payments}
  - name: platform
    services: [kubernetes]
    topic: {platform}
impact_rules:
  - name: drop-staging
    match: ['env="staging"']
    action: drop
inhibit_rules:
  - name: node-down
    source_matchers: ['alertname="NodeDown"']
    target_matchers: ['alertname="PodNotReady"']
    equal: [node]
"#,
            payments = t.payments,
            platform = t.platform
        ),
    )
    .unwrap();
    dir
}

/// A test's topics as [`create_topics`] makes them, `special` with topic configs.
fn create_topics_with(broker: &str, t: &Topics, special: &str, config: &[(&str, &str)]) {
    for name in t.all() {
        let partitions = if name == t.input { 4 } else { 1 };
        if name == special {
            create_with(broker, name, partitions, config);
        } else {
            create(broker, &[(name, partitions)]);
        }
    }
}

/// A test's topics: the input with 4 partitions, the others with 1.
fn create_topics(broker: &str, t: &Topics) {
    let topics: Vec<(&str, i32)> = t
        .all()
        .into_iter()
        .map(|name| (name, if name == t.input { 4 } else { 1 }))
        .collect();
    create(broker, &topics);
}

/// Produces messages round-robin over the input's partitions.
fn produce(broker: &str, topic: &str, messages: &[Vec<u8>]) {
    let p = producer(broker);
    for (i, m) in messages.iter().enumerate() {
        let key = format!("k{i}");
        p.send(
            BaseRecord::to(topic)
                .key(&key)
                .payload(m)
                .partition((i % 4) as i32),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn run_env(broker: &str, t: &Topics, rules: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SQUADRON_BOOTSTRAP_SERVERS", broker.to_owned()),
        ("SQUADRON_GROUP_ID", t.group.clone()),
        ("SQUADRON_INPUT_TOPICS", t.input.clone()),
        ("SQUADRON_DEAD_LETTER_TOPIC", t.dead_letter.clone()),
        ("SQUADRON_AUDIT_TOPIC", t.audit.clone()),
        ("SQUADRON_RULES", rules.display().to_string()),
        ("SQUADRON_HTTP_LISTEN", "off".to_owned()),
    ]
}

#[test]
fn routes_to_squad_topics_dead_letters_bad_input_and_commits() {
    let Some((broker, t, rules)) = setup("route", "1s") else {
        return;
    };
    let checkout = |inst: &str| {
        alert(json!({"alertname": "HighErrorRate", "service": "checkout", "instance": inst}))
    };
    let messages: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&json!([
            checkout("a"),
            alert(json!({"alertname": "X", "service": "checkout", "env": "staging"}))
        ]))
        .unwrap(),
        serde_json::to_vec(&json!([checkout("a")])).unwrap(),
        b"<html>502 Bad Gateway</html>".to_vec(),
        serde_json::to_vec(&json!([checkout("b"), {"labels": {"alertname": 7}}])).unwrap(),
        serde_json::to_vec(&alert(
            json!({"alertname": "NodeDown", "service": "kubernetes", "node": "n1"}),
        ))
        .unwrap(),
        serde_json::to_vec(&json!([alert(
            json!({"alertname": "PodNotReady", "service": "checkout", "node": "n1"})
        )]))
        .unwrap(),
    ];
    produce(&broker, &t.input, &messages);
    // A bad message with a null key: its dead letter's key is null too.
    let p = producer(&broker);
    p.send(BaseRecord::<(), [u8]>::to(&t.input).payload(&b"keyless junk"[..]))
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    let child = squadron(
        &["run", "--audit", "suppressed"],
        &run_env(&broker, &t, &rules),
    );

    let notes = read_all(&broker, &t.payments, 1, Duration::from_secs(60));
    let platform = read_all(&broker, &t.platform, 1, Duration::from_secs(30));
    let mut dlq = read_all(&broker, &t.dead_letter, 3, Duration::from_secs(30));
    let keyless = dlq
        .iter()
        .position(|d| d.3 == b"keyless junk")
        .expect("the keyless message is dead-lettered");
    assert_eq!(dlq[keyless].2.get(KEY), None, "a null key stays null");
    dlq.remove(keyless);
    assert!(dlq.iter().all(|d| d.2.contains_key(KEY)), "keys are kept");
    let ends = end_offsets(&broker, &t.input);
    wait_until(
        Duration::from_secs(30),
        "offsets committed to the end",
        || committed(&broker, &t.group, &t.input) == ends,
    );
    let log = stop(child);

    // payments: one group for HighErrorRate holding a and b (b arrived in the same group_wait or the next interval).
    let payloads: Vec<Value> = notes
        .iter()
        .map(|(_, _, _, p)| serde_json::from_slice(p).unwrap())
        .collect();
    let instances: Vec<&str> = payloads
        .iter()
        .flat_map(|p| p["alerts"].as_array().unwrap())
        .filter_map(|a| a["labels"]["instance"].as_str())
        .collect();
    assert!(
        instances.contains(&"a") && instances.contains(&"b"),
        "{payloads:?}"
    );
    for p in &payloads {
        assert_eq!(p["version"], "4");
        assert_eq!(p["squad"], "payments");
        assert_eq!(
            p["groupLabels"],
            json!({"alertname": "HighErrorRate", "service": "checkout"})
        );
        assert!(
            !p["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["labels"]["alertname"] == "X"),
            "staging is dropped"
        );
        assert!(
            !p["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["labels"]["alertname"] == "PodNotReady"),
            "inhibited"
        );
    }
    assert_eq!(
        notes[0].2.get("squadron.reason").map(String::as_str),
        Some("new_group")
    );
    // platform: NodeDown only.
    let platform: Vec<Value> = platform
        .iter()
        .map(|(_, _, _, p)| serde_json::from_slice(p).unwrap())
        .collect();
    assert_eq!(platform.len(), 1, "{platform:?}");
    assert_eq!(platform[0]["alerts"][0]["labels"]["alertname"], "NodeDown");
    // Dead letters: the original bytes, with reason and source headers.
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let html = dlq
        .iter()
        .find(|d| d.3 == b"<html>502 Bad Gateway</html>")
        .expect("the HTML body is dead-lettered verbatim");
    assert_eq!(html.2["squadron.reason.kind"], "not_json");
    assert_eq!(html.2["squadron.source.topic"], t.input);
    assert!(html.2["squadron.source.offset"].parse::<i64>().is_ok());
    assert!(html.2.contains_key("squadron.time"));
    let partial = dlq
        .iter()
        .find(|d| d.3 != b"<html>502 Bad Gateway</html>")
        .unwrap();
    assert_eq!(partial.2["squadron.reason.kind"], "bad_label");
    assert_eq!(partial.2["squadron.invalid.alerts"], "1/2");
    // Audit (suppressed): the drop, the inhibition and both invalid inputs, each with its cause.
    let audit: Vec<Value> = read_all(&broker, &t.audit, 4, Duration::from_secs(20))
        .iter()
        .map(|(_, _, _, p)| serde_json::from_slice(p).unwrap())
        .collect();
    let causes: Vec<(String, String)> = audit
        .iter()
        .map(|a| {
            (
                a["fate"].as_str().unwrap().to_owned(),
                a["cause"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("dropped", "drop-staging"),
        ("inhibited", "node-down"),
        ("invalid", "not_json"),
        ("invalid", "bad_label"),
    ] {
        assert!(
            causes.iter().any(|(f, c)| f == want.0 && c == want.1),
            "audit has {want:?}: {causes:?}"
        );
    }
    assert!(
        audit
            .iter()
            .all(|a| a["topic"] == t.input.as_str() && a["offset"].as_i64().unwrap() >= 0),
        "{audit:?}"
    );
    assert!(log.contains("stopped"), "{log}");
}

/// A squad's storm limit is per squad, although its groups are decided by
/// whichever task their group key hashes to: every task sends the squad's
/// notifications to the one task that keeps its storm window. Twelve groups
/// over the tasks, a limit of three: three notifications and one summary, and
/// every input's fate (notified or throttled) names its input offset.
#[test]
fn a_squads_storm_limit_holds_across_the_tasks_deciding_its_groups() {
    let Some(broker) = broker() else {
        return;
    };
    let t = Topics::new("storm");
    create_topics(&broker, &t);
    let rules = rules_dir(&t, "1s");
    std::fs::write(
        rules.join("rules.yaml"),
        format!(
            r#"
ownership: {{fallback_squad: platform}}
squads:
  - name: payments
    services: [checkout]
    topic: {payments}
    grouping: {{group_by: [alertname, zone], group_wait: 1s, group_interval: 1m}}
    storm_limit: {{max_notifications: 3, interval: 15s}}
  - name: platform
    services: [kubernetes]
    topic: {platform}
"#,
            payments = t.payments,
            platform = t.platform
        ),
    )
    .unwrap();
    let groups = 12;
    let messages: Vec<Vec<u8>> = (0..groups)
        .map(|z| {
            serde_json::to_vec(&json!([alert(
                json!({"alertname": "HighLatency", "service": "checkout", "zone": format!("z{z}")})
            )]))
            .unwrap()
        })
        .collect();
    produce(&broker, &t.input, &messages);
    let child = squadron(&["run", "--audit", "all"], &run_env(&broker, &t, &rules));
    // The summary comes at the window's end, after every group was decided.
    let notes = read_all(&broker, &t.payments, 4, Duration::from_secs(90));
    let audit = read_all(&broker, &t.audit, groups, Duration::from_secs(30));
    let log = stop(child);

    let reasons: Vec<&str> = notes
        .iter()
        .map(|(_, _, h, _)| h["squadron.reason"].as_str())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "new_group").count(),
        3,
        "{reasons:?}\n{log}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "storm_summary").count(),
        1,
        "{reasons:?}"
    );
    let summary: Value = serde_json::from_slice(
        &notes
            .iter()
            .find(|(_, _, h, _)| h["squadron.reason"] == "storm_summary")
            .unwrap()
            .3,
    )
    .unwrap();
    assert_eq!(summary["folded"]["notifications"], groups - 3, "{summary}");
    let fates: Vec<Value> = audit
        .iter()
        .map(|(_, _, _, p)| serde_json::from_slice(p).unwrap())
        .collect();
    let count = |f: &str| fates.iter().filter(|a| a["fate"] == f).count();
    assert_eq!(
        (count("notified"), count("throttled")),
        (3, groups - 3),
        "{fates:?}"
    );
    let mut offsets: Vec<(i64, i64)> = fates
        .iter()
        .map(|a| {
            assert_eq!(a["topic"], t.input.as_str(), "{a}");
            (
                a["partition"].as_i64().unwrap(),
                a["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), groups, "one fate per input: {fates:?}");
}

/// 20,000 alerts in one group once made an 11 MB notification the broker
/// refused for ever: never delivered, input never committed, SIGTERM stuck.
/// Now the notification lists what fits and counts the rest, and an output the
/// broker refuses for good (here: a squad topic with a 50 KB limit) is
/// dead-lettered with its reason instead of blocking the partition.
#[test]
fn oversized_groups_are_cut_and_refused_outputs_dead_lettered() {
    let Some(broker) = broker() else {
        return;
    };
    let t = Topics::new("oversized");
    create_topics_with(&broker, &t, &t.payments, &[("max.message.bytes", "50000")]);
    let rules = rules_dir(&t, "1s");
    let note = "x".repeat(300);
    let mut messages: Vec<Vec<u8>> = (0..20)
        .map(|m| {
            let batch: Vec<Value> = (0..1000)
                .map(|i| {
                    json!({"labels": {"alertname": "PodDown", "service": "kubernetes", "pod": format!("p-{m}-{i}")},
                           "annotations": {"note": note}})
                })
                .collect();
            serde_json::to_vec(&batch).unwrap()
        })
        .collect();
    let checkout: Vec<Value> = (0..300)
        .map(|i| alert(json!({"alertname": "HighErrorRate", "service": "checkout", "instance": format!("i-{i}"), "note": note})))
        .collect();
    messages.push(serde_json::to_vec(&checkout).unwrap());
    produce(&broker, &t.input, &messages);
    let child = squadron(&["run"], &run_env(&broker, &t, &rules));

    // dead-hook and the three closed ones.
    let dlq = read_all(&broker, &t.dead_letter, 4, Duration::from_secs(60));
    let refused = dlq
        .iter()
        .find(|d| d.2.get("squadron.reason.kind").map(String::as_str) == Some("produce_failed"))
        .unwrap_or_else(|| panic!("no produce_failed dead letter: {dlq:?}"));
    assert_eq!(refused.2["squadron.output"], "notification");
    assert_eq!(refused.2["squadron.topic"], t.payments);
    assert!(
        refused.2["squadron.reason"].contains("too large"),
        "{:?}",
        refused.2
    );
    assert!(!refused.2["squadron.notification.id"].is_empty());
    assert_eq!(
        refused.2["squadron.bytes"].parse::<usize>().unwrap(),
        refused.3.len()
    );
    let ends = end_offsets(&broker, &t.input);
    wait_until(
        Duration::from_secs(60),
        "offsets committed to the end",
        || committed(&broker, &t.group, &t.input) == ends,
    );
    let mut complete = None;
    wait_until(
        Duration::from_secs(60),
        "a notification accounting for all 20,000 alerts",
        || {
            for (_, _, _, p) in read_all(&broker, &t.platform, 1, Duration::from_secs(10)) {
                let v: Value = serde_json::from_slice(&p).unwrap();
                let listed = v["alerts"].as_array().unwrap().len() as u64;
                if listed + v["truncatedAlerts"].as_u64().unwrap() == 20_000 {
                    complete = Some((p.len(), listed));
                }
            }
            complete.is_some()
        },
    );
    let (bytes, listed) = complete.unwrap();
    assert!(
        bytes <= 900_000 && listed > 1000,
        "{bytes} bytes, {listed} alerts"
    );
    let started = Instant::now();
    let log = stop(child);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn sigkill_mid_stream_and_restart_loses_no_alert() {
    let Some((broker, t, rules)) = setup("kill", "200ms") else {
        return;
    };
    let per_message = 5;
    let total_messages = 400;
    let message = move |m: usize| -> Vec<u8> {
        let alerts: Vec<Value> = (0..per_message)
            .map(|i| alert(json!({"alertname": "HighErrorRate", "service": "checkout", "seq": format!("{m}-{i}")})))
            .collect();
        serde_json::to_vec(&alerts).unwrap()
    };
    let env = run_env(&broker, &t, &rules);
    let mut first = squadron(&["run", "--audit", "all"], &env);

    // Produce gradually so the kill lands mid-stream.
    let (b, topic) = (broker.clone(), t.input.clone());
    let producer_thread = std::thread::spawn(move || {
        let p = producer(&b);
        for m in 0..total_messages {
            p.send(
                BaseRecord::to(&topic)
                    .key("k")
                    .payload(&message(m))
                    .partition((m % 4) as i32),
            )
            .unwrap();
            if m % 20 == 19 {
                p.flush(Duration::from_secs(10)).unwrap();
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        p.flush(Duration::from_secs(10)).unwrap();
    });
    // Wait until the first instance has decided some alerts, then kill it without warning.
    wait_until(
        Duration::from_secs(60),
        "first fates in the audit topic",
        || !read_all(&broker, &t.audit, 1, Duration::from_secs(2)).is_empty(),
    );
    assert!(
        !producer_thread.is_finished(),
        "the kill must land mid-stream"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let second = squadron(&["run", "--audit", "all"], &env);
    producer_thread.join().unwrap();

    let ends = end_offsets(&broker, &t.input);
    assert_eq!(ends.values().sum::<i64>(), total_messages as i64);
    wait_until(
        Duration::from_secs(90),
        "every input offset committed",
        || committed(&broker, &t.group, &t.input) == ends,
    );
    // Every input message's alerts have fates in the audit topic (at least once:
    // some were decided twice, by the killed instance and again after restart).
    // Committed input offsets do not mean decided: the decide stage reads the
    // repartition topic after the route stage, so wait for the fates themselves.
    let start = Instant::now();
    let missing = loop {
        let audit = read_all(
            &broker,
            &t.audit,
            total_messages * per_message,
            Duration::from_secs(10),
        );
        let mut fates: HashMap<(i64, i64), usize> = HashMap::new();
        for (_, _, _, p) in &audit {
            let v: Value = serde_json::from_slice(p).unwrap();
            *fates
                .entry((
                    v["partition"].as_i64().unwrap(),
                    v["offset"].as_i64().unwrap(),
                ))
                .or_default() += 1;
        }
        let mut missing = Vec::new();
        for (p, end) in &ends {
            for o in 0..*end {
                if fates.get(&(*p as i64, o)).copied().unwrap_or(0) < per_message {
                    missing.push((*p, o));
                }
            }
        }
        if missing.is_empty() || start.elapsed() > Duration::from_secs(90) {
            break missing;
        }
    };
    stop(second);
    assert!(
        missing.is_empty(),
        "inputs without a fate for every alert: {:?} (of {})",
        &missing[..missing.len().min(10)],
        total_messages
    );
    // And every alert reached the squad: each seq label appears in some notification.
    let notes = read_all(&broker, &t.payments, 1, Duration::from_secs(20));
    let mut seen = std::collections::HashSet::new();
    for (_, _, _, p) in &notes {
        let v: Value = serde_json::from_slice(p).unwrap();
        for a in v["alerts"].as_array().unwrap() {
            seen.insert(a["labels"]["seq"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        seen.len(),
        total_messages * per_message,
        "every alert was notified at least once"
    );
}

#[test]
fn record_then_replay_round_trips_a_stream() {
    let Some(broker) = broker() else { return };
    let topic = unique("record");
    // The sample's timestamps are days old: kept past the broker's retention.
    create_with(&broker, &topic, 1, &[("retention.ms", "-1")]);
    // Publish the bundled sample, each message stamped with its received_at.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/node-down-storm.jsonl");
    let text = std::fs::read_to_string(&sample).unwrap();
    let p = producer(&broker);
    let mut stamps = Vec::new();
    for line in text.lines() {
        let squadron::replay::Line::Message {
            at: Some(at),
            payload,
        } = squadron::replay::parse_line(line.as_bytes())
        else {
            panic!("sample lines are envelopes")
        };
        stamps.push(at.millis());
        p.send(
            BaseRecord::<(), [u8]>::to(&topic)
                .payload(&payload[..])
                .timestamp(at.millis()),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("recorded"));
    std::fs::create_dir_all(&dir).unwrap();
    let recorded = dir.join("recorded.jsonl");
    let run = squadron_output;
    run(&[
        "record",
        "--bootstrap-servers",
        &broker,
        "--topic",
        &topic,
        "-o",
        recorded.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&recorded).unwrap().lines().count(),
        text.lines().count()
    );
    let original = run(&[
        "replay",
        "--rules",
        "rules",
        "--json",
        sample.to_str().unwrap(),
    ]);
    let replayed = run(&[
        "replay",
        "--rules",
        "rules",
        "--json",
        recorded.to_str().unwrap(),
    ]);
    let (a, b): (Value, Value) = (
        serde_json::from_str(&original).unwrap(),
        serde_json::from_str(&replayed).unwrap(),
    );
    assert_eq!(
        a, b,
        "replaying the recording gives the same fates and notifications"
    );
    assert!(a["received"].as_u64().unwrap() > 1000);

    // A time window: only messages at or after --from.
    let from = squadron::model::Ts(stamps[stamps.len() / 2]);
    let window = dir.join("window.jsonl");
    run(&[
        "record",
        "--bootstrap-servers",
        &broker,
        "--topic",
        &topic,
        "--from",
        &from.to_string(),
        "-o",
        window.to_str().unwrap(),
    ]);
    let lines = std::fs::read_to_string(&window).unwrap();
    let expected = stamps.iter().filter(|s| **s >= from.millis()).count();
    assert_eq!(lines.lines().count(), expected);
}

/// Starts `squadron run` with its HTTP server on a free port and waits for /readyz.
fn run_with_http(
    broker: &str,
    t: &Topics,
    rules: &Path,
    extra: &[(&'static str, &str)],
) -> (std::process::Child, u16) {
    let port = free_port();
    let mut env = run_env(broker, t, rules);
    env.retain(|(k, _)| *k != "SQUADRON_HTTP_LISTEN");
    env.push(("SQUADRON_HTTP_LISTEN", format!("127.0.0.1:{port}")));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let child = squadron(&["run"], &env);
    wait_until(Duration::from_secs(60), "/readyz", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/readyz").0 == 200
    });
    (child, port)
}

/// A chunk of input messages and of records for several tasks is handled on
/// two threads: every alert still gets exactly one fate (an undecodable
/// message one, invalid), every group is notified once as new.
#[test]
fn a_chunk_handled_on_two_threads_gives_each_alert_one_fate() {
    let Some((broker, t, rules)) = setup("parallel", "2s") else {
        return;
    };
    let (groups, per_message, messages) = (100, 25, 800);
    let (child, port) = run_with_http(&broker, &t, &rules, &[("SQUADRON_AUDIT", "all")]);
    let garbage = |m: usize| m % 97 == 13;
    let batches: Vec<Vec<u8>> = (0..messages)
        .map(|m| {
            if garbage(m) {
                return b"{not json".to_vec();
            }
            let alerts: Vec<Value> = (0..per_message)
                .map(|i| {
                    let n = m * per_message + i;
                    alert(json!({
                        "alertname": format!("Load{}", n % groups),
                        "service": "checkout",
                        "instance": format!("i{}", n / groups),
                    }))
                })
                .collect();
            serde_json::to_vec(&alerts).unwrap()
        })
        .collect();
    produce(&broker, &t.input, &batches);
    let bad = (0..messages).filter(|&m| garbage(m)).count();
    let audit = read_all(
        &broker,
        &t.audit,
        (messages - bad) * per_message + bad,
        Duration::from_secs(120),
    );
    let notes = read_all(&broker, &t.payments, groups, Duration::from_secs(60));
    let parallel = metric(port, "squadron_pipeline_parallel_chunks_total");
    let held = metric(port, r#"squadron_routed_batches_total{path="held"}"#);
    let topic = metric(port, r#"squadron_routed_batches_total{path="topic"}"#);
    stop(child);
    let mut per_input: HashMap<(i64, i64), Vec<String>> = HashMap::new();
    for (_, _, _, payload) in &audit {
        let a: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(a["topic"], t.input.as_str());
        per_input
            .entry((
                a["partition"].as_i64().unwrap(),
                a["offset"].as_i64().unwrap(),
            ))
            .or_default()
            .push(a["fate"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_input.len(), messages, "every input message has fates");
    let invalid = per_input
        .values()
        .filter(|f| f.contains(&"invalid".to_owned()));
    assert_eq!(invalid.count(), bad);
    assert!(
        per_input
            .values()
            .all(|f| f.len() == per_message || f == &["invalid"]),
        "one fate per alert: {per_input:?}"
    );
    let mut new_groups: HashMap<String, usize> = HashMap::new();
    for (_, _, headers, payload) in &notes {
        if headers.get("squadron.reason").map(String::as_str) == Some("new_group") {
            let p: Value = serde_json::from_slice(payload).unwrap();
            *new_groups
                .entry(p["groupKey"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(new_groups.len(), groups);
    assert!(new_groups.values().all(|&n| n == 1), "{new_groups:?}");
    assert!(
        parallel.is_some_and(|n| n > 0.0),
        "some chunks were decided on two threads: {parallel:?}"
    );
    // One instance owns every task: no batch was routed to another
    // instance, and the first ones waited behind their lane's marker. (How
    // many went direct afterwards depends on how soon the marker came back
    // behind the prefetched input: here the whole input may be fetched first.)
    assert_eq!(topic, Some(0.0), "no batch for another instance");
    assert!(held.is_some_and(|n| n > 0.0), "held {held:?}");
}

#[test]
fn operating_a_running_pipeline_endpoints_metrics_and_hot_reload() {
    let Some((broker, t, rules)) = setup("ops", "30s") else {
        return;
    };
    let (child, port) = run_with_http(&broker, &t, &rules, &[]);
    assert_eq!(http(port, "GET", "/healthz"), (200, "ok\n".to_owned()));

    let send = |alerts: Value| produce(&broker, &t.input, &[serde_json::to_vec(&alerts).unwrap()]);
    send(json!([
        alert(json!({"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"})),
        alert(json!({"alertname": "Noise", "service": "checkout", "env": "staging"}))
    ]));
    wait_until(
        Duration::from_secs(30),
        "the alert in an active group",
        || {
            http(port, "GET", "/api/v1/groups")
                .1
                .contains("HighErrorRate")
        },
    );
    let (status, body) = http(
        port,
        "GET",
        "/api/v1/alerts?squad=payments&filter=severity%3D%22critical%22",
    );
    assert_eq!(status, 200);
    let alerts: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(alerts.len(), 1, "{body}");
    assert_eq!(alerts[0]["labels"]["alertname"], "HighErrorRate");
    assert_eq!(alerts[0]["squad"], "payments");
    let (_, none) = http(port, "GET", "/api/v1/alerts?squad=platform");
    assert_eq!(none.trim(), "[]");
    assert_eq!(
        http(port, "GET", "/api/v1/alerts?filter=bad%20matcher").0,
        400
    );
    // Status is published every commit interval (1 s).
    wait_until(
        Duration::from_secs(5),
        "status with the active alert",
        || {
            serde_json::from_str::<Value>(&http(port, "GET", "/api/v1/status").1).unwrap()["active_alerts"]
                == 1
        },
    );
    let status: Value = serde_json::from_str(&http(port, "GET", "/api/v1/status").1).unwrap();
    assert!(
        status["squads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "payments")
    );
    let digest = status["rules_digest"].as_str().unwrap().to_owned();

    // A real scrape passes promtool.
    let (_, scrape) = http(port, "GET", "/metrics");
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    use std::io::Write;
    let mut promtool = promtool;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        scrape.contains(
            "squadron_alert_suppressions_total{fate=\"dropped\",rule=\"drop-staging\"} 1"
        ),
        "{scrape}"
    );
    // Processing latency is measured per message, whatever group_wait is.
    let decided = metric(port, "squadron_processing_latency_seconds_count").unwrap_or(0.0);
    assert!(decided >= 1.0, "{scrape}");

    // A broken rule file while running: rejected, the old rules keep serving, nothing lost.
    std::fs::write(
        rules.join("broken.yaml"),
        "impact_rules:\n  - name: oops\n    match: ['severity=~\"(\"']\n    action: drop\n",
    )
    .unwrap();
    wait_until(
        Duration::from_secs(2),
        "the failed reload in status",
        || {
            serde_json::from_str::<Value>(&http(port, "GET", "/api/v1/status").1).unwrap()["rules_error"].is_string()
        },
    );
    assert_eq!(metric(port, "squadron_rules_valid "), Some(0.0));
    assert_eq!(
        metric(port, "squadron_rule_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    let status: Value = serde_json::from_str(&http(port, "GET", "/api/v1/status").1).unwrap();
    assert_eq!(
        status["rules_digest"],
        digest.as_str(),
        "the old rules are still active"
    );
    assert!(
        status["rules_error"]
            .as_str()
            .unwrap()
            .contains("broken.yaml:3"),
        "{status}"
    );
    send(json!([
        alert(json!({"alertname": "Noise", "service": "checkout", "env": "staging", "n": "2"})),
        alert(json!({"alertname": "Other", "service": "checkout"}))
    ]));
    wait_until(
        Duration::from_secs(20),
        "both alerts decided under the old rules",
        || {
            metric(
                port,
                "squadron_alert_suppressions_total{fate=\"dropped\",rule=\"drop-staging\"}",
            ) == Some(2.0)
                && serde_json::from_str::<Value>(&http(port, "GET", "/api/v1/status").1).unwrap()["active_alerts"]
                    == 2
        },
    );
    let (code, body) = http(port, "POST", "/-/reload");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("rolled_back"));

    // Fixing the file reloads within 2 s; the group keeps its alerts and timers.
    std::fs::write(
        rules.join("broken.yaml"),
        "impact_rules:\n  - name: fixed\n    match: ['severity=\"info\"']\n    action: drop\n",
    )
    .unwrap();
    wait_until(Duration::from_secs(2), "the fixed rules loaded", || {
        let s: Value = serde_json::from_str(&http(port, "GET", "/api/v1/status").1).unwrap();
        s["rules_error"].is_null() && s["rules_digest"] != digest.as_str()
    });
    // (wait_until gives up past 2 s: the file watch reloads within that.)
    assert_eq!(metric(port, "squadron_rules_valid "), Some(1.0));
    assert_eq!(
        metric(port, "squadron_rule_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    wait_until(
        Duration::from_secs(5),
        "state carried over the reload",
        || {
            serde_json::from_str::<Value>(&http(port, "GET", "/api/v1/status").1).unwrap()["active_alerts"]
                == 2
        },
    );
    let (code, body) = http(port, "POST", "/-/reload");
    assert_eq!((code, body.contains("unchanged")), (200, true), "{body}");
    let received = metric(
        port,
        "squadron_alerts_received_total{format=\"prometheus_batch\"}",
    )
    .unwrap();
    let fates: f64 = http(port, "GET", "/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with("squadron_alert_fates_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(received, 4.0);
    assert_eq!(
        fates, 2.0,
        "two decided (dropped); two wait in their groups (group_wait 30s)"
    );
    stop(child);
}

#[test]
fn a_real_prometheus_delivers_its_alerts_through_squadron_to_a_squad_topic() {
    let Some((broker, t, rules)) = setup("prom", "1s") else {
        return;
    };
    let prometheus_bin = which("prometheus")
        .expect("prometheus (Debian package prometheus; scripts/test.sh installs it)");
    let (child, port) = run_with_http(&broker, &t, &rules, &[("SQUADRON_INGEST_TOKEN", "s3cret")]);

    // The ingest's own answers.
    assert_eq!(http(port, "POST", "/api/v2/alerts").0, 401, "no token");
    let post = |token: &str, body: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0)
    };
    assert_eq!(post("wrong", "[]"), 401);
    assert_eq!(post("s3cret", "{not json"), 400);
    assert_eq!(post("s3cret", r#"[{"labels":{}}]"#), 422);

    // A real Prometheus, configured only with squadron's address (and the token).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("prometheus"));
    let notes = prometheus_delivers(
        &prometheus_bin,
        &dir,
        &format!(
            "static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n      authorization: {{credentials: s3cret}}"
        ),
        &broker,
        &t.payments,
    );
    stop(child);
    assert_always_firing_notified(&notes);
}

/// `squadron loadgen` against the ingest over HTTP/1.1 and HTTP/2: every
/// batch acknowledged with 200 is in the input topic, and nothing else is.
#[test]
fn the_ingest_stores_exactly_what_it_acknowledges_over_http1_and_http2() {
    let Some((broker, t, rules)) = setup("loadgen", "1s") else {
        return;
    };
    let (child, port) = run_with_http(&broker, &t, &rules, &[]);
    let url = format!("http://127.0.0.1:{port}/api/v2/alerts");
    let batch = 16;
    let mut accepted = 0;
    for protocol in [None, Some("--http2")] {
        let batch_arg = batch.to_string();
        let mut args = vec!["loadgen", "--url", &url, "--duration", "2s", "--json"];
        args.extend(["--concurrency", "4", "--batch", &batch_arg]);
        args.extend(protocol);
        let report: Value = serde_json::from_str(&squadron_output(&args)).unwrap();
        let requests = report["requests"].as_u64().unwrap();
        assert!(requests > 0, "{report}");
        assert_eq!(report["answers"], json!({"200": requests}), "{report}");
        assert_eq!(report["accepted_alerts"].as_u64(), Some(requests * batch));
        assert_eq!(
            report["protocol"],
            if protocol.is_some() {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            }
        );
        accepted += requests * batch;
    }
    stop(child);
    let stored: i64 = end_offsets(&broker, &t.input).values().sum();
    assert_eq!(
        stored as u64 * batch,
        accepted,
        "one message per acknowledged batch"
    );
}

/// Runs a real Prometheus with one always-firing alert, sending to the
/// Alertmanager `alertmanager` describes (YAML, under `alertmanagers:`), until
/// a notification reaches `topic`; returns what reached it.
fn prometheus_delivers(
    prometheus_bin: &Path,
    dir: &Path,
    alertmanager: &str,
    broker: &str,
    topic: &str,
) -> Vec<Record> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: test\n    interval: 1s\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n        labels: {service: checkout, severity: critical}\n        annotations: {summary: always}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{evaluation_interval: 1s}}\nrule_files: [{}]\nalerting:\n  alertmanagers:\n    - {alertmanager}\n",
            dir.join("rules.yml").display()
        ),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new(prometheus_bin)
        .args([
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{}", free_port()),
            // Prometheus drops the first send when it precedes Alertmanager
            // discovery, then re-sends after this delay (default 1 m).
            "--rules.alert.resend-delay=2s".to_owned(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let notes = read_all(broker, topic, 1, Duration::from_secs(60));
    prometheus.kill().unwrap();
    prometheus.wait().unwrap();
    notes
}

fn assert_always_firing_notified(notes: &[Record]) {
    let payloads: Vec<Value> = notes
        .iter()
        .map(|(_, _, _, p)| serde_json::from_slice(p).unwrap())
        .collect();
    let alert = payloads
        .iter()
        .flat_map(|p| p["alerts"].as_array().unwrap())
        .find(|a| a["labels"]["alertname"] == "AlwaysFiring")
        .unwrap_or_else(|| panic!("no AlwaysFiring notification: {payloads:?}"));
    assert_eq!(alert["status"], "firing");
    assert!(
        alert["generatorURL"].as_str().unwrap().starts_with("http"),
        "Prometheus set generatorURL: {alert}"
    );
    assert_eq!(payloads[0]["squad"], "payments");
}

/// squadron behind HTTPS and basic auth from a web config file (the format
/// Prometheus itself uses): a real Prometheus delivers with its own
/// `tls_config` and `basic_auth`; requests without credentials get 401, and a
/// user who may only read gets 403 on the ingest.
#[test]
fn a_real_prometheus_delivers_over_https_with_basic_auth() {
    let Some((broker, t, rules)) = setup("prom-tls", "1s") else {
        return;
    };
    let prometheus_bin = which("prometheus")
        .expect("prometheus (Debian package prometheus; scripts/test.sh installs it)");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("prometheus-tls"));
    let (ca, cert, key) = make_certificate(&dir.join("tls"));
    let hash = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config: {{cert_file: {}, key_file: {}}}\nbasic_auth_users:\n  prometheus: '{}'\n  grafana: '{}'\n",
            cert.display(),
            key.display(),
            hash("prom-pw"),
            hash("grafana-pw")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("squadron.yaml"),
        "http:\n  web_config_file: web.yml\n  authorization: {writers: [prometheus], readers: [grafana, prometheus]}\n",
    )
    .unwrap();
    let port = free_port();
    let mut env = run_env(&broker, &t, &rules);
    env.retain(|(k, _)| *k != "SQUADRON_HTTP_LISTEN");
    env.push(("SQUADRON_HTTP_LISTEN", format!("127.0.0.1:{port}")));
    env.push((
        "SQUADRON_CONFIG",
        dir.join("squadron.yaml").display().to_string(),
    ));
    let child = squadron(&["run"], &env);
    let ca_arg = ca.display().to_string();
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    wait_until(Duration::from_secs(60), "/readyz over https", || {
        curl(&["--cacert", &ca_arg, &url("/readyz")]).0 == 200
    });
    assert_eq!(
        curl(&[
            "--cacert",
            &ca_arg,
            "-X",
            "POST",
            "-d",
            "[]",
            &url("/api/v2/alerts")
        ])
        .0,
        401
    );
    assert_eq!(
        curl(&[
            "--cacert",
            &ca_arg,
            "-u",
            "grafana:grafana-pw",
            "-X",
            "POST",
            "-d",
            "[]",
            &url("/api/v2/alerts")
        ])
        .0,
        403
    );
    assert_eq!(
        curl(&[
            "--cacert",
            &ca_arg,
            "-u",
            "grafana:grafana-pw",
            &url("/api/v1/status")
        ])
        .0,
        200
    );
    assert_eq!(curl(&["--cacert", &ca_arg, &url("/api/v1/status")]).0, 401);
    let notes = prometheus_delivers(
        &prometheus_bin,
        &dir,
        &format!(
            "scheme: https\n      tls_config: {{ca_file: {ca_arg}}}\n      basic_auth: {{username: prometheus, password: prom-pw}}\n      static_configs: [{{targets: ['127.0.0.1:{port}']}}]"
        ),
        &broker,
        &t.payments,
    );
    stop(child);
    assert_always_firing_notified(&notes);
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// Requests a test server saw: (path, status it answered, body).
type RequestLog = std::sync::Arc<std::sync::Mutex<Vec<(String, u16, String)>>>;

/// A local HTTP server recording every request as (path, body); `/flaky` fails
/// its first three requests, `/dead` fails all, everything else answers 200.
fn receiver_server() -> (u16, RequestLog) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut flaky = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = if path.starts_with("/flaky") {
                flaky += 1;
                if flaky <= 3 { 500 } else { 200 }
            } else if path.starts_with("/dead") {
                503
            } else {
                200
            };
            seen.lock()
                .unwrap()
                .push((path, status, String::from_utf8_lossy(&body).into_owned()));
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, log)
}

#[test]
fn receivers_get_webhook_slack_and_pagerduty_deliveries_with_retries() {
    let Some((broker, t, rules)) = setup("recv", "1s") else {
        return;
    };
    let (port, log) = receiver_server();
    // A receiver that accepts and never answers: the others must not wait for it.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let held: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for s in stuck.incoming().flatten() {
                held.lock().unwrap().push(s);
            }
        });
    }
    // Secrets from a file and from the environment, read at delivery.
    let key_file = rules.join("pagerduty-key");
    std::fs::write(&key_file, "R0UTINGFROMFILE\n").unwrap();
    let key_file = key_file.display();
    let closed = free_port();
    std::fs::write(
        rules.join("rules.yaml"),
        std::fs::read_to_string(rules.join("rules.yaml")).unwrap().replace(
            "    services: [checkout]\n",
            &format!(
                r#"    services: [checkout]
    goalkeeper: {{timezone: UTC, rotation: {{start: "2026-01-01", people: [gil]}}}}
    receivers:
      - name: stuck-hook
        webhook: {{url: "http://127.0.0.1:{stuck_port}/never"}}
        retry: {{attempts: 1, backoff: 50ms}}
      - name: flaky-hook
        webhook: {{url: "http://127.0.0.1:{port}/flaky?token=SECRETQUERY", headers: {{Authorization: "Bearer SECRETHEADER"}}}}
        retry: {{attempts: 5, backoff: 50ms}}
      - name: team-slack
        slack: {{url: {{env: TEST_SLACK_URL}}, channel: '#pay'}}
      - name: pager
        pagerduty: {{routing_key_file: "{key_file}", url: "http://127.0.0.1:{port}/pd"}}
      - name: closed-a
        webhook: {{url: "http://127.0.0.1:80/PATH?token=SECRETA"}}
        retry: {{attempts: 1, backoff: 50ms}}
      - name: closed-b
        webhook: {{url: "http://LOCALHOST:{closed}/SECRETB"}}
        retry: {{attempts: 1, backoff: 50ms}}
      - name: closed-pager
        pagerduty: {{routing_key: SECRETKEY, url: "http://127.0.0.1:{closed}/pd"}}
        retry: {{attempts: 1, backoff: 50ms}}
      - name: dead-hook
        webhook: {{url: "http://127.0.0.1:{port}/dead"}}
        retry: {{attempts: 2, backoff: 50ms}}
"#
            ),
        ),
    )
    .unwrap();
    let http_port = free_port();
    let mut env = run_env(&broker, &t, &rules);
    env.retain(|(k, _)| *k != "SQUADRON_HTTP_LISTEN");
    env.push(("SQUADRON_HTTP_LISTEN", format!("127.0.0.1:{http_port}")));
    env.push((
        "TEST_SLACK_URL",
        format!("http://127.0.0.1:{port}/slack/T000/B000/SECRETPATH"),
    ));
    let child = squadron(&["run"], &env);
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&json!([alert(
            json!({"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"})
        )]))
        .unwrap()],
    );
    let dlq = read_all(&broker, &t.dead_letter, 1, Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "all deliveries", || {
        let l = log.lock().unwrap();
        l.iter().filter(|r| r.0.starts_with("/flaky")).count() >= 4
            && l.iter().any(|r| r.0.starts_with("/slack"))
            && l.iter().any(|r| r.0 == "/pd")
    });
    // ...delivered while the stuck receiver's request still hangs, unanswered.
    {
        let held = held.lock().unwrap();
        assert!(!held.is_empty(), "the stuck receiver was called");
        let s = &held[0];
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        use std::io::Read;
        // Its request arrived and the connection is still open: reading gives
        // the request's bytes, then would block (a closed one gives 0).
        let open = loop {
            match (&*s).read(&mut buf) {
                Ok(0) => break false,
                Ok(_) => continue,
                Err(e) => break e.kind() == std::io::ErrorKind::WouldBlock,
            }
        };
        assert!(open, "the other receivers did not wait for the stuck one");
    }
    let (_, metrics) = http(http_port, "GET", "/metrics");
    let (_, status) = http(http_port, "GET", "/api/v1/status");
    let log_text = stop(child);
    let l = log.lock().unwrap();

    // Fails its first three attempts, then arrives exactly once.
    let flaky: Vec<_> = l.iter().filter(|r| r.0.starts_with("/flaky")).collect();
    assert_eq!(
        flaky.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![500, 500, 500, 200]
    );
    // What a receiver written for Alertmanager's webhook reads: version 4 with the alerts.
    let payload: Value = serde_json::from_str(&flaky[3].2).unwrap();
    assert_eq!(
        (payload["version"].as_str(), payload["status"].as_str()),
        (Some("4"), Some("firing"))
    );
    assert_eq!(payload["alerts"][0]["labels"]["alertname"], "HighErrorRate");
    assert_eq!(payload["goalkeeper"], "gil");
    assert_eq!(
        payload["receiver"], "flaky-hook",
        "the receiver's name, as Alertmanager sends"
    );
    let slack: Value =
        serde_json::from_str(&l.iter().find(|r| r.0.starts_with("/slack")).unwrap().2).unwrap();
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .contains("Goalkeeper on duty: *gil*"),
        "{slack}"
    );
    assert_eq!(slack["channel"], "#pay");
    let pd: Value = serde_json::from_str(&l.iter().find(|r| r.0 == "/pd").unwrap().2).unwrap();
    assert_eq!(
        (pd["event_action"].as_str(), pd["routing_key"].as_str()),
        (Some("trigger"), Some("R0UTINGFROMFILE"))
    );
    assert_eq!(
        pd["dedup_key"].as_str().unwrap().len(),
        64,
        "a hash of the group key"
    );
    // The receiver that never answers 2xx: two attempts, then the dead-letter topic.
    assert_eq!(l.iter().filter(|r| r.0.starts_with("/dead")).count(), 2);
    let dead = dlq
        .iter()
        .find(|d| {
            d.2.get("squadron.reason.kind").map(String::as_str) == Some("receiver_failed")
                && d.2.get("squadron.receiver").map(String::as_str) == Some("dead-hook")
        })
        .expect("dead-lettered delivery");
    assert!(dead.2["squadron.reason"].contains("HTTP 503"));
    // Secrets in URLs, headers and routing keys never reach the logs,
    // metrics, status or dead letters (which carry the notification).
    let mut everything = format!("{log_text}\n{metrics}\n{status}\n");
    for (_, _, headers, payload) in &dlq {
        everything.push_str(&format!(
            "{headers:?} {}\n",
            String::from_utf8_lossy(payload)
        ));
    }
    assert!(
        !everything.to_ascii_lowercase().contains("secret"),
        "{everything}"
    );
    for name in ["closed-a", "closed-b", "closed-pager"] {
        let d = dlq
            .iter()
            .find(|d| d.2.get("squadron.receiver").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("{name} dead-lettered"));
        let v: Value = serde_json::from_slice(&d.3).unwrap();
        assert_eq!(v["receiver"].as_str(), Some(name), "the notification");
    }
    assert!(
        metrics.contains("squadron_receiver_delivery_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        log_text.contains("flaky-hook"),
        "retries are logged by receiver name: {log_text}"
    );
}

/// POSTs `body` to the ingest; the status code.
fn post(port: u16, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Poison messages, in the input topic and through the ingest: a CloudEvent
/// nested 8,000 times, a 900 KB label value, bytes that are not UTF-8, and a
/// million tiny distinct alerts in 4.4 MB messages (split between the
/// stages). The process stays up, each bad one is dead-lettered with its
/// reason, the million are decided (most shed by the state limit), and a good
/// alert after them is notified.
#[test]
fn poison_messages_are_dead_lettered_and_later_alerts_decided() {
    let Some(broker) = broker() else {
        return;
    };
    let t = Topics::new("poison");
    create_topics_with(&broker, &t, &t.input, &[("max.message.bytes", "10000000")]);
    let rules = rules_dir(&t, "0s");
    // The million share one group (alertname Tiny, no service); a lower cap
    // keeps each of its flushes small in this debug build.
    std::fs::write(
        rules.join("limits.yaml"),
        "limits: {max_active_alerts: 50000}\n",
    )
    .unwrap();
    let mut nested = r#"{"labels":{"alertname":"Deep","service":"checkout"}}"#.to_string();
    for _ in 0..8_000 {
        nested =
            format!(r#"{{"specversion":"1.0","type":"x","source":"s","id":"1","data":{nested}}}"#);
    }
    let huge = serde_json::to_vec(&alert(
        json!({"alertname": "Huge", "service": "checkout", "blob": "x".repeat(900_000)}),
    ))
    .unwrap();
    let mut poison: Vec<Vec<u8>> = vec![
        nested.clone().into_bytes(),
        vec![0xff, 0xfe, b'{', 0xc3],
        huge,
    ];
    // A million tiny distinct alerts, in five messages of 200,000.
    for m in 0..5 {
        let mut tiny = Vec::with_capacity(6_000_000);
        tiny.push(b'[');
        for i in 0..200_000 {
            if i > 0 {
                tiny.push(b',');
            }
            tiny.extend_from_slice(
                format!(r#"{{"labels":{{"alertname":"Tiny","id":"{m}-{i}"}}}}"#).as_bytes(),
            );
        }
        tiny.push(b']');
        poison.push(tiny);
    }
    let p: rdkafka::producer::ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("message.max.bytes", "10000000")
        .create_with_context(rdkafka::producer::DefaultProducerContext)
        .unwrap();
    for (i, m) in poison.iter().enumerate() {
        p.send(
            BaseRecord::<(), [u8]>::to(&t.input)
                .payload(m)
                .partition(i as i32 % 4),
        )
        .map_err(|(e, _)| e)
        .expect("poison produced");
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let (child, port) = run_with_http(&broker, &t, &rules, &[]);

    // Through the ingest: refused with a reason, the process stays up.
    let deep_post = {
        let mut m = r#"{"labels":{"alertname":"Deep"}}"#.to_string();
        for _ in 0..2_000 {
            m = format!(r#"{{"specversion":"1.0","data":{m}}}"#);
        }
        m
    };
    assert_eq!(post(port, deep_post.as_bytes()), 400);
    assert_eq!(post(port, &[0xff, 0xfe]), 400);
    assert_eq!(http(port, "GET", "/healthz").0, 200);

    let dlq = read_all(&broker, &t.dead_letter, 2, Duration::from_secs(120));
    let kinds: Vec<&str> = dlq
        .iter()
        .map(|d| d.2["squadron.reason.kind"].as_str())
        .collect();
    assert!(kinds.contains(&"too_deep"), "{kinds:?}");
    assert!(kinds.contains(&"not_utf8"), "{kinds:?}");
    wait_until(
        Duration::from_secs(60),
        "the 900 KB alert dead-lettered",
        || {
            read_all(&broker, &t.dead_letter, 3, Duration::from_secs(5))
                .iter()
                .any(|d| d.2["squadron.reason.kind"] == "too_large")
        },
    );
    let deep = dlq
        .iter()
        .find(|d| d.2["squadron.reason.kind"] == "too_deep")
        .unwrap();
    assert_eq!(deep.3, nested.as_bytes(), "dead-lettered verbatim");

    // Every one of the million has a fate; the state limit shed most of them.
    wait_until(
        Duration::from_secs(300),
        "the million tiny alerts decided",
        || {
            metric(port, "squadron_alert_fates_total{fate=\"shed\"}").unwrap_or(0.0) > 0.0
                && metric(port, "squadron_stage_alerts_total{stage=\"decide\"}").unwrap_or(0.0)
                    >= 1_000_000.0
        },
    );
    // A good alert after all that is notified.
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&alert(
            json!({"alertname": "AfterPoison", "service": "checkout"}),
        ))
        .unwrap()],
    );
    wait_until(Duration::from_secs(60), "the good alert notified", || {
        read_all(&broker, &t.payments, 1, Duration::from_secs(5))
            .iter()
            .any(|(_, _, _, p)| String::from_utf8_lossy(p).contains("AfterPoison"))
    });
    assert_eq!(http(port, "GET", "/healthz").0, 200);
    stop(child);
}

/// squadron consumes and produces through the test broker's SASL_SSL
/// listener (TLS with the broker's CA, SCRAM-SHA-256), configured with
/// librdkafka properties in its config file, as README's "Kafka security"
/// shows. It is given only that listener's address; a wrong password stops
/// it at start with the broker's answer.
#[test]
fn consumes_and_produces_through_a_sasl_ssl_listener() {
    let (Ok(sasl), Ok(ca)) = (
        std::env::var("SQUADRON_TEST_KAFKA_SASL_SSL"),
        std::env::var("SQUADRON_TEST_KAFKA_CA"),
    ) else {
        eprintln!(
            "SQUADRON_TEST_KAFKA_SASL_SSL and SQUADRON_TEST_KAFKA_CA are not set: skipping (scripts/test.sh sets them)"
        );
        return;
    };
    let Some((broker, t, rules)) = setup("sasl", "1s") else {
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("sasl"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |password: &str| {
        let path = dir.join(format!("squadron-{password}.yaml"));
        std::fs::write(
            &path,
            format!(
                "kafka:\n  bootstrap_servers: {sasl}\n  properties:\n    security.protocol: SASL_SSL\n    sasl.mechanism: SCRAM-SHA-256\n    sasl.username: squadron\n    sasl.password: {password}\n    ssl.ca.location: {ca}\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let env = |password: &str| {
        let mut env: Vec<(&str, String)> = run_env(&broker, &t, &rules)
            .into_iter()
            .filter(|(k, _)| *k != "SQUADRON_BOOTSTRAP_SERVERS")
            .collect();
        env.push(("SQUADRON_CONFIG", config(password)));
        env
    };

    let mut wrong = squadron(&["run"], &env("not-the-password"));
    let status = {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(s) = wrong.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "a wrong SASL password must stop squadron at start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut log = String::new();
    use std::io::Read;
    wrong
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(!status.success());
    assert!(log.contains("Authentication failed"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password is not logged: {log}"
    );

    let child = squadron(&["run"], &env("squadron-test-password"));
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&json!([alert(
            json!({"alertname": "OverTls", "service": "checkout"})
        )]))
        .unwrap()],
    );
    let notes = read_all(&broker, &t.payments, 1, Duration::from_secs(60));
    stop(child);
    let v: Value = serde_json::from_slice(&notes[0].3).unwrap();
    assert_eq!(v["alerts"][0]["labels"]["alertname"], "OverTls");
}

/// A squad that groups by all labels (page per alert, common with
/// PagerDuty): a 12-label alert's group key is far over PagerDuty's 255
/// characters. The trigger and the resolve reach a PagerDuty-compatible server
/// with the same short dedup key.
#[test]
fn pagerduty_gets_one_short_dedup_key_for_a_group_by_all_labels() {
    let Some((broker, t, rules)) = setup("pd-key", "1s") else {
        return;
    };
    let (port, log) = receiver_server();
    std::fs::write(
        rules.join("rules.yaml"),
        std::fs::read_to_string(rules.join("rules.yaml")).unwrap().replace(
            "    services: [checkout]\n",
            &format!(
                "    services: [checkout]\n    grouping: {{group_by: ['...']}}\n    receivers:\n      - name: pager\n        pagerduty: {{routing_key: {{env: TEST_PD_KEY}}, url: \"http://127.0.0.1:{port}/pd\"}}\n"
            ),
        ),
    )
    .unwrap();
    let mut env = run_env(&broker, &t, &rules);
    env.push(("TEST_PD_KEY", "R0UTING".into()));
    let child = squadron(&["run"], &env);
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), "PodCrashLooping".into());
    labels.insert("service".into(), "checkout".into());
    for i in 0..10 {
        labels.insert(
            format!("label_{i:02}"),
            format!("value-{i}-{}", "x".repeat(40)).into(),
        );
    }
    let firing = alert(Value::Object(labels.clone()));
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&json!([firing])).unwrap()],
    );
    wait_until(Duration::from_secs(60), "the trigger", || {
        log.lock().unwrap().iter().any(|r| r.0 == "/pd")
    });
    let mut resolved = firing.clone();
    resolved["endsAt"] = json!("2020-01-01T00:00:00Z");
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&json!([resolved])).unwrap()],
    );
    wait_until(Duration::from_secs(60), "the resolve", || {
        log.lock().unwrap().iter().filter(|r| r.0 == "/pd").count() >= 2
    });
    stop(child);
    let events: Vec<Value> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == "/pd")
        .map(|r| serde_json::from_str(&r.2).unwrap())
        .collect();
    let key = events[0]["dedup_key"].as_str().unwrap();
    assert!(key.len() <= 255, "{key}");
    assert_eq!(
        (
            events[0]["event_action"].as_str(),
            events[1]["event_action"].as_str()
        ),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(
        events[1]["dedup_key"].as_str(),
        Some(key),
        "the resolve closes the same incident"
    );
    assert!(
        events[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 1024
    );
}

/// amtool, Alertmanager's own client, reads squadron: the alerts it holds
/// (with their squad), the rule files' silences, and status. A silence cannot
/// be added over the API yet: amtool gets an error, not a silent success.
#[test]
fn amtool_queries_alerts_and_silences() {
    let Some((broker, t, rules)) = setup("amtool", "1s") else {
        return;
    };
    let text = std::fs::read_to_string(rules.join("rules.yaml")).unwrap();
    std::fs::write(
        rules.join("rules.yaml"),
        format!(
            "{text}\nsilences:\n  - matchers: ['alertname=\"Deploying\"']\n    starts_at: '2026-01-01T00:00:00Z'\n    ends_at: '2099-01-01T00:00:00Z'\n    created_by: release-team\n    comment: deploys page nobody\n"
        ),
    )
    .unwrap();
    let (child, port) = run_with_http(&broker, &t, &rules, &[("SQUADRON_AUDIT", "suppressed")]);
    let mut disk = alert(json!({"alertname": "DiskFull", "service": "checkout", "instance": "b"}));
    disk["generatorURL"] = json!("http://prometheus:9090/graph?g0.expr=disk");
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&json!([
            alert(json!({"alertname": "HighErrorRate", "service": "checkout", "instance": "a"})),
            disk
        ]))
        .unwrap()],
    );
    let run = |args: &[&str]| amtool(port, args);
    let names = |json: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    wait_until(Duration::from_secs(60), "both alerts held", || {
        let (ok, out, _) = run(&["alert", "query", "-o", "json"]);
        ok && names(&out).len() == 2
    });
    let (ok, out, err) = run(&["alert", "query", "-o", "json", "alertname=DiskFull"]);
    assert!(ok, "{err}");
    assert_eq!(names(&out), vec!["DiskFull"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["status"]["state"], "active");
    // squadron's additions (amtool drops fields it does not know).
    let (code, body) = http(
        port,
        "GET",
        "/api/v2/alerts?filter=alertname%3D%22DiskFull%22",
    );
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v[0]["squad"].as_str(), v.as_array().unwrap().len()),
        (Some("payments"), 1)
    );
    assert_eq!(
        v[0]["generatorURL"],
        "http://prometheus:9090/graph?g0.expr=disk"
    );
    // amtool's own table output parses what it got.
    let (ok, table, err) = run(&["alert", "query"]);
    assert!(ok && table.contains("HighErrorRate"), "{table}{err}");

    let (ok, out, err) = run(&["silence", "query", "-o", "json"]);
    assert!(ok, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s[0]["createdBy"], "release-team");
    assert_eq!(s[0]["matchers"][0]["value"], "Deploying");
    let (ok, out, _) = run(&["silence", "query", "-o", "json", "alertname=Other"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));

    let (ok, out, err) = run(&["config", "show"]);
    assert!(ok && out.contains("squadron rules, digest"), "{out}{err}");

    // Runtime silences through amtool: add, query, in force, expire.
    let (ok, out, err) = run(&[
        "silence",
        "add",
        "alertname=DiskFull",
        "--comment=disk replaced tonight",
        "--author=alice",
        "--duration=1h",
    ]);
    assert!(ok, "{out}{err}");
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {out}");
    let silences = |args: &[&str]| -> Value {
        let mut a = vec!["silence", "query", "-o", "json"];
        a.extend_from_slice(args);
        let (ok, out, err) = run(&a);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let s = silences(&["alertname=DiskFull"]);
    assert_eq!(
        (
            s[0]["id"].as_str(),
            s[0]["createdBy"].as_str(),
            s[0]["status"]["state"].as_str()
        ),
        (Some(id.as_str()), Some("alice"), Some("active")),
        "{s}"
    );
    // The held DiskFull alert is suppressed now (and leaves its group at the
    // next flush): amtool's default query no longer lists it.
    let (ok, out, err) = run(&["alert", "query", "-o", "json"]);
    assert!(ok, "{err}");
    assert_eq!(names(&out), vec!["HighErrorRate"]);
    // A DiskFull alert produced afterwards is silenced, with that silence named.
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&alert(
            json!({"alertname": "DiskFull", "service": "checkout", "instance": "c"}),
        ))
        .unwrap()],
    );
    let silenced_by = |audit: &[Record]| {
        audit.iter().any(|(_, _, _, p)| {
            let v: Value = serde_json::from_slice(p).unwrap_or_default();
            v["fate"] == "silenced" && v["cause"] == json!(id)
        })
    };
    wait_until(
        Duration::from_secs(60),
        "a fate silenced by the runtime silence",
        || silenced_by(&read_all(&broker, &t.audit, 1, Duration::from_secs(3))),
    );
    // Every change is audited, with who made it.
    let audit = read_all(&broker, &t.audit, 1, Duration::from_secs(3));
    assert!(audit.iter().any(|(_, _, _, p)| {
        let v: Value = serde_json::from_slice(p).unwrap_or_default();
        v["control"] == "silence" && v["action"] == "created" && v["record"]["id"] == json!(id)
    }));

    // Expire it: the next DiskFull alert notifies.
    let (ok, _, err) = run(&["silence", "expire", &id]);
    assert!(ok, "{err}");
    let s = silences(&["--expired"]);
    assert!(
        s.as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == json!(id) && s["status"]["state"] == "expired"),
        "{s}"
    );
    produce(
        &broker,
        &t.input,
        &[serde_json::to_vec(&alert(
            json!({"alertname": "DiskFull", "service": "checkout", "instance": "d"}),
        ))
        .unwrap()],
    );
    wait_until(
        Duration::from_secs(60),
        "the alert after the expiry notified",
        || {
            read_all(&broker, &t.payments, 1, Duration::from_secs(3))
                .iter()
                .any(|(_, _, _, p)| String::from_utf8_lossy(p).contains(r#""instance":"d""#))
        },
    );

    // Silences survive a restart.
    let (ok, out, err) = run(&[
        "silence",
        "add",
        "alertname=Later",
        "--comment=c",
        "--author=bob",
    ]);
    assert!(ok, "{err}");
    let later = out.trim().to_owned();
    stop(child);
    let (child, port) = run_with_http(&broker, &t, &rules, &[]);
    let run = |args: &[&str]| {
        let (ok, out, err) = amtool(port, args);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let active = run(&["silence", "query", "-o", "json"]);
    assert!(
        active
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == json!(later)),
        "{active}"
    );
    let expired = run(&["silence", "query", "-o", "json", "--expired"]);
    assert!(
        expired
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == json!(id)),
        "{expired}"
    );

    // A second instance of the group has the first one's silences, and a new
    // one within 2 s.
    let (second, port2) = run_with_http(&broker, &t, &rules, &[]);
    let (code, body) = http(port2, "GET", "/api/v2/silences");
    assert_eq!(code, 200);
    assert!(body.contains(&later), "{body}");
    let (_, out, _) = amtool(
        port,
        &[
            "silence",
            "add",
            "alertname=Elsewhere",
            "--comment=c",
            "--author=carol",
        ],
    );
    let third = out.trim().to_owned();
    assert_eq!(third.len(), 36);
    wait_until(
        Duration::from_secs(2),
        "the silence on the second instance",
        || http(port2, "GET", &format!("/api/v2/silence/{third}")).0 == 200,
    );
    stop(second);

    // Every answer has the shape of Alertmanager's own OpenAPI definitions.
    let spec = common::openapi::Spec::alertmanager();
    let base = format!("http://127.0.0.1:{port}/api/v2");
    let get = |path: &str| -> Value {
        let (code, body) = curl(&[&format!("{base}{path}")]);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        "alerts held after the restart",
        || get("/alerts").as_array().is_some_and(|a| !a.is_empty()),
    );
    for (spec_path, path) in [
        ("/status", "/status".to_owned()),
        ("/receivers", "/receivers".to_owned()),
        ("/alerts", "/alerts".to_owned()),
        ("/alerts/groups", "/alerts/groups".to_owned()),
        ("/silences", "/silences".to_owned()),
        ("/silence/{silenceID}", format!("/silence/{later}")),
    ] {
        let v = get(&path);
        let errors = spec.check(spec.response("GET", spec_path, 200), &v);
        assert!(errors.is_empty(), "GET {path}: {errors:#?}\n{v}");
    }
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"matchers":[{"name":"alertname","value":"Spec","isRegex":false,"isEqual":true}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"spec","comment":"shape"}"#,
        &format!("{base}/silences"),
    ]);
    assert_eq!(code, 200, "{body}");
    let posted: Value = serde_json::from_str(&body).unwrap();
    let errors = spec.check(spec.response("POST", "/silences", 200), &posted);
    assert!(errors.is_empty(), "{errors:?}");
    // A silence Alertmanager's clients would choke on is reported, so the check can fail.
    let mut broken = get(&format!("/silence/{later}"));
    broken["endsAt"] = json!(5);
    broken["status"]["state"] = json!("sleeping");
    broken.as_object_mut().unwrap().remove("createdBy");
    let errors = spec.check(spec.response("GET", "/silence/{silenceID}", 200), &broken);
    assert_eq!(errors.len(), 3, "{errors:?}");
    // Refused silences get 400 with the reason, as Alertmanager answers.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-d",
        r#"{"matchers":[],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"x","comment":"y"}"#,
        &format!("{base}/silences"),
    ]);
    assert_eq!(
        (code, body.contains("at least one matcher")),
        (400, true),
        "{body}"
    );

    // Acknowledge a group with the CLI; the API lists the acknowledgement.
    let alerts = get("/alerts");
    let group = alerts[0]["groupKey"].as_str().unwrap().to_owned();
    // Acknowledged with the key its notification carries (Alertmanager's form).
    let (squad, labels) = group.split_once(':').unwrap();
    let notified_key = format!("{{}}/{{squad=\"{squad}\"}}:{labels}");
    let url = format!("http://127.0.0.1:{port}");
    squadron_output(&[
        "ack",
        &notified_key,
        "--url",
        &url,
        "--by",
        "alice",
        "--comment",
        "looking",
    ]);
    let (code, body) = curl(&[&format!("{url}/api/v1/acks")]);
    let acks: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, acks[0]["groupKey"].as_str(), acks[0]["by"].as_str()),
        (200, Some(group.as_str()), Some("alice"))
    );
    let alerts = get("/alerts");
    let acked = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["groupKey"] == json!(group))
        .unwrap();
    assert_eq!(acked["acknowledged"]["by"], "alice");

    // A duty override through the CLI: notifications and the API name that person.
    let squadron_cli = squadron_output;
    squadron_cli(&[
        "goalkeeper",
        "--url",
        &url,
        "--squad",
        "payments",
        "--override",
        "dana",
        "--until",
        "2099-01-01T00:00:00Z",
        "--by",
        "lead",
        "--comment",
        "swap",
    ]);
    let v: Value = serde_json::from_str(&squadron_cli(&[
        "goalkeeper",
        "--url",
        &url,
        "--squad",
        "payments",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (v[0]["goalkeeper"].as_str(), v[0]["source"].as_str()),
        (Some("dana"), Some("override")),
        "{v}"
    );
    let alerts = get("/alerts");
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["squad"] != "payments" || a["goalkeeper"] == "dana"),
        "{alerts}"
    );
    stop(child);
}

/// Runs amtool against `port`: (success, stdout, stderr).
fn amtool(port: u16, args: &[&str]) -> (bool, String, String) {
    let bin = which("amtool")
        .expect("amtool (Debian package prometheus-alertmanager; scripts/test.sh installs it)");
    let out = std::process::Command::new(bin)
        .arg(format!("--alertmanager.url=http://127.0.0.1:{port}"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// For reference, the same amtool silence commands against Debian's real
/// Alertmanager: what `amtool_queries_alerts_and_silences` expects of
/// squadron is what Alertmanager does (an id back, listed with its creator,
/// expired by `expire`, listed again with `--expired`).
#[test]
fn amtool_silence_commands_behave_the_same_against_alertmanager() {
    let am = which("prometheus-alertmanager").expect(
        "prometheus-alertmanager (Debian package prometheus-alertmanager; scripts/test.sh installs it)",
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("alertmanager"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("am.yml"),
        "route: {receiver: r}\nreceivers: [{name: r}]\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(am)
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "alertmanager ready", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/-/ready").0 == 200
    });
    let run = |args: &[&str]| {
        let (ok, out, err) = amtool(port, args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let id = run(&[
        "silence",
        "add",
        "alertname=DiskFull",
        "--comment=disk replaced tonight",
        "--author=alice",
        "--duration=1h",
    ])
    .trim()
    .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let s: Value = serde_json::from_str(&run(&[
        "silence",
        "query",
        "-o",
        "json",
        "alertname=DiskFull",
    ]))
    .unwrap();
    assert_eq!(
        (
            s[0]["id"].as_str(),
            s[0]["createdBy"].as_str(),
            s[0]["status"]["state"].as_str()
        ),
        (Some(id.as_str()), Some("alice"), Some("active"))
    );
    run(&["silence", "expire", &id]);
    let s: Value = serde_json::from_str(&run(&["silence", "query", "-o", "json"])).unwrap();
    assert_eq!(s, json!([]), "an expired silence leaves the default query");
    let s: Value =
        serde_json::from_str(&run(&["silence", "query", "-o", "json", "--expired"])).unwrap();
    assert!(
        s.as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == json!(id) && s["status"]["state"] == "expired"),
        "{s}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// The inhibition sources table across instances: two instances share the
/// work, NodeDown's task runs on one of them and the pods' 24 groups are
/// spread over both. NodeDown's entry reaches the other instance through the
/// sources topic: every pod is inhibited, on both instances, and still after
/// one instance is SIGKILLed and replaced; NodeDown's resolve ends the entry
/// with a tombstone everywhere.
#[test]
fn an_inhibition_source_reaches_the_tasks_of_another_instance() {
    let Some((broker, t, rules)) = setup("sources", "1s") else {
        return;
    };
    let (a, port_a) = run_with_http(&broker, &t, &rules, &[]);
    let (b, port_b) = run_with_http(&broker, &t, &rules, &[]);
    let ports = [port_a, port_b];
    wait_until(Duration::from_secs(60), "both instances own tasks", || {
        ports
            .iter()
            .all(|&p| metric(p, "squadron_task_state_bytes{").is_some())
    });
    let node = |ends: Option<&str>| {
        let mut a = alert(json!({"alertname": "NodeDown", "service": "kubernetes", "node": "n1"}));
        if let Some(e) = ends {
            a["endsAt"] = json!(e);
        }
        serde_json::to_vec(&json!([a])).unwrap()
    };
    produce(&broker, &t.input, &[node(None)]);
    let sources_topic = format!("{}-sources", t.group);
    let published = read_all(&broker, &sources_topic, 1, Duration::from_secs(30));
    let key = published[0].2[KEY].clone();
    assert!(key.starts_with("node-down#"), "{key}");
    let listed: Value = serde_json::from_slice(&published[0].3).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let sources = |p: u16| metric(p, "squadron_inhibition_sources ").unwrap_or(-1.0);
    wait_until(Duration::from_secs(30), "both tables hold NodeDown", || {
        ports.iter().all(|&p| sources(p) == 1.0)
    });

    // One pod per service: 24 groups of the fallback squad, over the tasks.
    let pods = |services: std::ops::Range<usize>| -> Vec<Vec<u8>> {
        services
            .map(|i| {
                let labels =
                    json!({"alertname": "PodNotReady", "service": format!("s{i}"), "node": "n1"});
                serde_json::to_vec(&json!([alert(labels)])).unwrap()
            })
            .collect()
    };
    produce(&broker, &t.input, &pods(0..24));
    let inhibited =
        |p: u16| metric(p, "squadron_alert_fates_total{fate=\"inhibited\"}").unwrap_or(0.0);
    wait_until(Duration::from_secs(30), "24 pods inhibited", || {
        ports.iter().map(|&p| inhibited(p)).sum::<f64>() == 24.0
    });
    // Only one instance runs NodeDown's task: both inhibiting means one did
    // with a source it knows from the topic alone.
    assert!(
        ports.iter().all(|&p| inhibited(p) > 0.0),
        "{:?}",
        ports.map(inhibited)
    );

    // SIGKILL one instance and start a replacement (another id: the dead
    // member's partitions move when its session expires). Whichever ran
    // NodeDown's task, the source survives: restored from the changelog and
    // written into its new instance's table, or read from the topic.
    std::thread::sleep(Duration::from_secs(2)); // a commit covers the first pods
    let before = inhibited(port_b);
    let mut a = a;
    a.kill().unwrap();
    a.wait().unwrap();
    let (a, port_a) = run_with_http(&broker, &t, &rules, &[]);
    let ports = [port_a, port_b];
    wait_until(
        Duration::from_secs(60),
        "the replacement owns tasks and holds NodeDown",
        || metric(port_a, "squadron_task_state_bytes{").is_some() && sources(port_a) == 1.0,
    );
    produce(&broker, &t.input, &pods(24..48));
    // At least once, a pod of the first 24 decided again counts again.
    wait_until(Duration::from_secs(60), "24 more pods inhibited", || {
        inhibited(port_a) + inhibited(port_b) - before >= 24.0
    });
    // Past group_wait: a pod that was admitted instead would be notified by now.
    std::thread::sleep(Duration::from_secs(3));

    produce(&broker, &t.input, &[node(Some("2020-01-01T00:00:00Z"))]);
    wait_until(
        Duration::from_secs(30),
        "both tables forget NodeDown",
        || ports.iter().all(|&p| sources(p) == 0.0),
    );
    let records = read_all(&broker, &sources_topic, 2, Duration::from_secs(30));
    let last = records.iter().rev().find(|r| r.2[KEY] == key).unwrap();
    assert!(last.3.is_empty(), "a tombstone ends the entry");
    stop(a);
    stop(b);
    let platform = read_all(&broker, &t.platform, 1, Duration::from_secs(30));
    assert!(
        platform
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.3).contains("PodNotReady")),
        "no pod is notified"
    );
}

/// Topics the broker lists whose names start with `prefix`.
fn topics_named(broker: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let m = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10))
        .unwrap();
    m.topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// `squadron bench` end to end on a small stream: both guarantees put every
/// alert through, CPU per alert is reported for squadron and for a process
/// given as the broker, and the run deletes every topic it made.
#[test]
fn bench_measures_both_guarantees_and_deletes_its_topics() {
    let Some(broker) = broker() else { return };
    let before = topics_named(&broker, "bench-");
    let out = squadron_output(&[
        "bench",
        "--bootstrap-servers",
        &broker,
        "--alerts",
        "2000",
        "--partitions",
        "3",
        "--latency-rate",
        "500",
        "--latency-duration",
        "1s",
        "--restore-alerts",
        "500",
        // Any process serves to check the accounting: this test's.
        "--broker-pid",
        &std::process::id().to_string(),
        "--json",
    ]);
    let r: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert!(r["alerts"].as_u64().unwrap() >= 2000, "{r}");
    for rate in [
        "pipeline_alerts_per_second",
        "exactly_once_alerts_per_second",
    ] {
        assert!(r[rate].as_f64().unwrap() > 0.0, "{rate}: {r}");
    }
    for run in ["at_least_once", "exactly_once"] {
        let cpu = &r["cpu_us_per_alert"][run];
        assert!(cpu["squadron"].as_f64().unwrap() > 0.0, "{run}: {r}");
        assert!(cpu["broker"].as_f64().unwrap() >= 0.0, "{run}: {r}");
    }
    assert_eq!(r["restore"]["active_alerts"], 500, "{r}");
    assert!(r["latency"]["probes"].as_u64().unwrap() > 0, "{r}");
    wait_until(
        Duration::from_secs(30),
        "the bench's topics deleted",
        || topics_named(&broker, "bench-") == before,
    );
}

/// An instance decides the alerts it routes to its own tasks without the
/// repartition topic, but only after what that topic already holds for
/// them: here its backlog (as a previous owner would leave it) ends with an
/// alert firing, and the input says the same alert resolved. Decided in the
/// order they were routed, the alert ends resolved and is never paged as
/// firing; deciding the input first would open its group as firing.
#[test]
fn alerts_routed_to_an_own_task_wait_for_what_the_topic_holds_for_it() {
    let Some(run) = lane_order("lane", 1, &[]) else {
        return;
    };
    assert!(
        run.held >= 1.0,
        "the input's batch waited for the marker: {}",
        run.held
    );
}

/// The same backlog, with many input messages for the task and
/// `max_in_flight` 2: the held batches reach the bound before the marker is
/// back and go through the topic at once (not at the next commit), still
/// after the backlog.
#[test]
fn held_batches_past_max_in_flight_go_through_the_topic_in_order() {
    let Some(run) = lane_order("lanebound", 50, &[("SQUADRON_MAX_IN_FLIGHT", "2")]) else {
        return;
    };
    assert!(
        run.overflows >= 1.0,
        "50 batches held behind a marker reach a bound of 2: {run:?}"
    );
}

#[derive(Debug)]
struct LaneRun {
    held: f64,
    overflows: f64,
}

/// A repartition backlog (as a previous owner leaves it) of 3,000 records
/// ending with an alert firing, and `copies` input messages of the same alert
/// resolved: it must never be paged as firing.
fn lane_order(name: &str, copies: usize, extra: &[(&'static str, &str)]) -> Option<LaneRun> {
    let (broker, t, rules) = setup(name, "1s")?;
    let labels = json!({"alertname": "LaneOrder", "service": "checkout", "instance": "x"});
    let now = std::time::SystemTime::now();
    let rfc3339 = |ago: u64| {
        let s = squadron::model::Ts(
            (now - Duration::from_secs(ago))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        );
        s.to_string()
    };
    let firing = json!([{"labels": labels, "startsAt": rfc3339(120)}]);
    let resolved = json!([{"labels": labels, "startsAt": rfc3339(120), "endsAt": rfc3339(5)}]);
    // The task that owns the alert's group, as the route stage computes it.
    let ruleset = squadron::rules::load_dir(&rules).unwrap();
    let bytes = serde_json::to_vec(&firing).unwrap();
    let decoded = squadron::decode::decode(&bytes).unwrap();
    let a = decoded.alerts[0].as_ref().unwrap();
    let topo = squadron::pipeline::topology::Topology {
        inputs: Vec::new(),
        repartition: format!("{}-repartition", t.group),
        changelog: String::new(),
        sources: String::new(),
        partitions: 12,
    };
    let task = topo.partition_for(ruleset.group_hash(ruleset.owner(&a.labels).squad, &a.labels));
    // The backlog: many dropped alerts, then the alert firing, all in the task's partition.
    create(&broker, &[(&topo.repartition, 12)]);
    let p = producer(&broker);
    let filler: Vec<Vec<u8>> = (0..3000)
        .map(|i| {
            serde_json::to_vec(&json!([alert(
                json!({"alertname": format!("Filler{i}"), "service": "checkout", "env": "staging"})
            )]))
            .unwrap()
        })
        .collect();
    for body in filler.iter().chain([&bytes]) {
        p.send(
            BaseRecord::<(), _>::to(&topo.repartition)
                .payload(body)
                .partition(task),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    produce(
        &broker,
        &t.input,
        &vec![serde_json::to_vec(&resolved).unwrap(); copies],
    );

    let (child, port) = run_with_http(&broker, &t, &rules, extra);
    let all = (3001 + copies) as f64;
    wait_until(Duration::from_secs(60), "every alert decided", || {
        metric(port, r#"squadron_stage_alerts_total{stage="decide"}"#).is_some_and(|n| n >= all)
    });
    // Past group_wait and group_interval: whatever the group would page is out.
    std::thread::sleep(Duration::from_secs(4));
    let held = metric(port, r#"squadron_routed_batches_total{path="held"}"#).unwrap_or(0.0);
    let overflows = metric(port, "squadron_pipeline_lane_overflows_total").unwrap_or(-1.0);
    let notes = read_all(&broker, &t.payments, 1000, Duration::from_secs(3));
    stop(child);
    for (_, _, headers, payload) in &notes {
        let n: Value = serde_json::from_slice(payload).unwrap();
        assert_ne!(
            n["status"], "firing",
            "the alert was decided before the backlog's older firing copy: {headers:?} {n}"
        );
    }
    Some(LaneRun { held, overflows })
}
