//! squadron's own Prometheus metrics. One struct registers everything into a
//! registry passed in (no global registry); the hot path uses cached handles:
//! fates by kind are an array, suppressions by rule are cached by the rule
//! name's `Arc` pointer, so no label lookup happens per alert.

use crate::decode::{Format, InvalidKind};
use crate::engine::{Fate, FateKind, FateRecord, Notification};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::Arc;

pub struct Metrics {
    pub registry: Registry,
    received: IntCounterVec,
    received_by_format: [IntCounter; 6],
    fates: [IntCounter; FateKind::ALL.len()],
    suppressions: IntCounterVec,
    invalid: IntCounterVec,
    notifications: IntCounterVec,
    dead_letters: IntCounterVec,
    pub audit_records: IntCounter,
    pub produce_errors: IntCounterVec,
    pub active_alerts: IntGauge,
    pub active_groups: IntGauge,
    pub state_bytes: IntGauge,
    pub in_flight: IntGauge,
    /// Per decide partition (task): approximate heap bytes of its engine's state.
    pub task_state_bytes: IntGaugeVec,
    /// Partitions whose state is being restored from the changelog.
    pub restoring: IntGauge,
    pub restores: IntCounter,
    pub restore_records: IntCounter,
    pub restore_seconds: Histogram,
    pub changelog_records: IntCounter,
    pub source_records: IntCounter,
    /// Source alerts in this instance's inhibition sources table.
    pub inhibition_sources: IntGauge,
    /// Exactly-once transactions by result (commit, abort).
    pub transactions: IntCounterVec,
    /// Partition assignments and revocations.
    pub rebalances: IntCounterVec,
    /// The pipeline's Kafka clients rebuilt in-process after a fatal client error.
    pub pipeline_restarts: IntCounterVec,
    pub controls: IntGaugeVec,
    pub control_changes: IntCounterVec,
    /// Alerts handled by each stage of the topology: route, decide.
    pub stage_alerts: [IntCounter; 2],
    pub consumer_lag: IntGaugeVec,
    pub commits: IntCounter,
    /// How long a commit held the loop (state changes written, outputs made
    /// durable, offsets committed; exactly once: the transaction).
    pub commit_seconds: Histogram,
    /// Input broker timestamp to the message decided (fed to its engine).
    pub processing_latency: Histogram,
    /// A notification made (its group's flush) to it being durable in its topic.
    pub notification_latency: Histogram,
    pub rule_reloads: IntCounterVec,
    pub last_reload: IntGauge,
    pub rules_valid: IntGauge,
    /// 1 when /readyz would answer 200 (rules loaded, partitions assigned).
    pub ready: IntGauge,
    pub core_protected: IntCounter,
    /// Receiver deliveries by receiver and result (success, retry, failed).
    pub receiver_deliveries: IntCounterVec,
    /// One delivery attempt's duration, by receiver.
    pub receiver_seconds: prometheus::HistogramVec,
    /// Alertmanager-compatible ingest requests by HTTP status code.
    pub ingest_requests: IntCounterVec,
    /// Open HTTP connections.
    pub http_connections: IntGauge,
    pub http_requests_waiting: IntGauge,
    /// Failed accepts by reason (e.g. too many open files); the server backs off and goes on.
    pub http_accept_errors: IntCounterVec,
    /// Connections closed for taking too long (headers, body) or ending in a protocol error.
    pub http_connection_errors: IntCounterVec,
    /// Requests refused for their credentials: unauthenticated (401), forbidden (403).
    pub http_denied: IntCounterVec,
    /// Seconds the pipeline task spent deciding (not waiting): saturation when it nears wall time.
    pub busy: prometheus::Counter,
    /// Steps of a chunk of consumed messages done on two threads.
    pub parallel_chunks: IntCounter,
    /// Batches of alerts routed to their task, by path (`pipeline::route::Path`).
    pub routed_batches: [IntCounter; 3],
    /// Times the batches held in lanes reached `max_in_flight` and were sent
    /// through the topic before the next commit.
    pub lane_overflows: IntCounter,
    /// Firing notifications of groups, by squad and whether outside working hours.
    pages: IntCounterVec,
    /// The last completed shift's pages and incidents (groups paged), by squad.
    shift_pages: IntGaugeVec,
    shift_incidents: IntGaugeVec,
    shift_budget: IntGaugeVec,
    /// Completed shifts, by squad and whether they went over the page budget.
    shifts: IntCounterVec,
    /// How long a group fired, from its first alert's start to its resolve notification.
    group_firing: prometheus::HistogramVec,
}

/// Time firing per group: a minute to a week.
const FIRING_BUCKETS: [f64; 10] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0, 604800.0,
];

const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0,
];

/// The `kind` label values of `squadron_dead_letters_total`.
pub const DEAD_LETTER_KINDS: [&str; 3] = ["invalid_input", "receiver_failed", "produce_failed"];

/// Per-caller cache of labelled handles (not shared: the pipeline task owns one).
#[derive(Default)]
pub struct HandleCache {
    by_rule: HashMap<(FateKind, usize), IntCounter>,
    by_squad: HashMap<(Arc<str>, &'static str), IntCounter>,
}

impl Metrics {
    pub fn new(registry: Registry) -> prometheus::Result<Metrics> {
        let reg = registry.clone();
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let received = counter_vec(
            "squadron_alerts_received_total",
            "Input alerts received, by wire format.",
            &["format"],
        )?;
        let fates_vec = counter_vec(
            "squadron_alert_fates_total",
            "Input alerts by fate; every input alert gets exactly one.",
            &["fate"],
        )?;
        let invalid = counter_vec(
            "squadron_invalid_alerts_total",
            "Invalid input alerts and messages, by reason.",
            &["reason"],
        )?;
        for k in InvalidKind::ALL {
            invalid.with_label_values(&[k.as_str()]);
        }
        let m = Metrics {
            pages: counter_vec(
                "squadron_pages_total",
                "Firing notifications of groups (each one interrupts the goalkeeper), by squad and whether outside the goalkeeper's working_hours.",
                &["squad", "out_of_hours"],
            )?,
            shift_pages: gauge_vec(
                "squadron_shift_pages",
                "Pages in the squad's last completed goalkeeper shift.",
                &["squad"],
            )?,
            shift_incidents: gauge_vec(
                "squadron_shift_incidents",
                "Groups paged in the squad's last completed goalkeeper shift.",
                &["squad"],
            )?,
            shift_budget: gauge_vec(
                "squadron_shift_page_budget",
                "Groups a shift may page before it is over budget (goalkeeper.page_budget).",
                &["squad"],
            )?,
            shifts: counter_vec(
                "squadron_shifts_total",
                "Completed goalkeeper shifts (handover reports), by squad and whether they paged more groups than the budget.",
                &["squad", "over_budget"],
            )?,
            group_firing: {
                let h = prometheus::HistogramVec::new(
                    HistogramOpts::new(
                        "squadron_group_firing_seconds",
                        "How long a paged group fired: its earliest alert's start to its resolved notification, by squad.",
                    )
                    .buckets(FIRING_BUCKETS.to_vec()),
                    &["squad"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            busy: {
                let c = prometheus::Counter::new(
                    "squadron_pipeline_busy_seconds_total",
                    "Time the pipeline task spent handling messages and timers, not waiting.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            parallel_chunks: counter(
                "squadron_pipeline_parallel_chunks_total",
                "Steps of a chunk of consumed messages (routing its input, deciding its tasks' work) done on two threads at once.",
            )?,
            routed_batches: {
                let c = counter_vec(
                    "squadron_routed_batches_total",
                    "Batches of alerts (an input message's alerts for one task) by path: topic (through the repartition topic), direct (decided at once by a task of this instance), held (by a task of this instance until its lane opens; then decided, or sent through the topic at the next commit).",
                    &["path"],
                )?;
                crate::pipeline::RoutePath::ALL.map(|s| c.with_label_values(&[s]))
            },
            lane_overflows: counter(
                "squadron_pipeline_lane_overflows_total",
                "Times the batches held in lanes (waiting for their marker) reached pipeline.max_in_flight and went through the repartition topic at once instead of at the next commit.",
            )?,
            receiver_deliveries: counter_vec(
                "squadron_receiver_deliveries_total",
                "Deliveries to receivers (webhook, Slack, PagerDuty) by receiver and result: success, retry, failed (dead-lettered).",
                &["receiver", "result"],
            )?,
            receiver_seconds: {
                let h = prometheus::HistogramVec::new(
                    HistogramOpts::new(
                        "squadron_receiver_delivery_seconds",
                        "How long one delivery attempt to a receiver took (answered, failed or timed out), by receiver.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["receiver"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            ingest_requests: counter_vec(
                "squadron_ingest_requests_total",
                "POST /api/v2/alerts requests, by HTTP status code.",
                &["code"],
            )?,
            http_connections: gauge(
                "squadron_http_connections",
                "Open HTTP connections (at most http.max_connections; more wait to be accepted).",
            )?,
            http_requests_waiting: gauge(
                "squadron_http_requests_waiting",
                "Requests with a body waiting to be read: at most http.max_connections are read at once, whatever the protocol (an HTTP/2 connection carries several).",
            )?,
            http_accept_errors: counter_vec(
                "squadron_http_accept_errors_total",
                "Connections the HTTP server could not accept, by error kind; it backs off and keeps serving.",
                &["error"],
            )?,
            http_connection_errors: counter_vec(
                "squadron_http_connection_errors_total",
                "HTTP connections ended by the server, by reason: header_timeout (slow or idle client), body_timeout, tls_handshake, protocol.",
                &["reason"],
            )?,
            http_denied: counter_vec(
                "squadron_http_denied_total",
                "HTTP requests refused for their credentials, by reason: unauthenticated (401), forbidden (403).",
                &["reason"],
            )?,
            registry: reg,
            received_by_format: Format::ALL.map(|f| received.with_label_values(&[f.as_str()])),
            received,
            fates: FateKind::ALL.map(|k| fates_vec.with_label_values(&[k.as_str()])),
            suppressions: counter_vec(
                "squadron_alert_suppressions_total",
                "Alerts dropped, silenced, inhibited or shed, by fate and the rule, silence or limit responsible.",
                &["fate", "rule"],
            )?,
            invalid,
            notifications: counter_vec(
                "squadron_notifications_total",
                "Notifications the broker acknowledged (in a squad topic), by squad and reason.",
                &["squad", "reason"],
            )?,
            dead_letters: {
                let c = counter_vec(
                    "squadron_dead_letters_total",
                    "Records written to the dead-letter topic, by kind: invalid_input (a sender's bad message), receiver_failed (a receiver kept failing), produce_failed (the broker refused an output for good).",
                    &["kind"],
                )?;
                for k in DEAD_LETTER_KINDS {
                    c.with_label_values(&[k]);
                }
                c
            },
            audit_records: counter(
                "squadron_audit_records_total",
                "Fates written to the audit topic.",
            )?,
            produce_errors: counter_vec(
                "squadron_produce_errors_total",
                "Failed produce attempts (retried), by output.",
                &["output"],
            )?,
            active_alerts: gauge(
                "squadron_active_alerts",
                "Alerts the engine remembers (in a group).",
            )?,
            active_groups: gauge("squadron_active_groups", "Alert groups the engine holds.")?,
            state_bytes: gauge(
                "squadron_engine_state_bytes",
                "Approximate heap bytes of the engine's state.",
            )?,
            in_flight: gauge(
                "squadron_produce_in_flight",
                "Records produced and not yet acknowledged by the broker.",
            )?,
            task_state_bytes: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "squadron_task_state_bytes",
                        "Approximate heap bytes of one decide partition's engine state.",
                    ),
                    &["partition"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            restoring: gauge(
                "squadron_state_restoring_partitions",
                "Partitions whose state is being restored from the changelog (not ready meanwhile).",
            )?,
            restores: counter(
                "squadron_state_restores_total",
                "Partition states restored from the changelog.",
            )?,
            restore_records: counter(
                "squadron_state_restore_records_total",
                "Changelog records read while restoring state.",
            )?,
            restore_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "squadron_state_restore_seconds",
                        "How long restoring one partition's state from the changelog took.",
                    )
                    .buckets(vec![
                        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            changelog_records: counter(
                "squadron_changelog_records_total",
                "State changes written to the changelog topic (values and tombstones).",
            )?,
            source_records: counter(
                "squadron_inhibition_source_records_total",
                "This instance's tasks' inhibition source changes written to the sources topic (values and tombstones).",
            )?,
            inhibition_sources: gauge(
                "squadron_inhibition_sources",
                "Source alerts in this instance's inhibition sources table (every task's, read from the sources topic).",
            )?,
            transactions: counter_vec(
                "squadron_transactions_total",
                "Exactly-once transactions, by result: commit, abort.",
                &["result"],
            )?,
            stage_alerts: {
                let c = counter_vec(
                    "squadron_stage_alerts_total",
                    "Alerts handled by each stage of the topology: route (decoded, sent to their task), decide (fed to an engine).",
                    &["stage"],
                )?;
                ["route", "decide"].map(|s| c.with_label_values(&[s]))
            },
            rebalances: counter_vec(
                "squadron_rebalances_total",
                "Consumer group rebalances seen, by kind: assign, revoke.",
                &["kind"],
            )?,
            controls: gauge_vec(
                "squadron_controls",
                "Runtime controls in this instance's table (silences, acks, overrides), expired ones included until their retention ends.",
                &["kind"],
            )?,
            control_changes: counter_vec(
                "squadron_control_changes_total",
                "Silences, acknowledgements and duty overrides made, changed, expired or removed through this instance, by kind and action.",
                &["kind", "action"],
            )?,
            pipeline_restarts: counter_vec(
                "squadron_pipeline_restarts_total",
                "The pipeline's Kafka clients rebuilt in-process after a fatal client error, by the error (e.g. fenced_instance_id).",
                &["reason"],
            )?,
            consumer_lag: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "squadron_consumer_lag_messages",
                        "Messages between the committed position and the partition's end.",
                    ),
                    &["topic", "partition"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            commits: counter(
                "squadron_offset_commits_total",
                "Offset commits sent to the broker.",
            )?,
            commit_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "squadron_pipeline_commit_seconds",
                        "How long each commit held the pipeline's loop: state changes written, outputs made durable, offsets committed (exactly once: the whole transaction). Deferred commits count too.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            processing_latency: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "squadron_processing_latency_seconds",
                        "From an input message's broker timestamp to its alerts being decided (fed to their engine), per message.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            notification_latency: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "squadron_notification_latency_seconds",
                        "From a notification being made (its group's flush) to the commit that made it durable in its squad topic.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            rule_reloads: counter_vec(
                "squadron_rule_reloads_total",
                "Rule reloads, by result.",
                &["result"],
            )?,
            last_reload: gauge(
                "squadron_rules_last_reload_success_timestamp_seconds",
                "When rules were last loaded successfully.",
            )?,
            ready: gauge(
                "squadron_ready",
                "1 when rules are loaded and input partitions are assigned.",
            )?,
            rules_valid: gauge(
                "squadron_rules_valid",
                "1 when the last rule load succeeded, 0 when the old rules are still serving.",
            )?,
            core_protected: counter(
                "squadron_core_protected_total",
                "Drop rules that matched a core service's alert and were skipped.",
            )?,
        };
        for r in ["success", "failure"] {
            m.rule_reloads.with_label_values(&[r]);
        }
        for r in ["commit", "abort"] {
            m.transactions.with_label_values(&[r]);
        }
        for r in ["assign", "revoke"] {
            m.rebalances.with_label_values(&[r]);
        }
        let info = IntGaugeVec::new(
            Opts::new("squadron_build_info", "squadron's version."),
            &["version"],
        )?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(info))?;
        Ok(m)
    }

    pub fn received(&self, format: Option<Format>, alerts: u32) {
        match format {
            Some(f) => self.received_by_format
                [Format::ALL.iter().position(|x| *x == f).expect("listed")]
            .inc_by(alerts as u64),
            None => self
                .received
                .with_label_values(&["undecodable"])
                .inc_by(alerts as u64),
        }
    }

    /// Counts fates and notifications of one engine step.
    /// Counts fates as they are decided.
    pub fn record(&self, cache: &mut HandleCache, fates: &[FateRecord]) {
        for f in fates {
            let kind = f.fate.kind();
            self.fates[kind as usize].inc();
            match &f.fate {
                // Runtime silences are many over time (one id each): one series for all.
                Fate::Silenced { runtime: true, .. } => self
                    .suppressions
                    .with_label_values(&[kind.as_str(), "runtime"])
                    .inc(),
                Fate::Dropped { rule }
                | Fate::Inhibited { rule }
                | Fate::Digested { rule }
                | Fate::Silenced {
                    silence: rule,
                    runtime: false,
                } => {
                    let key = (kind, Arc::as_ptr(rule) as *const u8 as usize);
                    cache
                        .by_rule
                        .entry(key)
                        .or_insert_with(|| {
                            self.suppressions.with_label_values(&[kind.as_str(), rule])
                        })
                        .inc();
                }
                Fate::Invalid { reason } => self
                    .invalid
                    .with_label_values(&[reason.kind.as_str()])
                    .inc(),
                Fate::Shed { limit } => self
                    .suppressions
                    .with_label_values(&[kind.as_str(), limit.as_str()])
                    .inc(),
                _ => {}
            }
        }
    }

    /// Counts the pages of one shift note.
    pub fn pages(&self, squad: &str, noise: &crate::engine::Noise) {
        let in_hours = noise.pages - noise.pages_out_of_hours;
        if in_hours > 0 {
            self.pages
                .with_label_values(&[squad, "false"])
                .inc_by(in_hours);
        }
        if noise.pages_out_of_hours > 0 {
            self.pages
                .with_label_values(&[squad, "true"])
                .inc_by(noise.pages_out_of_hours);
        }
    }

    /// Records a completed shift.
    pub fn handover(&self, squad: &str, r: &crate::engine::HandoverReport) {
        self.shift_pages
            .with_label_values(&[squad])
            .set(r.noise.pages as i64);
        self.shift_incidents
            .with_label_values(&[squad])
            .set(r.incidents as i64);
        self.shift_budget
            .with_label_values(&[squad])
            .set(r.page_budget as i64);
        self.shifts
            .with_label_values(&[squad, if r.over_budget { "true" } else { "false" }])
            .inc();
    }

    /// Observes how long a group fired, at its resolved notification.
    pub fn group_resolved(&self, squad: &str, n: &Notification) {
        if let Some(start) = n.alerts.iter().map(|a| a.starts_at).min() {
            self.group_firing
                .with_label_values(&[squad])
                .observe(n.at.since(start).as_secs_f64());
        }
    }

    /// Counts a notification once the broker has acknowledged it.
    pub fn notified(&self, cache: &mut HandleCache, n: &Notification) {
        cache
            .by_squad
            .entry((n.squad.clone(), n.reason.as_str()))
            .or_insert_with(|| {
                self.notifications
                    .with_label_values(&[&n.squad, n.reason.as_str()])
            })
            .inc();
    }

    /// Input alerts received so far, over all formats.
    pub fn received_total(&self) -> u64 {
        self.received_by_format
            .iter()
            .map(IntCounter::get)
            .sum::<u64>()
            + self.received.with_label_values(&["undecodable"]).get()
    }

    /// Input alerts that reached an engine or were found invalid: everything
    /// read has been through both stages.
    pub fn through_total(&self) -> u64 {
        self.stage_alerts[1].get() + self.fates[FateKind::Invalid as usize].get()
    }

    /// Fates so far, by kind (for summaries; the registry has the same numbers).
    pub fn fate_counts(&self) -> Vec<(FateKind, u64)> {
        FateKind::ALL
            .iter()
            .map(|k| (*k, self.fates[*k as usize].get()))
            .collect()
    }

    /// Notifications so far, by squad.
    /// Counts one dead letter of `kind` (one of [`DEAD_LETTER_KINDS`]).
    pub fn dead_letter(&self, kind: &str) {
        debug_assert!(DEAD_LETTER_KINDS.contains(&kind));
        self.dead_letters.with_label_values(&[kind]).inc();
    }

    /// Dead letters of every kind so far.
    pub fn dead_letters_total(&self) -> u64 {
        DEAD_LETTER_KINDS
            .iter()
            .map(|k| self.dead_letters.with_label_values(&[k]).get())
            .sum()
    }

    pub fn notifications_by_squad(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for family in self.notifications.collect() {
            for m in family.get_metric() {
                let squad = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "squad")
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default();
                *out.entry(squad).or_default() += m.get_counter().get_value() as u64;
            }
        }
        out
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        buf
    }
}

impl HandleCache {
    /// Forgets handles keyed by rule pointers (after a reload the rule names are new `Arc`s).
    pub fn clear_rules(&mut self) {
        self.by_rule.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_bounded_labels() {
        let m = Metrics::new(Registry::new()).unwrap();
        let mut cache = HandleCache::default();
        let rule: Arc<str> = "drop-info".into();
        let fates = vec![
            FateRecord {
                input: 0,
                squad: 0,
                fingerprint: None,
                fate: Fate::Dropped { rule: rule.clone() },
            },
            FateRecord {
                input: 1,
                squad: 0,
                fingerprint: None,
                fate: Fate::Dropped { rule },
            },
            FateRecord {
                input: 2,
                squad: 0,
                fingerprint: None,
                fate: Fate::Deduplicated,
            },
        ];
        m.record(&mut cache, &fates);
        m.received(Some(Format::PrometheusBatch), 3);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(
                "squadron_alert_suppressions_total{fate=\"dropped\",rule=\"drop-info\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("squadron_alert_fates_total{fate=\"deduplicated\"} 1"));
        assert!(text.contains("squadron_alerts_received_total{format=\"prometheus_batch\"} 3"));
        assert!(text.contains("squadron_build_info{version="));
    }
}
