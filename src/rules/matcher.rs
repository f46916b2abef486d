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

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: Box<str>,
    pub op: Op,
    pub value: Box<str>,
    re: Option<Regex>,
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
            Op::Re | Op::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value: value.into(),
            re,
        })
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
