//! OpenAI's Responses API: requests, answers and streams to OpenAI chat completions and back.
//!
//! The Responses API is OpenAI's newer endpoint (`/v1/responses`): a request holds `input`
//! items (messages, function calls and their outputs) rather than `messages`, tools are flat,
//! and the answer is a list of `output` items streamed as typed events. Most of it maps onto
//! chat completions one for one. What does not is state kept by the provider (a
//! `previous_response_id`, a stored conversation or prompt, uploaded files), which only the
//! provider that stored it can serve ([`stateful`]), and the tools the provider runs itself
//! (web search, file search, code interpreter, ...), which a chat target cannot run. A
//! Responses request reaches an Anthropic target through chat (responses, chat, messages), so
//! these functions only translate between the two OpenAI APIs.

use serde_json::{Map, Value, json};

use super::chat::{self, CallDelta, Chunk, ChunkHead, ChunkWriter, Progress};
use super::{
    Event, RESPONSES, Untranslatable, array_at, count, fresh_id, kind, now, str_at, swap_prefix,
};

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------- state

/// The feature of a Responses request that depends on state kept by the provider, if any.
///
/// That is a `previous_response_id`, a `conversation`, a stored `prompt` template,
/// `background: true` (the answer is fetched later from the provider), an `item_reference`
/// input item, or an image or file given by `file_id` (a file uploaded to the provider). Such
/// a request can only be served by the provider that keeps the state: an `openai-responses`
/// target, never through translation.
///
/// ```
/// use llm_failover::protocol::translate::stateful;
/// use serde_json::json;
///
/// let follow_up = json!({"previous_response_id": "resp_1", "input": "and then?"});
/// assert_eq!(stateful(&follow_up), Some("previous_response_id"));
/// assert_eq!(stateful(&json!({"input": "hi"})), None);
/// ```
#[must_use]
pub fn stateful(req: &Value) -> Option<&'static str> {
    let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    if req
        .get("previous_response_id")
        .is_some_and(Value::is_string)
    {
        return Some("previous_response_id");
    }
    if set("conversation") {
        return Some("conversation");
    }
    if set("prompt") {
        return Some("prompt");
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Some("background");
    }
    let items = req.get("input").and_then(Value::as_array)?;
    for item in items {
        if kind(item) == "item_reference" {
            return Some("item_reference");
        }
        let parts = ["content", "output"]
            .into_iter()
            .filter_map(|k| item.get(k).and_then(Value::as_array))
            .flatten();
        for part in parts {
            if matches!(kind(part), "input_image" | "input_file")
                && part.get("file_id").is_some_and(|f| !f.is_null())
            {
                return Some("file_id");
            }
        }
    }
    None
}

// ---------------------------------------------------------------- requests: responses -> chat

/// An OpenAI Responses request body as an OpenAI chat request body.
///
/// `instructions` becomes a leading system message, `input` items become messages (function
/// calls and their outputs become `tool_calls` and tool messages, ids kept), flat function
/// tools become chat tools, and `text.format` becomes `response_format`. Reasoning items in
/// the history are dropped. `model` is kept as the client sent it (the caller sets the
/// target's). A streaming request asks for usage (`stream_options.include_usage`), which a
/// Responses answer always reports.
///
/// # Errors
///
/// [`Untranslatable`] when the request depends on state kept by the provider ([`stateful`]),
/// uses a tool the provider runs (web search, file search, ...) or such a tool's items in its
/// history, or asks for log probabilities (see the [module docs](super)).
///
/// ```
/// use llm_failover::protocol::translate::responses_request_to_chat;
///
/// let req = serde_json::json!({
///     "model": "gpt-4.1",
///     "instructions": "Be brief.",
///     "input": "hi",
///     "max_output_tokens": 100,
/// });
/// let chat = responses_request_to_chat(&req)?;
/// assert_eq!(chat["messages"][0], serde_json::json!({"role": "system", "content": "Be brief."}));
/// assert_eq!(chat["messages"][1], serde_json::json!({"role": "user", "content": "hi"}));
/// assert_eq!(chat["max_tokens"], 100);
/// # Ok::<(), llm_failover::protocol::translate::Untranslatable>(())
/// ```
pub fn responses_request_to_chat(req: &Value) -> Result<Value, Untranslatable> {
    if let Some(feature) = stateful(req) {
        return Err(Untranslatable::chat(
            feature,
            "it keeps no state between requests, and the state lives on the provider that stored it",
        ));
    }
    let logprobs = if req.get("top_logprobs").is_some_and(|v| !v.is_null()) {
        Some("top_logprobs")
    } else {
        req.get("include")
            .and_then(Value::as_array)
            .is_some_and(|i| i.iter().any(|v| v == "message.output_text.logprobs"))
            .then_some("include")
    };
    if let Some(feature) = logprobs {
        return Err(Untranslatable::chat(
            feature,
            "token log probabilities are not carried back into a Responses answer",
        ));
    }
    let mut out = Map::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut messages = Vec::new();
    if let Some(instructions) = req
        .get("instructions")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
    {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                input_item(item, &mut messages)?;
            }
        }
        _ => {}
    }
    out.insert("messages".into(), Value::Array(messages));
    let tools = responses_tools(req.get("tools"))?;
    let choice = responses_tool_choice(req.get("tool_choice"))?;
    if !tools.is_empty() {
        // Chat targets refuse tool_choice and parallel_tool_calls without tools.
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), choice);
        }
        if let Some(p) = req.get("parallel_tool_calls").filter(|p| p.is_boolean()) {
            out.insert("parallel_tool_calls".into(), p.clone());
        }
    }
    copy_alike(req, &mut out);
    if let Some(max) = req.get("max_output_tokens").filter(|m| m.is_u64()) {
        out.insert("max_tokens".into(), max.clone());
    }
    if let Some(stream) = req.get("stream").and_then(Value::as_bool) {
        out.insert("stream".into(), Value::Bool(stream));
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    let text = req.get("text").unwrap_or(&Value::Null);
    if let Some(format) = text_format_to_chat(text.get("format"))? {
        out.insert("response_format".into(), format);
    }
    if let Some(v) = text.get("verbosity").filter(|v| v.is_string()) {
        out.insert("verbosity".into(), v.clone());
    }
    if let Some(effort) = req
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|e| e.is_string())
    {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    Ok(Value::Object(out))
}

/// One Responses input item as chat messages, appended to `out` (a function call merges into
/// the assistant message before it).
fn input_item(item: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    if !item.is_object() {
        return Ok(());
    }
    let t = kind(item);
    match t {
        "message" => message_item(item, out),
        "" if item.get("role").is_some() => message_item(item, out),
        "function_call" => {
            let call = chat_tool_call(item);
            match out.last_mut() {
                Some(last) if last.get("role").and_then(Value::as_str) == Some("assistant") => {
                    if let Some(calls) = last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        calls.push(call);
                    } else {
                        if last.get("content") == Some(&Value::from("")) {
                            last["content"] = Value::Null;
                        }
                        last["tool_calls"] = json!([call]);
                    }
                }
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
            Ok(())
        }
        "function_call_output" => {
            let content = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match kind(p) {
                            "input_text" | "output_text" => text.push_str(str_at(p, "text")),
                            other => {
                                return Err(Untranslatable::chat(
                                    "function_call_output",
                                    format!("its tool messages hold text only, not {other:?}"),
                                ));
                            }
                        }
                    }
                    text
                }
                _ => String::new(),
            };
            out.push(json!({
                "role": "tool",
                "tool_call_id": str_at(item, "call_id"),
                "content": content,
            }));
            Ok(())
        }
        // Another model's private reasoning: the visible conversation is the same without it.
        "reasoning" => Ok(()),
        other => Err(Untranslatable::chat(
            item_feature(other),
            format!("it has no {other:?} items (a tool the provider runs, or an unknown item)"),
        )),
    }
}

/// A `function_call` item as a chat tool call (the call id kept).
fn chat_tool_call(item: &Value) -> Value {
    json!({
        "id": str_at(item, "call_id"),
        "type": "function",
        "function": {"name": str_at(item, "name"), "arguments": str_at(item, "arguments")},
    })
}

/// The feature named for an input item type a chat target has no equivalent for.
fn item_feature(kind: &str) -> &'static str {
    match kind {
        "web_search_call" => "web_search_call",
        "file_search_call" => "file_search_call",
        "computer_call" => "computer_call",
        "computer_call_output" => "computer_call_output",
        "code_interpreter_call" => "code_interpreter_call",
        "image_generation_call" => "image_generation_call",
        "local_shell_call" => "local_shell_call",
        "local_shell_call_output" => "local_shell_call_output",
        "custom_tool_call" => "custom_tool_call",
        "custom_tool_call_output" => "custom_tool_call_output",
        k if k.starts_with("mcp_") => "mcp item",
        _ => "input item",
    }
}

/// A message item (`type: "message"`, or a bare `{role, content}`) as a chat message.
fn message_item(item: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let role = str_at(item, "role");
    let content = item.get("content").unwrap_or(&Value::Null);
    match role {
        "user" | "system" | "developer" => {
            let content = map_parts(content, input_part)?;
            out.push(json!({"role": role, "content": content}));
            Ok(())
        }
        "assistant" => {
            let mut text = String::new();
            let mut refusal = String::new();
            match content {
                Value::String(s) => text.push_str(s),
                Value::Array(parts) => {
                    for p in parts.iter().filter(|p| p.is_object()) {
                        match kind(p) {
                            "output_text" | "input_text" | "text" => {
                                text.push_str(str_at(p, "text"));
                            }
                            "refusal" => refusal.push_str(str_at(p, "refusal")),
                            other => {
                                return Err(Untranslatable::chat(
                                    "content part",
                                    format!("its assistant messages hold text only, not {other:?}"),
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
            out.push(chat::assistant_message(
                text,
                refusal,
                String::new(),
                Vec::new(),
            ));
            Ok(())
        }
        _ => Err(Untranslatable::chat(
            "message role",
            format!("it has no {role:?} role"),
        )),
    }
}

/// A user, system or developer message's content in the other API: a string kept, each part
/// (object) made by `part`, "" for anything else.
fn map_parts(
    content: &Value,
    part: fn(&Value) -> Result<Value, Untranslatable>,
) -> Result<Value, Untranslatable> {
    Ok(match content {
        Value::String(s) => Value::from(s.as_str()),
        Value::Array(parts) => Value::Array(
            parts
                .iter()
                .filter(|p| p.is_object())
                .map(part)
                .collect::<Result<_, _>>()?,
        ),
        _ => Value::from(""),
    })
}

/// A user, system or developer message's content part as a chat content part.
fn input_part(part: &Value) -> Result<Value, Untranslatable> {
    match kind(part) {
        "input_text" | "output_text" | "text" => {
            Ok(json!({"type": "text", "text": str_at(part, "text")}))
        }
        "input_image" => {
            let url = str_at(part, "image_url");
            if !(url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("data:"))
            {
                return Err(Untranslatable::chat(
                    "input_image",
                    "it takes images as http(s) or data URLs only",
                ));
            }
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        "input_file" => {
            let Some(data) = part.get("file_data").filter(|d| d.is_string()) else {
                return Err(Untranslatable::chat(
                    "input_file",
                    "it takes files as inline data only, not URLs",
                ));
            };
            let mut file = json!({"file_data": data});
            if let Some(name) = part.get("filename").filter(|n| n.is_string()) {
                file["filename"] = name.clone();
            }
            Ok(json!({"type": "file", "file": file}))
        }
        "input_audio" => Ok(json!({
            "type": "input_audio",
            "input_audio": part.get("input_audio").cloned().unwrap_or_else(|| json!({})),
        })),
        other => Err(Untranslatable::chat(
            "content part",
            format!("it has no {other:?} part"),
        )),
    }
}

/// Responses tools (flat function tools) as chat tools; the tools the provider runs are
/// refused.
fn responses_tools(tools: Option<&Value>) -> Result<Vec<Value>, Untranslatable> {
    function_tools(
        tools,
        |k| {
            Untranslatable::chat(
                "tools",
                format!("it takes function tools only, not {k:?} (a tool the provider runs)"),
            )
        },
        |t| json!({"type": "function", "function": function_fields(t)}),
    )
}

/// The objects of a `tools` list, each made by `tool`; `refuse` is the error for the first of
/// them that is not a function tool (given its type).
fn function_tools(
    tools: Option<&Value>,
    refuse: impl Fn(&str) -> Untranslatable,
    tool: impl Fn(&Value) -> Value,
) -> Result<Vec<Value>, Untranslatable> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .filter(|t| t.is_object())
        .map(|t| match kind(t) {
            "function" => Ok(tool(t)),
            other => Err(refuse(other)),
        })
        .collect()
}

/// What a flat Responses function tool and a chat tool's `function` share: the `name` ("" when
/// absent), and the `description`, `parameters` and `strict` that are of the right type.
fn function_fields(f: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "name".into(),
        f.get("name").cloned().unwrap_or_else(|| Value::from("")),
    );
    for (k, ok) in [
        ("description", Value::is_string as fn(&Value) -> bool),
        ("parameters", Value::is_object),
        ("strict", Value::is_boolean),
    ] {
        if let Some(v) = f.get(k).filter(|v| ok(v)) {
            out.insert(k.into(), v.clone());
        }
    }
    out
}

/// A Responses `tool_choice` as a chat one; `None` when the request has none.
fn responses_tool_choice(choice: Option<&Value>) -> Result<Option<Value>, Untranslatable> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(Some(Value::from(s.as_str())))
        }
        Some(c) if kind(c) == "function" && c.get("name").is_some_and(Value::is_string) => Ok(
            Some(json!({"type": "function", "function": {"name": c["name"].clone()}})),
        ),
        Some(_) => Err(Untranslatable::chat(
            "tool_choice",
            "it chooses tools as auto, none, required or one named function only",
        )),
    }
}

/// A Responses `text.format` as a chat `response_format`; `None` for plain text.
fn text_format_to_chat(format: Option<&Value>) -> Result<Option<Value>, Untranslatable> {
    let Some(format) = format.filter(|f| f.is_object()) else {
        return Ok(None);
    };
    match kind(format) {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    schema.insert(k.into(), v.clone());
                }
            }
            Ok(Some(
                json!({"type": "json_schema", "json_schema": Value::Object(schema)}),
            ))
        }
        other => Err(Untranslatable::chat(
            "text.format",
            format!("it has no {other:?} output format"),
        )),
    }
}

/// Copies the settings that both OpenAI APIs name and write alike: `temperature` and `top_p`
/// (numbers) and `user` (a string).
fn copy_alike(req: &Value, out: &mut Map<String, Value>) {
    for (k, ok) in [
        ("temperature", Value::is_number as fn(&Value) -> bool),
        ("top_p", Value::is_number),
        ("user", Value::is_string),
    ] {
        if let Some(v) = req.get(k).filter(|v| ok(v)) {
            out.insert(k.into(), v.clone());
        }
    }
}

// ---------------------------------------------------------------- requests: chat -> responses

/// An OpenAI chat request body as an OpenAI Responses request body.
///
/// Every message becomes one input item, in order (system messages stay `system` messages
/// rather than `instructions`), an assistant's tool calls become `function_call` items and
/// tool messages `function_call_output` items (ids kept), chat tools become flat function
/// tools (`strict: false` when the chat tool does not say: chat's default, where the
/// Responses API's is `true`), and `response_format` becomes `text.format`. `store` is always
/// `false`: a chat client asked for no state kept on the provider. `model` is kept as the
/// client sent it (the caller sets the target's).
///
/// # Errors
///
/// [`Untranslatable`] when the request asks for what the Responses API cannot give (a second
/// choice, log probabilities, audio, stop sequences, `logit_bias`, ...; see the
/// [module docs](super)).
///
/// ```
/// use llm_failover::protocol::translate::chat_request_to_responses;
/// use serde_json::json;
///
/// let chat = json!({
///     "model": "gpt-4.1",
///     "messages": [{"role": "user", "content": "hi"}],
///     "max_completion_tokens": 100,
/// });
/// let req = chat_request_to_responses(&chat)?;
/// assert_eq!(req["input"][0], json!({"type": "message", "role": "user", "content": "hi"}));
/// assert_eq!(req["max_output_tokens"], 100);
/// assert_eq!(req["store"], false);
///
/// let with_stop = json!({"messages": [{"role": "user", "content": "hi"}], "stop": "\n"});
/// assert_eq!(chat_request_to_responses(&with_stop).unwrap_err().feature(), "stop");
/// # Ok::<(), llm_failover::protocol::translate::Untranslatable>(())
/// ```
pub fn chat_request_to_responses(req: &Value) -> Result<Value, Untranslatable> {
    refuse_for_responses(req)?;
    let mut out = Map::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut input = Vec::new();
    for m in array_at(req, "messages").iter().filter(|m| m.is_object()) {
        chat_message_items(m, &mut input)?;
    }
    out.insert("input".into(), Value::Array(input));
    let tools = chat_tools_to_responses(req.get("tools"))?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = chat_tool_choice_to_responses(req.get("tool_choice"))? {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(p) = req.get("parallel_tool_calls").filter(|p| p.is_boolean()) {
        out.insert("parallel_tool_calls".into(), p.clone());
    }
    copy_alike(req, &mut out);
    if let Some(max) = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).filter(|m| m.is_u64()))
    {
        out.insert("max_output_tokens".into(), max.clone());
    }
    let mut text = Map::new();
    if let Some(format) = response_format_to_text(req.get("response_format"))? {
        text.insert("format".into(), format);
    }
    if let Some(v) = req.get("verbosity").filter(|v| v.is_string()) {
        text.insert("verbosity".into(), v.clone());
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }
    if let Some(effort) = req.get("reasoning_effort").filter(|e| e.is_string()) {
        out.insert("reasoning".into(), json!({"effort": effort}));
    }
    if let Some(stream) = req.get("stream").filter(|s| s.is_boolean()) {
        out.insert("stream".into(), stream.clone());
    }
    out.insert("store".into(), Value::Bool(false));
    Ok(Value::Object(out))
}

/// The chat request's features that the Responses API has no equivalent for: those of every
/// target but chat, and stop sequences.
fn refuse_for_responses(req: &Value) -> Result<(), Untranslatable> {
    chat::refuse_chat_only(req, RESPONSES)?;
    let stops = match req.get("stop") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => a.iter().any(Value::is_string),
        // Absent, or of a type that asks nothing.
        _ => false,
    };
    if stops {
        return Err(Untranslatable::responses(
            "stop",
            "it has no stop sequences, and the answer would run past them",
        ));
    }
    Ok(())
}

/// One chat message as Responses input items, appended to `out`.
fn chat_message_items(m: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let role = str_at(m, "role");
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        "system" | "developer" | "user" => {
            let content = map_parts(content, chat_part_to_input)?;
            out.push(json!({"type": "message", "role": role, "content": content}));
            Ok(())
        }
        "assistant" => {
            if m.get("function_call").is_some_and(|f| !f.is_null()) {
                return Err(Untranslatable::responses(
                    "function_call",
                    "the legacy function calling answers in a shape tools do not",
                ));
            }
            let (text, refusal) = chat::text_and_refusal(m);
            let mut parts = Vec::new();
            if !text.is_empty() {
                parts.push(json!({"type": "output_text", "text": text, "annotations": []}));
            }
            if !refusal.is_empty() {
                parts.push(json!({"type": "refusal", "refusal": refusal}));
            }
            if !parts.is_empty() {
                out.push(json!({"type": "message", "role": "assistant", "content": parts}));
            }
            for call in array_at(m, "tool_calls").iter().filter(|c| c.is_object()) {
                if !matches!(kind(call), "function" | "") {
                    return Err(Untranslatable::responses(
                        "tool_calls",
                        format!("it has no {:?} tool calls", kind(call)),
                    ));
                }
                let f = call.get("function").unwrap_or(&Value::Null);
                out.push(json!({
                    "type": "function_call",
                    "call_id": str_at(call, "id"),
                    "name": str_at(f, "name"),
                    "arguments": str_at(f, "arguments"),
                }));
            }
            Ok(())
        }
        "tool" => {
            let output = match content {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts.iter().map(|p| str_at(p, "text")).collect(),
                _ => String::new(),
            };
            out.push(json!({
                "type": "function_call_output",
                "call_id": str_at(m, "tool_call_id"),
                "output": output,
            }));
            Ok(())
        }
        "function" => Err(Untranslatable::responses(
            "function message",
            "the legacy function calling answers in a shape tools do not",
        )),
        _ => Err(Untranslatable::responses(
            "message role",
            format!("it has no {role:?} role"),
        )),
    }
}

/// A chat content part (of a user, system or developer message) as a Responses input part.
fn chat_part_to_input(part: &Value) -> Result<Value, Untranslatable> {
    match kind(part) {
        "text" => Ok(json!({"type": "input_text", "text": str_at(part, "text")})),
        "image_url" => {
            let image = part.get("image_url").unwrap_or(&Value::Null);
            let url = match image {
                Value::String(s) => s.as_str(),
                other => str_at(other, "url"),
            };
            let detail = image
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or("auto");
            Ok(json!({"type": "input_image", "image_url": url, "detail": detail}))
        }
        "file" => {
            let file = part.get("file").unwrap_or(&Value::Null);
            let mut out = json!({"type": "input_file"});
            for k in ["file_data", "filename", "file_id"] {
                if let Some(v) = file.get(k).filter(|v| v.is_string()) {
                    out[k] = v.clone();
                }
            }
            Ok(out)
        }
        "input_audio" => Err(Untranslatable::responses(
            "input_audio",
            "it takes no audio input",
        )),
        other => Err(Untranslatable::responses(
            "content part",
            format!("it has no {other:?} part"),
        )),
    }
}

/// Chat tools as flat Responses function tools.
fn chat_tools_to_responses(tools: Option<&Value>) -> Result<Vec<Value>, Untranslatable> {
    function_tools(
        tools,
        |k| {
            Untranslatable::responses(
                "tools",
                format!("it takes function tools only here, not {k:?}"),
            )
        },
        |t| {
            let mut tool = function_fields(t.get("function").unwrap_or(&Value::Null));
            tool.insert("type".into(), Value::from("function"));
            // Chat's default is not strict; the Responses API's is strict.
            tool.entry("strict").or_insert(Value::Bool(false));
            Value::Object(tool)
        },
    )
}

/// A chat `tool_choice` as a Responses one; `None` when the request has none.
fn chat_tool_choice_to_responses(choice: Option<&Value>) -> Result<Option<Value>, Untranslatable> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(Some(Value::from(s.as_str())))
        }
        Some(c) => match c.get("function").and_then(|f| f.get("name")) {
            Some(Value::String(name)) if kind(c) == "function" => {
                Ok(Some(json!({"type": "function", "name": name})))
            }
            _ => Err(Untranslatable::responses(
                "tool_choice",
                "it chooses tools as auto, none, required or one named function only here",
            )),
        },
    }
}

/// A chat `response_format` as a Responses `text.format`; `None` when the request has none.
fn response_format_to_text(format: Option<&Value>) -> Result<Option<Value>, Untranslatable> {
    let Some(format) = format.filter(|f| f.is_object()) else {
        return Ok(None);
    };
    match kind(format) {
        "text" => Ok(Some(json!({"type": "text"}))),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let schema = format.get("json_schema").unwrap_or(&Value::Null);
            let mut out = json!({"type": "json_schema"});
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = schema.get(k).filter(|v| !v.is_null()) {
                    out[k] = v.clone();
                }
            }
            Ok(Some(out))
        }
        other => Err(Untranslatable::responses(
            "response_format",
            format!("it has no {other:?} output format"),
        )),
    }
}

// ---------------------------------------------------------------- answers

/// A chat id for a response id: `resp_X` becomes `chatcmpl-X`.
fn chat_id(response_id: Option<&str>) -> String {
    swap_prefix(response_id, "resp_", "chatcmpl-")
}

/// The part of a chat id after `chatcmpl-` (fresh when there is no id): a response is
/// `resp_X`, its message `msg_X`.
fn base_id(chat_id: Option<&str>) -> String {
    swap_prefix(chat_id, "chatcmpl-", "")
}

/// Responses usage as chat usage (total the sum when absent; cached and reasoning tokens in
/// their details).
fn chat_usage(usage: &Value) -> Value {
    let prompt = count(usage, "input_tokens");
    let completion = count(usage, "output_tokens");
    let total = usage
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| prompt.saturating_add(completion));
    let detail = |k: &str, d: &str| usage.get(k).map_or(0, |v| count(v, d));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": detail("input_tokens_details", "cached_tokens")},
        "completion_tokens_details": {
            "reasoning_tokens": detail("output_tokens_details", "reasoning_tokens"),
        },
    })
}

/// Chat usage as Responses usage.
fn responses_usage(usage: &Value) -> Value {
    let input = count(usage, "prompt_tokens");
    let output = count(usage, "completion_tokens");
    let total = usage
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| input.saturating_add(output));
    let detail = |k: &str, d: &str| usage.get(k).map_or(0, |v| count(v, d));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": detail("prompt_tokens_details", "cached_tokens")},
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens"),
        },
        "total_tokens": total,
    })
}

/// A response's finish reason as chat's: why it stopped, from its `status` and
/// `incomplete_details.reason` (`tool_calls` is decided by the caller).
fn finish_of(response: &Value) -> &'static str {
    if str_at(response, "status") != "incomplete" {
        return "stop";
    }
    match response
        .get("incomplete_details")
        .map_or("", |d| str_at(d, "reason"))
    {
        "max_output_tokens" => "length",
        "content_filter" => "content_filter",
        _ => "stop",
    }
}

/// A chat finish reason as a response's `status` and `incomplete_details.reason`.
fn status_of(finish: &str) -> (&'static str, Option<&'static str>) {
    match finish {
        "length" => ("incomplete", Some("max_output_tokens")),
        "content_filter" => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A Response object, as OpenAI returns it, with the fields a translation knows; the request's
/// settings, which the answer does not tell, at their defaults.
fn response_object(
    id: &str,
    created: u64,
    model: &Value,
    finish: Option<&str>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let (status, incomplete) = finish.map_or(("in_progress", None), status_of);
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
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
        "usage": usage,
        "user": null,
        "metadata": {},
    })
}

/// A non-streaming Responses answer (a `response` object) as a `chat.completion` object.
///
/// The `output_text` parts of its message items join into `message.content` (`null` when
/// there is no text but tool calls or a refusal), `refusal` parts into `message.refusal`,
/// `function_call` items become `tool_calls` (ids kept), reasoning summaries become
/// `reasoning_content`, and an incomplete response finishes with `length` or
/// `content_filter`.
///
/// ```
/// use llm_failover::protocol::translate::responses_answer_to_chat;
///
/// let response = serde_json::json!({
///     "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
///     "model": "gpt-4.1",
///     "output": [{"type": "message", "role": "assistant",
///                 "content": [{"type": "output_text", "text": "Hello.", "annotations": []}]}],
///     "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
/// });
/// let chat = responses_answer_to_chat(&response);
/// assert_eq!(chat["id"], "chatcmpl-1");
/// assert_eq!(chat["choices"][0]["message"]["content"], "Hello.");
/// assert_eq!(chat["choices"][0]["finish_reason"], "stop");
/// assert_eq!(chat["usage"]["prompt_tokens"], 5);
/// ```
#[must_use]
pub fn responses_answer_to_chat(answer: &Value) -> Value {
    let mut text = String::new();
    let mut refusal = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let items = array_at(answer, "output");
    for item in items {
        match kind(item) {
            "message" => {
                for p in array_at(item, "content") {
                    match kind(p) {
                        "output_text" => text.push_str(str_at(p, "text")),
                        "refusal" => refusal.push_str(str_at(p, "refusal")),
                        _ => {}
                    }
                }
            }
            "function_call" => calls.push(chat_tool_call(item)),
            "reasoning" => {
                for s in array_at(item, "summary") {
                    reasoning.push_str(str_at(s, "text"));
                }
            }
            _ => {}
        }
    }
    let finish = if calls.is_empty() {
        finish_of(answer)
    } else {
        "tool_calls"
    };
    let message = chat::assistant_message(text, refusal, reasoning, calls);
    let mut out = json!({
        "id": chat_id(answer.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": answer.get("created_at").and_then(Value::as_u64).unwrap_or_else(now),
        "model": answer.get("model").filter(|m| m.is_string()).cloned().unwrap_or_else(|| Value::from("")),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
        out["usage"] = chat_usage(usage);
    }
    out
}

/// A non-streaming `chat.completion` object as a Responses answer (a complete `response`
/// object, as OpenAI returns it).
///
/// Its first choice's text and refusal become one `message` item, its tool calls
/// `function_call` items (ids kept); `length` and `content_filter` make the response
/// `incomplete`. `reasoning_content` is dropped (a reasoning item is the provider's, and a
/// client would send it back). The request's settings, which the answer does not tell, are
/// at their defaults (`store` is `false`: nothing was stored).
///
/// ```
/// use llm_failover::protocol::translate::chat_answer_to_responses;
///
/// let chat = serde_json::json!({
///     "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
///     "choices": [{"index": 0, "finish_reason": "stop",
///                  "message": {"role": "assistant", "content": "Hello."}}],
///     "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
/// });
/// let response = chat_answer_to_responses(&chat);
/// assert_eq!(response["id"], "resp_1");
/// assert_eq!(response["status"], "completed");
/// assert_eq!(response["output"][0]["content"][0]["text"], "Hello.");
/// assert_eq!(response["usage"]["input_tokens"], 5);
/// ```
#[must_use]
pub fn chat_answer_to_responses(answer: &Value) -> Value {
    let base = base_id(answer.get("id").and_then(Value::as_str));
    let choice = chat::first_choice(answer);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let (text, refusal) = chat::text_and_refusal(message);
    let calls: Vec<&Value> = array_at(message, "tool_calls")
        .iter()
        .filter(|c| c.is_object())
        .collect();
    let mut output = Vec::new();
    let mut parts = Vec::new();
    if !text.is_empty() || (refusal.is_empty() && calls.is_empty()) {
        parts.push(json!({"type": "output_text", "text": text, "annotations": []}));
    }
    if !refusal.is_empty() {
        parts.push(json!({"type": "refusal", "refusal": refusal}));
    }
    if !parts.is_empty() {
        output.push(json!({
            "type": "message",
            "id": format!("msg_{base}"),
            "status": "completed",
            "role": "assistant",
            "content": parts,
        }));
    }
    for call in calls {
        let f = call.get("function").unwrap_or(&Value::Null);
        let call_id = str_at(call, "id");
        output.push(json!({
            "type": "function_call",
            "id": format!("fc_{call_id}"),
            "call_id": call_id,
            "name": str_at(f, "name"),
            "arguments": str_at(f, "arguments"),
            "status": "completed",
        }));
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let usage = answer
        .get("usage")
        .filter(|u| u.is_object())
        .map_or_else(|| responses_usage(&json!({})), responses_usage);
    let model = answer
        .get("model")
        .filter(|m| m.is_string())
        .cloned()
        .unwrap_or_else(|| Value::from(""));
    let created = answer
        .get("created")
        .and_then(Value::as_u64)
        .unwrap_or_else(now);
    response_object(
        &format!("resp_{base}"),
        created,
        &model,
        Some(finish),
        output,
        usage,
    )
}

// ---------------------------------------------------------------- streams: responses -> chat

/// A function call seen in a Responses stream.
#[derive(Debug)]
struct SeenCall {
    /// The output item's id (`fc_...`), which argument deltas name.
    item_id: Option<String>,
    /// The output item's index, for argument deltas without an item id.
    output_index: Option<u64>,
    /// Some arguments were sent to the client.
    streamed: bool,
}

/// OpenAI Responses SSE events in, OpenAI chat `data:` payloads out (JSON strings, and
/// `[DONE]`).
///
/// Feed it every upstream event in order with [`event`](Self::event). Text, refusal and
/// reasoning deltas become the chat deltas of the same meaning, each function call a tool
/// call (its chat `index` is its rank among the function calls), `response.completed` or
/// `response.incomplete` the finish, the usage chunk and `[DONE]`, and `response.failed` or
/// an `error` event an `{"error": ...}` payload, which the chat stream reader takes as a
/// classified failure.
///
/// ```
/// use llm_failover::protocol::translate::ResponsesToChat;
/// use serde_json::json;
///
/// let mut t = ResponsesToChat::new();
/// let mut out = Vec::new();
/// for (name, data) in [
///     ("response.created", json!({"type": "response.created",
///         "response": {"id": "resp_1", "model": "gpt-4.1", "created_at": 1}})),
///     ("response.output_text.delta", json!({"type": "response.output_text.delta",
///         "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi"})),
///     ("response.completed", json!({"type": "response.completed",
///         "response": {"id": "resp_1", "status": "completed",
///                      "usage": {"input_tokens": 5, "output_tokens": 1}}})),
/// ] {
///     out.extend(t.event(name, &data));
/// }
/// assert_eq!(out.last().unwrap(), "[DONE]");
/// let text: String = out
///     .iter()
///     .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
///     .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
///     .collect();
/// assert_eq!(text, "Hi");
/// ```
#[derive(Debug)]
pub struct ResponsesToChat {
    /// The chunks' id (`chatcmpl-` and the response id once `response.created` gave it), time
    /// and model (from `response.created`).
    head: ChunkHead,
    /// The function calls, in the order of their chat index.
    calls: Vec<SeenCall>,
    /// `[DONE]` or an error was sent: nothing more follows.
    ended: bool,
}

impl Default for ResponsesToChat {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponsesToChat {
    /// A translator for one stream.
    #[must_use]
    pub fn new() -> Self {
        Self {
            head: ChunkHead::new(),
            calls: Vec::new(),
            ended: false,
        }
    }

    /// One upstream event (`event:` name and its parsed `data`; with no name, the data's
    /// `type` names it). Returns the chat payloads it becomes (0..n).
    pub fn event(&mut self, name: &str, data: &Value) -> Vec<String> {
        let name = if name.is_empty() { kind(data) } else { name };
        if self.ended {
            return Vec::new();
        }
        match name {
            "response.created" => {
                let response = data.get("response").unwrap_or(&Value::Null);
                if let Some(created) = response.get("created_at").and_then(Value::as_u64) {
                    self.head.created = created;
                }
                vec![self.head.open(response, chat_id)]
            }
            "response.output_text.delta" => self.head.text("content", str_at(data, "delta")),
            "response.refusal.delta" => self.head.text("refusal", str_at(data, "delta")),
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.head.text("reasoning_content", str_at(data, "delta"))
            }
            "response.output_item.added" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                if kind(item) != "function_call" {
                    return Vec::new();
                }
                let index = self.calls.len();
                let arguments = str_at(item, "arguments");
                self.calls.push(SeenCall {
                    item_id: item.get("id").and_then(Value::as_str).map(str::to_owned),
                    output_index: data.get("output_index").and_then(Value::as_u64),
                    streamed: !arguments.is_empty(),
                });
                let delta = json!({"tool_calls": [{
                    "index": index,
                    "id": str_at(item, "call_id"),
                    "type": "function",
                    "function": {"name": str_at(item, "name"), "arguments": arguments},
                }]});
                vec![self.head.chunk(delta, Value::Null)]
            }
            "response.function_call_arguments.delta" => {
                self.arguments(data, str_at(data, "delta"), false)
            }
            // Arguments sent whole at the end, by a server that streamed none.
            "response.function_call_arguments.done" => {
                self.arguments(data, str_at(data, "arguments"), true)
            }
            "response.output_item.done" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                if kind(item) != "function_call" {
                    return Vec::new();
                }
                let mut at = data.clone();
                if let Some(id) = item.get("id").filter(|i| i.is_string())
                    && let Some(o) = at.as_object_mut()
                {
                    o.insert("item_id".into(), id.clone());
                }
                self.arguments(&at, str_at(item, "arguments"), true)
            }
            "response.completed" | "response.incomplete" => {
                self.ended = true;
                self.finished(data.get("response").unwrap_or(&Value::Null))
            }
            "response.failed" => {
                self.ended = true;
                vec![failed(data.get("response").unwrap_or(&Value::Null))]
            }
            "error" => {
                self.ended = true;
                vec![error_payload(data)]
            }
            // response.in_progress, content_part.*, *.done of text, and events not known yet.
            _ => Vec::new(),
        }
    }

    /// The chunks that end the stream: the finish, the usage (when the response has it) and
    /// `[DONE]`.
    fn finished(&self, response: &Value) -> Vec<String> {
        let called = !self.calls.is_empty()
            || response
                .get("output")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|i| kind(i) == "function_call"));
        let finish = if called {
            "tool_calls"
        } else {
            finish_of(response)
        };
        let mut out = vec![self.head.chunk(json!({}), Value::from(finish))];
        if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
            out.push(self.head.usage(chat_usage(usage)));
        }
        out.push("[DONE]".to_owned());
        out
    }

    /// Argument text for the call an event names (by `item_id`, else `output_index`); with
    /// `whole`, only if none was streamed before (the `.done` events repeat them).
    fn arguments(&mut self, data: &Value, arguments: &str, whole: bool) -> Vec<String> {
        let item_id = data.get("item_id").and_then(Value::as_str);
        let output_index = data.get("output_index").and_then(Value::as_u64);
        let found = self
            .calls
            .iter()
            .position(|c| item_id.is_some() && c.item_id.as_deref() == item_id)
            .or_else(|| {
                self.calls
                    .iter()
                    .position(|c| output_index.is_some() && c.output_index == output_index)
            });
        let Some(index) = found else {
            return Vec::new();
        };
        let Some(call) = self.calls.get_mut(index) else {
            return Vec::new();
        };
        if arguments.is_empty() || (whole && call.streamed) {
            return Vec::new();
        }
        call.streamed = true;
        let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]});
        vec![self.head.chunk(delta, Value::Null)]
    }
}

/// The chat error payload for a failed response: its `error` (`code` and `message` kept, a
/// `type` added when it has none), or a generic server error.
fn failed(response: &Value) -> String {
    let error = match response.get("error") {
        Some(Value::Object(e)) => {
            let mut e = e.clone();
            if !e.get("type").is_some_and(Value::is_string) {
                let kind = e
                    .get("code")
                    .filter(|c| c.is_string())
                    .cloned()
                    .unwrap_or_else(|| Value::from("server_error"));
                e.insert("type".into(), kind);
            }
            if !e.get("message").is_some_and(Value::is_string) {
                e.insert("message".into(), Value::from("the response failed"));
            }
            Value::Object(e)
        }
        _ => json!({"message": "the response failed", "type": "server_error"}),
    };
    json!({ "error": error }).to_string()
}

/// The chat error payload for a Responses `error` event (its fields, or those of an `error`
/// object inside it): the type is the error's, else its code, else `server_error`.
fn error_payload(data: &Value) -> String {
    let error = match data.get("error") {
        Some(e @ Value::Object(_)) => e,
        _ => data,
    };
    let field = |k: &str| error.get(k).filter(|v| !v.is_null()).cloned();
    let code = field("code").unwrap_or(Value::Null);
    let kind = field("type")
        .filter(|t| t.is_string() && *t != "error")
        .or_else(|| code.is_string().then(|| code.clone()))
        .unwrap_or_else(|| Value::from("server_error"));
    let message = match error.get("message") {
        Some(Value::String(m)) => Value::from(m.as_str()),
        _ => Value::from(error.to_string()),
    };
    json!({"error": {
        "message": message,
        "type": kind,
        "code": code,
        "param": field("param").unwrap_or(Value::Null),
    }})
    .to_string()
}

// ---------------------------------------------------------------- streams: chat -> responses

/// What a content part of a streamed message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    /// An `output_text` part.
    Text,
    /// A `refusal` part.
    Refusal,
}

/// The output item open in a Responses stream being written.
#[derive(Debug)]
enum Item {
    /// A message: its id, its closed parts, and the part being written.
    Message {
        /// `msg_...`.
        id: String,
        /// The parts already closed.
        parts: Vec<Value>,
        /// The part being written and its text so far.
        part: Option<(PartKind, String)>,
    },
    /// A function call, for the chat tool call of index `chat`.
    Call {
        /// `fc_` and the call id.
        id: String,
        call_id: String,
        name: String,
        /// The arguments so far.
        arguments: String,
        /// The chat tool call's index.
        chat: u64,
    },
}

/// OpenAI chat `data:` payloads in (JSON strings, or `[DONE]`), OpenAI Responses SSE events
/// out as (event name, data JSON string).
///
/// The first payload opens the response (`response.created`, `response.in_progress`); text and
/// refusals stream into a `message` item, each tool call into a `function_call` item, an item
/// closing with its `.done` events when another opens. The terminal `response.completed` (or
/// `response.incomplete`) waits, after the `finish_reason`, for the usage chunk (OpenAI sends
/// it last), `[DONE]` or [`end`](Self::end), and carries every output item and the usage. A
/// stream that ends before it finished gets no terminal event (see the
/// [module docs](super)). Every event's data has its `type` and a `sequence_number` from 0.
///
/// ```
/// use llm_failover::protocol::translate::ChatToResponses;
///
/// let mut t = ChatToResponses::new("gpt-4.1");
/// let mut names = Vec::new();
/// for data in [
///     r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#,
///     r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
///     r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
///     "[DONE]",
/// ] {
///     names.extend(t.data(data).into_iter().map(|(name, _)| name));
/// }
/// assert_eq!(names.first(), Some(&"response.created"));
/// assert!(names.contains(&"response.output_text.delta"));
/// assert_eq!(names.last(), Some(&"response.completed"));
/// ```
#[derive(Debug)]
pub struct ChatToResponses {
    /// The model named in the response.
    model: Value,
    /// The next event's `sequence_number`.
    sequence: u64,
    /// Where the reading of the chat stream stands (`response.created` sent, the finish reason
    /// come, the usage, the terminal event or an `error` sent).
    progress: Progress,
    /// The id after `chatcmpl-`: the response is `resp_X`, its messages `msg_X`.
    base: String,
    created: u64,
    /// The closed output items.
    output: Vec<Value>,
    open: Option<Item>,
    /// The message items opened so far (the first is `msg_X`, the next `msg_X_1`, ...).
    messages: usize,
}

impl ChatToResponses {
    /// A translator for one stream; `model` is the model name to put in the response.
    #[must_use]
    pub fn new(model: &str) -> Self {
        Self {
            model: Value::from(model),
            sequence: 0,
            progress: Progress::default(),
            base: String::new(),
            created: 0,
            output: Vec::new(),
            open: None,
            messages: 0,
        }
    }

    /// One upstream `data:` payload. Returns the Responses events it becomes (0..n).
    pub fn data(&mut self, data: &str) -> Vec<Event> {
        chat::read(self, data)
    }

    /// The upstream stream ended (no more input). Emits the held terminal event if the answer
    /// finished, else nothing: a partial answer is not made to look whole.
    pub fn end(&mut self) -> Vec<Event> {
        chat::end(self)
    }

    /// Sends one event: `data` with its `type` and `sequence_number`.
    fn emit(&mut self, out: &mut Vec<Event>, name: &'static str, mut data: Value) {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), Value::from(name));
            o.insert("sequence_number".into(), Value::from(self.sequence));
        }
        self.sequence += 1;
        out.push((name, data.to_string()));
    }

    /// The response as it stands: its output, status from `finish` (in progress when `None`).
    fn snapshot(&self, finish: Option<&str>, output: Vec<Value>, usage: Value) -> Value {
        response_object(
            &format!("resp_{}", self.base),
            self.created,
            &self.model,
            finish,
            output,
            usage,
        )
    }

    /// The output index of the open item (it follows the closed ones).
    fn index(&self) -> usize {
        self.output.len()
    }

    /// Streams text or a refusal into the open message, opening the message and the part if
    /// need be.
    fn text(&mut self, kind: PartKind, text: &str, out: &mut Vec<Event>) {
        if text.is_empty() {
            return;
        }
        if !matches!(self.open, Some(Item::Message { .. })) {
            self.close(out);
            let id = match self.messages {
                0 => format!("msg_{}", self.base),
                n => format!("msg_{}_{n}", self.base),
            };
            self.messages += 1;
            let item = json!({
                "id": id, "type": "message", "status": "in_progress", "role": "assistant",
                "content": [],
            });
            let output_index = self.index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.open = Some(Item::Message {
                id,
                parts: Vec::new(),
                part: None,
            });
        }
        let output_index = self.index();
        let Some(Item::Message { id, parts, part }) = &mut self.open else {
            return;
        };
        let id = id.clone();
        let closed = part.take_if(|(k, _)| *k != kind);
        let content_index = parts.len() + usize::from(closed.is_some());
        let opened = part.is_none();
        part.get_or_insert_with(|| (kind, String::new()))
            .1
            .push_str(text);
        if let Some((k, t)) = closed {
            let done = self.close_part(&id, output_index, content_index - 1, k, t, out);
            if let Some(Item::Message { parts, .. }) = &mut self.open {
                parts.push(done);
            }
        }
        if opened {
            let part = match kind {
                PartKind::Text => json!({"type": "output_text", "text": "", "annotations": []}),
                PartKind::Refusal => json!({"type": "refusal", "refusal": ""}),
            };
            self.emit(
                out,
                "response.content_part.added",
                json!({
                    "item_id": id, "output_index": output_index,
                    "content_index": content_index, "part": part,
                }),
            );
        }
        match kind {
            PartKind::Text => self.emit(
                out,
                "response.output_text.delta",
                json!({
                    "item_id": id, "output_index": output_index,
                    "content_index": content_index, "delta": text, "logprobs": [],
                }),
            ),
            PartKind::Refusal => self.emit(
                out,
                "response.refusal.delta",
                json!({
                    "item_id": id, "output_index": output_index,
                    "content_index": content_index, "delta": text,
                }),
            ),
        }
    }

    /// Sends the `.done` events of a message's part; returns the part.
    fn close_part(
        &mut self,
        id: &str,
        output_index: usize,
        content_index: usize,
        kind: PartKind,
        text: String,
        out: &mut Vec<Event>,
    ) -> Value {
        let at =
            json!({"item_id": id, "output_index": output_index, "content_index": content_index});
        let mut done = at.clone();
        let mut part_done = at;
        let part = match kind {
            PartKind::Text => {
                done["text"] = Value::from(text.as_str());
                done["logprobs"] = json!([]);
                self.emit(out, "response.output_text.done", done);
                json!({"type": "output_text", "text": text, "annotations": []})
            }
            PartKind::Refusal => {
                done["refusal"] = Value::from(text.as_str());
                self.emit(out, "response.refusal.done", done);
                json!({"type": "refusal", "refusal": text})
            }
        };
        part_done["part"] = part.clone();
        self.emit(out, "response.content_part.done", part_done);
        part
    }

    /// One element of a delta's `tool_calls`: a new call opens a `function_call` item, the
    /// arguments stream as `response.function_call_arguments.delta`.
    fn tool_call(&mut self, call: &Value, out: &mut Vec<Event>) {
        let call = CallDelta::of(call);
        let continues = match &self.open {
            Some(Item::Call { chat, .. }) => call.continues(*chat),
            _ => false,
        };
        if !continues {
            self.close(out);
            let chat = self.progress.new_call(&call);
            let call_id = call
                .id
                .map_or_else(|| format!("call_{}", fresh_id()), str::to_owned);
            let name = call.name.to_owned();
            let item_id = format!("fc_{call_id}");
            let item = json!({
                "type": "function_call", "id": item_id, "call_id": call_id, "name": name,
                "arguments": "", "status": "in_progress",
            });
            let output_index = self.index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.open = Some(Item::Call {
                id: item_id,
                call_id,
                name,
                arguments: String::new(),
                chat,
            });
        }
        let output_index = self.index();
        let Some(args) = call.arguments else {
            return;
        };
        let Some(Item::Call { id, arguments, .. }) = &mut self.open else {
            return;
        };
        arguments.push_str(args);
        let event = json!({"item_id": id, "output_index": output_index, "delta": args});
        self.emit(out, "response.function_call_arguments.delta", event);
    }

    /// Closes the open item, if one is: its `.done` events, and keeps it in the output.
    fn close(&mut self, out: &mut Vec<Event>) {
        let output_index = self.index();
        let item = match self.open.take() {
            None => return,
            Some(Item::Message {
                id,
                mut parts,
                part,
            }) => {
                if let Some((kind, text)) = part {
                    let content_index = parts.len();
                    parts.push(self.close_part(&id, output_index, content_index, kind, text, out));
                }
                json!({
                    "id": id, "type": "message", "status": "completed", "role": "assistant",
                    "content": parts,
                })
            }
            Some(Item::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            }) => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({
                        "item_id": id, "output_index": output_index,
                        "arguments": arguments, "name": name,
                    }),
                );
                json!({
                    "type": "function_call", "id": id, "call_id": call_id, "name": name,
                    "arguments": arguments, "status": "completed",
                })
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }
}

impl ChunkWriter for ChatToResponses {
    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    /// `response.created` and `response.in_progress`.
    fn open_answer(&mut self, chunk: &Chunk, out: &mut Vec<Event>) {
        self.base = base_id(chunk.id.as_deref());
        self.created = chunk.created.unwrap_or_else(now);
        let response = self.snapshot(None, Vec::new(), Value::Null);
        self.emit(out, "response.created", json!({ "response": response }));
        self.emit(out, "response.in_progress", json!({ "response": response }));
    }

    fn add(&mut self, chunk: Chunk, out: &mut Vec<Event>) {
        if let Some(text) = &chunk.content {
            self.text(PartKind::Text, text, out);
        }
        if let Some(refusal) = &chunk.refusal {
            self.text(PartKind::Refusal, refusal, out);
        }
        for call in chunk.tool_calls.iter().filter(|c| c.is_object()) {
            self.tool_call(call, out);
        }
    }

    fn close_open(&mut self, out: &mut Vec<Event>) {
        self.close(out);
    }

    /// `response.completed`, or `response.incomplete` when it stopped short.
    fn write_end(&mut self, out: &mut Vec<Event>) {
        let finish = self
            .progress
            .finish
            .clone()
            .unwrap_or_else(|| "stop".to_owned());
        let usage = self
            .progress
            .usage
            .as_ref()
            .map_or(Value::Null, responses_usage);
        let output = std::mem::take(&mut self.output);
        let response = self.snapshot(Some(&finish), output, usage);
        let name = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, name, json!({ "response": response }));
    }

    fn write_error(&mut self, error: &Value, out: &mut Vec<Event>) {
        let field = |k: &str| error.get(k).filter(|v| !v.is_null()).cloned();
        let event = json!({
            "code": field("code").or_else(|| field("type")),
            "message": chat::error_message(error),
            "param": field("param"),
        });
        self.emit(out, "error", event);
    }
}
