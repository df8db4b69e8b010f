//! Streams: Anthropic SSE events to OpenAI chat chunks, and chat chunks to Anthropic events.

use serde_json::{Map, Value, json};

use super::chat::{self, CallDelta, Chunk, ChunkHead, ChunkWriter, Progress};
use super::{
    chat_id, chat_usage, finish_reason, fresh_id, kind, message_id, messages_usage, stop_reason,
    str_at,
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
    /// The chunks' id (`chatcmpl-` and the message id once `message_start` gave it), time and
    /// model (from `message_start`).
    head: ChunkHead,
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
            head: ChunkHead::new(),
            usage: Map::new(),
            tools: Vec::new(),
        }
    }

    /// One upstream event (`event:` name and its parsed `data`; with no name, the data's
    /// `type` names it). Returns the chat payloads it becomes (0..n).
    pub fn event(&mut self, name: &str, data: &Value) -> Vec<String> {
        let name = if name.is_empty() { kind(data) } else { name };
        match name {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(usage) = message.get("usage").and_then(Value::as_object) {
                    self.usage = usage.clone();
                }
                vec![self.head.open(message, chat_id)]
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match str_at(block, "type") {
                    "text" => self.head.text("content", str_at(block, "text")),
                    "thinking" => self
                        .head
                        .text("reasoning_content", str_at(block, "thinking")),
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
                        vec![self.head.chunk(delta, Value::Null)]
                    }
                    _ => Vec::new(),
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match str_at(delta, "type") {
                    "text_delta" => self.head.text("content", str_at(delta, "text")),
                    "thinking_delta" => self
                        .head
                        .text("reasoning_content", str_at(delta, "thinking")),
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
                                vec![self.head.chunk(delta, Value::Null)]
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
                    out.push(self.head.chunk(json!({}), Value::from(finish_reason(stop))));
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
                        self.head
                            .usage(chat_usage(&Value::Object(self.usage.clone()))),
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
    /// Where the reading of the chat stream stands (`message_start` sent, the finish reason
    /// come, the usage, `message_stop` or an `error` sent).
    progress: Progress,
    open: Option<Open>,
    /// The index of the next content block.
    next_block: u64,
    /// A refusal was streamed.
    refused: bool,
}

/// An Anthropic event out of [`ChatToMessages`]: its name and its data as JSON.
pub type Event = (&'static str, String);

impl ChatToMessages {
    /// A translator for one stream; `model` is the model name to put in `message_start`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            progress: Progress::default(),
            open: None,
            next_block: 0,
            refused: false,
        }
    }

    /// One upstream `data:` payload. Returns the Anthropic events it becomes (0..n).
    pub fn data(&mut self, data: &str) -> Vec<Event> {
        chat::read(self, data)
    }

    /// The upstream stream ended (no more input). Emits the held `message_delta` and
    /// `message_stop` if the answer finished, else nothing: a partial answer is not ended.
    pub fn end(&mut self) -> Vec<Event> {
        chat::end(self)
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
        let call = CallDelta::of(call);
        let index = match self.open {
            Some(Open::Tool { index, call: open }) if call.continues(open) => index,
            _ => {
                let number = self.progress.new_call(&call);
                let block = json!({
                    "type": "tool_use",
                    "id": call.id.map_or_else(|| format!("toolu_{}", fresh_id()), str::to_owned),
                    "name": call.name,
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
        if let Some(args) = call.arguments {
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
}

impl ChunkWriter for ChatToMessages {
    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    /// `message_start`.
    fn open_answer(&mut self, chunk: &Chunk, out: &mut Vec<Event>) {
        let input = chunk.usage.as_ref().map_or(0, |u| {
            messages_usage(u)["input_tokens"].as_u64().unwrap_or(0)
        });
        let start = json!({
            "type": "message_start",
            "message": {
                "id": message_id(chunk.id.as_deref()),
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

    fn add(&mut self, chunk: Chunk, out: &mut Vec<Event>) {
        if let Some(text) = &chunk.content {
            self.text(text, out);
        }
        if let Some(refusal) = chunk.refusal.filter(|r| !r.is_empty()) {
            self.refused = true;
            self.text(&refusal, out);
        }
        for call in &chunk.tool_calls {
            self.tool_call(call, out);
        }
    }

    fn close_open(&mut self, out: &mut Vec<Event>) {
        self.close(out);
    }

    /// `message_delta` and `message_stop`; a refusal that stopped normally stops with
    /// `refusal`.
    fn write_end(&mut self, out: &mut Vec<Event>) {
        let stop = match self.progress.finish.as_deref().map(stop_reason) {
            Some("end_turn") if self.refused => "refusal",
            Some(s) => s,
            None => "end_turn",
        };
        let usage = self
            .progress
            .usage
            .as_ref()
            .map_or_else(|| json!({"output_tokens": 0}), messages_usage);
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": usage,
        });
        out.push(("message_delta", delta.to_string()));
        out.push(("message_stop", json!({"type": "message_stop"}).to_string()));
    }

    fn write_error(&mut self, error: &Value, out: &mut Vec<Event>) {
        let event = json!({
            "type": "error",
            "error": {"type": anthropic_error_type(error), "message": chat::error_message(error)},
        });
        out.push(("error", event.to_string()));
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
