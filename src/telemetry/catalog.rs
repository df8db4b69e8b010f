//! The one table of metrics: name, kind, labels, unit and help text of every metric the
//! [`MetricsLayer`](super::MetricsLayer) produces.
//!
//! Label *names* live only here; the layer passes label *values* in the order of
//! [`Metric::labels`]. The exporter describes every entry of [`METRICS`], so a new metric is
//! one constant and one entry in that list, plus the line of the layer that feeds it.

use ::metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, SharedString, Unit};

/// What kind of Prometheus metric an entry is.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// A monotonically increasing count (name ends in `_total`).
    Counter,
    /// A value that goes up and down (the breaker state gauge is one-hot).
    Gauge,
    /// A distribution of observations, rendered with the exporter's latency buckets.
    Histogram,
}

/// One metric of the design contract.
///
/// ```
/// use llm_failover::telemetry::{METRICS, MetricKind};
///
/// let failures = METRICS.iter().find(|m| m.name == "llm_failover_failures_total").unwrap();
/// assert_eq!(failures.kind, MetricKind::Counter);
/// assert_eq!(failures.labels, ["provider", "model", "role", "reason"]);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The label names, in the order the layer passes values.
    pub labels: &'static [&'static str],
    /// The unit, when it has one (times are in seconds).
    pub unit: Option<Unit>,
    /// The help text of the scrape's `# HELP` line.
    pub help: &'static str,
}

/// `llm_failover_requests_total{route,outcome}`: requests through a route, by how they ended
/// (`ok`, `error`, `exhausted`, `cancelled`). Counted when the `failover` span closes.
pub const REQUESTS_TOTAL: Metric = Metric {
    name: "llm_failover_requests_total",
    kind: MetricKind::Counter,
    labels: &["route", "outcome"],
    unit: None,
    help: "Requests through a failover route, by outcome (ok, error, exhausted, cancelled).",
};

/// `llm_failover_attempts_total{route,provider,model,role,outcome}`: attempts at a target, by
/// outcome (`ok`, `failure`, `rejected` by a breaker). Counted when the `attempt` span closes.
pub const ATTEMPTS_TOTAL: Metric = Metric {
    name: "llm_failover_attempts_total",
    kind: MetricKind::Counter,
    labels: &["route", "provider", "model", "role", "outcome"],
    unit: None,
    help: "Attempts at a provider/model target, by role (primary, fallback) and outcome \
           (ok, failure, rejected by an open breaker).",
};

/// `llm_failover_failures_total{provider,model,role,reason}`: failed attempts by reason.
pub const FAILURES_TOTAL: Metric = Metric {
    name: "llm_failover_failures_total",
    kind: MetricKind::Counter,
    labels: &["provider", "model", "role", "reason"],
    unit: None,
    help: "Failed attempts at a provider/model target, by role and classified failure reason.",
};

/// `llm_failover_failovers_total{route,from_provider,to_provider,reason}`: hops from one
/// target to the next (the `failover_hop` event).
pub const FAILOVERS_TOTAL: Metric = Metric {
    name: "llm_failover_failovers_total",
    kind: MetricKind::Counter,
    labels: &["route", "from_provider", "to_provider", "reason"],
    unit: None,
    help: "Requests that moved from one provider to the next, by the reason they left.",
};

/// `llm_failover_breaker_state{provider,model,state}`: one-hot; exactly one state is 1.
pub const BREAKER_STATE: Metric = Metric {
    name: "llm_failover_breaker_state",
    kind: MetricKind::Gauge,
    labels: &["provider", "model", "state"],
    unit: None,
    help: "Circuit breaker state, one-hot: 1 for the state the breaker reports (closed, open, \
           half_open, forced_open, disabled, metrics_only), 0 for the others. model=\"*\" is \
           the provider-wide breaker.",
};

/// `llm_failover_breaker_transitions_total{provider,model,from,to,reason}`.
pub const BREAKER_TRANSITIONS_TOTAL: Metric = Metric {
    name: "llm_failover_breaker_transitions_total",
    kind: MetricKind::Counter,
    labels: &["provider", "model", "from", "to", "reason"],
    unit: None,
    help: "Circuit breaker state transitions, with the reason that tripped the breaker \
           (none otherwise). Includes the shadow transitions of metrics_only mode.",
};

/// `llm_failover_attempt_duration_seconds{provider,model,outcome}`.
pub const ATTEMPT_DURATION_SECONDS: Metric = Metric {
    name: "llm_failover_attempt_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["provider", "model", "outcome"],
    unit: Some(Unit::Seconds),
    help: "Duration of attempts that were sent to a provider, until they settled (for \
           streams, until the stream ended), by outcome.",
};

/// `llm_failover_time_to_first_token_seconds{provider,model}` (streams).
pub const TIME_TO_FIRST_TOKEN_SECONDS: Metric = Metric {
    name: "llm_failover_time_to_first_token_seconds",
    kind: MetricKind::Histogram,
    labels: &["provider", "model"],
    unit: Some(Unit::Seconds),
    help: "Time from sending a streaming attempt to its first token.",
};

/// `llm_failover_client_rejections_total{client,reason}`: requests the proxy turned away
/// before they reached an upstream (the `client_rejected` event). `client` is the configured
/// name, `unknown` without a valid key; never the key.
pub const CLIENT_REJECTIONS_TOTAL: Metric = Metric {
    name: "llm_failover_client_rejections_total",
    kind: MetricKind::Counter,
    labels: &["client", "reason"],
    unit: None,
    help: "Client requests turned away before reaching a provider, by configured client name \
           (unknown without a valid key) and reason (unauthenticated, forbidden, rate_limited, \
           concurrency, too_large, bad_request, timeout).",
};

/// `llm_failover_admin_actions_total{action,outcome}`: breaker control actions and reloads
/// asked for by an admin (the `admin_action` event).
pub const ADMIN_ACTIONS_TOTAL: Metric = Metric {
    name: "llm_failover_admin_actions_total",
    kind: MetricKind::Counter,
    labels: &["action", "outcome"],
    unit: None,
    help: "Admin actions (force_open, disable, metrics_only, reset, reload), by outcome (ok, \
           error).",
};

/// `llm_failover_state_sync_total{op,outcome}`: operations of the shared-state backend
/// (`publish`, `adopt`, `reconcile`, `lease`) by outcome (`ok`, `error`, `timeout`).
pub const STATE_SYNC_TOTAL: Metric = Metric {
    name: "llm_failover_state_sync_total",
    kind: MetricKind::Counter,
    labels: &["op", "outcome"],
    unit: None,
    help: "Operations of the shared breaker-state backend (publish, adopt, reconcile, lease) \
           by outcome (ok, error, timeout).",
};

/// `llm_failover_state_backend_up`: 1 while the shared-state backend answers, else 0.
pub const STATE_BACKEND_UP: Metric = Metric {
    name: "llm_failover_state_backend_up",
    kind: MetricKind::Gauge,
    labels: &[],
    unit: None,
    help: "1 while the shared breaker-state backend (Redis) answers, 0 while this replica runs \
           on its local breakers alone.",
};

/// `llm_failover_inflight{provider,model}`: requests in flight on a target (a stream until
/// it ends). Moved by the `inflight` event.
pub const INFLIGHT: Metric = Metric {
    name: "llm_failover_inflight",
    kind: MetricKind::Gauge,
    labels: &["provider", "model"],
    unit: None,
    help: "Requests in flight on a provider/model target (streams until they end); counted for \
           targets with a max_inflight or in a least_loaded tier.",
};

/// `llm_failover_shed_total{route,provider,model,cause}`: targets skipped at one of their own
/// limits, nothing sent (the `shed` event).
pub const SHED_TOTAL: Metric = Metric {
    name: "llm_failover_shed_total",
    kind: MetricKind::Counter,
    labels: &["route", "provider", "model", "cause"],
    unit: None,
    help: "Targets a request skipped at one of their own limits, nothing sent, by cause \
           (concurrency, request_rate, token_rate, retry_budget).",
};

/// `llm_failover_stream_resumes_total{route,from_provider,to_provider,outcome}`: committed
/// streams that broke after their first token and that the chain tried to finish on another
/// target (the `stream_resume` event). `to_provider` is `none` when no target could take the
/// stream over; `outcome` is `ok` (the answer was finished) or `error`.
pub const STREAM_RESUMES_TOTAL: Metric = Metric {
    name: "llm_failover_stream_resumes_total",
    kind: MetricKind::Counter,
    labels: &["route", "from_provider", "to_provider", "outcome"],
    unit: None,
    help: "Streams that broke after their first token and were continued on another provider \
           from the answer so far, by outcome (ok: the answer was finished; error: it was not). \
           to_provider is none when no target could take the stream over.",
};

/// `llm_failover_config_reloads_total{outcome}`: configuration reloads (SIGHUP or
/// `POST /v1/failover/reload`), by outcome (`ok`: the new file serves; `error`: it was
/// rejected and the running configuration stays). Both series start at 0 when the proxy starts.
pub const CONFIG_RELOADS_TOTAL: Metric = Metric {
    name: "llm_failover_config_reloads_total",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    unit: None,
    help: "Configuration reloads, by outcome (ok: the new file serves; error: rejected, the \
           running configuration stays).",
};

/// `llm_failover_config_last_reload_success_timestamp_seconds`: when the configuration that
/// serves was loaded (at start, then at each successful reload), in seconds since the Unix
/// epoch.
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: Metric = Metric {
    name: "llm_failover_config_last_reload_success_timestamp_seconds",
    kind: MetricKind::Gauge,
    labels: &[],
    unit: Some(Unit::Seconds),
    help: "When the serving configuration was loaded (start or last successful reload), in \
           seconds since the Unix epoch.",
};

/// `llm_failover_tokens_total{route,provider,model,client,kind}`: the tokens providers
/// reported for the attempts of a route, by client (the configured name, `none` without client
/// keys) and kind (`input`: input tokens neither read from nor written to a prompt cache;
/// `output`; `cache_read`; `cache_write`). The four kinds add up to the tokens used. Counted
/// when an attempt span that recorded usage closes; a resumed stream counts each attempt's own
/// report once.
pub const TOKENS_TOTAL: Metric = Metric {
    name: "llm_failover_tokens_total",
    kind: MetricKind::Counter,
    labels: &["route", "provider", "model", "client", "kind"],
    unit: None,
    help: "Tokens providers reported for a route's attempts, by client (configured name, none \
           without client keys) and kind (input: not from or to a prompt cache; output; \
           cache_read; cache_write).",
};

/// Every metric the layer produces, in the order of the design contract.
pub const METRICS: &[Metric] = &[
    REQUESTS_TOTAL,
    ATTEMPTS_TOTAL,
    FAILURES_TOTAL,
    FAILOVERS_TOTAL,
    BREAKER_STATE,
    BREAKER_TRANSITIONS_TOTAL,
    ATTEMPT_DURATION_SECONDS,
    TIME_TO_FIRST_TOKEN_SECONDS,
    CLIENT_REJECTIONS_TOTAL,
    ADMIN_ACTIONS_TOTAL,
    STATE_SYNC_TOTAL,
    STATE_BACKEND_UP,
    INFLIGHT,
    SHED_TOTAL,
    STREAM_RESUMES_TOTAL,
    CONFIG_RELOADS_TOTAL,
    CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
    TOKENS_TOTAL,
];

/// Describes every metric of [`METRICS`] (help text and unit) to the current recorder: the
/// local one inside [`metrics::with_local_recorder`], else the global one.
///
/// The exporter helpers call it after installing the recorder; call it yourself when you
/// install a recorder of your own.
///
/// ```
/// let recorder = llm_failover::telemetry::prometheus_builder().build_recorder();
/// let handle = recorder.handle();
/// metrics::with_local_recorder(&recorder, llm_failover::telemetry::describe_metrics);
/// ```
pub fn describe_metrics() {
    ::metrics::with_recorder(|r| {
        for m in METRICS {
            let name = KeyName::from_const_str(m.name);
            let help = SharedString::const_str(m.help);
            match m.kind {
                MetricKind::Counter => r.describe_counter(name, m.unit, help),
                MetricKind::Gauge => r.describe_gauge(name, m.unit, help),
                MetricKind::Histogram => r.describe_histogram(name, m.unit, help),
            }
        }
    });
}

/// The metadata the layer registers its metrics with.
static METADATA: Metadata<'static> = Metadata::new(
    "llm_failover::telemetry",
    ::metrics::Level::INFO,
    Some(module_path!()),
);

impl Metric {
    fn key<const N: usize>(&self, values: [&str; N]) -> Key {
        debug_assert_eq!(N, self.labels.len(), "label values of {}", self.name);
        let labels: Vec<Label> = self
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, v.to_owned()))
            .collect();
        Key::from_parts(self.name, labels)
    }

    /// Registers the counter with these label values in the current recorder.
    pub(crate) fn counter<const N: usize>(&self, values: [&str; N]) -> Counter {
        debug_assert_eq!(self.kind, MetricKind::Counter);
        let key = self.key(values);
        ::metrics::with_recorder(|r| r.register_counter(&key, &METADATA))
    }

    /// Registers the gauge with these label values in the current recorder.
    pub(crate) fn gauge<const N: usize>(&self, values: [&str; N]) -> Gauge {
        debug_assert_eq!(self.kind, MetricKind::Gauge);
        let key = self.key(values);
        ::metrics::with_recorder(|r| r.register_gauge(&key, &METADATA))
    }

    /// Registers the histogram with these label values in the current recorder.
    pub(crate) fn histogram<const N: usize>(&self, values: [&str; N]) -> Histogram {
        debug_assert_eq!(self.kind, MetricKind::Histogram);
        let key = self.key(values);
        ::metrics::with_recorder(|r| r.register_histogram(&key, &METADATA))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for m in METRICS {
            assert!(m.name.starts_with("llm_failover_"), "{}", m.name);
            assert_eq!(
                m.kind == MetricKind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert_eq!(
                m.unit == Some(Unit::Seconds),
                m.name.ends_with("_seconds"),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty());
        }
    }
}
