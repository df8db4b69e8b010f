//! `llm-failover demo` end to end: the real binary, stdout a pipe (plain mode), everything on
//! 127.0.0.1.

use std::collections::BTreeMap;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_llm-failover");

/// The `key=count` pairs of the first line that starts with `prefix`.
fn counts(out: &str, prefix: &str) -> BTreeMap<String, u64> {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// The index of the first line containing `needle`.
fn line_of(out: &str, needle: &str) -> usize {
    out.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
}

#[test]
fn the_demo_fails_over_during_the_outage_and_returns_to_the_primary() {
    // Six seconds hold the whole cycle: the outage starts at 1.5s and ends at 3.3s, and the
    // breaker's longest open time is 0.6s.
    let run = std::process::Command::new(BIN)
        .args(["demo", "--duration", "6s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8(run.stdout).unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{:?}\n{out}\n{err}", run.status);

    let metrics = line_of(&out, "metrics:");
    assert!(
        out.lines()
            .nth(metrics)
            .unwrap()
            .contains("curl http://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("/metrics"), "{out}");

    // Where requests were served, phase by phase, read from the proxy's response headers.
    let healthy = counts(&out, "summary: phase=healthy served");
    let outage = counts(&out, "summary: phase=outage served");
    let recovered = counts(&out, "summary: phase=recovered served");
    // The chat route (chat completions, Messages, Responses) and the embeddings route: one
    // model on both hosts, so embeddings fail over too.
    for (primary, fallback) in [
        ("local/llama3", "cloud/gpt-4o-mini"),
        ("local/nomic-embed-text", "cloud/nomic-embed-text"),
    ] {
        assert!(healthy[primary] > 0, "{primary}\n{out}");
        assert_eq!(outage[primary], 0, "{primary}\n{out}");
        assert!(outage[fallback] > 0, "{fallback}\n{out}");
        assert!(recovered[primary] > 0, "{primary}\n{out}");
    }

    // The provider-wide breaker opened on refused connections during the outage and closed
    // after the recovery; it is closed at the end.
    let outage_at = line_of(&out, "phase outage: local host powered off");
    let opened = line_of(&out, "breaker local/* closed -> open: connection_refused");
    let recovered_at = line_of(&out, "phase recovered:");
    let closed = line_of(&out, "breaker local/* half_open -> closed");
    assert!(
        outage_at < opened && opened < recovered_at && recovered_at < closed,
        "{out}"
    );
    assert!(
        out.contains("summary: breaker local/* state=closed"),
        "{out}"
    );
    assert!(
        counts(&out, "summary: failovers")["connection_refused"] > 0,
        "{out}"
    );

    // The fallback was healthy: no client saw an error, streaming or not, on any API.
    let requests = counts(&out, "summary: requests");
    assert_eq!(requests["error"], 0, "{out}");
    assert_eq!(requests["ok"], requests["requests"], "{out}");
    assert!(
        requests["streamed"] > 0 && requests["non_streamed"] > 0,
        "{out}"
    );
    let apis = ["chat", "messages", "responses", "embeddings"];
    for api in apis {
        assert!(requests[api] > 0, "{api}\n{out}");
    }
    assert_eq!(
        apis.iter().map(|a| requests[*a]).sum::<u64>(),
        requests["requests"],
        "{out}"
    );
    assert!(out.contains("summary: errors none"), "{out}");
    assert!(out.contains("ended by the set duration"), "{out}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_demo_serves_metrics_while_it_runs_and_stops_on_sigterm() {
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo", "--duration", "10m"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        lines
            .next_line()
            .await
            .unwrap()
            .expect("the demo ended before it was stopped")
    };

    let url = loop {
        let line = next().await;
        if let Some(url) = line.strip_prefix("metrics:").map(str::trim) {
            break url.strip_prefix("curl ").unwrap().to_owned();
        }
    };
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let scrape = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        scrape
            .contains(r#"llm_failover_breaker_state{provider="local",model="*",state="closed"} 1"#),
        "{scrape}"
    );

    // Once a request has been answered, it is counted too.
    while !next().await.contains("served by local/llama3") {}
    let scrape = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        scrape.contains(r#"llm_failover_requests_total{route="chat",outcome="ok"}"#),
        "{scrape}"
    );

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    let status = child.wait().await.unwrap();
    let rest = rest.join("\n");
    assert!(status.success(), "{status:?}\n{rest}");
    assert!(rest.contains("ended by a stop signal"), "{rest}");
    assert!(rest.contains("summary: errors none"), "{rest}");
}
