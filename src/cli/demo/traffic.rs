//! The traffic loop: a few workers sending real HTTP requests through the proxy, and the
//! board where their results are counted.
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
use super::scenario::{Phase, ROUTE};
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
    /// Requests are now served by another target than the last one.
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
    /// Streaming and non-streaming requests.
    pub(super) streamed: u64,
    pub(super) whole: u64,
    /// The target of the last answer.
    last_served: Option<String>,
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
    fn record(&self, reply: Reply, streamed: bool) {
        let phase = self.phase();
        let mut changed = None;
        let mut failed = None;
        {
            let mut t = self.lock();
            if streamed {
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
                        if t.last_served.as_ref() != Some(&target) {
                            t.last_served = Some(target.clone());
                            changed = Some(target);
                        }
                    }
                }
                Err(what) => {
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
    let url = format!("http://{proxy}/v1/chat/completions");
    Ok((0..WORKERS)
        .map(|id| {
            tokio::spawn(worker(
                id,
                client.clone(),
                url.clone(),
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
    url: String,
    board: Arc<Board>,
    gate: Arc<RwLock<()>>,
    mut stop: watch::Receiver<bool>,
) {
    // Half the workers start with a stream, so both kinds are in flight at any time.
    let mut streamed = id.is_multiple_of(2);
    while !*stop.borrow() {
        {
            // Held until the reply is counted, so it counts in the phase it was served in.
            let _request = gate.read().await;
            board.in_flight.fetch_add(1, Ordering::Relaxed);
            let reply = request(&client, &url, streamed).await;
            board.in_flight.fetch_sub(1, Ordering::Relaxed);
            board.record(reply, streamed);
        }
        streamed = !streamed;
        let pause = PACE + PACE.mul_f64(fastrand::f64() / 2.0);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn request(client: &reqwest::Client, url: &str, stream: bool) -> Reply {
    let body = json!({
        "model": ROUTE,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say something reassuring about uptime."}],
    });
    let resp = match client.post(url).json(&body).send().await {
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
    let outcome = if !status.is_success() {
        Err(error_of(status.as_u16(), &text))
    } else if stream {
        check_stream(&text)
    } else {
        check_answer(&text)
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
    let e = &v["error"];
    let reason = e["failover"]["reason"]
        .as_str()
        .or_else(|| e["code"].as_str())
        .or_else(|| e["type"].as_str())
        .unwrap_or("no error body");
    format!("HTTP {status} {reason}")
}

fn check_answer(body: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(body).map_err(|_| "answer is not JSON".to_owned())?;
    match v["choices"][0]["message"]["content"].as_str() {
        Some(ANSWER) => Ok(()),
        _ => Err("answer incomplete".to_owned()),
    }
}

/// A stream is complete when its deltas add up to the whole answer and it ends with
/// `[DONE]`; an `error` event is how the proxy ends a stream that broke after its start.
fn check_stream(body: &str) -> Result<(), String> {
    let mut text = String::new();
    let mut done = false;
    for data in body
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data:"))
    {
        let data = data.trim();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or_default();
        if v.get("error").is_some() {
            let reason = v["error"]["code"].as_str().unwrap_or("error");
            return Err(format!("stream ended by an error event ({reason})"));
        }
        if let Some(delta) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(delta);
        }
    }
    match (done, text == ANSWER) {
        (true, true) => Ok(()),
        (false, _) => Err("stream ended without [DONE]".to_owned()),
        (true, false) => Err("stream answer incomplete".to_owned()),
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

    fn reply(served_by: Option<&str>, trail: &str, outcome: Result<(), String>) -> Reply {
        Reply {
            served_by: served_by.map(str::to_owned),
            trail: trail.to_owned(),
            outcome,
        }
    }

    #[test]
    fn replies_are_counted_by_target_phase_and_reason() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let board = Board::new(tx);
        board.record(reply(Some("local/llama3"), "local/llama3=ok", Ok(())), true);
        board.set_phase(Phase::Outage);
        board.record(
            reply(
                Some("cloud/gpt-4o-mini"),
                "local/llama3=connection_refused; cloud/gpt-4o-mini=ok",
                Ok(()),
            ),
            false,
        );
        board.record(
            reply(
                Some("cloud/gpt-4o-mini"),
                "local/llama3=breaker_open; cloud/gpt-4o-mini=ok",
                Ok(()),
            ),
            false,
        );
        board.record(
            reply(
                None,
                "local/llama3=breaker_open; cloud/gpt-4o-mini=server_error",
                Err("HTTP 502 server_error".into()),
            ),
            false,
        );
        let t = board.tally();
        assert_eq!(t.served["local/llama3"], [1, 0, 0]);
        assert_eq!(t.served["cloud/gpt-4o-mini"], [0, 2, 0]);
        assert_eq!((t.ok, t.error, t.streamed, t.whole), (3, 1, 1, 3));
        assert_eq!(t.failovers["connection_refused"], 1);
        assert_eq!(t.failovers["breaker_open"], 2);
        assert!(!t.failovers.contains_key("server_error"));
        assert_eq!(t.errors["HTTP 502 server_error"], 1);

        let notes: Vec<Note> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| s.note)
            .collect();
        assert!(matches!(&notes[0], Note::ServedBy { target, .. } if target == "local/llama3"));
        assert!(matches!(&notes[1], Note::Phase(Phase::Outage)));
        assert!(
            matches!(&notes[2], Note::ServedBy { target, .. } if target == "cloud/gpt-4o-mini")
        );
        assert!(matches!(&notes[3], Note::Failed { what, .. } if what == "HTTP 502 server_error"));
        assert_eq!(notes.len(), 4);
    }

    #[test]
    fn streams_must_be_whole_and_end_with_done() {
        let chunk = |s: &str| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"delta": {"content": s}}]})
            )
        };
        let whole: String = llm_failover::sim::answer_tokens().map(chunk).collect();
        assert_eq!(check_stream(&format!("{whole}data: [DONE]\n\n")), Ok(()));
        assert!(check_stream(&whole).is_err());
        let cut = format!(
            "{}data: {}\n\n",
            chunk("The "),
            json!({"error": {"code": "stream_interrupted"}})
        );
        assert_eq!(
            check_stream(&cut),
            Err("stream ended by an error event (stream_interrupted)".into())
        );
        assert_eq!(
            error_of(
                503,
                r#"{"error": {"failover": {"reason": "connection_refused"}}}"#
            ),
            "HTTP 503 connection_refused"
        );
    }
}
