//! Telemetry: the names of the crate's spans and events, the [`MetricsLayer`] that turns them
//! into Prometheus metrics, and the exporter helpers.
//!
//! Every part of the crate emits through the constants of [`names`] and the layer reads the
//! same constants, so a name is spelled once. Nothing in the crate calls the `metrics` facade
//! directly: an application that installs the layer gets every metric below, and one that
//! exports spans to OpenTelemetry instead gets the same facts as span fields.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use llm_failover::telemetry::{MetricsLayer, prometheus_builder, describe_metrics};
//!
//! // In an application: `let scrape = llm_failover::telemetry::install_prometheus(addr)?;`
//! let recorder = prometheus_builder().build_recorder();
//! let scrape = recorder.handle();
//! metrics::with_local_recorder(&recorder, || {
//!     describe_metrics();
//!     let layer = MetricsLayer::new();
//!     let subscriber = tracing_subscriber::registry()
//!         .with(layer.clone())
//!         .with(tracing_subscriber::fmt::layer());
//!     tracing::subscriber::with_default(subscriber, || {
//!         layer.register_breakers([("local", "*"), ("local", "llama3")]);
//!         // ... run requests through a route ...
//!     });
//! });
//! let text = scrape.render();
//! assert!(text.contains("# HELP llm_failover_breaker_state Circuit breaker state"));
//! assert!(text.contains(r#"llm_failover_breaker_state{provider="local",model="llama3",state="closed"} 1"#));
//! ```
//!
//! # The metrics
//!
//! One table, [`METRICS`], names every metric with its kind, labels and help; the layer is
//! the one place that turns spans and events into them.
//!
//! | metric | from | labels |
//! |---|---|---|
//! | `llm_failover_requests_total` | `failover` span close | `route`, `outcome` |
//! | `llm_failover_attempts_total` | `attempt` span close | `route` (of the parent request), `provider`, `model`, `role`, `outcome` |
//! | `llm_failover_failures_total` | `attempt` span close, outcome `failure` | `provider`, `model`, `role`, `reason` |
//! | `llm_failover_attempt_duration_seconds` | `attempt` span close, when a duration was recorded | `provider`, `model`, `outcome` |
//! | `llm_failover_time_to_first_token_seconds` | `attempt` span close, when a TTFT was recorded | `provider`, `model` |
//! | `llm_failover_failovers_total` | `failover_hop` event (inside the request span) | `route`, `from_provider`, `to_provider`, `reason` |
//! | `llm_failover_breaker_state` | `breaker_transition` event (not shadow), [`MetricsLayer::register_breakers`] | `provider`, `model`, `state` |
//! | `llm_failover_breaker_transitions_total` | `breaker_transition` event (shadow too) | `provider`, `model`, `from`, `to`, `reason` |
//! | `llm_failover_client_rejections_total` | `client_rejected` event | `client`, `reason` |
//! | `llm_failover_admin_actions_total` | `admin_action` event | `action`, `outcome` |
//! | `llm_failover_state_sync_total` | `state_sync` event (shared-state backend) | `op`, `outcome` |
//! | `llm_failover_state_backend_up` | `state_backend` event | none |
//! | `llm_failover_shed_total` | `shed` event (inside the request span) | `route`, `provider`, `model`, `cause` |
//! | `llm_failover_stream_resumes_total` | `stream_resume` event (inside the request span) | `route`, `from_provider`, `to_provider` (`none` when no target took it over), `outcome` |
//! | `llm_failover_inflight` | `inflight` event (+1 when an attempt is sent, -1 when it or its stream ends) | `provider`, `model` |
//! | `llm_failover_config_reloads_total` | `config_reload` event (not `initial`; both outcomes registered at 0 by the initial one) | `outcome` |
//! | `llm_failover_config_last_reload_success_timestamp_seconds` | `config_reload` event with outcome `ok` (the initial one too) | none |
//! | `llm_failover_tokens_total` | `attempt` span close, when it recorded `gen_ai.usage.*` | `route`, `provider`, `model`, `client` (from the enclosing proxy `request` span, `none` without one), `kind` |
//!
//! A breaker a reload removes (or replaces, its policy having changed) is announced by a
//! `breaker_retired` event: the layer sets all six of its state series to 0, so no series of
//! a breaker that no longer exists reports a state, and ignores later transitions of it (a
//! request that was in flight during the reload may still settle on it). The series stay in
//! the scrape at 0: the Prometheus exporter removes series only through its idle timeout,
//! which would also drop the live breakers' gauges, since those change only on transitions.
//! A `breaker_registered` event shows a new breaker closed (as
//! [`MetricsLayer::register_breaker`] does), also one whose name was retired before.
//!
//! Label values come only from configuration names (route, provider, model) and closed sets.
//! A reason field holding anything outside [`Reason::ALL`](crate::Reason::ALL) counts as
//! `unknown`; an outcome, role or state outside its set is not counted at all. Label fields
//! are read from `&str` values only: text recorded with `%` or `?` never becomes a label.
//!
//! Not counted, on purpose: an attempt span that closes without an outcome (the caller went
//! away mid-attempt; its request counts as `cancelled`), an attempt span or a `failover_hop`,
//! `shed` or `stream_resume` event outside a `failover` span (there is no route to label it
//! with), and a transition
//! whose `from` or `to` is not a state. Labels are taken when a span is created (route,
//! provider, model, role); outcome, reason, duration and TTFT may be recorded later with
//! `Span::record`. The layer reads INFO spans: a per-layer filter that hides the crate's INFO
//! spans from it hides its metrics too.
//!
//! The state gauge is one-hot: each transition sets its `to` state to 1 and the five others to
//! 0, under a per-breaker lock so that concurrent transitions never leave two states at 1.
//! Successes emit no event, so the gauge does not move with traffic. A *shadow* transition
//! (`shadow = true`: the automatic state machine moving under an override such as
//! metrics-only mode) is counted in the transitions counter, because reporting what the
//! breaker would have done is the point of metrics-only mode, but it leaves the gauge alone:
//! the gauge shows the state the breaker reports (`metrics_only`, `forced_open`, ...).
//!
//! # Why it is cheap, and why callsite interest stays default
//!
//! `tracing` caches per callsite whether *any* layer wants it. A layer that returns
//! `Interest::never()` from `register_callsite`, or `false` from `enabled`, silences that
//! callsite for every layer of the stack, so the layer keeps both defaults. Instead, each
//! hook starts with one comparison of the metadata's target against `llm_failover::`; the
//! application's spans and events leave there.
//!
//! For the crate's own spans, metric handles are cached, never rebuilt per event: the first
//! time a label tuple (route; route, provider, model and role; ...) is seen, its counters and
//! histograms are registered with the current recorder and kept in a small map; later spans
//! find them with a shared read lock and no allocation (label values are gathered in
//! per-thread buffers), and keep them in the span's extensions until it closes. Per-outcome
//! and per-reason handles are registered on first use, so only series that happen exist.
//! Because handles are cached, install the recorder before the first request. The design
//! follows `metrics-tracing-context`, which attaches span fields to metrics as labels; here
//! the span fields *are* the metrics.

mod catalog;
mod exporter;
mod layer;
mod otlp;

pub use self::catalog::{
    ADMIN_ACTIONS_TOTAL, ATTEMPT_DURATION_SECONDS, ATTEMPTS_TOTAL, BREAKER_STATE,
    BREAKER_TRANSITIONS_TOTAL, CLIENT_REJECTIONS_TOTAL,
    CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS, CONFIG_RELOADS_TOTAL, FAILOVERS_TOTAL,
    FAILURES_TOTAL, INFLIGHT, METRICS, Metric, MetricKind, REQUESTS_TOTAL, SHED_TOTAL,
    STATE_BACKEND_UP, STATE_SYNC_TOTAL, STREAM_RESUMES_TOTAL, TIME_TO_FIRST_TOKEN_SECONDS,
    TOKENS_TOTAL, describe_metrics,
};
pub use self::exporter::{
    ExporterError, LATENCY_BUCKETS, install_prometheus, install_prometheus_recorder,
    prometheus_builder,
};
pub use self::layer::MetricsLayer;
pub use self::otlp::{DEFAULT_SERVICE_NAME, LogFormat, OtlpError, OtlpExport, OtlpSettings};

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
        /// The breaker's generation after the transition; it grows with every transition of
        /// one breaker, so an observer drops a transition that arrives after a later one.
        pub const GENERATION: &str = "generation";

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

    /// The tracing target of the proxy's events (access control, admin actions, logs).
    pub const PROXY_TARGET: &str = "llm_failover::proxy";

    /// The proxy's span around one client request (under [`PROXY_TARGET`]); the request's
    /// `failover` span is its child. Fields: [`access::CLIENT`] (the configured client name,
    /// [`access::NO_CLIENT`] without client keys), [`access::ENDPOINT`]. The metrics layer
    /// reads the client from it for `llm_failover_tokens_total`.
    pub const PROXY_REQUEST_SPAN: &str = "request";

    /// The event that ends a client request (under [`PROXY_TARGET`]), once per request: the
    /// access log line. Fields: [`access::ENDPOINT`], [`access::ROUTE`], [`access::CLIENT`],
    /// [`access::STATUS`], [`access::DURATION_MS`], [`access::STREAM`], [`access::TRAIL`]
    /// and, for a stream, [`access::STREAM_END`]. Never a key or a prompt.
    pub const REQUEST_DONE_EVENT: &str = "request_done";

    /// The event emitted when the proxy turns a client's request away before it reaches an
    /// upstream. Fields: [`access::CLIENT`], [`access::REASON`].
    pub const CLIENT_REJECTED_EVENT: &str = "client_rejected";

    /// The event emitted for every breaker control action (and reload) an admin asks for.
    /// Fields: [`admin::ADMIN`], [`admin::ACTION`], [`admin::OUTCOME`], [`admin::PROVIDER`],
    /// [`admin::MODEL`], [`admin::DURATION`].
    pub const ADMIN_ACTION_EVENT: &str = "admin_action";

    /// Field names and values of [`CLIENT_REJECTED_EVENT`], [`PROXY_REQUEST_SPAN`] and
    /// [`REQUEST_DONE_EVENT`].
    pub mod access {
        /// The client's configured name, or [`UNKNOWN_CLIENT`] without a valid key (in a
        /// rejection) or [`NO_CLIENT`] (in a request span: no client keys configured). Never
        /// the key.
        pub const CLIENT: &str = "client";
        /// Why it was turned away: one of the `REASON_*` values.
        pub const REASON: &str = "reason";
        /// The endpoint called: `chat_completions`, `messages`, ...
        pub const ENDPOINT: &str = "endpoint";
        /// The route asked for (absent when the request named none the client may use).
        pub const ROUTE: &str = "route";
        /// The HTTP status of the response.
        pub const STATUS: &str = "status";
        /// From the request's arrival to its end (a stream's last event), in milliseconds.
        pub const DURATION_MS: &str = "duration_ms";
        /// True for a streamed answer.
        pub const STREAM: &str = "stream";
        /// Every attempt and its outcome, as in `x-failover-trail` (absent when nothing was
        /// tried).
        pub const TRAIL: &str = "trail";
        /// How a stream ended: `complete`, `broken`, `shutdown` or `client_gone`.
        pub const STREAM_END: &str = "stream_end";

        /// `client` of a request when no client keys are configured.
        pub const NO_CLIENT: &str = "none";

        /// `client` of a request without a valid key (or when no keys are configured).
        pub const UNKNOWN_CLIENT: &str = "unknown";
        /// No key, or a key the proxy does not know (401).
        pub const REASON_UNAUTHENTICATED: &str = "unauthenticated";
        /// A valid key on a route or endpoint it may not use (403, or 404 for a route).
        pub const REASON_FORBIDDEN: &str = "forbidden";
        /// Over the client's requests per minute (429).
        pub const REASON_RATE_LIMITED: &str = "rate_limited";
        /// Over the client's concurrent requests (429).
        pub const REASON_CONCURRENCY: &str = "concurrency";
        /// A body or head over the server's limit (413, 431).
        pub const REASON_TOO_LARGE: &str = "too_large";
        /// A request the proxy cannot serve as written (400, unknown route 404).
        pub const REASON_BAD_REQUEST: &str = "bad_request";
        /// The client took too long to send its request (408, or the connection closed).
        pub const REASON_TIMEOUT: &str = "timeout";
        /// Every `reason` value, in the order of the design contract.
        pub const REASONS: [&str; 7] = [
            REASON_UNAUTHENTICATED,
            REASON_FORBIDDEN,
            REASON_RATE_LIMITED,
            REASON_CONCURRENCY,
            REASON_TOO_LARGE,
            REASON_BAD_REQUEST,
            REASON_TIMEOUT,
        ];
    }

    /// The event emitted when the proxy's configuration is loaded: once at start
    /// ([`reload::INITIAL`] true) and on every reload, successful or not. Fields:
    /// [`reload::OUTCOME`], [`reload::INITIAL`], [`reload::LOADED_AT`].
    pub const CONFIG_RELOAD_EVENT: &str = "config_reload";

    /// The event emitted (under [`BREAKER_TARGET`]) when a reload drops a breaker, removed
    /// from the configuration or replaced because its policy changed. Fields:
    /// [`breaker::PROVIDER`], [`breaker::MODEL`].
    pub const BREAKER_RETIRED_EVENT: &str = "breaker_retired";

    /// The event emitted (under [`BREAKER_TARGET`]) when a reload adds a breaker (new, or a
    /// fresh one for a changed policy): its state gauge shows it closed. Fields:
    /// [`breaker::PROVIDER`], [`breaker::MODEL`].
    pub const BREAKER_REGISTERED_EVENT: &str = "breaker_registered";

    /// Field names and values of [`CONFIG_RELOAD_EVENT`].
    pub mod reload {
        /// [`OUTCOME_OK`] or [`OUTCOME_ERROR`].
        pub const OUTCOME: &str = "outcome";
        /// True for the load at start: sets the timestamp, counts no reload.
        pub const INITIAL: &str = "initial";
        /// When the configuration was loaded, in seconds since the Unix epoch (outcome ok).
        pub const LOADED_AT: &str = "loaded_at";
        /// The new configuration serves.
        pub const OUTCOME_OK: &str = "ok";
        /// It was rejected; the running one stays.
        pub const OUTCOME_ERROR: &str = "error";
        /// Every `outcome` value.
        pub const OUTCOMES: [&str; 2] = [OUTCOME_OK, OUTCOME_ERROR];
    }

    /// Field names and values of [`ADMIN_ACTION_EVENT`].
    pub mod admin {
        /// The admin's configured name (`[admin] name`), for the log; not a label.
        pub const ADMIN: &str = "admin";
        /// What was asked: one of the `ACTION_*` values.
        pub const ACTION: &str = "action";
        /// [`OUTCOME_OK`] or [`OUTCOME_ERROR`].
        pub const OUTCOME: &str = "outcome";
        /// The breaker's provider (breaker actions only).
        pub const PROVIDER: &str = "provider";
        /// The breaker's model, `*` for the provider-wide one (breaker actions only).
        pub const MODEL: &str = "model";
        /// How long the override lasts, in seconds (absent: until another action).
        pub const DURATION: &str = "duration_s";

        /// Hold the breaker open.
        pub const ACTION_FORCE_OPEN: &str = "force_open";
        /// Let every call through and record nothing.
        pub const ACTION_DISABLE: &str = "disable";
        /// Record and report, never reject.
        pub const ACTION_METRICS_ONLY: &str = "metrics_only";
        /// Back to closed with empty counters and no override.
        pub const ACTION_RESET: &str = "reset";
        /// Re-read the configuration file.
        pub const ACTION_RELOAD: &str = "reload";
        /// Every `action` value, in the order of the design contract.
        pub const ACTIONS: [&str; 5] = [
            ACTION_FORCE_OPEN,
            ACTION_DISABLE,
            ACTION_METRICS_ONLY,
            ACTION_RESET,
            ACTION_RELOAD,
        ];
        /// The action was carried out.
        pub const OUTCOME_OK: &str = "ok";
        /// It was not (unknown breaker, bad duration, not available).
        pub const OUTCOME_ERROR: &str = "error";
    }

    /// The tracing target of the shared-state backend's events (feature `redis`).
    pub const STATE_TARGET: &str = "llm_failover::state";

    /// The event emitted after every operation of the shared-state backend. Fields:
    /// [`state::OP`], [`state::OUTCOME`].
    pub const STATE_SYNC_EVENT: &str = "state_sync";

    /// The event emitted when the shared-state backend starts or stops answering. Field:
    /// [`state::UP`].
    pub const STATE_BACKEND_EVENT: &str = "state_backend";

    /// Field names and values of the shared-state backend's events.
    pub mod state {
        /// Sync event: the operation, one of [`OP_PUBLISH`], [`OP_ADOPT`], [`OP_RECONCILE`],
        /// [`OP_LEASE`], [`OP_COUNT`].
        pub const OP: &str = "op";
        /// Sync event: [`OUTCOME_OK`], [`OUTCOME_ERROR`] or [`OUTCOME_TIMEOUT`].
        pub const OUTCOME: &str = "outcome";
        /// Backend event: true while the backend answers.
        pub const UP: &str = "up";

        /// `op`: a local transition written to the backend.
        pub const OP_PUBLISH: &str = "publish";
        /// `op`: another replica's transition applied here.
        pub const OP_ADOPT: &str = "adopt";
        /// `op`: the periodic (or reconnecting) read of every breaker's key.
        pub const OP_RECONCILE: &str = "reconcile";
        /// `op`: a request for the fleet's half-open probe lease.
        pub const OP_LEASE: &str = "lease";
        /// `op`: a batch of local failures added to the fleet's count (fleet-wide counting).
        pub const OP_COUNT: &str = "count";
        /// `outcome`: done.
        pub const OUTCOME_OK: &str = "ok";
        /// `outcome`: the backend answered with an error, or could not be reached.
        pub const OUTCOME_ERROR: &str = "error";
        /// `outcome`: no answer within the configured timeout.
        pub const OUTCOME_TIMEOUT: &str = "timeout";
    }

    /// The tracing target of every chain span and event.
    pub const CHAIN_TARGET: &str = "llm_failover::chain";

    /// The span of one logical request through a route (the design contract's `failover`
    /// span). Fields: [`chain::ROUTE`], [`chain::REQUEST_OUTCOME`], [`chain::ATTEMPTS`].
    pub const REQUEST_SPAN: &str = "failover";

    /// The span of one attempt, a child of [`REQUEST_SPAN`]. Its fields follow the
    /// OpenTelemetry GenAI conventions plus the crate's own (see [`chain`]). A rejected
    /// attempt (breaker open) is a span too, with outcome `rejected`.
    pub const ATTEMPT_SPAN: &str = "attempt";

    /// The event emitted inside a request span when the request moves from one target to
    /// another. Fields: [`chain::FROM_PROVIDER`], [`chain::TO_PROVIDER`], [`chain::REASON`].
    pub const FAILOVER_EVENT: &str = "failover_hop";

    /// The event emitted inside a request span when a target is skipped at one of its own
    /// limits (nothing sent). Fields: [`chain::PROVIDER_LABEL`], [`chain::MODEL_LABEL`],
    /// [`chain::CAUSE`].
    pub const SHED_EVENT: &str = "shed";

    /// The event emitted inside a request span when a committed stream broke after its first
    /// token and the chain tried to finish the answer on another target (a continuation
    /// attempt with the answer so far as an assistant prefill). Fields:
    /// [`chain::FROM_PROVIDER`] (the provider whose stream broke), [`chain::TO_PROVIDER`]
    /// (the provider that continued it, [`chain::NO_PROVIDER`] when no target could take it
    /// over), [`chain::RESUME_OUTCOME`].
    pub const RESUME_EVENT: &str = "stream_resume";

    /// The event emitted when a target's in-flight count moves (a request sent, a request or
    /// stream ended). Fields: [`chain::PROVIDER_LABEL`], [`chain::MODEL_LABEL`],
    /// [`chain::DELTA`].
    pub const INFLIGHT_EVENT: &str = "inflight";

    /// Field names and values of the chain's spans and events.
    pub mod chain {
        /// Attempt span: the index of the target's tier in its route, from 0.
        pub const TIER: &str = "llm_failover.tier";
        /// Attempt span: the tier's pick policy (`ordered`, `weighted`, `least_loaded`).
        pub const PICK: &str = "llm_failover.pick";
        /// Shed and in-flight events: the provider.
        pub const PROVIDER_LABEL: &str = "provider";
        /// Shed and in-flight events: the model.
        pub const MODEL_LABEL: &str = "model";
        /// Shed event: the limit that shed the target (`concurrency`, `request_rate`,
        /// `token_rate`, `retry_budget`).
        pub const CAUSE: &str = "cause";
        /// In-flight event: +1 or -1.
        pub const DELTA: &str = "delta";
        /// `cause`: the target had its maximum of requests in flight.
        pub const SHED_CONCURRENCY: &str = "concurrency";
        /// `cause`: the target had used its requests per minute.
        pub const SHED_REQUEST_RATE: &str = "request_rate";
        /// `cause`: the target had used its tokens per minute.
        pub const SHED_TOKEN_RATE: &str = "token_rate";
        /// `cause`: the route's retry budget was spent.
        pub const SHED_RETRY_BUDGET: &str = "retry_budget";

        /// Request span: the route (client-facing model name, from configuration).
        pub const ROUTE: &str = "route";
        /// Request span: how the request ended, one of [`OUTCOME_OK`], [`OUTCOME_ERROR`],
        /// [`OUTCOME_EXHAUSTED`], [`OUTCOME_CANCELLED`]; recorded when it ends.
        pub const REQUEST_OUTCOME: &str = "outcome";
        /// Request span: how many attempts it made, rejections included.
        pub const ATTEMPTS: &str = "attempts";

        /// Attempt span: `gen_ai.operation.name` (always `chat`).
        pub const OPERATION: &str = "gen_ai.operation.name";
        /// Attempt span: `gen_ai.provider.name`, the provider as configured.
        pub const PROVIDER: &str = "gen_ai.provider.name";
        /// Attempt span: `gen_ai.request.model`, the upstream model.
        pub const MODEL: &str = "gen_ai.request.model";
        /// Attempt span: `error.type`, the failure reason (absent on success).
        pub const ERROR_TYPE: &str = "error.type";
        /// Attempt span: the attempt's number within the request, from 1.
        pub const ATTEMPT: &str = "llm_failover.attempt";
        /// Attempt span: [`ROLE_PRIMARY`] or [`ROLE_FALLBACK`].
        pub const ROLE: &str = "llm_failover.role";
        /// Attempt span: the state of the target's breaker when it was asked (a
        /// [`super::states`] value).
        pub const BREAKER_STATE: &str = "llm_failover.breaker.state";
        /// Attempt span: the failure reason, as `error.type` (absent on success).
        pub const REASON: &str = "llm_failover.reason";
        /// Attempt span: [`ATTEMPT_OK`], [`ATTEMPT_FAILURE`] or [`ATTEMPT_REJECTED`].
        pub const ATTEMPT_OUTCOME: &str = "llm_failover.outcome";
        /// Attempt span: the time to first token in seconds (streams only).
        pub const TTFT: &str = "llm_failover.ttft_s";
        /// Attempt span: the attempt's duration in seconds, recorded when it settles (for a
        /// stream, when the stream ends).
        pub const DURATION: &str = "llm_failover.duration_s";
        /// Attempt span: the HTTP status the provider answered with, if any.
        pub const STATUS: &str = "http.response.status_code";
        /// Attempt span: true on a continuation attempt, one that finishes a broken stream's
        /// answer from its prefill (absent on every other attempt).
        pub const RESUME: &str = "llm_failover.resume";
        /// Attempt span: `gen_ai.usage.input_tokens`, the input tokens the provider reported
        /// (cached ones included), when it did.
        pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
        /// Attempt span: `gen_ai.usage.output_tokens`, the output tokens reported.
        pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
        /// Attempt span: `gen_ai.usage.cache_read.input_tokens`, input tokens read from the
        /// provider's prompt cache.
        pub const CACHE_READ_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
        /// Attempt span: `gen_ai.usage.cache_creation.input_tokens`, input tokens written to
        /// the provider's prompt cache.
        pub const CACHE_WRITE_TOKENS: &str = "gen_ai.usage.cache_creation.input_tokens";

        /// `kind` label of `llm_failover_tokens_total`: input tokens neither read from nor
        /// written to a prompt cache.
        pub const TOKENS_INPUT: &str = "input";
        /// `kind`: output tokens.
        pub const TOKENS_OUTPUT: &str = "output";
        /// `kind`: input tokens read from a prompt cache.
        pub const TOKENS_CACHE_READ: &str = "cache_read";
        /// `kind`: input tokens written to a prompt cache.
        pub const TOKENS_CACHE_WRITE: &str = "cache_write";
        /// Every `kind`, in the order of the design contract.
        pub const TOKEN_KINDS: [&str; 4] = [
            TOKENS_INPUT,
            TOKENS_OUTPUT,
            TOKENS_CACHE_READ,
            TOKENS_CACHE_WRITE,
        ];

        /// Failover event: the provider left. Resume event: the provider whose stream broke.
        pub const FROM_PROVIDER: &str = "from_provider";
        /// Failover event: the provider tried next. Resume event: the provider that continued
        /// the answer, or [`NO_PROVIDER`].
        pub const TO_PROVIDER: &str = "to_provider";
        /// Failover event: why the request left (a failure's reason, or the reason that opened
        /// the breaker that refused it; `unknown` when an operator forced it open).
        pub const FAILOVER_REASON: &str = "reason";
        /// Resume event: [`RESUME_OK`] or [`RESUME_ERROR`].
        pub const RESUME_OUTCOME: &str = "outcome";
        /// Resume event: the request's whole trail, as in `x-failover-trail` (for the log; no
        /// metric reads it).
        pub const RESUME_TRAIL: &str = "trail";

        /// Resume event `to_provider`: no target could take the broken stream over.
        pub const NO_PROVIDER: &str = "none";
        /// Resume outcome: the continuation finished the answer.
        pub const RESUME_OK: &str = "ok";
        /// Resume outcome: it did not (no target could take it over, or the continuation
        /// failed too); the caller's stream ends with an error.
        pub const RESUME_ERROR: &str = "error";
        /// Every resume outcome.
        pub const RESUME_OUTCOMES: [&str; 2] = [RESUME_OK, RESUME_ERROR];

        /// `role` of the route's first target.
        pub const ROLE_PRIMARY: &str = "primary";
        /// `role` of every other target.
        pub const ROLE_FALLBACK: &str = "fallback";
        /// Attempt outcome: answered.
        pub const ATTEMPT_OK: &str = "ok";
        /// Attempt outcome: sent and failed.
        pub const ATTEMPT_FAILURE: &str = "failure";
        /// Attempt outcome: refused by a breaker, nothing sent.
        pub const ATTEMPT_REJECTED: &str = "rejected";
        /// Request outcome: answered.
        pub const OUTCOME_OK: &str = "ok";
        /// Request outcome: a failure returned to the caller as it was (format, content
        /// filter, ...), a broken stream, or the deadline.
        pub const OUTCOME_ERROR: &str = "error";
        /// Request outcome: every target failed or was open.
        pub const OUTCOME_EXHAUSTED: &str = "exhausted";
        /// Request outcome: the caller went away first.
        pub const OUTCOME_CANCELLED: &str = "cancelled";
    }
}
