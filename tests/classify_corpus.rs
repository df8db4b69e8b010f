//! The conformance corpus: every case of `tests/corpus/*.jsonl` through the library's
//! classifier, with the same input fields as the `classify` command line.
//!
//! Each line is one case: the input (`status`, `code`, `message`, `body`, `headers`,
//! `provider`, all optional), the expected `reason`, the expected `retry_after_ms` where the
//! case gives a wait, and the `source` its facts come from (a provider's published error
//! reference, an SDK's error classes, a runtime's error strings). The cases are written by the
//! project; a file holds one provider or one transport. The test fails listing every
//! disagreement, so a change to the rule table shows all it moves at once.

use std::collections::BTreeMap;
use std::path::Path;

use llm_failover::Reason;
use llm_failover::classify::{Signal, classify};
use serde::Deserialize;

/// One corpus line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    status: Option<u16>,
    code: Option<String>,
    message: Option<String>,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    provider: Option<String>,
    reason: Reason,
    retry_after_ms: Option<u64>,
    source: String,
}

impl Case {
    fn signal(&self) -> Signal<'_> {
        let mut s = Signal::new();
        if let Some(status) = self.status {
            s = s.status(status);
        }
        if let Some(code) = &self.code {
            s = s.code(code.as_str());
        }
        if let Some(message) = &self.message {
            s = s.message(message.as_str());
        }
        if let Some(body) = &self.body {
            s = s.body(body.as_str());
        }
        if let Some(provider) = &self.provider {
            s = s.provider(provider.as_str());
        }
        for (name, value) in &self.headers {
            s = s.header(name.as_str(), value.as_str());
        }
        s
    }
}

/// Every case, with the file and line it came from.
fn corpus() -> Vec<(String, Case)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()).unwrap_or_else(|e| panic!("{e}")))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let case: Case = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}:{}: not a corpus case: {e}", n + 1));
            cases.push((format!("{name}:{}", n + 1), case));
        }
    }
    cases
}

#[test]
fn every_corpus_case_is_classified_as_written() {
    let cases = corpus();
    assert!(cases.len() >= 600, "the corpus has {} cases", cases.len());
    let mut wrong = Vec::new();
    for (at, case) in &cases {
        assert!(
            !case.source.trim().is_empty(),
            "{at}: a case needs its source"
        );
        let c = classify(&case.signal());
        let wait = c
            .retry_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let wait_ok = case.retry_after_ms.is_none_or(|ms| wait == Some(ms));
        if c.reason != case.reason || !wait_ok {
            let input = case
                .message
                .as_deref()
                .or(case.body.as_deref())
                .or(case.code.as_deref())
                .unwrap_or("");
            let input: String = input.chars().take(120).collect();
            wrong.push(format!(
                "{at}: got {} (retry {wait:?}, {}), want {} (retry {:?}): {:?} {input:?}",
                c.reason, c.matched, case.reason, case.retry_after_ms, case.status
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases disagree:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}
