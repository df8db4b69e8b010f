//! Breaker integration tests through the public API: configuration, telemetry, registry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_failover::Reason;
use llm_failover::breaker::{
    Breaker, BreakerPolicy, CallError, Outcome, Registry, State, Transition, WindowKind,
};
use llm_failover::reason::{BreakerEffect, Scope};
use llm_failover::telemetry::names;
use tracing_subscriber::layer::{Context, SubscriberExt as _};

#[test]
fn policy_reads_from_toml_with_humantime_durations_and_reason_overrides() {
    let policy: BreakerPolicy = toml::from_str(
        r#"
        consecutive_failures = 3
        failure_rate = 0.25
        min_calls = 8
        window_time = "30s"
        window_buckets = 6
        slow_call = "45s"
        max_open = "15m"
        half_open_probes = 2
        probe_lease = "90s"

        [reasons.dns]
        effect = "trip_immediately"
        open_base = "20s"

        [reasons.rate_limit]
        scope = "provider"
        "#,
    )
    .unwrap();
    assert_eq!(policy.consecutive_failures(), 3);
    assert_eq!(policy.min_calls(), 8);
    assert_eq!(policy.half_open_probes(), 2);
    assert_eq!(
        policy.window(),
        WindowKind::Time {
            span: Duration::from_secs(30),
            buckets: 6
        }
    );
    let dns = policy.reason(Reason::Dns);
    assert_eq!(dns.breaker, BreakerEffect::TripImmediately);
    assert_eq!(dns.open_base, Duration::from_secs(20));
    assert_eq!(policy.reason(Reason::RateLimit).scope, Scope::Provider);
    // Untouched reasons keep their defaults.
    assert_eq!(policy.reason(Reason::Auth), Reason::Auth.policy());

    let empty: BreakerPolicy = toml::from_str("").unwrap();
    assert_eq!(empty, BreakerPolicy::default());
}

#[test]
fn invalid_toml_values_name_their_field() {
    let cases = [
        ("failure_rate = 1.5", "failure_rate"),
        ("half_open_probes = 0", "half_open_probes"),
        ("jitter = -0.1", "jitter"),
        ("probe_lease = \"0s\"", "probe_lease"),
        ("max_open = \"soon\"", "max_open"),
        ("window_calls = 10\nwindow_time = \"10s\"", "window_calls"),
        ("window_calls = 10\nmin_calls = 11", "min_calls"),
        (
            "[reasons.format]\neffect = \"count\"",
            "reasons.format.open_base",
        ),
        ("[reasons.not_a_reason]\neffect = \"count\"", "not_a_reason"),
        ("consecutive_failure = 3", "consecutive_failure"),
    ];
    for (text, field) in cases {
        let err = toml::from_str::<BreakerPolicy>(text).unwrap_err();
        assert!(err.to_string().contains(field), "{text:?}: {err}");
    }
}

/// Event name and fields, per captured event.
type Events = Vec<(String, BTreeMap<String, String>)>;

/// Collects the fields of breaker events.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Events>>);

struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != names::BREAKER_TARGET {
            return;
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((meta.name().to_owned(), fields.0));
    }
}

#[test]
fn every_transition_is_a_tracing_event_with_the_fixed_names() {
    use names::breaker as f;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let registry = Registry::builder()
        .policy(
            BreakerPolicy::builder()
                .consecutive_failures(1)
                .build()
                .unwrap(),
        )
        .target("local", "llama3")
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let target = registry.target("local", "llama3").unwrap();
        target
            .try_acquire()
            .unwrap()
            .record(Outcome::failure(Reason::ConnectionRefused, Duration::ZERO));
        registry.control("local", "*").unwrap().reset();
        registry
            .control("local", "llama3")
            .unwrap()
            .metrics_only(None);
    });
    let events = capture.0.lock().unwrap().clone();
    assert_eq!(events.len(), 3, "{events:?}");
    for (name, _) in &events {
        assert_eq!(name, names::BREAKER_TRANSITION_EVENT);
    }
    let open = &events[0].1;
    assert_eq!(open[f::PROVIDER], "local");
    assert_eq!(open[f::MODEL], "*");
    assert_eq!(open[f::FROM], "closed");
    assert_eq!(open[f::TO], "open");
    assert_eq!(open[f::REASON], "connection_refused");
    assert_eq!(open[f::ORIGIN], "local");
    assert_eq!(open[f::SHADOW], "false");
    let open_for: u64 = open[f::OPEN_FOR_MS].parse().unwrap();
    assert!(open_for > 0 && open_for <= 10_000, "{open_for}");
    let open_until: u64 = open[f::OPEN_UNTIL].parse().unwrap();
    assert!(
        open_until > 1_700_000_000_000,
        "unix milliseconds: {open_until}"
    );

    let reset = &events[1].1;
    assert_eq!((&*reset[f::FROM], &*reset[f::TO]), ("open", "closed"));
    assert_eq!(reset[f::REASON], "none");
    assert_eq!(reset[f::ORIGIN], "control");
    assert!(!reset.contains_key(f::OPEN_UNTIL));

    let shadow = &events[2].1;
    assert_eq!(
        (&*shadow[f::MODEL], &*shadow[f::TO]),
        ("llama3", "metrics_only")
    );
}

#[test]
fn listener_sees_what_a_replica_would_publish_and_a_peer_can_adopt_it() {
    let seen: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let sink = seen.clone();
    let ours = Breaker::builder()
        .policy(
            BreakerPolicy::builder()
                .consecutive_failures(1)
                .build()
                .unwrap(),
        )
        .target("openai", "gpt-4o")
        .on_transition(Arc::new(move |t| sink.lock().unwrap().push(t.clone())))
        .build();
    ours.try_acquire()
        .unwrap()
        .record(Outcome::failure(Reason::Overloaded, Duration::ZERO));
    let published = seen.lock().unwrap()[0].clone();
    assert_eq!(published.to, State::Open);

    // Another replica adopts "open until T for reason R".
    let peer = Breaker::new(BreakerPolicy::default());
    let adopted = peer
        .control()
        .adopt_open(published.reason.unwrap(), published.open_until.unwrap())
        .unwrap();
    assert_eq!(adopted.to, State::Open);
    let rejected = peer.try_acquire().unwrap_err();
    assert_eq!(rejected.reason(), Some(Reason::Overloaded));
    assert!(rejected.retry_after().unwrap() <= Duration::from_secs(15));
}

#[tokio::test]
async fn target_call_records_by_scope_and_rejects_without_running() {
    let registry = Registry::builder()
        .policy(
            BreakerPolicy::builder()
                .consecutive_failures(1)
                .build()
                .unwrap(),
        )
        .target("anthropic", "claude-a")
        .target("anthropic", "claude-b")
        .build()
        .unwrap();
    let a = registry.target("anthropic", "claude-a").unwrap();
    let b = registry.target("anthropic", "claude-b").unwrap();
    let err = a.call(async { Err::<(), _>(Reason::RateLimit) }).await;
    assert!(matches!(err, Err(CallError::Inner(Reason::RateLimit))));
    let mut ran = false;
    let rejected = a
        .call(async {
            ran = true;
            Ok::<_, Reason>(())
        })
        .await;
    assert!(matches!(rejected, Err(CallError::Rejected(r)) if !r.is_provider_wide()));
    assert!(!ran, "a rejected call never runs");
    assert_eq!(b.call(async { Ok::<_, Reason>(5) }).await.unwrap(), 5);

    let states: BTreeMap<_, _> = registry
        .iter()
        .map(|b| (format!("{}/{}", b.provider(), b.model()), b.state()))
        .collect();
    assert_eq!(states["anthropic/claude-a"], State::Open);
    assert_eq!(states["anthropic/claude-b"], State::Closed);
    assert_eq!(states["anthropic/*"], State::Closed);
}

#[test]
fn the_closed_and_open_paths_allocate_nothing() {
    let breaker = Breaker::new(
        BreakerPolicy::builder()
            .consecutive_failures(1)
            .build()
            .unwrap(),
    );
    let ms = Duration::from_millis(1);
    // The counter counts: one vector is one allocation.
    let one = allocation_counter::measure(|| {
        std::hint::black_box(vec![0_u8; 16]);
    });
    assert_eq!(one.count_total, 1);
    // Warm up: first-use initialisation is not the hot path.
    breaker.try_acquire().unwrap().record(Outcome::success(ms));
    let closed = allocation_counter::measure(|| {
        for _ in 0..1000 {
            breaker.try_acquire().unwrap().record(Outcome::success(ms));
        }
    });
    assert_eq!(closed.count_total, 0, "closed path: {closed:?}");
    breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::failure(Reason::ServerError, ms));
    let _ = breaker.try_acquire();
    let open = allocation_counter::measure(|| {
        for _ in 0..1000 {
            assert!(breaker.try_acquire().is_err());
        }
    });
    assert_eq!(open.count_total, 0, "rejection path: {open:?}");
}
