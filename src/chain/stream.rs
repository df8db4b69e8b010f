//! A committed stream: the first chunk has arrived; from here on a break is an error, never a
//! short answer (unless the route resumes it elsewhere: see [`resume`](super::resume)).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use super::load::Inflight;
use super::resume::{Done, Job, Resumer, Search};
use super::telemetry::{self, Request};
use super::{
    AttemptFailure, AttemptOutcome, FailoverError, FailoverErrorKind, Named, Trail, Usage,
};
use crate::Reason;
use crate::breaker::{Outcome, OwnedTargetPermit};
use crate::reason::Action;

/// A chunk of a streamed answer that knows whether it ends the answer.
///
/// An OpenAI-compatible stream is *complete* at the chunk with a `finish_reason` (a usage
/// chunk may still follow) and *final* at the `[DONE]` marker. An upstream that ends, fails or
/// stalls before a complete chunk cut the answer short; after one, the answer stands.
pub trait Chunk {
    /// True for the terminal marker: the stream ends here.
    fn is_final(&self) -> bool;

    /// True once the answer is whole, even if a terminal marker has not come yet. Default:
    /// [`is_final`](Self::is_final).
    fn is_complete(&self) -> bool {
        self.is_final()
    }

    /// The tokens this chunk reports the attempt used so far, if it reports any (OpenAI's
    /// usage chunk, Anthropic's `message_start` and `message_delta`). The stream merges the
    /// reports of one attempt ([`Usage::merge`]) and records them on its span. Default: none.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

/// How long a complete stream may wait for its terminal marker before it ends on its own.
const GRACE: Duration = Duration::from_millis(250);

/// What the chain knew when it committed to the stream.
pub(crate) struct Committed {
    pub(crate) route: Arc<str>,
    /// The route's board: a breaker closing at the end starts the target's slow start.
    pub(crate) loads: Arc<super::Loads>,
    pub(crate) trail: Trail,
    pub(crate) started: Instant,
    pub(crate) ttft: Duration,
    pub(crate) idle: Duration,
    /// The committed attempt's span, settled when the stream ends.
    pub(crate) span: tracing::Span,
    /// The request's span, finished when the stream ends (cancelled if it is dropped first).
    pub(crate) request: Arc<Request>,
    /// The target streaming.
    pub(crate) target: Named,
}

/// Where a resumable stream is in its resume.
enum Resuming<C, S> {
    /// Not broken: the chain may still resume it.
    Ready(Box<Resumer<C, S>>),
    /// Looking for a continuation; the error to end with if there is none.
    Opening(Search<C, S>, Box<FailoverError>),
    /// Continued from the target that broke: its chunks go through the resumer.
    Resumed(Box<Resumer<C, S>>, Named),
}

/// The stream a route committed to. Yields the upstream's chunks; ends after the final chunk;
/// yields one [`FailoverError`] ([`FailoverErrorKind::StreamBroken`]) and ends if the
/// upstream fails, stalls past the idle timeout, or ends without its final chunk. Its
/// breakers learn the outcome when it ends; dropping it early (the reader went away) gives
/// the permit back without an outcome.
#[must_use = "streams do nothing unless polled"]
pub struct FailoverStream<C, S> {
    first: Option<C>,
    rest: S,
    permit: Option<OwnedTargetPermit>,
    /// The stream's place in flight on its target, given back when it ends.
    inflight: Option<Inflight>,
    info: Committed,
    stall: Pin<Box<Sleep>>,
    /// A complete chunk has been seen: whatever happens next, the answer stands.
    complete: bool,
    done: bool,
    /// Set for a route that resumes broken streams.
    resuming: Option<Resuming<C, S>>,
    /// What the target streaming now reported it used.
    usage: Usage,
}

impl<C, S> std::fmt::Debug for FailoverStream<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverStream")
            .field("route", &self.info.route)
            .field("done", &self.done)
            .field("resumed", &self.resumed())
            .finish_non_exhaustive()
    }
}

impl<C, S> FailoverStream<C, S> {
    /// True once the answer was continued on another target (see
    /// [`Route::resumable_stream`](super::Route::resumable_stream)).
    #[must_use]
    pub fn resumed(&self) -> bool {
        matches!(self.resuming, Some(Resuming::Resumed(..)))
    }
}

impl<C, S> FailoverStream<C, S>
where
    C: Chunk,
    S: Stream<Item = Result<C, AttemptFailure>> + Unpin,
{
    pub(crate) fn new(
        first: C,
        rest: S,
        permit: Option<OwnedTargetPermit>,
        inflight: Inflight,
        info: Committed,
        resumer: Option<Box<Resumer<C, S>>>,
    ) -> Self {
        let stall = Box::pin(tokio::time::sleep(info.idle));
        Self {
            first: Some(first),
            rest,
            permit,
            inflight: Some(inflight),
            info,
            stall,
            complete: false,
            done: false,
            resuming: resumer.map(Resuming::Ready),
            usage: Usage::default(),
        }
    }

    /// Every attempt up to and including the one that is streaming (after a resume, the
    /// continuation's too).
    #[must_use]
    pub fn trail(&self) -> &Trail {
        &self.info.trail
    }

    /// How long the first chunk took to arrive, from the start of its attempt.
    #[must_use]
    pub fn time_to_first_token(&self) -> Duration {
        self.info.ttft
    }

    fn settle(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            let changes = permit.record(outcome);
            let t = &self.info.target;
            super::recovered(&self.info.loads, &changes, &t.provider, &t.model);
        }
        self.inflight = None;
    }

    /// Hands out a chunk from the target streaming now (through the resumer after a resume).
    fn finish(&mut self, chunk: C) -> Option<Poll<Option<Result<C, FailoverError>>>> {
        let (last, complete) = (chunk.is_final(), chunk.is_complete());
        // The target's own report, before a resume adds the broken attempt's to it.
        if let Some(usage) = chunk.usage() {
            self.usage = self.usage.merge(usage);
            self.usage.record(&self.info.span);
        }
        let chunk = match &mut self.resuming {
            Some(Resuming::Ready(r)) => {
                r.resume.sent(&chunk);
                Some(chunk)
            }
            Some(Resuming::Resumed(r, _)) => r.resume.splice(chunk, &self.info.trail),
            Some(Resuming::Opening(..)) | None => Some(chunk),
        };
        if last {
            self.succeed();
        } else {
            self.complete |= complete;
            let wait = if self.complete { GRACE } else { self.info.idle };
            self.stall.as_mut().reset(Instant::now() + wait);
        }
        chunk.map(|c| Poll::Ready(Some(Ok(c))))
    }

    fn succeed(&mut self) {
        self.done = true;
        let took = self.info.started.elapsed();
        self.settle(Outcome::success(took).with_ttft(self.info.ttft));
        telemetry::settled(&self.info.span, AttemptOutcome::Ok, None, took);
        if let Some(Resuming::Resumed(_, from)) = &self.resuming {
            self.info.request.resumed(
                &from.provider,
                Some(&self.info.target.provider),
                true,
                &self.info.trail,
            );
        }
        self.info.request.succeeded(self.info.trail.0.len());
    }

    /// The stream broke: ends it with its error, or starts looking for a continuation.
    fn broken(&mut self, reason: Reason, failure: AttemptFailure) -> Option<FailoverError> {
        let failure_reason = failure.reason();
        let took = self.info.started.elapsed();
        self.settle(Outcome::failure(reason, took).with_ttft(self.info.ttft));
        if let Some(last) = self.info.trail.0.last_mut() {
            last.outcome = AttemptOutcome::Failed(reason);
            last.duration = took;
        }
        telemetry::settled(&self.info.span, AttemptOutcome::Failed(reason), None, took);
        let error = FailoverError {
            kind: FailoverErrorKind::StreamBroken(reason),
            route: Arc::clone(&self.info.route),
            trail: self.info.trail.clone(),
            last: Some(failure),
            retry_after: None,
        };
        match self.resuming.take() {
            // A failure no other model may see the end of (a content filter) is not resumed.
            Some(Resuming::Ready(r))
                if r.resume.continuable()
                    && r.route.policy.action(failure_reason) != Action::ReturnError =>
            {
                let start = r.start;
                let job = Job {
                    resumer: r,
                    request: Arc::clone(&self.info.request),
                    trail: self.info.trail.clone(),
                    from: self.info.target.clone(),
                    reason,
                };
                self.resuming = Some(Resuming::Opening(start(job), Box::new(error)));
                None
            }
            Some(Resuming::Resumed(r, from)) => {
                self.info.request.resumed(
                    &from.provider,
                    Some(&self.info.target.provider),
                    false,
                    &self.info.trail,
                );
                self.resuming = Some(Resuming::Resumed(r, from));
                Some(self.end(error))
            }
            other => {
                self.resuming = other;
                Some(self.end(error))
            }
        }
    }

    fn end(&mut self, error: FailoverError) -> FailoverError {
        self.done = true;
        self.info.request.failed(&error);
        error
    }

    /// A continuation search ended: swaps the continuation in and returns its first chunk,
    /// or ends the stream with the original break (the trail now holds the search).
    fn resumed_with(&mut self, done: Done<C, S>, error: FailoverError) -> Result<C, FailoverError> {
        self.info.trail = done.trail;
        let Some(c) = done.opened else {
            self.info
                .request
                .resumed(&self.info.target.provider, None, false, &self.info.trail);
            let error = FailoverError {
                trail: self.info.trail.clone(),
                ..error
            };
            return Err(self.end(error));
        };
        let from = std::mem::replace(&mut self.info.target, c.target);
        self.rest = c.rest;
        self.permit = c.permit;
        self.inflight = Some(c.inflight);
        self.info.ttft = c.started.elapsed();
        c.span.record(
            crate::telemetry::names::chain::TTFT,
            self.info.ttft.as_secs_f64(),
        );
        self.info.span = c.span;
        self.usage = Usage::default();
        self.info.started = c.started;
        self.complete = false;
        self.stall.as_mut().reset(Instant::now() + self.info.idle);
        self.resuming = Some(Resuming::Resumed(done.resumer, from));
        Ok(c.first)
    }
}

impl<C, S> Stream for FailoverStream<C, S>
where
    C: Chunk + Unpin,
    S: Stream<Item = Result<C, AttemptFailure>> + Unpin,
{
    type Item = Result<C, FailoverError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let chunk = if let Some(Resuming::Opening(mut search, error)) = this
                .resuming
                .take_if(|r| matches!(r, Resuming::Opening(..)))
            {
                let Poll::Ready(done) = search.as_mut().poll(cx) else {
                    this.resuming = Some(Resuming::Opening(search, error));
                    return Poll::Pending;
                };
                match this.resumed_with(done, *error) {
                    Ok(first) => first,
                    Err(error) => return Poll::Ready(Some(Err(error))),
                }
            } else if let Some(first) = this.first.take() {
                first
            } else {
                let next = Pin::new(&mut this.rest).poll_next(cx);
                if this.complete && matches!(next, Poll::Ready(None | Some(Err(_)))) {
                    // The answer was whole; a missing marker or a late failure does not undo it.
                    this.succeed();
                    return Poll::Ready(None);
                }
                let (reason, failure) = match next {
                    Poll::Ready(Some(Ok(chunk))) => {
                        if let Some(out) = this.finish(chunk) {
                            return out;
                        }
                        continue;
                    }
                    // After the first token every failure is a broken stream: the answer is
                    // short.
                    Poll::Ready(Some(Err(failure))) => {
                        let reason = match failure.reason() {
                            Reason::Timeout => Reason::Timeout,
                            _ => Reason::StreamInterrupted,
                        };
                        (reason, failure)
                    }
                    Poll::Ready(None) => (
                        Reason::StreamInterrupted,
                        AttemptFailure::new(Reason::StreamInterrupted),
                    ),
                    Poll::Pending => {
                        ready!(this.stall.as_mut().poll(cx));
                        if this.complete {
                            this.succeed();
                            return Poll::Ready(None);
                        }
                        (Reason::Timeout, AttemptFailure::new(Reason::Timeout))
                    }
                };
                match this.broken(reason, failure) {
                    Some(error) => return Poll::Ready(Some(Err(error))),
                    // Looking for a continuation.
                    None => continue,
                }
            };
            if let Some(out) = this.finish(chunk) {
                return out;
            }
        }
    }
}
