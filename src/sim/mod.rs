//! A simulated provider that speaks OpenAI's chat completions, Responses API and embeddings
//! and Anthropic's Messages API, with injectable faults, for the failover chain's integration tests, the proxy's tests,
//! `llm-failover demo` and the benchmarks. No code path that carries real traffic uses it.
//!
//! ```
//! use llm_failover::sim::{ANSWER, Fault, Sim};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Sim::builder().fault("flaky", Fault::ServerErrorOnce).start().await?;
//! let url = format!("{}/chat/completions", sim.base_url());
//! let request = serde_json::json!({"model": "flaky", "messages": [{"role": "user", "content": "hi"}]});
//! let client = reqwest::Client::new();
//!
//! let first = client.post(&url).json(&request).send().await?;
//! assert_eq!(first.status(), 500);
//! let second: serde_json::Value = client.post(&url).json(&request).send().await?.json().await?;
//! assert_eq!(second["choices"][0]["message"]["content"], ANSWER);
//! assert_eq!(sim.attempts("flaky"), 2);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Why a simulator
//!
//! Failover is only as good as its handling of the ways providers actually fail, and those
//! ways are hard to produce on demand against a real provider: a 529, a stream cut after three
//! tokens, a connection reset before the status line, a host that refuses connections for ten
//! seconds and then recovers. The sim produces each of them on loopback, deterministically,
//! with the status codes, headers and bodies real providers send, so the classifier, breakers
//! and chain are tested against the wire and not against mocks of a client library.
//!
//! Every healthy answer is the same text, [`ANSWER`], streamed as one chunk per word
//! ([`answer_tokens`]); a test that reassembles a response can tell a complete answer from a
//! truncated one by comparing it with [`ANSWER`]. The sim counts the requests it sees per model
//! ([`Sim::attempts`], every endpoint together), so a test can assert how many attempts a
//! chain made on each target, and keeps the headers and the JSON body of the last request per
//! model ([`Sim::last_headers`], [`Sim::last_authorization`], [`Sim::last_request`]), so a
//! test can assert which key reached the provider (`Authorization`, or Anthropic's
//! `x-api-key`), which `anthropic-version` and `anthropic-beta` it sent, and what the request
//! said.
//!
//! A request whose last message is an assistant message (a "prefill": the start of the
//! answer, for the model to continue) is how a proxy resumes a stream that broke after its
//! first tokens on another target. Providers treat prefills differently, and each sim plays
//! one of them ([`Prefill`]): by default it continues, so the text a client already has plus
//! the continuation is [`ANSWER`] exactly; it can also ignore the prefill (OpenAI) or reject
//! it with a 400 (Anthropic models without prefill support). The mode applies to chat and
//! messages; continuing is also what Anthropic's Messages API does natively. The Responses
//! API has no prefill: there a trailing assistant message is history, and the mode is not
//! consulted.
//!
//! The Responses API keeps state: a later request continues a stored response by naming it
//! in `previous_response_id`. The sim keeps the ids of the responses it answered, so a
//! request that names one it never gave (or gave with `store: false`, or that another sim
//! gave) gets OpenAI's 400 `previous_response_not_found`, as a request failed over to
//! another provider would ([`Sim::knows_response`]).
//!
//! # Endpoints
//!
//! * `POST /v1/chat/completions`: reads `model`, `messages` (the content of each, for the
//!   prompt's size, and the last one, for a prefill: role `assistant` and non-empty text
//!   content, a string or text parts; for [`Fault::ToolCall`], role `tool`), `stream`,
//!   `stream_options.include_usage`, `tools` (the first one's name and `parameters`, for
//!   [`Fault::ToolCall`]) and `max_tokens` (or `max_completion_tokens`; a limit below the
//!   answer's length, or the continuation's, ends it early with `finish_reason` `length`).
//!   Other fields (`temperature`, `continue_final_message`, ...) do not change the answer, but
//!   are kept with the whole body for [`Sim::last_request`]. A body that is not such a request gets a 400 OpenAI error and
//!   counts in [`Sim::total_attempts`] only.
//!
//!   A stream with `"stream_options": {"include_usage": true}` sends OpenAI's usage chunk
//!   after the `finish_reason` chunk and before `data: [DONE]`: `choices` empty, `usage` with
//!   `prompt_tokens` (the words of every string content, a prefill included),
//!   `completion_tokens` (the token chunks sent) and their sum. A stream that breaks (cut,
//!   stall, mid-stream error) never sends it. A response that is not streamed always carries
//!   `usage`.
//! * `POST /v1/messages`: Anthropic's Messages API, with the same faults. Reads `model`,
//!   `messages` (string or content-block contents), `system` (for the prompt's size),
//!   `max_tokens` (required, as Anthropic requires it; a limit below the answer's length ends it
//!   with `stop_reason` `max_tokens`), `stream` and `tools`. Validation follows Anthropic: a
//!   missing `model`, `messages` or `max_tokens`, an empty `messages`, a role other than
//!   `user`/`assistant`, or a trailing assistant message that ends with white space is a 400
//!   `invalid_request_error` (`"max_tokens: Field required"`, ...); a body over the limit is a
//!   413 `request_too_large`. `stop_sequences` is kept but not applied (the chat side reads no
//!   `stop` either), so `stop_sequence` is always `null`. Every response carries a
//!   `request-id` header (`req_sim<n>`).
//!
//!   An answer is a `message` (`id` `msg_sim<n>`, one `text` block, `stop_reason` `end_turn`,
//!   `usage` with `input_tokens`, `output_tokens` and zero cache counts). A stream is
//!   Anthropic's named events, `event: NAME\ndata: JSON\n\n`: `message_start` (the message
//!   with empty content and `usage.output_tokens` 1, as Anthropic reports it there),
//!   `content_block_start`, `ping`, one `content_block_delta` (`text_delta`) per token,
//!   `content_block_stop`, `message_delta` (`stop_reason`, `usage.output_tokens`: the deltas
//!   sent as valid JSON), `message_stop`.
//! * `POST /v1/messages/count_tokens`: Anthropic's token counting. Reads and validates a
//!   request as `/v1/messages` does, minus `max_tokens` (not required, not read); `stream`
//!   and `tools` change nothing, and a trailing assistant message is counted, never
//!   continued or rejected ([`Prefill`] is not consulted). Answers `{"input_tokens": N}`, N
//!   the words of `system` and of every message's text: the `usage.input_tokens` that
//!   `/v1/messages` reports for the same messages. Errors, their statuses and the
//!   `request-id` header are the Messages endpoint's; it counts in [`Sim::attempts`] and
//!   keeps [`Sim::last_headers`] and [`Sim::last_request`] as every endpoint does.
//! * `POST /v1/embeddings`: OpenAI's embeddings, with the same faults (errors in OpenAI's
//!   shapes; the delivery faults cut, stall or truncate the JSON body). Reads `model`, `input`
//!   (a string, an array of strings, or token ids), `dimensions` (default
//!   [`DEFAULT_DIMENSIONS`]) and `encoding_format` (`float` or `base64`). Each vector is a unit
//!   vector that depends only on its input's text, so two sims answer alike, as two hosts of
//!   one model do; `usage` counts the inputs' words.
//! * `POST /v1/responses`: OpenAI's Responses API, with the same faults. Reads `model`
//!   (required), `input` (a string, or input items: messages with a `role` and a string or
//!   `input_text`/`output_text` parts, `function_call` and `function_call_output` items;
//!   other item kinds pass unread), `instructions` (counted in the prompt's size), `stream`,
//!   `tools` (function tools, flat: the first one's `name` and `parameters`, for
//!   [`Fault::ToolCall`]), `max_output_tokens` (any positive limit, though OpenAI's minimum
//!   is 16, so a test can cut the short answer: a limit below the answer's length ends it
//!   with `status` `incomplete`, `incomplete_details.reason` `max_output_tokens`),
//!   `previous_response_id` (must be a response the sim keeps, else OpenAI's 400
//!   `previous_response_not_found`; checked after the model's error faults, like a
//!   rejected prefill) and `store` (default true: keep this answer's id). The Response
//!   object echoes the request's `instructions`, `temperature`, `tools`, `metadata`, ...
//!   with OpenAI's defaults. A malformed body (not an object, no `model`, an `input` or
//!   item of the wrong shape, a role other than `user`, `assistant`, `system`, `developer`,
//!   a function tool without a `name`, ...) is a 400 OpenAI error and counts in
//!   [`Sim::total_attempts`] only. Headers are the chat endpoint's.
//!
//!   An answer is a `response` (`id` `resp_sim<n>`, `status` `completed`, `output` one
//!   `message` item with one `output_text` part, `usage` with `input_tokens`,
//!   `output_tokens` and their details), or for a tool call one `function_call` item
//!   (`fc_sim<n>`, `call_id` `call_sim<n>`). A stream is named events,
//!   `event: TYPE\ndata: JSON\n\n`, each `data` carrying its `type` and a `sequence_number`
//!   from 0: `response.created` and `response.in_progress` (the response in progress, no
//!   output), `response.output_item.added`, `response.content_part.added`, one
//!   `response.output_text.delta` per token, `response.output_text.done`,
//!   `response.content_part.done`, `response.output_item.done`, then `response.completed`
//!   (or `response.incomplete`) with the whole response and its usage. A tool call streams
//!   `response.output_item.added` (arguments empty), `response.function_call_arguments.delta`
//!   pieces, `response.function_call_arguments.done` (the arguments and the name) and
//!   `response.output_item.done`. There is no `data: [DONE]`: OpenAI sends none here.
//! * `GET /v1/models`: `sim-ok` and the models with a configured fault.
//! * Anything else: a 404 OpenAI error.
//!
//! # One fault table, three protocols
//!
//! Each fault means the same on every endpoint; only the words differ. The table that decides
//! what a fault does is protocol-neutral, and each endpoint renders its outcome (embeddings
//! word errors as chat does, and have no stream; token counting words them as messages does,
//! and generates nothing, so the faults of an answer's delivery leave its count whole):
//!
//! | fault | `/v1/chat/completions` | `/v1/messages` | `/v1/responses` | `/v1/messages/count_tokens` |
//! |---|---|---|---|---|
//! | [`Fault::RateLimit`] | 429 `rate_limit_exceeded`; with a wait, `retry-after`, `retry-after-ms` | 429 `rate_limit_error`; with a wait, `retry-after` and `anthropic-ratelimit-requests-remaining: 0`, `-reset` (RFC 3339) | as chat | as messages |
//! | [`Fault::Status`] 503, 529 | 503 `service_unavailable`; 529 `overloaded_error` | 529 `overloaded_error` | as chat | as messages |
//! | [`Fault::Status`] 500, other 5xx | 500/5xx `server_error` | 500/5xx `api_error` | as chat | as messages |
//! | [`Fault::Status`] 401, 403, 404, 413, other 4xx | OpenAI bodies (`invalid_api_key`, `model_not_found`, ...) | `authentication_error`, `permission_error`, `not_found_error`, `request_too_large`, `invalid_request_error` (402: `billing_error`) | as chat | as messages |
//! | [`Fault::ContextOverflow`] | 400 `context_length_exceeded` | 400 "prompt is too long: N tokens > 200000 maximum" | 400 `context_length_exceeded`, `param` `input`: "Your input exceeds the context window of this model. ..." | as messages |
//! | [`Fault::ContentFilter`] | 400 `content_filter` | 400 "Output blocked by content filtering policy" | as chat | as messages |
//! | [`Prefill::Reject`] | Anthropic's 400 | Anthropic's 400 | no prefill: not consulted | not consulted: a prefill is counted |
//! | unknown `previous_response_id` | | | 400 `previous_response_not_found` (replaces the answer, as a rejected prefill does) | |
//! | [`Fault::CutAfter`], [`Fault::StallAfter`] | n token chunks, then cut / silence | `message_start` ... n `content_block_delta`s, then cut / silence: no `message_stop` | `response.created` ... n `response.output_text.delta`s, then cut / silence: no `response.completed` | the count, whole |
//! | [`Fault::MalformedAfter`] | a `data:` line that is not JSON | an `event: content_block_delta` whose data is not JSON | an `event: response.output_text.delta` whose data is not JSON (it takes a `sequence_number`), then the rest | the count, whole |
//! | [`Fault::ErrorAfter`] | OpenRouter's `data: {"error": ...}` chunk, clean end | `event: error` `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, clean end | `event: response.failed`, the response with `status` `failed` and `error` `{"code":"server_error",...}` (an upstream server error, as on chat), clean end; not streaming, a 200 with that failed response | the count, whole |
//! | [`Fault::NoDone`] | no `data: [DONE]` | no `message_stop` | every event up to `response.output_item.done`, no `response.completed` | the count, whole |
//! | [`Fault::FirstTokenDelay`] | the first chunk waits | the first `content_block_delta` waits (`message_start`, `content_block_start` and `ping` come at once) | the first delta waits (the four opening events come at once) | the count, at once |
//! | [`Fault::ToolCall`] | `tool_calls`, `finish_reason` `tool_calls` | a `tool_use` block, `stop_reason` `tool_use` | a `function_call` output item | the count |
//! | [`Fault::Silent`], [`Fault::ResetBeforeHeaders`], [`Fault::ServerErrorOnce`] | the same on all | | | |
//!
//! # Faults
//!
//! A model's fault is the one configured for it ([`SimBuilder::fault`], [`Sim::set_fault`]),
//! else the one its name asks for, else none: unknown models are healthy. [`Fault`] documents
//! what each one sends. Faults live in one enum and are turned into responses in one place.
//!
//! Refusing connections is not a fault of a model, since a refused connection carries no
//! model name: it is the server's state. [`Sim::set_down`] closes the listening socket
//! (connections are refused, and open connections are closed; the port stays bound, so no
//! other server is given it meanwhile) and [`Sim::down_for`] does so for
//! a while, then binds the same port again: a host that is powered off, then back. A test that
//! needs one provider down and another up runs two sims; a sim is cheap.
//!
//! # Model names
//!
//! Model names that start with `sim-` pick their fault without configuration, so a proxy
//! config or a chain under test can name its failures. Durations are `<n>ms`, `<n>s` or a bare
//! `<n>` (seconds); counts are tokens.
//!
//! | model name | fault |
//! |---|---|
//! | `sim-ok` (or any name without a convention) | [`Fault::None`] |
//! | `sim-429` | [`Fault::RateLimit`] without a wait |
//! | `sim-429-retry-2`, `sim-429-retry-500ms` | [`Fault::RateLimit`] with that wait |
//! | `sim-500-once` | [`Fault::ServerErrorOnce`] |
//! | `sim-503`, `sim-529`, `sim-<any 4xx or 5xx>` | [`Fault::Status`] |
//! | `sim-slow-2000ms`, `sim-slow-2s` | [`Fault::FirstTokenDelay`] |
//! | `sim-cut-3` | [`Fault::CutAfter`] |
//! | `sim-stall-3` | [`Fault::StallAfter`] |
//! | `sim-malformed-3` | [`Fault::MalformedAfter`] |
//! | `sim-error-3` | [`Fault::ErrorAfter`] |
//! | `sim-no-done` | [`Fault::NoDone`] |
//! | `sim-context` | [`Fault::ContextOverflow`] |
//! | `sim-filter` | [`Fault::ContentFilter`] |
//! | `sim-silent` | [`Fault::Silent`] |
//! | `sim-reset` | [`Fault::ResetBeforeHeaders`] |
//! | `sim-tool` | [`Fault::ToolCall`] (healthy; calls the request's first tool) |
//!
//! The names are the same on every endpoint: `sim-503` answers 503 on chat and responses and
//! 529 `overloaded_error` on messages, `sim-cut-3` cuts any stream after three tokens.
//!
//! # Sockets and tasks
//!
//! A sim listens on `127.0.0.1` on a port the OS picks ([`Sim::addr`]); tests and benches talk
//! to loopback only. Accepted sockets get `TCP_NODELAY`. One task owns the listener and every
//! connection, so [`Sim::shutdown`], or dropping the [`Sim`], closes the port and every open
//! connection (including the ones a [`Fault::Silent`] or [`Fault::StallAfter`] holds open).
//! [`Fault::ResetBeforeHeaders`] is per model: the handler asks its connection to close, and the
//! socket is dropped with `SO_LINGER` 0, which sends RST.

mod chat;
mod count_tokens;
mod embeddings;
mod fault;
mod messages;
mod respond;
mod responses;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use embeddings::DEFAULT_DIMENSIONS;
pub use fault::{Fault, Prefill};
use server::{Applied, Command, Power};

/// The text of every healthy answer.
pub const ANSWER: &str = "The simulated provider answered this request in full, ending here.";

/// The tokens a stream sends, in order: [`ANSWER`] split after each space, so they
/// concatenate to [`ANSWER`] exactly.
///
/// ```
/// use llm_failover::sim::{ANSWER, answer_tokens};
///
/// assert_eq!(answer_tokens().next(), Some("The "));
/// assert_eq!(answer_tokens().collect::<String>(), ANSWER);
/// ```
pub fn answer_tokens() -> impl Iterator<Item = &'static str> + Clone {
    ANSWER.split_inclusive(' ')
}

/// The default of [`SimBuilder::token_delay`].
pub const DEFAULT_TOKEN_DELAY: Duration = Duration::from_millis(1);

/// State shared by the handlers and the [`Sim`] handle.
#[derive(Debug)]
struct Shared {
    /// Configured faults; they take precedence over model names.
    faults: Mutex<HashMap<String, Fault>>,
    /// What the sim has seen per model.
    models: Mutex<HashMap<String, ModelState>>,
    /// What the sim does with an assistant prefill.
    prefill: Mutex<Prefill>,
    /// The ids of the Responses API answers it keeps, for `previous_response_id`.
    responses: Mutex<HashSet<String>>,
    total: AtomicU64,
    next_id: AtomicU64,
    token_delay: Duration,
}

#[derive(Debug, Default)]
struct ModelState {
    attempts: u64,
    /// The headers of the last request for this model.
    headers: Option<HeaderMap>,
    /// The JSON body of the last request for this model.
    last_request: Option<serde_json::Value>,
    /// Requests being answered now, and the most there ever were at once.
    inflight: u64,
    peak_inflight: u64,
    /// A [`Fault::ServerErrorOnce`] has answered its 500.
    failed_once: bool,
}

/// Locks a mutex; a handler that panicked cannot leave these maps inconsistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn count_request(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts an attempt on `model`, keeps its headers and body, and says what to do with
    /// it. [`Fault::ServerErrorOnce`] is resolved here: `Status(500)` the first time, `None`
    /// afterwards.
    fn attempt(&self, model: &str, headers: HeaderMap, body: serde_json::Value) -> Fault {
        let configured = lock(&self.faults).get(model).cloned();
        let fault = configured
            .or_else(|| Fault::from_model_name(model))
            .unwrap_or_default();
        let mut models = lock(&self.models);
        let state = models.entry(model.to_owned()).or_default();
        state.attempts += 1;
        state.headers = Some(headers);
        state.last_request = Some(body);
        match fault {
            Fault::ServerErrorOnce if !state.failed_once => {
                state.failed_once = true;
                Fault::Status(500)
            }
            Fault::ServerErrorOnce => Fault::None,
            fault => fault,
        }
    }

    /// A request for `model` is being answered until the guard drops.
    fn enter(self: &Arc<Self>, model: &str) -> Answering {
        let mut models = lock(&self.models);
        let state = models.entry(model.to_owned()).or_default();
        state.inflight += 1;
        state.peak_inflight = state.peak_inflight.max(state.inflight);
        Answering {
            shared: Arc::clone(self),
            model: model.to_owned(),
        }
    }

    fn prefill(&self) -> Prefill {
        *lock(&self.prefill)
    }

    fn knows_response(&self, id: &str) -> bool {
        lock(&self.responses).contains(id)
    }

    fn keep_response(&self, id: String) {
        lock(&self.responses).insert(id);
    }

    fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.faults).keys().cloned().collect();
        names.push("sim-ok".to_owned());
        names.sort();
        names.dedup();
        names
    }
}

/// A request being answered; see [`Sim::peak_inflight`].
struct Answering {
    shared: Arc<Shared>,
    model: String,
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(state) = lock(&self.shared.models).get_mut(&self.model) {
            state.inflight = state.inflight.saturating_sub(1);
        }
    }
}

/// Configures a [`Sim`]; see [`Sim::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SimBuilder {
    faults: HashMap<String, Fault>,
    prefill: Prefill,
    token_delay: Duration,
    down_for: Duration,
}

impl SimBuilder {
    /// Gives `model` this fault, whatever its name says. Default: faults come from model
    /// names ([`Fault::from_model_name`]), and other models are healthy.
    pub fn fault(mut self, model: impl Into<String>, fault: Fault) -> Self {
        self.faults.insert(model.into(), fault);
        self
    }

    /// What the sim does with a request that ends with an assistant message (a prefill);
    /// [`Sim::set_prefill`] changes it later. Default: [`Prefill::Continue`].
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }

    /// The pause between two token chunks of a stream, so streams arrive as streams.
    /// Default: [`DEFAULT_TOKEN_DELAY`] (1 ms); zero sends the chunks back to back.
    pub fn token_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }

    /// Starts down: the port is chosen and closed, connections are refused for `duration`,
    /// then the same port listens. Default: zero (listening from the start).
    pub fn down_for(mut self, duration: Duration) -> Self {
        self.down_for = duration;
        self
    }

    /// Binds `127.0.0.1` on a port the OS picks and starts serving on the current Tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// The error of creating or binding the socket.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn start(self) -> io::Result<Sim> {
        let socket = server::reserve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = socket.local_addr()?;
        let (power, listener, held) = if self.down_for.is_zero() {
            (Power::Up, Some(socket.listen(1024)?), None)
        } else {
            // Bound, not listening: connections are refused and the port stays ours.
            (
                Power::DownUntil(Instant::now() + self.down_for),
                None,
                Some(socket),
            )
        };
        let shared = Arc::new(Shared {
            faults: Mutex::new(self.faults),
            prefill: Mutex::new(self.prefill),
            responses: Mutex::default(),
            models: Mutex::default(),
            total: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            token_delay: self.token_delay,
        });
        let (commands, commands_rx) = watch::channel(Command {
            generation: 0,
            power,
        });
        let (applied_tx, applied) = watch::channel(Applied {
            generation: 0,
            listening: listener.is_some(),
        });
        let router = respond::router(Arc::clone(&shared));
        let task = tokio::spawn(server::run(
            addr,
            listener,
            held,
            router,
            commands_rx,
            applied_tx,
        ));
        Ok(Sim {
            addr,
            shared,
            commands,
            applied,
            task: Some(task),
        })
    }
}

/// A running simulated provider. Dropping it (or [`Sim::shutdown`]) stops it.
#[derive(Debug)]
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    commands: watch::Sender<Command>,
    applied: watch::Receiver<Applied>,
    task: Option<JoinHandle<()>>,
}

impl Sim {
    /// A builder: no configured faults, prefills continued ([`Prefill::Continue`]),
    /// [`DEFAULT_TOKEN_DELAY`], listening from the start.
    pub fn builder() -> SimBuilder {
        SimBuilder {
            faults: HashMap::new(),
            prefill: Prefill::default(),
            token_delay: DEFAULT_TOKEN_DELAY,
            down_for: Duration::ZERO,
        }
    }

    /// The address it listens on (also while it is down: it comes back on the same port).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The requests seen for `model` on any endpoint, whatever their fault did with them
    /// (a 429, a reset and a silent request count; a refused connection is never seen; a
    /// body that is not a valid request is not counted here).
    #[must_use]
    pub fn attempts(&self, model: &str) -> u64 {
        self.seen(model, |state| state.attempts).unwrap_or(0)
    }

    /// The `Authorization` header of the last request seen for `model`, as it arrived
    /// (`"Bearer sk-..."`): `None` when no request was seen or the last one had no such
    /// header. For tests of which key a proxy sends upstream.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sim = llm_failover::sim::Sim::builder().start().await?;
    /// reqwest::Client::new()
    ///     .post(format!("{}/chat/completions", sim.base_url()))
    ///     .bearer_auth("provider-key")
    ///     .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    ///     .send()
    ///     .await?;
    /// assert_eq!(sim.last_authorization("m").as_deref(), Some("Bearer provider-key"));
    /// assert_eq!(sim.last_authorization("other"), None);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn last_authorization(&self, model: &str) -> Option<String> {
        self.seen(model, |state| {
            let value = state.headers.as_ref()?.get(header::AUTHORIZATION)?;
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .flatten()
    }

    /// Every header of the last request seen for `model` (on any endpoint), as it
    /// arrived: `None` when no request for `model` was seen. For tests of what a proxy sends
    /// upstream: `x-api-key`, `anthropic-version`, `anthropic-beta`, `authorization`, ...
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sim = llm_failover::sim::Sim::builder().start().await?;
    /// reqwest::Client::new()
    ///     .post(format!("{}/messages", sim.base_url()))
    ///     .header("x-api-key", "provider-key")
    ///     .header("anthropic-version", "2023-06-01")
    ///     .json(&serde_json::json!({
    ///         "model": "m",
    ///         "max_tokens": 64,
    ///         "messages": [{"role": "user", "content": "hi"}],
    ///     }))
    ///     .send()
    ///     .await?;
    /// let headers = sim.last_headers("m").unwrap();
    /// assert_eq!(headers["x-api-key"], "provider-key");
    /// assert_eq!(headers["anthropic-version"], "2023-06-01");
    /// assert!(!headers.contains_key("authorization"));
    /// assert_eq!(sim.last_headers("other"), None);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn last_headers(&self, model: &str) -> Option<HeaderMap> {
        self.seen(model, |state| state.headers.clone()).flatten()
    }

    /// The body of the last request seen for `model` (on any endpoint), parsed as JSON (every field,
    /// including those the sim does not read): `None` when no request for `model` was seen.
    /// For tests of what a proxy sends upstream: a resumed stream's prefill message, its
    /// `max_tokens`, `continue_final_message`, the `temperature` and `tools` it kept.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sim = llm_failover::sim::Sim::builder().start().await?;
    /// let request = serde_json::json!({
    ///     "model": "m",
    ///     "messages": [{"role": "user", "content": "hi"}],
    ///     "temperature": 0.2,
    /// });
    /// reqwest::Client::new()
    ///     .post(format!("{}/chat/completions", sim.base_url()))
    ///     .json(&request)
    ///     .send()
    ///     .await?;
    /// assert_eq!(sim.last_request("m"), Some(request));
    /// assert_eq!(sim.last_request("other"), None);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn last_request(&self, model: &str) -> Option<serde_json::Value> {
        self.seen(model, |state| state.last_request.clone())
            .flatten()
    }

    /// The most requests for `model` that were being answered at once: from the time the
    /// request was read until its response was produced (for a stream, its headers) or the
    /// client went away.
    #[must_use]
    pub fn peak_inflight(&self, model: &str) -> u64 {
        self.seen(model, |state| state.peak_inflight).unwrap_or(0)
    }

    /// Every request seen on any endpoint, including those whose body was not a valid
    /// request.
    #[must_use]
    pub fn total_attempts(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Whether the sim keeps the response `id` (`resp_sim<n>`), so that a `POST /v1/responses`
    /// with `"previous_response_id": id` is answered rather than refused with OpenAI's 400
    /// `previous_response_not_found`. It keeps the id of every Responses API answer it starts
    /// to send (whole or streamed, whatever the fault does to its delivery) unless the request
    /// said `"store": false`; errors have no id. Each sim keeps its own: a request that
    /// continues one sim's response on another sim is refused, as on a provider that never
    /// saw it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sim = llm_failover::sim::Sim::builder().start().await?;
    /// let url = format!("{}/responses", sim.base_url());
    /// let client = reqwest::Client::new();
    /// let first: serde_json::Value = client
    ///     .post(&url)
    ///     .json(&serde_json::json!({"model": "m", "input": "hi"}))
    ///     .send()
    ///     .await?
    ///     .json()
    ///     .await?;
    /// let id = first["id"].as_str().unwrap();
    /// assert!(sim.knows_response(id));
    /// assert!(!sim.knows_response("resp_other"));
    /// let next = client
    ///     .post(&url)
    ///     .json(&serde_json::json!({"model": "m", "input": "more", "previous_response_id": id}))
    ///     .send()
    ///     .await?;
    /// assert_eq!(next.status(), 200);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn knows_response(&self, id: &str) -> bool {
        self.shared.knows_response(id)
    }

    /// Gives `model` this fault from its next request on; [`Fault::None`] makes it healthy
    /// whatever its name says. Setting [`Fault::ServerErrorOnce`] arms it again.
    pub fn set_fault(&self, model: impl Into<String>, fault: Fault) {
        let model = model.into();
        if fault == Fault::ServerErrorOnce
            && let Some(state) = lock(&self.shared.models).get_mut(&model)
        {
            state.failed_once = false;
        }
        lock(&self.shared.faults).insert(model, fault);
    }

    /// Changes what the sim does with an assistant prefill, from the next request on (a
    /// stream being sent keeps its answer).
    pub fn set_prefill(&self, prefill: Prefill) {
        *lock(&self.shared.prefill) = prefill;
    }

    /// Removes the configured fault of `model`: its name decides again.
    pub fn clear_fault(&self, model: &str) {
        lock(&self.shared.faults).remove(model);
    }

    /// Takes the sim down (closes the listening socket and every open connection, so new
    /// connections are refused) or brings it back up on the same port. Returns once done.
    ///
    /// Bringing it up waits until the port is bound again; should another process have taken
    /// the port meanwhile, it keeps retrying (and logs a warning).
    pub async fn set_down(&self, down: bool) {
        let generation = self.command(if down { Power::Down } else { Power::Up });
        self.wait(|a| a.generation >= generation && (down || a.listening))
            .await;
    }

    /// Takes the sim down now and brings it back up on the same port after `duration`: a
    /// flapping host. Returns once it is down; [`Sim::wait_until_up`] waits for the end.
    pub async fn down_for(&self, duration: Duration) {
        let generation = self.command(Power::DownUntil(Instant::now() + duration));
        self.wait(|a| a.generation >= generation).await;
    }

    /// Waits until the sim listens (at once if it does). Never returns while it is down
    /// without an end ([`Sim::set_down`]).
    pub async fn wait_until_up(&self) {
        self.wait(|a| a.listening).await;
    }

    /// Whether the sim listens now.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.applied.borrow().listening
    }

    /// Stops the sim: the port is closed and every connection dropped when this returns.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// What `read` finds in what the sim has seen of `model`: `None` when it saw no request
    /// for it.
    fn seen<T>(&self, model: &str, read: impl FnOnce(&ModelState) -> T) -> Option<T> {
        lock(&self.shared.models).get(model).map(read)
    }

    /// Sends a power command to the accept loop; returns its generation.
    fn command(&self, power: Power) -> u64 {
        let mut generation = 0;
        self.commands.send_modify(|c| {
            c.generation += 1;
            c.power = power;
            generation = c.generation;
        });
        generation
    }

    async fn wait(&self, done: impl FnMut(&Applied) -> bool) {
        let mut applied = self.applied.clone();
        // An error means the accept loop is gone (shut down): nothing left to wait for.
        let _ = applied.wait_for(done).await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
