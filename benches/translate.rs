//! What translating between OpenAI chat completions and Anthropic Messages, and between the
//! OpenAI Responses API and chat completions, costs per request: a 2 KiB request and a
//! 60-event stream, in both directions, each beside what the native path does with the same
//! bytes (for a request, the clone the call makes to set `model`; for a stream, parsing each
//! event), so the difference is translation's own overhead.

#![expect(clippy::expect_used, reason = "benchmark setup should fail loudly")]
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use llm_failover::protocol::translate::{
    ChatToMessages, ChatToResponses, MessagesToChat, ResponsesToChat, chat_request_to_messages,
    chat_request_to_responses, messages_request_to_chat, responses_request_to_chat,
};
use serde_json::{Value, json};

/// A conversation of about `bytes` of JSON: a system prompt, a tool, alternating turns.
fn turns(bytes: usize) -> Vec<(&'static str, String)> {
    let mut turns = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < bytes {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let text = format!(
            "Turn {i}: a sentence of ordinary length about the weather in Lisbon and the trains to Porto."
        );
        size += text.len() + 40;
        turns.push((role, text));
        i += 1;
    }
    if turns.last().is_some_and(|(r, _)| *r == "assistant") {
        turns.push(("user", "And tomorrow?".to_owned()));
    }
    turns
}

fn chat_request() -> Value {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a concise travel assistant."})];
    messages.extend(
        turns(1500)
            .into_iter()
            .map(|(role, text)| json!({"role": role, "content": text})),
    );
    json!({
        "model": "claude",
        "max_tokens": 512,
        "temperature": 0.3,
        "stream": true,
        "messages": messages,
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather forecast for a city and a day.",
            "parameters": {"type": "object", "required": ["city"], "properties": {
                "city": {"type": "string"}, "day": {"type": "string", "enum": ["today", "tomorrow"]}}}}}],
        "tool_choice": "auto",
    })
}

fn messages_request() -> Value {
    let messages: Vec<Value> = turns(1500)
        .into_iter()
        .map(|(role, text)| json!({"role": role, "content": [{"type": "text", "text": text}]}))
        .collect();
    json!({
        "model": "gpt",
        "max_tokens": 512,
        "temperature": 0.3,
        "stream": true,
        "system": [{"type": "text", "text": "You are a concise travel assistant.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": messages,
        "tools": [{"name": "get_weather", "description": "The weather forecast for a city and a day.",
            "input_schema": {"type": "object", "required": ["city"], "properties": {
                "city": {"type": "string"}, "day": {"type": "string", "enum": ["today", "tomorrow"]}}}}],
        "tool_choice": {"type": "auto"},
    })
}

fn responses_request() -> Value {
    let input: Vec<Value> = turns(1500)
        .into_iter()
        .map(|(role, text)| json!({"type": "message", "role": role, "content": text}))
        .collect();
    json!({
        "model": "gpt",
        "max_output_tokens": 512,
        "temperature": 0.3,
        "stream": true,
        "instructions": "You are a concise travel assistant.",
        "input": input,
        "tools": [{"type": "function", "name": "get_weather",
            "description": "The weather forecast for a city and a day.",
            "parameters": {"type": "object", "required": ["city"], "properties": {
                "city": {"type": "string"}, "day": {"type": "string", "enum": ["today", "tomorrow"]}}}}],
        "tool_choice": "auto",
    })
}

/// A Responses stream of 60 events, as OpenAI sends one: the lifecycle and item events
/// around 52 text deltas (made from a chat stream by the translator, which sends them in
/// OpenAI's order).
fn responses_events() -> Vec<(&'static str, String)> {
    let mut t = ChatToResponses::new("gpt");
    let mut payloads = chat_payloads();
    // 52 deltas: the chat stream's 56 less four, for the eight events that frame them.
    payloads.drain(53..57);
    let mut out: Vec<(&'static str, String)> = payloads.iter().flat_map(|d| t.data(d)).collect();
    out.extend(t.end());
    out
}

/// An Anthropic stream of 60 events: start, a text block of 55 deltas, its stop, the delta
/// and the stop of the message.
fn anthropic_events() -> Vec<(&'static str, String)> {
    let mut ev = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "claude", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 480, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for i in 0..55 {
        ev.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!("word{i} ")}}),
        ));
    }
    ev.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    ev.push(("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 55}})));
    ev.push(("message_stop", json!({"type": "message_stop"})));
    ev.into_iter().map(|(n, d)| (n, d.to_string())).collect()
}

/// A chat stream of 60 payloads: a role chunk, 56 content chunks, the finish, usage and
/// `[DONE]`.
fn chat_payloads() -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for i in 0..56 {
        out.push(chunk(json!({"content": format!("word{i} ")}), Value::Null));
    }
    out.push(chunk(json!({}), Value::from("stop")));
    out.push(
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
            "choices": [], "usage": {"prompt_tokens": 480, "completion_tokens": 56, "total_tokens": 536}})
        .to_string(),
    );
    out.push("[DONE]".to_owned());
    out
}

/// What a native call does with a request body: a copy with `model` set.
fn native_request(request: &Value) -> Value {
    let mut body = request.clone();
    body["model"] = Value::from("target");
    body
}

fn bench_requests(c: &mut Criterion) {
    let chat = chat_request();
    let messages = messages_request();
    let responses = responses_request();
    let mut g = c.benchmark_group("translate_request_2k");
    for (name, req) in [
        ("chat", &chat),
        ("messages", &messages),
        ("responses", &responses),
    ] {
        let bytes = req.to_string().len();
        assert!(
            (1800..2600).contains(&bytes),
            "{name} request is {bytes} bytes"
        );
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new("native", name), req, |b, r| {
            b.iter(|| native_request(black_box(r)));
        });
    }
    g.bench_function("chat_to_messages", |b| {
        b.iter(|| {
            let mut out = chat_request_to_messages(black_box(&chat)).expect("translatable");
            out["model"] = Value::from("target");
            out
        });
    });
    g.bench_function("messages_to_chat", |b| {
        b.iter(|| {
            let mut out = messages_request_to_chat(black_box(&messages)).expect("translatable");
            out["model"] = Value::from("target");
            out
        });
    });
    g.bench_function("chat_to_responses", |b| {
        b.iter(|| {
            let mut out = chat_request_to_responses(black_box(&chat)).expect("translatable");
            out["model"] = Value::from("target");
            out
        });
    });
    g.bench_function("responses_to_chat", |b| {
        b.iter(|| {
            let mut out = responses_request_to_chat(black_box(&responses)).expect("translatable");
            out["model"] = Value::from("target");
            out
        });
    });
    g.finish();
}

fn bench_streams(c: &mut Criterion) {
    let events = anthropic_events();
    let payloads = chat_payloads();
    let responses = responses_events();
    assert_eq!(events.len(), 60);
    assert_eq!(payloads.len(), 60);
    assert_eq!(responses.len(), 60);
    let mut g = c.benchmark_group("translate_stream_60_events");
    g.throughput(Throughput::Elements(60));
    // The native readers parse every event's data.
    g.bench_function("native_anthropic", |b| {
        b.iter(|| {
            for (_, d) in black_box(&events) {
                black_box(serde_json::from_str::<Value>(d).expect("json"));
            }
        });
    });
    g.bench_function("native_responses", |b| {
        b.iter(|| {
            for (_, d) in black_box(&responses) {
                black_box(serde_json::from_str::<Value>(d).expect("json"));
            }
        });
    });
    g.bench_function("native_chat", |b| {
        b.iter(|| {
            for d in black_box(&payloads).iter().filter(|d| *d != "[DONE]") {
                black_box(serde_json::from_str::<Value>(d).expect("json"));
            }
        });
    });
    // Anthropic upstream, chat client: parse, translate (the chat reader then parses the
    // payloads it gets, as it would the native chat stream's).
    g.bench_function("anthropic_to_chat", |b| {
        b.iter(|| {
            let mut t = MessagesToChat::new();
            let mut n = 0;
            for (name, d) in black_box(&events) {
                let data: Value = serde_json::from_str(d).expect("json");
                n += t.event(name, &data).len();
            }
            n
        });
    });
    // Chat upstream, Anthropic client.
    g.bench_function("chat_to_anthropic", |b| {
        b.iter(|| {
            let mut t = ChatToMessages::new("claude");
            let mut n = 0;
            for d in black_box(&payloads) {
                n += t.data(d).len();
            }
            n + t.end().len()
        });
    });
    // Responses upstream, chat client; and chat upstream, Responses client.
    g.bench_function("responses_to_chat", |b| {
        b.iter(|| {
            let mut t = ResponsesToChat::new();
            let mut n = 0;
            for (name, d) in black_box(&responses) {
                let data: Value = serde_json::from_str(d).expect("json");
                n += t.event(name, &data).len();
            }
            n
        });
    });
    g.bench_function("chat_to_responses", |b| {
        b.iter(|| {
            let mut t = ChatToResponses::new("gpt");
            let mut n = 0;
            for d in black_box(&payloads) {
                n += t.data(d).len();
            }
            n + t.end().len()
        });
    });
    g.finish();
}

criterion_group!(benches, bench_requests, bench_streams);
criterion_main!(benches);
