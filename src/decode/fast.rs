//! One pass over the shape most traffic has: the array of alert objects
//! Prometheus POSTs (`labels`, `annotations`, `startsAt`, `endsAt`,
//! `generatorURL`), with string values.
//!
//! It is a shortcut, never a second opinion: it reads the array, or answers
//! `None` and the general (serde) decoder reads it. It answers only when the
//! whole input is an array of objects holding nothing but those fields (and
//! `status`, ignored as the general decoder ignores it outside webhooks),
//! each once, with string values, except that a label or annotation may
//! also be `null`, `true` or `false` (an invalid alert, reported as the
//! general decoder reports it); anything else (numbers, other keys, trailing
//! bytes, bad JSON or bad escapes) is left to the general decoder. Strings
//! are borrowed, or unescaped by serde_json when they hold escapes. Their
//! ends are found in a bitmap of special bytes made 64 bytes at a time
//! ([`Specials`], SSE2 on x86_64). What it reads becomes the same
//! `AlertObject` the general decoder builds, converted by the same code, so
//! an alert and its reasons for being invalid are the same whichever path
//! read them: the `decode` fuzz target checks exactly that against
//! [`super::decode_reference`].

use super::{AlertObject, Invalid, LabelField, Str, StrOrOther, TimeCache};
use crate::model::Alert;
use std::borrow::Cow;

/// The alerts of a Prometheus batch, or `None`: not this shape (see above).
pub(super) fn prometheus_batch(text: &str) -> Option<Vec<Result<Alert<'_>, Invalid>>> {
    let mut c = Cursor {
        text,
        at: 0,
        specials: Specials::new(text.as_bytes()),
    };
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
    specials: Specials<'a>,
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
    /// alike, bad escapes included: those are declined). Inlined: returned
    /// through the stack, the string cost a store-forwarding stall in each
    /// caller (a third of the labels' time, measured).
    #[inline(always)]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        let end = self.specials.next(start);
        if self.text.as_bytes().get(end) == Some(&b'"') {
            self.at = end + 1;
            // Both ends are ASCII quotes: character boundaries of the checked text.
            return self.text.get(start..end).map(Cow::Borrowed);
        }
        self.escaped(start, end)
    }

    /// The rest of a string from its first special byte at `end`: escapes,
    /// stepped over to the closing quote, or a control character.
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, start: usize, mut end: usize) -> Option<Cow<'a, str>> {
        let bytes = self.text.as_bytes();
        while *bytes.get(end)? == b'\\' {
            end = self.specials.next(end + 2);
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

    /// An object of string names to values (see [`Cursor::label_value`]).
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
            field.add(name, self.label_value()?);
            match self.next()? {
                b',' => {}
                b'}' => return Some(field),
                _ => return None,
            }
        }
    }

    /// A label's value: a string, or `null`, `true` or `false`, which make
    /// the alert invalid exactly as the general decoder says (a recording's
    /// one bad alert in a batch of 64 must not send the other 63 through it).
    /// Numbers, arrays and objects are left to the general decoder.
    fn label_value(&mut self) -> Option<StrOrOther<'a>> {
        if self.peek()? == b'"' {
            return Some(StrOrOther::Str(self.string()?));
        }
        let rest = &self.text.as_bytes()[self.at..];
        let (word, kind) = [
            (&b"null"[..], "null"),
            (b"true", "boolean"),
            (b"false", "boolean"),
        ]
        .into_iter()
        .find(|(word, _)| rest.starts_with(word))?;
        self.at += word.len();
        Some(StrOrOther::Other(kind))
    }
}

/// Where the next `"`, `\` or control character is, from a bitmap of them
/// made 64 bytes at a time. Finding a string's end is then a shift and a
/// count of trailing zeros on a word already made, instead of a scan whose
/// exit waits on the bytes: each string's start depends on the last one's
/// end, so the time to find an end is paid once per string, in sequence.
struct Specials<'a> {
    bytes: &'a [u8],
    /// The offset of the block `mask` describes (a multiple of 64).
    block: usize,
    /// Bit `i`: byte `block + i` is special, or is the end of the input.
    mask: u64,
}

impl<'a> Specials<'a> {
    fn new(bytes: &'a [u8]) -> Specials<'a> {
        Specials {
            bytes,
            block: 0,
            mask: block_mask(bytes, 0),
        }
    }

    /// The index of the first special byte at or after `from`, or
    /// `bytes.len()` if there is none (`from` itself if it is past the end).
    #[inline(always)]
    fn next(&mut self, from: usize) -> usize {
        let block = from & !63;
        if block == self.block {
            let mask = self.mask & (u64::MAX << (from - block));
            if mask != 0 {
                return block + mask.trailing_zeros() as usize;
            }
        }
        self.next_block(from)
    }

    /// [`Specials::next`] when it is not in the block at hand.
    #[inline(never)]
    fn next_block(&mut self, from: usize) -> usize {
        if from >= self.bytes.len() {
            return from;
        }
        let mut block = from & !63;
        let mut mask = u64::MAX << (from - block);
        loop {
            if block != self.block {
                self.block = block;
                self.mask = block_mask(self.bytes, block);
            }
            mask &= self.mask;
            if mask != 0 {
                return block + mask.trailing_zeros() as usize;
            }
            block += 64;
            mask = u64::MAX;
        }
    }
}

/// The bitmap of special bytes of the 64 starting at `block` (`block` is
/// before the end); past the end, the end itself is marked.
fn block_mask(bytes: &[u8], block: usize) -> u64 {
    match bytes.get(block..block + 64) {
        Some(b) => simd::specials(b.try_into().expect("64 bytes")),
        None => {
            let tail = &bytes[block..];
            let mut mask = 1 << tail.len();
            for (i, &b) in tail.iter().enumerate() {
                if special(b) {
                    mask |= 1 << i;
                }
            }
            mask
        }
    }
}

fn special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    pub(super) fn specials(b: &[u8; 64]) -> u64 {
        #[allow(unsafe_code)] // audited: lib.rs
        // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline).
        unsafe {
            sse2(b)
        }
    }

    #[target_feature(enable = "sse2")]
    fn sse2(b: &[u8; 64]) -> u64 {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let control = _mm_set1_epi8(0x1f);
        let mut mask = 0;
        for (i, sixteen) in b.chunks_exact(16).enumerate() {
            let half = |at: usize| i64::from_le_bytes(sixteen[at..at + 8].try_into().expect("8"));
            let v = _mm_set_epi64x(half(8), half(0));
            let found = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                // Unsigned v <= 0x1f: the minimum of the two is v.
                _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
            );
            mask |= (_mm_movemask_epi8(found) as u16 as u64) << (16 * i);
        }
        mask
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub(super) fn specials(b: &[u8; 64]) -> u64 {
        b.iter()
            .enumerate()
            .fold(0, |m, (i, &b)| m | (super::special(b) as u64) << i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_finds_the_first_quote_backslash_or_control_byte() {
        let slow = |s: &[u8], from: usize| {
            (from..s.len())
                .find(|&i| special(s[i]))
                .unwrap_or(s.len().max(from))
        };
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain ascii text, no end".to_vec(),
            "ünïcödé bytes above 0x80 \u{1F600} then\""
                .as_bytes()
                .to_vec(),
            [0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0x9f, 0xa2, 0xdc, 0xff].repeat(20),
        ];
        // Every special byte at every position of strings across block
        // boundaries (a block is 64 bytes), two of them in some, among bytes
        // close to the special ones.
        for len in [63, 64, 65, 150] {
            for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                for pos in 0..len {
                    let mut s: Vec<u8> = (0..len)
                        .map(|i| [0x21, 0x7f, 0x80, 0xff, b'!', b'#', 0x20, 0x5d][i % 8])
                        .collect();
                    s[pos] = special;
                    if pos % 7 == 0 {
                        s[(pos * 3) % len] = b'"';
                    }
                    cases.push(s);
                }
            }
        }
        for s in &cases {
            // A fresh bitmap for each start, and one kept across starts in
            // order and out of order (its block is reused or replaced).
            let mut kept = Specials::new(s);
            for from in (0..=s.len() + 2).chain((0..s.len()).rev()) {
                assert_eq!(
                    Specials::new(s).next(from),
                    slow(s, from),
                    "{s:?} from {from}"
                );
                assert_eq!(kept.next(from), slow(s, from), "{s:?} from {from}, kept");
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
            r#"[{"labels":{"a":1}}]"#,         // a number
            r#"[{"labels":{"a":nul}}]"#,       // not JSON
            r#"[{"labels":{"a":nullx}}]"#,     // not JSON
            r#"[{"labels":{"a":[]}}]"#,        // an array
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
            // Invalid alerts among valid ones, read here too.
            br#"[{"labels":{"a":"b"}},{"labels":{"a":null,"b":true}},{"annotations":{"x" : false }}]"#,
            br#"[{"labels":{"a":"b","c":null}},{"labels":{"":null}}]"#,
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
