//! Live reload: the configuration file read again and swapped in whole, without a restart.
//!
//! [`Proxy::reload`] (called on `SIGHUP` by `llm-failover serve`, and by
//! `POST /v1/failover/reload`) reads the file the proxy was started with and checks it
//! completely, as at start: [`Config::from_file`](super::Config::from_file), then everything
//! [`Proxy::new`](super::Proxy::new) refuses (a key variable that is not set, an exposed
//! address without client keys). A file that fails is rejected with the same
//! `file:line:column: field: message` error as at start and the running configuration stays.
//!
//! A good file becomes a new *generation* (routes, upstreams, breakers, keys, limits), stored
//! with one atomic pointer swap (`arc-swap`). A request is served from start to end by the
//! generation that was current when it arrived, so requests in flight finish on the
//! configuration they started with and new requests see the new one; no request fails because
//! of a reload.
//!
//! What carries over:
//!
//! * **Breakers** of a (provider, model), and provider-wide breakers, that exist in both
//!   configurations with an equal breaker policy are the same breakers: state, counts, an
//!   operator's override and its end, backoff. A breaker whose policy changed is **reset**: it
//!   starts closed with empty counts and no override, because its window, thresholds and open
//!   times would not mean the same under the new policy (a warning names it). Breakers of
//!   removed targets are dropped, and their series in `llm_failover_breaker_state` go to 0 in
//!   every state (`breaker_retired` events; see the telemetry module).
//! * **Per-client limits**: a client whose key is unchanged keeps its request-rate bucket
//!   (when its `requests_per_minute` is unchanged) and its in-flight count (when its
//!   `max_concurrent` is unchanged), whatever its name or routes now are.
//! * The metrics handle and the shutdown signal.
//!
//! What does not: `listen`, `metrics_listen`, `max_connections`, `max_header_bytes` and
//! `header_read_timeout` are applied when serving starts; a reload that changes them logs a
//! warning and lists them in its answer (`restart_required`). Everything else, TLS
//! certificates included (for new connections), applies at once.
//!
//! Every reload emits a `config_reload` event (`llm_failover_config_reloads_total{outcome}`,
//! and on success `llm_failover_config_last_reload_success_timestamp_seconds`, which is also
//! set when serving starts).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Config, ConfigError, Generation, Proxy, ProxyError, Shared};
use crate::telemetry::names::{self, breaker as bfield, reload as field};

/// A reload that was rejected: the running configuration stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file cannot be read or is invalid (the same error as `check` and a start give).
    #[error("{0}; the running configuration stays: fix the file and reload again")]
    Config(#[from] ConfigError),
    /// The file is valid but cannot serve (a key variable not set, an exposed address).
    #[error("{0}; the running configuration stays: fix it and reload again")]
    Proxy(#[from] ProxyError),
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The routes now served, in the order of the file.
    pub routes: Vec<String>,
    /// Breakers carried over with their state (`provider/model`, `*` for provider-wide).
    pub kept: Vec<String>,
    /// Breakers that are new.
    pub added: Vec<String>,
    /// Breakers of targets no longer configured.
    pub removed: Vec<String>,
    /// Breakers whose policy changed: they start again closed.
    pub reset: Vec<String>,
    /// Settings that changed but apply only after a restart.
    pub restart_required: Vec<&'static str>,
    /// The file's warnings (as `check` prints them).
    pub warnings: Vec<String>,
}

/// The settings that take effect only when serving starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RestartOnly {
    /// The file's `listen`; `None` when `serve --listen` chose the address.
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    max_connections: usize,
    max_header_bytes: usize,
    header_read_timeout: Duration,
}

impl RestartOnly {
    pub(super) fn of(config: &Config) -> Self {
        Self {
            listen: (!config.server.listen_from_flag).then_some(config.server.listen),
            metrics_listen: config.server.metrics_listen,
            max_connections: config.server.max_connections,
            max_header_bytes: config.server.max_header_bytes,
            header_read_timeout: config.server.header_read_timeout,
        }
    }

    fn changed(&self, new: &Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if let (Some(a), Some(b)) = (self.listen, new.listen)
            && a != b
        {
            out.push("server.listen");
        }
        if self.metrics_listen != new.metrics_listen {
            out.push("server.metrics_listen");
        }
        if self.max_connections != new.max_connections {
            out.push("server.max_connections");
        }
        if self.max_header_bytes != new.max_header_bytes {
            out.push("server.max_header_bytes");
        }
        if self.header_read_timeout != new.header_read_timeout {
            out.push("server.header_read_timeout");
        }
        out
    }
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `config_reload` event of the load at start (serving begins): the timestamp gauge, and
/// both outcome series of the reload counter at 0.
pub(super) fn loaded(shared: &Shared) {
    tracing::event!(
        name: names::CONFIG_RELOAD_EVENT,
        target: names::PROXY_TARGET,
        tracing::Level::DEBUG,
        { field::OUTCOME } = field::OUTCOME_OK,
        { field::INITIAL } = true,
        { field::LOADED_AT } = epoch_seconds(shared.loaded_at),
        "configuration {} loaded",
        shared.path.display()
    );
}

fn breaker_event(name: &'static str, provider: &str, model: &str) {
    if name == names::BREAKER_RETIRED_EVENT {
        tracing::event!(
            name: names::BREAKER_RETIRED_EVENT,
            target: names::BREAKER_TARGET,
            tracing::Level::INFO,
            { bfield::PROVIDER } = provider,
            { bfield::MODEL } = model,
            "breaker {provider}/{model} removed by a reload"
        );
    } else {
        tracing::event!(
            name: names::BREAKER_REGISTERED_EVENT,
            target: names::BREAKER_TARGET,
            tracing::Level::INFO,
            { bfield::PROVIDER } = provider,
            { bfield::MODEL } = model,
            "breaker {provider}/{model} added by a reload"
        );
    }
}

impl Proxy {
    /// Reads the configuration file again and, if it is valid and can serve, swaps it in (see
    /// [reloading](crate::proxy#reloading)). Safe to call while
    /// serving, from any thread; reloads run one at a time. It reads a file and builds HTTP
    /// clients, so call it from a blocking context (`spawn_blocking`) inside a runtime.
    ///
    /// ```no_run
    /// # fn run(proxy: &llm_failover::proxy::Proxy) {
    /// match proxy.reload() {
    ///     Ok(done) => println!("serving {:?}; reset breakers: {:?}", done.routes, done.reset),
    ///     Err(e) => eprintln!("{e}"), // file:line:column: field: message; the old config serves
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReloadError::Config`] for a file that cannot be read or is invalid,
    /// [`ReloadError::Proxy`] for one that [`Proxy::new`] would refuse. Either way nothing
    /// changed.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one = self
            .live
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.current();
        let result = self.prepare(&old);
        let (outcome, loaded_at) = match &result {
            Ok(_) => (field::OUTCOME_OK, Some(epoch_seconds(SystemTime::now()))),
            Err(_) => (field::OUTCOME_ERROR, None),
        };
        let (config, shared, wanted) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::event!(
                    name: names::CONFIG_RELOAD_EVENT,
                    target: names::PROXY_TARGET,
                    tracing::Level::ERROR,
                    { field::OUTCOME } = outcome,
                    { field::INITIAL } = false,
                    "reload rejected: {e}"
                );
                return Err(e);
            }
        };
        let mut done = diff(&old, &shared, &config);
        done.restart_required = old.restart_only.changed(&wanted);
        for name in &done.removed {
            if let Some((p, m)) = name.split_once('/') {
                breaker_event(names::BREAKER_RETIRED_EVENT, p, m);
            }
        }
        for name in &done.reset {
            tracing::warn!(
                target: names::PROXY_TARGET,
                "breaker {name}: its policy changed, so it starts again closed with empty counts"
            );
            if let Some((p, m)) = name.split_once('/') {
                breaker_event(names::BREAKER_RETIRED_EVENT, p, m);
            }
        }
        for name in done.added.iter().chain(&done.reset) {
            if let Some((p, m)) = name.split_once('/') {
                breaker_event(names::BREAKER_REGISTERED_EVENT, p, m);
            }
        }
        for w in &done.warnings {
            tracing::warn!(target: names::PROXY_TARGET, "{w}");
        }
        if !done.restart_required.is_empty() {
            tracing::warn!(
                target: names::PROXY_TARGET,
                "{} changed; these apply only when the proxy starts: restart it to apply them",
                done.restart_required.join(", ")
            );
        }
        self.live.current.store(Generation::new(shared));
        tracing::event!(
            name: names::CONFIG_RELOAD_EVENT,
            target: names::PROXY_TARGET,
            tracing::Level::INFO,
            { field::OUTCOME } = outcome,
            { field::INITIAL } = false,
            { field::LOADED_AT } = loaded_at,
            "configuration {} reloaded: routes {:?}; breakers kept {}, added {}, removed {}, reset {}",
            old.path.display(),
            done.routes,
            done.kept.len(),
            done.added.len(),
            done.removed.len(),
            done.reset.len(),
        );
        Ok(done)
    }

    /// The new generation, checked; nothing is swapped yet.
    fn prepare(&self, old: &Shared) -> Result<(Config, Shared, RestartOnly), ReloadError> {
        let mut config = Config::from_file(&old.path)?;
        // As the file gives them, before the served address replaces its `listen`.
        let wanted = RestartOnly::of(&config);
        // The listener stays: the new generation is checked against the address served.
        config.set_listen(self.live.served.get().copied().unwrap_or(old.listen));
        let mut shared = Self::build(&config, Some(old))?;
        // What serves stays what was started with, so the warning repeats until a restart.
        shared.restart_only = old.restart_only.clone();
        Ok((config, shared, wanted))
    }
}

/// What the swap from `old` to `new` changes.
fn diff(old: &Shared, new: &Shared, config: &Config) -> Reloaded {
    let name = |p: &str, m: &str| format!("{p}/{m}");
    let (mut kept, mut added, mut reset) = (Vec::new(), Vec::new(), Vec::new());
    for b in new.registry.iter() {
        let n = name(b.provider(), b.model());
        if old.registry.holds(b) {
            kept.push(n);
        } else if old.registry.breaker(b.provider(), b.model()).is_some() {
            reset.push(n);
        } else {
            added.push(n);
        }
    }
    let removed: BTreeSet<String> = old
        .registry
        .iter()
        .filter(|b| new.registry.breaker(b.provider(), b.model()).is_none())
        .map(|b| name(b.provider(), b.model()))
        .collect();
    kept.sort();
    added.sort();
    reset.sort();
    Reloaded {
        routes: config.route_names().map(str::to_owned).collect(),
        kept,
        added,
        removed: removed.into_iter().collect(),
        reset,
        restart_required: Vec::new(),
        warnings: config.warnings().iter().map(ToString::to_string).collect(),
    }
}

/// For the reload endpoint: the generation's proxy, if it is still serving.
pub(super) fn proxy_of(shared: &Shared) -> Option<Proxy> {
    shared.live.upgrade().map(|live| Proxy { live })
}
