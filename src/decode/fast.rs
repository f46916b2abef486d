//! One pass over the shape most traffic has: the array of alert objects
//! Prometheus POSTs (`labels`, `annotations`, `startsAt`, `endsAt`,
//! `generatorURL`), with string values.
//!
//! It is a shortcut, never a second opinion: it reads the array, or answers
//! `None` and the general (serde) decoder reads it. It answers only when the
//! whole input is an array of objects holding nothing but those fields (and
//! `status`, ignored as the general decoder ignores it outside webhooks),
//! each once, with string values; anything else (`null`, numbers, other
//! keys, trailing bytes, bad JSON or bad escapes) is left to the general
//! decoder. Strings are borrowed, or unescaped by serde_json when they hold
//! escapes. What it reads becomes the same `AlertObject` the general decoder
//! builds, converted by the same code, so an alert and its reasons for being
//! invalid are the same whichever path read them: the `decode` fuzz target
//! checks exactly that against [`super::decode_reference`].

use super::{AlertObject, Invalid, LabelField, Str, StrOrOther, TimeCache};
use crate::model::Alert;
use std::borrow::Cow;

/// The alerts of a Prometheus batch, or `None`: not this shape (see above).
pub(super) fn prometheus_batch(text: &str) -> Option<Vec<Result<Alert<'_>, Invalid>>> {
    let mut c = Cursor { text, at: 0 };
    c.expect(b'[')?;
    // Prometheus sends up to 64 alerts a request.
    let mut alerts = Vec::with_capacity(64);
    let mut times = TimeCache::default();
    if c.peek()? == b']' {
        c.at += 1;
    } else {
        loop {
            let obj = c.alert()?;
            let i = alerts.len();
            alerts.push(obj.into_alert(false, &mut times).map_err(|e| e.at(i)));
            match c.next()? {
                b',' => {}
                b']' => break,
                _ => return None,
            }
        }
    }
    c.skip_whitespace();
    (c.at == text.len()).then_some(alerts)
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_whitespace(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.text.as_bytes().get(self.at).copied()
    }

    /// The next byte that is not whitespace, consumed.
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// A string: borrowed, or unescaped by serde_json (so both paths unescape
    /// alike, bad escapes included: those are declined).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut end = string_end(bytes, start);
        if bytes.get(end) == Some(&b'"') {
            self.at = end + 1;
            // Both ends are ASCII quotes: character boundaries of the checked text.
            return self.text.get(start..end).map(Cow::Borrowed);
        }
        // Escapes: find the closing quote, stepping over each escaped byte.
        while *bytes.get(end)? == b'\\' {
            end = string_end(bytes, end + 2);
        }
        if *bytes.get(end)? != b'"' {
            return None; // a control character: not JSON
        }
        let unescaped: String = serde_json::from_str(self.text.get(start - 1..=end)?).ok()?;
        self.at = end + 1;
        Some(Cow::Owned(unescaped))
    }

    /// One alert object, or `None` when it is not the shape this reads.
    fn alert(&mut self) -> Option<AlertObject<'a>> {
        self.expect(b'{')?;
        let mut obj = AlertObject::default();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(obj);
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            // A field given twice is an error of the general decoder's: its own.
            let twice = match &*key {
                "labels" => obj.labels.replace(self.labels()?).is_some(),
                "annotations" => obj.annotations.replace(self.labels()?).is_some(),
                "startsAt" => obj.starts_at.replace(self.str()?).is_some(),
                "endsAt" => obj.ends_at.replace(self.str()?).is_some(),
                "generatorURL" => obj.generator_url.replace(self.str()?).is_some(),
                "status" => obj.status.replace(self.str()?).is_some(),
                _ => return None,
            };
            if twice {
                return None;
            }
            match self.next()? {
                b',' => {}
                b'}' => return Some(obj),
                _ => return None,
            }
        }
    }

    fn str(&mut self) -> Option<Str<'a>> {
        Some(Str(self.string()?))
    }

    /// An object of string names to string values.
    fn labels(&mut self) -> Option<LabelField<'a>> {
        self.expect(b'{')?;
        let mut field = LabelField::with_capacity(8);
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(field);
        }
        loop {
            let name = self.string()?;
            self.expect(b':')?;
            let value = self.string()?;
            field.add(name, StrOrOther::Str(value));
            match self.next()? {
                b',' => {}
                b'}' => return Some(field),
                _ => return None,
            }
        }
    }
}

/// The index of the first `"`, `\` or control character at or after `from`
/// (`bytes.len()` if none), eight bytes at a time.
fn string_end(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = w ^ (ONES * b'"' as u64);
        let backslash = w ^ (ONES * b'\\' as u64);
        // The classic "has a zero byte" and "has a byte below n" tests: a
        // borrow can flag bytes after a match, never before, so the lowest
        // flagged byte is the first match.
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let found = found & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_end_finds_the_first_quote_backslash_or_control_byte() {
        let slow = |s: &[u8], from: usize| {
            (from..s.len())
                .find(|&i| s[i] == b'"' || s[i] == b'\\' || s[i] < 0x20)
                .unwrap_or(s.len())
        };
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain ascii text, no end".to_vec(),
            "ünïcödé bytes above 0x80 \u{1F600} then\""
                .as_bytes()
                .to_vec(),
        ];
        // Every special byte at every position of a 20-byte string, after
        // bytes that would make a careless borrow test misfire.
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for pos in 0..20 {
                let mut s: Vec<u8> = (0..20)
                    .map(|i| [0x21, 0x7f, 0x80, 0xff, b'!'][i % 5])
                    .collect();
                s[pos] = special;
                cases.push(s);
            }
        }
        for s in &cases {
            for from in 0..=s.len() {
                assert_eq!(string_end(s, from), slow(s, from), "{s:?} from {from}");
            }
        }
    }

    #[test]
    fn reads_only_the_shape_it_knows() {
        let read = |s: &str| prometheus_batch(s).map(|a| a.len());
        assert_eq!(read("[]"), Some(0));
        let escaped =
            prometheus_batch(r#"[{"lab\u0065ls":{"a\"":"\\b\n\u00e9\ud83d\ude00"}}]"#).unwrap();
        let labels = &escaped[0].as_ref().unwrap().labels;
        assert_eq!(labels[0].0, "a\"");
        assert_eq!(labels[0].1, "\\b\né😀");
        assert_eq!(read(" [ {} , {\"labels\":{}} ] \n"), Some(2));
        assert_eq!(
            read(
                r#"[{"labels":{"a":"b"},"annotations":{},"startsAt":"2026-01-01T00:00:00Z","endsAt":"","generatorURL":"u","status":"firing"}]"#
            ),
            Some(1)
        );
        for other in [
            r#"[{"labels":{"a":"b\x"}}]"#,     // a bad escape
            r#"[{"labels":{"a":"\ud800"}}]"#,  // a lone surrogate
            r#"[{"labels":{"a":null}}]"#,      // not a string
            r#"[{"labels":{"a":"b"},"x":1}]"#, // another field
            r#"[{"labels":{},"labels":{}}]"#,  // a field twice
            r#"[{"labels":{"a":"b"}}] x"#,     // trailing bytes
            r#"[{"labels":{"a":"b"}},]"#,      // a trailing comma
            r#"[{"labels":{"a":"b"}}"#,        // cut short
            "[{\"labels\":{\"a\":\"b\tc\"}}]", // a control character
            r#"{"labels":{"a":"b"}}"#,         // not an array
            r#"[{"labels":null}]"#,
        ] {
            assert_eq!(read(other), None, "{other}");
        }
    }
}

#[cfg(test)]
mod agreement {
    use crate::decode::{decode, decode_reference};
    use crate::model::Ts;

    fn same(message: &[u8]) -> bool {
        format!("{:?}", decode(message)) == format!("{:?}", decode_reference(message))
    }

    /// Every message of a generated hour, and each with one byte changed at
    /// many places (edits that break the shape, the JSON or an alert), decode
    /// the same with and without the shortcut.
    #[test]
    fn the_shortcut_agrees_with_the_general_decoder() {
        let events = crate::sim::generate(&crate::sim::Scenario::hour(Ts(1_764_147_600_000)));
        let mut rng = crate::sim::Rng::new(7);
        let mut fast = 0;
        for e in events.iter().step_by(23) {
            assert!(same(&e.message), "{}", String::from_utf8_lossy(&e.message));
            if crate::decode::fast::prometheus_batch(std::str::from_utf8(&e.message).unwrap_or(""))
                .is_some()
            {
                fast += 1;
            }
            for _ in 0..12 {
                let mut m = e.message.clone();
                if m.is_empty() {
                    break;
                }
                let at = rng.below(m.len() as u64) as usize;
                m[at] = *rng.pick(&[
                    b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'\t', 0x01, b'x', b'1',
                ]);
                assert!(same(&m), "{}", String::from_utf8_lossy(&m));
            }
        }
        assert!(fast > 50, "the hour's batches take the shortcut ({fast})");
        for m in [
            &br#"[{"labels":{"alertname":"A","":"x"}}]"#[..],
            br#"[{"labels":{"b":"1","a":"2","b":"3"}}]"#,
            br#"[{"labels":{}},{"annotations":{"a":"b"}},{}]"#,
            br#"[{"labels":{"a":"b"},"startsAt":"yesterday"}]"#,
            br#"[{"labels":{"a":"b"},"endsAt":"0001-01-01T00:00:00Z","generatorURL":""}]"#,
            br#"[{"labels":{"a":"b"},"status":"bogus"}]"#,
            br#"[{"labels":{"a":"b\"\\\/\b\f\n\r\t\u0041\ud83d\ude00"},"annotations":{"\u0000":"x"}}]"#,
            br#"[{"labels":{"a":"1","\u0061":"2"}}]"#,
        ] {
            assert!(
                crate::decode::fast::prometheus_batch(std::str::from_utf8(m).unwrap()).is_some()
            );
            assert!(same(m), "{}", String::from_utf8_lossy(m));
        }
        // A field named twice, once escaped: the general decoder's error, its own.
        let twice = br#"[{"\u006cabels":{"a":"1"},"labels":{"b":"2"}}]"#;
        assert!(
            crate::decode::fast::prometheus_batch(std::str::from_utf8(twice).unwrap()).is_none()
        );
        assert!(same(twice));
    }
}
