//! The response future of a [`BreakerService`](super::BreakerService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;

use super::Classify;
use crate::breaker::{CallError, OwnedPermit, Rejected};

pin_project! {
    /// Resolves to the inner service's response, or at once to a rejection. Dropping it
    /// before it resolves gives the breaker permit back without an outcome.
    ///
    /// # Panics
    ///
    /// When polled again after it resolved, as futures may.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        permit: Option<OwnedPermit>,
        rejected: Option<Rejected>,
        classify: Option<C>,
        started: Instant,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn rejected(rejected: Rejected) -> Self {
        Self {
            inner: None,
            permit: None,
            rejected: Some(rejected),
            classify: None,
            started: Instant::now(),
        }
    }

    pub(super) fn running(inner: F, permit: OwnedPermit, classify: C) -> Self {
        Self {
            inner: Some(inner),
            permit: Some(permit),
            rejected: None,
            classify: Some(classify),
            started: Instant::now(),
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(rejected) = this.rejected.take() {
            return Poll::Ready(Err(CallError::Rejected(rejected)));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            panic!("ResponseFuture polled after completion");
        };
        let result = ready!(inner.poll(cx));
        if let (Some(permit), Some(classify)) = (this.permit.take(), this.classify.as_ref()) {
            permit.record(classify.outcome(&result, this.started.elapsed()));
        }
        Poll::Ready(result.map_err(CallError::Inner))
    }
}
