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
//! until it is killed:
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
//! open and half-open within seconds. It prints `ready` on stdout once `/metrics` is served.

#![expect(clippy::print_stdout, reason = "the script waits for the ready line")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use llm_failover::Reason;
use llm_failover::breaker::{BreakerPolicy, Registry};
use llm_failover::chain::Route;
use llm_failover::chain::openai::{Client, Endpoint};
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
    println!("ready");

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for round in 0u64.. {
        tick.tick().await;
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
