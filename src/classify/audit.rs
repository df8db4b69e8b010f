//! The table checked against the conformance corpus for contradictions.
//!
//! Two families of different reasons in the same tier that both may decide one case
//! contradict each other, unless [`PRECEDENCE`] writes the overlap down (with its why) and
//! the table orders the pair that way. Across tiers the tier decides, and a test checks the
//! table is sorted by tier. The check runs every case of `tests/corpus/*.jsonl` through the
//! same evidence step the classifier uses ([`Evidence`]), so an overlap it reports is one the
//! classifier meets.

use std::path::Path;

use super::rules::{PRECEDENCE, RULES, Rule, Tier};
use super::table::{TABLE, Table};
use super::{Evidence, Scan, Signal, read, status_of};

/// One case of the corpus: its place and its input (the `classify` CLI's fields).
struct Case {
    at: String,
    value: serde_json::Value,
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if let Ok(value) = serde_json::from_str(line) {
                cases.push(Case {
                    at: format!("{name}:{}", n + 1),
                    value,
                });
            }
        }
    }
    cases
}

fn signal(v: &serde_json::Value) -> Signal<'_> {
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    let mut s = Signal::new();
    if let Some(status) = v
        .get("status")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
    {
        s = s.status(status);
    }
    if let Some(c) = text("code") {
        s = s.code(c);
    }
    if let Some(m) = text("message") {
        s = s.message(m);
    }
    if let Some(b) = text("body") {
        s = s.body(b);
    }
    if let Some(p) = text("provider") {
        s = s.provider(p);
    }
    for (name, value) in v
        .get("headers")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(value) = value.as_str() {
            s = s.header(name.as_str(), value);
        }
    }
    s
}

/// Every contradiction of `table` on `cases`, and every [`PRECEDENCE`] entry that names no
/// family of the table.
fn contradictions(table: &Table, cases: &[Case]) -> Vec<String> {
    let mut found = Vec::new();
    for case in cases {
        let s = signal(&case.value);
        // The families that may decide, each at its first row, in table order.
        let families: Vec<(usize, Rule)> = read(&s, |structured, texts| {
            let status = status_of(&s, structured, texts);
            let evidence = Evidence::gather(table, &s, structured, texts, status, Scan::Every);
            let mut seen: Vec<(usize, Rule)> = Vec::new();
            for (i, r) in evidence.eligible(table, s.provider.as_deref()) {
                if !seen.iter().any(|(_, f)| f.family == r.family) {
                    seen.push((i, *r));
                }
            }
            seen
        });
        for (n, (i, a)) in families.iter().enumerate() {
            for (j, b) in &families[n + 1..] {
                if a.reason == b.reason || a.tier != b.tier {
                    continue;
                }
                let written =
                    |w: &str, l: &str| PRECEDENCE.iter().any(|(pw, pl, _)| *pw == w && *pl == l);
                if written(b.family, a.family) {
                    found.push(format!(
                        "{}: PRECEDENCE puts {} over {}, the table the other way (rows {i}, {j})",
                        case.at, b.family, a.family
                    ));
                } else if !written(a.family, b.family) {
                    found.push(format!(
                        "{}: {} ({}) and {} ({}) both match; order them in PRECEDENCE with a why",
                        case.at, a.family, a.reason, b.family, b.reason
                    ));
                }
            }
        }
    }
    for (w, l, _) in PRECEDENCE {
        for f in [w, l] {
            if !table.rules.iter().any(|r| r.family == *f) {
                found.push(format!("PRECEDENCE names {f}, no family of the table"));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_table_meets_the_corpus_without_contradictions() {
    let cases = corpus();
    assert!(cases.len() >= 600, "the corpus has {} cases", cases.len());
    let found = contradictions(&TABLE, &cases);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_verdict_scan_decides_as_a_scan_of_every_row() {
    let mut spared = 0;
    for case in corpus() {
        let s = signal(&case.value);
        let (every, verdict) = read(&s, |structured, texts| {
            let status = status_of(&s, structured, texts);
            let scan = |scan| {
                let evidence = Evidence::gather(&TABLE, &s, structured, texts, status, scan);
                let first = evidence.eligible(&TABLE, s.provider.as_deref()).next();
                (first.map(|(i, _)| i), evidence.hits.iter().count())
            };
            (scan(Scan::Every), scan(Scan::Verdict))
        });
        assert_eq!(every.0, verdict.0, "{}: the scans disagree", case.at);
        spared += usize::from(verdict.1 < every.1);
    }
    // Structured answers whose code decides skip the wordings they also match.
    assert!(spared > 0);
}

#[test]
fn a_contradictory_rule_added_to_the_table_is_caught() {
    use crate::reason::Reason;
    // A new wording that calls every "rate limit" billing, put among the wordings.
    let rogue = Rule {
        family: "rogue_billing",
        reason: Reason::Billing,
        without_status: Reason::Billing,
        matcher: super::rules::Matcher::Words(&[r"rate limit"]),
        tier: Tier::Wording,
        providers: &[],
    };
    let at = RULES
        .iter()
        .position(|r| r.tier == Tier::Wording)
        .unwrap_or_default();
    let mut rules = RULES.to_vec();
    rules.insert(at, rogue);
    let Ok(table) = Table::new(Box::leak(rules.into_boxed_slice())) else {
        panic!("the extended table compiles");
    };
    let found = contradictions(&table, &corpus());
    assert!(
        found
            .iter()
            .any(|f| f.contains("rogue_billing (billing) and rate_limit (rate_limit)")),
        "{}",
        found.join("\n")
    );
    assert!(found.iter().all(|f| !f.starts_with("PRECEDENCE names")));
}
