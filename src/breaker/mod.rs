//! Circuit breakers per provider and per model, consulted before every attempt.
//!
//! # Why this design
//!
//! A failover chain asks its breaker before *every* attempt, so the closed path must cost
//! next to nothing and a rejection must come back at once with a time to retry. The breaker
//! keeps its whole state in one atomic word (automatic state, operator override and a
//! generation); admission when closed is one load of it. Outcomes update lock-free counters:
//! a consecutive-failure counter and a sliding window (a ring of the last N outcomes or time
//! buckets) that adds what it writes and subtracts what it evicts, so checking the failure
//! rate never scans the window. A window full of successes absorbs a further success with one
//! load and no write, which keeps the healthy closed path free of shared-memory writes even
//! across threads. Rejection while open reads the word, a coarse clock and the deadline, and
//! allocates nothing. Everything rare (tripping, half-open probes, control actions) takes a
//! mutex and publishes a [`Transition`] after releasing it.
//!
//! The breaker only sees a [`Reason`] and durations ([`Outcome`]), never request
//! or error text. Each reason's [`BreakerEffect`] decides whether
//! it counts, is ignored (format, content filter, context overflow, cancelled) or trips at
//! once; its [`Scope`](crate::reason::Scope) decides, in a [`Registry`], whether the model's
//! breaker or the provider-wide breaker (which gates every model of the provider) hears it;
//! and its `open_base` starts the open time, which then grows by exponential backoff with
//! jitter and a cap over consecutive re-opens and decays after healthy periods. A provider's
//! Retry-After is a floor on the open time that a later, shorter hint never lowers.
//!
//! Half-open admits a bounded number of probes. Every transition bumps the generation and
//! every permit remembers the generation it was issued in, so a permit from an earlier cycle
//! cannot close a later one. A dropped permit (a cancelled future) frees its probe slot
//! without counting, and a probe that never settles loses its slot after a lease, so the
//! breaker is never stuck half-open.
//!
//! Operators override the automatic states through a [`ControlHandle`]: forced open,
//! disabled (everything passes, nothing is recorded) and metrics-only (a shadow mode: the
//! automatic state machine runs and reports its transitions with `shadow = true`, but calls
//! are never rejected). The same handle adopts an open state published by another replica.
//!
//! Every transition is emitted as a tracing event named in [`crate::telemetry::names`] and
//! handed to an optional listener, which is how a shared-state backend learns what to publish.
//!
//! ```
//! use std::time::Duration;
//! use llm_failover::Reason;
//! use llm_failover::breaker::{Breaker, BreakerPolicy, Outcome, State};
//!
//! let policy = BreakerPolicy::builder().consecutive_failures(2).build()?;
//! let breaker = Breaker::new(policy);
//!
//! // Two-step use: ask, run the attempt, settle the permit.
//! for _ in 0..2 {
//!     let permit = breaker.try_acquire().expect("closed");
//!     permit.record(Outcome::failure(Reason::ServerError, Duration::from_millis(120)));
//! }
//! assert_eq!(breaker.state(), State::Open);
//!
//! // Rejections tell the caller when to come back.
//! let rejected = breaker.try_acquire().unwrap_err();
//! assert_eq!(rejected.reason(), Some(Reason::ServerError));
//! assert!(rejected.retry_after().is_some());
//! # Ok::<(), llm_failover::breaker::PolicyError>(())
//! ```

pub(crate) mod clock;
mod control;
mod error;
mod policy;
mod registry;
mod state;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::Reason;
use crate::reason::BreakerEffect;
use crate::telemetry::names::breaker::PROVIDER_WIDE;

use self::clock::{Clock, Nanos, nanos_of};
use self::state::{
    AUTO_MASK, CLOSED, DISABLED, FORCED_OPEN, HALF_OPEN, METRICS_ONLY, MODE_MASK, NORMAL, OPEN,
    auto_state, generation, next_word, reported_state,
};
use self::window::{CountRing, TimeBuckets, Window};

pub use self::control::ControlHandle;
pub use self::error::{CallError, PolicyError, RegistryError, Rejected};
pub use self::policy::{BreakerPolicy, BreakerPolicyBuilder, MAX_HALF_OPEN_PROBES, WindowKind};
pub use self::registry::{OwnedTargetPermit, Registry, RegistryBuilder, Target, TargetPermit};
pub use self::state::{Origin, State, Transition};

/// The fleet gate: how a shared-state backend holds a breaker open while another replica
/// holds the half-open probe lease.
///
/// It is read only where the open time has ended (the slow path of an open breaker), never
/// on the closed path or the fast rejection path.
pub(crate) mod gate {
    /// No gate: the breaker leaves the open state on its own (no backend, or it is down).
    pub(crate) const LOCAL: u64 = 0;
    /// Held: stay open after the open time until the backend grants the probe lease.
    #[cfg(feature = "redis")]
    pub(crate) const HELD: u64 = u64::MAX;
    /// What a held rejection tells the caller to wait: the lease holder's probe settles, or
    /// this replica is granted the lease, within about this long.
    pub(crate) const RETRY: std::time::Duration = std::time::Duration::from_secs(1);
}

/// How far [`Clock::recent`] may lag the real clock, with a margin for scheduling.
const RECENT_LAG: Nanos = 4 * clock::RECENT_PERIOD.as_nanos() as Nanos;

/// A callback that observes every transition of a breaker (after the tracing event).
///
/// It runs on the thread that caused the transition, outside the breaker's lock; keep it
/// short (hand the transition to a channel to publish it elsewhere).
pub type Listener = Arc<dyn Fn(&Transition) + Send + Sync>;

/// How an attempt ended: success, or failure for a [`Reason`]; with its duration and, when
/// known, the time to first token and the provider's Retry-After.
///
/// ```
/// use std::time::Duration;
/// use llm_failover::{Reason, breaker::Outcome};
///
/// let ok = Outcome::success(Duration::from_millis(900)).with_ttft(Duration::from_millis(250));
/// let limited = Outcome::failure(Reason::RateLimit, Duration::from_millis(40))
///     .with_retry_after(Duration::from_secs(20));
/// assert!(ok.is_success() && !limited.is_success());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    reason: Option<Reason>,
    duration: Duration,
    ttft: Option<Duration>,
    retry_after: Option<Duration>,
}

impl Outcome {
    /// The attempt succeeded after `duration`.
    #[must_use]
    pub const fn success(duration: Duration) -> Self {
        Self {
            reason: None,
            duration,
            ttft: None,
            retry_after: None,
        }
    }

    /// The attempt failed for `reason` after `duration`.
    #[must_use]
    pub const fn failure(reason: Reason, duration: Duration) -> Self {
        Self {
            reason: Some(reason),
            duration,
            ttft: None,
            retry_after: None,
        }
    }

    /// The outcome of a call that returned `result` after `duration`: a success, or a failure
    /// for the error's reason with its Retry-After.
    #[must_use]
    pub fn of<T, E: Failure>(result: &Result<T, E>, duration: Duration) -> Self {
        match result {
            Ok(_) => Self::success(duration),
            Err(e) => {
                let failure = Self::failure(e.reason(), duration);
                match e.retry_after() {
                    Some(wait) => failure.with_retry_after(wait),
                    None => failure,
                }
            }
        }
    }

    /// The first token arrived after `ttft` (checked against the policy's `slow_ttft`).
    #[must_use]
    pub const fn with_ttft(mut self, ttft: Duration) -> Self {
        self.ttft = Some(ttft);
        self
    }

    /// The provider asked to wait `after` (a floor on the open time).
    #[must_use]
    pub const fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// True for a success.
    #[must_use]
    pub const fn is_success(&self) -> bool {
        self.reason.is_none()
    }

    /// The failure's reason; `None` for a success.
    #[must_use]
    pub const fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// How long the attempt took.
    #[must_use]
    pub const fn duration(&self) -> Duration {
        self.duration
    }
}

/// An error that knows its [`Reason`], so [`Breaker::call`] can record it.
///
/// The failover chain implements it for its error type; the breaker itself never classifies.
pub trait Failure {
    /// Why the call failed.
    fn reason(&self) -> Reason;

    /// How long the provider asked to wait, if it said.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl<E: Failure + ?Sized> Failure for &E {
    fn reason(&self) -> Reason {
        (**self).reason()
    }

    fn retry_after(&self) -> Option<Duration> {
        (**self).retry_after()
    }
}

impl Failure for Reason {
    fn reason(&self) -> Reason {
        *self
    }
}

/// How an outcome moves the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Neutral,
    Failure { reason: Reason, immediate: bool },
}

const NO_REASON: u8 = u8::MAX;

fn reason_code(r: Option<Reason>) -> u8 {
    r.map_or(NO_REASON, |r| r as u8)
}

fn reason_of(code: u8) -> Option<Reason> {
    Reason::ALL.get(usize::from(code)).copied()
}

/// A probe in flight in the current half-open cycle.
#[derive(Debug, Clone, Copy)]
struct Probe {
    ticket: u64,
    lease_until: Nanos,
}

/// State that only changes under the lock: backoff, probe slots, the jitter source.
#[derive(Debug)]
struct Slow {
    level: u32,
    closed_since: Nanos,
    probes: Vec<Option<Probe>>,
    successes: u32,
    next_ticket: u64,
    rng: fastrand::Rng,
}

impl Slow {
    fn new_cycle(&mut self) {
        self.probes.iter_mut().for_each(|p| *p = None);
        self.successes = 0;
    }

    /// Frees the slot of the probe holding `ticket`; false when it no longer holds it (its
    /// lease expired and the slot moved on, or a new cycle began).
    fn take_probe(&mut self, slot: usize, ticket: u64) -> bool {
        match self.probes.get_mut(slot) {
            Some(p @ Some(_)) if p.is_some_and(|p| p.ticket == ticket) => {
                *p = None;
                true
            }
            _ => false,
        }
    }
}

/// The failures a breaker recorded since the shared backend last added them to the fleet's
/// count. Touched only on the failure path, and only when fleet-wide counting is on.
#[cfg(feature = "redis")]
#[derive(Default)]
struct FleetCount {
    on: std::sync::atomic::AtomicBool,
    pending: AtomicU32,
    reason: AtomicU8,
}

pub(crate) struct Shared {
    /// Automatic state, override mode and generation (see `state.rs`).
    word: AtomicU64,
    /// When the automatic open state ends.
    open_until: AtomicU64,
    /// When the override ends (`u64::MAX`: until changed).
    mode_until: AtomicU64,
    /// The Retry-After floor: no open state ends before it.
    floor_until: AtomicU64,
    /// While every half-open probe slot is taken: when the earliest lease ends (0 otherwise).
    /// Lets a rejection in half-open skip the lock.
    probes_full_until: AtomicU64,
    /// The reason of the current open state (`NO_REASON` when none).
    open_reason: AtomicU8,
    /// The fleet gate on leaving the open state (see [`gate`]): [`gate::LOCAL`] (no shared
    /// backend, or it is down: the breaker goes half-open on its own), [`gate::HELD`] (another
    /// replica may be probing: stay open) or the generation of the open state whose
    /// half-open cycle this replica was granted.
    gate: AtomicU64,
    consecutive: AtomicU32,
    window: Window,
    /// Failures not yet added to the fleet's count (fleet-wide counting, see
    /// [`crate::state`]).
    #[cfg(feature = "redis")]
    fleet: FleetCount,
    slow: Mutex<Slow>,
    policy: BreakerPolicy,
    clock: Clock,
    provider: Arc<str>,
    model: Arc<str>,
    /// `model` is `*`: rejections say the whole provider is out.
    provider_wide: bool,
    listener: Option<Listener>,
}

/// A circuit breaker for one provider (provider-wide) or one model.
///
/// Cheap to clone (clones share the breaker). See the [module docs](self) for the design.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("provider", &self.shared.provider)
            .field("model", &self.shared.model)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Breaker`].
#[must_use]
pub struct BreakerBuilder {
    policy: BreakerPolicy,
    provider: Arc<str>,
    model: Arc<str>,
    listener: Option<Listener>,
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("policy", &self.policy)
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

impl BreakerBuilder {
    /// The policy. Default: [`BreakerPolicy::default`].
    pub fn policy(mut self, policy: BreakerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The provider and model this breaker guards, for telemetry. Default: provider
    /// `default`, model `*` (provider-wide).
    pub fn target(mut self, provider: &str, model: &str) -> Self {
        self.provider = provider.into();
        self.model = model.into();
        self
    }

    /// Calls `listener` with every transition. Default: none (the tracing event only).
    pub fn on_transition(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The breaker, closed.
    pub fn build(self) -> Breaker {
        self.build_with_clock(Clock::default())
    }

    /// The breaker on an injected clock (tests step a mock clock instead of sleeping).
    pub(crate) fn build_with_clock(self, clock: Clock) -> Breaker {
        let window = match self.policy.window {
            WindowKind::Count { calls } => Window::Count(CountRing::new(calls)),
            WindowKind::Time { span, buckets } => Window::Time(TimeBuckets::new(
                buckets,
                nanos_of(span) / u64::from(buckets.max(1)),
            )),
        };
        let now = clock.now();
        let slow = Slow {
            level: 0,
            closed_since: now,
            probes: vec![None; self.policy.half_open_probes as usize],
            successes: 0,
            next_ticket: 0,
            rng: match &clock {
                Clock::System(_) => fastrand::Rng::new(),
                #[cfg(test)]
                Clock::Mock(_) => fastrand::Rng::with_seed(7),
            },
        };
        Breaker {
            shared: Arc::new(Shared {
                word: AtomicU64::new(0),
                open_until: AtomicU64::new(0),
                mode_until: AtomicU64::new(u64::MAX),
                floor_until: AtomicU64::new(0),
                probes_full_until: AtomicU64::new(0),
                open_reason: AtomicU8::new(NO_REASON),
                gate: AtomicU64::new(gate::LOCAL),
                consecutive: AtomicU32::new(0),
                window,
                #[cfg(feature = "redis")]
                fleet: FleetCount::default(),
                slow: Mutex::new(slow),
                policy: self.policy,
                clock,
                provider_wide: &*self.model == PROVIDER_WIDE,
                provider: self.provider,
                model: self.model,
                listener: self.listener,
            }),
        }
    }
}

/// A point-in-time view of a breaker, for status pages.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The reported state (an override if one is set).
    pub state: State,
    /// The automatic state under any override.
    pub automatic: State,
    /// The reason of the current or last open state.
    pub reason: Option<Reason>,
    /// When the current open (or forced-open) state ends.
    pub open_until: Option<SystemTime>,
    /// Consecutive counted failures.
    pub consecutive_failures: u32,
    /// Calls in the failure-rate window.
    pub window_calls: u32,
    /// Failures in the failure-rate window.
    pub window_failures: u32,
}

impl Breaker {
    /// A closed breaker with `policy`.
    #[must_use]
    pub fn new(policy: BreakerPolicy) -> Self {
        Self::builder().policy(policy).build()
    }

    /// A builder with the default policy.
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder {
            policy: BreakerPolicy::default(),
            provider: "default".into(),
            model: PROVIDER_WIDE.into(),
            listener: None,
        }
    }

    /// Asks to make an attempt: a [`Permit`] to settle with the outcome, or why not and when to
    /// come back. When closed this is one atomic load; a rejection allocates nothing.
    ///
    /// # Errors
    ///
    /// [`Rejected`] while open, forced open, or half-open with every probe slot taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let w = self.shared.word.load(Ordering::Acquire);
        if w & (AUTO_MASK | MODE_MASK) == CLOSED | NORMAL {
            return Ok(Permit {
                shared: &self.shared,
                kind: PermitKind::Closed {
                    generation: generation(w),
                },
            });
        }
        if w & (AUTO_MASK | MODE_MASK) == OPEN | NORMAL {
            // Rejection while open: no lock, no allocation, no call out of line, and the
            // refreshed clock rather than a clock read (see `clock.rs`). Near the end of the
            // open time, where that clock may lag, the slow path reads the real one.
            let s = &*self.shared;
            let now = s.clock.recent();
            let until = s.open_until.load(Ordering::Acquire);
            if now.saturating_add(RECENT_LAG) < until {
                return Err(s.rejected(State::Open, Some(until - now)));
            }
        }
        self.shared.acquire_slow(w)
    }

    /// As [`try_acquire`](Self::try_acquire), with a permit that owns a handle on the breaker.
    ///
    /// # Errors
    ///
    /// [`Rejected`] as [`try_acquire`](Self::try_acquire).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        self.try_acquire()
            .map(|p| p.into_owned(Arc::clone(&self.shared)))
    }

    /// Runs `fut` if the breaker admits it, times it and records its outcome. If the returned
    /// future is dropped before `fut` completes, the attempt counts as neither success nor
    /// failure (a half-open probe slot is freed).
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use llm_failover::{Reason, breaker::{Breaker, BreakerPolicy, CallError}};
    ///
    /// let breaker = Breaker::new(BreakerPolicy::builder().consecutive_failures(1).build()?);
    /// let first = breaker.call(async { Err::<(), _>(Reason::ConnectionRefused) }).await;
    /// assert!(matches!(first, Err(CallError::Inner(Reason::ConnectionRefused))));
    /// let second = breaker.call(async { Ok::<_, Reason>(42) }).await;
    /// assert!(matches!(second, Err(CallError::Rejected(_))));
    /// # Ok::<(), llm_failover::breaker::PolicyError>(())
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`CallError::Rejected`] without running `fut` when the breaker rejects it;
    /// [`CallError::Inner`] with `fut`'s error otherwise.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: Failure,
    {
        let permit = self.try_acquire().map_err(CallError::Rejected)?;
        let clock = &self.shared.clock;
        let start = clock.now();
        let result = fut.await;
        let took = Duration::from_nanos(clock.now().saturating_sub(start));
        permit.record(Outcome::of(&result, took));
        result.map_err(CallError::Inner)
    }

    /// The reported state (an override if one is set, else the automatic state). Does not
    /// move time-based transitions forward; [`try_acquire`](Self::try_acquire) does.
    #[must_use]
    pub fn state(&self) -> State {
        reported_state(self.shared.word.load(Ordering::Acquire))
    }

    /// How long until the breaker may admit a call again: `None` while it admits calls,
    /// `Some(Duration::MAX)` when an operator holds it open with no end.
    #[must_use]
    pub fn closed_in(&self) -> Option<Duration> {
        let s = &self.shared;
        let w = s.word.load(Ordering::Acquire);
        let until = match (w & MODE_MASK, w & AUTO_MASK) {
            (FORCED_OPEN, _) => s.mode_until.load(Ordering::Acquire),
            (NORMAL, OPEN) => s
                .open_until
                .load(Ordering::Acquire)
                .max(s.floor_until.load(Ordering::Acquire)),
            _ => return None,
        };
        if until == u64::MAX {
            return Some(Duration::MAX);
        }
        Some(Duration::from_nanos(until.saturating_sub(s.clock.now())))
    }

    /// A point-in-time view for status pages.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let s = &self.shared;
        let w = s.word.load(Ordering::Acquire);
        let counts = s.window.counts();
        let open_until = match (w & MODE_MASK, w & AUTO_MASK) {
            (FORCED_OPEN, _) => {
                let until = s.mode_until.load(Ordering::Acquire);
                (until != u64::MAX).then(|| s.clock.wall_at(until))
            }
            (_, OPEN) => Some(s.clock.wall_at(s.open_until.load(Ordering::Acquire))),
            _ => None,
        };
        Snapshot {
            state: reported_state(w),
            automatic: auto_state(w),
            reason: reason_of(s.open_reason.load(Ordering::Relaxed)),
            open_until,
            consecutive_failures: s.consecutive.load(Ordering::Relaxed),
            window_calls: counts.calls,
            window_failures: counts.failures,
        }
    }

    /// A handle to force, disable, reset or adopt this breaker's state at runtime.
    #[must_use]
    pub fn control(&self) -> ControlHandle {
        ControlHandle {
            breaker: self.clone(),
        }
    }

    /// The provider this breaker guards.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.shared.provider
    }

    /// The model this breaker guards (`*` when provider-wide).
    #[must_use]
    pub fn model(&self) -> &str {
        &self.shared.model
    }

    /// The breaker's policy.
    #[must_use]
    pub fn policy(&self) -> &BreakerPolicy {
        &self.shared.policy
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Lets the breaker leave the open state on its own (no shared backend, or it is down).
    #[cfg(feature = "redis")]
    pub(crate) fn gate_local(&self) {
        self.shared.gate.store(gate::LOCAL, Ordering::Release);
    }

    /// Holds the breaker open past its open time until [`grant`](Self::grant) (the shared
    /// backend is up and owns the half-open step).
    #[cfg(feature = "redis")]
    pub(crate) fn gate_hold(&self) {
        self.shared.gate.store(gate::HELD, Ordering::Release);
    }

    /// The generation of the automatic open state when this replica should ask for the
    /// fleet's probe lease: open (no override but metrics-only), open time over, held.
    #[cfg(feature = "redis")]
    pub(crate) fn lease_wanted(&self) -> Option<u64> {
        let s = &self.shared;
        let w = s.word.load(Ordering::Acquire);
        let mode = w & MODE_MASK;
        let eligible = w & AUTO_MASK == OPEN
            && (mode == NORMAL || mode == METRICS_ONLY)
            && s.clock.now() >= s.open_until.load(Ordering::Acquire)
            && s.held(w);
        eligible.then(|| generation(w))
    }

    /// This replica holds the fleet's probe lease for the open state of `generation`: let
    /// it go half-open. False when the breaker has moved on.
    #[cfg(feature = "redis")]
    pub(crate) fn grant(&self, generation_: u64) -> bool {
        let s = &self.shared;
        let w = s.word.load(Ordering::Acquire);
        if w & AUTO_MASK != OPEN || generation(w) != generation_ {
            return false;
        }
        s.gate
            .compare_exchange(gate::HELD, generation_, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The lease for `generation` ran out without a half-open cycle starting: hold again.
    #[cfg(feature = "redis")]
    pub(crate) fn revoke(&self, generation_: u64) {
        let _ = self.shared.gate.compare_exchange(
            generation_,
            gate::HELD,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The current automatic open state: its reason and remaining time (`None` unless open
    /// with time left).
    #[cfg(feature = "redis")]
    pub(crate) fn open_remaining(&self) -> Option<(Reason, Duration)> {
        let s = &self.shared;
        let w = s.word.load(Ordering::Acquire);
        if w & AUTO_MASK != OPEN {
            return None;
        }
        let left = s
            .open_until
            .load(Ordering::Acquire)
            .saturating_sub(s.clock.now());
        let reason = reason_of(s.open_reason.load(Ordering::Relaxed))?;
        (left > 0).then(|| (reason, Duration::from_nanos(left)))
    }

    /// The backoff level: how many consecutive opens the next open time grows by.
    #[cfg(feature = "redis")]
    pub(crate) fn backoff_level(&self) -> u32 {
        self.shared.lock().level
    }

    /// As [`ControlHandle::adopt_open`], raising the backoff level to `level`.
    #[cfg(feature = "redis")]
    pub(crate) fn adopt_open_at(
        &self,
        reason: Reason,
        until: SystemTime,
        level: u32,
    ) -> Option<Transition> {
        self.shared.adopt_open_at(reason, until, Some(level))
    }

    /// Turns fleet-wide failure counting on: failures recorded while closed are queued for
    /// [`take_fleet_failures`](Self::take_fleet_failures).
    #[cfg(feature = "redis")]
    pub(crate) fn count_fleet_failures(&self) {
        self.shared.fleet.on.store(true, Ordering::Release);
    }

    /// The failures queued since the last call, with the reason of the latest (`None` when
    /// there were none).
    #[cfg(feature = "redis")]
    pub(crate) fn take_fleet_failures(&self) -> Option<(u32, Reason)> {
        let s = &self.shared;
        if s.fleet.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let n = s.fleet.pending.swap(0, Ordering::AcqRel);
        let reason = reason_of(s.fleet.reason.load(Ordering::Relaxed)).unwrap_or(Reason::Unknown);
        (n > 0).then_some((n, reason))
    }

    /// The fleet's count of failures reached the threshold: trips the breaker for `reason`
    /// if it is still closed (a local transition, published like any other).
    #[cfg(feature = "redis")]
    pub(crate) fn trip_for_fleet(&self, reason: Reason) -> Option<Transition> {
        let s = &self.shared;
        let w = s.word.load(Ordering::Acquire);
        if w & AUTO_MASK != CLOSED {
            return None;
        }
        s.trip_closed(generation(w), reason)
    }

    /// How long the current override lasts: `None` without one, `Some(None)` with no end.
    #[cfg(feature = "redis")]
    pub(crate) fn override_remaining(&self) -> Option<Option<Duration>> {
        let s = &self.shared;
        if s.word.load(Ordering::Acquire) & MODE_MASK == NORMAL {
            return None;
        }
        let until = s.mode_until.load(Ordering::Acquire);
        Some((until != u64::MAX).then(|| Duration::from_nanos(until.saturating_sub(s.clock.now()))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Issued while closed (also in metrics-only mode): outcomes feed the counters.
    Closed { generation: u64 },
    /// A half-open probe holding a slot.
    Probe {
        generation: u64,
        slot: usize,
        ticket: u64,
    },
    /// Disabled, or metrics-only letting through a call it would have rejected: records
    /// nothing.
    Untracked,
    /// Already settled.
    Settled,
}

/// Permission for one attempt, from [`Breaker::try_acquire`]. Settle it with
/// [`record`](Self::record); dropping it unsettled (a cancelled attempt) counts as neither
/// success nor failure and frees a half-open probe slot.
#[must_use = "settle the permit with `record` so the breaker learns the outcome"]
pub struct Permit<'a> {
    shared: &'a Shared,
    kind: PermitKind,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("kind", &self.kind).finish()
    }
}

impl Permit<'_> {
    /// Settles the attempt. Returns the transition it caused, if any (also emitted as a
    /// tracing event and given to the listener).
    #[inline]
    pub fn record(mut self, outcome: Outcome) -> Option<Transition> {
        let kind = std::mem::replace(&mut self.kind, PermitKind::Settled);
        self.shared.settle(kind, &outcome)
    }

    /// Gives the permit back without an outcome (same as dropping it).
    pub fn release(self) {}

    /// True when this permit is a half-open probe.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        matches!(self.kind, PermitKind::Probe { .. })
    }

    /// The same permit, owning a handle on its breaker so it can outlive the borrow (a stream
    /// handed to a caller holds its permit until it ends).
    fn into_owned(mut self, shared: Arc<Shared>) -> OwnedPermit {
        let kind = std::mem::replace(&mut self.kind, PermitKind::Settled);
        OwnedPermit { shared, kind }
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.shared.give_back(self.kind);
    }
}

/// A [`Permit`] that owns a handle on its breaker, from [`Breaker::try_acquire_owned`]: for
/// attempts that outlive the borrow of the breaker, such as a stream returned to a caller.
#[must_use = "settle the permit with `record` so the breaker learns the outcome"]
pub struct OwnedPermit {
    shared: Arc<Shared>,
    kind: PermitKind,
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("kind", &self.kind)
            .finish()
    }
}

impl OwnedPermit {
    /// Settles the attempt, as [`Permit::record`].
    pub fn record(mut self, outcome: Outcome) -> Option<Transition> {
        let kind = std::mem::replace(&mut self.kind, PermitKind::Settled);
        self.shared.settle(kind, &outcome)
    }

    /// Gives the permit back without an outcome (same as dropping it).
    pub fn release(self) {}
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.shared.give_back(self.kind);
    }
}

impl Shared {
    /// Records the outcome of a permit of `kind` (taken out of the permit, which is left
    /// settled, so dropping it afterwards does nothing).
    #[inline]
    fn settle(&self, kind: PermitKind, outcome: &Outcome) -> Option<Transition> {
        match kind {
            PermitKind::Closed { generation } => self.record_closed(generation, outcome),
            PermitKind::Probe {
                generation,
                slot,
                ticket,
            } => self.record_probe(generation, slot, ticket, outcome),
            PermitKind::Untracked | PermitKind::Settled => None,
        }
    }

    /// A permit of `kind` is dropped unsettled: a probe frees its slot, nothing else happens.
    #[inline]
    fn give_back(&self, kind: PermitKind) {
        if let PermitKind::Probe {
            generation,
            slot,
            ticket,
        } = kind
        {
            self.release_probe(generation, slot, ticket);
        }
    }
}

impl Shared {
    /// Starts a new probe cycle: every slot free.
    fn new_cycle(&self, slow: &mut Slow) {
        slow.new_cycle();
        self.probes_full_until.store(0, Ordering::Release);
    }

    /// Frees a probe's slot; false when the slot no longer belongs to it.
    fn take_probe(&self, slow: &mut Slow, slot: usize, ticket: u64) -> bool {
        let taken = slow.take_probe(slot, ticket);
        if taken {
            self.probes_full_until.store(0, Ordering::Release);
        }
        taken
    }

    fn lock(&self) -> MutexGuard<'_, Slow> {
        // The lock guards plain counters that every writer leaves consistent; a panic elsewhere
        // while holding it cannot leave them half-written, so poisoning is ignored.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, t: &Transition) {
        t.emit();
        if let Some(listener) = &self.listener {
            listener(t);
        }
    }

    fn publish_opt(&self, t: Option<Transition>) -> Option<Transition> {
        if let Some(t) = &t {
            self.publish(t);
        }
        t
    }

    #[inline]
    fn rejected(&self, state: State, retry_after: Option<Nanos>) -> Rejected {
        Rejected::new(
            state,
            self.open_reason.load(Ordering::Relaxed),
            retry_after.map_or(u64::MAX, |n| {
                n.saturating_add(self.clock.slack()).min(u64::MAX - 1)
            }),
            self.provider_wide,
        )
    }

    fn transition(
        &self,
        from: State,
        to: State,
        reason: Option<Reason>,
        open: Option<(Nanos, Nanos)>,
        origin: Origin,
        shadow: bool,
    ) -> Transition {
        Transition {
            provider: self.provider.clone(),
            model: self.model.clone(),
            from,
            to,
            reason,
            open_until: open.map(|(_, until)| self.clock.wall_at(until)),
            open_for: open.map(|(now, until)| Duration::from_nanos(until.saturating_sub(now))),
            origin,
            shadow,
            generation: generation(self.word.load(Ordering::Acquire)),
        }
    }

    #[cold]
    fn acquire_slow(&self, mut w: u64) -> Result<Permit<'_>, Rejected> {
        loop {
            let mode = w & MODE_MASK;
            if mode != NORMAL {
                let until = self.mode_until.load(Ordering::Acquire);
                let now = if until == u64::MAX {
                    0
                } else {
                    self.clock.now()
                };
                if until != u64::MAX && now >= until {
                    self.expire_mode(w, now);
                    w = self.word.load(Ordering::Acquire);
                    continue;
                }
                match mode {
                    FORCED_OPEN => {
                        let retry = (until != u64::MAX).then(|| until - now);
                        return Err(self.rejected(State::ForcedOpen, retry));
                    }
                    DISABLED => {
                        return Ok(Permit {
                            shared: self,
                            kind: PermitKind::Untracked,
                        });
                    }
                    _ => {}
                }
            }
            let result = match w & AUTO_MASK {
                CLOSED => Ok(Permit {
                    shared: self,
                    kind: PermitKind::Closed {
                        generation: generation(w),
                    },
                }),
                OPEN => {
                    let now = self.clock.now();
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        Err(self.rejected(State::Open, Some(until - now)))
                    } else if self.held(w) {
                        // Another replica may be probing: stay open until the backend grants
                        // this replica the fleet's probe lease (or gives up the gate).
                        Err(self.rejected(State::Open, Some(nanos_of(gate::RETRY))))
                    } else {
                        self.open_to_half_open(w);
                        w = self.word.load(Ordering::Acquire);
                        continue;
                    }
                }
                _ => match self.try_probe_fast().or_else(|| self.try_probe(w)) {
                    Some(result) => result,
                    None => {
                        w = self.word.load(Ordering::Acquire);
                        continue;
                    }
                },
            };
            return match result {
                Err(_) if mode == METRICS_ONLY => Ok(Permit {
                    shared: self,
                    kind: PermitKind::Untracked,
                }),
                other => other,
            };
        }
    }

    /// True when the fleet gate keeps the open state of word `w` from going half-open.
    #[inline]
    fn held(&self, w: u64) -> bool {
        let g = self.gate.load(Ordering::Acquire);
        g != gate::LOCAL && g != generation(w)
    }

    /// Open time is over: start a half-open cycle (unless another thread already moved on).
    fn open_to_half_open(&self, w: u64) {
        let mut slow = self.lock();
        if self.word.load(Ordering::Acquire) != w || self.held(w) {
            return;
        }
        let now = self.clock.now();
        if now < self.open_until.load(Ordering::Acquire) {
            return;
        }
        self.new_cycle(&mut slow);
        self.word
            .store(next_word(w, HALF_OPEN, w & MODE_MASK), Ordering::Release);
        let t = self.transition(
            State::Open,
            State::HalfOpen,
            None,
            None,
            Origin::Local,
            w & MODE_MASK != NORMAL,
        );
        drop(slow);
        self.publish(&t);
    }

    /// Rejects without the lock while every probe slot is taken and no lease has ended.
    #[inline]
    fn try_probe_fast(&self) -> Option<Result<Permit<'_>, Rejected>> {
        let full_until = self.probes_full_until.load(Ordering::Acquire);
        if full_until == 0 {
            return None;
        }
        let now = self.clock.now();
        (now < full_until).then(|| Err(self.rejected(State::HalfOpen, Some(full_until - now))))
    }

    /// Admits a probe if a slot is free. `None` when the word moved on (the caller re-reads).
    fn try_probe(&self, w: u64) -> Option<Result<Permit<'_>, Rejected>> {
        let mut slow = self.lock();
        if self.word.load(Ordering::Acquire) != w {
            return None;
        }
        let now = self.clock.now();
        let mut free = None;
        let mut earliest = u64::MAX;
        for (i, p) in slow.probes.iter_mut().enumerate() {
            if p.is_some_and(|p| p.lease_until <= now) {
                // A probe that never settled: its lease is over, its slot is free again.
                *p = None;
            }
            match p {
                None => {
                    free.get_or_insert(i);
                }
                Some(p) => earliest = earliest.min(p.lease_until),
            }
        }
        let Some(slot) = free else {
            self.probes_full_until.store(earliest, Ordering::Release);
            return Some(Err(
                self.rejected(State::HalfOpen, Some(earliest.saturating_sub(now)))
            ));
        };
        let ticket = slow.next_ticket;
        slow.next_ticket += 1;
        let lease_until = now.saturating_add(nanos_of(self.policy.probe_lease));
        if slow.probes.iter().filter(|p| p.is_none()).count() == 1 {
            // This probe takes the last free slot.
            self.probes_full_until
                .store(earliest.min(lease_until), Ordering::Release);
        }
        if let Some(p) = slow.probes.get_mut(slot) {
            *p = Some(Probe {
                ticket,
                lease_until,
            });
        }
        Some(Ok(Permit {
            shared: self,
            kind: PermitKind::Probe {
                generation: generation(w),
                slot,
                ticket,
            },
        }))
    }

    #[inline]
    fn verdict(&self, o: &Outcome) -> Verdict {
        match o.reason {
            None if self.policy.is_slow(o.duration, o.ttft) => Verdict::Failure {
                reason: Reason::Timeout,
                immediate: false,
            },
            None => Verdict::Success,
            Some(reason) => match self.policy.effect(reason) {
                BreakerEffect::Ignore => Verdict::Neutral,
                BreakerEffect::Count => Verdict::Failure {
                    reason,
                    immediate: false,
                },
                BreakerEffect::TripImmediately => Verdict::Failure {
                    reason,
                    immediate: true,
                },
            },
        }
    }

    /// Retry-After is a floor on the open time: it can extend it, never shorten it.
    fn raise_floor(&self, after: Duration) {
        let floor = self
            .clock
            .now()
            .saturating_add(nanos_of(after.min(self.policy.max_retry_after)));
        self.floor_until.fetch_max(floor, Ordering::AcqRel);
        if self.word.load(Ordering::Acquire) & AUTO_MASK == OPEN {
            self.open_until.fetch_max(floor, Ordering::AcqRel);
        }
    }

    #[inline]
    fn record_closed(&self, gen_at_admission: u64, outcome: &Outcome) -> Option<Transition> {
        if let Some(after) = outcome.retry_after {
            self.raise_floor(after);
        }
        if generation(self.word.load(Ordering::Acquire)) != gen_at_admission {
            // Admitted before a transition: this outcome belongs to a state that is gone.
            return None;
        }
        match self.verdict(outcome) {
            Verdict::Success => {
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                self.window.record(false, &self.clock);
                None
            }
            Verdict::Neutral => None,
            Verdict::Failure { reason, immediate } => {
                let run = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                let counts = self.window.record(true, &self.clock);
                #[cfg(feature = "redis")]
                self.count_for_fleet(reason);
                let p = &self.policy;
                let by_run = p.consecutive_failures != 0 && run >= p.consecutive_failures;
                let by_rate = counts.calls >= p.min_calls.max(1)
                    && f64::from(counts.failures) >= p.failure_rate * f64::from(counts.calls);
                if immediate || by_run || by_rate {
                    self.trip_closed(gen_at_admission, reason)
                } else {
                    None
                }
            }
        }
    }

    /// Queues one failure for the fleet's count (a no-op unless fleet-wide counting is on).
    #[cfg(feature = "redis")]
    #[inline]
    fn count_for_fleet(&self, reason: Reason) {
        if self.fleet.on.load(Ordering::Relaxed) {
            self.fleet
                .reason
                .store(reason_code(Some(reason)), Ordering::Relaxed);
            self.fleet.pending.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[cold]
    fn trip_closed(&self, gen_at_admission: u64, reason: Reason) -> Option<Transition> {
        let mut slow = self.lock();
        let w = self.word.load(Ordering::Acquire);
        if generation(w) != gen_at_admission || w & AUTO_MASK != CLOSED {
            return None;
        }
        let now = self.clock.now();
        let decay = nanos_of(self.policy.backoff_decay).max(1);
        let healthy_periods = now.saturating_sub(slow.closed_since) / decay;
        slow.level = slow
            .level
            .saturating_sub(u32::try_from(healthy_periods).unwrap_or(u32::MAX));
        let t = self.open_locked(&mut slow, w, now, reason, Origin::Local, None);
        drop(slow);
        self.publish(&t);
        Some(t)
    }

    /// Opens the automatic state machine. Backoff grows one level unless the deadline is
    /// adopted from elsewhere; the Retry-After floor always applies.
    fn open_locked(
        &self,
        slow: &mut Slow,
        w: u64,
        now: Nanos,
        reason: Reason,
        origin: Origin,
        adopted_until: Option<Nanos>,
    ) -> Transition {
        let deadline = match adopted_until {
            Some(until) => until,
            None => {
                let unit = slow.rng.f64();
                let open_for = self.policy.open_for(reason, slow.level, unit);
                slow.level = slow.level.saturating_add(1);
                now.saturating_add(open_for)
            }
        };
        let deadline = deadline.max(self.floor_until.load(Ordering::Acquire));
        self.open_until.store(deadline, Ordering::Release);
        self.open_reason
            .store(reason_code(Some(reason)), Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.window.clear();
        #[cfg(feature = "redis")]
        self.fleet.pending.store(0, Ordering::Release);
        self.new_cycle(slow);
        self.word
            .store(next_word(w, OPEN, w & MODE_MASK), Ordering::Release);
        self.transition(
            auto_state(w),
            State::Open,
            Some(reason),
            Some((now, deadline)),
            origin,
            w & MODE_MASK != NORMAL,
        )
    }

    fn close_locked(&self, slow: &mut Slow, w: u64, now: Nanos, origin: Origin) -> Transition {
        self.consecutive.store(0, Ordering::Relaxed);
        self.window.clear();
        self.open_reason.store(NO_REASON, Ordering::Relaxed);
        slow.closed_since = now;
        self.new_cycle(slow);
        self.word
            .store(next_word(w, CLOSED, w & MODE_MASK), Ordering::Release);
        self.transition(
            auto_state(w),
            State::Closed,
            None,
            None,
            origin,
            w & MODE_MASK != NORMAL,
        )
    }

    fn record_probe(
        &self,
        gen_at_admission: u64,
        slot: usize,
        ticket: u64,
        outcome: &Outcome,
    ) -> Option<Transition> {
        if let Some(after) = outcome.retry_after {
            self.raise_floor(after);
        }
        let verdict = self.verdict(outcome);
        let mut slow = self.lock();
        let w = self.word.load(Ordering::Acquire);
        if generation(w) != gen_at_admission || !self.take_probe(&mut slow, slot, ticket) {
            return None;
        }
        let now = self.clock.now();
        let t = match verdict {
            Verdict::Success => {
                slow.successes += 1;
                (slow.successes >= self.policy.half_open_successes)
                    .then(|| self.close_locked(&mut slow, w, now, Origin::Local))
            }
            Verdict::Neutral => None,
            Verdict::Failure { reason, .. } => {
                Some(self.open_locked(&mut slow, w, now, reason, Origin::Local, None))
            }
        };
        drop(slow);
        self.publish_opt(t)
    }

    fn release_probe(&self, gen_at_admission: u64, slot: usize, ticket: u64) {
        let mut slow = self.lock();
        if generation(self.word.load(Ordering::Acquire)) == gen_at_admission {
            self.take_probe(&mut slow, slot, ticket);
        }
    }

    /// An override's duration is over: back to the automatic state machine (a forced open
    /// hands over to a half-open cycle, so a probe confirms health first).
    fn expire_mode(&self, w: u64, now: Nanos) {
        let mut slow = self.lock();
        if self.word.load(Ordering::Acquire) != w || now < self.mode_until.load(Ordering::Acquire) {
            return;
        }
        let auto = match w & MODE_MASK {
            FORCED_OPEN => HALF_OPEN,
            _ => w & AUTO_MASK,
        };
        self.new_cycle(&mut slow);
        self.mode_until.store(u64::MAX, Ordering::Release);
        let new = next_word(w, auto, NORMAL);
        self.word.store(new, Ordering::Release);
        let t = self.transition(
            reported_state(w),
            reported_state(new),
            None,
            None,
            Origin::Control,
            false,
        );
        drop(slow);
        self.publish(&t);
    }

    /// Sets an override mode (or clears it with `NORMAL`) for `duration` (`None`: until
    /// changed).
    fn set_mode(&self, mode: u64, duration: Option<Duration>) -> Option<Transition> {
        let mut slow = self.lock();
        let now = self.clock.now();
        let w = self.word.load(Ordering::Acquire);
        let until = duration.map_or(u64::MAX, |d| now.saturating_add(nanos_of(d)));
        self.mode_until.store(until, Ordering::Release);
        self.new_cycle(&mut slow);
        let new = next_word(w, w & AUTO_MASK, mode);
        self.word.store(new, Ordering::Release);
        let (from, to) = (reported_state(w), reported_state(new));
        let open = (mode == FORCED_OPEN && until != u64::MAX).then_some((now, until));
        let t = (from != to).then(|| self.transition(from, to, None, open, Origin::Control, false));
        drop(slow);
        self.publish_opt(t)
    }

    fn reset(&self) -> Option<Transition> {
        let mut slow = self.lock();
        let now = self.clock.now();
        let w = self.word.load(Ordering::Acquire);
        self.open_until.store(0, Ordering::Release);
        self.floor_until.store(0, Ordering::Release);
        self.mode_until.store(u64::MAX, Ordering::Release);
        slow.level = 0;
        let t = self.close_locked(&mut slow, w & !MODE_MASK, now, Origin::Control);
        // `close_locked` built the word from `w` without its mode; keep the generation moving.
        let from = reported_state(w);
        drop(slow);
        (from != State::Closed).then(|| {
            let t = Transition { from, ..t };
            self.publish(&t);
            t
        })
    }

    fn adopt_open(&self, reason: Reason, until: SystemTime) -> Option<Transition> {
        self.adopt_open_at(reason, until, None)
    }

    /// As `adopt_open`; with `level`, the backoff level of the replica that opened it, which
    /// this breaker's level rises to (so whichever replica probes next backs off as far).
    pub(crate) fn adopt_open_at(
        &self,
        reason: Reason,
        until: SystemTime,
        level: Option<u32>,
    ) -> Option<Transition> {
        let mut slow = self.lock();
        if let Some(level) = level {
            slow.level = slow.level.max(level);
        }
        let now = self.clock.now();
        let deadline = self.clock.mono_at(until);
        if deadline <= now {
            return None;
        }
        let w = self.word.load(Ordering::Acquire);
        if w & AUTO_MASK == OPEN {
            self.open_until.fetch_max(deadline, Ordering::AcqRel);
            return None;
        }
        let t = self.open_locked(&mut slow, w, now, reason, Origin::Remote, Some(deadline));
        drop(slow);
        self.publish(&t);
        Some(t)
    }

    fn adopt_closed(&self) -> Option<Transition> {
        let mut slow = self.lock();
        let w = self.word.load(Ordering::Acquire);
        if w & AUTO_MASK == CLOSED {
            return None;
        }
        let now = self.clock.now();
        if w & AUTO_MASK == OPEN && self.floor_until.load(Ordering::Acquire) > now {
            // A Retry-After seen here still holds: another replica's probe does not lift it.
            return None;
        }
        let t = self.close_locked(&mut slow, w, now, Origin::Remote);
        drop(slow);
        self.publish(&t);
        Some(t)
    }
}
