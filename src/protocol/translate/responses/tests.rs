//! Tests of the Responses translations: every rule, round trips, streams, odd inputs.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::super::test_util::*;
use super::super::*;

fn to_chat(req: Value) -> Value {
    responses_request_to_chat(&req).unwrap()
}

fn to_responses(req: Value) -> Value {
    chat_request_to_responses(&req).unwrap()
}

/// The feature an untranslatable Responses request names, checking the target too.
fn refused_by_chat(req: Value) -> &'static str {
    refused(responses_request_to_chat(&req), OPENAI_CHAT)
}

/// The feature an untranslatable chat request names, checking the target too.
fn refused_by_responses(req: Value) -> &'static str {
    refused(chat_request_to_responses(&req), RESPONSES)
}

// ---------------------------------------------------------------- state

#[test]
fn stateful_requests_are_detected_by_feature() {
    let cases = [
        (
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"conversation": "conv_1"}), "conversation"),
        (json!({"conversation": {"id": "conv_1"}}), "conversation"),
        (json!({"prompt": {"id": "pmpt_1"}}), "prompt"),
        (json!({"background": true}), "background"),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "item_reference",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
            "file_id",
        ),
        (
            json!({"input": [{"type": "message", "role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
            "file_id",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "file_id": "file-1"}]}]}),
            "file_id",
        ),
    ];
    for (req, feature) in cases {
        assert_eq!(stateful(&req), Some(feature), "{req}");
        assert_eq!(refused_by_chat(req.clone()), feature, "{req}");
        let why = responses_request_to_chat(&req).unwrap_err().to_string();
        assert!(
            why.contains("the state lives on the provider that stored it"),
            "{why}"
        );
    }
}

#[test]
fn stateless_requests_are_not_stateful() {
    for req in [
        json!({"input": "hi"}),
        json!({"previous_response_id": null, "conversation": null, "prompt": null}),
        json!({"background": false, "store": true}),
        json!({"previous_response_id": 5}),
        json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png", "file_id": null},
        ]}]}),
        json!("junk"),
        json!(null),
    ] {
        assert_eq!(stateful(&req), None, "{req}");
    }
}

// ---------------------------------------------------------------- requests: responses -> chat

#[test]
fn a_plain_responses_request_becomes_a_chat_request() {
    let out = to_chat(json!({
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": "Hi",
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u-42",
        "stream": true,
        "store": true,
        "metadata": {"a": "b"},
        "truncation": "auto",
        "service_tier": "flex",
        "safety_identifier": "s",
        "prompt_cache_key": "k",
        "max_tool_calls": 3,
        "stream_options": {"include_obfuscation": false},
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "text"}, "verbosity": "low"},
    }));
    assert_eq!(
        out,
        json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "max_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u-42",
            "stream": true,
            "stream_options": {"include_usage": true},
            "reasoning_effort": "low",
            "verbosity": "low",
        })
    );
    let out = to_chat(json!({"input": "Hi", "stream": false}));
    assert_eq!(out["stream"], false);
    assert!(out.get("stream_options").is_none());
}

#[test]
fn message_items_keep_their_roles_and_parts() {
    let out = to_chat(json!({"input": [
        {"type": "message", "role": "developer", "content": "Rules."},
        {"role": "system", "content": [{"type": "input_text", "text": "More rules."}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "high"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [
            {"type": "output_text", "text": "A cat", "annotations": []},
            {"type": "output_text", "text": ".", "annotations": []},
        ]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "developer", "content": "Rules."},
            {"role": "system", "content": [{"type": "text", "text": "More rules."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            ]},
            {"role": "assistant", "content": "A cat."},
            {"role": "assistant", "content": null, "refusal": "No."},
        ])
    );
}

#[test]
fn function_calls_merge_into_the_assistant_message_before_them() {
    let out = to_chat(json!({"input": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "two calls"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "20C"},
        {"type": "function_call_output", "call_id": "call_2", "output": [
            {"type": "input_text", "text": "25"}, {"type": "input_text", "text": "C"},
        ]},
        {"type": "function_call", "call_id": "call_3", "name": "weather", "arguments": "{}"},
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
            ]},
        ])
    );
}

#[test]
fn function_tools_and_tool_choice_become_chat_tools() {
    let tools = json!([{
        "type": "function", "name": "weather", "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": true,
    }]);
    let out = to_chat(json!({
        "input": "Hi", "tools": tools, "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": false,
    }));
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {
            "name": "weather", "description": "Weather at a place",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": true,
        }}])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "function", "function": {"name": "weather"}})
    );
    assert_eq!(out["parallel_tool_calls"], false);
    for choice in ["auto", "none", "required"] {
        let out = to_chat(json!({"input": "Hi", "tools": tools, "tool_choice": choice}));
        assert_eq!(out["tool_choice"], choice);
    }
    // Without tools, a chat target would refuse tool_choice and parallel_tool_calls.
    let out = to_chat(json!({"input": "Hi", "tool_choice": "auto", "parallel_tool_calls": true}));
    assert!(out.get("tool_choice").is_none() && out.get("parallel_tool_calls").is_none());
}

#[test]
fn text_formats_become_response_formats() {
    let out = to_chat(json!({"input": "Hi", "text": {"format": {"type": "json_object"}}}));
    assert_eq!(out["response_format"], json!({"type": "json_object"}));
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let out = to_chat(json!({"input": "Hi", "text": {"format": {
        "type": "json_schema", "name": "thing", "schema": schema, "strict": true,
        "description": "A thing",
    }}}));
    assert_eq!(
        out["response_format"],
        json!({"type": "json_schema", "json_schema": {
            "name": "thing", "schema": schema, "strict": true, "description": "A thing",
        }})
    );
    let out = to_chat(json!({"input": "Hi", "text": {"format": {"type": "text"}}}));
    assert!(out.get("response_format").is_none());
}

#[test]
fn responses_only_features_are_refused_by_name() {
    let hi = |extra: Value| {
        let mut req = json!({"input": "Hi"});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        req
    };
    assert_eq!(
        refused_by_chat(hi(json!({"top_logprobs": 2}))),
        "top_logprobs"
    );
    assert_eq!(
        refused_by_chat(hi(json!({"include": ["message.output_text.logprobs"]}))),
        "include"
    );
    for tool in [
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "image_generation",
        "mcp",
        "local_shell",
        "custom",
    ] {
        let req = hi(json!({"tools": [{"type": tool, "name": "x"}]}));
        let e = responses_request_to_chat(&req).unwrap_err();
        assert_eq!(e.feature(), "tools");
        assert!(e.to_string().contains(tool), "{e}");
    }
    for choice in [
        json!({"type": "allowed_tools", "mode": "auto", "tools": []}),
        json!({"type": "web_search_preview"}),
        json!({"type": "function"}),
        json!("sometimes"),
    ] {
        assert_eq!(
            refused_by_chat(hi(json!({"tool_choice": choice}))),
            "tool_choice"
        );
    }
    assert_eq!(
        refused_by_chat(hi(json!({"text": {"format": {"type": "grammar"}}}))),
        "text.format"
    );
    let items = [
        ("web_search_call", "web_search_call"),
        ("file_search_call", "file_search_call"),
        ("computer_call", "computer_call"),
        ("computer_call_output", "computer_call_output"),
        ("code_interpreter_call", "code_interpreter_call"),
        ("image_generation_call", "image_generation_call"),
        ("local_shell_call", "local_shell_call"),
        ("local_shell_call_output", "local_shell_call_output"),
        ("mcp_call", "mcp item"),
        ("mcp_list_tools", "mcp item"),
        ("mcp_approval_request", "mcp item"),
        ("custom_tool_call", "custom_tool_call"),
        ("custom_tool_call_output", "custom_tool_call_output"),
        ("something_new", "input item"),
    ];
    for (item, feature) in items {
        let req = json!({"input": [{"type": item, "id": "x"}]});
        assert_eq!(refused_by_chat(req), feature, "{item}");
    }
    let parts = [
        (
            json!({"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x/a.png"}]}),
            "input_image",
        ),
        (
            json!({"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}),
            "input_file",
        ),
        (
            json!({"role": "user", "content": [{"type": "hologram"}]}),
            "content part",
        ),
        (
            json!({"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}),
            "content part",
        ),
        (json!({"role": "critic", "content": "meh"}), "message role"),
        (
            json!({"type": "function_call_output", "call_id": "c", "output": [
                {"type": "input_image", "image_url": "https://x/a.png"},
            ]}),
            "function_call_output",
        ),
    ];
    for (item, feature) in parts {
        assert_eq!(refused_by_chat(json!({"input": [item]})), feature);
    }
}

// ---------------------------------------------------------------- requests: chat -> responses

#[test]
fn a_plain_chat_request_becomes_a_responses_request() {
    let out = to_responses(json!({
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "Be brief.", "name": "boss"},
            {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
            user("Hi"),
        ],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u-42",
        "stream": true,
        "stream_options": {"include_usage": true},
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "store": true,
        "metadata": {"a": "b"},
        "service_tier": "auto",
        "prediction": {"type": "content", "content": "x"},
        "reasoning_effort": "high",
        "verbosity": "low",
        "n": 1,
        "logprobs": false,
        "stop": null,
    }));
    assert_eq!(
        out,
        json!({
            "model": "gpt-4.1",
            "input": [
                {"type": "message", "role": "system", "content": "Be brief."},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
                {"type": "message", "role": "user", "content": "Hi"},
            ],
            "max_output_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u-42",
            "stream": true,
            "reasoning": {"effort": "high"},
            "text": {"verbosity": "low"},
            "store": false,
        })
    );
    let out = to_responses(
        json!({"messages": [user("Hi")], "max_tokens": 10, "max_completion_tokens": 20}),
    );
    assert_eq!(out["max_output_tokens"], 20);
}

#[test]
fn chat_parts_become_input_parts() {
    let out = to_responses(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ]}]}));
    assert_eq!(
        out["input"][0]["content"],
        json!([
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
            {"type": "input_file", "file_id": "file-1"},
        ])
    );
}

#[test]
fn assistant_messages_and_tool_messages_become_items() {
    let out = to_responses(json!({"messages": [
        user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": "Checking.", "reasoning_content": "hmm", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25"}, {"type": "text", "text": "C"}]},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is "}, {"type": "text", "text": "warm."}]},
        {"role": "assistant", "content": null, "refusal": "No."},
        {"role": "assistant", "content": ""},
    ]}));
    assert_eq!(
        out["input"],
        json!([
            {"type": "message", "role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Checking.", "annotations": []},
            ]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "20C"},
            {"type": "function_call_output", "call_id": "call_2", "output": "25C"},
            {"type": "function_call", "call_id": "call_3", "name": "weather", "arguments": "{}"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "It is warm.", "annotations": []},
            ]},
            {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        ])
    );
}

#[test]
fn chat_tools_become_flat_function_tools() {
    let out = to_responses(json!({
        "messages": [user("Hi")],
        "tools": [
            {"type": "function", "function": {
                "name": "weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {}},
            }},
            {"type": "function", "function": {"name": "exact", "strict": true}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": false,
    }));
    assert_eq!(
        out["tools"],
        json!([
            // Chat's default is not strict; the Responses API's default would be.
            {"type": "function", "name": "weather", "description": "Weather",
             "parameters": {"type": "object", "properties": {}}, "strict": false},
            {"type": "function", "name": "exact", "strict": true},
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "function", "name": "weather"})
    );
    assert_eq!(out["parallel_tool_calls"], false);
    for choice in ["auto", "none", "required"] {
        let out = to_responses(json!({"messages": [user("Hi")], "tool_choice": choice}));
        assert_eq!(out["tool_choice"], choice);
    }
}

#[test]
fn response_formats_become_text_formats() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let out = to_responses(json!({"messages": [user("Hi")], "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": true, "description": "A thing"},
    }}));
    assert_eq!(
        out["text"]["format"],
        json!({"type": "json_schema", "name": "thing", "schema": schema, "strict": true, "description": "A thing"})
    );
    let out =
        to_responses(json!({"messages": [user("Hi")], "response_format": {"type": "json_object"}}));
    assert_eq!(out["text"], json!({"format": {"type": "json_object"}}));
    let out = to_responses(json!({"messages": [user("Hi")], "response_format": {"type": "text"}}));
    assert_eq!(out["text"], json!({"format": {"type": "text"}}));
}

#[test]
fn chat_only_features_are_refused_by_name() {
    let with = |k: &str, v: Value| {
        let mut req = json!({"messages": [user("Hi")]});
        req[k] = v;
        req
    };
    // The features no target but chat carries: in the Anthropic tests, for both targets.
    let cases = [
        (with("stop", json!("\n")), "stop"),
        (with("stop", json!(["a", "b"])), "stop"),
        (
            with(
                "tools",
                json!([{"type": "custom", "custom": {"name": "x"}}]),
            ),
            "tools",
        ),
        (
            with(
                "tool_choice",
                json!({"type": "allowed_tools", "allowed_tools": {}}),
            ),
            "tool_choice",
        ),
        (
            with("response_format", json!({"type": "grammar"})),
            "response_format",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]),
            ),
            "input_audio",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "hologram"}]}]),
            ),
            "content part",
        ),
        (
            with(
                "messages",
                json!([{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]),
            ),
            "function_call",
        ),
        (
            with(
                "messages",
                json!([{"role": "function", "name": "f", "content": "x"}]),
            ),
            "function message",
        ),
        (
            with("messages", json!([{"role": "critic", "content": "x"}])),
            "message role",
        ),
        (
            with(
                "messages",
                json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}]),
            ),
            "tool_calls",
        ),
    ];
    for (req, feature) in cases {
        assert_eq!(refused_by_responses(req.clone()), feature, "{req}");
    }
    // Asking for nothing is not asking.
    for (k, v) in [
        ("stop", json!([])),
        ("stop", json!("")),
        ("logit_bias", json!({})),
        ("n", json!(1)),
        ("top_logprobs", json!(null)),
        ("top_logprobs", json!(0)),
        // Of a type that asks nothing: treated as absent.
        ("stop", json!(5)),
        ("stop", json!([null])),
    ] {
        assert!(chat_request_to_responses(&with(k, v)).is_ok(), "{k}");
    }
}

#[test]
fn a_tool_conversation_round_trips_with_ids_kept() {
    let chat = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            user("Weather in Paris?"),
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
            {"role": "assistant", "content": "It is 20C."},
        ],
        "tools": [{"type": "function", "function": {
            "name": "weather", "parameters": {"type": "object"}, "strict": false,
        }}],
        "tool_choice": "auto",
        "max_tokens": 50,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
    });
    let back = to_chat(to_responses(chat.clone()));
    assert_eq!(back["messages"], chat["messages"]);
    assert_eq!(back["tools"], chat["tools"]);
    assert_eq!(back["tool_choice"], chat["tool_choice"]);
    assert_eq!(back["max_tokens"], chat["max_tokens"]);
    assert_eq!(back["response_format"], chat["response_format"]);
}

// ---------------------------------------------------------------- answers

#[test]
fn a_responses_answer_becomes_a_chat_completion() {
    let out = responses_answer_to_chat(&json!({
        "id": "resp_abc", "object": "response", "created_at": 1_700_000_000, "status": "completed",
        "model": "gpt-4.1",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [
                {"type": "summary_text", "text": "Think. "}, {"type": "summary_text", "text": "Done."},
            ]},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
                {"type": "output_text", "text": "Hello", "annotations": []},
                {"type": "output_text", "text": " there.", "annotations": []},
            ]},
        ],
        "usage": {
            "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3},
            "total_tokens": 17,
        },
    }));
    assert_eq!(
        out,
        json!({
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4.1",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "Hello there.", "reasoning_content": "Think. Done.",
            }}],
            "usage": {
                "prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        })
    );
}

#[test]
fn function_calls_and_refusals_in_a_responses_answer() {
    let out = responses_answer_to_chat(&json!({
        "id": "resp_1", "status": "completed",
        "output": [
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "time", "arguments": "{}", "status": "completed"},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }));
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
        ])
    );
    assert_eq!(out["usage"]["total_tokens"], 7);
    let out = responses_answer_to_chat(&json!({"output": [{"type": "message", "content": [
        {"type": "refusal", "refusal": "I can't help with that."},
    ]}]}));
    assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        out["choices"][0]["message"]["refusal"],
        "I can't help with that."
    );
}

#[test]
fn incomplete_responses_finish_with_their_reason() {
    let finish = |details: Value| {
        let answer = json!({"status": "incomplete", "incomplete_details": details, "output": []});
        responses_answer_to_chat(&answer)["choices"][0]["finish_reason"].clone()
    };
    assert_eq!(finish(json!({"reason": "max_output_tokens"})), "length");
    assert_eq!(
        finish(json!({"reason": "content_filter"})),
        "content_filter"
    );
    assert_eq!(finish(json!(null)), "stop");
    let done = responses_answer_to_chat(&json!({"status": "completed", "output": []}));
    assert_eq!(done["choices"][0]["finish_reason"], "stop");
    assert_eq!(done["choices"][0]["message"]["content"], "");
}

#[test]
fn a_chat_completion_becomes_a_whole_response() {
    let out = chat_answer_to_responses(&json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4.1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.", "reasoning_content": "private",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
        }}],
        "usage": {
            "prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }));
    assert_eq!(
        out,
        json!({
            "id": "resp_abc",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": "completed",
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "max_output_tokens": null,
            "model": "gpt-4.1",
            "output": [
                {"type": "message", "id": "msg_abc", "status": "completed", "role": "assistant", "content": [
                    {"type": "output_text", "text": "Checking.", "annotations": []},
                ]},
                {"type": "function_call", "id": "fc_call_1", "call_id": "call_1", "name": "weather",
                 "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            ],
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": null,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "truncation": "disabled",
            "usage": {
                "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
                "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3},
                "total_tokens": 17,
            },
            "user": null,
            "metadata": {},
        })
    );
}

#[test]
fn chat_finish_reasons_become_statuses() {
    let answer = |finish: &str, message: Value| {
        chat_answer_to_responses(&json!({
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        }))
    };
    let text = json!({"role": "assistant", "content": "Hi"});
    let out = answer("length", text.clone());
    assert_eq!(out["status"], "incomplete");
    assert_eq!(
        out["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    let out = answer("content_filter", text.clone());
    assert_eq!(out["status"], "incomplete");
    assert_eq!(
        out["incomplete_details"],
        json!({"reason": "content_filter"})
    );
    let out = answer("stop", text);
    assert_eq!(out["status"], "completed");
    assert_eq!(out["incomplete_details"], Value::Null);
    let out = answer(
        "stop",
        json!({"role": "assistant", "content": null, "refusal": "No."}),
    );
    assert_eq!(
        out["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "No."}])
    );
    assert_eq!(out["usage"]["total_tokens"], 0);
}

#[test]
fn answers_round_trip_and_get_fresh_ids_when_they_have_none() {
    let chat = json!({
        "id": "chatcmpl-xyz", "object": "chat.completion", "created": 5, "model": "m",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Sure.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}],
        }}],
        "usage": {
            "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    });
    assert_eq!(
        responses_answer_to_chat(&chat_answer_to_responses(&chat)),
        chat
    );
    let fresh = chat_answer_to_responses(&json!({"choices": []}));
    let id = fresh["id"].as_str().unwrap();
    assert!(id.starts_with("resp_") && id.len() > 10, "{id}");
    assert!(fresh["created_at"].as_u64().unwrap() > 1_600_000_000);
    let fresh = responses_answer_to_chat(&json!({}));
    let id = fresh["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() > 15, "{id}");
}

// ---------------------------------------------------------------- streams: responses -> chat

/// The chat payloads a Responses event sequence becomes, parsed (`[DONE]` as a string).
fn responses_stream(events: &[Value]) -> Vec<Value> {
    let mut t = ResponsesToChat::new();
    payloads(
        events
            .iter()
            .flat_map(|e| t.event(e["type"].as_str().unwrap_or_default(), e)),
    )
}

fn created() -> Value {
    json!({"type": "response.created", "sequence_number": 0, "response": {
        "id": "resp_7", "object": "response", "created_at": 42, "status": "in_progress",
        "model": "gpt-4.1", "output": [], "usage": null,
    }})
}

fn text_delta(delta: &str) -> Value {
    json!({"type": "response.output_text.delta", "item_id": "msg_7", "output_index": 0,
           "content_index": 0, "delta": delta, "logprobs": []})
}

fn completed(usage: Value) -> Value {
    json!({"type": "response.completed", "response": {
        "id": "resp_7", "status": "completed", "output": [], "usage": usage,
    }})
}

#[test]
fn a_responses_text_stream_becomes_chat_chunks() {
    let out = responses_stream(&[
        created(),
        json!({"type": "response.in_progress", "response": {}}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"id": "msg_7", "type": "message", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": "msg_7", "output_index": 0,
               "content_index": 0, "part": {"type": "output_text", "text": ""}}),
        text_delta("Hel"),
        text_delta("lo."),
        json!({"type": "response.output_text.done", "item_id": "msg_7", "text": "Hello."}),
        json!({"type": "response.content_part.done"}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "message"}}),
        completed(
            json!({"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
                         "input_tokens_details": {"cached_tokens": 1},
                         "output_tokens_details": {"reasoning_tokens": 0}}),
        ),
    ]);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 42,
               "model": "gpt-4.1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    assert_eq!(
        out,
        vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo."}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 42,
            "model": "gpt-4.1", "choices": [], "usage": {
                "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 1},
                "completion_tokens_details": {"reasoning_tokens": 0},
            }}),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn a_responses_function_call_stream_becomes_tool_call_deltas() {
    let out = responses_stream(&[
        created(),
        json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "Think."}),
        json!({"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": " More."}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": {
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
            "arguments": "", "status": "in_progress"}}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "{\"city\":"}),
        json!({"type": "response.output_item.added", "output_index": 2, "item": {
            "type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "time", "arguments": ""}}),
        // Found by output_index when the item id is missing.
        json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{}"}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "\"Paris\"}"}),
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1,
               "arguments": "{\"city\":\"Paris\"}"}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": {
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
            "arguments": "{\"city\":\"Paris\"}", "status": "completed"}}),
        completed(json!(null)),
    ]);
    let deltas: Vec<&Value> = out.iter().map(delta).collect();
    assert_eq!(
        deltas[1..8],
        [
            &json!({"reasoning_content": "Think."}),
            &json!({"reasoning_content": " More."}),
            &json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                    "function": {"name": "weather", "arguments": ""}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            &json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                    "function": {"name": "time", "arguments": ""}}]}),
            &json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
        ]
    );
    // The .done events repeat streamed arguments: nothing more. No usage: no usage chunk.
    assert_eq!(out.len(), 10, "{out:?}");
    assert_eq!(out[8]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out[9], "[DONE]");
}

#[test]
fn arguments_sent_only_when_done_are_not_lost() {
    let out = responses_stream(&[
        created(),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f"}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"}}),
        completed(json!(null)),
    ]);
    assert_eq!(
        out[2]["choices"][0]["delta"],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]})
    );
}

#[test]
fn refusals_and_incomplete_responses_in_a_stream() {
    let out = responses_stream(&[
        created(),
        json!({"type": "response.refusal.delta", "item_id": "msg_7", "delta": "No."}),
        json!({"type": "response.incomplete", "response": {
            "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
            "usage": {"input_tokens": 1, "output_tokens": 2}}}),
    ]);
    assert_eq!(out[1]["choices"][0]["delta"], json!({"refusal": "No."}));
    assert_eq!(out[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(out[3]["usage"]["total_tokens"], 3);
    assert_eq!(out[4], "[DONE]");
    let out = responses_stream(&[
        created(),
        json!({"type": "response.incomplete", "response": {
            "status": "incomplete", "incomplete_details": {"reason": "content_filter"}}}),
    ]);
    assert_eq!(out[1]["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn failed_responses_and_error_events_become_error_payloads() {
    let out = responses_stream(&[
        created(),
        text_delta("Hi"),
        json!({"type": "response.failed", "response": {"status": "failed",
            "error": {"code": "server_error", "message": "The model crashed."}}}),
        text_delta("ignored"),
    ]);
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[2],
        json!({"error": {"code": "server_error", "message": "The model crashed.", "type": "server_error"}})
    );
    let out = responses_stream(&[
        json!({"type": "response.failed", "response": {"status": "failed", "error": null}}),
    ]);
    assert_eq!(
        out,
        vec![json!({"error": {"message": "the response failed", "type": "server_error"}})]
    );
    let out = responses_stream(&[json!({"type": "error", "code": "rate_limit_exceeded",
        "message": "Slow down.", "param": null, "sequence_number": 3})]);
    assert_eq!(
        out,
        vec![
            json!({"error": {"message": "Slow down.", "type": "rate_limit_exceeded",
                              "code": "rate_limit_exceeded", "param": null}})
        ]
    );
    let out = responses_stream(&[
        json!({"type": "error", "error": {"type": "invalid_request_error",
        "code": "context_length_exceeded", "message": "Too long.", "param": "input"}}),
    ]);
    assert_eq!(
        out,
        vec![
            json!({"error": {"message": "Too long.", "type": "invalid_request_error",
                              "code": "context_length_exceeded", "param": "input"}})
        ]
    );
}

#[test]
fn quiet_and_unknown_responses_events_give_nothing() {
    let mut t = ResponsesToChat::default();
    for name in [
        "response.in_progress",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.reasoning_summary_part.added",
        "response.web_search_call.searching",
        "response.queued",
        "keepalive",
        "",
    ] {
        assert!(t.event(name, &json!({"type": name})).is_empty(), "{name}");
    }
    // With no event name, the data's type names it.
    let out = t.event("", &text_delta("x"));
    assert_eq!(out.len(), 1);
}

// ---------------------------------------------------------------- streams: chat -> responses

/// The Responses events a chat payload sequence becomes (data parsed), `end()` last when
/// asked; checks the `type` and `sequence_number` of each.
fn chat_stream<S: AsRef<str>>(payloads: &[S], end: bool) -> Vec<(&'static str, Value)> {
    let events = events(ChatToResponses::new("gpt-4.1"), payloads, end);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{name}");
    }
    events
}

/// The upstream of the chat streams.
const UPSTREAM: Upstream = Upstream {
    id: "chatcmpl-9",
    created: 42,
    model: "m",
    tokens: [5, 2, 1],
};

#[test]
fn a_chat_text_stream_becomes_responses_events() {
    let events = chat_stream(
        &[
            &UPSTREAM.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            &UPSTREAM.chunk(json!({"content": "Hel"}), Value::Null),
            &UPSTREAM.chunk(
                json!({"content": "lo.", "reasoning_content": "dropped"}),
                Value::Null,
            ),
            &UPSTREAM.chunk(json!({}), json!("stop")),
            &UPSTREAM.usage_chunk(),
            "[DONE]",
        ],
        true,
    );
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let created = &events[0].1["response"];
    assert_eq!(created["id"], "resp_9");
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["model"], "gpt-4.1");
    assert_eq!(created["created_at"], 42);
    assert_eq!(created["output"], json!([]));
    assert_eq!(created["usage"], Value::Null);
    assert_eq!(events[1].1["response"], *created);
    assert_eq!(
        events[2].1,
        json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
               "item": {"id": "msg_9", "type": "message", "status": "in_progress",
                        "role": "assistant", "content": []}})
    );
    assert_eq!(
        events[3].1,
        json!({"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_9",
               "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}})
    );
    assert_eq!(
        events[4].1,
        json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_9",
               "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []})
    );
    assert_eq!(events[6].1["text"], "Hello.");
    assert_eq!(
        events[7].1["part"],
        json!({"type": "output_text", "text": "Hello.", "annotations": []})
    );
    let item = json!({"id": "msg_9", "type": "message", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": "Hello.", "annotations": []}]});
    assert_eq!(events[8].1["item"], item);
    let done = &events[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"], json!([item]));
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 1},
               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 7})
    );
}

#[test]
fn the_terminal_event_waits_for_the_usage_after_the_finish() {
    let mut t = ChatToResponses::new("m");
    t.data(&UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null));
    let at_finish: Vec<&str> = t
        .data(&UPSTREAM.chunk(json!({}), json!("stop")))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(!at_finish.contains(&"response.completed"), "{at_finish:?}");
    assert!(at_finish.contains(&"response.output_item.done"));
    let at_usage = t.data(&UPSTREAM.usage_chunk());
    assert_eq!(at_usage.len(), 1);
    assert_eq!(at_usage[0].0, "response.completed");
    assert!(t.data("[DONE]").is_empty());
    assert!(t.end().is_empty());
}

#[test]
fn done_or_end_after_the_finish_sends_the_held_terminal_event() {
    for last in [Some("[DONE]"), None] {
        let mut payloads = vec![
            UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null),
            UPSTREAM.chunk(json!({}), json!("stop")),
        ];
        payloads.extend(last.map(str::to_owned));
        let events = chat_stream(&payloads, last.is_none());
        let (name, data) = events.last().unwrap();
        assert_eq!(*name, "response.completed");
        assert_eq!(data["response"]["usage"], Value::Null);
    }
}

#[test]
fn a_stream_cut_before_its_finish_gets_no_terminal_event() {
    let events = chat_stream(
        &[
            &UPSTREAM.chunk(json!({"content": "Half an ans"}), Value::Null),
            &UPSTREAM.chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}]}),
                Value::Null,
            ),
        ],
        true,
    );
    let names = names(&events);
    assert!(
        !names.iter().any(|n| matches!(
            *n,
            "response.completed" | "response.incomplete" | "response.failed"
        )),
        "{names:?}"
    );
    // Nothing is closed either: the open call never looks whole.
    assert_eq!(
        names.last(),
        Some(&"response.function_call_arguments.delta")
    );
    assert!(!names.contains(&"response.function_call_arguments.done"));
    assert!(chat_stream::<&str>(&[], true).is_empty());
}

#[test]
fn done_without_a_finish_reason_completes_the_response() {
    let events = chat_stream(
        &[
            &UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null),
            "[DONE]",
        ],
        false,
    );
    let (name, data) = events.last().unwrap();
    assert_eq!(*name, "response.completed");
    assert_eq!(data["response"]["status"], "completed");
    assert_eq!(data["response"]["output"][0]["content"][0]["text"], "Hi");
    // A [DONE] alone opened nothing, and closes nothing.
    assert!(chat_stream(&["[DONE]"], true).is_empty());
}

#[test]
fn length_and_content_filter_end_incomplete() {
    for (finish, reason) in [
        ("length", "max_output_tokens"),
        ("content_filter", "content_filter"),
    ] {
        let events = chat_stream(
            &[
                &UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null),
                &UPSTREAM.chunk(json!({}), json!(finish)),
                "[DONE]",
            ],
            false,
        );
        let (name, data) = events.last().unwrap();
        assert_eq!(*name, "response.incomplete");
        assert_eq!(data["response"]["status"], "incomplete");
        assert_eq!(
            data["response"]["incomplete_details"],
            json!({"reason": reason})
        );
    }
}

#[test]
fn a_chat_tool_call_stream_becomes_function_call_items() {
    let events = chat_stream(
        &[
            &UPSTREAM.chunk(
                json!({"role": "assistant", "content": "Checking."}),
                Value::Null,
            ),
            &UPSTREAM.chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                          "function": {"name": "weather", "arguments": ""}}]}),
                Value::Null,
            ),
            &UPSTREAM.chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            &UPSTREAM.chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                Value::Null,
            ),
            &UPSTREAM.chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                          "function": {"name": "time", "arguments": "{}"}}]}),
                Value::Null,
            ),
            &UPSTREAM.chunk(json!({}), json!("tool_calls")),
            &UPSTREAM.usage_chunk(),
        ],
        false,
    );
    assert_eq!(
        names(&events)[2..],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(
        events[8].1["item"],
        json!({"type": "function_call", "id": "fc_call_1", "call_id": "call_1", "name": "weather",
               "arguments": "", "status": "in_progress"})
    );
    assert_eq!(events[8].1["output_index"], 1);
    assert_eq!(
        events[9].1,
        json!({"type": "response.function_call_arguments.delta", "sequence_number": 9,
               "item_id": "fc_call_1", "output_index": 1, "delta": "{\"city\":"})
    );
    assert_eq!(
        events[11].1,
        json!({"type": "response.function_call_arguments.done", "sequence_number": 11,
               "item_id": "fc_call_1", "output_index": 1, "arguments": "{\"city\":\"Paris\"}",
               "name": "weather"})
    );
    let call_1 = json!({"type": "function_call", "id": "fc_call_1", "call_id": "call_1",
                        "name": "weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"});
    assert_eq!(events[12].1["item"], call_1);
    assert_eq!(events[13].1["output_index"], 2);
    let output = &events.last().unwrap().1["response"]["output"];
    assert_eq!(output.as_array().unwrap().len(), 3);
    assert_eq!(output[1], call_1);
    assert_eq!(output[2]["arguments"], "{}");
    assert_eq!(events.last().unwrap().1["response"]["status"], "completed");
}

#[test]
fn a_chat_refusal_stream_becomes_a_refusal_part() {
    let events = chat_stream(
        &[
            &UPSTREAM.chunk(json!({"content": "Well"}), Value::Null),
            &UPSTREAM.chunk(json!({"refusal": "No."}), Value::Null),
            &UPSTREAM.chunk(json!({}), json!("stop")),
            "[DONE]",
        ],
        false,
    );
    assert_eq!(
        names(&events)[5..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.content_part.added",
            "response.refusal.delta",
            "response.refusal.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[7].1["content_index"], 1);
    assert_eq!(
        events[7].1["part"],
        json!({"type": "refusal", "refusal": ""})
    );
    assert_eq!(events[8].1["delta"], "No.");
    assert_eq!(events[9].1["refusal"], "No.");
    assert_eq!(
        events.last().unwrap().1["response"]["output"][0]["content"],
        json!([
            {"type": "output_text", "text": "Well", "annotations": []},
            {"type": "refusal", "refusal": "No."},
        ])
    );
}

#[test]
fn a_chat_error_payload_becomes_an_error_event() {
    let events = chat_stream(
        &[
            &UPSTREAM.chunk(json!({"content": "Hi"}), Value::Null),
            r#"{"error": {"message": "Overloaded", "type": "server_error", "code": null, "param": null}}"#,
            &UPSTREAM.chunk(json!({"content": "ignored"}), Value::Null),
        ],
        true,
    );
    let (name, data) = events.last().unwrap();
    assert_eq!(*name, "error");
    assert_eq!(
        data,
        &json!({"type": "error", "code": "server_error", "message": "Overloaded", "param": null,
                "sequence_number": 5})
    );
    let events = chat_stream(
        &[
            r#"{"error": {"message": "Slow down", "type": "requests", "code": "rate_limit_exceeded"}}"#,
        ],
        true,
    );
    assert_eq!(
        events,
        vec![(
            "error",
            json!({"type": "error", "code": "rate_limit_exceeded", "message": "Slow down",
                   "param": null, "sequence_number": 0})
        )]
    );
    let events = chat_stream(&[r#"{"error": "plain text"}"#], true);
    assert_eq!(events[0].1["message"], "plain text");
}

#[test]
fn malformed_chat_payloads_give_nothing() {
    let mut t = ChatToResponses::new("m");
    for data in ["", "   ", "not json", "[1, 2]", "42", "\"s\""] {
        assert!(t.data(data).is_empty(), "{data}");
    }
    assert!(t.end().is_empty());
}

#[test]
fn chat_to_responses_to_chat_gives_back_the_text_and_tool_calls() {
    let payloads = [
        UPSTREAM.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        UPSTREAM.chunk(json!({"content": "Let me "}), Value::Null),
        UPSTREAM.chunk(json!({"content": "check."}), Value::Null),
        UPSTREAM.chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                     "function": {"name": "weather", "arguments": ""}}]}),
            Value::Null,
        ),
        UPSTREAM.chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            Value::Null,
        ),
        UPSTREAM.chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ),
        UPSTREAM.chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                     "function": {"name": "time", "arguments": "{}"}}]}),
            Value::Null,
        ),
        UPSTREAM.chunk(json!({}), json!("tool_calls")),
        UPSTREAM.usage_chunk(),
        "[DONE]".to_owned(),
    ];
    let mut there = ChatToResponses::new("m");
    let mut back = ResponsesToChat::new();
    let mut out = Vec::new();
    for p in &payloads {
        for (name, data) in there.data(p) {
            let data: Value = serde_json::from_str(&data).unwrap();
            out.extend(back.event(name, &data));
        }
    }
    assert_eq!(out.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = out
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| delta(c)["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in &chunks {
        for call in delta(c)["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if let Some(id) = call["id"].as_str() {
                assert_eq!(index, calls.len());
                calls.push((
                    id.to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            calls[index]
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(
        calls,
        [
            (
                "call_1".to_owned(),
                "weather".to_owned(),
                "{\"city\":\"Paris\"}".to_owned()
            ),
            ("call_2".to_owned(), "time".to_owned(), "{}".to_owned()),
        ]
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 5);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
}

// ---------------------------------------------------------------- never panics

/// Odd values where requests, answers, items, parts and events are expected.
fn junk() -> Vec<Value> {
    let mut values = vec![
        json!(null),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(true),
        json!("x"),
        json!("[DONE]"),
        json!([]),
        json!([1, "a", null]),
        json!({}),
    ];
    for key in [
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "include",
        "messages",
        "response_format",
        "output",
        "usage",
        "choices",
        "response",
        "item",
        "error",
        "stop",
        "max_output_tokens",
        "id",
    ] {
        for v in [
            json!(null),
            json!(7),
            json!("s"),
            json!([null, 1, "x", []]),
            json!({"type": 3}),
        ] {
            values.push(json!({ key: v }));
        }
    }
    for item in [
        json!({"type": "message"}),
        json!({"type": "message", "role": 5, "content": {"a": 1}}),
        json!({"role": "assistant", "content": [null, 1, {"type": null}]}),
        json!({"role": "user", "content": [{"type": "input_image", "image_url": 5}]}),
        json!({"type": "function_call", "call_id": [], "name": {}, "arguments": 3}),
        json!({"type": "function_call_output", "output": {"x": 1}}),
        json!({"type": "function_call_output", "output": [null, 3]}),
        json!({"type": "reasoning", "summary": "x"}),
        json!({"type": "function", "function": 3}),
        json!({"role": "tool", "content": [1, 2]}),
        json!({"role": "assistant", "tool_calls": [null, {"function": []}]}),
    ] {
        values.push(json!({"input": [item.clone()], "messages": [item.clone()], "output": [item]}));
    }
    values.push(
        json!({"choices": [{"message": 3, "finish_reason": 4}], "usage": {"prompt_tokens": "x"}}),
    );
    values.push(
        json!({"choices": [{"delta": {"content": 5, "tool_calls": [1, "x", {"index": "y"}]}}]}),
    );
    values.push(json!({"response": {"error": 3, "usage": [], "output": {}}, "item": {"type": "function_call"}}));
    values
}

const EVENT_NAMES: [&str; 12] = [
    "response.created",
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_summary_text.delta",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
    "response.failed",
    "error",
    "",
];

/// Every request and answer translation of each value, and the values as the events of one
/// Responses stream (none may panic).
fn translate_all(values: &[Value]) {
    let mut to_chat = ResponsesToChat::new();
    for (i, v) in values.iter().enumerate() {
        let _ = stateful(v);
        let _ = responses_request_to_chat(v);
        let _ = chat_request_to_responses(v);
        let _ = responses_answer_to_chat(v);
        let _ = chat_answer_to_responses(v);
        let _ = to_chat.event(EVENT_NAMES[i % EVENT_NAMES.len()], v);
    }
}

#[test]
fn no_translation_panics_on_junk() {
    let values = junk();
    translate_all(&values);
    for v in &values {
        for name in EVENT_NAMES {
            let _ = ResponsesToChat::new().event(name, v);
        }
    }
    terminal_events(ChatToResponses::new("m"), &values, &[]);
}

/// Values made of the words and keys this translation reads.
fn any_json() -> impl Strategy<Value = Value> {
    test_util::any_json(
        &[
            "message",
            "function_call",
            "function_call_output",
            "reasoning",
            "input_text",
            "output_text",
            "input_image",
            "input_file",
            "refusal",
            "function",
            "user",
            "assistant",
            "tool",
            "json_schema",
            "incomplete",
            "https://x/a.png",
            "[DONE]",
            "",
        ],
        &[
            "type",
            "role",
            "content",
            "input",
            "output",
            "messages",
            "text",
            "format",
            "tool_calls",
            "function",
            "arguments",
            "call_id",
            "item_id",
            "output_index",
            "item",
            "response",
            "delta",
            "choices",
            "usage",
            "error",
            "tools",
            "tool_choice",
            "finish_reason",
            "index",
            "id",
        ],
    )
}

proptest! {
    #[test]
    fn nothing_panics_on_any_input(values in prop::collection::vec(any_json(), 1..8)) {
        translate_all(&values);
        let terminal = terminal_events(
            ChatToResponses::new("m"),
            &values,
            &["response.completed", "response.incomplete"],
        );
        prop_assert!(terminal <= 1);
    }
}
