//! The `squadron` binary: parse the command line, set up logging, call the library.

use clap::Parser;
use squadron::cli::{Cli, Command, LogFormat, run};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn main() {
    let cli = Cli::parse();
    // `SQUADRON_LOG=squadron=debug,info`: a default level and per-target levels.
    // (Targets, not EnvFilter: EnvFilter's regex support made every rule-file
    // regex build a full DFA, 20x slower to compile.)
    let spec = std::env::var("SQUADRON_LOG").unwrap_or_default();
    let filter: Targets = match spec.parse() {
        Ok(t) if !spec.trim().is_empty() => t,
        Ok(_) => Targets::new().with_default(tracing::Level::INFO),
        Err(e) => {
            eprintln!("warning: SQUADRON_LOG={spec:?} is not a filter ({e}); logging at info");
            Targets::new().with_default(tracing::Level::INFO)
        }
    };
    // The demo redraws the terminal: its logs go to a file instead of through the view.
    let demo_log = (matches!(cli.command, Command::Demo(_))
        && std::io::IsTerminal::is_terminal(&std::io::stdout()))
    .then(|| std::env::temp_dir().join("squadron-demo.log"))
    .and_then(|path| match std::fs::File::create(&path) {
        Ok(f) => {
            eprintln!("squadron demo: logs go to {}", path.display());
            Some(f)
        }
        Err(e) => {
            eprintln!(
                "warning: cannot write {}: {e}; logging to stderr",
                path.display()
            );
            None
        }
    });
    let ansi = demo_log.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = match demo_log {
        Some(f) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(f)),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    match cli.log_format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
