//! Stream resume: a stream that breaks after its first token is finished on another target,
//! through the library and through the proxy. The sims continue a prefill that is a prefix
//! of their known answer with the rest of it, so a client that ends with exactly [`ANSWER`]
//! got one whole answer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use llm_failover::Reason;
use llm_failover::breaker::{BreakerPolicy, Registry, State};
use llm_failover::chain::{
    AttemptContext, FailoverErrorKind, Route, RoutePolicy, RoutePolicyBuilder,
};
use llm_failover::protocol::openai_chat::{ChatChunk, ChatResume, Client, Endpoint, Prefill};
use llm_failover::sim::{self, ANSWER, Sim};
use serde_json::{Value, json};

use crate::support;

/// Four providers: `a` breaks as its model names say, `b` continues a prefill, `c` answers
/// anew (OpenAI-like, configured as not taking a prefill), `d` rejects a prefill with a 400
/// (configured as taking one, wrongly). `e` is a canned server whose stream ends cleanly after
/// three tokens, without a `finish_reason` or `[DONE]` (see [`Rig::with_e`] for others).
struct Rig {
    a: Sim,
    b: Sim,
    c: Sim,
    d: Sim,
    endpoints: Arc<Vec<Endpoint>>,
    registry: Arc<Registry>,
}

/// The first `n` tokens of the answer.
fn head(n: usize) -> String {
    sim::answer_tokens().take(n).collect()
}

/// A 200 whose SSE body is one chunk per `(delta, finish_reason)`, then the end of the body
/// (no `[DONE]`).
fn sse_body(chunks: impl IntoIterator<Item = (Value, Value)>) -> String {
    let events: String = chunks
        .into_iter()
        .map(|(delta, finish)| {
            let chunk = json!({"id": "chatcmpl-e", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {chunk}\n\n")
        })
        .collect();
    support::http("200 OK", "content-type: text/event-stream\r\n", &events)
}

/// The first `n` tokens of the answer as content deltas.
fn tokens(n: usize) -> impl Iterator<Item = (Value, Value)> {
    sim::answer_tokens()
        .take(n)
        .map(|t| (json!({"content": t}), Value::Null))
}

/// An SSE body of three tokens that ends without its finish.
fn unfinished() -> String {
    sse_body(tokens(3))
}

const BROKEN: [&str; 4] = ["sim-cut-3", "sim-stall-3", "sim-malformed-3", "sim-error-3"];

async fn rig() -> Rig {
    let a = Sim::builder().start().await.unwrap();
    let b = Sim::builder().start().await.unwrap();
    let c = Sim::builder()
        .prefill(sim::Prefill::Ignore)
        .start()
        .await
        .unwrap();
    let d = Sim::builder()
        .prefill(sim::Prefill::Reject)
        .start()
        .await
        .unwrap();
    let e = support::canned(unfinished()).await;
    let endpoints = vec![
        Endpoint::new("a", &a.base_url()),
        Endpoint::new("b", &b.base_url()).prefill(Prefill::Assistant),
        Endpoint::new("c", &c.base_url()),
        Endpoint::new("d", &d.base_url()).prefill(Prefill::Assistant),
        Endpoint::new("e", &format!("http://{e}/v1")),
        Endpoint::new("v", &b.base_url()).prefill(Prefill::ContinueFinalMessage),
    ];
    // A provider that rejects a prefill must not be blamed for it, even where a format
    // failure would open its breaker at once.
    let strict = BreakerPolicy::builder()
        .trip_immediately(Reason::Format)
        .open_base(Reason::Format, Duration::from_secs(30))
        .build()
        .unwrap();
    let mut registry = Registry::builder().target_with_policy("d", "m", strict);
    for m in BROKEN {
        registry = registry.target("a", m);
    }
    for (p, m) in [
        ("b", "m"),
        ("b", "sim-cut-2"),
        ("c", "m"),
        ("e", "m"),
        ("v", "m"),
    ] {
        registry = registry.target(p, m);
    }
    Rig {
        a,
        b,
        c,
        d,
        endpoints: Arc::new(endpoints),
        registry: Arc::new(registry.build().unwrap()),
    }
}

/// What a client read from a stream.
struct Read {
    text: String,
    /// Every JSON event's data, in order.
    events: Vec<Value>,
    error: Option<llm_failover::chain::FailoverError>,
    trail: String,
    resumed: bool,
}

impl Rig {
    /// The rig with `e` answering `response`.
    async fn with_e(self, response: String) -> Rig {
        let e = support::canned(response).await;
        let mut endpoints = (*self.endpoints).clone();
        endpoints[4] = Endpoint::new("e", &format!("http://{e}/v1"));
        Rig {
            endpoints: Arc::new(endpoints),
            ..self
        }
    }

    fn route(&self, targets: &[(&str, &str)], resume: bool) -> Arc<Route> {
        let policy = RoutePolicy::builder()
            .idle_timeout(Duration::from_millis(300))
            .ttft_timeout(Duration::from_secs(2))
            .attempt_timeout(Duration::from_secs(5))
            .total_deadline(Duration::from_secs(10))
            .stream_resume(resume);
        self.route_with(targets, policy)
    }

    fn route_with(&self, targets: &[(&str, &str)], policy: RoutePolicyBuilder) -> Arc<Route> {
        let policy = policy.build().unwrap();
        let mut b = Route::builder("chat", Arc::clone(&self.registry)).policy(policy);
        for (p, m) in targets {
            b = b.target(p, m);
        }
        Arc::new(b.build().unwrap())
    }

    async fn stream(&self, route: &Arc<Route>, request: Value) -> Read {
        let client = Client::new().unwrap();
        let endpoints = Arc::clone(&self.endpoints);
        let open = move |attempt: AttemptContext, body: Arc<Value>| {
            let (client, endpoints) = (client.clone(), Arc::clone(&endpoints));
            async move {
                let e = endpoints
                    .iter()
                    .find(|e| e.provider() == attempt.provider())
                    .unwrap();
                client.chat_stream(e, attempt.model(), &body).await
            }
        };
        let endpoints = Arc::clone(&self.endpoints);
        let prefill = move |p: &str| {
            endpoints
                .iter()
                .find(|e| e.provider() == p)
                .map_or(Prefill::None, Endpoint::prefill_mode)
        };
        let request = Arc::new(request);
        let resume = ChatResume::new(Arc::clone(&request), prefill, open.clone());
        let mut stream = route
            .resumable_stream(0, |a| open(a, Arc::clone(&request)), resume)
            .await
            .unwrap()
            .value;
        let (mut text, mut events, mut error) = (String::new(), Vec::new(), None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    text.push_str(&chunk.text());
                    events.extend(json_events(&chunk));
                }
                Err(e) => error = Some(e),
            }
        }
        Read {
            text,
            events,
            error,
            trail: stream.trail().to_string(),
            resumed: stream.resumed(),
        }
    }
}

fn json_events(chunk: &ChatChunk) -> Vec<Value> {
    chunk
        .data()
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn hi() -> Value {
    json!({"messages": [{"role": "user", "content": "Say the answer"}], "temperature": 0.3,
           "stop": ["\n\n"], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]})
}

/// The prefill the continuer got: its request's last message.
fn prefill_sent(sim: &Sim, model: &str) -> Value {
    let req = sim.last_request(model).unwrap();
    req["messages"].as_array().unwrap().last().unwrap().clone()
}

#[tokio::test]
async fn every_way_a_stream_breaks_after_its_first_token_ends_with_the_whole_answer() {
    let rig = rig().await;
    let cases = [
        ("a", "sim-cut-3", "stream_interrupted"),
        ("a", "sim-stall-3", "timeout"),
        ("a", "sim-malformed-3", "stream_interrupted"),
        ("a", "sim-error-3", "stream_interrupted"),
        ("e", "m", "stream_interrupted"),
    ];
    for (p, m, reason) in cases {
        let route = rig.route(&[(p, m), ("b", "m")], true);
        let read = rig.stream(&route, hi()).await;
        assert!(read.error.is_none(), "{m}: {:?}", read.error);
        assert_eq!(read.text, ANSWER, "{p}/{m}");
        assert!(read.resumed, "{m}");
        assert_eq!(read.trail, format!("{p}/{m}={reason}; b/m=ok"));
        // The continuation is the original request plus the text so far, whitespace trimmed.
        let sent = rig.b.last_request("m").unwrap();
        assert_eq!(
            prefill_sent(&rig.b, "m"),
            json!({"role": "assistant", "content": head(3).trim_end()}),
            "{m}"
        );
        assert_eq!(sent["messages"][0], hi()["messages"][0]);
        for kept in ["temperature", "stop", "tools"] {
            assert_eq!(sent[kept], hi()[kept], "{kept}");
        }
        assert!(sent.get("continue_final_message").is_none());
    }
}

#[tokio::test]
async fn the_reader_sees_one_answer_one_id_one_role_one_finish_and_the_trail() {
    let rig = rig().await;
    let route = rig.route(&[("a", "sim-cut-3"), ("b", "m")], true);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, ANSWER);
    let ids: std::collections::BTreeSet<_> =
        read.events.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let roles = read
        .events
        .iter()
        .filter(|e| !e["choices"][0]["delta"]["role"].is_null())
        .count();
    assert_eq!(roles, 1);
    let finishes: Vec<_> = read
        .events
        .iter()
        .filter(|e| !e["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        finishes[0]["failover"],
        json!({"resumed": true, "trail": "a/sim-cut-3=stream_interrupted; b/m=ok"})
    );
    // Only the final chunk says so.
    let marked = read.events.iter().filter(|e| e.get("failover").is_some());
    assert_eq!(marked.count(), 1);
}

#[tokio::test]
async fn a_target_without_prefill_support_is_skipped_and_one_that_rejects_it_is_not_blamed() {
    let rig = rig().await;
    let route = rig.route(
        &[("a", "sim-cut-3"), ("c", "m"), ("d", "m"), ("b", "m")],
        true,
    );
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, ANSWER);
    // c answers a prefill anew (the text twice): never asked.
    assert_eq!(rig.c.attempts("m"), 0);
    assert_eq!(rig.d.attempts("m"), 1);
    assert_eq!(
        read.trail,
        "a/sim-cut-3=stream_interrupted; d/m=format; b/m=ok"
    );
    let d = rig.registry.target("d", "m").unwrap();
    let s = d.model_breaker().snapshot();
    assert_eq!(
        (s.state, s.consecutive_failures, s.window_failures),
        (State::Closed, 0, 0)
    );
}

#[tokio::test]
async fn with_no_target_left_the_error_is_the_interruption_not_the_prefill_400() {
    let rig = rig().await;
    let route = rig.route(&[("a", "sim-cut-3"), ("c", "m"), ("d", "m")], true);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, head(3));
    let e = read.error.unwrap();
    assert_eq!(
        e.kind(),
        FailoverErrorKind::StreamBroken(Reason::StreamInterrupted)
    );
    assert_eq!(e.reason(), Some(Reason::StreamInterrupted));
    assert_eq!(
        e.trail().to_string(),
        "a/sim-cut-3=stream_interrupted; d/m=format"
    );
    assert!(!read.resumed);
}

#[tokio::test]
async fn continuations_obey_the_breakers_the_retry_budget_and_the_total_deadline() {
    let rig = rig().await;
    // An open breaker skips its target, as on any attempt; the next one continues.
    rig.registry
        .control("b", "m")
        .unwrap()
        .force_open(Some(Duration::from_secs(60)));
    let route = rig.route(&[("a", "sim-cut-3"), ("b", "m"), ("v", "m")], true);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, ANSWER);
    assert_eq!(
        read.trail,
        "a/sim-cut-3=stream_interrupted; b/m=breaker_open; v/m=ok"
    );
    rig.registry.control("b", "m").unwrap().reset();

    // No budget for extra attempts: no continuation is sent.
    let no_budget = RoutePolicy::builder()
        .stream_resume(true)
        .retry_budget_ratio(0.0)
        .retry_budget_floor(0);
    let route = rig.route_with(&[("a", "sim-cut-3"), ("b", "m")], no_budget);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, head(3));
    assert!(read.error.is_some());
    assert_eq!(
        read.trail,
        "a/sim-cut-3=stream_interrupted; b/m=budget_exhausted"
    );
    assert_eq!(
        rig.b.attempts("m"),
        1,
        "v (on b's sim) took the first continuation, nothing since"
    );

    // A stall that ends past the total deadline (counted from the request's start): none.
    let short = RoutePolicy::builder()
        .stream_resume(true)
        .ttft_timeout(Duration::from_millis(200))
        .attempt_timeout(Duration::from_millis(200))
        .idle_timeout(Duration::from_millis(300))
        .total_deadline(Duration::from_millis(250));
    let route = rig.route_with(&[("a", "sim-stall-3"), ("b", "m")], short);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, head(3));
    assert_eq!(
        read.error.unwrap().kind(),
        FailoverErrorKind::StreamBroken(Reason::Timeout)
    );
    assert_eq!(read.trail, "a/sim-stall-3=timeout");
    assert_eq!(rig.b.attempts("m"), 1);
}

#[tokio::test]
async fn a_continuation_that_breaks_ends_the_stream_with_its_error() {
    let rig = rig().await;
    let route = rig.route(&[("a", "sim-cut-3"), ("b", "sim-cut-2")], true);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, head(5));
    assert_eq!(
        read.error.unwrap().kind(),
        FailoverErrorKind::StreamBroken(Reason::StreamInterrupted)
    );
    assert_eq!(
        read.trail,
        "a/sim-cut-3=stream_interrupted; b/sim-cut-2=stream_interrupted"
    );
}

#[tokio::test]
async fn usage_adds_both_attempts_and_max_tokens_shrinks_by_what_was_used() {
    let rig = rig().await;
    let route = rig.route(&[("a", "sim-cut-3"), ("b", "m")], true);
    let mut request = hi();
    request["max_tokens"] = json!(8);
    request["stream_options"] = json!({"include_usage": true});
    let read = rig.stream(&route, request.clone()).await;
    assert_eq!(read.text, head(8));
    let sent = rig.b.last_request("m").unwrap();
    assert_eq!(sent["max_tokens"], 5);
    let usage = read.events.iter().find(|e| e["usage"].is_object()).unwrap()["usage"].clone();
    // The continuation's own count (its prompt holds the prefill's 3 words) plus the broken
    // attempt's estimate (its prompt at 4 bytes a token, and the 3 tokens it streamed).
    let words = |s: &str| s.split_whitespace().count() as u64;
    let continuation_prompt = words("Say the answer") + words(&head(3));
    request.as_object_mut().unwrap().remove("max_tokens");
    let estimate = llm_failover::protocol::openai_chat::estimate_tokens(&request);
    assert_eq!(usage["completion_tokens"], 8);
    assert_eq!(usage["prompt_tokens"], continuation_prompt + estimate);
    assert_eq!(usage["total_tokens"], continuation_prompt + estimate + 8);
    let finish = read
        .events
        .iter()
        .find(|e| !e["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn vllm_gets_continue_final_message() {
    let rig = rig().await;
    let route = rig.route(&[("a", "sim-cut-3"), ("v", "m")], true);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, ANSWER);
    let sent = rig.b.last_request("m").unwrap();
    assert_eq!(sent["continue_final_message"], true);
    assert_eq!(sent["add_generation_prompt"], false);
}

#[tokio::test]
async fn with_resume_off_a_break_ends_the_stream_as_before() {
    let rig = rig().await;
    let route = rig.route(&[("a", "sim-cut-3"), ("b", "m")], false);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, head(3));
    assert_eq!(
        read.error.unwrap().kind(),
        FailoverErrorKind::StreamBroken(Reason::StreamInterrupted)
    );
    assert_eq!(rig.b.attempts("m"), 0);
    assert_eq!(read.trail, "a/sim-cut-3=stream_interrupted");
}

#[tokio::test]
async fn an_answer_with_a_tool_call_is_not_continued() {
    let rig = rig().await;
    // e's stream: a word of text, then a tool call, then the end without a finish.
    let call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
        "function": {"name": "f", "arguments": "{"}}]});
    let rig = rig
        .with_e(sse_body(tokens(1).chain([(call, Value::Null)])))
        .await;
    let route = rig.route(&[("e", "m"), ("b", "m")], true);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, head(1));
    assert!(read.error.is_some());
    assert_eq!(rig.b.attempts("m"), 0);
}

#[tokio::test]
async fn a_content_filter_stop_is_not_finished_by_another_model() {
    let rig = rig().await;
    let filtered = (json!({}), json!("content_filter"));
    let rig = rig.with_e(sse_body(tokens(3).chain([filtered]))).await;
    let route = rig.route(&[("e", "m"), ("b", "m")], true);
    let read = rig.stream(&route, hi()).await;
    assert_eq!(read.text, head(3));
    assert!(read.error.is_some());
    assert!(!read.resumed);
    assert_eq!(rig.b.attempts("m"), 0);
}

#[tokio::test]
async fn a_break_after_the_last_token_is_finished_by_a_continuation_with_nothing_to_add() {
    let rig = rig().await;
    let all = sim::answer_tokens().count();
    let rig = rig.with_e(sse_body(tokens(all))).await;
    let route = rig.route(&[("e", "m"), ("b", "m")], true);
    let read = rig.stream(&route, hi()).await;
    assert!(read.error.is_none(), "{:?}", read.error);
    assert_eq!(read.text, ANSWER);
    assert_eq!(read.trail, "e/m=stream_interrupted; b/m=ok");
    let finish = read
        .events
        .iter()
        .filter(|e| !e["choices"][0]["finish_reason"].is_null())
        .count();
    assert_eq!(finish, 1);
    // The continuer did its job: nothing against its breaker.
    let b = rig.registry.target("b", "m").unwrap();
    assert_eq!(b.model_breaker().snapshot().consecutive_failures, 0);
}

#[tokio::test]
async fn a_request_with_its_own_prefill_gets_the_text_appended_to_it() {
    let rig = rig().await;
    let own = head(2);
    let mut request = hi();
    request["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": own}));
    request["max_tokens"] = json!(100);
    request["max_completion_tokens"] = json!(50);
    let route = rig.route(&[("a", "sim-cut-3"), ("b", "m")], true);
    let read = rig.stream(&route, request).await;
    // a continued the client's prefill; b continued both.
    assert_eq!(format!("{own}{}", read.text), ANSWER);
    let sent = rig.b.last_request("m").unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": head(5).trim_end()})
    );
    // Both limits shrink by the three tokens streamed.
    assert_eq!(
        (
            sent["max_tokens"].as_u64(),
            sent["max_completion_tokens"].as_u64()
        ),
        (Some(97), Some(47))
    );
}

/// A proxy over the rig: one route per way a stream breaks, each `[a/<fault>, c/m, d/m,
/// b/m]` with stream resume, and `off` without it.
async fn proxy(rig: &Rig) -> crate::proxy::Running {
    let routes: String = BROKEN
        .iter()
        .map(|m| {
            let name = m.trim_start_matches("sim-").trim_end_matches("-3");
            format!(
                "[routes.{name}]\ntargets = [\"a/{m}\", \"c/m\", \"d/m\", \"b/m\"]\n\
                 [routes.{name}.policy]\nstream_resume = true\n"
            )
        })
        .collect();
    let toml = format!(
        r#"
[route]
ttft_timeout = "2s"
idle_timeout = "300ms"
total_deadline = "10s"

[providers.a]
base_url = "{a}"
[providers.b]
base_url = "{b}"
prefill = "assistant"
# c answers a prefill anew: left at its default for an unknown host (none).
[providers.c]
base_url = "{c}"
[providers.d]
base_url = "{d}"
prefill = "assistant"

{routes}
[routes.unfinished]
targets = ["a/sim-cut-3", "d/m"]
[routes.unfinished.policy]
stream_resume = true
[routes.off]
targets = ["a/sim-cut-3", "b/m"]
"#,
        a = rig.a.base_url(),
        b = rig.b.base_url(),
        c = rig.c.base_url(),
        d = rig.d.base_url(),
    );
    crate::proxy::start(&toml).await
}

/// A streamed chat through the proxy: the headers, the `data` payloads and the comment lines.
async fn post(
    p: &crate::proxy::Running,
    model: &str,
) -> (reqwest::header::HeaderMap, Vec<String>, Vec<String>) {
    let resp = reqwest::Client::new()
        .post(p.url("/v1/chat/completions"))
        .json(
            &json!({"model": model, "stream": true, "messages": hi()["messages"],
                      "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    let data = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect();
    let comments = body
        .lines()
        .filter_map(|l| l.strip_prefix(": "))
        .map(str::to_owned)
        .collect();
    (headers, data, comments)
}

#[tokio::test]
async fn through_the_proxy_every_break_is_finished_as_one_stream() {
    let rig = rig().await;
    let p = proxy(&rig).await;
    for m in BROKEN {
        let route = m.trim_start_matches("sim-").trim_end_matches("-3");
        let (headers, data, comments) = post(&p, route).await;
        assert_eq!(crate::proxy::streamed_text(&data), ANSWER, "{route}");
        // The headers went out when the first target committed.
        assert_eq!(headers["x-failover-trail"], format!("a/{m}=ok"));
        let reason = if route == "stall" {
            "timeout"
        } else {
            "stream_interrupted"
        };
        let trail = format!("a/{m}={reason}; d/m=format; b/m=ok");
        assert_eq!(comments, [format!("x-failover-trail: {trail}")], "{route}");
        assert_eq!(data.last().unwrap(), "[DONE]");
        let events: Vec<Value> = data
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let ids: std::collections::BTreeSet<_> =
            events.iter().map(|e| e["id"].to_string()).collect();
        assert_eq!(ids.len(), 1, "{route}: {ids:?}");
        let usage = &events.last().unwrap()["usage"];
        assert_eq!(
            usage["completion_tokens"],
            sim::answer_tokens().count(),
            "{route}"
        );
        assert_eq!(events.last().unwrap()["failover"]["trail"], trail);
        assert_eq!(rig.c.attempts("m"), 0);
    }
}

#[tokio::test]
async fn through_the_proxy_with_no_continuer_the_error_is_the_interruption_and_off_is_off() {
    let rig = rig().await;
    let p = proxy(&rig).await;
    for route in ["unfinished", "off"] {
        let (_, data, comments) = post(&p, route).await;
        assert_eq!(crate::proxy::streamed_text(&data), head(3), "{route}");
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(
            last["error"]["code"], "stream_interrupted",
            "{route}: {last}"
        );
        assert_eq!(last["error"]["failover"]["reason"], "stream_interrupted");
        assert!(!data.iter().any(|d| d == "[DONE]"));
        // Nothing was resumed: no trail comment.
        assert!(comments.is_empty(), "{route}: {comments:?}");
    }
    assert_eq!(rig.b.attempts("m"), 0);
    assert_eq!(rig.d.attempts("m"), 1);
}

#[test]
fn resumes_are_counted_by_route_providers_and_outcome_and_the_attempt_says_resume() {
    let (scrape, logs) = support::observed(|| async {
        let rig = rig().await;
        let ok = rig.route(&[("a", "sim-cut-3"), ("b", "m")], true);
        assert_eq!(rig.stream(&ok, hi()).await.text, ANSWER);
        let none = rig.route(&[("a", "sim-error-3"), ("c", "m")], true);
        assert!(rig.stream(&none, hi()).await.error.is_some());
        let broke = rig.route(&[("a", "sim-malformed-3"), ("b", "sim-cut-2")], true);
        assert!(rig.stream(&broke, hi()).await.error.is_some());
    });
    for series in [
        r#"llm_failover_stream_resumes_total{route="chat",from_provider="a",to_provider="b",outcome="ok"} 1"#,
        r#"llm_failover_stream_resumes_total{route="chat",from_provider="a",to_provider="none",outcome="error"} 1"#,
        r#"llm_failover_stream_resumes_total{route="chat",from_provider="a",to_provider="b",outcome="error"} 1"#,
    ] {
        assert!(scrape.contains(series), "{series} not in\n{scrape}");
    }
    // The continuations' attempt spans say so; the first attempts' do not.
    let resumed = logs
        .lines()
        .filter(|l| l.contains("}:attempt{") && l.contains("llm_failover::chain: close"))
        .filter(|l| l.contains("llm_failover.resume=true"))
        .count();
    assert_eq!(resumed, 2, "{logs}");
}
