//! Streams: Anthropic SSE events to OpenAI chat chunks, and chat chunks to Anthropic events.

use serde_json::{Map, Value, json};

use super::{
    chat_id, chat_usage, finish_reason, fresh_id, message_id, messages_usage, now, stop_reason,
};

/// Anthropic SSE events in, OpenAI chat `data:` payloads out (JSON strings, and `[DONE]`).
///
/// Feed it every upstream event in order with [`event`](Self::event). Tool calls are counted
/// apart from content blocks (the chat `index` of a tool call is its rank among the tool
/// calls), thinking text becomes `delta.reasoning_content`, and an `error` event becomes an
/// `{"error": ...}` payload, which the chat stream reader takes as a classified failure.
///
/// ```
/// use llm_failover::protocol::translate::MessagesToChat;
/// use serde_json::json;
///
/// let mut t = MessagesToChat::new();
/// let mut out = Vec::new();
/// for (name, data) in [
///     ("message_start", json!({"type": "message_start", "message": {"id": "msg_1",
///         "model": "claude", "usage": {"input_tokens": 5}}})),
///     ("content_block_start", json!({"type": "content_block_start", "index": 0,
///         "content_block": {"type": "text", "text": ""}})),
///     ("content_block_delta", json!({"type": "content_block_delta", "index": 0,
///         "delta": {"type": "text_delta", "text": "Hi"}})),
///     ("message_delta", json!({"type": "message_delta",
///         "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}})),
///     ("message_stop", json!({"type": "message_stop"})),
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
pub struct MessagesToChat {
    /// The chat id (`chatcmpl-` and the message id once `message_start` gave it).
    id: String,
    /// The answer's model, from `message_start`.
    model: Value,
    created: u64,
    /// The usage `message_start` reported (the input tokens).
    usage: Map<String, Value>,
    /// For each tool_use content block, (its block index, its tool call index).
    tools: Vec<(u64, usize)>,
}

impl Default for MessagesToChat {
    fn default() -> Self {
        Self::new()
    }
}

impl MessagesToChat {
    /// A translator for one stream.
    pub fn new() -> Self {
        Self {
            id: chat_id(None),
            model: Value::from(""),
            created: now(),
            usage: Map::new(),
            tools: Vec::new(),
        }
    }

    /// One upstream event (`event:` name and its parsed `data`; with no name, the data's
    /// `type` names it). Returns the chat payloads it becomes (0..n).
    pub fn event(&mut self, name: &str, data: &Value) -> Vec<String> {
        let name = if name.is_empty() {
            data.get("type").and_then(Value::as_str).unwrap_or_default()
        } else {
            name
        };
        match name {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.id = chat_id(Some(id));
                }
                if let Some(model) = message.get("model").filter(|m| m.is_string()) {
                    self.model = model.clone();
                }
                if let Some(usage) = message.get("usage").and_then(Value::as_object) {
                    self.usage = usage.clone();
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match str_at(block, "type") {
                    "text" => self.text("content", str_at(block, "text")),
                    "thinking" => self.text("reasoning_content", str_at(block, "thinking")),
                    "tool_use" => {
                        let call = self.tools.len();
                        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.tools.push((index, call));
                        let delta = json!({"tool_calls": [{
                            "index": call,
                            "id": str_at(block, "id"),
                            "type": "function",
                            "function": {"name": str_at(block, "name"), "arguments": ""},
                        }]});
                        vec![self.chunk(delta, Value::Null)]
                    }
                    _ => Vec::new(),
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match str_at(delta, "type") {
                    "text_delta" => self.text("content", str_at(delta, "text")),
                    "thinking_delta" => self.text("reasoning_content", str_at(delta, "thinking")),
                    "input_json_delta" => {
                        let partial = str_at(delta, "partial_json");
                        let index = data.get("index").and_then(Value::as_u64);
                        let call = self
                            .tools
                            .iter()
                            .find(|(block, _)| Some(*block) == index)
                            .map(|(_, call)| *call);
                        match call {
                            Some(call) if !partial.is_empty() => {
                                let delta = json!({"tool_calls": [{
                                    "index": call,
                                    "function": {"arguments": partial},
                                }]});
                                vec![self.chunk(delta, Value::Null)]
                            }
                            _ => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                let mut out = Vec::new();
                let stop = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let Some(stop) = stop {
                    out.push(self.chunk(json!({}), Value::from(finish_reason(stop))));
                }
                let usage = data.get("usage").and_then(Value::as_object);
                if let Some(usage) = usage {
                    // Cumulative: the later counts replace message_start's.
                    for (k, v) in usage {
                        if !v.is_null() {
                            self.usage.insert(k.clone(), v.clone());
                        }
                    }
                }
                if stop.is_some() || usage.is_some() {
                    out.push(
                        json!({
                            "id": self.id,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": chat_usage(&Value::Object(self.usage.clone())),
                        })
                        .to_string(),
                    );
                }
                out
            }
            "message_stop" => vec!["[DONE]".to_owned()],
            "error" => {
                let error = data.get("error").unwrap_or(data);
                let kind = error
                    .get("type")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty() && *t != "error")
                    .unwrap_or("api_error");
                let message = match error.get("message") {
                    Some(Value::String(m)) => m.clone(),
                    _ => error.to_string(),
                };
                vec![json!({"error": {"type": kind, "message": message}}).to_string()]
            }
            // ping, content_block_stop, and events not known yet.
            _ => Vec::new(),
        }
    }

    /// A chunk with text in the delta field `field`, or none when the text is empty.
    fn text(&self, field: &str, text: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut delta = Map::new();
        delta.insert(field.into(), Value::from(text));
        vec![self.chunk(Value::Object(delta), Value::Null)]
    }

    /// One chat chunk with this delta and finish reason.
    fn chunk(&self, delta: Value, finish: Value) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    }
}

/// The string at `v[k]`, or "".
fn str_at<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The content block open in an Anthropic stream being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// A text block, at this block index.
    Text(u64),
    /// A tool_use block at this block index, for the chat tool call of index `call`.
    Tool {
        /// The block index.
        index: u64,
        /// The chat tool call's index.
        call: u64,
    },
}

impl Open {
    /// The block index.
    fn index(self) -> u64 {
        match self {
            Open::Text(index) | Open::Tool { index, .. } => index,
        }
    }
}

/// OpenAI chat `data:` payloads in (JSON strings, or `[DONE]`), Anthropic SSE events out as
/// (event name, data JSON string).
///
/// The `message_delta` that ends the message waits, after the `finish_reason`, for the usage
/// chunk (OpenAI sends it last), `[DONE]` or [`end`](Self::end). A stream that ends before
/// it finished gets no `message_stop` (see the [module docs](super)).
///
/// ```
/// use llm_failover::protocol::translate::ChatToMessages;
///
/// let mut t = ChatToMessages::new("claude");
/// let mut names = Vec::new();
/// for data in [
///     r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#,
///     r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
///     r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
///     "[DONE]",
/// ] {
///     names.extend(t.data(data).into_iter().map(|(name, _)| name));
/// }
/// assert_eq!(names.first(), Some(&"message_start"));
/// assert_eq!(names.last(), Some(&"message_stop"));
/// assert!(names.contains(&"content_block_delta"));
/// ```
#[derive(Debug)]
pub struct ChatToMessages {
    /// The model named in `message_start`.
    model: String,
    /// `message_start` was sent.
    started: bool,
    open: Option<Open>,
    /// The index of the next content block.
    next_block: u64,
    /// The index the next chat tool call without one gets.
    next_call: u64,
    /// The finish reason arrived, as a stop reason: `message_delta` is owed.
    stop: Option<&'static str>,
    /// A refusal was streamed.
    refused: bool,
    /// The last usage the upstream reported.
    usage: Option<Value>,
    /// `message_stop` or an `error` was sent: nothing more follows.
    ended: bool,
}

/// An Anthropic event out of [`ChatToMessages`]: its name and its data as JSON.
pub type Event = (&'static str, String);

impl ChatToMessages {
    /// A translator for one stream; `model` is the model name to put in `message_start`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            open: None,
            next_block: 0,
            next_call: 0,
            stop: None,
            refused: false,
            usage: None,
            ended: false,
        }
    }

    /// One upstream `data:` payload. Returns the Anthropic events it becomes (0..n).
    pub fn data(&mut self, data: &str) -> Vec<Event> {
        let mut out = Vec::new();
        let data = data.trim();
        if self.ended || data.is_empty() {
            return out;
        }
        if data == "[DONE]" {
            // The upstream says the answer is whole, even without a finish reason.
            if self.started {
                self.finish(&mut out);
            }
            return out;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            self.ended = true;
            let message = match error.get("message") {
                Some(Value::String(m)) => m.clone(),
                _ => match error {
                    Value::String(m) => m.clone(),
                    other => other.to_string(),
                },
            };
            let event = json!({
                "type": "error",
                "error": {"type": anthropic_error_type(error), "message": message},
            });
            out.push(("error", event.to_string()));
            return out;
        }
        let usage = chunk.get("usage").filter(|u| u.is_object());
        if !self.started {
            self.started = true;
            let input = usage.map_or(0, |u| {
                messages_usage(u)["input_tokens"].as_u64().unwrap_or(0)
            });
            let start = json!({
                "type": "message_start",
                "message": {
                    "id": message_id(chunk.get("id").and_then(Value::as_str)),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": 0},
                },
            });
            out.push(("message_start", start.to_string()));
        }
        if let Some(u) = usage {
            self.usage = Some(u.clone());
        }
        if self.stop.is_some() {
            // After the finish only usage is awaited; it ends the message.
            if usage.is_some() {
                self.finish(&mut out);
            }
            return out;
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            })
            .unwrap_or(&Value::Null);
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            self.text(text, &mut out);
        }
        if let Some(refusal) = delta
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            self.refused = true;
            self.text(refusal, &mut out);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                self.tool_call(call, &mut out);
            }
        }
        if let Some(finish) = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())
        {
            self.close(&mut out);
            self.stop = Some(match stop_reason(finish) {
                "end_turn" if self.refused => "refusal",
                s => s,
            });
        }
        out
    }

    /// The upstream stream ended (no more input). Emits the held `message_delta` and
    /// `message_stop` if the answer finished, else nothing: a partial answer is not ended.
    pub fn end(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if self.stop.is_some() {
            self.finish(&mut out);
        }
        out
    }

    /// Streams text into the open text block, opening one if need be.
    fn text(&mut self, text: &str, out: &mut Vec<Event>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text(index)) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(Open::Text(index));
                index
            }
        };
        let delta = json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        });
        out.push(("content_block_delta", delta.to_string()));
    }

    /// One element of a delta's `tool_calls`: a new call opens a tool_use block, the
    /// arguments stream as `input_json_delta`.
    fn tool_call(&mut self, call: &Value, out: &mut Vec<Event>) {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty());
        let function = call.get("function").unwrap_or(&Value::Null);
        let wanted = call.get("index").and_then(Value::as_u64);
        let index = match self.open {
            Some(Open::Tool { index, call }) if wanted.map_or(id.is_none(), |w| w == call) => index,
            _ => {
                let number = wanted.unwrap_or(self.next_call);
                self.next_call = self.next_call.max(number.saturating_add(1));
                let block = json!({
                    "type": "tool_use",
                    "id": id.map_or_else(|| format!("toolu_{}", fresh_id()), str::to_owned),
                    "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "input": {},
                });
                let index = self.open_block(block, out);
                self.open = Some(Open::Tool {
                    index,
                    call: number,
                });
                index
            }
        };
        if let Some(args) = function
            .get("arguments")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let delta = json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": args},
            });
            out.push(("content_block_delta", delta.to_string()));
        }
    }

    /// Closes the open block and opens `block` at the next index; returns the index.
    fn open_block(&mut self, block: Value, out: &mut Vec<Event>) -> u64 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        let start = json!({"type": "content_block_start", "index": index, "content_block": block});
        out.push(("content_block_start", start.to_string()));
        index
    }

    /// Closes the open block, if one is.
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some(open) = self.open.take() {
            let stop = json!({"type": "content_block_stop", "index": open.index()});
            out.push(("content_block_stop", stop.to_string()));
        }
    }

    /// Ends the message: the open block, `message_delta` and `message_stop`.
    fn finish(&mut self, out: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.close(out);
        let usage = self
            .usage
            .as_ref()
            .map_or_else(|| json!({"output_tokens": 0}), messages_usage);
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": usage,
        });
        out.push(("message_delta", delta.to_string()));
        out.push(("message_stop", json!({"type": "message_stop"}).to_string()));
    }
}

/// The Anthropic error type that says what an OpenAI error object says (its `type` and
/// `code`), `api_error` when nothing more is known.
fn anthropic_error_type(error: &Value) -> &'static str {
    let words: Vec<String> = ["type", "code"]
        .iter()
        .filter_map(|k| error.get(*k))
        .map(|v| match v {
            Value::String(s) => s.to_ascii_lowercase(),
            other => other.to_string(),
        })
        .collect();
    let any = |needles: &[&str]| words.iter().any(|w| needles.iter().any(|n| w.contains(n)));
    if any(&["overload", "529"]) {
        "overloaded_error"
    } else if any(&["insufficient_quota", "billing", "402"]) {
        "billing_error"
    } else if any(&["rate_limit", "429"]) {
        "rate_limit_error"
    } else if any(&["authentication", "invalid_api_key", "401"]) {
        "authentication_error"
    } else if any(&["permission", "403"]) {
        "permission_error"
    } else if any(&["not_found", "404"]) {
        "not_found_error"
    } else if any(&["too_large", "413"]) {
        "request_too_large"
    } else if any(&["timeout", "504"]) {
        "timeout_error"
    } else if any(&["invalid_request", "context_length", "400"]) {
        "invalid_request_error"
    } else {
        "api_error"
    }
}
