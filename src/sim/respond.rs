//! The HTTP side: the router, the one table that turns a [`Fault`] into an outcome (an error,
//! an answer, silence, a reset), and the one script that delivers an answer whole or as a
//! stream, broken where the fault says. Each wire protocol ([`Chat`], [`Messages`],
//! [`CountTokens`], [`Responses`], [`Embeddings`]) is a [`Wire`]: it reads its requests into
//! an [`Ask`] and words the outcomes in its own shapes; it decides nothing.

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
use serde_json::{Value, json};

use super::chat::{Chat, openai_error};
use super::count_tokens::CountTokens;
use super::embeddings::Embeddings;
use super::messages::Messages;
use super::responses::Responses;
use super::server::Conn;
use super::{ANSWER, Fault, Prefill, Shared};

/// The router of one sim.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handle::<Chat>))
        .route("/v1/messages", post(handle::<Messages>))
        .route("/v1/messages/count_tokens", post(handle::<CountTokens>))
        .route("/v1/responses", post(handle::<Responses>))
        .route("/v1/embeddings", post(handle::<Embeddings>))
        .route("/v1/models", get(models))
        .fallback(not_found)
        .with_state(shared)
}

/// What a request asks for, read from any protocol: all the table looks at.
#[derive(Debug)]
pub(super) struct Ask {
    pub(super) model: String,
    pub(super) stream: bool,
    /// The request's output limit, in tokens (stream pieces).
    pub(super) max_tokens: Option<u32>,
    /// A rough prompt size: the words of every text content.
    pub(super) prompt_tokens: usize,
    /// The text of a trailing assistant message, when it is not empty.
    pub(super) prefill: Option<String>,
    /// The request's first tool.
    pub(super) tool: Option<Tool>,
    /// The content of the last message, when that message is a tool result.
    pub(super) tool_result: Option<String>,
    /// The id of the stored response this request continues (the Responses API's
    /// `previous_response_id`); the sim must know it.
    pub(super) previous_response: Option<String>,
    /// The body as it arrived, for [`Sim::last_request`](super::Sim::last_request).
    pub(super) body: Value,
}

/// A tool the request offers.
#[derive(Debug)]
pub(super) struct Tool {
    pub(super) name: String,
    /// Its JSON schema (`parameters` on chat, `input_schema` on messages).
    pub(super) schema: Value,
}

/// The text of a message content: a string, or the `text` of the text parts of an array
/// (OpenAI's content parts and Anthropic's content blocks share that shape: type `text`; the
/// Responses API's are `input_text` and `output_text`).
pub(super) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| {
                matches!(
                    p.get("type").and_then(Value::as_str),
                    Some("text" | "input_text" | "output_text")
                )
            })
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The words of `text`, the sim's token count for prompts.
pub(super) fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// An error the table decided, before a protocol words it.
#[derive(Debug)]
pub(super) enum Failure {
    /// A rate limit, with the wait the provider asks for.
    RateLimit(Option<Duration>),
    /// A bare status ([`Fault::Status`], [`Fault::ServerErrorOnce`]).
    Status(u16),
    /// The prompt does not fit the model's window.
    ContextOverflow { prompt_tokens: usize },
    /// A safety rejection.
    ContentFilter,
    /// A prefill under [`Prefill::Reject`].
    PrefillRejected,
    /// The request itself is not valid (or could not be read: `status` says why).
    BadRequest { status: StatusCode, message: String },
    /// The request continues a stored response ([`Ask::previous_response`], this id) that the
    /// sim does not have: never answered, answered with `store: false`, or by another sim.
    PreviousResponseNotFound(String),
}

/// The message of [`Failure::PrefillRejected`]: Anthropic's, on every endpoint.
pub(super) const PREFILL_REJECTED: &str = "This model does not support assistant message \
    prefill. The conversation must end with a user message.";

/// The message of [`Failure::PreviousResponseNotFound`]: OpenAI's, on every endpoint.
pub(super) fn previous_response_not_found(id: &str) -> String {
    format!("Previous response with id '{id}' not found.")
}

/// One wire protocol: how it reads a request, and how it words each part of an outcome.
pub(super) trait Wire: Sized {
    /// How its streams are worded; `None` for an endpoint that does not stream.
    fn events(&self) -> Option<&dyn Events>;
    /// Whether the endpoint generates its answer, so that the faults of an answer's delivery
    /// ([`Fault::FirstTokenDelay`], [`Fault::CutAfter`], [`Fault::StallAfter`],
    /// [`Fault::MalformedAfter`], [`Fault::ErrorAfter`]) shape it. Default: true. A count of
    /// the prompt's tokens generates nothing: it is sent whole whatever they say.
    fn generates(&self) -> bool {
        true
    }
    /// Reads a request body into what the table needs; the error is the message of a 400.
    fn parse(body: &[u8]) -> Result<(Self, Ask), String>;
    /// The error response for `failure` on `model` (empty when the request was unreadable).
    fn failure(failure: &Failure, model: &str) -> Response;
    /// Headers every response of this protocol carries; `id` is the request's number.
    /// Default: none.
    fn stamp(_id: u64, _headers: &mut HeaderMap) {}
    /// The whole answer, as the body of a response that is not streamed.
    fn body(&self, answer: &Answer) -> Value;
    /// The 200 body of [`Fault::ErrorAfter`] when not streaming: the mid-stream error alone
    /// (or, where the protocol has one, the failed response that carries it).
    fn error_body(&self, answer: &Answer) -> Value;
    /// The id under which the sim keeps `answer`, for later requests to continue
    /// ([`Ask::previous_response`]): the Responses API's response id, unless the request said
    /// `store: false`. Default: none (the protocol keeps no state).
    fn stored_id(&self, _answer: &Answer) -> Option<String> {
        None
    }
}

/// How a protocol words a stream.
pub(super) trait Events {
    /// The events of a stream before its first piece.
    fn open(&self, answer: &Answer) -> Vec<Bytes>;
    /// The event that carries piece `i` of the answer.
    fn piece(&self, answer: &Answer, i: usize) -> Bytes;
    /// An event whose data is not JSON, in place of a piece.
    fn malformed(&self, answer: &Answer) -> Bytes;
    /// The mid-stream error event of [`Fault::ErrorAfter`]; the stream ends cleanly after it.
    fn error_event(&self, answer: &Answer) -> Bytes;
    /// The events after the last piece and before the terminator; `sent` pieces arrived as
    /// valid events.
    fn close(&self, answer: &Answer, sent: usize) -> Vec<Bytes>;
    /// The stream's terminator (`[DONE]`, `message_stop`, `response.completed`), which
    /// [`Fault::NoDone`] holds back; `sent` as for [`Events::close`].
    fn done(&self, answer: &Answer, sent: usize) -> Bytes;
}

/// Every endpoint: read the request, count it, apply the model's fault in the protocol's
/// shapes.
async fn handle<W: Wire>(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Arc<Conn>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    shared.count_request();
    let id = shared.next_id();
    let parsed = match body {
        Ok(body) => W::parse(&body).map_err(|message| Failure::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message,
        }),
        // The body could not be read (too large, or the client went away).
        Err(rejection) => Err(Failure::BadRequest {
            status: rejection.status(),
            message: rejection.body_text(),
        }),
    };
    let mut resp = match parsed {
        Err(failure) => W::failure(&failure, ""),
        Ok((wire, mut ask)) => {
            let fault = shared.attempt(&ask.model, headers, std::mem::take(&mut ask.body));
            let _answering = shared.enter(&ask.model);
            let plan = Plan {
                fault: &fault,
                shared: &shared,
                conn: &conn,
                id,
            };
            plan.respond(&wire, &ask).await
        }
    };
    W::stamp(id, resp.headers_mut());
    resp
}

/// What the sim does with one request once it is read.
struct Plan<'a> {
    fault: &'a Fault,
    /// The prefill mode, the token delay and the stored responses.
    shared: &'a Shared,
    conn: &'a Conn,
    id: u64,
}

impl Plan<'_> {
    /// The one table: what each fault does with a request.
    async fn respond<W: Wire>(&self, wire: &W, ask: &Ask) -> Response {
        let failure = match self.fault {
            Fault::Silent => std::future::pending().await,
            Fault::ResetBeforeHeaders => {
                self.conn.reset();
                std::future::pending().await
            }
            Fault::RateLimit { retry_after } => Failure::RateLimit(*retry_after),
            Fault::Status(status) => Failure::Status(*status),
            Fault::ContextOverflow => Failure::ContextOverflow {
                prompt_tokens: ask.prompt_tokens,
            },
            Fault::ContentFilter => Failure::ContentFilter,
            // The faults of an answer's delivery (`ServerErrorOnce` is resolved to a status
            // or to `None` by `Shared::attempt`, before this table). A rejected prefill, or an
            // unknown previous response, replaces the answer.
            Fault::None
            | Fault::ServerErrorOnce
            | Fault::FirstTokenDelay(_)
            | Fault::CutAfter(_)
            | Fault::StallAfter(_)
            | Fault::MalformedAfter(_)
            | Fault::NoDone
            | Fault::ErrorAfter(_)
            | Fault::ToolCall => match self.answer(wire, ask) {
                Ok(answer) => return self.deliver(wire, &answer, ask.stream).await,
                Err(failure) => failure,
            },
        };
        W::failure(&failure, &ask.model)
    }

    /// The answer to `ask`, kept under the protocol's id for later requests to continue
    /// ([`Wire::stored_id`]); a request that continues a response the sim does not keep gets
    /// [`Failure::PreviousResponseNotFound`] instead.
    fn answer<W: Wire>(&self, wire: &W, ask: &Ask) -> Result<Answer, Failure> {
        if let Some(previous) = &ask.previous_response
            && !self.shared.knows_response(previous)
        {
            return Err(Failure::PreviousResponseNotFound(previous.clone()));
        }
        let answer = Answer::new(self.fault, self.shared.prefill(), ask, self.id)?;
        if let Some(id) = wire.stored_id(&answer) {
            self.shared.keep_response(id);
        }
        Ok(answer)
    }

    /// The answer, whole or streamed, as the fault lets it through.
    async fn deliver<W: Wire>(&self, wire: &W, answer: &Answer, stream: bool) -> Response {
        if let Some(events) = wire.events().filter(|_| stream) {
            return sse(self.stream(events, answer));
        }
        let fault = if wire.generates() {
            self.fault
        } else {
            &Fault::None
        };
        if let Fault::FirstTokenDelay(delay) = fault {
            tokio::time::sleep(*delay).await;
        }
        let body = if let Fault::ErrorAfter(_) = fault {
            wire.error_body(answer)
        } else {
            wire.body(answer)
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

    /// A stream's steps: the opening events, one event per piece (the fault may break in
    /// before piece `k`), the closing events, then the terminator.
    fn stream(&self, wire: &dyn Events, answer: &Answer) -> VecDeque<Step> {
        let mut steps: VecDeque<Step> = wire.open(answer).into_iter().map(Step::Send).collect();
        if let Fault::FirstTokenDelay(delay) = self.fault {
            steps.push_back(Step::Wait(*delay));
        }
        let n = answer.pieces().len();
        // Pieces sent as valid events, for the usage the stream reports.
        let mut sent = 0;
        for i in 0..=n {
            match self.fault {
                Fault::CutAfter(k) if *k.min(&n) == i => {
                    steps.push_back(Step::Cut);
                    return steps;
                }
                Fault::StallAfter(k) if *k.min(&n) == i => {
                    steps.push_back(Step::Hang);
                    return steps;
                }
                Fault::ErrorAfter(k) if *k.min(&n) == i => {
                    // The body then ends cleanly, without the terminator.
                    steps.push_back(Step::Send(wire.error_event(answer)));
                    return steps;
                }
                Fault::MalformedAfter(k) if *k.min(&n) == i => {
                    // The malformed event stands in for piece `i`.
                    steps.push_back(Step::Send(wire.malformed(answer)));
                    continue;
                }
                _ => {}
            }
            if i == n {
                break;
            }
            let delay = self.shared.token_delay;
            if i > 0 && !delay.is_zero() {
                steps.push_back(Step::Wait(delay));
            }
            steps.push_back(Step::Send(wire.piece(answer, i)));
            sent += 1;
        }
        steps.extend(wire.close(answer, sent).into_iter().map(Step::Send));
        steps.push_back(match self.fault {
            Fault::NoDone => Step::Hang,
            _ => Step::Send(wire.done(answer, sent)),
        });
        steps
    }
}

/// `text` in stream tokens: a token ends after a space that is followed by a word, so
/// [`ANSWER`] gives [`answer_tokens`](super::answer_tokens), the rest of a word that a
/// prefill cut is a token, and a space that a prefill left out leads the next word's token.
fn tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut word = false;
    let mut after_space = false;
    for (i, c) in text.char_indices() {
        if c == ' ' {
            after_space = true;
        } else {
            if word && after_space {
                tokens.push(text[start..i].to_owned());
                start = i;
            }
            word = true;
            after_space = false;
        }
    }
    if start < text.len() {
        tokens.push(text[start..].to_owned());
    }
    tokens
}

/// How many characters of a tool call's arguments one streamed piece carries.
const ARGUMENT_PIECE: usize = 8;

/// What an answer says.
#[derive(Debug)]
pub(super) enum Content {
    /// Text, in stream tokens.
    Text(Vec<String>),
    /// A call of the request's first tool.
    ToolCall {
        name: String,
        /// The arguments, a JSON object.
        input: Value,
        /// `input` serialized, in stream pieces.
        pieces: Vec<String>,
    },
}

/// Why an answer ended, in neither protocol's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The answer is complete.
    End,
    /// The request's token limit cut it.
    Length,
    /// It is a tool call.
    ToolUse,
}

/// A healthy answer to one request, before a fault shapes its delivery.
#[derive(Debug)]
pub(super) struct Answer {
    /// The request's number, for the protocol's ids.
    pub(super) id: u64,
    /// Seconds since the epoch.
    pub(super) created: u64,
    pub(super) model: String,
    pub(super) content: Content,
    pub(super) stop: Stop,
    pub(super) prompt_tokens: usize,
}

impl Answer {
    /// The answer the fault and the prefill mode give `ask`: a tool call or the text that
    /// quotes a tool result (for [`Fault::ToolCall`]), else [`ANSWER`] or what follows a
    /// prefill, within the request's token limit.
    fn new(fault: &Fault, prefill: Prefill, ask: &Ask, id: u64) -> Result<Self, Failure> {
        let answer = |content, stop| Answer {
            id,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: ask.model.clone(),
            content,
            stop,
            prompt_tokens: ask.prompt_tokens,
        };
        let text = match (fault, &ask.tool_result, &ask.tool, &ask.prefill) {
            (Fault::ToolCall, Some(result), _, _) => format!("The tool answered: {result}"),
            (Fault::ToolCall, None, Some(tool), None) => {
                let input = arguments(&tool.schema);
                let chars: Vec<char> = input.to_string().chars().collect();
                let pieces = chars
                    .chunks(ARGUMENT_PIECE)
                    .map(|c| c.iter().collect())
                    .collect();
                let content = Content::ToolCall {
                    name: tool.name.clone(),
                    input,
                    pieces,
                };
                return Ok(answer(content, Stop::ToolUse));
            }
            (_, _, _, Some(p)) => match prefill {
                Prefill::Reject => return Err(Failure::PrefillRejected),
                Prefill::Continue => ANSWER.strip_prefix(p.as_str()).unwrap_or(ANSWER).into(),
                Prefill::Ignore => ANSWER.into(),
            },
            (_, _, _, None) => ANSWER.into(),
        };
        let limit = ask
            .max_tokens
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut tokens = tokens(&text);
        let stop = if limit < tokens.len() {
            tokens.truncate(limit);
            Stop::Length
        } else {
            Stop::End
        };
        Ok(answer(Content::Text(tokens), stop))
    }

    /// The pieces a stream sends: text tokens, or pieces of a tool call's arguments.
    pub(super) fn pieces(&self) -> &[String] {
        match &self.content {
            Content::Text(tokens) => tokens,
            Content::ToolCall { pieces, .. } => pieces,
        }
    }

    /// The whole text, or the whole arguments.
    pub(super) fn joined(&self) -> String {
        self.pieces().concat()
    }
}

/// Arguments that a simple schema accepts: each required property, with a value of its type
/// (`"sim"` for a string or an untyped one, the first value of an `enum`).
fn arguments(schema: &Value) -> Value {
    let properties = schema.get("properties");
    let required = schema.get("required").and_then(Value::as_array);
    let args = required
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|name| {
            let property = properties.and_then(|p| p.get(name));
            let first = property
                .and_then(|p| p.get("enum"))
                .and_then(Value::as_array)
                .and_then(|e| e.first());
            let value = match (first, property.and_then(|p| p.get("type"))) {
                (Some(v), _) => v.clone(),
                (None, Some(t)) if t == "integer" || t == "number" => json!(1),
                (None, Some(t)) if t == "boolean" => json!(true),
                (None, Some(t)) if t == "array" => json!([]),
                (None, Some(t)) if t == "object" => json!({}),
                (None, _) => json!("sim"),
            };
            (name.to_owned(), value)
        })
        .collect();
    Value::Object(args)
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

/// One named SSE event, `event: NAME\ndata: JSON\n\n`, as Anthropic and the Responses API
/// send them (chat's events are bare `data:` lines).
pub(super) fn named_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
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

/// A JSON error response.
pub(super) fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// `status` when it is an HTTP status of 200 or more.
pub(super) fn http_status(status: u16) -> Option<StatusCode> {
    StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.as_u16() >= 200)
}

/// The wait of a rate limit in whole seconds, rounded up, as `retry-after` states it.
pub(super) fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_fill_each_required_property_with_its_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "verbose": {"type": "boolean"},
                "note": {"type": "string"},
            },
            "required": ["city", "days", "unit", "verbose", "untyped"],
        });
        assert_eq!(
            arguments(&schema),
            json!({"city": "sim", "days": 1, "unit": "celsius", "verbose": true, "untyped": "sim"})
        );
        assert_eq!(arguments(&json!({"type": "object"})), json!({}));
        assert_eq!(arguments(&Value::Null), json!({}));
    }

    #[test]
    fn text_of_reads_strings_and_text_parts() {
        assert_eq!(text_of(&json!("hi there")), "hi there");
        let parts = json!([
            {"type": "text", "text": "one "},
            {"type": "image", "source": {}},
            {"type": "text", "text": "two"},
        ]);
        assert_eq!(text_of(&parts), "one two");
        let items = json!([
            {"type": "input_text", "text": "three "},
            {"type": "input_image", "image_url": "data:"},
            {"type": "output_text", "text": "four", "annotations": []},
        ]);
        assert_eq!(text_of(&items), "three four");
        assert_eq!(text_of(&Value::Null), "");
    }
}
