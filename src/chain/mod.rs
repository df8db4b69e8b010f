//! The failover chain: a route of targets, tried in order through their breakers until one
//! answers.
//!
//! # What a route does with a request
//!
//! A [`Route`] is an ordered list of targets (provider + upstream model), each guarded by its
//! breakers in a [`Registry`]. For each target in turn:
//!
//! * if a breaker refuses, the target is skipped at once and the trail records a rejection
//!   (not a failure);
//! * otherwise the attempt runs under a deadline (the attempt timeout, never past the route's
//!   total deadline); its outcome settles the breakers;
//! * a failure is handled as its reason's policy says ([`Action`]): fail over to the next
//!   target; retry the same target first, a bounded number of times after a jittered backoff
//!   that honours the provider's Retry-After (a reset connection, a lone 500, a 429 whose wait
//!   is short); return the error unchanged (format, content filter, cancellation: another model
//!   would fail the same way or must not see the request); or go to the route's larger-context
//!   targets (context overflow).
//!
//! When every breaker is open, nothing is sent and the error says when the soonest target will
//! admit again (or, if the route allows it, the target that will admit soonest is tried as a
//! last resort). A silent provider costs one attempt timeout: a timeout fails over, it is never
//! retried on the same target.
//!
//! # Tiers and limits
//!
//! The targets come in tiers ([`RouteBuilder::tier`]; a plain [`RouteBuilder::target`] is a
//! tier of one). Within a tier the chain picks the first target by the tier's [`Pick`] policy
//! (`ordered`, `weighted`, `least_loaded`), fails over to the tier's other targets first, then
//! goes on to the next tier. Every target of the first tier is `primary`.
//!
//! Each target's requests in flight are counted on a [`Loads`] board that routes can share
//! (see [`Loads`] for why it is not part of the breaker registry). A target at its
//! concurrency limit is skipped like an open breaker, before anything is sent: not a failure,
//! nothing for its breakers, `shed` in the trail, and [`FailoverErrorKind::Saturated`] with a
//! wait when nothing could be sent because of it. A committed stream keeps its place until it
//! ends. A one-target tier costs one branch more than a plain list did.
//!
//! A provider's targets may share a limit too ([`Loads::set_provider_max_inflight`]).
//! A target may also be held to requests and tokens per minute ([`RateLimits`], shed with
//! cause `request_rate` / `token_rate` before the provider has to answer 429, and adopting a
//! 429's remaining [`Quota`]), and ramp up slowly after its breaker closes ([`SlowStart`]:
//! the traffic the ramp holds back goes to the tier's other targets; a target alone in its
//! tier is admitted).
//!
//! # Streams
//!
//! [`Route::stream`] commits to a target only when its first chunk arrives: a failure or a
//! timeout before that fails over invisibly. After the first chunk, a failure or a stall past
//! the idle timeout ends the stream with a classified error ([`FailoverErrorKind::StreamBroken`]
//! with `stream_interrupted` or `timeout`), and an upstream that ends without its final chunk
//! is an error too: a truncated answer is never presented as complete. A final chunk (for
//! OpenAI, the one with a `finish_reason`) ends the stream at once, even if the upstream never
//! sends its `[DONE]` marker.
//!
//! A route whose policy says [`stream_resume`](RoutePolicyBuilder::stream_resume) finishes
//! such a broken stream on another target instead, for streams opened with
//! [`Route::resumable_stream`]: the text so far goes to the next admitting target that
//! accepts an assistant prefill, and the reader sees one answer (see [`Resume`],
//! [`ChatResume`](crate::protocol::openai_chat::ChatResume) and
//! [`MessagesResume`](crate::protocol::anthropic_messages::MessagesResume)).
//!
//! Dropping the request future (or the stream) cancels the attempt in flight; its breaker
//! permit is released without counting, so cancellation never counts against a provider.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use llm_failover::{Reason, breaker::Registry, chain::{AttemptFailure, Route}};
//!
//! let registry = Arc::new(
//!     Registry::builder().target("local", "llama3").target("openai", "gpt-4o-mini").build()?,
//! );
//! let route = Route::builder("chat", registry)
//!     .target("local", "llama3")
//!     .target("openai", "gpt-4o-mini")
//!     .build()?;
//!
//! let answer = route
//!     .call(|attempt| async move {
//!         if attempt.provider() == "local" {
//!             Err(AttemptFailure::new(Reason::ConnectionRefused)) // the local box is off
//!         } else {
//!             Ok(format!("hello from {}", attempt.model()))
//!         }
//!     })
//!     .await?;
//! assert_eq!(answer.value, "hello from gpt-4o-mini");
//! assert_eq!(answer.trail.to_string(), "local/llama3=connection_refused; openai/gpt-4o-mini=ok");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod budget;
mod error;
mod load;
mod policy;
mod rate;
mod resume;
mod stream;
mod telemetry;
mod tier;
mod usage;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::Reason;
use crate::breaker::{Breaker, Outcome, OwnedTargetPermit, Registry, State};
use crate::reason::Action;

use self::budget::RetryBudget;
use self::load::Inflight;

pub use self::error::{
    AttemptFailure, AttemptOutcome, AttemptRecord, FailoverError, FailoverErrorKind, ShedCause,
    Trail, UpstreamResponse,
};
pub use self::load::{DEFAULT_DECAY, Load, Loads, SlowStart};
pub use self::policy::{RoutePolicy, RoutePolicyBuilder, RoutePolicyError};
pub use self::rate::{Quota, RateLimits};
pub use self::resume::{Opening, Resume};
pub use self::stream::{Chunk, FailoverStream};
pub use self::tier::{Pick, Tier, UnknownPick};
pub use self::usage::Usage;

/// One target of a route, with its place among the route's tiers.
#[derive(Debug, Clone)]
struct RouteTarget {
    provider: Arc<str>,
    model: Arc<str>,
    /// Its breakers (provider-wide, model), kept so a request needs no registry lookup.
    breakers: (Breaker, Breaker),
    load: Arc<Load>,
    weight: u32,
    /// The tier's index in the route.
    tier: u32,
    pick: Pick,
    /// The position of the tier's first target in the route's list, and the tier's length.
    tier_start: u32,
    tier_len: u32,
}

impl RouteTarget {
    /// A one-target tier.
    fn new(provider: &str, model: &str, loads: &Loads, breakers: (Breaker, Breaker)) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            breakers,
            load: loads.target(provider, model),
            weight: 1,
            tier: 0,
            pick: Pick::Ordered,
            tier_start: 0,
            tier_len: 1,
        }
    }

    fn is(&self, provider: &str, model: &str) -> bool {
        *self.provider == *provider && *self.model == *model
    }

    /// Its breakers.
    #[inline]
    fn target(&self) -> crate::breaker::Target<'_> {
        crate::breaker::Target::of(&self.breakers.0, &self.breakers.1)
    }

    #[inline]
    fn named(&self) -> Named {
        Named {
            provider: Arc::clone(&self.provider),
            model: Arc::clone(&self.model),
        }
    }
}

/// The names of a target, what an attempt in flight keeps of it (its load is held by the
/// attempt's [`Inflight`] place).
#[derive(Debug, Clone)]
pub(crate) struct Named {
    provider: Arc<str>,
    model: Arc<str>,
}

/// What a trail record needs of a target.
trait Names {
    fn names(&self) -> (&Arc<str>, &Arc<str>);
}

impl Names for RouteTarget {
    fn names(&self) -> (&Arc<str>, &Arc<str>) {
        (&self.provider, &self.model)
    }
}

impl Names for Named {
    fn names(&self) -> (&Arc<str>, &Arc<str>) {
        (&self.provider, &self.model)
    }
}

/// An ordered list of tiers of targets with its policy. Cheap to share (`Arc` it); calls take
/// `&self`.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    /// Every tier's targets, tier after tier.
    targets: Vec<RouteTarget>,
    larger_context: Vec<RouteTarget>,
    policy: RoutePolicy,
    registry: Arc<Registry>,
    loads: Arc<Loads>,
    /// Extra attempts (retries, hedges, failovers if the policy says so) per first attempt.
    budget: RetryBudget,
    /// The route can spend the budget at all (retries, hedges, or failovers that spend it):
    /// else its requests do not deposit either.
    budgeted: bool,
}

/// Builds a [`Route`]; [`build`](Self::build) checks every target against the registry.
#[derive(Debug)]
#[must_use]
pub struct RouteBuilder {
    name: Arc<str>,
    tiers: Vec<Tier>,
    larger_context: Vec<(Arc<str>, Arc<str>)>,
    policy: RoutePolicy,
    registry: Arc<Registry>,
    loads: Option<Arc<Loads>>,
}

/// A route that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The route has no target.
    #[error("route {route:?} has no target; add at least one provider/model")]
    Empty {
        /// The route's name.
        route: String,
    },
    /// A tier has no target.
    #[error("route {route:?}: tier {tier} has no target; give every tier at least one")]
    EmptyTier {
        /// The route's name.
        route: String,
        /// The tier's index, from 0.
        tier: usize,
    },
    /// A target of a tier has weight 0.
    #[error(
        "route {route:?}: {provider}/{model} has weight 0; give it a weight of at least 1 or remove it"
    )]
    ZeroWeight {
        /// The route's name.
        route: String,
        /// The provider named.
        provider: String,
        /// The model named.
        model: String,
    },
    /// A target has no breaker in the registry.
    #[error(
        "route {route:?} names {provider}/{model}, which the breaker registry does not know; add it to the registry"
    )]
    UnknownTarget {
        /// The route's name.
        route: String,
        /// The provider named.
        provider: String,
        /// The model named.
        model: String,
    },
}

impl RouteBuilder {
    /// Appends a target, tried after the ones before it: a tier of one target.
    pub fn target(self, provider: &str, model: &str) -> Self {
        self.tier(Tier::ordered().target(provider, model))
    }

    /// Appends a tier of interchangeable targets, tried after the tiers before it: the chain
    /// picks one by the tier's [`Pick`] policy and fails over to the tier's others before the
    /// next tier. Every target of the first tier has the `primary` role.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use llm_failover::{breaker::Registry, chain::{Route, Tier}};
    ///
    /// let registry = Arc::new(
    ///     Registry::builder().target("eu", "m").target("us", "m").target("backup", "m").build()?,
    /// );
    /// let route = Route::builder("chat", registry)
    ///     .tier(Tier::least_loaded().target("eu", "m").target("us", "m"))
    ///     .target("backup", "m")
    ///     .build()?;
    /// assert_eq!(route.tiers().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tiers.push(tier);
        self
    }

    /// Appends a larger-context target: tried, in order, only after a target answers that the
    /// prompt is longer than its context window. Default: none (context overflow is returned).
    pub fn larger_context_target(mut self, provider: &str, model: &str) -> Self {
        self.larger_context.push((provider.into(), model.into()));
        self
    }

    /// The board of target loads (in flight, latency, concurrency limits) to share with other
    /// routes: routes built with the same board count the same target's requests together.
    /// Default: a board of the route's own.
    pub fn loads(mut self, loads: Arc<Loads>) -> Self {
        self.loads = Some(loads);
        self
    }

    /// The deadlines and retry rules. Default: [`RoutePolicy::default`].
    pub fn policy(mut self, policy: RoutePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The route.
    ///
    /// # Errors
    ///
    /// [`RouteError`] when the route has no target or names one the registry does not hold.
    pub fn build(self) -> Result<Route, RouteError> {
        let route = || self.name.to_string();
        if self.tiers.is_empty() {
            return Err(RouteError::Empty { route: route() });
        }
        let loads = self.loads.clone().unwrap_or_default();
        let known = |provider: &str, model: &str| {
            self.registry
                .handles(provider, model)
                .ok_or_else(|| RouteError::UnknownTarget {
                    route: route(),
                    provider: provider.to_owned(),
                    model: model.to_owned(),
                })
        };
        let mut targets = Vec::new();
        for (index, tier) in self.tiers.iter().enumerate() {
            if tier.targets.is_empty() {
                return Err(RouteError::EmptyTier {
                    route: route(),
                    tier: index,
                });
            }
            let start = u32::try_from(targets.len()).unwrap_or(u32::MAX);
            let len = u32::try_from(tier.targets.len()).unwrap_or(u32::MAX);
            for t in &tier.targets {
                let breakers = known(&t.provider, &t.model)?;
                if t.weight == 0 {
                    return Err(RouteError::ZeroWeight {
                        route: route(),
                        provider: t.provider.to_string(),
                        model: t.model.to_string(),
                    });
                }
                let load = loads.target(&t.provider, &t.model);
                if tier.pick == Pick::LeastLoaded {
                    load.time();
                }
                targets.push(RouteTarget {
                    provider: Arc::clone(&t.provider),
                    model: Arc::clone(&t.model),
                    breakers,
                    load,
                    weight: t.weight,
                    tier: u32::try_from(index).unwrap_or(u32::MAX),
                    pick: tier.pick,
                    tier_start: start,
                    tier_len: len,
                });
            }
        }
        let mut larger_context = Vec::new();
        for (p, m) in &self.larger_context {
            larger_context.push(RouteTarget::new(p, m, &loads, known(p, m)?));
        }
        let (ratio, floor, window, _) = self.policy.retry_budget();
        let budget = RetryBudget::new(window, floor, ratio);
        let p = &self.policy;
        let budgeted = p.max_retries > 0
            || p.hedge_after.is_some()
            || p.retry_budget_failovers
            || p.stream_resume;
        Ok(Route {
            name: self.name,
            targets,
            larger_context,
            policy: self.policy,
            registry: self.registry,
            loads,
            budget,
            budgeted,
        })
    }
}

/// What an attempt is told: its target, its place in the request, and its deadline.
#[derive(Debug, Clone)]
pub struct AttemptContext {
    provider: Arc<str>,
    model: Arc<str>,
    number: u32,
    primary: bool,
    deadline: Instant,
    /// The request's estimated tokens, as counted against the target's rate limits.
    tokens: u64,
    /// The target's load, when it has rate limits to correct.
    limited: Option<Arc<Load>>,
    /// The attempt's span, for the usage it reports.
    span: tracing::Span,
}

impl AttemptContext {
    /// An attempt on `provider`'s `model`, first of its request, for unit tests of what
    /// protocols do with one.
    #[cfg(test)]
    pub(crate) fn for_test(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            number: 1,
            primary: true,
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            tokens: 0,
            limited: None,
            span: tracing::Span::none(),
        }
    }

    /// The tokens the request was estimated at (see [`Route::call_with_tokens`]); 0 when
    /// the caller gave no estimate.
    #[must_use]
    pub fn estimated_tokens(&self) -> u64 {
        self.tokens
    }

    /// The answer's `usage`: the request took `total_tokens` (prompt and completion). The
    /// target's tokens-per-minute count is corrected from the estimate to it. Does nothing
    /// for a target without rate limits.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use llm_failover::{breaker::Registry, chain::{AttemptFailure, Route}};
    ///
    /// let registry = Arc::new(Registry::builder().target("openai", "gpt-4o-mini").build()?);
    /// let route = Route::builder("chat", registry).target("openai", "gpt-4o-mini").build()?;
    /// let answer = route
    ///     .call_with_tokens(120, |attempt| async move {
    ///         assert_eq!(attempt.estimated_tokens(), 120);
    ///         attempt.report_usage(87); // from the answer's usage.total_tokens
    ///         Ok::<_, AttemptFailure>("hi")
    ///     })
    ///     .await?;
    /// assert_eq!(answer.value, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn report_usage(&self, total_tokens: u64) {
        if let Some(load) = &self.limited {
            load.correct(self.tokens, total_tokens);
        }
    }

    /// The tokens the answer says the attempt used (input, output, cache reads and writes):
    /// recorded on the attempt's span and counted in `llm_failover_tokens_total`. Call it
    /// once per attempt with the answer's whole usage; a later call overwrites the counts it
    /// reports. Streams need no call: the chain reads their chunks' [`Chunk::usage`].
    pub fn record_usage(&self, usage: Usage) {
        usage.record(&self.span);
    }

    /// The provider to call, as configured.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The upstream model to ask for.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// 1 for the first attempt of the request, counting retries and rejections.
    #[must_use]
    pub fn number(&self) -> u32 {
        self.number
    }

    /// True for the targets of the route's first tier (the primary), false for fallbacks.
    #[must_use]
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// When the chain gives up on this attempt; pass it on as a request timeout if the client
    /// has its own.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A route's answer: the value, the target that gave it, and every attempt on the way.
#[derive(Debug)]
#[non_exhaustive]
pub struct Answer<T> {
    /// What the target returned.
    pub value: T,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The model that answered.
    pub model: Arc<str>,
    /// Every attempt, the answering one last (for a stream, it says `ok` once committed).
    pub trail: Trail,
}

/// An attempt that produced its first result: the chain commits to it.
struct Committed<V> {
    value: V,
    /// None for a last-resort attempt, which its breakers do not hear of.
    permit: Option<OwnedTargetPermit>,
    /// The attempt's place in flight on its target, held until the answer is whole.
    inflight: Inflight,
    target: Named,
    started: Instant,
    trail: Trail,
    /// The attempt's span, still open: it is settled with the attempt.
    span: tracing::Span,
}

/// An attempt's future under its deadline, inside its span.
type Running<Fut> =
    std::pin::Pin<Box<tokio::time::Timeout<tracing::instrument::Instrumented<Fut>>>>;

/// An attempt's result. Its deadline passing is the provider's timeout, unless the route's
/// total deadline set that deadline: then it is `Err(None)`, ours, and no provider's fault.
fn landed<V>(
    r: Result<Result<V, AttemptFailure>, tokio::time::error::Elapsed>,
    flight: &Flight,
) -> Result<V, Option<AttemptFailure>> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(f)) => Err(Some(f)),
        Err(_elapsed) if flight.cut_short => Err(None),
        Err(_elapsed) => Err(Some(AttemptFailure::new(Reason::Timeout))),
    }
}

/// An attempt in flight: what settling it needs.
struct Flight {
    target: Named,
    permit: Option<OwnedTargetPermit>,
    inflight: Inflight,
    span: tracing::Span,
    started: Instant,
    /// The route's total deadline, not the attempt timeout, bounds this attempt.
    cut_short: bool,
    /// The attempt took part in a hedge race.
    hedged: bool,
}

impl Flight {
    fn commit<V>(self, value: V, trail: Trail) -> Committed<V> {
        Committed {
            value,
            permit: self.permit,
            inflight: self.inflight,
            target: self.target,
            started: self.started,
            trail,
            span: self.span,
        }
    }

    /// Settles a failure on the breakers, the span and the trail; returns its reason.
    fn fail(mut self, failure: &AttemptFailure, trail: &mut Trail) -> Reason {
        let took = self.started.elapsed();
        let reason = failure.reason();
        let outcome = if failure.is_ineligible() {
            // Nothing was sent: the permit goes back unsettled.
            self.permit = None;
            AttemptOutcome::Ineligible
        } else {
            AttemptOutcome::Failed(reason)
        };
        if let Some(permit) = self.permit.take() {
            permit.record(Outcome::of(&Err::<(), _>(failure), took));
        }
        self.inflight.observe(took);
        telemetry::settled(&self.span, outcome, failure.status(), took);
        trail.0.push(record(
            &self.target,
            outcome,
            failure.status(),
            took,
            failure.retry_after(),
        ));
        reason
    }

    /// The route's own deadline ended the attempt: a timeout in the trail, nothing for the
    /// breakers (the provider was not given its full attempt timeout).
    fn abandon(self, trail: &mut Trail) {
        let took = self.started.elapsed();
        telemetry::settled(
            &self.span,
            AttemptOutcome::Failed(Reason::Timeout),
            None,
            took,
        );
        trail.0.push(record(
            &self.target,
            AttemptOutcome::Failed(Reason::Timeout),
            None,
            took,
            None,
        ));
    }

    /// The attempt lost a hedge race and is cancelled: nothing for the breakers.
    fn lost(self, trail: &mut Trail) {
        let took = self.started.elapsed();
        trail.0.push(record(
            &self.target,
            AttemptOutcome::Cancelled,
            None,
            took,
            None,
        ));
    }
}

/// An attempt started: its flight and its future.
struct Launched<Fut> {
    flight: Flight,
    fut: Running<Fut>,
}

/// How a hedge race ended.
enum Race<V> {
    /// An attempt answered (its trail is empty: the caller's trail goes in).
    Won(Committed<V>),
    /// The last failure, unsettled (`None`: the route's deadline ended it), and how many more
    /// targets the race used.
    Failed(Flight, Option<AttemptFailure>, usize),
}

impl<V> Race<V> {
    fn single(
        flight: Flight,
        r: Result<Result<V, AttemptFailure>, tokio::time::error::Elapsed>,
    ) -> Self {
        match landed(r, &flight) {
            Ok(v) => Race::Won(flight.commit(v, Trail::default())),
            Err(f) => Race::Failed(flight, f, 0),
        }
    }
}

fn rejection(t: &RouteTarget, rejected: &crate::breaker::Rejected) -> AttemptRecord {
    record(
        t,
        AttemptOutcome::Rejected(rejected.reason()),
        None,
        Duration::ZERO,
        rejected.retry_after(),
    )
}

/// A target skipped at its own limit. Its wait is the rate limiter's when it is known, else
/// an estimate of when a place frees up: its latency average (at least 100 ms; 1 s before
/// any sample).
fn shed(t: &RouteTarget, cause: ShedCause, known: Option<Duration>) -> AttemptRecord {
    let latency = t.load.latency();
    let wait = if let Some(wait) = known {
        wait
    } else if latency.is_zero() {
        Duration::from_secs(1)
    } else {
        latency.max(Duration::from_millis(100))
    };
    record(
        t,
        AttemptOutcome::Shed(cause),
        None,
        Duration::ZERO,
        Some(wait),
    )
}

/// The retry budget stopped an extra attempt on `t`.
fn budget_exhausted(request: &telemetry::Request, t: &RouteTarget, trail: &mut Trail) {
    request.shed(t, ShedCause::RetryBudget);
    trail.0.push(record(
        t,
        AttemptOutcome::Shed(ShedCause::RetryBudget),
        None,
        Duration::ZERO,
        None,
    ));
}

/// Why [`Route::launch`] did not start an attempt.
enum Skipped {
    /// A breaker refused.
    Rejected(crate::breaker::Rejected),
    /// The target is at one of its limits (and when it will admit again, if known).
    Shed(ShedCause, Option<Duration>),
}

impl Skipped {
    /// Records the skip in the trail (and a shed on the request span); returns the reason
    /// the request leaves the target with.
    fn note(&self, request: &telemetry::Request, t: &RouteTarget, trail: &mut Trail) -> Reason {
        match self {
            Skipped::Rejected(rejected) => {
                trail.0.push(rejection(t, rejected));
                rejected.reason().unwrap_or(Reason::Unknown)
            }
            Skipped::Shed(cause, wait) => {
                request.shed(t, *cause);
                trail.0.push(shed(t, *cause, *wait));
                cause.reason()
            }
        }
    }
}

/// Where the chain is among the tiers: the tier it is in and the offset its pick chose (the
/// tier's targets are tried from there, wrapping around).
#[derive(Default)]
struct Cursor {
    tier: Option<u32>,
    offset: usize,
}

/// Where the chain is in the route.
enum Next {
    /// The next target of the current list.
    FailOver,
    /// The same target again, after this wait.
    Retry(Duration),
    /// The larger-context list.
    LargerContext,
    /// Stop and return this error.
    Return(FailoverErrorKind),
}

impl Route {
    /// A builder for a route named `name` (the client-facing model name, a metric label),
    /// whose targets must be in `registry`.
    pub fn builder(name: &str, registry: Arc<Registry>) -> RouteBuilder {
        RouteBuilder {
            name: name.into(),
            tiers: Vec::new(),
            larger_context: Vec::new(),
            policy: RoutePolicy::default(),
            registry,
            loads: None,
        }
    }

    /// The tiers, in order: each one's pick policy and its targets as (provider, model).
    #[must_use]
    pub fn tiers(&self) -> Vec<(Pick, Vec<(&str, &str)>)> {
        let mut out: Vec<(Pick, Vec<(&str, &str)>)> = Vec::new();
        for t in &self.targets {
            if t.tier as usize >= out.len() {
                out.push((t.pick, Vec::new()));
            }
            if let Some((_, list)) = out.last_mut() {
                list.push((&t.provider, &t.model));
            }
        }
        out
    }

    /// The board of target loads this route counts its requests on.
    #[must_use]
    pub fn loads(&self) -> &Arc<Loads> {
        &self.loads
    }

    /// The target at position `i` of `list`, in the order the current tier's pick chose.
    #[inline]
    fn resolve<'a>(
        &self,
        list: &'a [RouteTarget],
        i: usize,
        cursor: &mut Cursor,
    ) -> Option<&'a RouteTarget> {
        let slot = list.get(i)?;
        if slot.tier_len <= 1 {
            return Some(slot);
        }
        let start = slot.tier_start as usize;
        let len = slot.tier_len as usize;
        if cursor.tier != Some(slot.tier) {
            cursor.tier = Some(slot.tier);
            cursor.offset = self.pick(list.get(start..start + len)?, slot.pick);
        }
        list.get(start + (i - start + cursor.offset) % len)
    }

    /// The index in `tier` of the target to try first: the pick's, unless a slow start holds
    /// its traffic back (then the next available target of the tier, if any).
    fn pick(&self, tier: &[RouteTarget], pick: Pick) -> usize {
        let k = self.pick_by(tier, pick);
        let share = tier.get(k).map_or(1.0, |t| t.load.ramp());
        if share >= 1.0 || fastrand::f64() < share {
            return k;
        }
        let len = tier.len();
        (1..len)
            .map(|d| (k + d) % len)
            .find(|&j| tier.get(j).is_some_and(|t| self.available(t)))
            .unwrap_or(k)
    }

    /// The index in `tier` the pick policy chooses.
    fn pick_by(&self, tier: &[RouteTarget], pick: Pick) -> usize {
        match pick {
            Pick::Ordered => 0,
            Pick::Weighted => tier::weighted(tier.len(), |k| {
                tier.get(k)
                    .filter(|t| self.available(t))
                    .map_or(0, |t| u64::from(t.weight))
            }),
            Pick::LeastLoaded => {
                let cost = |k: usize| {
                    tier.get(k)
                        .filter(|t| self.available(t))
                        .map_or(f64::INFINITY, |t| t.load.cost())
                };
                let (k, c) = tier::two_choices(tier.len(), cost);
                if c.is_finite() {
                    return k;
                }
                // Both draws were unavailable: the cheapest of all, if any is available.
                (0..tier.len())
                    .map(|k| (k, cost(k)))
                    .filter(|(_, c)| c.is_finite())
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(k, |(k, _)| k)
            }
        }
    }

    /// False when a breaker of `t` would refuse it now.
    fn available(&self, t: &RouteTarget) -> bool {
        let b = t.target();
        ![b.provider_breaker().state(), b.model_breaker().state()]
            .iter()
            .any(|s| matches!(s, State::Open | State::ForcedOpen))
    }

    /// The route's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's policy.
    #[must_use]
    pub fn policy(&self) -> &RoutePolicy {
        &self.policy
    }

    /// The targets, in order, as (provider, model).
    pub fn targets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.targets.iter().map(|t| (&*t.provider, &*t.model))
    }

    /// The larger-context targets, in order, as (provider, model).
    pub fn larger_context_targets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.larger_context
            .iter()
            .map(|t| (&*t.provider, &*t.model))
    }

    /// The breaker registry the route's targets live in.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `attempt` against each target in turn until one answers.
    ///
    /// # Errors
    ///
    /// [`FailoverError`] when no target answered: every one failed or was open, a failure was
    /// returned as is, or the total deadline passed.
    pub fn call<T, F, Fut>(
        &self,
        attempt: F,
    ) -> impl Future<Output = Result<Answer<T>, FailoverError>>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<T, AttemptFailure>>,
    {
        // Not an `async fn`: a wrapper future would be one more state machine to move and
        // poll on every call (measured on the closed path).
        self.call_with_tokens(0, attempt)
    }

    /// True when some target of the route has rate limits (its own, or a quota a provider
    /// reported): worth estimating a request's tokens for
    /// [`call_with_tokens`](Self::call_with_tokens).
    #[must_use]
    pub fn is_rate_limited(&self) -> bool {
        self.targets
            .iter()
            .chain(&self.larger_context)
            .any(|t| t.load.is_limited())
    }

    /// [`call`](Self::call) for a request estimated at `tokens` (prompt and completion, see
    /// [`estimate_tokens`](crate::protocol::openai_chat::estimate_tokens)): a target whose tokens per minute it would exceed is
    /// skipped (`shed`, cause `token_rate`). The attempt corrects the estimate with
    /// [`AttemptContext::report_usage`].
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn call_with_tokens<T, F, Fut>(
        &self,
        tokens: u64,
        attempt: F,
    ) -> Result<Answer<T>, FailoverError>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<T, AttemptFailure>>,
    {
        let limit = self.policy.attempt_timeout;
        let request = telemetry::Request::new(&self.name);
        let c = match self
            .run(&request, tokens, attempt, |_| limit)
            .instrument(request.span().clone())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                request.failed(&e);
                return Err(e);
            }
        };
        let took = c.started.elapsed();
        if let Some(permit) = c.permit {
            let changes = permit.record(Outcome::success(took));
            recovered(&self.loads, &changes, &c.target.provider, &c.target.model);
        }
        c.inflight.observe(took);
        telemetry::settled(&c.span, AttemptOutcome::Ok, None, took);
        let mut trail = c.trail;
        trail
            .0
            .push(record(&c.target, AttemptOutcome::Ok, None, took, None));
        request.succeeded(trail.0.len());
        Ok(Answer {
            value: c.value,
            provider: c.target.provider,
            model: c.target.model,
            trail,
        })
    }

    /// Opens a stream on each target in turn until one produces its first chunk, then hands
    /// out that stream (see the [module docs](self) for what happens when it breaks).
    ///
    /// # Errors
    ///
    /// [`FailoverError`] when no target produced a first chunk.
    pub fn stream<C, S, F, Fut>(
        &self,
        open: F,
    ) -> impl Future<Output = Result<Answer<FailoverStream<C, S>>, FailoverError>>
    where
        C: Chunk,
        S: futures_core::Stream<Item = Result<C, AttemptFailure>> + Unpin,
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<S, AttemptFailure>>,
    {
        self.stream_with_tokens(0, open)
    }

    /// [`stream`](Self::stream) for a request estimated at `tokens` (see
    /// [`call_with_tokens`](Self::call_with_tokens)).
    ///
    /// # Errors
    ///
    /// As [`stream`](Self::stream).
    pub async fn stream_with_tokens<C, S, F, Fut>(
        &self,
        tokens: u64,
        open: F,
    ) -> Result<Answer<FailoverStream<C, S>>, FailoverError>
    where
        C: Chunk,
        S: futures_core::Stream<Item = Result<C, AttemptFailure>> + Unpin,
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<S, AttemptFailure>>,
    {
        self.open_stream(tokens, open, None).await
    }

    /// [`stream_with_tokens`](Self::stream_with_tokens) for a route that resumes broken
    /// streams: when the stream breaks after its first token and the route's policy says
    /// [`stream_resume`](RoutePolicyBuilder::stream_resume), `resume` continues the answer on
    /// another target (see [`Resume`] for what the chain does). Without that policy it is
    /// [`stream_with_tokens`](Self::stream_with_tokens).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use futures_util::StreamExt as _;
    /// use llm_failover::{breaker::Registry, chain::{AttemptContext, Route, RoutePolicy}};
    /// use llm_failover::protocol::openai_chat::{ChatResume, Client, Endpoint, Prefill};
    /// use llm_failover::sim::{ANSWER, Sim};
    ///
    /// // A local model whose stream is cut after three tokens, and a provider that continues
    /// // an assistant prefill.
    /// let (local, other) = (Sim::builder().start().await?, Sim::builder().start().await?);
    /// let endpoints = Arc::new([
    ///     Endpoint::new("local", &local.base_url()),
    ///     Endpoint::new("other", &other.base_url()).prefill(Prefill::Assistant),
    /// ]);
    /// let registry = Arc::new(
    ///     Registry::builder().target("local", "sim-cut-3").target("other", "m").build()?,
    /// );
    /// let route = Route::builder("chat", registry)
    ///     .target("local", "sim-cut-3")
    ///     .target("other", "m")
    ///     .policy(RoutePolicy::builder().stream_resume(true).build()?)
    ///     .build()?;
    /// let route = Arc::new(route);
    ///
    /// let client = Client::new()?;
    /// let open = {
    ///     let endpoints = Arc::clone(&endpoints);
    ///     move |attempt: AttemptContext, body: Arc<serde_json::Value>| {
    ///         let (client, endpoints) = (client.clone(), Arc::clone(&endpoints));
    ///         async move {
    ///             let endpoint = endpoints.iter().find(|e| e.provider() == attempt.provider());
    ///             client.chat_stream(endpoint.unwrap(), attempt.model(), &body).await
    ///         }
    ///     }
    /// };
    /// let prefill = move |provider: &str| {
    ///     endpoints.iter().find(|e| e.provider() == provider).map_or(Prefill::None, Endpoint::prefill_mode)
    /// };
    /// let request = Arc::new(serde_json::json!({"messages": [{"role": "user", "content": "Hi"}]}));
    /// let resume = ChatResume::new(Arc::clone(&request), prefill, open.clone());
    /// let answer = route
    ///     .resumable_stream(0, |attempt| open(attempt, Arc::clone(&request)), resume)
    ///     .await?;
    /// let mut stream = answer.value;
    /// let mut text = String::new();
    /// while let Some(chunk) = stream.next().await {
    ///     text.push_str(&chunk?.text());
    /// }
    /// assert_eq!(text, ANSWER); // three tokens from local, the rest from other
    /// assert!(stream.resumed());
    /// assert_eq!(stream.trail().to_string(), "local/sim-cut-3=stream_interrupted; other/m=ok");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`stream`](Self::stream).
    pub async fn resumable_stream<C, S, F, Fut, R>(
        self: &Arc<Self>,
        tokens: u64,
        open: F,
        resume: R,
    ) -> Result<Answer<FailoverStream<C, S>>, FailoverError>
    where
        C: Chunk + Send + 'static,
        S: futures_core::Stream<Item = Result<C, AttemptFailure>> + Unpin + Send + 'static,
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<S, AttemptFailure>>,
        R: Resume<C, S> + 'static,
    {
        let resumer = self.policy.stream_resume.then(|| {
            Box::new(resume::Resumer {
                route: Arc::clone(self),
                resume: Box::new(resume),
                deadline: Instant::now() + self.policy.total_deadline,
                tokens,
                start: |job| Box::pin(resume::continuation(job)),
            })
        });
        self.open_stream(tokens, open, resumer).await
    }

    /// Opens a stream (see [`stream`](Self::stream)); `resumer` gives what resumes it, if
    /// anything does.
    async fn open_stream<C, S, F, Fut>(
        &self,
        tokens: u64,
        open: F,
        resumer: Option<Box<resume::Resumer<C, S>>>,
    ) -> Result<Answer<FailoverStream<C, S>>, FailoverError>
    where
        C: Chunk,
        S: futures_core::Stream<Item = Result<C, AttemptFailure>> + Unpin,
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<S, AttemptFailure>>,
    {
        let limit = self.policy.attempt_timeout.min(self.policy.ttft_timeout);
        let request = telemetry::Request::new(&self.name);
        let mut open = open;
        let run = self
            .run(&request, tokens, |ctx| first_chunk(open(ctx)), |_| limit)
            .instrument(request.span().clone())
            .await;
        let c = match run {
            Ok(c) => c,
            Err(e) => {
                request.failed(&e);
                return Err(e);
            }
        };
        let ttft = c.started.elapsed();
        c.inflight.observe(ttft);
        c.span
            .record(crate::telemetry::names::chain::TTFT, ttft.as_secs_f64());
        let mut trail = c.trail;
        trail
            .0
            .push(record(&c.target, AttemptOutcome::Ok, None, ttft, None));
        let (first, rest) = c.value;
        let stream = FailoverStream::new(
            first,
            rest,
            c.permit,
            c.inflight,
            stream::Committed {
                route: Arc::clone(&self.name),
                loads: Arc::clone(&self.loads),
                trail: trail.clone(),
                started: c.started,
                ttft,
                idle: self.policy.idle_timeout,
                span: c.span,
                request: Arc::new(request),
                target: c.target.clone(),
            },
            resumer,
        );
        Ok(Answer {
            value: stream,
            provider: c.target.provider,
            model: c.target.model,
            trail,
        })
    }

    /// The loop shared by [`call`](Self::call) and [`stream`](Self::stream): tries targets
    /// until an attempt succeeds, and hands back the success with its permit unsettled.
    async fn run<V, F, Fut>(
        &self,
        request: &telemetry::Request,
        tokens: u64,
        mut attempt: F,
        attempt_limit: impl Fn(&RouteTarget) -> Duration,
    ) -> Result<Committed<V>, FailoverError>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<V, AttemptFailure>>,
    {
        let deadline = Instant::now() + self.policy.total_deadline;
        if self.budgeted {
            self.budget.deposit();
        }
        let mut trail = Trail::default();
        let mut last: Option<AttemptFailure> = None;
        let mut list = &self.targets;
        let mut i = 0;
        let mut number = 0;
        // The target the request is leaving, and why: a failover event when it moves on.
        let mut leaving: Option<(Arc<str>, Reason)> = None;
        let mut cursor = Cursor::default();
        let fail = |kind, trail: Trail, last: Option<AttemptFailure>| {
            let mut retry_after = self.soonest_admit(&trail);
            if kind == FailoverErrorKind::Saturated && retry_after.is_none() {
                // Out of capacity: a place frees up on a shed target soon.
                retry_after = trail
                    .0
                    .iter()
                    .filter(|a| matches!(a.outcome, AttemptOutcome::Shed(_)))
                    .filter_map(|a| a.retry_after)
                    .min();
            }
            Err(FailoverError {
                kind,
                route: Arc::clone(&self.name),
                trail,
                last,
                retry_after,
            })
        };
        'targets: while let Some(t) = self.resolve(list, i, &mut cursor) {
            let target = t.target();
            let mut retries = 0;
            let role = if std::ptr::eq(list, &self.targets) && t.tier == 0 {
                telemetry::Role::Primary
            } else {
                telemetry::Role::Fallback
            };
            if let Some((from, reason)) = leaving.take() {
                request.failover(&from, &t.provider, reason);
            }
            loop {
                number += 1;
                let now = Instant::now();
                if now >= deadline {
                    return fail(FailoverErrorKind::DeadlineExceeded, trail, last);
                }
                let limit = attempt_limit(t);
                let a = match self.launch(
                    request,
                    t,
                    &target,
                    number,
                    role,
                    now,
                    limit,
                    deadline,
                    true,
                    tokens,
                    &mut attempt,
                ) {
                    Ok(a) => a,
                    Err(skipped) => {
                        let reason = skipped.note(request, t, &mut trail);
                        leaving = Some((Arc::clone(&t.provider), reason));
                        i += 1;
                        continue 'targets;
                    }
                };
                // Hedging: a first try that has not answered after the delay races the next
                // target; the first answer wins and the loser is cancelled, uncounted.
                let hedge = self.policy.hedge_after.filter(|_| retries == 0);
                let next = if hedge.is_some() {
                    self.resolve(list, i + 1, &mut cursor)
                } else {
                    None
                };
                let (flight, failure) = match (hedge, next) {
                    (Some(delay), Some(next)) => {
                        match self
                            .race(
                                request,
                                a,
                                next,
                                delay,
                                &mut number,
                                deadline,
                                tokens,
                                &attempt_limit,
                                &mut attempt,
                                &mut trail,
                            )
                            .await
                        {
                            Race::Won(committed) => {
                                return Ok(Committed { trail, ..committed });
                            }
                            Race::Failed(flight, failure, skip) => {
                                i += skip;
                                (flight, failure)
                            }
                        }
                    }
                    _ => {
                        let r = a.fut.await;
                        match landed(r, &a.flight) {
                            Ok(value) => return Ok(a.flight.commit(value, trail)),
                            Err(failure) => (a.flight, failure),
                        }
                    }
                };
                let Some(failure) = failure else {
                    // Our own deadline ended the attempt, not the provider's slowness.
                    flight.abandon(&mut trail);
                    return fail(FailoverErrorKind::DeadlineExceeded, trail, last);
                };
                if let Some(quota) = failure.quota() {
                    // The provider said what is left: the target holds to it until its reset.
                    let (p, m) = flight.target.names();
                    if let Some(load) = self.loads.get(p, m) {
                        load.adopt(quota);
                    }
                }
                let left = Arc::clone(&flight.target.provider);
                let hedged = flight.hedged;
                let reason = flight.fail(&failure, &mut trail);
                let next = match self.next_step(&failure, retries, list, deadline) {
                    // After a hedge race the same target is not tried again.
                    Next::Retry(_) if hedged => Next::FailOver,
                    next => next,
                };
                last = Some(failure);
                match next {
                    Next::Retry(_) if !self.budget.withdraw() => {
                        // No budget for a retry in place: on to the next target.
                        budget_exhausted(request, t, &mut trail);
                        leaving = Some((left, reason));
                        i += 1;
                        continue 'targets;
                    }
                    Next::Retry(wait) => {
                        retries += 1;
                        tokio::time::sleep(wait).await;
                    }
                    Next::FailOver
                        if self.policy.retry_budget_failovers
                            && self.resolve(list, i + 1, &mut cursor).is_some()
                            && !self.budget.withdraw() =>
                    {
                        budget_exhausted(request, t, &mut trail);
                        return fail(FailoverErrorKind::Exhausted, trail, last);
                    }
                    Next::FailOver => {
                        leaving = Some((left, reason));
                        i += 1;
                        continue 'targets;
                    }
                    Next::LargerContext => {
                        leaving = Some((left, reason));
                        list = &self.larger_context;
                        i = 0;
                        continue 'targets;
                    }
                    Next::Return(kind) => return fail(kind, trail, last),
                }
            }
        }
        // A target that could not carry the request was not out of service: the request
        // went everywhere it could.
        let ineligible = trail
            .0
            .iter()
            .any(|a| a.outcome == AttemptOutcome::Ineligible);
        if trail.sent() == 0 && !ineligible {
            let none_sent = if trail.shed() {
                FailoverErrorKind::Saturated
            } else {
                FailoverErrorKind::AllOpen
            };
            if !self.policy.last_resort {
                return fail(none_sent, trail, last);
            }
            let tried = self
                .last_resort(
                    request,
                    &mut attempt,
                    &attempt_limit,
                    &mut trail,
                    number,
                    deadline,
                    tokens,
                )
                .await;
            return match tried {
                None => fail(none_sent, trail, last),
                Some(Ok(committed)) => Ok(committed),
                Some(Err(None)) => fail(FailoverErrorKind::DeadlineExceeded, trail, last),
                Some(Err(Some(failure))) => {
                    let kind = match self.next_step(&failure, u32::MAX, &[], deadline) {
                        Next::Return(kind) => kind,
                        Next::FailOver | Next::Retry(_) | Next::LargerContext => {
                            FailoverErrorKind::Exhausted
                        }
                    };
                    fail(kind, trail, Some(failure))
                }
            };
        }
        if trail.shed() {
            return fail(FailoverErrorKind::Saturated, trail, last);
        }
        fail(FailoverErrorKind::Exhausted, trail, last)
    }

    /// Starts an attempt on `t` if its breakers admit it (`admit`), or without asking them (a
    /// last resort, which they do not hear of).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument named"
    )]
    fn launch<V, F, Fut>(
        &self,
        request: &telemetry::Request,
        t: &RouteTarget,
        target: &crate::breaker::Target<'_>,
        number: u32,
        role: telemetry::Role,
        now: Instant,
        limit: Duration,
        deadline: Instant,
        admit: bool,
        tokens: u64,
        attempt: &mut F,
    ) -> Result<Launched<Fut>, Skipped>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<V, AttemptFailure>>,
    {
        // A plain target (no limits, nothing reading its count) skips both checks.
        let (mut inflight, limited) = if t.load.is_plain() {
            (Inflight::uncounted(), None)
        } else {
            let Some(inflight) = t.load.try_enter() else {
                return Err(Skipped::Shed(ShedCause::Concurrency, None));
            };
            if let Err((cause, wait)) = t.load.admit(tokens) {
                return Err(Skipped::Shed(cause, Some(wait)));
            }
            (inflight, t.load.is_limited().then(|| Arc::clone(&t.load)))
        };
        let span = telemetry::attempt_span(request, t, number, role, target);
        let permit = if admit {
            match target.try_acquire_owned() {
                Ok(p) => Some(p),
                Err(rejected) => {
                    t.load.refund(tokens);
                    telemetry::rejected(&span, &rejected);
                    return Err(Skipped::Rejected(rejected));
                }
            }
        } else {
            None
        };
        inflight.announce();
        let attempt_deadline = (now + limit).min(deadline);
        let ctx = AttemptContext {
            provider: Arc::clone(&t.provider),
            model: Arc::clone(&t.model),
            number,
            primary: role == telemetry::Role::Primary,
            deadline: attempt_deadline,
            tokens,
            limited,
            span: span.clone(),
        };
        let fut = Box::pin(tokio::time::timeout_at(
            attempt_deadline,
            attempt(ctx).instrument(span.clone()),
        ));
        Ok(Launched {
            flight: Flight {
                target: t.named(),
                permit,
                inflight,
                span,
                started: Instant::now(),
                cut_short: deadline.saturating_duration_since(now) < limit,
                hedged: false,
            },
            fut,
        })
    }

    /// Races `a` against an attempt on `next` started after `delay`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument named"
    )]
    async fn race<V, F, Fut>(
        &self,
        request: &telemetry::Request,
        mut a: Launched<Fut>,
        next: &RouteTarget,
        delay: Duration,
        number: &mut u32,
        deadline: Instant,
        tokens: u64,
        attempt_limit: &impl Fn(&RouteTarget) -> Duration,
        attempt: &mut F,
        trail: &mut Trail,
    ) -> Race<V>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<V, AttemptFailure>>,
    {
        tokio::select! {
            biased;
            r = &mut a.fut => return Race::single(a.flight, r),
            () = tokio::time::sleep(delay) => {}
        }
        let target = next.target();
        if !self.budget.withdraw() {
            // No budget for a hedge: the first attempt runs alone.
            request.shed(next, ShedCause::RetryBudget);
            return Race::single(a.flight, a.fut.await);
        }
        *number += 1;
        let now = Instant::now();
        let limit = attempt_limit(next);
        let mut b = match self.launch(
            request,
            next,
            &target,
            *number,
            telemetry::Role::Fallback,
            now,
            limit,
            deadline,
            true,
            tokens,
            attempt,
        ) {
            Ok(b) => b,
            Err(skipped) => {
                skipped.note(request, next, trail);
                let mut race = Race::single(a.flight, a.fut.await);
                if let Race::Failed(_, _, skip) = &mut race {
                    *skip = 1;
                }
                return race;
            }
        };
        a.flight.hedged = true;
        b.flight.hedged = true;
        // Both run; the first answer wins. A failure waits for the other.
        let (a_first, failure) = tokio::select! {
            r = &mut a.fut => match landed(r, &a.flight) {
                Ok(v) => {
                    b.flight.lost(trail);
                    return Race::Won(a.flight.commit(v, Trail::default()));
                }
                Err(f) => (true, f),
            },
            r = &mut b.fut => match landed(r, &b.flight) {
                Ok(v) => {
                    a.flight.lost(trail);
                    return Race::Won(b.flight.commit(v, Trail::default()));
                }
                Err(f) => (false, f),
            },
        };
        let ((first, _), (other, fut)) = if a_first {
            ((a.flight, a.fut), (b.flight, b.fut))
        } else {
            ((b.flight, b.fut), (a.flight, a.fut))
        };
        let Some(failure) = failure else {
            // The route's deadline ended one, so it ends the other too.
            other.abandon(trail);
            return Race::Failed(first, None, 1);
        };
        if let Next::Return(_) | Next::LargerContext =
            self.next_step(&failure, 1, &self.targets, deadline)
        {
            // A failure no other target may see (or one for a larger target): stop, and
            // cancel the other.
            other.lost(trail);
            return Race::Failed(first, Some(failure), 1);
        }
        first.fail(&failure, trail);
        let r = fut.await;
        match landed(r, &other) {
            Ok(v) => Race::Won(other.commit(v, Trail::default())),
            Err(f) => Race::Failed(other, f, 1),
        }
    }

    /// When the route may answer again: for each target the longer of its breakers' open time
    /// and the wait its provider asked for in this request, and the soonest of those. `None`
    /// when some target could be tried at once, or nothing is known.
    fn soonest_admit(&self, trail: &Trail) -> Option<Duration> {
        let mut soonest = Duration::MAX;
        for t in self.targets.iter().chain(&self.larger_context) {
            let target = t.target();
            let open = [target.provider_breaker(), target.model_breaker()]
                .into_iter()
                .filter_map(crate::breaker::Breaker::closed_in)
                .max();
            let asked = trail
                .0
                .iter()
                .filter(|a| t.is(&a.provider, &a.model))
                .filter_map(|a| a.retry_after)
                .max();
            match open.max(asked) {
                Some(wait) => soonest = soonest.min(wait),
                None => return None,
            }
        }
        (soonest != Duration::MAX).then_some(soonest)
    }

    /// What the chain does after `failure`: the reason's policy, bounded by the route's.
    fn next_step(
        &self,
        failure: &AttemptFailure,
        retries: u32,
        list: &[RouteTarget],
        deadline: Instant,
    ) -> Next {
        let reason = failure.reason();
        if failure.is_ineligible() {
            return Next::FailOver;
        }
        match self.policy.action(reason) {
            Action::FailOver => Next::FailOver,
            Action::ReturnError => Next::Return(FailoverErrorKind::Returned(reason)),
            Action::LargerContext => {
                if std::ptr::eq(list, self.larger_context.as_slice())
                    || self.larger_context.is_empty()
                {
                    Next::Return(FailoverErrorKind::Returned(reason))
                } else {
                    Next::LargerContext
                }
            }
            Action::RetryThenFailOver => {
                let asked = failure.retry_after().unwrap_or_default();
                if retries >= self.policy.max_retries || asked > self.policy.max_retry_wait {
                    return Next::FailOver;
                }
                let backoff = jittered(self.policy.retry_backoff, retries);
                let wait = backoff.max(asked);
                if Instant::now() + wait >= deadline {
                    Next::FailOver
                } else {
                    Next::Retry(wait)
                }
            }
        }
    }

    /// Every breaker was open: tries the target that will admit soonest, without a permit
    /// (its breakers do not hear of it), if the route allows it. `None` when there is none.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument named"
    )]
    async fn last_resort<V, F, Fut>(
        &self,
        request: &telemetry::Request,
        attempt: &mut F,
        attempt_limit: &impl Fn(&RouteTarget) -> Duration,
        trail: &mut Trail,
        number: u32,
        deadline: Instant,
        tokens: u64,
    ) -> Option<Result<Committed<V>, Option<AttemptFailure>>>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<V, AttemptFailure>>,
    {
        let soonest = trail
            .0
            .iter()
            .min_by_key(|a| a.retry_after.unwrap_or(Duration::MAX))?;
        let t = self
            .targets
            .iter()
            .find(|t| t.is(&soonest.provider, &soonest.model))?
            .clone();
        let target = t.target();
        let role = if t.tier == 0 {
            telemetry::Role::Primary
        } else {
            telemetry::Role::Fallback
        };
        let now = Instant::now();
        let limit = attempt_limit(&t);
        let a = self
            .launch(
                request,
                &t,
                &target,
                number + 1,
                role,
                now,
                limit,
                deadline,
                false,
                tokens,
                attempt,
            )
            .ok()?;
        let r = a.fut.await;
        Some(match landed(r, &a.flight) {
            Ok(value) => Ok(a.flight.commit(value, std::mem::take(trail))),
            Err(None) => {
                a.flight.abandon(trail);
                Err(None)
            }
            Err(Some(failure)) => {
                a.flight.fail(&failure, trail);
                Err(Some(failure))
            }
        })
    }
}

fn record(
    t: &impl Names,
    outcome: AttemptOutcome,
    status: Option<u16>,
    duration: Duration,
    retry_after: Option<Duration>,
) -> AttemptRecord {
    let (provider, model) = t.names();
    AttemptRecord {
        provider: Arc::clone(provider),
        model: Arc::clone(model),
        outcome,
        status,
        duration,
        retry_after,
    }
}

/// Starts the slow start of a target whose breaker just closed.
#[inline]
pub(crate) fn recovered(
    loads: &Loads,
    changes: &[Option<crate::breaker::Transition>; 2],
    provider: &str,
    model: &str,
) {
    if changes.iter().flatten().any(|t| t.to == State::Closed)
        && let Some(load) = loads.get(provider, model)
    {
        load.recovered();
    }
}

/// A stream once its first chunk is in: a stream that ends at once is an empty answer.
async fn first_chunk<C, S>(
    opening: impl Future<Output = Result<S, AttemptFailure>>,
) -> Result<(C, S), AttemptFailure>
where
    S: futures_core::Stream<Item = Result<C, AttemptFailure>> + Unpin,
{
    use futures_util::StreamExt as _;
    let mut s = opening.await?;
    match s.next().await {
        Some(Ok(first)) => Ok((first, s)),
        Some(Err(e)) => Err(e),
        None => Err(AttemptFailure::new(Reason::EmptyResponse)),
    }
}

/// `base * 2^retries`, with full jitter over its upper half.
fn jittered(base: Duration, retries: u32) -> Duration {
    let full = base.saturating_mul(1_u32 << retries.min(16));
    full / 2 + full.mul_f64(fastrand::f64() / 2.0)
}
