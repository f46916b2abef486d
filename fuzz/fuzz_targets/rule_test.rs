//! Any text as a rule test file (`squadron test`), against a small rule set
//! (or the test's own `inline_rules`).
#![no_main]

use libfuzzer_sys::fuzz_target;

const RULES: &str = "ownership: {fallback_squad: payments}
grouping: {group_wait: 10s, group_interval: 1m, repeat_interval: 4h}
squads:
  - name: payments
    services: [checkout]
    core_services: [checkout]
impact_rules:
  - {name: drop-staging, match: ['env=\"staging\"'], action: drop}
";

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("squadron-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir.join("tests"));
    let _ = std::fs::write(dir.join("rules.yaml"), RULES);
    let file = dir.join("tests/case.yaml");
    std::fs::write(&file, data).unwrap();
    let _ = squadron::ruletest::run_file(&file);
});
