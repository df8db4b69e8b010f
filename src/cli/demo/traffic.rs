//! The traffic loop: a few workers sending real HTTP requests through the proxy, in turn on
//! each of its client APIs (chat completions, Anthropic Messages, the Responses API,
//! embeddings), and the board where their results are counted.
//!
//! Everything counted here is read back from what a client sees: the status, the answer,
//! and the `x-failover-provider`, `x-failover-model` and `x-failover-trail` headers (also
//! sent with error bodies).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{RwLock, mpsc, watch};
use tokio::task::JoinHandle;

use llm_failover::proxy::headers;
use llm_failover::sim::ANSWER;

use super::Failure;
use super::scenario::{EMBED_ROUTE, Phase, ROUTE};
use super::tap::Transition;

/// How many requests are in flight at most.
const WORKERS: usize = 4;
/// The pause of a worker between two requests (plus up to half as much again, at random).
const PACE: Duration = Duration::from_millis(60);

/// Something the screen shows as it happens.
#[derive(Debug, Clone)]
pub(super) enum Note {
    /// The simulation entered a phase.
    Phase(Phase),
    /// A breaker changed state.
    Transition(Transition),
    /// A route's requests are now served by another target than its last one.
    ServedBy { target: String, trail: String },
    /// A request ended in an error.
    Failed { what: String, trail: String },
}

/// A note and when it happened, from the start of the demo.
#[derive(Debug, Clone)]
pub(super) struct Stamped {
    pub(super) at: Duration,
    pub(super) note: Note,
}

/// The counts the screen shows, all from the client's side.
#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    /// Answers by target (`provider/model`) and phase.
    pub(super) served: BTreeMap<String, [u64; Phase::ALL.len()]>,
    /// Requests that got a complete answer.
    pub(super) ok: u64,
    /// Requests that did not (status, error event, truncated answer).
    pub(super) error: u64,
    /// Errors by what went wrong.
    pub(super) errors: BTreeMap<String, u64>,
    /// Attempts that failed and moved the request on (to another target, or a retry), by
    /// the reason in the trail (`breaker_open` when a breaker rejected the attempt at once).
    pub(super) failovers: BTreeMap<String, u64>,
    /// Streaming and non-streaming requests (embeddings count as non-streaming).
    pub(super) streamed: u64,
    pub(super) whole: u64,
    /// Requests by client API, in the order of [`Api::ALL`].
    pub(super) by_api: [u64; Api::ALL.len()],
    /// The target of the last answer, by route.
    last_served: BTreeMap<&'static str, String>,
}

/// What the workers, the script and the screen share.
#[derive(Debug)]
pub(super) struct Board {
    start: Instant,
    phase: AtomicUsize,
    in_flight: AtomicU64,
    tally: Mutex<Tally>,
    notes: mpsc::UnboundedSender<Stamped>,
}

impl Board {
    pub(super) fn new(notes: mpsc::UnboundedSender<Stamped>) -> Self {
        Self {
            start: Instant::now(),
            phase: AtomicUsize::new(Phase::Healthy.index()),
            in_flight: AtomicU64::new(0),
            tally: Mutex::default(),
            notes,
        }
    }

    pub(super) fn start(&self) -> Instant {
        self.start
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub(super) fn phase(&self) -> Phase {
        Phase::from_index(self.phase.load(Ordering::Acquire))
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase.index(), Ordering::Release);
        self.note(Note::Phase(phase));
    }

    pub(super) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A copy of the counts.
    pub(super) fn tally(&self) -> Tally {
        self.lock().clone()
    }

    /// Sends a note to the screen (dropped once the screen is gone).
    pub(super) fn note(&self, note: Note) {
        let _ = self.notes.send(Stamped {
            at: self.elapsed(),
            note,
        });
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request's reply, in the phase it ended in.
    fn record(&self, ask: Ask, reply: Reply) {
        let phase = self.phase();
        let mut changed = None;
        let mut failed = None;
        {
            let mut t = self.lock();
            t.by_api[ask.api.index()] += 1;
            if ask.stream {
                t.streamed += 1;
            } else {
                t.whole += 1;
            }
            let attempts: Vec<&str> = reply.trail.split("; ").filter(|a| !a.is_empty()).collect();
            for attempt in attempts.iter().take(attempts.len().saturating_sub(1)) {
                if let Some((_, outcome)) = attempt.rsplit_once('=')
                    && outcome != "ok"
                {
                    *t.failovers.entry(outcome.to_owned()).or_default() += 1;
                }
            }
            match reply.outcome {
                Ok(()) => {
                    t.ok += 1;
                    if let Some(target) = reply.served_by {
                        t.served.entry(target.clone()).or_default()[phase.index()] += 1;
                        let last = t.last_served.insert(ask.api.route(), target.clone());
                        if last.as_ref() != Some(&target) {
                            changed = Some(target);
                        }
                    }
                }
                Err(what) => {
                    let what = format!("{}: {what}", ask.api.name());
                    t.error += 1;
                    *t.errors.entry(what.clone()).or_default() += 1;
                    failed = Some(what);
                }
            }
        }
        if let Some(target) = changed {
            self.note(Note::ServedBy {
                target,
                trail: reply.trail,
            });
        } else if let Some(what) = failed {
            self.note(Note::Failed {
                what,
                trail: reply.trail,
            });
        }
    }
}

/// The client APIs the workers use, each on its own endpoint of the proxy. The sims speak
/// OpenAI's chat API, so the proxy translates Messages and Responses requests for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    /// OpenAI chat completions, `POST /v1/chat/completions`.
    Chat,
    /// Anthropic's Messages API, `POST /v1/messages`.
    Messages,
    /// OpenAI's Responses API, `POST /v1/responses`.
    Responses,
    /// OpenAI embeddings, `POST /v1/embeddings`: never streamed, on a route of one model.
    Embeddings,
}

impl Api {
    pub(super) const ALL: [Api; 4] = [Api::Chat, Api::Messages, Api::Responses, Api::Embeddings];

    pub(super) const fn index(self) -> usize {
        match self {
            Api::Chat => 0,
            Api::Messages => 1,
            Api::Responses => 2,
            Api::Embeddings => 3,
        }
    }

    pub(super) const fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Messages => "messages",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
        }
    }

    pub(super) const fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Messages => "/v1/messages",
            Api::Responses => "/v1/responses",
            Api::Embeddings => "/v1/embeddings",
        }
    }

    /// The route its requests name as their model.
    const fn route(self) -> &'static str {
        match self {
            Api::Chat | Api::Messages | Api::Responses => ROUTE,
            Api::Embeddings => EMBED_ROUTE,
        }
    }

    const fn streams(self) -> bool {
        match self {
            Api::Chat | Api::Messages | Api::Responses => true,
            Api::Embeddings => false,
        }
    }

    fn body(self, stream: bool) -> Value {
        let model = self.route();
        match self {
            Api::Chat => json!({
                "model": model,
                "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}],
            }),
            Api::Messages => json!({
                "model": model,
                "max_tokens": 256,
                "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}],
            }),
            Api::Responses => json!({"model": model, "stream": stream, "input": PROMPT}),
            Api::Embeddings => json!({"model": model, "input": EMBED_INPUTS}),
        }
    }

    /// Whether a successful body is a complete answer, in this API's shapes; what is wrong
    /// with it if not.
    fn check(self, body: &str, stream: bool) -> Result<(), String> {
        let body = if stream {
            Body::Stream(events(body))
        } else {
            Body::Whole(serde_json::from_str(body).map_err(|_| "answer is not JSON".to_owned())?)
        };
        match self {
            Api::Chat => check_chat(body),
            Api::Messages => check_messages(body),
            Api::Responses => check_responses(body),
            Api::Embeddings => check_embeddings(&body),
        }
    }
}

/// What the chat-like APIs ask.
const PROMPT: &str = "Say something reassuring about uptime.";
/// What the embeddings requests embed: one vector each.
const EMBED_INPUTS: [&str; 2] = ["the primary is down", "the fallback answers"];

/// One request a worker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    api: Api,
    stream: bool,
}

/// The requests worker `id` sends, in turn: every API once a round, the chat-like ones
/// streamed every other round. Each worker starts on another API and half of them with a
/// stream, so every kind is in flight at any time.
fn asks(id: usize) -> impl Iterator<Item = Ask> {
    let apis = Api::ALL.len();
    (id * (apis + 1)..).map(move |n| {
        let api = Api::ALL[n % apis];
        Ask {
            api,
            stream: api.streams() && (n / apis).is_multiple_of(2),
        }
    })
}

/// What one request came back with.
#[derive(Debug)]
struct Reply {
    /// `provider/model` from the `x-failover-*` headers.
    served_by: Option<String>,
    /// The `x-failover-trail` header.
    trail: String,
    /// A complete answer, or what went wrong.
    outcome: Result<(), String>,
}

/// Starts the workers; they stop (after the request in flight) when `stop` turns true.
pub(super) fn start(
    proxy: SocketAddr,
    board: &Arc<Board>,
    gate: &Arc<RwLock<()>>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, Failure> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::Other(format!("cannot build the HTTP client: {e}")))?;
    let base = format!("http://{proxy}");
    Ok((0..WORKERS)
        .map(|id| {
            tokio::spawn(worker(
                id,
                client.clone(),
                base.clone(),
                Arc::clone(board),
                Arc::clone(gate),
                stop.clone(),
            ))
        })
        .collect())
}

async fn worker(
    id: usize,
    client: reqwest::Client,
    base: String,
    board: Arc<Board>,
    gate: Arc<RwLock<()>>,
    mut stop: watch::Receiver<bool>,
) {
    for ask in asks(id) {
        if *stop.borrow() {
            break;
        }
        {
            // Held until the reply is counted, so it counts in the phase it was served in.
            let _request = gate.read().await;
            board.in_flight.fetch_add(1, Ordering::Relaxed);
            let reply = request(&client, &base, ask).await;
            board.in_flight.fetch_sub(1, Ordering::Relaxed);
            board.record(ask, reply);
        }
        let pause = PACE + PACE.mul_f64(fastrand::f64() / 2.0);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn request(client: &reqwest::Client, base: &str, ask: Ask) -> Reply {
    let url = format!("{base}{}", ask.api.path());
    let resp = match client
        .post(url)
        .json(&ask.api.body(ask.stream))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Reply {
                served_by: None,
                trail: String::new(),
                outcome: Err(format!("proxy not reached ({})", kind_of(&e))),
            };
        }
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let trail = header(headers::TRAIL);
    let served_by = match (header(headers::PROVIDER), header(headers::MODEL)) {
        (p, m) if !p.is_empty() && !m.is_empty() => Some(format!("{p}/{m}")),
        _ => None,
    };
    let status = resp.status();
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => {
            return Reply {
                served_by,
                trail,
                outcome: Err(format!("answer cut ({})", kind_of(&e))),
            };
        }
    };
    let outcome = if status.is_success() {
        ask.api.check(&text, ask.stream)
    } else {
        Err(error_of(status.as_u16(), &text))
    };
    Reply {
        served_by,
        trail,
        outcome,
    }
}

/// What an error body says: the status and the failover reason (or the error's code).
fn error_of(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    format!("HTTP {status} {}", reason_of(&v["error"]))
}

/// Why an error object (of any of the protocols) says a request failed: the proxy's
/// failover reason, else the error's code or type.
fn reason_of(error: &Value) -> &str {
    error["failover"]["reason"]
        .as_str()
        .or_else(|| error["code"].as_str())
        .or_else(|| error["type"].as_str())
        .unwrap_or("no error body")
}

/// A successful body, read as far as the protocols share: a JSON answer, or a stream's
/// events.
#[derive(Debug)]
enum Body<'a> {
    Whole(Value),
    Stream(Vec<Event<'a>>),
}

/// One server-sent event: its name (`event:`), if it has one, and its data.
#[derive(Debug)]
struct Event<'a> {
    name: Option<&'a str>,
    data: String,
}

impl Event<'_> {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_default()
    }
}

/// The events of a stream; comment lines (the trail of a resumed stream) are skipped.
fn events(body: &str) -> Vec<Event<'_>> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data: Option<String> = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim());
                } else if let Some(d) = line.strip_prefix("data:") {
                    let d = d.strip_prefix(' ').unwrap_or(d);
                    match &mut data {
                        Some(all) => {
                            all.push('\n');
                            all.push_str(d);
                        }
                        None => data = Some(d.to_owned()),
                    }
                }
            }
            Some(Event { name, data: data? })
        })
        .collect()
}

/// The verdict on an answer's text.
fn whole(text: &str) -> Result<(), String> {
    if text == ANSWER {
        Ok(())
    } else {
        Err("answer incomplete".to_owned())
    }
}

/// The verdict on a stream's text, from its deltas, when it reached its protocol's `end`
/// (`ended`) or not.
fn whole_stream(text: &str, ended: bool, end: &str) -> Result<(), String> {
    match (ended, text == ANSWER) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("stream ended without {end}")),
        (true, false) => Err("stream answer incomplete".to_owned()),
    }
}

/// How the proxy ends a stream that broke after its start: an error event, whose error
/// object names the reason.
fn stream_error(error: &Value) -> String {
    format!("stream ended by an error event ({})", reason_of(error))
}

/// Chat completions: the answer in `choices[0].message.content`; a stream of `data:` chunks
/// with `choices[0].delta.content`, ended by `data: [DONE]`, broken by a
/// `data: {"error": ...}` chunk.
fn check_chat(body: Body<'_>) -> Result<(), String> {
    let events = match body {
        Body::Whole(v) => {
            return whole(
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default(),
            );
        }
        Body::Stream(events) => events,
    };
    let mut text = String::new();
    for e in &events {
        if e.data.trim() == "[DONE]" {
            return whole_stream(&text, true, "[DONE]");
        }
        let v = e.json();
        if let Some(error) = v.get("error") {
            return Err(stream_error(error));
        }
        if let Some(delta) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(delta);
        }
    }
    whole_stream(&text, false, "[DONE]")
}

/// Anthropic Messages: the answer in the `text` of `content[*]`; a stream of named events
/// with `content_block_delta`s' `delta.text`, ended by `message_stop`, broken by an
/// `event: error` whose data is `{"type": "error", "error": {...}}`.
fn check_messages(body: Body<'_>) -> Result<(), String> {
    let events = match body {
        Body::Whole(v) => {
            let blocks = v["content"].as_array().into_iter().flatten();
            return whole(
                &blocks
                    .filter_map(|b| b["text"].as_str())
                    .collect::<String>(),
            );
        }
        Body::Stream(events) => events,
    };
    let mut text = String::new();
    for e in &events {
        match e.name {
            Some("message_stop") => return whole_stream(&text, true, "message_stop"),
            Some("error") => return Err(stream_error(&e.json()["error"])),
            Some("content_block_delta") => {
                text.push_str(e.json()["delta"]["text"].as_str().unwrap_or_default());
            }
            _ => {}
        }
    }
    whole_stream(&text, false, "message_stop")
}

/// The Responses API: the answer in the `output_text` parts of the `message` items of
/// `output`; a stream of named events with `response.output_text.delta`s' `delta`, ended by
/// `response.completed`, broken by an `event: error` whose data carries an `error` object
/// (or failed by `response.failed`, whose response has one).
fn check_responses(body: Body<'_>) -> Result<(), String> {
    let events = match body {
        Body::Whole(v) => {
            if v["status"] == "failed" {
                return Err(format!("response failed ({})", reason_of(&v["error"])));
            }
            let parts = v["output"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| item["type"] == "message")
                .flat_map(|item| item["content"].as_array().into_iter().flatten())
                .filter(|part| part["type"] == "output_text");
            return whole(&parts.filter_map(|p| p["text"].as_str()).collect::<String>());
        }
        Body::Stream(events) => events,
    };
    let mut text = String::new();
    for e in &events {
        match e.name {
            Some("response.completed") => return whole_stream(&text, true, "response.completed"),
            Some("error") => return Err(stream_error(&e.json()["error"])),
            Some("response.failed") => {
                let error = &e.json()["response"]["error"];
                return Err(format!("response failed ({})", reason_of(error)));
            }
            Some("response.output_text.delta") => {
                text.push_str(e.json()["delta"].as_str().unwrap_or_default());
            }
            _ => {}
        }
    }
    whole_stream(&text, false, "response.completed")
}

/// Embeddings: one non-empty vector of numbers in `data[*].embedding` per input.
fn check_embeddings(body: &Body<'_>) -> Result<(), String> {
    let Body::Whole(v) = body else {
        return Err("embeddings came as a stream".to_owned());
    };
    let vectors = v["data"].as_array().map_or(&[][..], Vec::as_slice);
    let complete = |d: &Value| {
        d["embedding"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(Value::is_number))
    };
    if vectors.len() == EMBED_INPUTS.len() && vectors.iter().all(complete) {
        Ok(())
    } else {
        Err("answer incomplete".to_owned())
    }
}

/// A short word for a client error (its text may name URLs; these are ours, but the screen
/// shows only what kind of failure it was).
fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_failover::sim::answer_tokens;

    fn reply(served_by: Option<&str>, trail: &str, outcome: Result<(), String>) -> Reply {
        Reply {
            served_by: served_by.map(str::to_owned),
            trail: trail.to_owned(),
            outcome,
        }
    }

    fn ask(api: Api, stream: bool) -> Ask {
        Ask { api, stream }
    }

    #[test]
    fn replies_are_counted_by_target_phase_api_and_reason() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let board = Board::new(tx);
        board.record(
            ask(Api::Chat, true),
            reply(Some("local/llama3"), "local/llama3=ok", Ok(())),
        );
        board.record(
            ask(Api::Embeddings, false),
            reply(
                Some("local/nomic-embed-text"),
                "local/nomic-embed-text=ok",
                Ok(()),
            ),
        );
        // Another route's target: the chat route is still served where it was.
        board.record(
            ask(Api::Messages, false),
            reply(Some("local/llama3"), "local/llama3=ok", Ok(())),
        );
        board.set_phase(Phase::Outage);
        board.record(
            ask(Api::Responses, false),
            reply(
                Some("cloud/gpt-4o-mini"),
                "local/llama3=connection_refused; cloud/gpt-4o-mini=ok",
                Ok(()),
            ),
        );
        board.record(
            ask(Api::Chat, false),
            reply(
                Some("cloud/gpt-4o-mini"),
                "local/llama3=breaker_open; cloud/gpt-4o-mini=ok",
                Ok(()),
            ),
        );
        board.record(
            ask(Api::Messages, true),
            reply(
                None,
                "local/llama3=breaker_open; cloud/gpt-4o-mini=server_error",
                Err("HTTP 502 server_error".into()),
            ),
        );
        let t = board.tally();
        assert_eq!(t.served["local/llama3"], [2, 0, 0]);
        assert_eq!(t.served["local/nomic-embed-text"], [1, 0, 0]);
        assert_eq!(t.served["cloud/gpt-4o-mini"], [0, 2, 0]);
        assert_eq!((t.ok, t.error, t.streamed, t.whole), (5, 1, 2, 4));
        assert_eq!(t.by_api, [2, 2, 1, 1]);
        assert_eq!(t.failovers["connection_refused"], 1);
        assert_eq!(t.failovers["breaker_open"], 2);
        assert!(!t.failovers.contains_key("server_error"));
        assert_eq!(t.errors["messages: HTTP 502 server_error"], 1);

        let notes: Vec<Note> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| s.note)
            .collect();
        let served =
            |n: &Note, to: &str| matches!(n, Note::ServedBy { target, .. } if target == to);
        assert!(served(&notes[0], "local/llama3"), "{notes:?}");
        assert!(served(&notes[1], "local/nomic-embed-text"), "{notes:?}");
        assert!(matches!(&notes[2], Note::Phase(Phase::Outage)));
        assert!(served(&notes[3], "cloud/gpt-4o-mini"), "{notes:?}");
        assert!(
            matches!(&notes[4], Note::Failed { what, .. } if what == "messages: HTTP 502 server_error")
        );
        assert_eq!(notes.len(), 5, "{notes:?}");
    }

    #[test]
    fn workers_rotate_through_the_apis_and_alternate_streams() {
        let firsts: Vec<Ask> = (0..WORKERS).filter_map(|id| asks(id).next()).collect();
        assert_eq!(
            firsts,
            [
                ask(Api::Chat, true),
                ask(Api::Messages, false),
                ask(Api::Responses, true),
                ask(Api::Embeddings, false),
            ]
        );
        // Two rounds: each chat-like API once streamed and once not; embeddings never.
        let two_rounds: Vec<Ask> = asks(1).take(2 * Api::ALL.len()).collect();
        for api in Api::ALL {
            let streamed = |s: bool| two_rounds.contains(&ask(api, s));
            assert!(streamed(false), "{api:?}: {two_rounds:?}");
            assert_eq!(streamed(true), api.streams(), "{api:?}: {two_rounds:?}");
        }
    }

    /// A stream of `event` per token, then `end`.
    fn stream(event: impl Fn(&str) -> String, end: &str) -> String {
        answer_tokens().map(event).chain([end.to_owned()]).collect()
    }

    /// The first token's event, then `end`.
    fn cut(event: impl Fn(&str) -> String, end: &str) -> String {
        answer_tokens()
            .take(1)
            .map(event)
            .chain([end.to_owned()])
            .collect()
    }

    fn named(name: &str, data: &Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    #[test]
    fn chat_streams_must_be_whole_and_end_with_done() {
        let chunk = |s: &str| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"delta": {"content": s}}]})
            )
        };
        let done = "data: [DONE]\n\n";
        assert_eq!(Api::Chat.check(&stream(chunk, done), true), Ok(()));
        // A resumed stream's trail comment before [DONE].
        let resumed = stream(chunk, &format!(": x-failover-trail: a=ok\n{done}"));
        assert_eq!(Api::Chat.check(&resumed, true), Ok(()));
        assert_eq!(
            Api::Chat.check(&stream(chunk, ""), true),
            Err("stream ended without [DONE]".into())
        );
        assert_eq!(
            Api::Chat.check(&cut(chunk, done), true),
            Err("stream answer incomplete".into())
        );
        let error = json!({"error": {"code": "stream_interrupted", "failover": {"reason": "stream_interrupted"}}});
        assert_eq!(
            Api::Chat.check(&cut(chunk, &format!("data: {error}\n\n")), true),
            Err("stream ended by an error event (stream_interrupted)".into())
        );
    }

    #[test]
    fn messages_streams_must_be_whole_and_end_with_message_stop() {
        let delta = |s: &str| {
            named(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": s}}),
            )
        };
        let stop = named("message_stop", &json!({"type": "message_stop"}));
        let check = |body: &str| Api::Messages.check(body, true);
        assert_eq!(check(&stream(delta, &stop)), Ok(()));
        assert_eq!(
            check(&stream(delta, "")),
            Err("stream ended without message_stop".into())
        );
        assert_eq!(
            check(&cut(delta, &stop)),
            Err("stream answer incomplete".into())
        );
        let error = named(
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "code": "stream_interrupted", "failover": {"reason": "stream_interrupted"}}}),
        );
        assert_eq!(
            check(&cut(delta, &error)),
            Err("stream ended by an error event (stream_interrupted)".into())
        );
    }

    #[test]
    fn responses_streams_must_be_whole_and_end_with_response_completed() {
        let delta = |s: &str| {
            named(
                "response.output_text.delta",
                &json!({"type": "response.output_text.delta", "delta": s}),
            )
        };
        let completed = named(
            "response.completed",
            &json!({"type": "response.completed", "response": {"status": "completed"}}),
        );
        let check = |body: &str| Api::Responses.check(body, true);
        assert_eq!(check(&stream(delta, &completed)), Ok(()));
        assert_eq!(
            check(&stream(delta, "")),
            Err("stream ended without response.completed".into())
        );
        assert_eq!(
            check(&cut(delta, &completed)),
            Err("stream answer incomplete".into())
        );
        let error = named(
            "error",
            &json!({"type": "error", "code": "stream_interrupted", "message": "cut", "param": null,
                    "error": {"code": "stream_interrupted", "failover": {"reason": "stream_interrupted"}}}),
        );
        assert_eq!(
            check(&cut(delta, &error)),
            Err("stream ended by an error event (stream_interrupted)".into())
        );
        let failed = named(
            "response.failed",
            &json!({"type": "response.failed", "response": {"status": "failed", "error": {"code": "server_error"}}}),
        );
        assert_eq!(
            check(&cut(delta, &failed)),
            Err("response failed (server_error)".into())
        );
    }

    #[test]
    fn answers_must_be_whole_in_each_protocol() {
        let half: String = answer_tokens().take(2).collect();
        let chat =
            |text: &str| json!({"choices": [{"message": {"role": "assistant", "content": text}}]});
        let messages =
            |text: &str| json!({"type": "message", "content": [{"type": "text", "text": text}]});
        let responses = |text: &str| {
            json!({"status": "completed", "output": [
                {"type": "reasoning", "summary": []},
                {"type": "message", "content": [{"type": "output_text", "text": text}]},
            ]})
        };
        for (api, answer) in [
            (Api::Chat, &chat as &dyn Fn(&str) -> Value),
            (Api::Messages, &messages),
            (Api::Responses, &responses),
        ] {
            assert_eq!(
                api.check(&answer(ANSWER).to_string(), false),
                Ok(()),
                "{api:?}"
            );
            assert_eq!(
                api.check(&answer(&half).to_string(), false),
                Err("answer incomplete".into()),
                "{api:?}"
            );
            assert_eq!(
                api.check("{\"choices\": [", false),
                Err("answer is not JSON".into()),
                "{api:?}"
            );
        }
        let failed = json!({"status": "failed", "error": {"code": "server_error"}, "output": []});
        assert_eq!(
            Api::Responses.check(&failed.to_string(), false),
            Err("response failed (server_error)".into())
        );

        let vectors = |v: Vec<Value>| {
            json!({"object": "list", "data": v.into_iter().map(|e| json!({"object": "embedding", "embedding": e})).collect::<Vec<_>>()}).to_string()
        };
        let check = |body: String| Api::Embeddings.check(&body, false);
        assert_eq!(
            check(vectors(vec![json!([0.6, 0.8]), json!([1, 0])])),
            Ok(())
        );
        let incomplete = Err("answer incomplete".into());
        assert_eq!(check(vectors(vec![json!([0.6, 0.8])])), incomplete);
        assert_eq!(
            check(vectors(vec![json!([0.6, 0.8]), json!([])])),
            incomplete
        );
        assert_eq!(
            check(vectors(vec![json!([0.6, 0.8]), json!("AAAA")])),
            incomplete
        );
    }

    /// A proxy whose `chat` and `embed` routes go to `model` on a sim, for as long as the
    /// test runs.
    async fn proxy(model: &str) -> String {
        let sim = llm_failover::sim::Sim::builder()
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[providers.sim]\nbase_url = \"{}\"\n\n\
             [routes.{ROUTE}]\ntargets = [\"sim/{model}\"]\n\n\
             [routes.{EMBED_ROUTE}]\ntargets = [\"sim/{model}\"]\n",
            sim.base_url()
        );
        let config = llm_failover::proxy::Config::parse(&toml, "test.toml")
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let proxy = llm_failover::proxy::Proxy::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let listener = tokio::net::TcpListener::bind(config.listen())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _sim = sim;
            proxy.serve(listener, std::future::pending()).await
        });
        format!("http://{addr}")
    }

    /// The checks against what the proxy really sends, in every protocol: whole answers, and
    /// streams broken after their first tokens (no other target to finish them).
    #[tokio::test]
    async fn the_checks_read_the_proxys_answers_in_every_protocol() {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let healthy = proxy("sim-ok").await;
        let broken = proxy("sim-cut-3").await;
        for api in Api::ALL {
            for stream in [false, true].into_iter().filter(|s| !s || api.streams()) {
                let reply = request(&client, &healthy, ask(api, stream)).await;
                assert_eq!(reply.outcome, Ok(()), "{api:?} stream={stream}");
                assert_eq!(reply.served_by.as_deref(), Some("sim/sim-ok"));
            }
            if api.streams() {
                let reply = request(&client, &broken, ask(api, true)).await;
                assert_eq!(
                    reply.outcome,
                    Err("stream ended by an error event (stream_interrupted)".into()),
                    "{api:?}"
                );
            }
        }
    }

    #[test]
    fn error_bodies_name_their_reason_in_any_shape() {
        assert_eq!(
            error_of(
                503,
                r#"{"error": {"failover": {"reason": "connection_refused"}}}"#
            ),
            "HTTP 503 connection_refused"
        );
        assert_eq!(
            error_of(
                529,
                r#"{"type": "error", "error": {"type": "overloaded_error", "failover": {"reason": "overloaded"}}}"#
            ),
            "HTTP 529 overloaded"
        );
        assert_eq!(
            error_of(400, r#"{"error": {"code": "route_not_embeddable"}}"#),
            "HTTP 400 route_not_embeddable"
        );
        assert_eq!(error_of(502, "Bad Gateway"), "HTTP 502 no error body");
    }
}
