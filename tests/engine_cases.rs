//! Runs the engine's data-driven cases (tests/engine/*.yaml) through the rule
//! test runner: each case is alerts in, fates and notifications out.

use std::path::Path;

#[test]
fn engine_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engine");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    let mut report = Vec::new();
    let (passed, failed) = squadron::ruletest::run_and_report(&files, &mut report).unwrap();
    let report = String::from_utf8(report).unwrap();
    assert_eq!(failed, 0, "{report}");
    assert!(passed >= 20, "{report}");
}
