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
    while drain && engine.pending_inputs() > 0 {
        let d = engine
            .next_deadline()
            .expect("pending inputs wait for a timer");
        engine.tick(d, &mut out);
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
