//! One test per rule, on the mock clock (no sleeping, no wall-clock assertions).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clock::MockClock;
use super::*;
use crate::reason::Scope;

mod concurrency;
mod model;

const MS: Duration = Duration::from_millis(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Jitter off so open times are exact.
fn policy() -> BreakerPolicyBuilder {
    BreakerPolicy::builder().jitter(0.0)
}

struct Rig {
    clock: MockClock,
    breaker: Breaker,
    log: Arc<Mutex<Vec<Transition>>>,
}

fn rig(policy: BreakerPolicy) -> Rig {
    let clock = MockClock::new();
    let log: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let sink = log.clone();
    let breaker = Breaker::builder()
        .policy(policy)
        .target("prov", "model-a")
        .on_transition(Arc::new(move |t| sink.lock().unwrap().push(t.clone())))
        .build_with_clock(clock.clock());
    Rig {
        clock,
        breaker,
        log,
    }
}

impl Rig {
    fn fail(&self, reason: Reason) -> Option<Transition> {
        self.breaker
            .try_acquire()
            .unwrap()
            .record(Outcome::failure(reason, MS))
    }

    fn ok(&self) -> Option<Transition> {
        self.breaker
            .try_acquire()
            .unwrap()
            .record(Outcome::success(MS))
    }

    fn state(&self) -> State {
        self.breaker.state()
    }

    /// The rejection's retry-after (panics if admitted).
    fn retry_after(&self) -> Duration {
        self.breaker
            .try_acquire()
            .unwrap_err()
            .retry_after()
            .unwrap()
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    fn transitions(&self) -> Vec<(State, State)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t.from, t.to))
            .collect()
    }

    /// Trips with `n` failures of `reason`, lets the open time pass and returns the probe
    /// admitted.
    fn to_half_open(&self, reason: Reason) -> Permit<'_> {
        while self.state() == State::Closed {
            self.fail(reason);
        }
        let wait = self.retry_after();
        self.advance(wait);
        let probe = self.breaker.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(self.state(), State::HalfOpen);
        probe
    }
}

#[test]
fn closed_admits_and_consecutive_failures_trip_at_the_threshold() {
    let r = rig(policy().consecutive_failures(3).build().unwrap());
    assert!(r.fail(Reason::ServerError).is_none());
    assert!(r.fail(Reason::ServerError).is_none());
    // A success breaks the run.
    r.ok();
    assert!(r.fail(Reason::ServerError).is_none());
    assert!(r.fail(Reason::ServerError).is_none());
    let t = r.fail(Reason::ServerError).unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Closed, State::Open, Some(Reason::ServerError))
    );
    assert_eq!(r.state(), State::Open);
}

#[test]
fn failure_rate_counts_only_after_min_calls_and_evicts_old_outcomes() {
    let p = policy()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .window_calls(4)
        .min_calls(4)
        .build()
        .unwrap();
    let r = rig(p);
    // 2 failures in 3 calls: above the rate but below min_calls.
    r.fail(Reason::Timeout);
    r.fail(Reason::Timeout);
    r.ok();
    assert_eq!(r.state(), State::Closed);
    // Evict both failures with successes: the window is [ok, ok, ok, ok].
    for _ in 0..4 {
        r.ok();
    }
    let s = r.breaker.snapshot();
    assert_eq!((s.window_calls, s.window_failures), (4, 0));
    r.fail(Reason::Timeout);
    assert_eq!(r.state(), State::Closed, "1 of 4");
    assert!(r.fail(Reason::Timeout).is_some(), "2 of 4 trips at 50%");
}

#[test]
fn time_window_forgets_failures_older_than_its_span() {
    let p = policy()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .window_time(secs(10), 10)
        .min_calls(2)
        .build()
        .unwrap();
    let r = rig(p);
    r.fail(Reason::Timeout);
    r.advance(secs(11));
    r.ok();
    r.ok();
    r.fail(Reason::Timeout);
    assert_eq!(r.state(), State::Closed, "1 of 3 once the old failure left");
    assert!(r.fail(Reason::Timeout).is_some(), "2 of 4");
}

#[test]
fn ignored_reasons_never_count() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    for reason in [
        Reason::Format,
        Reason::ContentFilter,
        Reason::ContextOverflow,
        Reason::Cancelled,
    ] {
        for _ in 0..10 {
            assert!(r.fail(reason).is_none(), "{reason}");
        }
    }
    assert_eq!(r.state(), State::Closed);
    let s = r.breaker.snapshot();
    assert_eq!((s.window_calls, s.consecutive_failures), (0, 0));
}

#[test]
fn trip_immediately_reasons_open_on_the_first_failure() {
    let r = rig(policy().trip_immediately(Reason::Dns).build().unwrap());
    assert!(r.fail(Reason::Dns).is_some());
    let r = rig(policy().build().unwrap());
    assert!(r.fail(Reason::AuthPermanent).is_some(), "default policy");
    let r = rig(policy()
        .reason_effect(Reason::AuthPermanent, BreakerEffect::Count)
        .build()
        .unwrap());
    assert!(
        r.fail(Reason::AuthPermanent).is_none(),
        "overridden to count"
    );
}

#[test]
fn slow_calls_count_as_timeouts() {
    let r = rig(policy()
        .consecutive_failures(2)
        .slow_call(secs(10))
        .slow_ttft(secs(2))
        .build()
        .unwrap());
    let admit = || r.breaker.try_acquire().unwrap();
    assert!(
        admit().record(Outcome::success(secs(10))).is_none(),
        "at the limit is fine"
    );
    assert!(admit().record(Outcome::success(secs(11))).is_none());
    let t = admit()
        .record(Outcome::success(secs(3)).with_ttft(secs(3)))
        .unwrap();
    assert_eq!(t.reason, Some(Reason::Timeout));
}

#[test]
fn open_time_starts_from_the_reasons_base() {
    let r = rig(policy().build().unwrap());
    r.fail(Reason::Auth);
    assert_eq!(r.retry_after(), secs(600), "auth: 10m");
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    r.fail(Reason::ConnectionRefused);
    assert_eq!(r.retry_after(), secs(10), "transport: 10s");
    let r = rig(policy()
        .consecutive_failures(1)
        .open_base(Reason::ServerError, secs(42))
        .build()
        .unwrap());
    let t = r.fail(Reason::ServerError).unwrap();
    assert_eq!(t.open_for, Some(secs(42)));
    assert_eq!(r.retry_after(), secs(42));
}

#[test]
fn backoff_grows_with_reopens_up_to_the_cap_and_decays_when_healthy() {
    let p = policy()
        .consecutive_failures(1)
        .max_open(secs(35))
        .backoff_decay(secs(60))
        .build()
        .unwrap();
    let r = rig(p);
    let mut waits = Vec::new();
    r.fail(Reason::ConnectionRefused);
    for _ in 0..3 {
        let wait = r.retry_after();
        waits.push(wait);
        r.advance(wait);
        let probe = r.breaker.try_acquire().unwrap();
        probe.record(Outcome::failure(Reason::ConnectionRefused, MS));
    }
    waits.push(r.retry_after());
    assert_eq!(waits, [secs(10), secs(20), secs(35), secs(35)]);

    // Close, then stay healthy for two decay periods: two steps of backoff undone.
    r.advance(secs(35));
    r.breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::success(MS));
    assert_eq!(r.state(), State::Closed);
    r.advance(secs(120));
    r.fail(Reason::ConnectionRefused);
    // Level was 4; minus 2 periods is 2: 10s × 2² = 40s, capped at 35s.
    assert_eq!(r.retry_after(), secs(35));
    r.advance(secs(35));
    r.breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::success(MS));
    r.advance(secs(600));
    r.fail(Reason::ConnectionRefused);
    assert_eq!(r.retry_after(), secs(10), "fully decayed");
}

#[test]
fn jitter_only_shortens_the_open_time() {
    let r = rig(BreakerPolicy::builder()
        .consecutive_failures(1)
        .jitter(0.5)
        .build()
        .unwrap());
    r.fail(Reason::ConnectionRefused);
    let wait = r.retry_after();
    assert!(wait <= secs(10) && wait >= secs(5), "{wait:?}");
}

#[test]
fn retry_after_is_a_floor_that_a_shorter_hint_never_lowers() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    let t = r
        .breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::failure(Reason::RateLimit, MS).with_retry_after(secs(90)))
        .unwrap();
    assert_eq!(
        t.open_for,
        Some(secs(90)),
        "longer than rate_limit's 15s base"
    );
    r.advance(secs(10));
    assert_eq!(r.retry_after(), secs(80));

    let r = rig(policy().consecutive_failures(1).build().unwrap());
    let early = r.breaker.try_acquire().unwrap();
    let earlier = r.breaker.try_acquire().unwrap();
    r.fail(Reason::RateLimit);
    assert_eq!(r.retry_after(), secs(15));
    // A longer hint arriving while open extends it (even from a permit of an earlier state).
    early.record(Outcome::failure(Reason::RateLimit, MS).with_retry_after(secs(60)));
    assert_eq!(r.retry_after(), secs(60));
    r.advance(secs(1));
    // A later, shorter hint never lowers it.
    earlier.record(Outcome::failure(Reason::RateLimit, MS).with_retry_after(secs(5)));
    assert_eq!(r.retry_after(), secs(59));
}

#[test]
fn rejection_says_when_to_come_back_and_why() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    r.fail(Reason::Overloaded);
    r.advance(secs(5));
    let rej = r.breaker.try_acquire().unwrap_err();
    assert_eq!(rej.state(), State::Open);
    assert_eq!(rej.reason(), Some(Reason::Overloaded));
    assert_eq!(rej.retry_after(), Some(secs(10)));
    assert!(!rej.is_provider_wide());
    assert!(rej.to_string().contains("overloaded"), "{rej}");
}

#[test]
fn open_moves_to_half_open_when_the_time_is_up() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    r.fail(Reason::ServerError);
    r.advance(secs(10) - MS);
    assert!(r.breaker.try_acquire().is_err());
    r.advance(MS);
    let probe = r.breaker.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(
        r.transitions(),
        [(State::Closed, State::Open), (State::Open, State::HalfOpen)]
    );
    drop(probe);
}

#[test]
fn half_open_admits_a_bounded_number_of_probes_and_n_successes_close_it() {
    let p = policy()
        .consecutive_failures(1)
        .half_open_probes(2)
        .half_open_successes(3)
        .build()
        .unwrap();
    let r = rig(p);
    let a = r.to_half_open(Reason::ServerError);
    let b = r.breaker.try_acquire().unwrap();
    let rej = r.breaker.try_acquire().unwrap_err();
    assert_eq!(rej.state(), State::HalfOpen);
    assert_eq!(
        rej.retry_after(),
        Some(secs(60)),
        "until the earliest lease ends"
    );
    assert!(a.record(Outcome::success(MS)).is_none());
    assert!(b.record(Outcome::success(MS)).is_none());
    assert_eq!(r.state(), State::HalfOpen);
    let t = r
        .breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::success(MS))
        .unwrap();
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
}

#[test]
fn a_failed_probe_reopens_with_a_longer_wait() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    let probe = r.to_half_open(Reason::ServerError);
    let t = probe
        .record(Outcome::failure(Reason::ServerError, MS))
        .unwrap();
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
    assert_eq!(t.open_for, Some(secs(20)));
}

#[test]
fn a_permit_from_an_earlier_cycle_cannot_close_a_later_one() {
    let r = rig(policy()
        .consecutive_failures(1)
        .probe_lease(secs(5))
        .build()
        .unwrap());
    let old = r.to_half_open(Reason::ServerError);
    // Another probe of the same cycle fails: reopen; then a new cycle starts.
    r.advance(secs(5));
    let second = r.breaker.try_acquire().unwrap();
    second.record(Outcome::failure(Reason::ServerError, MS));
    let wait = r.retry_after();
    r.advance(wait);
    let current = r.breaker.try_acquire().unwrap();
    // The old permit settles now: ignored.
    assert!(old.record(Outcome::success(MS)).is_none());
    assert_eq!(r.state(), State::HalfOpen);
    assert!(
        r.breaker.try_acquire().is_err(),
        "the current probe still holds the slot"
    );
    assert!(current.record(Outcome::success(MS)).is_some());
    assert_eq!(r.state(), State::Closed);
}

#[test]
fn a_closed_permit_from_before_a_trip_does_not_count_afterwards() {
    let r = rig(policy().consecutive_failures(2).build().unwrap());
    let stale = r.breaker.try_acquire().unwrap();
    r.breaker.control().force_open(None);
    r.breaker.control().reset();
    r.fail(Reason::ServerError);
    assert!(
        stale
            .record(Outcome::failure(Reason::ServerError, MS))
            .is_none()
    );
    assert_eq!(r.state(), State::Closed);
}

#[test]
fn a_dropped_probe_frees_its_slot_without_counting() {
    let r = rig(policy()
        .consecutive_failures(1)
        .half_open_successes(1)
        .build()
        .unwrap());
    let probe = r.to_half_open(Reason::ServerError);
    assert!(r.breaker.try_acquire().is_err());
    drop(probe);
    assert_eq!(r.state(), State::HalfOpen, "neither success nor failure");
    let next = r.breaker.try_acquire().unwrap();
    assert!(next.is_probe());
    // An ignored reason also frees the slot without counting.
    assert!(next.record(Outcome::failure(Reason::Format, MS)).is_none());
    assert_eq!(r.state(), State::HalfOpen);
    assert!(
        r.breaker
            .try_acquire()
            .unwrap()
            .record(Outcome::success(MS))
            .is_some()
    );
}

#[test]
fn a_probe_that_never_settles_expires_after_its_lease() {
    let r = rig(policy()
        .consecutive_failures(1)
        .probe_lease(secs(30))
        .build()
        .unwrap());
    let stuck = r.to_half_open(Reason::ServerError);
    r.advance(secs(29));
    assert_eq!(r.retry_after(), secs(1));
    r.advance(secs(1));
    let fresh = r.breaker.try_acquire().unwrap();
    // The stuck probe settling late is ignored: its slot moved on.
    assert!(stuck.record(Outcome::success(MS)).is_none());
    assert!(r.breaker.try_acquire().is_err());
    assert!(fresh.record(Outcome::success(MS)).is_some());
}

#[test]
fn forced_open_rejects_until_it_ends_then_probes() {
    let r = rig(policy().build().unwrap());
    let t = r.breaker.control().force_open(Some(secs(600))).unwrap();
    assert_eq!(
        (t.from, t.to, t.origin),
        (State::Closed, State::ForcedOpen, Origin::Control)
    );
    assert_eq!(t.open_for, Some(secs(600)));
    let rej = r.breaker.try_acquire().unwrap_err();
    assert_eq!(
        (rej.state(), rej.retry_after()),
        (State::ForcedOpen, Some(secs(600)))
    );
    r.advance(secs(600));
    let probe = r.breaker.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert!(probe.record(Outcome::success(MS)).is_some());
    assert_eq!(r.state(), State::Closed);

    r.breaker.control().force_open(None);
    r.advance(secs(100_000));
    assert_eq!(r.breaker.try_acquire().unwrap_err().retry_after(), None);
}

#[test]
fn disabled_lets_everything_through_and_records_nothing() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    r.breaker.control().disable(Some(secs(60)));
    for _ in 0..20 {
        assert!(r.fail(Reason::AuthPermanent).is_none());
    }
    assert_eq!(r.state(), State::Disabled);
    assert_eq!(r.breaker.snapshot().window_calls, 0);
    r.advance(secs(60));
    r.ok();
    assert_eq!(r.state(), State::Closed, "back to the automatic state");
    // Disabling an open breaker lets traffic through.
    r.fail(Reason::ServerError);
    r.breaker.control().disable(None);
    assert!(r.breaker.try_acquire().is_ok());
}

#[test]
fn metrics_only_records_and_reports_but_never_rejects() {
    let r = rig(policy().consecutive_failures(2).build().unwrap());
    r.breaker.control().metrics_only(None);
    r.fail(Reason::ServerError);
    let t = r.fail(Reason::ServerError).unwrap();
    assert!(t.shadow);
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    assert_eq!(r.state(), State::MetricsOnly);
    assert_eq!(r.breaker.snapshot().automatic, State::Open);
    // Would be rejected, but passes; its outcome is not recorded.
    for _ in 0..5 {
        assert!(r.fail(Reason::ServerError).is_none());
    }
    r.advance(secs(10));
    let probe = r.breaker.try_acquire().unwrap();
    assert!(probe.is_probe(), "the shadow machine probes too");
    let t = probe.record(Outcome::success(MS)).unwrap();
    assert!(t.shadow && t.to == State::Closed);
    r.breaker.control().clear_override();
    assert_eq!(r.state(), State::Closed);
}

#[test]
fn reset_clears_counters_backoff_and_floor() {
    let r = rig(policy().consecutive_failures(2).build().unwrap());
    r.fail(Reason::ServerError);
    let t = r.breaker.control().reset();
    assert!(t.is_none(), "already closed: no transition");
    r.fail(Reason::ServerError);
    assert_eq!(r.state(), State::Closed, "the run restarted");
    r.breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::failure(Reason::RateLimit, MS).with_retry_after(secs(600)));
    assert_eq!(r.state(), State::Open);
    let t = r.breaker.control().reset().unwrap();
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
    r.fail(Reason::ServerError);
    r.fail(Reason::ServerError);
    assert_eq!(r.retry_after(), secs(10), "no floor, no backoff left");
}

#[test]
fn adopting_a_remote_open_applies_its_deadline_and_never_shortens() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    let wall_now = r.breaker.shared().clock.wall_at(r.clock.now());
    let c = r.breaker.control();
    assert!(
        c.adopt_open(Reason::Dns, wall_now).is_none(),
        "already over"
    );
    let t = c.adopt_open(Reason::Dns, wall_now + secs(30)).unwrap();
    assert_eq!(
        (t.to, t.origin, t.reason),
        (State::Open, Origin::Remote, Some(Reason::Dns))
    );
    assert_eq!(t.open_until, Some(wall_now + secs(30)));
    assert_eq!(r.retry_after(), secs(30));
    assert!(c.adopt_open(Reason::Dns, wall_now + secs(5)).is_none());
    assert_eq!(r.retry_after(), secs(30));
    assert!(c.adopt_open(Reason::Dns, wall_now + secs(50)).is_none());
    assert_eq!(r.retry_after(), secs(50), "extended");
    let t = c.adopt_closed().unwrap();
    assert_eq!(
        (t.from, t.to, t.origin),
        (State::Open, State::Closed, Origin::Remote)
    );
    // Adoption did not grow local backoff.
    r.fail(Reason::ServerError);
    assert_eq!(r.retry_after(), secs(10));
}

#[test]
fn every_transition_reaches_the_listener_with_its_details() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    r.fail(Reason::ConnectionRefused);
    let log = r.log.lock().unwrap().clone();
    let t = &log[0];
    assert_eq!((&*t.provider, &*t.model), ("prov", "model-a"));
    assert_eq!(t.reason, Some(Reason::ConnectionRefused));
    assert_eq!(t.origin, Origin::Local);
    let until = t.open_until.unwrap();
    assert_eq!(
        until,
        r.breaker.shared().clock.wall_at(r.clock.now()) + secs(10)
    );
}

#[test]
fn registry_routes_failures_by_scope() {
    let clock = MockClock::new();
    let reg = Registry::builder()
        .policy(policy().consecutive_failures(1).build().unwrap())
        .target("openai", "gpt-4o")
        .target("openai", "gpt-4o-mini")
        .target("local", "llama3")
        .build_with_clock(&clock.clock())
        .unwrap();
    assert_eq!(reg.len(), 5);
    let acquire = |m: &str| reg.target("openai", m).unwrap().try_acquire();

    // Model-scoped: only that model's breaker opens; the sibling stays in service.
    for reason in [Reason::RateLimit, Reason::ModelNotFound, Reason::Overloaded] {
        assert_eq!(reason.policy().scope, Scope::Model);
        let [p, m] = acquire("gpt-4o")
            .unwrap()
            .record(Outcome::failure(reason, MS));
        assert!(p.is_none() && m.is_some(), "{reason}");
        assert!(acquire("gpt-4o").is_err());
        assert!(acquire("gpt-4o-mini").is_ok());
        reg.control("openai", "gpt-4o").unwrap().reset();
    }
    // Provider-scoped: the provider-wide breaker opens and gates every model.
    for reason in [
        Reason::ConnectionRefused,
        Reason::Dns,
        Reason::Unreachable,
        Reason::Tls,
    ] {
        let [p, m] = acquire("gpt-4o")
            .unwrap()
            .record(Outcome::failure(reason, MS));
        assert!(p.is_some() && m.is_none(), "{reason}");
        assert_eq!(&*p.unwrap().model, "*");
        let rej = acquire("gpt-4o-mini").unwrap_err();
        assert!(rej.is_provider_wide());
        assert_eq!(
            reg.breaker("openai", "gpt-4o").unwrap().state(),
            State::Closed
        );
        assert!(reg.target("local", "llama3").unwrap().try_acquire().is_ok());
        reg.control("openai", "*").unwrap().reset();
    }
    assert!(
        reg.target("openai", "gpt-5").is_none(),
        "only configured targets"
    );
}

#[test]
fn registry_rejects_bad_configuration() {
    let dup = Registry::builder()
        .target("a", "m")
        .target("a", "m")
        .build();
    assert!(matches!(dup, Err(RegistryError::Duplicate { .. })));
    let star = Registry::builder().target("a", "*").build();
    assert!(matches!(star, Err(RegistryError::BadName { .. })));
    let empty = Registry::builder().target("", "m").build();
    assert!(matches!(empty, Err(RegistryError::BadName { .. })));
}

#[test]
fn call_times_the_future_and_a_cancelled_call_counts_for_nothing() {
    let r = rig(policy()
        .consecutive_failures(1)
        .slow_call(secs(5))
        .build()
        .unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let clock = r.clock.clone();
        let slow = r
            .breaker
            .call(async move {
                clock.advance(secs(6));
                Ok::<_, Reason>(())
            })
            .await;
        assert!(slow.is_ok());
        assert_eq!(r.state(), State::Open, "the 6s call counted as slow");
        assert_eq!(r.breaker.snapshot().reason, Some(Reason::Timeout));
        r.advance(secs(15));
        // Start a probe and drop it mid-flight.
        {
            let fut = r.breaker.call(std::future::pending::<Result<(), Reason>>());
            let mut fut = std::pin::pin!(fut);
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert!(r.breaker.try_acquire().is_err(), "the probe holds the slot");
        }
        assert_eq!(r.state(), State::HalfOpen);
        let ok = r.breaker.call(async { Ok::<_, Reason>(7) }).await;
        assert_eq!(ok.unwrap(), 7);
        assert_eq!(r.state(), State::Closed);
    });
}

#[test]
fn owned_permits_hold_and_settle_like_borrowed_ones() {
    let r = rig(policy()
        .consecutive_failures(1)
        .half_open_successes(1)
        .build()
        .unwrap());
    // A closed owned permit records a failure that trips the breaker.
    let owned = r.breaker.try_acquire_owned().unwrap();
    assert!(
        owned
            .record(Outcome::failure(Reason::ServerError, MS))
            .is_some()
    );
    assert_eq!(r.state(), State::Open);
    r.advance(r.retry_after());
    // An owned probe takes the slot, frees it when dropped, and closes on success.
    let probe = r.breaker.try_acquire_owned().unwrap();
    assert!(r.breaker.try_acquire().is_err());
    drop(probe);
    assert_eq!(r.state(), State::HalfOpen);
    let probe = r.breaker.try_acquire_owned().unwrap();
    // It outlives the borrow that made it.
    let held = std::thread::spawn(move || probe.record(Outcome::success(MS)));
    assert!(held.join().unwrap().is_some());
    assert_eq!(r.state(), State::Closed);
}

#[test]
fn owned_target_permits_route_failures_by_scope() {
    let clock = MockClock::new();
    let reg = Registry::builder()
        .policy(policy().consecutive_failures(1).build().unwrap())
        .target("openai", "gpt-4o")
        .target("openai", "gpt-4o-mini")
        .build_with_clock(&clock.clock())
        .unwrap();
    let owned = |m: &str| reg.target("openai", m).unwrap().try_acquire_owned();
    let [p, m] = owned("gpt-4o")
        .unwrap()
        .record(Outcome::failure(Reason::RateLimit, MS));
    assert!(p.is_none() && m.is_some());
    assert!(owned("gpt-4o-mini").is_ok());
    let [p, m] = owned("gpt-4o-mini")
        .unwrap()
        .record(Outcome::failure(Reason::ConnectionRefused, MS));
    assert!(p.is_some() && m.is_none());
    assert!(owned("gpt-4o-mini").unwrap_err().is_provider_wide());
}

#[test]
fn an_adopted_close_keeps_a_longer_local_retry_after_floor() {
    let r = rig(policy().consecutive_failures(1).build().unwrap());
    r.breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::failure(Reason::RateLimit, MS).with_retry_after(secs(120)));
    assert_eq!(r.state(), State::Open);
    assert!(
        r.breaker.control().adopt_closed().is_none(),
        "another replica's probe does not lift this replica's Retry-After"
    );
    assert_eq!(r.state(), State::Open);
    assert_eq!(r.retry_after(), secs(120));
    r.advance(secs(120));
    let t = r.breaker.control().adopt_closed().unwrap();
    assert_eq!(
        (t.from, t.to),
        (State::Open, State::Closed),
        "the floor is over"
    );
}
