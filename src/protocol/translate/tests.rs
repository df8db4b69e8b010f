//! Tests of the translations: every row of the table, round trips, streams, odd inputs.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::request::DEFAULT_MAX_TOKENS;
use super::test_util::*;
use super::*;

fn to_messages(req: Value) -> Value {
    chat_request_to_messages(&req).unwrap()
}

fn to_chat(req: Value) -> Value {
    messages_request_to_chat(&req).unwrap()
}

/// The feature an untranslatable chat request names, checking the target too.
fn refused_by_anthropic(req: Value) -> &'static str {
    refused(chat_request_to_messages(&req), ANTHROPIC)
}

/// The feature an untranslatable Anthropic request names, checking the target too.
fn refused_by_chat(req: Value) -> &'static str {
    refused(messages_request_to_chat(&req), OPENAI_CHAT)
}

// ---------------------------------------------------------------- requests: chat -> messages

#[test]
fn a_plain_chat_request_becomes_a_messages_request() {
    let out = to_messages(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": true,
        "user": "u-42",
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "n": 1,
        "response_format": {"type": "text"},
    }));
    assert_eq!(
        out,
        json!({
            "model": "gpt-4o",
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "stream": true,
            "metadata": {"user_id": "u-42"},
        })
    );
}

#[test]
fn max_tokens_prefers_max_completion_tokens_and_defaults() {
    let m = |req: Value| to_messages(req)["max_tokens"].clone();
    let msgs = json!([user("Hi")]);
    assert_eq!(
        m(json!({"messages": msgs, "max_tokens": 10, "max_completion_tokens": 20})),
        20
    );
    assert_eq!(m(json!({"messages": msgs, "max_tokens": 10})), 10);
    assert_eq!(m(json!({"messages": msgs})), DEFAULT_MAX_TOKENS);
}

#[test]
fn temperature_is_clamped_to_anthropics_range() {
    let out = to_messages(json!({"messages": [user("Hi")], "temperature": 1.7}));
    assert_eq!(out["temperature"], 1.0);
}

#[test]
fn stop_arrays_carry_over() {
    let out = to_messages(json!({"messages": [user("Hi")], "stop": ["a", "b"]}));
    assert_eq!(out["stop_sequences"], json!(["a", "b"]));
    let out = to_messages(json!({"messages": [user("Hi")], "stop": []}));
    assert!(out.get("stop_sequences").is_none());
}

#[test]
fn several_system_and_developer_messages_become_system_blocks() {
    let out = to_messages(json!({"messages": [
        {"role": "system", "content": "One."},
        {"role": "developer", "content": [{"type": "text", "text": "Two."}, {"type": "text", "text": "Three."}]},
        user("Hi"),
    ]}));
    assert_eq!(
        out["system"],
        json!([
            {"type": "text", "text": "One."},
            {"type": "text", "text": "Two."},
            {"type": "text", "text": "Three."},
        ])
    );
}

#[test]
fn a_system_message_inside_the_conversation_is_refused() {
    let req = json!({"messages": [user("Hi"), {"role": "system", "content": "Now be rude."}]});
    assert_eq!(refused_by_anthropic(req), "system message");
}

#[test]
fn images_become_image_blocks() {
    let out = to_messages(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ])
    );
    let bad = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}},
    ]}]});
    assert_eq!(refused_by_anthropic(bad), "image_url");
}

#[test]
fn tools_and_tool_choice_become_anthropic_tools() {
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        "strict": true,
    }}]);
    let out = to_messages(json!({"messages": [user("Hi")], "tools": tools}));
    assert_eq!(
        out["tools"],
        json!([{
            "name": "get_weather",
            "description": "Weather at a place",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        }])
    );
    assert!(out.get("tool_choice").is_none());
    let choice = |c: Value, parallel: Option<bool>| {
        let mut req = json!({"messages": [user("Hi")], "tools": tools, "tool_choice": c});
        if let Some(p) = parallel {
            req["parallel_tool_calls"] = Value::Bool(p);
        }
        to_messages(req)["tool_choice"].clone()
    };
    assert_eq!(choice(json!("auto"), None), json!({"type": "auto"}));
    assert_eq!(choice(json!("required"), None), json!({"type": "any"}));
    assert_eq!(choice(json!("none"), None), json!({"type": "none"}));
    assert_eq!(
        choice(
            json!({"type": "function", "function": {"name": "get_weather"}}),
            Some(false)
        ),
        json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        choice(Value::Null, Some(false)),
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(choice(json!("auto"), Some(true)), json!({"type": "auto"}));
    // No tools, no tool_choice (Anthropic rejects one without tools).
    let out = to_messages(json!({"messages": [user("Hi")], "tool_choice": "auto"}));
    assert!(out.get("tool_choice").is_none());
    // A tool without parameters gets an empty object schema.
    let out = to_messages(json!({"messages": [user("Hi")],
        "tools": [{"type": "function", "function": {"name": "now"}}]}));
    assert_eq!(
        out["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
}

#[test]
fn tool_calls_and_results_become_tool_use_and_tool_result_blocks() {
    let out = to_messages(json!({"messages": [
        user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
        user("Which is warmer?"),
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
                {"type": "text", "text": "Which is warmer?"},
            ]},
        ])
    );
}

#[test]
fn assistant_text_refusal_and_empty_arguments() {
    let out = to_messages(json!({"messages": [
        user("Hi"),
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
        {"role": "assistant", "content": null, "refusal": "I can't help with that."},
        user("Ok"),
        {"role": "assistant", "content": ""},
    ]}));
    assert_eq!(
        out["messages"][1]["content"],
        json!([
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "now", "input": {}},
        ])
    );
    assert_eq!(
        out["messages"][3]["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    // The empty final assistant message is left out.
    assert_eq!(out["messages"].as_array().unwrap().len(), 5);
}

#[test]
fn malformed_tool_arguments_are_refused() {
    for args in [json!("{\"city\": "), json!("[1, 2]"), json!(3)] {
        let req = json!({"messages": [
            user("Hi"),
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": args}}]},
        ]});
        assert_eq!(
            refused_by_anthropic(req),
            "tool_calls.function.arguments",
            "{args}"
        );
    }
}

/// What no target but chat can carry is refused, under the same name, by the Anthropic and
/// the Responses translations alike.
#[test]
fn features_only_chat_carries_are_refused_by_every_other_target() {
    let with = |k: &str, v: Value| {
        let mut req = json!({"messages": [user("Hi")]});
        req[k] = v;
        req
    };
    let cases = [
        (with("n", json!(2)), "n"),
        (with("logprobs", json!(true)), "logprobs"),
        (with("top_logprobs", json!(3)), "logprobs"),
        (
            with("audio", json!({"voice": "alloy", "format": "wav"})),
            "audio",
        ),
        (with("modalities", json!(["text", "audio"])), "modalities"),
        (with("logit_bias", json!({"50256": -100})), "logit_bias"),
        (with("web_search_options", json!({})), "web_search_options"),
        (with("functions", json!([{"name": "f"}])), "functions"),
        (with("function_call", json!("auto")), "function_call"),
    ];
    for (req, feature) in cases {
        assert_eq!(refused_by_anthropic(req.clone()), feature, "{req}");
        assert_eq!(
            refused(chat_request_to_responses(&req), RESPONSES),
            feature,
            "{req}"
        );
    }
}

#[test]
fn chat_only_features_are_refused_by_name() {
    let base = || json!({"messages": [user("Hi")]});
    let with = |k: &str, v: Value| {
        let mut r = base();
        r[k] = v;
        r
    };
    let cases = [
        (
            with("response_format", json!({"type": "json_object"})),
            "response_format",
        ),
        (
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
            ),
            "response_format",
        ),
        (
            with(
                "tools",
                json!([{"type": "custom", "custom": {"name": "x"}}]),
            ),
            "tools",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "input_audio",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}),
            "file",
        ),
        (
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "function message",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
            "tool_calls",
        ),
    ];
    for (req, feature) in cases {
        assert_eq!(refused_by_anthropic(req.clone()), feature, "{req}");
    }
    // What only shapes sampling is dropped, not refused.
    for (k, v) in [
        ("seed", json!(1)),
        ("presence_penalty", json!(1)),
        ("frequency_penalty", json!(1)),
        ("logit_bias", json!({})),
        ("logprobs", json!(false)),
        ("modalities", json!(["text"])),
        ("stream_options", json!({"include_usage": true})),
        ("reasoning_effort", json!("low")),
    ] {
        let out = to_messages(with(k, v));
        assert!(out.get(k).is_none(), "{k}");
    }
}

// ---------------------------------------------------------------- requests: messages -> chat

#[test]
fn a_plain_messages_request_becomes_a_chat_request() {
    let out = to_chat(json!({
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END"],
        "stream": true,
        "metadata": {"user_id": "u-42"},
        "thinking": {"type": "disabled"},
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            "max_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["END"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-42",
        })
    );
    let out = to_chat(json!({"system": "S", "messages": [user("Hi")], "stream": false}));
    assert_eq!(
        out["messages"][0],
        json!({"role": "system", "content": "S"})
    );
    assert_eq!(out["stream"], false);
    assert!(out.get("stream_options").is_none());
}

#[test]
fn anthropic_images_become_image_url_parts() {
    let out = to_chat(json!({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ])
    );
    let file = json!({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
    ]}]});
    assert_eq!(refused_by_chat(file), "image source");
}

#[test]
fn anthropic_tools_and_tool_choice_become_functions() {
    let tools = json!([{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"},
        "cache_control": {"type": "ephemeral"}}]);
    let choice = |c: Value| {
        let out = to_chat(json!({"messages": [user("Hi")], "tools": tools, "tool_choice": c}));
        (
            out["tool_choice"].clone(),
            out.get("parallel_tool_calls").cloned(),
        )
    };
    let out = to_chat(json!({"messages": [user("Hi")], "tools": tools}));
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather", "description": "Weather", "parameters": {"type": "object"},
        }}])
    );
    assert_eq!(choice(json!({"type": "auto"})), (json!("auto"), None));
    assert_eq!(choice(json!({"type": "any"})), (json!("required"), None));
    assert_eq!(choice(json!({"type": "none"})), (json!("none"), None));
    assert_eq!(
        choice(json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})),
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            Some(json!(false))
        )
    );
    let server = json!({"messages": [user("Hi")],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]});
    assert_eq!(refused_by_chat(server), "server tool");
    let custom = to_chat(json!({"messages": [user("Hi")],
        "tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}}]}));
    assert_eq!(custom["tools"][0]["function"]["name"], "f");
}

#[test]
fn tool_results_become_tool_messages_in_order_then_the_users_text() {
    let out = to_chat(json!({"messages": [
        user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "24C"}], "is_error": false},
            {"type": "text", "text": "Which is warmer?"},
        ]},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "tool_use", "id": "toolu_3", "name": "now", "input": {}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3", "is_error": true, "content": "clock broken"}]},
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "24C"},
            {"role": "user", "content": [{"type": "text", "text": "Which is warmer?"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_3", "type": "function", "function": {"name": "now", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_3", "content": "clock broken"},
        ])
    );
}

#[test]
fn anthropic_only_features_are_refused_by_name() {
    let with_block = |b: Value| json!({"messages": [{"role": "user", "content": [b]}]});
    let cases = [
        (
            json!({"messages": [user("Hi")], "thinking": {"type": "enabled", "budget_tokens": 2000}}),
            "thinking",
        ),
        (
            json!({"messages": [user("Hi")], "mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}),
            "mcp_servers",
        ),
        (
            json!({"messages": [user("Hi")], "container": "c_1"}),
            "container",
        ),
        (
            with_block(
                json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}),
            ),
            "document block",
        ),
        (
            with_block(
                json!({"type": "search_result", "source": "https://x", "title": "t", "content": []}),
            ),
            "search_result block",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            ]}]}),
            "server tool block",
        ),
        (
            with_block(
                json!({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}),
            ),
            "tool_result content",
        ),
        (
            json!({"system": [{"type": "image"}], "messages": [user("Hi")]}),
            "system",
        ),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "message role",
        ),
    ];
    for (req, feature) in cases {
        assert_eq!(refused_by_chat(req.clone()), feature, "{req}");
    }
}

// ---------------------------------------------------------------- round trips

#[test]
fn chat_to_messages_to_chat_keeps_the_meaning() {
    let original = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "18C"},
            {"role": "assistant", "content": "18C in Paris."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "stop": ["END"],
        "max_tokens": 300,
        "temperature": 0.3,
    });
    let back = to_chat(to_messages(original.clone()));
    assert_eq!(back, original);
}

#[test]
fn messages_to_chat_to_messages_keeps_the_meaning() {
    let original = json!({
        "model": "m",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "text", "text": "And?"},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"],
        "max_tokens": 300,
        "temperature": 0.3,
        "metadata": {"user_id": "u"},
    });
    let back = to_messages(to_chat(original.clone()));
    assert_eq!(back, original);
}

// ---------------------------------------------------------------- answers

#[test]
fn an_anthropic_answer_becomes_a_chat_completion() {
    let answer = json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": "s"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 50},
    });
    let out = messages_answer_to_chat(&answer);
    assert_eq!(out["id"], "chatcmpl-013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(out["object"], "chat.completion");
    assert!(out["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert_eq!(
        out["choices"][0]["message"],
        json!({
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "Hmm.",
            "tool_calls": [{"id": "toolu_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}],
        })
    );
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    // The prompt counts the cache reads and writes; the cached tokens are the reads.
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 1150, "completion_tokens": 20, "total_tokens": 1170,
            "prompt_tokens_details": {"cached_tokens": 1000}})
    );
}

#[test]
fn stop_reasons_become_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
    ] {
        let out = messages_answer_to_chat(
            &json!({"content": [{"type": "text", "text": "x"}], "stop_reason": stop}),
        );
        assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

#[test]
fn a_chat_completion_becomes_an_anthropic_answer() {
    let answer = json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1_741_570_283,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "private",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}},
            ],
        }, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1150, "completion_tokens": 20, "total_tokens": 1170,
            "prompt_tokens_details": {"cached_tokens": 1000}},
    });
    assert_eq!(
        chat_answer_to_messages(&answer),
        json!({
            "id": "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o-2024-08-06",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            // input_tokens leaves the cached tokens out.
            "usage": {"input_tokens": 150, "output_tokens": 20, "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 0},
        })
    );
}

#[test]
fn finish_reasons_become_stop_reasons() {
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        let out = chat_answer_to_messages(
            &json!({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}),
        );
        assert_eq!(out["stop_reason"], stop, "{finish}");
        assert_eq!(out["stop_sequence"], Value::Null);
    }
    let refusal = chat_answer_to_messages(&json!({"choices": [{"message": {"content": null,
        "refusal": "I can't."}, "finish_reason": "stop"}]}));
    assert_eq!(
        refusal["content"],
        json!([{"type": "text", "text": "I can't."}])
    );
    assert_eq!(refusal["stop_reason"], "refusal");
}

#[test]
fn usage_round_trips_with_cached_tokens() {
    let anthropic = json!({"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 90,
        "cache_creation_input_tokens": 0});
    let chat = chat_usage(&anthropic);
    assert_eq!(chat["prompt_tokens"], 97);
    assert_eq!(chat["total_tokens"], 100);
    assert_eq!(messages_usage(&chat), anthropic);
    // Cached tokens above the prompt (a confused server) do not underflow.
    let odd =
        messages_usage(&json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}));
    assert_eq!(odd["input_tokens"], 0);
}

#[test]
fn answers_without_ids_get_fresh_ones() {
    let chat = messages_answer_to_chat(&json!({}));
    assert!(chat["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(chat["choices"][0]["message"]["content"], "");
    let msg = chat_answer_to_messages(&json!({}));
    assert!(msg["id"].as_str().unwrap().len() > "msg_".len());
    assert_eq!(msg["content"], json!([]));
    assert_eq!(msg["stop_reason"], "end_turn");
}

// ---------------------------------------------------------------- streams: Anthropic -> chat

/// Runs Anthropic events through a [`MessagesToChat`]; the payloads, parsed ("[DONE]" as a
/// string).
fn anthropic_stream(events: &[(&str, Value)]) -> Vec<Value> {
    let mut t = MessagesToChat::new();
    payloads(events.iter().flat_map(|(name, data)| t.event(name, data)))
}

#[test]
fn an_anthropic_text_stream_becomes_chat_chunks() {
    // The sequence from Anthropic's streaming docs.
    let out = anthropic_stream(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-20250514",
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 15}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    assert_eq!(out.len(), 6, "{out:#?}");
    for chunk in &out[..5] {
        assert_eq!(chunk["id"], "chatcmpl-1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "claude-opus-4-20250514");
        assert_eq!(chunk["created"], out[0]["created"]);
    }
    assert_eq!(*delta(&out[0]), json!({"role": "assistant", "content": ""}));
    assert_eq!(*delta(&out[1]), json!({"content": "Hello"}));
    assert_eq!(*delta(&out[2]), json!({"content": "!"}));
    assert_eq!(out[1]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(*delta(&out[3]), json!({}));
    assert_eq!(out[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(out[4]["choices"], json!([]));
    assert_eq!(
        out[4]["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert_eq!(out[5], "[DONE]");
}

#[test]
fn an_anthropic_tool_use_stream_becomes_tool_call_deltas() {
    let block_delta = |index: u64, d: Value| {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": d}),
        )
    };
    let out = anthropic_stream(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "model": "claude-opus-4", "usage": {"input_tokens": 472, "output_tokens": 2, "cache_read_input_tokens": 28}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        block_delta(
            0,
            json!({"type": "thinking_delta", "thinking": "Weather tool."}),
        ),
        block_delta(0, json!({"type": "signature_delta", "signature": "EqQB"})),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        block_delta(1, json!({"type": "text_delta", "text": "Checking:"})),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block":
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
        ),
        block_delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}),
        ),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "ncisco\"}"}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 3, "content_block":
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}}),
        ),
        block_delta(3, json!({"type": "input_json_delta", "partial_json": "{}"})),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 3}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 89}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let deltas: Vec<&Value> = out.iter().map(delta).collect();
    assert_eq!(*deltas[1], json!({"reasoning_content": "Weather tool."}));
    assert_eq!(*deltas[2], json!({"content": "Checking:"}));
    assert_eq!(
        *deltas[3],
        json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]})
    );
    assert_eq!(
        *deltas[4],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\": \"San Fra"}}]})
    );
    assert_eq!(
        *deltas[5],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "ncisco\"}"}}]})
    );
    // The second tool call is index 1 although its block is index 3.
    assert_eq!(deltas[6]["tool_calls"][0]["index"], 1);
    assert_eq!(deltas[6]["tool_calls"][0]["id"], "toolu_2");
    assert_eq!(
        *deltas[7],
        json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]})
    );
    assert_eq!(out[8]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out[9]["usage"]["prompt_tokens"], 500);
    assert_eq!(
        out[9]["usage"]["prompt_tokens_details"]["cached_tokens"],
        28
    );
    assert_eq!(out[9]["usage"]["completion_tokens"], 89);
    assert_eq!(out[10], "[DONE]");
    assert_eq!(out.len(), 11);
}

#[test]
fn an_anthropic_error_event_becomes_an_error_payload() {
    let out = anthropic_stream(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1"}}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    assert_eq!(
        out[1],
        json!({"error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    // Odd error events are still errors.
    let out = anthropic_stream(&[("error", json!("boom"))]);
    assert_eq!(out[0]["error"]["type"], "api_error");
}

#[test]
fn unknown_and_quiet_anthropic_events_give_nothing() {
    let out = anthropic_stream(&[
        ("ping", json!({"type": "ping"})),
        ("content_block_stop", json!({"index": 0})),
        ("something_new", json!({"type": "something_new"})),
        (
            "content_block_delta",
            json!({"index": 9, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
        ),
        (
            "content_block_delta",
            json!({"index": 0, "delta": {"type": "citations_delta", "citation": {}}}),
        ),
    ]);
    assert!(out.is_empty(), "{out:?}");
    // Without an event name the data's type names it.
    let out = anthropic_stream(&[("", json!({"type": "message_stop"}))]);
    assert_eq!(out, [json!("[DONE]")]);
}

// ---------------------------------------------------------------- streams: chat -> Anthropic

/// Runs chat payloads through a [`ChatToMessages`] (and `end()` when `end`); the events, with
/// data parsed, after checking each event's `type` is its name.
fn chat_stream<S: AsRef<str>>(payloads: &[S], end: bool) -> Vec<(&'static str, Value)> {
    events(ChatToMessages::new("claude-compatible"), payloads, end)
}

/// The upstream of the chat streams.
const UPSTREAM: Upstream = Upstream {
    id: "chatcmpl-123",
    created: 1,
    model: "gpt-4o",
    tokens: [30, 12, 10],
};

#[test]
fn a_chat_text_stream_becomes_anthropic_events() {
    let payloads = [
        UPSTREAM.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        UPSTREAM.chunk(json!({"content": "Hel"}), Value::Null),
        UPSTREAM.chunk(json!({"content": "lo"}), Value::Null),
        UPSTREAM.chunk(json!({}), json!("stop")),
        UPSTREAM.usage_chunk(),
        "[DONE]".to_owned(),
    ];
    let out = chat_stream(&payloads, true);
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        out[0].1["message"],
        json!({"id": "msg_123", "type": "message", "role": "assistant", "model": "claude-compatible",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}})
    );
    assert_eq!(
        out[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        out[2].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(out[3].1["delta"]["text"], "lo");
    assert_eq!(out[4].1["index"], 0);
    assert_eq!(
        out[5].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": 20, "output_tokens": 12, "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 0}})
    );
}

#[test]
fn message_delta_waits_for_the_usage_that_follows_the_finish() {
    let mut t = ChatToMessages::new("m");
    assert_eq!(
        t.data(&UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null))
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    let at_finish: Vec<_> = t
        .data(&UPSTREAM.chunk(json!({}), json!("length")))
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(at_finish, ["content_block_stop"]);
    // Chunks without usage after the finish do not end the message.
    assert!(t.data(&UPSTREAM.chunk(json!({}), Value::Null)).is_empty());
    let at_usage = t.data(&UPSTREAM.usage_chunk());
    assert_eq!(
        at_usage.iter().map(|e| e.0).collect::<Vec<_>>(),
        ["message_delta", "message_stop"]
    );
    let delta: Value = serde_json::from_str(&at_usage[0].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 12);
    // Nothing follows message_stop: not [DONE], not end().
    assert!(t.data("[DONE]").is_empty());
    assert!(t.end().is_empty());
}

#[test]
fn done_or_end_after_the_finish_sends_the_held_message_delta() {
    let finish = [
        UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null),
        UPSTREAM.chunk(json!({}), json!("stop")),
    ];
    let finish: Vec<&str> = finish.iter().map(String::as_str).collect();
    for tail in [vec!["[DONE]"], vec![]] {
        let payloads: Vec<&str> = finish.iter().copied().chain(tail.iter().copied()).collect();
        let out = chat_stream(&payloads, true);
        assert_eq!(
            names(&out)[3..],
            ["content_block_stop", "message_delta", "message_stop"],
            "{tail:?}"
        );
        assert_eq!(out[4].1["usage"], json!({"output_tokens": 0}));
    }
}

#[test]
fn a_stream_that_ends_before_its_finish_gets_no_message_stop() {
    let partial = [
        UPSTREAM.chunk(json!({"role": "assistant"}), Value::Null),
        UPSTREAM.chunk(json!({"content": "Hal"}), Value::Null),
    ];
    let out = chat_stream(&partial, true);
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    // Nothing at all in, nothing out.
    assert!(chat_stream::<&str>(&[], true).is_empty());
    assert!(chat_stream(&["[DONE]"], true).is_empty());
}

#[test]
fn done_without_a_finish_reason_ends_the_message() {
    let payloads = [UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null)];
    let mut p: Vec<&str> = payloads.iter().map(String::as_str).collect();
    p.push("[DONE]");
    let out = chat_stream(&p, false);
    assert_eq!(
        names(&out)[3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert_eq!(out[4].1["delta"]["stop_reason"], "end_turn");
}

#[test]
fn a_chat_tool_call_stream_becomes_tool_use_blocks() {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        if let Some(name) = name {
            c["function"]["name"] = json!(name);
        }
        UPSTREAM.chunk(json!({"tool_calls": [c]}), Value::Null)
    };
    let payloads = [
        UPSTREAM.chunk(
            json!({"role": "assistant", "content": "Let me check."}),
            Value::Null,
        ),
        call(0, Some("call_abc"), Some("get_weather"), ""),
        call(0, None, None, "{\"city\":"),
        call(0, None, None, "\"Paris\"}"),
        call(1, Some("call_def"), Some("get_time"), "{}"),
        UPSTREAM.chunk(json!({}), json!("tool_calls")),
        UPSTREAM.usage_chunk(),
        "[DONE]".to_owned(),
    ];
    let out = chat_stream(&payloads, true);
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(out[2].1["delta"]["text"], "Let me check.");
    assert_eq!(out[3].1["index"], 0);
    assert_eq!(
        out[4].1,
        json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {}}})
    );
    assert_eq!(
        out[5].1,
        json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}})
    );
    assert_eq!(out[6].1["delta"]["partial_json"], "\"Paris\"}");
    assert_eq!(out[7].1["index"], 1);
    assert_eq!(out[8].1["index"], 2);
    assert_eq!(out[8].1["content_block"]["id"], "call_def");
    assert_eq!(out[9].1["index"], 2);
    assert_eq!(out[10].1["index"], 2);
    assert_eq!(out[11].1["delta"]["stop_reason"], "tool_use");
}

#[test]
fn tool_calls_without_an_index_follow_their_ids() {
    let call = |id: Option<&str>, args: &str| {
        let mut c = json!({"function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["function"]["name"] = json!("f");
        }
        UPSTREAM.chunk(json!({"tool_calls": [c]}), Value::Null)
    };
    let payloads = [
        call(Some("a"), "{\"x\""),
        call(None, ":1}"),
        call(Some("b"), "{}"),
        UPSTREAM.chunk(json!({}), json!("tool_calls")),
    ];
    let out = chat_stream(&payloads, true);
    let starts: Vec<&Value> = out
        .iter()
        .filter(|(n, _)| *n == "content_block_start")
        .map(|(_, v)| &v["content_block"]["id"])
        .collect();
    assert_eq!(starts, [&json!("a"), &json!("b")]);
    let args: Vec<(&Value, &Value)> = out
        .iter()
        .filter(|(n, _)| *n == "content_block_delta")
        .map(|(_, v)| (&v["index"], &v["delta"]["partial_json"]))
        .collect();
    assert_eq!(
        args,
        [
            (&json!(0), &json!("{\"x\"")),
            (&json!(0), &json!(":1}")),
            (&json!(1), &json!("{}")),
        ]
    );
}

#[test]
fn usage_on_the_finish_chunk_is_reported_at_done() {
    let mut finish: Value =
        serde_json::from_str(&UPSTREAM.chunk(json!({}), json!("stop"))).unwrap();
    finish["usage"] = json!({"prompt_tokens": 5, "completion_tokens": 2});
    let payloads = [
        UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null),
        finish.to_string(),
    ];
    let mut p: Vec<&str> = payloads.iter().map(String::as_str).collect();
    // Held at the finish, although it carries usage: more may follow.
    assert_eq!(
        chat_stream(&p, false).last().unwrap().0,
        "content_block_stop"
    );
    p.push("[DONE]");
    let out = chat_stream(&p, false);
    assert_eq!(out[4].0, "message_delta");
    assert_eq!(out[4].1["usage"]["input_tokens"], 5);
    assert_eq!(out[4].1["usage"]["output_tokens"], 2);
}

#[test]
fn a_chat_refusal_stream_stops_with_refusal() {
    let payloads = [
        UPSTREAM.chunk(
            json!({"role": "assistant", "refusal": "I can't."}),
            Value::Null,
        ),
        UPSTREAM.chunk(json!({}), json!("stop")),
        "[DONE]".to_owned(),
    ];
    let out = chat_stream(&payloads, false);
    assert_eq!(out[2].1["delta"]["text"], "I can't.");
    assert_eq!(out[4].1["delta"]["stop_reason"], "refusal");
}

#[test]
fn a_chat_error_payload_becomes_an_error_event() {
    let mut t = ChatToMessages::new("m");
    t.data(&UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null));
    let out = t.data(r#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","code":"rate_limit_exceeded"}}"#);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "error");
    let v: Value = serde_json::from_str(&out[0].1).unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached for gpt-4o"}})
    );
    // Nothing follows the error.
    assert!(t.data(&UPSTREAM.chunk(json!({}), json!("stop"))).is_empty());
    assert!(t.end().is_empty());
    for (error, kind) in [
        (json!({"type": "server_error", "message": "x"}), "api_error"),
        (
            json!({"code": "insufficient_quota", "message": "x"}),
            "billing_error",
        ),
        (
            json!({"type": "invalid_request_error", "code": "context_length_exceeded"}),
            "invalid_request_error",
        ),
        (json!({"code": "invalid_api_key"}), "authentication_error"),
        (json!({"code": "model_not_found"}), "not_found_error"),
        (json!({"type": "overloaded_error"}), "overloaded_error"),
        (json!({"code": 429}), "rate_limit_error"),
        (json!("something broke"), "api_error"),
    ] {
        let mut t = ChatToMessages::new("m");
        let out = t.data(&json!({"error": error}).to_string());
        let v: Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(v["error"]["type"], kind, "{error}");
    }
}

#[test]
fn malformed_chat_payloads_give_nothing() {
    let mut t = ChatToMessages::new("m");
    for odd in ["", "   ", "{", "[1,2]", "null", "\"text\"", "42"] {
        assert!(t.data(odd).is_empty(), "{odd}");
    }
    let out = t.data(r#"{"choices": "x", "usage": 3}"#);
    assert_eq!(names(&[(out[0].0, Value::Null)]), ["message_start"]);
    assert!(
        t.data(
            r#"{"choices": [{"delta": {"content": 5, "tool_calls": [1, "x", {"index": "y"}]}}]}"#
        )
        .iter()
        .all(|(n, _)| *n != "message_stop")
    );
}

// ---------------------------------------------------------------- never panics

/// Values made of the words and keys this translation reads.
fn any_json() -> impl Strategy<Value = Value> {
    test_util::any_json(
        &[
            "text",
            "tool_use",
            "tool_result",
            "image",
            "image_url",
            "function",
            "user",
            "assistant",
            "tool",
            "system",
            "data:image/png;base64,AA",
            "[DONE]",
            "",
            "stop",
        ],
        &[
            "type",
            "role",
            "content",
            "messages",
            "text",
            "tool_calls",
            "function",
            "arguments",
            "id",
            "index",
            "delta",
            "choices",
            "usage",
            "error",
            "source",
            "tools",
            "tool_choice",
            "system",
            "finish_reason",
            "message",
            "content_block",
            "image_url",
        ],
    )
}

proptest! {
    #[test]
    fn nothing_panics_on_any_input(values in prop::collection::vec(any_json(), 1..8)) {
        let names = ["message_start", "content_block_start", "content_block_delta",
            "message_delta", "message_stop", "error", "ping", ""];
        let mut to_chat = MessagesToChat::new();
        for (i, v) in values.iter().enumerate() {
            let _ = chat_request_to_messages(v);
            let _ = messages_request_to_chat(v);
            let _ = messages_answer_to_chat(v);
            let _ = chat_answer_to_messages(v);
            let _ = to_chat.event(names[i % names.len()], v);
        }
        let stops = terminal_events(ChatToMessages::new("m"), &values, &["message_stop"]);
        prop_assert!(stops <= 1);
    }

    #[test]
    fn no_payload_string_panics(s in ".{0,40}") {
        let mut t = ChatToMessages::new("m");
        let _ = t.data(&s);
        let _ = t.end();
    }
}
