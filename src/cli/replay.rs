//! `squadron replay`: a recorded stream through the engine, summarized.

use super::ReplayArgs;
use crate::engine::{Engine, FateKind};
use crate::ingest::Ledger;
use crate::replay::{ReplayReport, replay as run_replay};
use crate::rules::load_dir;
use anyhow::Context;
use std::fs::File;
use std::io::{BufRead, BufWriter, IsTerminal, Read, Write};
use std::sync::Arc;

pub fn replay(args: &ReplayArgs) -> anyhow::Result<i32> {
    let rules = load(&args.rules)?;
    let start = match &args.start {
        Some(s) => Some(super::parse_time_arg(s)?),
        None => None,
    };
    let (input, size) = super::open_recording(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    // A progress line on a terminal; nothing when stderr is a pipe or a file.
    let input: Box<dyn BufRead> = if std::io::stderr().is_terminal() {
        Box::new(Progress::new(input, size))
    } else {
        input
    };
    if let Some(old) = &args.compare {
        let (report, _) = crate::compare::compare(load(old)?, rules, input, || {
            start.unwrap_or_else(super::wall_clock)
        })?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.render());
        }
        return Ok(0);
    }
    let mut notif_out = match &args.notifications {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut engine = Engine::new(rules);
    engine.set_shift_mode(crate::engine::ShiftMode::Local);
    let report = run_replay(
        &mut engine,
        input,
        || start.unwrap_or_else(super::wall_clock),
        |_, out| {
            if let Some(w) = notif_out.as_mut() {
                for n in &out.notifications {
                    serde_json::to_writer(&mut *w, n)?;
                    w.write_all(b"\n")?;
                }
            }
            Ok(())
        },
    )?;
    // The process ends after this command: freeing the engine's state entry
    // by entry would only cost time (the OS takes it back at once).
    std::mem::forget(engine);
    if let Some(mut w) = notif_out {
        w.flush()?;
    }
    for (line, reason) in report.bad_lines.iter().take(10) {
        eprintln!("warning: line {line}: {reason} (counted as invalid)");
    }
    if report.bad_lines.len() > 10 {
        eprintln!("warning: {} more bad lines", report.bad_lines.len() - 10);
    }
    if args.json {
        println!("{}", serde_json::to_string(&json_summary(&report.ledger))?);
    } else {
        print_table(&report);
    }
    Ok(0)
}

fn load(dir: &std::path::Path) -> anyhow::Result<Arc<crate::rules::RuleSet>> {
    match load_dir(dir) {
        Ok(r) => Ok(Arc::new(r)),
        Err(errors) => {
            eprintln!("{errors}");
            anyhow::bail!("rules in {} are invalid", dir.display());
        }
    }
}

/// The `--json` shape documented in README.md.
pub fn json_summary(l: &Ledger) -> serde_json::Value {
    let fates: serde_json::Map<String, serde_json::Value> = FateKind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str().to_owned(),
                l.fates.get(k).copied().unwrap_or(0).into(),
            )
        })
        .collect();
    serde_json::json!({
        "received": l.received,
        "fates": fates,
        "notifications": l.notifications,
        "reports": l.reports,
        "noise_reduction": l.noise_reduction(),
        "squads": l.squads,
        "causes": l.causes,
    })
}

fn print_table(r: &ReplayReport) {
    let l = &r.ledger;
    let pct = |n: u64| {
        if l.received == 0 {
            0.0
        } else {
            100.0 * n as f64 / l.received as f64
        }
    };
    println!("received        {:>10}", l.received);
    for k in FateKind::ALL {
        let n = l.fates.get(&k).copied().unwrap_or(0);
        println!("  {:<14}{:>10}  {:>6.2}%", k.as_str(), n, pct(n));
    }
    println!("notifications   {:>10}", l.notifications);
    println!(
        "noise reduction {:>10.2}%  (1 - notifications/received)",
        100.0 * l.noise_reduction()
    );
    println!();
    println!("{:<16}{:>14}{:>10}", "squad", "notifications", "alerts");
    for (name, c) in &l.squads {
        println!("{:<16}{:>14}{:>10}", name, c.notifications, c.alerts);
    }
    if !l.causes.is_empty() {
        println!();
        println!("{:<48}{:>10}", "cause", "alerts");
        for (cause, n) in &l.causes {
            println!("{:<48}{:>10}", cause, n);
        }
    }
    if r.reordered > 0 {
        println!(
            "\n{} lines arrived out of time order and were replayed at the later time",
            r.reordered
        );
    }
}

/// Counts what the replay consumes and redraws one progress line on stderr.
struct Progress<R> {
    inner: R,
    read: u64,
    total: Option<u64>,
    started: std::time::Instant,
    last: std::time::Instant,
    finished: bool,
}

impl<R> Progress<R> {
    fn new(inner: R, total: Option<u64>) -> Self {
        let now = std::time::Instant::now();
        Progress {
            inner,
            read: 0,
            total,
            started: now,
            last: now,
            finished: false,
        }
    }

    fn draw(&mut self, done: bool) {
        let mb = self.read as f64 / 1e6;
        let rate = mb / self.started.elapsed().as_secs_f64().max(1e-3);
        let line = match self.total.filter(|t| *t > 0) {
            Some(t) => {
                let pct = 100.0 * self.read as f64 / t as f64;
                let bar = "#".repeat((pct / 5.0) as usize);
                format!("replay [{bar:<20}] {pct:5.1}%  {mb:.1} MB  {rate:.0} MB/s")
            }
            None => format!("replay {mb:.1} MB  {rate:.0} MB/s"),
        };
        eprint!("\r{line}{}", if done { "\n" } else { "" });
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Progress<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let empty = self.inner.fill_buf()?.is_empty();
        if empty && !self.finished {
            self.finished = true;
            self.draw(true);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.read += amt as u64;
        if self.last.elapsed() >= std::time::Duration::from_millis(200) {
            self.last = std::time::Instant::now();
            self.draw(false);
        }
    }
}
