//! Producers served by a thread of our own, woken by librdkafka.
//!
//! rdkafka's `ThreadedProducer` (and `FutureProducer`, built on it) polls in
//! 100 ms windows, and each window ends in a busy loop: its deadline is
//! rounded down to whole milliseconds for librdkafka, which returns a little
//! early, so the last sub-millisecond is spent reading the clock. Measured on
//! an idle `squadron run` with perf: 55% of samples in `clock_gettime` under
//! `Deadline::remaining`, 0.46 CPU-s per idle minute per producer, 1.39 of the
//! process's 1.53. [`Polled`] does not poll on a clock: librdkafka writes a
//! byte to a socket when an event reaches the producer's queue after the last
//! poll (`rd_kafka_queue_io_event_enable`), the thread sleeps in a read of
//! that socket, and on waking serves every queued event without waiting
//! (delivery reports, logs, errors). An idle producer's thread wakes once per
//! [`IDLE_WAKEUP`], as a safety net, and never spins.

use rdkafka::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the thread sleeps without an event before it polls anyway.
pub const IDLE_WAKEUP: Duration = Duration::from_secs(10);

/// Events served before the thread looks at its socket again.
const MAX_EVENTS_PER_WAKEUP: usize = 10_000;

/// The one place this module calls librdkafka directly (audited: `lib.rs`).
#[allow(unsafe_code)]
mod wakeup {
    use rdkafka::bindings as rdsys;
    use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A producer's event queue (librdkafka's main queue), which writes a byte
    /// to a socket when an event arrives after the last poll.
    pub(super) struct Queue(*mut rdsys::rd_kafka_queue_t);

    // SAFETY: librdkafka's queue handles may be used from any thread.
    unsafe impl Send for Queue {}
    unsafe impl Sync for Queue {}

    impl Queue {
        /// `wake` must outlive the returned queue.
        pub(super) fn of<C: ProducerContext>(
            producer: &BaseProducer<C>,
            wake: &UnixStream,
        ) -> Queue {
            // SAFETY: the client is valid while `producer` is; the handle is
            // released in `drop`, which also stops the writes to `wake`.
            unsafe {
                let q = rdsys::rd_kafka_queue_get_main(producer.client().native_ptr());
                rdsys::rd_kafka_queue_io_event_enable(q, wake.as_raw_fd(), b"!".as_ptr().cast(), 1);
                Queue(q)
            }
        }

        pub(super) fn len(&self) -> usize {
            // SAFETY: the handle is valid until `drop`.
            unsafe { rdsys::rd_kafka_queue_length(self.0) }
        }
    }

    /// Waits until no record of `producer` awaits its delivery report
    /// (served by the thread: the producer reports through events), at
    /// most `timeout`. Whether it got there.
    pub(super) fn flush<C: ProducerContext>(
        producer: &BaseProducer<C>,
        timeout: std::time::Duration,
    ) -> bool {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the client is valid while `producer` is.
        let err = unsafe { rdsys::rd_kafka_flush(producer.client().native_ptr(), ms) };
        err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    }

    impl Drop for Queue {
        fn drop(&mut self) {
            // SAFETY: the handle is valid; after this librdkafka no longer
            // writes to the socket.
            unsafe {
                rdsys::rd_kafka_queue_io_event_enable(self.0, -1, std::ptr::null(), 0);
                rdsys::rd_kafka_queue_destroy(self.0);
            }
        }
    }
}
use wakeup::{Queue, flush};

/// A `BaseProducer` whose events (delivery reports, logs, errors) are served
/// by a thread until the producer is dropped.
pub struct Polled<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
    /// The end librdkafka writes to; dropping the producer writes to it too.
    wake: UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Dropped after the thread: disables the wakeups, then the sockets close.
    queue: Option<Arc<Queue>>,
}

impl<C: ProducerContext + 'static> Polled<C> {
    pub fn new(config: &rdkafka::ClientConfig, context: C) -> Result<Polled<C>, KafkaError> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let error = |e: std::io::Error| KafkaError::ClientCreation(format!("polling thread: {e}"));
        let (wake, mut woken) = UnixStream::pair().map_err(error)?;
        // librdkafka must never block on a full socket: a wakeup already
        // pending is as good as another.
        wake.set_nonblocking(true).map_err(error)?;
        woken.set_read_timeout(Some(IDLE_WAKEUP)).map_err(error)?;
        // Released (`Polled::drop`) before `wake` closes.
        let queue = Arc::new(Queue::of(&producer, &wake));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (producer, stop, queue) = (producer.clone(), stop.clone(), queue.clone());
            std::thread::Builder::new()
                .name("squadron-produce".into())
                .spawn(move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        // Serves what is queued. Each poll re-arms the wakeup, so
                        // an event queued after the last poll writes to the
                        // socket again (librdkafka: one write per period
                        // between polls); the bound only stops a queue that
                        // keeps refilling from holding the thread here.
                        for _ in 0..MAX_EVENTS_PER_WAKEUP {
                            producer.poll(Duration::ZERO);
                            if queue.len() == 0 {
                                break;
                            }
                        }
                        // Woken by an event, by `drop`, or after IDLE_WAKEUP.
                        let _ = woken.read(&mut buf);
                    }
                })
                .map_err(error)?
        };
        Ok(Polled {
            producer,
            stop,
            wake,
            thread: Some(thread),
            queue: Some(queue),
        })
    }

    /// Waits until every record sent so far is acknowledged or failed and its
    /// delivery report handled, at most `timeout`; whether it got there.
    /// `BaseProducer::flush` instead polls in 100 ms windows and returns no
    /// sooner than the end of the first (spinning on the clock through its
    /// last millisecond), which held every at-least-once commit for 100 ms.
    pub fn flush(&self, timeout: Duration) -> bool {
        flush(&self.producer, timeout)
    }
}

impl<C: ProducerContext + 'static> std::ops::Deref for Polled<C> {
    type Target = BaseProducer<C>;
    fn deref(&self) -> &BaseProducer<C> {
        &self.producer
    }
}

impl<C: ProducerContext + 'static> Drop for Polled<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&self.wake).write(b"!");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.queue.take();
    }
}

/// Where a record landed: partition and offset.
pub type Delivered = Result<(i32, i64), KafkaError>;

/// The context of [`AsyncProducer`]: each record carries the sender its
/// delivery report goes to; logs and errors are throttled.
#[derive(Default)]
pub struct Acks(super::throttle::Throttle);

impl ClientContext for Acks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.kafka_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.kafka_error(&error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<tokio::sync::oneshot::Sender<Delivered>>;
    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        use rdkafka::Message;
        let _ = tx.send(match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

/// A producer whose sends are awaited until the broker acknowledges them
/// (what `FutureProducer` does, on [`Polled`]). Cloning shares it.
#[derive(Clone)]
pub struct AsyncProducer(Arc<Polled<Acks>>);

impl AsyncProducer {
    pub fn new(config: &rdkafka::ClientConfig) -> Result<AsyncProducer, KafkaError> {
        Ok(AsyncProducer(Arc::new(Polled::new(
            config,
            Acks::default(),
        )?)))
    }

    /// Sends a record and waits for the broker's answer. While librdkafka's
    /// queue is full it retries for up to `queue_timeout`.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        queue_timeout: Duration,
    ) -> Delivered {
        self.send_record(topic, key, Some(payload), headers, queue_timeout)
            .await
    }

    /// Sends a tombstone (a record without a value) for `key` of a compacted topic.
    pub async fn send_tombstone(
        &self,
        topic: &str,
        key: &[u8],
        queue_timeout: Duration,
    ) -> Delivered {
        self.send_record(topic, Some(key), None, None, queue_timeout)
            .await
    }

    async fn send_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        queue_timeout: Duration,
    ) -> Delivered {
        let deadline = tokio::time::Instant::now() + queue_timeout;
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut record: BaseRecord<'_, [u8], [u8], _> =
                BaseRecord::with_opaque_to(topic, Box::new(tx));
            if let Some(p) = payload {
                record = record.payload(p);
            }
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            match self.0.send(record) {
                Ok(()) => {
                    // A dropped sender: the producer went away before answering.
                    return rx.await.unwrap_or(Err(KafkaError::Canceled));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer of a broker that is not there, whose records fail after 300 ms.
    fn unreachable() -> AsyncProducer {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "300")
            .set("log_level", "0");
        AsyncProducer::new(&c).unwrap()
    }

    /// Without a broker, a record times out in librdkafka and the error comes
    /// back through the awaited send; dropping the producer stops its thread
    /// (the test would hang otherwise).
    #[tokio::test]
    async fn an_unreachable_broker_answers_the_send_with_an_error() {
        let p = unreachable();
        let r = p.send("t", None, b"x", None, Duration::from_secs(1)).await;
        assert!(
            matches!(
                r,
                Err(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut
                ))
            ),
            "{r:?}"
        );
        drop(p);
    }

    /// A flush waits for the delivery report to be handled by the thread:
    /// not before the record failed, and then without any other poll.
    #[tokio::test]
    async fn a_flush_ends_when_the_thread_has_handled_every_report() {
        let p = unreachable();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        p.0.send(BaseRecord::<[u8], [u8], _>::with_opaque_to("t", Box::new(tx)).payload(&b"x"[..]))
            .map_err(|(e, _)| e)
            .unwrap();
        assert!(
            !p.0.flush(Duration::from_millis(10)),
            "the record is still waiting for the broker"
        );
        assert!(p.0.flush(Duration::from_secs(30)), "its report is handled");
        assert!(
            rx.try_recv().is_ok_and(|r| r.is_err()),
            "the report reached the sender before the flush ended"
        );
    }
}
