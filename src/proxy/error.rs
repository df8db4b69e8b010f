//! What the proxy answers when it cannot answer: OpenAI-style error bodies with the status
//! that says what happened, for client mistakes and for routes that gave no answer.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::headers;
use crate::Reason;

/// The `x-should-retry` header the official OpenAI and Anthropic SDKs honour.
pub(super) const SHOULD_RETRY: &str = "x-should-retry";

/// `retry-after-ms`: the wait in milliseconds, read before `Retry-After` by those SDKs.
pub(super) const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The longest wait worth a client's retry: past it, the proxy says not to retry.
pub(super) const RETRY_HORIZON: Duration = Duration::from_secs(60);
use crate::chain::{AttemptOutcome, FailoverError, FailoverErrorKind, Trail};

/// An error answer: status, OpenAI-style body, and the headers that go with it.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    body: Value,
    retry_after: Option<Duration>,
    trail: Option<(usize, String)>,
    /// A client's request for a route it may not use (answered like an unknown route).
    forbidden: bool,
    /// `x-should-retry`, when the proxy knows.
    should_retry: Option<bool>,
}

impl ApiError {
    /// A mistake in the client's request: nothing was sent upstream.
    pub(super) fn client(
        status: StatusCode,
        code: &'static str,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::own(status, "invalid_request_error", code, param, message.into())
    }

    /// An answer of the proxy's own with an OpenAI error `type` and `code` (401, 403, 429,
    /// admin endpoints): nothing was sent upstream.
    pub(super) fn typed(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::own(status, kind, code, None, message.into())
    }

    /// The OpenAI error document of an answer the proxy makes itself.
    fn own(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        param: Option<&str>,
        message: String,
    ) -> Self {
        Self {
            status,
            body: json!({"error": {
                "message": message,
                "type": kind,
                "param": param,
                "code": code,
            }}),
            retry_after: None,
            trail: None,
            forbidden: false,
            should_retry: None,
        }
    }

    /// Adds `Retry-After` (whole seconds, rounded up).
    pub(super) fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Marks a route the client may not use (see [`Self::is_forbidden`]).
    pub(super) fn forbidden(mut self, forbidden: bool) -> Self {
        self.forbidden = forbidden;
        self
    }

    /// Whether this answers a request for a route the client may not use.
    pub(super) fn is_forbidden(&self) -> bool {
        self.forbidden
    }

    /// The HTTP status.
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    /// The proxy is shutting down and the grace period for this request has passed.
    pub(super) fn shutting_down() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: shutdown_body(),
            retry_after: Some(Duration::from_secs(1)),
            trail: None,
            forbidden: false,
            should_retry: None,
        }
    }

    /// A route gave no answer. `scrub` removes the providers' keys from upstream text.
    pub(super) fn failover(e: &FailoverError, scrub: &dyn Fn(&str) -> String) -> Self {
        Self {
            status: status_of(e),
            body: failover_body(e, scrub),
            retry_after: e.retry_after(),
            trail: Some((e.trail().attempts().len(), e.trail().to_string())),
            forbidden: false,
            should_retry: Some(should_retry(e)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        let h = resp.headers_mut();
        if let Some(wait) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_seconds(wait)));
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            h.insert(RETRY_AFTER_MS, HeaderValue::from(ms));
        }
        if let Some(retry) = self.should_retry {
            h.insert(
                SHOULD_RETRY,
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        if let Some((attempts, trail)) = self.trail {
            h.insert(headers::ATTEMPTS, HeaderValue::from(attempts));
            if let Ok(v) = HeaderValue::from_str(&trail) {
                h.insert(headers::TRAIL, v);
            }
        }
        resp
    }
}

/// Whole seconds, rounded up, at least 1: `Retry-After: 0` invites a retry storm.
pub(super) fn retry_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

/// Whether a client's retry of a route that gave no answer can succeed soon. The proxy has
/// already run the whole chain (its retries, its failovers), so a client that retries at
/// once replays all of it: only a known wait within [`RETRY_HORIZON`] (a breaker that
/// re-admits, a provider's Retry-After, a place that frees up on a target at its limit) is
/// worth a retry, after that wait. A failure returned as it is, a spent retry budget, a
/// broken stream, the deadline, or no known wait: `false`.
fn should_retry(e: &FailoverError) -> bool {
    let soon = e.retry_after().is_some_and(|w| w <= RETRY_HORIZON);
    match e.kind() {
        FailoverErrorKind::Exhausted
        | FailoverErrorKind::AllOpen
        | FailoverErrorKind::Saturated => soon && !e.trail().budget_exhausted(),
        FailoverErrorKind::Returned(_)
        | FailoverErrorKind::DeadlineExceeded
        | FailoverErrorKind::StreamBroken(_) => false,
    }
}

/// The status for a route that gave no answer.
fn status_of(e: &FailoverError) -> StatusCode {
    match e.kind() {
        FailoverErrorKind::Returned(Reason::Cancelled) => {
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
        }
        FailoverErrorKind::Returned(_) => e
            .last_failure()
            .and_then(|f| f.status())
            .filter(|s| (400..500).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST),
        FailoverErrorKind::AllOpen | FailoverErrorKind::Saturated => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        FailoverErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // No target could carry the request: it asked for what none of their protocols has.
        FailoverErrorKind::Exhausted if all_ineligible(e) => StatusCode::BAD_REQUEST,
        FailoverErrorKind::Exhausted => match e.reason() {
            Some(Reason::RateLimit) => StatusCode::TOO_MANY_REQUESTS,
            Some(Reason::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Some(Reason::Overloaded) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        },
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// True when every attempt was skipped as ineligible (see
/// [`AttemptFailure::ineligible`](crate::chain::AttemptFailure::ineligible)).
fn all_ineligible(e: &FailoverError) -> bool {
    let attempts = e.trail().attempts();
    !attempts.is_empty()
        && attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::Ineligible)
}

/// The `failover` member of an error body: the route, the reason, each attempt.
fn details(e: &FailoverError) -> Value {
    json!({
        "route": e.route(),
        "reason": e.reason().map(Reason::as_str),
        "retry_after_ms": e.retry_after().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "attempts": attempts(e.trail()),
    })
}

/// Each attempt of a trail as JSON.
pub(super) fn attempts(trail: &Trail) -> Vec<Value> {
    trail
        .attempts()
        .iter()
        .map(|a| {
            let (outcome, reason) = match a.outcome {
                AttemptOutcome::Ok => ("ok", None),
                AttemptOutcome::Failed(r) => ("failed", Some(r)),
                AttemptOutcome::Rejected(r) => ("breaker_open", r),
                AttemptOutcome::Cancelled => ("cancelled", None),
                AttemptOutcome::Shed(crate::chain::ShedCause::RetryBudget) => {
                    ("budget_exhausted", None)
                }
                AttemptOutcome::Shed(_) => ("shed", None),
                AttemptOutcome::Ineligible => ("ineligible", None),
            };
            json!({
                "provider": &*a.provider,
                "model": &*a.model,
                "outcome": outcome,
                "reason": reason.map(Reason::as_str),
                "status": a.status,
                "duration_ms": u64::try_from(a.duration.as_millis()).unwrap_or(u64::MAX),
                "retry_after_ms": a.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            })
        })
        .collect()
}

/// The body for a route that gave no answer. A failure returned as it is (a request no
/// target can serve) keeps the provider's own error object, so clients that read its `code`
/// (`context_length_exceeded`, `content_filter`) keep working.
pub(super) fn failover_body(e: &FailoverError, scrub: &dyn Fn(&str) -> String) -> Value {
    let reason = e.reason().map_or("unknown", Reason::as_str);
    let upstream = match e.kind() {
        FailoverErrorKind::Returned(_) => e
            .last_failure()
            .and_then(|f| f.response())
            .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
            .and_then(|v| v.get("error").filter(|e| e.is_object()).cloned()),
        _ => None,
    };
    let mut error = match upstream {
        Some(mut obj) => {
            if let Some(m) = obj.get("message").and_then(Value::as_str) {
                let m = scrub(m);
                obj["message"] = Value::from(m);
            }
            obj
        }
        None => json!({
            "message": scrub(&message(e)),
            "type": "failover_error",
            "param": null,
            "code": reason,
        }),
    };
    error["failover"] = details(e);
    json!({ "error": error })
}

/// What the error says: the route's error, and for a target that could not carry the
/// request, what it lacked.
fn message(e: &FailoverError) -> String {
    match e.last_failure().filter(|f| f.is_ineligible()) {
        Some(f) => match f.source_error() {
            Some(why) => format!("{e}; {why}"),
            None => e.to_string(),
        },
        None => e.to_string(),
    }
}

/// The body for a request cut short by shutdown.
pub(super) fn shutdown_body() -> Value {
    json!({"error": {
        "message": "the proxy is shutting down and this request ran past its grace period; retry it",
        "type": "server_error",
        "param": null,
        "code": "shutting_down",
    }})
}

/// Anthropic's error types, which its SDKs read (with the status) to raise their typed errors.
const ANTHROPIC_TYPES: [&str; 9] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
];

/// An error answer of the proxy's (OpenAI-shaped: `{"error": {...}}`) in Anthropic's shape,
/// `{"type": "error", "error": {"type", "message", ...}}`, for the Messages endpoint. The
/// error object keeps its other members (`failover`, `code`), the `type` is Anthropic's
/// (kept if it is one already, else the status's), and an overloaded route's 503 becomes
/// Anthropic's 529, which its SDKs raise as `OverloadedError`.
pub(super) fn anthropic_shape(status: StatusCode, body: &Value) -> (StatusCode, Value) {
    let mut error = match body.get("error") {
        Some(Value::Object(e)) => e.clone(),
        _ => serde_json::Map::new(),
    };
    if body["type"] == "error" {
        // Already Anthropic's (an upstream's own error object).
        return (status, body.clone());
    }
    let overloaded = error.get("code").and_then(Value::as_str) == Some(Reason::Overloaded.as_str());
    let status = if status == StatusCode::SERVICE_UNAVAILABLE && overloaded {
        StatusCode::from_u16(529).unwrap_or(status)
    } else {
        status
    };
    // The statuses Anthropic gives one type each decide it; for the others an Anthropic
    // type the error already has stays (an upstream's own), else the status's.
    let own = error
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| ANTHROPIC_TYPES.contains(t))
        .map(str::to_owned);
    let kind = match status.as_u16() {
        401 => "authentication_error".to_owned(),
        403 => "permission_error".to_owned(),
        404 => "not_found_error".to_owned(),
        413 => "request_too_large".to_owned(),
        429 => "rate_limit_error".to_owned(),
        529 => "overloaded_error".to_owned(),
        code => own.unwrap_or_else(|| {
            match code {
                503 => "overloaded_error",
                504 => "timeout_error",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            }
            .to_owned()
        }),
    };
    error.insert("type".into(), Value::from(kind));
    error.entry("message").or_insert_with(|| Value::from(""));
    error.remove("param");
    (status, json!({"type": "error", "error": error}))
}

/// Turns the proxy's own error answers on the Messages endpoint (its checks, the key gate,
/// a route that gave no answer) into Anthropic's shape ([`anthropic_shape`]). Answers that
/// are not JSON errors pass as they are.
pub(super) async fn anthropic_errors(resp: Response) -> Response {
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status().is_success() || !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // The proxy's own error bodies are small; an upstream's kept error object is bounded by
    // what the upstream sent (already read whole).
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let (status, shaped) = anthropic_shape(parts.status, &value);
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(shaped.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_seconds(Duration::ZERO), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_seconds(Duration::from_millis(2001)), 3);
    }
}
