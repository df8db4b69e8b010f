//! The endpoints: requests are checked here, before anything is sent upstream.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::access_log::AccessLog;
use super::auth::{Caller, rejected};
use super::error::ApiError;
use super::{Secret, Shared, Upstream, headers, sse};
use crate::Reason;
use crate::breaker::Breaker;
use crate::chain::{Answer, FailoverError, FailoverStream};
use crate::chain::{AttemptContext, AttemptFailure, Route, Trail};
use crate::protocol::Api;
use crate::protocol::anthropic_messages::{self, MessagesResume};
use crate::protocol::openai_chat::{self, ChatResume, Client, Endpoint, Prefill};
use crate::protocol::openai_embeddings::{self, BadEmbeddings};
use crate::protocol::openai_responses;
use crate::telemetry::names::access;

impl Upstream {
    /// Bounds an attempt by the provider's own attempt timeout, if it has one.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, AttemptFailure>>,
    ) -> Result<T, AttemptFailure> {
        match self.attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, fut)
                .await
                .unwrap_or_else(|_| Err(AttemptFailure::new(Reason::Timeout))),
            None => fut.await,
        }
    }

    /// The endpoint for one request: the provider's own key, or the caller's when this
    /// provider forwards it (`forward_client_key`) and the caller sent one.
    fn endpoint_for(&self, caller_key: Option<&Secret>) -> std::borrow::Cow<'_, Endpoint> {
        match caller_key.filter(|_| self.forward_client_key) {
            Some(key) => {
                let e = self.bare.clone();
                std::borrow::Cow::Owned(match &self.api_key_query {
                    Some(param) => e.api_key_query(param, &*key.0),
                    None => e.api_key(&*key.0),
                })
            }
            None => std::borrow::Cow::Borrowed(&self.endpoint),
        }
    }

    /// One attempt on this provider: `call` with its client and the endpoint for the caller
    /// (see [`endpoint_for`](Self::endpoint_for)), bounded by the attempt timeout.
    async fn attempt<T>(
        &self,
        caller_key: Option<&Secret>,
        call: impl AsyncFnOnce(&Client, &Endpoint) -> Result<T, AttemptFailure>,
    ) -> Result<T, AttemptFailure> {
        let endpoint = self.endpoint_for(caller_key);
        self.bounded(call(&self.client, &endpoint)).await
    }

    /// Whether this provider stores a Responses answer to `request`: a Responses provider,
    /// unless the request says `store: false`. A translated answer is stored nowhere.
    fn stores(&self, request: &Value) -> bool {
        self.endpoint.api_kind() == Api::OpenAiResponses && request["store"] != false
    }
}

/// What one client-facing protocol adds to the common request handling ([`serve`]): its
/// own checks of the body, its calls and its stream.
trait Served {
    /// The checks of the body beyond `model` and `stream`.
    fn check(body: &serde_json::Map<String, Value>) -> Result<(), ApiError>;

    /// Whether the route can serve this endpoint at all, checked before anything is sent.
    /// Default: every route can.
    fn admit(_route: &Route) -> Result<(), ApiError> {
        Ok(())
    }

    /// The request's tokens, estimated, for rate-limited routes.
    fn estimate(body: &Value) -> u64;

    /// The tokens an answer says it used.
    fn usage(answer: &Value) -> Option<u64>;

    /// One attempt of a non-streaming request.
    fn call(
        shared: Arc<Shared>,
        ctx: AttemptContext,
        request: Call,
    ) -> impl Future<Output = Result<Value, AttemptFailure>> + Send;

    /// The streamed answer to the request, or the error response that says why there is none.
    fn stream(
        shared: &Arc<Shared>,
        tokens: u64,
        request: Call,
        out: Out,
    ) -> impl Future<Output = Response> + Send;
}

/// What an attempt of a checked request needs: its route, body, the caller's key and headers.
#[derive(Clone)]
struct Call {
    route: Arc<Route>,
    body: Arc<Value>,
    key: Option<Secret>,
    headers: Arc<HeaderMap>,
}

/// How a streamed answer goes out: the shutdown signal, and the scrubber of upstream text.
struct Out {
    cut: watch::Receiver<bool>,
    scrub: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// The request's access log, written when the stream ends.
    log: AccessLog,
}

/// The response to a stream request: the route's stream as server-sent events once it has
/// opened, or the error that says why it did not.
async fn streamed<C, S>(
    opening: impl Future<Output = Result<Answer<FailoverStream<C, S>>, FailoverError>>,
    mut out: Out,
) -> Response
where
    C: sse::Wire + Unpin + Send + 'static,
    S: futures_core::Stream<Item = Result<C, AttemptFailure>> + Unpin + Send + 'static,
{
    let answer = tokio::select! {
        r = opening => r,
        Ok(_) = out.cut.wait_for(|c| *c) => return ApiError::shutting_down().into_response(),
    };
    match answer {
        Ok(a) => {
            let mut resp = Response::new(Body::from_stream(sse::body(
                a.value, out.cut, out.scrub, out.log,
            )));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            answer_headers(h, &a.provider, &a.model, &a.trail);
            resp
        }
        Err(e) => ApiError::failover(&e, &*out.scrub).into_response(),
    }
}

impl Shared {
    /// `text` with every provider key replaced: upstream error text may quote the key.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for key in self.upstreams.values().filter_map(|u| u.key.as_ref()) {
            let key = &*key.0;
            if !key.is_empty() && out.contains(key) {
                out = out.replace(key, "<redacted>");
            }
        }
        out
    }

    /// Holds an embedding model to one vector length: the length asked for (`dimensions`),
    /// else the length of its first answer in this generation. Another length is the
    /// attempt's failure, so a search index never gets vectors it cannot compare.
    fn same_dimensions(
        &self,
        model: &str,
        request: &Value,
        found: usize,
    ) -> Result<(), AttemptFailure> {
        let asked = request.get("dimensions").and_then(Value::as_u64);
        let expected = match asked.and_then(|n| usize::try_from(n).ok()) {
            Some(n) => n,
            None => *self
                .dimensions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(model.to_owned())
                .or_insert(found),
        };
        if expected == found {
            Ok(())
        } else {
            Err(BadEmbeddings::Dimensions { expected, found }.into_failure())
        }
    }

    fn upstream(&self, ctx: &AttemptContext) -> Result<Upstream, AttemptFailure> {
        // Routes are built from the same configuration as the upstreams: every target's
        // provider is here. A miss would be a bug; it fails the attempt, not the process.
        self.upstreams
            .get(ctx.provider())
            .cloned()
            .ok_or_else(|| AttemptFailure::new(Reason::Unknown))
    }
}

/// The headers that say who answered.
fn answer_headers(h: &mut HeaderMap, provider: &str, model: &str, trail: &Trail) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        h.insert(headers::PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(model) {
        h.insert(headers::MODEL, v);
    }
    h.insert(headers::ATTEMPTS, HeaderValue::from(trail.attempts().len()));
    if let Ok(v) = HeaderValue::from_str(&trail.to_string()) {
        h.insert(headers::TRAIL, v);
    }
}

/// A checked request: its route, the body to forward, and whether it streams.
struct Checked {
    route: Arc<Route>,
    body: Arc<Value>,
    stream: bool,
}

/// Reads and checks the body of a request to `P`'s endpoint; every problem is a 4xx.
async fn read_request<P: Served>(
    shared: &Shared,
    caller: &Caller,
    req: Request,
) -> Result<Checked, ApiError> {
    let limit = shared.max_body_bytes;
    let too_large = || {
        ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            None,
            format!(
                "the request body is larger than this proxy accepts ({limit} bytes; server.max_body_bytes)"
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(
        shared.body_read_timeout,
        axum::body::to_bytes(req.into_body(), limit),
    )
    .await;
    let Ok(read) = read else {
        return Err(ApiError::client(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            None,
            format!(
                "the request body did not arrive within {} (server.body_read_timeout)",
                humantime::format_duration(shared.body_read_timeout)
            ),
        ));
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if over {
                too_large()
            } else {
                ApiError::client(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    None,
                    "the request body could not be read to its end",
                )
            });
        }
    };
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
            "the request body must be a JSON object",
        ));
    };
    let names = || {
        shared
            .routes
            .iter()
            .map(|r| r.name())
            .filter(|r| caller.client.as_ref().is_none_or(|c| c.may_use(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        Some(_) => {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                Some("model"),
                "`model` must be a non-empty string naming a route",
            ));
        }
        None => {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "missing_required_parameter",
                Some("model"),
                format!("`model` is required; this proxy serves: {}", names()),
            ));
        }
    };
    P::check(obj)?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                Some("stream"),
                "`stream` must be true or false",
            ));
        }
    };
    let allowed = shared.by_name.get(model.as_str()).copied().filter(|_| {
        caller
            .client
            .as_ref()
            .is_none_or(|c| c.may_use(model.as_str()))
    });
    let Some(i) = allowed else {
        // A route the client may not use reads exactly like one that does not exist (see
        // the auth module): no other route's existence leaks.
        let forbidden = shared.by_name.contains_key(model.as_str());
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            "model_not_found",
            Some("model"),
            format!(
                "the model `{model}` does not exist or you do not have access to it; you may use: {}",
                names()
            ),
        )
        .forbidden(forbidden));
    };
    let route = Arc::clone(&shared.routes[i]);
    Ok(Checked {
        route,
        body: Arc::new(body),
        stream,
    })
}

/// `messages` must be a non-empty array.
fn check_messages(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    if body
        .get("messages")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return Err(ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            Some("messages"),
            "`messages` must be a non-empty array of messages",
        ));
    }
    Ok(())
}

/// The OpenAI chat completions endpoint.
struct Chat;

impl Served for Chat {
    fn check(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
        check_messages(body)
    }

    fn estimate(body: &Value) -> u64 {
        openai_chat::estimate_tokens(body)
    }

    fn usage(answer: &Value) -> Option<u64> {
        openai_chat::usage_tokens(answer)
    }

    async fn call(
        shared: Arc<Shared>,
        ctx: AttemptContext,
        call: Call,
    ) -> Result<Value, AttemptFailure> {
        let up = shared.upstream(&ctx)?;
        up.attempt(call.key.as_ref(), async |c, e| {
            c.chat(e, ctx.model(), &call.body).await
        })
        .await
    }

    async fn stream(shared: &Arc<Shared>, tokens: u64, call: Call, out: Out) -> Response {
        let open = {
            let (shared, key) = (Arc::clone(shared), call.key.clone());
            move |ctx: AttemptContext, body: Arc<Value>| {
                let (shared, key) = (Arc::clone(&shared), key.clone());
                async move {
                    shared
                        .upstream(&ctx)?
                        .attempt(key.as_ref(), async |c, e| {
                            c.chat_stream(e, ctx.model(), &body).await
                        })
                        .await
                }
            }
        };
        let resume = ChatResume::new(Arc::clone(&call.body), prefill(shared), open.clone());
        let opening =
            call.route
                .resumable_stream(tokens, |ctx| open(ctx, Arc::clone(&call.body)), resume);
        streamed(opening, out).await
    }
}

/// What each provider does with an assistant prefill: a continuation goes only to those that
/// take one.
fn prefill(shared: &Arc<Shared>) -> impl Fn(&str) -> Prefill + Send + 'static {
    let shared = Arc::clone(shared);
    move |provider: &str| {
        shared
            .upstreams
            .get(provider)
            .map_or(Prefill::None, |u| u.endpoint.prefill_mode())
    }
}

/// The Anthropic Messages endpoint.
struct Messages;

impl Served for Messages {
    fn check(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
        check_messages(body)?;
        match body.get("max_tokens") {
            Some(n) if n.as_u64().is_some_and(|n| n > 0) => Ok(()),
            Some(_) => Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                Some("max_tokens"),
                "`max_tokens` must be a positive integer",
            )),
            None => Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "missing_required_parameter",
                Some("max_tokens"),
                "`max_tokens` is required",
            )),
        }
    }

    fn estimate(body: &Value) -> u64 {
        anthropic_messages::estimate_tokens(body)
    }

    fn usage(answer: &Value) -> Option<u64> {
        anthropic_messages::usage_tokens(answer)
    }

    async fn call(
        shared: Arc<Shared>,
        ctx: AttemptContext,
        call: Call,
    ) -> Result<Value, AttemptFailure> {
        let up = shared.upstream(&ctx)?;
        up.attempt(call.key.as_ref(), async |c, e| {
            c.messages(e, ctx.model(), &call.body, &call.headers).await
        })
        .await
    }

    async fn stream(shared: &Arc<Shared>, tokens: u64, call: Call, out: Out) -> Response {
        let open = {
            let (shared, call) = (Arc::clone(shared), call.clone());
            move |ctx: AttemptContext, body: Arc<Value>| {
                let (shared, call) = (Arc::clone(&shared), call.clone());
                async move {
                    shared
                        .upstream(&ctx)?
                        .attempt(call.key.as_ref(), async |c, e| {
                            c.messages_stream(e, ctx.model(), &body, &call.headers)
                                .await
                        })
                        .await
                }
            }
        };
        let resume = MessagesResume::new(Arc::clone(&call.body), prefill(shared), open.clone());
        let opening =
            call.route
                .resumable_stream(tokens, |ctx| open(ctx, Arc::clone(&call.body)), resume);
        streamed(opening, out).await
    }
}

/// Can `route` count tokens? Only when some target's provider speaks Anthropic Messages
/// (the others are skipped as ineligible).
pub(super) fn counts_tokens(shared: &Shared, route: &Route) -> bool {
    route
        .targets()
        .chain(route.larger_context_targets())
        .filter_map(|(provider, _)| shared.upstreams.get(provider))
        .any(|u| u.endpoint.api_kind() == Api::AnthropicMessages)
}

/// Anthropic's token counting, `POST /v1/messages/count_tokens`: a Messages request without
/// `max_tokens`, through the route's chain like any request. Only its Anthropic targets
/// count; the others are skipped as ineligible, so a route without one gets a 400 that says
/// so. Counting uses no tokens: none are estimated or recorded.
struct CountTokens;

impl Served for CountTokens {
    fn check(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
        check_messages(body)
    }

    fn estimate(_: &Value) -> u64 {
        0
    }

    fn usage(_: &Value) -> Option<u64> {
        None
    }

    async fn call(
        shared: Arc<Shared>,
        ctx: AttemptContext,
        call: Call,
    ) -> Result<Value, AttemptFailure> {
        let up = shared.upstream(&ctx)?;
        up.attempt(call.key.as_ref(), async |c, e| {
            c.count_tokens(e, ctx.model(), &call.body, &call.headers)
                .await
        })
        .await
    }

    async fn stream(_: &Arc<Shared>, _: u64, _: Call, _: Out) -> Response {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("stream"),
            "token counts are not streamed; leave `stream` out or set it to false",
        )
        .into_response()
    }
}

/// Can `route` serve embeddings? Only when every target names one upstream model; else the
/// targets, `provider/model`.
pub(super) fn embeddable(route: &Route) -> Result<(), Vec<String>> {
    let all: Vec<(&str, &str)> = route
        .targets()
        .chain(route.larger_context_targets())
        .collect();
    if all.windows(2).all(|w| w[0].1 == w[1].1) {
        Ok(())
    } else {
        Err(all.iter().map(|(p, m)| format!("{p}/{m}")).collect())
    }
}

/// The OpenAI embeddings endpoint: failover between targets of one model only.
struct Embed;

impl Served for Embed {
    fn check(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
        let usable = match body.get("input") {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(items)) => !items.is_empty(),
            _ => false,
        };
        if usable {
            Ok(())
        } else {
            Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                Some("input"),
                "`input` must be a non-empty string or a non-empty array of strings or token ids",
            ))
        }
    }

    fn admit(route: &Route) -> Result<(), ApiError> {
        embeddable(route).map_err(|targets| {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "route_not_embeddable",
                Some("model"),
                format!(
                    "the route `{}` cannot serve embeddings: its targets name different upstream models ({}), and vectors of two models cannot be compared, so failing over between them would corrupt a search index; use a route whose targets all name the same model",
                    route.name(),
                    targets.join(", ")
                ),
            )
        })
    }

    fn estimate(body: &Value) -> u64 {
        openai_embeddings::estimate_tokens(body)
    }

    fn usage(answer: &Value) -> Option<u64> {
        openai_chat::usage_tokens(answer)
    }

    async fn call(
        shared: Arc<Shared>,
        ctx: AttemptContext,
        call: Call,
    ) -> Result<Value, AttemptFailure> {
        let up = shared.upstream(&ctx)?;
        let answer = up
            .attempt(call.key.as_ref(), async |c, e| {
                c.embeddings(e, ctx.model(), &call.body).await
            })
            .await?;
        shared.same_dimensions(ctx.model(), &call.body, answer.dimensions())?;
        Ok(answer.into_answer())
    }

    async fn stream(_: &Arc<Shared>, _: u64, _: Call, _: Out) -> Response {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("stream"),
            "embeddings are not streamed; leave `stream` out or set it to false",
        )
        .into_response()
    }
}

/// Why a Responses request that continues a stored response cannot go to a target: the
/// response is held by another provider, or by none.
#[derive(Debug, thiserror::Error)]
enum NotHeld {
    #[error(
        "previous_response_id `{id}` names a response stored by provider `{holder}`; only it holds that conversation, so no other target may answer it"
    )]
    Elsewhere { id: String, holder: Arc<str> },
    #[error(
        "previous_response_id `{id}` names a response that provider `{holder}` answered without storing it (translated from another API, or `store: false`), so no provider holds that conversation; send the whole conversation as `input` instead"
    )]
    Nowhere { id: String, holder: Arc<str> },
}

impl Shared {
    /// A request that continues a stored response goes only to the provider that answered
    /// it, when this process relayed that answer (see [`stored`](super::stored)).
    fn held_by(&self, ctx: &AttemptContext, request: &Value) -> Result<(), AttemptFailure> {
        let Some(id) = request["previous_response_id"].as_str() else {
            return Ok(());
        };
        match self.stored.holder(id) {
            Some(h) if !h.kept => Err(AttemptFailure::ineligible(NotHeld::Nowhere {
                id: id.to_owned(),
                holder: h.provider,
            })),
            Some(h) if &*h.provider != ctx.provider() => {
                Err(AttemptFailure::ineligible(NotHeld::Elsewhere {
                    id: id.to_owned(),
                    holder: h.provider,
                }))
            }
            _ => Ok(()),
        }
    }
}

/// The OpenAI Responses endpoint. Not resumed: a Responses stream that breaks after its
/// first token ends with an `error` event.
struct Responses;

impl Served for Responses {
    fn check(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
        let continues = ["previous_response_id", "conversation", "prompt"]
            .iter()
            .any(|k| body.get(*k).is_some_and(|v| !v.is_null()));
        match body.get("input") {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::Array(items)) if !items.is_empty() => {}
            None | Some(Value::Null) if continues => {}
            Some(Value::String(_) | Value::Array(_)) if continues => {}
            _ => {
                return Err(ApiError::client(
                    StatusCode::BAD_REQUEST,
                    "invalid_type",
                    Some("input"),
                    "`input` must be a non-empty string or a non-empty array of input items",
                ));
            }
        }
        if body
            .get("max_output_tokens")
            .is_some_and(|n| !n.is_null() && n.as_u64().is_none_or(|n| n == 0))
        {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                Some("max_output_tokens"),
                "`max_output_tokens` must be a positive integer",
            ));
        }
        if body
            .get("instructions")
            .is_some_and(|v| !v.is_null() && !v.is_string())
        {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                Some("instructions"),
                "`instructions` must be a string",
            ));
        }
        Ok(())
    }

    fn estimate(body: &Value) -> u64 {
        openai_responses::estimate_tokens(body)
    }

    fn usage(answer: &Value) -> Option<u64> {
        openai_responses::usage_tokens(answer)
    }

    async fn call(
        shared: Arc<Shared>,
        ctx: AttemptContext,
        call: Call,
    ) -> Result<Value, AttemptFailure> {
        shared.held_by(&ctx, &call.body)?;
        let up = shared.upstream(&ctx)?;
        let answer = up
            .attempt(call.key.as_ref(), async |c, e| {
                c.responses(e, ctx.model(), &call.body).await
            })
            .await?;
        if let Some(id) = answer["id"].as_str() {
            shared
                .stored
                .remember(id, ctx.provider(), up.stores(&call.body));
        }
        Ok(answer)
    }

    async fn stream(shared: &Arc<Shared>, tokens: u64, call: Call, out: Out) -> Response {
        use futures_util::StreamExt as _;
        let open = |ctx: AttemptContext| {
            let (shared, call) = (Arc::clone(shared), call.clone());
            async move {
                shared.held_by(&ctx, &call.body)?;
                let up = shared.upstream(&ctx)?;
                let kept = up.stores(&call.body);
                let stream = up
                    .attempt(call.key.as_ref(), async |c, e| {
                        c.responses_stream(e, ctx.model(), &call.body).await
                    })
                    .await?;
                // The first chunk holds `response.created`, with the response's id.
                let provider = ctx.provider().to_owned();
                Ok(stream.inspect(move |chunk| {
                    if let Some(id) = chunk.as_ref().ok().and_then(|c| c.response_id()) {
                        shared.stored.remember(&id, &provider, kept);
                    }
                }))
            }
        };
        streamed(call.route.stream_with_tokens(tokens, open), out).await
    }
}

/// `POST /v1/responses`.
pub(super) async fn responses(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    serve::<Responses>(shared, caller, req).await
}

/// `POST /v1/embeddings`.
pub(super) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    serve::<Embed>(shared, caller, req).await
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    serve::<Chat>(shared, caller, req).await
}

/// `POST /v1/messages` (its errors are put in Anthropic's shape by
/// [`anthropic_errors`](super::error::anthropic_errors)).
pub(super) async fn messages(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    serve::<Messages>(shared, caller, req).await
}

/// `POST /v1/messages/count_tokens` (its errors in Anthropic's shape, as for
/// [`messages`]).
pub(super) async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    serve::<CountTokens>(shared, caller, req).await
}

/// One request to `P`'s endpoint, inside its access log's span, which writes its line.
async fn serve<P: Served>(shared: Arc<Shared>, caller: Caller, req: Request) -> Response {
    use tracing::Instrument as _;
    let log = AccessLog::start(&caller, req.uri().path());
    let resp = respond::<P>(shared, caller, req, &log)
        .instrument(log.span())
        .await;
    let stream = resp.headers().get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static("text/event-stream"));
    log.answered(resp.status().as_u16(), resp.headers(), stream);
    resp
}

/// One request to `P`'s endpoint: checked, sent through its route, answered.
async fn respond<P: Served>(
    shared: Arc<Shared>,
    caller: Caller,
    req: Request,
    log: &AccessLog,
) -> Response {
    let headers = Arc::new(req.headers().clone());
    let chat = match read_request::<P>(&shared, &caller, req).await {
        Ok(c) => c,
        Err(e) => {
            let reason = if e.is_forbidden() {
                access::REASON_FORBIDDEN
            } else {
                match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => access::REASON_TOO_LARGE,
                    StatusCode::REQUEST_TIMEOUT => access::REASON_TIMEOUT,
                    _ => access::REASON_BAD_REQUEST,
                }
            };
            rejected(caller.label(), reason);
            return e.into_response();
        }
    };
    log.route(chat.route.name());
    let key = caller.key.clone();
    // Upstream text may quote a forwarded key: scrub it with the providers' own.
    let scrub = {
        let (shared, key) = (Arc::clone(&shared), key.clone());
        move |t: &str| {
            let t = shared.scrub(t);
            match &key {
                Some(k) if !k.0.is_empty() && t.contains(&*k.0) => t.replace(&*k.0, "<redacted>"),
                _ => t,
            }
        }
    };
    if let Err(e) = P::admit(&chat.route) {
        rejected(caller.label(), access::REASON_BAD_REQUEST);
        return e.into_response();
    }
    let mut cut = shared.cut.subscribe();
    // Tokens are estimated only for a route that has rate limits to hold them to.
    let tokens = if chat.route.is_rate_limited() {
        P::estimate(&chat.body)
    } else {
        0
    };
    let call = Call {
        route: Arc::clone(&chat.route),
        body: Arc::clone(&chat.body),
        key: key.clone(),
        headers,
    };
    if chat.stream {
        let out = Out {
            cut,
            scrub: Arc::new(scrub),
            log: log.clone(),
        };
        P::stream(&shared, tokens, call, out).await
    } else {
        let call = chat.route.call_with_tokens(tokens, |ctx| {
            let (shared, call) = (Arc::clone(&shared), call.clone());
            async move {
                let answer = P::call(shared, ctx.clone(), call).await?;
                if let Some(used) = P::usage(&answer) {
                    ctx.report_usage(used);
                }
                if let Some(usage) = crate::protocol::usage(&answer) {
                    ctx.record_usage(usage);
                }
                Ok(answer)
            }
        });
        let answer = tokio::select! {
            r = call => r,
            Ok(_) = cut.wait_for(|c| *c) => return ApiError::shutting_down().into_response(),
        };
        match answer {
            Ok(a) => {
                let mut resp = Json(a.value).into_response();
                answer_headers(resp.headers_mut(), &a.provider, &a.model, &a.trail);
                resp
            }
            Err(e) => ApiError::failover(&e, &scrub).into_response(),
        }
    }
}

/// `GET /v1/models`: the routes the caller may use, as OpenAI and Anthropic models.
pub(super) async fn models(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let data: Vec<Value> = shared
        .routes
        .iter()
        .filter(|r| caller.client.as_ref().is_none_or(|c| c.may_use(r.name())))
        // OpenAI's fields and Anthropic's, so both SDKs' `models.list()` read it.
        .map(|r| {
            let mut endpoints = vec!["/v1/chat/completions", "/v1/messages", "/v1/responses"];
            if counts_tokens(&shared, r) {
                endpoints.push("/v1/messages/count_tokens");
            }
            if embeddable(r).is_ok() {
                endpoints.push("/v1/embeddings");
            }
            json!({
                "id": r.name(),
                "object": "model",
                "created": 0,
                "owned_by": "llm-failover",
                "type": "model",
                "display_name": r.name(),
                "created_at": "1970-01-01T00:00:00Z",
                "endpoints": endpoints,
            })
        })
        .collect();
    let id = |v: Option<&Value>| v.map(|m| m["id"].clone());
    Json(json!({
        "object": "list",
        "data": &data,
        "has_more": false,
        "first_id": id(data.first()),
        "last_id": id(data.last()),
    }))
}

/// `GET /healthz`: the process is up and serving.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /v1/failover/status`: every route and every breaker.
pub(super) async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let routes: Vec<Value> = shared
        .routes
        .iter()
        .map(|r| {
            let list = |l: Vec<(&str, &str)>| -> Vec<String> {
                l.into_iter().map(|(p, m)| format!("{p}/{m}")).collect()
            };
            json!({
                "name": r.name(),
                "targets": list(r.targets().collect()),
                "larger_context": list(r.larger_context_targets().collect()),
            })
        })
        .collect();
    let breakers: Vec<Value> = shared.registry.iter().map(breaker_json).collect();
    Json(json!({"routes": routes, "breakers": breakers}))
}

/// One breaker as the status endpoint shows it.
pub(super) fn breaker_json(b: &Breaker) -> Value {
    let s = b.snapshot();
    json!({
        "provider": b.provider(),
        "model": b.model(),
        "state": s.state.as_str(),
        "automatic_state": s.automatic.as_str(),
        "reason": s.reason.map(Reason::as_str),
        "open_until": s.open_until.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        "retry_after_ms": b.closed_in().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "consecutive_failures": s.consecutive_failures,
        "window_calls": s.window_calls,
        "window_failures": s.window_failures,
    })
}

/// `GET /metrics`: the Prometheus scrape.
pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared
        .metrics
        .as_ref()
        .map(metrics_exporter_prometheus::PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Any other path.
pub(super) async fn not_found(req: Request) -> Response {
    ApiError::client(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        format!(
            "no endpoint {} {}; this proxy serves POST /v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens, POST /v1/responses, POST /v1/embeddings, GET /v1/models, GET /v1/failover/status, POST /v1/failover/breakers/{{provider}}/{{model}}, GET /healthz and GET /metrics",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}
