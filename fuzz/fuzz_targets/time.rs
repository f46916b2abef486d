//! Any text as an RFC 3339 timestamp or a duration.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(t)) = squadron::model::Ts::parse_rfc3339(s) {
        // What parses prints and parses back to the same instant.
        let printed = t.to_string();
        assert_eq!(
            squadron::model::Ts::parse_rfc3339(&printed).ok().flatten(),
            Some(t),
            "{s:?} -> {printed}"
        );
    }
    let _ = squadron::model::parse_duration(s);
});
