//! Anthropic Messages calls (`POST {base_url}/messages`), for use inside a route's attempts.
//!
//! The same contract as [`openai_chat`](super::openai_chat): one call to one
//! [`Endpoint`] (of [`Api::AnthropicMessages`]), every way it
//! fails turned into an [`AttemptFailure`]. The key goes as `x-api-key`; `anthropic-version`
//! is the caller's or [`ANTHROPIC_VERSION`], and `anthropic-beta`
//! is passed on. The request body is forwarded as it is (`cache_control`, `thinking`,
//! `metadata` and whatever else Anthropic adds), with `model` and `stream` set.
//!
//! What is a failure, beyond the status and body of a non-2xx answer (the classifier knows
//! Anthropic's error bodies and reads `retry-after` and `anthropic-ratelimit-*-reset`):
//!
//! * a 2xx whose body is not a message, or whose message has no content: `empty_response`;
//! * a `stop_reason` of `refusal`: `content_filter` (not for another model);
//! * in a stream, an `error` event (Anthropic sends `overloaded_error` mid-stream): the
//!   reason its body gives; data that is not JSON, or a body cut short: `stream_interrupted`;
//!   a stream that ends its message without a token: `empty_response`.
//!
//! Token counting ([`Client::count_tokens`], `POST {base_url}/messages/count_tokens`) takes a
//! Messages request without `max_tokens` and answers `{"input_tokens": N}`; it is sent as a
//! Messages call is, with no `stream`, and fails as one does. A 2xx without an integer
//! `input_tokens` is `empty_response`. Only Anthropic Messages endpoints count tokens: on
//! another [`Api`] the attempt fails as [`ineligible`](AttemptFailure::ineligible)
//! ([`NoTokenCounting`]), having sent nothing.
//!
//! A stream is cut into [`MessagesChunk`]s so that the chain commits on the first *token*
//! (a text, thinking or tool-input delta, or the start of a `tool_use` block): the
//! `message_start`, `content_block_start` and `ping` events before it travel with it. A
//! chunk is *complete* at the `message_delta` that carries the `stop_reason` and *final* at
//! `message_stop`.
//!
//! ```no_run
//! # async fn demo(route: &llm_failover::chain::Route) -> Result<(), Box<dyn std::error::Error>> {
//! use llm_failover::protocol::{Api, Client, Endpoint};
//!
//! let client = Client::new()?;
//! let claude = Endpoint::new("anthropic", "https://api.anthropic.com/v1")
//!     .api(Api::AnthropicMessages)
//!     .api_key(std::env::var("ANTHROPIC_API_KEY")?);
//! let request = serde_json::json!({
//!     "max_tokens": 256,
//!     "messages": [{"role": "user", "content": "Hi"}],
//! });
//! let no_headers = reqwest::header::HeaderMap::new();
//! let answer = route
//!     .call(|attempt| {
//!         let (client, claude, request) = (client.clone(), claude.clone(), request.clone());
//!         let headers = no_headers.clone();
//!         async move { client.messages(&claude, attempt.model(), &request, &headers).await }
//!     })
//!     .await?;
//! println!("{} answered: {}", answer.provider, answer.value["content"][0]["text"]);
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::endpoint::{ANTHROPIC_VERSION, Client, Endpoint};
use super::sse::{self, Failing};
use super::{Api, translate};
use crate::Reason;
use crate::chain::{AttemptFailure, Chunk};
use crate::classify::Classifier;

mod count;
mod resume;

pub use self::count::NoTokenCounting;
pub use self::resume::MessagesResume;

/// The request headers a client's `anthropic-*` choices travel in.
const VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// The headers of a Messages request: the client's `anthropic-version` (else
/// [`ANTHROPIC_VERSION`]) and `anthropic-beta`s, nothing else of `client`'s.
fn anthropic_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let version = client
        .get(VERSION)
        .cloned()
        .unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION));
    headers.insert(VERSION, version);
    for beta in client.get_all(BETA) {
        headers.append(BETA, beta.clone());
    }
    headers
}

/// Anthropic events written from chat payloads, for a client of the Messages API.
fn from_chat(model: &str) -> sse::FromChat<translate::ChatToMessages> {
    sse::FromChat {
        writer: translate::ChatToMessages::new(model),
        data: translate::ChatToMessages::data,
        end: translate::ChatToMessages::end,
    }
}

/// The path of the Messages API, after the endpoint's base URL.
const MESSAGES_PATH: &str = "/messages";

impl Client {
    /// One non-streaming Messages call: the upstream's message, with `model` set to the
    /// target's model and `stream` to false. Of `headers` (the client's), `anthropic-version`
    /// and `anthropic-beta` are sent on; nothing else. An endpoint that speaks another
    /// [`Api`] gets the request translated and its answer translated back (see the
    /// [protocol docs](crate::protocol#translation-between-protocols)); a request it cannot carry fails as
    /// [`AttemptFailure::ineligible`], having sent nothing.
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] for every way the call can fail, classified (see the
    /// [module docs](self)).
    pub async fn messages(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
        headers: &HeaderMap,
    ) -> Result<Value, AttemptFailure> {
        match endpoint.api_kind() {
            Api::AnthropicMessages => {
                self.messages_native(endpoint, model, request, headers)
                    .await
            }
            Api::OpenAiChat => {
                let body = translate::messages_request_to_chat(request)
                    .map_err(AttemptFailure::ineligible)?;
                let answer = self.chat_native(endpoint, model, &body).await?;
                Ok(translate::chat_answer_to_messages(&answer))
            }
            Api::OpenAiResponses => {
                let chat = translate::messages_request_to_chat(request)
                    .map_err(AttemptFailure::ineligible)?;
                let body = translate::chat_request_to_responses(&chat)
                    .map_err(AttemptFailure::ineligible)?;
                let answer = self.responses_native(endpoint, model, &body).await?;
                Ok(translate::chat_answer_to_messages(
                    &translate::responses_answer_to_chat(&answer),
                ))
            }
        }
    }

    /// [`messages`](Self::messages) from an Anthropic Messages endpoint.
    pub(crate) async fn messages_native(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
        headers: &HeaderMap,
    ) -> Result<Value, AttemptFailure> {
        let (status, body, answer) = self
            .answer(
                endpoint,
                MESSAGES_PATH,
                model,
                request,
                anthropic_headers(headers),
            )
            .await?;
        if answer["type"] == "error" {
            return Err(self.error_in(endpoint, status, &body));
        }
        if answer["stop_reason"] == "refusal" {
            return Err(AttemptFailure::new(Reason::ContentFilter).with_status(status));
        }
        let content = answer["content"].as_array();
        if !content.is_some_and(|blocks| blocks.iter().any(block_has_content)) {
            return Err(AttemptFailure::new(Reason::EmptyResponse).with_status(status));
        }
        Ok(answer)
    }

    /// Opens a streaming Messages call: its events as they come, grouped so the first chunk
    /// carries the first token (see the [module docs](self)). From an endpoint that speaks
    /// another [`Api`], its events are translated into Anthropic's as they come.
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] when the request fails before the stream opens.
    pub async fn messages_stream(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
        headers: &HeaderMap,
    ) -> Result<MessagesStream, AttemptFailure> {
        let events: Failing<(String, String)> = match endpoint.api_kind() {
            Api::AnthropicMessages => Box::pin(
                self.messages_events(endpoint, model, request, headers)
                    .await?
                    .map(|e| e.map(|e| (e.event, e.data))),
            ),
            Api::OpenAiChat => {
                let body = translate::messages_request_to_chat(request)
                    .map_err(AttemptFailure::ineligible)?;
                let events = self.chat_events(endpoint, model, &body).await?;
                sse::through_chat(events, |e| Ok(vec![e.data.clone()]), from_chat(model))
            }
            Api::OpenAiResponses => {
                let chat = translate::messages_request_to_chat(request)
                    .map_err(AttemptFailure::ineligible)?;
                let body = translate::chat_request_to_responses(&chat)
                    .map_err(AttemptFailure::ineligible)?;
                let events = self.responses_events(endpoint, model, &body).await?;
                let mut chat = translate::ResponsesToChat::new();
                let to_chat = move |e: &eventsource_stream::Event| {
                    Ok(chat.event(&e.event, &sse::json(&e.data)?))
                };
                sse::through_chat(events, to_chat, from_chat(model))
            }
        };
        Ok(MessagesStream::new(events, endpoint, &self.classifier))
    }

    /// The events of a streaming Messages call from an Anthropic Messages endpoint.
    pub(crate) async fn messages_events(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
        headers: &HeaderMap,
    ) -> Result<Failing<eventsource_stream::Event>, AttemptFailure> {
        let resp = self
            .send_model(
                endpoint,
                MESSAGES_PATH,
                (model, Some(true)),
                request,
                anthropic_headers(headers),
            )
            .await?;
        Ok(sse::events(resp))
    }
}

/// Does a content block of an answer carry content?
fn block_has_content(block: &Value) -> bool {
    match block["type"].as_str() {
        Some("text") => block["text"].as_str().is_some_and(|t| !t.is_empty()),
        Some("thinking") => block["thinking"].as_str().is_some_and(|t| !t.is_empty()),
        Some(_) => true,
        None => false,
    }
}

/// A group of stream events: `(event name, data)` in order, as the upstream sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesChunk {
    events: Vec<(String, String)>,
    /// The `stop_reason` arrived: the answer is whole.
    finished: bool,
    /// `message_stop` arrived.
    done: bool,
}

impl MessagesChunk {
    /// The events in this chunk: `(event name, data)`.
    #[must_use]
    pub fn events(&self) -> &[(String, String)] {
        &self.events
    }

    /// The text the chunk adds to the answer (its `text_delta`s).
    #[must_use]
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter(|(name, _)| name == "content_block_delta")
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Chunk for MessagesChunk {
    fn is_final(&self) -> bool {
        self.done
    }

    fn is_complete(&self) -> bool {
        self.finished || self.done
    }

    fn usage(&self) -> Option<crate::chain::Usage> {
        self.events
            .iter()
            .filter(|(name, _)| name == "message_start" || name == "message_delta")
            .filter_map(|(_, d)| super::usage(&serde_json::from_str::<Value>(d).ok()?))
            .reduce(crate::chain::Usage::merge)
    }
}

/// The chunks of a streaming Messages answer.
#[derive(Debug)]
pub struct MessagesStream {
    /// The upstream's events as `(name, data)` (translated, if it speaks another protocol).
    group: sse::Group<(String, String)>,
    /// A `stop_reason` is among the pending events.
    finished: bool,
}

impl MessagesStream {
    /// The stream of `(event name, data)` from `endpoint`.
    pub(crate) fn new(
        events: Failing<(String, String)>,
        endpoint: &Endpoint,
        classifier: &Arc<Classifier>,
    ) -> Self {
        Self {
            group: sse::Group::new(events, endpoint, classifier),
            finished: false,
        }
    }

    /// Reads one event into the pending chunk; true when the chunk is ready to hand out (it
    /// carries a token, the stop reason or `message_stop`).
    fn take(&mut self, (name, data): (String, String)) -> Result<bool, AttemptFailure> {
        if name == "ping" || data.trim().is_empty() {
            // Keep-alives go out with the next chunk.
            self.group.pending.push((name, data));
            return Ok(false);
        }
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            return Err(AttemptFailure::new(Reason::StreamInterrupted));
        };
        if name == "error" || event["type"] == "error" {
            return Err(self.group.failure(&data));
        }
        let token = match name.as_str() {
            "content_block_start" => {
                let block = &event["content_block"];
                block["type"] != "text" && block["type"] != "thinking" || block_has_content(block)
            }
            "content_block_delta" => {
                let d = &event["delta"];
                ["text", "thinking", "partial_json"]
                    .iter()
                    .any(|k| d[*k].as_str().is_some_and(|s| !s.is_empty()))
            }
            _ => false,
        };
        let stop = &event["delta"]["stop_reason"];
        let finished = name == "message_delta" && stop.is_string();
        if finished && *stop == "refusal" {
            return Err(AttemptFailure::new(Reason::ContentFilter));
        }
        let done = name == "message_stop";
        if (finished || done) && !token && !self.group.answered {
            return Err(AttemptFailure::new(Reason::EmptyResponse));
        }
        self.group.answered |= token;
        self.group.pending.push((name, data));
        self.finished |= finished;
        self.group.done |= done;
        Ok(finished || token || done)
    }
}

impl sse::Grouped for MessagesStream {
    type Event = (String, String);
    type Chunk = MessagesChunk;

    fn group(&mut self) -> &mut sse::Group<(String, String)> {
        &mut self.group
    }

    fn take(&mut self, event: (String, String)) -> Result<bool, AttemptFailure> {
        MessagesStream::take(self, event)
    }

    fn chunk(&mut self) -> MessagesChunk {
        MessagesChunk {
            events: self.group.take_pending(),
            finished: std::mem::take(&mut self.finished),
            done: self.group.done,
        }
    }

    fn rest(&mut self) -> Option<MessagesChunk> {
        self.group.holds_rest().then(|| self.chunk())
    }
}

impl Stream for MessagesStream {
    type Item = Result<MessagesChunk, AttemptFailure>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        sse::poll_grouped(self.get_mut(), cx)
    }
}

/// A Messages request's tokens, estimated before it is sent, for the targets'
/// tokens-per-minute limits: its `system`, `messages` and `tools` as JSON over 4, plus its
/// `max_tokens`.
///
/// ```
/// use llm_failover::protocol::anthropic_messages::estimate_tokens;
///
/// let request = serde_json::json!({
///     "max_tokens": 100,
///     "messages": [{"role": "user", "content": "Say hi in forty characters, not more."}],
/// });
/// assert_eq!(estimate_tokens(&request), 100 + 67 / 4);
/// ```
#[must_use]
pub fn estimate_tokens(request: &Value) -> u64 {
    super::estimate(request, &["system", "messages", "tools"], &["max_tokens"])
}

/// The tokens a Messages answer (or a stream's `message_delta`) says it used: input, output
/// and cache reads and writes.
#[must_use]
pub fn usage_tokens(answer: &Value) -> Option<u64> {
    let usage = answer.get("usage")?;
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let total = n("input_tokens")
        + n("output_tokens")
        + n("cache_read_input_tokens")
        + n("cache_creation_input_tokens");
    (total > 0).then_some(total)
}
