//! `POST /v1/responses`: OpenAI's Responses API, read into an [`Ask`] and worded in its
//! shapes: a `response` object whose `output` holds one `message` (an `output_text` part) or
//! one `function_call` item, and a stream of named events (`response.created` ...
//! `response.completed`), each with its `type` and a `sequence_number` from 0, and no
//! `[DONE]`. Errors are OpenAI's, as on the chat endpoint.
//!
//! The API keeps state: a response is stored (unless the request says `store: false`) and a
//! later request names it in `previous_response_id`. The sim keeps the ids it answered
//! ([`Wire::stored_id`]) and refuses an id it does not have, as OpenAI does; it does not
//! replay the stored conversation, since every answer is [`ANSWER`](super::ANSWER) anyway.
//! There is no prefill here: a trailing assistant message is history.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::chat::{Chat, invalid_param, unreadable};
use super::respond::{
    Answer, Ask, Content, Events, Failure, Stop, Tool, Wire, error, named_event, text_of, words,
};

/// One Responses request: what its Response object echoes, and the stream's numbering.
#[derive(Debug)]
pub(super) struct Responses {
    /// `store`: keep the answer for `previous_response_id` (default true).
    store: bool,
    /// The request's parameters as the Response object echoes them, defaults filled in.
    echo: Map<String, Value>,
    /// The `sequence_number` of the next event. Events are numbered as they are worded,
    /// which is the order the stream sends them.
    sequence: AtomicU64,
}

/// The parameters a Response object echoes, with OpenAI's values when the request omits them.
fn echo_defaults() -> [(&'static str, Value); 13] {
    [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("previous_response_id", Value::Null),
        ("temperature", json!(1.0)),
        ("top_p", json!(1.0)),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("parallel_tool_calls", json!(true)),
        ("truncation", json!("disabled")),
        ("text", json!({"format": {"type": "text"}})),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("user", Value::Null),
        ("metadata", json!({})),
    ]
}

/// The JSON type of `value`, in OpenAI's validation messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn missing(param: &str) -> String {
    format!("Missing required parameter: '{param}'.")
}

fn invalid_type(param: &str, expected: &str, got: &Value) -> String {
    format!(
        "Invalid type for '{param}': expected {expected}, but got {} instead.",
        type_name(got)
    )
}

/// A field that may be absent or `null`.
fn optional<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// The string `field` of `item`.
fn kind_of<'a>(item: &'a Value, field: &str) -> Option<&'a str> {
    item.get(field).and_then(Value::as_str)
}

/// Whether `item` is a message item (`type` `message`, or no `type` and a `role`).
fn is_message(item: &Value) -> bool {
    match item.get("type") {
        Some(kind) => kind == "message",
        None => item.get("role").is_some(),
    }
}

/// Checks one input item as OpenAI does for the kinds the sim reads; other kinds
/// (`reasoning`, `item_reference`, ...) pass unread.
fn check_item(i: usize, item: &Value) -> Result<(), String> {
    let param = |field: &str| format!("input[{i}].{field}");
    if !item.is_object() {
        return Err(invalid_type(&format!("input[{i}]"), "an input item", item));
    }
    let string = |field: &str| match item.get(field) {
        None | Some(Value::Null) => Err(missing(&param(field))),
        Some(Value::String(_)) => Ok(()),
        Some(other) => Err(invalid_type(&param(field), "a string", other)),
    };
    if is_message(item) {
        string("role")?;
        let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "user" | "assistant" | "system" | "developer") {
            return Err(format!(
                "Invalid value: '{role}'. Supported values are: 'assistant', 'system', \
                 'developer', and 'user'."
            ));
        }
        return match item.get("content") {
            None | Some(Value::Null) => Err(missing(&param("content"))),
            Some(Value::String(_) | Value::Array(_)) => Ok(()),
            Some(other) => Err(invalid_type(
                &param("content"),
                "one of a string or array of input content",
                other,
            )),
        };
    }
    match item.get("type").and_then(Value::as_str) {
        Some("function_call") => ["call_id", "name", "arguments"]
            .into_iter()
            .try_for_each(string),
        Some("function_call_output") => {
            string("call_id")?;
            match item.get("output") {
                None | Some(Value::Null) => Err(missing(&param("output"))),
                Some(_) => Ok(()),
            }
        }
        Some(_) => Ok(()),
        None => Err(missing(&param("type"))),
    }
}

impl Wire for Responses {
    fn events(&self) -> Option<&dyn Events> {
        Some(self)
    }

    fn parse(body: &[u8]) -> Result<(Self, Ask), String> {
        let body: Value = serde_json::from_slice(body).map_err(unreadable)?;
        let Some(fields) = body.as_object() else {
            return Err(invalid_type("body", "an object", &body));
        };
        let model = match optional(fields, "model") {
            None => return Err(missing("model")),
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(other) => return Err(invalid_type("model", "a non-empty string", other)),
        };
        let items = match optional(fields, "input") {
            None => Vec::new(),
            Some(Value::String(text)) => vec![json!({"role": "user", "content": text})],
            Some(Value::Array(items)) => items.clone(),
            Some(other) => {
                return Err(invalid_type(
                    "input",
                    "one of a string or array of input items",
                    other,
                ));
            }
        };
        for (i, item) in items.iter().enumerate() {
            check_item(i, item)?;
        }
        let flag = |name: &str, default: bool| match optional(fields, name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(invalid_type(name, "a boolean", other)),
        };
        let stream = flag("stream", false)?;
        let store = flag("store", true)?;
        let instructions = match optional(fields, "instructions") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(invalid_type("instructions", "a string", other)),
        };
        // OpenAI's minimum is 16; the sim takes any positive limit, so that a test can cut
        // its short answer.
        let max_output_tokens = match optional(fields, "max_output_tokens") {
            None => None,
            Some(n) => match n.as_u64().map(u32::try_from) {
                Some(Ok(n)) if n >= 1 => Some(n),
                Some(Ok(n)) => {
                    return Err(format!(
                        "Invalid 'max_output_tokens': integer below minimum value. Expected \
                         a value >= 1, but got {n} instead."
                    ));
                }
                _ => return Err(invalid_type("max_output_tokens", "an integer", n)),
            },
        };
        let previous_response = match optional(fields, "previous_response_id") {
            None => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(other) => return Err(invalid_type("previous_response_id", "a string", other)),
        };
        let tools = match optional(fields, "tools") {
            None => &[][..],
            Some(Value::Array(tools)) => tools.as_slice(),
            Some(other) => return Err(invalid_type("tools", "an array", other)),
        };
        let mut tool = None;
        for (i, t) in tools.iter().enumerate() {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                continue;
            }
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return Err(missing(&format!("tools[{i}].name")));
            };
            tool.get_or_insert_with(|| Tool {
                name: name.to_owned(),
                schema: t.get("parameters").cloned().unwrap_or_default(),
            });
        }
        // A tool's result answers the call when it comes after the last user message, as a
        // trailing `tool` message does on chat.
        let since_user = items
            .iter()
            .rposition(|item| is_message(item) && kind_of(item, "role") == Some("user"))
            .map_or(0, |i| i + 1);
        let tool_result = items[since_user..]
            .iter()
            .rev()
            .find(|item| kind_of(item, "type") == Some("function_call_output"))
            .map(|item| item.get("output").map(text_of).unwrap_or_default());
        let prompt_tokens = words(&instructions)
            + items
                .iter()
                .map(|item| {
                    let text = if is_message(item) {
                        item.get("content")
                    } else {
                        item.get("output")
                    };
                    words(&text.map(text_of).unwrap_or_default())
                })
                .sum::<usize>();
        let mut echo: Map<String, Value> = echo_defaults()
            .into_iter()
            .map(|(name, default)| {
                let value = optional(fields, name).cloned().unwrap_or(default);
                (name.to_owned(), value)
            })
            .collect();
        echo.insert("store".to_owned(), Value::Bool(store));
        let ask = Ask {
            model,
            stream,
            max_tokens: max_output_tokens,
            prompt_tokens,
            // No prefill in this API: a trailing assistant message is history.
            prefill: None,
            tool,
            tool_result,
            previous_response,
            body,
        };
        let responses = Responses {
            store,
            echo,
            sequence: AtomicU64::new(0),
        };
        Ok((responses, ask))
    }

    /// OpenAI's errors, as on chat; a context overflow in the Responses API's words.
    fn failure(failure: &Failure, model: &str) -> Response {
        match failure {
            Failure::ContextOverflow { .. } => error(
                StatusCode::BAD_REQUEST,
                invalid_param(
                    "input",
                    "context_length_exceeded",
                    "Your input exceeds the context window of this model. Please adjust your \
                     input and try again.",
                ),
            ),
            Failure::RateLimit(_)
            | Failure::Status(_)
            | Failure::ContentFilter
            | Failure::PrefillRejected
            | Failure::BadRequest { .. }
            | Failure::PreviousResponseNotFound(_) => Chat::failure(failure, model),
        }
    }

    fn body(&self, answer: &Answer) -> Value {
        self.response(answer, Phase::Finished(answer.pieces().len()))
    }

    /// The failed response, as a stream's `response.failed` carries it.
    fn error_body(&self, answer: &Answer) -> Value {
        self.response(answer, Phase::Failed)
    }

    fn stored_id(&self, answer: &Answer) -> Option<String> {
        self.store.then(|| response_id(answer))
    }
}

/// How far a response has come, for the Response object that reports it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Created, no output yet.
    Started,
    /// Done (completed, or incomplete when the token limit cut it), `sent` pieces delivered.
    Finished(usize),
    /// Failed mid-way ([`Fault::ErrorAfter`](super::Fault::ErrorAfter)).
    Failed,
}

impl Responses {
    /// The Response object at `phase`.
    fn response(&self, answer: &Answer, phase: Phase) -> Value {
        let (status, output, usage, error, incomplete) = match phase {
            Phase::Started => (
                "in_progress",
                json!([]),
                Value::Null,
                Value::Null,
                Value::Null,
            ),
            Phase::Finished(sent) => (
                final_status(answer.stop),
                json!([item(answer, true)]),
                usage(answer, sent),
                Value::Null,
                match answer.stop {
                    Stop::Length => json!({"reason": "max_output_tokens"}),
                    Stop::End | Stop::ToolUse => Value::Null,
                },
            ),
            Phase::Failed => (
                "failed",
                json!([]),
                Value::Null,
                json!({
                    "code": "server_error",
                    "message": "The server had an error processing your request.",
                }),
                Value::Null,
            ),
        };
        let mut response = self.echo.clone();
        response.extend([
            ("id".to_owned(), json!(response_id(answer))),
            ("object".to_owned(), json!("response")),
            ("created_at".to_owned(), json!(answer.created)),
            ("status".to_owned(), json!(status)),
            ("background".to_owned(), json!(false)),
            ("error".to_owned(), error),
            ("incomplete_details".to_owned(), incomplete),
            ("model".to_owned(), json!(answer.model)),
            ("output".to_owned(), output),
            ("max_tool_calls".to_owned(), Value::Null),
            ("service_tier".to_owned(), json!("default")),
            ("top_logprobs".to_owned(), json!(0)),
            ("usage".to_owned(), usage),
        ]);
        Value::Object(response)
    }

    /// One named event: `type` is its name, `sequence_number` the stream's next.
    fn event(&self, name: &str, fields: Value) -> Bytes {
        let mut data = Map::new();
        data.insert("type".to_owned(), json!(name));
        data.insert(
            "sequence_number".to_owned(),
            json!(self.sequence.fetch_add(1, Ordering::Relaxed)),
        );
        if let Value::Object(fields) = fields {
            data.extend(fields);
        }
        named_event(name, &Value::Object(data))
    }
}

impl Events for Responses {
    /// `response.created` and `response.in_progress` (the response with no output), then
    /// `response.output_item.added` (the item in progress, empty) and, for text,
    /// `response.content_part.added` (an empty `output_text` part).
    fn open(&self, answer: &Answer) -> Vec<Bytes> {
        let started = self.response(answer, Phase::Started);
        let mut events = vec![
            self.event("response.created", json!({"response": started})),
            self.event("response.in_progress", json!({"response": started})),
            self.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": item(answer, false)}),
            ),
        ];
        if let Content::Text(_) = answer.content {
            events.push(self.event(
                "response.content_part.added",
                json!({
                    "item_id": item_id(answer),
                    "output_index": 0,
                    "content_index": 0,
                    "part": part(""),
                }),
            ));
        }
        events
    }

    /// A `response.output_text.delta`, or a `response.function_call_arguments.delta`.
    fn piece(&self, answer: &Answer, i: usize) -> Bytes {
        let piece = &answer.pieces()[i];
        match answer.content {
            Content::Text(_) => self.event(
                "response.output_text.delta",
                json!({
                    "item_id": item_id(answer),
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                }),
            ),
            Content::ToolCall { .. } => self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id(answer), "output_index": 0, "delta": piece}),
            ),
        }
    }

    /// A delta event whose data breaks off before its delta (it takes a sequence number).
    fn malformed(&self, answer: &Answer) -> Bytes {
        let name = match answer.content {
            Content::Text(_) => "response.output_text.delta",
            Content::ToolCall { .. } => "response.function_call_arguments.delta",
        };
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        Bytes::from(format!(
            "event: {name}\ndata: {{\"type\":\"{name}\",\"sequence_number\":{sequence},\
             \"item_id\":\"{}\",\"output_index\":0,\"delta\":\n\n",
            item_id(answer)
        ))
    }

    /// `response.failed`: the response with status `failed` and a `server_error`, as the
    /// chat side's mid-stream error is an upstream server error. The stream ends after it.
    fn error_event(&self, answer: &Answer) -> Bytes {
        self.event(
            "response.failed",
            json!({"response": self.response(answer, Phase::Failed)}),
        )
    }

    /// Text: `response.output_text.done` (the whole text), `response.content_part.done`;
    /// a tool call: `response.function_call_arguments.done` (the arguments and the name).
    /// Then `response.output_item.done` with the finished item.
    fn close(&self, answer: &Answer, _sent: usize) -> Vec<Bytes> {
        let text = answer.joined();
        let id = item_id(answer);
        let mut events = match &answer.content {
            Content::Text(_) => vec![
                self.event(
                    "response.output_text.done",
                    json!({
                        "item_id": id,
                        "output_index": 0,
                        "content_index": 0,
                        "text": text,
                        "logprobs": [],
                    }),
                ),
                self.event(
                    "response.content_part.done",
                    json!({
                        "item_id": id,
                        "output_index": 0,
                        "content_index": 0,
                        "part": part(&text),
                    }),
                ),
            ],
            Content::ToolCall { name, .. } => vec![self.event(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": 0, "arguments": text, "name": name}),
            )],
        };
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": 0, "item": item(answer, true)}),
        ));
        events
    }

    /// `response.completed`, or `response.incomplete` when the token limit cut the answer:
    /// the whole response, with usage (`sent` output tokens).
    fn done(&self, answer: &Answer, sent: usize) -> Bytes {
        let name = match answer.stop {
            Stop::Length => "response.incomplete",
            Stop::End | Stop::ToolUse => "response.completed",
        };
        self.event(
            name,
            json!({"response": self.response(answer, Phase::Finished(sent))}),
        )
    }
}

fn response_id(answer: &Answer) -> String {
    format!("resp_sim{}", answer.id)
}

/// The id of the answer's output item: `msg_...` for text, `fc_...` for a tool call.
fn item_id(answer: &Answer) -> String {
    match answer.content {
        Content::Text(_) => format!("msg_sim{}", answer.id),
        Content::ToolCall { .. } => format!("fc_sim{}", answer.id),
    }
}

/// `completed`, or `incomplete` when the token limit cut the answer.
fn final_status(stop: Stop) -> &'static str {
    match stop {
        Stop::Length => "incomplete",
        Stop::End | Stop::ToolUse => "completed",
    }
}

/// An `output_text` content part.
fn part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The answer's output item: finished (its whole content), or as
/// `response.output_item.added` announces it (in progress, empty).
fn item(answer: &Answer, finished: bool) -> Value {
    let status = if finished {
        final_status(answer.stop)
    } else {
        "in_progress"
    };
    match &answer.content {
        Content::Text(_) => json!({
            "id": item_id(answer),
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": if finished { json!([part(&answer.joined())]) } else { json!([]) },
        }),
        Content::ToolCall { name, .. } => json!({
            "id": item_id(answer),
            "type": "function_call",
            "status": status,
            "arguments": if finished { answer.joined() } else { String::new() },
            "call_id": format!("call_sim{}", answer.id),
            "name": name,
        }),
    }
}

fn usage(answer: &Answer, output_tokens: usize) -> Value {
    json!({
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.prompt_tokens + output_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_as_openai_reads_them() {
        let (r, ask) = Responses::parse(
            br#"{"model": "m", "instructions": "be brief", "input": [
                {"role": "user", "content": "what is the weather"},
                {"type": "function_call", "call_id": "c", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "sunny"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is"}]}
            ], "tools": [{"type": "web_search"}, {"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "max_output_tokens": 5, "store": false, "previous_response_id": "resp_1"}"#,
        )
        .unwrap();
        assert!(!r.store);
        assert_eq!(r.echo["instructions"], "be brief");
        assert_eq!(r.echo["store"], false);
        assert_eq!(r.echo["temperature"], 1.0);
        assert_eq!(ask.prompt_tokens, 2 + 4 + 1 + 2);
        assert_eq!(ask.max_tokens, Some(5));
        assert_eq!(ask.prefill, None, "a trailing assistant message is history");
        assert_eq!(ask.tool.as_ref().map(|t| t.name.as_str()), Some("w"));
        assert_eq!(ask.tool_result.as_deref(), Some("sunny"));
        assert_eq!(ask.previous_response.as_deref(), Some("resp_1"));

        let (r, ask) = Responses::parse(br#"{"model": "m", "input": "hi there"}"#).unwrap();
        assert!(r.store);
        assert_eq!(
            (ask.prompt_tokens, ask.stream, ask.tool_result),
            (2, false, None)
        );
        // A user message after the tool's output asks again.
        let (_, ask) = Responses::parse(
            br#"{"model": "m", "input": [
                {"type": "function_call_output", "call_id": "c", "output": "sunny"},
                {"role": "user", "content": "and tomorrow?"}]}"#,
        )
        .unwrap();
        assert_eq!(ask.tool_result, None);

        for bad in [
            &br#"[]"#[..],
            br#"{"input": "x"}"#,
            br#"{"model": "", "input": "x"}"#,
            br#"{"model": "m", "input": 3}"#,
            br#"{"model": "m", "input": [3]}"#,
            br#"{"model": "m", "input": [{"role": "robot", "content": "x"}]}"#,
            br#"{"model": "m", "input": [{"role": "user"}]}"#,
            br#"{"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}"#,
            br#"{"model": "m", "input": "x", "stream": "yes"}"#,
            br#"{"model": "m", "input": "x", "max_output_tokens": 0}"#,
            br#"{"model": "m", "input": "x", "tools": [{"type": "function"}]}"#,
            br#"{"model": "m", "input": "x", "previous_response_id": 7}"#,
        ] {
            assert!(
                Responses::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
