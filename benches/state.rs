//! Shared breaker state through Redis: how fast a trip reaches another replica, how long a
//! fleet-wide count takes to trip both replicas, what the closed path costs with the backend
//! on, and what Redis being unreachable adds per request.
//!
//! `cargo bench --bench state --features redis` measures; under `cargo test` it runs a few
//! iterations as a smoke test. Needs `redis-server` on the PATH (skipped otherwise).
#![expect(clippy::print_stdout, reason = "a benchmark prints its numbers")]
#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_failover::Reason;
use llm_failover::breaker::{BreakerPolicy, Outcome, Registry, State};
use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::Sim;
use llm_failover::state::{RedisState, StateConfig, StateHandle};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A registry of one target `p/m` sharing through `state`; `policy` is its breaker policy.
fn shared_registry(state: StateConfig, policy: BreakerPolicy) -> (Arc<Registry>, StateHandle) {
    let state = RedisState::new(state).unwrap();
    let registry = Arc::new(
        Registry::builder()
            .policy(policy)
            .target("p", "m")
            .on_transition(state.listener())
            .build()
            .unwrap(),
    );
    let handle = state.start(Arc::clone(&registry)).unwrap();
    (registry, handle)
}

/// A registry whose breaker trips on the first model-not-found.
fn registry(url: &str) -> (Arc<Registry>, StateHandle) {
    let state = StateConfig::builder(url)
        .namespace("bench")
        .build()
        .unwrap();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(1)
        .open_base(Reason::ModelNotFound, Duration::from_secs(3600))
        .build()
        .unwrap();
    shared_registry(state, policy)
}

/// A registry whose breaker trips after 4 failures counted across the fleet.
fn counting_registry(url: &str) -> (Arc<Registry>, StateHandle) {
    let state = StateConfig::builder(url)
        .namespace("bench-count")
        .fleet_counting(true)
        .build()
        .unwrap();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(4)
        .open_base(Reason::ServerError, Duration::from_secs(3600))
        .build()
        .unwrap();
    shared_registry(state, policy)
}

fn fail(registry: &Registry) {
    let permit = registry.target("p", "m").unwrap().try_acquire().unwrap();
    let _ = permit.record(Outcome::failure(
        Reason::ServerError,
        Duration::from_millis(1),
    ));
}

/// Yields until `cond` holds; panics with `what` once `limit` has passed since `t`.
async fn spin_until(t: Instant, limit: Duration, what: &str, cond: impl Fn() -> bool) {
    while !cond() {
        assert!(t.elapsed() < limit, "{what}");
        tokio::task::yield_now().await;
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn closed_path_ns(registry: &Registry, n: u32) -> f64 {
    let target = registry.target("p", "m").unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let permit = target.try_acquire().unwrap();
        std::hint::black_box(permit.record(Outcome::success(Duration::from_millis(5))));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

async fn proxy_latency(toml: &str, url: &str, n: usize) -> (Duration, Duration) {
    let config = Config::parse_with_env(toml, "bench.toml", |v| {
        (v == "BENCH_REDIS_URL").then(|| url.to_owned())
    })
    .unwrap();
    let proxy = Proxy::new(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
    let http = reqwest::Client::new();
    let body =
        serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let t = Instant::now();
        let r = http
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        if i >= 10 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("state bench skipped: redis-server is not installed");
        return;
    }
    let port = free_port();
    // Redis's working folder, removed when `dir` drops (also if the bench panics).
    let dir = tempfile::Builder::new()
        .prefix("llm-failover-bench-")
        .tempdir()
        .unwrap();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let (a, ha) = registry(&url);
    let (b, hb) = registry(&url);
    let limit = Duration::from_secs(10);
    let start = Instant::now();
    while !(ha.synced(limit).await && hb.synced(limit).await) {
        assert!(start.elapsed() < limit, "redis-server did not answer");
    }

    // 1. Propagation: A trips, B treats it as open.
    let rounds = if full { 300 } else { 5 };
    let mut delays = Vec::with_capacity(rounds);
    let bb = b.breaker("p", "m").unwrap().clone();
    for _ in 0..rounds {
        let t = Instant::now();
        let permit = a.target("p", "m").unwrap().try_acquire().unwrap();
        let _ = permit.record(Outcome::failure(
            Reason::ModelNotFound,
            Duration::from_millis(1),
        ));
        spin_until(t, limit, "the trip never arrived", || {
            bb.state() == State::Open
        })
        .await;
        delays.push(t.elapsed());
        // Reset fleet-wide and wait until B is closed again.
        let _ = a.control("p", "m").unwrap().reset();
        spin_until(t, limit, "the reset never arrived", || {
            bb.state() == State::Closed
        })
        .await;
    }
    delays.sort();
    println!(
        "propagation (A opens -> B open), {rounds} trips over loopback: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().unwrap()
    );

    // 1b. Fleet-wide counting: two failures on A, two on B (threshold 4, each below it
    // alone); from B's last failure until both treat the breaker as open.
    let (ca, hca) = counting_registry(&url);
    let (cb, hcb) = counting_registry(&url);
    assert!(hca.synced(limit).await && hcb.synced(limit).await);
    let (sa, sb) = (
        ca.breaker("p", "m").unwrap().clone(),
        cb.breaker("p", "m").unwrap().clone(),
    );
    let mut fleet = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        fail(&ca);
        fail(&ca);
        fail(&cb);
        let t = Instant::now();
        fail(&cb);
        spin_until(t, limit, "the fleet never tripped", || {
            sa.state() == State::Open && sb.state() == State::Open
        })
        .await;
        fleet.push(t.elapsed());
        let _ = ca.control("p", "m").unwrap().reset();
        spin_until(t, limit, "the reset never arrived", || {
            sb.state() == State::Closed
        })
        .await;
    }
    fleet.sort();
    println!(
        "fleet-wide counting (4th failure across 2 replicas -> both open, flush every 20ms), \
         {rounds} trips: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&fleet, 0.5),
        percentile(&fleet, 0.99),
        fleet.last().unwrap()
    );
    drop((hca, hcb));

    // 2. The closed path (try_acquire + record success) with the backend on, and without.
    let n = if full { 20_000_000 } else { 1000 };
    let plain = Registry::builder().target("p", "m").build().unwrap();
    let with = closed_path_ns(&a, n);
    let without = closed_path_ns(&plain, n);
    println!("closed path: {with:.2} ns/op with the Redis backend, {without:.2} ns/op without");

    // 3. Per request through a proxy: no [state], and [state] pointing at a dead Redis.
    let primary = Sim::builder().start().await.unwrap();
    let base = format!(
        "[providers.a]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"a/m\"]\n",
        primary.base_url()
    );
    let dead_port = free_port();
    let dead = format!("redis://127.0.0.1:{dead_port}");
    let with_state = format!(
        "{base}[state]\nbackend = \"redis\"\nurl_env = \"BENCH_REDIS_URL\"\ntimeout = \"100ms\"\n"
    );
    let reqs = if full { 2000 } else { 10 };
    let (p50_local, p99_local) = proxy_latency(&base, &dead, reqs).await;
    let (p50_down, p99_down) = proxy_latency(&with_state, &dead, reqs).await;
    println!(
        "per request, {reqs} requests: without [state] p50 {p50_local:?} p99 {p99_local:?}; \
         with Redis unreachable p50 {p50_down:?} p99 {p99_down:?}"
    );
    drop((ha, hb));
    let _ = redis.kill();
    let _ = redis.wait();
    drop(dir);
}
