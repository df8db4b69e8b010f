//! The sim against a real client (reqwest) on loopback: every fault does what it promises on
//! the wire, and the crate's classifier reads each error as the reason it stands for.

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

fn request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "say the thing"}],
        "stream": stream,
    })
}

async fn post(
    client: &reqwest::Client,
    sim: &Sim,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(body)
        .send()
        .await
}

/// Posts `body` to `/v1/messages` with the headers an Anthropic client sends.
async fn post_messages(
    client: &reqwest::Client,
    sim: &Sim,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/messages", sim.base_url()))
        .header("x-api-key", "sk-ant-sim")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "tools-2024-04-04")
        .json(body)
        .send()
        .await
}

/// The `data:` payloads of the stream that answers `req`, and the error that broke it, if any.
async fn read_stream(
    client: &reqwest::Client,
    sim: &Sim,
    req: &Value,
) -> (Vec<String>, Option<reqwest::Error>) {
    Events::new(post(client, sim, req).await.unwrap())
        .all()
        .await
}

/// The JSON body of the answer to `req`.
async fn answer(client: &reqwest::Client, sim: &Sim, req: &Value) -> Value {
    post(client, sim, req).await.unwrap().json().await.unwrap()
}

/// The status of the answer to `req`.
async fn status(client: &reqwest::Client, sim: &Sim, req: &Value) -> reqwest::StatusCode {
    post(client, sim, req).await.unwrap().status()
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

#[tokio::test]
async fn healthy_answer_is_the_known_text() {
    let sim = sim().await;
    let resp = post(&client(), &sim, &request("gpt-4o-mini", false))
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
    let (events, err) = read_stream(&client(), &sim, &request("sim-ok", true)).await;
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
    let mut req = request("sim-ok", false);
    req["max_tokens"] = json!(3);
    let body: Value = answer(&client, &sim, &req).await;
    assert_eq!(body["choices"][0]["message"]["content"], prefix(3));
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    req["stream"] = json!(true);
    let (events, err) = read_stream(&client, &sim, &req).await;
    assert!(err.is_none());
    assert_eq!(content(&events), prefix(3));
    assert!(events[3].contains("\"finish_reason\":\"length\""));
}

/// Every error fault, streaming or not: its status, headers, body, and the reason the
/// crate's classifier reads from them.
#[tokio::test]
async fn error_faults_send_provider_errors_the_classifier_reads() {
    let sim = Sim::builder()
        .fault("configured-503", Fault::Status(503))
        .start()
        .await
        .unwrap();
    let client = client();
    let cases: [(&str, u16, Reason, Option<&str>); 11] = [
        (
            "sim-429",
            429,
            Reason::RateLimit,
            Some("rate_limit_exceeded"),
        ),
        (
            "sim-429-retry-2",
            429,
            Reason::RateLimit,
            Some("rate_limit_exceeded"),
        ),
        ("sim-500", 500, Reason::ServerError, None),
        ("sim-502", 502, Reason::ServerError, None),
        (
            "sim-503",
            503,
            Reason::Overloaded,
            Some("service_unavailable"),
        ),
        (
            "configured-503",
            503,
            Reason::Overloaded,
            Some("service_unavailable"),
        ),
        ("sim-529", 529, Reason::Overloaded, None),
        ("sim-401", 401, Reason::Auth, Some("invalid_api_key")),
        (
            "sim-404",
            404,
            Reason::ModelNotFound,
            Some("model_not_found"),
        ),
        (
            "sim-context",
            400,
            Reason::ContextOverflow,
            Some("context_length_exceeded"),
        ),
        (
            "sim-filter",
            400,
            Reason::ContentFilter,
            Some("content_filter"),
        ),
    ];
    for stream in [false, true] {
        for (model, status, reason, code) in cases {
            let resp = post(&client, &sim, &request(model, stream)).await.unwrap();
            assert_eq!(resp.status(), status, "{model}");
            assert_eq!(
                resp.headers()["content-type"],
                "application/json",
                "{model}"
            );
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap();
            if status == 529 {
                assert_eq!(body["type"], "error");
                assert_eq!(body["error"]["type"], "overloaded_error");
            } else {
                let error = &body["error"];
                assert!(error["message"].is_string(), "{model}: {body}");
                assert!(error["type"].is_string(), "{model}: {body}");
                assert_eq!(error["param"], Value::Null, "{model}");
                assert_eq!(error["code"].as_str(), code, "{model}: {body}");
            }
            let c = classify(
                &Signal::new()
                    .status(status)
                    .headers(&headers)
                    .body(text.as_str()),
            );
            assert_eq!(c.reason, reason, "{model}: {c:?}");
            if model == "sim-429-retry-2" {
                assert_eq!(headers["retry-after"], "2");
                assert_eq!(c.retry_after, Some(Duration::from_secs(2)));
            } else {
                assert!(!headers.contains_key("retry-after"), "{model}");
                assert_eq!(c.retry_after, None, "{model}");
            }
        }
    }
    assert_eq!(sim.attempts("sim-429"), 2);
    assert_eq!(sim.attempts("configured-503"), 2);
}

#[tokio::test]
async fn context_and_filter_messages_are_openais() {
    let sim = sim().await;
    let client = client();
    let context: Value = answer(&client, &sim, &request("sim-context", false)).await;
    let message = context["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("This model's maximum context length is "),
        "{message}"
    );
    let filter: Value = answer(&client, &sim, &request("sim-filter", false)).await;
    let message = filter["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Your request was rejected as a result of our safety system"),
        "{message}"
    );
}

#[tokio::test]
async fn server_error_once_then_healthy_and_set_fault_rearms_it() {
    let sim = sim().await;
    let client = client();
    let req = request("sim-500-once", false);
    let statuses = async || {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(post(&client, &sim, &req).await.unwrap().status().as_u16());
        }
        out
    };
    assert_eq!(statuses().await, [500, 200, 200]);
    sim.set_fault("sim-500-once", Fault::ServerErrorOnce);
    assert_eq!(statuses().await, [500, 200, 200]);
    assert_eq!(sim.attempts("sim-500-once"), 6);
}

#[tokio::test]
async fn cut_stream_breaks_the_body_after_n_tokens() {
    let sim = sim().await;
    let (events, err) = read_stream(&client(), &sim, &request("sim-cut-3", true)).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(content(&events), prefix(3));
    let err = err.expect("the body read fails, it does not end cleanly");
    assert!(err.is_body() || err.is_decode(), "{err:?}");
}

#[tokio::test]
async fn cut_response_breaks_the_body_mid_json() {
    let sim = sim().await;
    let resp = post(&client(), &sim, &request("sim-cut-3", false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = resp.bytes().await.expect_err("the body read fails");
    assert!(err.is_body() || err.is_decode(), "{err:?}");
}

#[tokio::test]
async fn stall_sends_n_tokens_then_nothing() {
    let sim = sim().await;
    for stream in [true, false] {
        let resp = post(&client(), &sim, &request("sim-stall-3", stream))
            .await
            .unwrap();
        if stream {
            let mut events = Events::new(resp);
            for i in 0..3 {
                let event = events.next().await.unwrap().unwrap();
                assert_eq!(Some(content(&[event]).as_str()), answer_tokens().nth(i));
            }
            assert!(
                timeout(QUIET, events.next()).await.is_err(),
                "no byte after 3 chunks"
            );
        } else {
            let mut resp = resp;
            let first = resp.chunk().await.unwrap().unwrap();
            assert!(!first.is_empty());
            assert!(
                timeout(QUIET, resp.chunk()).await.is_err(),
                "no byte after half"
            );
        }
    }
}

#[tokio::test]
async fn malformed_chunk_is_a_non_json_data_line_then_the_rest() {
    let sim = sim().await;
    let (events, err) = read_stream(&client(), &sim, &request("sim-malformed-3", true)).await;
    assert!(err.is_none(), "{err:?}");
    let bad: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| *e != "[DONE]" && serde_json::from_str::<Value>(e).is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bad, [3]);
    // A client that skips the bad line gets a clean end and an answer missing its 4th word.
    let missing: String = answer_tokens()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(content(&events), missing);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let resp = post(&client(), &sim, &request("sim-malformed-3", false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("the HTTP message is complete");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn no_done_sends_the_finish_reason_then_nothing() {
    let sim = sim().await;
    let resp = post(&client(), &sim, &request("sim-no-done", true))
        .await
        .unwrap();
    let mut events = Events::new(resp);
    let mut seen = Vec::new();
    for _ in 0..=answer_tokens().count() {
        seen.push(events.next().await.unwrap().unwrap());
    }
    assert_eq!(content(&seen), ANSWER);
    assert!(seen.last().unwrap().contains("\"finish_reason\":\"stop\""));
    assert!(
        timeout(QUIET, events.next()).await.is_err(),
        "no [DONE], no end"
    );
}

#[tokio::test]
async fn silent_model_never_answers() {
    let sim = sim().await;
    let client = reqwest::Client::builder().timeout(QUIET).build().unwrap();
    for stream in [false, true] {
        let err = post(&client, &sim, &request("sim-silent", stream))
            .await
            .expect_err("no answer");
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(
            classify(&Signal::from_reqwest(&err)).reason,
            Reason::Timeout
        );
    }
    assert_eq!(sim.attempts("sim-silent"), 2);
}

#[tokio::test]
async fn reset_model_resets_the_connection_before_headers() {
    let sim = sim().await;
    let client = client();
    for stream in [false, true] {
        let err = post(&client, &sim, &request("sim-reset", stream))
            .await
            .expect_err("no response");
        assert!(has_io_kind(&err, io::ErrorKind::ConnectionReset), "{err:?}");
        let c = classify(&Signal::from_reqwest(&err));
        assert_eq!(c.reason, Reason::ConnectionReset, "{c:?}");
    }
    assert_eq!(sim.attempts("sim-reset"), 2);
    // The reset is per connection: the next request, on a new connection, is answered.
    let ok = post(&client, &sim, &request("sim-ok", false))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn slow_first_token_comes_after_the_delay() {
    let delay = Duration::from_millis(250);
    let sim = Sim::builder()
        .fault("slow", Fault::FirstTokenDelay(delay))
        .start()
        .await
        .unwrap();
    let client = client();

    let start = Instant::now();
    let resp = post(&client, &sim, &request("slow", true)).await.unwrap();
    let mut events = Events::new(resp);
    // The headers are here and the first token is not: it comes after the delay. (An order,
    // not a speed: nothing asserts how soon the headers came.)
    assert!(
        futures_util::FutureExt::now_or_never(events.next()).is_none(),
        "the first token came with the headers"
    );
    events.next().await.unwrap().unwrap();
    assert!(start.elapsed() >= delay);
    let (rest, err) = events.all().await;
    assert!(err.is_none());
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));

    let start = Instant::now();
    let resp = post(&client, &sim, &request("slow", false)).await.unwrap();
    assert!(start.elapsed() >= delay);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
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
    let err = post(&client, &sim, &request("sim-ok", false))
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
    let resp = post(&client, &sim, &request("sim-ok", false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A refused connection is never seen.
    assert_eq!(sim.attempts("sim-ok"), 1);
}

#[tokio::test]
async fn going_down_closes_open_connections_too() {
    let sim = sim().await;
    let client = client();
    // A pooled keep-alive connection to the sim.
    assert_eq!(status(&client, &sim, &request("sim-ok", false)).await, 200);
    sim.down_for(Duration::from_millis(300)).await;
    let err = post(&client, &sim, &request("sim-ok", false))
        .await
        .expect_err("down");
    let reason = classify(&Signal::from_reqwest(&err)).reason;
    assert!(
        matches!(reason, Reason::ConnectionRefused | Reason::ConnectionReset),
        "{reason:?} {err:?}"
    );
    sim.wait_until_up().await;
    assert_eq!(status(&client, &sim, &request("sim-ok", false)).await, 200);
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
    assert_eq!(status(&client, &sim, &request("sim-ok", true)).await, 200);
}

#[tokio::test]
async fn attempts_are_counted_per_model() {
    let sim = sim().await;
    let client = client();
    for model in ["a", "b", "b", "sim-503", "sim-503", "sim-503"] {
        post(&client, &sim, &request(model, false)).await.unwrap();
    }
    assert_eq!(sim.attempts("a"), 1);
    assert_eq!(sim.attempts("b"), 2);
    assert_eq!(sim.attempts("sim-503"), 3);
    assert_eq!(sim.attempts("never"), 0);
    assert_eq!(sim.total_attempts(), 6);
}

#[tokio::test]
async fn bad_requests_get_openai_400s() {
    let sim = sim().await;
    let client = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let bodies = [
        "not json".to_owned(),
        "{}".to_owned(),
        json!({"model": "a"}).to_string(),
        json!({"model": "a", "messages": []}).to_string(),
        json!({"model": 7, "messages": [{"role": "user", "content": "x"}]}).to_string(),
        json!({"model": "a", "messages": [{"role": "user"}], "max_tokens": 0}).to_string(),
        json!({"model": "a", "messages": [{}], "stream": "yes"}).to_string(),
    ];
    for body in &bodies {
        let resp = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert!(error["error"]["message"].is_string());
    }
    // Over axum's 2 MB body limit: an OpenAI error too, not a plain-text rejection.
    let huge =
        json!({"model": "a", "messages": [{"role": "user", "content": "x".repeat(3 << 20)}]});
    let resp = client.post(&url).json(&huge).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(sim.total_attempts(), bodies.len() as u64 + 1);
    assert_eq!(sim.attempts("a"), 0);
    // The server is still fine.
    assert_eq!(status(&client, &sim, &request("a", false)).await, 200);
}

#[tokio::test]
async fn models_and_unknown_routes() {
    let sim = Sim::builder()
        .fault("flaky", Fault::ServerErrorOnce)
        .start()
        .await
        .unwrap();
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
    let sim = Sim::builder()
        .fault("sim-503", Fault::None)
        .start()
        .await
        .unwrap();
    let client = client();
    let status_of =
        async |model: &str| status(&client, &sim, &request(model, false)).await.as_u16();
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
            .json(&request("sim-silent", false))
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

/// [`request`] with an assistant prefill as the last message.
fn prefilled(model: &str, prefill: &str, stream: bool) -> Value {
    let mut req = request(model, stream);
    req["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": prefill}));
    req
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
        let (events, err) = read_stream(&client, &sim, &prefilled("sim-ok", prefill, true)).await;
        assert!(err.is_none(), "{prefill:?}: {err:?}");
        let tokens = deltas(&events);
        assert_eq!(tokens.len(), count, "{prefill:?}: {tokens:?}");
        assert_eq!(tokens[0], first, "{prefill:?}");
        assert_eq!(format!("{prefill}{}", tokens.concat()), ANSWER);
        assert!(events[count].contains("\"finish_reason\":\"stop\""));
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

        let body: Value = answer(&client, &sim, &prefilled("sim-ok", prefill, false)).await;
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
        let (events, err) = read_stream(&client, &sim, &prefilled("sim-ok", prefill, true)).await;
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
    let req = prefilled("sim-ok", &prefix(3), true);
    let (events, err) = read_stream(&client, &sim, &req).await;
    assert!(err.is_none());
    assert_eq!(content(&events), ANSWER);

    // And at run time, both ways.
    sim.set_prefill(Prefill::Continue);
    let (events, _) = read_stream(&client, &sim, &req).await;
    assert_eq!(format!("{}{}", prefix(3), content(&events)), ANSWER);
    sim.set_prefill(Prefill::Ignore);
    let body: Value = answer(&client, &sim, &prefilled("sim-ok", &prefix(3), false)).await;
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
            let resp = post(&client, &sim, &prefilled(model, &prefix(3), stream))
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
    let body: Value = answer(&client, &sim, &request("sim-ok", false)).await;
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    let resp = post(&client, &sim, &prefilled("sim-503", &prefix(3), false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(sim.attempts("sim-ok"), 3);
}

#[tokio::test]
async fn a_fault_applies_to_the_continuation() {
    let sim = sim().await;
    let (events, err) =
        read_stream(&client(), &sim, &prefilled("sim-cut-2", &prefix(3), true)).await;
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
        let mut req = prefilled("sim-ok", &prefix(3), true);
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

        let mut req = prefilled("sim-ok", &prefix(3), false);
        req["max_completion_tokens"] = json!(limit);
        let body: Value = answer(&client, &sim, &req).await;
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
        (request("sim-ok", true), 3, n),
        (prefilled("sim-ok", &prefix(3), true), 6, n - 3),
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
    let (events, _) = with_usage(&sim, request("sim-malformed-3", true)).await;
    let usage = usage_events(&events);
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["completion_tokens"], n - 1);

    // Without include_usage, no usage chunk.
    let (events, _) = read_stream(&client(), &sim, &request("sim-ok", true)).await;
    assert!(usage_events(&events).is_empty());
}

#[tokio::test]
async fn a_broken_stream_sends_no_usage_chunk() {
    let sim = sim().await;
    for model in ["sim-cut-3", "sim-error-3"] {
        let (events, _) = with_usage(&sim, request(model, true)).await;
        assert!(events.len() >= 3, "{model}: {events:#?}");
        assert!(usage_events(&events).is_empty(), "{model}: {events:#?}");
    }
}

#[tokio::test]
async fn error_after_streams_n_tokens_then_an_error_event_and_a_clean_end() {
    let sim = sim().await;
    let (events, err) = read_stream(&client(), &sim, &request("sim-error-2", true)).await;
    assert!(err.is_none(), "the body ends cleanly: {err:?}");
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(content(&events[..2]), prefix(2));
    let error: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(error["object"], "chat.completion.chunk");
    assert_eq!(error["model"], "sim-error-2");
    assert!(error["id"].is_string() && error["created"].is_u64());
    assert_eq!(
        error["error"],
        json!({"message": "Upstream provider error mid-stream", "code": 502})
    );
    assert_eq!(
        error["choices"],
        json!([{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}])
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn error_after_without_streaming_is_a_200_error_object() {
    let sim = sim().await;
    let resp = post(&client(), &sim, &request("sim-error-2", false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Upstream provider error mid-stream", "code": 502}})
    );
}

#[tokio::test]
async fn last_request_is_the_last_body_per_model() {
    let sim = sim().await;
    let client = client();
    assert_eq!(sim.last_request("m"), None);
    let mut first = prefilled("m", &prefix(3), true);
    first["max_tokens"] = json!(7);
    first["continue_final_message"] = json!(true);
    first["add_generation_prompt"] = json!(false);
    first["temperature"] = json!(0.5);
    first["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    let _ = read_stream(&client, &sim, &first).await;
    assert_eq!(sim.last_request("m"), Some(first));

    let second = request("m", false);
    post(&client, &sim, &second).await.unwrap();
    post(&client, &sim, &request("other", false)).await.unwrap();
    // A body that is not a valid request is not kept.
    let bad = client
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(sim.last_request("m"), Some(second));
    assert_eq!(sim.last_request("other"), Some(request("other", false)));
}

// --- /v1/messages: the same faults in Anthropic's shapes ---

/// An Anthropic Messages request for `model`.
fn msg_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "say the thing"}],
        "stream": stream,
    })
}

/// [`msg_request`] with a trailing assistant message (Anthropic's prefill).
fn msg_prefilled(model: &str, prefill: Value, stream: bool) -> Value {
    let mut req = msg_request(model, stream);
    req["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": prefill}));
    req
}

/// The named events of the stream that answers `req` on `/v1/messages`, each payload
/// parsed when it is JSON (else `Value::String` of it), and the error that broke the body.
async fn read_messages(sim: &Sim, req: &Value) -> (Vec<(String, Value)>, Option<reqwest::Error>) {
    let resp = post_messages(&client(), sim, req).await.unwrap();
    assert!(resp.headers().contains_key("request-id"));
    let (events, err) = Events::new(resp).all_named().await;
    let events = events
        .into_iter()
        .map(|(name, data)| {
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            (name, value)
        })
        .collect();
    (events, err)
}

/// The JSON body of the answer to `req` on `/v1/messages`.
async fn msg_answer(client: &reqwest::Client, sim: &Sim, req: &Value) -> Value {
    post_messages(client, sim, req)
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// The text of the `text_delta`s, concatenated.
fn text_deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, data)| data["delta"]["text"].as_str())
        .collect()
}

/// The event names of a healthy text stream of `n` deltas.
fn healthy_sequence(n: usize) -> Vec<&'static str> {
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(std::iter::repeat_n("content_block_delta", n));
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    want
}

#[tokio::test]
async fn messages_answer_is_an_anthropic_message() {
    let sim = sim().await;
    let client = client();
    let resp = post_messages(&client, &sim, &msg_request("claude-sim", false))
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
        Some(msg_request("claude-sim", false))
    );

    // max_tokens cuts the answer, with stop_reason max_tokens.
    let mut req = msg_request("claude-sim", false);
    req["max_tokens"] = json!(3);
    let body: Value = msg_answer(&client, &sim, &req).await;
    assert_eq!(body["content"][0]["text"], prefix(3));
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn messages_stream_is_anthropics_event_sequence() {
    let sim = sim().await;
    let n = answer_tokens().count();
    let (events, err) = read_messages(&sim, &msg_request("sim-ok", true)).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(names(&events), healthy_sequence(n), "{events:#?}");
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
    assert_eq!(text_deltas(&events), ANSWER);
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

    let mut req = msg_request("sim-ok", true);
    req["max_tokens"] = json!(2);
    let (events, err) = read_messages(&sim, &req).await;
    assert!(err.is_none());
    assert_eq!(names(&events), healthy_sequence(2));
    assert_eq!(text_deltas(&events), prefix(2));
    assert_eq!(events[6].1["delta"]["stop_reason"], "max_tokens");
}

/// Every error fault on `/v1/messages`, streaming or not: Anthropic's status, error type,
/// headers, and the reason the classifier reads (the fault's meaning on chat).
#[tokio::test]
async fn messages_error_faults_send_anthropic_errors() {
    let sim = sim().await;
    let client = client();
    let cases: [(&str, u16, &str, Reason); 13] = [
        ("sim-429", 429, "rate_limit_error", Reason::RateLimit),
        (
            "sim-429-retry-2",
            429,
            "rate_limit_error",
            Reason::RateLimit,
        ),
        ("sim-500", 500, "api_error", Reason::ServerError),
        ("sim-502", 502, "api_error", Reason::ServerError),
        ("sim-503", 529, "overloaded_error", Reason::Overloaded),
        ("sim-529", 529, "overloaded_error", Reason::Overloaded),
        ("sim-401", 401, "authentication_error", Reason::Auth),
        ("sim-403", 403, "permission_error", Reason::Auth),
        ("sim-404", 404, "not_found_error", Reason::ModelNotFound),
        ("sim-413", 413, "request_too_large", Reason::ContextOverflow),
        ("sim-400", 400, "invalid_request_error", Reason::Format),
        (
            "sim-context",
            400,
            "invalid_request_error",
            Reason::ContextOverflow,
        ),
        (
            "sim-filter",
            400,
            "invalid_request_error",
            Reason::ContentFilter,
        ),
    ];
    for stream in [false, true] {
        for (model, status, kind, reason) in cases {
            let resp = post_messages(&client, &sim, &msg_request(model, stream))
                .await
                .unwrap();
            assert_eq!(resp.status(), status, "{model}");
            let headers = resp.headers().clone();
            assert_eq!(headers["content-type"], "application/json", "{model}");
            assert!(
                headers["request-id"].to_str().unwrap().starts_with("req_"),
                "{model}"
            );
            let text = resp.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["type"], "error", "{model}: {body}");
            assert_eq!(body["error"]["type"], kind, "{model}: {body}");
            assert!(body["error"]["message"].is_string(), "{model}: {body}");
            assert_eq!(body.as_object().unwrap().len(), 2, "{model}: {body}");
            let c = classify(
                &Signal::new()
                    .status(status)
                    .headers(&headers)
                    .body(text.as_str())
                    .provider("anthropic"),
            );
            assert_eq!(c.reason, reason, "{model}: {c:?}");
            if model == "sim-429-retry-2" {
                assert_eq!(headers["retry-after"], "2");
                assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
                let reset = headers["anthropic-ratelimit-requests-reset"]
                    .to_str()
                    .unwrap();
                let at = humantime::parse_rfc3339(reset).unwrap();
                let wait = at.duration_since(std::time::SystemTime::now()).unwrap();
                assert!(
                    wait > Duration::from_secs(1) && wait <= Duration::from_secs(3),
                    "{reset}"
                );
                assert_eq!(c.retry_after, Some(Duration::from_secs(2)));
            } else {
                assert!(!headers.contains_key("retry-after"), "{model}");
                assert!(
                    !headers.contains_key("anthropic-ratelimit-requests-reset"),
                    "{model}"
                );
            }
        }
    }
    // A 500 once, then the answer.
    let statuses = [
        post_messages(&client, &sim, &msg_request("sim-500-once", false))
            .await
            .unwrap()
            .status(),
        post_messages(&client, &sim, &msg_request("sim-500-once", false))
            .await
            .unwrap()
            .status(),
    ];
    assert_eq!(statuses, [500, 200]);
}

#[tokio::test]
async fn messages_validate_like_anthropic() {
    let sim = sim().await;
    let client = client();
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
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
            msg_prefilled("a", json!("The simulated "), false).to_string(),
            "messages: final assistant content cannot end with trailing whitespace",
        ),
    ];
    for (body, message) in &cases {
        let resp = client
            .post(format!("{}/messages", sim.base_url()))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert!(resp.headers().contains_key("request-id"));
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["type"], "error", "{body}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        let got = error["error"]["message"].as_str().unwrap();
        assert!(got.starts_with(message), "{body}: {got}");
    }
    let huge = json!({"model": "a", "max_tokens": 8, "messages": [{"role": "user", "content": "x".repeat(3 << 20)}]});
    let resp = post_messages(&client, &sim, &huge).await.unwrap();
    assert_eq!(resp.status(), 413);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["type"], "request_too_large");
    assert_eq!(sim.total_attempts(), cases.len() as u64 + 1);
    assert_eq!(sim.attempts("a"), 0);
}

#[tokio::test]
async fn messages_mid_stream_error_is_an_error_event() {
    let sim = sim().await;
    let (events, err) = read_messages(&sim, &msg_request("sim-error-2", true)).await;
    assert!(err.is_none(), "the body ends cleanly: {err:?}");
    let mut want = healthy_sequence(2);
    want.truncate(5);
    want.push("error");
    assert_eq!(names(&events), want, "{events:#?}");
    assert_eq!(text_deltas(&events), prefix(2));
    assert_eq!(
        events[5].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    // Not streaming: a 200 whose body is that error.
    let resp = post_messages(&client(), &sim, &msg_request("sim-error-2", false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn messages_broken_streams_never_send_message_stop() {
    let sim = sim().await;
    let n = answer_tokens().count();
    // Cut: three deltas, then the body read fails.
    let (events, err) = read_messages(&sim, &msg_request("sim-cut-3", true)).await;
    assert_eq!(names(&events), healthy_sequence(3)[..6], "{events:#?}");
    assert_eq!(text_deltas(&events), prefix(3));
    let err = err.expect("the body read fails, it does not end cleanly");
    assert!(err.is_body() || err.is_decode(), "{err:?}");

    // Malformed: a data line that is not JSON in place of the 4th delta, then the rest.
    let (events, err) = read_messages(&sim, &msg_request("sim-malformed-3", true)).await;
    assert!(err.is_none());
    assert_eq!(names(&events), healthy_sequence(n));
    assert!(events[6].1.is_string(), "{:?}", events[6]);
    assert_eq!(events[n + 4].1["usage"]["output_tokens"], n - 1);

    // Stall and no-done: the connection stays open without message_stop.
    for (model, seen) in [("sim-stall-3", 6), ("sim-no-done", n + 5)] {
        let resp = post_messages(&client(), &sim, &msg_request(model, true))
            .await
            .unwrap();
        let mut events = Events::new(resp);
        let mut got = Vec::new();
        for _ in 0..seen {
            got.push(events.next_named().await.unwrap().unwrap().0);
        }
        assert_eq!(got, healthy_sequence(n)[..seen], "{model}");
        assert!(
            timeout(QUIET, events.next()).await.is_err(),
            "{model}: no more bytes"
        );
    }
}

#[tokio::test]
async fn messages_continue_a_trailing_assistant_message() {
    let sim = sim().await;
    let client = client();
    let prefill = prefix(3).trim_end().to_owned();
    for content in [json!(prefill), json!([{"type": "text", "text": prefill}])] {
        let (events, err) =
            read_messages(&sim, &msg_prefilled("sim-ok", content.clone(), true)).await;
        assert!(err.is_none());
        let rest = text_deltas(&events);
        assert!(rest.starts_with(" answered "), "{rest}");
        assert_eq!(format!("{prefill}{rest}"), ANSWER);
        let body: Value = msg_answer(&client, &sim, &msg_prefilled("sim-ok", content, false)).await;
        let rest = body["content"][0]["text"].as_str().unwrap();
        assert_eq!(format!("{prefill}{rest}"), ANSWER);
        assert_eq!(body["usage"]["output_tokens"], answer_tokens().count() - 3);
    }
    // The sim's prefill mode applies here too.
    sim.set_prefill(Prefill::Ignore);
    let body: Value = msg_answer(
        &client,
        &sim,
        &msg_prefilled("sim-ok", json!(prefill), false),
    )
    .await;
    assert_eq!(body["content"][0]["text"], ANSWER);
    sim.set_prefill(Prefill::Reject);
    let resp = post_messages(
        &client,
        &sim,
        &msg_prefilled("sim-ok", json!(prefill), true),
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

// --- sim-tool on both endpoints ---

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    })
}

/// A chat request for `sim-tool` that offers a weather tool.
fn chat_tool_request(stream: bool) -> Value {
    let mut req = request("sim-tool", stream);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}}]);
    req
}

/// A messages request for `sim-tool` that offers a weather tool.
fn msg_tool_request(stream: bool) -> Value {
    let mut req = msg_request("sim-tool", stream);
    req["tools"] = json!([{"name": "get_weather", "description": "the weather", "input_schema": weather_schema()}]);
    req
}

#[tokio::test]
async fn sim_tool_calls_the_first_tool_on_chat() {
    let sim = sim().await;
    let client = client();
    let body: Value = answer(&client, &sim, &chat_tool_request(false)).await;
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
    let (events, err) = read_stream(&client, &sim, &chat_tool_request(true)).await;
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
    let mut req = chat_tool_request(false);
    let messages = req["messages"].as_array_mut().unwrap();
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "sunny, 21 C"}));
    let body: Value = answer(&client, &sim, &req).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The tool answered: sunny, 21 C"
    );
    req["stream"] = json!(true);
    let (events, _) = read_stream(&client, &sim, &req).await;
    assert_eq!(content(&events), "The tool answered: sunny, 21 C");

    // Without tools, sim-tool is healthy.
    let body: Value = answer(&client, &sim, &request("sim-tool", false)).await;
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
}

#[tokio::test]
async fn sim_tool_uses_the_first_tool_on_messages() {
    let sim = sim().await;
    let client = client();
    let body: Value = msg_answer(&client, &sim, &msg_tool_request(false)).await;
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    let id = block["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("toolu_"), "{id}");
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"city": "sim"}));

    // Streamed: a tool_use block, then its input as input_json_delta pieces.
    let (events, err) = read_messages(&sim, &msg_tool_request(true)).await;
    assert!(err.is_none());
    let pieces: Vec<&str> = events
        .iter()
        .filter(|(_, data)| data["delta"]["type"] == "input_json_delta")
        .map(|(_, data)| data["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(names(&events), healthy_sequence(pieces.len()));
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
        let mut req = msg_tool_request(false);
        let messages = req["messages"].as_array_mut().unwrap();
        messages.push(json!({"role": "assistant", "content": body["content"].clone()}));
        messages.push(json!({
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": id, "content": result}],
        }));
        let answer: Value = msg_answer(&client, &sim, &req).await;
        assert_eq!(answer["stop_reason"], "end_turn");
        assert_eq!(
            answer["content"],
            json!([{"type": "text", "text": "The tool answered: sunny, 21 C"}])
        );
        req["stream"] = json!(true);
        let (events, _) = read_messages(&sim, &req).await;
        assert_eq!(text_deltas(&events), "The tool answered: sunny, 21 C");
    }
}

// --- /v1/responses: the same faults in the Responses API's shapes ---

/// A Responses API request for `model`.
fn resp_request(model: &str, stream: bool) -> Value {
    json!({"model": model, "input": "say the thing", "stream": stream})
}

async fn post_responses(
    client: &reqwest::Client,
    sim: &Sim,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/responses", sim.base_url()))
        .json(body)
        .send()
        .await
}

/// The JSON body of the answer to `req` on `/v1/responses`.
async fn resp_answer(client: &reqwest::Client, sim: &Sim, req: &Value) -> Value {
    let resp = post_responses(client, sim, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The named events of the stream that answers `req` on `/v1/responses`, each payload parsed
/// when it is JSON (else `Value::String` of it), and the error that broke the body.
async fn read_responses(sim: &Sim, req: &Value) -> (Vec<(String, Value)>, Option<reqwest::Error>) {
    let resp = post_responses(&client(), sim, req).await.unwrap();
    let (events, err) = Events::new(resp).all_named().await;
    let events = events
        .into_iter()
        .map(|(name, data)| {
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            (name, value)
        })
        .collect();
    (events, err)
}

/// The `response.output_text.delta`s, concatenated; malformed ones are skipped.
fn output_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .filter_map(|(_, data)| data["delta"].as_str())
        .collect()
}

/// The event names of a healthy text stream of `n` deltas, up to and with `last`.
fn resp_sequence(n: usize, last: &'static str) -> Vec<&'static str> {
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    want.extend(std::iter::repeat_n("response.output_text.delta", n));
    want.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        last,
    ]);
    want
}

/// Every JSON event has `type` equal to its name and a `sequence_number`; the numbers go up
/// by one from 0 (a malformed event takes its number too, so one may be missing).
fn assert_numbered(events: &[(String, Value)], malformed: usize) {
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
        Some((numbers.len() + malformed - 1) as u64),
        "{numbers:?}"
    );
}

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
    let mut req = resp_request("gpt-4.1-mini", false);
    req["instructions"] = json!("be brief");
    req["metadata"] = json!({"team": "sim"});
    let resp = post_responses(&client, &sim, &req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let chat = post(&client, &sim, &request("gpt-4.1-mini", false))
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
        Some(request("gpt-4.1-mini", false))
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
    let body = resp_answer(&client, &sim, &req).await;
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["usage"]["input_tokens"], 5);
    assert_eq!(sim.last_request("items"), Some(req));
}

#[tokio::test]
async fn responses_stream_is_openais_event_sequence() {
    let sim = sim().await;
    let resp = post_responses(&client(), &sim, &resp_request("sim-ok", true))
        .await
        .unwrap();
    let chat = post(&client(), &sim, &request("sim-ok", true))
        .await
        .unwrap();
    assert_eq!(header_names(&resp), header_names(&chat));
    let (events, err) = Events::new(resp).all_named().await;
    assert!(err.is_none(), "{err:?}");
    let events: Vec<(String, Value)> = events
        .into_iter()
        .map(|(name, data)| (name, serde_json::from_str(&data).unwrap()))
        .collect();
    let n = answer_tokens().count();
    assert_eq!(names(&events), resp_sequence(n, "response.completed"));
    assert_numbered(&events, 0);
    assert_eq!(output_text(&events), ANSWER);

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
    let mut req = resp_request("sim-ok", false);
    req["max_output_tokens"] = json!(3);
    let body = resp_answer(&client(), &sim, &req).await;
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
    let (events, err) = read_responses(&sim, &req).await;
    assert!(err.is_none());
    assert_eq!(names(&events), resp_sequence(3, "response.incomplete"));
    assert_numbered(&events, 0);
    assert_eq!(output_text(&events), prefix(3));
    let last = &events.last().unwrap().1["response"];
    assert_eq!(last["status"], "incomplete");
    assert_eq!(last["incomplete_details"]["reason"], "max_output_tokens");

    // A limit the answer fits in changes nothing.
    req["stream"] = json!(false);
    req["max_output_tokens"] = json!(64);
    let body = resp_answer(&client(), &sim, &req).await;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);
}

/// A Responses request for `sim-tool` that offers a weather tool (after a tool that is not a
/// function, which `sim-tool` passes over).
fn resp_tool_request(stream: bool) -> Value {
    let mut req = resp_request("sim-tool", stream);
    req["tools"] = json!([
        {"type": "web_search_preview"},
        {"type": "function", "name": "get_weather", "description": "the weather", "parameters": weather_schema()},
    ]);
    req
}

#[tokio::test]
async fn responses_sim_tool_calls_the_first_function_and_reads_its_output() {
    let sim = sim().await;
    let client = client();
    let body = resp_answer(&client, &sim, &resp_tool_request(false)).await;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["tools"], resp_tool_request(false)["tools"]);
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
    let (events, err) = read_responses(&sim, &resp_tool_request(true)).await;
    assert!(err.is_none());
    assert_numbered(&events, 0);
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
    let mut next = resp_tool_request(false);
    next["previous_response_id"] = body["id"].clone();
    next["input"] =
        json!([{"type": "function_call_output", "call_id": call_id, "output": "sunny, 21 C"}]);
    let answer = resp_answer(&client, &sim, &next).await;
    assert_eq!(answer["previous_response_id"], body["id"]);
    assert_eq!(answer["output"][0]["type"], "message");
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "The tool answered: sunny, 21 C"
    );
    // ... or with the whole history, the call included, streamed.
    let mut full = resp_tool_request(true);
    full["input"] = json!([
        {"role": "user", "content": "say the thing"},
        call,
        {"type": "function_call_output", "call_id": call_id, "output": "sunny, 21 C"},
    ]);
    let (events, _) = read_responses(&sim, &full).await;
    assert_eq!(output_text(&events), "The tool answered: sunny, 21 C");

    // Without tools, sim-tool is healthy.
    let body = resp_answer(&client, &sim, &resp_request("sim-tool", false)).await;
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);
}

#[tokio::test]
async fn responses_previous_response_id_must_be_a_stored_response() {
    let sim = sim().await;
    let client = client();
    let first = resp_answer(&client, &sim, &resp_request("m", false)).await;
    let stored = first["id"].as_str().unwrap().to_owned();
    assert!(sim.knows_response(&stored));
    let mut next = resp_request("m", false);
    next["previous_response_id"] = json!(stored);
    let body = resp_answer(&client, &sim, &next).await;
    assert_eq!(body["previous_response_id"], stored.as_str());
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);

    // A streamed answer is stored too, under the id its events carry.
    let (events, _) = read_responses(&sim, &resp_request("m", true)).await;
    let streamed = events[0].1["response"]["id"].as_str().unwrap().to_owned();
    assert!(sim.knows_response(&streamed));
    next["previous_response_id"] = json!(streamed);
    next["stream"] = json!(true);
    let (events, err) = read_responses(&sim, &next).await;
    assert!(err.is_none());
    assert_eq!(output_text(&events), ANSWER);

    // Not stored: an unknown id, and one answered with store: false.
    let mut unstored = resp_request("m", false);
    unstored["store"] = json!(false);
    let body = resp_answer(&client, &sim, &unstored).await;
    assert_eq!(body["store"], false);
    let unstored = body["id"].as_str().unwrap().to_owned();
    assert!(!sim.knows_response(&unstored));
    let attempts = sim.attempts("m");
    for (id, stream) in [("resp_unknown", false), (unstored.as_str(), true)] {
        next["previous_response_id"] = json!(id);
        next["stream"] = json!(stream);
        let resp = post_responses(&client, &sim, &next).await.unwrap();
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
    let resp = post_responses(&client, &other, &next).await.unwrap();
    assert_eq!(resp.status(), 400);
    // A model whose fault is an error sends that error first.
    next["model"] = json!("sim-429");
    let resp = post_responses(&client, &other, &next).await.unwrap();
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn responses_error_faults_send_openai_errors_the_classifier_reads() {
    let sim = sim().await;
    let client = client();
    let cases: [(&str, u16, Reason, Option<&str>); 9] = [
        (
            "sim-429",
            429,
            Reason::RateLimit,
            Some("rate_limit_exceeded"),
        ),
        (
            "sim-429-retry-1500ms",
            429,
            Reason::RateLimit,
            Some("rate_limit_exceeded"),
        ),
        ("sim-500", 500, Reason::ServerError, None),
        (
            "sim-503",
            503,
            Reason::Overloaded,
            Some("service_unavailable"),
        ),
        ("sim-529", 529, Reason::Overloaded, None),
        ("sim-401", 401, Reason::Auth, Some("invalid_api_key")),
        (
            "sim-404",
            404,
            Reason::ModelNotFound,
            Some("model_not_found"),
        ),
        (
            "sim-context",
            400,
            Reason::ContextOverflow,
            Some("context_length_exceeded"),
        ),
        (
            "sim-filter",
            400,
            Reason::ContentFilter,
            Some("content_filter"),
        ),
    ];
    for stream in [false, true] {
        for (model, status, reason, code) in cases {
            let resp = post_responses(&client, &sim, &resp_request(model, stream))
                .await
                .unwrap();
            assert_eq!(resp.status(), status, "{model}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap();
            if status == 529 {
                // As on chat: Anthropic's overloaded body.
                assert_eq!(body["error"]["type"], "overloaded_error");
            } else {
                let error = body["error"].as_object().unwrap();
                assert!(error["message"].is_string(), "{model}: {body}");
                assert!(error["type"].is_string(), "{model}: {body}");
                assert!(error.contains_key("param"), "{model}: {body}");
                assert_eq!(error["code"].as_str(), code, "{model}: {body}");
            }
            let c = classify(
                &Signal::new()
                    .status(status)
                    .headers(&headers)
                    .body(text.as_str()),
            );
            assert_eq!(c.reason, reason, "{model}: {c:?}");
            if model == "sim-429-retry-1500ms" {
                assert_eq!(headers["retry-after"], "2");
                assert_eq!(headers["retry-after-ms"], "1500");
                assert!(c.retry_after.is_some());
            } else {
                assert!(!headers.contains_key("retry-after"), "{model}");
            }
        }
    }
    let context: Value = post_responses(&client, &sim, &resp_request("sim-context", false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(context["error"]["param"], "input");
    assert!(
        context["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Your input exceeds the context window")
    );
    assert_eq!(sim.attempts("sim-503"), 2);
}

#[tokio::test]
async fn responses_broken_streams_never_complete() {
    let sim = sim().await;
    let n = answer_tokens().count();
    let healthy = resp_sequence(n, "response.completed");

    // Cut: three deltas, then the body read fails.
    let (events, err) = read_responses(&sim, &resp_request("sim-cut-3", true)).await;
    assert_eq!(names(&events), healthy[..7], "{events:#?}");
    assert_numbered(&events, 0);
    assert_eq!(output_text(&events), prefix(3));
    let err = err.expect("the body read fails, it does not end cleanly");
    assert!(err.is_body() || err.is_decode(), "{err:?}");

    // Malformed: a data line that is not JSON in place of the 4th delta, then the rest.
    let (events, err) = read_responses(&sim, &resp_request("sim-malformed-3", true)).await;
    assert!(err.is_none());
    assert_eq!(names(&events), healthy);
    let bad: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].1.is_string())
        .collect();
    assert_eq!(bad, [7]);
    assert_numbered(&events, 1);
    let missing: String = answer_tokens()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(output_text(&events), missing);
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["usage"]["output_tokens"], n - 1);

    // Stall and no-done: the connection stays open without response.completed.
    for (model, seen) in [("sim-stall-3", 7), ("sim-no-done", n + 7)] {
        let resp = post_responses(&client(), &sim, &resp_request(model, true))
            .await
            .unwrap();
        let mut events = Events::new(resp);
        let mut got = Vec::new();
        for _ in 0..seen {
            got.push(events.next_named().await.unwrap().unwrap().0);
        }
        assert_eq!(got, healthy[..seen], "{model}");
        assert!(
            timeout(QUIET, events.next()).await.is_err(),
            "{model}: no more bytes"
        );
    }
}

#[tokio::test]
async fn responses_broken_answers_break_the_json_body() {
    let sim = sim().await;
    let client = client();
    let resp = post_responses(&client, &sim, &resp_request("sim-cut-3", false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = resp.bytes().await.expect_err("the body read fails");
    assert!(err.is_body() || err.is_decode(), "{err:?}");

    let resp = post_responses(&client, &sim, &resp_request("sim-malformed-3", false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("the HTTP message is complete");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let mut resp = post_responses(&client, &sim, &resp_request("sim-stall-3", false))
        .await
        .unwrap();
    assert!(!resp.chunk().await.unwrap().unwrap().is_empty());
    assert!(
        timeout(QUIET, resp.chunk()).await.is_err(),
        "no byte after half"
    );

    // No terminator to hold back when not streaming.
    let body = resp_answer(&client, &sim, &resp_request("sim-no-done", false)).await;
    assert_eq!(body["status"], "completed");
}

#[tokio::test]
async fn responses_mid_stream_error_is_response_failed() {
    let sim = sim().await;
    let (events, err) = read_responses(&sim, &resp_request("sim-error-2", true)).await;
    assert!(err.is_none(), "the body ends cleanly: {err:?}");
    let mut want = resp_sequence(2, "response.completed");
    want.truncate(6);
    want.push("response.failed");
    assert_eq!(names(&events), want, "{events:#?}");
    assert_numbered(&events, 0);
    assert_eq!(output_text(&events), prefix(2));
    let failed = &events[6].1["response"];
    assert_eq!(failed["id"], events[0].1["response"]["id"]);
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        json!({"code": "server_error", "message": "The server had an error processing your request."})
    );

    // Not streaming: a 200 whose body is the failed response.
    let body = resp_answer(&client(), &sim, &resp_request("sim-error-2", false)).await;
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"]["code"], "server_error");
}

#[tokio::test]
async fn responses_slow_silent_and_reset_faults() {
    let delay = Duration::from_millis(250);
    let sim = Sim::builder()
        .fault("slow", Fault::FirstTokenDelay(delay))
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    let resp = post_responses(&client(), &sim, &resp_request("slow", true))
        .await
        .unwrap();
    let mut events = Events::new(resp);
    // The four opening events come at once; the first delta after the delay.
    for _ in 0..4 {
        events.next().await.unwrap().unwrap();
    }
    assert!(
        futures_util::FutureExt::now_or_never(events.next()).is_none(),
        "the first delta came with the opening events"
    );
    let (name, _) = events.next_named().await.unwrap().unwrap();
    assert_eq!(name, "response.output_text.delta");
    assert!(start.elapsed() >= delay);
    let (rest, err) = events.all_named().await;
    assert!(err.is_none());
    assert_eq!(
        rest.last().map(|(name, _)| name.as_str()),
        Some("response.completed")
    );

    let quiet = reqwest::Client::builder().timeout(QUIET).build().unwrap();
    for stream in [false, true] {
        let err = post_responses(&quiet, &sim, &resp_request("sim-silent", stream))
            .await
            .expect_err("no answer");
        assert!(err.is_timeout(), "{err:?}");
        let err = post_responses(&client(), &sim, &resp_request("sim-reset", stream))
            .await
            .expect_err("no response");
        assert!(has_io_kind(&err, io::ErrorKind::ConnectionReset), "{err:?}");
    }
    assert_eq!(sim.attempts("sim-silent"), 2);
    assert_eq!(sim.attempts("sim-reset"), 2);
}

#[tokio::test]
async fn responses_count_attempts_keep_the_last_request_and_reject_bad_bodies() {
    let sim = Sim::builder()
        .fault("flaky", Fault::ServerErrorOnce)
        .start()
        .await
        .unwrap();
    let client = client();
    let statuses = async |model: &str| {
        let mut out = Vec::new();
        for _ in 0..2 {
            let resp = post_responses(&client, &sim, &resp_request(model, false))
                .await
                .unwrap();
            out.push(resp.status().as_u16());
        }
        out
    };
    assert_eq!(statuses("flaky").await, [500, 200]);
    assert_eq!(statuses("a").await, [200, 200]);
    // One count per model across the endpoints.
    post(&client, &sim, &request("a", false)).await.unwrap();
    assert_eq!(sim.attempts("flaky"), 2);
    assert_eq!(sim.attempts("a"), 3);

    let mut last = resp_request("a", true);
    last["reasoning"] = json!({"effort": "low"});
    last["include"] = json!(["reasoning.encrypted_content"]);
    let (events, _) = read_responses(&sim, &last).await;
    assert_eq!(
        events[0].1["response"]["reasoning"],
        json!({"effort": "low"})
    );
    assert_eq!(sim.last_request("a"), Some(last.clone()));

    let url = format!("{}/responses", sim.base_url());
    let bodies = [
        "not json".to_owned(),
        "[]".to_owned(),
        json!({"input": "x"}).to_string(),
        json!({"model": "a", "input": 7}).to_string(),
        json!({"model": "a", "input": [{"role": "user"}]}).to_string(),
        json!({"model": "a", "input": "x", "max_output_tokens": 0}).to_string(),
        json!({"model": "a", "input": "x", "tools": [{"type": "function"}]}).to_string(),
    ];
    let total = sim.total_attempts();
    for body in &bodies {
        let resp = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let error: Value = resp.json().await.unwrap();
        let error = error["error"].as_object().unwrap();
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert!(error["message"].is_string(), "{body}");
        assert!(error.contains_key("param") && error.contains_key("code"));
    }
    assert_eq!(sim.total_attempts(), total + bodies.len() as u64);
    assert_eq!(sim.attempts("a"), 4);
    assert_eq!(sim.last_request("a"), Some(last));
}
