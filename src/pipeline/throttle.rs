//! Log lines that repeat during an outage (every failed delivery, every
//! reconnect attempt) are throttled: the first of a kind is logged, then at
//! most one every `every`, saying how many were left out. A broker outage of
//! a minute once wrote thousands of identical lines a second; a process whose
//! stderr is not drained fast enough then blocked writing them.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    every: Duration,
    /// Per kind: when last logged, and lines left out since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new(Duration::from_secs(10))
    }
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line of `kind` may be logged now; if so, how many lines of
    /// that kind were left out before it.
    pub fn check(&self, kind: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("throttle lock");
        match seen.get_mut(kind) {
            Some((last, left_out)) if now.duration_since(*last) < self.every => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                // Bounded: kinds are error codes and librdkafka facilities.
                if seen.len() > 1024 {
                    seen.clear();
                }
                seen.insert(kind.to_owned(), (now, 0));
                Some(0)
            }
        }
    }

    /// `ClientContext::error`, throttled per error code.
    pub fn kafka_error(&self, error: &KafkaError, reason: &str) {
        let kind = format!("error/{:?}", error.rdkafka_error_code());
        if let Some(left_out) = self.check(&kind) {
            tracing::error!(%error, reason, left_out, "kafka client error");
        }
    }

    /// `ClientContext::log`, throttled per librdkafka facility and level.
    pub fn kafka_log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let Some(left_out) = self.check(&format!("log/{fac}/{level:?}")) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, left_out, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", fac, left_out, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, left_out, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", fac, left_out, "{message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_kind_passes_then_one_per_interval_with_the_count() {
        let t = Throttle::new(Duration::from_millis(50));
        assert_eq!(t.check("a"), Some(0));
        assert_eq!(t.check("a"), None);
        assert_eq!(t.check("a"), None);
        assert_eq!(t.check("b"), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.check("a"), Some(2));
        assert_eq!(t.check("a"), None);
    }
}

/// A client context that only throttles logs (for producers, admin clients
/// and probes with no other needs).
#[derive(Default)]
pub struct Throttled(pub Throttle);

impl rdkafka::ClientContext for Throttled {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.kafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.kafka_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Throttled {}
