//! The topology, named (as Kafka Streams' `Topology::describe`):
//!
//! ```text
//! source  input topics (any key, any partition)
//!   └─ route      decode; invalid → dead-letter topic; squad + group key
//!        └─ sink  repartition topic, partition = hash(group key) mod N
//! source  repartition topic partition p
//!   └─ decide     task p: one engine, state store p
//!        ├─ store  changelog topic partition p (compacted)
//!        ├─ table  sources topic partition p (compacted): task p's inhibition sources
//!        └─ sinks  squad topics, audit topic, receivers (after commit)
//! global  sources topic, every partition → the instance's sources table,
//!         which every task consults
//! ```
//!
//! This file holds the names, the partitioner, the encoding of an input's
//! origin into the engine's input id, and the creation of internal topics.
//! It must not decide anything about alerts.

use super::Config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// Header on repartition records: what the decide stage does with them.
pub const ROLE: &str = "squadron.role";
/// Alerts whose fate the receiving task decides.
pub const ROLE_ALERTS: &[u8] = b"alerts";
/// Inhibition sources broadcast by versions before the sources topic:
/// ignored (the owning task publishes them to the sources table now).
pub const ROLE_SOURCES: &[u8] = b"sources";
/// Shift notes (`engine::ShiftNote`) for the task that keeps the squads' books.
pub const ROLE_SHIFT: &[u8] = b"shift";
/// A notification (`engine::DeliveryPart`) for the task that keeps its squad's
/// storm window.
pub const ROLE_DELIVERY: &[u8] = b"delivery";
/// A marker an instance writes to a task's partition of its own: once read
/// back, everything before it has been decided and the instance decides what
/// it routes to that task directly ([`super::lane`]). Its payload is an empty
/// array, so a version that does not know the role feeds it no alert.
pub const ROLE_MARKER: &[u8] = b"marker";
/// Header on a marker: its writer's run token and number.
pub const MARKER: &str = "squadron.marker";
pub const SOURCE_TOPIC: &str = "squadron.source.topic";
pub const SOURCE_PARTITION: &str = "squadron.source.partition";
pub const SOURCE_OFFSET: &str = "squadron.source.offset";
/// The input message's broker timestamp (ms), on repartition records.
pub const SOURCE_TIMESTAMP: &str = "squadron.source.timestamp";

const OFFSET_BITS: u32 = 42;
const PARTITION_BITS: u32 = 14;

#[derive(Debug, Clone)]
pub struct Topology {
    pub inputs: Vec<Arc<str>>,
    pub repartition: String,
    pub changelog: String,
    /// Every task's inhibition sources (compacted, read whole by every instance).
    pub sources: String,
    /// Partitions of the repartition, changelog and sources topics (equal).
    pub partitions: i32,
}

impl Topology {
    /// Which task decides a group, from its [`crate::rules::RuleSet::group_hash`].
    pub fn partition_for(&self, group_hash: u64) -> i32 {
        (group_hash % self.partitions as u64) as i32
    }

    /// The task that keeps a squad's shift book and storm window. Stable
    /// across processes and versions, like the group partitioning.
    pub fn partition_for_squad(&self, squad: &str) -> i32 {
        self.partition_for(xxhash_rust::xxh3::xxh3_64_with_seed(
            squad.as_bytes(),
            0x0053_6869_6674, // "Shift"
        ))
    }

    /// The engine's input id for a message of an input topic: (topic index,
    /// partition, offset) packed into 8 + 14 + 42 bits. Deterministic, so an id
    /// restored from the changelog still names its origin (for the audit trail).
    pub fn input_id(&self, topic: &str, partition: i32, offset: i64) -> Option<u64> {
        let t = self.inputs.iter().position(|t| &**t == topic)? as u64;
        if !(0..1 << PARTITION_BITS).contains(&partition)
            || !(0..1i64 << OFFSET_BITS).contains(&offset)
        {
            return None;
        }
        Some(
            t << (PARTITION_BITS + OFFSET_BITS) | (partition as u64) << OFFSET_BITS | offset as u64,
        )
    }

    /// The input topic, partition and offset an input id names.
    pub fn origin(&self, input: u64) -> Option<(&str, i32, i64)> {
        let t = (input >> (PARTITION_BITS + OFFSET_BITS)) as usize;
        let partition = ((input >> OFFSET_BITS) & ((1 << PARTITION_BITS) - 1)) as i32;
        let offset = (input & ((1 << OFFSET_BITS) - 1)) as i64;
        Some((self.inputs.get(t)?, partition, offset))
    }

    pub fn is_repartition(&self, topic: &str) -> bool {
        topic == self.repartition
    }
}

/// Reads topic metadata for [`ensure`] and [`ensure_controls`]. Its calls
/// block (librdkafka's metadata requests, up to 10 s each while the broker is
/// away): they run through [`super::off_runtime`].
struct Probe {
    bootstrap: String,
    consumer: BaseConsumer<super::throttle::Throttled>,
}

impl Probe {
    fn new(cfg: &Config) -> anyhow::Result<Probe> {
        // Throttled contexts log the clients' own errors (an authentication
        // failure, a refused TLS handshake), which the errors below cannot name.
        Ok(Probe {
            bootstrap: cfg.kafka.bootstrap_servers.clone(),
            consumer: super::client_config(cfg, &cfg.kafka.consumer_properties)
                .create_with_context(super::throttle::Throttled::default())?,
        })
    }

    /// A topic's partition count, `None` when it does not exist.
    fn partitions(&self, topic: &str) -> anyhow::Result<Option<i32>> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| {
                // The client's own errors and logs wait in its queue: serve
                // them, so the log says why (authentication, TLS, refused).
                for _ in 0..5 {
                    let _ = self.consumer.poll(Duration::from_millis(100));
                }
                anyhow::anyhow!(
                    "cannot read metadata from {}: {e} (see the client errors above; check kafka.bootstrap_servers and the security properties)",
                    self.bootstrap
                )
            })?;
        Ok(md
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    }

    /// The partition count of a topic just created (metadata can lag a creation).
    fn count(&self, topic: &str) -> anyhow::Result<i32> {
        for _ in 0..50 {
            if let Some(n) = self.partitions(topic)? {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("internal topic {topic} has no partitions")
    }
}

/// Creates the topics that are missing (one that appeared meanwhile is fine).
async fn create_topics(cfg: &Config, missing: &[NewTopic<'_>]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<super::throttle::Throttled> =
        super::client_config(cfg, &cfg.kafka.producer_properties)
            .create_with_context(super::throttle::Throttled::default())?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics(missing, &opts).await? {
        match r {
            Ok(topic) => tracing::info!(topic, "created internal topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating internal topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// A compacted internal topic: compaction only cleans closed segments, so
/// they roll often enough that the topic stays near the size of its live keys.
fn compacted<'a>(name: &'a str, partitions: i32, rf: TopicReplication<'a>) -> NewTopic<'a> {
    NewTopic::new(name, partitions, rf)
        .set("cleanup.policy", "compact")
        .set("segment.ms", "600000")
        .set("min.cleanable.dirty.ratio", "0.1")
}

/// Creates the repartition, changelog and sources topics when missing, and
/// returns the topology with their partition count. Existing topics keep
/// theirs: changing it would move groups between tasks, away from their state.
pub async fn ensure(cfg: &Config) -> anyhow::Result<Topology> {
    let (repartition, changelog) = (cfg.repartition_topic(), cfg.changelog_topic());
    let sources = cfg.sources_topic();
    let names = [repartition.clone(), changelog.clone(), sources.clone()];
    let asked = names.clone();
    let (probe, present) = super::off_runtime(Probe::new(cfg)?, move |p| {
        asked
            .iter()
            .map(|t| Ok(p.partitions(t)?.is_some()))
            .collect::<anyhow::Result<Vec<bool>>>()
    })
    .await?;
    let n = cfg.pipeline.partitions;
    let rf = || TopicReplication::Fixed(cfg.kafka.internal_replication_factor);
    let mut missing = Vec::new();
    if !present[0] {
        missing.push(NewTopic::new(&repartition, n, rf()).set("cleanup.policy", "delete"));
    }
    if !present[1] {
        missing.push(compacted(&changelog, n, rf()));
    }
    if !present[2] {
        missing.push(compacted(&sources, n, rf()));
    }
    create_topics(cfg, &missing).await?;
    let (_, counts) = super::off_runtime(probe, move |p| {
        names
            .iter()
            .map(|t| p.count(t))
            .collect::<anyhow::Result<Vec<i32>>>()
    })
    .await?;
    let pr = counts[0];
    for ((topic, holds), pc) in [(&changelog, "state"), (&sources, "inhibition sources")]
        .into_iter()
        .zip(&counts[1..])
    {
        anyhow::ensure!(
            pr == *pc,
            "{repartition} has {pr} partitions but {topic} has {pc}: they must be equal \
             (a task's {holds} live in the {topic} partition of the same number)"
        );
    }
    Ok(Topology {
        inputs: cfg
            .kafka
            .input_topics
            .iter()
            .map(|t| t.as_str().into())
            .collect(),
        repartition,
        changelog,
        sources,
        partitions: pr,
    })
}

/// Creates the controls topic (one partition, compacted) when missing and
/// returns its name.
pub async fn ensure_controls(cfg: &Config) -> anyhow::Result<String> {
    let topic = cfg.controls_topic();
    let name = topic.clone();
    let (probe, present) = super::off_runtime(Probe::new(cfg)?, move |p| {
        Ok(p.partitions(&name)?.is_some())
    })
    .await?;
    if !present {
        let rf = TopicReplication::Fixed(cfg.kafka.internal_replication_factor);
        create_topics(cfg, &[compacted(&topic, 1, rf)]).await?;
    }
    let name = topic.clone();
    super::off_runtime(probe, move |p| p.count(&name)).await?;
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_ids_name_their_origin() {
        let t = Topology {
            inputs: vec!["a".into(), "b".into()],
            repartition: "r".into(),
            changelog: "c".into(),
            sources: "s".into(),
            partitions: 12,
        };
        let id = t.input_id("b", 16383, (1 << 42) - 1).unwrap();
        assert_eq!(t.origin(id), Some(("b", 16383, (1 << 42) - 1)));
        assert_eq!(t.origin(t.input_id("a", 0, 0).unwrap()), Some(("a", 0, 0)));
        assert_eq!(t.input_id("nope", 0, 0), None);
        assert_eq!(t.input_id("a", 16384, 0), None);
        assert_eq!(t.partition_for(12 * 1000 + 5), 5);
    }
}
