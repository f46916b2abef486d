//! `squadron check`: validate a rules directory and say what it holds.

use crate::rules::load_dir;
use std::path::Path;

pub fn check(dir: &Path) -> anyhow::Result<i32> {
    match load_dir(dir) {
        Ok(rules) => {
            println!(
                "{}: valid ({} files, {} squads, {} impact rules, {} silences, {} inhibit rules, digest {})",
                dir.display(),
                rules.files.len(),
                rules.squads.len(),
                rules.impact_rules.len(),
                rules.silences.len(),
                rules.inhibit_rules.len(),
                rules.digest
            );
            if let Some(r) = &rules.catalog_report {
                println!(
                    "catalog: {} components, {} services assigned, {} left to the rule files ({}), {} with owners that are not squads{}",
                    r.components,
                    r.assigned,
                    r.overridden.len(),
                    r.overridden.join(", "),
                    r.unknown_owners.len(),
                    r.unknown_owners
                        .iter()
                        .map(|(c, o)| format!(" {c}->{o}"))
                        .collect::<String>()
                );
            }
            Ok(0)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} error(s)", dir.display(), errors.0.len());
            Ok(1)
        }
    }
}
