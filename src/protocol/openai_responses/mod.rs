//! OpenAI Responses calls (`POST {base_url}/responses`), for use inside a route's attempts.
//!
//! The same contract as [`openai_chat`](super::openai_chat): one call to one [`Endpoint`],
//! every way it fails turned into an [`AttemptFailure`]. An endpoint of
//! [`Api::OpenAiResponses`] gets the request as it is (with `model` and `stream` set); an
//! endpoint of another API gets it translated through chat completions
//! ([`translate`]: Responses to chat, and on to Anthropic Messages for an
//! Anthropic endpoint), and its answer and events translated back.
//!
//! What is a failure, beyond the status and body of a non-2xx answer:
//!
//! * a 2xx whose body is not a response, or whose output has no content: `empty_response`;
//!   a 2xx with `status: "failed"` or an `error` object: the reason its error gives;
//!   `status: "incomplete"` for `content_filter`: `content_filter` (not for another model);
//! * in a stream, a `response.failed` or `error` event: the reason its error gives; data that
//!   is not JSON, or a body cut short: `stream_interrupted`; a stream that ends its response
//!   without a token: `empty_response`.
//!
//! # State
//!
//! The Responses API keeps state on the provider: `previous_response_id`, `conversation`,
//! stored prompts, files. A request that depends on it ([`translate::stateful`]) can only be
//! served by the provider that holds that state, so it is never translated for a target of
//! another API (such a target is skipped as ineligible, naming the field); the proxy also
//! sends a `previous_response_id` only to the provider that answered it, when it saw that
//! answer.
//!
//! A stream is cut into [`ResponsesChunk`]s so that the chain commits on the first *token*
//! (a text, refusal, reasoning or function-argument delta, or the start of a function call):
//! `response.created` and the events that open an output item travel with it. A chunk is
//! complete and final at `response.completed` or `response.incomplete`.
//!
//! ```no_run
//! # async fn demo(route: &llm_failover::chain::Route) -> Result<(), Box<dyn std::error::Error>> {
//! use llm_failover::protocol::{Api, Client, Endpoint};
//!
//! let client = Client::new()?;
//! let openai = Endpoint::new("openai", "https://api.openai.com/v1")
//!     .api(Api::OpenAiResponses)
//!     .api_key(std::env::var("OPENAI_API_KEY")?);
//! let request = serde_json::json!({"input": "Hi", "max_output_tokens": 256});
//! let answer = route
//!     .call(|attempt| {
//!         let (client, openai, request) = (client.clone(), openai.clone(), request.clone());
//!         async move { client.responses(&openai, attempt.model(), &request).await }
//!     })
//!     .await?;
//! println!("{} answered: {}", answer.provider, answer.value["output"][0]["content"][0]["text"]);
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt as _;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::endpoint::{Client, Endpoint};
use super::sse::{self, Failing};
use super::{Api, translate};
use crate::Reason;
use crate::chain::{AttemptFailure, Chunk};
use crate::classify::Classifier;

impl Client {
    /// One non-streaming Responses call: the upstream's response, with `model` set to the
    /// target's model and `stream` to false. An endpoint that speaks another [`Api`] gets the
    /// request translated and its answer translated back (see the [protocol
    /// docs](crate::protocol#translation-between-protocols)); a request it cannot carry (one
    /// that depends on state kept by a Responses provider, or asks for what the other API
    /// lacks) fails as [`AttemptFailure::ineligible`], having sent nothing.
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] for every way the call can fail, classified (see the [module
    /// docs](self)).
    pub async fn responses(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<Value, AttemptFailure> {
        match endpoint.api_kind() {
            Api::OpenAiResponses => self.responses_native(endpoint, model, request).await,
            Api::OpenAiChat => {
                let body = to_chat(request)?;
                let answer = self.chat_native(endpoint, model, &body).await?;
                Ok(translate::chat_answer_to_responses(&answer))
            }
            Api::AnthropicMessages => {
                let body = translate::chat_request_to_messages(&to_chat(request)?)
                    .map_err(AttemptFailure::ineligible)?;
                let answer = self
                    .messages_native(endpoint, model, &body, &HeaderMap::new())
                    .await?;
                Ok(translate::chat_answer_to_responses(
                    &translate::messages_answer_to_chat(&answer),
                ))
            }
        }
    }

    /// [`responses`](Self::responses) from an OpenAI Responses endpoint.
    pub(crate) async fn responses_native(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<Value, AttemptFailure> {
        let (status, _, answer) = self
            .answer(endpoint, RESPONSES_PATH, model, request, HeaderMap::new())
            .await?;
        if answer["status"] == "failed" || answer.get("error").is_some_and(|e| !e.is_null()) {
            return Err(self.error_in(endpoint, status, &error_body(&answer["error"])));
        }
        if answer["incomplete_details"]["reason"] == "content_filter" {
            return Err(AttemptFailure::new(Reason::ContentFilter).with_status(status));
        }
        let output = answer["output"].as_array();
        if !output.is_some_and(|items| items.iter().any(item_has_content)) {
            return Err(AttemptFailure::new(Reason::EmptyResponse).with_status(status));
        }
        Ok(answer)
    }

    /// Opens a streaming Responses call: its events as they come, grouped so the first chunk
    /// carries the first token (see the [module docs](self)). From an endpoint that speaks
    /// another [`Api`], its events are translated into the Responses API's as they come.
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] when the request fails before the stream opens.
    pub async fn responses_stream(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<ResponsesStream, AttemptFailure> {
        let events: Failing<(String, String)> = match endpoint.api_kind() {
            Api::OpenAiResponses => Box::pin(
                self.responses_events(endpoint, model, request)
                    .await?
                    .map(|e| e.map(|e| (e.event, e.data))),
            ),
            Api::OpenAiChat => {
                let body = to_chat(request)?;
                let events = self.chat_events(endpoint, model, &body).await?;
                sse::through_chat(events, |e| Ok(vec![e.data.clone()]), from_chat(model))
            }
            Api::AnthropicMessages => {
                let body = translate::chat_request_to_messages(&to_chat(request)?)
                    .map_err(AttemptFailure::ineligible)?;
                let events = self
                    .messages_events(endpoint, model, &body, &HeaderMap::new())
                    .await?;
                let mut chat = translate::MessagesToChat::new();
                let to_chat = move |e: &eventsource_stream::Event| {
                    Ok(chat.event(&e.event, &sse::json(&e.data)?))
                };
                sse::through_chat(events, to_chat, from_chat(model))
            }
        };
        Ok(ResponsesStream::new(events, endpoint, &self.classifier))
    }

    /// The events of a streaming Responses call from an OpenAI Responses endpoint.
    pub(crate) async fn responses_events(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<Failing<eventsource_stream::Event>, AttemptFailure> {
        let resp = self
            .send_model(
                endpoint,
                RESPONSES_PATH,
                (model, Some(true)),
                request,
                HeaderMap::new(),
            )
            .await?;
        Ok(sse::events(resp))
    }
}

/// Responses events written from chat payloads, for a client of the Responses API.
fn from_chat(model: &str) -> sse::FromChat<translate::ChatToResponses> {
    sse::FromChat {
        writer: translate::ChatToResponses::new(model),
        data: translate::ChatToResponses::data,
        end: translate::ChatToResponses::end,
    }
}

/// The path of the Responses API, after the endpoint's base URL.
const RESPONSES_PATH: &str = "/responses";

/// A Responses request as a chat request, or why it cannot be one (ineligible).
fn to_chat(request: &Value) -> Result<Value, AttemptFailure> {
    translate::responses_request_to_chat(request).map_err(AttemptFailure::ineligible)
}

/// An `error` object (of a failed response, or of an `error` event) as the error body the
/// classifier reads: `{"error": error}`.
fn error_body(error: &Value) -> String {
    json!({ "error": error }).to_string()
}

/// Does an output item of a response carry content?
fn item_has_content(item: &Value) -> bool {
    let text = |v: &Value, k: &str| v[k].as_str().is_some_and(|t| !t.is_empty());
    match item["type"].as_str() {
        Some("message") => item["content"]
            .as_array()
            .is_some_and(|parts| parts.iter().any(|p| text(p, "text") || text(p, "refusal"))),
        Some("reasoning") => item["summary"]
            .as_array()
            .is_some_and(|s| s.iter().any(|p| text(p, "text"))),
        Some(_) => true,
        None => false,
    }
}

/// The stream events that carry a token when their `delta` is not empty.
const DELTAS: [&str; 5] = [
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
];

/// The events that end a response: its answer is whole.
const TERMINAL: [&str; 2] = ["response.completed", "response.incomplete"];

/// A group of stream events: `(event name, data)` in order, as the upstream sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsesChunk {
    events: Vec<(String, String)>,
    /// `response.completed` or `response.incomplete` arrived: the answer is whole.
    done: bool,
}

impl ResponsesChunk {
    /// The events in this chunk: `(event name, data)`.
    #[must_use]
    pub fn events(&self) -> &[(String, String)] {
        &self.events
    }

    /// The text the chunk adds to the answer (its `response.output_text.delta`s).
    #[must_use]
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter(|(name, _)| name == DELTAS[0])
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["delta"].as_str().map(str::to_owned))
            .collect()
    }

    /// The response's id, if this chunk holds `response.created`.
    #[must_use]
    pub fn response_id(&self) -> Option<String> {
        self.events
            .iter()
            .filter(|(name, _)| name == "response.created")
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| v["response"]["id"].as_str().map(str::to_owned))
    }
}

impl Chunk for ResponsesChunk {
    fn is_final(&self) -> bool {
        self.done
    }

    fn is_complete(&self) -> bool {
        self.done
    }

    fn usage(&self) -> Option<crate::chain::Usage> {
        self.events
            .iter()
            .filter(|(name, _)| TERMINAL.contains(&name.as_str()))
            .filter_map(|(_, d)| super::usage(&serde_json::from_str::<Value>(d).ok()?))
            .reduce(crate::chain::Usage::merge)
    }
}

/// The chunks of a streaming Responses answer.
#[derive(Debug)]
pub struct ResponsesStream {
    /// The upstream's events as `(name, data)` (translated, if it speaks another protocol).
    group: sse::Group<(String, String)>,
}

impl ResponsesStream {
    /// The stream of `(event name, data)` from `endpoint`.
    pub(crate) fn new(
        events: Failing<(String, String)>,
        endpoint: &Endpoint,
        classifier: &Arc<Classifier>,
    ) -> Self {
        Self {
            group: sse::Group::new(events, endpoint, classifier),
        }
    }

    /// Reads one event into the pending chunk; true when the chunk is ready to hand out (it
    /// carries a token or ends the response).
    fn take(&mut self, (name, data): (String, String)) -> Result<bool, AttemptFailure> {
        if data.trim().is_empty() {
            return Ok(false);
        }
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            return Err(AttemptFailure::new(Reason::StreamInterrupted));
        };
        // The data's `type` names the event; the SSE name is the same, or absent.
        let kind = event["type"].as_str().unwrap_or(name.as_str());
        match kind {
            "error" => {
                // The event's own fields are the error (`code`, `message`, `param`), or an
                // `error` object inside it.
                let error = match event.get("error").filter(|e| e.is_object()) {
                    Some(e) => e.clone(),
                    None => {
                        let mut e = event.clone();
                        if let Some(fields) = e.as_object_mut() {
                            fields.remove("type");
                            fields.remove("sequence_number");
                        }
                        e
                    }
                };
                return Err(self.group.failure(&error_body(&error)));
            }
            "response.failed" => {
                return Err(self.group.failure(&error_body(&event["response"]["error"])));
            }
            "response.incomplete"
                if event["response"]["incomplete_details"]["reason"] == "content_filter" =>
            {
                return Err(AttemptFailure::new(Reason::ContentFilter));
            }
            _ => {}
        }
        let token = if DELTAS.contains(&kind) {
            event["delta"].as_str().is_some_and(|d| !d.is_empty())
        } else {
            kind == "response.output_item.added" && event["item"]["type"] == "function_call"
        };
        let done = TERMINAL.contains(&kind);
        if done && !token && !self.group.answered {
            return Err(AttemptFailure::new(Reason::EmptyResponse));
        }
        self.group.answered |= token;
        // Named as the data says, so the client reads one name whatever the upstream sent.
        let name = if name == kind { name } else { kind.to_owned() };
        self.group.pending.push((name, data));
        self.group.done |= done;
        Ok(token || done)
    }
}

impl sse::Grouped for ResponsesStream {
    type Event = (String, String);
    type Chunk = ResponsesChunk;

    fn group(&mut self) -> &mut sse::Group<(String, String)> {
        &mut self.group
    }

    fn take(&mut self, event: (String, String)) -> Result<bool, AttemptFailure> {
        ResponsesStream::take(self, event)
    }

    fn chunk(&mut self) -> ResponsesChunk {
        ResponsesChunk {
            events: self.group.take_pending(),
            done: self.group.done,
        }
    }
}

impl Stream for ResponsesStream {
    type Item = Result<ResponsesChunk, AttemptFailure>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        sse::poll_grouped(self.get_mut(), cx)
    }
}

/// A Responses request's tokens, estimated before it is sent, for the targets'
/// tokens-per-minute limits: its `instructions`, `input`, `tools` and `text` as JSON over 4,
/// plus its `max_output_tokens`.
///
/// ```
/// use llm_failover::protocol::openai_responses::estimate_tokens;
///
/// let request = serde_json::json!({
///     "max_output_tokens": 100,
///     "input": "Say hi in forty characters, not more, please.",
/// });
/// // 47 bytes of input (with its quotes): 11 tokens, plus the 100 it may answer with.
/// assert_eq!(estimate_tokens(&request), 100 + 47 / 4);
/// ```
#[must_use]
pub fn estimate_tokens(request: &Value) -> u64 {
    super::estimate(
        request,
        &["instructions", "input", "tools", "text"],
        &["max_output_tokens"],
    )
}

/// The `usage.total_tokens` of a response (or of a stream's terminal event), if it has one.
///
/// ```
/// use llm_failover::protocol::openai_responses::usage_tokens;
///
/// let answer = serde_json::json!({"usage": {"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}});
/// assert_eq!(usage_tokens(&answer), Some(12));
/// ```
#[must_use]
pub fn usage_tokens(answer: &Value) -> Option<u64> {
    answer
        .get("usage")
        .or_else(|| answer.get("response")?.get("usage"))?
        .get("total_tokens")?
        .as_u64()
}
