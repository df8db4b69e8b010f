//! Stream resume: a stream that breaks after its first token is finished on another target.
//!
//! The chain knows when a stream broke and which targets may take it over; it does not know
//! the wire format. A [`Resume`] does: it watches the chunks the reader was given, builds the
//! continuation request (the original one with the text so far as an assistant prefill), and
//! fits the continuation's chunks into the stream the reader already has.
//! [`openai_chat::ChatResume`](crate::protocol::openai_chat::ChatResume) is the one for
//! OpenAI-compatible chat, [`anthropic_messages::MessagesResume`](crate::protocol::anthropic_messages::MessagesResume)
//! the one for Anthropic Messages.
//!
//! What the chain does is documented on [`Resume`], the public face of this module.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use tokio::time::Instant;

use super::load::Inflight;
use super::telemetry::{self, Request};
use super::{
    AttemptContext, AttemptFailure, Named, Route, RouteTarget, Trail, first_chunk, landed, record,
};
use crate::Reason;
use crate::breaker::OwnedTargetPermit;

/// A boxed future that opens a continuation stream.
pub type Opening<S> = Pin<Box<dyn Future<Output = Result<S, AttemptFailure>> + Send>>;

/// How to finish a broken stream of chunks `C` (from streams `S`) on another target. Given to
/// [`Route::resumable_stream`]; the chain calls it from the stream's `poll_next`.
///
/// # What the chain does when a resumable stream breaks
///
/// The broken attempt settles as before (its breakers count the break). If the [`Resume`]
/// says the answer can be continued, the chain tries the route's other targets (the broken
/// one's tier first, then the tiers after it), skipping every target the [`Resume`] does not
/// [accept](Resume::accepts) (no prefill support). Each continuation is an attempt like any
/// other: breakers and limits admit it, the attempt timeout and the route's total deadline
/// bound it (no continuation starts after the deadline), it spends the retry budget, and its
/// span says `llm_failover.resume = true`. A target that answers a continuation with a
/// `format` failure (a 400 about the assistant message: it rejected the prefill) is passed
/// over without its breakers hearing of it. The first continuation that produces a chunk is
/// committed, and its chunks go to the reader through [`Resume::splice`]. At most one
/// continuation is committed per stream: if it breaks too, the stream ends with that break.
/// If none could be committed, the stream ends with the original break, never a
/// continuation's error.
pub trait Resume<C, S>: Send {
    /// The reader was given `chunk` (called for every chunk before a break).
    fn sent(&mut self, chunk: &C);

    /// Whether what was sent can be continued from a prefill at all (false, say, when the
    /// answer so far holds a tool call). When false, a break ends the stream as without
    /// resume.
    fn continuable(&self) -> bool;

    /// Whether `provider`'s `model` continues an assistant prefill. Targets that do not are
    /// skipped.
    fn accepts(&self, provider: &str, model: &str) -> bool;

    /// Opens the continuation on the attempt's target: the original request with the text
    /// sent so far as its last, assistant message.
    fn open(&mut self, attempt: AttemptContext) -> Opening<S>;

    /// Turns a continuation chunk into the one the reader gets next (`None` drops it). `trail`
    /// is the request's, the continuation last: for the answer's final chunk.
    fn splice(&mut self, chunk: C, trail: &Trail) -> Option<C>;
}

/// What a resumable stream keeps for the moment it breaks.
pub(crate) struct Resumer<C, S> {
    pub(crate) route: Arc<Route>,
    pub(crate) resume: Box<dyn Resume<C, S>>,
    /// The request's total deadline: no continuation starts after it.
    pub(crate) deadline: Instant,
    pub(crate) tokens: u64,
    /// Starts [`continuation`] for these `C` and `S` (set where they are known to be `Send`).
    pub(crate) start: fn(Job<C, S>) -> Search<C, S>,
}

/// A continuation search in progress.
pub(crate) type Search<C, S> = Pin<Box<dyn Future<Output = Done<C, S>> + Send>>;

/// A continuation to look for.
pub(crate) struct Job<C, S> {
    pub(crate) resumer: Box<Resumer<C, S>>,
    pub(crate) request: Arc<Request>,
    pub(crate) trail: Trail,
    /// The target whose stream broke, and why.
    pub(crate) from: Named,
    pub(crate) reason: Reason,
}

/// A committed continuation: what the stream swaps in.
pub(crate) struct Opened<C, S> {
    pub(crate) first: C,
    pub(crate) rest: S,
    pub(crate) permit: Option<OwnedTargetPermit>,
    pub(crate) inflight: Inflight,
    pub(crate) span: tracing::Span,
    pub(crate) started: Instant,
    pub(crate) target: Named,
}

/// How the search ended: the resumer and the trail back, and the continuation if one
/// committed.
pub(crate) struct Done<C, S> {
    pub(crate) resumer: Box<Resumer<C, S>>,
    pub(crate) trail: Trail,
    pub(crate) opened: Option<Opened<C, S>>,
}

impl Route {
    /// The targets that may continue a stream that broke on `from`: the rest of its tier,
    /// then the tiers after it (the other larger-context targets, if it was one of those).
    fn continuers(&self, from: &Named) -> Vec<&RouteTarget> {
        let is_from = |t: &&RouteTarget| t.is(&from.provider, &from.model);
        if let Some(broke) = self.targets.iter().find(is_from) {
            return self
                .targets
                .iter()
                .filter(|t| t.tier >= broke.tier && !is_from(t))
                .collect();
        }
        if self.larger_context.iter().any(|t| is_from(&t)) {
            return self.larger_context.iter().filter(|t| !is_from(t)).collect();
        }
        self.targets.iter().collect()
    }
}

/// Looks for a target to continue the stream `job` describes, one attempt per target.
pub(crate) async fn continuation<C, S>(job: Job<C, S>) -> Done<C, S>
where
    C: Send + 'static,
    S: Stream<Item = Result<C, AttemptFailure>> + Unpin + Send + 'static,
{
    let Job {
        mut resumer,
        request,
        mut trail,
        from,
        reason,
    } = job;
    let route = Arc::clone(&resumer.route);
    let limit = route.policy.attempt_timeout.min(route.policy.ttft_timeout);
    let mut number = u32::try_from(trail.0.len()).unwrap_or(u32::MAX);
    let (mut left, mut why) = (Arc::clone(&from.provider), reason);
    for t in route.continuers(&from) {
        if !resumer.resume.accepts(&t.provider, &t.model) {
            continue;
        }
        let target = t.target();
        let now = Instant::now();
        if now >= resumer.deadline {
            break;
        }
        if route.budgeted && !route.budget.withdraw() {
            super::budget_exhausted(&request, t, &mut trail);
            break;
        }
        request.failover(&left, &t.provider, why);
        number = number.saturating_add(1);
        let resume = &mut resumer.resume;
        let launched = route.launch(
            &request,
            t,
            &target,
            number,
            // A continuation is never the primary's attempt, and its span says it resumes.
            telemetry::Role::Resume,
            now,
            limit,
            resumer.deadline,
            true,
            resumer.tokens,
            &mut |ctx| first_chunk(resume.open(ctx)),
        );
        let a = match launched {
            Ok(a) => a,
            Err(skipped) => {
                why = skipped.note(&request, t, &mut trail);
                left = Arc::clone(&t.provider);
                continue;
            }
        };
        let r = a.fut.await;
        let mut flight = a.flight;
        match landed(r, &flight) {
            Ok((first, rest)) => {
                let took = flight.started.elapsed();
                flight.inflight.observe(took);
                trail.0.push(record(
                    &flight.target,
                    super::AttemptOutcome::Ok,
                    None,
                    took,
                    None,
                ));
                let opened = Opened {
                    first,
                    rest,
                    permit: flight.permit,
                    inflight: flight.inflight,
                    span: flight.span,
                    started: flight.started,
                    target: flight.target,
                };
                return Done {
                    resumer,
                    trail,
                    opened: Some(opened),
                };
            }
            Err(None) => {
                // The route's deadline ended it.
                flight.abandon(&mut trail);
                break;
            }
            Err(Some(failure)) => {
                if failure.reason() == Reason::Format {
                    // The target rejected the prefill: not a fault of the provider. Its
                    // permit goes back unsettled.
                    flight.permit = None;
                }
                why = flight.fail(&failure, &mut trail);
                left = Arc::clone(&t.provider);
            }
        }
    }
    Done {
        resumer,
        trail,
        opened: None,
    }
}
