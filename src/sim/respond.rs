//! The HTTP side: the router, request parsing, and the one place that turns a [`Fault`] into
//! a response.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::server::Conn;
use super::{ANSWER, Fault, Prefill, Shared};

/// The router of one sim.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .fallback(not_found)
        .with_state(shared)
}

/// The part of an OpenAI chat request the sim reads, and the whole body.
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
    /// The body as it arrived, for [`Sim::last_request`](super::Sim::last_request).
    #[serde(skip)]
    body: Value,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl ChatRequest {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let unreadable =
            |e: serde_json::Error| format!("We could not parse the JSON body of your request: {e}");
        let body: Value = serde_json::from_slice(body).map_err(unreadable)?;
        let mut req = ChatRequest::deserialize(&body).map_err(unreadable)?;
        req.body = body;
        if req.model.is_empty() {
            return Err("you must provide a model parameter".into());
        }
        if req.messages.is_empty() {
            return Err("'messages' must contain at least one message".into());
        }
        if req.max_tokens.or(req.max_completion_tokens) == Some(0) {
            return Err("max_tokens must be at least 1".into());
        }
        Ok(req)
    }

    /// The assistant prefill: the string content of the last message when that message is
    /// the assistant's and the content is not empty.
    fn prefill(&self) -> Option<&str> {
        let last = self.messages.last()?;
        if last.get("role").and_then(Value::as_str) != Some("assistant") {
            return None;
        }
        last.get("content")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// A rough prompt size: the words of every string content.
    fn prompt_tokens(&self) -> usize {
        self.messages
            .iter()
            .filter_map(|m| m.get("content").and_then(Value::as_str))
            .map(|c| c.split_whitespace().count())
            .sum()
    }
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Arc<Conn>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    shared.count_request();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let req = match body {
        Ok(body) => ChatRequest::parse(&body).map_err(|m| (StatusCode::BAD_REQUEST, m)),
        // The body could not be read (too large, or the client went away).
        Err(rejection) => Err((rejection.status(), rejection.body_text())),
    };
    let req = match req {
        Ok(req) => req,
        Err((status, message)) => {
            return error(
                status,
                openai_error(&message, "invalid_request_error", None),
            );
        }
    };
    let fault = shared.attempt(&req.model, authorization, req.body.clone());
    let _answering = shared.enter(&req.model);
    let prefill = shared.prefill();
    respond(
        &fault,
        prefill,
        &req,
        &conn,
        shared.token_delay,
        shared.next_id(),
    )
    .await
}

/// The one table: what each fault does with a request once it is read.
async fn respond(
    fault: &Fault,
    prefill: Prefill,
    req: &ChatRequest,
    conn: &Conn,
    token_delay: Duration,
    id: u64,
) -> Response {
    let model = req.model.as_str();
    let stream = req.stream.unwrap_or(false);
    match fault {
        Fault::Silent => std::future::pending().await,
        Fault::ResetBeforeHeaders => {
            conn.reset();
            std::future::pending().await
        }
        Fault::RateLimit { retry_after } => rate_limited(model, *retry_after),
        Fault::Status(status) => status_error(*status, model),
        Fault::ContextOverflow => error(
            StatusCode::BAD_REQUEST,
            openai_error(
                &format!(
                    "This model's maximum context length is 8192 tokens. However, your \
                     messages resulted in {} tokens. Please reduce the length of the messages.",
                    8192 + req.prompt_tokens().max(1)
                ),
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
        ),
        Fault::ContentFilter => error(
            StatusCode::BAD_REQUEST,
            openai_error(
                "Your request was rejected as a result of our safety system. Your prompt may \
                 contain text that is not allowed by our safety system.",
                "invalid_request_error",
                Some("content_filter"),
            ),
        ),
        // The faults of an answer's delivery (`ServerErrorOnce` is resolved to a status or
        // to `None` by `Shared::attempt`, before this table). A rejected prefill replaces the
        // answer.
        Fault::None
        | Fault::ServerErrorOnce
        | Fault::FirstTokenDelay(_)
        | Fault::CutAfter(_)
        | Fault::StallAfter(_)
        | Fault::MalformedAfter(_)
        | Fault::NoDone
        | Fault::ErrorAfter(_) => {
            let text = match (req.prefill(), prefill) {
                (Some(_), Prefill::Reject) => return prefill_rejected(),
                (Some(p), Prefill::Continue) => ANSWER.strip_prefix(p).unwrap_or(ANSWER),
                (Some(_), Prefill::Ignore) | (None, _) => ANSWER,
            };
            let answer = Answer::new(req, text, id);
            if stream {
                answer.stream(fault, token_delay)
            } else {
                if let Fault::FirstTokenDelay(delay) = fault {
                    tokio::time::sleep(*delay).await;
                }
                answer.complete(fault)
            }
        }
    }
}

/// Anthropic's 400 for a prefill to a model that does not support one.
fn prefill_rejected() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        json!({
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "This model does not support assistant message prefill. The \
                            conversation must end with a user message.",
            },
        }),
    )
}

/// `text` in stream tokens: a token ends after a space that is followed by a word, so
/// [`ANSWER`] gives [`answer_tokens`](super::answer_tokens), the rest of a word that a
/// prefill cut is a token, and a space that a prefill left out leads the next word's token.
fn tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut word = false;
    let mut after_space = false;
    for (i, c) in text.char_indices() {
        if c == ' ' {
            after_space = true;
        } else {
            if word && after_space {
                tokens.push(&text[start..i]);
                start = i;
            }
            word = true;
            after_space = false;
        }
    }
    if start < text.len() {
        tokens.push(&text[start..]);
    }
    tokens
}

/// A healthy answer to one request, before a fault shapes its delivery.
struct Answer<'a> {
    id: String,
    created: u64,
    model: &'a str,
    tokens: Vec<&'static str>,
    finish_reason: &'static str,
    prompt_tokens: usize,
    /// The request asked for the usage chunk at the end of a stream.
    include_usage: bool,
}

/// One step of a response body.
enum Step {
    Wait(Duration),
    Send(Bytes),
    /// End the body with an error: the connection closes without the end of the message.
    Cut,
    /// Send nothing more, and keep the connection open.
    Hang,
}

impl<'a> Answer<'a> {
    /// The answer `text` (all of [`ANSWER`], or what follows a prefill), within the
    /// request's token limit.
    fn new(req: &'a ChatRequest, text: &'static str, id: u64) -> Self {
        let limit = req
            .max_tokens
            .or(req.max_completion_tokens)
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut tokens = tokens(text);
        let all = tokens.len();
        tokens.truncate(limit);
        Answer {
            id: format!("chatcmpl-sim-{id}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: &req.model,
            tokens,
            finish_reason: if limit < all { "length" } else { "stop" },
            prompt_tokens: req.prompt_tokens(),
            include_usage: req.include_usage(),
        }
    }

    /// The usage object for `completion_tokens` tokens.
    fn usage(&self, completion_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    /// OpenRouter's mid-stream failure: a top-level `error` beside a choice that finishes
    /// with `error`.
    fn error_chunk(&self) -> Bytes {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "error": mid_stream_error(),
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    /// One `chat.completion.chunk` as an SSE event.
    fn chunk(&self, delta: &Value, finish_reason: Option<&str>) -> Bytes {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    /// A streamed answer: one chunk per token (the first also carries the role), the
    /// `finish_reason` chunk with an empty delta, the usage chunk when the request asked for
    /// it, then `data: [DONE]`.
    fn stream(&self, fault: &Fault, token_delay: Duration) -> Response {
        let mut steps = VecDeque::new();
        if let Fault::FirstTokenDelay(delay) = fault {
            steps.push_back(Step::Wait(*delay));
        }
        let n = self.tokens.len();
        // Token chunks sent as valid JSON, for the usage chunk.
        let mut sent = 0;
        for i in 0..=n {
            match fault {
                Fault::CutAfter(k) if *k.min(&n) == i => {
                    steps.push_back(Step::Cut);
                    return sse(steps);
                }
                Fault::StallAfter(k) if *k.min(&n) == i => {
                    steps.push_back(Step::Hang);
                    return sse(steps);
                }
                Fault::ErrorAfter(k) if *k.min(&n) == i => {
                    // The body then ends cleanly, without `[DONE]`.
                    steps.push_back(Step::Send(self.error_chunk()));
                    return sse(steps);
                }
                Fault::MalformedAfter(k) if *k.min(&n) == i => {
                    let bad = format!(
                        "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\n\n",
                        self.id
                    );
                    steps.push_back(Step::Send(Bytes::from(bad)));
                    // The malformed chunk stands in for token `i`.
                    continue;
                }
                _ => {}
            }
            let Some(token) = self.tokens.get(i) else {
                break;
            };
            if i > 0 && !token_delay.is_zero() {
                steps.push_back(Step::Wait(token_delay));
            }
            let delta = if i == 0 {
                json!({"role": "assistant", "content": token})
            } else {
                json!({"content": token})
            };
            steps.push_back(Step::Send(self.chunk(&delta, None)));
            sent += 1;
        }
        steps.push_back(Step::Send(self.chunk(&json!({}), Some(self.finish_reason))));
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage(sent),
            });
            steps.push_back(Step::Send(Bytes::from(format!("data: {chunk}\n\n"))));
        }
        steps.push_back(match fault {
            Fault::NoDone => Step::Hang,
            _ => Step::Send(Bytes::from_static(b"data: [DONE]\n\n")),
        });
        sse(steps)
    }

    /// The `chat.completion` object.
    fn completion(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.tokens.concat()},
                "logprobs": null,
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage(self.tokens.len()),
        })
    }

    /// A `chat.completion` object, delivered whole unless the fault breaks the body; for
    /// [`Fault::ErrorAfter`], the mid-stream error object in its place.
    fn complete(&self, fault: &Fault) -> Response {
        let body = if let Fault::ErrorAfter(_) = fault {
            json!({"error": mid_stream_error()})
        } else {
            self.completion()
        };
        let body = Bytes::from(body.to_string());
        let half = body.slice(..body.len() / 2);
        let (steps, length) = match fault {
            Fault::CutAfter(_) => (vec![Step::Send(half), Step::Cut], body.len()),
            Fault::StallAfter(_) => (vec![Step::Send(half), Step::Hang], body.len()),
            Fault::MalformedAfter(_) => (vec![Step::Send(half.clone())], half.len()),
            _ => (vec![Step::Send(body.clone())], body.len()),
        };
        let mut resp = scripted(steps.into());
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        resp
    }
}

/// The error object of [`Fault::ErrorAfter`], as OpenRouter reports an upstream failure.
fn mid_stream_error() -> Value {
    json!({"message": "Upstream provider error mid-stream", "code": 502})
}

/// An SSE response that plays `steps`.
fn sse(steps: VecDeque<Step>) -> Response {
    let mut resp = scripted(steps);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A 200 whose body plays `steps` in order.
fn scripted(steps: VecDeque<Step>) -> Response {
    let body = futures_util::stream::unfold(steps, |mut steps| async move {
        loop {
            match steps.pop_front()? {
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Send(bytes) => return Some((Ok(bytes), steps)),
                Step::Cut => {
                    // hyper drops what it has buffered when a body fails; a pending poll
                    // first makes it flush the chunks already sent to the socket.
                    tokio::task::yield_now().await;
                    let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "sim: cut");
                    return Some((Err(cut), steps));
                }
                Step::Hang => std::future::pending::<()>().await,
            }
        }
    });
    Response::new(Body::from_stream(body))
}

/// OpenAI's error document.
fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
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
    let secs = millis.div_ceil(1000);
    let headers = resp.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
    );
    headers.insert(
        "retry-after-ms",
        HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
    );
    resp
}

/// An error for a bare status, with the body a provider sends with it.
fn status_error(status: u16, model: &str) -> Response {
    let Some(code) = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.as_u16() >= 200)
    else {
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
        529 => {
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        }
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

async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let data: Vec<Value> = shared
        .model_names()
        .into_iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": 0, "owned_by": "llm-failover-sim"}),
        )
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        openai_error(
            &format!("Invalid URL ({method} {})", uri.path()),
            "invalid_request_error",
            None,
        ),
    )
}
