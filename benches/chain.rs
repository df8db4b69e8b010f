//! What a route adds to a call: the same non-streaming chat completion against the simulated
//! provider over loopback, called directly, through a route whose primary is healthy, and
//! through a route whose primary is dead with its breaker open (so the route skips it).
//!
//! Criterion measures the mean; before it, each case is also timed call by call and its p50
//! and p99 are printed, since the tail is what the breaker-open target is about.

#![expect(clippy::expect_used, reason = "benchmark setup should fail loudly")]
#![expect(
    clippy::print_stderr,
    reason = "the percentile table is printed for the reader"
)]
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use llm_failover::breaker::Registry;
use llm_failover::chain::{Route, RoutePolicy};
use llm_failover::protocol::openai_chat::{Client, Endpoint};
use llm_failover::sim::Sim;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

struct Setup {
    rt: Runtime,
    client: Client,
    primary: Endpoint,
    fallback: Endpoint,
    healthy: Route,
    dead: Route,
    request: Value,
    _sims: (Sim, Sim, Sim),
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (primary_sim, fallback_sim, dead_sim) = rt.block_on(async {
        let start = || Sim::builder().token_delay(Duration::ZERO).start();
        (
            start().await.expect("sim"),
            start().await.expect("sim"),
            start().await.expect("sim"),
        )
    });
    let registry = Arc::new(
        Registry::builder()
            .target("primary", "m")
            .target("fallback", "m")
            .target("dead", "m")
            .build()
            .expect("registry"),
    );
    // The dead primary's breaker is open: the route skips it without a connection attempt.
    registry
        .control("dead", "*")
        .expect("configured")
        .force_open(None);
    let policy = RoutePolicy::builder().build().expect("policy");
    let route = |first: &str| {
        Route::builder("bench", Arc::clone(&registry))
            .target(first, "m")
            .target("fallback", "m")
            .policy(policy.clone())
            .build()
            .expect("route")
    };
    Setup {
        client: Client::new().expect("client"),
        primary: Endpoint::new("primary", &primary_sim.base_url()),
        fallback: Endpoint::new("fallback", &fallback_sim.base_url()),
        healthy: route("primary"),
        dead: route("dead"),
        request: json!({"messages": [{"role": "user", "content": "hi"}]}),
        _sims: (primary_sim, fallback_sim, dead_sim),
        rt,
    }
}

impl Setup {
    async fn direct(&self) -> Value {
        self.client
            .chat(&self.primary, "m", &self.request)
            .await
            .expect("answer")
    }

    async fn routed(&self, route: &Route) -> Value {
        route
            .call(|a| {
                let endpoint = if a.provider() == "fallback" {
                    self.fallback.clone()
                } else {
                    self.primary.clone()
                };
                let (client, request) = (self.client.clone(), self.request.clone());
                async move { client.chat(&endpoint, a.model(), &request).await }
            })
            .await
            .expect("answer")
            .value
    }
}

/// p50 and p99 of `n` sequential calls.
fn percentiles<F: std::future::Future<Output = Value>>(
    rt: &Runtime,
    n: usize,
    mut f: impl FnMut() -> F,
) -> (Duration, Duration) {
    let mut times: Vec<Duration> = rt.block_on(async {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            black_box(f().await);
            times.push(start.elapsed());
        }
        times
    });
    times.sort_unstable();
    (times[n / 2], times[n * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let testing = std::env::args().any(|a| a == "--test");
    let n = if testing { 50 } else { 3000 };
    // Warm the connection pools.
    let _ = percentiles(&s.rt, 50, || s.direct());
    let direct = percentiles(&s.rt, n, || s.direct());
    let healthy = percentiles(&s.rt, n, || s.routed(&s.healthy));
    let dead = percentiles(&s.rt, n, || s.routed(&s.dead));
    eprintln!("\nlatency over loopback, {n} sequential calls each:");
    eprintln!("{:<34} {:>10} {:>10}", "case", "p50", "p99");
    for (name, (p50, p99)) in [
        ("direct call to the sim", direct),
        ("route, healthy primary", healthy),
        ("route, dead primary, breaker open", dead),
    ] {
        eprintln!("{name:<34} {p50:>10.1?} {p99:>10.1?}");
    }

    let mut g = c.benchmark_group("chain");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("direct", |b| b.to_async(&s.rt).iter(|| s.direct()));
    g.bench_function("route_healthy_primary", |b| {
        b.to_async(&s.rt).iter(|| s.routed(&s.healthy))
    });
    g.bench_function("route_dead_primary_open", |b| {
        b.to_async(&s.rt).iter(|| s.routed(&s.dead))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
