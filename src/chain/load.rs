//! What each target is doing right now: requests in flight, a latency average, and the
//! concurrency limit that sheds traffic past it.
//!
//! # Why a board of its own, shared by the routes
//!
//! A target's load is a fact about the target, not about one route: two routes that both use
//! `openai/gpt-4o-mini` put their requests on the same key and the same limit. So the counts
//! live in [`Loads`], one [`Load`] per (provider, model), and every route built with the same
//! board shares them (the proxy builds one board for all its routes). They are not in the
//! breaker registry on purpose: the breaker hears only a reason and a duration after an
//! attempt, while the load is read before one, moves twice per attempt and must not contend
//! with the breaker's closed path (one atomic load). A route resolves its targets' loads when
//! it is built, so a request touches atomics only, never the board's map.
//!
//! # The latency average
//!
//! `least_loaded` picks by in-flight requests weighted by a peak-sensitive, time-decayed
//! moving average of latency (Finagle's "peak EWMA"): a sample above the average replaces it
//! at once, a lower one pulls it down by how long it has been since the last sample, and an
//! idle target's average decays towards zero, so a target that was slow once is tried again
//! after a while instead of being starved for good. A target with requests in flight but no
//! sample yet costs a large penalty, so a burst does not pile onto a target nobody has timed.
//!
//! ```
//! use llm_failover::chain::Loads;
//!
//! let loads = Loads::new();
//! loads.set_max_inflight("openai", "gpt-4o-mini", Some(8));
//! let load = loads.target("openai", "gpt-4o-mini");
//! assert_eq!((load.inflight(), load.max_inflight()), (0, Some(8)));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::rate::{Limiter, Quota, RateLimits};
use super::{ShedCause, telemetry};

/// How fast the latency average forgets by default (Finagle's default decay time).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// The cost of a target with requests in flight and no latency sample yet, in seconds.
const PENALTY: f64 = 1e9;

/// [`Load`] flag: the in-flight count is read by something, so it is kept.
const COUNTED: u8 = 1;
/// [`Load`] flag: rate limits or an adopted quota apply.
const LIMITED: u8 = 2;

/// Loads by (provider, model).
type Board = HashMap<(Arc<str>, Arc<str>), Arc<Load>>;

/// The load of every target, shared by the routes built with it.
///
/// A target's load is a fact about the target, not about one route: two routes that use
/// `openai/gpt-4o-mini` put their requests on the same key and the same limit, so routes
/// built with one board ([`RouteBuilder::loads`](super::RouteBuilder::loads)) count them
/// together. It is not part of the breaker registry on purpose: a breaker hears only a reason
/// and a duration after an attempt, while the load is read before one, moves twice per
/// attempt, and must not contend with the breaker's closed path. A route resolves its
/// targets' loads when it is built, so a request touches atomics only, never this map.
///
/// `least_loaded` weighs in-flight requests by a peak-sensitive, time-decayed latency average
/// (Finagle's "peak EWMA"): a sample above the average replaces it at once, a lower one pulls
/// it down by how long it has been since the last sample, and an idle target's average
/// decays towards zero, so a target that was slow once is tried again after a while instead
/// of being starved for good. A target with requests in flight and no sample yet costs a
/// large penalty, so a burst does not pile onto a target nobody has timed.
pub struct Loads {
    decay: Duration,
    map: Mutex<Board>,
    /// Provider-wide concurrency limits, by provider.
    providers: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
}

/// A provider-wide count of requests in flight and its limit, shared by the provider's
/// targets.
#[derive(Debug, Default)]
struct Gate {
    inflight: AtomicU32,
    /// 0: no limit.
    max: AtomicU32,
}

impl Gate {
    fn try_enter(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            self.inflight.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn leave(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Loads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_list().entries(map.values()).finish()
    }
}

impl Default for Loads {
    fn default() -> Self {
        Self::new()
    }
}

impl Loads {
    /// An empty board whose latency averages decay over [`DEFAULT_DECAY`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            decay: DEFAULT_DECAY,
            map: Mutex::new(HashMap::new()),
            providers: Mutex::new(HashMap::new()),
        }
    }

    /// How fast the latency averages of targets added from now on forget: a sample's weight
    /// falls by `1/e` per `decay` of time. Zero keeps only the last sample and forgets it at
    /// once. Default: [`DEFAULT_DECAY`] (10 s).
    #[must_use]
    pub fn with_decay(mut self, decay: Duration) -> Self {
        self.decay = decay;
        self
    }

    /// The load of `model` of `provider`, added (idle, no limit) if it is not on the board.
    pub fn target(&self, provider: &str, model: &str) -> Arc<Load> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = map.get(&(Arc::from(provider), Arc::from(model))) {
            return Arc::clone(l);
        }
        let load = Arc::new(Load::new(provider.into(), model.into(), self.decay));
        let gate = self
            .providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(provider)
            .map(Arc::clone);
        if let Some(gate) = gate {
            load.attach(gate);
        }
        map.insert(
            (Arc::clone(&load.provider), Arc::clone(&load.model)),
            Arc::clone(&load),
        );
        load
    }

    /// The load of `model` of `provider`, if a route or a limit put it on the board.
    #[must_use]
    pub fn get(&self, provider: &str, model: &str) -> Option<Arc<Load>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(Arc::from(provider), Arc::from(model)))
            .map(Arc::clone)
    }

    /// Limits `model` of `provider` to `max` requests in flight (`None`: no limit, the
    /// default). A request past the limit skips the target as if its breaker were open (see
    /// [`ShedCause::Concurrency`](super::ShedCause::Concurrency)). Takes effect at once, for
    /// every route that uses the target.
    pub fn set_max_inflight(&self, provider: &str, model: &str, max: Option<u32>) {
        self.target(provider, model).set_max_inflight(max);
    }

    /// Limits `provider` to `max` requests in flight over all its models together (`None`:
    /// no provider-wide limit, the default), on top of each target's own
    /// [`set_max_inflight`](Self::set_max_inflight). A request past it skips the target like
    /// one at its own limit ([`ShedCause::Concurrency`]). Takes effect at once, for the
    /// provider's targets on the board and those added later.
    ///
    /// ```
    /// use llm_failover::chain::Loads;
    ///
    /// let loads = Loads::new();
    /// loads.set_provider_max_inflight("openai", Some(64));
    /// assert_eq!(loads.provider_inflight("openai"), Some((0, Some(64))));
    /// ```
    pub fn set_provider_max_inflight(&self, provider: &str, max: Option<u32>) {
        let gate = {
            let mut gates = self
                .providers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if max.is_none() && !gates.contains_key(provider) {
                // Nothing to lift, and counting a provider without a limit costs.
                return;
            }
            Arc::clone(gates.entry(Arc::from(provider)).or_default())
        };
        gate.max.store(max.unwrap_or(0), Ordering::Relaxed);
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        for load in map.values().filter(|l| *l.provider == *provider) {
            load.attach(Arc::clone(&gate));
        }
    }

    /// The provider-wide requests in flight and limit of `provider`, if one was set with
    /// [`set_provider_max_inflight`](Self::set_provider_max_inflight).
    #[must_use]
    pub fn provider_inflight(&self, provider: &str) -> Option<(u32, Option<u32>)> {
        let gates = self
            .providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gate = gates.get(provider)?;
        let max = gate.max.load(Ordering::Relaxed);
        Some((
            gate.inflight.load(Ordering::Acquire),
            (max > 0).then_some(max),
        ))
    }

    /// Limits `model` of `provider` to requests and tokens per minute (see [`RateLimits`]).
    /// A request over a limit skips the target as if its breaker were open
    /// ([`ShedCause::RequestRate`], [`ShedCause::TokenRate`]). Takes effect at once, for
    /// every route that uses the target.
    pub fn set_rate_limits(&self, provider: &str, model: &str, limits: RateLimits) {
        self.target(provider, model).set_rate_limits(limits);
    }

    /// Ramps `model` of `provider` up slowly after its breaker closes (see [`SlowStart`];
    /// `None`: back in one step, the default).
    pub fn set_slow_start(&self, provider: &str, model: &str, slow_start: Option<SlowStart>) {
        self.target(provider, model).set_slow_start(slow_start);
    }

    /// Every target on the board.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Load>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().map(Arc::clone).collect()
    }
}

/// Slow start after a recovery (Envoy's): when a target's breaker closes after an outage,
/// its share of traffic within its tier grows with the time since, over `window`, instead of
/// coming back in one step. The share is `max(min_weight, (elapsed / window)^(1 /
/// aggression))`: an aggression of 1 ramps linearly, above 1 faster at first. Traffic the
/// ramp holds back goes to the tier's other targets; a target alone in its tier is admitted
/// (a ramp never fails a request).
///
/// ```
/// use std::time::Duration;
/// use llm_failover::chain::{Loads, SlowStart};
///
/// let loads = Loads::new();
/// let ramp = SlowStart::new(Duration::from_secs(30)).aggression(2.0).min_weight(0.05);
/// loads.set_slow_start("openai", "gpt-4o-mini", Some(ramp));
/// // Not ramping until a recovery.
/// assert_eq!(loads.target("openai", "gpt-4o-mini").ramp(), 1.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SlowStart {
    /// How long the ramp lasts.
    pub window: Duration,
    /// How fast it rises early: 1 is linear, higher is faster at first (Envoy's
    /// `aggression`). Default 1.
    pub aggression: f64,
    /// The share the ramp starts from, 0 to 1. Default 0.1 (Envoy's `min_weight_percent`
    /// of 10).
    pub min_weight: f64,
}

impl SlowStart {
    /// A linear ramp over `window` from a tenth of the share.
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            aggression: 1.0,
            min_weight: 0.1,
        }
    }

    /// The aggression (values at or below 0 count as 1).
    #[must_use]
    pub fn aggression(mut self, aggression: f64) -> Self {
        self.aggression = if aggression > 0.0 { aggression } else { 1.0 };
        self
    }

    /// The share the ramp starts from, clamped to 0..=1.
    #[must_use]
    pub fn min_weight(mut self, min_weight: f64) -> Self {
        self.min_weight = min_weight.clamp(0.0, 1.0);
        self
    }

    /// The share after `elapsed` of the ramp.
    fn share(&self, elapsed: Duration) -> f64 {
        if elapsed >= self.window || self.window.is_zero() {
            return 1.0;
        }
        let t = elapsed.max(Duration::from_millis(1)).as_secs_f64() / self.window.as_secs_f64();
        t.powf(1.0 / self.aggression).max(self.min_weight).min(1.0)
    }
}

/// One target's load: requests in flight, its limit, and its latency average.
pub struct Load {
    provider: Arc<str>,
    model: Arc<str>,
    inflight: AtomicU32,
    /// 0: no limit.
    max: AtomicU32,
    /// The latency average in seconds (`f64` bits).
    ewma: AtomicU64,
    /// When the last sample came, in nanoseconds since `epoch`.
    stamp: AtomicU64,
    epoch: Instant,
    /// The decay time in seconds.
    decay: f64,
    /// Some `least_loaded` tier reads the latency average: keep it. Until then the closed
    /// path skips the clock read and the arithmetic.
    timed: AtomicBool,
    /// [`COUNTED`]: something reads the in-flight count (a limit, a `least_loaded` tier), so
    /// count it; until then the closed path skips the counting and the gauge. [`LIMITED`]:
    /// rate limits are set or a provider's quota was adopted, so ask the limiter; until then
    /// the closed path does not take its lock. One word, so a plain target costs one load.
    flags: AtomicU8,
    limiter: Mutex<Limiter>,
    /// The slow start, if one is set.
    slow_start: Mutex<Option<SlowStart>>,
    /// A slow start is set (its window in nanoseconds; 0: none).
    slow_window: AtomicU64,
    /// When the current ramp began, in nanoseconds since `epoch` plus one (0: no ramp).
    ramp_from: AtomicU64,
    /// The provider-wide limit, once one is set.
    gate: OnceLock<Arc<Gate>>,
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("inflight", &self.inflight())
            .field("max_inflight", &self.max_inflight())
            .field("latency", &self.latency())
            .finish()
    }
}

impl Load {
    fn new(provider: Arc<str>, model: Arc<str>, decay: Duration) -> Self {
        Self {
            provider,
            model,
            inflight: AtomicU32::new(0),
            max: AtomicU32::new(0),
            ewma: AtomicU64::new(0_f64.to_bits()),
            stamp: AtomicU64::new(0),
            epoch: Instant::now(),
            decay: decay.as_secs_f64(),
            timed: AtomicBool::new(false),
            flags: AtomicU8::new(0),
            limiter: Mutex::new(Limiter::new(Instant::now())),
            slow_start: Mutex::new(None),
            slow_window: AtomicU64::new(0),
            ramp_from: AtomicU64::new(0),
            gate: OnceLock::new(),
        }
    }

    /// The provider, as configured.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The model, as configured.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Requests in flight now (for a stream: until it ends). Counted only once something
    /// needs the count: a concurrency limit ([`set_max_inflight`](Self::set_max_inflight)),
    /// a `least_loaded` tier, or [`count`](Self::count); until then 0, and the
    /// `llm_failover_inflight` gauge does not move, so a plain target's closed path costs
    /// nothing more than before limits existed.
    #[must_use]
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Acquire)
    }

    /// The concurrency limit, if any.
    #[must_use]
    pub fn max_inflight(&self) -> Option<u32> {
        match self.max.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Sets the concurrency limit (`None`, or `Some(0)`: no limit). A limit turns on the
    /// count (see [`inflight`](Self::inflight)).
    pub fn set_max_inflight(&self, max: Option<u32>) {
        let max = max.unwrap_or(0);
        if max > 0 {
            self.count();
        }
        self.max.store(max, Ordering::Relaxed);
    }

    /// Counts the requests in flight (and moves the `llm_failover_inflight` gauge) from now
    /// on, without a limit. Requests already in flight are not counted.
    ///
    /// ```
    /// use llm_failover::chain::Loads;
    ///
    /// let load = Loads::new().target("openai", "gpt-4o-mini");
    /// load.count();
    /// assert_eq!(load.inflight(), 0);
    /// ```
    pub fn count(&self) {
        self.flags.fetch_or(COUNTED, Ordering::Release);
    }

    /// Counts this target against its provider's limit (once).
    fn attach(&self, gate: Arc<Gate>) {
        let _ = self.gate.set(gate);
        self.count();
    }

    /// The slow start after a recovery, if one is set.
    #[must_use]
    pub fn slow_start(&self) -> Option<SlowStart> {
        *self
            .slow_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the slow start after a recovery (`None`: none; a ramp under way ends).
    pub fn set_slow_start(&self, slow_start: Option<SlowStart>) {
        *self
            .slow_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = slow_start;
        let window = slow_start.map_or(0, |s| {
            u64::try_from(s.window.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        self.slow_window.store(window, Ordering::Release);
        if window == 0 {
            self.ramp_from.store(0, Ordering::Release);
        }
    }

    /// The target recovered (a breaker of its closed): its ramp starts now, if it has a
    /// slow start.
    pub fn recovered(&self) {
        if self.slow_window.load(Ordering::Acquire) != 0 {
            self.ramp_from
                .store(self.now().saturating_add(1), Ordering::Release);
        }
    }

    /// The share of its traffic the target gets now, 0 to 1: 1 unless it is ramping up after
    /// a recovery (see [`SlowStart`]).
    #[must_use]
    pub fn ramp(&self) -> f64 {
        let from = self.ramp_from.load(Ordering::Acquire);
        if from == 0 {
            return 1.0;
        }
        let elapsed = Duration::from_nanos(self.now().saturating_sub(from - 1));
        let share = self.slow_start().map_or(1.0, |s| s.share(elapsed));
        if share >= 1.0 {
            // The ramp is over (unless a new one began meanwhile).
            let _ = self
                .ramp_from
                .compare_exchange(from, 0, Ordering::AcqRel, Ordering::Acquire);
        }
        share
    }

    /// The requests and tokens per minute the target is held to.
    #[must_use]
    pub fn rate_limits(&self) -> RateLimits {
        self.limiter().limits()
    }

    /// Holds the target to `limits` (see [`Loads::set_rate_limits`]).
    pub fn set_rate_limits(&self, limits: RateLimits) {
        self.limiter().set_limits(limits);
        if !limits.is_none() {
            self.flags.fetch_or(LIMITED, Ordering::Release);
        }
    }

    /// Adopts what the provider said is left of the target's quota, until its reset: the
    /// chain does this itself when a failure carries a [`Quota`]
    /// ([`AttemptFailure::quota`](super::AttemptFailure::quota)).
    pub fn adopt(&self, quota: &Quota) {
        self.limiter().adopt(Instant::now(), quota);
        self.flags.fetch_or(LIMITED, Ordering::Release);
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when a rate limit or an adopted quota applies.
    #[inline]
    pub(crate) fn is_limited(&self) -> bool {
        self.flags.load(Ordering::Acquire) & LIMITED != 0
    }

    /// Neither counted nor limited: an attempt here needs no place in flight and no admission.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.flags.load(Ordering::Acquire) == 0
    }

    /// Takes a request of `tokens` under the rate limits, or says which refuses it and how
    /// long until it would fit.
    #[inline]
    pub(crate) fn admit(&self, tokens: u64) -> Result<(), (ShedCause, Duration)> {
        if !self.is_limited() {
            return Ok(());
        }
        self.limiter().admit(Instant::now(), tokens)
    }

    /// A request admitted was not sent after all.
    pub(crate) fn refund(&self, tokens: u64) {
        if self.is_limited() {
            self.limiter().refund(Instant::now(), tokens);
        }
    }

    /// The answer used `actual` tokens where `estimate` were counted.
    pub(crate) fn correct(&self, estimate: u64, actual: u64) {
        if self.is_limited() {
            self.limiter().correct(Instant::now(), estimate, actual);
        }
    }

    /// The latency average now (decayed since its last sample); zero before any sample.
    #[must_use]
    pub fn latency(&self) -> Duration {
        Duration::from_secs_f64(self.decayed(self.now()).max(0.0))
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The weight the average keeps after `nanos` without a sample.
    fn keep(&self, nanos: u64) -> f64 {
        if self.decay <= 0.0 {
            return 0.0;
        }
        #[expect(clippy::cast_precision_loss, reason = "nanoseconds to seconds")]
        let elapsed = nanos as f64 / 1e9;
        (-elapsed / self.decay).exp()
    }

    fn decayed(&self, now: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let stamp = self.stamp.load(Ordering::Relaxed);
        ewma * self.keep(now.saturating_sub(stamp))
    }

    /// Keeps the latency average from now on (a `least_loaded` tier uses the target).
    pub(crate) fn time(&self) {
        self.timed.store(true, Ordering::Relaxed);
        self.count();
    }

    /// Adds a latency sample (when a `least_loaded` tier uses the target). Concurrent
    /// samples may lose one another: it is an average.
    pub(crate) fn observe(&self, took: Duration) {
        if !self.timed.load(Ordering::Relaxed) {
            return;
        }
        let now = self.now();
        let stamp = self.stamp.swap(now, Ordering::Relaxed);
        let w = self.keep(now.saturating_sub(stamp));
        let prev = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let rtt = took.as_secs_f64();
        let next = if rtt > prev * w {
            rtt
        } else {
            prev * w + rtt * (1.0 - w)
        };
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
    }

    /// What sending one more request here costs, for `least_loaded`: latency times requests
    /// in flight plus one; `f64::INFINITY` at the limit.
    pub(crate) fn cost(&self) -> f64 {
        let n = self.inflight();
        if self.max_inflight().is_some_and(|max| n >= max) {
            return f64::INFINITY;
        }
        let latency = self.decayed(self.now());
        if latency <= 0.0 && n > 0 {
            PENALTY + f64::from(n)
        } else {
            latency * f64::from(n + 1)
        }
    }

    /// Takes a place in flight, unless the target is at its limit. Nothing is reported until
    /// the place is [`announced`](Inflight::announce).
    #[inline]
    pub(crate) fn try_enter(self: &Arc<Self>) -> Option<Inflight> {
        if self.flags.load(Ordering::Acquire) & COUNTED == 0 {
            return Some(Inflight::uncounted());
        }
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            self.inflight.fetch_add(1, Ordering::AcqRel);
        } else {
            self.inflight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()?;
        }
        if let Some(gate) = self.gate.get()
            && !gate.try_enter()
        {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Inflight {
            load: Some(Arc::clone(self)),
            announced: false,
        })
    }
}

/// A place in flight on one target, given back when dropped (none when the target is not
/// counted).
pub(crate) struct Inflight {
    load: Option<Arc<Load>>,
    announced: bool,
}

impl Inflight {
    /// No place: the target is not counted.
    #[inline]
    pub(crate) fn uncounted() -> Self {
        Inflight {
            load: None,
            announced: false,
        }
    }

    /// The request was sent: the in-flight gauge counts it from now on.
    #[inline]
    pub(crate) fn announce(&mut self) {
        if let Some(load) = self.load.as_ref().filter(|_| !self.announced) {
            self.announced = true;
            telemetry::inflight(&load.provider, &load.model, 1);
        }
    }

    /// The attempt answered (or failed) after `took`: a latency sample.
    #[inline]
    pub(crate) fn observe(&self, took: Duration) {
        if let Some(load) = &self.load {
            load.observe(took);
        }
    }
}

impl Drop for Inflight {
    #[inline]
    fn drop(&mut self) {
        if let Some(load) = &self.load {
            load.inflight.fetch_sub(1, Ordering::AcqRel);
            if let Some(gate) = load.gate.get() {
                gate.leave();
            }
            if self.announced {
                telemetry::inflight(&load.provider, &load.model, -1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_sheds_and_places_come_back() {
        let loads = Loads::new();
        loads.set_max_inflight("p", "m", Some(2));
        let load = loads.target("p", "m");
        let a = load.try_enter().unwrap();
        let b = load.try_enter().unwrap();
        assert!(load.try_enter().is_none());
        assert_eq!(load.cost(), f64::INFINITY);
        drop(a);
        assert_eq!(load.inflight(), 1);
        let _c = load.try_enter().unwrap();
        drop(b);
        load.set_max_inflight(None);
        let _d = load.try_enter().unwrap();
        assert_eq!(load.inflight(), 2);
        assert!(Arc::ptr_eq(&load, &loads.get("p", "m").unwrap()));
    }

    #[test]
    fn a_provider_limit_holds_its_models_together() {
        let loads = Loads::new();
        let a = loads.target("p", "a");
        loads.set_provider_max_inflight("p", Some(2));
        let b = loads.target("p", "b");
        let other = loads.target("q", "a");
        let x = a.try_enter().unwrap();
        let y = b.try_enter().unwrap();
        assert!(a.try_enter().is_none() && b.try_enter().is_none());
        assert_eq!((a.inflight(), b.inflight()), (1, 1));
        let _z = other.try_enter().unwrap();
        assert_eq!(loads.provider_inflight("p"), Some((2, Some(2))));
        drop(x);
        let _w = b.try_enter().unwrap();
        drop(y);
        assert_eq!(loads.provider_inflight("p"), Some((1, Some(2))));
        assert_eq!(loads.provider_inflight("q"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_average_follows_peaks_at_once_and_decays_when_idle() {
        let load = Loads::new()
            .with_decay(Duration::from_secs(1))
            .target("p", "m");
        load.observe(Duration::from_millis(500));
        assert_eq!(
            load.latency(),
            Duration::ZERO,
            "not kept until a tier needs it"
        );
        load.time();
        // Unknown and busy: a penalty; unknown and idle: free.
        assert!(load.cost().abs() < f64::EPSILON);
        let g = load.try_enter().unwrap();
        assert!(load.cost() >= PENALTY);
        drop(g);
        load.observe(Duration::from_millis(500));
        assert_eq!(load.latency(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(1)).await;
        let l = load.latency().as_secs_f64();
        assert!((l - 0.5 / std::f64::consts::E).abs() < 1e-6, "{l}");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(load.latency() < Duration::from_micros(1));
    }
}
