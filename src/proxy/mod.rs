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
//!   `[DONE]`, never a truncated answer that looks complete. On a route with `stream_resume`,
//!   the break is instead finished by a target whose provider takes an assistant prefill
//!   (`prefill` in its config), and the client reads one answer: the same `id`, one `role`,
//!   one `finish_reason`, summed `usage`, a `failover` field on the final chunks and a
//!   comment line `: x-failover-trail: ...` before `[DONE]` (see
//!   [`ChatResume`](crate::protocol::openai_chat::ChatResume));
//! * when no target answers, an OpenAI-style error body naming each attempt and its reason,
//!   with a status that says what happened (429 rate limited, 503 every breaker open, 504 out
//!   of time, 502 otherwise, or the provider's own 4xx for a request no target can serve)
//!   and `Retry-After` when the soonest breaker re-admits is known.
//!
//! Client mistakes (malformed JSON, no `model`, an unknown route, a body over the limit) are
//! answered with a 4xx before anything reaches an upstream.
//!
//! # Protocols
//!
//! `POST /v1/chat/completions` speaks OpenAI chat completions and `POST /v1/messages`
//! Anthropic Messages (its errors in Anthropic's shape, `{"type": "error", "error": {...}}`,
//! with 529 for an overloaded route, so Anthropic's SDKs raise their typed errors; a broken
//! stream ends with an `event: error`, never `message_stop`). Every route serves both: each
//! provider speaks its own `api`, and where it differs from the client's the request and the
//! answer are translated ([`protocol`](crate::protocol)), or the target is skipped as
//! `ineligible` when the request needs what the target's protocol cannot carry.
//!
//! `POST /v1/embeddings` fails over only between targets of one upstream model: a route whose
//! targets name different models gets a 400 `route_not_embeddable` naming the route, before
//! anything is sent, and an answer whose vectors have another length than the model's first
//! answer (or than `dimensions`) is a failure (`empty_response`), never passed on
//! ([`openai_embeddings`](crate::protocol::openai_embeddings)). `GET /v1/models` lists each
//! route's `endpoints`.
//!
//! `POST /v1/messages/count_tokens` is Anthropic's token counting, with the Messages
//! endpoint's keys and error shape: it fails over between the route's Anthropic targets
//! (the others cannot count and are skipped as `ineligible`, so a route without one gets a
//! 400 that says so), is never streamed, and counts against no token limit.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/messages`,
//! `POST /v1/messages/count_tokens`, `POST /v1/embeddings`, `GET /v1/models`, `GET /healthz`,
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
//! Each connection is served by hyper's HTTP/1.1 (or, over TLS, HTTP/2) server with the
//! `[server]` limits:
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
//! # Reloading
//!
//! [`Proxy::reload`] (SIGHUP under `llm-failover serve`, `POST /v1/failover/reload`,
//! `llm-failover ctl reload`) reads the configuration file again, checks it completely as at
//! start, and swaps the whole configuration atomically (`arc-swap`): each request is served by
//! the configuration current when it arrived, so requests in flight finish on theirs and new
//! ones see the new one. A bad file is rejected with its `file:line:column: field` error and
//! the running configuration stays. Breakers whose target and policy are unchanged carry over
//! with their state and counts; a breaker whose policy changed starts again closed (a
//! warning names it); removed targets' breakers leave the state gauge (every series at 0). A
//! client whose key is unchanged keeps its rate bucket and in-flight count. `listen`,
//! `metrics_listen`, `max_connections`, `max_header_bytes` and `header_read_timeout` apply at
//! the next start. Reloads are counted in `llm_failover_config_reloads_total{outcome}`; the
//! time of the configuration serving is
//! `llm_failover_config_last_reload_success_timestamp_seconds`. Details: `src/proxy/reload.rs`.
//!
//! # HTTPS
//!
//! With `[server] tls_cert` and `tls_key` (PEM files, checked when the configuration is read:
//! unreadable, no certificate, no key, or a key that does not belong to the certificate are
//! errors at the setting's line), connections are TLS (rustls, the `aws-lc-rs` provider the
//! HTTP client already uses) with ALPN `h2` and `http/1.1`: clients get HTTP/2 or HTTP/1.1
//! (hyper-util's auto builder), with the same head limits; the handshake must finish within
//! `header_read_timeout`. Plain connections are HTTP/1.1 only (no h2c). A reload's
//! certificate applies to new connections.
//!
//! # Shutdown
//!
//! [`Proxy::serve`] stops accepting connections when its shutdown future completes, lets
//! requests in flight finish for the configured grace period (`server.shutdown_grace`), then
//! ends those still running with a clean error: a 503 JSON body, or an `error` event on a
//! stream. It returns when every connection has closed.

mod access_log;
mod admin;
mod auth;
mod config;
mod error;
mod handlers;
mod reload;
mod sse;
mod stored;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::breaker::{Registry, RegistryError};
use crate::chain::{Route, RouteError};
use crate::protocol::openai_chat::{Client, Endpoint};

pub use self::config::{
    Config, ConfigError, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_STATE_URL_ENV, Exposure, Located,
};
pub use self::reload::{ReloadError, Reloaded};
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

/// What every request handler shares: one generation of the configuration. A request is
/// served from start to end by the generation that was current when it arrived.
#[derive(Debug, Clone)]
struct Shared {
    /// The configuration file, read again on reload.
    path: PathBuf,
    /// The address the configuration (or `--listen`) names; the served one once serving.
    listen: SocketAddr,
    /// When this generation's configuration was read.
    loaded_at: SystemTime,
    /// Settings that take effect only at start, as this generation's file gave them.
    restart_only: reload::RestartOnly,
    /// Serve HTTPS with this (new connections take the current generation's).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The proxy across generations, for the reload endpoint.
    live: Weak<Live>,
    routes: Vec<Arc<Route>>,
    by_name: HashMap<String, usize>,
    upstreams: HashMap<String, Upstream>,
    /// The vector length of each embedding model's first answer in this generation.
    dimensions: Arc<Mutex<HashMap<String, usize>>>,
    /// Who holds each Responses answer relayed (kept across generations).
    stored: Arc<stored::Stored>,
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
    /// Hands every breaker's transitions to the current generation's backend.
    #[cfg(feature = "redis")]
    forward: Forward,
}

/// Breakers outlive generations (a reload reuses those whose policy is unchanged) and keep
/// the listener they were built with; so every breaker gets this one, which hands each
/// transition to the shared-state backend of the generation serving now.
#[cfg(feature = "redis")]
#[derive(Clone, Default)]
struct Forward(Arc<arc_swap::ArcSwapOption<crate::breaker::Listener>>);

#[cfg(feature = "redis")]
impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Forward")
            .field(&self.0.load().is_some())
            .finish()
    }
}

#[cfg(feature = "redis")]
impl Forward {
    fn listener(&self) -> crate::breaker::Listener {
        let to = Arc::clone(&self.0);
        Arc::new(move |t: &crate::breaker::Transition| {
            if let Some(listener) = to.load().as_deref() {
                listener(t);
            }
        })
    }
}

/// One generation and the router that serves it.
#[derive(Debug)]
struct Generation {
    shared: Arc<Shared>,
    router: Router,
}

impl Generation {
    fn new(shared: Shared) -> Arc<Self> {
        let shared = Arc::new(shared);
        Arc::new(Self {
            router: router_of(&shared),
            shared,
        })
    }
}

/// What lives across reloads: the current generation, swapped atomically.
#[derive(Debug)]
struct Live {
    current: ArcSwap<Generation>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// The address being served, once [`Proxy::serve`] runs.
    served: OnceLock<SocketAddr>,
}

/// The failover proxy: routes, breakers and upstreams built from a [`Config`], replaced as a
/// whole by [`Proxy::reload`] (see [reloading](self#reloading)).
///
/// Clones share the proxy: a reload through one is seen by all.
#[derive(Debug, Clone)]
pub struct Proxy {
    live: Arc<Live>,
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
        let shared = Self::build(config, None)?;
        let live = Arc::new_cyclic(|weak| {
            let mut shared = shared;
            shared.live = Weak::clone(weak);
            Live {
                current: ArcSwap::new(Generation::new(shared)),
                reloading: Mutex::new(()),
                served: OnceLock::new(),
            }
        });
        Ok(Self { live })
    }

    /// One generation from `config`; with `previous`, breakers whose target and policy are
    /// unchanged and per-client limiter state carry over, as do the metrics handle and the
    /// shutdown signal.
    fn build(config: &Config, previous: Option<&Shared>) -> Result<Shared, ProxyError> {
        if let Some(missing) = config.missing_keys().next() {
            return Err(ProxyError::MissingKey(Box::new(missing.clone())));
        }
        if let Some(exposure) = config.exposure() {
            return Err(exposure.into());
        }
        let mut registry = Registry::builder();
        #[cfg(feature = "redis")]
        let forward = previous.map(|p| p.forward.clone()).unwrap_or_default();
        // Every breaker, also without `[state]`: a reload may add it.
        #[cfg(feature = "redis")]
        {
            registry = registry.on_transition(forward.listener());
        }
        #[cfg(feature = "redis")]
        let state = match config.state() {
            Some(c) => Some(crate::state::RedisState::new(c.clone())?),
            None => None,
        };
        for (name, p) in &config.providers {
            registry = registry.provider_policy(name, p.breaker.clone());
            for model in &p.models {
                registry = registry.target_with_policy(name, model, p.breaker.clone());
            }
        }
        let registry = Arc::new(match previous {
            Some(p) => registry.build_from(&p.registry)?,
            None => registry.build()?,
        });
        // Each generation runs its own backend against its registry; the previous one stops
        // when the last request on the previous generation ends.
        #[cfg(feature = "redis")]
        let state = match state {
            Some(s) => {
                let listener = s.listener();
                let handle = s.start(Arc::clone(&registry))?;
                forward.0.store(Some(Arc::new(listener)));
                Some(handle)
            }
            None => {
                forward.0.store(None);
                None
            }
        };
        let mut upstreams = HashMap::new();
        for (name, p) in &config.providers {
            let client = Client::with_connect_timeout(p.connect_timeout)
                .map_err(ProxyError::Client)?
                .with_classifier(Arc::clone(&config.classifier));
            let bare = Endpoint::new(name, &p.base_url)
                .api(p.api)
                .prefill(p.prefill);
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
        Ok(Shared {
            path: config.path.clone(),
            listen: config.server.listen,
            loaded_at: SystemTime::now(),
            restart_only: reload::RestartOnly::of(config),
            tls: config.server.tls.clone(),
            live: previous.map_or_else(Weak::new, |p| Weak::clone(&p.live)),
            routes,
            by_name,
            upstreams,
            dimensions: Arc::default(),
            stored: previous.map_or_else(Arc::default, |p| Arc::clone(&p.stored)),
            registry,
            metrics: previous.and_then(|p| p.metrics.clone()),
            max_body_bytes: config.server.max_body_bytes,
            grace: config.server.shutdown_grace,
            cut: previous.map_or_else(|| Arc::new(watch::channel(false).0), |p| Arc::clone(&p.cut)),
            access: Arc::new(auth::Access::new(
                &config.clients,
                config.admin.as_ref(),
                previous.map(|p| &*p.access),
            )),
            forwards_client_key: config.providers.values().any(|p| p.forward_client_key),
            allow_unauthenticated: config.server.allow_unauthenticated,
            body_read_timeout: config.server.body_read_timeout,
            header_read_timeout: config.server.header_read_timeout,
            max_header_bytes: config.server.max_header_bytes,
            max_connections: config.server.max_connections,
            #[cfg(feature = "redis")]
            state,
            #[cfg(feature = "redis")]
            forward,
        })
    }

    /// The generation serving new requests now.
    fn current(&self) -> Arc<Shared> {
        Arc::clone(&self.live.current.load().shared)
    }

    /// Serves `GET /metrics` from `handle` (see
    /// [`install_prometheus_recorder`](crate::telemetry::install_prometheus_recorder)).
    /// Default: no `/metrics` route (metrics served elsewhere, or not at all).
    #[must_use]
    pub fn with_metrics(self, handle: PrometheusHandle) -> Self {
        let mut shared = (*self.current()).clone();
        shared.metrics = Some(handle);
        self.live.current.store(Generation::new(shared));
        self
    }

    /// The breakers, one per configured (provider, model) plus one per provider (`*`), of the
    /// configuration serving now.
    #[must_use]
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.current().registry)
    }

    /// The shared breaker-state backend of the configuration serving now, when
    /// `[state] backend = "redis"` (feature `redis`).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn state(&self) -> Option<crate::state::StateHandle> {
        self.current().state.clone()
    }

    /// The routes, in the order of the configuration serving now.
    #[must_use]
    pub fn routes(&self) -> Vec<Arc<Route>> {
        self.current().routes.clone()
    }

    /// The HTTP service: every endpoint of the proxy, each behind its key check (see
    /// [the access table](self#keys-and-admin-control)).
    ///
    /// The router serves the configuration current when it was made; [`serve`](Self::serve)
    /// routes each request through the configuration current when it arrives.
    pub fn router(&self) -> Router {
        self.live.current.load().router.clone()
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
        let shared = self.current();
        #[cfg(feature = "redis")]
        if let Some(state) = &shared.state {
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
        let _ = self.live.served.set(local);
        reload::loaded(&shared);
        let live = Arc::clone(&self.live);
        let signal = async move {
            shutdown.await;
            let shared = Arc::clone(&live.current.load().shared);
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
        // Plain connections: HTTP/1.1 (no h2c). TLS connections: HTTP/1.1 or HTTP/2, as ALPN
        // and the client's preface say, with the same head limits.
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(shared.header_read_timeout)
            .max_buf_size(shared.max_header_bytes.max(8192));
        let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(shared.header_read_timeout)
            .max_buf_size(shared.max_header_bytes.max(8192));
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(shared.max_header_bytes).unwrap_or(u32::MAX));
        let auto = Arc::new(auto);
        let handshake_timeout = shared.header_read_timeout;
        let slots = Arc::new(Semaphore::new(shared.max_connections));
        drop(shared);
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
            // Each request is served by the generation current when it arrives.
            let live = Arc::clone(&self.live);
            let service = hyper::service::service_fn(move |req| {
                live.current.load().router.clone().oneshot(req)
            });
            match self.live.current.load().shared.tls.clone() {
                None => {
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            turned_away(&e);
                        }
                        drop(slot);
                    });
                }
                Some(tls) => {
                    let watcher = graceful.watcher();
                    let auto = Arc::clone(&auto);
                    tokio::spawn(async move {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                        // The handshake is bounded like the request head: a client that
                        // trickles it is cut off.
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let conn = watcher
                                    .watch(auto.serve_connection(TokioIo::new(stream), service));
                                if let Err(e) = conn.await
                                    && let Some(e) = e.downcast_ref::<hyper::Error>()
                                {
                                    turned_away(e);
                                }
                            }
                            Ok(Err(e)) => tracing::debug!(
                                target: "llm_failover::proxy",
                                "TLS handshake failed: {e}"
                            ),
                            Err(_) => {
                                auth::rejected(access::UNKNOWN_CLIENT, access::REASON_TIMEOUT);
                            }
                        }
                        drop(slot);
                    });
                }
            }
        }
        // Closed now: new connections are refused while those open finish.
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// Counts a connection hyper itself turned away: too slow or too large a request head.
fn turned_away(e: &hyper::Error) {
    if e.is_timeout() {
        auth::rejected(access::UNKNOWN_CLIENT, access::REASON_TIMEOUT);
    } else if e.is_parse_too_large() {
        auth::rejected(access::UNKNOWN_CLIENT, access::REASON_TOO_LARGE);
    }
}

/// The HTTP service of one generation.
fn router_of(shared: &Arc<Shared>) -> Router {
    use axum::middleware::from_fn_with_state;
    let client = Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/responses", post(handlers::responses))
        .route("/v1/models", get(handlers::models))
        .route_layer(from_fn_with_state(Arc::clone(shared), auth::client_gate));
    // Anthropic's clients get every error of these endpoints, the key gate's too, in its shape.
    let messages = Router::new()
        .route("/v1/messages", post(handlers::messages))
        .route("/v1/messages/count_tokens", post(handlers::count_tokens))
        .route_layer(from_fn_with_state(Arc::clone(shared), auth::client_gate))
        .route_layer(axum::middleware::map_response(error::anthropic_errors));
    let status = Router::new()
        .route("/v1/failover/status", get(handlers::status))
        .route_layer(from_fn_with_state(Arc::clone(shared), auth::any_gate));
    let admin = Router::new()
        .route(
            "/v1/failover/breakers/{provider}/{*model}",
            post(admin::breaker),
        )
        .route("/v1/failover/reload", post(admin::reload))
        .route_layer(from_fn_with_state(Arc::clone(shared), auth::admin_gate));
    let mut router = Router::new()
        .merge(client)
        .merge(messages)
        .merge(status)
        .merge(admin)
        .route("/healthz", get(handlers::healthz));
    if shared.metrics.is_some() {
        router = router.route("/metrics", get(handlers::metrics));
    }
    router
        .fallback(handlers::not_found)
        .with_state(Arc::clone(shared))
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
