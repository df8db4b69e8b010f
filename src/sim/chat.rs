//! `POST /v1/chat/completions`: OpenAI's chat completions, read into an [`Ask`] and worded
//! in OpenAI's shapes (`chat.completion`, `chat.completion.chunk`, `{"error": {...}}`).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::messages::anthropic_error;
use super::respond::{
    Answer, Ask, Content, Events, Failure, PREFILL_REJECTED, Stop, Tool, Wire, error, http_status,
    previous_response_not_found, retry_after_secs, text_of, words,
};

/// The part of an OpenAI chat request the sim reads.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    tools: Vec<ChatTool>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ChatTool {
    function: ChatFunction,
}

#[derive(Debug, Deserialize)]
struct ChatFunction {
    name: String,
    #[serde(default)]
    parameters: Value,
}

/// The chat protocol, with what one request asked of the stream's shape.
#[derive(Debug)]
pub(super) struct Chat {
    /// The request asked for the usage chunk at the end of a stream.
    include_usage: bool,
}

/// The role of a message.
fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

impl Wire for Chat {
    fn events(&self) -> Option<&dyn Events> {
        Some(self)
    }

    fn parse(body: &[u8]) -> Result<(Self, Ask), String> {
        let (body, req) = read_request(body, |req: &ChatRequest| req.model.as_str())?;
        let Some(last) = req.messages.last() else {
            return Err("'messages' must contain at least one message".into());
        };
        let max_tokens = req.max_tokens.or(req.max_completion_tokens);
        if max_tokens == Some(0) {
            return Err("max_tokens must be at least 1".into());
        }
        let content = |m: &Value| m.get("content").map(text_of).unwrap_or_default();
        let ask = Ask {
            stream: req.stream.unwrap_or(false),
            max_tokens,
            prompt_tokens: req.messages.iter().map(|m| words(&content(m))).sum(),
            prefill: Some(content(last))
                .filter(|p| role(last) == Some("assistant") && !p.is_empty()),
            tool: req.tools.into_iter().next().map(|t| Tool {
                name: t.function.name,
                schema: t.function.parameters,
            }),
            tool_result: (role(last) == Some("tool")).then(|| content(last)),
            previous_response: None,
            model: req.model,
            body,
        };
        let include_usage = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        Ok((Chat { include_usage }, ask))
    }

    fn failure(failure: &Failure, model: &str) -> Response {
        match failure {
            Failure::RateLimit(wait) => rate_limited(model, *wait),
            Failure::Status(status) => status_error(*status, model),
            Failure::ContextOverflow { prompt_tokens } => error(
                StatusCode::BAD_REQUEST,
                openai_error(
                    &format!(
                        "This model's maximum context length is 8192 tokens. However, your \
                         messages resulted in {} tokens. Please reduce the length of the \
                         messages.",
                        8192 + prompt_tokens.max(&1)
                    ),
                    "invalid_request_error",
                    Some("context_length_exceeded"),
                ),
            ),
            Failure::ContentFilter => error(
                StatusCode::BAD_REQUEST,
                openai_error(
                    "Your request was rejected as a result of our safety system. Your prompt \
                     may contain text that is not allowed by our safety system.",
                    "invalid_request_error",
                    Some("content_filter"),
                ),
            ),
            // The providers that reject prefills are Anthropic's models: their body.
            Failure::PrefillRejected => error(
                StatusCode::BAD_REQUEST,
                anthropic_error("invalid_request_error", PREFILL_REJECTED),
            ),
            Failure::BadRequest { status, message } => error(
                *status,
                openai_error(message, "invalid_request_error", None),
            ),
            Failure::PreviousResponseNotFound(id) => error(
                StatusCode::BAD_REQUEST,
                invalid_param(
                    "previous_response_id",
                    "previous_response_not_found",
                    &previous_response_not_found(id),
                ),
            ),
        }
    }

    fn body(&self, answer: &Answer) -> Value {
        let message = match &answer.content {
            Content::Text(_) => json!({"role": "assistant", "content": answer.joined()}),
            Content::ToolCall { name, .. } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call_id(answer),
                    "type": "function",
                    "function": {"name": name, "arguments": answer.joined()},
                }],
            }),
        };
        json!({
            "id": completion_id(answer),
            "object": "chat.completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(answer.stop),
            }],
            "usage": usage(answer, answer.pieces().len()),
        })
    }

    fn error_body(&self, _answer: &Answer) -> Value {
        json!({"error": mid_stream_error()})
    }
}

impl Events for Chat {
    /// A tool call opens with its id and name (and empty arguments); text opens with its
    /// first token.
    fn open(&self, answer: &Answer) -> Vec<Bytes> {
        match &answer.content {
            Content::Text(_) => Vec::new(),
            Content::ToolCall { name, .. } => vec![chunk(
                answer,
                &json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": call_id(answer),
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }],
                }),
                None,
            )],
        }
    }

    /// A text token (the first also carries the role), or a piece of the arguments.
    fn piece(&self, answer: &Answer, i: usize) -> Bytes {
        let piece = &answer.pieces()[i];
        let delta = match &answer.content {
            Content::Text(_) if i == 0 => json!({"role": "assistant", "content": piece}),
            Content::Text(_) => json!({"content": piece}),
            Content::ToolCall { .. } => {
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            }
        };
        chunk(answer, &delta, None)
    }

    fn malformed(&self, answer: &Answer) -> Bytes {
        Bytes::from(format!(
            "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\n\n",
            completion_id(answer)
        ))
    }

    /// OpenRouter's mid-stream failure: a top-level `error` beside a choice that finishes
    /// with `error`.
    fn error_event(&self, answer: &Answer) -> Bytes {
        let chunk = json!({
            "id": completion_id(answer),
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "error": mid_stream_error(),
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        });
        data(&chunk)
    }

    /// The `finish_reason` chunk with an empty delta, and the usage chunk when the request
    /// asked for it.
    fn close(&self, answer: &Answer, sent: usize) -> Vec<Bytes> {
        let mut events = vec![chunk(answer, &json!({}), Some(finish_reason(answer.stop)))];
        if self.include_usage {
            events.push(data(&json!({
                "id": completion_id(answer),
                "object": "chat.completion.chunk",
                "created": answer.created,
                "model": answer.model,
                "choices": [],
                "usage": usage(answer, sent),
            })));
        }
        events
    }

    fn done(&self, _answer: &Answer, _sent: usize) -> Bytes {
        Bytes::from_static(b"data: [DONE]\n\n")
    }
}

fn completion_id(answer: &Answer) -> String {
    format!("chatcmpl-sim-{}", answer.id)
}

fn call_id(answer: &Answer) -> String {
    format!("call_sim{}", answer.id)
}

fn finish_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::End => "stop",
        Stop::Length => "length",
        Stop::ToolUse => "tool_calls",
    }
}

/// The usage object for `completion_tokens` tokens.
fn usage(answer: &Answer, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": answer.prompt_tokens + completion_tokens,
    })
}

/// One SSE event of OpenAI's: a `data:` line.
fn data(payload: &Value) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

/// One `chat.completion.chunk` as an SSE event.
fn chunk(answer: &Answer, delta: &Value, finish_reason: Option<&str>) -> Bytes {
    data(&json!({
        "id": completion_id(answer),
        "object": "chat.completion.chunk",
        "created": answer.created,
        "model": answer.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }))
}

/// The error object of [`Fault::ErrorAfter`](super::Fault::ErrorAfter), as OpenRouter reports
/// an upstream failure.
pub(super) fn mid_stream_error() -> Value {
    json!({"message": "Upstream provider error mid-stream", "code": 502})
}

/// OpenAI's error document.
pub(super) fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
}

/// OpenAI's error document for a request whose parameter `param` is at fault.
pub(super) fn invalid_param(param: &str, code: &str, message: &str) -> Value {
    json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }})
}

/// OpenAI's message for a body that is not JSON, or not JSON of the endpoint's shape.
pub(super) fn unreadable(e: serde_json::Error) -> String {
    format!("We could not parse the JSON body of your request: {e}")
}

/// An OpenAI request body (chat, embeddings): the JSON, and the part of it the sim reads
/// (`T`), whose `model` must not be empty.
pub(super) fn read_request<T: DeserializeOwned>(
    body: &[u8],
    model: impl FnOnce(&T) -> &str,
) -> Result<(Value, T), String> {
    let body: Value = serde_json::from_slice(body).map_err(unreadable)?;
    let req = T::deserialize(&body).map_err(unreadable)?;
    if model(&req).is_empty() {
        return Err("you must provide a model parameter".into());
    }
    Ok((body, req))
}

/// 429, with the wait in the headers and the message when there is one.
fn rate_limited(model: &str, retry_after: Option<Duration>) -> Response {
    let base = format!(
        "Rate limit reached for {model} in organization org-sim on requests per min (RPM): \
         Limit 3, Used 3, Requested 1."
    );
    let Some(wait) = retry_after else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            openai_error(&base, "requests", Some("rate_limit_exceeded")),
        );
    };
    let millis = wait.as_millis();
    let message = format!("{base} Please try again in {millis}ms.");
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        openai_error(&message, "requests", Some("rate_limit_exceeded")),
    );
    let headers = resp.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(wait)),
    );
    headers.insert(
        "retry-after-ms",
        HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
    );
    resp
}

/// An error for a bare status, with the body a provider sends with it.
fn status_error(status: u16, model: &str) -> Response {
    let Some(code) = http_status(status) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            openai_error(
                &format!("sim: {status} is not an HTTP status; answering 500"),
                "server_error",
                None,
            ),
        );
    };
    let body = match status {
        429 => return rate_limited(model, None),
        529 => anthropic_error("overloaded_error", "Overloaded"),
        401 => openai_error(
            "Incorrect API key provided: sk-sim****. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        404 => openai_error(
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        ),
        500 => openai_error(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        503 => openai_error(
            "The server is overloaded or not ready yet.",
            "server_error",
            Some("service_unavailable"),
        ),
        _ => openai_error(
            code.canonical_reason().unwrap_or("Error"),
            if code.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            },
            None,
        ),
    };
    error(code, body)
}
