//! The chain's spans and events, named in [`crate::telemetry::names`].
//!
//! Span and field names must be literals in `tracing`'s macros; the test below checks that
//! every literal here is the constant the metrics layer reads.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Span;
use tracing::field::Empty;

use super::{AttemptOutcome, FailoverError, FailoverErrorKind, RouteTarget, ShedCause, Trail};
use crate::Reason;
use crate::breaker::{Rejected, State, Target};
use crate::telemetry::names::chain as field;

/// The span of one request through a route. Dropped without an outcome, it records
/// `cancelled`: the caller went away.
pub(crate) struct Request {
    span: Span,
    done: AtomicBool,
}

impl Request {
    pub(super) fn new(route: &str) -> Self {
        let span = tracing::info_span!(
            target: "llm_failover::chain",
            "failover",
            route = route,
            outcome = Empty,
            attempts = Empty,
        );
        Self {
            span,
            done: AtomicBool::new(false),
        }
    }

    pub(super) fn span(&self) -> &Span {
        &self.span
    }

    fn finish(&self, outcome: &'static str, attempts: usize) {
        self.span.record(field::REQUEST_OUTCOME, outcome);
        self.span.record(field::ATTEMPTS, attempts);
        self.done.store(true, Ordering::Relaxed);
    }

    pub(super) fn succeeded(&self, attempts: usize) {
        self.finish(field::OUTCOME_OK, attempts);
    }

    pub(super) fn failed(&self, e: &FailoverError) {
        let outcome = match e.kind {
            FailoverErrorKind::Exhausted
            | FailoverErrorKind::AllOpen
            | FailoverErrorKind::Saturated => field::OUTCOME_EXHAUSTED,
            FailoverErrorKind::Returned(Reason::Cancelled) => field::OUTCOME_CANCELLED,
            FailoverErrorKind::Returned(_)
            | FailoverErrorKind::DeadlineExceeded
            | FailoverErrorKind::StreamBroken(_) => field::OUTCOME_ERROR,
        };
        self.finish(outcome, e.trail.0.len());
    }

    /// The request leaves `from` for `to` because of `reason`.
    pub(super) fn failover(&self, from: &str, to: &str, reason: Reason) {
        tracing::event!(
            name: "failover_hop",
            target: "llm_failover::chain",
            parent: &self.span,
            tracing::Level::INFO,
            from_provider = from,
            to_provider = to,
            reason = reason.as_str(),
        );
    }
}

impl Request {
    /// `t` was skipped at one of its own limits: nothing was sent.
    pub(super) fn shed(&self, t: &RouteTarget, cause: ShedCause) {
        tracing::event!(
            name: "shed",
            target: "llm_failover::chain",
            parent: &self.span,
            tracing::Level::INFO,
            provider = &*t.provider,
            model = &*t.model,
            cause = cause.as_str(),
        );
    }
}

impl Request {
    /// A committed stream of `from` broke after its first token and the chain tried to finish
    /// the answer on `to` (`None`: no target could take it over); `ok` says whether the
    /// continuation finished it; `trail` is the request's, for the log. Counted in
    /// `llm_failover_stream_resumes_total`.
    pub(super) fn resumed(&self, from: &str, to: Option<&str>, ok: bool, trail: &Trail) {
        tracing::event!(
            name: "stream_resume",
            target: "llm_failover::chain",
            parent: &self.span,
            tracing::Level::INFO,
            from_provider = from,
            to_provider = to.unwrap_or(field::NO_PROVIDER),
            outcome = if ok { field::RESUME_OK } else { field::RESUME_ERROR },
            trail = %trail,
        );
    }
}

/// A target's in-flight count moved by `delta`.
pub(super) fn inflight(provider: &str, model: &str, delta: i64) {
    tracing::event!(
        name: "inflight",
        target: "llm_failover::chain",
        parent: None,
        tracing::Level::INFO,
        provider = provider,
        model = model,
        delta = delta,
    );
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            self.span
                .record(field::REQUEST_OUTCOME, field::OUTCOME_CANCELLED);
        }
    }
}

/// The state a target's breakers showed when the attempt asked: the provider-wide breaker's
/// if it is not closed, else the model's.
fn breaker_state(target: &Target<'_>) -> &'static str {
    let provider = target.provider_breaker().state();
    if provider == State::Closed {
        target.model_breaker().state().as_str()
    } else {
        provider.as_str()
    }
}

/// What an attempt is to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A first-tier target's attempt.
    Primary,
    /// Any other target's.
    Fallback,
    /// A continuation of a broken stream (a fallback whose span says `resume`).
    Resume,
}

/// The span of one attempt, a child of the request's, with the OpenTelemetry GenAI fields.
pub(super) fn attempt_span(
    request: &Request,
    t: &RouteTarget,
    number: u32,
    role: Role,
    target: &Target<'_>,
) -> Span {
    let label = if role == Role::Primary {
        field::ROLE_PRIMARY
    } else {
        field::ROLE_FALLBACK
    };
    let span = tracing::info_span!(
        target: "llm_failover::chain",
        parent: request.span(),
        "attempt",
        "gen_ai.operation.name" = "chat",
        "gen_ai.provider.name" = &*t.provider,
        "gen_ai.request.model" = &*t.model,
        "llm_failover.attempt" = number,
        "llm_failover.role" = label,
        "llm_failover.breaker.state" = breaker_state(target),
        "llm_failover.tier" = t.tier,
        "llm_failover.pick" = t.pick.as_str(),
        "llm_failover.reason" = Empty,
        "error.type" = Empty,
        "llm_failover.outcome" = Empty,
        "llm_failover.ttft_s" = Empty,
        "llm_failover.duration_s" = Empty,
        "http.response.status_code" = Empty,
        "llm_failover.resume" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "gen_ai.usage.cache_read.input_tokens" = Empty,
        "gen_ai.usage.cache_creation.input_tokens" = Empty,
    );
    if role == Role::Resume {
        span.record(field::RESUME, true);
    }
    span
}

/// A breaker refused the attempt: nothing was sent.
pub(super) fn rejected(span: &Span, rejected: &Rejected) {
    span.record(field::ATTEMPT_OUTCOME, field::ATTEMPT_REJECTED);
    span.record(field::BREAKER_STATE, rejected.state().as_str());
    if let Some(r) = rejected.reason() {
        span.record(field::REASON, r.as_str());
    }
}

/// The attempt settled.
pub(super) fn settled(
    span: &Span,
    outcome: AttemptOutcome,
    status: Option<u16>,
    took: std::time::Duration,
) {
    match outcome {
        AttemptOutcome::Ok => span.record(field::ATTEMPT_OUTCOME, field::ATTEMPT_OK),
        AttemptOutcome::Failed(r) => {
            span.record(field::REASON, r.as_str());
            span.record(field::ERROR_TYPE, r.as_str());
            span.record(field::ATTEMPT_OUTCOME, field::ATTEMPT_FAILURE)
        }
        // An ineligible target was sent nothing, like one whose breaker refused.
        AttemptOutcome::Rejected(_) | AttemptOutcome::Ineligible => {
            span.record(field::ATTEMPT_OUTCOME, field::ATTEMPT_REJECTED)
        }
        // A cancelled attempt has no outcome: it neither answered nor failed; a shed one
        // was never sent (it has no span).
        AttemptOutcome::Cancelled | AttemptOutcome::Shed(_) => span,
    };
    if let Some(s) = status {
        span.record(field::STATUS, s);
    }
    span.record(field::DURATION, took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::span::{Attributes, Id};
    use tracing_subscriber::layer::{Context, SubscriberExt as _};
    use tracing_subscriber::{Layer, Registry};

    use super::*;
    use crate::telemetry::names;

    /// Target, name and field names of a span or event.
    type Callsite = (String, String, Vec<String>);

    /// Records the names and fields of every span and event it sees.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Callsite>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            let m = attrs.metadata();
            let fields = m.fields().iter().map(|f| f.name().to_owned()).collect();
            self.0
                .lock()
                .unwrap()
                .push((m.target().into(), m.name().into(), fields));
        }
        fn on_event(&self, e: &tracing::Event<'_>, _: Context<'_, S>) {
            let m = e.metadata();
            let fields = m.fields().iter().map(|f| f.name().to_owned()).collect();
            self.0
                .lock()
                .unwrap()
                .push((m.target().into(), m.name().into(), fields));
        }
    }

    /// While at most one dispatcher exists, tracing-core computes a new callsite's interest
    /// from the registering thread's alone: another test's thread without one would cache
    /// "never" for a callsite here. A second dispatcher kept alive makes it ask all of them
    /// (see tests/support.rs).
    fn keep_interest() {
        static KEEPER: std::sync::LazyLock<tracing::Dispatch> = std::sync::LazyLock::new(|| {
            tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default())
        });
        std::sync::LazyLock::force(&KEEPER);
    }

    #[test]
    fn the_literals_are_the_names_the_layer_reads() {
        keep_interest();
        let seen = Seen::default();
        let subscriber = Registry::default().with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            // Other tests may have hit these callsites with no subscriber at the same time.
            tracing::callsite::rebuild_interest_cache();
            let registry = crate::breaker::Registry::builder()
                .target("p", "m")
                .build()
                .unwrap();
            let request = Request::new("r");
            let handles = registry.handles("p", "m").unwrap();
            let t = RouteTarget::new("p", "m", &super::super::Loads::new(), handles);
            let target = registry.target("p", "m").unwrap();
            let _span = attempt_span(&request, &t, 1, Role::Resume, &target);
            request.failover("p", "q", Reason::Timeout);
            request.shed(&t, ShedCause::Concurrency);
            request.resumed("p", Some("q"), true, &Trail::default());
            inflight("p", "m", 1);
        });
        let seen = seen.0.lock().unwrap();
        let find = |name: &str| seen.iter().find(|(_, n, _)| n == name).cloned().unwrap();
        let (target, _, fields) = find(names::REQUEST_SPAN);
        assert_eq!(target, names::CHAIN_TARGET);
        assert_eq!(
            fields,
            [field::ROUTE, field::REQUEST_OUTCOME, field::ATTEMPTS]
        );
        let (target, _, fields) = find(names::ATTEMPT_SPAN);
        assert_eq!(target, names::CHAIN_TARGET);
        assert_eq!(
            fields,
            [
                field::OPERATION,
                field::PROVIDER,
                field::MODEL,
                field::ATTEMPT,
                field::ROLE,
                field::BREAKER_STATE,
                field::TIER,
                field::PICK,
                field::REASON,
                field::ERROR_TYPE,
                field::ATTEMPT_OUTCOME,
                field::TTFT,
                field::DURATION,
                field::STATUS,
                field::RESUME,
                field::INPUT_TOKENS,
                field::OUTPUT_TOKENS,
                field::CACHE_READ_TOKENS,
                field::CACHE_WRITE_TOKENS,
            ]
        );
        let (target, _, fields) = find(names::FAILOVER_EVENT);
        assert_eq!(target, names::CHAIN_TARGET);
        assert_eq!(
            fields,
            [
                field::FROM_PROVIDER,
                field::TO_PROVIDER,
                field::FAILOVER_REASON
            ]
        );
        let (target, _, fields) = find(names::SHED_EVENT);
        assert_eq!(target, names::CHAIN_TARGET);
        assert_eq!(
            fields,
            [field::PROVIDER_LABEL, field::MODEL_LABEL, field::CAUSE]
        );
        let (target, _, fields) = find(names::RESUME_EVENT);
        assert_eq!(target, names::CHAIN_TARGET);
        assert_eq!(
            fields,
            [
                field::FROM_PROVIDER,
                field::TO_PROVIDER,
                field::RESUME_OUTCOME,
                field::RESUME_TRAIL,
            ]
        );
        let (target, _, fields) = find(names::INFLIGHT_EVENT);
        assert_eq!(target, names::CHAIN_TARGET);
        assert_eq!(
            fields,
            [field::PROVIDER_LABEL, field::MODEL_LABEL, field::DELTA]
        );
    }

    /// `Request::resumed` under the real layer, rendered as Prometheus text: one series per
    /// route, providers and outcome, `none` when no target took the stream over.
    #[test]
    fn resumes_are_counted_by_route_providers_and_outcome() {
        keep_interest();
        let recorder = crate::telemetry::prometheus_builder().build_recorder();
        let scrape = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            crate::telemetry::describe_metrics();
            let subscriber = Registry::default().with(crate::telemetry::MetricsLayer::new());
            tracing::subscriber::with_default(subscriber, || {
                // A thread without a subscriber that hits the request span's callsite first
                // computes "never" and may publish it just after a rebuild here: rebuild
                // until a request span is live, or the events below would have no route.
                for _ in 0..1000 {
                    tracing::callsite::rebuild_interest_cache();
                    if !Request::new("probe").span().is_disabled() {
                        break;
                    }
                    std::thread::yield_now();
                }
                for _ in 0..2 {
                    let request = Request::new("chat");
                    request.resumed("local", Some("cloud"), true, &Trail::default());
                    request.succeeded(2);
                }
                let request = Request::new("chat");
                request.resumed("local", Some("cloud"), false, &Trail::default());
                let request = Request::new("batch");
                request.resumed("cloud", None, false, &Trail::default());
            });
        });
        let text = scrape.render();
        for line in [
            "# TYPE llm_failover_stream_resumes_total counter",
            "# HELP llm_failover_stream_resumes_total Streams that broke after their first token",
            r#"llm_failover_stream_resumes_total{route="chat",from_provider="local",to_provider="cloud",outcome="ok"} 2"#,
            r#"llm_failover_stream_resumes_total{route="chat",from_provider="local",to_provider="cloud",outcome="error"} 1"#,
            r#"llm_failover_stream_resumes_total{route="batch",from_provider="cloud",to_provider="none",outcome="error"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("llm_failover_stream_resumes_total{"))
            .count();
        assert_eq!(series, 3, "{text}");
    }
}
