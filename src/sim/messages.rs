//! `POST /v1/messages`: Anthropic's Messages API, read into an [`Ask`] and worded in
//! Anthropic's shapes: a `message` object, named SSE events (`message_start` ...
//! `message_stop`, `event: error` mid-stream), `{"type": "error", "error": {...}}` bodies with
//! Anthropic's statuses, and a `request-id` header on every response.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::respond::{
    Answer, Ask, Content, Events, Failure, PREFILL_REJECTED, Stop, Tool, Wire, error, http_status,
    named_event, previous_response_not_found, retry_after_secs, text_of, words,
};

/// The Messages protocol.
#[derive(Debug)]
pub(super) struct Messages;

/// Anthropic's error document.
pub(super) fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// An Anthropic error response.
fn failed(status: StatusCode, kind: &str, message: &str) -> Response {
    error(status, anthropic_error(kind, message))
}

/// Anthropic's validation: a field's path, then what is wrong with it.
fn field(path: &str, problem: &str) -> String {
    format!("{path}: {problem}")
}

/// What a request to the Messages API is for, which decides what it must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A message (`POST /v1/messages`): `max_tokens` is required.
    Answer,
    /// A count of the prompt's tokens (`POST /v1/messages/count_tokens`): no `max_tokens`,
    /// and nothing is generated, so no stream, prefill or tool call.
    Count,
}

/// Reads a Messages API request for `purpose`, validated as Anthropic does: a missing
/// `model` or `messages`, an empty `messages`, a role other than `user`/`assistant`, a
/// trailing assistant message that ends with white space, and for an answer a missing
/// `max_tokens`, is the message of a 400. The prompt's size is the words of `system` and of
/// every message's text, whatever the purpose.
pub(super) fn read(body: &[u8], purpose: Purpose) -> Result<Ask, String> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| format!("There was an error parsing the body of your request: {e}"))?;
    if !body.is_object() {
        return Err("Input should be an object".into());
    }
    let model = match body.get("model") {
        None => return Err(field("model", "Field required")),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(field("model", "Input should be a non-empty string")),
    };
    let messages = match body.get("messages") {
        None => return Err(field("messages", "Field required")),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(field("messages", "Input should be a valid list")),
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "assistant")) {
            return Err(field(
                &format!("messages.{i}.role"),
                "Input should be 'user' or 'assistant'",
            ));
        }
    }
    let Some(last) = messages.last() else {
        return Err(field("messages", "at least one message is required"));
    };
    let max_tokens = match (purpose, body.get("max_tokens")) {
        (Purpose::Count, _) => None,
        (Purpose::Answer, None) => return Err(field("max_tokens", "Field required")),
        (Purpose::Answer, Some(n)) => match n.as_u64().map(u32::try_from) {
            Some(Ok(n)) if n >= 1 => Some(n),
            Some(Ok(_)) => {
                return Err(field(
                    "max_tokens",
                    "Input should be greater than or equal to 1",
                ));
            }
            _ => return Err(field("max_tokens", "Input should be a valid integer")),
        },
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field("stream", "Input should be a valid boolean")),
    };
    let content = |m: &Value| m.get("content").map(text_of).unwrap_or_default();
    let is_assistant = last.get("role").and_then(Value::as_str) == Some("assistant");
    let prefill = Some(content(last)).filter(|p| is_assistant && !p.is_empty());
    if prefill
        .as_ref()
        .is_some_and(|p| p.ends_with(char::is_whitespace))
    {
        return Err("messages: final assistant content cannot end with trailing whitespace".into());
    }
    let tool_result = last
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(content);
    let tool = body
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|tools| tools.first())
        .map(|t| Tool {
            name: t
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            schema: t.get("input_schema").cloned().unwrap_or_default(),
        });
    let system = body.get("system").map(text_of).unwrap_or_default();
    let prompt_tokens = words(&system) + messages.iter().map(|m| words(&content(m))).sum::<usize>();
    let answers = purpose == Purpose::Answer;
    Ok(Ask {
        model,
        stream: stream && answers,
        max_tokens,
        prompt_tokens,
        prefill: prefill.filter(|_| answers),
        tool: tool.filter(|_| answers),
        tool_result: tool_result.filter(|_| answers && !is_assistant),
        previous_response: None,
        body,
    })
}

impl Wire for Messages {
    fn events(&self) -> Option<&dyn Events> {
        Some(self)
    }

    fn parse(body: &[u8]) -> Result<(Self, Ask), String> {
        Ok((Messages, read(body, Purpose::Answer)?))
    }

    fn failure(failure: &Failure, model: &str) -> Response {
        const INVALID: &str = "invalid_request_error";
        match failure {
            Failure::RateLimit(wait) => rate_limited(*wait),
            Failure::Status(status) => status_error(*status, model),
            Failure::ContextOverflow { prompt_tokens } => failed(
                StatusCode::BAD_REQUEST,
                INVALID,
                &format!(
                    "prompt is too long: {} tokens > 200000 maximum",
                    200_000 + prompt_tokens.max(&1)
                ),
            ),
            Failure::ContentFilter => failed(
                StatusCode::BAD_REQUEST,
                INVALID,
                "Output blocked by content filtering policy",
            ),
            Failure::PrefillRejected => failed(StatusCode::BAD_REQUEST, INVALID, PREFILL_REJECTED),
            Failure::BadRequest { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                failed(
                    *status,
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes.",
                )
            }
            Failure::BadRequest { status, message } => failed(*status, INVALID, message),
            Failure::PreviousResponseNotFound(id) => failed(
                StatusCode::BAD_REQUEST,
                INVALID,
                &previous_response_not_found(id),
            ),
        }
    }

    fn stamp(id: u64, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&format!("req_sim{id}")) {
            headers.insert("request-id", value);
        }
    }

    fn body(&self, answer: &Answer) -> Value {
        json!({
            "id": message_id(answer),
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [block(answer, true)],
            "stop_reason": stop_reason(answer.stop),
            "stop_sequence": null,
            "usage": usage(answer, answer.pieces().len()),
        })
    }

    fn error_body(&self, _answer: &Answer) -> Value {
        anthropic_error("overloaded_error", "Overloaded")
    }
}

impl Events for Messages {
    /// `message_start` (output tokens 1, as Anthropic reports them there),
    /// `content_block_start`, `ping`.
    fn open(&self, answer: &Answer) -> Vec<Bytes> {
        let mut message = self.body(answer);
        message["content"] = json!([]);
        message["stop_reason"] = Value::Null;
        message["usage"] = usage(answer, 1);
        vec![
            named_event(
                "message_start",
                &json!({"type": "message_start", "message": message}),
            ),
            named_event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": block(answer, false)}),
            ),
            named_event("ping", &json!({"type": "ping"})),
        ]
    }

    /// A `text_delta`, or an `input_json_delta` with a piece of the tool's input.
    fn piece(&self, answer: &Answer, i: usize) -> Bytes {
        let piece = &answer.pieces()[i];
        let delta = match &answer.content {
            Content::Text(_) => json!({"type": "text_delta", "text": piece}),
            Content::ToolCall { .. } => json!({"type": "input_json_delta", "partial_json": piece}),
        };
        named_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        )
    }

    fn malformed(&self, _answer: &Answer) -> Bytes {
        Bytes::from_static(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\n\n",
        )
    }

    /// Anthropic's mid-stream failure: an `error` event, after which the stream ends.
    fn error_event(&self, answer: &Answer) -> Bytes {
        named_event("error", &self.error_body(answer))
    }

    /// `content_block_stop`, then `message_delta` with the stop reason and the output tokens.
    fn close(&self, answer: &Answer, sent: usize) -> Vec<Bytes> {
        vec![
            named_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            named_event(
                "message_delta",
                &json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason(answer.stop), "stop_sequence": null},
                    "usage": {"output_tokens": sent},
                }),
            ),
        ]
    }

    fn done(&self, _answer: &Answer, _sent: usize) -> Bytes {
        named_event("message_stop", &json!({"type": "message_stop"}))
    }
}

fn message_id(answer: &Answer) -> String {
    format!("msg_sim{}", answer.id)
}

/// The answer's content block: whole, or as a stream's `content_block_start` announces it
/// (empty text, empty input).
fn block(answer: &Answer, whole: bool) -> Value {
    match &answer.content {
        Content::Text(_) => json!({
            "type": "text",
            "text": if whole { answer.joined() } else { String::new() },
        }),
        Content::ToolCall { name, input, .. } => json!({
            "type": "tool_use",
            "id": format!("toolu_sim{}", answer.id),
            "name": name,
            "input": if whole { input.clone() } else { json!({}) },
        }),
    }
}

fn stop_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::End => "end_turn",
        Stop::Length => "max_tokens",
        Stop::ToolUse => "tool_use",
    }
}

fn usage(answer: &Answer, output_tokens: usize) -> Value {
    json!({
        "input_tokens": answer.prompt_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    })
}

/// 429 `rate_limit_error`; with a wait, `retry-after` (whole seconds, rounded up) and the
/// requests quota exhausted until `anthropic-ratelimit-requests-reset` (RFC 3339).
fn rate_limited(retry_after: Option<Duration>) -> Response {
    let mut resp = failed(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "This request would exceed your organization's rate limit of 3 requests per minute. \
         For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    );
    let Some(wait) = retry_after else {
        return resp;
    };
    let secs = retry_after_secs(wait);
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| retry_after_secs(now + wait));
    let reset = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(reset));
    let headers = resp.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    headers.insert(
        "anthropic-ratelimit-requests-limit",
        HeaderValue::from_static("3"),
    );
    headers.insert(
        "anthropic-ratelimit-requests-remaining",
        HeaderValue::from_static("0"),
    );
    if let Ok(reset) = HeaderValue::from_str(&reset.to_string()) {
        headers.insert("anthropic-ratelimit-requests-reset", reset);
    }
    resp
}

/// An error for a bare status, in Anthropic's words: 503 and 529 are `overloaded_error` (as
/// 529, Anthropic's status for it), 429 is [`rate_limited`] without a wait, and the other
/// statuses keep their code with the error type Anthropic gives it.
fn status_error(status: u16, model: &str) -> Response {
    let Some(code) = http_status(status) else {
        return failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            &format!("sim: {status} is not an HTTP status; answering 500"),
        );
    };
    let (kind, message) = match status {
        429 => return rate_limited(None),
        503 | 529 => {
            let overloaded = StatusCode::from_u16(529).unwrap_or(code);
            return failed(overloaded, "overloaded_error", "Overloaded");
        }
        401 => ("authentication_error", "invalid x-api-key".to_owned()),
        402 => (
            "billing_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans \
             & Billing to upgrade or purchase credits."
                .to_owned(),
        ),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.".to_owned(),
        ),
        404 => ("not_found_error", format!("model: {model}")),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.".to_owned(),
        ),
        500 => ("api_error", "Internal server error".to_owned()),
        _ if code.is_server_error() => (
            "api_error",
            code.canonical_reason().unwrap_or("Error").to_owned(),
        ),
        _ => (
            "invalid_request_error",
            code.canonical_reason().unwrap_or("Error").to_owned(),
        ),
    };
    failed(code, kind, &message)
}
