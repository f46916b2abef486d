//! Which rules can match an alert, without trying every rule.
//!
//! A rule list (impact rules, silences, inhibit rules, squad matchers) is
//! searched in order: the first rule that applies wins. With thousands of
//! rules a linear search costs microseconds per alert, so each list gets a
//! [`RuleIndex`], as a router indexes routes: every rule is filed under one
//! constraint it cannot match without, a label that must have one of a few
//! literal values (`service="checkout"`, `env=~"staging|dev"`) or the squad it
//! is limited to. Of a rule's constraints the one shared by the fewest rules
//! is chosen. Rules with no such constraint (only regexes or negations) are
//! always candidates.
//!
//! An alert's candidates are the rules filed under its own label values and
//! squad, plus the unfiled ones, visited in rule order. The index only narrows
//! the search: the caller still checks each candidate in full, so a candidate
//! set is always a superset of the rules that match, in the same order, and
//! results are the same as a linear search (`tests::index_agrees_with_a_linear_search`).

use super::{Matcher, SquadId};
use crate::model::{Labels, StrMap};
use std::cell::RefCell;
use std::collections::HashMap;

/// Below this many rules a linear search is as fast as the index.
const LINEAR_BELOW: usize = 16;

/// A constraint a rule cannot match without.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Constraint<'a> {
    /// The label must have one of these values (none empty).
    Label(&'a str, Vec<&'a str>),
    /// The alert's squad must be one of these.
    Squads(Vec<SquadId>),
}

#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    len: usize,
    /// Label name → value → ascending rule positions.
    by_label: Vec<(Box<str>, StrMap<Vec<u32>>)>,
    /// Squad → ascending rule positions.
    by_squad: Vec<Vec<u32>>,
    /// Rules filed under nothing, ascending.
    always: Vec<u32>,
}

/// The label constraints of a list of matchers (those that require values).
pub fn constraints(matchers: &[Matcher]) -> Vec<Constraint<'_>> {
    matchers
        .iter()
        .filter_map(|m| m.required_values().map(|v| Constraint::Label(&m.name, v)))
        .collect()
}

thread_local! {
    static CANDIDATES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl RuleIndex {
    /// Files each rule (by position) under its most selective constraint.
    pub fn new<'a>(rules: impl IntoIterator<Item = Vec<Constraint<'a>>>) -> RuleIndex {
        // A value or squad named twice (`a|a`) is one key: a rule is filed once.
        let rules: Vec<Vec<Constraint<'a>>> = rules
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|mut c| {
                        match &mut c {
                            Constraint::Label(_, vs) => {
                                vs.sort_unstable();
                                vs.dedup();
                            }
                            Constraint::Squads(s) => {
                                s.sort_unstable();
                                s.dedup();
                            }
                        }
                        c
                    })
                    .collect()
            })
            .collect();
        let mut index = RuleIndex {
            len: rules.len(),
            ..RuleIndex::default()
        };
        if rules.len() < LINEAR_BELOW {
            return index;
        }
        // How many rules could be filed under each key: a constraint's cost is
        // the sum over its keys, so a rare value is preferred to a common one.
        let mut shared: HashMap<(Option<&str>, &str, SquadId), u32> = HashMap::new();
        let keys = |c: &Constraint<'a>| -> Vec<(Option<&'a str>, &'a str, SquadId)> {
            match c {
                Constraint::Label(n, vs) => vs.iter().map(|v| (Some(*n), *v, 0)).collect(),
                Constraint::Squads(s) => s.iter().map(|&s| (None, "", s)).collect(),
            }
        };
        for r in &rules {
            for c in r {
                for k in keys(c) {
                    *shared.entry(k).or_default() += 1;
                }
            }
        }
        let mut by_label: HashMap<&str, StrMap<Vec<u32>>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            let best = r
                .iter()
                .min_by_key(|c| keys(c).iter().map(|k| shared[k] as u64).sum::<u64>());
            match best {
                None => index.always.push(i),
                Some(Constraint::Label(name, values)) => {
                    let map = by_label.entry(name).or_default();
                    for v in values {
                        map.entry((*v).into()).or_default().push(i);
                    }
                }
                Some(Constraint::Squads(squads)) => {
                    for &s in squads {
                        let s = s as usize;
                        if index.by_squad.len() <= s {
                            index.by_squad.resize_with(s + 1, Vec::new);
                        }
                        index.by_squad[s].push(i);
                    }
                }
            }
        }
        let mut by_label: Vec<_> = by_label
            .into_iter()
            .map(|(n, m)| (Box::<str>::from(n), m))
            .collect();
        // Deterministic, and the most used names first.
        by_label.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        index.by_label = by_label;
        index
    }

    /// Calls `f` with the position of every rule that may match an alert with
    /// these labels (of `squad`, when rules are limited to squads), in
    /// ascending order, until `f` returns `Some`.
    pub fn first<T>(
        &self,
        labels: &impl Labels,
        squad: Option<SquadId>,
        mut f: impl FnMut(usize) -> Option<T>,
    ) -> Option<T> {
        if self.len < LINEAR_BELOW {
            return (0..self.len).find_map(f);
        }
        // Taken out of the thread-local so `f` may search another index.
        let mut c = CANDIDATES.with(|c| std::mem::take(&mut *c.borrow_mut()));
        c.clear();
        for (name, values) in &self.by_label {
            if let Some(ids) = labels.get(name).and_then(|v| values.get(v)) {
                c.extend_from_slice(ids);
            }
        }
        if let Some(ids) = squad.and_then(|s| self.by_squad.get(s as usize)) {
            c.extend_from_slice(ids);
        }
        // A rule is filed under one label (one value of it) or its squads, so
        // it is found once at most, and never also in `always`: sorting the
        // few found and merging them with `always` gives rule order.
        c.sort_unstable();
        let (mut i, mut j) = (0, 0);
        let found = loop {
            let next = match (c.get(i), self.always.get(j)) {
                (Some(&a), Some(&b)) if a < b => {
                    i += 1;
                    a
                }
                (_, Some(&b)) => {
                    j += 1;
                    b
                }
                (Some(&a), None) => {
                    i += 1;
                    a
                }
                (None, None) => break None,
            };
            if let Some(t) = f(next as usize) {
                break Some(t);
            }
        };
        CANDIDATES.with(|slot| *slot.borrow_mut() = c);
        found
    }

    /// Calls `f` with every rule that may match, in ascending order.
    pub fn each(&self, labels: &impl Labels, squad: Option<SquadId>, mut f: impl FnMut(usize)) {
        self.first(labels, squad, |i| {
            f(i);
            None::<()>
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelSet;
    use crate::rules::matcher::{Op, all_match};
    use crate::sim::Rng;

    const NAMES: &[&str] = &["alertname", "env", "service", "severity", "team"];
    const VALUES: &[&str] = &["a", "b", "c", "d", ""];

    fn matcher(rng: &mut Rng) -> Matcher {
        let name = *rng.pick(NAMES);
        let (op, value) = match rng.below(7) {
            0 | 1 => (Op::Eq, rng.pick(VALUES).to_string()),
            2 => (Op::Re, format!("{}|{}", rng.pick(VALUES), rng.pick(VALUES))),
            3 => (Op::Re, "[ab]".to_string()),
            4 => (Op::Ne, rng.pick(VALUES).to_string()),
            5 => (Op::NotRe, format!("{}|c", rng.pick(VALUES))),
            _ => (Op::Re, format!("{}.*", rng.pick(VALUES))),
        };
        Matcher::new(name, op, &value).expect("valid matcher")
    }

    /// Random rules over a few names and values (so that many rules share
    /// keys), each maybe limited to squads; random alerts; the index must
    /// find the same first rule and the same set of rules as trying each.
    #[test]
    fn index_agrees_with_a_linear_search() {
        let mut rng = Rng::new(7);
        for round in 0..40 {
            let n = [3, 15, 16, 40, 300][round % 5];
            let rules: Vec<(Vec<Matcher>, Vec<SquadId>)> = (0..n)
                .map(|_| {
                    let matchers = (0..rng.below(4)).map(|_| matcher(&mut rng)).collect();
                    let squads = (0..rng.below(3)).map(|_| rng.below(4) as SquadId).collect();
                    (matchers, squads)
                })
                .collect();
            let index = RuleIndex::new(rules.iter().map(|(m, squads)| {
                let mut c = constraints(m);
                if !squads.is_empty() {
                    c.push(Constraint::Squads(squads.clone()));
                }
                c
            }));
            for _ in 0..200 {
                let mut pairs: Vec<(&str, &str)> = Vec::new();
                for n in NAMES {
                    if rng.chance(0.7) {
                        pairs.push((*n, *rng.pick(VALUES)));
                    }
                }
                let labels = LabelSet::from_pairs(pairs);
                let squad = rng.below(5) as SquadId;
                let applies = |i: usize| {
                    let (m, squads) = &rules[i];
                    all_match(m, &labels) && (squads.is_empty() || squads.contains(&squad))
                };
                let linear: Vec<usize> = (0..n).filter(|&i| applies(i)).collect();
                let mut visited = Vec::new();
                index.each(&labels, Some(squad), |i| visited.push(i));
                assert!(
                    visited.windows(2).all(|w| w[0] < w[1]),
                    "in order, once each"
                );
                let found: Vec<usize> = visited.into_iter().filter(|&i| applies(i)).collect();
                assert_eq!(
                    found, linear,
                    "rules {rules:?}, labels {labels}, squad {squad}"
                );
                assert_eq!(
                    index.first(&labels, Some(squad), |i| applies(i).then_some(i)),
                    linear.first().copied()
                );
            }
        }
    }

    #[test]
    fn an_alert_visits_only_the_rules_filed_under_its_values() {
        let rules: Vec<Matcher> = (0..1000)
            .map(|i| Matcher::new("service", Op::Eq, &format!("svc-{i}")).unwrap())
            .collect();
        let index = RuleIndex::new(
            rules
                .iter()
                .map(|m| vec![Constraint::Label(&m.name, m.required_values().unwrap())]),
        );
        let labels = LabelSet::from_pairs([("alertname", "X"), ("service", "svc-42")]);
        let mut visited = Vec::new();
        index.each(&labels, None, |i| visited.push(i));
        assert_eq!(visited, vec![42]);
    }
}
