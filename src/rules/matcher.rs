//! Alertmanager label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`. Regexes are anchored at both ends, as in Alertmanager; a
//! missing label matches as the empty string.

use crate::model::Labels;
use regex::Regex;
use std::fmt;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        }
    }
}

/// Compiles an anchored regex, reusing an earlier compilation of the same
/// pattern: rule sets repeat patterns (`env=~"staging|dev"` in thousands of
/// rules), and compiling each again dominated loading them. A `Regex` clone
/// shares the compiled program. The cache is per thread and bounded.
fn compiled(value: &str) -> Result<Regex, String> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    const MAX_CACHED: usize = 4096;
    thread_local! {
        static CACHE: RefCell<HashMap<Box<str>, Regex>> = RefCell::new(HashMap::new());
    }
    if let Some(re) = CACHE.with(|c| c.borrow().get(value).cloned()) {
        return Ok(re);
    }
    let re = Regex::new(&format!("^(?:{value})$"))
        .map_err(|e| format!("invalid regular expression: {e}"))?;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_CACHED {
            c.clear();
        }
        c.insert(value.into(), re.clone());
    });
    Ok(re)
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: Box<str>,
    pub op: Op,
    pub value: Box<str>,
    re: Option<Pattern>,
}

/// A regex matcher's value, compiled. Most regexes in alerting rules are
/// literal alternatives (`staging|dev`) or a literal with `.*` around it;
/// those are matched without a regex engine (faster to build and to run).
/// Semantics are the anchored regex's: `.` does not match a newline.
#[derive(Clone, Debug)]
enum Pattern {
    /// `a|b|c`: the value is one of these.
    OneOf(Box<[Box<str>]>),
    /// `lit.*`
    Prefix(Box<str>),
    /// `.*lit`
    Suffix(Box<str>),
    /// `.*lit.*`
    Contains(Box<str>),
    Regex(Regex),
}

impl Pattern {
    fn new(value: &str) -> Result<Pattern, String> {
        const META: &[char] = &[
            '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
        ];
        let literal = |s: &str| !s.contains(META);
        if value.split('|').all(literal) {
            return Ok(Pattern::OneOf(value.split('|').map(Into::into).collect()));
        }
        let inner = |s: &str| Some(s.into()).filter(|_| literal(s));
        if let Some(mid) = value.strip_prefix(".*").and_then(|v| v.strip_suffix(".*")) {
            if let Some(m) = inner(mid) {
                return Ok(Pattern::Contains(m));
            }
        }
        if let Some(p) = value.strip_suffix(".*").and_then(inner) {
            return Ok(Pattern::Prefix(p));
        }
        if let Some(p) = value.strip_prefix(".*").and_then(inner) {
            return Ok(Pattern::Suffix(p));
        }
        compiled(value).map(Pattern::Regex)
    }

    fn is_match(&self, v: &str) -> bool {
        // `.*` matches anything but a newline.
        let any = |s: &str| !s.contains('\n');
        match self {
            Pattern::OneOf(set) => set.iter().any(|s| **s == *v),
            Pattern::Prefix(p) => v.strip_prefix(&**p).is_some_and(any),
            Pattern::Suffix(p) => v.strip_suffix(&**p).is_some_and(any),
            Pattern::Contains(p) => v
                .match_indices(&**p)
                .any(|(i, _)| any(&v[..i]) && any(&v[i + p.len()..])),
            Pattern::Regex(r) => r.is_match(v),
        }
    }
}

impl Matcher {
    /// Parses one matcher. The value may be double-quoted (with `\"`, `\\` and `\n`
    /// escapes) or bare; the label name may be quoted too.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let (name, rest) =
            take_name(s).ok_or_else(|| format!("matcher {s:?}: expected a label name"))?;
        let rest = rest.trim_start();
        let op = if rest.starts_with("=~") {
            Op::Re
        } else if rest.starts_with("!~") {
            Op::NotRe
        } else if rest.starts_with("!=") {
            Op::Ne
        } else if rest.starts_with('=') {
            Op::Eq
        } else {
            return Err(format!(
                "matcher {s:?}: expected one of =, !=, =~, !~ after {name:?}"
            ));
        };
        let raw_value = rest[op.as_str().len()..].trim();
        let value = if let Some(q) = raw_value.strip_prefix('"') {
            unquote(q).ok_or_else(|| {
                format!("matcher {s:?}: unterminated or badly escaped quoted value")
            })?
        } else if raw_value.contains(['"', ',', '{', '}']) {
            return Err(format!(
                "matcher {s:?}: a bare value cannot contain quotes, commas or braces; quote it"
            ));
        } else {
            raw_value.to_owned()
        };
        Matcher::new(&name, op, &value).map_err(|e| format!("matcher {s:?}: {e}"))
    }

    pub fn new(name: &str, op: Op, value: &str) -> Result<Matcher, String> {
        let re = match op {
            Op::Re | Op::NotRe => Some(Pattern::new(value)?),
            _ => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value: value.into(),
            re,
        })
    }

    /// The values this matcher requires of its label, when it requires one of
    /// a few literals (`name="v"`, `name=~"a|b"`, none empty): an alert it
    /// matches has one of them. `None` for everything else, including
    /// matchers an absent label satisfies. Rule indexes are built on it.
    pub fn required_values(&self) -> Option<Vec<&str>> {
        let values: Vec<&str> = match (self.op, &self.re) {
            (Op::Eq, _) => vec![&*self.value],
            (Op::Re, Some(Pattern::OneOf(set))) => set.iter().map(|s| &**s).collect(),
            _ => return None,
        };
        (!values.iter().any(|v| v.is_empty())).then_some(values)
    }

    pub fn matches(&self, labels: &impl Labels) -> bool {
        let v = labels.get(&self.name).unwrap_or("");
        match self.op {
            Op::Eq => v == &*self.value,
            Op::Ne => v != &*self.value,
            Op::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            Op::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// All matchers must match (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &impl Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), &*self.value)
    }
}

fn take_name(s: &str) -> Option<(String, &str)> {
    if let Some(q) = s.strip_prefix('"') {
        let end = q.find('"')?;
        return Some((q[..end].to_owned(), &q[end + 1..]));
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '-' || c == '/'))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
}

fn unquote(q: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c @ ('"' | '\\') => out.push(c),
                // Regexes need their backslashes: keep unknown escapes verbatim.
                c => {
                    out.push('\\');
                    out.push(c);
                }
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal shortcuts give exactly the anchored regex's answers.
    #[test]
    fn literal_patterns_agree_with_the_regex() {
        let patterns = [
            "staging|dev",
            "",
            "a",
            "a|",
            "checkout-.*",
            ".*-canary",
            ".*db.*",
            ".*",
            ".*.*",
            "a.b",
            "x.*y",
            "(?i)prod",
            "host-[0-9]+",
        ];
        let values = [
            "",
            "a",
            "staging",
            "dev",
            "prod",
            "PROD",
            "staging|dev",
            "checkout-1",
            "checkout-",
            "checkout-\n1",
            "x-canary",
            "-canary",
            "a\n-canary",
            "mydb1",
            "db",
            "d\nb",
            "my\ndb",
            "axb",
            "a.b",
            "xy",
            "x\ny",
            "host-12",
            "|",
        ];
        for p in patterns {
            let fast = Pattern::new(p).unwrap();
            let re = Regex::new(&format!("^(?:{p})$")).unwrap();
            for v in values {
                assert_eq!(
                    fast.is_match(v),
                    re.is_match(v),
                    "{p:?} on {v:?} ({fast:?})"
                );
            }
        }
    }
    use crate::model::LabelSet;

    fn labels() -> LabelSet {
        LabelSet::from_pairs([
            ("env", "staging"),
            ("severity", "info"),
            ("service", "checkout"),
        ])
    }

    #[test]
    fn alertmanager_semantics() {
        let l = labels();
        let m = |s: &str| Matcher::parse(s).unwrap().matches(&l);
        assert!(m(r#"env="staging""#));
        assert!(m("env=staging"));
        assert!(!m(r#"env!="staging""#));
        assert!(m(r#"severity=~"info|none""#));
        assert!(!m(r#"severity=~"inf""#), "regexes are anchored");
        assert!(m(r#"severity!~"critical|page""#));
        assert!(m(r#"team="""#), "a missing label matches the empty string");
        assert!(!m(r#"team=~".+""#));
        assert!(m(r#"service =~ "check.*""#));
        assert!(m(r#"env=~"\\w+""#) || m(r#"env=~"\w+""#));
    }

    #[test]
    fn precise_errors() {
        assert!(
            Matcher::parse(r#"severity=~"(unclosed""#)
                .unwrap_err()
                .contains("invalid regular expression")
        );
        assert!(
            Matcher::parse("severity")
                .unwrap_err()
                .contains("expected one of")
        );
        assert!(
            Matcher::parse(r#"=~"x""#)
                .unwrap_err()
                .contains("label name")
        );
        assert!(
            Matcher::parse(r#"a="unterminated"#)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(Matcher::parse("a=b,c").unwrap_err().contains("quote it"));
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(
            Matcher::parse("env != prod").unwrap().to_string(),
            r#"env!="prod""#
        );
    }
}
