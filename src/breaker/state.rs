//! States, the packed state word, transitions and their telemetry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Reason;
use crate::telemetry::names::{self, breaker as field, states};

/// A breaker's state as reported to callers, metrics and the status endpoint.
///
/// `Closed`, `Open` and `HalfOpen` are the automatic states; `ForcedOpen`, `Disabled` and
/// `MetricsOnly` are operator overrides set through a [`ControlHandle`](super::ControlHandle),
/// under which the automatic state machine keeps its place.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the open time ends.
    Open,
    /// A bounded number of probes decide between closed and open.
    HalfOpen,
    /// An operator holds the breaker open.
    ForcedOpen,
    /// Everything passes and nothing is recorded.
    Disabled,
    /// Outcomes are recorded and transitions reported, but no call is rejected (shadow mode
    /// for trying new thresholds).
    MetricsOnly,
}

impl State {
    /// Every state, in declaration order (for one-hot gauges).
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// The label value fixed by the design contract.
    ///
    /// ```
    /// assert_eq!(llm_failover::breaker::State::HalfOpen.as_str(), "half_open");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => states::CLOSED,
            State::Open => states::OPEN,
            State::HalfOpen => states::HALF_OPEN,
            State::ForcedOpen => states::FORCED_OPEN,
            State::Disabled => states::DISABLED,
            State::MetricsOnly => states::METRICS_ONLY,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused a transition.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The breaker's own rules (thresholds, open time, probes).
    Local,
    /// An operator's control action, or the end of its duration.
    Control,
    /// Adopted from another replica ([`ControlHandle::adopt_open`](super::ControlHandle::adopt_open)).
    /// A publisher skips these so transitions do not echo between replicas.
    Remote,
}

impl Origin {
    /// The label value (`local`, `control`, `remote`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Origin::Local => field::ORIGIN_LOCAL,
            Origin::Control => field::ORIGIN_CONTROL,
            Origin::Remote => field::ORIGIN_REMOTE,
        }
    }
}

/// One state change of one breaker: what telemetry reports and what a shared-state backend
/// publishes (and adopts on other replicas with
/// [`ControlHandle::adopt_open`](super::ControlHandle::adopt_open)).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The provider the breaker belongs to.
    pub provider: Arc<str>,
    /// The model, or `*` for the provider-wide breaker.
    pub model: Arc<str>,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// The reason that tripped the breaker (transitions into `open` only).
    pub reason: Option<Reason>,
    /// When the open state ends (transitions into `open` and timed `forced_open`).
    pub open_until: Option<SystemTime>,
    /// How long the open state lasts, from the transition.
    pub open_for: Option<Duration>,
    /// Who caused it.
    pub origin: Origin,
    /// True for a transition of the automatic state machine while an override
    /// (metrics-only, forced open, disabled) decides admission: the reported state did not
    /// change. In metrics-only mode these are the transitions the breaker *would* have made.
    pub shadow: bool,
    /// The breaker's generation after the transition: it grows with every transition of one
    /// breaker, so an observer can drop a transition that reaches it after a later one.
    pub generation: u64,
}

impl Transition {
    /// Emits the transition as a tracing event (target [`names::BREAKER_TARGET`], name
    /// [`names::BREAKER_TRANSITION_EVENT`]); opening transitions at WARN, others at INFO.
    pub(crate) fn emit(&self) {
        let reason = self.reason.map_or(field::NO_REASON, Reason::as_str);
        let open_until = self.open_until.and_then(|t| {
            t.duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
        let open_for_ms = self
            .open_for
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        macro_rules! transition_event {
            ($level:expr) => {
                tracing::event!(
                    name: names::BREAKER_TRANSITION_EVENT,
                    target: names::BREAKER_TARGET,
                    $level,
                    { field::PROVIDER } = &*self.provider,
                    { field::MODEL } = &*self.model,
                    { field::FROM } = self.from.as_str(),
                    { field::TO } = self.to.as_str(),
                    { field::REASON } = reason,
                    { field::OPEN_UNTIL } = open_until,
                    { field::OPEN_FOR_MS } = open_for_ms,
                    { field::ORIGIN } = self.origin.as_str(),
                    { field::SHADOW } = self.shadow,
                    { field::GENERATION } = self.generation,
                    "circuit breaker {}/{} {} -> {}",
                    self.provider,
                    self.model,
                    self.from.as_str(),
                    self.to.as_str(),
                )
            };
        }
        match self.to {
            State::Open | State::ForcedOpen if !self.shadow => {
                transition_event!(tracing::Level::WARN);
            }
            State::Closed
            | State::Open
            | State::HalfOpen
            | State::ForcedOpen
            | State::Disabled
            | State::MetricsOnly => transition_event!(tracing::Level::INFO),
        }
    }
}

// The state word: bits 0-1 the automatic state, bits 2-3 the override mode, the rest a
// generation bumped by every transition. A permit remembers the generation it was issued in,
// so an outcome from an earlier cycle cannot move a later one.

pub(crate) const AUTO_MASK: u64 = 0b11;
pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;

pub(crate) const MODE_MASK: u64 = 0b1100;
pub(crate) const NORMAL: u64 = 0;
pub(crate) const FORCED_OPEN: u64 = 0b0100;
pub(crate) const DISABLED: u64 = 0b1000;
pub(crate) const METRICS_ONLY: u64 = 0b1100;

pub(crate) const GEN_SHIFT: u32 = 4;

/// The word for `auto` and `mode` one generation after `w`.
#[inline]
pub(crate) const fn next_word(w: u64, auto: u64, mode: u64) -> u64 {
    (((w >> GEN_SHIFT) + 1) << GEN_SHIFT) | mode | auto
}

#[inline]
pub(crate) const fn generation(w: u64) -> u64 {
    w >> GEN_SHIFT
}

/// The automatic state of a word as a [`State`].
pub(crate) const fn auto_state(w: u64) -> State {
    match w & AUTO_MASK {
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        _ => State::Closed,
    }
}

/// The state a word reports: the override if one is set, else the automatic state.
pub(crate) const fn reported_state(w: u64) -> State {
    match w & MODE_MASK {
        FORCED_OPEN => State::ForcedOpen,
        DISABLED => State::Disabled,
        METRICS_ONLY => State::MetricsOnly,
        _ => auto_state(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_pack_state_mode_and_generation() {
        let w = next_word(0, OPEN, METRICS_ONLY);
        assert_eq!(generation(w), 1);
        assert_eq!(auto_state(w), State::Open);
        assert_eq!(reported_state(w), State::MetricsOnly);
        let w2 = next_word(w, HALF_OPEN, NORMAL);
        assert_eq!(generation(w2), 2);
        assert_eq!(reported_state(w2), State::HalfOpen);
    }

    #[test]
    fn state_labels_match_the_design_contract() {
        let labels: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            labels,
            [
                "closed",
                "open",
                "half_open",
                "forced_open",
                "disabled",
                "metrics_only"
            ]
        );
    }
}
