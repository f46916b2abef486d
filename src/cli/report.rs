//! `squadron report`: the noise report over a recording, as tables, JSON or HTML.

use crate::report::{Options, report};
use anyhow::Context;
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The rules directory (suggested rules are measured against it).
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// The recording (replay format): `squadron record` or `squadron generate`.
    pub file: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with charts here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Rows in the noisiest tables.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Suggested rules at most (0: none, and the recording is read once).
    #[arg(long, default_value_t = 6)]
    pub suggestions: usize,
    /// Time of bare lines before the first envelope (RFC 3339). Default: the wall clock.
    #[arg(long)]
    pub start: Option<String>,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<i32> {
    let rules = match crate::rules::load_dir(&args.rules) {
        Ok(r) => Arc::new(r),
        Err(errors) => {
            eprintln!("{errors}");
            anyhow::bail!("rules in {} are invalid", args.rules.display());
        }
    };
    let start = match &args.start {
        Some(s) => super::parse_time_arg(s)?,
        None => super::wall_clock(),
    };
    anyhow::ensure!(
        args.file.as_os_str() != "-",
        "report reads its recording twice: give a file, not standard input"
    );
    let path = args.file.clone();
    let reopen = || -> std::io::Result<Box<dyn BufRead>> { Ok(super::open_recording(&path)?.0) };
    reopen().with_context(|| format!("opening {}", args.file.display()))?;
    let opts = Options {
        top: args.top.max(1),
        suggestions: args.suggestions,
    };
    let r = report(&args.rules, rules, reopen, start, opts)
        .with_context(|| format!("reading {}", args.file.display()))?;
    if let Some(p) = &args.html {
        let mut f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
        f.write_all(r.html().as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.render());
        if let Some(p) = &args.html {
            println!("\nHTML report: {}", p.display());
        }
    }
    Ok(0)
}
