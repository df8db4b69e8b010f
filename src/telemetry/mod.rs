//! Telemetry: the names of the crate's tracing spans and events, in one place.
//!
//! Every part of the crate emits through these constants and the metrics layer reads the same
//! constants, so a name is spelled once. Label values come only from configuration and the
//! closed reason and state sets; error text never becomes a field that turns into a label.

/// Event targets, event names, field names and fixed label values.
pub mod names {
    /// The tracing target of every breaker event.
    pub const BREAKER_TARGET: &str = "llm_failover::breaker";

    /// The name of the event emitted on every breaker state transition.
    pub const BREAKER_TRANSITION_EVENT: &str = "breaker_transition";

    /// Field names of the breaker transition event.
    pub mod breaker {
        /// The provider the breaker belongs to (from configuration).
        pub const PROVIDER: &str = "provider";
        /// The model, or [`PROVIDER_WIDE`] for the provider-wide breaker.
        pub const MODEL: &str = "model";
        /// The state before the transition (a [`super::states`] value).
        pub const FROM: &str = "from";
        /// The state after the transition (a [`super::states`] value).
        pub const TO: &str = "to";
        /// The reason that tripped the breaker, or [`NO_REASON`].
        pub const REASON: &str = "reason";
        /// When the open state ends, in milliseconds since the Unix epoch (absent when not
        /// opening, or when forced open with no end).
        pub const OPEN_UNTIL: &str = "open_until";
        /// How long the open state lasts, in milliseconds (absent when not opening).
        pub const OPEN_FOR_MS: &str = "open_for_ms";
        /// Who caused the transition: [`ORIGIN_LOCAL`], [`ORIGIN_CONTROL`] or
        /// [`ORIGIN_REMOTE`].
        pub const ORIGIN: &str = "origin";
        /// True when the transition is the shadow state machine's (metrics-only mode, or
        /// under a forced or disabled override): the reported state did not change.
        pub const SHADOW: &str = "shadow";

        /// The `model` value of a provider-wide breaker.
        pub const PROVIDER_WIDE: &str = "*";
        /// The `reason` value of a transition no reason caused.
        pub const NO_REASON: &str = "none";
        /// `origin`: the breaker's own rules.
        pub const ORIGIN_LOCAL: &str = "local";
        /// `origin`: an operator's control action or its expiry.
        pub const ORIGIN_CONTROL: &str = "control";
        /// `origin`: adopted from another replica.
        pub const ORIGIN_REMOTE: &str = "remote";
    }

    /// The breaker state label values (fixed by the design contract).
    pub mod states {
        /// Calls flow; outcomes are counted.
        pub const CLOSED: &str = "closed";
        /// Calls are rejected until the open time ends.
        pub const OPEN: &str = "open";
        /// A bounded number of probe calls decide between closed and open.
        pub const HALF_OPEN: &str = "half_open";
        /// An operator holds the breaker open.
        pub const FORCED_OPEN: &str = "forced_open";
        /// Everything passes and nothing is recorded.
        pub const DISABLED: &str = "disabled";
        /// Outcomes are recorded and reported, calls are never rejected.
        pub const METRICS_ONLY: &str = "metrics_only";
    }
}
