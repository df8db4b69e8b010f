//! What the metrics layer adds, with the Prometheus recorder installed globally as in an
//! application.
//!
//! * `wrapped_call/*`: one call through a breaker against a no-op provider as the chain makes
//!   it: a request span, an attempt span (fields recorded as the chain records them), breaker
//!   `try_acquire` + `record`, and a classify of a small error. `no_layer` has a subscriber
//!   (registry) without the layer, `metrics_layer` the same plus the `MetricsLayer`.
//! * `app_event/*`: the application's own `info!` event (and `app_span/*` its own span) under
//!   a registry + `fmt` layer writing to a sink, without and with the `MetricsLayer`: the cost
//!   the layer adds to everything that is not the crate's.

#![expect(clippy::unwrap_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_main};
use tracing::field::Empty;
use tracing_subscriber::layer::SubscriberExt as _;

use llm_failover::breaker::{Breaker, BreakerPolicy, Outcome};
use llm_failover::classify::{Signal, classify};
use llm_failover::telemetry::{MetricsLayer, describe_metrics, prometheus_builder};

/// The no-op provider.
#[inline(never)]
fn provider() -> Result<u32, u16> {
    black_box(Ok(42))
}

/// One call as the chain makes it, spans included.
fn wrapped_call(breaker: &Breaker, started: Instant) {
    let request = tracing::info_span!(
        target: "llm_failover::chain",
        "failover",
        route = "chat",
        outcome = Empty,
        attempts = Empty,
    );
    let attempt = tracing::info_span!(
        target: "llm_failover::chain",
        parent: &request,
        "attempt",
        "gen_ai.operation.name" = "chat",
        "gen_ai.provider.name" = "openai",
        "gen_ai.request.model" = "gpt-4o-mini",
        "llm_failover.attempt" = 1_u32,
        "llm_failover.role" = "primary",
        "llm_failover.breaker.state" = "closed",
        "llm_failover.reason" = Empty,
        "error.type" = Empty,
        "llm_failover.outcome" = Empty,
        "llm_failover.ttft_s" = Empty,
        "llm_failover.duration_s" = Empty,
        "http.response.status_code" = Empty,
    );
    let permit = breaker.try_acquire().unwrap();
    let answer = attempt.in_scope(provider);
    // The classify a failure would cost (small error: a bare 503).
    black_box(classify(&Signal::new().status(black_box(503))));
    let took = started.elapsed();
    permit.record(Outcome::success(took));
    black_box(answer).unwrap();
    attempt.record("llm_failover.outcome", "ok");
    attempt.record("http.response.status_code", 200_u16);
    attempt.record("llm_failover.duration_s", took.as_secs_f64());
    drop(attempt);
    request.record("outcome", "ok");
    request.record("attempts", 1_usize);
}

/// An application's log output, written nowhere.
fn fmt<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_ansi(false)
}

fn bench(c: &mut Criterion) {
    metrics::set_global_recorder(prometheus_builder().build_recorder()).unwrap();
    describe_metrics();
    let breaker = Breaker::new(BreakerPolicy::default());
    let started = Instant::now();

    let mut g = c.benchmark_group("wrapped_call");
    let plain = tracing_subscriber::registry();
    tracing::subscriber::with_default(plain, || {
        g.bench_function("no_layer", |b| b.iter(|| wrapped_call(&breaker, started)));
    });
    let layered = tracing_subscriber::registry().with(MetricsLayer::new());
    tracing::subscriber::with_default(layered, || {
        g.bench_function("metrics_layer", |b| {
            b.iter(|| wrapped_call(&breaker, started));
        });
    });
    g.finish();

    let app_event = || tracing::info!(target: "my_app::handler", user = 42_u64, "served");
    let app_span = || {
        let span = tracing::info_span!(target: "my_app::handler", "handle", user = 42_u64);
        span.record("user", 43_u64);
        drop(span.enter());
    };
    let mut e = c.benchmark_group("app_event");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(fmt()), || {
        e.bench_function("no_layer", |b| b.iter(app_event));
    });
    tracing::subscriber::with_default(
        tracing_subscriber::registry()
            .with(MetricsLayer::new())
            .with(fmt()),
        || e.bench_function("metrics_layer", |b| b.iter(app_event)),
    );
    e.finish();
    let mut s = c.benchmark_group("app_span");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(fmt()), || {
        s.bench_function("no_layer", |b| b.iter(app_span));
    });
    tracing::subscriber::with_default(
        tracing_subscriber::registry()
            .with(MetricsLayer::new())
            .with(fmt()),
        || s.bench_function("metrics_layer", |b| b.iter(app_span)),
    );
    s.finish();
}

/// The criterion group (in a module so the generated function needs no docs).
mod group {
    use std::time::Duration;

    use criterion::Criterion;

    criterion::criterion_group! {
        name = benches;
        config = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        targets = super::bench
    }
}
criterion_main!(group::benches);
