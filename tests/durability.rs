//! Durable state under failure, against the real broker: SIGKILL mid-stream,
//! restarts, instances killed and added, input spread over partitions with no
//! useful key. The guarantees checked here are the ones README.md ("Delivery
//! guarantees") states.
//!
//! Needs `SQUADRON_TEST_KAFKA=host:port` (scripts/test.sh sets it). The tests
//! in this file run one at a time: each starts several processes.

mod common;

use common::*;
use rdkafka::producer::{BaseRecord, Producer};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone)]
struct Setup {
    broker: String,
    input: String,
    audit: String,
    squad: String,
    group: String,
    rules: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    let broker = broker()?;
    let id = unique(test);
    let s = Setup {
        input: format!("in-{id}"),
        audit: format!("audit-{id}"),
        squad: format!("payments-{id}"),
        group: format!("group-{id}"),
        rules: Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("rules")),
        broker,
    };
    create(
        &s.broker,
        &[
            (s.input.as_str(), 4),
            (s.audit.as_str(), 1),
            (s.squad.as_str(), 1),
            (format!("dlq-{id}").as_str(), 1),
        ],
    );
    std::fs::create_dir_all(&s.rules).unwrap();
    std::fs::write(
        s.rules.join("rules.yaml"),
        format!(
            r#"
ownership: {{fallback_squad: payments}}
grouping: {{group_by: [alertname, shard], group_wait: 500ms, group_interval: 1s, repeat_interval: 4h}}
squads:
  - name: payments
    services: [checkout]
    topic: {squad}
    # Never reached: it makes every notification travel to the task keeping
    # the squad's storm window, so the kills also land on that hop.
    storm_limit: {{max_notifications: 1000000, interval: 1h}}
"#,
            squad = s.squad
        ),
    )
    .unwrap();
    Some(s)
}

/// `squadron run` in exactly-once mode with the given instance id.
fn instance(s: &Setup, id: &str, http: Option<u16>) -> Child {
    instance_with(s, id, http, "exactly-once")
}

fn instance_with(s: &Setup, id: &str, http: Option<u16>, guarantee: &str) -> Child {
    let listen = http.map_or("off".into(), |p| format!("127.0.0.1:{p}"));
    squadron(
        &["run", "--audit", "all"],
        &[
            ("SQUADRON_BOOTSTRAP_SERVERS", s.broker.clone()),
            ("SQUADRON_GROUP_ID", s.group.clone()),
            ("SQUADRON_INPUT_TOPICS", s.input.clone()),
            ("SQUADRON_AUDIT_TOPIC", s.audit.clone()),
            (
                "SQUADRON_DEAD_LETTER_TOPIC",
                s.input.replacen("in-", "dlq-", 1),
            ),
            ("SQUADRON_RULES", s.rules.display().to_string()),
            ("SQUADRON_HTTP_LISTEN", listen),
            ("SQUADRON_PROCESSING_GUARANTEE", guarantee.into()),
            ("SQUADRON_INSTANCE_ID", id.into()),
        ],
    )
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Alerts that keep firing: every `every`, each live group's alert is sent
/// again (to a random partition, no key), and a new group starts each round.
/// Returns the messages produced.
fn keep_firing(s: &Setup, first_groups: usize, rounds: usize, every: Duration) -> usize {
    let p = producer(&s.broker);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut sent = 0;
    for round in 0..rounds {
        let groups = first_groups + round;
        for g in 0..groups {
            let ends = std::time::SystemTime::now() + Duration::from_secs(300);
            let ends: chrono_free::Rfc3339 = ends.into();
            let body = serde_json::to_vec(&json!([{
                "labels": {"alertname": "HighErrorRate", "service": "checkout", "shard": g.to_string()},
                "endsAt": ends.0,
            }]))
            .unwrap();
            p.send(
                BaseRecord::<(), [u8]>::to(&s.input)
                    .payload(&body)
                    .partition((next() % 4) as i32),
            )
            .unwrap();
            sent += 1;
        }
        p.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(every);
    }
    sent
}

/// RFC 3339 without a date crate: enough for `endsAt`.
mod chrono_free {
    pub struct Rfc3339(pub String);
    impl From<std::time::SystemTime> for Rfc3339 {
        fn from(t: std::time::SystemTime) -> Rfc3339 {
            let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            // Civil from days (Howard Hinnant's algorithm).
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let y = yoe + era * 400;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = if m <= 2 { y + 1 } else { y };
            Rfc3339(format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            ))
        }
    }
}

/// Waits until the group has committed every input message and the last
/// groups had time to flush.
/// Waits until the group has committed every input message and every input
/// has a fate in the audit topic: a group's first alert gets its fate at the
/// group's flush, with its notification, so then every notification is out.
fn drain(s: &Setup) -> HashMap<(i64, i64), Vec<String>> {
    let ends = end_offsets(&s.broker, &s.input);
    wait_until(
        Duration::from_secs(120),
        "every input offset committed",
        || committed(&s.broker, &s.group, &s.input) == ends,
    );
    let inputs = ends.values().sum::<i64>() as usize;
    let start = Instant::now();
    loop {
        let f = fates(s, inputs);
        let decided = ends
            .iter()
            .all(|(p, end)| (0..*end).all(|o| f.contains_key(&(*p as i64, o))));
        if decided || start.elapsed() > Duration::from_secs(90) {
            return f;
        }
    }
}

/// Notifications (read_committed): reasons per group key, and every
/// notification as (group key, reason, id).
type Seen = (BTreeMap<String, Vec<String>>, Vec<(String, String, String)>);

fn notifications(s: &Setup, want: usize) -> Seen {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all = Vec::new();
    for (_, _, headers, payload) in
        read_committed(&s.broker, &s.squad, want, Duration::from_secs(30))
    {
        let v: Value = serde_json::from_slice(&payload).unwrap();
        let (group, reason) = (
            v["groupKey"].as_str().unwrap(),
            v["reason"].as_str().unwrap(),
        );
        let id = v["notificationId"].as_str().unwrap();
        assert_eq!(
            headers.get("squadron.notification.id").map(String::as_str),
            Some(id),
            "the id header and payload agree"
        );
        by_group
            .entry(group.to_owned())
            .or_default()
            .push(reason.to_owned());
        all.push((group.to_owned(), reason.to_owned(), id.to_owned()));
    }
    (by_group, all)
}

/// Fates per input (partition, offset), read_committed.
fn fates(s: &Setup, want: usize) -> HashMap<(i64, i64), Vec<String>> {
    let mut out: HashMap<(i64, i64), Vec<String>> = HashMap::new();
    for (_, _, _, payload) in read_committed(&s.broker, &s.audit, want, Duration::from_secs(30)) {
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            v["topic"].as_str(),
            Some(s.input.as_str()),
            "audit names the input topic: {v}"
        );
        out.entry((
            v["partition"].as_i64().unwrap(),
            v["offset"].as_i64().unwrap(),
        ))
        .or_default()
        .push(v["fate"].as_str().unwrap().to_owned());
    }
    out
}

fn assert_each_group_once(
    by_group: &BTreeMap<String, Vec<String>>,
    all: &[(String, String, String)],
    groups: usize,
) {
    let twice: Vec<_> = by_group.iter().filter(|(_, r)| r.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "groups not notified exactly once: {twice:?}"
    );
    assert_eq!(by_group.len(), groups, "every group is notified");
    assert!(by_group.values().all(|r| r == &["new_group"]));
    let mut unique: Vec<&str> = all.iter().map(|(_, _, id)| id.as_str()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "no notification id twice");
}

fn assert_one_fate_per_input(fates: &HashMap<(i64, i64), Vec<String>>, s: &Setup, inputs: usize) {
    let ends = end_offsets(&s.broker, &s.input);
    assert_eq!(ends.values().sum::<i64>() as usize, inputs);
    let mut missing = Vec::new();
    for (p, end) in &ends {
        for o in 0..*end {
            if !fates.contains_key(&(*p as i64, o)) {
                missing.push((p, o));
            }
        }
    }
    assert!(missing.is_empty(), "inputs without a fate: {missing:?}");
    let twice: Vec<_> = fates.iter().filter(|(_, f)| f.len() != 1).take(5).collect();
    assert!(twice.is_empty(), "inputs with several fates: {twice:?}");
    assert_eq!(fates.len(), inputs, "fates sum to inputs");
}

/// Ten SIGKILLs at uneven moments while alerts keep firing, restarting at
/// once; returns the inputs, the groups and every input's fates.
fn ten_sigkills(s: &Setup, guarantee: &str) -> (usize, usize, HashMap<(i64, i64), Vec<String>>) {
    let (first_groups, rounds) = (20, 36);
    let mut current = Some(instance_with(s, "kill10", None, guarantee));
    let stream = {
        let s = s.clone();
        std::thread::spawn(move || keep_firing(&s, first_groups, rounds, Duration::from_secs(1)))
    };
    for pause_ms in [2300, 1700, 3100, 900, 2600, 1900, 2900, 1300, 2200, 1600] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        kill(current.take().unwrap());
        current = Some(instance_with(s, "kill10", None, guarantee));
    }
    assert!(!stream.is_finished(), "the kills land mid-stream");
    let inputs = stream.join().unwrap();
    let fates = drain(s);
    let log = stop(current.take().unwrap());
    assert!(log.contains("state restored"), "{log}");
    (inputs, first_groups + rounds - 1, fates)
}

#[test]
fn ten_sigkills_never_notify_a_group_twice_exactly_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("kill10") else { return };
    let (inputs, groups, fates) = ten_sigkills(&s, "exactly-once");
    let (by_group, ids) = notifications(&s, groups);
    assert_each_group_once(&by_group, &ids, groups);
    assert_one_fate_per_input(&fates, &s, inputs);
}

#[test]
fn ten_sigkills_at_least_once_repeat_a_notification_only_under_its_id() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("kill10alo") else { return };
    let (_, groups, fates) = ten_sigkills(&s, "at-least-once");
    let (by_group, ids) = notifications(&s, groups);
    assert_eq!(by_group.len(), groups, "every group is notified");
    // A repeat is the same notification: one id per group, all new_group.
    let mut per_group: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for (group, _, id) in &ids {
        per_group.entry(group).or_default().insert(id);
    }
    let several: Vec<_> = per_group.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(
        several.is_empty(),
        "a group notified under several ids: {several:?}"
    );
    assert!(by_group.values().flatten().all(|r| r == "new_group"));
    eprintln!(
        "at least once, 10 SIGKILLs: {} notifications for {groups} groups ({} repeated under their id)",
        ids.len(),
        ids.len() - groups
    );
    // Nothing lost: every input has a fate (some have two: decided again after a kill).
    let ends = end_offsets(&s.broker, &s.input);
    for (p, end) in &ends {
        for o in 0..*end {
            assert!(
                fates.contains_key(&(*p as i64, o)),
                "input {p}/{o} has no fate"
            );
        }
    }
}

#[test]
fn a_restart_resumes_within_seconds_after_sigterm_and_after_sigkill() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("restart") else { return };
    let port = free_port();
    let ready = |port: u16| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/readyz").0 == 200
    };
    // The default instance id (<host>-<HTTP port>) is what a restart keeps.
    let start = |s: &Setup| {
        let mut c = instance(s, "", Some(port));
        let t = Instant::now();
        while !ready(port) {
            if let Some(status) = c.try_wait().unwrap() {
                panic!("squadron exited with {status}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "not ready within 60s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (c, t.elapsed())
    };
    let (first, _) = start(&s);
    let p = producer(&s.broker);
    let send = |shard: &str| {
        let body = serde_json::to_vec(
            &json!([{"labels": {"alertname": "A", "service": "checkout", "shard": shard}}]),
        )
        .unwrap();
        p.send(
            BaseRecord::<(), [u8]>::to(&s.input)
                .payload(&body)
                .partition(0),
        )
        .unwrap();
        p.flush(Duration::from_secs(10)).unwrap();
    };
    send("before");
    let t = Instant::now();
    while read_committed(&s.broker, &s.squad, 1, Duration::from_secs(3)).len() != 1 {
        if t.elapsed() > Duration::from_secs(45) {
            let log = stop(first);
            panic!("no notification within 45 s; squadron said:\n{log}");
        }
    }
    let log = stop(first);
    assert!(log.contains("stopped"), "{log}");
    let (second, after_sigterm) = start(&s);
    send("after-sigterm");
    kill(second);
    let (third, after_sigkill) = start(&s);
    send("after-sigkill");
    eprintln!(
        "ready after SIGTERM + restart: {after_sigterm:?}; after SIGKILL + restart: {after_sigkill:?}"
    );
    assert!(
        after_sigterm < Duration::from_secs(10),
        "SIGTERM + restart: ready after {after_sigterm:?}"
    );
    assert!(
        after_sigkill < Duration::from_secs(10),
        "SIGKILL + restart: ready after {after_sigkill:?}"
    );
    wait_until(Duration::from_secs(30), "three notifications", || {
        read_committed(&s.broker, &s.squad, 3, Duration::from_secs(3)).len() >= 3
    });
    stop(third);
    let (by_group, ids) = notifications(&s, 3);
    assert_each_group_once(&by_group, &ids, 3);
}

#[test]
fn three_instances_one_killed_one_added_notify_each_group_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("three") else { return };
    let (first_groups, rounds) = (30, 30);
    let a = instance(&s, "a", None);
    let b = instance(&s, "b", None);
    let c = instance(&s, "c", None);
    let stream = {
        let s = s.clone();
        std::thread::spawn(move || keep_firing(&s, first_groups, rounds, Duration::from_secs(1)))
    };
    std::thread::sleep(Duration::from_secs(8));
    kill(b);
    std::thread::sleep(Duration::from_secs(6));
    let d = instance(&s, "d", None);
    assert!(
        !stream.is_finished(),
        "the kill and the new instance land mid-stream"
    );
    let inputs = stream.join().unwrap();
    let fates = drain(&s);
    for child in [a, c, d] {
        stop(child);
    }
    let groups = first_groups + rounds - 1;
    let (by_group, ids) = notifications(&s, groups);
    assert_each_group_once(&by_group, &ids, groups);
    assert_one_fate_per_input(&fates, &s, inputs);
}

/// A digest collected before a SIGKILL is in the handover report after the
/// restart, and the report is sent once. The goalkeeper hands over at the
/// next whole minute at least 40 s away (UTC), so the test waits for it.
#[test]
fn a_digest_survives_sigkill_and_the_handover_report_is_sent_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("handover") else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let handover = (now + 40).div_ceil(60) * 60;
    let hhmm = format!(
        "{:02}:{:02}",
        handover % 86_400 / 3600,
        handover % 3600 / 60
    );
    std::fs::write(
        s.rules.join("rules.yaml"),
        format!(
            r#"
ownership: {{fallback_squad: payments}}
grouping: {{group_by: [alertname, shard], group_wait: 500ms, group_interval: 1s, repeat_interval: 4h}}
squads:
  - name: payments
    services: [checkout]
    topic: {squad}
    goalkeeper:
      timezone: UTC
      handover: "{hhmm}"
      rotation: {{start: "2026-01-01", people: [alice, bob]}}
impact_rules:
  - name: warnings-to-the-digest
    match: ['severity="warning"']
    action: digest
"#,
            squad = s.squad
        ),
    )
    .unwrap();
    let port = free_port();
    let first = instance(&s, "handover", Some(port));
    let p = producer(&s.broker);
    let ends: chrono_free::Rfc3339 =
        (std::time::SystemTime::now() + Duration::from_secs(600)).into();
    // One message per input partition: `drain` waits for a commit on each.
    for (i, (name, severity, shard)) in [
        ("DiskFilling", "warning", "0"),
        ("DiskFilling", "warning", "1"),
        ("QueueBacklog", "warning", "0"),
        ("CheckoutDown", "critical", "0"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = serde_json::to_vec(&json!([{
            "labels": {"alertname": name, "service": "checkout", "severity": severity, "shard": shard},
            "annotations": {"summary": format!("{name} on shard {shard}")},
            "endsAt": ends.0,
        }]))
        .unwrap();
        p.send(
            BaseRecord::<(), [u8]>::to(&s.input)
                .payload(&body)
                .partition(i as i32),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let fates = drain(&s);
    let mut kinds: Vec<&str> = fates.values().flatten().map(String::as_str).collect();
    kinds.sort();
    assert_eq!(kinds, ["digested", "digested", "digested", "notified"]);
    // The shift so far, as the report would read now.
    let mut preview = Value::Null;
    wait_until(
        Duration::from_secs(30),
        "the shift's book has the digest",
        || {
            let (code, body) = http(port, "GET", "/api/v1/shifts?squad=payments");
            assert_eq!(code, 200, "{body}");
            preview = serde_json::from_str(&body).unwrap();
            preview[0]["report"]["digest"]
                .as_array()
                .is_some_and(|d| d.len() == 3)
        },
    );
    assert_eq!(preview.as_array().unwrap().len(), 1, "{preview}");
    assert_eq!(preview[0]["squad"], "payments");
    assert!(
        preview[0]["handoverAt"]
            .as_str()
            .unwrap()
            .contains(&format!("T{hhmm}:00")),
        "{preview}"
    );
    assert_eq!(preview[0]["report"]["noise"]["pages"], 1, "{preview}");
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(killed_at < handover, "the kill lands before the handover");
    kill(first);
    let second = instance(&s, "handover", None);

    let reports = |min: usize| -> Vec<Value> {
        read_committed_with_reports(&s.broker, &s.squad, min, Duration::from_secs(5))
            .into_iter()
            .filter(|(_, _, h, _)| h.get("squadron.reason").map(String::as_str) == Some("handover"))
            .map(|(_, _, _, payload)| serde_json::from_slice(&payload).unwrap())
            .collect()
    };
    let wait = Duration::from_secs(handover.saturating_sub(now) + 60);
    let start = Instant::now();
    let mut seen = Vec::new();
    while seen.is_empty() && start.elapsed() < wait {
        seen = reports(2);
    }
    assert_eq!(seen.len(), 1, "one handover report: {seen:?}");
    // Later reads still find one.
    std::thread::sleep(Duration::from_secs(3));
    let seen = reports(2);
    assert_eq!(seen.len(), 1, "still one handover report: {seen:?}");
    let log = stop(second);
    let r = &seen[0]["report"];
    assert_eq!(seen[0]["reason"], "handover");
    assert_eq!(
        r["shiftEnd"].as_str().map(|t| t.ends_with(":00Z")),
        Some(true),
        "{r}"
    );
    assert_eq!(r["noise"]["digested"], 3, "{r}");
    assert_eq!(r["noise"]["notified"], 1, "{r}");
    assert_eq!(r["noise"]["pages"], 1, "{r}");
    assert_eq!(r["incidents"], 1, "{r}");
    let mut digest: Vec<(String, usize)> = r["digest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["labels"]["alertname"].as_str().unwrap().to_owned(),
                d["alerts"].as_array().unwrap().len(),
            )
        })
        .collect();
    digest.sort();
    assert_eq!(
        digest,
        [
            ("DiskFilling".into(), 1),
            ("DiskFilling".into(), 1),
            ("QueueBacklog".into(), 1)
        ],
        "{r}"
    );
    assert!(
        r["digest"][0]["alerts"][0]["stillFiring"]
            .as_bool()
            .unwrap(),
        "{r}"
    );
    assert_eq!(r["stillFiring"].as_array().unwrap().len(), 1, "{r}");
    assert!(log.contains("state restored"), "{log}");
}
