//! The proxy end to end: real sockets on loopback, simulated providers, a real HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::{ANSWER, Sim};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::support::{down_sim, get_json, model_ids, post_chat, sim, status_breaker};

/// A proxy serving on loopback; dropping it (or [`Running::stop`]) shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub proxy: Proxy,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Posts a chat for `route` to this proxy.
    pub async fn chat(
        &self,
        http: &reqwest::Client,
        route: &str,
        stream: bool,
    ) -> reqwest::Response {
        post_chat(http, &self.url("/v1/chat/completions"), route, stream).await
    }

    /// Posts a chat for `route` to this proxy with `key` as a Bearer token.
    pub async fn chat_as(
        &self,
        http: &reqwest::Client,
        key: &str,
        route: &str,
        stream: bool,
    ) -> reqwest::Response {
        http.post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat_body(route, stream))
            .send()
            .await
            .unwrap()
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.unwrap()
    }
}

/// Starts the proxy for `toml` on 127.0.0.1, a port the OS picks.
pub async fn start(toml: &str) -> Running {
    start_config(&Config::parse(toml, "test.toml").unwrap()).await
}

/// Starts the proxy for a checked `config` on 127.0.0.1, a port the OS picks.
pub async fn start_config(config: &Config) -> Running {
    let proxy = Proxy::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(proxy.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        proxy,
        stop: Some(tx),
        task,
    }
}

/// A config with providers `a` and `b` at the given sims and one route `chat` over
/// `targets`; `extra` is appended (policies, more routes).
pub fn config(a: &Sim, b: &Sim, targets: &[&str], extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"
[route]
attempt_timeout = "2s"
ttft_timeout = "1s"
idle_timeout = "500ms"
total_deadline = "10s"
retry_backoff = "10ms"

[providers.a]
base_url = "{}"
[providers.b]
base_url = "{}"

[routes.chat]
targets = [{}]
{extra}
"#,
        a.base_url(),
        b.base_url(),
        targets.join(", ")
    )
}

pub fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The text of the streamed answer.
pub fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn a_refusing_primary_fails_over_and_the_headers_say_so() {
    let a = down_sim().await;
    let b = sim().await;
    let p = start(&config(&a, &b, &["a/llama3", "b/gpt-4o-mini"], "")).await;
    let http = reqwest::Client::new();
    let resp = p.chat(&http, "chat", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-failover-provider"), "b");
    assert_eq!(header(&resp, "x-failover-model"), "gpt-4o-mini");
    assert_eq!(header(&resp, "x-failover-attempts"), "2");
    assert_eq!(
        header(&resp, "x-failover-trail"),
        "a/llama3=connection_refused; b/gpt-4o-mini=ok"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(b.attempts("gpt-4o-mini"), 1);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_passes_through_chunk_by_chunk_and_ends_with_done() {
    let (a, b) = (sim().await, sim().await);
    let p = start(&config(&a, &b, &["a/llama3", "b/gpt-4o-mini"], "")).await;
    let resp = p.chat(&reqwest::Client::new(), "chat", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    assert_eq!(header(&resp, "x-failover-trail"), "a/llama3=ok");
    let events = sse_data(&resp.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(streamed_text(&events), ANSWER);
    assert_eq!((a.attempts("llama3"), b.attempts("gpt-4o-mini")), (1, 0));
}

#[tokio::test]
async fn client_mistakes_are_4xx_and_never_reach_an_upstream() {
    let (a, b) = (sim().await, sim().await);
    let p = start(&config(
        &a,
        &b,
        &["a/llama3"],
        "[server]\nmax_body_bytes = 2048\n",
    ))
    .await;
    let http = reqwest::Client::new();
    let post = |body: String| {
        http.post(p.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        ("{not json".to_owned(), 400, "invalid_json"),
        ("[1,2]".to_owned(), 400, "invalid_json"),
        (json!({"messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "missing_required_parameter"),
        (json!({"model": 7, "messages": []}).to_string(), 400, "invalid_type"),
        (json!({"model": "chat"}).to_string(), 400, "invalid_type"),
        (json!({"model": "chat", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}).to_string(), 400, "invalid_type"),
        (chat_body("nope", false).to_string(), 404, "model_not_found"),
        (chat_body(&"x".repeat(4096), false).to_string(), 413, "request_too_large"),
    ];
    for (body, status, code) in cases {
        let resp = post(body.clone()).await.unwrap();
        assert_eq!(resp.status(), status, "{body:.80}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{body:.80}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(a.total_attempts(), 0);
    // The server is still up.
    let ok = post(chat_body("chat", false).to_string()).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn when_every_target_fails_the_body_names_each_attempt() {
    let (a, b) = (sim().await, sim().await);
    let p = start(&config(&a, &b, &["a/sim-401", "b/sim-429-retry-30"], "")).await;
    let resp = p.chat(&reqwest::Client::new(), "chat", false).await;
    assert_eq!(resp.status(), 429);
    // The soonest target to admit again: a's key is refused (its breaker opens for a long
    // time), b asked for 30 s.
    assert_eq!(header(&resp, "retry-after"), "30");
    let err: Value = resp.json().await.unwrap();
    let attempts = err["error"]["failover"]["attempts"].as_array().unwrap();
    let reasons: Vec<&str> = attempts
        .iter()
        .map(|a| a["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["auth", "rate_limit"]);
    assert_eq!(err["error"]["failover"]["route"], "chat");
    assert_eq!(err["error"]["code"], "rate_limit");
}

#[tokio::test]
async fn models_status_and_health_describe_the_proxy() {
    let (a, b) = (sim().await, sim().await);
    let p = start(&config(
        &a,
        &b,
        &["a/llama3", "b/gpt-4o-mini"],
        "[routes.fast]\ntargets = [\"b/gpt-4o-mini\"]\n",
    ))
    .await;
    let http = reqwest::Client::new();
    let models = get_json(&http, &p.url("/v1/models")).await;
    assert_eq!(model_ids(&models), ["chat", "fast"]);
    let health = http.get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let control = p.proxy.registry().control("a", "*").unwrap();
    control.force_open(Some(Duration::from_secs(60)));
    let status = get_json(&http, &p.url("/v1/failover/status")).await;
    let breakers = status["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 4, "{status}");
    let a_wide = status_breaker(&status, "a", "*").unwrap();
    assert_eq!(a_wide["state"], "forced_open");
    assert!(a_wide["open_until"].as_str().is_some());
    let unknown = http.get(p.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

/// An upstream that holds each request until the test releases it: `arrived` says a request
/// is in, `release` lets it answer. Non-streaming requests get a whole chat completion;
/// streaming ones get one token at once, the rest after the release.
struct Gate {
    base_url: String,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: tokio::sync::watch::Sender<bool>,
}

async fn gate() -> Gate {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (arrived_tx, mut released) = (arrived_tx.clone(), released.clone());
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 16384];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let streaming = String::from_utf8_lossy(&buf[..n]).contains(r#""stream":true"#);
                let _ = arrived_tx.send(());
                let chunk = |content: &str, finish: Option<&str>| {
                    let c = json!({"id": "g", "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": {"content": content}, "finish_reason": finish}]});
                    let data = format!("data: {c}\n\n");
                    format!("{:x}\r\n{data}\r\n", data.len())
                };
                if streaming {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    let _ = sock
                        .write_all(format!("{head}{}", chunk("first ", None)).as_bytes())
                        .await;
                    let _ = released.wait_for(|r| *r).await;
                    let done = "data: [DONE]\n\n";
                    let tail = format!(
                        "{}{:x}\r\n{done}\r\n0\r\n\r\n",
                        chunk("last", Some("stop")),
                        done.len()
                    );
                    let _ = sock.write_all(tail.as_bytes()).await;
                } else {
                    let _ = released.wait_for(|r| *r).await;
                    let body = json!({"id": "g", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "held answer"}, "finish_reason": "stop"}]})
                    .to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                }
            });
        }
    });
    Gate {
        base_url: format!("http://{addr}/v1"),
        arrived,
        release,
    }
}

fn gate_config(g: &Gate, grace: &str) -> String {
    format!(
        "[server]\nshutdown_grace = \"{grace}\"\n[providers.g]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"g/m\"]\n",
        g.base_url
    )
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_refuses_new_ones() {
    let mut g = gate().await;
    let p = start(&gate_config(&g, "60s")).await;
    let url = p.url("/v1/chat/completions");
    let http = reqwest::Client::new();
    let in_flight = tokio::spawn(http.post(&url).json(&chat_body("chat", false)).send());
    g.arrived.recv().await.unwrap();
    let stopped = tokio::spawn(p.stop());
    // Stopping does not wait for the grace period to pass: the request is let go now.
    g.release.send_replace(true);
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "held answer");
    stopped.await.unwrap().unwrap();
    let after = reqwest::Client::new()
        .post(&url)
        .json(&chat_body("chat", false))
        .send()
        .await;
    assert!(
        after.is_err_and(|e| e.is_connect()),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn past_the_grace_period_requests_end_with_a_clean_error() {
    let mut g = gate().await;
    let p = start(&gate_config(&g, "50ms")).await;
    let url = p.url("/v1/chat/completions");
    let http = reqwest::Client::new();
    let stream = post_chat(&http, &url, "chat", true).await;
    g.arrived.recv().await.unwrap();
    assert_eq!(stream.status(), 200);
    let plain = tokio::spawn(http.post(&url).json(&chat_body("chat", false)).send());
    g.arrived.recv().await.unwrap();
    // Never released: both requests outlive the grace period.
    p.stop().await.unwrap();
    let events = sse_data(&stream.text().await.unwrap());
    assert_eq!(streamed_text(&events), "first ");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{events:?}");
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "a cut stream is not complete"
    );
    let plain = plain.await.unwrap().unwrap();
    assert_eq!(plain.status(), 503);
    assert!(plain.headers().contains_key("retry-after"));
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down");
    drop(g.release);
}

/// An upstream that answers with the SSE `events` (each a `data:` payload) and then either
/// closes the body (`end`) or holds the connection open, never sending `[DONE]`.
async fn sse_upstream(events: &'static [&'static str], end: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 8192];
                let _ = sock.read(&mut buf).await;
                let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
                let head = if end {
                    format!("content-length: {}\r\nconnection: close\r\n", body.len())
                } else {
                    String::new()
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n{head}\r\n{body}"
                );
                let _ = sock.write_all(response.as_bytes()).await;
                if end {
                    let _ = sock.shutdown().await;
                } else {
                    // Held open, as a server that forgets its `[DONE]` does, until the proxy
                    // hangs up.
                    let _ = sock.read(&mut buf).await;
                }
            });
        }
    });
    addr
}

/// A provider that sends the `finish_reason`, then its usage chunk, and no `[DONE]`: the
/// client gets the usage chunk (whether the upstream closes the body or holds it open), then
/// the `[DONE]` the proxy adds.
#[tokio::test]
async fn a_usage_chunk_after_the_finish_arrives_without_done() {
    const EVENTS: &[&str] = &[
        r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
        r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}"#,
    ];
    for end in [true, false] {
        let upstream = sse_upstream(EVENTS, end).await;
        let p = start(&format!(
            "[route]\nidle_timeout = \"5s\"\n[providers.a]\nbase_url = \"http://{upstream}/v1\"\n[routes.chat]\ntargets = [\"a/m\"]\n"
        ))
        .await;
        let resp = p.chat(&reqwest::Client::new(), "chat", true).await;
        assert_eq!(resp.status(), 200);
        let events = sse_data(&resp.text().await.unwrap());
        assert_eq!(
            events,
            [EVENTS[0], EVENTS[1], EVENTS[2], "[DONE]"],
            "end of body: {end}"
        );
        p.stop().await.unwrap();
    }
}
