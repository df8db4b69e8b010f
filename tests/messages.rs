//! `POST /v1/messages` end to end, and failover across protocols: a proxy on loopback in front
//! of simulated providers that speak Anthropic Messages and OpenAI chat.

use llm_failover::sim::{ANSWER, Sim};
use serde_json::{Value, json};

use llm_failover::proxy::Config;

use crate::proxy::{Running, chat_body, sse_data, start_config};
use crate::support::{events, sim};

/// A Messages request for `route`.
fn messages_body(route: &str, stream: bool) -> Value {
    json!({
        "model": route,
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    })
}

/// A proxy with an Anthropic provider `claude` (key `sk-ant-provider`) and an OpenAI-compatible
/// one `openai`, on the sims given, and `routes` (TOML).
async fn proxy(claude: &Sim, openai: &Sim, routes: &str) -> Running {
    proxy_with(claude, openai, "", routes).await
}

/// [`proxy`] with more settings (TOML) for the `openai` provider.
async fn proxy_with(claude: &Sim, openai: &Sim, openai_settings: &str, routes: &str) -> Running {
    let toml = format!(
        r#"
[providers.claude]
api = "anthropic-messages"
base_url = "{}"
api_key_env = "ANTHROPIC_KEY"

[providers.openai]
base_url = "{}"
{openai_settings}

{routes}
"#,
        claude.base_url(),
        openai.base_url(),
    );
    let config = Config::parse_with_env(&toml, "test.toml", |v| {
        (v == "ANTHROPIC_KEY").then(|| "sk-ant-provider".to_owned())
    })
    .unwrap();
    start_config(&config).await
}

/// The text of an Anthropic stream's `text_delta`s.
fn streamed_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect()
}

async fn post(r: &Running, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(r.url(path))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_native_anthropic_target_answers_with_its_own_message_and_headers() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(&claude, &openai, "[routes.c]\ntargets = [\"claude/m\"]").await;
    let resp = post(&r, "/v1/messages", &messages_body("c", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-failover-trail"], "claude/m=ok");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], ANSWER);
    assert_eq!(answer["stop_reason"], "end_turn");
    let sent = claude.last_headers("m").unwrap();
    assert_eq!(sent["x-api-key"], "sk-ant-provider");
    assert_eq!(sent["anthropic-version"], "2023-06-01");
    assert_eq!(sent["anthropic-beta"], "prompt-caching-2024-07-31");
    assert!(!sent.contains_key("authorization"));
    // Fields the proxy does not know pass untouched.
    let mut body = messages_body("c", false);
    body["metadata"] = json!({"user_id": "u1"});
    body["messages"][0]["content"] =
        json!([{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]);
    assert_eq!(post(&r, "/v1/messages", &body).await.status(), 200);
    let seen = claude.last_request("m").unwrap();
    assert_eq!(seen["metadata"], json!({"user_id": "u1"}));
    assert_eq!(
        seen["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
}

#[tokio::test]
async fn a_native_stream_is_relayed_event_for_event_and_ends_with_message_stop() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(&claude, &openai, "[routes.c]\ntargets = [\"claude/m\"]").await;
    let resp = post(&r, "/v1/messages", &messages_body("c", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let ev = events(&resp.text().await.unwrap());
    assert_eq!(ev.first().unwrap().0, "message_start");
    assert_eq!(ev.last().unwrap().0, "message_stop");
    assert_eq!(streamed_text(&ev), ANSWER);
    let delta = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn an_overloaded_anthropic_target_fails_over_to_an_openai_one_translated() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(
        &claude,
        &openai,
        "[routes.c]\ntargets = [\"claude/sim-529\", \"openai/gpt\"]",
    )
    .await;
    let resp = post(&r, "/v1/messages", &messages_body("c", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "claude/sim-529=overloaded; openai/gpt=ok"
    );
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"][0]["text"], ANSWER);
    assert_eq!(answer["stop_reason"], "end_turn");
    assert!(answer["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // The OpenAI target got a chat request, with the Anthropic request's content.
    let sent = openai.last_request("gpt").unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "user", "content": "hi"})
    );
    assert_eq!(sent["max_tokens"], 256);

    // And streaming: Anthropic's events, made from the chat chunks.
    let resp = post(&r, "/v1/messages", &messages_body("c", true)).await;
    assert_eq!(resp.status(), 200);
    let ev = events(&resp.text().await.unwrap());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_start"));
    assert_eq!(streamed_text(&ev), ANSWER);
}

#[tokio::test]
async fn a_chat_client_fails_over_to_an_anthropic_target_plain_and_streaming() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(
        &claude,
        &openai,
        "[routes.o]\ntargets = [\"openai/sim-503\", \"claude/m\"]",
    )
    .await;
    let http = reqwest::Client::new();
    let resp = r.chat(&http, "o", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "openai/sim-503=overloaded; claude/m=ok"
    );
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    // Anthropic got a Messages request: max_tokens filled in, the key as x-api-key.
    let sent = claude.last_request("m").unwrap();
    assert!(sent["max_tokens"].as_u64().is_some());
    assert_eq!(
        claude.last_headers("m").unwrap()["x-api-key"],
        "sk-ant-provider"
    );

    let resp = r.chat(&http, "o", true).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, ANSWER);
}

#[tokio::test]
async fn a_tool_call_round_trips_through_a_translating_target() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(
        &claude,
        &openai,
        "[routes.t]\ntargets = [\"openai/sim-tool\"]",
    )
    .await;
    let tools = json!([{
        "name": "weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }]);
    let mut body = messages_body("t", false);
    body["tools"] = tools.clone();
    let answer: Value = post(&r, "/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(answer["stop_reason"], "tool_use");
    let call = answer["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "weather");
    assert_eq!(call["input"], json!({"city": "sim"}));
    let id = call["id"].as_str().unwrap().to_owned();
    // The chat target saw an OpenAI tool definition.
    let sent = openai.last_request("sim-tool").unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "weather");

    // The result goes back; the target answers from it.
    body["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sunny"}]},
    ]);
    let answer: Value = post(&r, "/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(answer["stop_reason"], "end_turn");
    assert!(
        answer["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("sunny"),
        "{answer}"
    );
    let sent = openai.last_request("sim-tool").unwrap();
    let tool_msg = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert_eq!(tool_msg["tool_call_id"], id);

    // Streaming, the call arrives as a tool_use block with its input in pieces.
    let mut body = messages_body("t", true);
    body["tools"] = tools;
    let ev = events(&post(&r, "/v1/messages", &body).await.text().await.unwrap());
    let start = ev
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(start.1["content_block"]["name"], "weather");
    let input: String = ev
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city": "sim"})
    );
    let delta = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev.last().unwrap().0, "message_stop");
}

#[tokio::test]
async fn a_stream_broken_after_its_first_token_ends_with_an_error_event_not_message_stop() {
    let (claude, openai) = (sim().await, sim().await);
    // After the first token every failure is `stream_interrupted` (design.md), an
    // `overloaded_error` event too.
    for target in ["claude/sim-cut-3", "claude/sim-error-3", "openai/sim-cut-3"] {
        let r = proxy(
            &claude,
            &openai,
            &format!("[routes.b]\ntargets = [\"{target}\"]"),
        )
        .await;
        let resp = post(&r, "/v1/messages", &messages_body("b", true)).await;
        assert_eq!(resp.status(), 200, "{target}");
        let ev = events(&resp.text().await.unwrap());
        assert!(!streamed_text(&ev).is_empty(), "{target}");
        assert!(
            ev.iter().all(|(n, _)| n != "message_stop"),
            "{target}: {ev:?}"
        );
        let (name, err) = ev.last().unwrap();
        assert_eq!(name, "error", "{target}");
        assert_eq!(err["type"], "error", "{target}");
        assert!(err["error"]["type"].is_string(), "{target}");
        assert_eq!(
            err["error"]["failover"]["reason"], "stream_interrupted",
            "{target}: {err}"
        );
        assert_eq!(err["error"]["type"], "api_error", "{target}");
    }
}

#[tokio::test]
async fn when_every_target_is_overloaded_the_client_gets_anthropics_529() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(
        &claude,
        &openai,
        "[routes.c]\ntargets = [\"claude/sim-529\", \"openai/sim-503\"]",
    )
    .await;
    let resp = post(&r, "/v1/messages", &messages_body("c", false)).await;
    assert_eq!(resp.status(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["error"]["failover"]["route"], "c");
    assert_eq!(
        body["error"]["failover"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The chat endpoint says the same in OpenAI's terms.
    let resp = r.chat(&reqwest::Client::new(), "c", false).await;
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn a_request_no_target_can_carry_skips_them_as_ineligible() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(
        &claude,
        &openai,
        "[routes.o]\ntargets = [\"claude/m\", \"openai/gpt\"]\n[routes.only]\ntargets = [\"claude/m\"]",
    )
    .await;
    // Two choices: Anthropic has no `n`; the route goes on to the OpenAI target.
    let mut body = chat_body("o", false);
    body["n"] = json!(2);
    let resp = reqwest::Client::new()
        .post(r.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "claude/m=ineligible; openai/gpt=ok"
    );
    assert_eq!(claude.attempts("m"), 0);
    // With no other target, a 400 that says why; nothing reached Anthropic.
    body["model"] = json!("only");
    let resp = reqwest::Client::new()
        .post(r.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("n has no equivalent in Anthropic Messages"),
        "{err}"
    );
    assert_eq!(
        err["error"]["failover"]["attempts"][0]["outcome"],
        "ineligible"
    );
    assert_eq!(claude.attempts("m"), 0);
    // The breaker did not hear of it.
    let status: Value = reqwest::get(r.url("/v1/failover/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b = crate::support::status_breaker(&status, "claude", "m").unwrap();
    assert_eq!(b["state"], "closed");
    assert_eq!(b["window_calls"], 0);
}

#[tokio::test]
async fn bad_messages_requests_get_anthropic_errors_and_reach_no_provider() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(&claude, &openai, "[routes.c]\ntargets = [\"claude/m\"]").await;
    let http = reqwest::Client::new();
    let huge = "x".repeat(6 * 1024 * 1024);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "not json",
            http.post(r.url("/v1/messages")).body("{nope"),
            400,
            "invalid_request_error",
        ),
        (
            "messages missing",
            http.post(r.url("/v1/messages"))
                .json(&json!({"model": "c", "max_tokens": 5})),
            400,
            "invalid_request_error",
        ),
        (
            "max_tokens missing",
            http.post(r.url("/v1/messages"))
                .json(&json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]})),
            400,
            "invalid_request_error",
        ),
        (
            "max_tokens not a number",
            http.post(r.url("/v1/messages")).json(
                &json!({"model": "c", "max_tokens": "9", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            400,
            "invalid_request_error",
        ),
        (
            "6 MB",
            http.post(r.url("/v1/messages")).json(
                &json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": huge}]}),
            ),
            413,
            "request_too_large",
        ),
        (
            "unknown route",
            http.post(r.url("/v1/messages")).json(&messages_body("nope", false)),
            404,
            "not_found_error",
        ),
    ];
    for (what, req, status, kind) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["type"], "error", "{what}: {body}");
        assert_eq!(body["error"]["type"], kind, "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some(), "{what}");
    }
    assert_eq!(claude.total_attempts(), 0);
}

#[tokio::test]
async fn a_chat_stream_broken_on_an_openai_target_is_finished_by_an_anthropic_one() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(
        &claude,
        &openai,
        "[routes.r]\ntargets = [\"openai/sim-cut-3\", \"claude/m\"]\n[routes.r.policy]\nstream_resume = true",
    )
    .await;
    let resp = r.chat(&reqwest::Client::new(), "r", true).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(crate::proxy::streamed_text(&data), ANSWER, "{body}");
    // The whole trail in a comment line, then the end of one whole answer.
    assert!(
        body.ends_with(
            ": x-failover-trail: openai/sim-cut-3=stream_interrupted; claude/m=ok\ndata: [DONE]\n\n"
        ),
        "{body}"
    );
    // Anthropic was asked to continue the text so far: a trailing assistant message, its
    // documented prefill, translated from the chat continuation.
    let sent = claude.last_request("m").unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "assistant", "{sent}");
    let prefill = last["content"].to_string();
    assert!(
        prefill.contains(ANSWER.split(' ').next().unwrap()),
        "{last}"
    );
}

/// The events of a resumed Messages stream, checked to be one whole message: one
/// `message_start`, every block started and stopped once, [`ANSWER`] as its text, the
/// `failover` field on its `message_delta`, `message_stop` last and the whole trail before it.
fn one_resumed_message(body: &str, trail: &str) -> Vec<(String, Value)> {
    let ev = events(body);
    let count = |name: &str| ev.iter().filter(|(n, _)| n == name).count();
    assert_eq!(count("message_start"), 1, "{body}");
    assert_eq!(count("content_block_start"), 1, "{body}");
    assert_eq!(count("content_block_stop"), 1, "{body}");
    assert!(
        ev.iter()
            .filter(|(n, _)| n.starts_with("content_block"))
            .all(|(_, d)| d["index"] == 0),
        "{body}"
    );
    assert_eq!(streamed_text(&ev), ANSWER, "{body}");
    let (_, delta) = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta["failover"]["resumed"], true, "{body}");
    assert_eq!(delta["failover"]["trail"], trail, "{body}");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{body}");
    assert!(
        body.ends_with(&format!(
            ": x-failover-trail: {trail}\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        )),
        "{body}"
    );
    ev
}

/// The last message a provider got: the prefill of a continuation.
fn prefill_sent(sim: &Sim, model: &str) -> Value {
    let sent = sim.last_request(model).unwrap();
    sent["messages"].as_array().unwrap().last().unwrap().clone()
}

#[tokio::test]
async fn a_messages_stream_broken_after_its_first_tokens_is_finished_natively_as_one_message() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(
        &claude,
        &openai,
        "[routes.r]\ntargets = [\"claude/sim-cut-3\", \"claude/m\"]\n[routes.r.policy]\nstream_resume = true",
    )
    .await;
    let resp = post(&r, "/v1/messages", &messages_body("r", true)).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let ev = one_resumed_message(&body, "claude/sim-cut-3=stream_interrupted; claude/m=ok");
    // The reader keeps the first message's id.
    let (_, start) = &ev[0];
    assert!(start["message"]["id"].is_string(), "{body}");
    // Anthropic was asked to continue the text so far, trailing whitespace left off (it
    // rejects that), with what is left of max_tokens.
    let last = prefill_sent(&claude, "m");
    assert_eq!(last["role"], "assistant");
    let prefill = last["content"].as_str().unwrap();
    assert!(
        ANSWER.starts_with(prefill) && !prefill.ends_with(' '),
        "{last}"
    );
    let sent = claude.last_request("m").unwrap();
    assert_eq!(sent["max_tokens"], 253, "{sent}");
    // Usage counts both attempts: the output of the broken one (three tokens) with the
    // continuation's.
    let (_, delta) = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    let whole = llm_failover::sim::answer_tokens().count() as u64;
    assert_eq!(delta["usage"]["output_tokens"], whole, "{delta}");
}

#[tokio::test]
async fn a_messages_stream_is_finished_across_protocols_only_by_a_target_that_takes_a_prefill() {
    let (claude, openai) = (sim().await, sim().await);
    let routes = "[routes.r]\ntargets = [\"claude/sim-cut-3\", \"openai/m\"]\n[routes.r.policy]\nstream_resume = true";
    // OpenAI's own chat API answers a trailing assistant message anew: it is never asked.
    let r = proxy(&claude, &openai, routes).await;
    let resp = post(&r, "/v1/messages", &messages_body("r", true)).await;
    let ev = events(&resp.text().await.unwrap());
    assert_eq!(ev.last().unwrap().0, "error", "{ev:?}");
    assert!(openai.last_request("m").is_none());
    // A host configured to continue one finishes the message, translated.
    let r = proxy_with(&claude, &openai, "prefill = \"assistant\"", routes).await;
    let resp = post(&r, "/v1/messages", &messages_body("r", true)).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    one_resumed_message(&body, "claude/sim-cut-3=stream_interrupted; openai/m=ok");
    let last = prefill_sent(&openai, "m");
    assert_eq!(last["role"], "assistant", "{last}");
    assert!(
        ANSWER.starts_with(last["content"].as_str().unwrap()),
        "{last}"
    );
}

/// A count request for `route`: `system` and two turns.
fn count_body(route: &str) -> Value {
    json!({
        "model": route,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "say the thing"},
            {"role": "assistant", "content": "which thing"},
            {"role": "user", "content": [{"type": "text", "text": "the one you know"}]},
        ],
    })
}

#[tokio::test]
async fn count_tokens_through_an_anthropic_target_is_the_input_tokens_of_the_same_messages() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(&claude, &openai, "[routes.c]\ntargets = [\"claude/m\"]").await;
    let resp = post(&r, "/v1/messages/count_tokens", &count_body("c")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-failover-trail"], "claude/m=ok");
    assert_eq!(resp.headers()["x-failover-provider"], "claude");
    let counted: Value = resp.json().await.unwrap();
    // What reached the provider: the target's model, no `stream`, no `max_tokens`, the
    // provider's key and the client's `anthropic-*` headers.
    let sent = claude.last_request("m").unwrap();
    assert_eq!(sent["model"], "m");
    assert!(sent.get("stream").is_none(), "{sent}");
    assert_eq!(sent["messages"], count_body("c")["messages"]);
    let headers = claude.last_headers("m").unwrap();
    assert_eq!(headers["x-api-key"], "sk-ant-provider");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["anthropic-beta"], "prompt-caching-2024-07-31");

    let mut message = count_body("c");
    message["max_tokens"] = json!(64);
    let answer: Value = post(&r, "/v1/messages", &message)
        .await
        .json()
        .await
        .unwrap();
    let input = &answer["usage"]["input_tokens"];
    assert!(input.as_u64().is_some_and(|n| n > 0), "{answer}");
    assert_eq!(counted, json!({"input_tokens": input}));
    assert_eq!(claude.attempts("m"), 2);

    // Without a client `anthropic-version`, the proxy's default goes; `stream: false` is
    // accepted (and not sent), `stream: true` is a 400 that reaches no provider.
    let mut body = count_body("c");
    body["stream"] = json!(false);
    let resp = reqwest::Client::new()
        .post(r.url("/v1/messages/count_tokens"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = claude.last_headers("m").unwrap();
    assert_eq!(
        headers["anthropic-version"],
        llm_failover::protocol::ANTHROPIC_VERSION
    );
    assert!(!headers.contains_key("anthropic-beta"));
    assert!(claude.last_request("m").unwrap().get("stream").is_none());
    body["stream"] = json!(true);
    let resp = post(&r, "/v1/messages/count_tokens", &body).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    assert_eq!(claude.attempts("m"), 3);

    // The route lists the endpoint.
    let models = crate::support::get_json(&reqwest::Client::new(), &r.url("/v1/models")).await;
    let endpoints = crate::support::endpoints(&models, "c");
    let counts = "/v1/messages/count_tokens".to_owned();
    assert!(endpoints.contains(&counts), "{models}");
}

#[tokio::test]
async fn count_tokens_fails_over_from_an_overloaded_anthropic_target_to_the_next() {
    let (claude, openai) = (sim().await, sim().await);
    // A second Anthropic provider, on the other sim.
    let routes = format!(
        "[providers.claude2]\napi = \"anthropic-messages\"\nbase_url = \"{}\"\n\
         [routes.c]\ntargets = [\"claude/sim-529\", \"openai/gpt\", \"claude2/m\"]",
        openai.base_url()
    );
    let r = proxy(&claude, &openai, &routes).await;
    let resp = post(&r, "/v1/messages/count_tokens", &count_body("c")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "claude/sim-529=overloaded; openai/gpt=ineligible; claude2/m=ok"
    );
    let counted: Value = resp.json().await.unwrap();
    assert_eq!(counted, json!({"input_tokens": 11}));
    assert_eq!(claude.attempts("sim-529"), 1);
    // The OpenAI-compatible target was sent nothing.
    assert_eq!(openai.attempts("gpt"), 0);
    assert_eq!(openai.attempts("m"), 1);
}

#[tokio::test]
async fn count_tokens_on_a_route_without_an_anthropic_target_is_a_400_that_says_why() {
    let (claude, openai) = (sim().await, sim().await);
    let r = proxy(&claude, &openai, "[routes.o]\ntargets = [\"openai/gpt\"]").await;
    let resp = post(&r, "/v1/messages/count_tokens", &count_body("o")).await;
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("no token counting"), "{message}");
    assert!(message.contains("anthropic-messages"), "{message}");
    assert_eq!(
        err["error"]["failover"]["attempts"][0]["outcome"],
        "ineligible"
    );
    assert_eq!(openai.total_attempts(), 0);
    assert_eq!(claude.total_attempts(), 0);
    // The route does not list the endpoint.
    let models = crate::support::get_json(&reqwest::Client::new(), &r.url("/v1/models")).await;
    let endpoints = crate::support::endpoints(&models, "o");
    let counts = "/v1/messages/count_tokens".to_owned();
    assert!(!endpoints.contains(&counts), "{models}");
}

#[tokio::test]
async fn count_tokens_takes_the_client_keys_of_messages() {
    let (claude, openai) = (sim().await, sim().await);
    let routes = format!(
        "[routes.c]\ntargets = [\"claude/m\"]\n[routes.other]\ntargets = [\"claude/m\"]\n\
         [[clients]]\nname = \"app\"\nkey_sha256 = \"{}\"\nroutes = [\"c\"]\n",
        crate::support::sha256_hex("sk-app")
    );
    let r = proxy(&claude, &openai, &routes).await;
    let http = reqwest::Client::new();
    let url = r.url("/v1/messages/count_tokens");
    // No key, a wrong key: 401 in Anthropic's shape.
    for req in [
        http.post(&url),
        http.post(&url).header("x-api-key", "sk-wrong"),
    ] {
        let resp = req.json(&count_body("c")).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["error"]["type"], "authentication_error", "{err}");
    }
    // A route the client may not use reads as one that does not exist.
    let resp = http
        .post(&url)
        .header("x-api-key", "sk-app")
        .json(&count_body("other"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(claude.total_attempts(), 0);
    // The key as `x-api-key` or as a bearer token; the provider gets its own key.
    for req in [
        http.post(&url).header("x-api-key", "sk-app"),
        http.post(&url).bearer_auth("sk-app"),
    ] {
        let resp = req.json(&count_body("c")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(claude.attempts("m"), 2);
    assert_eq!(
        claude.last_headers("m").unwrap()["x-api-key"],
        "sk-ant-provider"
    );
}
