//! The closed set of failure reasons and each reason's default policy.
//!
//! Every provider failure is classified into exactly one [`Reason`]. Reasons are metric label
//! values, so the set is closed and small: no error text ever becomes a label. Each reason
//! carries the default answer to the three questions the rest of the crate asks about a
//! failure ([`ReasonPolicy`]): what the chain does next, how the breaker counts it, and whether
//! it indicts the whole provider or only one model.
//!
//! The policy is data, not code spread over the crate: the breaker and the chain read it from
//! here and operators can override it per reason.
//!
//! ```
//! use llm_failover::{Reason, reason::{BreakerEffect, Scope}};
//!
//! let r: Reason = "connection_refused".parse()?;
//! assert_eq!(r, Reason::ConnectionRefused);
//! assert_eq!(r.to_string(), "connection_refused");
//! assert_eq!(r.policy().scope, Scope::Provider);
//! assert_eq!(Reason::Format.policy().breaker, BreakerEffect::Ignore);
//! # Ok::<(), llm_failover::reason::ParseReasonError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a provider call failed: one value from a closed set.
///
/// The string form ([`Reason::as_str`], `Display`, serde) is the snake_case label value used in
/// metrics, spans, the classifier CLI and the proxy's headers.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The TCP connection was refused (ECONNREFUSED): nothing listens, the host is off.
    ConnectionRefused,
    /// The host name did not resolve (ENOTFOUND, EAI_AGAIN, resolver errors).
    Dns,
    /// The network or host is unreachable (ENETUNREACH, EHOSTUNREACH, EHOSTDOWN, ENETDOWN).
    Unreachable,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The connection was reset, a pipe broke, or it closed before a response.
    ConnectionReset,
    /// A connect, read, attempt, time-to-first-token or idle timeout; 408, 499, 504, 522, 524.
    Timeout,
    /// A stream was cut or malformed after it started, without its terminal event.
    StreamInterrupted,
    /// Rate limited: 429, throttling, requests- or tokens-per-minute limits.
    RateLimit,
    /// Credits, quota or a spend limit is exhausted for a long window.
    Billing,
    /// Authentication or permission failed (401/403, invalid key).
    Auth,
    /// The key, account or organisation is revoked or deactivated.
    AuthPermanent,
    /// The provider is overloaded or at capacity (529, "overloaded", 503 Service Unavailable).
    Overloaded,
    /// Another server-side failure (other 5xx, provider `server_error`/`api_error` bodies).
    ServerError,
    /// The model is unknown, retired or not served here (404).
    ModelNotFound,
    /// The prompt is longer than the model's context window.
    ContextOverflow,
    /// The provider's safety or content policy rejected the request.
    ContentFilter,
    /// The request itself is invalid (other 400/422).
    Format,
    /// A 2xx answer with no usable content.
    EmptyResponse,
    /// The caller cancelled; never a provider failure.
    Cancelled,
    /// Nothing matched.
    Unknown,
}

/// What the failover chain does after an attempt failed for a reason.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Try the next target of the route.
    FailOver,
    /// Retry the same target first (bounded, with backoff that honours Retry-After), then
    /// fail over.
    RetryThenFailOver,
    /// Return the error to the caller unchanged: another target would fail the same way or
    /// must not be asked (no laundering of a content-policy rejection through another model).
    ReturnError,
    /// Go to a configured larger-context target if there is one, else return the error.
    LargerContext,
}

/// How a failure for a reason counts against a circuit breaker.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerEffect {
    /// Not a provider failure: the breaker does not see it.
    Ignore,
    /// Counts towards the consecutive-failure and failure-rate thresholds.
    Count,
    /// Opens the breaker at once.
    TripImmediately,
}

/// Which breaker a failure indicts.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The provider-wide breaker: a dead host or a bad key takes every model of it out.
    Provider,
    /// Only the breaker of the model that failed; sibling models stay in service.
    Model,
}

/// The default policy attached to a [`Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReasonPolicy {
    /// What the chain does next.
    pub action: Action,
    /// How the breaker counts the failure.
    pub breaker: BreakerEffect,
    /// Which breaker the failure indicts.
    pub scope: Scope,
    /// The base open time of a breaker tripped by this reason, before backoff and jitter.
    #[serde(with = "crate::duration")]
    pub open_base: Duration,
}

impl ReasonPolicy {
    /// A policy from its parts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_failover::reason::{Action, BreakerEffect, ReasonPolicy, Scope};
    ///
    /// let p = ReasonPolicy::new(Action::FailOver, BreakerEffect::Count, Scope::Model, Duration::from_secs(5));
    /// assert_eq!(p.open_base, Duration::from_secs(5));
    /// ```
    #[must_use]
    pub const fn new(
        action: Action,
        breaker: BreakerEffect,
        scope: Scope,
        open_base: Duration,
    ) -> Self {
        Self {
            action,
            breaker,
            scope,
            open_base,
        }
    }
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 20] = [
        Reason::ConnectionRefused,
        Reason::Dns,
        Reason::Unreachable,
        Reason::Tls,
        Reason::ConnectionReset,
        Reason::Timeout,
        Reason::StreamInterrupted,
        Reason::RateLimit,
        Reason::Billing,
        Reason::Auth,
        Reason::AuthPermanent,
        Reason::Overloaded,
        Reason::ServerError,
        Reason::ModelNotFound,
        Reason::ContextOverflow,
        Reason::ContentFilter,
        Reason::Format,
        Reason::EmptyResponse,
        Reason::Cancelled,
        Reason::Unknown,
    ];

    /// The snake_case label value, as used in metrics, spans and the CLI.
    ///
    /// ```
    /// assert_eq!(llm_failover::Reason::RateLimit.as_str(), "rate_limit");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::ConnectionRefused => "connection_refused",
            Reason::Dns => "dns",
            Reason::Unreachable => "unreachable",
            Reason::Tls => "tls",
            Reason::ConnectionReset => "connection_reset",
            Reason::Timeout => "timeout",
            Reason::StreamInterrupted => "stream_interrupted",
            Reason::RateLimit => "rate_limit",
            Reason::Billing => "billing",
            Reason::Auth => "auth",
            Reason::AuthPermanent => "auth_permanent",
            Reason::Overloaded => "overloaded",
            Reason::ServerError => "server_error",
            Reason::ModelNotFound => "model_not_found",
            Reason::ContextOverflow => "context_overflow",
            Reason::ContentFilter => "content_filter",
            Reason::Format => "format",
            Reason::EmptyResponse => "empty_response",
            Reason::Cancelled => "cancelled",
            Reason::Unknown => "unknown",
        }
    }

    /// The default policy for this reason (the design contract's table).
    ///
    /// Transport failures (connection refused, DNS, unreachable, TLS) and key-level failures
    /// (auth, billing) indict the provider; everything else one model. Failures that another
    /// target cannot fix or must not see (format, content filter, context overflow) and
    /// cancellations never count against a breaker.
    ///
    /// ```
    /// use llm_failover::{Reason, reason::Action};
    /// assert_eq!(Reason::ContentFilter.policy().action, Action::ReturnError);
    /// assert_eq!(Reason::ContextOverflow.policy().action, Action::LargerContext);
    /// ```
    #[must_use]
    pub const fn policy(self) -> ReasonPolicy {
        use Action::{FailOver, LargerContext, RetryThenFailOver, ReturnError};
        use BreakerEffect::{Count, Ignore, TripImmediately};
        use Scope::{Model, Provider};
        let (action, breaker, scope, open_base) = match self {
            Reason::ConnectionRefused => (FailOver, Count, Provider, secs(10)),
            Reason::Dns => (FailOver, Count, Provider, secs(10)),
            Reason::Unreachable => (FailOver, Count, Provider, secs(10)),
            Reason::Tls => (FailOver, Count, Provider, secs(30)),
            Reason::ConnectionReset => (RetryThenFailOver, Count, Model, secs(5)),
            Reason::Timeout => (FailOver, Count, Model, secs(15)),
            Reason::StreamInterrupted => (FailOver, Count, Model, secs(10)),
            Reason::RateLimit => (RetryThenFailOver, Count, Model, secs(15)),
            Reason::Billing => (FailOver, TripImmediately, Provider, secs(30 * 60)),
            Reason::Auth => (FailOver, TripImmediately, Provider, secs(10 * 60)),
            Reason::AuthPermanent => (FailOver, TripImmediately, Provider, secs(60 * 60)),
            Reason::Overloaded => (FailOver, Count, Model, secs(15)),
            Reason::ServerError => (RetryThenFailOver, Count, Model, secs(10)),
            Reason::ModelNotFound => (FailOver, TripImmediately, Model, secs(5 * 60)),
            Reason::ContextOverflow => (LargerContext, Ignore, Model, secs(0)),
            Reason::ContentFilter => (ReturnError, Ignore, Model, secs(0)),
            Reason::Format => (ReturnError, Ignore, Model, secs(0)),
            Reason::EmptyResponse => (FailOver, Count, Model, secs(10)),
            Reason::Cancelled => (ReturnError, Ignore, Model, secs(0)),
            Reason::Unknown => (FailOver, Count, Model, secs(10)),
        };
        ReasonPolicy::new(action, breaker, scope, open_base)
    }

    /// True for the reasons that say the host could not be reached at all (connection refused,
    /// DNS, unreachable, TLS): no request was delivered, so trying another target is always
    /// safe.
    #[must_use]
    pub const fn is_transport(self) -> bool {
        matches!(
            self,
            Reason::ConnectionRefused | Reason::Dns | Reason::Unreachable | Reason::Tls
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failover reason {given:?}; expected one of: {}", Reason::ALL.map(Reason::as_str).join(", "))]
pub struct ParseReasonError {
    given: String,
}

impl FromStr for Reason {
    type Err = ParseReasonError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseReasonError {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_round_trip_and_match_serde() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
            assert_eq!(r.to_string(), r.as_str());
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        let err = "nope".parse::<Reason>().unwrap_err();
        assert!(err.to_string().contains("connection_refused"), "{err}");
    }

    #[test]
    fn all_lists_every_reason_once() {
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    #[test]
    fn default_policies_follow_the_design_contract() {
        for r in Reason::ALL {
            let p = r.policy();
            let never_counts = matches!(
                r,
                Reason::Format
                    | Reason::ContentFilter
                    | Reason::ContextOverflow
                    | Reason::Cancelled
            );
            assert_eq!(p.breaker == BreakerEffect::Ignore, never_counts, "{r}");
            if r.is_transport() {
                assert_eq!(p.scope, Scope::Provider, "{r}");
            }
        }
        for r in [Reason::RateLimit, Reason::ModelNotFound, Reason::Overloaded] {
            assert_eq!(r.policy().scope, Scope::Model, "{r}");
        }
        assert_eq!(Reason::Format.policy().action, Action::ReturnError);
        assert_eq!(Reason::ContentFilter.policy().action, Action::ReturnError);
        assert!(Reason::AuthPermanent.policy().open_base > Reason::Auth.policy().open_base);
        assert!(Reason::Billing.policy().open_base > Reason::ConnectionRefused.policy().open_base);
    }

    #[test]
    fn policy_serde_uses_humantime_durations() {
        let p = Reason::Auth.policy();
        let json = serde_json::to_string(&p).unwrap_or_default();
        assert!(json.contains("\"open_base\":\"10m\""), "{json}");
        let back: ReasonPolicy = serde_json::from_str(&json).unwrap_or(Reason::Format.policy());
        assert_eq!(back, p);
    }
}
