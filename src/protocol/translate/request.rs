//! Requests: OpenAI chat bodies to Anthropic Messages bodies and back.

use serde_json::{Map, Value, json};

use super::{ANTHROPIC, Untranslatable, array_at, chat, kind, str_at};

/// The `max_tokens` of an Anthropic request translated from a chat request that sets no
/// limit (Anthropic requires one; OpenAI's default is the model's maximum).
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// An OpenAI chat request body as an Anthropic Messages request body.
///
/// `model` is kept as the client sent it (the caller sets the target's).
///
/// # Errors
///
/// [`Untranslatable`] when the request asks for what Anthropic cannot give (a second choice,
/// a JSON schema, log probabilities, audio, a mid-conversation system message, ...; see the
/// [module docs](super)).
///
/// ```
/// use llm_failover::protocol::translate::chat_request_to_messages;
///
/// let chat = serde_json::json!({
///     "model": "claude",
///     "max_tokens": 100,
///     "messages": [
///         {"role": "system", "content": "Be brief."},
///         {"role": "user", "content": "hi"},
///     ],
/// });
/// let messages = chat_request_to_messages(&chat)?;
/// assert_eq!(messages["system"], "Be brief.");
/// assert_eq!(messages["messages"][0]["role"], "user");
/// assert_eq!(messages["max_tokens"], 100);
/// # Ok::<(), llm_failover::protocol::translate::Untranslatable>(())
/// ```
pub fn chat_request_to_messages(req: &Value) -> Result<Value, Untranslatable> {
    refuse_chat_only(req)?;
    let mut out = Map::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }
    let (system, messages) = chat_messages(req.get("messages"))?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), Value::from(max));
    if let Some(t) = req.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0 to 2, Anthropic's 0 to 1.
        out.insert("temperature".into(), Value::from(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.get("top_p").filter(|p| p.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    let stop: Vec<Value> = match req.get("stop") {
        Some(Value::String(s)) => vec![Value::from(s.as_str())],
        Some(Value::Array(a)) => a.iter().filter(|s| s.is_string()).cloned().collect(),
        _ => Vec::new(),
    };
    if !stop.is_empty() {
        out.insert("stop_sequences".into(), Value::Array(stop));
    }
    if let Some(stream) = req.get("stream").filter(|s| s.is_boolean()) {
        out.insert("stream".into(), stream.clone());
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    let tools = chat_tools(req.get("tools"))?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let choice = chat_tool_choice(req.get("tool_choice"))?;
        let serial = req.get("parallel_tool_calls") == Some(&Value::Bool(false));
        match choice {
            Some(mut c) => {
                if serial && c["type"] != "none" {
                    c["disable_parallel_tool_use"] = Value::Bool(true);
                }
                out.insert("tool_choice".into(), c);
            }
            None if serial => {
                out.insert(
                    "tool_choice".into(),
                    json!({"type": "auto", "disable_parallel_tool_use": true}),
                );
            }
            None => {}
        }
    }
    Ok(Value::Object(out))
}

/// The chat request's features that Anthropic has no equivalent for: those of every target
/// but chat, and a JSON answer.
fn refuse_chat_only(req: &Value) -> Result<(), Untranslatable> {
    chat::refuse_chat_only(req, ANTHROPIC)?;
    if let Some(format) = req.get("response_format").filter(|f| !f.is_null())
        && format.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(Untranslatable::anthropic(
            "response_format",
            "it cannot hold an answer to a JSON object or schema",
        ));
    }
    Ok(())
}

/// One Anthropic turn being built: its role and content blocks.
struct Turn {
    role: &'static str,
    /// The content as the client gave it when it is one string, kept a string.
    content: Value,
}

impl Turn {
    /// Appends `blocks` to the turn's content.
    fn extend(&mut self, blocks: Vec<Value>) {
        let mut content = match std::mem::take(&mut self.content) {
            Value::String(s) if s.is_empty() => Vec::new(),
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        content.extend(blocks);
        self.content = Value::Array(content);
    }
}

/// Pushes a turn, merging it into the last one when they have the same role (Anthropic
/// alternates roles; tool results and the user's text after them are one user turn).
fn push(turns: &mut Vec<Turn>, turn: Turn) {
    match turns.last_mut() {
        Some(last) if last.role == turn.role => {
            let blocks = match turn.content {
                Value::String(s) if s.is_empty() => Vec::new(),
                Value::String(s) => vec![json!({"type": "text", "text": s})],
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            last.extend(blocks);
        }
        _ => turns.push(turn),
    }
}

/// Chat messages as Anthropic's `system` and `messages`.
fn chat_messages(messages: Option<&Value>) -> Result<(Option<Value>, Vec<Value>), Untranslatable> {
    let mut system: Vec<Value> = Vec::new();
    let mut system_strings = 0;
    let mut turns: Vec<Turn> = Vec::new();
    let empty = Vec::new();
    let messages = messages.and_then(Value::as_array).unwrap_or(&empty);
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                if !turns.is_empty() {
                    return Err(Untranslatable::anthropic(
                        "system message",
                        "its one system prompt comes before the conversation, not inside it",
                    ));
                }
                if content.is_string() {
                    system_strings += 1;
                }
                for text in text_parts(content, "system message")? {
                    system.push(json!({"type": "text", "text": text}));
                }
            }
            "user" => {
                let content = match content {
                    Value::String(s) => Value::from(s.as_str()),
                    Value::Array(parts) => {
                        Value::Array(parts.iter().map(user_part).collect::<Result<Vec<_>, _>>()?)
                    }
                    _ => Value::from(""),
                };
                push(
                    &mut turns,
                    Turn {
                        role: "user",
                        content,
                    },
                );
            }
            "assistant" => {
                if m.get("function_call").is_some_and(|f| !f.is_null()) {
                    return Err(Untranslatable::anthropic(
                        "function_call",
                        "the legacy function calling answers in a shape tools do not",
                    ));
                }
                if let Some(turn) = assistant_turn(m, content)? {
                    push(&mut turns, turn);
                }
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let result = match content {
                    Value::String(s) => Value::from(s.as_str()),
                    other => Value::Array(
                        text_parts(other, "tool message")?
                            .into_iter()
                            .map(|t| json!({"type": "text", "text": t}))
                            .collect(),
                    ),
                };
                push(
                    &mut turns,
                    Turn {
                        role: "user",
                        content: json!([{"type": "tool_result", "tool_use_id": id, "content": result}]),
                    },
                );
            }
            "function" => {
                return Err(Untranslatable::anthropic(
                    "function message",
                    "the legacy function calling answers in a shape tools do not",
                ));
            }
            _ => {
                return Err(Untranslatable::anthropic(
                    "message role",
                    format!("it has no {role:?} role"),
                ));
            }
        }
    }
    let system = match system.as_slice() {
        [] => None,
        [one] if system_strings == 1 => Some(one["text"].clone()),
        _ => Some(Value::Array(system)),
    };
    let messages = turns
        .into_iter()
        .map(|t| json!({"role": t.role, "content": t.content}))
        .collect();
    Ok((system, messages))
}

/// The texts of a content that may only hold text: a string, or text parts.
fn text_parts(content: &Value, feature: &'static str) -> Result<Vec<String>, Untranslatable> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("text").and_then(Value::as_str) != Some(""))
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.clone()),
                    _ => Err(Untranslatable::anthropic(
                        feature,
                        "it may hold only text here",
                    )),
                },
            )
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// One part of a user message's content as an Anthropic block.
fn user_part(part: &Value) -> Result<Value, Untranslatable> {
    match part.get("type").and_then(Value::as_str).unwrap_or_default() {
        "text" => Ok(
            json!({"type": "text", "text": part.get("text").and_then(Value::as_str).unwrap_or("")}),
        ),
        "image_url" => {
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .unwrap_or("");
            image_block(url)
        }
        "input_audio" => Err(Untranslatable::anthropic(
            "input_audio",
            "it takes no audio input",
        )),
        "file" => Err(Untranslatable::anthropic(
            "file",
            "file parts are not carried across",
        )),
        other => Err(Untranslatable::anthropic(
            "content part",
            format!("it has no {other:?} part"),
        )),
    }
}

/// An image URL (a `data:` URL or an `http(s)` one) as an Anthropic image block.
fn image_block(url: &str) -> Result<Value, Untranslatable> {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((header, data)) = rest.split_once(',')
        && let Some(media_type) = header.strip_suffix(";base64")
    {
        return Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(Untranslatable::anthropic(
        "image_url",
        "it takes images as base64 data or http(s) URLs only",
    ))
}

/// An assistant message as an Anthropic turn; `None` when it has nothing to say (Anthropic
/// rejects empty turns).
fn assistant_turn(m: &Value, content: &Value) -> Result<Option<Turn>, Untranslatable> {
    let calls = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    let refusal = m
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    if let (Value::String(s), None, None) = (content, calls, refusal) {
        return Ok((!s.is_empty()).then(|| Turn {
            role: "assistant",
            content: Value::from(s.as_str()),
        }));
    }
    let mut blocks = Vec::new();
    let mut text = |t: &str| {
        if !t.is_empty() {
            blocks.push(json!({"type": "text", "text": t}));
        }
    };
    match content {
        Value::String(s) => text(s),
        Value::Array(parts) => {
            for p in parts {
                let t = p
                    .get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match p.get("type").and_then(Value::as_str) {
                    Some("text" | "refusal") => text(t),
                    _ => {
                        return Err(Untranslatable::anthropic(
                            "assistant content",
                            "an assistant message may hold only text and tool calls",
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(r) = refusal {
        text(r);
    }
    for call in calls.into_iter().flatten() {
        blocks.push(tool_use_block(call)?);
    }
    if blocks.is_empty() {
        return Ok(None);
    }
    Ok(Some(Turn {
        role: "assistant",
        content: Value::Array(blocks),
    }))
}

/// One chat tool call as an Anthropic `tool_use` block.
fn tool_use_block(call: &Value) -> Result<Value, Untranslatable> {
    let Some(id) = call.get("id").and_then(Value::as_str) else {
        return Err(Untranslatable::anthropic(
            "tool_calls",
            "a tool call needs an id",
        ));
    };
    let function = call.get("function").unwrap_or(&Value::Null);
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    let input = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(Untranslatable::anthropic(
                    "tool_calls.function.arguments",
                    format!(
                        "the arguments of tool call {id} are not a JSON object, as a tool_use input must be"
                    ),
                ));
            }
        },
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(Untranslatable::anthropic(
                "tool_calls.function.arguments",
                format!(
                    "the arguments of tool call {id} are not a JSON object, as a tool_use input must be"
                ),
            ));
        }
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// Chat `tools` as Anthropic tools.
fn chat_tools(tools: Option<&Value>) -> Result<Vec<Value>, Untranslatable> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .map(|t| {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(Untranslatable::anthropic(
                    "tools",
                    "it takes function tools only",
                ));
            }
            let f = t.get("function").unwrap_or(&Value::Null);
            let mut tool = Map::new();
            tool.insert(
                "name".into(),
                f.get("name").cloned().unwrap_or_else(|| Value::from("")),
            );
            if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                tool.insert("description".into(), d.clone());
            }
            let schema = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            tool.insert("input_schema".into(), schema);
            Ok(Value::Object(tool))
        })
        .collect()
}

/// A chat `tool_choice` as Anthropic's; `None` when the request has none.
fn chat_tool_choice(choice: Option<&Value>) -> Result<Option<Value>, Untranslatable> {
    let unknown = || {
        Err(Untranslatable::anthropic(
            "tool_choice",
            "it chooses tools as auto, any, none or one named tool only",
        ))
    };
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(json!({"type": "auto"}))),
            "required" => Ok(Some(json!({"type": "any"}))),
            "none" => Ok(Some(json!({"type": "none"}))),
            _ => unknown(),
        },
        Some(c) => match (
            c.get("type").and_then(Value::as_str),
            c.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str),
        ) {
            (Some("function"), Some(name)) => Ok(Some(json!({"type": "tool", "name": name}))),
            _ => unknown(),
        },
    }
}

/// An Anthropic Messages request body as an OpenAI chat request body.
///
/// `model` is kept as the client sent it (the caller sets the target's). A streaming request
/// asks for usage (`stream_options.include_usage`), which Anthropic always reports.
///
/// # Errors
///
/// [`Untranslatable`] when the request asks for what a chat target cannot give (extended
/// thinking, server tools, documents, MCP servers, ...; see the [module docs](super)).
///
/// ```
/// use llm_failover::protocol::translate::messages_request_to_chat;
///
/// let messages = serde_json::json!({
///     "max_tokens": 100,
///     "system": "Be brief.",
///     "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
///     "stop_sequences": ["\n\n"],
/// });
/// let chat = messages_request_to_chat(&messages)?;
/// assert_eq!(chat["messages"][0]["role"], "system");
/// assert_eq!(chat["stop"][0], "\n\n");
/// # Ok::<(), llm_failover::protocol::translate::Untranslatable>(())
/// ```
pub fn messages_request_to_chat(req: &Value) -> Result<Value, Untranslatable> {
    if let Some(thinking) = req.get("thinking").filter(|t| !t.is_null())
        && thinking.get("type").and_then(Value::as_str) != Some("disabled")
    {
        return Err(Untranslatable::chat(
            "thinking",
            "its answers hold no thinking blocks",
        ));
    }
    if req
        .get("mcp_servers")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(Untranslatable::chat(
            "mcp_servers",
            "it connects to no MCP servers",
        ));
    }
    if req.get("container").is_some_and(|c| !c.is_null()) {
        return Err(Untranslatable::chat(
            "container",
            "it runs no code containers",
        ));
    }
    let mut out = Map::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut messages = anthropic_system(req.get("system"))?;
    for m in array_at(req, "messages") {
        anthropic_message(m, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max) = req.get("max_tokens").filter(|m| m.is_u64()) {
        out.insert("max_tokens".into(), max.clone());
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = req.get(k).filter(|v| v.is_number()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(stop) = req.get("stop_sequences").and_then(Value::as_array) {
        let stop: Vec<Value> = stop.iter().filter(|s| s.is_string()).cloned().collect();
        if !stop.is_empty() {
            out.insert("stop".into(), Value::Array(stop));
        }
    }
    if let Some(stream) = req.get("stream").and_then(Value::as_bool) {
        out.insert("stream".into(), Value::Bool(stream));
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), Value::from(user));
    }
    let tools = anthropic_tools(req.get("tools"))?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = req.get("tool_choice").filter(|c| c.is_object()) {
            let name = choice.get("name").and_then(Value::as_str).unwrap_or("");
            let mapped = match choice.get("type").and_then(Value::as_str) {
                Some("auto") => Value::from("auto"),
                Some("any") => Value::from("required"),
                Some("none") => Value::from("none"),
                Some("tool") => json!({"type": "function", "function": {"name": name}}),
                _ => {
                    return Err(Untranslatable::chat(
                        "tool_choice",
                        "it chooses tools as auto, required, none or one named function only",
                    ));
                }
            };
            out.insert("tool_choice".into(), mapped);
            if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    Ok(Value::Object(out))
}

/// Anthropic's `system` as leading system messages: one per text block.
fn anthropic_system(system: Option<&Value>) -> Result<Vec<Value>, Untranslatable> {
    match system {
        Some(Value::String(s)) if !s.is_empty() => {
            Ok(vec![json!({"role": "system", "content": s})])
        }
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(
                |b| match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => {
                        Ok(json!({"role": "system", "content": t}))
                    }
                    _ => Err(Untranslatable::chat(
                        "system",
                        "its system prompt holds text only",
                    )),
                },
            )
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// One Anthropic message as chat messages (a user turn with tool results becomes the tool
/// messages, then a user message with the rest).
fn anthropic_message(m: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    let content = m.get("content").unwrap_or(&Value::Null);
    match (role, content) {
        ("user" | "assistant", Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            Ok(())
        }
        ("user", Value::Array(blocks)) => {
            let mut parts = Vec::new();
            for b in blocks {
                match kind(b) {
                    "tool_result" => out.push(tool_message(b)?),
                    "text" => parts.push(json!({"type": "text", "text": str_at(b, "text")})),
                    "image" => parts.push(image_part(b)?),
                    other => return Err(unsupported_block(other)),
                }
            }
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": parts}));
            }
            Ok(())
        }
        ("assistant", Value::Array(blocks)) => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for b in blocks {
                match kind(b) {
                    "text" => text.push_str(str_at(b, "text")),
                    "tool_use" => calls.push(json!({
                        "id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                        "type": "function",
                        "function": {
                            "name": b.get("name").and_then(Value::as_str).unwrap_or(""),
                            "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                        },
                    })),
                    // The other model's private reasoning: a chat target cannot take it, and
                    // the visible conversation is the same without it.
                    "thinking" | "redacted_thinking" => {}
                    other => return Err(unsupported_block(other)),
                }
            }
            out.push(chat::assistant_message(
                text,
                String::new(),
                String::new(),
                calls,
            ));
            Ok(())
        }
        ("user" | "assistant", _) => {
            out.push(json!({"role": role, "content": ""}));
            Ok(())
        }
        _ => Err(Untranslatable::chat(
            "message role",
            format!("a message's role is user or assistant, not {role:?}"),
        )),
    }
}

/// A block type a chat target has no equivalent for.
#[cold]
fn unsupported_block(kind: &str) -> Untranslatable {
    let feature = match kind {
        "document" => "document block",
        "search_result" => "search_result block",
        "server_tool_use"
        | "web_search_tool_result"
        | "web_fetch_tool_result"
        | "code_execution_tool_result"
        | "mcp_tool_use"
        | "mcp_tool_result" => "server tool block",
        "container_upload" => "container_upload block",
        _ => "content block",
    };
    Untranslatable::chat(feature, format!("it has no {kind:?} content"))
}

/// A `tool_result` block as a chat tool message (its text blocks joined).
fn tool_message(b: &Value) -> Result<Value, Untranslatable> {
    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
    let content = match b.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for c in blocks {
                match kind(c) {
                    "text" => text.push_str(str_at(c, "text")),
                    _ => {
                        return Err(Untranslatable::chat(
                            "tool_result content",
                            "its tool messages hold text only",
                        ));
                    }
                }
            }
            text
        }
        _ => String::new(),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// An Anthropic image block as a chat `image_url` part.
fn image_part(b: &Value) -> Result<Value, Untranslatable> {
    let source = b.get("source").unwrap_or(&Value::Null);
    let field = |k: &str| source.get(k).and_then(Value::as_str).unwrap_or_default();
    let url = match field("type") {
        "base64" => format!("data:{};base64,{}", field("media_type"), field("data")),
        "url" => field("url").to_owned(),
        _ => {
            return Err(Untranslatable::chat(
                "image source",
                "it takes images as base64 data or URLs, not uploaded files",
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Anthropic tools as chat function tools; server tools are refused.
fn anthropic_tools(tools: Option<&Value>) -> Result<Vec<Value>, Untranslatable> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .map(|t| {
            match t.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(_) => {
                    return Err(Untranslatable::chat(
                        "server tool",
                        format!(
                            "it runs no server tools ({})",
                            t.get("name").and_then(Value::as_str).unwrap_or("unnamed")
                        ),
                    ));
                }
            }
            let mut f = Map::new();
            f.insert(
                "name".into(),
                t.get("name").cloned().unwrap_or_else(|| Value::from("")),
            );
            if let Some(d) = t.get("description").filter(|d| d.is_string()) {
                f.insert("description".into(), d.clone());
            }
            f.insert(
                "parameters".into(),
                t.get("input_schema")
                    .filter(|s| s.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            );
            Ok(json!({"type": "function", "function": f}))
        })
        .collect()
}
