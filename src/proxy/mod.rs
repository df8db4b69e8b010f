//! The failover proxy: an OpenAI-compatible HTTP server in front of the chain, for
//! applications not written in Rust.
//!
//! Each client-facing model name is a [`Route`]: the client asks for `"model": "chat"` and the
//! proxy tries the route's targets in order, through their breakers, exactly as
//! [`Route::call`] and [`Route::stream`] do for a Rust caller. What the client sees:
//!
//! * the first target that answers, with `x-failover-provider`, `x-failover-model`,
//!   `x-failover-attempts` and `x-failover-trail` headers
//!   (`local/llama3=connection_refused; openai/gpt-4o-mini=ok`);
//! * for `"stream": true`, the upstream's server-sent events chunk by chunk. The proxy commits
//!   to a target at its first token, so a target that fails before it is invisible to the
//!   client; after it, a break ends the stream with an OpenAI-style `error` event and no
//!   `[DONE]`, never a truncated answer that looks complete;
//! * when no target answers, an OpenAI-style error body naming each attempt and its reason,
//!   with a status that says what happened (429 rate limited, 503 every breaker open, 504 out
//!   of time, 502 otherwise, or the provider's own 4xx for a request no target can serve)
//!   and `Retry-After` when the soonest breaker re-admits is known.
//!
//! Client mistakes (malformed JSON, no `model`, an unknown route, a body over the limit) are
//! answered with a 4xx before anything reaches an upstream.
//!
//! Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /healthz`,
//! `GET /v1/failover/status` (every breaker: state, reason, open until), `GET /metrics`
//! (when a Prometheus handle is given and metrics have no address of their own), and for
//! operators `POST /v1/failover/breakers/{provider}/{model}` and `POST /v1/failover/reload`.
//!
//! # Keys and admin control
//!
//! `[[clients]]` in the config give each application a key (as an environment variable's name,
//! `key_env`, or as the key's SHA-256 hash, `key_sha256`), the routes it may use (names or
//! `*` globs) and optional limits (`requests_per_minute`, `max_concurrent`). `[admin]` gives
//! the operator a key of its own for the breaker control endpoints. Who may call what, how
//! keys are compared, what a rejection looks like and how the limits count: see the `auth`
//! module (`src/proxy/auth.rs`); the control endpoints' contract: the `admin` module
//! (`src/proxy/admin.rs`). `llm-failover ctl` calls them.
//!
//! With no `[[clients]]`, anyone who reaches the port may use every route, so the proxy only
//! serves a loopback address then, unless `[server] allow_unauthenticated = true` says in so
//! many words that something in front of it checks callers ([`Config::exposure`]).
//!
//! # Request limits
//!
//! Each connection is served by hyper's HTTP/1.1 server with the `[server]` limits:
//! `max_header_bytes` (the request line and headers; larger gets a 431 and the connection
//! closes; default [`DEFAULT_MAX_HEADER_BYTES`]), `header_read_timeout` (the headers must
//! arrive within it, so a client trickling one byte a second is cut off there while others
//! are served; an idle keep-alive connection is closed after it too; default
//! [`DEFAULT_HEADER_READ_TIMEOUT`]), `body_read_timeout` (a 408; default
//! [`DEFAULT_BODY_READ_TIMEOUT`]), `max_body_bytes` (a 413) and `max_connections` (connections
//! beyond it wait in the listen backlog until one closes; default
//! [`DEFAULT_MAX_CONNECTIONS`]). Accepted sockets get `TCP_NODELAY`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use llm_failover::proxy::{Config, Proxy};
//!
//! let config = Config::from_file("examples/failover.toml")?;
//! let listener = tokio::net::TcpListener::bind(config.listen()).await?;
//! let proxy = Proxy::new(&config)?;
//! proxy.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Shutdown
//!
//! [`Proxy::serve`] stops accepting connections when its shutdown future completes, lets
//! requests in flight finish for the configured grace period (`server.shutdown_grace`), then
//! ends those still running with a clean error: a 503 JSON body, or an `error` event on a
//! stream. It returns when every connection has closed.

mod admin;
mod auth;
mod config;
mod error;
mod handlers;
mod sse;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::breaker::{Registry, RegistryError};
use crate::chain::openai::{Client, Endpoint};
use crate::chain::{Route, RouteError};

pub use self::config::{
    Config, ConfigError, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_STATE_URL_ENV, Exposure, Located,
};
use crate::telemetry::names::access;

/// The response headers that say who answered.
pub mod headers {
    /// The provider that answered.
    pub const PROVIDER: &str = "x-failover-provider";
    /// The upstream model that answered.
    pub const MODEL: &str = "x-failover-model";
    /// How many attempts the request took (rejections by an open breaker included).
    pub const ATTEMPTS: &str = "x-failover-attempts";
    /// Every attempt and how it ended: `local/llama3=connection_refused; openai/gpt-4o-mini=ok`.
    pub const TRAIL: &str = "x-failover-trail";
}

/// The proxy could not be set up from a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A provider's API key variable is not set: the proxy would send unauthenticated
    /// requests.
    #[error("{0}")]
    MissingKey(Box<Located>),
    /// The listen address is not loopback, no `[[clients]]` are configured, and
    /// `allow_unauthenticated = true` is not set: anyone could spend the provider keys.
    #[error(transparent)]
    Unauthenticated(#[from] Exposure),
    /// The breakers could not be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A route could not be built.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The HTTP client could not be built (TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The shared-state backend (`[state]`) could not be started.
    #[error("[state]: {0}")]
    State(#[from] crate::state::StateError),
}

/// A key kept to scrub it from upstream text; never printed.
#[derive(Clone)]
struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One provider as the proxy calls it.
#[derive(Debug, Clone)]
struct Upstream {
    /// With the provider's own key.
    endpoint: Endpoint,
    /// Without a key: the base for forwarding a caller's key.
    bare: Endpoint,
    /// Send a key as this query parameter instead of `Authorization: Bearer`.
    api_key_query: Option<String>,
    /// Send the caller's key instead of the provider's, when the caller sent one.
    forward_client_key: bool,
    client: Client,
    attempt_timeout: Option<Duration>,
    /// The provider's key, to scrub from anything its errors say.
    key: Option<Secret>,
}

/// What every request handler shares.
#[derive(Debug, Clone)]
struct Shared {
    routes: Vec<Arc<Route>>,
    by_name: HashMap<String, usize>,
    upstreams: HashMap<String, Upstream>,
    registry: Arc<Registry>,
    metrics: Option<PrometheusHandle>,
    max_body_bytes: usize,
    grace: Duration,
    /// Turns true when the grace period after a shutdown signal has passed.
    cut: Arc<watch::Sender<bool>>,
    /// Client and admin keys, per-client limits.
    access: Arc<auth::Access>,
    /// Some provider sends the caller's key upstream (so it is kept per request).
    forwards_client_key: bool,
    allow_unauthenticated: bool,
    body_read_timeout: Duration,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    max_connections: usize,
    /// The shared breaker-state backend, when `[state] backend = "redis"`.
    #[cfg(feature = "redis")]
    state: Option<crate::state::StateHandle>,
}

/// The failover proxy: routes, breakers and upstreams built from a [`Config`].
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Builds the proxy's routes, breakers and upstream clients, and starts the shared-state
    /// backend when `[state] backend = "redis"` (that needs a Tokio runtime).
    ///
    /// # Errors
    ///
    /// [`ProxyError::MissingKey`] when a provider's, a client's or the admin's `key_env` /
    /// `api_key_env` names a variable that is not set (`check` only warns about it; serving
    /// without the key would fail every request). [`ProxyError::Unauthenticated`] when the
    /// configured listen address is exposed without client keys ([`Config::exposure`]).
    pub fn new(config: &Config) -> Result<Self, ProxyError> {
        if let Some(missing) = config.missing_keys().next() {
            return Err(ProxyError::MissingKey(Box::new(missing.clone())));
        }
        if let Some(exposure) = config.exposure() {
            return Err(exposure.into());
        }
        let mut registry = Registry::builder();
        #[cfg(feature = "redis")]
        let state = match config.state() {
            Some(c) => {
                let state = crate::state::RedisState::new(c.clone())?;
                registry = registry.on_transition(state.listener());
                Some(state)
            }
            None => None,
        };
        for (name, p) in &config.providers {
            registry = registry.provider_policy(name, p.breaker.clone());
            for model in &p.models {
                registry = registry.target_with_policy(name, model, p.breaker.clone());
            }
        }
        let registry = Arc::new(registry.build()?);
        #[cfg(feature = "redis")]
        let state = match state {
            Some(s) => Some(s.start(Arc::clone(&registry))?),
            None => None,
        };
        let mut upstreams = HashMap::new();
        for (name, p) in &config.providers {
            let client = Client::with_connect_timeout(p.connect_timeout)
                .map_err(ProxyError::Client)?
                .with_classifier(Arc::clone(&config.classifier));
            let bare = Endpoint::new(name, &p.base_url);
            let mut endpoint = bare.clone();
            if let Some(key) = &p.api_key {
                endpoint = match &p.api_key_query {
                    Some(param) => endpoint.api_key_query(param, key.clone()),
                    None => endpoint.api_key(key),
                };
            }
            upstreams.insert(
                name.clone(),
                Upstream {
                    endpoint,
                    bare,
                    api_key_query: p.api_key_query.clone(),
                    forward_client_key: p.forward_client_key,
                    client,
                    attempt_timeout: p.attempt_timeout,
                    key: p.api_key.as_deref().map(|k| Secret(Arc::from(k))),
                },
            );
        }
        let mut routes = Vec::new();
        let mut by_name = HashMap::new();
        // One board for every route: a target's requests count together whichever route
        // sent them.
        let loads = Arc::new(crate::chain::Loads::new());
        for (p, m) in config.targets() {
            loads.set_max_inflight(p, m, config.max_inflight(p, m));
            loads.set_rate_limits(p, m, config.rate_limits(p, m));
            loads.set_slow_start(p, m, config.slow_start(p, m));
            loads.set_provider_max_inflight(p, config.provider_max_inflight(p));
        }
        for r in &config.routes {
            let mut b = Route::builder(&r.name, Arc::clone(&registry))
                .policy(r.policy.clone())
                .loads(Arc::clone(&loads));
            for tier in &r.tiers {
                b = b.tier(tier.clone());
            }
            for (p, m) in &r.larger_context {
                b = b.larger_context_target(p, m);
            }
            by_name.insert(r.name.clone(), routes.len());
            routes.push(Arc::new(b.build()?));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                routes,
                by_name,
                upstreams,
                registry,
                metrics: None,
                max_body_bytes: config.server.max_body_bytes,
                grace: config.server.shutdown_grace,
                cut: Arc::new(watch::channel(false).0),
                access: Arc::new(auth::Access::new(&config.clients, config.admin.as_ref())),
                forwards_client_key: config.providers.values().any(|p| p.forward_client_key),
                allow_unauthenticated: config.server.allow_unauthenticated,
                body_read_timeout: config.server.body_read_timeout,
                header_read_timeout: config.server.header_read_timeout,
                max_header_bytes: config.server.max_header_bytes,
                max_connections: config.server.max_connections,
                #[cfg(feature = "redis")]
                state,
            }),
        })
    }

    /// Serves `GET /metrics` from `handle` (see
    /// [`install_prometheus_recorder`](crate::telemetry::install_prometheus_recorder)).
    /// Default: no `/metrics` route (metrics served elsewhere, or not at all).
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        Arc::make_mut(&mut self.shared).metrics = Some(handle);
        self
    }

    /// The breakers, one per configured (provider, model) plus one per provider (`*`).
    #[must_use]
    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    /// The shared breaker-state backend, when `[state] backend = "redis"` (feature `redis`).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn state(&self) -> Option<&crate::state::StateHandle> {
        self.shared.state.as_ref()
    }

    /// The routes, in the order of the configuration.
    #[must_use]
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.shared.routes
    }

    /// The HTTP service: every endpoint of the proxy, each behind its key check (see
    /// [the access table](self#keys-and-admin-control)).
    pub fn router(&self) -> Router {
        use axum::middleware::from_fn_with_state;
        let shared = Arc::clone(&self.shared);
        let client = Router::new()
            .route("/v1/chat/completions", post(handlers::chat))
            .route("/v1/models", get(handlers::models))
            .route_layer(from_fn_with_state(Arc::clone(&shared), auth::client_gate));
        let status = Router::new()
            .route("/v1/failover/status", get(handlers::status))
            .route_layer(from_fn_with_state(Arc::clone(&shared), auth::any_gate));
        let admin = Router::new()
            .route(
                "/v1/failover/breakers/{provider}/{*model}",
                post(admin::breaker),
            )
            .route("/v1/failover/reload", post(admin::reload))
            .route_layer(from_fn_with_state(Arc::clone(&shared), auth::admin_gate));
        let mut router = Router::new()
            .merge(client)
            .merge(status)
            .merge(admin)
            .route("/healthz", get(handlers::healthz));
        if self.shared.metrics.is_some() {
            router = router.route("/metrics", get(handlers::metrics));
        }
        router
            .fallback(handlers::not_found)
            .with_state(Arc::clone(&self.shared))
    }

    /// Serves on `listener` until `shutdown` completes, then drains as the
    /// [module docs](self#shutdown) say. Connections are served with the configured request
    /// limits (see [the limits](self#request-limits)).
    ///
    /// # Errors
    ///
    /// The listener's I/O error; [`std::io::ErrorKind::PermissionDenied`] when the listener is
    /// not on loopback, no `[[clients]]` are configured and `allow_unauthenticated` is not set
    /// (the same rule [`Proxy::new`] applies to the configured address).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        #[cfg(feature = "redis")]
        if let Some(state) = &self.shared.state {
            // Learn the fleet's open breakers before the first request (bounded: with Redis
            // away the proxy serves on its local breakers).
            let c = &state_config_timeouts(state);
            if !state.synced(*c).await {
                tracing::warn!(
                    target: "llm_failover::proxy",
                    "shared breaker state not synchronised yet; serving on local breakers"
                );
            }
        }
        let shared = Arc::clone(&self.shared);
        let clients = shared.access.clients_required();
        if let Some(exposure) = config::exposure(local, clients, shared.allow_unauthenticated) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                exposure,
            ));
        }
        if !clients && !local.ip().to_canonical().is_loopback() {
            tracing::warn!(
                target: "llm_failover::proxy",
                "serving on {local} without client keys (allow_unauthenticated = true): anyone who \
                 can reach it can use every route with your provider keys; add [[clients]] unless \
                 something in front of the proxy checks who calls"
            );
        }
        let router = self.router();
        let signal = async move {
            shutdown.await;
            tracing::info!(
                target: "llm_failover::proxy",
                grace_seconds = shared.grace.as_secs_f64(),
                "shutting down: no new connections; requests in flight may finish"
            );
            let grace = shared.grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                shared.cut.send_replace(true);
            });
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.shared.header_read_timeout)
            .max_buf_size(self.shared.max_header_bytes.max(8192));
        let slots = Arc::new(Semaphore::new(self.shared.max_connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(signal);
        loop {
            // At most `max_connections` at once: further ones wait in the listen backlog.
            let slot = tokio::select! {
                s = Arc::clone(&slots).acquire_owned() => s,
                () = &mut signal => break,
            };
            let Ok(slot) = slot else { break };
            let tcp = tokio::select! {
                a = listener.accept() => a,
                () = &mut signal => break,
            };
            let tcp = match tcp {
                Ok((tcp, _)) => tcp,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum::serve does.
                    tracing::error!(target: "llm_failover::proxy", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // No Nagle delay: stream events are small writes that must leave at once.
            let _ = tcp.set_nodelay(true);
            let router = router.clone();
            let service = hyper::service::service_fn(move |req| router.clone().oneshot(req));
            let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    // Turned away by hyper itself: too slow or too large a request head.
                    if e.is_timeout() {
                        auth::rejected(access::UNKNOWN_CLIENT, access::REASON_TIMEOUT);
                    } else if e.is_parse_too_large() {
                        auth::rejected(access::UNKNOWN_CLIENT, access::REASON_TOO_LARGE);
                    }
                }
                drop(slot);
            });
        }
        // Closed now: new connections are refused while those open finish.
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// Accept errors that concern one connection only (as `axum::serve` sorts them).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// How long `serve` waits for the first synchronisation with the shared-state backend.
#[cfg(feature = "redis")]
fn state_config_timeouts(state: &crate::state::StateHandle) -> Duration {
    state.first_sync_limit()
}
