//! What exactly-once mode needs from the broker, checked against the real one
//! before anything else runs (scripts/test.sh runs this file first). librdkafka's
//! mock cluster fails all three: it is used only for client-side tests.
//!
//! Needs `SQUADRON_TEST_KAFKA=host:port` (scripts/test.sh sets it).

mod common;

use common::{broker, create, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

type BaseProducer = ThreadedProducer<DefaultProducerContext>;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

fn transactional(broker: &str, id: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("transactional.id", id)
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

fn send(p: &BaseProducer, topic: &str, payload: &str) {
    p.send(BaseRecord::<(), str>::to(topic).payload(payload))
        .unwrap();
}

/// Payloads of a topic's partition 0 under an isolation level.
fn read(broker: &str, topic: &str, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", unique("conformance-reader"))
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned()),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            _ => {}
        }
    }
    panic!("no end of partition within 20s ({isolation})");
}

#[test]
fn read_committed_hides_aborted_records() {
    let Some(broker) = broker() else { return };
    let topic = unique("conformance-abort");
    create(&broker, &[(topic.as_str(), 1)]);
    let p = transactional(&broker, &unique("txn"));
    p.begin_transaction().unwrap();
    for i in 0..3 {
        send(&p, &topic, &format!("aborted-{i}"));
    }
    p.flush(Duration::from_secs(10)).unwrap();
    p.abort_transaction(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    for i in 0..2 {
        send(&p, &topic, &format!("committed-{i}"));
    }
    p.commit_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(
        read(&broker, &topic, "read_committed"),
        vec!["committed-0", "committed-1"]
    );
    assert_eq!(
        read(&broker, &topic, "read_uncommitted").len(),
        5,
        "the aborted records were written, and hidden"
    );
}

#[test]
fn offsets_sent_in_a_transaction_are_committed_with_it() {
    let Some(broker) = broker() else { return };
    let topic = unique("conformance-offsets");
    create(&broker, &[(topic.as_str(), 1)]);
    let group = unique("conformance-group");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("group.id", &group)
        .create()
        .unwrap();
    let p = transactional(&broker, &unique("txn"));
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(42))
        .unwrap();
    let committed = |c: &BaseConsumer| -> Offset {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        c.committed_offsets(tpl, Duration::from_secs(10))
            .unwrap()
            .find_partition(&topic, 0)
            .unwrap()
            .offset()
    };
    // Aborted: the offsets are not stored.
    p.begin_transaction().unwrap();
    send(&p, &topic, "x");
    p.send_offsets_to_transaction(
        &offsets,
        &consumer.group_metadata().unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    p.abort_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(committed(&consumer), Offset::Invalid);
    // Committed: they are.
    p.begin_transaction().unwrap();
    send(&p, &topic, "y");
    p.send_offsets_to_transaction(
        &offsets,
        &consumer.group_metadata().unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    p.commit_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(committed(&consumer), Offset::Offset(42));
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let Some(broker) = broker() else { return };
    let topic = unique("conformance-fence");
    create(&broker, &[(topic.as_str(), 1)]);
    let id = unique("txn");
    let zombie = transactional(&broker, &id);
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, "zombie-open");
    zombie.flush(Duration::from_secs(10)).unwrap();
    // The replacement's init aborts the zombie's open transaction and fences it.
    let fresh = transactional(&broker, &id);
    let err = zombie
        .commit_transaction(Duration::from_secs(10))
        .expect_err("a fenced producer cannot commit");
    match &err {
        KafkaError::Transaction(e) => assert!(e.is_fatal(), "fencing is fatal: {err}"),
        other => panic!("unexpected error: {other}"),
    }
    fresh.begin_transaction().unwrap();
    send(&fresh, &topic, "fresh");
    fresh.commit_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(read(&broker, &topic, "read_committed"), vec!["fresh"]);
}
