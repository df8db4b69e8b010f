//! Breaker policies: thresholds, windows, backoff and the per-reason table.
//!
//! A [`BreakerPolicy`] comes from the validating [`BreakerPolicyBuilder`] or from serde (TOML,
//! JSON) with durations written as humantime strings (`"30s"`, `"10m"`). Both paths run the
//! same validation, so an invalid value fails with a [`PolicyError`] naming the field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::Reason;
use crate::duration::HumanDuration;
use crate::reason::{BreakerEffect, ReasonPolicy, Scope};

use super::clock::{Nanos, nanos_of};
use super::error::PolicyError;

/// Which window the failure-rate rule looks at.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `calls` outcomes (a ring).
    Count {
        /// How many outcomes the ring holds.
        calls: u32,
    },
    /// The outcomes of the last `span`, in `buckets` buckets of `span / buckets` each.
    Time {
        /// How far back the window reaches.
        span: Duration,
        /// How many buckets the span is cut into (the window slides by one bucket).
        buckets: u32,
    },
}

const REASONS: usize = Reason::ALL.len();

/// The index of a reason in [`Reason::ALL`] (declaration order).
#[inline]
pub(crate) const fn reason_index(r: Reason) -> usize {
    r as usize
}

/// How a breaker counts failures, when it trips and how long it stays open.
///
/// ```
/// use std::time::Duration;
/// use llm_failover::Reason;
/// use llm_failover::breaker::BreakerPolicy;
///
/// let policy = BreakerPolicy::builder()
///     .consecutive_failures(3)
///     .failure_rate(0.5)
///     .window_calls(50)
///     .min_calls(10)
///     .trip_immediately(Reason::Dns)
///     .open_base(Reason::RateLimit, Duration::from_secs(20))
///     .build()?;
/// assert_eq!(policy.consecutive_failures(), 3);
/// # Ok::<(), llm_failover::breaker::PolicyError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: f64,
    pub(crate) min_calls: u32,
    pub(crate) window: WindowKind,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) slow_ttft: Option<Duration>,
    pub(crate) backoff_multiplier: f64,
    pub(crate) max_open: Duration,
    pub(crate) jitter: f64,
    pub(crate) backoff_decay: Duration,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_successes: u32,
    pub(crate) probe_lease: Duration,
    pub(crate) max_retry_after: Duration,
    pub(crate) reasons: [ReasonPolicy; REASONS],
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: WindowKind::Count { calls: 100 },
            slow_call: None,
            slow_ttft: None,
            backoff_multiplier: 2.0,
            max_open: Duration::from_secs(10 * 60),
            jitter: 0.2,
            backoff_decay: Duration::from_secs(5 * 60),
            half_open_probes: 1,
            half_open_successes: 1,
            probe_lease: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60 * 60),
            reasons: Reason::ALL.map(Reason::policy),
        }
    }
}

/// Most probes one half-open cycle may admit at once.
pub const MAX_HALF_OPEN_PROBES: u32 = 64;

impl BreakerPolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> BreakerPolicyBuilder {
        BreakerPolicyBuilder {
            policy: Self::default(),
        }
    }

    /// Consecutive counted failures that trip the breaker; 0 turns the rule off.
    #[must_use]
    pub const fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The failure rate (0 < rate ≤ 1) over the window that trips the breaker.
    #[must_use]
    pub const fn failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// Calls the window must hold before the failure rate counts.
    #[must_use]
    pub const fn min_calls(&self) -> u32 {
        self.min_calls
    }

    /// The window of the failure-rate rule.
    #[must_use]
    pub const fn window(&self) -> WindowKind {
        self.window
    }

    /// Probes a half-open cycle admits at once.
    #[must_use]
    pub const fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// The breaker's policy for `reason` (its effect, scope and open-time base).
    #[must_use]
    pub const fn reason(&self, reason: Reason) -> ReasonPolicy {
        self.reasons[reason_index(reason)]
    }

    pub(crate) const fn effect(&self, reason: Reason) -> BreakerEffect {
        self.reasons[reason_index(reason)].breaker
    }

    /// True when an outcome that succeeded is slow enough to count as a failure.
    #[inline]
    pub(crate) fn is_slow(&self, duration: Duration, ttft: Option<Duration>) -> bool {
        self.slow_call.is_some_and(|limit| duration > limit)
            || matches!((self.slow_ttft, ttft), (Some(limit), Some(t)) if t > limit)
    }

    /// How long to stay open after a trip for `reason` at backoff `level` (0 for a first
    /// trip), with `unit` in `[0, 1)` drawing the jitter.
    ///
    /// `base × multiplier^level`, capped at the larger of `max_open` and the reason's base,
    /// then shortened by up to `jitter` of itself so replicas do not probe in step.
    pub(crate) fn open_for(&self, reason: Reason, level: u32, unit: f64) -> Nanos {
        let base = self.reason(reason).open_base.as_secs_f64();
        let cap = self.max_open.as_secs_f64().max(base);
        let exp = i32::try_from(level).unwrap_or(i32::MAX);
        let grown = (base * self.backoff_multiplier.powi(exp)).min(cap);
        let secs = grown * (1.0 - self.jitter * unit.clamp(0.0, 1.0));
        nanos_of(Duration::try_from_secs_f64(secs).unwrap_or(self.max_open))
    }

    fn validate(self) -> Result<Self, PolicyError> {
        let p = &self;
        if !(p.failure_rate > 0.0 && p.failure_rate <= 1.0) {
            return Err(PolicyError::out_of_range(
                "failure_rate",
                p.failure_rate,
                "greater than 0 and at most 1",
            ));
        }
        match p.window {
            WindowKind::Count { calls } => {
                if !(1..=1_000_000).contains(&calls) {
                    return Err(PolicyError::out_of_range(
                        "window_calls",
                        calls,
                        "between 1 and 1000000",
                    ));
                }
                if p.min_calls > calls {
                    return Err(PolicyError::out_of_range(
                        "min_calls",
                        p.min_calls,
                        "at most `window_calls` (the window never holds more calls)",
                    ));
                }
            }
            WindowKind::Time { span, buckets } => {
                if !(1..=1_000).contains(&buckets) {
                    return Err(PolicyError::out_of_range(
                        "window_buckets",
                        buckets,
                        "between 1 and 1000",
                    ));
                }
                if span < Duration::from_millis(10) * buckets {
                    return Err(PolicyError::out_of_range(
                        "window_time",
                        span,
                        "at least 10ms per bucket",
                    ));
                }
            }
        }
        if !(p.backoff_multiplier >= 1.0 && p.backoff_multiplier <= 100.0) {
            return Err(PolicyError::out_of_range(
                "backoff_multiplier",
                p.backoff_multiplier,
                "between 1 and 100",
            ));
        }
        if !(0.0..1.0).contains(&p.jitter) {
            return Err(PolicyError::out_of_range(
                "jitter",
                p.jitter,
                "at least 0 and below 1",
            ));
        }
        if p.max_open.is_zero() {
            return Err(PolicyError::out_of_range(
                "max_open",
                p.max_open,
                "longer than 0s",
            ));
        }
        if p.backoff_decay.is_zero() {
            return Err(PolicyError::out_of_range(
                "backoff_decay",
                p.backoff_decay,
                "longer than 0s",
            ));
        }
        if !(1..=MAX_HALF_OPEN_PROBES).contains(&p.half_open_probes) {
            return Err(PolicyError::out_of_range(
                "half_open_probes",
                p.half_open_probes,
                "between 1 and 64",
            ));
        }
        if p.half_open_successes == 0 {
            return Err(PolicyError::out_of_range(
                "half_open_successes",
                p.half_open_successes,
                "at least 1",
            ));
        }
        if p.probe_lease.is_zero() {
            return Err(PolicyError::out_of_range(
                "probe_lease",
                p.probe_lease,
                "longer than 0s",
            ));
        }
        for (name, d) in [("slow_call", p.slow_call), ("slow_ttft", p.slow_ttft)] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(PolicyError::out_of_range(
                    name,
                    d,
                    "longer than 0s when set",
                ));
            }
        }
        for r in Reason::ALL {
            let rp = p.reason(r);
            let counts = match rp.breaker {
                BreakerEffect::Ignore => false,
                BreakerEffect::Count | BreakerEffect::TripImmediately => true,
            };
            if counts && rp.open_base.is_zero() {
                return Err(PolicyError::out_of_range(
                    format!("reasons.{r}.open_base"),
                    rp.open_base,
                    "longer than 0s for a reason that counts against the breaker",
                ));
            }
        }
        Ok(self)
    }
}

/// Builds a [`BreakerPolicy`]; [`build`](Self::build) validates every value.
#[derive(Debug, Clone)]
#[must_use]
pub struct BreakerPolicyBuilder {
    policy: BreakerPolicy,
}

impl BreakerPolicyBuilder {
    /// Trip after this many consecutive counted failures; 0 turns the rule off. Default 5.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.policy.consecutive_failures = n;
        self
    }

    /// Trip when this share of the window failed (0 < rate ≤ 1). Default 0.5.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.policy.failure_rate = rate;
        self
    }

    /// The window must hold this many calls before the failure rate counts. Default 20.
    pub fn min_calls(mut self, n: u32) -> Self {
        self.policy.min_calls = n;
        self
    }

    /// A count-based window of the last `calls` outcomes. Default: 100 calls.
    pub fn window_calls(mut self, calls: u32) -> Self {
        self.policy.window = WindowKind::Count { calls };
        self
    }

    /// A time-based window over `span`, in `buckets` buckets. Default: the count window.
    pub fn window_time(mut self, span: Duration, buckets: u32) -> Self {
        self.policy.window = WindowKind::Time { span, buckets };
        self
    }

    /// Count successful calls slower than this as failures (reason `timeout`). Default off.
    pub fn slow_call(mut self, limit: Duration) -> Self {
        self.policy.slow_call = Some(limit);
        self
    }

    /// Count successful calls whose time to first token exceeds this as failures (reason
    /// `timeout`). Default off.
    pub fn slow_ttft(mut self, limit: Duration) -> Self {
        self.policy.slow_ttft = Some(limit);
        self
    }

    /// Each consecutive re-open multiplies the open time by this (≥ 1). Default 2.
    pub fn backoff_multiplier(mut self, m: f64) -> Self {
        self.policy.backoff_multiplier = m;
        self
    }

    /// Backoff never grows the open time past this (a reason whose base is longer keeps its
    /// base). Default 10m.
    pub fn max_open(mut self, cap: Duration) -> Self {
        self.policy.max_open = cap;
        self
    }

    /// Shorten each open time by a random share of up to this (0 ≤ jitter < 1). Default 0.2.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// Each period of this length spent closed undoes one step of backoff. Default 5m.
    pub fn backoff_decay(mut self, healthy: Duration) -> Self {
        self.policy.backoff_decay = healthy;
        self
    }

    /// Probes a half-open cycle admits at once (1 to 64). Default 1.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.policy.half_open_probes = n;
        self
    }

    /// Successful probes that close the breaker. Default 1.
    pub fn half_open_successes(mut self, n: u32) -> Self {
        self.policy.half_open_successes = n;
        self
    }

    /// A probe that has not settled after this frees its slot. Default 60s.
    pub fn probe_lease(mut self, lease: Duration) -> Self {
        self.policy.probe_lease = lease;
        self
    }

    /// A provider's Retry-After is honoured up to this long. Default 1h.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.policy.max_retry_after = max;
        self
    }

    /// How failures for `reason` count. Default: the reason's own policy
    /// ([`Reason::policy`]).
    pub fn reason_effect(mut self, reason: Reason, effect: BreakerEffect) -> Self {
        self.policy.reasons[reason_index(reason)].breaker = effect;
        self
    }

    /// Failures for `reason` open the breaker at once. Default: only the reasons whose policy
    /// says so (auth, auth_permanent, billing, model_not_found).
    pub fn trip_immediately(self, reason: Reason) -> Self {
        self.reason_effect(reason, BreakerEffect::TripImmediately)
    }

    /// The open-time base after a trip for `reason`. Default: the reason's own policy.
    pub fn open_base(mut self, reason: Reason, base: Duration) -> Self {
        self.policy.reasons[reason_index(reason)].open_base = base;
        self
    }

    /// Which breaker a failure for `reason` indicts in a [`Registry`](super::Registry).
    /// Default: the reason's own policy.
    pub fn scope(mut self, reason: Reason, scope: Scope) -> Self {
        self.policy.reasons[reason_index(reason)].scope = scope;
        self
    }

    /// The policy.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] naming the first field out of range: a failure rate outside (0, 1], a
    /// jitter outside [0, 1), a zero window, duration or probe count, more than 64 probes, or a
    /// reason that counts with a zero open-time base.
    pub fn build(self) -> Result<BreakerPolicy, PolicyError> {
        self.policy.validate()
    }
}

/// Per-reason overrides as written in configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonOverride {
    effect: Option<BreakerEffect>,
    open_base: Option<HumanDuration>,
    scope: Option<Scope>,
}

/// The policy as written in configuration: every field optional, durations as strings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PolicyConfig {
    consecutive_failures: Option<u32>,
    failure_rate: Option<f64>,
    min_calls: Option<u32>,
    window_calls: Option<u32>,
    window_time: Option<HumanDuration>,
    window_buckets: Option<u32>,
    slow_call: Option<HumanDuration>,
    slow_ttft: Option<HumanDuration>,
    backoff_multiplier: Option<f64>,
    max_open: Option<HumanDuration>,
    jitter: Option<f64>,
    backoff_decay: Option<HumanDuration>,
    half_open_probes: Option<u32>,
    half_open_successes: Option<u32>,
    probe_lease: Option<HumanDuration>,
    max_retry_after: Option<HumanDuration>,
    reasons: BTreeMap<Reason, ReasonOverride>,
}

impl TryFrom<PolicyConfig> for BreakerPolicy {
    type Error = PolicyError;

    fn try_from(c: PolicyConfig) -> Result<Self, PolicyError> {
        let mut p = BreakerPolicy::default();
        let dur = |d: Option<HumanDuration>| d.map(|h| h.0);
        match (c.window_calls, dur(c.window_time)) {
            (Some(_), Some(_)) => {
                return Err(PolicyError::Conflict {
                    first: "window_calls",
                    second: "window_time",
                });
            }
            (Some(calls), None) => p.window = WindowKind::Count { calls },
            (None, Some(span)) => {
                p.window = WindowKind::Time {
                    span,
                    buckets: c.window_buckets.unwrap_or(10),
                };
            }
            (None, None) => {
                if c.window_buckets.is_some() {
                    return Err(PolicyError::out_of_range(
                        "window_buckets",
                        c.window_buckets,
                        "set only together with `window_time`",
                    ));
                }
            }
        }
        p.consecutive_failures = c.consecutive_failures.unwrap_or(p.consecutive_failures);
        p.failure_rate = c.failure_rate.unwrap_or(p.failure_rate);
        p.min_calls = c.min_calls.unwrap_or(p.min_calls);
        p.slow_call = dur(c.slow_call);
        p.slow_ttft = dur(c.slow_ttft);
        p.backoff_multiplier = c.backoff_multiplier.unwrap_or(p.backoff_multiplier);
        p.max_open = dur(c.max_open).unwrap_or(p.max_open);
        p.jitter = c.jitter.unwrap_or(p.jitter);
        p.backoff_decay = dur(c.backoff_decay).unwrap_or(p.backoff_decay);
        p.half_open_probes = c.half_open_probes.unwrap_or(p.half_open_probes);
        p.half_open_successes = c.half_open_successes.unwrap_or(p.half_open_successes);
        p.probe_lease = dur(c.probe_lease).unwrap_or(p.probe_lease);
        p.max_retry_after = dur(c.max_retry_after).unwrap_or(p.max_retry_after);
        for (reason, o) in c.reasons {
            let rp = &mut p.reasons[reason_index(reason)];
            rp.breaker = o.effect.unwrap_or(rp.breaker);
            rp.open_base = dur(o.open_base).unwrap_or(rp.open_base);
            rp.scope = o.scope.unwrap_or(rp.scope);
        }
        p.validate()
    }
}

impl<'de> Deserialize<'de> for BreakerPolicy {
    /// Reads a policy written like this (every field optional, defaults as in
    /// [`BreakerPolicyBuilder`]):
    ///
    /// ```toml
    /// consecutive_failures = 5
    /// failure_rate = 0.5
    /// min_calls = 20
    /// window_calls = 100        # or: window_time = "60s", window_buckets = 10
    /// slow_call = "30s"
    /// max_open = "10m"
    /// half_open_probes = 1
    /// [reasons.dns]
    /// effect = "trip_immediately"
    /// open_base = "10s"
    /// ```
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config = PolicyConfig::deserialize(d)?;
        BreakerPolicy::try_from(config).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_index_follows_declaration_order() {
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason_index(r), i, "{r}");
        }
    }

    #[test]
    fn builder_rejects_each_bad_field_by_name() {
        let cases = [
            (BreakerPolicy::builder().failure_rate(0.0), "failure_rate"),
            (BreakerPolicy::builder().failure_rate(1.5), "failure_rate"),
            (BreakerPolicy::builder().window_calls(0), "window_calls"),
            (
                BreakerPolicy::builder().window_calls(5).min_calls(6),
                "min_calls",
            ),
            (
                BreakerPolicy::builder().window_time(Duration::from_millis(5), 1),
                "window_time",
            ),
            (
                BreakerPolicy::builder().window_time(Duration::from_secs(60), 0),
                "window_buckets",
            ),
            (BreakerPolicy::builder().jitter(1.0), "jitter"),
            (
                BreakerPolicy::builder().backoff_multiplier(0.5),
                "backoff_multiplier",
            ),
            (
                BreakerPolicy::builder().half_open_probes(0),
                "half_open_probes",
            ),
            (
                BreakerPolicy::builder().half_open_probes(65),
                "half_open_probes",
            ),
            (
                BreakerPolicy::builder().half_open_successes(0),
                "half_open_successes",
            ),
            (
                BreakerPolicy::builder().probe_lease(Duration::ZERO),
                "probe_lease",
            ),
            (
                BreakerPolicy::builder().slow_call(Duration::ZERO),
                "slow_call",
            ),
            (
                BreakerPolicy::builder().reason_effect(Reason::Format, BreakerEffect::Count),
                "reasons.format.open_base",
            ),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(BreakerPolicy::builder().build().is_ok());
    }

    #[test]
    fn open_time_grows_per_level_up_to_the_cap_and_jitter_only_shortens() {
        let p = BreakerPolicy::builder()
            .max_open(Duration::from_secs(60))
            .jitter(0.5)
            .build()
            .unwrap();
        let s = 1_000_000_000;
        // connection_refused: base 10s.
        assert_eq!(p.open_for(Reason::ConnectionRefused, 0, 0.0), 10 * s);
        assert_eq!(p.open_for(Reason::ConnectionRefused, 1, 0.0), 20 * s);
        assert_eq!(p.open_for(Reason::ConnectionRefused, 2, 0.0), 40 * s);
        assert_eq!(p.open_for(Reason::ConnectionRefused, 3, 0.0), 60 * s);
        assert_eq!(p.open_for(Reason::ConnectionRefused, 50, 0.0), 60 * s);
        assert_eq!(
            p.open_for(Reason::ConnectionRefused, 0, 0.999_999),
            5 * s + 5_000
        );
        // A reason whose base is above the cap keeps its base: auth_permanent is 1h.
        assert_eq!(p.open_for(Reason::AuthPermanent, 4, 0.0), 3_600 * s);
    }
}
