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

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_core::Stream;
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;

use crate::Reason;
use crate::chain::{AttemptFailure, Chunk};
use crate::classify::{Classifier, Signal};

mod resume;

pub use self::resume::{ChatResume, Prefill};

/// One provider's OpenAI-compatible base URL and key.
#[derive(Clone)]
pub struct Endpoint {
    provider: Arc<str>,
    base_url: String,
    api_key: Option<HeaderValue>,
    /// A key sent as a query parameter (name, key), for providers that take it in the URL.
    query_key: Option<(String, String)>,
    prefill: Prefill,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("base_url", &redacted_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("prefill", &self.prefill)
            .field(
                "query_key",
                &self
                    .query_key
                    .as_ref()
                    .map(|(name, _)| format!("{name}=<redacted>")),
            )
            .finish()
    }
}

impl Endpoint {
    /// An endpoint for `provider` (the name used in routes and metrics) at `base_url`, the
    /// URL that `/chat/completions` is appended to (e.g. `https://api.openai.com/v1`). Its
    /// prefill support is what [`Prefill::for_base_url`] knows of the host.
    #[must_use]
    pub fn new(provider: &str, base_url: &str) -> Self {
        Self {
            provider: provider.into(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: None,
            query_key: None,
            prefill: Prefill::for_base_url(base_url),
        }
    }

    /// Whether and how the provider continues an assistant prefill, for stream resume
    /// ([`ChatResume`]). Default: [`Prefill::for_base_url`].
    #[must_use]
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }

    /// The provider's prefill support (see [`prefill`](Self::prefill)).
    #[must_use]
    pub fn prefill_mode(&self) -> Prefill {
        self.prefill
    }

    /// The API key, sent as `Authorization: Bearer …` and marked sensitive, so it is never
    /// printed by `Debug` of this endpoint or of the request. Default: none. A key that is
    /// not a valid header value is ignored.
    #[must_use]
    pub fn api_key(mut self, key: impl AsRef<str>) -> Self {
        self.api_key = HeaderValue::from_str(&format!("Bearer {}", key.as_ref().trim()))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        self
    }

    /// A key sent as the query parameter `name` (`?key=…`), for providers that take it in
    /// the URL. Errors built by this module drop the URL, so the key does not reach messages
    /// or logs. Default: none.
    #[must_use]
    pub fn api_key_query(mut self, name: &str, key: impl Into<String>) -> Self {
        self.query_key = Some((name.to_owned(), key.into()));
        self
    }

    /// The provider's name.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }
}

/// A URL without its user info and query, which may carry keys.
fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("redacted");
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable>".to_owned(),
    }
}

/// A shared HTTP client for chat calls: TCP_NODELAY on, a connect timeout, no overall
/// timeout (the route's deadlines bound each attempt).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    classifier: Arc<Classifier>,
}

impl Client {
    /// A client with a 5 s connect timeout.
    ///
    /// # Errors
    ///
    /// The TLS backend could not be initialised.
    pub fn new() -> Result<Self, reqwest::Error> {
        Self::with_connect_timeout(Duration::from_secs(5))
    }

    /// A client with the given connect timeout (a host that does not answer SYNs costs this
    /// much, not a whole attempt timeout).
    ///
    /// # Errors
    ///
    /// The TLS backend could not be initialised.
    pub fn with_connect_timeout(connect: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            classifier: Arc::default(),
        })
    }

    /// Classifies failures with `classifier` (its per-provider overrides apply to the
    /// endpoint's provider). Default: the built-in rules ([`classify`](crate::classify::classify)).
    #[must_use]
    pub fn with_classifier(mut self, classifier: Arc<Classifier>) -> Self {
        self.classifier = classifier;
        self
    }

    fn transport(&self, endpoint: &Endpoint) -> impl Fn(reqwest::Error) -> AttemptFailure {
        let classifier = Arc::clone(&self.classifier);
        let provider = Arc::clone(&endpoint.provider);
        move |e| AttemptFailure::from_reqwest_with(e, &classifier, Some(&provider))
    }

    fn post(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let mut body = request.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("model".into(), Value::from(model));
            obj.insert("stream".into(), Value::from(stream));
        }
        let url = format!("{}/chat/completions", endpoint.base_url);
        let url = match (&endpoint.query_key, reqwest::Url::parse(&url)) {
            (Some((name, key)), Ok(mut parsed)) => {
                parsed.query_pairs_mut().append_pair(name, key);
                parsed.to_string()
            }
            _ => url,
        };
        let mut req = self.http.post(url).json(&body);
        if let Some(key) = &endpoint.api_key {
            req = req.header(AUTHORIZATION, key.clone());
        }
        req
    }

    /// Sends a chat request; a transport failure or a non-2xx answer is the attempt's failure.
    async fn send(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
        stream: bool,
    ) -> Result<reqwest::Response, AttemptFailure> {
        let resp = self
            .post(endpoint, model, request, stream)
            .send()
            .await
            .map_err(self.transport(endpoint))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(AttemptFailure::from_response_with(resp, &endpoint.provider, &self.classifier).await)
    }

    /// One non-streaming chat completion: the upstream's JSON answer, with `model` set to the
    /// target's model and `stream` to false.
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
        let resp = self.send(endpoint, model, request, false).await?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| cut_short(e).with_status(status))?;
        let Ok(answer) = serde_json::from_str::<Value>(&body) else {
            return Err(AttemptFailure::new(Reason::EmptyResponse).with_status(status));
        };
        if answer.get("error").is_some() {
            // Some gateways answer 200 with an error object: the object says what happened
            // (the 200 only that the gateway answered), as an error event in a stream does.
            let c = self.classifier.classify(
                &Signal::new()
                    .body(body.as_str())
                    .provider(endpoint.provider()),
            );
            return Err(AttemptFailure::classified(&c).with_status(status));
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
    /// carries the first token (see the [module docs](self)).
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
        let resp = self.send(endpoint, model, request, true).await?;
        Ok(ChatStream {
            events: Box::pin(resp.bytes_stream().eventsource()),
            provider: Arc::clone(&endpoint.provider),
            classifier: Arc::clone(&self.classifier),
            pending: Vec::new(),
            finished: false,
            answered: false,
            done: false,
        })
    }
}

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
    let completion = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64))
        .unwrap_or(0);
    prompt_tokens(request) + completion
}

/// A request's prompt tokens, estimated: its messages, tools and schema as JSON, over 4.
fn prompt_tokens(request: &Value) -> u64 {
    /// Counts the bytes written to it.
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut bytes = Count(0);
    for key in ["messages", "tools", "response_format"] {
        if let Some(v) = request.get(key) {
            // Writing to a counter cannot fail.
            let _ = serde_json::to_writer(&mut bytes, v);
        }
    }
    bytes.0 / 4
}

/// The `usage.total_tokens` of a chat answer (or of a stream's final chunk), if it has one.
#[must_use]
pub fn usage_tokens(answer: &Value) -> Option<u64> {
    answer.get("usage")?.get("total_tokens")?.as_u64()
}

/// A transport failure while reading the body of a 2xx answer. The answer had started, so it
/// was cut short: `stream_interrupted`, which fails over. The classifier would call the same
/// error ("connection closed before message completed") `connection_reset`, which is for a
/// request that got no response and is retried on the same target: a retry that would pay for
/// a cut answer twice. The client sets no read timeout (the route's deadlines bound attempts),
/// so a body error here is never a timeout.
fn cut_short(err: reqwest::Error) -> AttemptFailure {
    AttemptFailure::new(Reason::StreamInterrupted).with_source(err.without_url())
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
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// The chunks of a streaming chat completion.
pub struct ChatStream {
    events: Events,
    provider: Arc<str>,
    classifier: Arc<Classifier>,
    /// Events that carry no token yet (role-only, empty), waiting for one that does.
    pending: Vec<String>,
    /// A `finish_reason` is among the pending events.
    finished: bool,
    /// A token has arrived.
    answered: bool,
    done: bool,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("provider", &self.provider)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// Reads one event into the pending chunk; true when the chunk is ready to hand out (it
    /// carries a token, a finish reason or the `[DONE]` marker).
    fn take(&mut self, data: String) -> Result<bool, AttemptFailure> {
        if data.trim().is_empty() {
            return Ok(false);
        }
        if data.trim() == "[DONE]" {
            if !self.answered {
                // The stream ended before any token: an empty answer, not a success.
                return Err(AttemptFailure::new(Reason::EmptyResponse));
            }
            self.pending.push(data);
            self.done = true;
            return Ok(true);
        }
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            return Err(AttemptFailure::new(Reason::StreamInterrupted));
        };
        if event.get("error").is_some() {
            let c = self
                .classifier
                .classify(&Signal::new().body(data.as_str()).provider(&*self.provider));
            return Err(AttemptFailure::classified(&c));
        }
        let choice = &event["choices"][0];
        if choice["finish_reason"] == "content_filter" {
            return Err(AttemptFailure::new(Reason::ContentFilter));
        }
        let finished = choice["finish_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty());
        let token = has_content(&choice["delta"]);
        if finished && !token && !self.answered {
            return Err(AttemptFailure::new(Reason::EmptyResponse));
        }
        self.answered |= token;
        self.pending.push(data);
        self.finished |= finished;
        Ok(finished || token)
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, AttemptFailure>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.events.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(EventStreamError::Transport(e)))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(cut_short(e))));
                }
                Poll::Ready(Some(Err(_))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(AttemptFailure::new(Reason::StreamInterrupted))));
                }
                Poll::Ready(Some(Ok(event))) => match this.take(event.data) {
                    Ok(false) => {}
                    Ok(true) => {
                        let chunk = ChatChunk {
                            data: std::mem::take(&mut this.pending),
                            finished: std::mem::take(&mut this.finished),
                            done: this.done,
                        };
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    Err(f) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(f)));
                    }
                },
            }
        }
    }
}
