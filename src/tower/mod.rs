//! A `tower` middleware that guards a service with a circuit breaker.
//!
//! Laid out as tower lays out its own middleware: the [`BreakerService`] here, its
//! [`BreakerLayer`] (`layer.rs`), its [`ResponseFuture`] (`future.rs`), and a policy trait,
//! [`Classify`], that says how a result counts. The breaker never looks at errors itself: the
//! policy turns each result into an [`Outcome`], as `tower::retry::Policy` keeps "what is a
//! failure" out of the retry middleware. The default policy, [`ByFailure`], uses the error's
//! [`Failure`] implementation (its reason and Retry-After).
//!
//! A rejected call resolves at once with [`CallError::Rejected`] and allocates nothing, like
//! tower's `LoadShed`. By default `poll_ready` is the inner service's; with
//! [`BreakerLayer::not_ready_while_open`] the breaker is asked in `poll_ready`, which stays
//! pending while the breaker is open (and wakes when it may admit again), and the permit it
//! grants is used by the next `call`. It never fails `poll_ready`: tower treats a readiness
//! error as the end of a service.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use llm_failover::breaker::{Breaker, BreakerPolicy, CallError};
//! use llm_failover::{Reason, chain::AttemptFailure, tower::BreakerLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! let breaker = Breaker::new(BreakerPolicy::builder().consecutive_failures(1).build()?);
//! let inner = service_fn(|_: ()| async { Err::<(), _>(AttemptFailure::new(Reason::ConnectionRefused)) });
//! let mut svc = BreakerLayer::new(breaker).layer(inner);
//!
//! let first = svc.ready().await?.call(()).await;
//! assert!(matches!(first, Err(CallError::Inner(f)) if f.reason() == Reason::ConnectionRefused));
//! let second = svc.ready().await?.call(()).await;
//! assert!(matches!(second, Err(CallError::Rejected(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod future;
mod layer;

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ::tower::Service;

use crate::breaker::{Breaker, CallError, Failure, Outcome, OwnedPermit};

pub use self::future::ResponseFuture;
pub use self::layer::BreakerLayer;

/// How a service's result counts against the breaker.
pub trait Classify<T, E> {
    /// The outcome of one call that returned `result` after `took`.
    fn outcome(&self, result: &Result<T, E>, took: Duration) -> Outcome;
}

/// The default [`Classify`] policy: `Ok` is a success; an error is a failure for its
/// [`Failure::reason`], with its Retry-After.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByFailure;

impl<T, E: Failure> Classify<T, E> for ByFailure {
    fn outcome(&self, result: &Result<T, E>, took: Duration) -> Outcome {
        Outcome::of(result, took)
    }
}

/// A service guarded by a breaker; see the [module docs](self).
#[derive(Debug)]
pub struct BreakerService<S, C = ByFailure> {
    inner: S,
    breaker: Breaker,
    classify: C,
    not_ready_while_open: bool,
    /// A permit granted in `poll_ready`, for the next `call`.
    reserved: Option<OwnedPermit>,
    /// While open: when to ask the breaker again.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long `poll_ready` waits before asking again a breaker that gave no end time (forced
/// open by an operator).
const RECHECK: Duration = Duration::from_secs(1);

/// A clone shares the breaker but not a permit reserved by `poll_ready`: drive it to ready
/// again before calling it.
impl<S: Clone, C: Clone> Clone for BreakerService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            not_ready_while_open: self.not_ready_while_open,
            reserved: None,
            wait: None,
        }
    }
}

impl<S, C> BreakerService<S, C> {
    /// Wraps `inner` with `breaker`, counting results with `classify`.
    pub fn new(inner: S, breaker: Breaker, classify: C) -> Self {
        Self {
            inner,
            breaker,
            classify,
            not_ready_while_open: false,
            reserved: None,
            wait: None,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while self.not_ready_while_open && self.reserved.is_none() {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            match self.breaker.try_acquire_owned() {
                Ok(permit) => self.reserved = Some(permit),
                Err(rejected) => {
                    let again = rejected
                        .retry_after()
                        .unwrap_or(RECHECK)
                        .max(Duration::from_millis(1));
                    self.wait = Some(Box::pin(tokio::time::sleep(again)));
                }
            }
        }
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.reserved.take() {
            Some(p) => p,
            None => match self.breaker.try_acquire_owned() {
                Ok(p) => p,
                Err(rejected) => return ResponseFuture::rejected(rejected),
            },
        };
        ResponseFuture::running(self.inner.call(req), permit, self.classify.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ::tower::{Layer, Service, ServiceExt, service_fn};

    use super::*;
    use crate::Reason;
    use crate::breaker::clock::MockClock;
    use crate::breaker::{BreakerPolicy, State};
    use crate::chain::AttemptFailure;

    fn breaker(clock: &MockClock) -> Breaker {
        Breaker::builder()
            .policy(
                BreakerPolicy::builder()
                    .consecutive_failures(1)
                    .jitter(0.0)
                    .build()
                    .unwrap(),
            )
            .build_with_clock(clock.clock())
    }

    #[tokio::test(start_paused = true)]
    async fn poll_ready_waits_while_open_and_its_permit_serves_the_call() {
        let clock = MockClock::new();
        let b = breaker(&clock);
        let inner = service_fn(|fail: bool| async move {
            if fail {
                Err(AttemptFailure::new(Reason::ServerError))
            } else {
                Ok("ok")
            }
        });
        let mut svc = BreakerLayer::new(b.clone())
            .not_ready_while_open(true)
            .layer(inner);
        assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "ok");
        assert!(svc.ready().await.unwrap().call(true).await.is_err());
        assert_eq!(b.state(), State::Open);
        // While open the service is not ready (pending, not an error).
        let wait = b.try_acquire().unwrap_err().retry_after().unwrap();
        assert!(futures_util::FutureExt::now_or_never(svc.ready()).is_none());
        // After the open time the probe is reserved in poll_ready and used by call.
        clock.advance(wait);
        tokio::time::advance(wait).await;
        let ready = svc.ready().await.unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(ready.call(false).await.unwrap(), "ok");
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test]
    async fn a_dropped_call_gives_its_probe_back_and_a_custom_policy_decides() {
        let clock = MockClock::new();
        let b = breaker(&clock);
        // A policy that counts an `Err("slow")` as a timeout and anything else as success.
        #[derive(Clone)]
        struct SlowIsTimeout;
        impl Classify<(), &'static str> for SlowIsTimeout {
            fn outcome(&self, r: &Result<(), &'static str>, took: Duration) -> Outcome {
                match r {
                    Err("slow") => Outcome::failure(Reason::Timeout, took),
                    _ => Outcome::success(took),
                }
            }
        }
        let inner = service_fn(|hang: bool| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Err::<(), _>("slow")
        });
        let mut svc = BreakerLayer::new(b.clone())
            .classify(SlowIsTimeout)
            .layer(inner);
        assert!(svc.ready().await.unwrap().call(false).await.is_err());
        assert_eq!(b.state(), State::Open);
        clock.advance(Duration::from_secs(3600));
        let fut = svc.ready().await.unwrap().call(true);
        assert_eq!(b.state(), State::HalfOpen);
        assert!(matches!(
            svc.ready().await.unwrap().call(true).await,
            Err(CallError::Rejected(_))
        ));
        drop(fut);
        // The slot is free again: the next probe is admitted (it runs, and hangs).
        let next = svc.ready().await.unwrap().call(true);
        assert!(futures_util::FutureExt::now_or_never(next).is_none());
    }
}
