//! Deterministic synthetic alert traffic, shaped like a real fleet: Prometheus
//! servers re-sending every firing alert each evaluation (30 s) in batches,
//! alerts starting and resolving, a node-down storm, a regional storm, flapping
//! checks and a share of bad input. Used by benchmarks, tests, `squadron
//! generate`, the bundled sample and the demo. Same seed, same bytes.

use crate::model::Ts;
use serde_json::{Value, json};
use std::time::Duration;

/// SplitMix64: small, fast, and enough for shaping traffic.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One message as it arrives: when, and its bytes.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Ts,
    pub message: Vec<u8>,
    /// False for deliberately undecodable payloads.
    pub json: bool,
}

impl Event {
    /// The replay file line for this event.
    pub fn to_replay_line(&self) -> String {
        if self.json {
            format!(
                "{{\"received_at\":\"{}\",\"message\":{}}}",
                self.at,
                String::from_utf8_lossy(&self.message)
            )
        } else {
            json!({"received_at": self.at.to_string(), "raw": String::from_utf8_lossy(&self.message)}).to_string()
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub start: Ts,
    pub duration: Duration,
    pub evaluation_interval: Duration,
    /// Alerts firing the whole time.
    pub steady: usize,
    /// Alerts that start and resolve during the run.
    pub episodic: usize,
    /// Pods on the node that goes down (0: no node-down storm).
    pub node_storm_pods: usize,
    /// Regions in the transcoding storm (0: none).
    pub region_storm: usize,
    pub flapping: usize,
    /// Share of bad input, per alert.
    pub bad_ratio: f64,
    pub batch: usize,
    pub seed: u64,
}

impl Scenario {
    /// About an hour of a mid-sized fleet: ~120,000 alerts.
    pub fn hour(start: Ts) -> Scenario {
        Scenario {
            start,
            duration: Duration::from_secs(3600),
            evaluation_interval: Duration::from_secs(30),
            steady: 800,
            episodic: 160,
            node_storm_pods: 300,
            region_storm: 48,
            flapping: 4,
            bad_ratio: 0.005,
            batch: 64,
            seed: 7,
        }
    }

    /// Fifteen minutes with a node-down storm: the bundled sample.
    pub fn storm(start: Ts) -> Scenario {
        Scenario {
            duration: Duration::from_secs(15 * 60),
            steady: 60,
            episodic: 20,
            node_storm_pods: 120,
            region_storm: 24,
            flapping: 2,
            ..Scenario::hour(start)
        }
    }

    /// Live traffic for `squadron demo`: Prometheus evaluating every 2 s, a
    /// node-down storm and a regional storm a third of the way in.
    pub fn demo(start: Ts, duration: Duration) -> Scenario {
        Scenario {
            duration,
            evaluation_interval: Duration::from_secs(2),
            steady: 150,
            episodic: 40,
            node_storm_pods: 120,
            region_storm: 40,
            flapping: 2,
            ..Scenario::hour(start)
        }
    }

    /// A week of a quieter fleet, evaluated every minute: ~550,000 alerts
    /// (`squadron report`'s benchmark and test).
    pub fn week(start: Ts) -> Scenario {
        Scenario {
            duration: Duration::from_secs(7 * 86_400),
            evaluation_interval: Duration::from_secs(60),
            steady: 40,
            episodic: 1_500,
            node_storm_pods: 60,
            region_storm: 12,
            flapping: 2,
            ..Scenario::hour(start)
        }
    }

    pub fn by_name(name: &str, start: Ts) -> Option<Scenario> {
        match name {
            "hour" => Some(Scenario::hour(start)),
            "week" => Some(Scenario::week(start)),
            "storm" => Some(Scenario::storm(start)),
            "live" => Some(Scenario::demo(start, Duration::from_secs(180))),
            _ => None,
        }
    }
}

/// Services of the example rules, plus one no squad owns.
const SERVICES: &[(&str, &str)] = &[
    ("checkout", "payments"),
    ("payments-api", "payments"),
    ("fraud-scoring", "payments"),
    ("search-api", "search"),
    ("indexer", "search"),
    ("query-suggest", "search"),
    ("stream-edge", "playback"),
    ("transcoder", "playback"),
    ("drm-license", "playback"),
    ("recommendations", "growth"),
    ("experiments", "growth"),
    ("notifications-push", "growth"),
    ("ingress", "ingress-nginx"),
    ("kafka", "kafka"),
    ("legacy-billing", "billing"),
];

const ALERTNAMES: &[&str] = &[
    "HighErrorRate",
    "HighLatencyP99",
    "KubePodCrashLooping",
    "ContainerRestarting",
    "DiskWillFillIn4Hours",
    "CertificateExpiringSoon",
    "QueueBacklogGrowing",
    "TargetDown",
    "MemoryPressure",
    "SLOBurnRateFast",
];

/// A label set in sorted order, ready to serialize.
type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct SimAlert {
    labels: Labels,
    summary: String,
    starts: Ts,
    /// When it resolves; `Ts::MAX` for never.
    ends: Ts,
    /// Flapping alerts toggle every evaluation in this period (in evaluations).
    flap_period: u32,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    let mut l: Labels = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
    l.sort_by_key(|(k, _)| *k);
    l
}

/// Generates the scenario's events in time order.
pub fn generate(s: &Scenario) -> Vec<Event> {
    let mut rng = Rng::new(s.seed);
    let end = s.start.plus(s.duration);
    let mut alerts: Vec<SimAlert> = Vec::new();
    let severities = ["critical", "warning", "warning", "warning", "info"];
    let envs = ["production", "production", "production", "staging", "dev"];
    let clusters = ["eu-1", "eu-2", "us-1"];
    let make = |rng: &mut Rng, i: usize| -> (Labels, String) {
        let (service, ns) = *rng.pick(SERVICES);
        let alertname = *rng.pick(ALERTNAMES);
        let cluster = *rng.pick(&clusters);
        let l = labels(&[
            ("alertname", alertname),
            ("service", service),
            ("severity", *rng.pick(&severities)),
            ("env", *rng.pick(&envs)),
            ("cluster", cluster),
            ("namespace", ns),
            (
                "instance",
                &format!("10.{}.{}.{}:9090", rng.below(4), rng.below(250), i % 250),
            ),
            ("job", &format!("{service}-metrics")),
        ]);
        (l, format!("{alertname} on {service} in {cluster}"))
    };
    for i in 0..s.steady {
        let (l, summary) = make(&mut rng, i);
        let starts = s.start.plus(Duration::from_secs(rng.below(600)));
        alerts.push(SimAlert {
            labels: l,
            summary,
            starts: Ts(starts.0 - 3_600_000),
            ends: Ts::MAX,
            flap_period: 0,
        });
    }
    for i in 0..s.episodic {
        let (l, summary) = make(&mut rng, 10_000 + i);
        let starts = s
            .start
            .plus(Duration::from_secs(rng.below(s.duration.as_secs().max(1))));
        let ends = starts.plus(Duration::from_secs(120 + rng.below(1080)));
        alerts.push(SimAlert {
            labels: l,
            summary,
            starts,
            ends,
            flap_period: 0,
        });
    }
    let at_minute = |m: u64| {
        s.start
            .plus(Duration::from_secs(m * 60).min(s.duration / 3))
    };
    if s.node_storm_pods > 0 {
        let down = at_minute(20);
        let up = down.plus(Duration::from_secs(12 * 60));
        alerts.push(SimAlert {
            labels: labels(&[
                ("alertname", "NodeDown"),
                ("service", "kubernetes"),
                ("severity", "critical"),
                ("env", "production"),
                ("cluster", "eu-1"),
                ("node", "node-17"),
                ("instance", "node-17:9100"),
                ("job", "node-exporter"),
            ]),
            summary: "node-17 is not ready".into(),
            starts: down,
            ends: up,
            flap_period: 0,
        });
        for p in 0..s.node_storm_pods {
            let (service, ns) = SERVICES[p % SERVICES.len()];
            alerts.push(SimAlert {
                labels: labels(&[
                    (
                        "alertname",
                        if p % 3 == 0 {
                            "KubePodCrashLooping"
                        } else {
                            "KubePodNotReady"
                        },
                    ),
                    ("service", service),
                    ("severity", "warning"),
                    ("env", "production"),
                    ("cluster", "eu-1"),
                    ("node", "node-17"),
                    ("namespace", ns),
                    ("pod", &format!("{service}-{:05x}", p * 7919)),
                ]),
                summary: format!("pod of {service} on node-17 is not ready"),
                // Pods notice a little after the node, over a minute.
                starts: down.plus(Duration::from_secs(rng.below(90))),
                ends: up.plus(Duration::from_secs(rng.below(120))),
                flap_period: 0,
            });
        }
    }
    if s.region_storm > 0 {
        let from = at_minute(40);
        for r in 0..s.region_storm {
            alerts.push(SimAlert {
                labels: labels(&[
                    ("alertname", "TranscodeErrorRate"),
                    ("service", "transcoder"),
                    ("severity", "warning"),
                    ("env", "production"),
                    ("cluster", "us-1"),
                    ("region", &format!("pop-{r:02}")),
                    ("instance", &format!("transcoder-{r:02}:8080")),
                    ("job", "transcoder"),
                ]),
                summary: format!("transcode errors in pop-{r:02}"),
                starts: from.plus(Duration::from_secs(rng.below(60))),
                ends: from.plus(Duration::from_secs(8 * 60)),
                flap_period: 0,
            });
        }
    }
    for f in 0..s.flapping {
        alerts.push(SimAlert {
            labels: labels(&[
                ("alertname", "ProbeFailed"),
                ("service", "search-api"),
                ("severity", "critical"),
                ("env", "production"),
                ("cluster", "eu-2"),
                ("instance", &format!("probe-{f}.search:443")),
                ("job", "blackbox"),
                ("probe", "https"),
            ]),
            summary: "synthetic probe failing".into(),
            starts: s.start,
            ends: Ts::MAX,
            flap_period: 2 + f as u32,
        });
    }

    // Three Prometheus servers share the alerts; each evaluates every interval
    // and sends its firing alerts, and resolved ones for 15 minutes after.
    let mut events = Vec::new();
    let eval = s.evaluation_interval;
    let mut t = s.start;
    let mut round = 0u32;
    while t < end {
        for server in 0..3u64 {
            let sent_at = t.plus(Duration::from_millis(server * 350 + rng.below(200)));
            let mut batch: Vec<Value> = Vec::new();
            for (i, a) in alerts.iter().enumerate() {
                if i as u64 % 3 != server || a.starts > t {
                    continue;
                }
                let mut firing = t < a.ends;
                if let Some(phase) = round.checked_div(a.flap_period) {
                    firing = phase % 2 == 0;
                }
                if !firing && (a.flap_period == 0 && t.since(a.ends) > Duration::from_secs(15 * 60))
                {
                    continue;
                }
                let ends_at = if firing {
                    t.plus(eval * 4)
                } else {
                    a.ends.min(t)
                };
                let mut value = json!({
                    "annotations": {"summary": a.summary, "runbook_url": format!("https://runbooks.example/{}", a.labels[0].1)},
                    "endsAt": ends_at.to_string(),
                    "generatorURL": format!("http://prometheus-{server}:9090/graph?g0.expr=ALERTS"),
                    "labels": a.labels.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                    "startsAt": a.starts.max(Ts(s.start.0 - 3_600_000)).to_string(),
                });
                if rng.chance(s.bad_ratio * 0.6) {
                    corrupt(&mut rng, &mut value);
                }
                batch.push(value);
                if batch.len() == s.batch {
                    events.push(json_event(sent_at, &batch));
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                events.push(json_event(sent_at, &batch));
            }
            // Whole messages that are not alerts at all: about 40% of the bad input.
            let sent = alerts.len() as f64 / 3.0;
            if rng.chance(s.bad_ratio * 0.4 * sent) {
                let junk = match rng.below(3) {
                    0 => b"{\"labels\": {\"alertname\": \"Trunc".to_vec(),
                    1 => b"<html>502 Bad Gateway</html>".to_vec(),
                    _ => b"{\"hello\": \"world\"}".to_vec(),
                };
                let json =
                    junk.first() == Some(&b'{') && serde_json::from_slice::<Value>(&junk).is_ok();
                events.push(Event {
                    at: sent_at,
                    message: junk,
                    json,
                });
            }
        }
        t = t.plus(eval);
        round += 1;
    }
    events.sort_by_key(|e| e.at);
    events
}

fn json_event(at: Ts, batch: &[Value]) -> Event {
    Event {
        at,
        message: serde_json::to_vec(batch).expect("json"),
        json: true,
    }
}

/// Makes one alert invalid in one of the ways senders get it wrong.
fn corrupt(rng: &mut Rng, v: &mut Value) {
    match rng.below(4) {
        0 => v["labels"]["severity"] = json!(3),
        1 => v["startsAt"] = json!("yesterday at noon"),
        2 => v["labels"] = json!({}),
        _ => v["labels"]["alertname"] = Value::Null,
    }
}

/// `count` distinct firing alerts with 8 labels each, as single-alert messages:
/// the "mostly distinct" workload for benchmarks and memory measurements.
pub fn distinct_alerts(count: usize, at: Ts, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| distinct_alert(i, at, &mut rng))
        .collect()
}

/// The `i`th of [`distinct_alerts`], for callers that must not hold them all.
pub fn distinct_alert(i: usize, at: Ts, rng: &mut Rng) -> Vec<u8> {
    let (service, ns) = *rng.pick(SERVICES);
    let v = json!({
        "labels": {
            "alertname": rng.pick(ALERTNAMES),
            "service": service,
            "severity": "critical",
            "env": "production",
            "cluster": "eu-1",
            "namespace": ns,
            "instance": format!("10.{}.{}.{}:9090", i / 65536, (i / 256) % 256, i % 256),
            "pod": format!("{service}-{i:08x}"),
        },
        "annotations": {"summary": format!("{service} is unhappy")},
        "startsAt": at.to_string(),
        "endsAt": at.plus(Duration::from_secs(3600)).to_string(),
        "generatorURL": "http://prometheus:9090/graph",
    });
    serde_json::to_vec(&v).expect("json")
}

/// A large organisation's rule file, to add to the example rules: `squads`
/// squads (two services each, and a `team` matcher for what the services do
/// not name), ten impact rules per squad and one inhibit rule per squad.
/// Rules are scoped as a large organisation's are: to a squad's services,
/// team, namespaces or clusters, most also naming alert names the generated
/// traffic uses; the first squads' canary rules name the example services,
/// so the generated traffic meets some of them. `squadron generate rules`
/// writes it; the engine bench measures it.
pub fn large_rules(squads: usize) -> String {
    use std::fmt::Write;
    let mut y = String::from(
        "# Generated by `squadron generate rules`: a large organisation's rules (benchmarks).\nsquads:\n",
    );
    for i in 0..squads {
        let _ = writeln!(
            y,
            "  - name: squad-{i}\n    services: [svc-{i}-a, svc-{i}-b]\n    match: ['team=\"team-{i}\"']\n    topic: alerts.squad-{i}"
        );
    }
    y.push_str("impact_rules:\n");
    for i in 0..squads {
        let a = |k: usize| ALERTNAMES[(i + k) % ALERTNAMES.len()];
        let rules = [
            (
                "drop-canary",
                format!(
                    "'service=\"{}\"', 'instance=~\"canary-.*\"'",
                    SERVICES
                        .get(i)
                        .map_or(format!("svc-{i}-a"), |s| s.0.to_string())
                ),
                "drop",
            ),
            (
                "drop-batch-errors",
                format!(
                    "'alertname=\"{}\"', 'service=\"svc-{i}-b\"', 'job=\"batch\"'",
                    a(0)
                ),
                "drop",
            ),
            (
                "digest-warnings",
                format!(
                    "'alertname=~\"{}|{}\"', 'service=~\"svc-{i}-a|svc-{i}-b\"', 'severity=\"warning\"'",
                    a(1),
                    a(2)
                ),
                "digest",
            ),
            (
                "drop-info",
                format!("'team=\"team-{i}\"', 'severity=~\"info|none\"'"),
                "drop",
            ),
            (
                "keep-security",
                format!("'team=\"team-{i}\"', 'category=\"security\"'"),
                "keep",
            ),
            (
                "drop-load-test",
                format!("'namespace=\"loadtest-{i}\"'"),
                "drop",
            ),
            (
                "drop-known-flaky",
                format!(
                    "'alertname=\"{}\"', 'instance=\"10.9.{}.{}:9090\"'",
                    a(3),
                    i / 250,
                    i % 250
                ),
                "drop",
            ),
            (
                "digest-capacity",
                format!("'alertname=~\"DiskWillFillIn.*\"', 'cluster=\"edge-{i}\"'"),
                "digest",
            ),
            (
                "drop-sandbox",
                format!("'service=\"svc-{i}-b\"', 'env=\"sandbox\"'"),
                "drop",
            ),
            (
                "drop-deprecated",
                format!(
                    "'alertname=\"{}\"', 'service=\"svc-{i}-a\"', 'version=~\"v1|v2\"'",
                    a(4)
                ),
                "drop",
            ),
        ];
        for (name, matchers, action) in rules {
            let _ = writeln!(
                y,
                "  - name: squad-{i}-{name}\n    match: [{matchers}]\n    action: {action}"
            );
        }
    }
    y.push_str("inhibit_rules:\n");
    for i in 0..squads {
        let _ = writeln!(
            y,
            "  - name: squad-{i}-service-down\n    source_matchers: ['alertname=\"ServiceDown\"', 'service=\"svc-{i}-a\"']\n    target_matchers: ['service=~\"svc-{i}-a|svc-{i}-b\"']\n    equal: [cluster]"
        );
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let s = Scenario::storm(Ts(1_700_000_000_000));
        let a = generate(&s);
        let b = generate(&s);
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.message == y.message && x.at == y.at)
        );
        assert!(
            a.windows(2).all(|w| w[0].at <= w[1].at),
            "events are in time order"
        );
    }

    #[test]
    fn replay_lines_parse_back() {
        let s = Scenario::storm(Ts(1_700_000_000_000));
        for e in generate(&s).iter().take(200) {
            match crate::replay::parse_line(e.to_replay_line().as_bytes()) {
                crate::replay::Line::Message { at, payload } => {
                    assert_eq!(at, Some(e.at));
                    assert_eq!(&*payload, &e.message[..]);
                }
                crate::replay::Line::Bad(r) => panic!("{r}"),
            }
        }
    }
}
