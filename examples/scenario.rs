//! A primary-refusal incident on loopback, serving its metrics for Prometheus: the process the
//! dashboard's end-to-end check (`scripts/dashboards.sh`) scrapes, and a quick way to see the
//! dashboard move.
//!
//! ```text
//! cargo run --example scenario -- 127.0.0.1:9464
//! ```
//!
//! It serves `/metrics` on the address given (loopback), starts three simulated providers and
//! takes the primary's host down (it refuses connections), then drives two routes every 50 ms
//! until Ctrl-C or SIGTERM (it then removes its config folder and exits):
//!
//! * `chat` (streaming): `local/llama3` (down) → `cloud/gpt-4o-mini` (healthy): refusals,
//!   breaker trips and probes, rejections by the open breaker, failovers, answers served by
//!   the fallback, time to first token.
//! * `batch`, every fifth round: `local/llama3` (down) → `backup/sim-529` (overloaded): every
//!   target fails, so these requests are exhausted.
//! * `burst`, every tenth round: three requests at once to `cloud/gpt-4o-mini` with at most
//!   one in flight: two are shed (`llm_failover_shed_total`, `llm_failover_inflight`).
//!
//! The breakers use short open times (2 s, at most 4 s) so the state timeline cycles between
//! open and half-open within seconds.
//!
//! It also runs the proxy (`edge-chat` → `edge/gpt-4o-mini`, the healthy simulator) from a
//! config file with a client key and an admin key, and once a second sends it a request with
//! the client key, one without a key (turned away: `llm_failover_client_rejections_total`), an
//! admin `reset` of its breaker (`llm_failover_admin_actions_total`) and a config reload
//! (`llm_failover_config_reloads_total`, and the success timestamp). It prints `ready` on
//! stdout once `/metrics` is served.
//!
//! The same proxy serves `edge-resume` (`stream_resume = true`): `flaky/sim-cut-3`, whose
//! streams the simulator cuts after 3 tokens, then `steady/gpt-4o-mini` (`prefill =
//! "assistant"`), which finishes the answer from the 3 tokens already sent. Each round sends it
//! a few streaming requests, so every one of them is resumed
//! (`llm_failover_stream_resumes_total{from_provider="flaky",to_provider="steady",outcome="ok"}`).

#![expect(clippy::print_stdout, reason = "the script waits for the ready line")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use llm_failover::Reason;
use llm_failover::breaker::{BreakerPolicy, Registry};
use llm_failover::chain::Route;
use llm_failover::protocol::openai_chat::{Client, Endpoint};
use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::Sim;
use llm_failover::telemetry::{MetricsLayer, install_prometheus};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9464".into())
        .parse()?;
    let _handle = install_prometheus(addr)?;
    let metrics = MetricsLayer::new();
    tracing_subscriber::registry().with(metrics.clone()).init();

    let primary = Sim::builder().token_delay(Duration::ZERO).start().await?;
    let fallback = Sim::builder().token_delay(Duration::ZERO).start().await?;
    let backup = Sim::builder().token_delay(Duration::ZERO).start().await?;
    primary.set_down(true).await;

    let policy = BreakerPolicy::builder()
        .trip_immediately(Reason::ConnectionRefused)
        .open_base(Reason::ConnectionRefused, Duration::from_secs(2))
        .open_base(Reason::Overloaded, Duration::from_secs(2))
        .max_open(Duration::from_secs(4))
        .build()?;
    let registry = Arc::new(
        Registry::builder()
            .policy(policy)
            .target("local", "llama3")
            .target("cloud", "gpt-4o-mini")
            .target("backup", "sim-529")
            .build()?,
    );
    // Every breaker shows `closed` from the start, not only after its first transition.
    let breakers: Vec<(String, String)> = registry
        .iter()
        .map(|b| (b.provider().to_owned(), b.model().to_owned()))
        .collect();
    metrics.register_breakers(breakers.iter().map(|(p, m)| (p.as_str(), m.as_str())));
    let chat = Route::builder("chat", Arc::clone(&registry))
        .target("local", "llama3")
        .target("cloud", "gpt-4o-mini")
        .build()?;
    let batch = Route::builder("batch", Arc::clone(&registry))
        .target("local", "llama3")
        .target("backup", "sim-529")
        .build()?;
    // Its own board: the limit does not touch the chat route's use of the same target.
    let burst_loads = Arc::new(llm_failover::chain::Loads::new());
    burst_loads.set_max_inflight("cloud", "gpt-4o-mini", Some(1));
    let burst = Route::builder("burst", registry)
        .tier(llm_failover::chain::Tier::least_loaded().target("cloud", "gpt-4o-mini"))
        .loads(burst_loads)
        .build()?;
    let client = Client::new()?;
    let endpoints = [
        Endpoint::new("local", &primary.base_url()),
        Endpoint::new("cloud", &fallback.base_url()),
        Endpoint::new("backup", &backup.base_url()),
    ];
    let endpoint = |provider: &str| {
        let i = match provider {
            "local" => 0,
            "cloud" => 1,
            _ => 2,
        };
        endpoints[i].clone()
    };
    let request = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
    let edge = start_proxy(&fallback, &metrics).await?;
    let http = reqwest::Client::new();
    println!("ready");

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    // Stopped by a signal rather than killed, so that `edge` drops and removes its folder.
    let stop = stop_signal();
    tokio::pin!(stop);
    for round in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => break,
        }
        let streamed = chat
            .stream(|a| {
                let (client, request, endpoint) =
                    (client.clone(), request.clone(), endpoint(a.provider()));
                async move { client.chat_stream(&endpoint, a.model(), &request).await }
            })
            .await;
        if let Ok(answer) = streamed {
            let mut stream = answer.value;
            while stream.next().await.is_some() {}
        }
        if round % 10 == 0 {
            // Shed by design: one of three fits.
            let one = || {
                burst.call(|a| {
                    let (client, request, endpoint) =
                        (client.clone(), request.clone(), endpoint(a.provider()));
                    async move { client.chat(&endpoint, a.model(), &request).await }
                })
            };
            let _shed = tokio::join!(one(), one(), one());
        }
        if round % 20 == 0 {
            edge.round(&http).await;
        }
        if round % 5 == 0 {
            // Exhausted by design: the result is only counted.
            let _exhausted = batch
                .call(|a| {
                    let (client, request, endpoint) =
                        (client.clone(), request.clone(), endpoint(a.provider()));
                    async move { client.chat(&endpoint, a.model(), &request).await }
                })
                .await;
        }
    }
    Ok(())
}

/// Completes on Ctrl-C or (on Unix) SIGTERM, which is how `scripts/dashboards.sh` stops it.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

const CLIENT_KEY: &str = "scenario-client-key";
const ADMIN_KEY: &str = "scenario-admin-key";

/// The proxy in front of the healthy simulator, and how to reach it.
struct Edge {
    base: String,
    /// The config file's folder: read again on every reload, removed when the edge drops.
    _config_dir: tempfile::TempDir,
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the proxy's config file (a client key and an admin key, as hashes) and serves it on
/// a loopback port; its breakers show in the state gauge from the start.
///
/// `edge-resume` (both providers are the healthy simulator; the model name makes `flaky` cut
/// its streams): a stream of `flaky/sim-cut-3` breaks after its third token and the chain
/// continues it on `steady`, sending the three tokens as an assistant prefill, which the
/// simulator continues because they are the start of its answer. The cut is ignored by
/// `flaky`'s breaker, so it never opens and every streaming request of every round resumes.
async fn start_proxy(
    upstream: &Sim,
    metrics: &MetricsLayer,
) -> Result<Edge, Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("llm-failover-scenario-")
        .tempdir()?;
    let path = dir.path().join("edge.toml");
    let (upstream, client_key, admin_key) = (
        upstream.base_url(),
        sha256_hex(CLIENT_KEY),
        sha256_hex(ADMIN_KEY),
    );
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"

[providers.edge]
base_url = "{upstream}"

# edge-resume: the primary's streams are cut (model sim-cut-3); its breaker ignores the cut
# so that it stays admitted and every stream is resumed.
[providers.flaky]
base_url = "{upstream}"

[providers.flaky.breaker.reasons.stream_interrupted]
effect = "ignore"

# The fallback continues a broken answer from an assistant prefill.
[providers.steady]
base_url = "{upstream}"
prefill = "assistant"

[routes.edge-chat]
targets = ["edge/gpt-4o-mini"]

[routes.edge-resume]
targets = ["flaky/sim-cut-3", "steady/gpt-4o-mini"]

[routes.edge-resume.policy]
stream_resume = true

[[clients]]
name = "webapp"
key_sha256 = "{client_key}"
routes = ["*"]

[admin]
name = "ops"
key_sha256 = "{admin_key}"
"#
        ),
    )?;
    let config = Config::from_file(&path)?;
    let proxy = Proxy::new(&config)?;
    metrics.register_breakers(proxy.registry().iter().map(|b| (b.provider(), b.model())));
    let listener = tokio::net::TcpListener::bind(config.listen()).await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    Ok(Edge {
        base,
        _config_dir: dir,
    })
}

impl Edge {
    /// One of each: an answered request, a request without a key, an admin reset, a reload;
    /// and a few streams of `edge-resume`, each cut and resumed. Their answers are only
    /// counted.
    async fn round(&self, http: &reqwest::Client) {
        let chat = format!("{}/v1/chat/completions", self.base);
        let body = serde_json::json!({
            "model": "edge-chat",
            "messages": [{"role": "user", "content": "hi"}],
        });
        let _ = http
            .post(&chat)
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
            .await;
        let _ = http.post(&chat).json(&body).send().await;
        let resumed = serde_json::json!({
            "model": "edge-resume",
            "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
        });
        for _ in 0..3 {
            // Read to the end: the cut and the resume happen while the answer streams.
            if let Ok(response) = http
                .post(&chat)
                .bearer_auth(CLIENT_KEY)
                .json(&resumed)
                .send()
                .await
            {
                let _ = response.bytes().await;
            }
        }
        let _ = http
            .post(format!(
                "{}/v1/failover/breakers/edge/gpt-4o-mini",
                self.base
            ))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"action": "reset"}))
            .send()
            .await;
        let _ = http
            .post(format!("{}/v1/failover/reload", self.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await;
    }
}
