//! Every sim fault end to end through the proxy, streaming and not: what the client sees
//! (status, headers, body, a complete or a cleanly failed stream) and what each upstream saw.
//!
//! The main test is a table: one row per fault × mode, on a route [faulty primary on sim `a`,
//! healthy `gpt-4o-mini` on sim `b`]. Each row gets its own sims and proxy (so breakers start
//! closed) and the rows run concurrently; every mismatch of every row is reported at once,
//! each naming its row.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::future::join_all;
use llm_failover::sim::{ANSWER, Sim, answer_tokens};
use serde_json::Value;

use super::proxy::{Running, config, sse_data, start, streamed_text};
use crate::support::{get_json, status_breaker};

/// The healthy fallback's model on sim `b`.
const FALLBACK: &str = "gpt-4o-mini";

/// How long a row may take before it counts as hung. Far above any timeout in the config
/// (attempt 2 s, TTFT 1 s, idle 500 ms, total 10 s): only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);

/// What the body of a row's response must be.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The whole [`ANSWER`]; for a stream, every chunk, then `[DONE]` last and once.
    Answer,
    /// A stream that broke after `tokens` tokens: those tokens, then exactly one `error`
    /// event whose reason is `reason`, and no `[DONE]`.
    Broken { tokens: usize, reason: &'static str },
    /// No answer: an OpenAI-style JSON error whose `code` is `code` (the provider's own, for
    /// an error returned as it is) and whose failover details name `reason` and every attempt.
    Error {
        code: &'static str,
        reason: &'static str,
    },
}

/// Which sim: `a` holds the primary, `b` the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    A,
    B,
}
use Upstream::{A, B};

/// One fault × mode.
#[derive(Debug, Clone)]
struct Row {
    /// The primary's model on sim `a` (its name picks the fault).
    model: &'static str,
    /// What else sets this row apart, for its name.
    note: &'static str,
    /// Sim `a` refuses connections (the host is down).
    down: bool,
    stream: bool,
    /// The targets of the route `chat`.
    targets: Vec<String>,
    /// Appended to the config (inside `[routes.chat]` until another table starts).
    extra: &'static str,
    status: u16,
    /// `x-failover-trail`, exactly. For a stream that breaks after its first token, the
    /// trail as it was when the headers went out (the committed target `=ok`).
    trail: &'static str,
    /// `Retry-After`, exactly (`None`: absent).
    retry_after: Option<&'static str>,
    /// Chat requests seen per sim and model; a sim sees no request but these.
    seen: Vec<(Upstream, &'static str, u64)>,
    want: Want,
}

impl Row {
    fn name(&self) -> String {
        format!(
            "{}{}{} ({})",
            self.model,
            if self.down { " on a refusing host" } else { "" },
            self.note,
            if self.stream { "stream" } else { "non-stream" }
        )
    }
}

/// A row on the route [faulty primary on `a`, healthy fallback on `b`]; `seen` counts the
/// requests for the primary on `a` and for the fallback on `b`.
fn one(
    model: &'static str,
    stream: bool,
    status: u16,
    trail: &'static str,
    seen: (u64, u64),
    want: Want,
) -> Row {
    Row {
        model,
        note: "",
        down: false,
        stream,
        targets: vec![format!("a/{model}"), format!("b/{FALLBACK}")],
        extra: "",
        status,
        trail,
        retry_after: None,
        seen: vec![(A, model, seen.0), (B, FALLBACK, seen.1)],
        want,
    }
}

/// [`one`] in both modes.
fn both(
    model: &'static str,
    status: u16,
    trail: &'static str,
    seen: (u64, u64),
    want: Want,
) -> [Row; 2] {
    [false, true].map(|stream| one(model, stream, status, trail, seen, want))
}

/// A row on a route whose only target is `model` on `a`.
fn alone(
    model: &'static str,
    stream: bool,
    status: u16,
    trail: &'static str,
    seen: u64,
    want: Want,
) -> Row {
    Row {
        note: " as the only target",
        targets: vec![format!("a/{model}")],
        seen: vec![(A, model, seen)],
        ..one(model, stream, status, trail, (seen, 0), want)
    }
}

/// Every fault on [faulty primary, healthy fallback], in both modes.
fn fault_rows() -> Vec<Row> {
    use Want::{Answer, Broken, Error};
    let mut rows = Vec::new();
    // Healthy, and slow but within every limit: the primary answers.
    rows.extend(both("sim-ok", 200, "a/sim-ok=ok", (1, 0), Answer));
    rows.extend(both(
        "sim-slow-200ms",
        200,
        "a/sim-slow-200ms=ok",
        (1, 0),
        Answer,
    ));
    // The host refuses connections: nothing reaches sim a.
    for stream in [false, true] {
        rows.push(Row {
            down: true,
            ..one(
                "llama3",
                stream,
                200,
                "a/llama3=connection_refused; b/gpt-4o-mini=ok",
                (0, 1),
                Answer,
            )
        });
    }
    // Statuses that fail over at once.
    rows.extend(both(
        "sim-503",
        200,
        "a/sim-503=overloaded; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.extend(both(
        "sim-529",
        200,
        "a/sim-529=overloaded; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.extend(both(
        "sim-401",
        200,
        "a/sim-401=auth; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.extend(both(
        "sim-404",
        200,
        "a/sim-404=model_not_found; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    // A 500 is retried once on the primary, then the fallback answers.
    rows.extend(both(
        "sim-500",
        200,
        "a/sim-500=server_error; a/sim-500=server_error; b/gpt-4o-mini=ok",
        (2, 1),
        Answer,
    ));
    // A lone 500: the retry on the primary answers; the fallback never hears of it.
    rows.extend(both(
        "sim-500-once",
        200,
        "a/sim-500-once=server_error; a/sim-500-once=ok",
        (2, 0),
        Answer,
    ));
    // Rate limits without a wait or with a short one are retried once; a wait longer than
    // the route's max_retry_wait (5 s) fails over at once.
    rows.extend(both(
        "sim-429",
        200,
        "a/sim-429=rate_limit; a/sim-429=rate_limit; b/gpt-4o-mini=ok",
        (2, 1),
        Answer,
    ));
    rows.extend(both(
        "sim-429-retry-250ms",
        200,
        "a/sim-429-retry-250ms=rate_limit; a/sim-429-retry-250ms=rate_limit; b/gpt-4o-mini=ok",
        (2, 1),
        Answer,
    ));
    rows.extend(both(
        "sim-429-retry-30",
        200,
        "a/sim-429-retry-30=rate_limit; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    // A reset before any byte of the response: retried once, then the fallback.
    rows.extend(both(
        "sim-reset",
        200,
        "a/sim-reset=connection_reset; a/sim-reset=connection_reset; b/gpt-4o-mini=ok",
        (2, 1),
        Answer,
    ));
    // Silent, or slower than the attempt timeout (2 s; streaming, the TTFT timeout, 1 s):
    // one attempt, a timeout, then the fallback.
    rows.extend(both(
        "sim-silent",
        200,
        "a/sim-silent=timeout; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.extend(both(
        "sim-slow-3s",
        200,
        "a/sim-slow-3s=timeout; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    // Returned as they are: a 400 with the provider's code; the fallback is never asked.
    rows.extend(both(
        "sim-context",
        400,
        "a/sim-context=context_overflow",
        (1, 0),
        Error {
            code: "context_length_exceeded",
            reason: "context_overflow",
        },
    ));
    rows.extend(both(
        "sim-filter",
        400,
        "a/sim-filter=content_filter",
        (1, 0),
        Error {
            code: "content_filter",
            reason: "content_filter",
        },
    ));
    // No [DONE]: the answer is whole at its finish_reason, and the proxy ends it with [DONE].
    rows.extend(both("sim-no-done", 200, "a/sim-no-done=ok", (1, 0), Answer));
    // Cut, stalled or malformed after three tokens. Not streaming, the body is short, never
    // ends or is not JSON: the fallback answers. Streaming, the proxy has committed: the
    // client gets the three tokens and one error event.
    rows.push(one(
        "sim-cut-3",
        false,
        200,
        "a/sim-cut-3=stream_interrupted; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.push(one(
        "sim-cut-3",
        true,
        200,
        "a/sim-cut-3=ok",
        (1, 0),
        Broken {
            tokens: 3,
            reason: "stream_interrupted",
        },
    ));
    rows.push(one(
        "sim-stall-3",
        false,
        200,
        "a/sim-stall-3=timeout; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.push(one(
        "sim-stall-3",
        true,
        200,
        "a/sim-stall-3=ok",
        (1, 0),
        Broken {
            tokens: 3,
            reason: "timeout",
        },
    ));
    rows.push(one(
        "sim-malformed-3",
        false,
        200,
        "a/sim-malformed-3=empty_response; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.push(one(
        "sim-malformed-3",
        true,
        200,
        "a/sim-malformed-3=ok",
        (1, 0),
        Broken {
            tokens: 3,
            reason: "stream_interrupted",
        },
    ));
    // The same faults before the first token: the stream has not committed, so the failure
    // is invisible to the client and the fallback streams the answer. A stream that opens
    // (200) and closes before its first token was cut, not reset: it is not retried.
    rows.push(one(
        "sim-cut-0",
        true,
        200,
        "a/sim-cut-0=stream_interrupted; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.push(one(
        "sim-stall-0",
        true,
        200,
        "a/sim-stall-0=timeout; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows.push(one(
        "sim-malformed-0",
        true,
        200,
        "a/sim-malformed-0=stream_interrupted; b/gpt-4o-mini=ok",
        (1, 1),
        Answer,
    ));
    rows
}

/// Routes without a healthy fallback, and routes with larger-context targets.
fn route_rows() -> Vec<Row> {
    use Want::{Answer, Broken, Error};
    let mut rows = vec![
        // The only target breaks mid-stream: its tokens, then one error event; nobody to fail
        // over to, and no [DONE].
        alone(
            "sim-cut-3",
            true,
            200,
            "a/sim-cut-3=ok",
            1,
            Broken {
                tokens: 3,
                reason: "stream_interrupted",
            },
        ),
        alone(
            "sim-stall-3",
            true,
            200,
            "a/sim-stall-3=ok",
            1,
            Broken {
                tokens: 3,
                reason: "timeout",
            },
        ),
        alone(
            "sim-malformed-3",
            true,
            200,
            "a/sim-malformed-3=ok",
            1,
            Broken {
                tokens: 3,
                reason: "stream_interrupted",
            },
        ),
        // Not streaming, the same faults leave nothing to answer with: 502, or 504 for a stall.
        alone(
            "sim-cut-3",
            false,
            502,
            "a/sim-cut-3=stream_interrupted",
            1,
            Error {
                code: "stream_interrupted",
                reason: "stream_interrupted",
            },
        ),
        alone(
            "sim-stall-3",
            false,
            504,
            "a/sim-stall-3=timeout",
            1,
            Error {
                code: "timeout",
                reason: "timeout",
            },
        ),
    ];
    // Nothing else to try: the status says what happened (504 out of time, 503 overloaded,
    // 502 otherwise), the body names each attempt. No breaker opened and no wait was asked
    // for, so no Retry-After.
    for stream in [false, true] {
        rows.push(alone(
            "sim-silent",
            stream,
            504,
            "a/sim-silent=timeout",
            1,
            Error {
                code: "timeout",
                reason: "timeout",
            },
        ));
        rows.push(alone(
            "sim-503",
            stream,
            503,
            "a/sim-503=overloaded",
            1,
            Error {
                code: "overloaded",
                reason: "overloaded",
            },
        ));
        rows.push(alone(
            "sim-500",
            stream,
            502,
            "a/sim-500=server_error; a/sim-500=server_error",
            2,
            Error {
                code: "server_error",
                reason: "server_error",
            },
        ));
        rows.push(alone(
            "sim-reset",
            stream,
            502,
            "a/sim-reset=connection_reset; a/sim-reset=connection_reset",
            2,
            Error {
                code: "connection_reset",
                reason: "connection_reset",
            },
        ));
    }
    // The only target is rate limited and asks for 30 s: a 429 that passes the wait on.
    for stream in [false, true] {
        rows.push(Row {
            retry_after: Some("30"),
            ..alone(
                "sim-429-retry-30",
                stream,
                429,
                "a/sim-429-retry-30=rate_limit",
                1,
                Error {
                    code: "rate_limit",
                    reason: "rate_limit",
                },
            )
        });
    }
    for stream in [false, true] {
        // A context overflow goes to the larger-context target, not to the next target.
        rows.push(Row {
            note: " with larger_context",
            extra: "larger_context = [\"b/gpt-4.1\"]\n",
            trail: "a/sim-context=context_overflow; b/gpt-4.1=ok",
            seen: vec![(A, "sim-context", 1), (B, "gpt-4.1", 1)],
            ..one("sim-context", stream, 200, "", (0, 0), Answer)
        });
        // The larger target overflows too: its error is returned; the next target of the
        // route is never asked.
        rows.push(Row {
            note: " with an overflowing larger_context",
            extra: "larger_context = [\"b/sim-context\"]\n",
            trail: "a/sim-context=context_overflow; b/sim-context=context_overflow",
            seen: vec![(A, "sim-context", 1), (B, "sim-context", 1)],
            ..one(
                "sim-context",
                stream,
                400,
                "",
                (0, 0),
                Error {
                    code: "context_length_exceeded",
                    reason: "context_overflow",
                },
            )
        });
    }
    rows
}

/// Collects a row's mismatches.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.0.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn check(&mut self, what: &str, ok: bool, detail: impl Debug) {
        if !ok {
            self.0.push(format!("{what}: {detail:?}"));
        }
    }
}

/// A response's header as text; `None` when absent.
fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| v.to_str().unwrap_or("<not text>").to_owned())
}

/// What the client got, read to its end.
struct Seen {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn post(http: &reqwest::Client, p: &Running, route: &str, stream: bool) -> Seen {
    let resp = p.chat(http, route, stream).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Seen {
        status,
        headers,
        body,
    }
}

/// The headers of an answer: who answered (the trail's last target, which must be `ok`),
/// the attempts and the trail.
fn answer_headers(p: &mut Problems, seen: &Seen, trail: &str) {
    let last = trail.rsplit("; ").next().unwrap_or("");
    let (who, outcome) = last.split_once('=').unwrap_or(("", ""));
    let (provider, model) = who.split_once('/').unwrap_or(("", ""));
    p.eq("the trail ends with the answer", outcome, "ok");
    p.eq(
        "x-failover-provider",
        header(&seen.headers, "x-failover-provider").as_deref(),
        Some(provider),
    );
    p.eq(
        "x-failover-model",
        header(&seen.headers, "x-failover-model").as_deref(),
        Some(model),
    );
    trail_headers(p, seen, trail);
}

/// The headers of an error: no answerer, the attempts and the trail.
fn error_headers(p: &mut Problems, seen: &Seen, trail: &str) {
    p.eq(
        "x-failover-provider",
        header(&seen.headers, "x-failover-provider"),
        None,
    );
    p.eq(
        "x-failover-model",
        header(&seen.headers, "x-failover-model"),
        None,
    );
    trail_headers(p, seen, trail);
}

/// `x-failover-trail` is `trail`, and `x-failover-attempts` counts its entries.
fn trail_headers(p: &mut Problems, seen: &Seen, trail: &str) {
    p.eq(
        "x-failover-trail",
        header(&seen.headers, "x-failover-trail").as_deref(),
        Some(trail),
    );
    let attempts = trail.split("; ").count().to_string();
    p.eq(
        "x-failover-attempts",
        header(&seen.headers, "x-failover-attempts").as_deref(),
        Some(attempts.as_str()),
    );
}

/// Is `event` a chunk of the answer (not an error, not `[DONE]`)?
fn is_chunk(event: &str) -> bool {
    serde_json::from_str::<Value>(event)
        .is_ok_and(|v| v.get("error").is_none() && v["object"] == "chat.completion.chunk")
}

/// A complete stream: chunks that carry the whole answer, then `[DONE]`, last and once.
fn complete_stream(p: &mut Problems, body: &str) {
    let events = sse_data(body);
    let Some((last, chunks)) = events.split_last() else {
        p.check("the stream has events", false, body);
        return;
    };
    p.eq("last event", last.as_str(), "[DONE]");
    for e in chunks {
        p.check("every event before [DONE] is a chunk", is_chunk(e), e);
    }
    p.eq("streamed text", streamed_text(&events).as_str(), ANSWER);
}

/// The attempts of an error body's `failover` member, written as a trail.
fn error_trail(error: &Value) -> String {
    let attempts = error["failover"]["attempts"].as_array();
    let attempts: Vec<String> = attempts
        .into_iter()
        .flatten()
        .map(|a| {
            let outcome = match a["outcome"].as_str() {
                Some("failed") => a["reason"].as_str(),
                other => other,
            };
            format!(
                "{}/{}={}",
                a["provider"].as_str().unwrap_or("?"),
                a["model"].as_str().unwrap_or("?"),
                outcome.unwrap_or("?")
            )
        })
        .collect();
    attempts.join("; ")
}

/// An OpenAI-style error object of the route `chat` with `code`, naming `reason` and `trail`.
fn error_object(p: &mut Problems, error: &Value, code: &str, reason: &str, trail: &str) {
    route_error_object(p, error, "chat", code, reason, trail);
}

/// An OpenAI-style error object of `route` with `code`, naming `reason` and `trail`.
fn route_error_object(
    p: &mut Problems,
    error: &Value,
    route: &str,
    code: &str,
    reason: &str,
    trail: &str,
) {
    p.eq("error.code", error["code"].as_str(), Some(code));
    p.check(
        "error.message",
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        error,
    );
    p.eq(
        "error.failover.reason",
        error["failover"]["reason"].as_str(),
        Some(reason),
    );
    p.eq(
        "error.failover.route",
        error["failover"]["route"].as_str(),
        Some(route),
    );
    p.eq(
        "error.failover.attempts",
        error_trail(error).as_str(),
        trail,
    );
}

/// A stream that broke after `tokens` tokens: those tokens, then one error event naming
/// `reason` and the attempts (the streaming one failed), and no `[DONE]`.
fn broken_stream(p: &mut Problems, body: &str, tokens: usize, reason: &str, trail: &str) {
    let events = sse_data(body);
    let Some((last, chunks)) = events.split_last() else {
        p.check("the stream has events", false, body);
        return;
    };
    for e in chunks {
        p.check("every event before the error is a chunk", is_chunk(e), e);
    }
    let sent: String = answer_tokens().take(tokens).collect();
    p.eq(
        "text before the error",
        streamed_text(chunks).as_str(),
        sent.as_str(),
    );
    let last: Value = serde_json::from_str(last).unwrap_or(Value::Null);
    p.check(
        "the last event is an error",
        last.get("error").is_some(),
        &events,
    );
    // The headers went out with the committed target `ok`; the error says how it ended.
    let broke = format!("{}={reason}", trail.trim_end_matches("=ok"));
    error_object(p, &last["error"], reason, reason, &broke);
}

/// Runs one row on its own sims and proxy; returns its mismatches.
async fn run(http: reqwest::Client, row: Row) -> Vec<String> {
    let mut a = Sim::builder();
    if row.down {
        a = a.down_for(Duration::from_secs(3600));
    }
    let a = a.start().await.unwrap();
    let b = Sim::builder().start().await.unwrap();
    let targets: Vec<&str> = row.targets.iter().map(String::as_str).collect();
    let proxy = start(&config(&a, &b, &targets, row.extra)).await;
    let seen = post(&http, &proxy, "chat", row.stream).await;

    let mut p = Problems::default();
    p.eq("status", seen.status, row.status);
    p.eq(
        "retry-after",
        header(&seen.headers, "retry-after").as_deref(),
        row.retry_after,
    );
    let content_type = header(&seen.headers, "content-type");
    let json = Some("application/json");
    match (row.want, row.stream) {
        (Want::Answer, false) => {
            answer_headers(&mut p, &seen, row.trail);
            p.eq("content-type", content_type.as_deref(), json);
            let v: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
            let choice = &v["choices"][0];
            p.eq(
                "answer",
                choice["message"]["content"].as_str(),
                Some(ANSWER),
            );
            p.eq(
                "finish_reason",
                choice["finish_reason"].as_str(),
                Some("stop"),
            );
        }
        (Want::Answer | Want::Broken { .. }, true) => {
            answer_headers(&mut p, &seen, row.trail);
            p.eq(
                "content-type",
                content_type.as_deref(),
                Some("text/event-stream"),
            );
            match row.want {
                Want::Broken { tokens, reason } => {
                    broken_stream(&mut p, &seen.body, tokens, reason, row.trail);
                }
                _ => complete_stream(&mut p, &seen.body),
            }
        }
        (Want::Broken { .. }, false) => {
            p.check("a row that makes sense", false, "Broken needs a stream")
        }
        (Want::Error { code, reason }, _) => {
            // An error is JSON in both modes: nothing was committed.
            error_headers(&mut p, &seen, row.trail);
            p.eq("content-type", content_type.as_deref(), json);
            let v: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
            error_object(&mut p, &v["error"], code, reason, row.trail);
        }
    }
    for (sim, expected) in [(A, &a), (B, &b)] {
        let mut total = 0;
        for &(s, model, n) in row.seen.iter().filter(|(s, _, _)| *s == sim) {
            p.eq(
                &format!("requests for {model} seen by {s:?}"),
                expected.attempts(model),
                n,
            );
            total += n;
        }
        p.eq(
            &format!("requests seen by {sim:?} in all"),
            expected.total_attempts(),
            total,
        );
    }
    proxy.stop().await.unwrap();
    p.0
}

/// Runs rows concurrently and fails with every mismatch of every row, each naming its row.
async fn run_all(rows: Vec<Row>) {
    let http = reqwest::Client::new();
    let runs = rows.iter().map(|row| {
        let http = http.clone();
        async move {
            let problems = match tokio::time::timeout(HANG, run(http, row.clone())).await {
                Ok(problems) => problems,
                Err(_) => vec![format!("no answer within {HANG:?}: the proxy hangs")],
            };
            (row.name(), problems)
        }
    });
    let failed: Vec<String> = join_all(runs)
        .await
        .into_iter()
        .filter(|(_, problems)| !problems.is_empty())
        .map(|(name, problems)| format!("{name}:\n    {}", problems.join("\n    ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} rows failed:\n{}",
        failed.len(),
        rows.len(),
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_in_both_modes() {
    run_all(fault_rows()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_a_fallback_and_with_larger_context() {
    run_all(route_rows()).await;
}

/// After the primary's breaker opens, a request is rejected at once by it: the trail says
/// `breaker_open`, the primary's sim sees no new request, the fallback answers. A route whose
/// only target is open answers 503 with `Retry-After` and sends nothing.
#[tokio::test]
async fn an_open_breaker_rejects_at_once_and_the_primary_sees_nothing() {
    // (primary, what opens its breaker, the breaker that opens, extra config)
    let cases = [
        // Overloaded counts against the model's breaker; one failure is enough here.
        (
            "sim-503",
            "overloaded",
            "sim-503",
            "[breaker]\nconsecutive_failures = 1\n",
        ),
        // A refused key trips the provider-wide breaker at once, by default.
        ("sim-401", "auth", "*", ""),
    ];
    let http = reqwest::Client::new();
    for (model, reason, breaker, extra) in cases {
        let a = Sim::builder().start().await.unwrap();
        let b = Sim::builder().start().await.unwrap();
        let primary = format!("a/{model}");
        let solo = format!("[routes.solo]\ntargets = [{primary:?}]\n{extra}");
        let proxy = start(&config(&a, &b, &[&primary, "b/gpt-4o-mini"], &solo)).await;
        let mut p = Problems::default();

        // The failure that opens it.
        let first = post(&http, &proxy, "chat", false).await;
        p.eq("first: status", first.status, 200);
        answer_headers(
            &mut p,
            &first,
            &format!("{primary}={reason}; b/gpt-4o-mini=ok"),
        );
        p.eq("first: requests on a", a.attempts(model), 1);

        // Rejected at once, in both modes: the fallback answers, a sees nothing.
        let rejected = format!("{primary}=breaker_open; b/gpt-4o-mini=ok");
        for stream in [true, false] {
            let seen = post(&http, &proxy, "chat", stream).await;
            p.eq("rejected: status", seen.status, 200);
            answer_headers(&mut p, &seen, &rejected);
            p.eq(
                "rejected: retry-after",
                header(&seen.headers, "retry-after"),
                None,
            );
            if stream {
                complete_stream(&mut p, &seen.body);
            } else {
                let v: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
                p.eq(
                    "rejected: answer",
                    v["choices"][0]["message"]["content"].as_str(),
                    Some(ANSWER),
                );
            }
        }
        p.eq("rejected: requests on a", a.total_attempts(), 1);
        p.eq("rejected: requests on b", b.attempts(FALLBACK), 3);

        // The only target is open: 503, Retry-After from the breaker, nothing sent.
        for stream in [false, true] {
            let seen = post(&http, &proxy, "solo", stream).await;
            p.eq("all open: status", seen.status, 503);
            error_headers(&mut p, &seen, &format!("{primary}=breaker_open"));
            p.eq(
                "all open: content-type",
                header(&seen.headers, "content-type").as_deref(),
                Some("application/json"),
            );
            let v: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
            route_error_object(
                &mut p,
                &v["error"],
                "solo",
                reason,
                reason,
                &format!("{primary}=breaker_open"),
            );
            // The header is the body's wait in whole seconds, rounded up.
            let wait_ms = v["error"]["failover"]["retry_after_ms"].as_u64();
            p.check(
                "all open: a wait in the body",
                wait_ms.is_some(),
                &seen.body,
            );
            let secs = wait_ms.map(|ms| ms.div_ceil(1000).max(1).to_string());
            p.eq(
                "all open: retry-after",
                header(&seen.headers, "retry-after"),
                secs,
            );
        }
        p.eq("all open: requests on a", a.total_attempts(), 1);

        // The status endpoint shows the breaker open.
        let status = get_json(&http, &proxy.url("/v1/failover/status")).await;
        let state = status_breaker(&status, "a", breaker)
            .map(|x| (x["state"].clone(), x["reason"].clone()));
        p.eq(
            "status: breaker state and reason",
            state,
            Some((Value::from("open"), Value::from(reason))),
        );
        proxy.stop().await.unwrap();
        assert!(
            p.0.is_empty(),
            "{primary} opening its breaker:\n    {}",
            p.0.join("\n    ")
        );
    }
}
