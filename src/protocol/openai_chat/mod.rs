//! OpenAI-compatible chat calls, for use inside a route's attempts.
//!
//! Most providers (OpenAI, OpenRouter, Groq, Together, Mistral, vLLM, llama.cpp, Ollama's `/v1`)
//! speak the OpenAI chat-completions protocol. These helpers make one call to one
//! [`Endpoint`] and turn every way it can fail into an [`AttemptFailure`]: transport errors
//! through the `reqwest` error chain, non-2xx answers through their status, headers and body,
//! a 2xx without content as `empty_response`, a 2xx body cut short or a malformed stream chunk
//! as `stream_interrupted`, and an error event inside a stream as the reason its body gives.
//!
//! Streams are cut into [`ChatChunk`]s so that the chain commits on the first *token*: the
//! role-only and empty chunks some servers send first travel with the first chunk that carries
//! content (or the final one), never alone.
//!
//! ```no_run
//! # async fn demo(route: &llm_failover::chain::Route) -> Result<(), Box<dyn std::error::Error>> {
//! use llm_failover::protocol::openai_chat::{Client, Endpoint};
//!
//! let client = Client::new()?;
//! let local = Endpoint::new("local", "http://127.0.0.1:11434/v1");
//! let openai = Endpoint::new("openai", "https://api.openai.com/v1").api_key(std::env::var("OPENAI_API_KEY")?);
//! let request = serde_json::json!({"messages": [{"role": "user", "content": "Hi"}]});
//! let answer = route
//!     .call(|attempt| {
//!         let endpoint = if attempt.provider() == "local" { local.clone() } else { openai.clone() };
//!         let (client, request) = (client.clone(), request.clone());
//!         async move { client.chat(&endpoint, attempt.model(), &request).await }
//!     })
//!     .await?;
//! println!("{} answered", answer.provider);
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt as _;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::Reason;
use crate::chain::{AttemptFailure, Chunk};
use crate::classify::Classifier;

mod resume;

pub use self::resume::{ChatResume, Prefill};
pub use super::endpoint::{Client, Endpoint};
use super::sse::{self, Failing};
use super::{Api, translate};

impl Client {
    /// One non-streaming chat completion: the upstream's JSON answer, with `model` set to the
    /// target's model and `stream` to false. An endpoint that speaks another [`Api`] gets
    /// the request translated and its answer translated back (see the [protocol
    /// docs](crate::protocol#translation-between-protocols)); a request it cannot carry fails as
    /// [`AttemptFailure::ineligible`], having sent nothing.
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] for every way the call can fail, classified.
    pub async fn chat(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<Value, AttemptFailure> {
        match endpoint.api_kind() {
            Api::OpenAiChat => self.chat_native(endpoint, model, request).await,
            Api::AnthropicMessages => {
                let body = translate::chat_request_to_messages(request)
                    .map_err(AttemptFailure::ineligible)?;
                let answer = self
                    .messages_native(endpoint, model, &body, &HeaderMap::new())
                    .await?;
                Ok(translate::messages_answer_to_chat(&answer))
            }
            Api::OpenAiResponses => {
                let body = translate::chat_request_to_responses(request)
                    .map_err(AttemptFailure::ineligible)?;
                let answer = self.responses_native(endpoint, model, &body).await?;
                Ok(translate::responses_answer_to_chat(&answer))
            }
        }
    }

    /// [`chat`](Self::chat) from an OpenAI-compatible endpoint.
    pub(crate) async fn chat_native(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<Value, AttemptFailure> {
        let (status, body, answer) = self
            .answer(endpoint, CHAT_PATH, model, request, HeaderMap::new())
            .await?;
        if answer.get("error").is_some() {
            // Some gateways answer 200 with an error object: the object says what happened
            // (the 200 only that the gateway answered), as an error event in a stream does.
            return Err(self.error_in(endpoint, status, &body));
        }
        let choice = &answer["choices"][0];
        if choice["finish_reason"] == "content_filter" {
            // Azure's output filter: a 200 whose content was withheld. Not for another model.
            return Err(AttemptFailure::new(Reason::ContentFilter).with_status(status));
        }
        if !has_content(&choice["message"]) {
            return Err(AttemptFailure::new(Reason::EmptyResponse).with_status(status));
        }
        Ok(answer)
    }

    /// Opens a streaming chat completion: the chunks as they come, grouped so the first one
    /// carries the first token (see the [module docs](self)). From an endpoint that speaks
    /// another [`Api`], its events are translated into chat chunks as they come.
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] when the request fails before the stream opens.
    pub async fn chat_stream(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<ChatStream, AttemptFailure> {
        let data: Failing<String> = match endpoint.api_kind() {
            Api::OpenAiChat => Box::pin(
                self.chat_events(endpoint, model, request)
                    .await?
                    .map(|e| e.map(|e| e.data)),
            ),
            Api::AnthropicMessages => {
                let body = translate::chat_request_to_messages(request)
                    .map_err(AttemptFailure::ineligible)?;
                let events = self
                    .messages_events(endpoint, model, &body, &HeaderMap::new())
                    .await?;
                let mut chat = translate::MessagesToChat::new();
                sse::translated(
                    events,
                    move |e| Ok(chat.event(&e.event, &sse::json(&e.data)?)),
                    Vec::new,
                )
            }
            Api::OpenAiResponses => {
                let body = translate::chat_request_to_responses(request)
                    .map_err(AttemptFailure::ineligible)?;
                let events = self.responses_events(endpoint, model, &body).await?;
                let mut chat = translate::ResponsesToChat::new();
                sse::translated(
                    events,
                    move |e| Ok(chat.event(&e.event, &sse::json(&e.data)?)),
                    Vec::new,
                )
            }
        };
        Ok(ChatStream::new(data, endpoint, &self.classifier))
    }

    /// The events of a streaming chat completion from an OpenAI-compatible endpoint.
    pub(crate) async fn chat_events(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<Failing<eventsource_stream::Event>, AttemptFailure> {
        let resp = self
            .send_model(
                endpoint,
                CHAT_PATH,
                (model, Some(true)),
                request,
                HeaderMap::new(),
            )
            .await?;
        Ok(sse::events(resp))
    }
}

/// The path of chat completions, after the endpoint's base URL.
const CHAT_PATH: &str = "/chat/completions";

/// A chat request's tokens, estimated before it is sent, for the targets' tokens-per-minute
/// limits: the prompt's bytes (its `messages`, tools and schema as JSON) over 4, plus the
/// completion it may ask for (`max_completion_tokens`, else `max_tokens`, else nothing). The
/// answer's `usage` corrects it ([`AttemptContext::report_usage`](crate::chain::AttemptContext::report_usage)).
///
/// ```
/// use llm_failover::protocol::openai_chat::estimate_tokens;
///
/// let request = serde_json::json!({
///     "messages": [{"role": "user", "content": "Say hi in forty characters, not more."}],
///     "max_tokens": 100,
/// });
/// // 67 bytes of messages: 16 tokens, plus the 100 it may answer with.
/// assert_eq!(estimate_tokens(&request), 100 + 67 / 4);
/// ```
#[must_use]
pub fn estimate_tokens(request: &Value) -> u64 {
    super::estimate(request, &PROMPT, &["max_completion_tokens", "max_tokens"])
}

/// The fields of a chat request that make its prompt.
const PROMPT: [&str; 3] = ["messages", "tools", "response_format"];

/// A request's prompt tokens, estimated: its messages, tools and schema as JSON, over 4.
fn prompt_tokens(request: &Value) -> u64 {
    super::estimate(request, &PROMPT, &[])
}

/// The `usage.total_tokens` of a chat answer (or of a stream's final chunk), if it has one.
#[must_use]
pub fn usage_tokens(answer: &Value) -> Option<u64> {
    answer.get("usage")?.get("total_tokens")?.as_u64()
}

/// Does a message or delta carry content (text, a refusal or a tool call)?
fn has_content(m: &Value) -> bool {
    let text = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    text("content")
        || text("refusal")
        || text("reasoning_content")
        || m.get("tool_calls").is_some_and(|t| !t.is_null())
}

/// A group of stream events: the `data` payloads in order, as the upstream sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatChunk {
    data: Vec<String>,
    /// A `finish_reason` arrived: the answer is whole.
    finished: bool,
    /// The `[DONE]` marker arrived.
    done: bool,
}

impl ChatChunk {
    /// The `data` payloads of the events in this chunk (JSON objects, or `[DONE]`).
    #[must_use]
    pub fn data(&self) -> &[String] {
        &self.data
    }

    /// The text the chunk adds to the answer (the `delta.content` of its events).
    #[must_use]
    pub fn text(&self) -> String {
        self.data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Chunk for ChatChunk {
    fn is_final(&self) -> bool {
        self.done
    }

    fn is_complete(&self) -> bool {
        self.finished || self.done
    }

    fn usage(&self) -> Option<crate::chain::Usage> {
        // Most chunks carry no usage: only those that name it are parsed.
        self.data
            .iter()
            .filter(|d| d.contains("\"usage\""))
            .filter_map(|d| super::usage(&serde_json::from_str::<Value>(d).ok()?))
            .reduce(crate::chain::Usage::merge)
    }
}

/// The chunks of a streaming chat completion.
#[derive(Debug)]
pub struct ChatStream {
    /// The `data` of the upstream's events (translated, if it speaks another protocol).
    group: sse::Group<String>,
    /// A `finish_reason` is among the pending events.
    finished: bool,
    /// A `finish_reason` has arrived: later events (the usage chunk) go out as they come.
    whole: bool,
}

impl ChatStream {
    /// The stream of `data` payloads from `endpoint`.
    pub(crate) fn new(
        events: Failing<String>,
        endpoint: &Endpoint,
        classifier: &Arc<Classifier>,
    ) -> Self {
        ChatStream {
            group: sse::Group::new(events, endpoint, classifier),
            finished: false,
            whole: false,
        }
    }

    /// Reads one event into the pending chunk; true when the chunk is ready to hand out (it
    /// carries a token, a finish reason or the `[DONE]` marker, or comes after the finish).
    fn take(&mut self, data: String) -> Result<bool, AttemptFailure> {
        if data.trim().is_empty() {
            return Ok(false);
        }
        if data.trim() == "[DONE]" {
            if !self.group.answered {
                // The stream ended before any token: an empty answer, not a success.
                return Err(AttemptFailure::new(Reason::EmptyResponse));
            }
            self.group.pending.push(data);
            self.group.done = true;
            return Ok(true);
        }
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            return Err(AttemptFailure::new(Reason::StreamInterrupted));
        };
        if event.get("error").is_some() {
            return Err(self.group.failure(&data));
        }
        let choice = &event["choices"][0];
        if choice["finish_reason"] == "content_filter" {
            return Err(AttemptFailure::new(Reason::ContentFilter));
        }
        let finished = choice["finish_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty());
        let token = has_content(&choice["delta"]);
        if finished && !token && !self.group.answered {
            return Err(AttemptFailure::new(Reason::EmptyResponse));
        }
        self.group.answered |= token;
        self.group.pending.push(data);
        self.finished |= finished;
        // After the finish nothing is held back: there is no first token to wait for, and a
        // server that never sends `[DONE]` must not take its usage chunk with it.
        let after_finish = self.whole;
        self.whole |= finished;
        Ok(finished || token || after_finish)
    }
}

impl sse::Grouped for ChatStream {
    type Event = String;
    type Chunk = ChatChunk;

    fn group(&mut self) -> &mut sse::Group<String> {
        &mut self.group
    }

    fn take(&mut self, event: String) -> Result<bool, AttemptFailure> {
        ChatStream::take(self, event)
    }

    fn chunk(&mut self) -> ChatChunk {
        ChatChunk {
            data: self.group.take_pending(),
            finished: std::mem::take(&mut self.finished),
            done: self.group.done,
        }
    }

    fn rest(&mut self) -> Option<ChatChunk> {
        self.group.holds_rest().then(|| self.chunk())
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, AttemptFailure>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        sse::poll_grouped(self.get_mut(), cx)
    }
}
