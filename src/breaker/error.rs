//! The breaker's errors: a rejected call, a wrapped call's failure, an invalid policy.

use std::fmt;
use std::time::Duration;

use crate::Reason;

use super::State;

/// The breaker refused a call. Cheap to build and to copy: no allocation.
///
/// Tells the caller when to come back ([`Rejected::retry_after`]) and why the breaker is
/// open ([`Rejected::reason`]), so a failover chain can skip the target and an HTTP front can
/// answer with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", RejectedDisplay(self))]
pub struct Rejected {
    pub(crate) state: State,
    /// The reason's index in [`Reason::ALL`] (out of range: none), decoded on demand.
    pub(crate) reason: u8,
    /// Nanoseconds until the breaker may admit again (`u64::MAX`: no end), converted on
    /// demand: the rejection path does no arithmetic it can leave to the caller.
    pub(crate) retry_nanos: u64,
    pub(crate) provider_wide: bool,
}

struct RejectedDisplay<'a>(&'a Rejected);

impl fmt::Display for RejectedDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let scope = if r.provider_wide {
            "provider-wide circuit breaker"
        } else {
            "circuit breaker"
        };
        write!(f, "{scope} is {}", r.state.as_str())?;
        if let Some(reason) = r.reason() {
            write!(f, " after {reason} failures")?;
        }
        match r.retry_after() {
            Some(d) => write!(f, "; try another target or retry in {d:?}"),
            None => write!(f, "; try another target (no end time is set)"),
        }
    }
}

impl Rejected {
    /// The state that rejected the call: open, half-open with every probe slot taken, or
    /// forced open.
    #[must_use]
    pub const fn state(&self) -> State {
        self.state
    }

    /// The reason that opened the breaker, if a failure did.
    #[must_use]
    pub fn reason(&self) -> Option<Reason> {
        Reason::ALL.get(usize::from(self.reason)).copied()
    }

    /// How long until the breaker may admit a call again; `None` when an operator forced it
    /// open without an end.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        if self.retry_nanos == u64::MAX {
            None
        } else {
            Some(Duration::from_nanos(self.retry_nanos))
        }
    }

    /// True when the provider-wide breaker rejected the call (every model of the provider is
    /// out), false when only the model's breaker did.
    #[must_use]
    pub const fn is_provider_wide(&self) -> bool {
        self.provider_wide
    }
}

/// The error of [`Breaker::call`](super::Breaker::call): the breaker rejected the call, or the
/// call ran and failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker did not let the call run.
    #[error(transparent)]
    Rejected(Rejected),
    /// The call ran and returned this error (already recorded by the breaker).
    #[error("call failed: {0}")]
    Inner(#[source] E),
}

/// A breaker policy value is out of range or conflicts with another.
///
/// The message names the field as it is spelled in TOML, the value given, and what would be
/// accepted.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// A field's value is outside the range it accepts.
    #[error(
        "breaker policy field `{field}` is {value}, but it must be {expected}; change `{field}`"
    )]
    OutOfRange {
        /// The field, as spelled in TOML (`reasons.<reason>.<field>` for per-reason fields).
        field: String,
        /// The value given.
        value: String,
        /// What the field accepts.
        expected: &'static str,
    },
    /// Two fields that exclude each other are both set.
    #[error("breaker policy fields `{first}` and `{second}` are both set; keep only one of them")]
    Conflict {
        /// The first field.
        first: &'static str,
        /// The second field.
        second: &'static str,
    },
}

impl PolicyError {
    #[cold]
    pub(crate) fn out_of_range(
        field: impl Into<String>,
        value: impl fmt::Debug,
        expected: &'static str,
    ) -> Self {
        PolicyError::OutOfRange {
            field: field.into(),
            value: format!("{value:?}"),
            expected,
        }
    }

    /// The field (or the first of two conflicting fields) the error is about.
    #[must_use]
    pub fn field(&self) -> &str {
        match self {
            PolicyError::OutOfRange { field, .. } => field,
            PolicyError::Conflict { first, .. } => first,
        }
    }
}

/// A registry could not be built from the targets given.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The same (provider, model) target was configured twice.
    #[error("breaker target {provider}/{model} is configured twice; remove one of them")]
    Duplicate {
        /// The provider.
        provider: String,
        /// The model.
        model: String,
    },
    /// A provider or model name is empty, or a model is named `*` (reserved for the
    /// provider-wide breaker).
    #[error(
        "breaker target name {name:?} is not allowed: names must be non-empty and a model cannot be \"*\" (the provider-wide breaker)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
}
