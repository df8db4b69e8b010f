//! The admin endpoints: breaker control over HTTP, for an operator with the admin key (see
//! [the access table](super::auth)).
//!
//! `POST /v1/failover/breakers/{provider}/{model}` (`model` = `*` for the provider-wide
//! breaker; a model name may contain `/`) with a JSON body:
//!
//! ```json
//! {"action": "force_open", "duration": "10m"}
//! ```
//!
//! | action | effect |
//! |---|---|
//! | `force_open` | rejects every call; after `duration` a half-open probe decides (without one: until another action) |
//! | `disable` | lets every call through and records nothing, for `duration` or until another action |
//! | `metrics_only` | records and reports outcomes, rejects nothing, for `duration` or until another action |
//! | `reset` | closed, counters emptied, no override, no backoff (takes no `duration`) |
//!
//! The answer is 200 with `{"action", "provider", "model", "duration_s", "changed",
//! "breaker"}`, where `breaker` is the breaker as `GET /v1/failover/status` shows it, already
//! in its new state (the state gauge moves at the same moment). An unknown breaker is a 404,
//! a bad action or duration a 400. Every action an admin asks for is logged as an
//! `admin_action` event naming the admin (`[admin] name`) and counted in
//! `llm_failover_admin_actions_total{action, outcome}`.
//!
//! `POST /v1/failover/reload` answers 501 `not_implemented` in this build (counted as
//! `action="reload", outcome="error"`): the config is read at start only, so restart the proxy
//! to apply a changed file.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::auth::{AdminCaller, rejected};
use super::error::ApiError;
use super::handlers::breaker_json;
use crate::telemetry::names::{self, access, admin as field};

/// The body of a breaker action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action: String,
    #[serde(default)]
    duration: Option<String>,
}

/// Emits the `admin_action` event the metrics layer counts.
fn event(
    admin: &str,
    action: &'static str,
    outcome: &'static str,
    target: Option<(&str, &str)>,
    duration: Option<Duration>,
) {
    let (provider, model) = target.unzip();
    tracing::event!(
        name: names::ADMIN_ACTION_EVENT,
        target: names::PROXY_TARGET,
        tracing::Level::WARN,
        { field::ADMIN } = admin,
        { field::ACTION } = action,
        { field::OUTCOME } = outcome,
        { field::PROVIDER } = provider,
        { field::MODEL } = model,
        { field::DURATION } = duration.map(|d| d.as_secs_f64()),
        "admin {admin}: {action} {}: {outcome}",
        target.map(|(p, m)| format!("{p}/{m}")).unwrap_or_default(),
    );
}

fn bad_request(admin: &str, code: &'static str, message: impl Into<String>) -> Response {
    rejected(admin, access::REASON_BAD_REQUEST);
    ApiError::typed(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    )
    .into_response()
}

/// `POST /v1/failover/breakers/{provider}/{*model}`.
pub(super) async fn breaker(
    State(shared): State<Arc<Shared>>,
    Extension(AdminCaller(admin)): Extension<AdminCaller>,
    Path((provider, model)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: ActionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return bad_request(
                &admin,
                "invalid_json",
                format!(
                    "the body must be {{\"action\": \"force_open\" | \"disable\" | \"metrics_only\" | \"reset\", \"duration\": \"10m\"}}: {e}"
                ),
            );
        }
    };
    let Some(action) = [
        field::ACTION_FORCE_OPEN,
        field::ACTION_DISABLE,
        field::ACTION_METRICS_ONLY,
        field::ACTION_RESET,
    ]
    .into_iter()
    .find(|a| *a == body.action) else {
        return bad_request(
            &admin,
            "invalid_action",
            format!(
                "unknown action {:?}; use force_open, disable, metrics_only or reset",
                body.action
            ),
        );
    };
    let target = Some((provider.as_str(), model.as_str()));
    let fail = |status: StatusCode, code: &'static str, message: String| {
        event(&admin, action, field::OUTCOME_ERROR, target, None);
        ApiError::typed(status, "invalid_request_error", code, message).into_response()
    };
    let duration = match body.duration.as_deref() {
        None => None,
        Some(_) if action == field::ACTION_RESET => {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_duration",
                "reset takes no duration; leave it out".into(),
            );
        }
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_duration",
                    "duration must be longer than zero; leave it out to hold until another action"
                        .into(),
                );
            }
            Err(e) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_duration",
                    format!("{e} in {text:?}; write durations like \"30s\" or \"10m\""),
                );
            }
        },
    };
    let Some(control) = shared.registry.control(&provider, &model) else {
        let known: Vec<String> = shared
            .registry
            .iter()
            .map(|b| format!("{}/{}", b.provider(), b.model()))
            .collect();
        return fail(
            StatusCode::NOT_FOUND,
            "breaker_not_found",
            format!(
                "no breaker {provider}/{model}; the breakers are {}",
                known.join(", ")
            ),
        );
    };
    let transition = match action {
        field::ACTION_FORCE_OPEN => control.force_open(duration),
        field::ACTION_DISABLE => control.disable(duration),
        field::ACTION_METRICS_ONLY => control.metrics_only(duration),
        _ => control.reset(),
    };
    event(&admin, action, field::OUTCOME_OK, target, duration);
    let Some(breaker) = shared.registry.breaker(&provider, &model) else {
        // Found a moment ago; breakers are never removed.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    axum::Json(json!({
        "action": action,
        "provider": provider,
        "model": model,
        "duration_s": duration.map(|d| d.as_secs_f64()),
        "changed": transition.is_some(),
        "breaker": breaker_json(breaker),
    }))
    .into_response()
}

/// `POST /v1/failover/reload`: not in this build.
pub(super) async fn reload(Extension(AdminCaller(admin)): Extension<AdminCaller>) -> Response {
    event(
        &admin,
        field::ACTION_RELOAD,
        field::OUTCOME_ERROR,
        None,
        None,
    );
    ApiError::typed(
        StatusCode::NOT_IMPLEMENTED,
        "server_error",
        "not_implemented",
        "live reload is not available in this build: the config is read at start, so restart \
         the proxy (SIGTERM, then serve again) to apply a changed file",
    )
    .into_response()
}
