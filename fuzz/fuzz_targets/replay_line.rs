//! Any bytes as a line of a replay file, and through a whole replay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squadron::model::Ts;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let _ = squadron::replay::parse_line(data);
    let mut engine = squadron::engine::Engine::new(Arc::new(squadron::rules::RuleSet::empty()));
    let report = squadron::replay::replay(&mut engine, data, || Ts(0), |_, _| Ok(())).unwrap();
    assert_eq!(report.ledger.decided(), report.ledger.received);
});
