//! Shared breaker state across replicas (feature `redis`): one replica's trip takes effect on
//! every other, and the half-open probes are bounded fleet-wide.
//!
//! # Why
//!
//! Several replicas of the proxy (or several processes embedding the crate) would otherwise
//! each pay their own failures before tripping, and each send their own half-open probes, so
//! a flapping provider gets N times the probe traffic. With a backend, breakers publish their
//! transitions and adopt those of the other replicas, and one replica at a time probes.
//!
//! # Design
//!
//! The hot path stays local. Admission while closed is still one atomic load and never waits
//! on the backend: a breaker hands its transitions to a listener that puts them on a bounded
//! channel, and background tasks do all the backend work.
//!
//! * **Open**: a replica that trips writes a key per breaker
//!   (`{namespace}:open:{provider}:{model}`, value the reason) whose expiry is the open time,
//!   so the Redis server's clock decides when it ends, not the replicas' clocks; a script
//!   keeps the longer of the existing and the new expiry (Retry-After stays a floor
//!   fleet-wide: a shorter open time never shortens a longer one) and publishes the
//!   transition on `{namespace}:events`. Other replicas adopt it on receipt
//!   ([`ControlHandle::adopt_open`](crate::breaker::ControlHandle::adopt_open)), which never
//!   shortens a local open time either.
//! * **Reconcile**: pub/sub may drop messages, and a replica that starts late must learn the
//!   current state, so every replica reads every breaker's key when it connects and then
//!   periodically (`reconcile_interval`), adopting the remaining time the server reports.
//!   On (re)connect it first writes its own open breakers, so a trip that happened while
//!   Redis was down, or before Redis restarted empty, reaches the fleet.
//! * **Half-open**: while the backend is up, a breaker whose open time ends does not go
//!   half-open on its own: a *gate* in the breaker (read only on the slow path of an open
//!   breaker, never on the closed or fast rejection path) holds it open. The backend asks for
//!   the probe lease (`{namespace}:lease:{provider}:{model}`, `SET NX` with an expiry of the
//!   breaker's `probe_lease`); the replica that gets it opens its gate for that open state
//!   and runs at most the policy's `half_open_probes`; the others keep rejecting until the
//!   probe's outcome (closed, or open again with a longer backoff) is published. A replica
//!   that dies while holding the lease cannot wedge the breaker: the key expires and the
//!   others, who retried at its expiry, take it over.
//! * **Manual control**: force open, disable, metrics-only, clear and reset through a
//!   [`ControlHandle`](crate::breaker::ControlHandle) are published and applied by every
//!   replica (a timed override as `{namespace}:mode:{provider}:{model}` with the same
//!   expiry, so late replicas learn it). A control action that returns a breaker to
//!   `closed` is published as a reset.
//!
//! # What is guaranteed, and what is not
//!
//! * Delivery: a transition reaches the other replicas in one pub/sub hop (on loopback, a
//!   fraction of a millisecond; see the benchmark in the README), and at the latest after one
//!   `reconcile_interval` when a message is lost.
//! * Probes: at most `half_open_probes` probes run fleet-wide per lease, while Redis answers.
//!   A probe that outlives its lease (`probe_lease`) may overlap with one from the replica
//!   that takes the lease over.
//! * Redis down, slow, or a network partition: every Redis operation is bounded by
//!   `timeout`; after a failure the replica marks the backend down
//!   (`llm_failover_state_backend_up` 0), opens every gate (its breakers go half-open on
//!   their own again) and runs on its local breakers, exactly as without the backend, while
//!   it reconnects with backoff. Replicas on different sides of a partition therefore trip
//!   and probe independently, and a trip is shared once they reconnect. Requests are never
//!   delayed by any of this: no Redis call sits on the request path.
//! * By default nothing is shared about traffic: failures are counted locally and only
//!   transitions are shared. With **fleet-wide counting** (`[state] fleet_counting = true`,
//!   [`StateConfigBuilder::fleet_counting`]) a breaker's `consecutive_failures` threshold also
//!   counts the fleet's failures: every failure recorded while closed is added to a local
//!   atomic (the request never waits on Redis), and a background task adds the batch every
//!   `flush_interval` to a hash of per-bucket counts (`{namespace}:count:{provider}:{model}`,
//!   buckets a tenth of `fleet_window` wide, on the Redis server's clock, one script call per
//!   breaker with new failures, all in one pipeline), reading back the fleet's total over the
//!   last `fleet_window`. When the total reaches the threshold the replica that saw it trips
//!   and publishes the trip as usual; opening or closing deletes the count. Successes do not
//!   reset the fleet's count (it ages out with the window), the local count still trips on
//!   its own run, and failure rates stay local. The fleet's trip lags its threshold by up to
//!   one `flush_interval` plus a round trip; while Redis is down the batches are dropped and
//!   counting is local. (The counting script reads the server's clock, so it needs Redis 5
//!   or later.)
//! * `rediss://` connects over TLS (rustls) and verifies the server's certificate against
//!   the system's roots, or only against a private CA given with
//!   [`StateConfigBuilder::ca_certificate_pem`] (`[state] ca_file`).
//! * The Redis URL may hold a password: it never appears in logs, spans, metrics, errors or
//!   `Debug` output ([`StateConfig`] prints it redacted).

#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::time::Duration;

#[cfg(feature = "redis")]
pub use self::redis::{RedisState, StateHandle};

/// The default key namespace.
pub const DEFAULT_NAMESPACE: &str = "llm-failover";
/// The default bound on one backend operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// The default period of the reconcile that reads every breaker's key.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// The default span over which fleet-wide counting adds up the fleet's failures.
pub const DEFAULT_FLEET_WINDOW: Duration = Duration::from_secs(10);
/// The default period of the flush that adds local failures to the fleet's count.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// The shared-state backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The URL is not a Redis URL. (Its text is not repeated here: it may hold a password.)
    #[error(
        "the Redis URL is not valid: write redis://[:PASSWORD@]HOST[:PORT][/DB] or \
         rediss://... for TLS"
    )]
    BadUrl,
    /// A setting is out of range.
    #[error("state backend: {field} {problem}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong and what to write instead.
        problem: &'static str,
    },
    /// The CA certificate given for `rediss://` is not a PEM certificate.
    #[error(
        "the CA certificate for rediss:// is not valid PEM: give the file that holds the \
         \"-----BEGIN CERTIFICATE-----\" block of the CA that signed the Redis server's certificate"
    )]
    BadCa,
    /// The backend's tasks need a Tokio runtime and none is running on this thread.
    #[error(
        "the shared-state backend needs a Tokio runtime: start it from inside one \
         (for example in #[tokio::main])"
    )]
    NoRuntime,
}

/// A backend URL, kept to connect and never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretUrl(String);

impl SecretUrl {
    /// The URL with any user and password replaced by `***`, for messages.
    pub(crate) fn redacted(&self) -> String {
        let s = &self.0;
        let Some((scheme, rest)) = s.split_once("://") else {
            return "<redacted>".to_owned();
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}{path}"),
            None => format!("{scheme}://{authority}{path}"),
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// A CA certificate (PEM) to trust for `rediss://`; `Debug` shows its size only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CaPem(pub(crate) Vec<u8>);

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<PEM, {} bytes>", self.0.len())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Settings of the shared-state backend: where Redis is and how long to wait for it.
///
/// `Debug` shows the URL without its password.
///
/// ```
/// use std::time::Duration;
/// use llm_failover::state::StateConfig;
///
/// let config = StateConfig::builder("redis://:s3cret@127.0.0.1:6379/0")
///     .namespace("prod-eu")
///     .timeout(Duration::from_millis(100))
///     .build()?;
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), llm_failover::state::StateError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub(crate) url: SecretUrl,
    pub(crate) namespace: String,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconcile_interval: Duration,
    pub(crate) replica: Option<String>,
    pub(crate) fleet_counting: bool,
    pub(crate) fleet_window: Duration,
    pub(crate) flush_interval: Duration,
    pub(crate) ca: Option<CaPem>,
}

impl StateConfig {
    /// A builder for the Redis server at `url` (`redis://` or `rediss://` for TLS; a
    /// password in it is kept secret).
    pub fn builder(url: impl Into<String>) -> StateConfigBuilder {
        StateConfigBuilder {
            config: StateConfig {
                url: SecretUrl(url.into()),
                namespace: DEFAULT_NAMESPACE.to_owned(),
                timeout: DEFAULT_TIMEOUT,
                connect_timeout: DEFAULT_TIMEOUT,
                reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
                replica: None,
                fleet_counting: false,
                fleet_window: DEFAULT_FLEET_WINDOW,
                flush_interval: DEFAULT_FLUSH_INTERVAL,
                ca: None,
            },
        }
    }

    /// The key namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The bound on one backend operation.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the trip threshold counts the fleet's failures (see the
    /// [module docs](self)).
    #[must_use]
    pub fn fleet_counting(&self) -> bool {
        self.fleet_counting
    }
}

/// Builds a [`StateConfig`].
#[derive(Debug)]
#[must_use]
pub struct StateConfigBuilder {
    config: StateConfig,
}

impl StateConfigBuilder {
    /// The prefix of every key and of the channel, so several fleets can share one Redis.
    /// Default: [`DEFAULT_NAMESPACE`].
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// The bound on one backend operation (requests never wait on it). Default:
    /// [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// The bound on one connection attempt. Default: [`DEFAULT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How often every breaker's key is read, to catch a lost message. Default:
    /// [`DEFAULT_RECONCILE_INTERVAL`].
    pub fn reconcile_interval(mut self, interval: Duration) -> Self {
        self.config.reconcile_interval = interval;
        self
    }

    /// A name for this replica in the lease key's value (for an operator reading Redis).
    /// Default: a random id.
    pub fn replica(mut self, name: impl Into<String>) -> Self {
        self.config.replica = Some(name.into());
        self
    }

    /// Counts failures fleet-wide: a breaker's `consecutive_failures` threshold is also
    /// reached by the fleet's failures within [`fleet_window`](Self::fleet_window) (see the
    /// [module docs](self)). Default: off (failures are counted locally).
    pub fn fleet_counting(mut self, on: bool) -> Self {
        self.config.fleet_counting = on;
        self
    }

    /// The span over which the fleet's failures add up (ten buckets). Default:
    /// [`DEFAULT_FLEET_WINDOW`].
    pub fn fleet_window(mut self, window: Duration) -> Self {
        self.config.fleet_window = window;
        self
    }

    /// How often local failures are added to the fleet's count (one pipeline per flush).
    /// Default: [`DEFAULT_FLUSH_INTERVAL`].
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// Trusts the CA certificate `pem` (PEM text) for a `rediss://` URL, instead of the
    /// system's roots: for a Redis server whose certificate a private CA signed. The
    /// `[state] ca_file` setting reads it from a file.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.ca = Some(CaPem(pem.into()));
        self
    }

    /// The settings.
    ///
    /// # Errors
    ///
    /// [`StateError::BadUrl`] unless the URL starts with `redis://` or `rediss://`;
    /// [`StateError::Invalid`] for an empty namespace, a zero duration, or a CA certificate
    /// with a `redis://` URL; [`StateError::BadCa`] for a CA certificate that is not PEM.
    pub fn build(self) -> Result<StateConfig, StateError> {
        let c = self.config;
        let url = &c.url.0;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(StateError::BadUrl);
        }
        if c.namespace.is_empty() {
            return Err(StateError::Invalid {
                field: "namespace",
                problem: "is empty: write a prefix such as \"llm-failover\"",
            });
        }
        for (field, d) in [
            ("timeout", c.timeout),
            ("connect_timeout", c.connect_timeout),
            ("reconcile_interval", c.reconcile_interval),
            ("fleet_window", c.fleet_window),
            ("flush_interval", c.flush_interval),
        ] {
            if d.is_zero() {
                return Err(StateError::Invalid {
                    field,
                    problem: "is zero: write a duration such as \"200ms\"",
                });
            }
        }
        if c.ca.is_some() && !url.starts_with("rediss://") {
            return Err(StateError::Invalid {
                field: "ca_file",
                problem: "is set but the URL is redis://: write rediss:// to connect over TLS, \
                          or remove the CA certificate",
            });
        }
        if let Some(ca) = &c.ca {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let mut certs = CertificateDer::pem_slice_iter(&ca.0).peekable();
            if certs.peek().is_none() || certs.any(|c| c.is_err()) {
                return Err(StateError::BadCa);
            }
        }
        if c.fleet_window < Duration::from_millis(10) {
            return Err(StateError::Invalid {
                field: "fleet_window",
                problem: "is under 10ms: write a span such as \"10s\"",
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let c = StateConfig::builder("redis://user:hunter2-sentinel@10.0.0.1:6379/2")
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2-sentinel"), "{shown}");
        assert!(shown.contains("redis://***@10.0.0.1:6379/2"), "{shown}");
        assert_eq!(SecretUrl("rediss://h:1".into()).redacted(), "rediss://h:1");
        assert!(matches!(
            StateConfig::builder("http://x").build(),
            Err(StateError::BadUrl)
        ));
    }
}
