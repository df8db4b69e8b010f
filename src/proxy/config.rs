//! The proxy's configuration file: read, checked against everything it names, and turned
//! into the parts the proxy runs on.
//!
//! Every error names the file, the line and column, and the field (`providers.openai.base_url`),
//! and says what to write instead. Unknown fields are errors, not silently ignored: a typo in
//! `atempt_timeout` must not leave a default in place that the operator thinks they changed.
//!
//! Breaker and route policies are layered: `[breaker]` and `[route]` hold the defaults,
//! `[providers.NAME.breaker]` and `[routes.NAME.policy]` override them field by field (a
//! `reasons` or `actions` table merges by reason).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::Reason;
use crate::breaker::BreakerPolicy;
use crate::chain::{Pick, RoutePolicy, Tier};
use crate::classify::{Classifier, ClassifierBuilder};

mod access;
mod observe;
mod tls;

pub(crate) use self::access::{AdminConfig, ClientConfig, KeyHash};
use self::access::{AdminFile, ClientFile};

/// The address `serve` listens on when the configuration names none: loopback only.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The largest request body accepted by default (4 MiB: long prompts and a few inline images).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long in-flight requests may go on after a shutdown signal by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The largest request head (request line and headers) accepted by default; a larger one gets
/// a 431 and the connection is closed.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long a client may take to send a request's headers by default (this also closes a
/// keep-alive connection idle for that long). A slow client is cut off here.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's body by default (a 408 after that).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How many client connections are served at once by default; further connections wait in
/// the listen backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// A configuration that cannot be used: where and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid: a syntax error, an unknown or mistyped field, a value out of
    /// range, or a name that points nowhere.
    #[error("{}", Located::fmt_diagnostic(.0))]
    Invalid(Box<Located>),
}

/// A problem at a place in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Located {
    /// The file (or the name given to [`Config::parse`]).
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The dotted path of the field (`routes.chat.targets`), when known.
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl Located {
    fn fmt_diagnostic(&self) -> String {
        let mut s = format!("{}:{}:{}: ", self.path.display(), self.line, self.column);
        if let Some(field) = &self.field {
            s.push_str(field);
            s.push_str(": ");
        }
        s.push_str(&self.message);
        s
    }
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.fmt_diagnostic())
    }
}

impl ConfigError {
    /// The place of an [`Invalid`](Self::Invalid) error.
    #[must_use]
    pub fn location(&self) -> Option<&Located> {
        match self {
            Self::Invalid(l) => Some(l),
            Self::Read { .. } => None,
        }
    }
}

/// A checked configuration: what `serve` runs and `check` reports on.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) path: PathBuf,
    pub(crate) server: Server,
    pub(crate) providers: BTreeMap<String, Provider>,
    pub(crate) routes: Vec<RouteConfig>,
    /// The built-in rules plus every provider's `[classify]` overrides.
    pub(crate) classifier: Arc<Classifier>,
    /// Problems that do not stop `check`; the key variables that are not set also stop
    /// `serve` ([`Config::missing_keys`]).
    pub(crate) warnings: Vec<Located>,
    /// `[[clients]]`: who may use the proxy. Empty: no client key is asked for.
    pub(crate) clients: Vec<ClientConfig>,
    /// `[admin]`: who may steer the breakers.
    pub(crate) admin: Option<AdminConfig>,
    /// The `[state]` section with `backend = "redis"` and its URL variable set.
    pub(crate) state: Option<crate::state::StateConfig>,
    /// `[telemetry]` (or the `OTEL_*` variables): where spans are exported, if anywhere.
    pub(crate) otlp: Option<crate::telemetry::OtlpSettings>,
    /// `[log] format`, when the file sets it.
    pub(crate) log_format: Option<crate::telemetry::LogFormat>,
}

/// The `[server]` section.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) listen: SocketAddr,
    /// `listen` came from `serve --listen`, not from the file.
    pub(crate) listen_from_flag: bool,
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) max_body_bytes: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) allow_unauthenticated: bool,
    pub(crate) max_header_bytes: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) max_connections: usize,
    /// `tls_cert` and `tls_key`, read and checked: serve HTTPS with this.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// One `[providers.NAME]` section, checked.
#[derive(Clone)]
pub(crate) struct Provider {
    pub(crate) base_url: String,
    /// The key, read from the environment variable the configuration names.
    pub(crate) api_key: Option<String>,
    /// Send the key as this query parameter instead of `Authorization: Bearer`.
    pub(crate) api_key_query: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) breaker: BreakerPolicy,
    pub(crate) models: Vec<String>,
    /// Send the calling client's own key upstream instead of `api_key` (bring your own key).
    pub(crate) forward_client_key: bool,
    /// `max_inflight` of each of the provider's models, unless `models.NAME` says otherwise.
    pub(crate) max_inflight: Option<u32>,
    /// Per-model limits (`[providers.NAME.models.MODEL]`).
    pub(crate) model_limits: BTreeMap<String, u32>,
    /// `rpm` / `tpm` of each of the provider's models, unless `models.NAME` says otherwise.
    pub(crate) rate: crate::chain::RateLimits,
    /// Per-model `rpm` / `tpm`, each overriding the provider's.
    pub(crate) model_rates: BTreeMap<String, crate::chain::RateLimits>,
    /// `slow_start`: the ramp of the provider's models after a recovery.
    pub(crate) slow_start: Option<crate::chain::SlowStart>,
    /// `max_inflight_total`: requests in flight over all the provider's models together.
    pub(crate) max_inflight_total: Option<u32>,
    /// `prefill`: how the provider continues an assistant prefill (stream resume).
    pub(crate) prefill: crate::protocol::openai_chat::Prefill,
    /// `api`: the wire protocol the provider speaks.
    pub(crate) api: crate::protocol::Api,
}

impl Provider {
    /// The concurrency limit of `model`, if any.
    pub(crate) fn max_inflight(&self, model: &str) -> Option<u32> {
        self.model_limits.get(model).copied().or(self.max_inflight)
    }

    /// The requests and tokens per minute of `model`: the model's own, else the provider's.
    pub(crate) fn rate_limits(&self, model: &str) -> crate::chain::RateLimits {
        let own = self.model_rates.get(model).copied().unwrap_or_default();
        let mut limits = crate::chain::RateLimits::new();
        if let Some(n) = own.requests_per_minute.or(self.rate.requests_per_minute) {
            limits = limits.rpm(n);
        }
        if let Some(n) = own.tokens_per_minute.or(self.rate.tokens_per_minute) {
            limits = limits.tpm(n);
        }
        limits
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("base_url", &self.base_url)
            .field("api", &self.api)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_query", &self.api_key_query)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("forward_client_key", &self.forward_client_key)
            .finish_non_exhaustive()
    }
}

/// One `[routes.NAME]` section, checked.
#[derive(Debug, Clone)]
pub(crate) struct RouteConfig {
    pub(crate) name: String,
    /// The tiers in order; `targets = [...]` is a list of one-target tiers.
    pub(crate) tiers: Vec<Tier>,
    pub(crate) larger_context: Vec<(String, String)>,
    pub(crate) policy: RoutePolicy,
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerFile,
    breaker: Option<Spanned<toml::Table>>,
    route: Option<Spanned<toml::Table>>,
    #[serde(default)]
    providers: BTreeMap<Spanned<String>, Spanned<ProviderFile>>,
    #[serde(default)]
    routes: BTreeMap<Spanned<String>, Spanned<RouteFile>>,
    #[serde(default)]
    clients: Vec<Spanned<ClientFile>>,
    admin: Option<Spanned<AdminFile>>,
    state: Option<Spanned<StateFile>>,
    telemetry: Option<Spanned<observe::TelemetryFile>>,
    log: Option<Spanned<observe::LogFile>>,
}

/// The default `[state] url_env`.
pub const DEFAULT_STATE_URL_ENV: &str = "LLM_FAILOVER_REDIS_URL";

/// `[state]`: the shared breaker-state backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    backend: Spanned<String>,
    url_env: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    #[serde(default, with = "crate::duration::option")]
    timeout: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    reconcile_interval: Option<Duration>,
    replica: Option<String>,
    fleet_counting: Option<bool>,
    #[serde(default, with = "crate::duration::option")]
    fleet_window: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    flush_interval: Option<Duration>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    listen: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<usize>>,
    #[serde(default, with = "crate::duration::option")]
    shutdown_grace: Option<Duration>,
    allow_unauthenticated: Option<bool>,
    max_header_bytes: Option<Spanned<usize>>,
    #[serde(default, with = "crate::duration::option")]
    header_read_timeout: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    body_read_timeout: Option<Duration>,
    max_connections: Option<Spanned<usize>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    base_url: Spanned<String>,
    api_key_env: Option<Spanned<String>>,
    api_key_query: Option<String>,
    #[serde(default, with = "crate::duration::option")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "crate::duration::option")]
    attempt_timeout: Option<Duration>,
    breaker: Option<Spanned<toml::Table>>,
    #[serde(default)]
    classify: ClassifyFile,
    #[serde(default)]
    forward_client_key: bool,
    /// The most requests in flight on each of the provider's models.
    max_inflight: Option<Spanned<u32>>,
    /// The most requests in flight over all the provider's models together.
    max_inflight_total: Option<Spanned<u32>>,
    /// Requests per minute of each of the provider's models.
    rpm: Option<Spanned<u32>>,
    /// Tokens per minute of each of the provider's models.
    tpm: Option<Spanned<u32>>,
    /// The window over which a recovered target's share ramps up (Envoy's slow start).
    #[serde(default, with = "crate::duration::option")]
    slow_start: Option<Duration>,
    /// How fast the ramp rises early (1: linear).
    slow_start_aggression: Option<Spanned<f64>>,
    /// How the provider continues an assistant prefill, for stream resume.
    prefill: Option<Spanned<String>>,
    /// The wire protocol the provider speaks.
    api: Option<Spanned<String>>,
    /// Limits of one model.
    #[serde(default)]
    models: BTreeMap<String, ModelFile>,
}

/// `[providers.NAME.models.MODEL]`: one target's own limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    max_inflight: Option<Spanned<u32>>,
    rpm: Option<Spanned<u32>>,
    tpm: Option<Spanned<u32>>,
}

/// `[providers.NAME.classify]`: this provider's own meanings for statuses, codes and wordings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyFile {
    #[serde(default)]
    status: BTreeMap<Spanned<String>, Reason>,
    #[serde(default)]
    code: BTreeMap<String, Reason>,
    #[serde(default)]
    pattern: Vec<Spanned<PatternFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    regex: String,
    reason: Reason,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    targets: Option<Spanned<Vec<Spanned<String>>>>,
    tiers: Option<Spanned<Vec<Spanned<TierFile>>>>,
    #[serde(default)]
    larger_context: Vec<Spanned<String>>,
    policy: Option<Spanned<toml::Table>>,
}

/// One tier of `tiers = [{ pick = "least_loaded", targets = ["a/m", "b/m"] }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    #[serde(default)]
    pick: Pick,
    targets: Vec<Spanned<TargetFile>>,
}

/// `"provider/model"`, or `{ target = "provider/model", weight = 3 }` (for `weighted`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TargetFile {
    Plain(String),
    Weighted { target: String, weight: u32 },
}

impl TargetFile {
    fn parts(&self) -> (&str, u32) {
        match self {
            TargetFile::Plain(t) => (t, 1),
            TargetFile::Weighted { target, weight } => (target, *weight),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and checking.

/// Where a byte offset is: 1-based line and column.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset.min(src.len())).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// The dotted path of the key at `offset`: the last `[table]` header before it and the key
/// that starts its line. Best effort, for messages only.
fn field_at(src: &str, offset: usize) -> Option<String> {
    let before = src.get(..offset.min(src.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = src.get(line_start..)?.lines().next()?.trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (Some(t), None) => Some(t),
        (None, Some(k)) => Some(k),
        (None, None) => None,
    }
}

/// Errors of one file, with its text at hand to place them.
struct Checker<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Checker<'_> {
    fn at(
        &self,
        span: &Range<usize>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Located {
        let (line, column) = line_col(self.src, span.start);
        Located {
            path: self.path.to_owned(),
            line,
            column,
            field,
            message: message.into(),
        }
    }

    fn error(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid(Box::new(self.at(span, Some(field.into()), message)))
    }

    /// Deserializes the merge of `layers` (later ones override earlier ones, sub-tables merge
    /// key by key) into `T`. An error is placed on the key it concerns, in the last layer that
    /// sets it (else at the start of the last layer).
    fn layered<T: serde::de::DeserializeOwned>(
        &self,
        section: &str,
        layers: &[&Spanned<toml::Table>],
    ) -> Result<T, ConfigError> {
        let mut merged = toml::Table::new();
        for layer in layers {
            merge(&mut merged, layer.get_ref());
        }
        let e = match toml::Value::Table(merged).try_into::<T>() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let message = e.message().trim().to_owned();
        // The key: the one the message names, else the first key that fails on its own.
        let named = named_field(&message).or_else(|| {
            layers
                .iter()
                .rev()
                .find_map(|l| culprit::<T>(l.get_ref(), &[]))
        });
        let found = named.as_deref().and_then(|n| {
            layers.iter().rev().find_map(|l| {
                if n.contains('.') {
                    // A full path from `culprit`.
                    let mut cur = Some(l.get_ref());
                    let parts: Vec<&str> = n.split('.').collect();
                    for p in &parts[..parts.len() - 1] {
                        cur = cur.and_then(|t| t.get(*p)).and_then(toml::Value::as_table);
                    }
                    let last = parts.last().copied().unwrap_or_default();
                    cur.filter(|t| t.contains_key(last))
                        .map(|_| (*l, n.to_owned()))
                } else {
                    key_path(l.get_ref(), n).map(|path| (*l, path))
                }
            })
        });
        let (span, field) = match (found, layers.last()) {
            (Some((layer, path)), _) => (
                self.key_span(layer.span(), section, &path),
                format!("{section}.{path}"),
            ),
            (None, Some(layer)) => (layer.span(), section.to_owned()),
            (None, None) => (0..0, section.to_owned()),
        };
        Err(self.error(&span, field, message))
    }

    /// The span of the line that sets `path` (`reasons.dns.effect`) in the section starting
    /// at `within`, or `within` when it cannot be found.
    fn key_span(&self, within: Range<usize>, section: &str, path: &str) -> Range<usize> {
        let (table, key) = match path.rsplit_once('.') {
            Some((t, k)) => (format!("{section}.{t}"), k),
            None => (section.to_owned(), path),
        };
        // From the start of the line the section starts on (a dotted header's span starts
        // inside it).
        let line_start = self
            .src
            .get(..within.start)
            .and_then(|b| b.rfind('\n'))
            .map_or(0, |i| i + 1);
        let text = self.src.get(line_start..).unwrap_or_default();
        let mut current = String::new();
        let mut offset = line_start;
        for line in text.split_inclusive('\n') {
            let t = line.trim();
            if let Some(header) = t.strip_prefix('[') {
                let name: String = header
                    .trim_matches(|c| c == '[' || c == ']')
                    .chars()
                    .filter(|c| *c != '"' && *c != '\'' && !c.is_whitespace())
                    .collect();
                if !name.starts_with(section) {
                    if offset > line_start {
                        break;
                    }
                } else {
                    current = name;
                }
            } else if current == table
                && t.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                let start = offset + (line.len() - line.trim_start().len());
                return start..start + key.len();
            }
            offset += line.len();
        }
        within
    }
}

/// The dotted path of the first key of `t` that fails to deserialize into `T` on its own
/// (descending into sub-tables to the deepest failing key); `prefix` is where `t` sits.
fn culprit<T: serde::de::DeserializeOwned>(t: &toml::Table, prefix: &[&str]) -> Option<String> {
    // `value` placed at `prefix.key` in an otherwise empty table.
    let alone = |key: &str, value: &toml::Value| {
        let mut v = toml::Value::Table(std::iter::once((key.to_owned(), value.clone())).collect());
        for p in prefix.iter().rev() {
            v = toml::Value::Table(std::iter::once(((*p).to_owned(), v)).collect());
        }
        v
    };
    t.iter().find_map(|(k, v)| {
        alone(k, v).try_into::<T>().is_err().then(|| {
            let mut path = prefix.to_vec();
            path.push(k);
            // Descend only when the key itself is fine (an empty table there is accepted).
            v.as_table()
                .filter(|_| {
                    alone(k, &toml::Value::Table(toml::Table::new()))
                        .try_into::<T>()
                        .is_ok()
                })
                .and_then(|sub| culprit::<T>(sub, &path))
                .unwrap_or_else(|| path.join("."))
        })
    })
}

/// The dotted path to `key` in `t`: `key` itself at the top, else the first nested table
/// that holds it (`reasons.dns.effect`).
fn key_path(t: &toml::Table, key: &str) -> Option<String> {
    if t.contains_key(key) {
        return Some(key.to_owned());
    }
    t.iter().find_map(|(k, v)| {
        v.as_table()
            .and_then(|sub| key_path(sub, key))
            .map(|p| format!("{k}.{p}"))
    })
}

/// The field an error message names: serde's "unknown field `x`" / "missing field `x`", or a
/// policy error's leading field name.
fn named_field(message: &str) -> Option<String> {
    if let Some(rest) = message.split_once("field `").map(|(_, r)| r) {
        return rest.split_once('`').map(|(f, _)| f.to_owned());
    }
    let first = message.split([' ', ':']).next()?;
    (first.contains('_') || first.contains('.')).then(|| first.trim_matches('`').to_owned())
}

/// `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `provider/model`: the provider is everything before the first `/` (model names may hold
/// more, like `meta-llama/llama-3.1-8b`).
fn split_target(s: &str) -> Option<(&str, &str)> {
    let (p, m) = s.split_once('/')?;
    (!p.is_empty() && !m.is_empty()).then_some((p, m))
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

/// Whether `model` looks like an embedding model by its name: it contains `embed`
/// (`text-embedding-3-small`, `nomic-embed-text`, `mxbai-embed-large`) or `bge-` (`bge-m3`,
/// `BAAI/bge-large-en-v1.5`), ignoring case. A heuristic for [`embeddings_mix`]'s warning
/// only: what `POST /v1/embeddings` serves is decided by the route's shape, never by names.
pub(super) fn looks_like_embedding_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.contains("embed") || m.contains("bge-")
}

/// The warning for a route that looks meant for embeddings but cannot serve them: its
/// targets (`models`, in order, `larger_context` included, as `POST /v1/embeddings` counts
/// them) name different upstream models, one of which [looks like an embedding
/// model](looks_like_embedding_model). The endpoint refuses such a route with a 400
/// `route_not_embeddable`; `check` says so before a client finds out. `None` for a route of
/// one model, or one of chat models only.
fn embeddings_mix(route: &str, models: &[&str]) -> Option<String> {
    let mut distinct: Vec<&str> = Vec::new();
    for m in models {
        if !distinct.contains(m) {
            distinct.push(m);
        }
    }
    let embedding = distinct
        .iter()
        .copied()
        .find(|m| looks_like_embedding_model(m))?;
    if distinct.len() < 2 {
        return None;
    }
    Some(format!(
        "this route's targets name different upstream models ({}), and {embedding} looks like an \
         embedding model: POST /v1/embeddings will refuse the route `{route}` with 400 \
         route_not_embeddable, because vectors of two models cannot be compared (failing over \
         between them would corrupt a search index); make one route per embedding model whose \
         targets all name that model (targets = [\"PROVIDER/{embedding}\", ...]), and keep chat \
         models on routes of their own",
        distinct.join(", "),
    ))
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Invalid`] naming the
    /// line and field of the first problem.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&src, path)
    }

    /// Checks a configuration given as text; `path` names it in errors.
    ///
    /// ```
    /// use llm_failover::proxy::Config;
    ///
    /// let config = Config::parse(r#"
    ///     [providers.local]
    ///     base_url = "http://127.0.0.1:11434/v1"
    ///
    ///     [routes.chat]
    ///     targets = ["local/llama3"]
    /// "#, "inline.toml")?;
    /// assert_eq!(config.route_names().collect::<Vec<_>>(), ["chat"]);
    ///
    /// let err = Config::parse("[routes.chat]\ntargets = [\"nowhere/x\"]\n", "bad.toml").unwrap_err();
    /// assert!(err.to_string().starts_with("bad.toml:2:"), "{err}");
    /// assert!(err.to_string().contains("routes.chat.targets"), "{err}");
    /// # Ok::<(), llm_failover::proxy::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the line and field of the first problem.
    pub fn parse(src: &str, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::parse_with_env(src, path, |var| std::env::var(var).ok())
    }

    /// [`Config::parse`] with `env` in place of the process environment for `api_key_env`
    /// (for tests, and for embedding applications that keep keys elsewhere).
    ///
    /// ```
    /// use llm_failover::proxy::Config;
    ///
    /// let src = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"P_KEY\"\n\
    ///            [routes.chat]\ntargets = [\"p/m\"]\n";
    /// let config = Config::parse_with_env(src, "inline.toml", |var| (var == "P_KEY").then(|| "k".into()))?;
    /// assert!(config.warnings().is_empty());
    /// # Ok::<(), llm_failover::proxy::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Config::parse`].
    pub fn parse_with_env(
        src: &str,
        path: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let c = Checker { path, src };
        let file: File = toml::from_str(src).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_owned();
            let field = named_field(&message)
                .filter(|_| message.contains("field `"))
                .map(|n| match field_at(src, span.start) {
                    Some(t) if !t.ends_with(&n) => format!("{t}.{n}"),
                    Some(t) => t,
                    None => n,
                })
                .or_else(|| field_at(src, span.start));
            ConfigError::Invalid(Box::new(c.at(&span, field, message)))
        })?;
        let server = Self::server(&c, file.server)?;
        let mut warnings = Vec::new();
        let state = match file.state {
            Some(st) => Self::check_state(&c, st, &env, &mut warnings)?,
            None => None,
        };
        let otlp = observe::telemetry(&c, file.telemetry, &env, &mut warnings)?;
        let log_format = observe::log(&c, file.log)?;
        let empty = Spanned::new(0..0, toml::Table::new());
        let default_breaker = file.breaker.as_ref().unwrap_or(&empty);
        let default_route = file.route.as_ref().unwrap_or(&empty);
        // Checked alone first, so an error in the defaults is reported there.
        c.layered::<BreakerPolicy>("breaker", &[default_breaker])?;
        c.layered::<RoutePolicy>("route", &[default_route])?;

        let mut providers = BTreeMap::new();
        for (name, p) in file.providers {
            let (name_span, name) = (name.span(), name.into_inner());
            let p = p.into_inner();
            if name.is_empty() || name.contains('/') || name == "*" {
                return Err(c.error(
                    &name_span,
                    format!("providers.{name}"),
                    "a provider name must be non-empty and contain no '/' and not be '*'",
                ));
            }
            let field = |f: &str| format!("providers.{name}.{f}");
            let url = p.base_url.get_ref();
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                        return Err(c.error(
                            &p.base_url.span(),
                            field("base_url"),
                            "put no credentials or query in base_url; name the key's environment variable in api_key_env",
                        ));
                    }
                }
                _ => {
                    return Err(c.error(
                        &p.base_url.span(),
                        field("base_url"),
                        format!("{url:?} is not an http(s) URL; write it like \"https://api.openai.com/v1\""),
                    ));
                }
            }
            let api_key = match &p.api_key_env {
                None => None,
                Some(var) => match env(var.get_ref()).filter(|k| !k.trim().is_empty()) {
                    Some(key) => Some(key),
                    None => {
                        warnings.push(c.at(
                            &var.span(),
                            Some(field("api_key_env")),
                            format!(
                                "environment variable {} is not set; export it before `serve`, or remove api_key_env if {name} needs no key",
                                var.get_ref()
                            ),
                        ));
                        None
                    }
                },
            };
            let mut layers = vec![default_breaker];
            if let Some(b) = &p.breaker {
                layers.push(b);
            }
            let breaker = c.layered::<BreakerPolicy>(&field("breaker"), &layers)?;
            let limit = |v: &Option<Spanned<u32>>, f: &str| match v {
                Some(v) if *v.get_ref() == 0 => Err(c.error(
                    &v.span(),
                    f.to_owned(),
                    "must be at least 1; leave it out for no limit",
                )),
                Some(v) => Ok(Some(*v.get_ref())),
                None => Ok(None),
            };
            let max_inflight = limit(&p.max_inflight, &field("max_inflight"))?;
            let max_inflight_total = limit(&p.max_inflight_total, &field("max_inflight_total"))?;
            let mut model_limits = BTreeMap::new();
            for (model, m) in &p.models {
                if let Some(n) = limit(
                    &m.max_inflight,
                    &field(&format!("models.{model}.max_inflight")),
                )? {
                    model_limits.insert(model.clone(), n);
                }
            }
            let rates = |rpm: &Option<Spanned<u32>>, tpm: &Option<Spanned<u32>>, at: &str| {
                let mut r = crate::chain::RateLimits::new();
                if let Some(n) = limit(rpm, &field(&format!("{at}rpm")))? {
                    r = r.rpm(n);
                }
                if let Some(n) = limit(tpm, &field(&format!("{at}tpm")))? {
                    r = r.tpm(u64::from(n));
                }
                Ok(r)
            };
            let rate = rates(&p.rpm, &p.tpm, "")?;
            let slow_start = match (p.slow_start, &p.slow_start_aggression) {
                (_, Some(a)) if !(*a.get_ref() > 0.0 && *a.get_ref() <= 100.0) => {
                    return Err(c.error(
                        &a.span(),
                        field("slow_start_aggression"),
                        "must be above 0 and at most 100 (1: a linear ramp)",
                    ));
                }
                (Some(window), a) if !window.is_zero() => Some(
                    crate::chain::SlowStart::new(window)
                        .aggression(a.as_ref().map_or(1.0, |a| *a.get_ref())),
                ),
                _ => None,
            };
            let api: crate::protocol::Api = match &p.api {
                Some(v) => v
                    .get_ref()
                    .parse()
                    .map_err(|e: String| c.error(&v.span(), field("api"), e))?,
                None => crate::protocol::Api::default(),
            };
            let prefill = match &p.prefill {
                Some(v) => v
                    .get_ref()
                    .parse()
                    .map_err(|e: String| c.error(&v.span(), field("prefill"), e))?,
                // Anthropic continues a trailing assistant message: its documented prefill.
                None if api == crate::protocol::Api::AnthropicMessages => {
                    crate::protocol::openai_chat::Prefill::Assistant
                }
                None => crate::protocol::openai_chat::Prefill::for_base_url(p.base_url.get_ref()),
            };
            let mut model_rates = BTreeMap::new();
            for (model, m) in &p.models {
                let r = rates(&m.rpm, &m.tpm, &format!("models.{model}."))?;
                if !r.is_none() {
                    model_rates.insert(model.clone(), r);
                }
            }
            providers.insert(
                name.clone(),
                (
                    Provider {
                        base_url: p.base_url.into_inner(),
                        api_key,
                        api_key_query: p.api_key_query,
                        connect_timeout: p.connect_timeout.unwrap_or(Duration::from_secs(5)),
                        attempt_timeout: p.attempt_timeout,
                        breaker,
                        models: Vec::new(),
                        forward_client_key: p.forward_client_key,
                        max_inflight,
                        model_limits,
                        rate,
                        model_rates,
                        slow_start,
                        max_inflight_total,
                        prefill,
                        api,
                    },
                    p.classify,
                ),
            );
        }

        let mut routes = Vec::new();
        for (name, r) in file.routes {
            let (name_span, name) = (name.span(), name.into_inner());
            let r = r.into_inner();
            let field = |f: &str| format!("routes.{name}.{f}");
            if name.is_empty() {
                return Err(c.error(&name_span, "routes", "a route name must not be empty"));
            }
            let mut resolve = |list: &[Spanned<String>], f: &str| {
                let mut out = Vec::new();
                for t in list {
                    let Some((p, m)) = split_target(t.get_ref()) else {
                        return Err(c.error(
                            &t.span(),
                            field(f),
                            format!("{:?} is not \"provider/model\"", t.get_ref()),
                        ));
                    };
                    let Some((provider, _)) = providers.get_mut(p) else {
                        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
                        return Err(c.error(
                            &t.span(),
                            field(f),
                            format!(
                                "no provider {p:?}; add a [providers.{p}] section or use one of {known:?}"
                            ),
                        ));
                    };
                    let target = (p.to_owned(), m.to_owned());
                    if out.contains(&target) {
                        return Err(c.error(
                            &t.span(),
                            field(f),
                            format!("{p}/{m} is listed twice"),
                        ));
                    }
                    if !provider.models.iter().any(|x| x == m) {
                        provider.models.push(m.to_owned());
                    }
                    out.push(target);
                }
                Ok(out)
            };
            let tiers = match (&r.targets, &r.tiers) {
                (Some(_), Some(tiers)) => {
                    return Err(c.error(
                        &tiers.span(),
                        field("tiers"),
                        "write either targets = [...] or tiers = [...], not both",
                    ));
                }
                (None, None) => {
                    return Err(c.error(
                        &name_span,
                        field("targets"),
                        "a route needs at least one target: targets = [\"provider/model\", ...] or tiers = [{ pick = \"least_loaded\", targets = [...] }, ...]",
                    ));
                }
                (Some(targets), None) => {
                    if targets.get_ref().is_empty() {
                        return Err(c.error(
                            &targets.span(),
                            field("targets"),
                            "a route needs at least one target, written \"provider/model\"",
                        ));
                    }
                    resolve(targets.get_ref(), "targets")?
                        .into_iter()
                        .map(|(p, m)| Tier::ordered().target(&p, &m))
                        .collect()
                }
                (None, Some(tiers)) => {
                    if tiers.get_ref().is_empty() {
                        return Err(c.error(
                            &tiers.span(),
                            field("tiers"),
                            "a route needs at least one tier: tiers = [{ targets = [\"provider/model\"] }]",
                        ));
                    }
                    let mut seen = Vec::new();
                    let mut out = Vec::new();
                    for tier in tiers.get_ref() {
                        let t = tier.get_ref();
                        if t.targets.is_empty() {
                            return Err(c.error(
                                &tier.span(),
                                field("tiers"),
                                "a tier needs at least one target, written \"provider/model\"",
                            ));
                        }
                        let mut built = Tier::new(t.pick);
                        for target in &t.targets {
                            let (name, weight) = target.get_ref().parts();
                            if weight == 0 {
                                return Err(c.error(
                                    &target.span(),
                                    field("tiers"),
                                    format!("{name}: a weight must be at least 1"),
                                ));
                            }
                            let one = [Spanned::new(target.span(), name.to_owned())];
                            let Some((p, m)) = resolve(&one, "tiers")?.pop() else {
                                continue;
                            };
                            if seen.contains(&(p.clone(), m.clone())) {
                                return Err(c.error(
                                    &target.span(),
                                    field("tiers"),
                                    format!("{p}/{m} is listed twice"),
                                ));
                            }
                            built = built.weighted_target(&p, &m, weight);
                            seen.push((p, m));
                        }
                        out.push(built);
                    }
                    out
                }
            };
            let larger_context = resolve(&r.larger_context, "larger_context")?;
            let models: Vec<&str> = tiers
                .iter()
                .flat_map(Tier::targets)
                .map(|(_, m, _)| m)
                .chain(larger_context.iter().map(|(_, m)| m.as_str()))
                .collect();
            if let Some(message) = embeddings_mix(&name, &models) {
                // At the list that names the models: `targets`, or `tiers`.
                let listed = r
                    .targets
                    .as_ref()
                    .map(|t| (t.span(), "targets"))
                    .or_else(|| r.tiers.as_ref().map(|t| (t.span(), "tiers")))
                    .unwrap_or_else(|| (name_span.clone(), "targets"));
                warnings.push(c.at(&listed.0, Some(field(listed.1)), message));
            }
            let mut layers = vec![default_route];
            if let Some(p) = &r.policy {
                layers.push(p);
            }
            let policy = c.layered::<RoutePolicy>(&field("policy"), &layers)?;
            routes.push(RouteConfig {
                name,
                tiers,
                larger_context,
                policy,
            });
        }
        if routes.is_empty() {
            return Err(ConfigError::Invalid(Box::new(c.at(
                &(0..0),
                Some("routes".into()),
                "no route is configured; add a [routes.NAME] section with targets = [\"provider/model\", ...]",
            ))));
        }

        let mut checked = BTreeMap::new();
        let mut classifier = Classifier::builder();
        for (name, (mut provider, classify)) in providers {
            classifier = add_overrides(&c, classifier, &name, classify)?;
            if provider.models.is_empty() {
                warnings.push(c.at(
                    &(0..0),
                    Some(format!("providers.{name}")),
                    "no route uses this provider",
                ));
            }
            provider.models.sort();
            checked.insert(name, provider);
        }
        let (clients, admin) =
            access::check(&c, file.clients, file.admin, &routes, &env, &mut warnings)?;
        Ok(Config {
            path: path.to_owned(),
            server,
            providers: checked,
            routes,
            classifier: Arc::new(classifier.build()),
            warnings,
            clients,
            admin,
            state,
            otlp,
            log_format,
        })
    }

    /// Checks `[state]`; `None` for the local backend or when the URL variable is not set
    /// (a warning that stops `serve`).
    fn check_state(
        c: &Checker<'_>,
        st: Spanned<StateFile>,
        env: &impl Fn(&str) -> Option<String>,
        warnings: &mut Vec<Located>,
    ) -> Result<Option<crate::state::StateConfig>, ConfigError> {
        let section = st.span();
        let st = st.into_inner();
        match st.backend.get_ref().as_str() {
            "local" => return Ok(None),
            "redis" if cfg!(feature = "redis") => {}
            "redis" => {
                return Err(c.error(
                    &st.backend.span(),
                    "state.backend",
                    "this build has no Redis support: rebuild with `--features redis`, or \
                     write backend = \"local\"",
                ));
            }
            other => {
                return Err(c.error(
                    &st.backend.span(),
                    "state.backend",
                    format!("{other:?} is not a backend; write \"redis\" or \"local\""),
                ));
            }
        }
        let (var, var_span) = match &st.url_env {
            Some(v) => (v.get_ref().clone(), v.span()),
            None => (DEFAULT_STATE_URL_ENV.to_owned(), section),
        };
        let Some(url) = env(&var).filter(|u| !u.trim().is_empty()) else {
            warnings.push(c.at(
                &var_span,
                Some("state.url_env".into()),
                format!(
                    "environment variable {var} is not set; export the Redis URL \
                     (redis://[:PASSWORD@]HOST:PORT) in it before `serve`"
                ),
            ));
            return Ok(None);
        };
        let mut b = crate::state::StateConfig::builder(url);
        if let Some(ns) = &st.namespace {
            if ns.get_ref().is_empty() || ns.get_ref().contains(char::is_whitespace) {
                return Err(c.error(
                    &ns.span(),
                    "state.namespace",
                    "must be a non-empty prefix without spaces, like \"llm-failover\"",
                ));
            }
            b = b.namespace(ns.get_ref().clone());
        }
        if let Some(t) = st.timeout {
            b = b.timeout(t);
        }
        if let Some(t) = st.connect_timeout {
            b = b.connect_timeout(t);
        }
        if let Some(t) = st.reconcile_interval {
            b = b.reconcile_interval(t);
        }
        if let Some(r) = st.replica {
            b = b.replica(r);
        }
        if let Some(on) = st.fleet_counting {
            b = b.fleet_counting(on);
        }
        if let Some(t) = st.fleet_window {
            b = b.fleet_window(t);
        }
        if let Some(t) = st.flush_interval {
            b = b.flush_interval(t);
        }
        if let Some(path) = &st.ca_file {
            let pem = std::fs::read(path.get_ref()).map_err(|e| {
                c.error(
                    &path.span(),
                    "state.ca_file",
                    format!(
                        "cannot read {:?} ({e}): write the path of the PEM file of the CA that \
                         signed the Redis server's certificate",
                        path.get_ref()
                    ),
                )
            })?;
            b = b.ca_certificate_pem(pem);
        }
        b.build().map(Some).map_err(|e| {
            let field = match &e {
                crate::state::StateError::Invalid { field, .. } => format!("state.{field}"),
                crate::state::StateError::BadCa => "state.ca_file".to_owned(),
                crate::state::StateError::BadUrl | crate::state::StateError::NoRuntime => {
                    "state.url_env".to_owned()
                }
            };
            // The message never quotes the URL: it may hold a password.
            c.error(&var_span, field, format!("{e} (in {var})"))
        })
    }

    fn server(c: &Checker<'_>, s: ServerFile) -> Result<Server, ConfigError> {
        let addr =
            |v: &Option<Spanned<String>>, f: &str| -> Result<Option<SocketAddr>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(v) => parse_addr(v.get_ref()).map(Some).ok_or_else(|| {
                        c.error(
                            &v.span(),
                            format!("server.{f}"),
                            format!(
                                "{:?} is not an address; write it like \"127.0.0.1:8080\"",
                                v.get_ref()
                            ),
                        )
                    }),
                }
            };
        let listen = addr(&s.listen, "listen")?.unwrap_or(DEFAULT_LISTEN);
        let metrics_listen = addr(&s.metrics_listen, "metrics_listen")?;
        if let Some(m) = &s.metrics_listen
            && metrics_listen == Some(listen)
        {
            return Err(c.error(
                &m.span(),
                "server.metrics_listen",
                "is the same address as listen; leave it out to serve /metrics on listen",
            ));
        }
        let max_body_bytes = match s.max_body_bytes {
            Some(v) if *v.get_ref() < 1024 => {
                return Err(c.error(
                    &v.span(),
                    "server.max_body_bytes",
                    "must be at least 1024 bytes",
                ));
            }
            Some(v) => v.into_inner(),
            None => DEFAULT_MAX_BODY_BYTES,
        };
        let max_header_bytes = match s.max_header_bytes {
            Some(v) if *v.get_ref() < 8192 => {
                return Err(c.error(
                    &v.span(),
                    "server.max_header_bytes",
                    "must be at least 8192 bytes",
                ));
            }
            Some(v) => v.into_inner(),
            None => DEFAULT_MAX_HEADER_BYTES,
        };
        let max_connections = match s.max_connections {
            Some(v) if *v.get_ref() == 0 => {
                return Err(c.error(&v.span(), "server.max_connections", "must be at least 1"));
            }
            Some(v) => v.into_inner(),
            None => DEFAULT_MAX_CONNECTIONS,
        };
        let tls = tls::load(c, s.tls_cert.as_ref(), s.tls_key.as_ref())?;
        let positive =
            |d: Option<Duration>, default: Duration| d.filter(|d| !d.is_zero()).unwrap_or(default);
        Ok(Server {
            listen_from_flag: false,
            listen,
            metrics_listen,
            max_body_bytes,
            shutdown_grace: s.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            allow_unauthenticated: s.allow_unauthenticated.unwrap_or(false),
            max_header_bytes,
            header_read_timeout: positive(s.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT),
            body_read_timeout: positive(s.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT),
            max_connections,
            tls,
        })
    }

    /// The file this configuration came from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The address the proxy listens on (loopback unless the configuration says otherwise).
    #[must_use]
    pub fn listen(&self) -> SocketAddr {
        self.server.listen
    }

    /// Listen on `addr` instead of the configured address (`serve --listen`).
    pub fn set_listen(&mut self, addr: SocketAddr) {
        self.server.listen = addr;
        self.server.listen_from_flag = true;
    }

    /// The separate address for `/metrics`, if one is configured; else `/metrics` is served on
    /// [`listen`](Self::listen).
    #[must_use]
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.server.metrics_listen
    }

    /// Whether `serve` terminates TLS (`[server] tls_cert` and `tls_key` are set).
    #[must_use]
    pub fn tls(&self) -> bool {
        self.server.tls.is_some()
    }

    /// How long in-flight requests may go on after a shutdown signal.
    #[must_use]
    pub fn shutdown_grace(&self) -> Duration {
        self.server.shutdown_grace
    }

    /// The shared breaker-state settings (`[state] backend = "redis"`), if configured and
    /// its URL variable is set.
    #[must_use]
    pub fn state(&self) -> Option<&crate::state::StateConfig> {
        self.state.as_ref()
    }

    /// The client-facing model names, in the order of the file.
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.name.as_str())
    }

    /// The concurrency limit of `model` of `provider` (`max_inflight`), if any.
    #[must_use]
    pub fn max_inflight(&self, provider: &str, model: &str) -> Option<u32> {
        self.providers.get(provider)?.max_inflight(model)
    }

    /// The requests and tokens per minute of `model` of `provider` (`rpm`, `tpm`; a model's
    /// own override the provider's).
    #[must_use]
    pub fn rate_limits(&self, provider: &str, model: &str) -> crate::chain::RateLimits {
        self.providers
            .get(provider)
            .map(|p| p.rate_limits(model))
            .unwrap_or_default()
    }

    /// The limit of requests in flight over all the models of `provider` together
    /// (`max_inflight_total`), if any.
    #[must_use]
    pub fn provider_max_inflight(&self, provider: &str) -> Option<u32> {
        self.providers.get(provider)?.max_inflight_total
    }

    /// The slow start of `model` of `provider` after a recovery (`slow_start`), if any.
    #[must_use]
    pub fn slow_start(&self, provider: &str, _model: &str) -> Option<crate::chain::SlowStart> {
        self.providers.get(provider)?.slow_start
    }

    /// Every (provider, model) pair a route names: the breakers the proxy keeps.
    pub fn targets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.providers
            .iter()
            .flat_map(|(p, c)| c.models.iter().map(move |m| (p.as_str(), m.as_str())))
    }

    /// Where `serve` exports spans (`[telemetry]`, or the `OTEL_EXPORTER_OTLP_*` variables);
    /// `None`: nowhere.
    #[must_use]
    pub fn otlp(&self) -> Option<&crate::telemetry::OtlpSettings> {
        self.otlp.as_ref()
    }

    /// `[log] format`, when the file sets it (`serve` writes text otherwise).
    #[must_use]
    pub fn log_format(&self) -> Option<crate::telemetry::LogFormat> {
        self.log_format
    }

    /// Problems that `check` reports and `serve` logs: an API key variable that is not set
    /// (which `serve` refuses), a provider no route uses, a route whose targets mix an
    /// embedding model with another model (`POST /v1/embeddings` refuses it).
    #[must_use]
    pub fn warnings(&self) -> &[Located] {
        &self.warnings
    }

    /// The warnings that stop `serve`: keys that are not set (providers', clients', the
    /// admin's).
    pub(crate) fn missing_keys(&self) -> impl Iterator<Item = &Located> {
        self.warnings.iter().filter(|w| {
            w.field.as_deref().is_some_and(|f| {
                f.ends_with(".api_key_env") || f.ends_with(".key_env") || f == "state.url_env"
            })
        })
    }

    /// The configured clients' names, in the order of the file.
    pub fn client_names(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|c| c.name.as_str())
    }

    /// Whether an admin key is configured (`[admin]`).
    #[must_use]
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// Whether the configuration says `allow_unauthenticated = true` under `[server]`.
    #[must_use]
    pub fn allow_unauthenticated(&self) -> bool {
        self.server.allow_unauthenticated
    }

    /// Why serving on [`listen`](Self::listen) would be unsafe: a non-loopback address, no
    /// `[[clients]]`, and no `allow_unauthenticated = true`. `serve` refuses to start then;
    /// `check` reports it.
    ///
    /// ```
    /// use llm_failover::proxy::Config;
    ///
    /// let src = "[server]\nlisten = \"0.0.0.0:8080\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
    ///            [routes.chat]\ntargets = [\"p/m\"]\n";
    /// let config = Config::parse(src, "open.toml")?;
    /// assert!(config.exposure().unwrap().to_string().contains("[[clients]]"));
    /// # Ok::<(), llm_failover::proxy::ConfigError>(())
    /// ```
    #[must_use]
    pub fn exposure(&self) -> Option<Exposure> {
        exposure(
            self.server.listen,
            !self.clients.is_empty(),
            self.server.allow_unauthenticated,
        )
    }
}

/// Adds one provider's `[classify]` overrides to the classifier being built.
fn add_overrides(
    c: &Checker<'_>,
    mut b: ClassifierBuilder,
    provider: &str,
    f: ClassifyFile,
) -> Result<ClassifierBuilder, ConfigError> {
    for (status, reason) in f.status {
        match status.get_ref().parse::<u16>() {
            Ok(s) if (100..=599).contains(&s) => b = b.status(provider, s, reason),
            _ => {
                return Err(c.error(
                    &status.span(),
                    format!("providers.{provider}.classify.status"),
                    format!("{:?} is not an HTTP status (100 to 599)", status.get_ref()),
                ));
            }
        }
    }
    for (code, reason) in f.code {
        b = b.code(provider, code, reason);
    }
    for p in f.pattern {
        let span = p.span();
        let p = p.into_inner();
        b = b.pattern(provider, p.regex, p.reason).map_err(|e| {
            c.error(
                &span,
                format!("providers.{provider}.classify.pattern.regex"),
                e.to_string(),
            )
        })?;
    }
    Ok(b)
}

/// A listen address that anyone on the network may reach, with no client keys to keep them
/// out: `serve` refuses it (see [`Config::exposure`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve on {addr} without client keys: anyone who can reach it could spend your \
     provider keys and steer the breakers. Add a [[clients]] section per application (name, \
     key_env = \"VAR_HOLDING_ITS_KEY\" or key_sha256 = \"<hex of sha256(key)>\", routes = \
     [\"*\"]), or listen on 127.0.0.1, or write allow_unauthenticated = true under [server] if \
     something in front of the proxy already checks who calls it"
)]
#[non_exhaustive]
pub struct Exposure {
    /// The address that would be served.
    pub addr: SocketAddr,
}

/// [`Exposure`] when `addr` is not loopback, there are no client keys and it is not allowed.
pub(crate) fn exposure(addr: SocketAddr, has_clients: bool, allowed: bool) -> Option<Exposure> {
    let loopback = addr.ip().to_canonical().is_loopback();
    (!loopback && !has_clients && !allowed).then_some(Exposure { addr })
}
