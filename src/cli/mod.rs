//! The command line: argument definitions and one function per command.
//! Commands return an exit code; main.rs only parses, sets up logging and calls.

pub mod bench;
mod check;
mod controls;
pub mod demo;
mod generate;
mod loadgen;
pub mod record;
mod replay;
mod report;
pub mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub use check::check;
pub use generate::generate;
pub use replay::replay;

/// `squadron test`: runs rule test files, prints results and a diff per failure.
pub fn test(paths: &[PathBuf]) -> anyhow::Result<i32> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("{}: no test files (*.yaml) in directory", p.display());
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let (_, failed) = crate::ruletest::run_and_report(&files, &mut std::io::stdout().lock())?;
    Ok(if failed == 0 { 0 } else { 1 })
}

#[derive(Parser, Debug)]
#[command(
    name = "squadron",
    version,
    about = "Alert noise reduction: deduplicate, group, drop, silence, inhibit and route alerts to the squad that owns them."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SQUADRON_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate every rule file; report all errors with file, line and column.
    ///
    /// Exit status 0 when the rules are valid, 1 when not.
    Check {
        /// The rules directory.
        #[arg(default_value = "rules")]
        rules: PathBuf,
    },
    /// Run a recorded stream through the engine in virtual time and summarize.
    ///
    /// FILE is JSON Lines: {"received_at": "<RFC3339>", "message": {...}},
    /// {"received_at": "...", "raw": "<not JSON>"}, or a bare message (received
    /// at the previous line's time). `-` reads standard input.
    Replay(ReplayArgs),
    /// Run declarative rule tests (YAML): alerts in at virtual times, expected
    /// notifications and fates out. Directories are searched for *.yaml files.
    ///
    /// Exit status 0 when every test passes, 1 when any fails.
    Test {
        /// Test files or directories.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The whole pipeline with nothing installed: an in-process Kafka, a live
    /// alert storm, the rules in rules/, a live summary and /metrics.
    Demo(demo::DemoArgs),
    /// Run the Kafka pipeline: consume input topics, decide, produce to squad
    /// topics, the dead-letter topic and the audit topic. Stops gracefully on
    /// SIGTERM or SIGINT.
    Run(run::RunArgs),
    /// End-to-end load generator against a real broker: throughput (with a
    /// bare-consumer baseline in the same run) and latency with group_wait 0.
    Bench(bench::BenchArgs),
    /// Offer alerts to an Alertmanager-compatible `POST /api/v2/alerts`
    /// (squadron's ingest or Alertmanager itself) over keep-alive HTTP/1.1 or
    /// HTTP/2, and report accepted alerts/s and request latency.
    ///
    /// Exit status 0 when any alert was accepted, 1 when none was.
    Loadgen(loadgen::LoadgenArgs),
    /// Capture an input topic between two times or offsets into the replay format.
    Record(record::RecordArgs),
    /// Where the noise comes from, over a recording (`squadron record`,
    /// `squadron generate`): pages per squad and goalkeeper shift, the
    /// noisiest alerts and label sets, and suggested rules (digest, drop,
    /// inhibit), each measured by replaying the recording with it.
    Report(report::ReportArgs),
    /// Who is on first-line duty for each squad now (or at --at), and the
    /// coming shifts (--days): from the rule files, or from a running
    /// squadron with --url (which adds overrides made through its API).
    Goalkeeper(controls::GoalkeeperArgs),
    /// Acknowledge a group on a running squadron: its repeat notifications
    /// stop until the group changes (an alert joins, resolves or fires again).
    ///
    /// Credentials from SQUADRON_USER and SQUADRON_PASSWORD, or SQUADRON_TOKEN.
    Ack(controls::AckArgs),
    /// Print the bcrypt hash of a password read from standard input (one
    /// line), for `basic_auth_users` in the web config file.
    HashPassword {
        /// bcrypt cost: each step doubles the work of checking it (4..=31).
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// Write synthetic alert traffic in the replay format (deterministic).
    Generate {
        /// `hour` (~120,000 alerts: re-sends, a node-down storm, flapping, 0.5% bad input),
        /// `week` (~550,000 alerts over seven days, for `squadron report`),
        /// `storm` (15 minutes, the bundled sample), `live` (evaluations every 2 s,
        /// for sending in real time, as `demo` does), or `rules`: not traffic but a
        /// large organisation's rule file (1,000 squads, 10,000 impact rules, 1,000
        /// inhibit rules) to add to a copy of the example rules, for benchmarks.
        #[arg(default_value = "hour")]
        scenario: String,
        /// When the traffic starts (RFC 3339, or `now`).
        #[arg(long, default_value = "2026-11-26T09:00:00Z")]
        start: String,
        /// Share of alerts made invalid on purpose (default 0.005).
        #[arg(long)]
        bad_ratio: Option<f64>,
        /// Override the scenario's length (e.g. 3m).
        #[arg(long, value_parser = |s: &str| crate::model::parse_duration(s))]
        duration: Option<std::time::Duration>,
        #[arg(long)]
        seed: Option<u64>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The rules directory.
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// The recorded stream, or `-` for standard input.
    pub file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write every notification here as JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub notifications: Option<PathBuf>,
    /// Compare against these (old) rules: report fate changes, notifications
    /// gained and lost per squad, pages per goalkeeper. `--rules` are the new ones.
    #[arg(long, value_name = "OLD_RULES")]
    pub compare: Option<PathBuf>,
    /// Time of bare lines before the first envelope (RFC 3339). Default: the wall clock.
    #[arg(long)]
    pub start: Option<String>,
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Check { rules } => check(&rules),
        Command::Replay(args) => replay(&args),
        Command::Test { files } => test(&files),
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::demo(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Loadgen(args) => loadgen::loadgen(&args),
        Command::Record(args) => record::record(&args),
        Command::Report(args) => report::run(&args),
        Command::HashPassword { cost } => hash_password(cost),
        Command::Goalkeeper(args) => controls::goalkeeper(&args),
        Command::Ack(args) => controls::ack(&args),
        Command::Generate {
            scenario,
            start,
            seed,
            bad_ratio,
            duration,
            output,
        } => generate(
            &scenario,
            &start,
            seed,
            bad_ratio,
            duration,
            output.as_deref(),
        ),
    }
}

/// `squadron hash-password`: the password from the first line of standard
/// input (never an argument: it would show in `ps` and shell history).
fn hash_password(cost: u32) -> anyhow::Result<i32> {
    anyhow::ensure!((4..=31).contains(&cost), "--cost must be between 4 and 31");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    let hash = bcrypt::hash(password, cost).map_err(|e| anyhow::anyhow!("bcrypt: {e}"))?;
    println!("{hash}");
    Ok(0)
}

/// Parses an RFC 3339 argument into engine time.
pub(crate) fn parse_time_arg(s: &str) -> anyhow::Result<crate::model::Ts> {
    match crate::model::Ts::parse_rfc3339(s) {
        Ok(Some(t)) => Ok(t),
        _ => anyhow::bail!("{s:?} is not an RFC 3339 timestamp (e.g. 2026-11-26T09:00:00Z)"),
    }
}

/// The wall clock, read at the edge for defaults only.
pub(crate) fn wall_clock() -> crate::model::Ts {
    crate::model::Ts(jiff::Timestamp::now().as_millisecond())
}

/// A recording to read (`replay`, `replay --compare`, `report`), and its size
/// when known. A regular file is mapped into memory: lines are read where
/// they lie, with no copy from the kernel's page cache into a buffer (about
/// a tenth of replay's CPU, BENCHMARKS.md). A file that cannot be mapped
/// (empty, a pipe, a FIFO, a filesystem without mmap) is read through a buffer.
///
/// A mapped file that another process truncates while it is read ends the
/// process with SIGBUS: recordings are written once and then read, and
/// `squadron record` only appends, which a mapping does not notice.
#[allow(unsafe_code)] // audited: lib.rs
pub(crate) fn open_recording(
    path: &std::path::Path,
) -> std::io::Result<(Box<dyn std::io::BufRead>, Option<u64>)> {
    use std::io::BufReader;
    const BUFFER: usize = 1 << 20;
    if path.as_os_str() == "-" {
        return Ok((
            Box::new(BufReader::with_capacity(BUFFER, std::io::stdin())),
            None,
        ));
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > 0 {
        // SAFETY: the mapping is only read, and lives as long as the reader
        // that owns it; truncation by another process is the documented risk.
        // Not populated up front: a recording larger than memory would be read
        // twice (faulted in, evicted, faulted in again); the kernel's readahead
        // on sequential faults keeps up.
        let mapped = unsafe { memmap2::MmapOptions::new().map(&file) };
        if let Ok(m) = mapped {
            let _ = m.advise(memmap2::Advice::Sequential);
            return Ok((Box::new(std::io::Cursor::new(m)), Some(meta.len())));
        }
    }
    let size = meta.is_file().then_some(meta.len());
    Ok((Box::new(BufReader::with_capacity(BUFFER, file)), size))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    /// A mapped file, an empty file and a pipe read the same as a buffered reader would.
    #[test]
    fn a_recording_reads_the_same_mapped_or_buffered() {
        let dir = std::env::temp_dir().join(format!("squadron-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = b"{\"a\":1}\n{\"b\":2}\nno newline at the end".repeat(10_000);
        let file = dir.join("recording.jsonl");
        std::fs::write(&file, &text).unwrap();
        let empty = dir.join("empty.jsonl");
        std::fs::write(&empty, b"").unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        let read_all = |p: &std::path::Path| {
            let (mut r, size) = super::open_recording(p).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            (got, size)
        };
        assert_eq!(read_all(&file), (text.clone(), Some(text.len() as u64)));
        assert_eq!(read_all(&empty), (Vec::new(), Some(0)));
        if made.is_ok_and(|s| s.success()) {
            let writer = {
                let (fifo, text) = (fifo.clone(), text.clone());
                std::thread::spawn(move || std::fs::write(fifo, text).unwrap())
            };
            assert_eq!(
                read_all(&fifo),
                (text, None),
                "a pipe is read through a buffer"
            );
            writer.join().unwrap();
        }
        let missing = super::open_recording(&dir.join("missing")).err().unwrap();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
