//! Any text as a rule file: compiled or rejected with errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    match squadron::rules::compile(&[("rules.yaml".into(), text)]) {
        Ok(rules) => assert!(!rules.digest.is_empty()),
        Err(errors) => assert!(!errors.0.is_empty()),
    }
});
