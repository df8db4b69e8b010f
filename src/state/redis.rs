//! The Redis backend: a connection manager for commands, a pub/sub connection for events,
//! and three background tasks (publisher, subscriber, reconciler). See the
//! [module docs](super) for the design.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use redis::aio::ConnectionManager;
use redis::{Client, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::Reason;
use crate::breaker::{Breaker, Listener, Origin, Registry, State, Transition};
use crate::telemetry::names::{self, state as field};

use super::{StateConfig, StateError};

/// How many transitions may wait for the publisher; past that they are dropped (and the
/// next reconnect or reconcile makes up for the open states among them).
const QUEUE: usize = 1024;

/// The longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

thread_local! {
    /// Set while this replica applies a remote transition, so the listener does not publish
    /// it back (the control actions it calls emit `Origin::Control` transitions).
    static APPLYING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the listener muted on this thread.
fn applying<R>(f: impl FnOnce() -> R) -> R {
    APPLYING.with(|a| a.set(true));
    let r = f();
    APPLYING.with(|a| a.set(false));
    r
}

/// Sets the open key unless it already outlives the new open time (Retry-After stays a floor
/// fleet-wide), frees this replica's lease, empties the fleet's failure count, publishes.
/// Returns the key's previous TTL (ms).
const OPEN_SCRIPT: &str = r"
local t = redis.call('PTTL', KEYS[1])
local ms = tonumber(ARGV[2])
if t < ms then redis.call('SET', KEYS[1], ARGV[1], 'PX', ms) end
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return t
";

/// Deletes the open key, frees this replica's lease, empties the fleet's failure count,
/// publishes.
const CLOSE_SCRIPT: &str = r"
redis.call('DEL', KEYS[1], KEYS[3])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
";

/// The probe lease: `{0}` granted, `{1, ttl}` held by another replica, `{2, ttl, reason}`
/// the breaker is open again fleet-wide.
const LEASE_SCRIPT: &str = r"
local t = redis.call('PTTL', KEYS[1])
if t > 0 then return {2, t, redis.call('GET', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 0, ''} end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {0, 0, ''}
end
return {1, redis.call('PTTL', KEYS[2]), ''}
";

/// Adds `ARGV[1]` failures to the current bucket of the count hash (buckets `ARGV[2]` ms
/// wide on the server's clock, `ARGV[3]` of them in the window), drops buckets that left the
/// window, and returns the window's total.
const COUNT_SCRIPT: &str = r"
local now = redis.call('TIME')
local width = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local b = math.floor((tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) / width)
redis.call('HINCRBY', KEYS[1], b, ARGV[1])
redis.call('PEXPIRE', KEYS[1], width * (n + 1))
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i]) > b - n then
    total = total + tonumber(all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return total
";

/// How many buckets the fleet's failure window is cut into.
const COUNT_BUCKETS: u32 = 10;

/// One event on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The sending replica (its own messages come back to it and are skipped).
    r: String,
    p: String,
    m: String,
    op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
    /// The opener's backoff level, so the next prober backs off as far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lvl: Option<u32>,
}

/// What the publisher task does next.
enum Cmd {
    Publish(Transition),
    Lease(Breaker),
}

/// Outcome of one backend operation, for the sync counter.
#[derive(Clone, Copy)]
enum Outcome {
    Ok,
    Error,
    Timeout,
}

fn emit_sync(op: &'static str, outcome: Outcome) {
    let outcome = match outcome {
        Outcome::Ok => field::OUTCOME_OK,
        Outcome::Error => field::OUTCOME_ERROR,
        Outcome::Timeout => field::OUTCOME_TIMEOUT,
    };
    tracing::event!(
        name: names::STATE_SYNC_EVENT,
        target: names::STATE_TARGET,
        tracing::Level::DEBUG,
        { field::OP } = op,
        { field::OUTCOME } = outcome,
    );
}

/// The Redis backend before it starts: give [`listener`](Self::listener) to the registry
/// builder, then [`start`](Self::start) it with the built registry.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use llm_failover::breaker::Registry;
/// use llm_failover::state::{RedisState, StateConfig};
///
/// let state = RedisState::new(StateConfig::builder("redis://127.0.0.1:6379").build()?)?;
/// let registry = Arc::new(
///     Registry::builder()
///         .target("openai", "gpt-4o-mini")
///         .on_transition(state.listener())
///         .build()?,
/// );
/// let handle = state.start(Arc::clone(&registry))?;
/// handle.synced(std::time::Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
pub struct RedisState {
    inner: Arc<Inner>,
    rx: mpsc::Receiver<Cmd>,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: StateConfig,
    client: Client,
    replica: String,
    tx: mpsc::Sender<Cmd>,
    registry: OnceLock<Arc<Registry>>,
    /// The backend answered the last operation and the subscription is live.
    up: AtomicBool,
    subscribed: AtomicBool,
    /// True once the first resynchronisation completed.
    synced: watch::Sender<bool>,
    /// Tells the subscriber to drop its connection and reconnect (a failed operation).
    reconnect: Notify,
    open_script: Script,
    close_script: Script,
    lease_script: Script,
}

impl RedisState {
    /// The backend for `config`. Connects nothing yet.
    ///
    /// # Errors
    ///
    /// [`StateError::BadUrl`] when the URL does not parse; [`StateError::BadCa`] when the CA
    /// certificate is not PEM.
    pub fn new(config: StateConfig) -> Result<Self, StateError> {
        if config.url.expose().starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; keep one the application chose.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = match &config.ca {
            Some(ca) => {
                let info = redis::IntoConnectionInfo::into_connection_info(config.url.expose())
                    .map_err(|_| StateError::BadUrl)?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.0.clone()),
                };
                Client::build_with_tls(info, certs).map_err(|_| StateError::BadCa)?
            }
            None => Client::open(config.url.expose()).map_err(|_| StateError::BadUrl)?,
        };
        let replica = match &config.replica {
            Some(name) => format!("{name}-{:08x}", fastrand::u32(..)),
            None => format!("{:016x}", fastrand::u64(..)),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                replica,
                tx,
                registry: OnceLock::new(),
                up: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                synced: watch::channel(false).0,
                reconnect: Notify::new(),
                open_script: Script::new(OPEN_SCRIPT),
                close_script: Script::new(CLOSE_SCRIPT),
                lease_script: Script::new(LEASE_SCRIPT),
            }),
            rx,
        })
    }

    /// The transition listener to give to
    /// [`RegistryBuilder::on_transition`](crate::breaker::RegistryBuilder::on_transition): it
    /// queues local and control transitions for publishing and never blocks.
    #[must_use]
    pub fn listener(&self) -> Listener {
        let tx = self.inner.tx.clone();
        Arc::new(move |t: &Transition| {
            if t.shadow || t.origin == Origin::Remote || APPLYING.with(Cell::get) {
                return;
            }
            if tx.try_send(Cmd::Publish(t.clone())).is_err() {
                emit_sync(field::OP_PUBLISH, Outcome::Error);
            }
        })
    }

    /// Starts the background tasks on the current Tokio runtime for the breakers of
    /// `registry` (built with [`listener`](Self::listener)).
    ///
    /// # Errors
    ///
    /// [`StateError::NoRuntime`] outside a Tokio runtime.
    pub fn start(self, registry: Arc<Registry>) -> Result<StateHandle, StateError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| StateError::NoRuntime)?;
        let inner = self.inner;
        let _ = inner.registry.set(registry);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(inner.config.connect_timeout))
            .set_response_timeout(Some(inner.config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        let _guard = rt.enter();
        let conn = ConnectionManager::new_lazy_with_config(inner.client.clone(), config)
            .map_err(|_| StateError::BadUrl)?;
        inner.emit_up(false);
        let mut tasks = Vec::with_capacity(4);
        if inner.config.fleet_counting
            && let Some(registry) = inner.registry()
        {
            for b in registry.iter() {
                b.count_fleet_failures();
            }
            tasks.push(rt.spawn(counter(Arc::clone(&inner), conn.clone())));
        }
        tasks.extend([
            rt.spawn(publisher(Arc::clone(&inner), self.rx, conn.clone())),
            rt.spawn(subscriber(Arc::clone(&inner), conn.clone())),
            rt.spawn(reconciler(Arc::clone(&inner), conn)),
        ]);
        Ok(StateHandle {
            inner,
            tasks: Arc::new(Tasks(tasks)),
        })
    }
}

/// Aborts the backend's tasks when the last handle goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The running backend. Cheap to clone; when the last clone is dropped the background tasks
/// stop (the breakers go on locally).
#[derive(Clone)]
pub struct StateHandle {
    inner: Arc<Inner>,
    tasks: Arc<Tasks>,
}

impl fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateHandle")
            .field("config", &self.inner.config)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl StateHandle {
    /// True while the backend answers (the `llm_failover_state_backend_up` gauge).
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Waits until the first synchronisation with Redis completed (every breaker's key read,
    /// so a replica that starts late knows the fleet's open breakers), or `limit` passed.
    /// Returns whether it completed.
    pub async fn synced(&self, limit: Duration) -> bool {
        let mut rx = self.inner.synced.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Emits the backend's current state again (for a metrics layer installed after start).
    pub fn report(&self) {
        self.inner.emit_up(self.is_up());
    }

    /// A reasonable bound for [`synced`](Self::synced) at start-up: one connection attempt
    /// and one round of reads.
    #[must_use]
    pub fn first_sync_limit(&self) -> Duration {
        self.inner.config.connect_timeout + self.inner.config.timeout * 2
    }

    /// Stops the background tasks now (as dropping every clone does).
    pub fn shutdown(&self) {
        for t in &self.tasks.0 {
            t.abort();
        }
    }
}

impl Inner {
    fn registry(&self) -> Option<&Arc<Registry>> {
        self.registry.get()
    }

    /// `{namespace}:{kind}:{provider}:{model}`, with `%` and `:` in the names escaped (so
    /// `a:b`/`c` and `a`/`b:c` get different keys).
    fn key(&self, kind: &str, provider: &str, model: &str) -> String {
        format!(
            "{}:{kind}:{}:{}",
            self.config.namespace,
            escape(provider),
            escape(model)
        )
    }

    fn channel(&self) -> String {
        format!("{}:events", self.config.namespace)
    }

    fn message(&self, b: &Breaker, op: &str, reason: Option<Reason>, ms: Option<u64>) -> String {
        let m = Message {
            r: self.replica.clone(),
            p: b.provider().to_owned(),
            m: b.model().to_owned(),
            op: op.to_owned(),
            reason: reason.map(|r| r.as_str().to_owned()),
            ms,
            lvl: reason.map(|_| b.backoff_level()),
        };
        serde_json::to_string(&m).unwrap_or_default()
    }

    fn emit_up(&self, up: bool) {
        tracing::event!(
            name: names::STATE_BACKEND_EVENT,
            target: names::STATE_TARGET,
            tracing::Level::INFO,
            { field::UP } = up,
            "shared breaker state backend {}",
            if up { "up" } else { "down: breakers run locally" },
        );
    }

    /// Marks the backend up or down; on a change, moves every breaker's gate (held while up,
    /// local while down) and emits the gauge's event.
    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        if let Some(registry) = self.registry() {
            for b in registry.iter() {
                if up { b.gate_hold() } else { b.gate_local() }
            }
        }
        self.emit_up(up);
    }

    /// Runs one backend operation within the configured timeout, counting its outcome; a
    /// failure marks the backend down and asks the subscriber to reconnect.
    async fn op<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(Ok(v)) => {
                emit_sync(op, Outcome::Ok);
                Some(v)
            }
            Ok(Err(e)) => {
                emit_sync(op, Outcome::Error);
                // The kind only: error text may quote the server or the address.
                tracing::debug!(target: names::STATE_TARGET, op, kind = ?e.kind(), "redis operation failed");
                self.failed();
                None
            }
            Err(_) => {
                emit_sync(op, Outcome::Timeout);
                self.failed();
                None
            }
        }
    }

    fn failed(&self) {
        self.set_up(false);
        self.reconnect.notify_one();
    }

    /// Asks the publisher to request the probe lease for `b` at `at`.
    fn lease_at(self: &Arc<Self>, b: &Breaker, after: Duration) {
        let tx = self.tx.clone();
        let b = b.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Cmd::Lease(b)).await;
        });
    }

    fn breaker(&self, provider: &str, model: &str) -> Option<Breaker> {
        self.registry()?.breaker(provider, model).cloned()
    }

    /// Writes one local or control transition.
    async fn publish(self: &Arc<Self>, conn: &mut ConnectionManager, t: &Transition) {
        let Some(b) = self.breaker(&t.provider, &t.model) else {
            return;
        };
        let open_key = self.key("open", b.provider(), b.model());
        let mode_key = self.key("mode", b.provider(), b.model());
        let lease_key = self.key("lease", b.provider(), b.model());
        let channel = self.channel();
        match (t.origin, t.to) {
            (Origin::Local, State::Open) => {
                let (Some(reason), Some(until)) = (t.reason, t.open_until) else {
                    return;
                };
                let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                self.publish_open(conn, &b, reason, left).await;
            }
            (Origin::Local, State::HalfOpen) => {
                let msg = self.message(&b, "half_open", None, None);
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(&channel).arg(msg);
                self.op(field::OP_PUBLISH, cmd.query_async::<i64>(conn))
                    .await;
            }
            (Origin::Local, State::Closed) => {
                let msg = self.message(&b, "closed", None, None);
                let mut inv = self.close_script.key(&open_key);
                inv.key(&lease_key)
                    .key(self.key("count", b.provider(), b.model()))
                    .arg(&channel)
                    .arg(msg)
                    .arg(&self.replica);
                self.op(field::OP_PUBLISH, inv.invoke_async::<i64>(conn))
                    .await;
            }
            (Origin::Control, to @ (State::ForcedOpen | State::Disabled | State::MetricsOnly)) => {
                let left = b.override_remaining().flatten();
                let ms = left.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
                let msg = self.message(&b, to.as_str(), None, ms);
                let mut pipe = redis::pipe();
                pipe.atomic();
                let set = pipe.cmd("SET").arg(&mode_key).arg(to.as_str());
                if let Some(ms) = ms {
                    set.arg("PX").arg(ms);
                }
                pipe.ignore().cmd("PUBLISH").arg(&channel).arg(msg).ignore();
                self.op(field::OP_PUBLISH, pipe.query_async::<()>(conn))
                    .await;
            }
            (Origin::Control, State::Closed) => {
                let msg = self.message(&b, "reset", None, None);
                let count = self.key("count", b.provider(), b.model());
                let keys = [&open_key, &mode_key, &lease_key, &count];
                self.delete_and_publish(conn, &keys, &channel, msg).await;
            }
            (Origin::Control, State::Open | State::HalfOpen) => {
                let msg = self.message(&b, "clear", None, None);
                self.delete_and_publish(conn, &[&mode_key], &channel, msg)
                    .await;
            }
            // Overrides are never local; adopted transitions are never published back.
            (Origin::Local, State::ForcedOpen | State::Disabled | State::MetricsOnly)
            | (Origin::Remote, _) => {}
        }
    }

    /// Deletes `keys` and publishes `msg` on `channel`, atomically.
    async fn delete_and_publish(
        &self,
        conn: &mut ConnectionManager,
        keys: &[&String],
        channel: &str,
        msg: String,
    ) {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(keys)
            .ignore()
            .cmd("PUBLISH")
            .arg(channel)
            .arg(msg)
            .ignore();
        self.op(field::OP_PUBLISH, pipe.query_async::<()>(conn))
            .await;
    }

    /// Writes "open for `left`" for `b` and publishes it; adopts a longer open time that the
    /// fleet already has, and schedules the lease request for the end of the open time.
    async fn publish_open(
        self: &Arc<Self>,
        conn: &mut ConnectionManager,
        b: &Breaker,
        reason: Reason,
        left: Duration,
    ) {
        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
        let msg = self.message(b, "open", Some(reason), Some(ms));
        let mut inv = self
            .open_script
            .key(self.key("open", b.provider(), b.model()));
        inv.key(self.key("lease", b.provider(), b.model()))
            .key(self.key("count", b.provider(), b.model()))
            .arg(format!("{}/{}", reason.as_str(), b.backoff_level()))
            .arg(ms)
            .arg(self.channel())
            .arg(msg)
            .arg(&self.replica);
        let Some(previous) = self
            .op(field::OP_PUBLISH, inv.invoke_async::<i64>(conn))
            .await
        else {
            return;
        };
        let mut left = left;
        if let Ok(previous) = u64::try_from(previous)
            && previous > ms
        {
            // The fleet's open time is longer (a Retry-After floor elsewhere): keep it.
            left = Duration::from_millis(previous);
            applying(|| b.adopt_open_at(reason, SystemTime::now() + left, 0));
        }
        self.lease_at(b, left);
    }

    /// Asks for the fleet's probe lease for `b` if its open time is over and it is held.
    async fn lease(self: &Arc<Self>, conn: &mut ConnectionManager, b: &Breaker) {
        let Some(generation) = b.lease_wanted() else {
            return;
        };
        let lease = b.policy().probe_lease;
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut inv = self
            .lease_script
            .key(self.key("open", b.provider(), b.model()));
        inv.key(self.key("lease", b.provider(), b.model()))
            .arg(&self.replica)
            .arg(lease_ms);
        let Some((kind, ttl, reason)) = self
            .op(
                field::OP_LEASE,
                inv.invoke_async::<(i64, i64, String)>(conn),
            )
            .await
        else {
            return;
        };
        let ttl = Duration::from_millis(u64::try_from(ttl).unwrap_or(0));
        match kind {
            0 => {
                if b.grant(generation) {
                    // Hold again if no half-open cycle started before the lease ran out.
                    let b = b.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(lease).await;
                        b.revoke(generation);
                    });
                }
            }
            2 => {
                let (reason, level) = parse_open(&reason).unwrap_or((Reason::Unknown, 0));
                applying(|| b.adopt_open_at(reason, SystemTime::now() + ttl, level));
                self.lease_at(b, ttl);
            }
            _ => self.lease_at(b, ttl.max(Duration::from_millis(1))),
        }
    }

    /// Applies one message from another replica.
    fn adopt(self: &Arc<Self>, payload: &[u8]) {
        let Ok(m) = serde_json::from_slice::<Message>(payload) else {
            emit_sync(field::OP_ADOPT, Outcome::Error);
            return;
        };
        if m.r == self.replica {
            return;
        }
        let Some(b) = self.breaker(&m.p, &m.m) else {
            // Not configured here (another fleet's config): nothing to adopt.
            return;
        };
        let control = b.control();
        let ms = m.ms.map(Duration::from_millis);
        applying(|| match m.op.as_str() {
            "open" => {
                let (Some(reason), Some(left)) = (m.reason.as_deref().and_then(parse_reason), ms)
                else {
                    return;
                };
                b.adopt_open_at(reason, SystemTime::now() + left, m.lvl.unwrap_or(0));
                self.lease_at(&b, left);
            }
            "closed" => {
                control.adopt_closed();
            }
            "forced_open" => {
                control.force_open(ms);
            }
            "disabled" => {
                control.disable(ms);
            }
            "metrics_only" => {
                control.metrics_only(ms);
            }
            "clear" => {
                control.clear_override();
            }
            "reset" => {
                control.reset();
            }
            _ => {}
        });
        emit_sync(field::OP_ADOPT, Outcome::Ok);
    }

    /// Writes this replica's open breakers (a trip while Redis was away reaches the fleet).
    async fn push_open(self: &Arc<Self>, conn: &mut ConnectionManager) {
        let Some(registry) = self.registry().cloned() else {
            return;
        };
        for b in registry.iter() {
            if let Some((reason, left)) = b.open_remaining() {
                self.publish_open(conn, b, reason, left).await;
            }
        }
    }

    /// Reads every breaker's open and mode keys and adopts what the fleet has; then asks for
    /// the lease of every held breaker whose open time is over. False when Redis failed.
    async fn reconcile(self: &Arc<Self>, conn: &mut ConnectionManager) -> bool {
        let Some(registry) = self.registry().cloned() else {
            return true;
        };
        let breakers: Vec<&Breaker> = registry.iter().collect();
        let mut pipe = redis::pipe();
        for b in &breakers {
            let open = self.key("open", b.provider(), b.model());
            let mode = self.key("mode", b.provider(), b.model());
            pipe.cmd("PTTL").arg(&open).cmd("GET").arg(&open);
            pipe.cmd("PTTL").arg(&mode).cmd("GET").arg(&mode);
        }
        type Row = (i64, Option<String>, i64, Option<String>);
        let Some(values) = self
            .op(
                field::OP_RECONCILE,
                pipe.query_async::<Vec<redis::Value>>(conn),
            )
            .await
        else {
            return false;
        };
        let rows = values.chunks(4).map(|c| -> Option<Row> {
            match c {
                [a, b, c, d] => Some((
                    redis::from_redis_value_ref(a).ok()?,
                    redis::from_redis_value_ref(b).ok()?,
                    redis::from_redis_value_ref(c).ok()?,
                    redis::from_redis_value_ref(d).ok()?,
                )),
                _ => None,
            }
        });
        let mut adopted = HashMap::new();
        for (b, row) in breakers.iter().zip(rows) {
            let Some((open_ttl, reason, mode_ttl, mode)) = row else {
                continue;
            };
            if open_ttl > 0
                && let Some((reason, level)) = reason.as_deref().and_then(parse_open)
            {
                let left = Duration::from_millis(u64::try_from(open_ttl).unwrap_or(0));
                let t = applying(|| b.adopt_open_at(reason, SystemTime::now() + left, level));
                if t.is_some() {
                    adopted.insert((b.provider().to_owned(), b.model().to_owned()), left);
                }
            }
            if let Some(mode) = mode {
                let left = u64::try_from(mode_ttl).ok().map(Duration::from_millis);
                let control = b.control();
                if b.state().as_str() != mode {
                    applying(|| match mode.as_str() {
                        "forced_open" => control.force_open(left),
                        "disabled" => control.disable(left),
                        "metrics_only" => control.metrics_only(left),
                        _ => None,
                    });
                }
            }
        }
        for ((p, m), left) in adopted {
            if let Some(b) = self.breaker(&p, &m) {
                self.lease_at(&b, left);
            }
        }
        true
    }

    /// The lease requests due now (the open time is over while the fleet holds the gate).
    async fn lease_due(self: &Arc<Self>, conn: &mut ConnectionManager) {
        let Some(registry) = self.registry().cloned() else {
            return;
        };
        for b in registry.iter() {
            if b.lease_wanted().is_some() {
                self.lease(conn, b).await;
            }
        }
    }
}

/// A name as a key component: `%` as `%25`, `:` as `%3A` (unchanged without either).
fn escape(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(['%', ':']) {
        name.replace('%', "%25").replace(':', "%3A").into()
    } else {
        name.into()
    }
}

/// The open key's value: `reason/level`.
fn parse_open(s: &str) -> Option<(Reason, u32)> {
    let (reason, level) = s.split_once('/').unwrap_or((s, "0"));
    Some((parse_reason(reason)?, level.parse().unwrap_or(0)))
}

fn parse_reason(s: &str) -> Option<Reason> {
    Reason::ALL.iter().copied().find(|r| r.as_str() == s)
}

/// Publishes transitions and requests leases, one at a time, in order.
async fn publisher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Cmd>, mut conn: ConnectionManager) {
    while let Some(cmd) = rx.recv().await {
        if !inner.up.load(Ordering::Acquire) {
            // Down: the reconnect pushes the open states and reads the fleet's; leases are
            // not needed (the gates are local).
            if let Cmd::Publish(_) = cmd {
                emit_sync(field::OP_PUBLISH, Outcome::Error);
            }
            continue;
        }
        match cmd {
            Cmd::Publish(t) => inner.publish(&mut conn, &t).await,
            Cmd::Lease(b) => inner.lease(&mut conn, &b).await,
        }
    }
}

/// Keeps a subscription to the channel: on every (re)connect, writes the local open states,
/// reads the fleet's, then marks the backend up and adopts events until the connection
/// ends or an operation fails.
async fn subscriber(inner: Arc<Inner>, mut conn: ConnectionManager) {
    let mut backoff = Duration::from_millis(50);
    let channel = inner.channel();
    loop {
        let connect = async {
            let mut pubsub = inner.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let limit = inner.config.connect_timeout + inner.config.timeout;
        let pubsub = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(_)) => {
                emit_sync(field::OP_RECONCILE, Outcome::Error);
                None
            }
            Err(_) => {
                emit_sync(field::OP_RECONCILE, Outcome::Timeout);
                None
            }
        };
        let Some(pubsub) = pubsub else {
            inner.set_up(false);
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        inner.subscribed.store(true, Ordering::Release);
        // Subscribed first, then resynchronise: nothing published after the read is missed.
        inner.push_open(&mut conn).await;
        if inner.reconcile(&mut conn).await {
            backoff = Duration::from_millis(50);
            inner.set_up(true);
            inner.synced.send_replace(true);
            inner.lease_due(&mut conn).await;
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    msg = messages.next() => match msg {
                        Some(msg) => inner.adopt(msg.get_payload_bytes()),
                        None => break,
                    },
                    () = inner.reconnect.notified() => break,
                }
            }
        }
        inner.subscribed.store(false, Ordering::Release);
        inner.set_up(false);
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads every key periodically (a lost message, a silent partition) and asks for due leases.
async fn reconciler(inner: Arc<Inner>, mut conn: ConnectionManager) {
    let mut tick = tokio::time::interval(inner.config.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !inner.subscribed.load(Ordering::Acquire) {
            continue;
        }
        if inner.reconcile(&mut conn).await {
            inner.set_up(true);
            inner.lease_due(&mut conn).await;
        }
    }
}

/// Adds the failures recorded since the last flush to the fleet's count, every
/// `flush_interval`, in one pipeline; trips a closed breaker whose fleet total reached its
/// `consecutive_failures`. While the backend is down the failures are dropped (the local
/// count still trips).
async fn counter(inner: Arc<Inner>, mut conn: ConnectionManager) {
    let Some(registry) = inner.registry().cloned() else {
        return;
    };
    let width = inner.config.fleet_window / COUNT_BUCKETS;
    let width_ms = u64::try_from(width.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut tick = tokio::time::interval(inner.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let up = inner.up.load(Ordering::Acquire);
        let mut batch = Vec::new();
        let mut pipe = redis::pipe();
        for b in registry.iter() {
            let Some((n, reason)) = b.take_fleet_failures() else {
                continue;
            };
            if !up || b.policy().consecutive_failures == 0 {
                continue;
            }
            pipe.cmd("EVAL")
                .arg(COUNT_SCRIPT)
                .arg(1)
                .arg(inner.key("count", b.provider(), b.model()))
                .arg(n)
                .arg(width_ms)
                .arg(COUNT_BUCKETS);
            batch.push((b, reason));
        }
        if batch.is_empty() {
            continue;
        }
        let Some(totals) = inner
            .op(field::OP_COUNT, pipe.query_async::<Vec<i64>>(&mut conn))
            .await
        else {
            continue;
        };
        for ((b, reason), total) in batch.into_iter().zip(totals) {
            if u64::try_from(total).unwrap_or(0) >= u64::from(b.policy().consecutive_failures) {
                // A local trip: the listener publishes it, so the fleet adopts it.
                b.trip_for_fleet(reason);
            }
        }
    }
}

/// `d` plus up to a quarter more, so replicas do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(fastrand::f64() / 4.0)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn names_with_colons_get_keys_of_their_own() {
        assert_eq!(escape("gpt-4o"), "gpt-4o");
        assert_eq!(escape("llama3:8b"), "llama3%3A8b");
        assert_eq!(escape("50%:x"), "50%25%3Ax");
        let key = |p: &str, m: &str| format!("ns:open:{}:{}", escape(p), escape(m));
        assert_ne!(key("a:b", "c"), key("a", "b:c"));
    }
}
