//! The runtime control handle: operator overrides and adoption of remote transitions.

use std::time::{Duration, SystemTime};

use crate::Reason;

use super::state::{DISABLED, FORCED_OPEN, METRICS_ONLY, NORMAL};
use super::{Breaker, Snapshot, State, Transition};

/// Forces, disables, shadows, resets and adopts a breaker's state at runtime.
///
/// Every method returns the transition it caused (`None` when the reported state did not
/// change), which is also emitted as a tracing event and given to the breaker's listener with
/// [`Origin::Control`](super::Origin::Control) or, for adoptions,
/// [`Origin::Remote`](super::Origin::Remote).
///
/// ```
/// use std::time::Duration;
/// use llm_failover::breaker::{Breaker, BreakerPolicy, State};
///
/// let breaker = Breaker::new(BreakerPolicy::default());
/// let control = breaker.control();
/// control.force_open(Some(Duration::from_secs(600)));
/// assert_eq!(breaker.state(), State::ForcedOpen);
/// assert!(breaker.try_acquire().is_err());
/// control.reset();
/// assert_eq!(breaker.state(), State::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct ControlHandle {
    pub(super) breaker: Breaker,
}

impl ControlHandle {
    /// Rejects every call for `duration` (`None`: until another action), then hands over to a
    /// half-open cycle so a probe confirms health before traffic returns.
    pub fn force_open(&self, duration: Option<Duration>) -> Option<Transition> {
        self.breaker.shared().set_mode(FORCED_OPEN, duration)
    }

    /// Lets every call through and records nothing for `duration` (`None`: until another
    /// action).
    pub fn disable(&self, duration: Option<Duration>) -> Option<Transition> {
        self.breaker.shared().set_mode(DISABLED, duration)
    }

    /// Shadow mode for `duration` (`None`: until another action): outcomes are recorded and
    /// the automatic state machine runs and reports its transitions (`shadow = true`), but no
    /// call is rejected.
    pub fn metrics_only(&self, duration: Option<Duration>) -> Option<Transition> {
        self.breaker.shared().set_mode(METRICS_ONLY, duration)
    }

    /// Ends any override and keeps the automatic state where it is.
    pub fn clear_override(&self) -> Option<Transition> {
        self.breaker.shared().set_mode(NORMAL, None)
    }

    /// Back to closed with empty counters, no override, no backoff and no Retry-After floor.
    pub fn reset(&self) -> Option<Transition> {
        self.breaker.shared().reset()
    }

    /// Applies "open until `until` for `reason`" published by another replica. Extends the
    /// open time if already open (never shortens it); does nothing if `until` has passed.
    /// Adoption does not grow this replica's backoff.
    pub fn adopt_open(&self, reason: Reason, until: SystemTime) -> Option<Transition> {
        self.breaker.shared().adopt_open(reason, until)
    }

    /// Applies "closed" published by another replica (its probes succeeded). Does nothing
    /// while a Retry-After floor seen by this replica still holds: the breaker stays open
    /// until it ends, then probes.
    pub fn adopt_closed(&self) -> Option<Transition> {
        self.breaker.shared().adopt_closed()
    }

    /// The reported state.
    #[must_use]
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// A point-in-time view.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.breaker.snapshot()
    }
}
