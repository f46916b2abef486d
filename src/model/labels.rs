//! Label sets and Alertmanager-compatible fingerprints.
//!
//! Two representations share one read interface ([`Labels`]): the borrowed pairs
//! that decoding produces (no copy per resend), and the compact owned [`LabelSet`]
//! the engine keeps for alerts it remembers (two allocations per set).

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// Alertmanager's fingerprint of a label set (`model.LabelSet.Fingerprint` in
/// prometheus/common): FNV-1a 64 over the label names in sorted order, each name and
/// value followed by the separator byte 0xff. Printed as 16 hex digits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fingerprint(pub u64);

const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV_PRIME: u64 = 1_099_511_628_211;
const SEPARATOR: u8 = 0xff;

impl Fingerprint {
    /// `pairs` must be sorted by name (both representations guarantee it).
    pub fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fingerprint {
        let mut h = FNV_OFFSET;
        let mut add = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(FNV_PRIME);
            }
        };
        for (name, value) in pairs {
            add(name.as_bytes());
            add(&[SEPARATOR]);
            add(value.as_bytes());
            add(&[SEPARATOR]);
        }
        Fingerprint(h)
    }

    pub fn parse(s: &str) -> Option<Fingerprint> {
        (s.len() == 16)
            .then(|| u64::from_str_radix(s, 16).ok().map(Fingerprint))
            .flatten()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        Fingerprint::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid fingerprint {s:?}")))
    }
}

/// The engine's identity for a label set: xxh3-128 of the same canonical bytes
/// the fingerprint hashes. Computing it is several times cheaper than FNV-1a,
/// which matters because every resend is looked up; the Alertmanager
/// fingerprint is computed once, when an alert is first admitted. At 128 bits a
/// collision is far less likely than one of Alertmanager's 64-bit fingerprints.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AlertKey(pub u128);

impl AlertKey {
    /// The XXH3-128 of each name and value followed by the separator byte.
    /// `scratch` is reused between calls to avoid an allocation per alert;
    /// it only grows. Names and values are short: each is copied with one or
    /// two fixed-size moves (overlapping for lengths between sizes) instead
    /// of a call to `memcpy`, which made 72% of a replay's `memcpy` calls.
    pub fn of(labels: &impl Labels, scratch: &mut Vec<u8>) -> AlertKey {
        let len: usize = (0..labels.len())
            .map(|i| labels.pair(i))
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum();
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        let mut at = 0;
        for i in 0..labels.len() {
            let (n, v) = labels.pair(i);
            for part in [n, v] {
                at = put(scratch, at, part.as_bytes());
                scratch[at] = SEPARATOR;
                at += 1;
            }
        }
        AlertKey(xxhash_rust::xxh3::xxh3_128(&scratch[..len]))
    }
}

/// Copies `s` to `buf` at `at`, returns where it ends. `buf` holds it.
#[inline(always)]
fn put(buf: &mut [u8], at: usize, s: &[u8]) -> usize {
    let n = s.len();
    let end = at + n;
    let to = &mut buf[at..end];
    match n {
        0 => {}
        1..=3 => {
            to[0] = s[0];
            to[n / 2] = s[n / 2];
            to[n - 1] = s[n - 1];
        }
        4..=7 => {
            to[..4].copy_from_slice(&s[..4]);
            to[n - 4..].copy_from_slice(&s[n - 4..]);
        }
        8..=16 => {
            to[..8].copy_from_slice(&s[..8]);
            to[n - 8..].copy_from_slice(&s[n - 8..]);
        }
        _ => to.copy_from_slice(s),
    }
    end
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for AlertKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AlertKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AlertKey, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        u128::from_str_radix(&s, 16)
            .map(AlertKey)
            .map_err(|_| serde::de::Error::custom(format!("invalid alert key {s:?}")))
    }
}

/// A map keyed by short strings (service names, label values) on the hot path:
/// FNV-1a instead of SipHash. Keys come from rule files and monitoring systems,
/// not from untrusted clients, so hash flooding is not a concern here.
pub type StrMap<V> =
    std::collections::HashMap<Box<str>, V, std::hash::BuildHasherDefault<FnvHasher>>;

#[derive(Clone, Copy)]
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> FnvHasher {
        FnvHasher(FNV_OFFSET)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(FNV_PRIME);
        }
    }
}

/// Read access to a label set sorted by name. Missing labels read as absent;
/// matchers treat absent as the empty string, as Alertmanager does.
pub trait Labels {
    fn len(&self) -> usize;
    fn pair(&self, i: usize) -> (&str, &str);

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, name: &str) -> Option<&str> {
        // Label sets are small (typically under 12): a linear scan beats a binary search.
        (0..self.len())
            .map(|i| self.pair(i))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    fn iter(&self) -> LabelIter<'_, Self>
    where
        Self: Sized,
    {
        LabelIter { set: self, i: 0 }
    }

    fn fingerprint(&self) -> Fingerprint
    where
        Self: Sized,
    {
        Fingerprint::of(self.iter())
    }
}

pub struct LabelIter<'s, L: Labels> {
    set: &'s L,
    i: usize,
}

impl<'s, L: Labels> Iterator for LabelIter<'s, L> {
    type Item = (&'s str, &'s str);
    fn next(&mut self) -> Option<Self::Item> {
        (self.i < self.set.len()).then(|| {
            self.i += 1;
            self.set.pair(self.i - 1)
        })
    }
}

/// Borrowed label pairs as decoded from a message, sorted by name, names unique.
pub type LabelPairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

impl Labels for [(Cow<'_, str>, Cow<'_, str>)] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn pair(&self, i: usize) -> (&str, &str) {
        (&self[i].0, &self[i].1)
    }
}

impl Labels for Vec<(Cow<'_, str>, Cow<'_, str>)> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn pair(&self, i: usize) -> (&str, &str) {
        (&self[i].0, &self[i].1)
    }
}

/// An owned label set in two allocations: all names and values back to back in
/// `text`, and the end offset of each name and each value in `ends`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSet {
    text: Box<str>,
    ends: Box<[u32]>,
}

impl LabelSet {
    /// Builds a set from pairs already sorted by name.
    pub fn from_sorted<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> LabelSet {
        let mut text = String::new();
        let mut ends = Vec::new();
        for (n, v) in pairs {
            text.push_str(n);
            ends.push(text.len() as u32);
            text.push_str(v);
            ends.push(text.len() as u32);
        }
        LabelSet {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Builds a set from pairs in any order; a repeated name keeps its last value.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> LabelSet {
        let mut v: Vec<(&str, &str)> = pairs.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.reverse();
        v.dedup_by(|a, b| a.0 == b.0);
        v.reverse();
        LabelSet::from_sorted(v)
    }

    pub fn from_labels(l: &impl Labels) -> LabelSet {
        LabelSet::from_sorted((0..l.len()).map(|i| l.pair(i)))
    }

    /// Whether this set holds exactly the same pairs as `other`.
    pub fn same_as(&self, other: &impl Labels) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| self.pair(i) == other.pair(i))
    }

    /// Heap bytes owned by this set.
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + self.ends.len() * 4
    }
}

impl Labels for LabelSet {
    fn len(&self) -> usize {
        self.ends.len() / 2
    }
    fn pair(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 {
            0
        } else {
            self.ends[2 * i - 1] as usize
        };
        let mid = self.ends[2 * i] as usize;
        let end = self.ends[2 * i + 1] as usize;
        (&self.text[start..mid], &self.text[mid..end])
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl fmt::Display for LabelSet {
    /// Prometheus notation: `{alertname="X", service="y"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl Serialize for LabelSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (n, v) in self.iter() {
            m.serialize_entry(n, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LabelSet, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of label names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelSet, A::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    pairs.push((k, v));
                }
                Ok(LabelSet::from_pairs(
                    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key is the XXH3-128 of names and values each followed by 0xff,
    /// whatever their lengths and whatever an earlier, longer call left in
    /// the scratch buffer (a changed key would orphan durable state).
    #[test]
    fn alert_keys_hash_names_and_values_with_separators() {
        let text: String = (0..64).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let mut scratch = Vec::new();
        for round in 0..3 {
            for n in 0..40 {
                let pairs: Vec<(Cow<str>, Cow<str>)> = (0..(n % 5))
                    .map(|i| {
                        let name = &text[i..i + 1 + (n + i) % 20];
                        let value = &text[..(n * 7 + i + round) % 64];
                        (Cow::Borrowed(name), Cow::Borrowed(value))
                    })
                    .collect();
                let mut naive = Vec::new();
                for (name, value) in &pairs {
                    for part in [name, value] {
                        naive.extend_from_slice(part.as_bytes());
                        naive.push(0xff);
                    }
                }
                let want = AlertKey(xxhash_rust::xxh3::xxh3_128(&naive));
                assert_eq!(AlertKey::of(&pairs, &mut scratch), want, "{pairs:?}");
            }
        }
    }

    #[derive(Deserialize)]
    struct Vector {
        labels: std::collections::BTreeMap<String, String>,
        fingerprint: String,
    }

    /// The vectors were computed by prometheus/common itself
    /// (tools/fingerprint-vectors, `go run .`).
    #[test]
    fn fingerprints_equal_alertmanagers() {
        let vectors: Vec<Vector> = serde_json::from_str(include_str!(
            "../../tests/data/alertmanager_fingerprints.json"
        ))
        .unwrap();
        assert!(vectors.len() >= 8);
        for v in vectors {
            let set = LabelSet::from_pairs(v.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            assert_eq!(set.fingerprint().to_string(), v.fingerprint, "{set}");
        }
    }

    #[test]
    fn compact_set_reads_back_its_pairs() {
        let set = LabelSet::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![("a", "3"), ("b", "2"), ("c", "")]
        );
        assert_eq!(set.get("b"), Some("2"));
        assert_eq!(set.get("zz"), None);
        assert_eq!(set.to_string(), r#"{a="3", b="2", c=""}"#);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<LabelSet>(&json).unwrap(), set);
    }

    #[test]
    fn fingerprint_round_trips_as_hex() {
        let fp = Fingerprint(0x00ab_cdef_0123_4567);
        assert_eq!(fp.to_string(), "00abcdef01234567");
        assert_eq!(Fingerprint::parse("00abcdef01234567"), Some(fp));
        assert_eq!(Fingerprint::parse("xyz"), None);
    }
}
