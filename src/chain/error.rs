//! What one attempt reports, the trail of a request's attempts, and the error when a route
//! gives no answer.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Reason;
use crate::breaker::Failure;
use crate::classify::{Classification, Classifier, Signal};
use crate::telemetry::names::chain as names;

/// Why one attempt failed: the reason, the provider's requested wait, the HTTP status if
/// there was one, and the underlying error.
///
/// Build it from a classification ([`AttemptFailure::classified`]), straight from a reason, or
/// from a `reqwest` error or response ([`AttemptFailure::from_reqwest`],
/// [`AttemptFailure::from_response`]).
///
/// ```
/// use llm_failover::{Reason, chain::AttemptFailure};
///
/// let f = AttemptFailure::new(Reason::RateLimit).with_status(429);
/// assert_eq!((f.reason(), f.status()), (Reason::RateLimit, Some(429)));
/// ```
#[derive(Debug, Clone)]
pub struct AttemptFailure {
    reason: Reason,
    retry_after: Option<Duration>,
    status: Option<u16>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
    response: Option<Arc<UpstreamResponse>>,
    /// Boxed: a failure travels in every error, and most have none.
    quota: Option<Box<super::Quota>>,
    /// The target cannot carry the request: nothing was sent (see [`AttemptFailure::ineligible`]).
    ineligible: bool,
}

/// The non-2xx response an attempt failed with, kept for the caller (a proxy passes a
/// provider's content-filter message on, say). It may echo what the request sent, keys
/// included: it never appears in this crate's `Display` output, logs or metrics.
#[derive(Clone)]
#[non_exhaustive]
pub struct UpstreamResponse {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The response body, as text.
    pub body: String,
}

impl fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl AttemptFailure {
    /// A failure for `reason`.
    #[must_use]
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            retry_after: None,
            status: None,
            source: None,
            response: None,
            quota: None,
            ineligible: false,
        }
    }

    /// The target cannot carry this request without changing its meaning (it needs a
    /// feature the target's protocol has no equivalent for), so the attempt sent nothing:
    /// `why` says what. The chain goes on to the next target whatever the route's policy,
    /// its breakers do not hear of it, and the trail shows it as
    /// [`AttemptOutcome::Ineligible`]. Its reason is `format` (the request, not the provider).
    ///
    /// ```
    /// use llm_failover::chain::AttemptFailure;
    ///
    /// let why = std::io::Error::other("`n` > 1 has no equivalent in Anthropic Messages");
    /// let f = AttemptFailure::ineligible(why);
    /// assert!(f.is_ineligible());
    /// ```
    #[must_use]
    pub fn ineligible(why: impl StdError + Send + Sync + 'static) -> Self {
        let mut f = Self::new(Reason::Format).with_source(why);
        f.ineligible = true;
        f
    }

    /// True for a failure made by [`ineligible`](Self::ineligible).
    #[must_use]
    pub fn is_ineligible(&self) -> bool {
        self.ineligible
    }

    /// A failure as the classifier judged it.
    #[must_use]
    pub fn classified(c: &Classification) -> Self {
        Self {
            reason: c.reason,
            retry_after: c.retry_after,
            status: None,
            source: None,
            response: None,
            quota: None,
            ineligible: false,
        }
    }

    /// Classifies a `reqwest` error (its status, flags and whole source chain) and keeps it as
    /// the source. The URL is stripped from the kept error, since it may carry a key.
    #[must_use]
    pub fn from_reqwest(err: reqwest::Error) -> Self {
        Self::from_reqwest_with(err, &Classifier::default(), None)
    }

    /// [`from_reqwest`](Self::from_reqwest) with `classifier` and its rules for `provider`.
    pub(crate) fn from_reqwest_with(
        err: reqwest::Error,
        classifier: &Classifier,
        provider: Option<&str>,
    ) -> Self {
        // Without its URL first: the classifier reads the error's text, and a key in a query
        // has no business there.
        let err = err.without_url();
        let mut signal = Signal::from_reqwest(&err);
        if let Some(p) = provider {
            signal = signal.provider(p);
        }
        let c = classifier.classify(&signal);
        let status = err.status().map(|s| s.as_u16());
        let mut f = Self::classified(&c).with_source(err);
        f.status = status;
        f
    }

    /// Classifies a non-2xx response from its status, headers and body (read here, up to its
    /// end), and keeps them for the caller ([`AttemptFailure::response`]). `provider` selects
    /// provider-specific rules.
    pub async fn from_response(resp: reqwest::Response, provider: &str) -> Self {
        Self::from_response_with(resp, provider, &Classifier::default()).await
    }

    /// [`from_response`](Self::from_response) with `classifier`.
    pub(crate) async fn from_response_with(
        resp: reqwest::Response,
        provider: &str,
        classifier: &Classifier,
    ) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        match resp.text().await {
            Ok(body) => {
                let signal = Signal::new()
                    .status(status)
                    .headers(&headers)
                    .body(body.as_str())
                    .provider(provider);
                let mut f = Self::classified(&classifier.classify(&signal)).with_status(status);
                if status == 429 {
                    f.quota = super::Quota::from_headers(&headers).map(Box::new);
                }
                f.response = Some(Arc::new(UpstreamResponse {
                    status,
                    headers,
                    body,
                }));
                f
            }
            Err(e) => Self::from_reqwest_with(e, classifier, Some(provider)).with_status(status),
        }
    }

    /// The non-2xx response the attempt failed with, when it came from
    /// [`AttemptFailure::from_response`].
    #[must_use]
    pub fn response(&self) -> Option<&UpstreamResponse> {
        self.response.as_deref()
    }

    /// The HTTP status of the failed response.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// What the provider said is left of the target's quota (a 429's
    /// `x-ratelimit-remaining-*` headers): the target's limiter adopts it until its reset, so
    /// the next requests go elsewhere before the provider has to refuse them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_failover::{Reason, chain::{AttemptFailure, Quota}};
    ///
    /// let f = AttemptFailure::new(Reason::RateLimit).with_quota(Quota::requests(0, Duration::from_secs(20)));
    /// assert_eq!(f.quota().and_then(|q| q.remaining_requests), Some(0));
    /// ```
    #[must_use]
    pub fn with_quota(mut self, quota: super::Quota) -> Self {
        self.quota = Some(Box::new(quota));
        self
    }

    /// The quota the provider reported with the failure, if any (see
    /// [`with_quota`](Self::with_quota)).
    #[must_use]
    pub fn quota(&self) -> Option<&super::Quota> {
        self.quota.as_deref()
    }

    /// The provider's requested wait.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The underlying error, kept for the caller.
    #[must_use]
    pub fn with_source(mut self, err: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(err));
        self
    }

    /// Why the attempt failed.
    #[must_use]
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The HTTP status, if the provider answered with one.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The wait the provider asked for.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The underlying error, if one was kept.
    #[must_use]
    pub fn source_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt failed: {}", self.reason)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        Ok(())
    }
}

impl StdError for AttemptFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl Failure for AttemptFailure {
    fn reason(&self) -> Reason {
        self.reason
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The target answered (for a stream: produced its first token and finished).
    Ok,
    /// The attempt ran and failed.
    Failed(Reason),
    /// The target's breaker refused it; no request was sent. The reason is what opened the
    /// breaker, when known.
    Rejected(Option<Reason>),
    /// The chain cancelled it: it lost a hedge race. Its breakers do not hear of it.
    Cancelled,
    /// The target was at one of its own limits (see [`ShedCause`]); no request was sent and
    /// its breakers do not hear of it. Shows as `shed` in the trail.
    Shed(ShedCause),
    /// The target cannot carry the request (see [`AttemptFailure::ineligible`]); nothing was
    /// sent and its breakers do not hear of it. Shows as `ineligible` in the trail.
    Ineligible,
}

/// Why the chain skipped a target before sending (the `cause` label of
/// `llm_failover_shed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShedCause {
    /// The target had its maximum of requests in flight.
    Concurrency,
    /// The target had used its requests per minute.
    RequestRate,
    /// The target had used its tokens per minute.
    TokenRate,
    /// The route's retry budget was spent: no more same-target retries or hedges.
    RetryBudget,
}

impl ShedCause {
    /// Every cause, in declaration order.
    pub const ALL: [ShedCause; 4] = [
        ShedCause::Concurrency,
        ShedCause::RequestRate,
        ShedCause::TokenRate,
        ShedCause::RetryBudget,
    ];

    /// The label value: `concurrency`, `request_rate`, `token_rate` or `retry_budget`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ShedCause::Concurrency => names::SHED_CONCURRENCY,
            ShedCause::RequestRate => names::SHED_REQUEST_RATE,
            ShedCause::TokenRate => names::SHED_TOKEN_RATE,
            ShedCause::RetryBudget => names::SHED_RETRY_BUDGET,
        }
    }

    /// The reason a failover away from a shed target carries (a closed-set label): the
    /// target is at capacity (`overloaded`) or out of its quota (`rate_limit`).
    #[must_use]
    pub fn reason(self) -> Reason {
        match self {
            ShedCause::Concurrency | ShedCause::RetryBudget => Reason::Overloaded,
            ShedCause::RequestRate | ShedCause::TokenRate => Reason::RateLimit,
        }
    }
}

/// One attempt of a request: which target, how it ended, with which status, how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// The provider, as configured.
    pub provider: Arc<str>,
    /// The upstream model, as configured.
    pub model: Arc<str>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The HTTP status, if the provider answered with one.
    pub status: Option<u16>,
    /// How long it took (zero for a rejection).
    pub duration: Duration,
    /// When the target may be tried again (a rejection's or the provider's wait).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for AttemptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}=", self.provider, self.model)?;
        match self.outcome {
            AttemptOutcome::Ok => f.write_str("ok"),
            AttemptOutcome::Failed(r) => f.write_str(r.as_str()),
            AttemptOutcome::Rejected(_) => f.write_str("breaker_open"),
            AttemptOutcome::Cancelled => f.write_str("cancelled"),
            AttemptOutcome::Shed(ShedCause::RetryBudget) => f.write_str("budget_exhausted"),
            AttemptOutcome::Shed(_) => f.write_str("shed"),
            AttemptOutcome::Ineligible => f.write_str("ineligible"),
        }
    }
}

/// Every attempt of a request, in order. Displays as
/// `local/llama3=connection_refused; openai/gpt-4o-mini=ok`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trail(pub(crate) Vec<AttemptRecord>);

impl Trail {
    /// The attempts, in order.
    #[must_use]
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.0
    }

    /// How many attempts sent a request (rejections and shed targets excluded).
    #[must_use]
    pub fn sent(&self) -> usize {
        self.0
            .iter()
            .filter(|a| {
                !matches!(
                    a.outcome,
                    AttemptOutcome::Rejected(_)
                        | AttemptOutcome::Shed(_)
                        | AttemptOutcome::Ineligible
                )
            })
            .count()
    }

    /// True when some target was skipped at one of its own limits (concurrency or rate; the
    /// route's retry budget is not a target's limit).
    #[must_use]
    pub fn shed(&self) -> bool {
        self.0.iter().any(|a| match a.outcome {
            AttemptOutcome::Shed(c) => c != ShedCause::RetryBudget,
            AttemptOutcome::Ok
            | AttemptOutcome::Failed(_)
            | AttemptOutcome::Rejected(_)
            | AttemptOutcome::Cancelled
            | AttemptOutcome::Ineligible => false,
        })
    }

    /// True when the route's retry budget stopped an extra attempt.
    #[must_use]
    pub fn budget_exhausted(&self) -> bool {
        self.0
            .iter()
            .any(|a| a.outcome == AttemptOutcome::Shed(ShedCause::RetryBudget))
    }

    /// The soonest wait after which some target of the trail may admit a request again.
    #[must_use]
    pub fn soonest_retry(&self) -> Option<Duration> {
        self.0.iter().filter_map(|a| a.retry_after).min()
    }
}

impl fmt::Display for Trail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Why a route gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailoverErrorKind {
    /// Every target was tried (or refused by its breaker) and none answered.
    Exhausted,
    /// Every target's breaker was open: nothing was sent.
    AllOpen,
    /// No target answered and at least one was skipped at its own limits (see
    /// [`ShedCause`]): the route is out of capacity for now. Its reason is the shed one
    /// (`overloaded` or `rate_limit`).
    Saturated,
    /// A failure that another target cannot fix or must not see (format, content filter,
    /// context overflow without a larger target, cancellation): returned as it is.
    Returned(Reason),
    /// The route's total deadline passed before an answer.
    DeadlineExceeded,
    /// A committed stream broke after its first token (`stream_interrupted` or `timeout`).
    StreamBroken(Reason),
}

/// A route gave no answer: why, every attempt, when to try again, and the last failure.
#[derive(Debug, Clone)]
pub struct FailoverError {
    pub(crate) kind: FailoverErrorKind,
    pub(crate) route: Arc<str>,
    pub(crate) trail: Trail,
    pub(crate) last: Option<AttemptFailure>,
    pub(crate) retry_after: Option<Duration>,
}

impl FailoverError {
    /// Why the route gave no answer.
    #[must_use]
    pub fn kind(&self) -> FailoverErrorKind {
        self.kind
    }

    /// The reason of the error as a whole: the returned or breaking reason, else the last
    /// attempt's.
    #[must_use]
    pub fn reason(&self) -> Option<Reason> {
        match self.kind {
            FailoverErrorKind::Returned(r) | FailoverErrorKind::StreamBroken(r) => Some(r),
            FailoverErrorKind::DeadlineExceeded => Some(Reason::Timeout),
            FailoverErrorKind::Saturated => {
                self.trail.0.iter().rev().find_map(|a| match a.outcome {
                    AttemptOutcome::Shed(c) => Some(c.reason()),
                    AttemptOutcome::Ok
                    | AttemptOutcome::Failed(_)
                    | AttemptOutcome::Rejected(_)
                    | AttemptOutcome::Cancelled
                    | AttemptOutcome::Ineligible => None,
                })
            }
            FailoverErrorKind::Exhausted | FailoverErrorKind::AllOpen => {
                self.last.as_ref().map(AttemptFailure::reason).or_else(|| {
                    self.trail.0.iter().rev().find_map(|a| match a.outcome {
                        AttemptOutcome::Rejected(r) => r,
                        AttemptOutcome::Failed(r) => Some(r),
                        AttemptOutcome::Shed(c) => Some(c.reason()),
                        AttemptOutcome::Ineligible => Some(Reason::Format),
                        AttemptOutcome::Ok | AttemptOutcome::Cancelled => None,
                    })
                })
            }
        }
    }

    /// The route's name.
    #[must_use]
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Every attempt, in order.
    #[must_use]
    pub fn trail(&self) -> &Trail {
        &self.trail
    }

    /// The last attempt's failure (for a returned error: the failure itself, with its
    /// source).
    #[must_use]
    pub fn last_failure(&self) -> Option<&AttemptFailure> {
        self.last.as_ref()
    }

    /// When to try again: the soonest time a target will admit a request, if known.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for FailoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route = &self.route;
        match self.kind {
            FailoverErrorKind::Exhausted => {
                write!(f, "every target of route {route} failed")?;
            }
            FailoverErrorKind::AllOpen => {
                write!(
                    f,
                    "every target of route {route} is out of service (circuit open)"
                )?;
            }
            FailoverErrorKind::Saturated => {
                write!(
                    f,
                    "every target of route {route} is at its limits or out of service; retry later or raise the limits"
                )?;
            }
            FailoverErrorKind::Returned(r) => {
                write!(
                    f,
                    "route {route}: the provider refused the request ({r}); another target would not help"
                )?;
            }
            FailoverErrorKind::DeadlineExceeded => {
                write!(
                    f,
                    "route {route} ran out of time before any target answered"
                )?;
            }
            FailoverErrorKind::StreamBroken(r) => {
                write!(
                    f,
                    "route {route}: the answer stream broke after it started ({r}); the answer is incomplete"
                )?;
            }
        }
        if !self.trail.0.is_empty() {
            write!(f, " [{}]", self.trail)?;
        }
        if let Some(d) = self.retry_after {
            write!(f, "; retry in {:.1}s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl StdError for FailoverError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.last.as_ref().map(|l| l as &(dyn StdError + 'static))
    }
}
