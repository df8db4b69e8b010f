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
//! `GET /v1/failover/status` (every breaker: state, reason, open until) and `GET /metrics`
//! (when a Prometheus handle is given and metrics have no address of their own).
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
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::breaker::{Registry, RegistryError};
use crate::chain::openai::{Client, Endpoint};
use crate::chain::{Route, RouteError};

pub use self::config::{
    Config, ConfigError, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_SHUTDOWN_GRACE, Located,
};

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
    /// The breakers could not be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A route could not be built.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The HTTP client could not be built (TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
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
    endpoint: Endpoint,
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
}

/// The failover proxy: routes, breakers and upstreams built from a [`Config`].
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Builds the proxy's routes, breakers and upstream clients.
    ///
    /// # Errors
    ///
    /// [`ProxyError::MissingKey`] when a provider's `api_key_env` names a variable that is not
    /// set (`check` only warns about it; serving without the key would fail every request).
    pub fn new(config: &Config) -> Result<Self, ProxyError> {
        if let Some(missing) = config.missing_keys().next() {
            return Err(ProxyError::MissingKey(Box::new(missing.clone())));
        }
        let mut registry = Registry::builder();
        for (name, p) in &config.providers {
            registry = registry.provider_policy(name, p.breaker.clone());
            for model in &p.models {
                registry = registry.target_with_policy(name, model, p.breaker.clone());
            }
        }
        let registry = Arc::new(registry.build()?);
        let mut upstreams = HashMap::new();
        for (name, p) in &config.providers {
            let client = Client::with_connect_timeout(p.connect_timeout)
                .map_err(ProxyError::Client)?
                .with_classifier(Arc::clone(&config.classifier));
            let mut endpoint = Endpoint::new(name, &p.base_url);
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

    /// The routes, in the order of the configuration.
    #[must_use]
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.shared.routes
    }

    /// The HTTP service: every endpoint of the proxy.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/v1/chat/completions", post(handlers::chat))
            .route("/v1/models", get(handlers::models))
            .route("/healthz", get(handlers::healthz))
            .route("/v1/failover/status", get(handlers::status));
        if self.shared.metrics.is_some() {
            router = router.route("/metrics", get(handlers::metrics));
        }
        router
            .fallback(handlers::not_found)
            .with_state(Arc::clone(&self.shared))
    }

    /// Serves on `listener` until `shutdown` completes, then drains as the
    /// [module docs](self#shutdown) say.
    ///
    /// # Errors
    ///
    /// The listener's I/O error.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        let shared = Arc::clone(&self.shared);
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
        // No Nagle delay: stream events are small writes that must leave at once.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await
    }
}
