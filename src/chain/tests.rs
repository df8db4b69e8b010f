//! The chain's rules, with scripted attempts: tokio's paused clock for deadlines and waits, the
//! breaker's mock clock for open times. No sockets here; `tests/chain.rs` runs the same rules
//! against the simulated provider over loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;

use super::*;
use crate::breaker::clock::MockClock;
use crate::breaker::{BreakerPolicy, State};

/// What a scripted target does on its n-th call.
#[derive(Clone)]
enum Step {
    Ok,
    Fail(Reason, Option<Duration>),
    Hang,
    /// Answers after a while.
    SlowOk(Duration),
    /// Fails after a while.
    SlowFail(Duration, Reason),
}

#[derive(Default)]
struct Script {
    steps: Mutex<HashMap<String, Vec<Step>>>,
    calls: Mutex<HashMap<String, u32>>,
}

impl Script {
    fn on(self: &Arc<Self>, target: &str, steps: &[Step]) -> Arc<Self> {
        self.steps
            .lock()
            .unwrap()
            .insert(target.into(), steps.to_vec());
        Arc::clone(self)
    }

    fn calls(&self, target: &str) -> u32 {
        self.calls.lock().unwrap().get(target).copied().unwrap_or(0)
    }

    /// The next step for `target` (the last one repeats; default Ok).
    fn next(&self, target: &str) -> Step {
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(target.into()).or_default();
        *n += 1;
        let steps = self.steps.lock().unwrap();
        let list = steps.get(target).cloned().unwrap_or_default();
        list.get(*n as usize - 1)
            .or(list.last())
            .cloned()
            .unwrap_or(Step::Ok)
    }

    async fn call(self: Arc<Self>, ctx: AttemptContext) -> Result<String, AttemptFailure> {
        let name = format!("{}/{}", ctx.provider(), ctx.model());
        match self.next(&name) {
            Step::Ok => Ok(name),
            Step::Fail(reason, wait) => {
                let f = AttemptFailure::new(reason);
                Err(match wait {
                    Some(w) => f.with_retry_after(w),
                    None => f,
                })
            }
            Step::Hang => std::future::pending().await,
            Step::SlowOk(d) => {
                tokio::time::sleep(d).await;
                Ok(name)
            }
            Step::SlowFail(d, reason) => {
                tokio::time::sleep(d).await;
                Err(AttemptFailure::new(reason))
            }
        }
    }
}

struct Rig {
    clock: MockClock,
    registry: Arc<Registry>,
}

fn rig(threshold: u32) -> Rig {
    let clock = MockClock::new();
    let registry = Registry::builder()
        .policy(
            BreakerPolicy::builder()
                .consecutive_failures(threshold)
                .jitter(0.0)
                .build()
                .unwrap(),
        )
        .target("local", "llama3")
        .target("openai", "gpt-4o-mini")
        .target("big", "long-context")
        .build_with_clock(&clock.clock())
        .unwrap();
    Rig {
        clock,
        registry: Arc::new(registry),
    }
}

impl Rig {
    fn route(&self, policy: RoutePolicy) -> Route {
        Route::builder("chat", Arc::clone(&self.registry))
            .target("local", "llama3")
            .target("openai", "gpt-4o-mini")
            .policy(policy)
            .build()
            .unwrap()
    }

    fn state(&self, provider: &str, model: &str) -> State {
        self.registry.breaker(provider, model).unwrap().state()
    }

    /// The breaker's consecutive counted failures.
    fn failures(&self, provider: &str, model: &str) -> u32 {
        self.registry
            .breaker(provider, model)
            .unwrap()
            .snapshot()
            .consecutive_failures
    }
}

fn policy() -> RoutePolicyBuilder {
    RoutePolicy::builder()
        .attempt_timeout(Duration::from_secs(10))
        .ttft_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(3))
        .total_deadline(Duration::from_secs(30))
}

async fn go(route: &Route, script: &Arc<Script>) -> Result<Answer<String>, FailoverError> {
    route.call(|ctx| Arc::clone(script).call(ctx)).await
}

const LOCAL: &str = "local/llama3";
const OPENAI: &str = "openai/gpt-4o-mini";

#[tokio::test(start_paused = true)]
async fn a_refused_primary_is_skipped_while_open_and_used_again_after_recovery() {
    let r = rig(1);
    let route = r.route(policy().build().unwrap());
    let script =
        Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ConnectionRefused, None)]);

    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, OPENAI);
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=connection_refused; openai/gpt-4o-mini=ok"
    );
    assert_eq!(r.state("local", "*"), State::Open);

    // While open, the primary is not called at all.
    let a = go(&route, &script).await.unwrap();
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=breaker_open; openai/gpt-4o-mini=ok"
    );
    assert_eq!(script.calls(LOCAL), 1);
    assert_eq!(a.trail.sent(), 1);

    // After the open time, one probe goes to the primary; it answers, the breaker closes.
    let wait = r
        .registry
        .target("local", "llama3")
        .unwrap()
        .try_acquire()
        .unwrap_err()
        .retry_after()
        .unwrap();
    r.clock.advance(wait);
    script.on(LOCAL, &[Step::Ok]);
    script.calls.lock().unwrap().clear();
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, LOCAL);
    assert_eq!(r.state("local", "*"), State::Closed);
    assert_eq!(script.calls(OPENAI), 0);
}

#[tokio::test(start_paused = true)]
async fn a_content_filter_is_returned_not_laundered() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ContentFilter, None)]);
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContentFilter)
    );
    assert_eq!(script.calls(OPENAI), 0);
    assert_eq!(r.state("local", "llama3"), State::Closed);
    assert_eq!(r.failures("local", "llama3"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_short_rate_limit_is_retried_on_the_same_target_no_sooner_than_asked() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    let script = Arc::new(Script::default()).on(
        LOCAL,
        &[
            Step::Fail(Reason::RateLimit, Some(Duration::from_secs(2))),
            Step::Ok,
        ],
    );
    let start = Instant::now();
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, LOCAL);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(script.calls(LOCAL), 2);
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=rate_limit; local/llama3=ok"
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_rate_limit_fails_over_at_once() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    let script = Arc::new(Script::default()).on(
        LOCAL,
        &[Step::Fail(Reason::RateLimit, Some(Duration::from_secs(60)))],
    );
    let start = Instant::now();
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, OPENAI);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(script.calls(LOCAL), 1);
    // The error, had the fallback failed too, says when the soonest target may answer.
    let script = Arc::new(Script::default())
        .on(
            LOCAL,
            &[Step::Fail(Reason::RateLimit, Some(Duration::from_secs(60)))],
        )
        .on(
            OPENAI,
            &[Step::Fail(Reason::RateLimit, Some(Duration::from_secs(30)))],
        );
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(err.kind(), FailoverErrorKind::Exhausted);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    // A target that failed without a wait and whose breaker is closed could answer now.
    script.on(OPENAI, &[Step::Fail(Reason::Overloaded, None)]);
    assert_eq!(go(&route, &script).await.unwrap_err().retry_after(), None);
}

#[tokio::test(start_paused = true)]
async fn when_every_target_failed_the_error_says_when_a_breaker_admits_again() {
    let r = rig(1);
    let route = r.route(policy().build().unwrap());
    let script = Arc::new(Script::default())
        .on(LOCAL, &[Step::Fail(Reason::ConnectionRefused, None)])
        .on(OPENAI, &[Step::Fail(Reason::Overloaded, None)]);
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(err.kind(), FailoverErrorKind::Exhausted);
    let local = r
        .registry
        .breaker("local", "*")
        .unwrap()
        .closed_in()
        .unwrap();
    let openai = r
        .registry
        .breaker("openai", "gpt-4o-mini")
        .unwrap()
        .closed_in()
        .unwrap();
    assert_eq!(err.retry_after(), Some(local.min(openai)));
    assert!(err.retry_after().unwrap() > Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_reset_is_retried_a_bounded_number_of_times_then_fails_over() {
    let r = rig(5);
    let route = r.route(policy().max_retries(2).build().unwrap());
    let script =
        Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ConnectionReset, None)]);
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, OPENAI);
    assert_eq!(script.calls(LOCAL), 3);
}

#[tokio::test(start_paused = true)]
async fn a_silent_provider_costs_one_attempt_timeout() {
    let r = rig(5);
    let route = r.route(policy().max_retries(3).build().unwrap());
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::Hang]);
    let start = Instant::now();
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, OPENAI);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(script.calls(LOCAL), 1);
    assert_eq!(
        a.trail.attempts()[0].outcome,
        AttemptOutcome::Failed(Reason::Timeout)
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_bounds_every_attempt() {
    let r = rig(5);
    let route = r.route(
        policy()
            .attempt_timeout(Duration::from_secs(10))
            .total_deadline(Duration::from_secs(15))
            .build()
            .unwrap(),
    );
    let script = Arc::new(Script::default())
        .on(LOCAL, &[Step::Hang])
        .on(OPENAI, &[Step::Hang]);
    let start = Instant::now();
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(err.kind(), FailoverErrorKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    // The attempt our own deadline cut short does not count against the fallback.
    assert_eq!(r.failures("openai", "gpt-4o-mini"), 0);
    assert_eq!(r.failures("local", "llama3"), 1);
}

#[tokio::test(start_paused = true)]
async fn every_target_open_fails_fast_with_the_soonest_wait_or_tries_a_last_resort() {
    let r = rig(1);
    let script = Arc::new(Script::default())
        .on(LOCAL, &[Step::Fail(Reason::ConnectionRefused, None)])
        .on(OPENAI, &[Step::Fail(Reason::Overloaded, None)]);
    let route = r.route(policy().build().unwrap());
    assert!(go(&route, &script).await.is_err());
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(err.kind(), FailoverErrorKind::AllOpen);
    assert_eq!(err.trail().sent(), 0);
    let soonest = err.retry_after().unwrap();
    assert!(soonest > Duration::ZERO);
    assert_eq!(
        script.calls(LOCAL) + script.calls(OPENAI),
        2,
        "nothing sent while open"
    );
    assert!(err.to_string().contains("out of service"), "{err}");

    let last_resort = r.route(policy().last_resort(true).build().unwrap());
    script.on(LOCAL, &[Step::Ok]).on(OPENAI, &[Step::Ok]);
    let a = go(&last_resort, &script).await.unwrap();
    assert!(a.value == LOCAL || a.value == OPENAI);
    // The breakers did not hear of the last-resort attempt.
    assert_eq!(r.state("local", "*"), State::Open);
}

#[tokio::test(start_paused = true)]
async fn context_overflow_goes_to_a_larger_target_or_is_returned() {
    let r = rig(5);
    let script =
        Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ContextOverflow, None)]);
    let with_big = Route::builder("chat", Arc::clone(&r.registry))
        .target("local", "llama3")
        .target("openai", "gpt-4o-mini")
        .larger_context_target("big", "long-context")
        .policy(policy().build().unwrap())
        .build()
        .unwrap();
    let a = go(&with_big, &script).await.unwrap();
    assert_eq!(a.value, "big/long-context");
    assert_eq!(script.calls(OPENAI), 0, "the same-size fallback is skipped");
    let without = r.route(policy().build().unwrap());
    let err = go(&without, &script).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContextOverflow)
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_request_never_counts_against_a_breaker() {
    let r = rig(1);
    let route = r.route(policy().build().unwrap());
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::Hang]);
    let call = go(&route, &script);
    // Give up after one second: the in-flight attempt is dropped with its permit.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .is_err()
    );
    assert_eq!(script.calls(LOCAL), 1);
    assert_eq!(r.state("local", "llama3"), State::Closed);
    assert_eq!(r.failures("local", "llama3"), 0);
}

#[test]
fn routes_are_checked_against_the_registry() {
    let r = rig(1);
    let err = Route::builder("chat", Arc::clone(&r.registry))
        .build()
        .unwrap_err();
    assert!(matches!(err, RouteError::Empty { .. }));
    let err = Route::builder("chat", Arc::clone(&r.registry))
        .target("nope", "x")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("nope/x"), "{err}");
}

// ── Streams. ──────────────────────────────────────────────────────────────────────────

/// A token: 0 an ordinary one, 1 completes the answer (a finish reason), 2 the end marker.
#[derive(Debug, Clone, PartialEq)]
struct Tok(&'static str, u8);

impl Chunk for Tok {
    fn is_final(&self) -> bool {
        self.1 == 2
    }

    fn is_complete(&self) -> bool {
        self.1 >= 1
    }
}

type Items = futures_util::stream::BoxStream<'static, Result<Tok, AttemptFailure>>;

/// A stream of `tokens`, then `tail`: the final chunk, a failure, an end, or a hang.
fn upstream(
    tokens: &[&'static str],
    tail: Option<Result<Tok, AttemptFailure>>,
    hang: bool,
) -> Items {
    let items: Vec<_> = tokens.iter().map(|t| Ok(Tok(t, 0))).chain(tail).collect();
    let s = futures_util::stream::iter(items);
    if hang {
        s.chain(futures_util::stream::pending()).boxed()
    } else {
        s.boxed()
    }
}

async fn collect(s: FailoverStream<Tok, Items>) -> (Vec<&'static str>, Option<FailoverError>) {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(item) = s.next().await {
        match item {
            Ok(t) => out.push(t.0),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[tokio::test(start_paused = true)]
async fn a_stream_fails_over_before_its_first_token_and_finishes_on_its_final_chunk() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    let a = route
        .stream(|ctx| async move {
            if ctx.is_primary() {
                // Headers arrived, then the stream broke before any token: invisible.
                Ok(upstream(
                    &[],
                    Some(Err(AttemptFailure::new(Reason::ConnectionReset))),
                    false,
                ))
            } else {
                // A final chunk, then an upstream that never sends [DONE] nor closes.
                Ok(upstream(&["Hello", " world"], Some(Ok(Tok("", 2))), true))
            }
        })
        .await
        .unwrap();
    assert_eq!(&*a.provider, "openai");
    let start = Instant::now();
    let (tokens, err) = collect(a.value).await;
    assert_eq!(tokens, ["Hello", " world", ""]);
    assert!(err.is_none());
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no wait for a [DONE] that never comes"
    );
    assert_eq!(r.failures("openai", "gpt-4o-mini"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_breaks_after_its_first_token_is_an_error_never_a_short_answer() {
    type Tail = Option<Result<Tok, AttemptFailure>>;
    let cases: [(Tail, bool, Reason); 3] = [
        (
            Some(Err(AttemptFailure::new(Reason::ConnectionReset))),
            false,
            Reason::StreamInterrupted,
        ),
        (None, false, Reason::StreamInterrupted),
        (None, true, Reason::Timeout),
    ];
    for (tail, hang, want) in cases {
        let r = rig(1);
        let route = r.route(policy().build().unwrap());
        let tail = Arc::new(Mutex::new(Some(tail)));
        let a = route
            .stream(|_| {
                let tail = tail.lock().unwrap().take().flatten();
                async move { Ok(upstream(&["Hel", "lo"], tail, hang)) }
            })
            .await
            .unwrap();
        let (tokens, err) = collect(a.value).await;
        assert_eq!(tokens, ["Hel", "lo"]);
        let err = err.expect("a broken stream ends with an error");
        assert_eq!(err.kind(), FailoverErrorKind::StreamBroken(want));
        assert_eq!(
            err.trail().to_string(),
            format!("local/llama3={}", want.as_str())
        );
        // The failure counted: the breaker (threshold 1) opened.
        assert_eq!(r.state("local", "llama3"), State::Open, "{want}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_fails_over_after_the_ttft_timeout() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    let start = Instant::now();
    let a = route
        .stream(|ctx| async move {
            if ctx.is_primary() {
                Ok(upstream(&[], None, true))
            } else {
                Ok(upstream(&["ok"], Some(Ok(Tok("", 2))), false))
            }
        })
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=timeout; openai/gpt-4o-mini=ok"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_a_committed_stream_counts_as_neither() {
    let r = rig(1);
    let route = r.route(policy().build().unwrap());
    let a = route
        .stream(|_| async { Ok(upstream(&["a", "b"], None, true)) })
        .await
        .unwrap();
    let mut s = a.value;
    assert!(s.next().await.is_some());
    drop(s);
    assert_eq!(r.state("local", "llama3"), State::Closed);
    assert_eq!(r.failures("local", "llama3"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_complete_stream_without_its_end_marker_finishes_promptly_and_counts_as_success() {
    for hang in [true, false] {
        let r = rig(1);
        let route = r.route(policy().build().unwrap());
        let a = route
            .stream(|_| async move { Ok(upstream(&["Hi"], Some(Ok(Tok("", 1))), hang)) })
            .await
            .unwrap();
        let start = Instant::now();
        let (tokens, err) = collect(a.value).await;
        assert_eq!(tokens, ["Hi", ""]);
        assert!(err.is_none(), "{err:?}");
        assert!(
            start.elapsed() <= Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(r.state("local", "llama3"), State::Closed);
        assert_eq!(r.failures("local", "llama3"), 0);
    }
}

fn hedged() -> RoutePolicy {
    policy()
        .hedge_after(Some(Duration::from_secs(1)))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hedge_starts_the_next_target_after_the_delay_and_the_first_answer_wins() {
    let r = rig(1);
    let route = r.route(hedged());
    let script = Arc::new(Script::default())
        .on(LOCAL, &[Step::SlowOk(Duration::from_secs(3))])
        .on(OPENAI, &[Step::SlowOk(Duration::from_secs(1))]);
    let start = Instant::now();
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, OPENAI);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=cancelled; openai/gpt-4o-mini=ok"
    );
    // The loser was cancelled, not counted: its breaker (threshold 1) stays closed.
    assert_eq!(r.state("local", "llama3"), State::Closed);
    assert_eq!(r.failures("local", "llama3"), 0);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_target_answers_before_the_delay() {
    let r = rig(1);
    let route = r.route(hedged());
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::SlowOk(Duration::from_millis(900))]);
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, LOCAL);
    assert_eq!(script.calls(OPENAI), 0);
}

#[tokio::test(start_paused = true)]
async fn in_a_hedge_a_failure_waits_for_the_other_attempt() {
    let r = rig(5);
    let route = r.route(hedged());
    let script = Arc::new(Script::default())
        .on(
            LOCAL,
            &[Step::SlowFail(Duration::from_secs(2), Reason::ServerError)],
        )
        .on(OPENAI, &[Step::SlowOk(Duration::from_secs(3))]);
    let start = Instant::now();
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, OPENAI);
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=server_error; openai/gpt-4o-mini=ok"
    );
    // Both failing exhausts the route without retrying either.
    let script = Arc::new(Script::default())
        .on(
            LOCAL,
            &[Step::SlowFail(Duration::from_secs(2), Reason::ServerError)],
        )
        .on(
            OPENAI,
            &[Step::SlowFail(Duration::from_secs(2), Reason::Overloaded)],
        );
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(err.kind(), FailoverErrorKind::Exhausted);
    assert_eq!((script.calls(LOCAL), script.calls(OPENAI)), (1, 1));
    // A failure no other target may see stops the race and cancels the other.
    let script = Arc::new(Script::default())
        .on(
            LOCAL,
            &[Step::SlowFail(
                Duration::from_secs(2),
                Reason::ContentFilter,
            )],
        )
        .on(OPENAI, &[Step::SlowOk(Duration::from_secs(5))]);
    let start = Instant::now();
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContentFilter)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn streams_hedge_on_the_first_token() {
    let r = rig(5);
    let route = r.route(hedged());
    let a = route
        .stream(|ctx| async move {
            if ctx.is_primary() {
                Ok(upstream(&[], None, true))
            } else {
                Ok(upstream(&["fast"], Some(Ok(Tok("", 2))), false))
            }
        })
        .await
        .unwrap();
    assert_eq!(&*a.provider, "openai");
    let (tokens, err) = collect(a.value).await;
    assert_eq!(tokens, ["fast", ""]);
    assert!(err.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_providers_timeout_near_the_deadline_is_not_mistaken_for_ours() {
    let r = rig(5);
    let route = Route::builder("chat", Arc::clone(&r.registry))
        .target("local", "llama3")
        .target("openai", "gpt-4o-mini")
        .target("big", "long-context")
        .policy(
            policy()
                .attempt_timeout(Duration::from_secs(10))
                .total_deadline(Duration::from_secs(15))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    // The second target's own timeout (a 504, say) comes within the window our deadline cut.
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::Hang]).on(
        OPENAI,
        &[Step::SlowFail(Duration::from_secs(1), Reason::Timeout)],
    );
    let a = go(&route, &script).await.unwrap();
    assert_eq!(a.value, "big/long-context");
    assert_eq!(r.failures("openai", "gpt-4o-mini"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_last_resort_failure_is_reported_as_sent_not_as_all_open() {
    let r = rig(1);
    let script = Arc::new(Script::default())
        .on(LOCAL, &[Step::Fail(Reason::ConnectionRefused, None)])
        .on(OPENAI, &[Step::Fail(Reason::Overloaded, None)]);
    let route = r.route(policy().last_resort(true).build().unwrap());
    assert!(go(&route, &script).await.is_err());
    script
        .on(LOCAL, &[Step::Fail(Reason::ContentFilter, None)])
        .on(OPENAI, &[Step::Fail(Reason::ContentFilter, None)]);
    let err = go(&route, &script).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContentFilter)
    );
    assert_eq!(err.trail().sent(), 1);
}

// ── Tiers, picks and limits. ───────────────────────────────────────────────────────────

const BIG: &str = "big/long-context";

/// Every attempt's target and whether it was told it is primary.
#[derive(Default)]
struct Roles(Mutex<Vec<(String, bool)>>);

impl Roles {
    fn take(&self) -> Vec<(String, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn go_roles(
    route: &Route,
    script: &Arc<Script>,
    roles: &Arc<Roles>,
) -> Result<Answer<String>, FailoverError> {
    route
        .call(|ctx| {
            roles.0.lock().unwrap().push((
                format!("{}/{}", ctx.provider(), ctx.model()),
                ctx.is_primary(),
            ));
            Arc::clone(script).call(ctx)
        })
        .await
}

#[tokio::test(start_paused = true)]
async fn a_tier_fails_over_within_itself_before_the_next_tier_and_all_of_it_is_primary() {
    let r = rig(5);
    let route = Route::builder("chat", Arc::clone(&r.registry))
        .tier(
            Tier::ordered()
                .target("local", "llama3")
                .target("openai", "gpt-4o-mini"),
        )
        .target("big", "long-context")
        .policy(policy().build().unwrap())
        .build()
        .unwrap();
    assert_eq!(
        route.tiers(),
        [
            (
                Pick::Ordered,
                vec![("local", "llama3"), ("openai", "gpt-4o-mini")]
            ),
            (Pick::Ordered, vec![("big", "long-context")]),
        ]
    );
    let roles = Arc::new(Roles::default());
    let script =
        Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ConnectionRefused, None)]);
    let a = go_roles(&route, &script, &roles).await.unwrap();
    assert_eq!(a.value, OPENAI);
    assert_eq!(
        roles.take(),
        [(LOCAL.to_owned(), true), (OPENAI.to_owned(), true)]
    );

    let script = Arc::new(Script::default())
        .on(LOCAL, &[Step::Fail(Reason::ConnectionRefused, None)])
        .on(OPENAI, &[Step::Fail(Reason::Auth, None)]);
    let a = go_roles(&route, &script, &roles).await.unwrap();
    assert_eq!(a.value, BIG);
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=connection_refused; openai/gpt-4o-mini=auth; big/long-context=ok"
    );
    assert_eq!(roles.take().last(), Some(&(BIG.to_owned(), false)));
}

#[tokio::test(start_paused = true)]
async fn picks_share_a_tier_and_skip_open_breakers() {
    let r = rig(1);
    let build = |tier: Tier| {
        Route::builder("chat", Arc::clone(&r.registry))
            .tier(tier)
            .policy(policy().build().unwrap())
            .build()
            .unwrap()
    };
    let weighted = build(
        Tier::weighted()
            .weighted_target("local", "llama3", 3)
            .weighted_target("openai", "gpt-4o-mini", 1),
    );
    let least = build(
        Tier::least_loaded()
            .target("local", "llama3")
            .target("openai", "gpt-4o-mini"),
    );
    let script = Arc::new(Script::default());
    let mut local = 0;
    for _ in 0..400 {
        if go(&weighted, &script).await.unwrap().value == LOCAL {
            local += 1;
        }
    }
    assert!(
        (240..360).contains(&local),
        "{local} of 400 on the weight-3 target"
    );
    // Idle and equally fast: least_loaded spreads.
    let mut local = 0;
    for _ in 0..200 {
        if go(&least, &script).await.unwrap().value == LOCAL {
            local += 1;
        }
    }
    assert!((40..160).contains(&local), "{local} of 200");
    // An open breaker is not picked while the other target serves: no rejection in the trail.
    r.registry.control("local", "*").unwrap().force_open(None);
    for route in [&weighted, &least] {
        for _ in 0..20 {
            let a = go(route, &script).await.unwrap();
            assert_eq!(a.trail.to_string(), "openai/gpt-4o-mini=ok");
        }
    }
    let err = Route::builder("chat", Arc::clone(&r.registry))
        .tier(Tier::weighted().weighted_target("local", "llama3", 0))
        .build()
        .unwrap_err();
    assert!(matches!(err, RouteError::ZeroWeight { .. }), "{err}");
    let err = Route::builder("chat", Arc::clone(&r.registry))
        .tier(Tier::least_loaded())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, RouteError::EmptyTier { tier: 0, .. }),
        "{err}"
    );
}

/// Yields until `cond` holds (the paused clock never moves while tasks are runnable).
async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_saturated_target_is_shed_not_failed_and_a_route_out_of_capacity_says_when() {
    let r = rig(1);
    let loads = Arc::new(Loads::new());
    loads.set_max_inflight("local", "llama3", Some(1));
    let build = |second: bool| {
        let mut b = Route::builder("chat", Arc::clone(&r.registry))
            .target("local", "llama3")
            .loads(Arc::clone(&loads))
            .policy(policy().build().unwrap());
        if second {
            b = b.target("openai", "gpt-4o-mini");
        }
        b.build().unwrap()
    };
    let (both, alone) = (Arc::new(build(true)), build(false));
    let load = loads.get("local", "llama3").unwrap();
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::Hang]);
    let hanging = tokio::spawn({
        let (route, script) = (Arc::clone(&both), Arc::clone(&script));
        async move { go(&route, &script).await }
    });
    until(|| load.inflight() == 1).await;

    let a = go(&both, &script).await.unwrap();
    assert_eq!(
        a.trail.to_string(),
        "local/llama3=shed; openai/gpt-4o-mini=ok"
    );
    assert_eq!(
        a.trail.attempts()[0].outcome,
        AttemptOutcome::Shed(ShedCause::Concurrency)
    );
    assert_eq!(r.failures("local", "llama3"), 0);
    assert_eq!(r.state("local", "llama3"), State::Closed);

    let err = go(&alone, &script).await.unwrap_err();
    assert_eq!(err.kind(), FailoverErrorKind::Saturated);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(err.trail().sent(), 0);

    hanging.abort();
    let _ = hanging.await;
    assert_eq!(load.inflight(), 0);
    assert_eq!(loads.get("openai", "gpt-4o-mini").unwrap().inflight(), 0);
    assert_eq!(r.failures("local", "llama3"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_committed_stream_holds_its_place_until_it_ends() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    let load = route.loads().get("local", "llama3").unwrap();
    // A target without a limit or a least_loaded tier is not counted until asked.
    assert_eq!(load.inflight(), 0);
    load.count();
    let a = route
        .stream(|_| async { Ok(upstream(&["a", "b"], Some(Ok(Tok("", 2))), false)) })
        .await
        .unwrap();
    assert_eq!(load.inflight(), 1);
    let (tokens, err) = collect(a.value).await;
    assert_eq!((tokens, err.is_none()), (vec!["a", "b", ""], true));
    assert_eq!(load.inflight(), 0);

    let a = route
        .stream(|_| async { Ok(upstream(&["a"], None, true)) })
        .await
        .unwrap();
    assert_eq!(load.inflight(), 1);
    drop(a);
    assert_eq!(load.inflight(), 0);
}

mod property {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Plan {
        Ok,
        Fail(Reason),
        Slow(u64),
        Hang,
    }

    fn plan() -> impl Strategy<Value = Plan> {
        prop_oneof![
            Just(Plan::Ok),
            prop::sample::select(vec![
                Reason::ConnectionRefused,
                Reason::ServerError,
                Reason::RateLimit,
                Reason::ConnectionReset,
                Reason::Format,
            ])
            .prop_map(Plan::Fail),
            (1_u64..2000).prop_map(Plan::Slow),
            Just(Plan::Hang),
        ]
    }

    fn step(p: &Plan) -> Step {
        match p {
            Plan::Ok => Step::Ok,
            Plan::Fail(r) => Step::Fail(*r, None),
            Plan::Slow(ms) => Step::SlowOk(Duration::from_millis(*ms)),
            Plan::Hang => Step::Hang,
        }
    }

    const TARGETS: [(&str, &str); 3] = [
        ("local", "llama3"),
        ("openai", "gpt-4o-mini"),
        ("big", "long-context"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the limits, picks and failures, every request ends (an answer, a
        /// classified error, or out of capacity) and every in-flight count returns to zero.
        #[test]
        fn every_request_ends_and_inflight_returns_to_zero(
            plans in prop::collection::vec(prop::collection::vec(plan(), 1..4), 3),
            limits in prop::collection::vec(prop::option::of(1_u32..3), 3),
            picks in prop::collection::vec(0_u8..3, 2),
            split in 0_usize..3,
            requests in 1_usize..12,
            cancel_after in prop::option::of(1_u64..3000),
            streams in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let r = rig(2);
                let loads = Arc::new(Loads::new());
                for ((p, m), limit) in TARGETS.iter().zip(&limits) {
                    loads.set_max_inflight(p, m, *limit);
                }
                let pick = |i: usize| match picks[i] {
                    0 => Pick::Ordered,
                    1 => Pick::Weighted,
                    _ => Pick::LeastLoaded,
                };
                // Targets [0, split] in the first tier, the rest in the second.
                let mut first = Tier::new(pick(0));
                let mut second = Tier::new(pick(1));
                for (i, (p, m)) in TARGETS.iter().enumerate() {
                    if i <= split { first = first.target(p, m) } else { second = second.target(p, m) }
                }
                let mut b = Route::builder("chat", Arc::clone(&r.registry))
                    .tier(first)
                    .loads(Arc::clone(&loads))
                    .policy(policy().build().unwrap());
                if split < 2 {
                    b = b.tier(second);
                }
                let route = Arc::new(b.build().unwrap());
                let mut script = Arc::new(Script::default());
                for ((p, m), plan) in TARGETS.iter().zip(&plans) {
                    let steps: Vec<Step> = plan.iter().map(step).collect();
                    script = script.on(&format!("{p}/{m}"), &steps);
                }
                let mut tasks = Vec::new();
                for _ in 0..requests {
                    let (route, script) = (Arc::clone(&route), Arc::clone(&script));
                    tasks.push(tokio::spawn(async move {
                        let run = async {
                            if streams {
                                let a = route
                                    .stream(|ctx| {
                                        let s = Arc::clone(&script);
                                        async move {
                                            s.call(ctx).await.map(|_| {
                                                upstream(&["a"], Some(Ok(Tok("", 2))), false)
                                            })
                                        }
                                    })
                                    .await?;
                                let (_, err) = collect(a.value).await;
                                err.map_or(Ok(()), Err)
                            } else {
                                go(&route, &script).await.map(|_| ())
                            }
                        };
                        match cancel_after {
                            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run)
                                .await
                                .unwrap_or(Ok(())),
                            None => run.await,
                        }
                    }));
                }
                for t in tasks {
                    match t.await.unwrap() {
                        Ok(()) => {}
                        Err(e) => assert!(
                            matches!(
                                e.kind(),
                                FailoverErrorKind::Exhausted
                                    | FailoverErrorKind::AllOpen
                                    | FailoverErrorKind::Saturated
                                    | FailoverErrorKind::Returned(_)
                                    | FailoverErrorKind::DeadlineExceeded
                            ),
                            "{e}"
                        ),
                    }
                }
                for l in loads.all() {
                    assert_eq!(l.inflight(), 0, "{l:?}");
                }
            });
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_bounds_retries_to_its_ratio_plus_the_floor_then_fails_over() {
    let r = rig(1);
    // The outage must not open the breakers: every failure reaches the retry decision.
    for (p, m) in [("local", "llama3"), ("local", "*")] {
        r.registry.control(p, m).unwrap().disable(None);
    }
    let budgeted = |ratio: f32| {
        r.route(
            policy()
                .retry_backoff(Duration::from_millis(1))
                .retry_budget_ratio(ratio)
                .retry_budget_floor(1)
                .retry_budget_window(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
    };
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ServerError, None)]);
    let route = budgeted(0.2);
    let mut exhausted = 0;
    for _ in 0..100 {
        let a = go(&route, &script).await.unwrap();
        assert_eq!(a.value, OPENAI);
        if a.trail.budget_exhausted() {
            exhausted += 1;
            assert_eq!(
                a.trail.to_string(),
                "local/llama3=server_error; local/llama3=budget_exhausted; openai/gpt-4o-mini=ok"
            );
        }
    }
    // 100 first attempts; retries: 20% of them plus the floor's 1/s over the 10 s window.
    let retries = script.calls(LOCAL) - 100;
    assert!((20..=30).contains(&retries), "{retries} retries");
    assert_eq!(exhausted, 100 - retries);

    // A budget large enough is no budget: every failure is retried once.
    let script = Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ServerError, None)]);
    let route = budgeted(1000.0);
    for _ in 0..50 {
        go(&route, &script).await.unwrap();
    }
    assert_eq!(script.calls(LOCAL), 100);
    let err = RoutePolicy::builder()
        .retry_budget_window(Duration::from_secs(61))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "retry_budget_window");
}

/// A key held to `limit` requests per minute by its provider: past it, a 429. Keeps the
/// times of the requests it served and counts the ones it refused.
#[derive(Default)]
struct Metered {
    served: Mutex<Vec<Instant>>,
    refused: Mutex<u32>,
}

impl Metered {
    fn call(&self, limit: usize) -> Result<(), AttemptFailure> {
        let now = Instant::now();
        let mut served = self.served.lock().unwrap();
        let minute = Duration::from_secs(60);
        if served.iter().filter(|t| now - **t < minute).count() >= limit {
            *self.refused.lock().unwrap() += 1;
            return Err(AttemptFailure::new(Reason::RateLimit).with_status(429));
        }
        served.push(now);
        Ok(())
    }

    /// The most requests served in any 60 s.
    fn busiest_minute(&self) -> usize {
        let served = self.served.lock().unwrap();
        (0..served.len())
            .map(|i| {
                served[i..]
                    .iter()
                    .take_while(|t| **t - served[i] < Duration::from_secs(60))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

#[tokio::test(start_paused = true)]
async fn an_rpm_limit_of_n_holds_the_target_to_n_a_minute_and_the_excess_fails_over_without_a_429()
{
    const N: usize = 10;
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    route
        .loads()
        .set_rate_limits("local", "llama3", RateLimits::new().rpm(10));
    let sim = Arc::new(Metered::default());
    let (mut local, mut fallback) = (0, 0);
    // 25 requests a minute for three minutes.
    for _ in 0..75 {
        let a = route
            .call(|ctx| {
                let sim = Arc::clone(&sim);
                async move {
                    if ctx.provider() == "local" {
                        sim.call(N)?;
                    }
                    Ok(ctx.provider().to_owned())
                }
            })
            .await
            .unwrap();
        if &*a.provider == "local" {
            local += 1;
        } else {
            fallback += 1;
            assert_eq!(
                a.trail.to_string(),
                "local/llama3=shed; openai/gpt-4o-mini=ok"
            );
            assert_eq!(
                a.trail.attempts()[0].outcome,
                AttemptOutcome::Shed(ShedCause::RequestRate)
            );
        }
        tokio::time::sleep(Duration::from_millis(2400)).await;
    }
    assert_eq!(*sim.refused.lock().unwrap(), 0, "no 429 at the provider");
    assert!(sim.busiest_minute() <= N, "{}", sim.busiest_minute());
    // About N a minute went to the limited target, the rest failed over.
    assert!(
        (27..=30).contains(&local),
        "{local} local, {fallback} fallback"
    );
    assert_eq!(local + fallback, 75);
    assert_eq!(r.failures("local", "llama3"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_tpm_limit_counts_the_estimate_until_the_answer_corrects_it() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    route
        .loads()
        .set_rate_limits("local", "llama3", RateLimits::new().tpm(1000));
    let run = |correct: bool| {
        let route = &route;
        async move {
            let mut local = 0;
            for _ in 0..12 {
                let a = route
                    .call_with_tokens(300, |ctx| async move {
                        if correct {
                            ctx.report_usage(100);
                        }
                        Ok::<_, AttemptFailure>(())
                    })
                    .await
                    .unwrap();
                if &*a.provider == "local" {
                    local += 1;
                } else {
                    assert_eq!(
                        a.trail.attempts()[0].outcome,
                        AttemptOutcome::Shed(ShedCause::TokenRate)
                    );
                }
            }
            local
        }
    };
    // Estimates of 300: three fit in 1000.
    assert_eq!(run(false).await, 3);
    tokio::time::sleep(Duration::from_secs(61)).await;
    // Answers of 100 each: eight fit (700 used, and the next estimate of 300 still fits).
    assert_eq!(run(true).await, 8);
}

#[tokio::test(start_paused = true)]
async fn a_429_with_its_remaining_quota_sends_traffic_elsewhere_until_the_reset() {
    let r = rig(5);
    let route = r.route(policy().build().unwrap());
    let calls = Arc::new(Mutex::new(0_u32));
    let go = || {
        route.call(|ctx| {
            let calls = Arc::clone(&calls);
            async move {
                if ctx.provider() == "local" {
                    let mut n = calls.lock().unwrap();
                    *n += 1;
                    if *n == 1 {
                        return Err(AttemptFailure::new(Reason::RateLimit)
                            .with_status(429)
                            .with_quota(Quota::requests(0, Duration::from_secs(30))));
                    }
                }
                Ok::<_, AttemptFailure>(())
            }
        })
    };
    let a = go().await.unwrap();
    assert_eq!(&*a.provider, "openai");
    for _ in 0..5 {
        let a = go().await.unwrap();
        assert_eq!(
            a.trail.to_string(),
            "local/llama3=shed; openai/gpt-4o-mini=ok"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(
        *calls.lock().unwrap(),
        1,
        "nothing sent to the key before its reset"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(&*go().await.unwrap().provider, "local");
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_recovered_target_up_over_the_window_and_fails_nothing() {
    let r = rig(1);
    let loads = Arc::new(Loads::new());
    loads.set_slow_start(
        "local",
        "llama3",
        Some(SlowStart::new(Duration::from_secs(10))),
    );
    let route = Route::builder("chat", Arc::clone(&r.registry))
        .tier(
            Tier::ordered()
                .target("local", "llama3")
                .target("openai", "gpt-4o-mini"),
        )
        .loads(Arc::clone(&loads))
        .policy(policy().build().unwrap())
        .build()
        .unwrap();
    let alone = Route::builder("alone", Arc::clone(&r.registry))
        .target("local", "llama3")
        .loads(Arc::clone(&loads))
        .policy(policy().build().unwrap())
        .build()
        .unwrap();
    // An outage opens the breaker; after its open time a probe answers and it closes.
    let script =
        Arc::new(Script::default()).on(LOCAL, &[Step::Fail(Reason::ConnectionRefused, None)]);
    go(&route, &script).await.unwrap();
    assert_eq!(r.state("local", "*"), State::Open);
    let wait = r
        .registry
        .target("local", "llama3")
        .unwrap()
        .try_acquire()
        .unwrap_err()
        .retry_after()
        .unwrap();
    r.clock.advance(wait);
    script.on(LOCAL, &[Step::Ok]);
    assert_eq!(go(&route, &script).await.unwrap().value, LOCAL);
    assert_eq!(r.state("local", "*"), State::Closed);

    // The recovered target's share, per second of paused time.
    let mut shares = Vec::new();
    for _ in 0..12 {
        let mut local = 0;
        for _ in 0..200 {
            // No request fails because of the ramp.
            if go(&route, &script).await.unwrap().value == LOCAL {
                local += 1;
            }
        }
        // Alone in its tier, a ramping target is admitted.
        assert_eq!(go(&alone, &script).await.unwrap().value, LOCAL);
        shares.push(f64::from(local) / 200.0);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let s = &shares;
    assert!(s[0] < 0.25 && s[1] < 0.35, "{s:?}");
    assert!((0.35..0.75).contains(&s[5]), "{s:?}");
    assert!(s[9] > 0.75, "{s:?}");
    assert!(
        s[10..].iter().all(|x| (*x - 1.0).abs() < f64::EPSILON),
        "{s:?}"
    );
    // It rises over the window, not in one step.
    for w in s.windows(3) {
        assert!(w[2] > w[0] || w[2] >= 0.99, "{s:?}");
    }
    assert_eq!(loads.get("local", "llama3").unwrap().ramp(), 1.0);
}
