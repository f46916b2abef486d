//! Any text as an Alertmanager matcher; a parsed one matches without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squadron::model::LabelSet;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = squadron::rules::Matcher::parse(s) {
        let labels = LabelSet::from_pairs([("alertname", "A"), ("env", s)]);
        let _ = m.matches(&labels);
        let _ = m.to_string();
    }
});
