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
//
// Two words rather than one field per fact, on purpose: a struct of two scalars moves as two
// registers (rustc's scalar-pair layout), while four fields of mixed widths are an aggregate
// that the rejection path wrote byte by byte to the stack and then copied with one 16-byte
// load. That load cannot be forwarded from the narrower stores still in the store buffer and
// stalled for more than the whole rest of the rejection (8.8 ns against 2.9 ns).
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", RejectedDisplay(self))]
pub struct Rejected {
    /// Nanoseconds until the breaker may admit again (`u64::MAX`: no end), converted on
    /// demand: the rejection path does no arithmetic it can leave to the caller.
    retry_nanos: u64,
    /// The state, the reason's index in [`Reason::ALL`] (out of range: none) and the scope,
    /// packed by [`Rejected::new`] and decoded on demand.
    meta: u64,
}

/// Where the reason code sits in [`Rejected::meta`] (the state is the low byte).
const REASON_SHIFT: u32 = 8;
/// The bit of [`Rejected::meta`] that says provider-wide.
const PROVIDER_WIDE_BIT: u64 = 1 << 16;

/// The state as the low byte of [`Rejected::meta`]; [`state_of_code`] reverses it.
const fn state_code(state: State) -> u64 {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
        State::ForcedOpen => 3,
        State::Disabled => 4,
        State::MetricsOnly => 5,
    }
}

const fn state_of_code(code: u64) -> State {
    match code {
        0 => State::Closed,
        1 => State::Open,
        2 => State::HalfOpen,
        3 => State::ForcedOpen,
        4 => State::Disabled,
        _ => State::MetricsOnly,
    }
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("state", &self.state())
            .field("reason", &self.reason())
            .field("retry_after", &self.retry_after())
            .field("provider_wide", &self.is_provider_wide())
            .finish()
    }
}

struct RejectedDisplay<'a>(&'a Rejected);

impl fmt::Display for RejectedDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let scope = if r.is_provider_wide() {
            "provider-wide circuit breaker"
        } else {
            "circuit breaker"
        };
        write!(f, "{scope} is {}", r.state().as_str())?;
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
    /// A rejection by `state`, for the reason with index `reason` in [`Reason::ALL`] (out of
    /// range: none), with `retry_nanos` until the breaker may admit again (`u64::MAX`: no
    /// end).
    #[inline]
    pub(crate) const fn new(
        state: State,
        reason: u8,
        retry_nanos: u64,
        provider_wide: bool,
    ) -> Self {
        let scope = if provider_wide { PROVIDER_WIDE_BIT } else { 0 };
        Self {
            retry_nanos,
            meta: state_code(state) | (reason as u64) << REASON_SHIFT | scope,
        }
    }

    /// The state that rejected the call: open, half-open with every probe slot taken, or
    /// forced open.
    #[must_use]
    pub const fn state(&self) -> State {
        state_of_code(self.meta & 0xff)
    }

    /// The reason that opened the breaker, if a failure did.
    #[must_use]
    pub fn reason(&self) -> Option<Reason> {
        let code = (self.meta >> REASON_SHIFT) & 0xff;
        usize::try_from(code)
            .ok()
            .and_then(|i| Reason::ALL.get(i))
            .copied()
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
        self.meta & PROVIDER_WIDE_BIT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_gives_back_every_state_reason_and_scope_it_was_built_with() {
        for state in State::ALL {
            for code in 0..=u8::MAX {
                for provider_wide in [false, true] {
                    let r = Rejected::new(state, code, 7, provider_wide);
                    assert_eq!(r.state(), state);
                    assert_eq!(r.reason(), Reason::ALL.get(usize::from(code)).copied());
                    assert_eq!(r.is_provider_wide(), provider_wide);
                    assert_eq!(r.retry_after(), Some(Duration::from_nanos(7)));
                }
            }
        }
        assert_eq!(
            Rejected::new(State::ForcedOpen, 0, u64::MAX, false).retry_after(),
            None
        );
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
