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
//! `POST /v1/failover/reload` (no body needed) reads the configuration file again and swaps it
//! in (see the `reload` module, `src/proxy/reload.rs`). The answer is 200 with `{"reloaded":
//! true, "routes", "breakers": {"kept", "added", "removed", "reset"}, "restart_required",
//! "warnings"}`; a file that is rejected gets a 422 `invalid_config` whose message is the
//! `file:line:column: field: message` error `check` prints, and the running configuration
//! stays. Both are counted as `action="reload"` in `llm_failover_admin_actions_total`.

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
        "admin {admin}: {action}{}: {outcome}",
        target.map(|(p, m)| format!(" {p}/{m}")).unwrap_or_default(),
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

/// `POST /v1/failover/reload`.
pub(super) async fn reload(
    State(shared): State<Arc<Shared>>,
    Extension(AdminCaller(admin)): Extension<AdminCaller>,
) -> Response {
    let fail = |status: StatusCode, code: &'static str, message: String| {
        event(
            &admin,
            field::ACTION_RELOAD,
            field::OUTCOME_ERROR,
            None,
            None,
        );
        ApiError::typed(status, "invalid_request_error", code, message).into_response()
    };
    let Some(proxy) = super::reload::proxy_of(&shared) else {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the proxy is shutting down; nothing was reloaded".into(),
        );
    };
    // Reading the file and building HTTP clients blocks; its events go to this subscriber.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let reload = move || tracing::dispatcher::with_default(&dispatch, || proxy.reload());
    match tokio::task::spawn_blocking(reload).await {
        Ok(Ok(done)) => {
            event(&admin, field::ACTION_RELOAD, field::OUTCOME_OK, None, None);
            axum::Json(json!({
                "reloaded": true,
                "routes": done.routes,
                "breakers": {
                    "kept": done.kept,
                    "added": done.added,
                    "removed": done.removed,
                    "reset": done.reset,
                },
                "restart_required": done.restart_required,
                "warnings": done.warnings,
            }))
            .into_response()
        }
        Ok(Err(e)) => fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            e.to_string(),
        ),
        Err(_) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            "the reload stopped unexpectedly; the running configuration stays".into(),
        ),
    }
}
