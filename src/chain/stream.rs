//! A committed stream: the first chunk has arrived; from here on a break is an error, never a
//! short answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use super::load::Inflight;
use super::telemetry::{self, Request};
use super::{AttemptFailure, AttemptOutcome, FailoverError, FailoverErrorKind, Trail};
use crate::Reason;
use crate::breaker::{Outcome, OwnedTargetPermit};

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
    pub(crate) request: Request,
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
}

impl<C, S> std::fmt::Debug for FailoverStream<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverStream")
            .field("route", &self.info.route)
            .field("done", &self.done)
            .finish_non_exhaustive()
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
        }
    }

    /// Every attempt up to and including the one that is streaming.
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
            if let Some(last) = self.info.trail.0.last() {
                super::recovered(&self.info.loads, &changes, &last.provider, &last.model);
            }
        }
        self.inflight = None;
    }

    fn finish(&mut self, chunk: C) -> Poll<Option<Result<C, FailoverError>>> {
        if chunk.is_final() {
            self.succeed();
        } else {
            self.complete |= chunk.is_complete();
            let wait = if self.complete { GRACE } else { self.info.idle };
            self.stall.as_mut().reset(Instant::now() + wait);
        }
        Poll::Ready(Some(Ok(chunk)))
    }

    fn succeed(&mut self) {
        self.done = true;
        let took = self.info.started.elapsed();
        self.settle(Outcome::success(took).with_ttft(self.info.ttft));
        telemetry::settled(&self.info.span, AttemptOutcome::Ok, None, took);
        self.info.request.succeeded(self.info.trail.0.len());
    }

    fn broken(
        &mut self,
        reason: Reason,
        failure: AttemptFailure,
    ) -> Poll<Option<Result<C, FailoverError>>> {
        self.done = true;
        let took = self.info.started.elapsed();
        self.settle(Outcome::failure(reason, took).with_ttft(self.info.ttft));
        let mut trail = self.info.trail.clone();
        if let Some(last) = trail.0.last_mut() {
            last.outcome = AttemptOutcome::Failed(reason);
            last.duration = took;
        }
        telemetry::settled(&self.info.span, AttemptOutcome::Failed(reason), None, took);
        let error = FailoverError {
            kind: FailoverErrorKind::StreamBroken(reason),
            route: Arc::clone(&self.info.route),
            trail,
            last: Some(failure),
            retry_after: None,
        };
        self.info.request.failed(&error);
        Poll::Ready(Some(Err(error)))
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
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return this.finish(first);
        }
        let next = Pin::new(&mut this.rest).poll_next(cx);
        if this.complete && matches!(next, Poll::Ready(None | Some(Err(_)))) {
            // The answer was whole; a missing marker or a late failure does not undo it.
            this.succeed();
            return Poll::Ready(None);
        }
        match next {
            Poll::Ready(Some(Ok(chunk))) => this.finish(chunk),
            // After the first token every failure is a broken stream: the answer is short.
            Poll::Ready(Some(Err(failure))) => {
                let reason = match failure.reason() {
                    Reason::Timeout => Reason::Timeout,
                    _ => Reason::StreamInterrupted,
                };
                this.broken(reason, failure)
            }
            Poll::Ready(None) => this.broken(
                Reason::StreamInterrupted,
                AttemptFailure::new(Reason::StreamInterrupted),
            ),
            Poll::Pending => {
                ready!(this.stall.as_mut().poll(cx));
                if this.complete {
                    this.succeed();
                    return Poll::Ready(None);
                }
                this.broken(Reason::Timeout, AttemptFailure::new(Reason::Timeout))
            }
        }
    }
}
