//! `squadron generate`: synthetic traffic in the replay format.

use crate::sim::{Scenario, generate as gen_events};
use anyhow::Context;
use std::io::{BufWriter, Write};
use std::path::Path;

pub fn generate(
    scenario: &str,
    start: &str,
    seed: Option<u64>,
    bad_ratio: Option<f64>,
    duration: Option<std::time::Duration>,
    output: Option<&Path>,
) -> anyhow::Result<i32> {
    if scenario == "rules" {
        anyhow::ensure!(
            bad_ratio.is_none() && duration.is_none(),
            "`generate rules` writes a rule file: --bad-ratio and --duration do not apply"
        );
        let text = crate::sim::large_rules(1000);
        return match output {
            Some(p) => std::fs::write(p, text)
                .with_context(|| format!("writing {}", p.display()))
                .map(|()| 0),
            None => std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to standard output")
                .map(|()| 0),
        };
    }
    let start = if start == "now" {
        super::wall_clock()
    } else {
        super::parse_time_arg(start)?
    };
    let mut s = Scenario::by_name(scenario, start).with_context(|| {
        format!("unknown scenario {scenario:?} (hour, week, storm, live, rules)")
    })?;
    if let Some(seed) = seed {
        s.seed = seed;
    }
    if let Some(d) = duration {
        s.duration = d;
    }
    if let Some(r) = bad_ratio {
        anyhow::ensure!(
            (0.0..=1.0).contains(&r),
            "--bad-ratio must be between 0 and 1"
        );
        s.bad_ratio = r;
    }
    let events = gen_events(&s);
    let mut w: Box<dyn Write> = match output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::new(&mut w);
    for e in &events {
        writeln!(w, "{}", e.to_replay_line())?;
    }
    w.flush()?;
    Ok(0)
}
