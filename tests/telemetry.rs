//! The metrics layer against spans and events emitted exactly as the chain and the breaker
//! emit them, asserted with exact values through `DebuggingRecorder`.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use tracing_subscriber::layer::SubscriberExt as _;

use llm_failover::Reason;
use llm_failover::breaker::{Breaker, BreakerPolicy, Outcome, State};
use llm_failover::telemetry::{MetricsLayer, describe_metrics, prometheus_builder};

/// Emits spans and events with the literal names and fields the chain and the breaker use.
mod emit {
    use tracing::Span;
    use tracing::field::Empty;

    pub fn request(route: &str) -> Span {
        tracing::info_span!(
            target: "llm_failover::chain",
            "failover",
            route = route,
            outcome = Empty,
            attempts = Empty,
        )
    }

    pub fn finish(request: &Span, outcome: &str, attempts: usize) {
        request.record("outcome", outcome);
        request.record("attempts", attempts);
    }

    pub fn attempt(request: &Span, provider: &str, model: &str, n: u32, role: &str) -> Span {
        tracing::info_span!(
            target: "llm_failover::chain",
            parent: request,
            "attempt",
            "gen_ai.operation.name" = "chat",
            "gen_ai.provider.name" = provider,
            "gen_ai.request.model" = model,
            "llm_failover.attempt" = n,
            "llm_failover.role" = role,
            "llm_failover.breaker.state" = "closed",
            "llm_failover.reason" = Empty,
            "error.type" = Empty,
            "llm_failover.outcome" = Empty,
            "llm_failover.ttft_s" = Empty,
            "llm_failover.duration_s" = Empty,
            "http.response.status_code" = Empty,
        )
    }

    pub fn ok(span: Span, took: f64, ttft: Option<f64>) {
        if let Some(t) = ttft {
            span.record("llm_failover.ttft_s", t);
        }
        span.record("llm_failover.outcome", "ok");
        span.record("http.response.status_code", 200_u16);
        span.record("llm_failover.duration_s", took);
    }

    pub fn failed(span: Span, reason: &str, status: Option<u16>, took: f64) {
        span.record("llm_failover.reason", reason);
        span.record("error.type", reason);
        span.record("llm_failover.outcome", "failure");
        if let Some(s) = status {
            span.record("http.response.status_code", s);
        }
        span.record("llm_failover.duration_s", took);
    }

    pub fn rejected(span: Span, state: &str, reason: Option<&str>) {
        span.record("llm_failover.outcome", "rejected");
        span.record("llm_failover.breaker.state", state);
        if let Some(r) = reason {
            span.record("llm_failover.reason", r);
        }
    }

    pub fn hop(request: &Span, from: &str, to: &str, reason: &str) {
        tracing::event!(
            name: "failover_hop",
            target: "llm_failover::chain",
            parent: request,
            tracing::Level::INFO,
            from_provider = from,
            to_provider = to,
            reason = reason,
        );
    }

    pub fn resume(request: &Span, from: &str, to: &str, outcome: &str) {
        tracing::event!(
            name: "stream_resume",
            target: "llm_failover::chain",
            parent: request,
            tracing::Level::INFO,
            from_provider = from,
            to_provider = to,
            outcome = outcome,
        );
    }

    pub fn transition(
        provider: &str,
        model: &str,
        from: &str,
        to: &str,
        reason: &str,
        shadow: bool,
    ) {
        tracing::event!(
            name: "breaker_transition",
            target: "llm_failover::breaker",
            tracing::Level::WARN,
            provider = provider,
            model = model,
            from = from,
            to = to,
            reason = reason,
            open_until = 1_900_000_000_000_u64,
            open_for_ms = 30_000_u64,
            origin = "local",
            shadow = shadow,
            "circuit breaker {provider}/{model} {from} -> {to}",
        );
    }
}

type Entry = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

/// A snapshot of everything the layer registered.
struct Metrics(Vec<Entry>);

impl Metrics {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.0
            .iter()
            .find(|(k, ..)| {
                let key = k.key();
                key.name() == name
                    && key.labels().count() == labels.len()
                    && key.labels().all(|l| labels.contains(&(l.key(), l.value())))
            })
            .map(|(.., v)| v)
    }

    /// The counter's value; 0 when it was never registered.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            None => 0,
            Some(DebugValue::Counter(n)) => *n,
            Some(v) => panic!("{name} is not a counter: {v:?}"),
        }
    }

    /// `llm_failover_breaker_transitions_total` for one breaker and transition.
    fn transitions(&self, provider: &str, model: &str, from: &str, to: &str, reason: &str) -> u64 {
        self.counter(
            "llm_failover_breaker_transitions_total",
            &[
                ("provider", provider),
                ("model", model),
                ("from", from),
                ("to", to),
                ("reason", reason),
            ],
        )
    }

    /// The sum of a counter over every label set.
    fn total(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, ..)| k.kind() == MetricKind::Counter && k.key().name() == name)
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.get(name, labels)? {
            DebugValue::Gauge(g) => Some(g.into_inner()),
            v => panic!("{name} is not a gauge: {v:?}"),
        }
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(name, labels) {
            None => vec![],
            Some(DebugValue::Histogram(h)) => h.iter().map(|v| v.into_inner()).collect(),
            Some(v) => panic!("{name} is not a histogram: {v:?}"),
        }
    }

    /// The one-hot breaker gauge as (state, value) for the six states.
    fn breaker_states(&self, provider: &str, model: &str) -> Vec<(&'static str, Option<f64>)> {
        State::ALL
            .iter()
            .map(|s| {
                let labels = [
                    ("provider", provider),
                    ("model", model),
                    ("state", s.as_str()),
                ];
                (
                    s.as_str(),
                    self.gauge("llm_failover_breaker_state", &labels),
                )
            })
            .collect()
    }

    /// Asserts exactly `state` is 1 and the five others are 0.
    fn assert_one_hot(&self, provider: &str, model: &str, state: &str) {
        for (s, v) in self.breaker_states(provider, model) {
            let want = if s == state { 1.0 } else { 0.0 };
            assert_eq!(v, Some(want), "{provider}/{model} state {s}");
        }
    }
}

/// Runs `f` under a subscriber with the layer and a fresh debugging recorder.
fn run(f: impl FnOnce(&MetricsLayer)) -> Metrics {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let layer = MetricsLayer::new();
        let subscriber = tracing_subscriber::registry().with(layer.clone());
        tracing::subscriber::with_default(subscriber, || f(&layer));
    });
    Metrics(snapshotter.snapshot().into_vec())
}

/// A refused local primary that trips its provider-wide breaker, then an OpenAI fallback
/// that answers, as the chain emits it.
fn refused_primary_then_fallback() {
    let req = emit::request("chat");
    let a1 = emit::attempt(&req, "local", "llama3", 1, "primary");
    emit::transition("local", "*", "closed", "open", "connection_refused", false);
    emit::failed(a1, "connection_refused", None, 0.002);
    emit::hop(&req, "local", "openai", "connection_refused");
    let a2 = emit::attempt(&req, "openai", "gpt-4o-mini", 2, "fallback");
    emit::ok(a2, 1.5, Some(0.25));
    emit::finish(&req, "ok", 2);
}

#[test]
fn refused_primary_then_fallback_success() {
    let m = run(|_| refused_primary_then_fallback());

    let primary = [
        ("provider", "local"),
        ("model", "llama3"),
        ("role", "primary"),
    ];
    assert_eq!(
        m.counter(
            "llm_failover_failures_total",
            &[
                primary[0],
                primary[1],
                primary[2],
                ("reason", "connection_refused")
            ]
        ),
        1
    );
    assert_eq!(m.total("llm_failover_failures_total"), 1);
    assert_eq!(
        m.counter(
            "llm_failover_failovers_total",
            &[
                ("route", "chat"),
                ("from_provider", "local"),
                ("to_provider", "openai"),
                ("reason", "connection_refused")
            ]
        ),
        1
    );
    assert_eq!(m.total("llm_failover_failovers_total"), 1);
    let attempts = |provider, model, role, outcome| {
        m.counter(
            "llm_failover_attempts_total",
            &[
                ("route", "chat"),
                ("provider", provider),
                ("model", model),
                ("role", role),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(attempts("local", "llama3", "primary", "failure"), 1);
    assert_eq!(attempts("openai", "gpt-4o-mini", "fallback", "ok"), 1);
    assert_eq!(m.total("llm_failover_attempts_total"), 2);
    assert_eq!(
        m.counter(
            "llm_failover_requests_total",
            &[("route", "chat"), ("outcome", "ok")]
        ),
        1
    );
    assert_eq!(m.total("llm_failover_requests_total"), 1);
    assert_eq!(
        m.transitions("local", "*", "closed", "open", "connection_refused"),
        1
    );
    m.assert_one_hot("local", "*", "open");
    assert_eq!(
        m.histogram(
            "llm_failover_attempt_duration_seconds",
            &[
                ("provider", "openai"),
                ("model", "gpt-4o-mini"),
                ("outcome", "ok")
            ]
        ),
        [1.5]
    );
    assert_eq!(
        m.histogram(
            "llm_failover_attempt_duration_seconds",
            &[
                ("provider", "local"),
                ("model", "llama3"),
                ("outcome", "failure")
            ]
        ),
        [0.002]
    );
    assert_eq!(
        m.histogram(
            "llm_failover_time_to_first_token_seconds",
            &[("provider", "openai"), ("model", "gpt-4o-mini")]
        ),
        [0.25]
    );
}

#[test]
fn rate_limits_count_by_reason_and_role() {
    let m = run(|_| {
        for _ in 0..3 {
            let req = emit::request("chat");
            let a1 = emit::attempt(&req, "openai", "gpt-4o", 1, "primary");
            emit::failed(a1, "rate_limit", Some(429), 0.04);
            emit::hop(&req, "openai", "anthropic", "rate_limit");
            let a2 = emit::attempt(&req, "anthropic", "claude", 2, "fallback");
            emit::failed(a2, "overloaded", Some(529), 0.3);
            emit::finish(&req, "exhausted", 2);
        }
    });
    assert_eq!(
        m.counter(
            "llm_failover_failures_total",
            &[
                ("provider", "openai"),
                ("model", "gpt-4o"),
                ("role", "primary"),
                ("reason", "rate_limit")
            ]
        ),
        3
    );
    assert_eq!(
        m.counter(
            "llm_failover_failures_total",
            &[
                ("provider", "anthropic"),
                ("model", "claude"),
                ("role", "fallback"),
                ("reason", "overloaded")
            ]
        ),
        3
    );
    assert_eq!(m.total("llm_failover_failures_total"), 6);
    assert_eq!(
        m.counter(
            "llm_failover_failovers_total",
            &[
                ("route", "chat"),
                ("from_provider", "openai"),
                ("to_provider", "anthropic"),
                ("reason", "rate_limit")
            ]
        ),
        3
    );
    assert_eq!(
        m.counter(
            "llm_failover_requests_total",
            &[("route", "chat"), ("outcome", "exhausted")]
        ),
        3
    );
    assert_eq!(
        m.histogram(
            "llm_failover_attempt_duration_seconds",
            &[
                ("provider", "openai"),
                ("model", "gpt-4o"),
                ("outcome", "failure")
            ]
        ),
        [0.04, 0.04, 0.04]
    );
}

#[test]
fn rejected_attempts_count_as_rejected_not_as_failures() {
    let m = run(|_| {
        // Every breaker is open: two rejected attempt spans, then the request is exhausted.
        let req = emit::request("chat");
        let a1 = emit::attempt(&req, "local", "llama3", 1, "primary");
        emit::rejected(a1, "open", Some("connection_refused"));
        emit::hop(&req, "local", "openai", "connection_refused");
        let a2 = emit::attempt(&req, "openai", "gpt-4o-mini", 2, "fallback");
        emit::rejected(a2, "forced_open", None);
        emit::finish(&req, "exhausted", 2);
    });
    assert_eq!(
        m.counter(
            "llm_failover_attempts_total",
            &[
                ("route", "chat"),
                ("provider", "local"),
                ("model", "llama3"),
                ("role", "primary"),
                ("outcome", "rejected")
            ]
        ),
        1
    );
    assert_eq!(
        m.counter(
            "llm_failover_attempts_total",
            &[
                ("route", "chat"),
                ("provider", "openai"),
                ("model", "gpt-4o-mini"),
                ("role", "fallback"),
                ("outcome", "rejected")
            ]
        ),
        1
    );
    assert_eq!(m.total("llm_failover_attempts_total"), 2);
    assert_eq!(m.total("llm_failover_failures_total"), 0);
    assert_eq!(m.total("llm_failover_failovers_total"), 1);
    assert_eq!(
        m.counter(
            "llm_failover_requests_total",
            &[("route", "chat"), ("outcome", "exhausted")]
        ),
        1
    );
    // Nothing was sent, so there is no duration.
    assert!(
        m.0.iter()
            .all(|(k, ..)| k.key().name() != "llm_failover_attempt_duration_seconds")
    );
}

#[test]
fn a_request_with_no_attempts_is_counted() {
    let m = run(|_| {
        let req = emit::request("embeddings");
        emit::finish(&req, "exhausted", 0);
    });
    assert_eq!(
        m.counter(
            "llm_failover_requests_total",
            &[("route", "embeddings"), ("outcome", "exhausted")]
        ),
        1
    );
    assert_eq!(m.total("llm_failover_attempts_total"), 0);
}

#[test]
fn a_cancelled_request_counts_but_its_unsettled_attempt_does_not() {
    let m = run(|_| {
        let req = emit::request("chat");
        let a1 = emit::attempt(&req, "openai", "gpt-4o", 1, "primary");
        drop(a1);
        req.record("outcome", "cancelled");
    });
    assert_eq!(
        m.counter(
            "llm_failover_requests_total",
            &[("route", "chat"), ("outcome", "cancelled")]
        ),
        1
    );
    assert_eq!(m.total("llm_failover_attempts_total"), 0);
    assert_eq!(m.total("llm_failover_failures_total"), 0);
}

#[test]
fn free_text_never_becomes_a_label() {
    let m = run(|_| {
        let req = emit::request("chat");
        let a1 = emit::attempt(&req, "openai", "gpt-4o", 1, "primary");
        emit::failed(
            a1,
            "Error: sk-secret connect ECONNREFUSED 10.0.0.7:443",
            None,
            0.1,
        );
        emit::hop(&req, "openai", "local", "upstream said: quota for org-123");
        // An outcome outside the closed set is not counted at all.
        emit::finish(&req, "exploded at 12:03", 1);
        emit::transition("openai", "*", "closed", "open", "sk-secret", false);
    });
    assert_eq!(
        m.counter(
            "llm_failover_failures_total",
            &[
                ("provider", "openai"),
                ("model", "gpt-4o"),
                ("role", "primary"),
                ("reason", "unknown")
            ]
        ),
        1
    );
    assert_eq!(
        m.counter(
            "llm_failover_failovers_total",
            &[
                ("route", "chat"),
                ("from_provider", "openai"),
                ("to_provider", "local"),
                ("reason", "unknown")
            ]
        ),
        1
    );
    assert_eq!(m.transitions("openai", "*", "closed", "open", "unknown"), 1);
    assert_eq!(m.total("llm_failover_requests_total"), 0);
    let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    for (k, ..) in &m.0 {
        for l in k.key().labels() {
            assert!(
                !l.value().contains("secret") && !l.value().contains(' '),
                "{}: {}={}",
                k.key().name(),
                l.key(),
                l.value()
            );
            if l.key() == "reason" {
                assert!(reasons.contains(&l.value()), "{}", l.value());
            }
        }
    }
}

#[test]
fn the_state_gauge_is_one_hot_and_follows_transitions() {
    let m = run(|layer| {
        layer.register_breakers([("openai", "gpt-4o"), ("openai", "*"), ("local", "*")]);
        emit::transition("openai", "gpt-4o", "closed", "open", "server_error", false);
        emit::transition("openai", "gpt-4o", "open", "half_open", "none", false);
        // Registering again (a config reload) does not reset a breaker already seen.
        layer.register_breaker("openai", "gpt-4o");
        // Successes emit no transition event: nothing to flap.
        for _ in 0..5 {
            let req = emit::request("chat");
            let a = emit::attempt(&req, "local", "llama3", 1, "primary");
            emit::ok(a, 0.1, None);
            emit::finish(&req, "ok", 1);
        }
    });
    m.assert_one_hot("openai", "gpt-4o", "half_open");
    m.assert_one_hot("openai", "*", "closed");
    m.assert_one_hot("local", "*", "closed");
    assert_eq!(
        m.transitions("openai", "gpt-4o", "closed", "open", "server_error"),
        1
    );
    assert_eq!(
        m.transitions("openai", "gpt-4o", "open", "half_open", "none"),
        1
    );
    assert_eq!(m.total("llm_failover_breaker_transitions_total"), 2);
}

#[test]
fn shadow_transitions_count_but_leave_the_gauge_on_the_reported_state() {
    let m = run(|_| {
        emit::transition("openai", "*", "closed", "metrics_only", "none", false);
        emit::transition("openai", "*", "closed", "open", "timeout", true);
        emit::transition("openai", "*", "open", "half_open", "none", true);
    });
    m.assert_one_hot("openai", "*", "metrics_only");
    assert_eq!(m.transitions("openai", "*", "closed", "open", "timeout"), 1);
    assert_eq!(m.total("llm_failover_breaker_transitions_total"), 3);
}

#[test]
fn a_real_breaker_transition_moves_the_gauge() {
    let m = run(|layer| {
        layer.register_breaker("p", "m");
        let policy = BreakerPolicy::builder()
            .consecutive_failures(1)
            .build()
            .unwrap();
        let breaker = Breaker::builder().policy(policy).target("p", "m").build();
        let transition = breaker.try_acquire().unwrap().record(Outcome::failure(
            Reason::ServerError,
            Duration::from_millis(5),
        ));
        assert!(transition.is_some());
        assert_eq!(breaker.state(), State::Open);
        // Rejections emit nothing and change nothing.
        assert!(breaker.try_acquire().is_err());
    });
    m.assert_one_hot("p", "m", "open");
    assert_eq!(m.transitions("p", "m", "closed", "open", "server_error"), 1);
    assert_eq!(m.total("llm_failover_breaker_transitions_total"), 1);
}

/// A `MakeWriter` that keeps what the `fmt` layer writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn application_spans_and_events_reach_other_layers_and_make_no_metric() {
    let out = Captured::default();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let subscriber = tracing_subscriber::registry()
            .with(MetricsLayer::new())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(out.clone())
                    .with_ansi(false),
            );
        tracing::subscriber::with_default(subscriber, || {
            // The application's own spans, even with the crate's names and fields.
            let span =
                tracing::info_span!(target: "my_app", "failover", route = "chat", outcome = "ok");
            let _entered = span.enter();
            let attempt = tracing::info_span!(
                target: "my_app::llm_failover",
                "attempt",
                "gen_ai.provider.name" = "openai",
                "llm_failover.role" = "primary",
                "llm_failover.outcome" = "ok",
            );
            attempt.in_scope(|| {
                tracing::info!(target: "my_app", user = 42, "application event reached the fmt layer");
                tracing::warn!(target: "my_app", provider = "p", model = "m", from = "closed", to = "open", shadow = false, "breaker_transition lookalike");
            });
        });
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("application event reached the fmt layer"),
        "{text}"
    );
    assert!(text.contains("breaker_transition lookalike"), "{text}");
    assert!(text.contains("user=42"), "{text}");
    assert!(snapshotter.snapshot().into_vec().is_empty());
}

/// Renders a real scrape of a small scenario to `target/telemetry-scrape.prom`, which
/// `scripts/test.sh` hands to `promtool check metrics`.
#[test]
fn a_prometheus_scrape_of_a_scenario() {
    let recorder = prometheus_builder().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe_metrics();
        let layer = MetricsLayer::new();
        let subscriber = tracing_subscriber::registry().with(layer.clone());
        tracing::subscriber::with_default(subscriber, || {
            layer.register_breakers([("local", "*"), ("local", "llama3"), ("openai", "*")]);
            refused_primary_then_fallback();
            let req = emit::request("chat");
            let a1 = emit::attempt(&req, "local", "llama3", 1, "primary");
            emit::rejected(a1, "open", Some("connection_refused"));
            emit::hop(&req, "local", "openai", "connection_refused");
            let a2 = emit::attempt(&req, "openai", "gpt-4o-mini", 2, "fallback");
            emit::failed(a2, "rate_limit", Some(429), 0.05);
            emit::finish(&req, "exhausted", 2);
            let req = emit::request("stream");
            emit::resume(&req, "local", "openai", "ok");
            emit::finish(&req, "ok", 2);
        });
    });
    let scrape = handle.render();
    for line in [
        r#"llm_failover_requests_total{route="chat",outcome="ok"} 1"#,
        r#"llm_failover_requests_total{route="chat",outcome="exhausted"} 1"#,
        r#"llm_failover_breaker_state{provider="local",model="*",state="open"} 1"#,
        r#"llm_failover_breaker_state{provider="local",model="*",state="closed"} 0"#,
        r#"llm_failover_breaker_state{provider="openai",model="*",state="closed"} 1"#,
        r#"llm_failover_attempt_duration_seconds_bucket{provider="openai",model="gpt-4o-mini",outcome="ok",le="2.5"} 1"#,
        r#"llm_failover_attempt_duration_seconds_bucket{provider="openai",model="gpt-4o-mini",outcome="ok",le="1"} 0"#,
        "# TYPE llm_failover_time_to_first_token_seconds histogram",
        "# HELP llm_failover_failovers_total Requests that moved",
        r#"llm_failover_stream_resumes_total{route="stream",from_provider="local",to_provider="openai",outcome="ok"} 1"#,
    ] {
        assert!(scrape.contains(line), "missing {line:?} in\n{scrape}");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = std::fs::File::create(dir.join("telemetry-scrape.prom")).unwrap();
    file.write_all(scrape.as_bytes()).unwrap();
}

/// A stream resume counts by the route of its request span, its providers (`none` when no
/// target took the stream over) and its outcome; one outside a request span, or with an
/// outcome outside the closed set, is not counted.
#[test]
fn stream_resumes_count_by_route_providers_and_outcome() {
    let m = run(|_| {
        let req = emit::request("chat");
        emit::resume(&req, "local", "openai", "ok");
        emit::resume(&req, "local", "openai", "ok");
        emit::resume(&req, "local", "openai", "error");
        emit::resume(&req, "local", "none", "error");
        emit::resume(&req, "local", "openai", "upstream said no at 10.0.0.1");
        emit::finish(&req, "ok", 3);
        tracing::event!(
            name: "stream_resume",
            target: "llm_failover::chain",
            tracing::Level::INFO,
            from_provider = "local",
            to_provider = "openai",
            outcome = "ok",
        );
    });
    let resumes = |to, outcome| {
        m.counter(
            "llm_failover_stream_resumes_total",
            &[
                ("route", "chat"),
                ("from_provider", "local"),
                ("to_provider", to),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(resumes("openai", "ok"), 2);
    assert_eq!(resumes("openai", "error"), 1);
    assert_eq!(resumes("none", "error"), 1);
    assert_eq!(m.total("llm_failover_stream_resumes_total"), 4);
}

/// The real chain and breakers, not emitted by hand: a route whose attempts are scripted.
mod real_route {
    use std::sync::Arc;

    use llm_failover::breaker::{BreakerPolicy, Registry};
    use llm_failover::chain::{AttemptFailure, Route};
    use llm_failover::classify::{Signal, classify};

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // Paused time: retries' backoffs pass at once.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f)
    }

    fn route() -> Route {
        let registry = Registry::builder()
            .policy(
                BreakerPolicy::builder()
                    .consecutive_failures(1)
                    .build()
                    .unwrap(),
            )
            .target("local", "llama3")
            .target("openai", "gpt-4o-mini")
            .build()
            .unwrap();
        Route::builder("chat", Arc::new(registry))
            .target("local", "llama3")
            .target("openai", "gpt-4o-mini")
            .build()
            .unwrap()
    }

    #[test]
    fn a_refused_primary_then_a_fallback_answer_counts_exactly() {
        let m = run(|layer| {
            layer.register_breakers([
                ("local", "*"),
                ("local", "llama3"),
                ("openai", "*"),
                ("openai", "gpt-4o-mini"),
            ]);
            let route = route();
            block_on(async {
                for _ in 0..2 {
                    route
                        .call(|a| async move {
                            if a.provider() == "local" {
                                Err(AttemptFailure::new(Reason::ConnectionRefused))
                            } else {
                                Ok(())
                            }
                        })
                        .await
                        .unwrap();
                }
            });
        });
        let failures = "llm_failover_failures_total";
        assert_eq!(
            m.counter(
                failures,
                &[
                    ("provider", "local"),
                    ("model", "llama3"),
                    ("role", "primary"),
                    ("reason", "connection_refused")
                ]
            ),
            1
        );
        assert_eq!(m.total(failures), 1);
        let hops = [
            ("route", "chat"),
            ("from_provider", "local"),
            ("to_provider", "openai"),
            ("reason", "connection_refused"),
        ];
        // Once after the failure, once after the open breaker refused the primary.
        assert_eq!(m.counter("llm_failover_failovers_total", &hops), 2);
        let attempts = "llm_failover_attempts_total";
        assert_eq!(
            m.counter(
                attempts,
                &[
                    ("route", "chat"),
                    ("provider", "openai"),
                    ("model", "gpt-4o-mini"),
                    ("role", "fallback"),
                    ("outcome", "ok")
                ]
            ),
            2
        );
        assert_eq!(
            m.counter(
                attempts,
                &[
                    ("route", "chat"),
                    ("provider", "local"),
                    ("model", "llama3"),
                    ("role", "primary"),
                    ("outcome", "failure")
                ]
            ),
            1
        );
        assert_eq!(
            m.counter(
                attempts,
                &[
                    ("route", "chat"),
                    ("provider", "local"),
                    ("model", "llama3"),
                    ("role", "primary"),
                    ("outcome", "rejected")
                ]
            ),
            1
        );
        assert_eq!(
            m.counter(
                "llm_failover_requests_total",
                &[("route", "chat"), ("outcome", "ok")]
            ),
            2
        );
        assert_eq!(
            m.transitions("local", "*", "closed", "open", "connection_refused"),
            1
        );
        m.assert_one_hot("local", "*", "open");
        m.assert_one_hot("openai", "gpt-4o-mini", "closed");
    }

    #[test]
    fn thousands_of_distinct_error_texts_add_no_series() {
        let series = |n: usize| {
            let m = run(|_| {
                let route = route();
                // Every failure must reach the classifier and the layer: no breaker may stop them.
                for (p, model) in [
                    ("local", "*"),
                    ("local", "llama3"),
                    ("openai", "*"),
                    ("openai", "gpt-4o-mini"),
                ] {
                    route.registry().control(p, model).unwrap().disable(None);
                }
                block_on(async {
                    for i in 0..n {
                        let _ = route
                            .call(|a| async move {
                                // Random-looking text in the message and the body of every failure.
                                let body = format!(r#"{{"error":{{"message":"upstream {i:x} said {} at {}","type":"weird_{i}"}}}}"#, i * 7919, a.number());
                                let c = classify(&Signal::new().status(500 + (i % 5) as u16).body(body.as_str()).message(format!("req-{i}-{}", i * 31)));
                                Err::<(), _>(AttemptFailure::classified(&c))
                            })
                            .await;
                    }
                });
            });
            m.0.len()
        };
        let few = series(20);
        let many = series(2000);
        assert!(few > 5, "{few}");
        assert_eq!(
            few, many,
            "the number of series must not grow with distinct error texts"
        );
    }
}

#[test]
fn a_transition_that_arrives_after_a_later_one_does_not_move_the_gauge_back() {
    let emit = |from: &str, to: &str, generation: u64| {
        tracing::event!(
            name: "breaker_transition",
            target: "llm_failover::breaker",
            tracing::Level::INFO,
            provider = "p",
            model = "m",
            from = from,
            to = to,
            reason = "none",
            origin = "local",
            shadow = false,
            generation = generation,
        );
    };
    let m = run(|_| {
        // The breaker opened (generation 8) after it closed (generation 7), but the two
        // threads published in the other order.
        emit("half_open", "open", 8);
        emit("half_open", "closed", 7);
    });
    m.assert_one_hot("p", "m", "open");
    assert_eq!(
        m.total("llm_failover_breaker_transitions_total"),
        2,
        "both are counted"
    );
}

/// A target at its concurrency limit is counted as shed for the route, and the in-flight
/// gauge follows attempts up and back to zero.
#[test]
fn shedding_and_the_inflight_gauge_come_from_a_real_route() {
    use std::sync::Arc;

    use llm_failover::breaker::Registry;
    use llm_failover::chain::{AttemptFailure, Loads, Route};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut during = None;
    metrics::with_local_recorder(&recorder, || {
        let subscriber = tracing_subscriber::registry().with(MetricsLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let registry = Arc::new(
                    Registry::builder()
                        .target("local", "llama3")
                        .target("openai", "gpt-4o-mini")
                        .build()
                        .unwrap(),
                );
                let loads = Arc::new(Loads::new());
                loads.set_max_inflight("local", "llama3", Some(1));
                let route = Arc::new(
                    Route::builder("chat", registry)
                        .target("local", "llama3")
                        .target("openai", "gpt-4o-mini")
                        .loads(Arc::clone(&loads))
                        .build()
                        .unwrap(),
                );
                let (release, held) = tokio::sync::oneshot::channel::<()>();
                let held = Arc::new(tokio::sync::Mutex::new(Some(held)));
                let first = tokio::spawn({
                    let route = Arc::clone(&route);
                    async move {
                        route
                            .call(|_| {
                                let held = Arc::clone(&held);
                                async move {
                                    if let Some(rx) = held.lock().await.take() {
                                        let _ = rx.await;
                                    }
                                    Ok::<_, AttemptFailure>(())
                                }
                            })
                            .await
                    }
                });
                let local = loads.get("local", "llama3").unwrap();
                while local.inflight() == 0 {
                    tokio::task::yield_now().await;
                }
                let a = route
                    .call(|_| async { Ok::<_, AttemptFailure>(()) })
                    .await
                    .unwrap();
                assert_eq!(
                    a.trail.to_string(),
                    "local/llama3=shed; openai/gpt-4o-mini=ok"
                );
                during = Some(Metrics(snapshotter.snapshot().into_vec()));
                release.send(()).unwrap();
                first.await.unwrap().unwrap();
            });
        });
    });
    let during = during.unwrap();
    // A snapshot drains what it reads: the second one holds what moved after the first.
    let after = Metrics(snapshotter.snapshot().into_vec());
    let inflight = |m: &Metrics, p: &str, model: &str| {
        m.gauge(
            "llm_failover_inflight",
            &[("provider", p), ("model", model)],
        )
        .unwrap_or_default()
    };
    assert_eq!(inflight(&during, "local", "llama3"), 1.0);
    assert_eq!(inflight(&during, "openai", "gpt-4o-mini"), 0.0);
    assert_eq!(
        inflight(&during, "local", "llama3") + inflight(&after, "local", "llama3"),
        0.0
    );
    assert_eq!(inflight(&after, "openai", "gpt-4o-mini"), 0.0);
    assert_eq!(
        during.counter(
            "llm_failover_shed_total",
            &[
                ("route", "chat"),
                ("provider", "local"),
                ("model", "llama3"),
                ("cause", "concurrency"),
            ],
        ),
        1
    );
    // A shed target is no attempt: nothing was sent, nothing failed.
    assert_eq!(during.total("llm_failover_failures_total"), 0);
    assert_eq!(after.total("llm_failover_failures_total"), 0);
}
