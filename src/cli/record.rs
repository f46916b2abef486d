//! `squadron record`: captures an input topic between two times or offsets
//! into the replay format, so a real hour or day can be replayed and compared.
//!
//! It reads with its own assignment (no consumer group, nothing committed),
//! stops at each partition's end as of the start (or at `--to`), and writes
//! lines in time order: `received_at` is the message's broker timestamp.

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    #[arg(
        long,
        env = "SQUADRON_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// The topic to capture.
    #[arg(long, default_value = "alerts.raw")]
    pub topic: String,
    /// Start at this time (RFC 3339); default: the beginning.
    #[arg(long, conflicts_with = "from_offset")]
    pub from: Option<String>,
    /// Stop after this time (RFC 3339); default: the end as of now.
    #[arg(long)]
    pub to: Option<String>,
    /// Start at this offset in every partition.
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Stop before this offset in every partition.
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// A librdkafka property, `key=value`; repeatable.
    #[arg(long = "kafka-property", value_parser = crate::pipeline::config::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

struct Captured {
    ts: i64,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

pub fn record(args: &RecordArgs) -> anyhow::Result<i32> {
    let from = args
        .from
        .as_deref()
        .map(super::parse_time_arg)
        .transpose()?;
    let to = args.to.as_deref().map(super::parse_time_arg).transpose()?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &args.bootstrap_servers)
        .set("group.id", "squadron-record")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in &args.kafka_properties {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(&args.topic), timeout)?;
    let topic = metadata
        .topics()
        .first()
        .context("no metadata for the topic")?;
    anyhow::ensure!(
        !topic.partitions().is_empty(),
        "topic {} does not exist or has no partitions",
        args.topic
    );

    // Where to start and stop in each partition.
    let mut starts = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in topic.partitions() {
        let (low, high) = consumer.fetch_watermarks(&args.topic, p.id(), timeout)?;
        let start = match (from, args.from_offset) {
            (Some(t), _) => {
                let mut q = TopicPartitionList::new();
                q.add_partition_offset(&args.topic, p.id(), Offset::Offset(t.millis()))?;
                let found = consumer.offsets_for_times(q, timeout)?;
                match found.elements().first().map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high,
                }
            }
            (None, Some(o)) => o.clamp(low, high),
            (None, None) => low,
        };
        let end = args.to_offset.map_or(high, |o| o.min(high));
        if start < end {
            starts.add_partition_offset(&args.topic, p.id(), Offset::Offset(start))?;
            ends.insert(p.id(), end);
        }
    }
    consumer.assign(&starts)?;
    let mut captured = Vec::new();
    let mut open: HashMap<i32, i64> = ends.clone();
    let mut idle = 0;
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                let (p, o) = (m.partition(), m.offset());
                let Some(end) = open.get(&p).copied() else {
                    continue;
                };
                let ts = m.timestamp().to_millis().unwrap_or(0);
                let past_to = to.is_some_and(|t| ts > t.millis());
                if o < end && !past_to {
                    captured.push(Captured {
                        ts,
                        partition: p,
                        offset: o,
                        payload: m.payload().unwrap_or_default().to_vec(),
                    });
                }
                if o + 1 >= end || past_to {
                    open.remove(&p);
                }
            }
            Some(Err(e)) => anyhow::bail!("reading {}: {e}", args.topic),
            None => {
                idle += 1;
                anyhow::ensure!(
                    idle < 60,
                    "no message for 30 s with partitions still open: {open:?}"
                );
            }
        }
    }
    captured.sort_by_key(|c| (c.ts, c.partition, c.offset));
    let out: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::new(out);
    // A producer can give a message any timestamp; one outside what RFC 3339
    // can write (years 0001-9999) is recorded at the time of the message
    // before it, and counted, rather than clamped silently.
    let (mut prev, mut out_of_range) = (None, 0u64);
    for c in &captured {
        let at = match crate::model::Ts::from_millis_checked(c.ts) {
            Some(t) => t,
            None => {
                out_of_range += 1;
                prev.or_else(|| {
                    captured
                        .iter()
                        .find_map(|c| crate::model::Ts::from_millis_checked(c.ts))
                })
                .unwrap_or(crate::model::Ts(0))
            }
        };
        prev = Some(at);
        writeln!(w, "{}", crate::replay::envelope(at, &c.payload))?;
    }
    if out_of_range > 0 {
        eprintln!(
            "warning: {out_of_range} messages had a timestamp outside years 0001-9999; each was recorded at the time of the message before it"
        );
    }
    w.flush()?;
    eprintln!(
        "recorded {} messages from {} partitions of {}",
        captured.len(),
        ends.len(),
        args.topic
    );
    Ok(0)
}
