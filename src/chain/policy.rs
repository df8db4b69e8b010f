//! How a route spends its time: deadlines, same-target retries, and what to do when every
//! target is open.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::Reason;
use crate::reason::Action;

/// The longest any duration of a route policy may be.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The deadlines and retry rules of a route. Build one with [`RoutePolicy::builder`]; the
/// default suits chat completions.
///
/// ```
/// use std::time::Duration;
/// use llm_failover::chain::RoutePolicy;
///
/// let policy = RoutePolicy::builder()
///     .attempt_timeout(Duration::from_secs(20))
///     .total_deadline(Duration::from_secs(45))
///     .build()?;
/// assert_eq!(policy.attempt_timeout(), Duration::from_secs(20));
/// # Ok::<(), llm_failover::chain::RoutePolicyError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    pub(crate) attempt_timeout: Duration,
    pub(crate) ttft_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) total_deadline: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_retry_wait: Duration,
    pub(crate) last_resort: bool,
    pub(crate) hedge_after: Option<Duration>,
    /// Per-reason overrides of what the chain does after a failure.
    pub(crate) actions: BTreeMap<Reason, Action>,
    /// Extra attempts allowed per first attempt (same-target retries and hedges).
    pub(crate) retry_budget_ratio: f32,
    /// Extra attempts allowed per second of the window whatever the traffic.
    pub(crate) retry_budget_floor: u32,
    /// The sliding window the budget counts over.
    pub(crate) retry_budget_window: Duration,
    /// Failovers to another target spend the budget too.
    pub(crate) retry_budget_failovers: bool,
    /// A stream that breaks after its first token is finished on another target.
    pub(crate) stream_resume: bool,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(60),
            ttft_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(30),
            total_deadline: Duration::from_secs(120),
            max_retries: 1,
            retry_backoff: Duration::from_millis(200),
            max_retry_wait: Duration::from_secs(5),
            last_resort: false,
            hedge_after: None,
            actions: BTreeMap::new(),
            retry_budget_ratio: 0.2,
            retry_budget_floor: 1,
            retry_budget_window: Duration::from_secs(10),
            retry_budget_failovers: false,
            stream_resume: false,
        }
    }
}

impl RoutePolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> RoutePolicyBuilder {
        RoutePolicyBuilder {
            policy: RoutePolicy::default(),
        }
    }

    /// The longest one attempt may take: a whole answer, or a stream until its first token.
    #[must_use]
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// The longest a stream may take to produce its first token.
    #[must_use]
    pub fn ttft_timeout(&self) -> Duration {
        self.ttft_timeout
    }

    /// The longest a committed stream may stall between two chunks.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The longest the route may spend before an answer is committed, over all attempts,
    /// retries and backoffs.
    #[must_use]
    pub fn total_deadline(&self) -> Duration {
        self.total_deadline
    }

    /// The retry budget: extra attempts allowed per first attempt, per second whatever the
    /// traffic, the window they are counted over, and whether failovers spend it.
    #[must_use]
    pub fn retry_budget(&self) -> (f32, u32, Duration, bool) {
        (
            self.retry_budget_ratio,
            self.retry_budget_floor,
            self.retry_budget_window,
            self.retry_budget_failovers,
        )
    }

    /// Whether a stream that breaks after its first token is finished on another target
    /// (see [`RoutePolicyBuilder::stream_resume`]).
    #[must_use]
    pub fn stream_resume(&self) -> bool {
        self.stream_resume
    }

    /// What the chain does after a failure for `reason`: the route's override, else the
    /// reason's default ([`Reason::policy`]).
    #[must_use]
    pub fn action(&self, reason: Reason) -> Action {
        self.actions
            .get(&reason)
            .copied()
            .unwrap_or(reason.policy().action)
    }
}

/// Builds a [`RoutePolicy`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
#[must_use]
pub struct RoutePolicyBuilder {
    policy: RoutePolicy,
}

impl RoutePolicyBuilder {
    /// The longest one attempt may take (a whole answer, or a stream until its first token).
    /// Default: 60 s.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.policy.attempt_timeout = d;
        self
    }

    /// The longest a stream may take to produce its first token. Default: 20 s.
    pub fn ttft_timeout(mut self, d: Duration) -> Self {
        self.policy.ttft_timeout = d;
        self
    }

    /// The longest a committed stream may stall between chunks. Default: 30 s.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.policy.idle_timeout = d;
        self
    }

    /// The longest the route may spend before committing to an answer. Default: 120 s.
    pub fn total_deadline(mut self, d: Duration) -> Self {
        self.policy.total_deadline = d;
        self
    }

    /// How many times one target is retried, for the reasons whose policy says so
    /// (a reset connection, a lone 500, a 429 with a short wait). Default: 1.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.policy.max_retries = n;
        self
    }

    /// The base of the jittered backoff before a same-target retry (doubling per retry).
    /// A provider's Retry-After is a floor on it. Default: 200 ms.
    pub fn retry_backoff(mut self, d: Duration) -> Self {
        self.policy.retry_backoff = d;
        self
    }

    /// A rate limit whose wait is at most this is retried on the same target after the wait;
    /// a longer one fails over at once. Default: 5 s.
    pub fn max_retry_wait(mut self, d: Duration) -> Self {
        self.policy.max_retry_wait = d;
        self
    }

    /// When every target's breaker is open, try the one that will admit soonest anyway
    /// instead of failing fast. Default: false.
    pub fn last_resort(mut self, on: bool) -> Self {
        self.policy.last_resort = on;
        self
    }

    /// Hedging: when a target's first try has not answered after this long (for a stream,
    /// produced its first chunk), the next target is started too; the first to answer wins
    /// and the other is cancelled without counting against its breakers. Default: off.
    pub fn hedge_after(mut self, delay: Option<Duration>) -> Self {
        self.policy.hedge_after = delay;
        self
    }

    /// What the chain does after a failure for `reason`, instead of the reason's default
    /// (for a provider whose 400s are transient, say: fail over on `format`). Default: each
    /// reason's [`Reason::policy`].
    pub fn action(mut self, reason: Reason, action: Action) -> Self {
        self.policy.actions.insert(reason, action);
        self
    }

    /// The retry budget's ratio: same-target retries and hedges (and failovers, with
    /// [`retry_budget_failovers`](Self::retry_budget_failovers)) allowed per first attempt,
    /// over the budget's window, on top of the floor. When the budget is spent the chain
    /// stops retrying in place: it fails over, or returns the error at once, and the trail
    /// says `budget_exhausted`. Why a budget and not only a retry count: during an outage
    /// every request retries, so a fixed count multiplies the load on a provider that is
    /// already struggling; a budget bounds the extra load to a share of the real traffic.
    /// 0 to 1000 (1000: effectively no budget). Default: 0.2.
    pub fn retry_budget_ratio(mut self, ratio: f32) -> Self {
        self.policy.retry_budget_ratio = ratio;
        self
    }

    /// Extra attempts per second of the window allowed whatever the traffic, so a quiet
    /// route can still retry. Default: 1.
    pub fn retry_budget_floor(mut self, per_second: u32) -> Self {
        self.policy.retry_budget_floor = per_second;
        self
    }

    /// The sliding window the budget counts over, 1 s to 60 s. Default: 10 s.
    pub fn retry_budget_window(mut self, window: Duration) -> Self {
        self.policy.retry_budget_window = window;
        self
    }

    /// Failovers to another target spend the budget too (when it is spent, the error is
    /// returned instead of trying the next target). Default: false.
    pub fn retry_budget_failovers(mut self, on: bool) -> Self {
        self.policy.retry_budget_failovers = on;
        self
    }

    /// Stream resume: a stream that breaks after its first token (cut, stalled, malformed,
    /// an error event, or ended without its finish) is finished on the next admitting target
    /// that accepts an assistant prefill, and the reader sees one answer. Its end is then
    /// written by another model. Only for streams opened with
    /// [`Route::resumable_stream`](super::Route::resumable_stream), which says how to
    /// continue one; a continuation obeys the breakers, the retry budget and the total
    /// deadline, which counts from the start of the request: a stream that breaks after it
    /// has passed is not resumed (long answers want a longer `total_deadline`). A stop no
    /// other model may finish (a content filter, any reason whose action is `return_error`)
    /// is not resumed either. Default: false (a break ends the stream with its classified
    /// error).
    pub fn stream_resume(mut self, on: bool) -> Self {
        self.policy.stream_resume = on;
        self
    }

    /// The policy.
    ///
    /// # Errors
    ///
    /// [`RoutePolicyError`] naming the field when a timeout is zero, when the total
    /// deadline is shorter than one attempt, or when a retry budget setting is out of range.
    pub fn build(self) -> Result<RoutePolicy, RoutePolicyError> {
        let p = self.policy;
        if !(0.0..=1000.0).contains(&p.retry_budget_ratio) {
            return Err(RoutePolicyError {
                field: "retry_budget_ratio",
                problem: "must be between 0 and 1000 (0.2: a retry per five first attempts)",
            });
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&p.retry_budget_window) {
            return Err(RoutePolicyError {
                field: "retry_budget_window",
                problem: "must be between 1s and 60s",
            });
        }
        if p.retry_budget_floor >= 1_000_000 {
            return Err(RoutePolicyError {
                field: "retry_budget_floor",
                problem: "must be below 1000000 per second",
            });
        }
        for (field, d) in [
            ("attempt_timeout", p.attempt_timeout),
            ("ttft_timeout", p.ttft_timeout),
            ("idle_timeout", p.idle_timeout),
            ("total_deadline", p.total_deadline),
        ] {
            if d.is_zero() {
                return Err(RoutePolicyError {
                    field,
                    problem: "must be longer than zero",
                });
            }
        }
        for (field, d) in [
            ("attempt_timeout", Some(p.attempt_timeout)),
            ("ttft_timeout", Some(p.ttft_timeout)),
            ("idle_timeout", Some(p.idle_timeout)),
            ("total_deadline", Some(p.total_deadline)),
            ("retry_backoff", Some(p.retry_backoff)),
            ("max_retry_wait", Some(p.max_retry_wait)),
            ("hedge_after", p.hedge_after),
        ] {
            if d.is_some_and(|d| d > MAX_DURATION) {
                return Err(RoutePolicyError {
                    field,
                    problem: "must be at most one day",
                });
            }
        }
        if p.total_deadline < p.attempt_timeout.min(p.ttft_timeout) {
            return Err(RoutePolicyError {
                field: "total_deadline",
                problem: "must be at least the attempt timeout or the time-to-first-token timeout",
            });
        }
        Ok(p)
    }
}

/// A route policy value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route policy field `{field}` {problem}")]
pub struct RoutePolicyError {
    field: &'static str,
    problem: &'static str,
}

impl RoutePolicyError {
    /// The field at fault.
    #[must_use]
    pub fn field(&self) -> &str {
        self.field
    }
}

/// The serde form of a [`RoutePolicy`]: every field optional, durations as "30s" or "1m".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutePolicyConfig {
    #[serde(default, with = "crate::duration::option")]
    attempt_timeout: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    ttft_timeout: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    total_deadline: Option<Duration>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default, with = "crate::duration::option")]
    retry_backoff: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    max_retry_wait: Option<Duration>,
    #[serde(default)]
    last_resort: Option<bool>,
    #[serde(default, with = "crate::duration::option")]
    hedge_after: Option<Duration>,
    #[serde(default)]
    actions: BTreeMap<Reason, Action>,
    #[serde(default)]
    retry_budget_ratio: Option<f32>,
    #[serde(default)]
    retry_budget_floor: Option<u32>,
    #[serde(default, with = "crate::duration::option")]
    retry_budget_window: Option<Duration>,
    #[serde(default)]
    retry_budget_failovers: Option<bool>,
    #[serde(default)]
    stream_resume: Option<bool>,
}

impl<'de> Deserialize<'de> for RoutePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let c = RoutePolicyConfig::deserialize(d)?;
        let mut b = RoutePolicy::builder();
        if let Some(v) = c.attempt_timeout {
            b = b.attempt_timeout(v);
        }
        if let Some(v) = c.ttft_timeout {
            b = b.ttft_timeout(v);
        }
        if let Some(v) = c.idle_timeout {
            b = b.idle_timeout(v);
        }
        if let Some(v) = c.total_deadline {
            b = b.total_deadline(v);
        }
        if let Some(v) = c.max_retries {
            b = b.max_retries(v);
        }
        if let Some(v) = c.retry_backoff {
            b = b.retry_backoff(v);
        }
        if let Some(v) = c.max_retry_wait {
            b = b.max_retry_wait(v);
        }
        if let Some(v) = c.last_resort {
            b = b.last_resort(v);
        }
        if c.hedge_after.is_some() {
            b = b.hedge_after(c.hedge_after);
        }
        for (reason, action) in c.actions {
            b = b.action(reason, action);
        }
        if let Some(v) = c.retry_budget_ratio {
            b = b.retry_budget_ratio(v);
        }
        if let Some(v) = c.retry_budget_floor {
            b = b.retry_budget_floor(v);
        }
        if let Some(v) = c.retry_budget_window {
            b = b.retry_budget_window(v);
        }
        if let Some(v) = c.retry_budget_failovers {
            b = b.retry_budget_failovers(v);
        }
        if let Some(v) = c.stream_resume {
            b = b.stream_resume(v);
        }
        b.build().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates_and_names_the_field() {
        let err = RoutePolicy::builder()
            .idle_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "idle_timeout");
        let err = RoutePolicy::builder()
            .total_deadline(Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "total_deadline");
        assert!(err.to_string().contains("total_deadline"));
        assert_eq!(
            RoutePolicy::builder().build().unwrap(),
            RoutePolicy::default()
        );
    }

    #[test]
    fn serde_reads_durations_and_rejects_unknown_fields() {
        let p: RoutePolicy = serde_json::from_str(
            r#"{"attempt_timeout":"15s","ttft_timeout":"3s","last_resort":true}"#,
        )
        .unwrap();
        assert_eq!(p.attempt_timeout(), Duration::from_secs(15));
        assert_eq!(p.ttft_timeout(), Duration::from_secs(3));
        assert!(p.last_resort);
        let err = serde_json::from_str::<RoutePolicy>(r#"{"attempt_timeot":"15s"}"#).unwrap_err();
        assert!(err.to_string().contains("attempt_timeot"), "{err}");
        let p: RoutePolicy = serde_json::from_str(r#"{"actions":{"format":"fail_over"}}"#).unwrap();
        assert_eq!(p.action(Reason::Format), Action::FailOver);
        assert_eq!(p.action(Reason::ContentFilter), Action::ReturnError);
        let err = serde_json::from_str::<RoutePolicy>(r#"{"actions":{"formatt":"fail_over"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("formatt"), "{err}");
        let err = serde_json::from_str::<RoutePolicy>(r#"{"idle_timeout":"soon"}"#).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
