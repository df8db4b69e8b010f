//! A sentinel API key sent in a header, in a URL query, and echoed back in a provider's error
//! body never reaches logs, spans, the Prometheus scrape or the errors a route returns.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_failover::breaker::Registry;
use llm_failover::chain::openai::{Client, Endpoint};
use llm_failover::chain::{AttemptFailure, Route, RoutePolicy};
use llm_failover::sim::Sim;
use llm_failover::telemetry::{MetricsLayer, prometheus_builder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;

const SENTINEL: &str = "sk-SENTINEL-7f3a9c0e1b2d4f6a";

/// Everything the fmt layer writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A provider that answers 401 with an OpenAI error body quoting the request it received,
/// headers and all, as some gateways do.
async fn echoing_provider() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let seen = String::from_utf8_lossy(&buf[..n]).replace(['"', '\\', '\r', '\n'], " ");
                let body = format!(
                    r#"{{"error":{{"message":"Incorrect API key provided. We received: {seen}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
                );
                let resp = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[test]
fn the_sentinel_key_appears_nowhere() {
    let logs = Logs::default();
    let recorder = prometheus_builder().build_recorder();
    let scrape = recorder.handle();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(MetricsLayer::new())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_span_events(FmtSpan::FULL)
                .with_ansi(false),
        );
    let mut returned = Vec::new();
    let mut echoed = false;
    metrics::with_local_recorder(&recorder, || {
        tracing::subscriber::with_default(subscriber, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let sim = Sim::builder().start().await.unwrap();
                    let echo = echoing_provider().await;
                    let closed = std::net::TcpListener::bind("127.0.0.1:0")
                        .unwrap()
                        .local_addr()
                        .unwrap();
                    let endpoints = [
                        Endpoint::new("query", &format!("http://{closed}/v1"))
                            .api_key_query("key", SENTINEL),
                        Endpoint::new("echo", &format!("http://{echo}/v1")).api_key(SENTINEL),
                        Endpoint::new("sim", &sim.base_url()).api_key(SENTINEL),
                    ];
                    let registry = Arc::new(
                        Registry::builder()
                            .target("query", "m")
                            .target("echo", "m")
                            .target("sim", "m")
                            .build()
                            .unwrap(),
                    );
                    let client = Client::new().unwrap();
                    let request =
                        serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
                    let policy = RoutePolicy::builder()
                        .attempt_timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    let route = |targets: &[&str]| {
                        let mut b =
                            Route::builder("chat", Arc::clone(&registry)).policy(policy.clone());
                        for t in targets {
                            b = b.target(t, "m");
                        }
                        b.build().unwrap()
                    };
                    let call = |route: Route| {
                        let (client, request, endpoints) =
                            (client.clone(), request.clone(), endpoints.clone());
                        async move {
                            route
                                .call(|a| {
                                    let endpoint = endpoints
                                        .iter()
                                        .find(|e| e.provider() == a.provider())
                                        .unwrap()
                                        .clone();
                                    let (client, request) = (client.clone(), request.clone());
                                    async move { client.chat(&endpoint, a.model(), &request).await }
                                })
                                .await
                        }
                    };
                    // Two failures, then an answer.
                    let answer = call(route(&["query", "echo", "sim"])).await.unwrap();
                    returned.push(format!("{} {:?}", answer.trail, answer.trail));
                    // Every target fails: the error the caller gets.
                    registry.control("query", "*").unwrap().reset();
                    registry.control("echo", "*").unwrap().reset();
                    let err = call(route(&["query", "echo"])).await.unwrap_err();
                    returned.push(format!("{err} {err:?}"));
                    if let Some(f) = err.last_failure() {
                        returned.push(format!("{f} {f:?}"));
                        echoed = f
                            .response()
                            .map(|r| r.body.contains(SENTINEL))
                            .unwrap_or(false);
                    }
                    returned.push(format!("{:?}", endpoints));
                    let failure: Option<&AttemptFailure> = err.last_failure();
                    assert!(failure.is_some());
                });
        });
    });
    assert!(
        echoed,
        "the echoing provider did send the key back, so the test means something"
    );
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("gen_ai.provider.name"),
        "spans were logged: {logs}"
    );
    assert!(
        !logs.contains(SENTINEL),
        "the key leaked into logs or spans"
    );
    let scrape = scrape.render();
    assert!(scrape.contains("llm_failover_failures_total"), "{scrape}");
    assert!(!scrape.contains(SENTINEL), "the key leaked into the scrape");
    for r in &returned {
        assert!(
            !r.contains(SENTINEL),
            "the key leaked into a returned error: {r}"
        );
    }
}
