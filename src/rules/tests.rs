//! Rule compilation: every error is found, and each names file, line and rule.

use super::*;

fn compile_one(text: &str) -> Result<RuleSet, RuleErrors> {
    compile(&[("rules/x.yaml".into(), text.to_owned())])
}

fn errors(text: &str) -> Vec<RuleError> {
    compile_one(text).expect_err("rules should be rejected").0
}

#[test]
fn shipped_example_rules_compile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.squads.len() >= 4);
    assert!(rules.squads.iter().any(|s| !s.core_services.is_empty()));
    assert!(rules.squads.iter().all(|s| s.goalkeeper.is_some()));
    assert!(!rules.inhibit_rules.is_empty() && !rules.impact_rules.is_empty());
}

#[test]
fn every_error_displays_on_one_line() {
    for text in [
        "squads:\n  - name: a\n    services: [x, y\n",
        "squads: [\n\t- a\n",
        "impact_rules:\n  - name: x\n    match: ['a=~\"(\"']\n    action: drop\n",
        "a: b: c\n",
    ] {
        for e in errors(text) {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let e = errors("squads:\n  - name: a\n    services: [x, y\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].file, PathBuf::from("rules/x.yaml"));
    assert!(e[0].line >= 3, "{}", e[0]);
}

#[test]
fn unknown_field_is_rejected_with_its_location() {
    let e = errors("squads:\n  - name: a\n    servces: [x]\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 3, "{}", e[0]);
    assert!(e[0].message.contains("unknown field `servces`"), "{}", e[0]);
}

#[test]
fn invalid_matcher_and_regex_name_the_rule_and_line() {
    let text = "squads:\n  - name: a\n    services: [x]\nimpact_rules:\n  - name: r1\n    match: ['severity']\n    action: drop\n  - name: r2\n    match: ['env=~\"(unclosed\"']\n    action: drop\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "all errors are reported: {e:?}");
    assert_eq!(
        (e[0].line, e[0].rule.as_deref()),
        (6, Some("impact rule \"r1\""))
    );
    assert!(e[0].message.contains("expected one of"));
    assert_eq!(
        (e[1].line, e[1].rule.as_deref()),
        (9, Some("impact rule \"r2\""))
    );
    assert!(e[1].message.contains("invalid regular expression"));
    assert!(e[1].to_string().starts_with("rules/x.yaml:9:"), "{}", e[1]);
}

#[test]
fn unknown_squad_references_are_errors() {
    let text = "ownership:\n  fallback_squad: nobody\nsquads:\n  - name: a\n    services: [x]\nimpact_rules:\n  - name: r\n    squads: [ghost]\n    match: ['a=b']\n    action: drop\ninhibit_rules:\n  - name: i\n    squad: phantom\n    source_matchers: ['a=b']\n    target_matchers: ['c=d']\n";
    let e = errors(text);
    let msgs: Vec<String> = e
        .iter()
        .map(|e| format!("{}:{}", e.line, e.message))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("2:") && m.contains("\"nobody\"")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("8:") && m.contains("unknown squad \"ghost\"")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("13:") && m.contains("unknown squad \"phantom\"")),
        "{msgs:?}"
    );
}

#[test]
fn errors_across_files_are_all_reported() {
    let e = compile(&[
        (
            "rules/a.yaml".into(),
            "squads:\n  - name: a\n    services: [x]\n".into(),
        ),
        (
            "rules/b.yaml".into(),
            "squads:\n  - name: b\n    services: [x]\n".into(),
        ),
        (
            "rules/c.yaml".into(),
            "grouping:\n  group_wait: soon\n".into(),
        ),
    ])
    .unwrap_err()
    .0;
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].file, PathBuf::from("rules/b.yaml"));
    assert!(e[0].message.contains("already owned by squad \"a\""));
    assert_eq!((e[1].file.to_str(), e[1].line), (Some("rules/c.yaml"), 2));
}

#[test]
fn semantic_checks() {
    let cases = [
        (
            "squads:\n  - name: a\n  - name: a\n",
            "duplicate squad name",
        ),
        (
            // Found by the `rules` fuzz target: this once indexed past the end.
            "squads:\n  - name: a\n    services: [x, x]\n",
            "service \"x\" is listed twice",
        ),
        (
            "squads:\n  - name: a\n    services: [x]\n    core_services: [y]\n",
            "not among the squad's services",
        ),
        (
            "squads:\n  - name: a\n    topic: 'bad topic!'\n",
            "legal Kafka topic",
        ),
        (
            "squads:\n  - name: a\n    goalkeeper: {timezone: Mars/Base}\n",
            "unknown time zone",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r, webhook: {url: 'ftp://x'}}]\n",
            "http://",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r}]\n",
            "exactly one of",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r, webhook: {headers: {A: b}}}]\n",
            "needs url or url_file",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r, slack: {url: 'http://x', url_file: /s}}]\n",
            "takes one of url or url_file, not both",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r, pagerduty: {}}]\n",
            "needs routing_key or routing_key_file",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r, webhook: {url: {env: ''}}}]\n",
            "env is empty",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r, webhook: {url: {path: x}}}]\n",
            "{file: PATH} or {env: NAME}",
        ),
        (
            "squads:\n  - name: a\n    receivers: [{name: r, timeout: 0s, webhook: {url: 'http://x'}}]\n",
            "timeout: must be greater than 0",
        ),
        (
            "impact_rules:\n  - name: r\n    match: ['a=b']\n    action: drop\n    active_time_intervals: [never]\n",
            "unknown time interval",
        ),
        (
            "impact_rules:\n  - name: r\n    match: []\n    action: drop\n",
            "match is empty",
        ),
        (
            "silences:\n  - matchers: ['a=b']\n    starts_at: '2026-01-02T00:00:00Z'\n    ends_at: '2026-01-01T00:00:00Z'\n    created_by: x\n    comment: y\n",
            "after starts_at",
        ),
        (
            "inhibit_rules:\n  - name: i\n    target_matchers: ['a=b']\n",
            "source_matchers or sources",
        ),
        (
            "flap_detection: {max_changes: 0, window: 5m}\n",
            "max_changes >= 1",
        ),
        ("grouping: {group_interval: 0s}\n", "greater than 0"),
    ];
    for (text, want) in cases {
        let e = errors(text);
        assert!(
            e.iter().any(|e| e.message.contains(want)),
            "{text:?}: want {want:?}, got {e:?}"
        );
    }
}

#[test]
fn a_section_may_be_set_in_one_file_only() {
    let e = compile(&[
        ("a.yaml".into(), "grouping: {group_wait: 1s}\n".into()),
        ("b.yaml".into(), "grouping: {group_wait: 2s}\n".into()),
    ])
    .unwrap_err()
    .0;
    assert!(e[0].message.contains("already set in a.yaml"), "{e:?}");
}

#[test]
fn defaults_are_alertmanagers() {
    let r = compile_one("").unwrap();
    assert_eq!(&*r.squads[r.fallback as usize].name, DEFAULT_FALLBACK_SQUAD);
    let g = &r.squads[0].grouping;
    assert_eq!(
        (g.group_wait, g.group_interval, g.repeat_interval),
        (
            DEFAULT_GROUP_WAIT,
            DEFAULT_GROUP_INTERVAL,
            DEFAULT_REPEAT_INTERVAL
        )
    );
    assert_eq!(
        g.group_by,
        vec!["alertname".into(), "service".into()] as Vec<Box<str>>
    );
}

#[test]
fn per_squad_grouping_overrides_only_what_it_sets() {
    let r = compile_one("grouping: {group_wait: 5s, repeat_interval: 1h}\nsquads:\n  - name: a\n    grouping: {group_wait: 1s}\n").unwrap();
    let g = &r.squads[0].grouping;
    assert_eq!(g.group_wait, Duration::from_secs(1));
    assert_eq!(g.repeat_interval, Duration::from_secs(3600));
}

#[test]
fn ownership_resolution_order() {
    let r = compile_one(
        "ownership: {service_labels: [service, app], fallback_squad: ops}\nsquads:\n  - name: ops\n  - name: web\n    services: [site]\n    core_services: [site]\n  - name: data\n    match: ['namespace=\"etl\"']\n",
    )
    .unwrap();
    let owner = |pairs: &[(&str, &str)]| {
        let o = r.owner(&crate::model::LabelSet::from_pairs(pairs.iter().copied()));
        (r.squads[o.squad as usize].name.to_string(), o.core)
    };
    assert_eq!(owner(&[("service", "site")]), ("web".into(), true));
    assert_eq!(owner(&[("app", "site")]), ("web".into(), true));
    assert_eq!(
        owner(&[("service", ""), ("app", "site")]),
        ("web".into(), true),
        "empty values are absent"
    );
    assert_eq!(owner(&[("namespace", "etl")]), ("data".into(), false));
    assert_eq!(owner(&[("service", "mystery")]), ("ops".into(), false));
}

#[test]
fn alerts_of_one_group_share_its_hash_and_other_groups_do_not() {
    let rules = compile_one(
        "squads:\n  - name: a\n    services: [x]\n    grouping: {group_by: [alertname, service]}\n  - name: b\n    services: [y]\n    grouping: {group_by: ['...']}\n",
    )
    .unwrap();
    let l = |pairs: &[(&str, &str)]| LabelSet::from_pairs(pairs.iter().copied());
    let a = rules.squad_by_name("a").unwrap();
    let b = rules.squad_by_name("b").unwrap();
    let one = l(&[("alertname", "Down"), ("service", "x"), ("pod", "p1")]);
    let same_group = l(&[("alertname", "Down"), ("service", "x"), ("pod", "p2")]);
    let other_group = l(&[("alertname", "Up"), ("service", "x"), ("pod", "p1")]);
    assert_eq!(rules.group_of(a, &one).1, rules.group_of(a, &same_group).1);
    assert_eq!(rules.group_hash(a, &one), rules.group_hash(a, &same_group));
    assert_ne!(rules.group_hash(a, &one), rules.group_hash(a, &other_group));
    assert_ne!(
        rules.group_hash(a, &one),
        rules.group_hash(b, &one),
        "squads differ"
    );
    // `...`: every label is the group.
    assert_ne!(rules.group_hash(b, &one), rules.group_hash(b, &same_group));
    // Label values cannot run into names: ("ab","c") is not ("a","bc").
    let x = l(&[("alertname", "ab"), ("service", "c")]);
    let y = l(&[("alertname", "a"), ("service", "bc")]);
    assert_ne!(rules.group_hash(a, &x), rules.group_hash(a, &y));
}

/// A rules directory where a dangling symlink, a symlink loop, a directory
/// and a FIFO are named like rule files: each is an error, none is skipped.
#[test]
fn anything_named_like_a_rule_file_must_be_one() {
    let base = std::env::temp_dir().join(format!("squadron-rules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("squads.yaml"),
        "ownership: {fallback_squad: a}\nsquads:\n  - name: a\n    services: [x]\n    topic: t\n",
    )
    .unwrap();
    let good = load_dir(&base).unwrap_or_else(|e| panic!("{e}"));
    // The digest does not depend on how the directory is named.
    let elsewhere = base.with_extension("copy");
    let _ = std::fs::remove_dir_all(&elsewhere);
    std::fs::create_dir_all(&elsewhere).unwrap();
    for f in std::fs::read_dir(&base).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, elsewhere.join(p.file_name().unwrap())).unwrap();
    }
    assert_eq!(load_dir(&elsewhere).unwrap().digest, good.digest);
    assert_eq!(
        load_dir(&base.join("..").join(base.file_name().unwrap()))
            .unwrap()
            .digest,
        good.digest
    );

    std::os::unix::fs::symlink(base.join("missing.yaml"), base.join("dangling.yaml")).unwrap();
    std::os::unix::fs::symlink(base.join("loop-b.yaml"), base.join("loop-a.yaml")).unwrap();
    std::os::unix::fs::symlink(base.join("loop-a.yaml"), base.join("loop-b.yaml")).unwrap();
    std::fs::create_dir(base.join("folder.yaml")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(base.join("pipe.yml"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let errs = load_dir(&base).expect_err("every odd entry is an error").0;
    let named = |n: &str| {
        errs.iter()
            .find(|e| e.file.file_name().unwrap() == n)
            .unwrap_or_else(|| panic!("no error for {n}: {errs:?}"))
            .message
            .clone()
    };
    assert!(named("dangling.yaml").contains("symlink"));
    assert!(named("loop-a.yaml").contains("symlink"));
    assert!(named("folder.yaml").contains("directory"));
    assert!(named("pipe.yml").contains("not a regular file"));
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

/// The example rules plus a large organisation's (`sim::large_rules`), asked
/// through the indexes, answer every alert of the generated hour as a linear
/// search over each rule list does: owner, first impact rule, rule-file
/// silence, inhibit rules whose targets match, and every source matched.
#[test]
fn indexed_rule_lists_answer_as_linear_searches_on_the_generated_hour() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = load_dir_with(
        &dir,
        &[("90-large.yaml".into(), crate::sim::large_rules(60))],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let start = Ts(1_764_147_600_000);
    let mut scenario = crate::sim::Scenario::hour(start);
    scenario.duration = Duration::from_secs(600);
    let events = crate::sim::generate(&scenario);
    let (mut alerts, mut impact_hits, mut inhibit_hits) = (0, 0, 0);
    for e in &events {
        let Ok(decoded) = crate::decode::decode(&e.message) else {
            continue;
        };
        for a in decoded.alerts.into_iter().flatten() {
            alerts += 1;
            let l = &a.labels;
            let owner = rules.owner(l);
            let linear_squad = rules
                .service_of(l)
                .and_then(|s| rules.service_owner.get(s).copied())
                .or_else(|| {
                    rules
                        .squad_matchers
                        .iter()
                        .find(|(_, m)| all_match(m, l))
                        .map(|(id, _)| *id)
                })
                .unwrap_or(rules.fallback);
            assert_eq!(owner.squad, linear_squad);
            let applies = |r: &ImpactRule| r.squads.is_empty() || r.squads.contains(&owner.squad);
            let linear = rules
                .impact_rules
                .iter()
                .position(|r| applies(r) && all_match(&r.matchers, l));
            let indexed = rules.impact_rule(l, owner.squad, |r| {
                applies(r).then(|| {
                    rules
                        .impact_rules
                        .iter()
                        .position(|x| std::ptr::eq(x, r))
                        .unwrap()
                })
            });
            assert_eq!(indexed, linear, "{l:?}");
            impact_hits += linear.is_some() as usize;
            for at in [start, e.at] {
                let linear = rules
                    .silences
                    .iter()
                    .find(|s| s.active_at(at) && all_match(&s.matchers, l));
                assert_eq!(
                    rules.silence_of(l, at).map(|s| &s.id),
                    linear.map(|s| &s.id)
                );
            }
            let linear: Vec<usize> = (0..rules.inhibit_rules.len())
                .filter(|&i| {
                    let r = &rules.inhibit_rules[i];
                    r.squad.is_none_or(|s| s == owner.squad) && all_match(&r.targets, l)
                })
                .collect();
            let mut indexed = Vec::new();
            rules.inhibiting_rule(l, owner.squad, |i, _| {
                indexed.push(i);
                None::<()>
            });
            assert_eq!(indexed, linear);
            inhibit_hits += linear.len();
            let linear: Vec<(usize, usize)> = rules
                .inhibit_rules
                .iter()
                .enumerate()
                .flat_map(|(r, rule)| rule.sources.iter().enumerate().map(move |(n, m)| (r, n, m)))
                .filter(|(_, _, m)| all_match(m, l))
                .map(|(r, n, _)| (r, n))
                .collect();
            let mut indexed = Vec::new();
            rules.each_source(l, |r, n| indexed.push((r, n)));
            assert_eq!(indexed, linear);
        }
    }
    // The comparison means something only if the rules decide things.
    assert!(
        alerts > 10_000 && impact_hits > 1_000 && inhibit_hits > 100,
        "{alerts} {impact_hits} {inhibit_hits}"
    );
}
