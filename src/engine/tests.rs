//! Engine properties that YAML cases cannot state: exactly-once accounting over
//! generated streams, snapshot/restore equivalence, reload keeping state.
//! Behaviour case by case lives in tests/engine/*.yaml.

use super::*;
use crate::ingest::feed;
use crate::rules::{compile, load_dir};
use crate::sim::{Rng, Scenario, generate};
use std::path::{Path, PathBuf};

fn example_rules() -> Arc<RuleSet> {
    Arc::new(load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap())
}

fn rules(text: &str) -> Arc<RuleSet> {
    Arc::new(compile(&[(PathBuf::from("r.yaml"), text.to_owned())]).unwrap())
}

/// Runs messages through an engine; returns every fate by input and the notifications.
fn run(
    engine: &mut Engine,
    messages: &[(Ts, Vec<u8>)],
    first_input: u64,
    drain: bool,
) -> (Vec<FateRecord>, Vec<Notification>, u64) {
    let mut out = Outputs::default();
    let (mut fates, mut notes) = (Vec::new(), Vec::new());
    let mut next = first_input;
    for &(now, ref m) in messages {
        engine.advance_to(now, &mut out);
        next += feed(engine, m, now, next, &mut out).alerts as u64;
        fates.append(&mut out.fates);
        notes.append(&mut out.notifications);
    }
    if drain {
        engine_drain(engine, &mut out);
    }
    fates.append(&mut out.fates);
    notes.append(&mut out.notifications);
    (fates, notes, next)
}

/// A random stream over small label pools, so alerts collide, resolve,
/// re-fire, flap, inhibit each other and arrive out of their own order.
fn random_stream(seed: u64) -> Vec<(Ts, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    let services = [
        "checkout",
        "search-api",
        "transcoder",
        "experiments",
        "kubernetes",
        "nobody",
    ];
    let names = [
        "NodeDown",
        "KubePodNotReady",
        "HighErrorRate",
        "TranscodeQueueBacklog",
        "HighLatencyP99",
    ];
    let mut t = 1_764_000_000_000i64;
    let mut out = Vec::new();
    for _ in 0..300 {
        t += rng.below(20_000) as i64;
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let status_resolved = rng.chance(0.25);
            let ends = if status_resolved {
                t - 1
            } else {
                t + rng.below(600_000) as i64
            };
            let mut a = serde_json::json!({
                "labels": {
                    "alertname": rng.pick(&names),
                    "service": rng.pick(&services),
                    "severity": rng.pick(&["critical", "warning", "info"]),
                    "env": rng.pick(&["production", "production", "staging"]),
                    "node": rng.pick(&["n1", "n2"]),
                    "cluster": "eu-1",
                    "instance": rng.pick(&["i1", "i2", "i3"]),
                },
                "endsAt": Ts(ends).to_string(),
            });
            if rng.chance(0.03) {
                a["labels"]["severity"] = serde_json::json!(1);
            }
            batch.push(a);
        }
        let bytes = if rng.chance(0.02) {
            b"{garbage".to_vec()
        } else {
            serde_json::to_vec(&batch).unwrap()
        };
        out.push((Ts(t), bytes));
    }
    out
}

#[test]
fn every_input_gets_exactly_one_fate_over_generated_streams() {
    let rules = example_rules();
    for seed in 0..40 {
        let stream = random_stream(seed);
        let mut engine = Engine::new(rules.clone());
        let (fates, notes, received) = run(&mut engine, &stream, 0, true);
        let mut seen = vec![0u32; received as usize];
        for f in &fates {
            seen[f.input as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "seed {seed}: an input got {:?} fates",
            seen.iter().find(|&&n| n != 1)
        );
        assert_eq!(
            fates.len() as u64,
            received,
            "seed {seed}: fates sum to received"
        );
        let notified = fates.iter().filter(|f| f.fate == Fate::Notified).count();
        assert!(
            notified == 0 || !notes.is_empty(),
            "seed {seed}: notified alerts imply notifications"
        );
        assert_eq!(engine.pending_inputs(), 0);
    }
}

#[test]
fn snapshot_and_restore_continue_exactly_like_an_uninterrupted_engine() {
    let rules = example_rules();
    let events = generate(&Scenario::storm(Ts(1_764_147_600_000)));
    let messages: Vec<(Ts, Vec<u8>)> = events.into_iter().map(|e| (e.at, e.message)).collect();
    let (first, second) = messages.split_at(messages.len() / 2);

    let mut whole = Engine::new(rules.clone());
    let (f1, n1, next) = run(&mut whole, first, 0, false);
    let (f2, n2, _) = run(&mut whole, second, next, true);

    let mut before = Engine::new(rules.clone());
    let (g1, m1, next_b) = run(&mut before, first, 0, false);
    let bytes = before.snapshot();
    drop(before);
    let mut after = Engine::restore(rules, &bytes).unwrap();
    // Same state (maps compare regardless of iteration order).
    let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    assert!(
        value(&after.snapshot()) == value(&bytes),
        "a restored engine snapshots to the same state"
    );
    let (g2, m2, _) = run(&mut after, second, next_b, true);

    assert_eq!((f1, n1), (g1, m1));
    assert!(!n2.is_empty(), "the second half notifies something");
    assert_eq!(f2, g2, "fates after restore");
    assert_eq!(n2, m2, "notifications after restore");
}

#[test]
fn reload_keeps_groups_and_their_timers() {
    let text = "squads:\n  - name: a\n    services: [x]\ngrouping: {group_wait: 30s}\n";
    let mut engine = Engine::new(rules(text));
    let alert = crate::decode::decode(br#"{"labels":{"alertname":"A","service":"x"}}"#).unwrap();
    let mut out = Outputs::default();
    engine.receive(0, alert.alerts[0].as_ref().unwrap(), Ts(0), &mut out);
    assert_eq!(engine.next_deadline(), Some(Ts(30_000)));

    // A new rule set, even one with a different group_wait, does not move an armed timer.
    engine.set_rules(rules(&text.replace("30s", "5m")));
    assert_eq!(engine.active_groups(), 1);
    assert_eq!(engine.next_deadline(), Some(Ts(30_000)));
    engine.tick(Ts(30_000), &mut out);
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(
        out.fates,
        vec![FateRecord {
            input: 0,
            squad: 0,
            fingerprint: Some(alert.alerts[0].as_ref().unwrap().fingerprint()),
            fate: Fate::Notified
        }]
    );
}

#[test]
fn state_size_grows_with_active_alerts() {
    let mut engine = Engine::new(example_rules());
    let empty = engine.state_bytes();
    let mut out = Outputs::default();
    for (i, m) in crate::sim::distinct_alerts(1000, Ts(1_764_147_600_000), 1)
        .iter()
        .enumerate()
    {
        feed(&mut engine, m, Ts(1_764_147_600_000), i as u64, &mut out);
    }
    assert!(engine.active_alerts() > 900, "{}", engine.active_alerts());
    assert!(engine.state_bytes() > empty + 1000 * 100);
}

/// Feeds `stream` to an engine that tracks changes, appending them to `log` after
/// every step, as the pipeline writes its changelog.
fn run_logged(
    engine: &mut Engine,
    messages: &[(Ts, Vec<u8>)],
    first_input: u64,
    log: &mut Vec<Change>,
) -> (Vec<FateRecord>, Vec<Notification>, u64) {
    let mut out = (Vec::new(), Vec::new(), first_input);
    for m in messages {
        let (f, n, next) = run(engine, std::slice::from_ref(m), out.2, false);
        out.0.extend(f);
        out.1.extend(n);
        out.2 = next;
        log.extend(engine.take_changes());
    }
    out
}

/// What compaction keeps: the last record of each key, tombstoned keys gone.
fn compact(log: &[Change]) -> Vec<Change> {
    let mut last: std::collections::BTreeMap<&[u8], &Option<Vec<u8>>> = Default::default();
    for (k, v) in log {
        last.insert(k, v);
    }
    last.into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, v)| (k.to_vec(), v.clone()))
        .collect()
}

#[test]
fn an_engine_restored_from_its_changelog_continues_exactly_like_an_uninterrupted_one() {
    let rules = example_rules();
    let storm = generate(&Scenario::storm(Ts(1_764_147_600_000)))
        .into_iter()
        .map(|e| (e.at, e.message))
        .collect::<Vec<_>>();
    let streams: Vec<Vec<(Ts, Vec<u8>)>> = (0..12)
        .map(random_stream)
        .chain(std::iter::once(storm))
        .collect();
    // Shift books and handover reports are state like any other.
    let mut reports = 0;
    for (s, stream) in streams.iter().enumerate() {
        let mut whole = Engine::new(rules.clone());
        whole.set_shift_mode(ShiftMode::Local);
        let mut expected = run(&mut whole, stream, 0, true);
        // On, past the next handovers: every squad's book is reported.
        let later = Ts(1_764_500_000_000);
        let finish = |e: &mut Engine| {
            let mut out = Outputs::default();
            e.advance_to(later, &mut out);
            out.notifications
        };
        let tail = finish(&mut whole);
        reports += expected
            .1
            .iter()
            .chain(&tail)
            .filter(|n| n.report.is_some())
            .count();
        for cut in [stream.len() / 5, stream.len() / 2, stream.len() * 4 / 5] {
            let (first, second) = stream.split_at(cut);
            let mut before = Engine::new(rules.clone());
            before.set_shift_mode(ShiftMode::Local);
            before.track_changes();
            let mut log = Vec::new();
            let (f1, n1, next) = run_logged(&mut before, first, 0, &mut log);
            // Restore from the full log and from its compacted form: the same.
            for records in [log.clone(), compact(&log)] {
                let (mut after, report) = Engine::from_changelog(rules.clone(), records);
                after.set_shift_mode(ShiftMode::Local);
                assert_eq!(report.malformed, 0, "stream {s} cut {cut}");
                assert_eq!(report.orphans, 0, "stream {s} cut {cut}");
                assert_eq!(after.active_alerts(), before.active_alerts());
                assert_eq!(after.active_groups(), before.active_groups());
                assert_eq!(after.pending_inputs(), before.pending_inputs());
                let (f2, n2, _) = run(&mut after, second, next, true);
                let mut fates = f1.clone();
                fates.extend(f2);
                let mut notes = n1.clone();
                notes.extend(n2);
                assert_eq!(fates, expected.0, "stream {s} cut {cut}: fates");
                assert_eq!(notes, expected.1, "stream {s} cut {cut}: notifications");
                assert_eq!(finish(&mut after), tail, "stream {s} cut {cut}: reports");
            }
        }
        expected.0.clear();
    }
    assert!(reports > 0, "the streams cross handovers");
}

#[test]
fn the_compacted_changelog_holds_live_state_only() {
    let rules = example_rules();
    let stream = random_stream(7);
    let mut engine = Engine::new(rules.clone());
    engine.track_changes();
    let mut log = Vec::new();
    run_logged(&mut engine, &stream, 0, &mut log);
    // Let every alert time out and every group resolve and empty.
    let mut out = Outputs::default();
    engine.advance_to(Ts(1_764_000_000_000 + 86_400_000), &mut out);
    log.extend(engine.take_changes());
    assert_eq!(engine.active_alerts(), 0);
    assert_eq!(engine.active_groups(), 0);
    let live = compact(&log);
    assert!(
        live.iter()
            .all(|(k, _)| k.starts_with(b"storm/") || k.starts_with(b"flap/")),
        "only storm windows and flap history may outlive their alerts: {:?}",
        live.iter()
            .map(|(k, _)| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );
    assert!(
        log.len() > live.len() * 10,
        "history is much larger than live state"
    );
}

#[test]
fn a_changelog_with_garbage_and_missing_records_restores_what_it_can() {
    let rules = example_rules();
    let stream = random_stream(3);
    let mut engine = Engine::new(rules.clone());
    engine.track_changes();
    let mut log = Vec::new();
    run_logged(&mut engine, &stream[..150], 0, &mut log);
    let mut live = compact(&log);
    let groups = live
        .iter()
        .filter(|(k, _)| k.starts_with(b"group/"))
        .count();
    assert!(groups > 0);
    // A lost alert record and a lost group record (a crash between records), and garbage.
    let lost = live
        .iter()
        .position(|(k, _)| k.starts_with(b"alert/"))
        .unwrap();
    live.remove(lost);
    let group = live
        .iter()
        .position(|(k, _)| k.starts_with(b"group/"))
        .unwrap();
    let (group_key, _) = live.remove(group);
    let group_key = std::str::from_utf8(&group_key[b"group/".len()..]).unwrap();
    let naming_it = live
        .iter()
        .filter(|(k, v)| {
            k.starts_with(b"alert/")
                && serde_json::from_slice::<serde_json::Value>(v.as_ref().unwrap()).unwrap()
                    ["group"]
                    == group_key
        })
        .count();
    assert!(naming_it > 0);
    live.push((b"alert/zz".to_vec(), Some(b"{}".to_vec())));
    live.push((b"nonsense".to_vec(), Some(b"[".to_vec())));
    let (restored, report) = Engine::from_changelog(rules, live);
    assert_eq!(report.malformed, 2);
    assert_eq!(
        report.orphans, naming_it as u64,
        "the alerts of the group without a record"
    );
    assert_eq!(report.legacy, 0);
    assert_eq!(
        restored.active_alerts(),
        engine.active_alerts() - 1 - naming_it
    );
}

/// The records as written before alerts named their group: the group's record
/// lists its members in order, the alert's record is the bare alert.
fn earlier_form(live: &[Change]) -> Vec<Change> {
    use serde_json::Value;
    let parse = |v: &Option<Vec<u8>>| serde_json::from_slice::<Value>(v.as_ref().unwrap()).unwrap();
    let mut members: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
    for (k, v) in live.iter().filter(|(k, _)| k.starts_with(b"alert/")) {
        let r = parse(v);
        let key = String::from_utf8(k[b"alert/".len()..].to_vec()).unwrap();
        members
            .entry(r["group"].as_str().unwrap().to_owned())
            .or_default()
            .push((r["alert"]["join"].as_u64().unwrap(), key));
    }
    live.iter()
        .map(|(k, v)| {
            let value = if k.starts_with(b"alert/") {
                let mut a = parse(v)["alert"].clone();
                a.as_object_mut().unwrap().remove("join");
                a
            } else if k.starts_with(b"group/") {
                let mut g = parse(v);
                let mut m = members.remove(g["key"].as_str().unwrap()).unwrap();
                m.sort();
                let o = g.as_object_mut().unwrap();
                o.remove("joins");
                o.insert(
                    "members".into(),
                    m.into_iter().map(|(_, k)| Value::String(k)).collect(),
                );
                g
            } else {
                return (k.clone(), v.clone());
            };
            (k.clone(), Some(serde_json::to_vec(&value).unwrap()))
        })
        .collect()
}

#[test]
fn a_changelog_in_the_earlier_form_restores_the_same_and_is_written_again() {
    let rules = example_rules();
    let stream = random_stream(5);
    let (first, second) = stream.split_at(stream.len() / 2);
    let mut whole = Engine::new(rules.clone());
    let expected = run(&mut whole, &stream, 0, true);

    let mut before = Engine::new(rules.clone());
    before.track_changes();
    let mut log = Vec::new();
    let (f1, n1, next) = run_logged(&mut before, first, 0, &mut log);
    let live = compact(&log);
    let earlier = earlier_form(&live);
    assert_ne!(earlier, live);

    let (mut after, report) = Engine::from_changelog(rules.clone(), earlier.clone());
    assert_eq!((report.malformed, report.orphans), (0, 0));
    let groups = live
        .iter()
        .filter(|(k, _)| k.starts_with(b"group/"))
        .count();
    let alerts = live
        .iter()
        .filter(|(k, _)| k.starts_with(b"alert/"))
        .count();
    assert_eq!(report.legacy, (groups + alerts) as u64);
    assert_eq!(after.active_alerts(), before.active_alerts());
    // Every record is written again, in the current form: the log as it will
    // be compacted restores without anything in the earlier form.
    let rewritten = after.take_changes();
    assert_eq!(rewritten.len(), live.len());
    let mut upgraded = earlier.clone();
    upgraded.extend(rewritten);
    let (_, report) = Engine::from_changelog(rules.clone(), compact(&upgraded));
    assert_eq!((report.legacy, report.orphans), (0, 0));

    // A crash while rewriting (alerts are written before groups): the
    // groups' lists still give the order.
    let mut half = earlier;
    half.extend(
        live.iter()
            .filter(|(k, _)| k.starts_with(b"alert/"))
            .step_by(2)
            .cloned(),
    );
    let (mut from_half, report) = Engine::from_changelog(rules, compact(&half));
    assert_eq!((report.malformed, report.orphans), (0, 0));

    for e in [&mut after, &mut from_half] {
        let (f2, n2, _) = run(e, second, next, true);
        let mut fates = f1.clone();
        fates.extend(f2);
        let mut notes = n1.clone();
        notes.extend(n2);
        assert_eq!(fates, expected.0, "fates");
        assert_eq!(notes, expected.1, "notifications");
    }
}

/// The pipeline's global table. Instance A runs the task owning NodeDown
/// (partition 0) and another task (2); instance B runs a third (1). The owner
/// writes its source into A's table at once and publishes records that B's
/// table reads; the deciding engines consult their table and keep none of it.
#[test]
fn sources_published_by_another_engine_inhibit_like_a_local_source() {
    let rules = example_rules();
    let now = Ts(1_764_147_600_000);
    let msg = |labels: serde_json::Value, ends: Ts| {
        serde_json::to_vec(&serde_json::json!([{"labels": labels, "endsAt": ends.to_string()}]))
            .unwrap()
    };
    let node = serde_json::json!({"alertname": "NodeDown", "cluster": "eu-1", "node": "n1", "service": "kubernetes", "severity": "critical", "env": "production"});
    let pod = |p: &str| serde_json::json!({"alertname": "KubePodNotReady", "cluster": "eu-1", "node": "n1", "service": "checkout", "pod": p, "severity": "warning", "env": "production"});
    let (table_a, table_b) = (
        Arc::new(SharedSources::default()),
        Arc::new(SharedSources::default()),
    );
    let engine = |table: &Arc<SharedSources>, partition: i32| {
        let mut e = Engine::new(rules.clone());
        e.track_changes();
        e.share_sources(table.clone(), partition);
        e
    };
    let (mut owner, mut local, mut remote) = (
        engine(&table_a, 0),
        engine(&table_a, 2),
        engine(&table_b, 1),
    );
    // What B's reader does with the owner's records; returns its changelog.
    let publish = |e: &mut Engine| {
        let changelog = e.take_changes();
        for (k, v) in e.take_source_records() {
            table_b.apply_read(0, &k, v.as_deref()).unwrap();
            // A's reader skips them: the owner runs there.
            table_a.apply_read(0, &k, None).unwrap();
        }
        changelog
    };
    let inhibited = |out: &Outputs| {
        out.fates
            .iter()
            .filter(|f| matches!(&f.fate, Fate::Inhibited { rule } if &**rule == "node-down-inhibits-pods"))
            .count()
    };
    let mut out = Outputs::default();
    let until = now.plus(Duration::from_secs(600));
    feed(&mut owner, &msg(node.clone(), until), now, 1, &mut out);
    // node-down-inhibits-pods, and critical-inhibits-warning (it is critical).
    assert_eq!((table_a.alerts(), table_a.keys()), (2, 2));
    assert_eq!(table_b.keys(), 0, "B sees nothing before the records");
    out.clear();
    feed(&mut local, &msg(pod("p1"), until), now, 2, &mut out);
    assert_eq!(inhibited(&out), 1, "A's other task sees the source at once");

    let changelog = publish(&mut owner);
    assert_eq!(
        changelog
            .iter()
            .filter(|(k, _)| k.starts_with(b"source/"))
            .count(),
        2
    );
    assert_eq!((table_a.alerts(), table_b.alerts()), (2, 2));
    out.clear();
    feed(&mut remote, &msg(pod("p2"), until), now, 3, &mut out);
    assert_eq!(inhibited(&out), 1, "B's task, once B read the records");
    // The deciding engines keep and write none of the owner's sources.
    let kept = |e: &Engine| -> usize {
        e.state
            .sources
            .iter()
            .flat_map(|(_, i)| i)
            .map(|i| i.by_key.len())
            .sum()
    };
    assert_eq!((kept(&owner), kept(&local), kept(&remote)), (2, 0, 0));
    for e in [&mut local, &mut remote] {
        assert!(
            e.take_changes()
                .iter()
                .all(|(k, _)| !k.starts_with(b"source/"))
        );
        assert!(e.take_source_records().is_empty());
    }

    // The source resolves (endsAt in the past): its records end the entries,
    // and the targets are no longer inhibited.
    let t = now.plus(Duration::from_secs(1));
    out.clear();
    feed(&mut owner, &msg(node, now), t, 4, &mut out);
    let changelog = publish(&mut owner);
    assert!(
        changelog
            .iter()
            .any(|(k, v)| k.starts_with(b"source/") && v.is_none())
    );
    assert_eq!(
        (table_a.keys(), table_b.keys()),
        (0, 0),
        "tombstones end the entries"
    );
    for (e, p, input) in [(&mut local, "p3", 5), (&mut remote, "p4", 6)] {
        out.clear();
        feed(e, &msg(pod(p), until), t, input, &mut out);
        engine_drain(e, &mut out);
        assert_eq!(inhibited(&out), 0, "{:?}", out.fates);
    }
}

/// A reload that changes what makes an alert a rule's source ends the
/// entries published under its earlier form, and entries written under the
/// earlier form (an instance not yet reloaded) never match the new one.
#[test]
fn a_reload_that_changes_a_rule_ends_its_published_sources() {
    let inhibit = |equal: &str| {
        rules(&format!(
            "inhibit_rules:\n  - name: a-inhibits-b\n    source_matchers: ['alertname=\"A\"']\n    target_matchers: ['alertname=\"B\"']\n    equal: [{equal}]\n"
        ))
    };
    let (before, after) = (inhibit("cluster"), inhibit("cluster, node"));
    let table = Arc::new(SharedSources::default());
    let mut e = Engine::new(before.clone());
    e.track_changes();
    e.share_sources(table.clone(), 0);
    let now = Ts(1_764_147_600_000);
    let mut out = Outputs::default();
    let a = br#"[{"labels":{"alertname":"A","cluster":"c","node":"n"}}]"#;
    feed(&mut e, a, now, 1, &mut out);
    e.take_changes();
    let first = e.take_source_records();
    assert_eq!((first.len(), table.keys()), (1, 1));
    // Another engine already on the new rules does not take the old entry.
    let mut reloaded = Engine::new(after.clone());
    reloaded.share_sources(table.clone(), 1);
    out.clear();
    let b = br#"[{"labels":{"alertname":"B","cluster":"c","node":"n"}}]"#;
    feed(&mut reloaded, b, now, 2, &mut out);
    assert!(
        !matches!(
            out.fates.first().map(|f| &f.fate),
            Some(Fate::Inhibited { .. })
        ),
        "{:?}",
        out.fates
    );

    e.set_rules(after);
    e.take_changes();
    let ended = e.take_source_records();
    assert!(
        ended.iter().any(|(k, v)| k == &first[0].0 && v.is_none()),
        "the entry of the rule's earlier form is tombstoned: {ended:?}"
    );
    assert_eq!(table.keys(), 0, "and gone from the instance's table");
}

/// At least once, a crash can leave the sources topic ahead of the
/// changelog: an engine that takes over a partition ends what the table read
/// of it that its restored state does not have, and writes what it has again.
#[test]
fn taking_over_a_partition_ends_the_sources_its_state_does_not_have() {
    let rules = example_rules();
    let table = Arc::new(SharedSources::default());
    let value = serde_json::to_vec(&[(AlertKey(42), Ts(1_764_147_600_000))]).unwrap();
    table.apply_read(4, b"gone#0/0/x", Some(&value)).unwrap();
    table.apply_read(5, b"other#0/0/x", Some(&value)).unwrap();
    let mut e = Engine::new(rules);
    e.track_changes();
    let mut out = Outputs::default();
    let node = br#"[{"labels":{"alertname":"NodeDown","cluster":"eu-1","node":"n1","service":"kubernetes","severity":"critical"}}]"#;
    feed(&mut e, node, Ts(1_764_147_600_000), 1, &mut out);
    e.take_changes();
    e.share_sources(table.clone(), 4);
    e.take_changes();
    let records = e.take_source_records();
    assert!(
        records.contains(&(b"gone#0/0/x".to_vec(), None)),
        "{records:?}"
    );
    assert_eq!(
        records.iter().filter(|(_, v)| v.is_some()).count(),
        2,
        "its own two entries, written again: {records:?}"
    );
    assert_eq!(table.keys(), 3, "partition 5's entry and the engine's two");
}

fn engine_drain(engine: &mut Engine, out: &mut Outputs) {
    while engine.pending_inputs() > 0 {
        let d = engine
            .next_deadline()
            .expect("pending inputs wait for a timer");
        engine.tick(d, out);
    }
}

/// A cardinality storm cannot grow state past the limits: new alerts over a
/// cap are shed (counted, with the limit), a core service's alerts are
/// admitted into the reserve others cannot use, and capacity returns as
/// alerts resolve.
#[test]
fn limits_shed_new_alerts_and_admit_core_first() {
    let text = "squads:
  - name: web
    services: [web]
    core_services: [web]
  - name: batch
    services: [batch, jobs]
ownership: {fallback_squad: batch}
grouping: {group_wait: 0s, group_interval: 1s, repeat_interval: 1h}
limits: {max_active_alerts: 100, max_active_alerts_per_squad: 40}
";
    let mut engine = Engine::new(rules(text));
    let msg = |service: &str, i: usize, resolved: bool| {
        let ends = if resolved {
            r#","endsAt":"1970-01-01T00:00:01Z""#
        } else {
            ""
        };
        format!(r#"{{"labels":{{"alertname":"A","service":"{service}","id":"{i}"}}{ends}}}"#)
            .into_bytes()
    };
    let mut messages: Vec<(Ts, Vec<u8>)> = Vec::new();
    // 200 batch alerts: the per-squad cap (40) sheds the rest.
    messages.extend((0..200).map(|i| (Ts(0), msg("batch", i, false))));
    // 80 jobs alerts (also squad batch): all shed, the squad is full.
    messages.extend((0..80).map(|i| (Ts(0), msg("jobs", i, false))));
    let (fates, _, next) = run(&mut engine, &messages, 0, false);
    let shed = |fates: &[FateRecord], limit| {
        fates
            .iter()
            .filter(|f| f.fate == Fate::Shed { limit })
            .count()
    };
    assert_eq!(engine.active_alerts(), 40);
    assert_eq!(shed(&fates, Limit::MaxActiveAlertsPerSquad), 240);
    // Core alerts are not subject to the per-squad cap, only to the overall one.
    let core: Vec<(Ts, Vec<u8>)> = (0..100).map(|i| (Ts(0), msg("web", i, false))).collect();
    let (fates, _, next) = run(&mut engine, &core, next, false);
    assert_eq!(engine.active_alerts(), 100);
    assert_eq!(shed(&fates, Limit::MaxActiveAlerts), 40);
    // Resolving batch alerts frees room for batch again after their flush.
    let resolve: Vec<(Ts, Vec<u8>)> = (0..40)
        .map(|i| (Ts(2_000), msg("batch", i, true)))
        .collect();
    let (_, _, next) = run(&mut engine, &resolve, next, false);
    let mut out = Outputs::default();
    engine.advance_to(Ts(10_000), &mut out);
    assert_eq!(engine.active_alerts(), 60);
    let again: Vec<(Ts, Vec<u8>)> = (500..540)
        .map(|i| (Ts(10_000), msg("batch", i, false)))
        .collect();
    let (fates, _, next) = run(&mut engine, &again, next, true);
    // 90 non-core may be active overall (the last tenth is core's): 30 admitted.
    assert_eq!(shed(&fates, Limit::MaxActiveAlerts), 10);
    assert_eq!(next, 200 + 80 + 100 + 40 + 40);
}

/// Arbitrary bytes never panic the decoder or the engine, and every input
/// still gets exactly one fate: real messages mutated at random (bytes
/// flipped, cut, duplicated, brackets and quotes and invalid UTF-8 inserted).
#[test]
fn mutated_messages_keep_the_accounting_invariant() {
    let mut rng = Rng::new(0x5eed_f022);
    let start = Ts(1_764_147_600_000);
    let seeds: Vec<Vec<u8>> = generate(&Scenario::hour(start))
        .into_iter()
        .take(300)
        .map(|e| e.message)
        .collect();
    let inserts: [&[u8]; 8] = [
        b"[",
        b"{",
        b"\"",
        b"\\",
        b"]]]]",
        &[0xff],
        &[0xc3],
        b"{\"specversion\":\"1.0\",\"data\":",
    ];
    let mut engine = Engine::new(example_rules());
    let mut out = Outputs::default();
    let (mut received, mut fates) = (0u64, 0u64);
    for i in 0..6_000u64 {
        let mut m = rng.pick(&seeds).clone();
        for _ in 0..=rng.below(4) {
            if m.is_empty() {
                break;
            }
            let at = rng.below(m.len() as u64) as usize;
            match rng.below(5) {
                0 => m[at] = rng.next_u64() as u8,
                1 => m.truncate(at),
                2 => {
                    let ins = rng.pick(&inserts);
                    m.splice(at..at, ins.iter().copied());
                }
                3 => {
                    let tail = m[at..].to_vec();
                    m.extend_from_slice(&tail);
                }
                _ => {
                    m.remove(at);
                }
            };
        }
        let now = start.plus(std::time::Duration::from_millis(i * 500));
        engine.advance_to(now, &mut out);
        received += feed(&mut engine, &m, now, received, &mut out).alerts as u64;
        fates += out.fates.len() as u64;
        out.clear();
    }
    engine_drain(&mut engine, &mut out);
    fates += out.fates.len() as u64;
    assert_eq!(fates, received, "every input has exactly one fate");
}

fn controls_with(records: &[crate::control::Record]) -> Arc<Controls> {
    let mut c = Controls::default();
    for r in records {
        c.apply(&r.key(), Some(&serde_json::to_vec(r).unwrap()))
            .unwrap();
    }
    Arc::new(c)
}

/// Runtime silences apply exactly like rule-file ones: to new alerts on
/// arrival, and to held alerts at their group's next flush; an
/// acknowledgement stops repeats until the group changes, and the next
/// notification names it; a duty override names the goalkeeper.
#[test]
fn runtime_controls_silence_acknowledge_and_override() {
    use crate::control::{Ack, ApiMatcher, Override, Record, SilenceRecord};
    let text = "squads:
  - name: web
    services: [web]
    goalkeeper: {timezone: UTC, weekdays: {monday:sunday: alice}}
grouping: {group_wait: 0s, group_interval: 10s, repeat_interval: 1m, group_by: [alertname]}
";
    let mut engine = Engine::new(rules(text));
    let msg = |name: &str, id: u32| {
        format!(r#"{{"labels":{{"alertname":"{name}","service":"web","id":"{id}"}},"endsAt":"2100-01-01T00:00:00Z"}}"#)
            .into_bytes()
    };
    // Feeds one message at `t` and runs the timers due within a group_interval.
    let step = |engine: &mut Engine, t: i64, m: Vec<u8>, next: u64| {
        let (mut fates, mut notes, next) = run(engine, &[(Ts(t), m)], next, false);
        let mut out = Outputs::default();
        engine.advance_to(Ts(t + 10_000), &mut out);
        fates.append(&mut out.fates);
        notes.append(&mut out.notifications);
        (fates, notes, next)
    };
    let (fates, notes, next) = step(&mut engine, 0, msg("Down", 1), 0);
    assert_eq!(notes.len(), 1, "{fates:?}");
    assert_eq!(notes[0].goalkeeper.as_deref(), Some("alice"));
    let group = notes[0].group_key.to_string();

    // Acknowledged after it was notified: no repeat at repeat_interval.
    engine.set_controls(controls_with(&[Record::Ack(Ack {
        group_key: group.clone(),
        by: "alice".into(),
        comment: "on it".into(),
        at: Ts(5_000),
    })]));
    let mut out = Outputs::default();
    engine.advance_to(Ts(200_000), &mut out);
    assert!(out.notifications.is_empty(), "acknowledged: no repeats");

    // A change (a second alert joins) is notified, naming the acknowledgement
    // and the override now in force.
    let controls = controls_with(&[
        Record::Ack(Ack {
            group_key: group.clone(),
            by: "alice".into(),
            comment: "on it".into(),
            at: Ts(5_000),
        }),
        Record::Override(Override {
            id: "o1".into(),
            squad: "web".into(),
            person: "bob".into(),
            starts_at: Ts(0),
            ends_at: Ts(10_000_000),
            created_by: "lead".into(),
            comment: String::new(),
            updated_at: Ts(0),
        }),
    ]);
    engine.set_controls(controls.clone());
    let (_, notes, next) = step(&mut engine, 205_000, msg("Down", 2), next);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].reason, NotifyReason::GroupChanged);
    assert_eq!(
        notes[0].acknowledged.as_ref().map(|a| a.by.as_str()),
        Some("alice")
    );
    assert_eq!(notes[0].goalkeeper.as_deref(), Some("bob"));
    // The acknowledgement predates the change: repeats resume.
    let mut out = Outputs::default();
    engine.advance_to(Ts(290_000), &mut out);
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(out.notifications[0].reason, NotifyReason::Repeat);

    // A runtime silence: a new matching alert is silenced on arrival, naming it.
    let silence = Record::Silence(SilenceRecord {
        id: "s1".into(),
        matchers: vec![ApiMatcher {
            name: "alertname".into(),
            value: "Down".into(),
            is_regex: false,
            is_equal: true,
        }],
        starts_at: Ts(300_000),
        ends_at: Ts(400_000),
        created_by: "alice".into(),
        comment: "maintenance".into(),
        updated_at: Ts(300_000),
        annotations: Default::default(),
    });
    engine.set_controls(controls_with(&[silence]));
    // Held alerts it covers show it until their group's next flush removes them.
    let held = engine.groups(Ts(300_500), |_, _| true);
    assert!(!held.is_empty());
    assert!(
        held.iter()
            .flat_map(|g| &g.alerts)
            .all(|a| a.silenced_by.as_deref() == Some("s1") && a.inhibited_by.is_none())
    );
    let (fates, notes, next) = step(&mut engine, 301_000, msg("Down", 3), next);
    assert!(notes.is_empty());
    assert_eq!(
        fates.last().map(|f| &f.fate),
        Some(&Fate::Silenced {
            silence: "s1".into(),
            runtime: true
        })
    );
    // Held alerts are silenced at their group's next flush: the group ends quietly.
    let mut out = Outputs::default();
    engine.advance_to(Ts(399_000), &mut out);
    assert!(out.notifications.is_empty());
    assert_eq!(engine.active_alerts(), 0);
    // After it ends, the alert notifies again.
    let (_, notes, _) = step(&mut engine, 400_000, msg("Down", 1), next);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].reason, NotifyReason::NewGroup);
}

/// The pipeline's storm limit: a squad's groups are flushed by many engines,
/// and each sends its notifications to the one engine that keeps the squad's
/// storm window, which sends or folds them and gives their inputs their fates.
/// Across engines the squad gets what one engine would send.
#[test]
fn a_storm_limit_holds_across_engines_through_routed_deliveries() {
    let rules = rules(
        r#"
squads:
  - name: payments
    services: [checkout]
    grouping: {group_by: [alertname, zone], group_wait: 10s, group_interval: 1m}
    storm_limit: {max_notifications: 3, interval: 5m}
"#,
    );
    let t0 = Ts(1_764_147_600_000);
    let msg = |alertname: &str, zone: usize, instances: std::ops::Range<usize>| {
        let alerts: Vec<serde_json::Value> = instances
            .map(|i| serde_json::json!({"labels": {"alertname": alertname, "service": "checkout", "zone": format!("z{zone}"), "instance": format!("i{i}")}}))
            .collect();
        serde_json::to_vec(&alerts).unwrap()
    };
    let routed = || {
        let mut e = Engine::new(rules.clone());
        e.set_shift_mode(ShiftMode::Routed);
        e
    };
    // Two engines decide four groups each; a third keeps the squad's window.
    let (mut a, mut b, mut keeper) = (routed(), routed(), routed());
    let mut out = Outputs::default();
    let mut input = 0;
    for (engine, name) in [(&mut a, "A"), (&mut b, "B")] {
        for g in 0..4 {
            input += feed(engine, &msg(name, g, 0..1), t0, input, &mut out).alerts as u64;
        }
        engine.tick(t0.plus(Duration::from_secs(10)), &mut out);
    }
    assert!(
        out.notifications.is_empty(),
        "deciding engines send nothing themselves"
    );
    assert!(out.fates.is_empty(), "{:?}", out.fates);
    let parts = std::mem::take(&mut out.deliveries);
    assert_eq!(parts.len(), 8, "one part per group");
    let at = t0.plus(Duration::from_secs(11));
    for p in parts {
        let p: DeliveryPart = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        keeper.deliver(p, at, &mut out);
    }
    assert_eq!(
        out.notifications.len(),
        3,
        "the squad's limit, across engines"
    );
    let count = |out: &Outputs, f: Fate| out.fates.iter().filter(|r| r.fate == f).count();
    assert_eq!(count(&out, Fate::Notified), 3);
    assert_eq!(count(&out, Fate::Throttled), 5);
    let mut inputs: Vec<u64> = out.fates.iter().map(|f| f.input).collect();
    inputs.sort();
    assert_eq!(inputs, (0..8).collect::<Vec<_>>(), "every input, once");
    out.clear();
    keeper.tick(at.plus(Duration::from_secs(300)), &mut out);
    let summary = &out.notifications[0];
    assert_eq!(summary.reason, NotifyReason::StormSummary);
    assert_eq!(summary.folded.as_ref().unwrap().notifications, 5);
    out.clear();

    // A group with more inputs than a part holds arrives in several parts; a
    // restart of the keeper between them keeps the first part's decision.
    let many = DELIVERY_PART_INPUTS + 100;
    let window = at.plus(Duration::from_secs(600));
    let mut c = routed();
    for g in 0..4 {
        // Three small groups fill the new window; the large one, flushed last
        // (it was created last), is folded.
        let instances = if g == 3 { 0..many } else { 0..1 };
        let first = 1_000 + g as u64 * 100_000;
        feed(&mut c, &msg("C", g, instances), window, first, &mut out);
    }
    c.tick(window.plus(Duration::from_secs(10)), &mut out);
    let mut parts = std::mem::take(&mut out.deliveries).into_iter();
    let at = window.plus(Duration::from_secs(11));
    for p in parts.by_ref().take(4) {
        keeper.deliver(p, at, &mut out);
    }
    let n = out.notifications.len();
    assert_eq!(n, 3, "the small groups fill the window");
    let bytes = keeper.snapshot();
    let mut keeper = Engine::restore(rules.clone(), &bytes).unwrap();
    keeper.set_shift_mode(ShiftMode::Routed);
    let last = parts.next().expect("the large group's second part");
    assert!(last.notification.is_none() && !last.more);
    assert!(parts.next().is_none());
    keeper.deliver(last, at, &mut out);
    assert_eq!(out.notifications.len(), 3, "the large group is folded");
    assert_eq!(count(&out, Fate::Throttled), many, "both parts' inputs");
    assert_eq!(count(&out, Fate::Notified), 3);
    assert!(
        keeper.state.storms.values().all(|w| w.folding.is_empty()),
        "the decision is forgotten after the last part"
    );
}
