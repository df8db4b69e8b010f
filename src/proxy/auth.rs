//! Who may call the proxy: client keys, the admin key, per-client limits.
//!
//! # Keys
//!
//! A key is accepted as `Authorization: Bearer KEY` or `x-api-key: KEY`. The proxy keeps only
//! SHA-256 hashes of the configured keys (from `key_env`, hashed when the config is read, or
//! `key_sha256`): the presented key is hashed and compared with every configured hash in
//! constant time ([`subtle`]), all of them every time, so neither the timing nor the order of
//! the clients tells a caller anything about a key.
//!
//! # Who gets in where
//!
//! | endpoint | no keys configured | with `[[clients]]` or `[admin]` |
//! |---|---|---|
//! | `POST /v1/chat/completions`, `GET /v1/models` | anyone | a client key (when `[[clients]]` exist); the admin key gets 403 |
//! | `GET /v1/failover/status` | anyone | a client key or the admin key |
//! | `POST /v1/failover/breakers/…`, `POST /v1/failover/reload` | anyone | the admin key; a client key gets 403 |
//! | `GET /healthz`, `GET /metrics` | anyone | anyone (serve metrics on `metrics_listen` to keep them private) |
//!
//! A missing or unknown key is a 401 (`missing_api_key`, `invalid_api_key`) with
//! `WWW-Authenticate: Bearer`. A client asking for a route outside its `routes` gets **404
//! `model_not_found`**, exactly what an unknown route gets, not a 403: the answer does not tell
//! a client which other routes exist, it agrees with `GET /v1/models` (which lists only the
//! client's routes), and it is what OpenAI answers for a model a key has no access to, so the
//! SDKs raise the same `NotFoundError` an application already handles. The metric still tells
//! them apart (`reason="forbidden"` vs `"bad_request"`).
//!
//! # Limits
//!
//! `requests_per_minute` is a token bucket (the generic cell rate algorithm): a client may
//! send up to that many requests at once, and earns one back every `60 s / requests_per_minute`.
//! Every request a client makes to a client endpoint counts when it arrives, before its body is
//! read, whatever its answer. Over the limit it gets a 429 `rate_limit_exceeded` whose
//! `Retry-After` is the wait, rounded up to whole seconds, after which its next request is
//! admitted (unless the client sent others meanwhile); a rejected request costs nothing.
//! `max_concurrent` bounds the client's requests in flight (a stream is in flight until its
//! last event); one more gets a 429 `concurrency_limit_exceeded` with `Retry-After: 1`, a hint
//! only, since the wait depends on when the client's own requests end.
//!
//! No rejection reaches an upstream, and each is counted in
//! `llm_failover_client_rejections_total{client, reason}` (the configured name, `unknown`
//! without a valid key).
//!
//! # The client's key and the upstream
//!
//! The client's key is never sent upstream: each provider gets its own `api_key_env`. A
//! provider with `forward_client_key = true` gets the caller's key instead (bring your own
//! key); the proxy then also scrubs that key from anything the provider's errors say.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::config::{AdminConfig, ClientConfig, KeyHash};
use super::error::ApiError;
use super::{Secret, Shared};
use crate::telemetry::names::{self, access};

/// The name events give the caller of an admin endpoint when no keys are configured.
const ANONYMOUS: &str = "anonymous";

/// A request rate: the generic cell rate algorithm (a token bucket kept as one instant).
#[derive(Debug)]
struct Rate {
    /// The time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run: `burst - 1` intervals.
    tolerance: Duration,
    /// When the next request would be due at the sustained rate.
    tat: Mutex<Option<Instant>>,
}

impl Rate {
    fn per_minute(n: std::num::NonZeroU32) -> Self {
        let interval = Duration::from_secs(60) / n.get();
        Self {
            interval,
            tolerance: interval * (n.get() - 1),
            tat: Mutex::new(None),
        }
    }

    /// Admits a request at `now`, or says how long until one would be admitted.
    fn check(&self, now: Instant) -> Result<(), Duration> {
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        let due = tat.map_or(now, |t| t.max(now));
        let allowed_at = due.checked_sub(self.tolerance).unwrap_or(now);
        if now < allowed_at {
            return Err(allowed_at - now);
        }
        *tat = Some(due + self.interval);
        Ok(())
    }
}

/// One configured client at run time.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) name: Arc<str>,
    key: Option<KeyHash>,
    routes: Vec<String>,
    /// Shared with the same client of the previous configuration when a reload kept it.
    rate: Option<(Arc<Rate>, std::num::NonZeroU32)>,
    concurrency: Option<(Arc<Semaphore>, u32)>,
}

impl Client {
    /// Whether the client may use the route `name`.
    pub(super) fn may_use(&self, route: &str) -> bool {
        self.routes.iter().any(|r| r == route)
    }
}

/// Everyone the proxy knows.
#[derive(Debug)]
pub(super) struct Access {
    clients: Vec<Arc<Client>>,
    admin: Option<(Arc<str>, Option<KeyHash>)>,
}

/// Who a request comes from, as the handlers see it (a request extension).
#[derive(Debug, Clone)]
pub(super) struct Caller {
    /// `None`: no client keys are configured, anyone may call.
    pub(super) client: Option<Arc<Client>>,
    /// The key the caller presented, kept only to forward it to a provider that asks for it.
    pub(super) key: Option<Secret>,
}

impl Caller {
    /// The label of this caller in rejection metrics.
    pub(super) fn label(&self) -> &str {
        self.client
            .as_ref()
            .map_or(access::UNKNOWN_CLIENT, |c| &c.name)
    }
}

/// The admin who called an admin endpoint (a request extension).
#[derive(Debug, Clone)]
pub(super) struct AdminCaller(pub(super) Arc<str>);

/// Whose key a request carries.
enum Identity {
    None,
    Unknown,
    Client(Arc<Client>),
    Admin(Arc<str>),
}

impl Access {
    /// Everyone `clients` and `admin` name. With `previous` (a reload), a client whose key is
    /// unchanged keeps its rate bucket when its `requests_per_minute` is unchanged, and its
    /// in-flight count when its `max_concurrent` is unchanged.
    pub(super) fn new(
        clients: &[ClientConfig],
        admin: Option<&AdminConfig>,
        previous: Option<&Access>,
    ) -> Self {
        let same_key = |c: &ClientConfig| {
            let key = c.key.as_ref()?;
            previous?
                .clients
                .iter()
                .find(|o| o.key.as_ref().is_some_and(|k| k.0 == key.0))
                .cloned()
        };
        Self {
            clients: clients
                .iter()
                .map(|c| {
                    let old = same_key(c);
                    Arc::new(Client {
                        name: Arc::from(c.name.as_str()),
                        key: c.key,
                        routes: c.routes.clone(),
                        rate: c.requests_per_minute.map(|n| {
                            let kept = old
                                .as_ref()
                                .and_then(|o| o.rate.as_ref())
                                .filter(|(_, m)| *m == n)
                                .map(|(r, _)| Arc::clone(r));
                            (kept.unwrap_or_else(|| Arc::new(Rate::per_minute(n))), n)
                        }),
                        concurrency: c.max_concurrent.map(|n| {
                            let kept = old
                                .as_ref()
                                .and_then(|o| o.concurrency.as_ref())
                                .filter(|(_, m)| *m == n.get())
                                .map(|(s, _)| Arc::clone(s));
                            let permits = usize::try_from(n.get()).unwrap_or(usize::MAX);
                            (
                                kept.unwrap_or_else(|| Arc::new(Semaphore::new(permits))),
                                n.get(),
                            )
                        }),
                    })
                })
                .collect(),
            admin: admin.map(|a| (Arc::from(a.name.as_str()), a.key)),
        }
    }

    /// Whether client endpoints ask for a client key.
    pub(super) fn clients_required(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Whether any key is configured: then status and admin endpoints ask for one.
    fn any_keys(&self) -> bool {
        !self.clients.is_empty() || self.admin.is_some()
    }

    /// Matches the presented key against every configured key, all of them, in constant time.
    fn identify(&self, presented: Option<&str>) -> Identity {
        let Some(key) = presented else {
            return Identity::None;
        };
        let hash = KeyHash::of(key);
        let same = |k: &Option<KeyHash>| -> bool {
            k.as_ref().is_some_and(|k| bool::from(k.0.ct_eq(&hash.0)))
        };
        let mut found = Identity::Unknown;
        for c in &self.clients {
            if same(&c.key) {
                found = Identity::Client(Arc::clone(c));
            }
        }
        if let Some((name, k)) = &self.admin
            && same(k)
        {
            found = Identity::Admin(Arc::clone(name));
        }
        found
    }
}

/// The key of a request: `Authorization: Bearer KEY`, else `x-api-key: KEY`. A header that is
/// there but unreadable counts as a key that matches nothing.
fn presented(h: &HeaderMap) -> Option<String> {
    const UNREADABLE: &str = "\u{0}";
    if let Some(v) = h.get(header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else {
            return Some(UNREADABLE.to_owned());
        };
        let v = v.trim();
        let key = v
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim());
        return Some(
            key.filter(|k| !k.is_empty())
                .unwrap_or(UNREADABLE)
                .to_owned(),
        );
    }
    h.get("x-api-key").map(|v| {
        v.to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .unwrap_or(UNREADABLE)
            .to_owned()
    })
}

/// Emits the `client_rejected` event the metrics layer counts.
pub(super) fn rejected(client: &str, reason: &'static str) {
    tracing::event!(
        name: names::CLIENT_REJECTED_EVENT,
        target: names::PROXY_TARGET,
        tracing::Level::INFO,
        { access::CLIENT } = client,
        { access::REASON } = reason,
        "request from client {client} turned away: {reason}"
    );
}

fn unauthenticated(presented: bool) -> Response {
    rejected(access::UNKNOWN_CLIENT, access::REASON_UNAUTHENTICATED);
    let (code, message) = if presented {
        (
            "invalid_api_key",
            "the API key is not valid for this proxy; ask its operator for a client key",
        )
    } else {
        (
            "missing_api_key",
            "no API key: send your key as `Authorization: Bearer KEY` (the OpenAI SDKs do this \
             with api_key=...) or as `x-api-key: KEY`",
        )
    };
    let mut resp = ApiError::typed(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        code,
        message,
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn forbidden(who: &str, message: &str) -> Response {
    rejected(who, access::REASON_FORBIDDEN);
    ApiError::typed(
        StatusCode::FORBIDDEN,
        "permission_error",
        "forbidden",
        message,
    )
    .into_response()
}

/// Guards `POST /v1/chat/completions` and `GET /v1/models`: the client's key and limits.
pub(super) async fn client_gate(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let key = presented(req.headers());
    let forward = |key: Option<String>| {
        key.filter(|_| shared.forwards_client_key)
            .map(|k| Secret(Arc::from(k)))
    };
    if !shared.access.clients_required() {
        req.extensions_mut().insert(Caller {
            client: None,
            key: forward(key),
        });
        return next.run(req).await;
    }
    let client = match shared.access.identify(key.as_deref()) {
        Identity::Client(c) => c,
        Identity::Admin(name) => {
            return forbidden(
                &name,
                "the admin key is for /v1/failover/ endpoints only; call the API with a client key",
            );
        }
        Identity::None => return unauthenticated(false),
        Identity::Unknown => return unauthenticated(true),
    };
    if let Some((rate, _)) = &client.rate
        && let Err(wait) = rate.check(Instant::now())
    {
        rejected(&client.name, access::REASON_RATE_LIMITED);
        return ApiError::typed(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
            format!(
                "client {} is over its requests_per_minute; retry after the Retry-After header's seconds",
                client.name
            ),
        )
        .with_retry_after(wait)
        .into_response();
    }
    let permit = match &client.concurrency {
        None => None,
        Some((sem, max)) => match Arc::clone(sem).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                rejected(&client.name, access::REASON_CONCURRENCY);
                return ApiError::typed(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    "concurrency_limit_exceeded",
                    format!(
                        "client {} already has {max} requests in flight (max_concurrent); retry when one ends",
                        client.name
                    ),
                )
                .with_retry_after(Duration::from_secs(1))
                .into_response();
            }
        },
    };
    req.extensions_mut().insert(Caller {
        client: Some(client),
        key: forward(key),
    });
    let resp = next.run(req).await;
    match permit {
        // Held until the body has been sent (a stream's last event), or dropped.
        Some(permit) => resp.map(|body| Body::new(Held { body, permit })),
        None => resp,
    }
}

/// Guards `GET /v1/failover/status`: any configured key, client or admin.
pub(super) async fn any_gate(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    if !shared.access.any_keys() {
        return next.run(req).await;
    }
    let key = presented(req.headers());
    match shared.access.identify(key.as_deref()) {
        Identity::Client(_) | Identity::Admin(_) => next.run(req).await,
        Identity::None => unauthenticated(false),
        Identity::Unknown => unauthenticated(true),
    }
}

/// Guards the admin endpoints: the admin key only.
pub(super) async fn admin_gate(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !shared.access.any_keys() {
        req.extensions_mut()
            .insert(AdminCaller(Arc::from(ANONYMOUS)));
        return next.run(req).await;
    }
    let key = presented(req.headers());
    match shared.access.identify(key.as_deref()) {
        Identity::Admin(name) => {
            req.extensions_mut().insert(AdminCaller(name));
            next.run(req).await
        }
        Identity::Client(c) => forbidden(
            &c.name,
            if shared.access.admin.is_some() {
                "this endpoint needs the admin key; a client key cannot steer the proxy"
            } else {
                "this endpoint needs the admin key, and none is configured: add an [admin] \
                 section with key_env or key_sha256"
            },
        ),
        Identity::None => unauthenticated(false),
        Identity::Unknown => unauthenticated(true),
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds a concurrency permit until it is done or dropped.
    struct Held {
        #[pin]
        body: Body,
        permit: OwnedSemaphorePermit,
    }
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_admits_a_burst_then_says_when_the_next_one_is_due() {
        let rate = Rate::per_minute(std::num::NonZeroU32::new(60).unwrap());
        let t0 = Instant::now();
        for _ in 0..60 {
            assert_eq!(rate.check(t0), Ok(()));
        }
        let wait = rate.check(t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Rejections cost nothing; at the promised time one more is admitted, not two.
        assert_eq!(rate.check(t0 + wait), Ok(()));
        assert!(rate.check(t0 + wait).is_err());
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(presented(&h).as_deref(), Some("k1"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  k2 "),
        );
        assert_eq!(presented(&h).as_deref(), Some("k2"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&h).as_deref(), Some("\u{0}"));
    }
}
