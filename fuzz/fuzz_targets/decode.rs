//! Any bytes as an input message: the decoder never panics, its shortcut for
//! Prometheus batches agrees with the general decoder, a batch's elements as
//! the route stage cuts them decode to the same alerts, and through the engine
//! every input gets exactly one fate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squadron::engine::{Engine, Outputs};
use squadron::model::Ts;
use std::sync::{Arc, OnceLock};

fn rules() -> Arc<squadron::rules::RuleSet> {
    static RULES: OnceLock<Arc<squadron::rules::RuleSet>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
            Arc::new(squadron::rules::load_dir(&dir).expect("shipped rules"))
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        format!("{:?}", squadron::decode::decode(data)),
        format!("{:?}", squadron::decode::decode_reference(data)),
        "the shortcut and the general decoder agree"
    );
    if let Ok(d) = squadron::decode::decode(data) {
        if d.format == squadron::decode::Format::PrometheusBatch {
            let elements =
                squadron::decode::array_elements(data).expect("a decoded batch is an array");
            assert_eq!(elements.len(), d.alerts.len(), "one element per alert");
            for (e, a) in elements.iter().zip(&d.alerts) {
                if let Ok(a) = a {
                    // As the decide stage reads it: in an array of its task's alerts.
                    let alone = [&b"["[..], e, b"]"].concat();
                    let again =
                        squadron::decode::decode(&alone).expect("a valid alert decodes again");
                    assert_eq!(
                        format!("{:?}", again.alerts),
                        format!("{:?}", [Ok::<_, ()>(a)])
                    );
                }
            }
        }
    }
    let mut engine = Engine::new(rules());
    let mut out = Outputs::default();
    let now = Ts(1_764_147_600_000);
    let inputs = squadron::ingest::feed(&mut engine, data, now, 0, &mut out).alerts as usize;
    let mut fates = out.fates.len();
    out.clear();
    while let Some(due) = engine.next_deadline() {
        if engine.pending_inputs() == 0 {
            break;
        }
        engine.tick(due, &mut out);
        fates += out.fates.len();
        out.clear();
    }
    assert_eq!(fates, inputs, "every input has exactly one fate");
});
