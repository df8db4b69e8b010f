//! Whole (non-streaming) answers: Anthropic messages to chat completions and back.

use serde_json::{Value, json};

use super::{
    array_at, chat, chat_id, chat_usage, finish_reason, kind, message_id, messages_usage, now,
    stop_reason, str_at,
};

/// A non-streaming Anthropic answer (a `message` object) as a `chat.completion` object.
///
/// Text blocks join into `message.content` (`null` when there is no text but tool calls),
/// `tool_use` blocks become `tool_calls` (ids kept), thinking text becomes
/// `reasoning_content`, and usage counts cached tokens into the prompt as OpenAI does.
///
/// ```
/// use llm_failover::protocol::translate::messages_answer_to_chat;
///
/// let message = serde_json::json!({
///     "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
///     "content": [{"type": "text", "text": "Hello."}],
///     "stop_reason": "end_turn",
///     "usage": {"input_tokens": 5, "output_tokens": 2},
/// });
/// let chat = messages_answer_to_chat(&message);
/// assert_eq!(chat["choices"][0]["message"]["content"], "Hello.");
/// assert_eq!(chat["choices"][0]["finish_reason"], "stop");
/// assert_eq!(chat["usage"]["total_tokens"], 7);
/// ```
pub fn messages_answer_to_chat(answer: &Value) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let blocks = array_at(answer, "content");
    for b in blocks {
        match kind(b) {
            "text" => text.push_str(str_at(b, "text")),
            "thinking" => reasoning.push_str(str_at(b, "thinking")),
            "tool_use" => calls.push(json!({
                "id": str_at(b, "id"),
                "type": "function",
                "function": {
                    "name": str_at(b, "name"),
                    "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let message = chat::assistant_message(text, String::new(), reasoning, calls);
    let finish = answer
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason);
    let mut out = json!({
        "id": chat_id(answer.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": now(),
        "model": answer.get("model").cloned().unwrap_or_else(|| Value::from("")),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
        out["usage"] = chat_usage(usage);
    }
    out
}

/// A non-streaming `chat.completion` object as an Anthropic answer (a `message` object).
///
/// Its first choice's text, refusal and tool calls become content blocks (`input` parsed from
/// `arguments`, `{}` when they are not a JSON object); `reasoning_content` is dropped (a
/// thinking block needs Anthropic's signature). A refusal that stopped normally stops with
/// `refusal`. `stop_sequence` is `null`: OpenAI does not say which sequence matched.
///
/// ```
/// use llm_failover::protocol::translate::chat_answer_to_messages;
///
/// let chat = serde_json::json!({
///     "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
///     "choices": [{"index": 0, "finish_reason": "length",
///                  "message": {"role": "assistant", "content": "Hello."}}],
///     "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
/// });
/// let message = chat_answer_to_messages(&chat);
/// assert_eq!(message["content"][0]["text"], "Hello.");
/// assert_eq!(message["stop_reason"], "max_tokens");
/// assert_eq!(message["usage"]["output_tokens"], 2);
/// ```
pub fn chat_answer_to_messages(answer: &Value) -> Value {
    let choice = chat::first_choice(answer);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut blocks = Vec::new();
    let mut text = |t: Option<&str>| {
        if let Some(t) = t.filter(|t| !t.is_empty()) {
            blocks.push(json!({"type": "text", "text": t}));
        }
    };
    match message.get("content") {
        Some(Value::String(s)) => text(Some(s)),
        Some(Value::Array(parts)) => {
            for p in parts {
                text(
                    p.get("text")
                        .or_else(|| p.get("refusal"))
                        .and_then(Value::as_str),
                );
            }
        }
        _ => {}
    }
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    text(refusal);
    let calls = array_at(message, "tool_calls");
    for call in calls {
        let function = call.get("function").unwrap_or(&Value::Null);
        let input = function
            .get("arguments")
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
            "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
            "input": input,
        }));
    }
    let stop = match choice.get("finish_reason").and_then(Value::as_str) {
        Some(f) => match stop_reason(f) {
            "end_turn" if refusal.is_some() => "refusal",
            s => s,
        },
        None if !calls.is_empty() => "tool_use",
        None => "end_turn",
    };
    let usage = answer
        .get("usage")
        .filter(|u| u.is_object())
        .map_or_else(|| messages_usage(&json!({})), messages_usage);
    json!({
        "id": message_id(answer.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": answer.get("model").cloned().unwrap_or_else(|| Value::from("")),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage,
    })
}
