//! `POST /v1/responses` end to end, and failover across protocols: a proxy on loopback in front
//! of simulated providers that speak the OpenAI Responses API, OpenAI chat and Anthropic
//! Messages.

use llm_failover::proxy::Config;
use llm_failover::sim::{ANSWER, Sim};
use serde_json::{Value, json};

use crate::proxy::{Running, chat_body, sse_data, start_config, streamed_text};
use crate::support::{events, sim};

/// A Responses request for `route`.
fn responses_body(route: &str, stream: bool) -> Value {
    json!({"model": route, "stream": stream, "input": "hi", "max_output_tokens": 256})
}

/// A proxy with a Responses provider `resp` (key `sk-resp-provider`) on `responses`, a
/// second one `resp2` on `responses2`, a chat provider `openai` and an Anthropic one `claude`
/// on `other`, and `routes` (TOML).
async fn proxy(responses: &Sim, responses2: &Sim, other: &Sim, routes: &str) -> Running {
    let toml = format!(
        r#"
[route]
attempt_timeout = "5s"
ttft_timeout = "2s"
idle_timeout = "1s"
total_deadline = "10s"

[providers.resp]
api = "openai-responses"
base_url = "{}"
api_key_env = "RESP_KEY"
[providers.resp2]
api = "openai-responses"
base_url = "{}"
[providers.openai]
base_url = "{}"
[providers.claude]
api = "anthropic-messages"
base_url = "{}"

{routes}
"#,
        responses.base_url(),
        responses2.base_url(),
        other.base_url(),
        other.base_url(),
    );
    let config = Config::parse_with_env(&toml, "test.toml", |v| {
        (v == "RESP_KEY").then(|| "sk-resp-provider".to_owned())
    })
    .unwrap();
    start_config(&config).await
}

async fn post(r: &Running, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(r.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The text of a response: its `output_text` parts.
fn output_text(answer: &Value) -> String {
    answer["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().into_iter().flatten())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

/// The text of a Responses stream's `response.output_text.delta`s.
fn streamed_deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect()
}

/// The event names of a stream, in order.
fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn a_native_responses_target_answers_with_its_own_response_and_headers() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(&a, &b, &other, "[routes.r]\ntargets = [\"resp/m\"]").await;
    let mut body = responses_body("r", false);
    // Fields the proxy does not know pass untouched.
    body["reasoning"] = json!({"effort": "low"});
    body["include"] = json!(["reasoning.encrypted_content"]);
    let resp = post(&r, "/v1/responses", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-failover-trail"], "resp/m=ok");
    assert_eq!(resp.headers()["x-failover-provider"], "resp");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(output_text(&answer), ANSWER);
    assert!(answer["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        a.last_authorization("m").as_deref(),
        Some("Bearer sk-resp-provider")
    );
    let seen = a.last_request("m").unwrap();
    assert_eq!(seen["model"], "m");
    assert_eq!(seen["reasoning"], json!({"effort": "low"}));
    assert_eq!(seen["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(seen["input"], "hi");
}

#[tokio::test]
async fn a_native_stream_is_relayed_event_by_event_and_ends_with_its_completion() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(&a, &b, &other, "[routes.r]\ntargets = [\"resp/m\"]").await;
    let resp = post(&r, "/v1/responses", &responses_body("r", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-failover-trail"], "resp/m=ok");
    let events = events(&resp.text().await.unwrap());
    let names = names(&events);
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert_eq!(streamed_deltas(&events), ANSWER);
    // The upstream's events, in its order, with its sequence numbers.
    let seq: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (0..seq.len() as u64).collect::<Vec<_>>());
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(output_text(completed), ANSWER);
}

#[tokio::test]
async fn an_overloaded_responses_target_fails_over_to_the_next_before_the_first_token() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.r]\ntargets = [\"resp/sim-503\", \"resp2/m\"]",
    )
    .await;
    for stream in [false, true] {
        let resp = post(&r, "/v1/responses", &responses_body("r", stream)).await;
        assert_eq!(resp.status(), 200, "stream {stream}");
        assert_eq!(
            resp.headers()["x-failover-trail"],
            "resp/sim-503=overloaded; resp2/m=ok"
        );
        let text = resp.text().await.unwrap();
        if stream {
            assert_eq!(streamed_deltas(&events(&text)), ANSWER);
        } else {
            assert_eq!(output_text(&serde_json::from_str(&text).unwrap()), ANSWER);
        }
    }
}

#[tokio::test]
async fn a_responses_client_is_served_by_chat_and_anthropic_targets_through_translation() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.chat]\ntargets = [\"resp/sim-529\", \"openai/m\"]\n[routes.claude]\ntargets = [\"claude/c\"]",
    )
    .await;
    for route in ["chat", "claude"] {
        let mut body = responses_body(route, false);
        body["instructions"] = json!("Be brief.");
        let resp = post(&r, "/v1/responses", &body).await;
        assert_eq!(resp.status(), 200, "{route}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["object"], "response", "{route}");
        assert_eq!(answer["status"], "completed", "{route}");
        assert!(answer["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(output_text(&answer), ANSWER, "{route}");
        assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);

        body["stream"] = json!(true);
        let resp = post(&r, "/v1/responses", &body).await;
        assert_eq!(resp.status(), 200, "{route}");
        let events = events(&resp.text().await.unwrap());
        let names = names(&events);
        assert_eq!(names[..2], ["response.created", "response.in_progress"]);
        assert_eq!(names.last(), Some(&"response.completed"), "{route}");
        assert_eq!(streamed_deltas(&events), ANSWER, "{route}");
        let completed = &events.last().unwrap().1["response"];
        assert_eq!(output_text(completed), ANSWER);
        assert!(completed["usage"]["output_tokens"].as_u64().unwrap() > 0);
    }
    // The chat target got the instructions as a system message, and the output limit.
    let seen = other.last_request("m").unwrap();
    assert_eq!(seen["messages"][0]["role"], "system");
    assert_eq!(seen["messages"][0]["content"], "Be brief.");
    // The Anthropic target got Anthropic's request, the instructions as its system prompt.
    let seen = other.last_request("c").unwrap();
    assert_eq!(seen["max_tokens"], 256);
    assert_eq!(seen["system"], "Be brief.");
    assert_eq!(seen["messages"][0]["role"], "user");
}

#[tokio::test]
async fn chat_and_messages_clients_are_served_by_a_responses_target() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.r]\ntargets = [\"openai/sim-503\", \"resp/m\"]",
    )
    .await;
    let resp = post(&r, "/v1/chat/completions", &chat_body("r", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "openai/sim-503=overloaded; resp/m=ok"
    );
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    // A chat client asked for no stored state.
    assert_eq!(a.last_request("m").unwrap()["store"], false);

    let resp = post(&r, "/v1/chat/completions", &chat_body("r", true)).await;
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(streamed_text(&data), ANSWER);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));

    let messages = json!({"model": "r", "max_tokens": 64, "stream": false,
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = post(&r, "/v1/messages", &messages).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], ANSWER);
    assert_eq!(a.last_request("m").unwrap()["max_output_tokens"], 64);

    let mut streaming = messages.clone();
    streaming["stream"] = json!(true);
    let resp = post(&r, "/v1/messages", &streaming).await;
    let events = events(&resp.text().await.unwrap());
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, ANSWER);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
}

#[tokio::test]
async fn a_tool_call_round_trips_natively_and_through_a_chat_target() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.native]\ntargets = [\"resp/sim-tool\"]\n[routes.chat]\ntargets = [\"openai/sim-tool\"]",
    )
    .await;
    let tool = json!({"type": "function", "name": "get_weather", "description": "The weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    for route in ["native", "chat"] {
        let body = json!({"model": route, "input": "Weather in Paris?", "tools": [tool]});
        let answer: Value = post(&r, "/v1/responses", &body).await.json().await.unwrap();
        let call = answer["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{route}: no function call in {answer}"))
            .clone();
        assert_eq!(call["name"], "get_weather", "{route}");
        let call_id = call["call_id"].as_str().unwrap().to_owned();
        assert!(
            serde_json::from_str::<Value>(call["arguments"].as_str().unwrap())
                .unwrap()
                .is_object()
        );
        // The result goes back with the call's id, and the model answers in text.
        let body = json!({"model": route, "tools": [tool], "input": [
            {"role": "user", "content": "Weather in Paris?"},
            call,
            {"type": "function_call_output", "call_id": call_id, "output": "sunny"},
        ]});
        let answer: Value = post(&r, "/v1/responses", &body).await.json().await.unwrap();
        assert_eq!(output_text(&answer), "The tool answered: sunny", "{route}");
        if route == "chat" {
            let seen = other.last_request("sim-tool").unwrap();
            let tool_msg = seen["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["role"] == "tool")
                .unwrap()
                .clone();
            assert_eq!(tool_msg["tool_call_id"], call_id.as_str());
            assert_eq!(tool_msg["content"], "sunny");
        }
    }
}

#[tokio::test]
async fn a_stream_broken_after_its_first_token_ends_with_an_error_event_never_a_completion() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.native]\ntargets = [\"resp/sim-cut-3\", \"resp2/m\"]\n[routes.chat]\ntargets = [\"openai/sim-cut-3\"]\n[routes.failed]\ntargets = [\"resp/sim-error-2\"]",
    )
    .await;
    for route in ["native", "chat", "failed"] {
        let resp = post(&r, "/v1/responses", &responses_body(route, true)).await;
        assert_eq!(resp.status(), 200, "{route}: the stream had started");
        let events = events(&resp.text().await.unwrap());
        let names = names(&events);
        assert!(
            !names.contains(&"response.completed"),
            "{route}: a partial answer must not look whole: {names:?}"
        );
        let deltas = streamed_deltas(&events);
        assert!(!deltas.is_empty() && deltas != ANSWER, "{route}: {deltas}");
        let (last, error) = events.last().unwrap();
        assert_eq!(last, "error", "{route}");
        assert_eq!(error["type"], "error");
        // The SDKs raise on an event with an `error` object.
        assert!(error["error"]["message"].is_string(), "{route}: {error}");
        let reason = error["error"]["failover"]["reason"].as_str().unwrap();
        assert!(
            ["stream_interrupted", "server_error", "overloaded"].contains(&reason),
            "{route}: {reason}"
        );
    }
    // The second target of `native` was not asked: the answer had started on the first.
    assert_eq!(b.attempts("m"), 0);
}

#[tokio::test]
async fn a_stateful_request_goes_only_to_the_provider_that_holds_its_state() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.r]\ntargets = [\"resp/m\", \"resp2/m\"]\n[routes.chat_first]\ntargets = [\"openai/m\", \"resp2/m\"]\n[routes.chat_only]\ntargets = [\"openai/m\", \"claude/m\"]",
    )
    .await;
    // The first answer comes from resp2 (resp is down for a moment).
    a.set_fault("m", llm_failover::sim::Fault::Status(503));
    let first: Value = post(&r, "/v1/responses", &responses_body("r", false))
        .await
        .json()
        .await
        .unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(b.knows_response(&id));
    a.clear_fault("m");
    let asked_a = a.attempts("m");

    // Continuing it goes to resp2, which holds it, though resp is first and healthy again.
    let mut next = responses_body("r", false);
    next["previous_response_id"] = json!(id);
    next["input"] = json!("and then?");
    for stream in [false, true] {
        next["stream"] = json!(stream);
        let resp = post(&r, "/v1/responses", &next).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-failover-trail"],
            "resp/m=ineligible; resp2/m=ok"
        );
        resp.text().await.unwrap();
    }
    assert_eq!(a.attempts("m"), asked_a, "resp was never asked");

    // A chat target cannot continue a stored response: it is skipped, saying why.
    let mut next = responses_body("chat_first", false);
    next["previous_response_id"] = json!(id);
    let resp = post(&r, "/v1/responses", &next).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "openai/m=ineligible; resp2/m=ok"
    );

    // A route with no target that can hold state: a 400 that says why, and no provider asked.
    let before = other.total_attempts();
    let mut next = responses_body("chat_only", false);
    next["previous_response_id"] = json!(id);
    let resp = post(&r, "/v1/responses", &next).await;
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("previous_response_id"), "{message}");
    assert!(message.contains("resp2"), "names the holder: {message}");
    assert_eq!(other.total_attempts(), before);

    // An answer translated from chat is stored nowhere: continuing it is refused, saying so.
    let translated: Value = post(&r, "/v1/responses", &responses_body("chat_only", false))
        .await
        .json()
        .await
        .unwrap();
    let mut next = responses_body("r", false);
    next["previous_response_id"] = translated["id"].clone();
    let (asked_a, asked_b) = (a.attempts("m"), b.attempts("m"));
    let resp = post(&r, "/v1/responses", &next).await;
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("without storing"), "{message}");
    assert_eq!((a.attempts("m"), b.attempts("m")), (asked_a, asked_b));
}

#[tokio::test]
async fn an_unknown_previous_response_goes_to_responses_targets_only() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.r]\ntargets = [\"openai/m\", \"resp/m\"]",
    )
    .await;
    let mut body = responses_body("r", false);
    body["previous_response_id"] = json!("resp_from_before_a_restart");
    let resp = post(&r, "/v1/responses", &body).await;
    // The chat target is skipped; the Responses target says it does not know the id, and
    // that is the client's answer (a 400 that no other target can fix).
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "openai/m=ineligible; resp/m=format"
    );
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["code"], "previous_response_not_found");
    assert_eq!(other.attempts("m"), 0);
}

#[tokio::test]
async fn every_target_failing_gives_an_openai_error_with_the_trail() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(
        &a,
        &b,
        &other,
        "[routes.overloaded]\ntargets = [\"resp/sim-503\", \"resp2/sim-529\"]\n[routes.limited]\ntargets = [\"resp/sim-429\"]",
    )
    .await;
    let resp = post(&r, "/v1/responses", &responses_body("overloaded", false)).await;
    assert_eq!(resp.status(), 503);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["code"], "overloaded");
    assert_eq!(error["error"]["failover"]["route"], "overloaded");
    assert_eq!(
        error["error"]["failover"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let resp = post(&r, "/v1/responses", &responses_body("limited", true)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn a_bad_request_gets_a_400_and_reaches_no_provider() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(&a, &b, &other, "[routes.r]\ntargets = [\"resp/m\"]").await;
    let http = reqwest::Client::new();
    let not_json = http
        .post(r.url("/v1/responses"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    for (body, param) in [
        (json!({"model": "r"}), "input"),
        (json!({"model": "r", "input": ""}), "input"),
        (json!({"model": "r", "input": 3}), "input"),
        (
            json!({"model": "r", "input": "hi", "max_output_tokens": "many"}),
            "max_output_tokens",
        ),
        (
            json!({"model": "r", "input": "hi", "instructions": 7}),
            "instructions",
        ),
        (json!({"input": "hi"}), "model"),
    ] {
        let resp = post(&r, "/v1/responses", &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(error["error"]["param"], param, "{body}");
    }
    assert_eq!(a.total_attempts(), 0);
}

#[tokio::test]
async fn models_list_the_responses_endpoint() {
    let (a, b, other) = (sim().await, sim().await, sim().await);
    let r = proxy(&a, &b, &other, "[routes.r]\ntargets = [\"resp/m\"]").await;
    let models = crate::support::get_json(&reqwest::Client::new(), &r.url("/v1/models")).await;
    let endpoints = crate::support::endpoints(&models, "r");
    assert!(
        endpoints.contains(&"/v1/responses".to_owned()),
        "{endpoints:?}"
    );
}

#[tokio::test]
async fn client_keys_guard_the_responses_and_embeddings_endpoints_like_chat() {
    let s = sim().await;
    let toml = format!(
        r#"
[providers.resp]
api = "openai-responses"
base_url = "{}"
[routes.r]
targets = ["resp/m"]
[routes.embed]
targets = ["resp/text-embedding-3-small"]
[routes.other]
targets = ["resp/m2"]

[[clients]]
name = "web"
key_env = "WEB_KEY"
routes = ["r", "embed"]
"#,
        s.base_url()
    );
    let config = Config::parse_with_env(&toml, "test.toml", |v| {
        (v == "WEB_KEY").then(|| "client-key-web".to_owned())
    })
    .unwrap();
    let r = start_config(&config).await;
    let http = reqwest::Client::new();
    for (path, model, body) in [
        ("/v1/responses", "m", json!({"model": "r", "input": "hi"})),
        (
            "/v1/embeddings",
            "text-embedding-3-small",
            json!({"model": "embed", "input": "hi"}),
        ),
    ] {
        let send = |key: Option<(&str, &str)>, body: &Value| {
            let mut req = http.post(r.url(path)).json(body);
            if let Some((name, value)) = key {
                req = req.header(name, value);
            }
            req.send()
        };
        let before = s.total_attempts();
        assert_eq!(send(None, &body).await.unwrap().status(), 401, "{path}");
        let mut other = body.clone();
        other["model"] = json!("other");
        let key = Some(("x-api-key", "client-key-web"));
        let resp = send(key, &other).await.unwrap();
        assert_eq!(resp.status(), 404, "{path}: a route the client may not use");
        assert_eq!(
            s.total_attempts(),
            before,
            "{path}: nothing reached the provider"
        );

        let resp = send(key, &body).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers()["x-failover-trail"],
            format!("resp/{model}=ok").as_str()
        );
        let bearer = Some(("authorization", "Bearer client-key-web"));
        assert_eq!(send(bearer, &body).await.unwrap().status(), 200, "{path}");
        // The client's key is not the provider's: it never goes upstream.
        assert_eq!(s.last_authorization(model), None, "{path}");
    }
}
