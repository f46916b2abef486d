//! The command line as a user runs it: exit codes, error locations, replay
//! accounting on an hour of generated traffic, rule tests and their diffs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn squadron(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run squadron")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh scratch directory under the target dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A copy of the shipped rules to break, with the catalog they reference
    /// (`../catalog`); `self.0` is the copied rules directory.
    fn with_rules(name: &str) -> Scratch {
        let root =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["rules", "catalog"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            for e in std::fs::read_dir(repo.join(dir)).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    std::fs::copy(&p, root.join(dir).join(p.file_name().unwrap())).unwrap();
                }
            }
        }
        Scratch(root.join("rules"))
    }

    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A rules copy lives in <root>/rules beside <root>/catalog: remove the root.
        let root = if self.0.ends_with("rules") {
            self.0.parent().unwrap_or(&self.0).to_path_buf()
        } else {
            self.0.clone()
        };
        let _ = std::fs::remove_dir_all(root);
    }
}

/// `squadron replay --rules rules --json --notifications NOTES FILE`, parsed.
fn replay_json(file: &Path, notes: &Path) -> serde_json::Value {
    let out = squadron(&[
        "replay",
        "--rules",
        "rules",
        "--json",
        "--notifications",
        notes.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn check_accepts_the_shipped_rules() {
    let out = squadron(&["check", "rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"));
}

#[test]
fn check_rejects_broken_rule_files_naming_file_and_line() {
    let breakages: &[(&str, &str, &str)] = &[
        (
            "syntax.yaml",
            "squads:\n  - name: broken\n    services: [a, b\n",
            "syntax.yaml:",
        ),
        (
            "unknown-field.yaml",
            "squads:\n  - name: x\n    owner: someone\n",
            "unknown-field.yaml:3:",
        ),
        (
            "bad-matcher.yaml",
            "impact_rules:\n  - name: m\n    match: ['severity']\n    action: drop\n",
            "bad-matcher.yaml:3:",
        ),
        (
            "bad-regex.yaml",
            "impact_rules:\n  - name: re\n    match: ['env=~\"(prod\"']\n    action: drop\n",
            "bad-regex.yaml:3:",
        ),
        (
            "unknown-squad.yaml",
            "impact_rules:\n  - name: u\n    squads: [ghosts]\n    match: ['a=b']\n    action: drop\n",
            "unknown-squad.yaml:3:",
        ),
    ];
    for (file, content, want) in breakages {
        let s = Scratch::with_rules("check");
        std::fs::write(s.path(file), content).unwrap();
        let out = squadron(&["check", s.0.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(want), "{file}: expected {want:?} in:\n{err}");
    }
}

#[test]
fn replay_of_an_hour_accounts_for_every_alert_and_pages_for_under_5_percent() {
    let s = Scratch::new("hour");
    let file = s.path("hour.jsonl");
    let generated = squadron(&["generate", "hour", "-o", file.to_str().unwrap()]);
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let notes = s.path("notifications.jsonl");
    let v = replay_json(&file, &notes);
    let received = v["received"].as_u64().unwrap();
    assert!(
        (100_000..=140_000).contains(&received),
        "about 120,000 alerts: {received}"
    );
    let fates: u64 = v["fates"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(fates, received, "fates sum to received: {v}");
    for kind in [
        "notified",
        "deduplicated",
        "dropped",
        "inhibited",
        "flapping",
        "invalid",
    ] {
        assert!(
            v["fates"][kind].as_u64().unwrap() > 0,
            "the hour exercises {kind}: {v}"
        );
    }
    let invalid = v["fates"]["invalid"].as_u64().unwrap() as f64 / received as f64;
    assert!(
        (0.002..0.01).contains(&invalid),
        "about 0.5% bad input: {invalid}"
    );
    let notifications = v["notifications"].as_u64().unwrap();
    assert!(
        1.0 - notifications as f64 / received as f64 >= 0.95,
        "noise reduction: {v}"
    );
    let per_squad: u64 = v["squads"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["notifications"].as_u64().unwrap())
        .sum();
    assert_eq!(per_squad, notifications);
    let lines = std::fs::read_to_string(&notes).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        notifications,
        "--notifications writes each one"
    );
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(
        first["squad"].is_string()
            && first["alerts"][0]["fingerprint"].as_str().unwrap().len() == 16
    );
}

#[test]
fn replay_reads_standard_input_bare_lines_and_raw_payloads() {
    let input = concat!(
        "{\"received_at\":\"2026-11-26T10:00:00Z\",\"message\":{\"labels\":{\"alertname\":\"A\",\"service\":\"checkout\"}}}\n",
        "{\"labels\":{\"alertname\":\"A\",\"service\":\"checkout\"}}\n",
        "{\"received_at\":\"2026-11-26T10:00:01Z\",\"raw\":\"<html>oops\"}\n",
        "[{\"labels\":{\"alertname\":\"B\",\"service\":\"search-api\"}},{\"labels\":{\"x\":1}}]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args(["replay", "--rules", "rules", "--json", "-"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["received"], 5);
    assert_eq!(v["fates"]["notified"], 2, "{v}");
    assert_eq!(v["fates"]["deduplicated"], 1, "{v}");
    assert_eq!(v["fates"]["invalid"], 2, "{v}");
    assert_eq!(v["notifications"], 2);
}

#[test]
fn shipped_rule_tests_pass() {
    let out = squadron(&["test", "rules/tests"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(" 0 failed"));
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let s = Scratch::new("wrong");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let test = format!(
        "rules: {}\nstart: \"2026-11-26T10:00:00Z\"\ntests:\n  - name: wrong on purpose\n    alerts:\n      - {{at: 0s, labels: {{alertname: A, service: checkout, env: staging}}, fate: notified}}\n    notifications:\n      - {{squad: search, reason: repeat}}\n",
        rules.display()
    );
    std::fs::write(s.path("wrong.yaml"), test).unwrap();
    let out = squadron(&["test", s.path("wrong.yaml").to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("- expected fate: notified"), "{stdout}");
    assert!(
        stdout.contains("+ actual fate:   dropped by drop-non-production"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("notification 1: - expected squad=search reason=repeat, but it was not sent"),
        "{stdout}"
    );
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn help_describes_every_command() {
    let out = squadron(&["--help"]);
    let help = text(&out.stdout);
    for cmd in ["check", "replay", "test", "generate"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn replay_compare_reports_what_a_rule_change_does_to_an_hour() {
    let old = Scratch::with_rules("compare-old");
    let new = Scratch::with_rules("compare-new");
    let impact = std::fs::read_to_string(new.path("20-impact.yaml")).unwrap();
    let widened = impact.replace(
        r#"match: ['severity=~"info|none"']"#,
        r#"match: ['severity=~"info|none|warning"']"#,
    );
    assert_ne!(
        impact, widened,
        "the shipped drop-info rule changed shape; update this test"
    );
    std::fs::write(new.path("20-impact.yaml"), widened).unwrap();
    let hour = Scratch::new("compare-hour");
    let file = hour.path("hour.jsonl");
    assert!(
        squadron(&["generate", "hour", "-o", file.to_str().unwrap()])
            .status
            .success()
    );
    let out = squadron(&[
        "replay",
        "--rules",
        new.0.to_str().unwrap(),
        "--compare",
        old.0.to_str().unwrap(),
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["received"].as_u64().unwrap() > 100_000);
    let transitions = v["transitions"].as_array().unwrap();
    let into_drop: u64 = transitions
        .iter()
        .filter(|t| t["to"] == "dropped (drop-info)")
        .map(|t| t["count"].as_u64().unwrap())
        .sum();
    assert!(into_drop > 1000, "warnings are now dropped: {v}");
    let knock_on = ["notified", "throttled", "deduplicated"];
    for t in transitions {
        let (from, to) = (t["from"].as_str().unwrap(), t["to"].as_str().unwrap());
        assert!(
            to == "dropped (drop-info)" || (knock_on.contains(&from) && knock_on.contains(&to)),
            "unexpected change {from} -> {to}"
        );
        assert!(!t["examples"].as_array().unwrap().is_empty());
    }
    let changed: u64 = transitions
        .iter()
        .map(|t| t["count"].as_u64().unwrap())
        .sum();
    assert_eq!(changed, v["changed"].as_u64().unwrap());
    assert!(
        v["notifications"]["new"].as_u64() < v["notifications"]["old"].as_u64(),
        "fewer pages: {}",
        v["notifications"]
    );
    let per_squad_new: u64 = v["squads"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["new"].as_u64().unwrap())
        .sum();
    assert_eq!(per_squad_new, v["notifications"]["new"].as_u64().unwrap());
    let per_keeper_old: u64 = v["goalkeepers"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["old"].as_u64().unwrap())
        .sum();
    assert_eq!(per_keeper_old, v["notifications"]["old"].as_u64().unwrap());
}

#[test]
fn a_pagerduty_resolve_resolves_its_trigger_through_the_engine() {
    let data = |f: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/formats")
                .join(f),
        )
        .unwrap()
    };
    let input = format!(
        "{{\"received_at\":\"2026-11-26T10:00:00Z\",\"message\":{}}}\n{{\"received_at\":\"2026-11-26T10:02:00Z\",\"message\":{}}}\n{{\"received_at\":\"2026-11-26T10:20:00Z\",\"message\":{}}}\n",
        data("pagerduty-trigger.json").trim(),
        data("pagerduty-resolve.json").trim(),
        data("grafana.json").trim()
    );
    let s = Scratch::new("pd");
    let file = s.path("pd.jsonl");
    std::fs::write(&file, input).unwrap();
    let notes = s.path("notes.jsonl");
    let v = replay_json(&file, &notes);
    assert_eq!(v["received"], 3);
    assert_eq!(v["fates"]["notified"], 3, "{v}");
    let notes: Vec<serde_json::Value> = std::fs::read_to_string(&notes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pd: Vec<&str> = notes
        .iter()
        .filter(|n| n["alerts"][0]["labels"]["alertname"] == "PagerDutyEvent")
        .map(|n| n["reason"].as_str().unwrap())
        .collect();
    assert_eq!(pd, vec!["new_group", "resolved"], "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n["squad"] == "search" && n["alerts"][0]["labels"]["alertname"] == "DiskFull"),
        "Grafana's alert reached the indexer's squad"
    );
}

/// The demo as a newcomer runs it: it serves the same endpoints as `run`,
/// SIGTERM ends it with its summary and exit 0, a clean run logs no error,
/// and a port in use is named as such.
#[test]
fn the_demo_serves_stops_cleanly_and_names_a_busy_port() {
    use std::io::Read;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args([
            "demo",
            "--rules",
            rules,
            "--duration",
            "600s",
            "--http-listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .env("SQUADRON_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<(u16, String)> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let code = raw.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, raw))
    };
    let started = std::time::Instant::now();
    while get("/readyz").map(|r| r.0) != Some(200) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the demo never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for path in ["/api/v1/groups", "/api/v1/alerts"] {
        assert_eq!(get(path).map(|r| r.0), Some(200), "{path}");
    }
    // A second demo on the same port says the port is in use.
    let busy = std::process::Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args([
            "demo",
            "--rules",
            rules,
            "--duration",
            "1s",
            "--http-listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(!busy.status.success());
    assert!(err.contains("in use"), "{err}");
    assert!(!err.contains("channel closed"), "{err}");

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(
        out.contains("noise reduction"),
        "the summary is printed: {out}"
    );
    assert!(!log.contains("ERROR"), "a clean run logs no error: {log}");
}

/// `squadron goalkeeper` names the same person as the notifications do, at
/// every hour around the end of summer time in Stockholm (2026-10-25) and
/// through a rule-file override given in local time.
#[test]
fn goalkeeper_agrees_with_notifications_across_dst_and_overrides() {
    let s = Scratch::new("goalkeeper-dst");
    std::fs::write(
        s.path("rules.yaml"),
        "squads:\n  - name: oncall\n    services: [api]\n    goalkeeper:\n      timezone: Europe/Stockholm\n      handover: '02:30'\n      rotation: {start: '2026-10-01', people: [ann, ben, cat]}\n      overrides:\n        - {person: dan, start: '2026-10-25T01:00', end: '2026-10-25T05:00', reason: swap}\ngrouping: {group_wait: 0s, group_by: [alertname]}\n",
    )
    .unwrap();
    // One new group an hour (group_wait 0: notified when it arrives), from
    // 2026-10-24T20:00Z to 2026-10-26T04:00Z.
    let start = "2026-10-24T20:00:00Z".parse::<jiff::Timestamp>().unwrap();
    let mut input = String::new();
    for h in 0..33 {
        let at = start + jiff::SignedDuration::from_hours(h);
        input.push_str(&format!(
            "{{\"received_at\":\"{at}\",\"message\":{{\"labels\":{{\"alertname\":\"A{h}\",\"service\":\"api\"}}}}}}\n"
        ));
    }
    std::fs::write(s.path("stream.jsonl"), input).unwrap();
    let rules = s.0.to_str().unwrap().to_owned();
    let notes = s.path("notes.jsonl");
    let out = squadron(&[
        "replay",
        "--rules",
        &rules,
        "--notifications",
        notes.to_str().unwrap(),
        s.path("stream.jsonl").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let notes: Vec<serde_json::Value> = std::fs::read_to_string(&notes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each group is notified firing, then resolved (resolve_timeout) at other times.
    assert!(notes.len() >= 33, "{}", notes.len());
    let mut seen = std::collections::BTreeSet::new();
    for n in &notes {
        let at = n["at"].as_str().unwrap();
        let out = squadron(&[
            "goalkeeper",
            "--rules",
            &rules,
            "--squad",
            "oncall",
            "--at",
            at,
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["goalkeeper"], n["goalkeeper"], "at {at}");
        seen.insert(n["goalkeeper"].as_str().unwrap().to_owned());
    }
    // The rota and the override were both exercised.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["ann", "ben", "cat", "dan"]
    );
    // Shifts run handover to handover at 02:30 local. On 2026-10-25 02:30
    // happens twice; the handover is the first (00:30Z), so that shift is 25 hours.
    let out = squadron(&[
        "goalkeeper",
        "--rules",
        &rules,
        "--squad",
        "oncall",
        "--at",
        "2026-10-24T12:00:00Z",
        "--days",
        "1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shifts = v[0]["shifts"].as_array().unwrap();
    let spans: Vec<(&str, &str)> = shifts
        .iter()
        .map(|s| (s["start"].as_str().unwrap(), s["end"].as_str().unwrap()))
        .collect();
    assert_eq!(
        spans[..2],
        [
            ("2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z"),
            ("2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"),
        ]
    );
}

/// `squadron report` over a day of generated traffic: it names the noisiest
/// alerts and shifts, and every suggested rule's claimed effect is what
/// `replay --compare` reports with its snippet added to the rules.
#[test]
fn report_names_the_noise_and_every_suggestion_holds_under_replay_compare() {
    let scratch = Scratch::with_rules("report");
    let day = scratch.0.parent().unwrap().join("day.jsonl");
    let html = scratch.0.parent().unwrap().join("report.html");
    let day_s = day.to_str().unwrap();
    let out = squadron(&["generate", "week", "--duration", "1d", "--output", day_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = squadron(&[
        "report",
        "--json",
        "--html",
        html.to_str().unwrap(),
        "--start",
        "2026-11-26T09:00:00Z",
        day_s,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["received"].as_u64().unwrap() > 50_000,
        "{}",
        r["received"]
    );
    let noisiest = r["noisiest"].as_array().unwrap();
    assert_eq!(noisiest.len(), 10);
    let paged: Vec<u64> = noisiest
        .iter()
        .map(|a| a["paged"].as_u64().unwrap())
        .collect();
    assert!(paged.windows(2).all(|w| w[0] >= w[1]), "{paged:?}");
    assert!(paged[0] > 0);
    // Shifts: payments hands over at 09:00 Stockholm; the day spans two shifts.
    let payments = r["squads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["squad"] == "payments")
        .unwrap();
    let shifts = payments["shifts"].as_array().unwrap();
    assert_eq!(shifts.len(), 2, "{payments}");
    assert_eq!(shifts[0]["end"], "2026-11-27T08:00:00Z");
    let shift_pages: u64 = shifts.iter().map(|s| s["pages"].as_u64().unwrap()).sum();
    assert_eq!(shift_pages, payments["pages"].as_u64().unwrap());

    let suggestions = r["suggestions"].as_array().unwrap();
    assert!(
        suggestions.iter().any(|s| s["kind"] == "digest"),
        "{suggestions:?}"
    );
    for s in suggestions {
        let file = scratch.path(s["file"].as_str().unwrap());
        std::fs::write(&file, s["snippet"].as_str().unwrap()).unwrap();
        let out = squadron(&[
            "replay",
            "--compare",
            "rules",
            "--rules",
            scratch.0.to_str().unwrap(),
            "--json",
            day_s,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = &s["effect"];
        assert_eq!(c["notifications"], e["notifications"], "{}", s["rule"]);
        assert_eq!(c["changed"], e["changed"], "{}", s["rule"]);
        assert!(e["changed"].as_u64().unwrap() > 0);
        let counts = |v: &serde_json::Value| -> Vec<(String, String, u64)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["from"].as_str().unwrap().to_owned(),
                        t["to"].as_str().unwrap().to_owned(),
                        t["count"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(
            counts(&c["transitions"]),
            counts(&e["transitions"]),
            "{}",
            s["rule"]
        );
        std::fs::remove_file(&file).unwrap();
    }
    check_report_in_a_browser(&html, scratch.0.parent().unwrap());
}

/// The HTML report in headless Chromium: its script runs to the end without
/// an error (it marks the page ready), draws its charts, and a screenshot
/// holds far more than a blank page's.
fn check_report_in_a_browser(html: &Path, dir: &Path) {
    let browser = "chromium-headless-shell";
    if Command::new(browser).arg("--version").output().is_err() {
        eprintln!("{browser} not installed: scripts/test.sh installs it and runs this check");
        return;
    }
    let chromium = |args: &[&str]| -> Output {
        Command::new(browser)
            .args(["--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .args(args)
            .output()
            .expect("run chromium")
    };
    let url = format!("file://{}", html.display());
    let out = chromium(&["--dump-dom", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dom = text(&out.stdout);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the report's script did not finish:\n{}",
        text(&out.stderr)
    );
    let charts: usize = dom
        .split("data-charts=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        charts >= 3,
        "one chart per squad with shifts, and the noisiest alerts: {charts}"
    );
    assert!(dom.matches("<rect").count() >= 20, "bars drawn");
    assert!(!dom.contains("Uncaught"), "{dom}");

    let shot = dir.join("report.png");
    let blank = dir.join("blank.png");
    std::fs::write(
        dir.join("blank.html"),
        "<!DOCTYPE html><html><body></body></html>",
    )
    .unwrap();
    for (page, png) in [
        (url.clone(), &shot),
        (
            format!("file://{}", dir.join("blank.html").display()),
            &blank,
        ),
    ] {
        let out = chromium(&[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,1600",
            &page,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height as asked.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 1200);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 1600);
    let blank = std::fs::metadata(&blank).unwrap().len();
    assert!(
        png.len() as u64 > blank * 5,
        "the screenshot shows charts and tables ({} bytes; a blank page {blank})",
        png.len()
    );
}
