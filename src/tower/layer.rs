//! The [`Layer`] that wraps services with a [`BreakerService`].

use ::tower::Layer;

use super::{BreakerService, ByFailure};
use crate::breaker::Breaker;

/// Wraps services with a circuit breaker (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = ByFailure> {
    breaker: Breaker,
    classify: C,
    not_ready_while_open: bool,
}

impl BreakerLayer {
    /// A layer guarding services with `breaker`, counting results by their [`Failure`]
    /// implementation.
    ///
    /// [`Failure`]: crate::breaker::Failure
    #[must_use]
    pub fn new(breaker: Breaker) -> Self {
        Self {
            breaker,
            classify: ByFailure,
            not_ready_while_open: false,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Counts results with `classify` instead. Default: [`ByFailure`].
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            classify,
            not_ready_while_open: self.not_ready_while_open,
        }
    }

    /// Asks the breaker in `poll_ready`, which stays pending while the breaker is open and
    /// wakes when it may admit again; the permit it grants is used by the next `call`.
    /// Default: off (`poll_ready` is the inner service's and `call` rejects).
    #[must_use]
    pub fn not_ready_while_open(mut self, on: bool) -> Self {
        self.not_ready_while_open = on;
        self
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut svc = BreakerService::new(inner, self.breaker.clone(), self.classify.clone());
        svc.not_ready_while_open = self.not_ready_while_open;
        svc
    }
}
