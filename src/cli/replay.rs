//! `squadron replay`: a recorded stream through the engine, summarized.

use super::ReplayArgs;
use crate::engine::{Engine, FateKind};
use crate::ingest::Ledger;
use crate::replay::{ReplayReport, replay as run_replay};
use crate::rules::load_dir;
use anyhow::Context;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::Arc;

pub fn replay(args: &ReplayArgs) -> anyhow::Result<i32> {
    let rules = match load_dir(&args.rules) {
        Ok(r) => Arc::new(r),
        Err(errors) => {
            eprintln!("{errors}");
            anyhow::bail!("rules in {} are invalid", args.rules.display());
        }
    };
    let start = match &args.start {
        Some(s) => Some(super::parse_time_arg(s)?),
        None => None,
    };
    let input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f =
            File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let mut notif_out = match &args.notifications {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut engine = Engine::new(rules);
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
