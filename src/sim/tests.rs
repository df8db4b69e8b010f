//! The sim against a real client (reqwest) on loopback: every fault does what it promises on
//! the wire of each protocol, and the crate's classifier reads each error as the reason it
//! stands for.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

use super::{ANSWER, Fault, Prefill, Sim, answer_tokens};
use crate::Reason;
use crate::classify::{Signal, classify};

/// Long enough for loopback, short enough to keep the suite fast; used where a timeout is
/// the event under test.
const QUIET: Duration = Duration::from_millis(300);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn sim() -> Sim {
    Sim::builder().start().await.unwrap()
}

/// A sim that gives `model` this fault.
async fn sim_with(model: &str, fault: Fault) -> Sim {
    Sim::builder().fault(model, fault).start().await.unwrap()
}

/// The protocols the sim streams in, with what a test needs to talk each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/messages`, Anthropic's.
    Messages,
    /// `/v1/responses`.
    Responses,
}

/// A stream's events: each one's name (empty on chat, whose events have none) and payload,
/// parsed when it is JSON, else `Value::String` of it (`[DONE]`, a malformed event).
type Named = Vec<(String, Value)>;

impl Api {
    const ALL: [Api; 3] = [Api::Chat, Api::Messages, Api::Responses];

    /// A request for `model` that asks `text` (and sets `max_tokens` where the protocol
    /// requires it).
    fn asking(self, model: &str, text: &str, stream: bool) -> Value {
        match self {
            Api::Chat => json!({
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "stream": stream,
            }),
            Api::Messages => json!({
                "model": model,
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": text}],
                "stream": stream,
            }),
            Api::Responses => json!({"model": model, "input": text, "stream": stream}),
        }
    }

    /// A request for `model` that asks "say the thing" (3 words).
    fn request(self, model: &str, stream: bool) -> Value {
        self.asking(model, "say the thing", stream)
    }

    /// A POST to this endpoint of `sim` with the headers its clients send (on messages, an
    /// Anthropic client's key, version and beta).
    fn to(self, client: &reqwest::Client, sim: &Sim) -> reqwest::RequestBuilder {
        let path = match self {
            Api::Chat => "chat/completions",
            Api::Messages => "messages",
            Api::Responses => "responses",
        };
        let post = client.post(format!("{}/{path}", sim.base_url()));
        match self {
            Api::Messages => post
                .header("x-api-key", "sk-ant-sim")
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "tools-2024-04-04"),
            Api::Chat | Api::Responses => post,
        }
    }

    /// Posts `body` as JSON.
    async fn post(
        self,
        client: &reqwest::Client,
        sim: &Sim,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        self.to(client, sim).json(body).send().await
    }

    /// [`Api::request`] with an assistant message last, a prefill (chat and messages: the
    /// Responses API has none).
    fn prefilled(self, model: &str, prefill: impl Into<Value>, stream: bool) -> Value {
        let mut req = self.request(model, stream);
        req["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": prefill.into()}));
        req
    }

    /// A request for `sim-tool` that offers a weather tool in the protocol's shape (on
    /// responses, after a tool that is not a function, which `sim-tool` passes over).
    fn tool_request(self, stream: bool) -> Value {
        let mut req = self.request("sim-tool", stream);
        req["tools"] = match self {
            Api::Chat => json!([
                {"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}},
            ]),
            Api::Messages => json!([
                {"name": "get_weather", "description": "the weather", "input_schema": weather_schema()},
            ]),
            Api::Responses => json!([
                {"type": "web_search_preview"},
                {"type": "function", "name": "get_weather", "description": "the weather", "parameters": weather_schema()},
            ]),
        };
        req
    }

    /// Posts [`Api::request`] for `model`.
    async fn send(
        self,
        client: &reqwest::Client,
        sim: &Sim,
        model: &str,
        stream: bool,
    ) -> reqwest::Result<reqwest::Response> {
        self.post(client, sim, &self.request(model, stream)).await
    }

    /// The status of the answer to [`Api::request`] for `model`.
    async fn status(
        self,
        client: &reqwest::Client,
        sim: &Sim,
        model: &str,
        stream: bool,
    ) -> reqwest::StatusCode {
        self.send(client, sim, model, stream)
            .await
            .unwrap()
            .status()
    }

    /// The JSON body of the answer to `req`, a 200.
    async fn answer(self, client: &reqwest::Client, sim: &Sim, req: &Value) -> Value {
        let resp = self.post(client, sim, req).await.unwrap();
        assert_eq!(resp.status(), 200, "{self:?}");
        resp.json().await.unwrap()
    }

    /// The events of the stream that answers `req`, and the error that broke its body, if
    /// any. Checks what every response of the protocol carries ([`Api::assert_stamped`])
    /// and, on responses, the events' numbering ([`assert_numbered`]).
    async fn stream(self, sim: &Sim, req: &Value) -> (Named, Option<reqwest::Error>) {
        let resp = self.post(&client(), sim, req).await.unwrap();
        self.assert_stamped(resp.headers());
        let (events, err) = Events::new(resp).all_named().await;
        let events: Named = events
            .into_iter()
            .map(|(name, data)| (name, parse(data)))
            .collect();
        if self == Api::Responses {
            assert_numbered(&events);
        }
        (events, err)
    }

    /// The first `seen` events of the stream that answers `model`, after which nothing comes
    /// (not even the end of the body) within [`QUIET`].
    async fn then_silence(self, sim: &Sim, model: &str, seen: usize) -> Named {
        let resp = self
            .post(&client(), sim, &self.request(model, true))
            .await
            .unwrap();
        let mut events = Events::new(resp);
        let mut got = Vec::new();
        for _ in 0..seen {
            let (name, data) = events.next_named().await.unwrap().unwrap();
            got.push((name, parse(data)));
        }
        assert!(
            timeout(QUIET, events.next()).await.is_err(),
            "{self:?} {model}: no more bytes"
        );
        got
    }

    /// What every response of the protocol carries: Anthropic's `request-id` on messages;
    /// nothing on the others.
    fn assert_stamped(self, headers: &reqwest::header::HeaderMap) {
        if self == Api::Messages {
            let id = headers["request-id"].to_str().unwrap();
            assert!(id.starts_with("req_"), "{id}");
        }
    }

    /// The text the text deltas of `events` carry, concatenated; malformed events are
    /// skipped.
    fn text(self, events: &[(String, Value)]) -> String {
        events
            .iter()
            .filter_map(|(name, data)| match self {
                Api::Chat => data["choices"][0]["delta"]["content"].as_str(),
                Api::Messages => data["delta"]["text"].as_str(),
                Api::Responses => data["delta"]
                    .as_str()
                    .filter(|_| name == "response.output_text.delta"),
            })
            .collect()
    }

    /// The text of a whole answer's body.
    fn answer_text(self, body: &Value) -> &Value {
        match self {
            Api::Chat => &body["choices"][0]["message"]["content"],
            Api::Messages => &body["content"][0]["text"],
            Api::Responses => &body["output"][0]["content"][0]["text"],
        }
    }

    /// The events of a text stream: those before the first delta, the deltas' name, those
    /// after the last, the terminator.
    fn shape(
        self,
    ) -> (
        &'static [&'static str],
        &'static str,
        &'static [&'static str],
        &'static str,
    ) {
        match self {
            // No names: the `finish_reason` chunk, then `[DONE]`.
            Api::Chat => (&[], "", &[""], ""),
            Api::Messages => (
                &["message_start", "content_block_start", "ping"],
                "content_block_delta",
                &["content_block_stop", "message_delta"],
                "message_stop",
            ),
            Api::Responses => (
                &[
                    "response.created",
                    "response.in_progress",
                    "response.output_item.added",
                    "response.content_part.added",
                ],
                "response.output_text.delta",
                &[
                    "response.output_text.done",
                    "response.content_part.done",
                    "response.output_item.done",
                ],
                "response.completed",
            ),
        }
    }

    /// How many events a stream sends before its first delta.
    fn opening(self) -> usize {
        self.shape().0.len()
    }

    /// The event names of a healthy text stream of `n` deltas, the terminator last.
    fn sequence(self, n: usize) -> Vec<&'static str> {
        let (open, delta, close, done) = self.shape();
        let mut want = open.to_vec();
        want.extend(std::iter::repeat_n(delta, n));
        want.extend(close);
        want.push(done);
        want
    }

    /// Whether the last of `events` is the protocol's terminator: `[DONE]`, `message_stop`,
    /// `response.completed`.
    fn terminated(self, events: &[(String, Value)]) -> bool {
        match (self, events.last()) {
            (Api::Chat, Some((_, data))) => data == "[DONE]",
            (Api::Messages | Api::Responses, Some((name, _))) => name == self.shape().3,
            (_, None) => false,
        }
    }
}

/// The weather tool's parameters: a required string, an optional integer.
fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    })
}

/// An event's payload: its JSON, or `Value::String` of it when it is not JSON.
fn parse(data: String) -> Value {
    serde_json::from_str(&data).unwrap_or(Value::String(data))
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// The positions of the events whose payload is not JSON (chat's `[DONE]` aside).
fn malformed(events: &[(String, Value)]) -> Vec<usize> {
    (0..events.len())
        .filter(|&i| events[i].1.is_string() && events[i].1 != "[DONE]")
        .collect()
}

/// Every JSON event of a Responses stream has `type` equal to its name and a
/// `sequence_number`; the numbers go up by one from 0 (a malformed event takes its number
/// too, so one may be missing for each).
fn assert_numbered(events: &[(String, Value)]) {
    let mut numbers = Vec::new();
    for (name, data) in events {
        if data.is_string() {
            continue;
        }
        assert_eq!(data["type"], name.as_str(), "{data}");
        numbers.push(data["sequence_number"].as_u64().unwrap());
    }
    assert_eq!(numbers.first(), Some(&0), "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(
        numbers.last().copied(),
        Some((numbers.len() + malformed(events).len() - 1) as u64),
        "{numbers:?}"
    );
}

/// The `data:` payloads of the chat stream that answers `req`, and the error that broke it,
/// if any.
async fn read_stream(
    client: &reqwest::Client,
    sim: &Sim,
    req: &Value,
) -> (Vec<String>, Option<reqwest::Error>) {
    Events::new(Api::Chat.post(client, sim, req).await.unwrap())
        .all()
        .await
}

/// Reads `data:` payloads of an SSE body one by one.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            resp,
            buf: String::new(),
        }
    }

    /// The next payload, `None` at the clean end of the body, or the error that broke it.
    async fn next(&mut self) -> reqwest::Result<Option<String>> {
        Ok(self.next_named().await?.map(|(_, data)| data))
    }

    /// The next event's name (empty without an `event:` line) and payload.
    async fn next_named(&mut self) -> reqwest::Result<Option<(String, String)>> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let (name, data) = match event.trim_end().split_once('\n') {
                    Some((first, data)) => (first.strip_prefix("event: ").unwrap(), data),
                    None => ("", event.trim_end()),
                };
                let data = data.strip_prefix("data: ").unwrap();
                return Ok(Some((name.to_owned(), data.to_owned())));
            }
            match self.resp.chunk().await? {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(self.buf.is_empty(), "a partial event: {:?}", self.buf);
                    return Ok(None);
                }
            }
        }
    }

    /// Every payload up to the clean end, or the error that broke the body.
    async fn all(&mut self) -> (Vec<String>, Option<reqwest::Error>) {
        let (events, err) = self.all_named().await;
        (events.into_iter().map(|(_, data)| data).collect(), err)
    }

    /// Every event (name, payload) up to the clean end, or the error that broke the body.
    async fn all_named(&mut self) -> (Vec<(String, String)>, Option<reqwest::Error>) {
        let mut events = Vec::new();
        loop {
            match self.next_named().await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }
}

/// The content deltas of the JSON chunks, concatenated; non-JSON payloads are skipped.
fn content(events: &[String]) -> String {
    deltas(events).concat()
}

fn prefix(tokens: usize) -> String {
    answer_tokens().take(tokens).collect()
}

fn has_io_kind(err: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == kind {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

// --- One fault table, three protocols: each fault on each endpoint, in its shapes ---

/// Every error fault on every protocol, streaming or not, as the module docs' fault table
/// words it: chat's status and `code` (the Responses API's are "as chat"), Anthropic's
/// status and error type on messages, the headers of a rate limit, how the message starts
/// where the docs quote it, and the reason the crate's classifier reads: the same on every
/// protocol.
#[tokio::test]
async fn error_faults_send_each_protocols_errors_the_classifier_reads() {
    use Reason::{
        Auth, ContentFilter, ContextOverflow, Format, ModelNotFound, Overloaded, RateLimit,
        ServerError,
    };
    const INVALID: &str = "invalid_request_error";
    // model, the reason on every protocol, chat's (and responses') status and code,
    // messages' status and error type
    #[rustfmt::skip]
    let cases = [
        ("sim-429",              RateLimit,       429, Some("rate_limit_exceeded"),     429, "rate_limit_error"),
        ("sim-429-retry-2",      RateLimit,       429, Some("rate_limit_exceeded"),     429, "rate_limit_error"),
        ("sim-429-retry-1500ms", RateLimit,       429, Some("rate_limit_exceeded"),     429, "rate_limit_error"),
        ("sim-500",              ServerError,     500, None,                            500, "api_error"),
        ("sim-502",              ServerError,     502, None,                            502, "api_error"),
        ("sim-503",              Overloaded,      503, Some("service_unavailable"),     529, "overloaded_error"),
        ("configured-503",       Overloaded,      503, Some("service_unavailable"),     529, "overloaded_error"),
        ("sim-529",              Overloaded,      529, None,                            529, "overloaded_error"),
        ("sim-401",              Auth,            401, Some("invalid_api_key"),         401, "authentication_error"),
        ("sim-403",              Auth,            403, None,                            403, "permission_error"),
        ("sim-404",              ModelNotFound,   404, Some("model_not_found"),         404, "not_found_error"),
        ("sim-413",              ContextOverflow, 413, None,                            413, "request_too_large"),
        ("sim-400",              Format,          400, None,                            400, INVALID),
        ("sim-context",          ContextOverflow, 400, Some("context_length_exceeded"), 400, INVALID),
        ("sim-filter",           ContentFilter,   400, Some("content_filter"),          400, INVALID),
    ];
    for api in Api::ALL {
        let sim = sim_with("configured-503", Fault::Status(503)).await;
        let client = client();
        for stream in [false, true] {
            for (model, reason, openai, code, anthropic, kind) in cases {
                let what = format!("{api:?} {model} stream {stream}");
                let resp = api.send(&client, &sim, model, stream).await.unwrap();
                let status = if api == Api::Messages {
                    anthropic
                } else {
                    openai
                };
                assert_eq!(resp.status(), status, "{what}");
                let headers = resp.headers().clone();
                assert_eq!(headers["content-type"], "application/json", "{what}");
                api.assert_stamped(&headers);
                let text = resp.text().await.unwrap();
                let body: Value = serde_json::from_str(&text).unwrap();
                let message = body["error"]["message"].as_str().unwrap_or_default();
                if api == Api::Messages || status == 529 {
                    // Anthropic's error document; a 529 is Anthropic's overload on any endpoint.
                    assert_eq!(body["type"], "error", "{what}: {body}");
                    assert_eq!(body["error"]["type"], kind, "{what}: {body}");
                    assert!(body["error"]["message"].is_string(), "{what}: {body}");
                    assert_eq!(body.as_object().unwrap().len(), 2, "{what}: {body}");
                } else {
                    let error = body["error"].as_object().unwrap();
                    assert!(error["message"].is_string(), "{what}: {body}");
                    assert!(error["type"].is_string(), "{what}: {body}");
                    // The Responses API names the field a context overflow is about.
                    let param = if api == Api::Responses && model == "sim-context" {
                        json!("input")
                    } else {
                        Value::Null
                    };
                    assert_eq!(error["param"], param, "{what}: {body}");
                    assert_eq!(error["code"].as_str(), code, "{what}: {body}");
                }
                let start = match (model, api) {
                    ("sim-context", Api::Chat) => "This model's maximum context length is ",
                    ("sim-context", Api::Messages) => "prompt is too long: ",
                    ("sim-context", Api::Responses) => "Your input exceeds the context window",
                    ("sim-filter", Api::Chat | Api::Responses) => {
                        "Your request was rejected as a result of our safety system"
                    }
                    ("sim-filter", Api::Messages) => "Output blocked by content filtering policy",
                    _ => "",
                };
                assert!(message.starts_with(start), "{what}: {message}");
                let mut signal = Signal::new()
                    .status(status)
                    .headers(&headers)
                    .body(text.as_str());
                if api == Api::Messages {
                    signal = signal.provider("anthropic");
                }
                let c = classify(&signal);
                assert_eq!(c.reason, reason, "{what}: {c:?}");
                let wait = match model {
                    "sim-429-retry-2" => Some(Duration::from_secs(2)),
                    "sim-429-retry-1500ms" => Some(Duration::from_millis(1500)),
                    _ => None,
                };
                let Some(wait) = wait else {
                    for name in [
                        "retry-after",
                        "retry-after-ms",
                        "anthropic-ratelimit-requests-reset",
                    ] {
                        assert!(!headers.contains_key(name), "{what}: {name}");
                    }
                    assert_eq!(c.retry_after, None, "{what}");
                    continue;
                };
                // Whole seconds, rounded up.
                assert_eq!(headers["retry-after"], "2", "{what}");
                if api == Api::Messages {
                    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
                    let reset = headers["anthropic-ratelimit-requests-reset"]
                        .to_str()
                        .unwrap();
                    let at = humantime::parse_rfc3339(reset).unwrap();
                    let left = at.duration_since(std::time::SystemTime::now()).unwrap();
                    assert!(
                        left > Duration::from_secs(1) && left <= Duration::from_secs(3),
                        "{what}: {reset}"
                    );
                    assert_eq!(c.retry_after, Some(Duration::from_secs(2)), "{what}");
                } else {
                    assert_eq!(headers["retry-after-ms"], wait.as_millis().to_string());
                    assert_eq!(c.retry_after, Some(wait), "{what}");
                }
            }
        }
        for (model, ..) in cases {
            assert_eq!(sim.attempts(model), 2, "{api:?} {model}");
        }
    }
}

#[tokio::test]
async fn server_error_once_then_healthy_and_set_fault_rearms_it() {
    for api in Api::ALL {
        let sim = sim().await;
        let client = client();
        let statuses = async || {
            let mut out = Vec::new();
            for _ in 0..3 {
                out.push(
                    api.status(&client, &sim, "sim-500-once", false)
                        .await
                        .as_u16(),
                );
            }
            out
        };
        assert_eq!(statuses().await, [500, 200, 200], "{api:?}");
        sim.set_fault("sim-500-once", Fault::ServerErrorOnce);
        assert_eq!(statuses().await, [500, 200, 200], "{api:?}");
        assert_eq!(sim.attempts("sim-500-once"), 6, "{api:?}");
    }
}

/// The faults of a stream's delivery on every protocol: a cut after three deltas, a
/// malformed event in place of the fourth, a stall after three, no terminator.
#[tokio::test]
async fn stream_faults_break_each_protocols_stream() {
    let n = answer_tokens().count();
    let tokens: Vec<&str> = answer_tokens().collect();
    for api in Api::ALL {
        let sim = sim().await;
        let healthy = api.sequence(n);
        let open = api.opening();

        // Cut: three deltas, then the body read fails.
        let (events, err) = api.stream(&sim, &api.request("sim-cut-3", true)).await;
        assert_eq!(names(&events), healthy[..open + 3], "{api:?}: {events:#?}");
        assert_eq!(api.text(&events), prefix(3), "{api:?}");
        let err = err.expect("the body read fails, it does not end cleanly");
        assert!(err.is_body() || err.is_decode(), "{api:?}: {err:?}");

        // Malformed: an event whose data is not JSON in place of the 4th delta, then the
        // rest: a client that skips it gets a clean end and an answer missing its 4th word.
        let (events, err) = api
            .stream(&sim, &api.request("sim-malformed-3", true))
            .await;
        assert!(err.is_none(), "{api:?}: {err:?}");
        assert_eq!(names(&events), healthy, "{api:?}");
        assert_eq!(malformed(&events), [open + 3], "{api:?}: {events:#?}");
        let missing: String = [&tokens[..3], &tokens[4..]].concat().concat();
        assert_eq!(api.text(&events), missing, "{api:?}");
        assert!(api.terminated(&events), "{api:?}");
        // The usage counts the deltas that arrived as JSON (chat's, sent when asked for, in
        // `include_usage_sends_the_usage_chunk_before_done`).
        match api {
            Api::Chat => {}
            Api::Messages => assert_eq!(events[n + 4].1["usage"]["output_tokens"], n - 1),
            Api::Responses => {
                let completed = &events.last().unwrap().1["response"];
                assert_eq!(completed["usage"]["output_tokens"], n - 1);
            }
        }

        // Stall and no terminator: the connection stays open, the stream unfinished. Each
        // delta carries its token; with no terminator, the stream says how it ended.
        for (model, deltas, seen) in [
            ("sim-stall-3", 3, open + 3),
            ("sim-no-done", n, healthy.len() - 1),
        ] {
            let got = api.then_silence(&sim, model, seen).await;
            assert_eq!(names(&got), healthy[..seen], "{api:?} {model}");
            let each: Vec<String> = got[open..open + deltas]
                .iter()
                .map(|event| api.text(std::slice::from_ref(event)))
                .collect();
            assert_eq!(each, tokens[..deltas], "{api:?} {model}");
            if model == "sim-no-done" {
                let last = &got[seen - 1].1;
                let (ended, complete) = match api {
                    Api::Chat => (&last["choices"][0]["finish_reason"], "stop"),
                    Api::Messages => (&last["delta"]["stop_reason"], "end_turn"),
                    Api::Responses => (&last["item"]["status"], "completed"),
                };
                assert_eq!(ended, complete, "{api:?}: {last}");
            }
        }
    }
}

/// The faults of delivery on every protocol's answer that is not streamed: a cut or a
/// stall after half the JSON body, half a body in a complete HTTP message; no terminator to
/// hold back.
#[tokio::test]
async fn delivery_faults_break_each_protocols_json_body() {
    for api in Api::ALL {
        let sim = sim().await;
        let client = client();
        let resp = api.send(&client, &sim, "sim-cut-3", false).await.unwrap();
        assert_eq!(resp.status(), 200, "{api:?}");
        let err = resp.bytes().await.expect_err("the body read fails");
        assert!(err.is_body() || err.is_decode(), "{api:?}: {err:?}");

        let resp = api
            .send(&client, &sim, "sim-malformed-3", false)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{api:?}");
        let text = resp.text().await.expect("the HTTP message is complete");
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "{api:?}: {text}"
        );

        let mut resp = api.send(&client, &sim, "sim-stall-3", false).await.unwrap();
        assert!(!resp.chunk().await.unwrap().unwrap().is_empty(), "{api:?}");
        assert!(
            timeout(QUIET, resp.chunk()).await.is_err(),
            "{api:?}: no byte after half"
        );

        let body = api
            .answer(&client, &sim, &api.request("sim-no-done", false))
            .await;
        assert_eq!(api.answer_text(&body), ANSWER, "{api:?}");
        if api == Api::Responses {
            assert_eq!(body["status"], "completed");
        }
    }
}

/// A silent model never answers and a reset one resets the connection before the headers,
/// on every protocol, streaming or not; a slow one sends its first delta (or its whole
/// answer) after the delay, and the events before the first delta at once.
#[tokio::test]
async fn silent_reset_and_slow_faults_on_each_protocol() {
    let delay = Duration::from_millis(250);
    let quiet = reqwest::Client::builder().timeout(QUIET).build().unwrap();
    for api in Api::ALL {
        let sim = sim_with("slow", Fault::FirstTokenDelay(delay)).await;
        let client = client();
        for stream in [false, true] {
            let err = api
                .send(&quiet, &sim, "sim-silent", stream)
                .await
                .expect_err("no answer");
            assert!(err.is_timeout(), "{api:?}: {err:?}");
            let c = classify(&Signal::from_reqwest(&err));
            assert_eq!(c.reason, Reason::Timeout, "{api:?}: {c:?}");

            let err = api
                .send(&client, &sim, "sim-reset", stream)
                .await
                .expect_err("no response");
            assert!(
                has_io_kind(&err, io::ErrorKind::ConnectionReset),
                "{api:?}: {err:?}"
            );
            let c = classify(&Signal::from_reqwest(&err));
            assert_eq!(c.reason, Reason::ConnectionReset, "{api:?}: {c:?}");
        }
        assert_eq!(sim.attempts("sim-silent"), 2, "{api:?}");
        assert_eq!(sim.attempts("sim-reset"), 2, "{api:?}");
        // The reset is per connection: the next request, on a new connection, is answered.
        let ok = api.status(&client, &sim, "sim-ok", false).await;
        assert_eq!(ok, 200, "{api:?}");

        let start = Instant::now();
        let resp = api.send(&client, &sim, "slow", true).await.unwrap();
        let mut events = Events::new(resp);
        for _ in 0..api.opening() {
            events.next().await.unwrap().unwrap();
        }
        // The headers and the opening events are here and the first delta is not: it comes
        // after the delay. (An order, not a speed: nothing asserts how soon the rest came.)
        assert!(
            futures_util::FutureExt::now_or_never(events.next()).is_none(),
            "{api:?}: the first delta came with the opening events"
        );
        let (name, data) = events.next_named().await.unwrap().unwrap();
        assert_eq!(name, api.shape().1, "{api:?}");
        assert_eq!(api.text(&[(name, parse(data))]), "The ", "{api:?}");
        assert!(start.elapsed() >= delay, "{api:?}");
        let (rest, err) = events.all_named().await;
        assert!(err.is_none(), "{api:?}: {err:?}");
        let rest: Named = rest.into_iter().map(|(n, d)| (n, parse(d))).collect();
        assert!(api.terminated(&rest), "{api:?}: {rest:#?}");

        let start = Instant::now();
        let resp = api.send(&client, &sim, "slow", false).await.unwrap();
        assert!(start.elapsed() >= delay, "{api:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(api.answer_text(&body), ANSWER, "{api:?}");
    }
}

/// [`Fault::ErrorAfter`] on every protocol: streamed, two deltas, the protocol's mid-stream
/// error event and a clean end without the terminator; not streamed, a 200 whose body is
/// that error (on responses, the failed response).
#[tokio::test]
async fn error_after_sends_each_protocols_mid_stream_error() {
    for api in Api::ALL {
        let sim = sim().await;
        let (events, err) = api.stream(&sim, &api.request("sim-error-2", true)).await;
        assert!(err.is_none(), "{api:?}: the body ends cleanly: {err:?}");
        let open = api.opening();
        assert_eq!(events.len(), open + 3, "{api:?}: {events:#?}");
        assert_eq!(
            names(&events[..open + 2]),
            api.sequence(2)[..open + 2],
            "{api:?}"
        );
        assert_eq!(api.text(&events), prefix(2), "{api:?}");
        assert!(!api.terminated(&events), "{api:?}");
        let (name, error) = &events[open + 2];
        let resp = api
            .send(&client(), &sim, "sim-error-2", false)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{api:?}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{api:?}"
        );
        let body: Value = resp.json().await.unwrap();
        match api {
            // OpenRouter's: a chunk with an `error` beside a choice that finishes with `error`.
            Api::Chat => {
                let upstream =
                    json!({"message": "Upstream provider error mid-stream", "code": 502});
                assert_eq!(name, "");
                assert_eq!(error["object"], "chat.completion.chunk");
                assert_eq!(error["model"], "sim-error-2");
                assert!(error["id"].is_string() && error["created"].is_u64());
                assert_eq!(error["error"], upstream);
                assert_eq!(
                    error["choices"],
                    json!([{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}])
                );
                assert_eq!(body, json!({"error": upstream}));
            }
            Api::Messages => {
                let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
                assert_eq!(name, "error");
                assert_eq!(*error, overloaded);
                assert_eq!(body, overloaded);
            }
            // The response, failed with an upstream server error.
            Api::Responses => {
                assert_eq!(name, "response.failed");
                let failed = &error["response"];
                assert_eq!(failed["id"], events[0].1["response"]["id"]);
                assert_eq!(failed["status"], "failed");
                assert_eq!(
                    failed["error"],
                    json!({"code": "server_error", "message": "The server had an error processing your request."})
                );
                assert_eq!(body["object"], "response");
                assert_eq!(body["status"], "failed");
                assert_eq!(body["error"], failed["error"]);
            }
        }
    }
}

/// Bodies that are not valid requests get each protocol's 400 (with the message Anthropic's
/// validation gives, where the test knows it), a body over axum's 2 MB limit its 413, in the
/// protocol's error document, not a plain-text rejection. They count in
/// [`Sim::total_attempts`] only, and the server is still fine after them.
#[tokio::test]
async fn bad_requests_get_each_protocols_400s() {
    let user = json!([{"role": "user", "content": "x"}]);
    let chat = [
        "not json".to_owned(),
        "{}".to_owned(),
        json!({"model": "a"}).to_string(),
        json!({"model": "a", "messages": []}).to_string(),
        json!({"model": 7, "messages": user}).to_string(),
        json!({"model": "a", "messages": [{"role": "user"}], "max_tokens": 0}).to_string(),
        json!({"model": "a", "messages": [{}], "stream": "yes"}).to_string(),
    ];
    let messages = [
        ("not json".to_owned(), "There was an error parsing the body"),
        (json!({"model": "a", "messages": user}).to_string(), "max_tokens: Field required"),
        (json!({"model": "a", "max_tokens": 8}).to_string(), "messages: Field required"),
        (json!({"max_tokens": 8, "messages": user}).to_string(), "model: Field required"),
        (
            json!({"model": "a", "max_tokens": 0, "messages": user}).to_string(),
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            json!({"model": "a", "max_tokens": 8, "messages": []}).to_string(),
            "messages: at least one message is required",
        ),
        (
            json!({"model": "a", "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]})
                .to_string(),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            Api::Messages.prefilled("a", json!("The simulated "), false).to_string(),
            "messages: final assistant content cannot end with trailing whitespace",
        ),
    ];
    let responses = [
        "not json".to_owned(),
        "[]".to_owned(),
        json!({"input": "x"}).to_string(),
        json!({"model": "a", "input": 7}).to_string(),
        json!({"model": "a", "input": [{"role": "user"}]}).to_string(),
        json!({"model": "a", "input": "x", "max_output_tokens": 0}).to_string(),
        json!({"model": "a", "input": "x", "tools": [{"type": "function"}]}).to_string(),
    ];
    let any = |bodies: [String; 7]| bodies.map(|body| (body, ""));
    let cases = [
        (Api::Chat, Vec::from(any(chat)), "invalid_request_error"),
        (Api::Messages, Vec::from(messages), "request_too_large"),
        (
            Api::Responses,
            Vec::from(any(responses)),
            "invalid_request_error",
        ),
    ];
    for (api, bodies, too_large) in cases {
        let sim = sim().await;
        let client = client();
        for (body, start) in &bodies {
            let resp = api
                .to(&client, &sim)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{api:?} {body}");
            api.assert_stamped(resp.headers());
            let error: Value = resp.json().await.unwrap();
            if api == Api::Messages {
                assert_eq!(error["type"], "error", "{body}");
            } else {
                let fields = error["error"].as_object().unwrap();
                assert!(
                    fields.contains_key("param") && fields.contains_key("code"),
                    "{api:?} {body}"
                );
            }
            assert_eq!(
                error["error"]["type"], "invalid_request_error",
                "{api:?} {body}"
            );
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(start), "{api:?} {body}: {message}");
        }
        let huge = api.asking("a", &"x".repeat(3 << 20), false);
        let resp = api.post(&client, &sim, &huge).await.unwrap();
        assert_eq!(resp.status(), 413, "{api:?}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["error"]["type"], too_large, "{api:?}");
        assert_eq!(sim.total_attempts(), bodies.len() as u64 + 1, "{api:?}");
        assert_eq!(sim.attempts("a"), 0, "{api:?}");
        assert_eq!(sim.last_request("a"), None, "{api:?}");
        // The server is still fine.
        let ok = api.status(&client, &sim, "a", false).await;
        assert_eq!(ok, 200, "{api:?}");
    }
}

// --- /v1/chat/completions ---

#[tokio::test]
async fn healthy_answer_is_the_known_text() {
    let sim = sim().await;
    let resp = Api::Chat
        .send(&client(), &sim, "gpt-4o-mini", false)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], answer_tokens().count());
    assert_eq!(sim.attempts("gpt-4o-mini"), 1);
}

#[tokio::test]
async fn healthy_stream_is_one_chunk_per_token_then_stop_then_done() {
    let sim = sim().await;
    let (events, err) = read_stream(&client(), &sim, &Api::Chat.request("sim-ok", true)).await;
    assert!(err.is_none(), "{err:?}");
    let n = answer_tokens().count();
    assert_eq!(events.len(), n + 2, "{events:#?}");
    assert_eq!(content(&events), ANSWER);
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let last: Value = serde_json::from_str(&events[n]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(events[n + 1], "[DONE]");
}

#[tokio::test]
async fn max_tokens_ends_the_answer_early_with_length() {
    let sim = sim().await;
    let client = client();
    let mut req = Api::Chat.request("sim-ok", false);
    req["max_tokens"] = json!(3);
    let body: Value = Api::Chat.answer(&client, &sim, &req).await;
    assert_eq!(body["choices"][0]["message"]["content"], prefix(3));
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    req["stream"] = json!(true);
    let (events, err) = read_stream(&client, &sim, &req).await;
    assert!(err.is_none());
    assert_eq!(content(&events), prefix(3));
    assert!(events[3].contains("\"finish_reason\":\"length\""));
}

#[tokio::test]
async fn down_for_refuses_connections_then_serves_on_the_same_port() {
    let sim = Sim::builder()
        .down_for(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let addr = sim.addr();
    assert!(!sim.is_listening());
    let client = client();
    let err = Api::Chat
        .send(&client, &sim, "sim-ok", false)
        .await
        .expect_err("nothing listens");
    assert!(
        has_io_kind(&err, io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert_eq!(
        classify(&Signal::from_reqwest(&err)).reason,
        Reason::ConnectionRefused
    );
    sim.wait_until_up().await;
    assert_eq!(sim.addr(), addr);
    assert_eq!(Api::Chat.status(&client, &sim, "sim-ok", false).await, 200);
    // A refused connection is never seen.
    assert_eq!(sim.attempts("sim-ok"), 1);
}

#[tokio::test]
async fn going_down_closes_open_connections_too() {
    let sim = sim().await;
    let client = client();
    // A pooled keep-alive connection to the sim.
    assert_eq!(Api::Chat.status(&client, &sim, "sim-ok", false).await, 200);
    sim.down_for(Duration::from_millis(300)).await;
    let err = Api::Chat
        .send(&client, &sim, "sim-ok", false)
        .await
        .expect_err("down");
    let reason = classify(&Signal::from_reqwest(&err)).reason;
    assert!(
        matches!(reason, Reason::ConnectionRefused | Reason::ConnectionReset),
        "{reason:?} {err:?}"
    );
    sim.wait_until_up().await;
    assert_eq!(Api::Chat.status(&client, &sim, "sim-ok", false).await, 200);
}

#[tokio::test]
async fn set_down_and_up_by_hand() {
    let sim = sim().await;
    let client = client();
    sim.set_down(true).await;
    assert!(!sim.is_listening());
    let err = tokio::net::TcpStream::connect(sim.addr())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    sim.set_down(false).await;
    assert!(sim.is_listening());
    assert_eq!(Api::Chat.status(&client, &sim, "sim-ok", true).await, 200);
}

#[tokio::test]
async fn attempts_are_counted_per_model() {
    let sim = sim().await;
    let client = client();
    for model in ["a", "b", "b", "sim-503", "sim-503", "sim-503"] {
        Api::Chat.send(&client, &sim, model, false).await.unwrap();
    }
    assert_eq!(sim.attempts("a"), 1);
    assert_eq!(sim.attempts("b"), 2);
    assert_eq!(sim.attempts("sim-503"), 3);
    assert_eq!(sim.attempts("never"), 0);
    assert_eq!(sim.total_attempts(), 6);
}

#[tokio::test]
async fn models_and_unknown_routes() {
    let sim = sim_with("flaky", Fault::ServerErrorOnce).await;
    let client = client();
    let models: Value = client
        .get(format!("{}/models", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["flaky", "sim-ok"]);
    let resp = client
        .get(format!("{}/nope", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn configured_faults_take_precedence_over_names() {
    let sim = sim_with("sim-503", Fault::None).await;
    let client = client();
    let status_of =
        async |model: &str| Api::Chat.status(&client, &sim, model, false).await.as_u16();
    assert_eq!(status_of("sim-503").await, 200);
    sim.set_fault("gpt-4o", Fault::Status(529));
    assert_eq!(status_of("gpt-4o").await, 529);
    sim.clear_fault("sim-503");
    assert_eq!(status_of("sim-503").await, 503);
}

#[tokio::test]
async fn shutdown_closes_the_port_and_held_connections() {
    let sim = sim().await;
    let addr = sim.addr();
    let url = format!("{}/chat/completions", sim.base_url());
    let held = tokio::spawn(async move {
        client()
            .post(url)
            .json(&Api::Chat.request("sim-silent", false))
            .send()
            .await
    });
    // Wait until the silent request has reached its handler.
    while sim.attempts("sim-silent") == 0 {
        tokio::task::yield_now().await;
    }
    sim.shutdown().await;
    let err = held.await.unwrap().expect_err("the connection is closed");
    assert!(!err.is_timeout(), "closed, not timed out: {err:?}");
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn dropping_the_sim_releases_the_port() {
    let sim = sim().await;
    let addr = sim.addr();
    drop(sim);
    // The accept loop is aborted; it is dropped (with the listener) when the runtime next
    // runs it, without any await on our side. A connection that races the close may be
    // accepted by the kernel, or reset; then the port refuses.
    timeout(Duration::from_secs(2), async {
        while !tokio::net::TcpStream::connect(addr)
            .await
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the port is closed");
}

/// The content deltas of each JSON chunk that has one.
fn deltas(events: &[String]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn continue_prefill_sends_the_rest_of_the_answer() {
    let sim = sim().await;
    let client = client();
    let n = answer_tokens().count();
    let whole_words = prefix(3);
    let no_space = whole_words.trim_end().to_owned();
    // (prefill, the continuation's first token, its token count)
    let cases = [
        (whole_words.as_str(), answer_tokens().nth(3).unwrap(), n - 3),
        ("The simul", "ated ", n - 1),
        (no_space.as_str(), " answered ", n - 3),
    ];
    for (prefill, first, count) in cases {
        let (events, err) =
            read_stream(&client, &sim, &Api::Chat.prefilled("sim-ok", prefill, true)).await;
        assert!(err.is_none(), "{prefill:?}: {err:?}");
        let tokens = deltas(&events);
        assert_eq!(tokens.len(), count, "{prefill:?}: {tokens:?}");
        assert_eq!(tokens[0], first, "{prefill:?}");
        assert_eq!(format!("{prefill}{}", tokens.concat()), ANSWER);
        assert!(events[count].contains("\"finish_reason\":\"stop\""));
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

        let body: Value = Api::Chat
            .answer(
                &client,
                &sim,
                &Api::Chat.prefilled("sim-ok", prefill, false),
            )
            .await;
        let rest = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(format!("{prefill}{rest}"), ANSWER);
        assert_eq!(body["usage"]["completion_tokens"], count);
    }
}

#[tokio::test]
async fn a_prefill_that_is_not_a_prefix_gets_the_whole_answer() {
    let sim = sim().await;
    let client = client();
    for prefill in ["Something else entirely ", "the simulated ", ""] {
        let (events, err) =
            read_stream(&client, &sim, &Api::Chat.prefilled("sim-ok", prefill, true)).await;
        assert!(err.is_none());
        assert_eq!(content(&events), ANSWER, "{prefill:?}");
    }
}

#[tokio::test]
async fn ignore_prefill_sends_the_whole_answer_again() {
    let sim = Sim::builder()
        .prefill(Prefill::Ignore)
        .start()
        .await
        .unwrap();
    let client = client();
    let req = Api::Chat.prefilled("sim-ok", prefix(3), true);
    let (events, err) = read_stream(&client, &sim, &req).await;
    assert!(err.is_none());
    assert_eq!(content(&events), ANSWER);

    // And at run time, both ways.
    sim.set_prefill(Prefill::Continue);
    let (events, _) = read_stream(&client, &sim, &req).await;
    assert_eq!(format!("{}{}", prefix(3), content(&events)), ANSWER);
    sim.set_prefill(Prefill::Ignore);
    let body: Value = Api::Chat
        .answer(
            &client,
            &sim,
            &Api::Chat.prefilled("sim-ok", prefix(3), false),
        )
        .await;
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
}

#[tokio::test]
async fn reject_prefill_is_anthropics_400_which_the_classifier_reads_as_format() {
    let sim = sim().await;
    sim.set_prefill(Prefill::Reject);
    let client = client();
    let want = json!({
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "This model does not support assistant message prefill. The conversation must end with a user message.",
        },
    });
    for stream in [false, true] {
        for model in ["sim-ok", "sim-cut-2", "sim-slow-5s"] {
            let resp = Api::Chat
                .post(
                    &client,
                    &sim,
                    &Api::Chat.prefilled(model, prefix(3), stream),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{model}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            let text = resp.text().await.unwrap();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), want);
            let c = classify(&Signal::new().status(400).body(text.as_str()));
            assert_eq!(c.reason, Reason::Format, "{c:?}");
        }
    }
    // A request without a prefill is answered, and an error fault keeps its error.
    let body: Value = Api::Chat
        .answer(&client, &sim, &Api::Chat.request("sim-ok", false))
        .await;
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    let resp = Api::Chat
        .post(
            &client,
            &sim,
            &Api::Chat.prefilled("sim-503", prefix(3), false),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(sim.attempts("sim-ok"), 3);
}

#[tokio::test]
async fn a_fault_applies_to_the_continuation() {
    let sim = sim().await;
    let (events, err) = read_stream(
        &client(),
        &sim,
        &Api::Chat.prefilled("sim-cut-2", prefix(3), true),
    )
    .await;
    let want: Vec<&str> = answer_tokens().skip(3).take(2).collect();
    assert_eq!(deltas(&events), want, "{events:#?}");
    assert_eq!(events.len(), 2);
    let err = err.expect("the body read fails after 2 continuation tokens");
    assert!(err.is_body() || err.is_decode(), "{err:?}");
}

#[tokio::test]
async fn max_tokens_limits_the_continuation() {
    let sim = sim().await;
    let client = client();
    let rest = answer_tokens().count() - 3;
    for (limit, finish) in [(2, "length"), (rest, "stop")] {
        let mut req = Api::Chat.prefilled("sim-ok", prefix(3), true);
        req["max_tokens"] = json!(limit);
        let (events, err) = read_stream(&client, &sim, &req).await;
        assert!(err.is_none());
        let want: String = answer_tokens().skip(3).take(limit).collect();
        assert_eq!(content(&events), want, "{limit}");
        assert!(
            events[limit].contains(&format!("\"finish_reason\":\"{finish}\"")),
            "{limit}: {}",
            events[limit]
        );

        let mut req = Api::Chat.prefilled("sim-ok", prefix(3), false);
        req["max_completion_tokens"] = json!(limit);
        let body: Value = Api::Chat.answer(&client, &sim, &req).await;
        assert_eq!(body["choices"][0]["message"]["content"], want.as_str());
        assert_eq!(body["choices"][0]["finish_reason"], finish);
    }
}

/// The events of `req` streamed with `"stream_options": {"include_usage": true}`, and the
/// error that broke the body, if any.
async fn with_usage(sim: &Sim, mut req: Value) -> (Vec<String>, Option<reqwest::Error>) {
    req["stream_options"] = json!({"include_usage": true});
    read_stream(&client(), sim, &req).await
}

fn usage_events(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|chunk| chunk.get("usage").is_some())
        .collect()
}

#[tokio::test]
async fn include_usage_sends_the_usage_chunk_before_done() {
    let sim = sim().await;
    let n = answer_tokens().count();
    // "say the thing" is 3 words; the prefill adds 3 more.
    for (req, prompt, completion) in [
        (Api::Chat.request("sim-ok", true), 3, n),
        (Api::Chat.prefilled("sim-ok", prefix(3), true), 6, n - 3),
    ] {
        let (events, err) = with_usage(&sim, req).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(events.len(), completion + 3, "{events:#?}");
        assert!(events[completion].contains("\"finish_reason\":\"stop\""));
        let usage: Value = serde_json::from_str(&events[completion + 1]).unwrap();
        assert_eq!(usage["object"], "chat.completion.chunk");
        assert_eq!(usage["model"], "sim-ok");
        assert!(usage["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(usage["created"].is_u64());
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            })
        );
        assert_eq!(events[completion + 2], "[DONE]");
    }

    // The malformed line does not count: the usage says what arrived as tokens.
    let (events, _) = with_usage(&sim, Api::Chat.request("sim-malformed-3", true)).await;
    let usage = usage_events(&events);
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["completion_tokens"], n - 1);

    // Without include_usage, no usage chunk.
    let (events, _) = read_stream(&client(), &sim, &Api::Chat.request("sim-ok", true)).await;
    assert!(usage_events(&events).is_empty());
}

#[tokio::test]
async fn a_broken_stream_sends_no_usage_chunk() {
    let sim = sim().await;
    for model in ["sim-cut-3", "sim-error-3"] {
        let (events, _) = with_usage(&sim, Api::Chat.request(model, true)).await;
        assert!(events.len() >= 3, "{model}: {events:#?}");
        assert!(usage_events(&events).is_empty(), "{model}: {events:#?}");
    }
}

#[tokio::test]
async fn last_request_is_the_last_body_per_model() {
    let sim = sim().await;
    let client = client();
    assert_eq!(sim.last_request("m"), None);
    let mut first = Api::Chat.prefilled("m", prefix(3), true);
    first["max_tokens"] = json!(7);
    first["continue_final_message"] = json!(true);
    first["add_generation_prompt"] = json!(false);
    first["temperature"] = json!(0.5);
    first["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    let _ = read_stream(&client, &sim, &first).await;
    assert_eq!(sim.last_request("m"), Some(first));

    let second = Api::Chat.request("m", false);
    Api::Chat.post(&client, &sim, &second).await.unwrap();
    Api::Chat.send(&client, &sim, "other", false).await.unwrap();
    // A body that is not a valid request is not kept.
    let bad = client
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(sim.last_request("m"), Some(second));
    assert_eq!(
        sim.last_request("other"),
        Some(Api::Chat.request("other", false))
    );
}

// --- /v1/messages: Anthropic's shapes ---

#[tokio::test]
async fn messages_answer_is_an_anthropic_message() {
    let sim = sim().await;
    let client = client();
    let resp = Api::Messages
        .send(&client, &sim, "claude-sim", false)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["request-id"].to_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_"), "{request_id}");
    let body: Value = resp.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    let n = answer_tokens().count();
    let mut want = json!({
        "type": "message",
        "role": "assistant",
        "model": "claude-sim",
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 3,
            "output_tokens": n,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    });
    want["id"] = body["id"].clone();
    assert_eq!(body, want);
    assert_eq!(sim.attempts("claude-sim"), 1);

    // The headers the client sent are kept for tests of what a proxy sends upstream.
    let headers = sim.last_headers("claude-sim").unwrap();
    assert_eq!(headers["x-api-key"], "sk-ant-sim");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["anthropic-beta"], "tools-2024-04-04");
    assert!(!headers.contains_key("authorization"));
    assert_eq!(sim.last_authorization("claude-sim"), None);
    assert_eq!(
        sim.last_request("claude-sim"),
        Some(Api::Messages.request("claude-sim", false))
    );

    // max_tokens cuts the answer, with stop_reason max_tokens.
    let mut req = Api::Messages.request("claude-sim", false);
    req["max_tokens"] = json!(3);
    let body: Value = Api::Messages.answer(&client, &sim, &req).await;
    assert_eq!(body["content"][0]["text"], prefix(3));
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn messages_stream_is_anthropics_event_sequence() {
    let sim = sim().await;
    let n = answer_tokens().count();
    let (events, err) = Api::Messages
        .stream(&sim, &Api::Messages.request("sim-ok", true))
        .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(names(&events), Api::Messages.sequence(n), "{events:#?}");
    // Each payload's type is its event's name.
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "{data}");
    }
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["model"], "sim-ok");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 3);
    assert_eq!(
        events[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        events[3].1,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "The "}})
    );
    assert_eq!(Api::Messages.text(&events), ANSWER);
    assert_eq!(
        events[n + 3].1,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[n + 4].1,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": n},
        })
    );

    let mut req = Api::Messages.request("sim-ok", true);
    req["max_tokens"] = json!(2);
    let (events, err) = Api::Messages.stream(&sim, &req).await;
    assert!(err.is_none());
    assert_eq!(names(&events), Api::Messages.sequence(2));
    assert_eq!(Api::Messages.text(&events), prefix(2));
    assert_eq!(events[6].1["delta"]["stop_reason"], "max_tokens");
}

#[tokio::test]
async fn messages_continue_a_trailing_assistant_message() {
    let sim = sim().await;
    let client = client();
    let prefill = prefix(3).trim_end().to_owned();
    for content in [json!(prefill), json!([{"type": "text", "text": prefill}])] {
        let (events, err) = Api::Messages
            .stream(
                &sim,
                &Api::Messages.prefilled("sim-ok", content.clone(), true),
            )
            .await;
        assert!(err.is_none());
        let rest = Api::Messages.text(&events);
        assert!(rest.starts_with(" answered "), "{rest}");
        assert_eq!(format!("{prefill}{rest}"), ANSWER);
        let body: Value = Api::Messages
            .answer(
                &client,
                &sim,
                &Api::Messages.prefilled("sim-ok", content, false),
            )
            .await;
        let rest = body["content"][0]["text"].as_str().unwrap();
        assert_eq!(format!("{prefill}{rest}"), ANSWER);
        assert_eq!(body["usage"]["output_tokens"], answer_tokens().count() - 3);
    }
    // The sim's prefill mode applies here too.
    sim.set_prefill(Prefill::Ignore);
    let body: Value = Api::Messages
        .answer(
            &client,
            &sim,
            &Api::Messages.prefilled("sim-ok", json!(prefill), false),
        )
        .await;
    assert_eq!(body["content"][0]["text"], ANSWER);
    sim.set_prefill(Prefill::Reject);
    let resp = Api::Messages
        .post(
            &client,
            &sim,
            &Api::Messages.prefilled("sim-ok", json!(prefill), true),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prefill")
    );
}

// --- sim-tool on chat and messages ---

#[tokio::test]
async fn sim_tool_calls_the_first_tool_on_chat() {
    let sim = sim().await;
    let client = client();
    let body: Value = Api::Chat
        .answer(&client, &sim, &Api::Chat.tool_request(false))
        .await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    let id = call["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments = call["function"]["arguments"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(arguments).unwrap(),
        json!({"city": "sim"})
    );

    // Streamed: the id and name first, then the arguments in pieces.
    let (events, err) = read_stream(&client, &sim, &Api::Chat.tool_request(true)).await;
    assert!(err.is_none());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert!(first["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(first["function"]["name"], "get_weather");
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .filter(|p| !p.is_empty())
        .collect();
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&pieces.concat()).unwrap(),
        json!({"city": "sim"})
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // The round trip: the tool's result comes back quoted.
    let mut req = Api::Chat.tool_request(false);
    let messages = req["messages"].as_array_mut().unwrap();
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "sunny, 21 C"}));
    let body: Value = Api::Chat.answer(&client, &sim, &req).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The tool answered: sunny, 21 C"
    );
    req["stream"] = json!(true);
    let (events, _) = read_stream(&client, &sim, &req).await;
    assert_eq!(content(&events), "The tool answered: sunny, 21 C");

    // Without tools, sim-tool is healthy.
    let body: Value = Api::Chat
        .answer(&client, &sim, &Api::Chat.request("sim-tool", false))
        .await;
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
}

#[tokio::test]
async fn sim_tool_uses_the_first_tool_on_messages() {
    let sim = sim().await;
    let client = client();
    let body: Value = Api::Messages
        .answer(&client, &sim, &Api::Messages.tool_request(false))
        .await;
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    let id = block["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("toolu_"), "{id}");
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"city": "sim"}));

    // Streamed: a tool_use block, then its input as input_json_delta pieces.
    let (events, err) = Api::Messages
        .stream(&sim, &Api::Messages.tool_request(true))
        .await;
    assert!(err.is_none());
    let pieces: Vec<&str> = events
        .iter()
        .filter(|(_, data)| data["delta"]["type"] == "input_json_delta")
        .map(|(_, data)| data["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(names(&events), Api::Messages.sequence(pieces.len()));
    let start = &events[1].1["content_block"];
    assert_eq!(start["type"], "tool_use");
    assert!(start["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(start["name"], "get_weather");
    assert_eq!(start["input"], json!({}));
    assert_eq!(
        serde_json::from_str::<Value>(&pieces.concat()).unwrap(),
        json!({"city": "sim"})
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    // The round trip, with the result as a string or as text blocks.
    for result in [
        json!("sunny, 21 C"),
        json!([{"type": "text", "text": "sunny, 21 C"}]),
    ] {
        let mut req = Api::Messages.tool_request(false);
        let messages = req["messages"].as_array_mut().unwrap();
        messages.push(json!({"role": "assistant", "content": body["content"].clone()}));
        messages.push(json!({
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": id, "content": result}],
        }));
        let answer: Value = Api::Messages.answer(&client, &sim, &req).await;
        assert_eq!(answer["stop_reason"], "end_turn");
        assert_eq!(
            answer["content"],
            json!([{"type": "text", "text": "The tool answered: sunny, 21 C"}])
        );
        req["stream"] = json!(true);
        let (events, _) = Api::Messages.stream(&sim, &req).await;
        assert_eq!(
            Api::Messages.text(&events),
            "The tool answered: sunny, 21 C"
        );
    }
}

// --- /v1/responses: the Responses API's shapes ---

/// The header names of a response, without the ones that vary by body or time.
fn header_names(resp: &reqwest::Response) -> Vec<String> {
    let mut names: Vec<String> = resp
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k != "date" && k != "content-length" && k != "transfer-encoding")
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn responses_answer_is_a_response_object() {
    let sim = sim().await;
    let client = client();
    let mut req = Api::Responses.request("gpt-4.1-mini", false);
    req["instructions"] = json!("be brief");
    req["metadata"] = json!({"team": "sim"});
    let resp = Api::Responses.post(&client, &sim, &req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let chat = Api::Chat
        .send(&client, &sim, "gpt-4.1-mini", false)
        .await
        .unwrap();
    assert_eq!(header_names(&resp), header_names(&chat));
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("resp_sim"), "{id}");
    assert!(body["created_at"].as_u64().unwrap() > 0);
    let n = answer_tokens().count();
    let want = json!({
        "id": id,
        "object": "response",
        "created_at": body["created_at"],
        "status": "completed",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": "be brief",
        "max_output_tokens": null,
        "max_tool_calls": null,
        "model": "gpt-4.1-mini",
        "output": [{
            "type": "message",
            "id": body["output"][0]["id"],
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []}],
        }],
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "service_tier": "default",
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": n,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 5 + n,
        },
        "user": null,
        "metadata": {"team": "sim"},
    });
    assert_eq!(body, want);
    assert!(
        body["output"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_")
    );
    assert_eq!(sim.attempts("gpt-4.1-mini"), 2);
    assert_eq!(
        sim.last_request("gpt-4.1-mini"),
        Some(Api::Chat.request("gpt-4.1-mini", false))
    );

    // Input items: messages with text parts, and the same answer.
    let req = json!({
        "model": "items",
        "input": [
            {"type": "message", "role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_text", "text": "say the thing"}]},
        ],
        "temperature": 0.2,
    });
    let body = Api::Responses.answer(&client, &sim, &req).await;
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["usage"]["input_tokens"], 5);
    assert_eq!(sim.last_request("items"), Some(req));
}

#[tokio::test]
async fn responses_stream_is_openais_event_sequence() {
    let sim = sim().await;
    let resp = Api::Responses
        .send(&client(), &sim, "sim-ok", true)
        .await
        .unwrap();
    let chat = Api::Chat
        .send(&client(), &sim, "sim-ok", true)
        .await
        .unwrap();
    assert_eq!(header_names(&resp), header_names(&chat));
    let (events, err) = Api::Responses
        .stream(&sim, &Api::Responses.request("sim-ok", true))
        .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(malformed(&events), [0; 0], "{events:#?}");
    let n = answer_tokens().count();
    assert_eq!(names(&events), Api::Responses.sequence(n));
    assert_eq!(Api::Responses.text(&events), ANSWER);

    let created = &events[0].1["response"];
    assert!(created["id"].as_str().unwrap().starts_with("resp_sim"));
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    assert_eq!(created["usage"], Value::Null);
    assert_eq!(events[1].1["response"], *created);
    let added = &events[2].1;
    assert_eq!(added["output_index"], 0);
    let item_id = added["item"]["id"].as_str().unwrap();
    assert!(item_id.starts_with("msg_"), "{item_id}");
    assert_eq!(
        added["item"],
        json!({"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []})
    );
    let empty_part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
    assert_eq!(events[3].1["part"], empty_part);
    for (_, data) in &events[3..4 + n] {
        assert_eq!(data["item_id"], item_id);
        assert_eq!(data["output_index"], 0);
        assert_eq!(data["content_index"], 0);
    }
    assert_eq!(events[4].1["delta"], "The ");
    assert_eq!(events[4].1["logprobs"], json!([]));
    assert_eq!(events[4 + n].1["text"], ANSWER);
    let part = json!({"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []});
    assert_eq!(events[5 + n].1["part"], part);
    let item = &events[6 + n].1["item"];
    assert_eq!(item["status"], "completed");
    assert_eq!(item["content"], json!([part]));
    let completed = &events[7 + n].1["response"];
    assert_eq!(completed["id"], created["id"]);
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"], json!([item]));
    assert_eq!(completed["usage"]["output_tokens"], n);
    assert_eq!(completed["usage"]["total_tokens"], 3 + n);
}

#[tokio::test]
async fn responses_max_output_tokens_makes_an_incomplete_response() {
    let sim = sim().await;
    let mut req = Api::Responses.request("sim-ok", false);
    req["max_output_tokens"] = json!(3);
    let body = Api::Responses.answer(&client(), &sim, &req).await;
    assert_eq!(body["status"], "incomplete");
    assert_eq!(
        body["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(body["max_output_tokens"], 3);
    assert_eq!(body["output"][0]["status"], "incomplete");
    assert_eq!(body["output"][0]["content"][0]["text"], prefix(3));
    assert_eq!(body["usage"]["output_tokens"], 3);

    req["stream"] = json!(true);
    let (events, err) = Api::Responses.stream(&sim, &req).await;
    assert!(err.is_none());
    let mut want = Api::Responses.sequence(3);
    *want.last_mut().unwrap() = "response.incomplete";
    assert_eq!(names(&events), want);
    assert_eq!(Api::Responses.text(&events), prefix(3));
    let last = &events.last().unwrap().1["response"];
    assert_eq!(last["status"], "incomplete");
    assert_eq!(last["incomplete_details"]["reason"], "max_output_tokens");

    // A limit the answer fits in changes nothing.
    req["stream"] = json!(false);
    req["max_output_tokens"] = json!(64);
    let body = Api::Responses.answer(&client(), &sim, &req).await;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);
}

#[tokio::test]
async fn responses_sim_tool_calls_the_first_function_and_reads_its_output() {
    let sim = sim().await;
    let client = client();
    let body = Api::Responses
        .answer(&client, &sim, &Api::Responses.tool_request(false))
        .await;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["tools"], Api::Responses.tool_request(false)["tools"]);
    let call = &body["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"), "{call}");
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    assert!(call_id.starts_with("call_"), "{call_id}");
    let arguments = call["arguments"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(arguments).unwrap(),
        json!({"city": "sim"})
    );

    // Streamed: the item with empty arguments, the arguments in pieces, then done.
    let (events, err) = Api::Responses
        .stream(&sim, &Api::Responses.tool_request(true))
        .await;
    assert!(err.is_none());
    let pieces: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "response.function_call_arguments.delta")
        .map(|(_, data)| data["delta"].as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1, "{pieces:?}");
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ];
    want.extend(std::iter::repeat_n(
        "response.function_call_arguments.delta",
        pieces.len(),
    ));
    want.extend([
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names(&events), want);
    let added = &events[2].1["item"];
    assert_eq!(added["type"], "function_call");
    assert_eq!(added["status"], "in_progress");
    assert_eq!(added["arguments"], "");
    assert_eq!(added["name"], "get_weather");
    assert_eq!(pieces.concat(), arguments);
    let done = &events[events.len() - 3].1;
    assert_eq!(done["arguments"], arguments);
    assert_eq!(done["name"], "get_weather");
    assert_eq!(done["item_id"], added["id"]);
    let item = &events[events.len() - 2].1["item"];
    assert_eq!(item["status"], "completed");
    assert_eq!(item["arguments"], arguments);
    assert_eq!(
        events.last().unwrap().1["response"]["output"],
        json!([item])
    );

    // The round trip, by previous_response_id with only the output as input ...
    let mut next = Api::Responses.tool_request(false);
    next["previous_response_id"] = body["id"].clone();
    next["input"] =
        json!([{"type": "function_call_output", "call_id": call_id, "output": "sunny, 21 C"}]);
    let answer = Api::Responses.answer(&client, &sim, &next).await;
    assert_eq!(answer["previous_response_id"], body["id"]);
    assert_eq!(answer["output"][0]["type"], "message");
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "The tool answered: sunny, 21 C"
    );
    // ... or with the whole history, the call included, streamed.
    let mut full = Api::Responses.tool_request(true);
    full["input"] = json!([
        {"role": "user", "content": "say the thing"},
        call,
        {"type": "function_call_output", "call_id": call_id, "output": "sunny, 21 C"},
    ]);
    let (events, _) = Api::Responses.stream(&sim, &full).await;
    assert_eq!(
        Api::Responses.text(&events),
        "The tool answered: sunny, 21 C"
    );

    // Without tools, sim-tool is healthy.
    let body = Api::Responses
        .answer(&client, &sim, &Api::Responses.request("sim-tool", false))
        .await;
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);
}

#[tokio::test]
async fn responses_previous_response_id_must_be_a_stored_response() {
    let sim = sim().await;
    let client = client();
    let first = Api::Responses
        .answer(&client, &sim, &Api::Responses.request("m", false))
        .await;
    let stored = first["id"].as_str().unwrap().to_owned();
    assert!(sim.knows_response(&stored));
    let mut next = Api::Responses.request("m", false);
    next["previous_response_id"] = json!(stored);
    let body = Api::Responses.answer(&client, &sim, &next).await;
    assert_eq!(body["previous_response_id"], stored.as_str());
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);

    // A streamed answer is stored too, under the id its events carry.
    let (events, _) = Api::Responses
        .stream(&sim, &Api::Responses.request("m", true))
        .await;
    let streamed = events[0].1["response"]["id"].as_str().unwrap().to_owned();
    assert!(sim.knows_response(&streamed));
    next["previous_response_id"] = json!(streamed);
    next["stream"] = json!(true);
    let (events, err) = Api::Responses.stream(&sim, &next).await;
    assert!(err.is_none());
    assert_eq!(Api::Responses.text(&events), ANSWER);

    // Not stored: an unknown id, and one answered with store: false.
    let mut unstored = Api::Responses.request("m", false);
    unstored["store"] = json!(false);
    let body = Api::Responses.answer(&client, &sim, &unstored).await;
    assert_eq!(body["store"], false);
    let unstored = body["id"].as_str().unwrap().to_owned();
    assert!(!sim.knows_response(&unstored));
    let attempts = sim.attempts("m");
    for (id, stream) in [("resp_unknown", false), (unstored.as_str(), true)] {
        next["previous_response_id"] = json!(id);
        next["stream"] = json!(stream);
        let resp = Api::Responses.post(&client, &sim, &next).await.unwrap();
        assert_eq!(resp.status(), 400);
        let error: Value = resp.json().await.unwrap();
        assert_eq!(
            error,
            json!({"error": {
                "message": format!("Previous response with id '{id}' not found."),
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "previous_response_not_found",
            }})
        );
        assert!(!sim.knows_response(id));
    }
    // The refused requests were attempts on the model.
    assert_eq!(sim.attempts("m"), attempts + 2);

    // Another sim never saw the id, as another provider would not have.
    let other = self::sim().await;
    next["previous_response_id"] = json!(stored);
    next["stream"] = json!(false);
    let resp = Api::Responses.post(&client, &other, &next).await.unwrap();
    assert_eq!(resp.status(), 400);
    // A model whose fault is an error sends that error first.
    next["model"] = json!("sim-429");
    let resp = Api::Responses.post(&client, &other, &next).await.unwrap();
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn responses_count_attempts_and_keep_the_last_request() {
    let sim = sim_with("flaky", Fault::ServerErrorOnce).await;
    let client = client();
    let statuses = async |model: &str| {
        let mut out = Vec::new();
        for _ in 0..2 {
            out.push(
                Api::Responses
                    .status(&client, &sim, model, false)
                    .await
                    .as_u16(),
            );
        }
        out
    };
    assert_eq!(statuses("flaky").await, [500, 200]);
    assert_eq!(statuses("a").await, [200, 200]);
    // One count per model across the endpoints.
    Api::Chat.send(&client, &sim, "a", false).await.unwrap();
    assert_eq!(sim.attempts("flaky"), 2);
    assert_eq!(sim.attempts("a"), 3);

    let mut last = Api::Responses.request("a", true);
    last["reasoning"] = json!({"effort": "low"});
    last["include"] = json!(["reasoning.encrypted_content"]);
    let (events, _) = Api::Responses.stream(&sim, &last).await;
    assert_eq!(
        events[0].1["response"]["reasoning"],
        json!({"effort": "low"})
    );
    assert_eq!(sim.last_request("a"), Some(last.clone()));

    assert_eq!(sim.attempts("a"), 4);
    assert_eq!(sim.last_request("a"), Some(last));
}

/// A POST to `/v1/messages/count_tokens` of `sim`, with an Anthropic client's headers.
async fn count(client: &reqwest::Client, sim: &Sim, body: &Value) -> reqwest::Response {
    client
        .post(format!("{}/messages/count_tokens", sim.base_url()))
        .header("x-api-key", "sk-ant-sim")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "token-counting-2024-11-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A count request for `model`: `system`, a string message and one of content blocks.
fn count_request(model: &str) -> Value {
    json!({
        "model": model,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": "say the thing"},
            {"role": "assistant", "content": [{"type": "text", "text": "which thing"}]},
            {"role": "user", "content": [{"type": "text", "text": "the one you know"}]},
        ],
        "tools": [{"name": "get_weather", "input_schema": weather_schema()}],
    })
}

#[tokio::test]
async fn count_tokens_counts_the_prompt_that_messages_reports_as_input_tokens() {
    let sim = sim().await;
    let client = client();
    let req = count_request("claude-sim");
    let resp = count(&client, &sim, &req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["request-id"].to_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_sim"), "{request_id}");
    let body: Value = resp.json().await.unwrap();
    // be brief (2) + say the thing (3) + which thing (2) + the one you know (4).
    assert_eq!(body, json!({"input_tokens": 11}));
    assert_eq!(sim.attempts("claude-sim"), 1);
    let headers = sim.last_headers("claude-sim").unwrap();
    assert_eq!(headers["x-api-key"], "sk-ant-sim");
    assert_eq!(headers["anthropic-beta"], "token-counting-2024-11-01");
    assert_eq!(sim.last_request("claude-sim"), Some(req.clone()));

    // The same messages on /v1/messages report the same input tokens.
    let mut message = req.clone();
    message["max_tokens"] = json!(64);
    let answer = Api::Messages.answer(&client, &sim, &message).await;
    assert_eq!(answer["usage"]["input_tokens"], 11, "{answer}");

    // A trailing assistant message is counted, never rejected as a prefill, and `stream` or
    // `max_tokens` change nothing.
    sim.set_prefill(Prefill::Reject);
    let mut prefilled = count_request("claude-sim");
    prefilled["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "The"}));
    prefilled["stream"] = json!(true);
    prefilled["max_tokens"] = json!(1);
    let resp = count(&client, &sim, &prefilled).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["input_tokens"], 12);
}

#[tokio::test]
async fn count_tokens_takes_the_error_faults_of_messages_and_no_delivery_fault() {
    let sim = sim_with("configured-503", Fault::Status(503)).await;
    let client = client();
    for model in [
        "sim-429",
        "sim-429-retry-2",
        "sim-500",
        "sim-503",
        "configured-503",
        "sim-529",
        "sim-401",
        "sim-402",
        "sim-404",
        "sim-400",
        "sim-context",
        "sim-filter",
    ] {
        let counted = count(&client, &sim, &count_request(model)).await;
        let mut message = count_request(model);
        message["max_tokens"] = json!(64);
        let answered = Api::Messages.post(&client, &sim, &message).await.unwrap();
        assert_eq!(counted.status(), answered.status(), "{model}");
        assert_eq!(
            counted.headers().get("retry-after"),
            answered.headers().get("retry-after"),
            "{model}"
        );
        let (counted, answered): (Value, Value) = (
            counted.json().await.unwrap(),
            answered.json().await.unwrap(),
        );
        assert_eq!(counted, answered, "{model}");
        assert_eq!(counted["type"], "error", "{model}: {counted}");
    }
    // The faults of an answer's delivery leave a count whole, and at once.
    for model in [
        "sim-cut-3",
        "sim-stall-3",
        "sim-malformed-3",
        "sim-error-3",
        "sim-no-done",
        "sim-slow-5s",
        "sim-tool",
        "sim-500-once",
    ] {
        let resp = timeout(QUIET * 3, count(&client, &sim, &count_request(model)))
            .await
            .unwrap_or_else(|_| panic!("{model}: no answer in time"));
        let status = resp.status();
        let body: Value = timeout(QUIET * 3, resp.json()).await.unwrap().unwrap();
        if model == "sim-500-once" {
            assert_eq!(status, 500, "{model}");
            assert_eq!(body["error"]["type"], "api_error", "{model}");
            continue;
        }
        assert_eq!(status, 200, "{model}");
        assert_eq!(body, json!({"input_tokens": 11}), "{model}");
    }
    // The connection faults are every endpoint's.
    let silent = count_request("sim-silent");
    assert!(timeout(QUIET, count(&client, &sim, &silent)).await.is_err());
}

#[tokio::test]
async fn count_tokens_validates_as_messages_does_without_max_tokens() {
    let sim = sim().await;
    let client = client();
    for (body, says) in [
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            "model: Field required",
        ),
        (json!({"model": "m"}), "messages: Field required"),
        (
            json!({"model": "m", "messages": []}),
            "messages: at least one message is required",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": "hi"}]}),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "content": "hi "}]}),
            "messages: final assistant content cannot end with trailing whitespace",
        ),
        (json!(["not", "an", "object"]), "Input should be an object"),
    ] {
        let resp = count(&client, &sim, &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        assert!(resp.headers().contains_key("request-id"), "{body}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["type"], "error", "{body}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(error["error"]["message"], says, "{body}");
    }
    assert_eq!(sim.total_attempts(), 6);
    assert_eq!(sim.attempts("m"), 0);
}
