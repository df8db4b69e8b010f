//! The `tracing-subscriber` layer that turns the crate's spans and events into metrics.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, RwLock};

use ::metrics::{Counter, Gauge, Histogram};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::catalog::{
    ADMIN_ACTIONS_TOTAL, ATTEMPT_DURATION_SECONDS, ATTEMPTS_TOTAL, BREAKER_STATE,
    BREAKER_TRANSITIONS_TOTAL, CLIENT_REJECTIONS_TOTAL,
    CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS, CONFIG_RELOADS_TOTAL, FAILOVERS_TOTAL,
    FAILURES_TOTAL, INFLIGHT, Metric, REQUESTS_TOTAL, SHED_TOTAL, STATE_BACKEND_UP,
    STATE_SYNC_TOTAL, STREAM_RESUMES_TOTAL, TIME_TO_FIRST_TOKEN_SECONDS, TOKENS_TOTAL,
};
use super::names::{
    self, access as afield, admin as dfield, breaker as bfield, chain as cfield, reload as rfield,
    state as sfield, states,
};
use crate::Reason;

/// Every target the crate emits under starts with this; anything else is the application's.
const OURS: &str = "llm_failover::";

/// Request outcome label values, indexed.
const REQUEST_OUTCOMES: [&str; 4] = [
    cfield::OUTCOME_OK,
    cfield::OUTCOME_ERROR,
    cfield::OUTCOME_EXHAUSTED,
    cfield::OUTCOME_CANCELLED,
];

/// Attempt outcome label values, indexed.
const ATTEMPT_OUTCOMES: [&str; 3] = [
    cfield::ATTEMPT_OK,
    cfield::ATTEMPT_FAILURE,
    cfield::ATTEMPT_REJECTED,
];
const FAILURE: usize = 1;

/// Shed cause label values, indexed.
const SHED_CAUSES: [&str; 4] = [
    cfield::SHED_CONCURRENCY,
    cfield::SHED_REQUEST_RATE,
    cfield::SHED_TOKEN_RATE,
    cfield::SHED_RETRY_BUDGET,
];

/// Breaker state label values, indexed.
const STATES: [&str; 6] = [
    states::CLOSED,
    states::OPEN,
    states::HALF_OPEN,
    states::FORCED_OPEN,
    states::DISABLED,
    states::METRICS_ONLY,
];
const CLOSED: usize = 0;

/// How many reasons there are; index `REASONS` stands for `none` in breaker transitions.
const REASONS: usize = Reason::ALL.len();
const NO_REASON: usize = REASONS;
const UNKNOWN: usize = Reason::Unknown as usize;

fn index_of(set: &[&str], value: &str) -> Option<usize> {
    set.iter().position(|s| *s == value)
}

/// The reason's index in [`Reason::ALL`]; anything that is not a reason is `unknown`, so free
/// text never becomes a label.
fn reason_index(value: &str) -> usize {
    Reason::ALL
        .iter()
        .position(|r| r.as_str() == value)
        .unwrap_or(UNKNOWN)
}

fn reason_label(i: usize) -> &'static str {
    Reason::ALL.get(i).map_or(bfield::NO_REASON, |r| r.as_str())
}

/// A [`tracing_subscriber::Layer`] that turns the crate's own spans and events into the
/// metrics of the design contract (see the [module docs](super) for the table), through the
/// [`metrics`] facade.
///
/// It never disables anything: callsite interest stays at the default, and spans and events
/// whose target does not start with `llm_failover::` are skipped with one string comparison.
/// Metric handles are registered with the recorder that is current the first time a label set
/// is seen and cached from then on, so **install the recorder (for example with
/// [`install_prometheus`](super::install_prometheus)) before the first request**.
///
/// Cloning is cheap and clones share their handles, so keep a clone to call
/// [`register_breakers`](Self::register_breakers) after the subscriber is installed.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt as _;
/// use llm_failover::telemetry::MetricsLayer;
///
/// let recorder = llm_failover::telemetry::prometheus_builder().build_recorder();
/// let scrape = recorder.handle();
/// metrics::with_local_recorder(&recorder, || {
///     let layer = MetricsLayer::new();
///     let subscriber = tracing_subscriber::registry().with(layer.clone());
///     tracing::subscriber::with_default(subscriber, || {
///         // A fresh process shows its breakers closed before any transition.
///         layer.register_breakers([("local", "llama3"), ("local", "*")]);
///     });
/// });
/// assert!(scrape.render().contains(
///     r#"llm_failover_breaker_state{provider="local",model="*",state="closed"} 1"#
/// ));
/// ```
#[derive(Clone, Default)]
pub struct MetricsLayer {
    inner: Arc<Inner>,
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    /// By route.
    routes: Cache<RouteHandles>,
    /// By route, provider, model and role.
    attempts: Cache<AttemptHandles>,
    /// By route, from provider and to provider.
    failovers: Cache<RoutePair<REASONS>>,
    /// By provider and model.
    breakers: Cache<BreakerHandles>,
    /// By client name, then reason.
    rejections: Cache<RejectionHandles>,
    /// By action, then outcome.
    admin_actions: [[OnceLock<Counter>; 2]; dfield::ACTIONS.len()],
    /// Shared-state sync operations, by op and outcome.
    sync: [[OnceLock<Counter>; SYNC_OUTCOMES.len()]; SYNC_OPS.len()],
    /// Whether the shared-state backend answers.
    backend_up: OnceLock<Gauge>,
    /// By route, provider and model.
    shed: Cache<RoutePair<{ SHED_CAUSES.len() }>>,
    /// By route, from provider and to provider.
    resumes: Cache<RoutePair<{ cfield::RESUME_OUTCOMES.len() }>>,
    /// By provider and model.
    inflight: Cache<Gauge>,
    /// By outcome.
    reloads: [OnceLock<Counter>; rfield::OUTCOMES.len()],
    reload_timestamp: OnceLock<Gauge>,
    /// By route, provider, model and client, then kind.
    tokens: Cache<TokenHandles>,
}

/// The token counters of one route, target and client, one per kind.
struct TokenHandles {
    labels: [Box<str>; 4],
    kinds: [OnceLock<Counter>; cfield::TOKEN_KINDS.len()],
}

/// The client of a proxy request span (kept in its extensions for the spans below it).
struct ClientSpan(Arc<str>);

/// The client of a request outside the proxy's, shared so a request span does not allocate it.
static NO_CLIENT: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(afield::NO_CLIENT));

struct RejectionHandles {
    client: Box<str>,
    reasons: [OnceLock<Counter>; afield::REASONS.len()],
}

/// Shared-state sync op label values, indexed.
const SYNC_OPS: [&str; 5] = [
    sfield::OP_PUBLISH,
    sfield::OP_ADOPT,
    sfield::OP_RECONCILE,
    sfield::OP_LEASE,
    sfield::OP_COUNT,
];

/// Shared-state sync outcome label values, indexed.
const SYNC_OUTCOMES: [&str; 3] = [
    sfield::OUTCOME_OK,
    sfield::OUTCOME_ERROR,
    sfield::OUTCOME_TIMEOUT,
];

/// Reads a `state_sync` or `state_backend` event: op and outcome indices, the up flag.
#[derive(Default)]
struct SyncVisitor {
    op: Option<usize>,
    outcome: Option<usize>,
    up: Option<bool>,
}

impl Visit for SyncVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            sfield::OP => self.op = index_of(&SYNC_OPS, value),
            sfield::OUTCOME => self.outcome = index_of(&SYNC_OUTCOMES, value),
            _ => {}
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == sfield::UP {
            self.up = Some(value);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

impl MetricsLayer {
    /// A layer with no cached handles.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows the breaker of `provider`/`model` (`*` for the provider-wide breaker) as
    /// `closed` in the state gauge, unless a transition of it was already seen.
    ///
    /// Call it for every configured breaker at start-up (see
    /// [`register_breakers`](Self::register_breakers)) so that a fresh process reports its
    /// breakers before any of them changes state. The gauge is registered with the current
    /// recorder.
    pub fn register_breaker(&self, provider: &str, model: &str) {
        let handles = with_scratch(|s| {
            encode(&mut s.key, &[provider, model]);
            self.inner
                .breakers
                .get_or_insert(&s.key, || BreakerHandles::new(provider, model))
        });
        handles.initialise();
    }

    /// Takes the breaker of `provider`/`model` out of the state gauge: all six of its series
    /// read 0, and later transitions of it move only the transitions counter, until it is
    /// registered again (then it shows `closed`, as a new breaker). For a breaker a reload
    /// removed; the proxy announces it with a `breaker_retired` event, which calls this.
    pub fn unregister_breaker(&self, provider: &str, model: &str) {
        self.inner.retire_breaker(provider, model);
    }

    /// [`register_breaker`](Self::register_breaker) for each `(provider, model)` pair.
    ///
    /// ```
    /// # use llm_failover::telemetry::MetricsLayer;
    /// let registry = llm_failover::breaker::Registry::builder()
    ///     .target("openai", "gpt-4o-mini")
    ///     .build()?;
    /// let layer = MetricsLayer::new();
    /// layer.register_breakers(registry.iter().map(|b| (b.provider(), b.model())));
    /// # Ok::<(), llm_failover::breaker::RegistryError>(())
    /// ```
    pub fn register_breakers<'a>(&self, breakers: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (provider, model) in breakers {
            self.register_breaker(provider, model);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handle caches

/// Handles by an encoded label tuple. Reads take a shared lock and allocate nothing.
struct Cache<V> {
    map: RwLock<HashMap<Box<str>, Arc<V>>>,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<V> Cache<V> {
    fn get_or_insert(&self, key: &str, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(v) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Arc::clone(v);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key.into()).or_insert_with(|| Arc::new(make())))
    }
}

/// Writes `parts` length-prefixed, so that different tuples never encode the same.
fn encode(key: &mut String, parts: &[&str]) {
    key.clear();
    for p in parts {
        key.extend(p.len().to_le_bytes().map(char::from));
        key.push_str(p);
    }
}

/// Per-thread buffers for label values and keys, so a cache hit allocates nothing.
#[derive(Default)]
struct Scratch {
    a: String,
    b: String,
    key: String,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::default();
}

/// Runs `f` with this thread's buffers, emptied. Re-entered (a recorder that emits the
/// crate's events) or on a thread that is ending, it runs with fresh ones.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.try_with(Cell::take).unwrap_or_default();
    s.a.clear();
    s.b.clear();
    let r = f(&mut s);
    let _ = SCRATCH.try_with(|c| c.set(s));
    r
}

fn lazy_counter(cell: &OnceLock<Counter>, make: impl FnOnce() -> Counter) -> &Counter {
    cell.get_or_init(make)
}

struct RouteHandles {
    route: Box<str>,
    requests: [OnceLock<Counter>; REQUEST_OUTCOMES.len()],
}

impl RouteHandles {
    fn new(route: &str) -> Self {
        Self {
            route: route.into(),
            requests: Default::default(),
        }
    }
}

struct AttemptHandles {
    route: Box<str>,
    provider: Box<str>,
    model: Box<str>,
    role: &'static str,
    attempts: [OnceLock<Counter>; ATTEMPT_OUTCOMES.len()],
    failures: [OnceLock<Counter>; REASONS],
    durations: [OnceLock<Histogram>; ATTEMPT_OUTCOMES.len()],
    ttft: OnceLock<Histogram>,
}

/// The counters of one route and two labels (from and to provider, or provider and model),
/// one per value of the event's closed-set label.
struct RoutePair<const N: usize> {
    route: Box<str>,
    a: Box<str>,
    b: Box<str>,
    counters: [OnceLock<Counter>; N],
}

/// How a route-scoped event with two labels and a closed-set one is counted: failover hops
/// (by reason), sheds (by cause) and stream resumes (by outcome).
struct PairCount {
    /// The fields of the two labels and of the closed-set one.
    fields: [&'static str; 3],
    /// The closed set's index of a value; `None` is not counted.
    index: fn(&str) -> Option<usize>,
    /// The index when the event has no such field (`None`: not counted).
    missing: Option<usize>,
    /// The label value of an index.
    label: fn(usize) -> &'static str,
    metric: &'static Metric,
}

const HOPS: PairCount = PairCount {
    fields: [
        cfield::FROM_PROVIDER,
        cfield::TO_PROVIDER,
        cfield::FAILOVER_REASON,
    ],
    index: |v| Some(reason_index(v)),
    missing: Some(UNKNOWN),
    label: reason_label,
    metric: &FAILOVERS_TOTAL,
};

const SHEDS: PairCount = PairCount {
    fields: [cfield::PROVIDER_LABEL, cfield::MODEL_LABEL, cfield::CAUSE],
    index: |v| index_of(&SHED_CAUSES, v),
    missing: None,
    label: |i| SHED_CAUSES[i],
    metric: &SHED_TOTAL,
};

const RESUMES: PairCount = PairCount {
    fields: [
        cfield::FROM_PROVIDER,
        cfield::TO_PROVIDER,
        cfield::RESUME_OUTCOME,
    ],
    index: |v| index_of(&cfield::RESUME_OUTCOMES, v),
    missing: None,
    label: |i| cfield::RESUME_OUTCOMES[i],
    metric: &STREAM_RESUMES_TOTAL,
};

struct BreakerHandles {
    provider: Box<str>,
    model: Box<str>,
    /// One per state, registered up front so every transition writes the whole one-hot set.
    gauges: [Gauge; STATES.len()],
    /// Serialises gauge updates, so concurrent transitions never leave two states at 1.
    state: Mutex<BreakerSeen>,
}

#[derive(Default)]
struct BreakerSeen {
    current: Option<usize>,
    /// The generation of the transition the gauge shows: an older one arriving late (the
    /// breaker publishes after releasing its lock) must not overwrite it.
    generation: u64,
    /// By (from, to, reason). Transitions are rare; a small map is enough.
    transitions: HashMap<(usize, usize, usize), Counter>,
    /// Removed by a reload: the gauge reads 0 in every state and transitions leave it alone.
    retired: bool,
}

impl BreakerHandles {
    fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            gauges: STATES.map(|s| BREAKER_STATE.gauge([provider, model, s])),
            state: Mutex::default(),
        }
    }

    fn initialise(&self) {
        let mut seen = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.retired {
            // A new breaker under a retired one's name: its generations start again.
            seen.retired = false;
            seen.generation = 0;
            self.show(&mut seen, CLOSED);
        } else if seen.current.is_none() {
            self.show(&mut seen, CLOSED);
        }
    }

    fn retire(&self) {
        let mut seen = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for g in &self.gauges {
            g.set(0.0);
        }
        seen.current = None;
        seen.retired = true;
    }

    fn show(&self, seen: &mut BreakerSeen, state: usize) {
        for (i, g) in self.gauges.iter().enumerate() {
            g.set(if i == state { 1.0 } else { 0.0 });
        }
        seen.current = Some(state);
    }

    fn transition(&self, from: usize, to: usize, reason: usize, shadow: bool, generation: u64) {
        let mut seen = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        seen.transitions
            .entry((from, to, reason))
            .or_insert_with(|| {
                BREAKER_TRANSITIONS_TOTAL.counter([
                    &self.provider,
                    &self.model,
                    STATES[from],
                    STATES[to],
                    reason_label(reason),
                ])
            })
            .increment(1);
        if !shadow && !seen.retired && generation >= seen.generation {
            seen.generation = generation;
            self.show(&mut seen, to);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-span state, kept in the span's extensions

struct RequestSpan {
    handles: Arc<RouteHandles>,
    outcome: Option<usize>,
    /// The client of the enclosing proxy request ([`afield::NO_CLIENT`] without one).
    client: Arc<str>,
}

impl RequestSpan {
    fn close(self) {
        let Some(o) = self.outcome else { return };
        let h = &self.handles;
        lazy_counter(&h.requests[o], || {
            REQUESTS_TOTAL.counter([&h.route, REQUEST_OUTCOMES[o]])
        })
        .increment(1);
    }
}

#[derive(Default)]
struct AttemptFields {
    outcome: Option<usize>,
    reason: Option<usize>,
    error_type: Option<usize>,
    duration: Option<f64>,
    ttft: Option<f64>,
    /// Reported usage: input (cached included), output, cache read, cache write.
    tokens: [Option<u64>; 4],
}

struct AttemptSpan {
    handles: Arc<AttemptHandles>,
    fields: AttemptFields,
    client: Arc<str>,
}

impl AttemptSpan {
    /// Counts the reported usage by kind; `input` counts the tokens no cache read or wrote.
    fn count_tokens(&self, inner: &Inner) {
        let [input, output, read, write] = self.fields.tokens;
        if self.fields.tokens.iter().all(Option::is_none) {
            return;
        }
        let cached = read.unwrap_or(0).saturating_add(write.unwrap_or(0));
        let counts = [input.map(|i| i.saturating_sub(cached)), output, read, write];
        let h = &self.handles;
        let t = with_scratch(|s| {
            encode(&mut s.key, &[&h.route, &h.provider, &h.model, &self.client]);
            inner.tokens.get_or_insert(&s.key, || TokenHandles {
                labels: [
                    h.route.clone(),
                    h.provider.clone(),
                    h.model.clone(),
                    (*self.client).into(),
                ],
                kinds: Default::default(),
            })
        });
        for (i, n) in counts.into_iter().enumerate() {
            let Some(n) = n else { continue };
            lazy_counter(&t.kinds[i], || {
                let [route, provider, model, client] = &t.labels;
                TOKENS_TOTAL.counter([route, provider, model, client, cfield::TOKEN_KINDS[i]])
            })
            .increment(n);
        }
    }

    fn close(self, inner: &Inner) {
        self.count_tokens(inner);
        let h = &self.handles;
        let f = &self.fields;
        if let Some(t) = f.ttft {
            h.ttft
                .get_or_init(|| TIME_TO_FIRST_TOKEN_SECONDS.histogram([&h.provider, &h.model]))
                .record(t);
        }
        // Settled without an outcome: the caller went away mid-attempt (the request counts
        // as cancelled). Nothing to say about the provider.
        let Some(o) = f.outcome else { return };
        let outcome = ATTEMPT_OUTCOMES[o];
        lazy_counter(&h.attempts[o], || {
            ATTEMPTS_TOTAL.counter([&h.route, &h.provider, &h.model, h.role, outcome])
        })
        .increment(1);
        if o == FAILURE {
            let r = f.reason.or(f.error_type).unwrap_or(UNKNOWN);
            lazy_counter(&h.failures[r], || {
                FAILURES_TOTAL.counter([&h.provider, &h.model, h.role, reason_label(r)])
            })
            .increment(1);
        }
        if let Some(d) = f.duration {
            h.durations[o]
                .get_or_init(|| {
                    ATTEMPT_DURATION_SECONDS.histogram([&h.provider, &h.model, outcome])
                })
                .record(d);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field visitors. Label fields are read from `&str` values only; anything recorded with
// `Debug`/`Display` is free text and never becomes a label.

struct RequestVisitor<'a> {
    route: Option<&'a mut String>,
    outcome: &'a mut Option<usize>,
}

impl Visit for RequestVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            cfield::ROUTE => {
                if let Some(route) = self.route.as_deref_mut() {
                    route.push_str(value);
                }
            }
            cfield::REQUEST_OUTCOME => *self.outcome = index_of(&REQUEST_OUTCOMES, value),
            _ => {}
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

struct AttemptVisitor<'a> {
    provider: Option<&'a mut String>,
    model: Option<&'a mut String>,
    role: Option<&'static str>,
    fields: &'a mut AttemptFields,
}

impl Visit for AttemptVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            cfield::PROVIDER => {
                if let Some(p) = self.provider.as_deref_mut() {
                    p.push_str(value);
                }
            }
            cfield::MODEL => {
                if let Some(m) = self.model.as_deref_mut() {
                    m.push_str(value);
                }
            }
            cfield::ROLE => {
                self.role = [cfield::ROLE_PRIMARY, cfield::ROLE_FALLBACK]
                    .into_iter()
                    .find(|r| *r == value);
            }
            cfield::ATTEMPT_OUTCOME => self.fields.outcome = index_of(&ATTEMPT_OUTCOMES, value),
            cfield::REASON => self.fields.reason = Some(reason_index(value)),
            cfield::ERROR_TYPE => self.fields.error_type = Some(reason_index(value)),
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        match field.name() {
            cfield::DURATION => self.fields.duration = Some(value),
            cfield::TTFT => self.fields.ttft = Some(value),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let slot = match field.name() {
            cfield::INPUT_TOKENS => 0,
            cfield::OUTPUT_TOKENS => 1,
            cfield::CACHE_READ_TOKENS => 2,
            cfield::CACHE_WRITE_TOKENS => 3,
            _ => return,
        };
        self.fields.tokens[slot] = Some(value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(v) = u64::try_from(value) {
            self.record_u64(field, v);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// The fields of an event counted by [`PairCount`].
struct CountedPairVisitor<'a> {
    count: &'a PairCount,
    a: &'a mut String,
    b: &'a mut String,
    value: Option<usize>,
}

impl Visit for CountedPairVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let [a, b, label] = self.count.fields;
        let name = field.name();
        if name == a {
            self.a.push_str(value);
        } else if name == b {
            self.b.push_str(value);
        } else if name == label {
            self.value = (self.count.index)(value);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// Reads the `&str` fields of an event into `a` (the first named) and `b` (the second).
struct PairVisitor<'a> {
    names: [&'static str; 2],
    a: &'a mut String,
    b: &'a mut String,
}

impl Visit for PairVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.names[0] {
            self.a.push_str(value);
        } else if field.name() == self.names[1] {
            self.b.push_str(value);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// The fields of an in-flight event.
struct TargetVisitor<'a> {
    provider: &'a mut String,
    model: &'a mut String,
    delta: i64,
}

impl Visit for TargetVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            cfield::PROVIDER_LABEL => self.provider.push_str(value),
            cfield::MODEL_LABEL => self.model.push_str(value),
            _ => {}
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == cfield::DELTA {
            self.delta = value;
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// The fields of a `config_reload` event.
#[derive(Default)]
struct ReloadVisitor {
    outcome: Option<usize>,
    initial: bool,
    loaded_at: Option<f64>,
}

impl Visit for ReloadVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == rfield::OUTCOME {
            self.outcome = index_of(&rfield::OUTCOMES, value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == rfield::INITIAL {
            self.initial = value;
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == rfield::LOADED_AT {
            self.loaded_at = Some(value);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

struct TransitionVisitor<'a> {
    provider: &'a mut String,
    model: &'a mut String,
    from: Option<usize>,
    to: Option<usize>,
    reason: usize,
    shadow: bool,
    generation: u64,
}

impl Visit for TransitionVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            bfield::PROVIDER => self.provider.push_str(value),
            bfield::MODEL => self.model.push_str(value),
            bfield::FROM => self.from = index_of(&STATES, value),
            bfield::TO => self.to = index_of(&STATES, value),
            bfield::REASON if value == bfield::NO_REASON => self.reason = NO_REASON,
            bfield::REASON => self.reason = reason_index(value),
            _ => {}
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == bfield::SHADOW {
            self.shadow = value;
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == bfield::GENERATION {
            self.generation = value;
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

// ---------------------------------------------------------------------------------------------
// The layer

impl Inner {
    fn new_request<S>(&self, attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        let mut outcome = None;
        let handles = with_scratch(|s| {
            attrs.record(&mut RequestVisitor {
                route: Some(&mut s.a),
                outcome: &mut outcome,
            });
            self.routes.get_or_insert(&s.a, || RouteHandles::new(&s.a))
        });
        let client = span
            .scope()
            .skip(1)
            .find_map(|s| s.extensions().get::<ClientSpan>().map(|c| Arc::clone(&c.0)))
            .unwrap_or_else(|| Arc::clone(&NO_CLIENT));
        span.extensions_mut().insert(RequestSpan {
            handles,
            outcome,
            client,
        });
    }

    fn new_attempt<S>(&self, attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        // The route comes from the request span; an attempt outside one is not the chain's.
        let Some((route, client)) = span.parent().and_then(|p| {
            p.extensions()
                .get::<RequestSpan>()
                .map(|r| (Arc::clone(&r.handles), Arc::clone(&r.client)))
        }) else {
            return;
        };
        let mut fields = AttemptFields::default();
        let handles = with_scratch(|s| {
            let mut v = AttemptVisitor {
                provider: Some(&mut s.a),
                model: Some(&mut s.b),
                role: None,
                fields: &mut fields,
            };
            attrs.record(&mut v);
            let role = v.role?;
            encode(&mut s.key, &[&route.route, &s.a, &s.b, role]);
            Some(self.attempts.get_or_insert(&s.key, || AttemptHandles {
                route: route.route.clone(),
                provider: s.a.as_str().into(),
                model: s.b.as_str().into(),
                role,
                attempts: Default::default(),
                failures: Default::default(),
                durations: Default::default(),
                ttft: OnceLock::new(),
            }))
        });
        if let Some(handles) = handles {
            span.extensions_mut().insert(AttemptSpan {
                handles,
                fields,
                client,
            });
        }
    }

    /// A route-scoped event with two labels and a closed-set one, counted as `count` says in
    /// `cache`; an event outside a request span, or whose closed-set value is not in the set,
    /// is not counted.
    fn route_pair<S, const N: usize>(
        &self,
        cache: &Cache<RoutePair<N>>,
        count: &PairCount,
        event: &Event<'_>,
        ctx: &Context<'_, S>,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(route) = request_route(event, ctx) else {
            return;
        };
        let found = with_scratch(|s| {
            let mut v = CountedPairVisitor {
                count,
                a: &mut s.a,
                b: &mut s.b,
                value: count.missing,
            };
            event.record(&mut v);
            let value = v.value.filter(|&i| i < N)?;
            encode(&mut s.key, &[&route.route, &s.a, &s.b]);
            let h = cache.get_or_insert(&s.key, || RoutePair {
                route: route.route.clone(),
                a: s.a.as_str().into(),
                b: s.b.as_str().into(),
                counters: std::array::from_fn(|_| OnceLock::new()),
            });
            Some((h, value))
        });
        let Some((h, i)) = found else { return };
        lazy_counter(&h.counters[i], || {
            count
                .metric
                .counter([&h.route, &h.a, &h.b, (count.label)(i)])
        })
        .increment(1);
    }

    fn inflight(&self, event: &Event<'_>) {
        with_scratch(|s| {
            let mut v = TargetVisitor {
                provider: &mut s.a,
                model: &mut s.b,
                delta: 0,
            };
            event.record(&mut v);
            let delta = v.delta;
            encode(&mut s.key, &[&s.a, &s.b]);
            let gauge = self
                .inflight
                .get_or_insert(&s.key, || INFLIGHT.gauge([&s.a, &s.b]));
            match delta {
                1.. => gauge.increment(1.0),
                ..0 => gauge.decrement(1.0),
                0 => {}
            }
        });
    }

    fn breaker_transition(&self, event: &Event<'_>) {
        with_scratch(|s| {
            let mut v = TransitionVisitor {
                provider: &mut s.a,
                model: &mut s.b,
                from: None,
                to: None,
                reason: NO_REASON,
                shadow: false,
                generation: 0,
            };
            event.record(&mut v);
            let (Some(from), Some(to), reason, shadow, generation) =
                (v.from, v.to, v.reason, v.shadow, v.generation)
            else {
                return;
            };
            encode(&mut s.key, &[&s.a, &s.b]);
            let h = self
                .breakers
                .get_or_insert(&s.key, || BreakerHandles::new(&s.a, &s.b));
            h.transition(from, to, reason, shadow, generation);
        });
    }
}

impl Inner {
    fn breaker_handles(&self, provider: &str, model: &str) -> Arc<BreakerHandles> {
        with_scratch(|s| {
            encode(&mut s.key, &[provider, model]);
            self.breakers
                .get_or_insert(&s.key, || BreakerHandles::new(provider, model))
        })
    }

    fn retire_breaker(&self, provider: &str, model: &str) {
        self.breaker_handles(provider, model).retire();
    }

    /// `breaker_retired` and `breaker_registered`.
    fn breaker_membership(&self, event: &Event<'_>, retired: bool) {
        let (mut provider, mut model) = (String::new(), String::new());
        event.record(&mut PairVisitor {
            names: [bfield::PROVIDER, bfield::MODEL],
            a: &mut provider,
            b: &mut model,
        });
        if provider.is_empty() || model.is_empty() {
            return;
        }
        let h = self.breaker_handles(&provider, &model);
        if retired {
            h.retire();
        } else {
            h.initialise();
        }
    }

    /// `config_reload`: counted by outcome (not the initial load, which registers both
    /// outcomes at 0); a success sets the timestamp gauge.
    fn config_reload(&self, event: &Event<'_>) {
        let mut v = ReloadVisitor::default();
        event.record(&mut v);
        let Some(o) = v.outcome else { return };
        let counter = |i: usize| {
            lazy_counter(&self.reloads[i], || {
                CONFIG_RELOADS_TOTAL.counter([rfield::OUTCOMES[i]])
            })
        };
        if v.initial {
            for i in 0..rfield::OUTCOMES.len() {
                counter(i).increment(0);
            }
        } else {
            counter(o).increment(1);
        }
        if let (true, Some(at)) = (rfield::OUTCOMES[o] == rfield::OUTCOME_OK, v.loaded_at) {
            self.reload_timestamp
                .get_or_init(|| CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS.gauge([]))
                .set(at);
        }
    }

    /// `client_rejected`: counted by client name and reason; a reason outside the closed set
    /// is not counted.
    fn client_rejected(&self, event: &Event<'_>) {
        let handles = with_scratch(|s| {
            event.record(&mut PairVisitor {
                names: [afield::CLIENT, afield::REASON],
                a: &mut s.a,
                b: &mut s.b,
            });
            let reason = index_of(&afield::REASONS, &s.b)?;
            if s.a.is_empty() {
                s.a.push_str(afield::UNKNOWN_CLIENT);
            }
            let h = self.rejections.get_or_insert(&s.a, || RejectionHandles {
                client: s.a.as_str().into(),
                reasons: Default::default(),
            });
            Some((h, reason))
        });
        if let Some((h, r)) = handles {
            lazy_counter(&h.reasons[r], || {
                CLIENT_REJECTIONS_TOTAL.counter([&h.client, afield::REASONS[r]])
            })
            .increment(1);
        }
    }

    /// `admin_action`: counted by action and outcome, both from closed sets.
    fn admin_action(&self, event: &Event<'_>) {
        let found = with_scratch(|s| {
            event.record(&mut PairVisitor {
                names: [dfield::ACTION, dfield::OUTCOME],
                a: &mut s.a,
                b: &mut s.b,
            });
            let action = index_of(&dfield::ACTIONS, &s.a)?;
            let outcome = index_of(&[dfield::OUTCOME_OK, dfield::OUTCOME_ERROR], &s.b)?;
            Some((action, outcome))
        });
        if let Some((a, o)) = found {
            lazy_counter(&self.admin_actions[a][o], || {
                ADMIN_ACTIONS_TOTAL.counter([
                    dfield::ACTIONS[a],
                    [dfield::OUTCOME_OK, dfield::OUTCOME_ERROR][o],
                ])
            })
            .increment(1);
        }
    }
}

impl<S> Layer<S> for MetricsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // `register_callsite` and `enabled` keep their defaults on purpose: returning
    // `Interest::never()` or `false` would silence a callsite for every layer of the stack.

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if !meta.target().starts_with(OURS) {
            return;
        }
        match (meta.target(), meta.name()) {
            (names::CHAIN_TARGET, names::REQUEST_SPAN) => self.inner.new_request(attrs, id, &ctx),
            (names::CHAIN_TARGET, names::ATTEMPT_SPAN) => self.inner.new_attempt(attrs, id, &ctx),
            (names::PROXY_TARGET, names::PROXY_REQUEST_SPAN) => {
                let mut client = String::new();
                attrs.record(&mut PairVisitor {
                    names: [afield::CLIENT, afield::CLIENT],
                    a: &mut client,
                    b: &mut String::new(),
                });
                if let Some(span) = ctx.span(id)
                    && !client.is_empty()
                {
                    span.extensions_mut().insert(ClientSpan(client.into()));
                }
            }
            _ => {}
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if !span.metadata().target().starts_with(OURS) {
            return;
        }
        let mut ext = span.extensions_mut();
        if let Some(a) = ext.get_mut::<AttemptSpan>() {
            values.record(&mut AttemptVisitor {
                provider: None,
                model: None,
                role: None,
                fields: &mut a.fields,
            });
        } else if let Some(r) = ext.get_mut::<RequestSpan>() {
            values.record(&mut RequestVisitor {
                route: None,
                outcome: &mut r.outcome,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let target = meta.target();
        if !target.starts_with(OURS) {
            return;
        }
        match (target, meta.name()) {
            (names::BREAKER_TARGET, names::BREAKER_TRANSITION_EVENT) => {
                self.inner.breaker_transition(event);
            }
            (names::CHAIN_TARGET, names::FAILOVER_EVENT) => {
                self.inner
                    .route_pair(&self.inner.failovers, &HOPS, event, &ctx);
            }
            (names::PROXY_TARGET, names::CLIENT_REJECTED_EVENT) => {
                self.inner.client_rejected(event);
            }
            (names::PROXY_TARGET, names::ADMIN_ACTION_EVENT) => self.inner.admin_action(event),
            (names::STATE_TARGET, names::STATE_SYNC_EVENT) => {
                let mut v = SyncVisitor::default();
                event.record(&mut v);
                if let (Some(op), Some(outcome)) = (v.op, v.outcome)
                    && let Some(cell) = self.inner.sync.get(op).and_then(|o| o.get(outcome))
                {
                    lazy_counter(cell, || {
                        STATE_SYNC_TOTAL.counter([
                            SYNC_OPS.get(op).copied().unwrap_or_default(),
                            SYNC_OUTCOMES.get(outcome).copied().unwrap_or_default(),
                        ])
                    })
                    .increment(1);
                }
            }
            (names::STATE_TARGET, names::STATE_BACKEND_EVENT) => {
                let mut v = SyncVisitor::default();
                event.record(&mut v);
                if let Some(up) = v.up {
                    self.inner
                        .backend_up
                        .get_or_init(|| STATE_BACKEND_UP.gauge([]))
                        .set(if up { 1.0 } else { 0.0 });
                }
            }
            (names::CHAIN_TARGET, names::SHED_EVENT) => {
                self.inner.route_pair(&self.inner.shed, &SHEDS, event, &ctx);
            }
            (names::CHAIN_TARGET, names::RESUME_EVENT) => {
                self.inner
                    .route_pair(&self.inner.resumes, &RESUMES, event, &ctx);
            }
            (names::CHAIN_TARGET, names::INFLIGHT_EVENT) => self.inner.inflight(event),
            (names::PROXY_TARGET, names::CONFIG_RELOAD_EVENT) => self.inner.config_reload(event),
            (names::BREAKER_TARGET, names::BREAKER_RETIRED_EVENT) => {
                self.inner.breaker_membership(event, true);
            }
            (names::BREAKER_TARGET, names::BREAKER_REGISTERED_EVENT) => {
                self.inner.breaker_membership(event, false);
            }
            _ => {}
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if !span.metadata().target().starts_with(OURS) {
            return;
        }
        let mut ext = span.extensions_mut();
        if let Some(a) = ext.remove::<AttemptSpan>() {
            drop(ext);
            a.close(&self.inner);
        } else if let Some(r) = ext.remove::<RequestSpan>() {
            drop(ext);
            r.close();
        }
    }
}

/// The route handles of the request span enclosing `event`, if the event is inside one.
fn request_route<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Option<Arc<RouteHandles>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ctx.event_scope(event)?.into_iter().find_map(|s| {
        s.extensions()
            .get::<RequestSpan>()
            .map(|r| Arc::clone(&r.handles))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_indices_follow_the_reason_table() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason_index(r.as_str()), i);
            assert_eq!(reason_label(i), r.as_str());
        }
        assert_eq!(Reason::ALL[UNKNOWN], Reason::Unknown);
        assert_eq!(reason_label(NO_REASON), "none");
        assert_eq!(reason_index("ECONNREFUSED at 10.0.0.1"), UNKNOWN);
    }

    #[test]
    fn keys_are_unambiguous() {
        let (mut a, mut b) = (String::new(), String::new());
        encode(&mut a, &["ab", "c"]);
        encode(&mut b, &["a", "bc"]);
        assert_ne!(a, b);
    }
}
