//! Shared breaker state through a real `redis-server` (feature `redis`): every test starts its
//! own server on a free loopback port in a temporary directory and stops it at the end.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_failover::Reason;
use llm_failover::breaker::{BreakerPolicy, Outcome, Registry, State};
use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::{Fault, Sim};
use llm_failover::state::{RedisState, StateConfig, StateHandle};
use tokio::sync::oneshot;

use crate::support::{Files, Served, down_sim, observed, post_chat, sim};

/// The admin key of [`replica`]s whose config has an `[admin]` section.
const ADMIN_KEY: &str = "fleet-admin-key-5eb1";

/// A `redis-server` of the test's own; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Its working folder (and, for TLS, its certificates); removed after the server stops.
    files: Files,
    args: Vec<String>,
    /// Listening on TLS only (see [`start_tls`](Self::start_tls)).
    tls: bool,
}

impl RedisServer {
    pub fn start(extra: &[&str]) -> Self {
        let mut s = Self::start_stopped();
        s.args = extra.iter().map(|a| (*a).to_owned()).collect();
        s.spawn();
        s
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 signed by a CA of its
    /// own (made with the `openssl` CLI); [`ca_file`](Self::ca_file) is that CA.
    pub fn start_tls() -> Self {
        let mut s = Self::start_stopped();
        let dir = s.files.path().to_owned();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl (scripts/test.sh installs it): {e}"));
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=llm-failover test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        s.files.write(
            "server.ext",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let port = s.port.to_string();
        s.args = [
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        s.tls = true;
        s.spawn();
        s
    }

    /// The CA certificate of a [`start_tls`](Self::start_tls) server.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.files.path().join("ca.crt")
    }

    fn start_stopped() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            child: None,
            port,
            files: Files::new(),
            args: Vec::new(),
            tls: false,
        }
    }

    /// Starts the server (again, on the same port) and waits for its "ready" log line.
    pub fn spawn(&mut self) {
        let mut child = Command::new("redis-server")
            .current_dir(self.files.path())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.files.path())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server (scripts/test.sh installs it): {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "redis-server did not become ready"
        );
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// A connection to the server.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    /// Stops the server; its folder goes after, with the `files` field.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every few milliseconds until it holds; panics after `limit`.
pub async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Replica {
    addr: std::net::SocketAddr,
    proxy: Proxy,
    _stop: oneshot::Sender<()>,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.addr)
    }
    fn state_of(&self, provider: &str, model: &str) -> State {
        self.proxy
            .registry()
            .breaker(provider, model)
            .unwrap()
            .state()
    }
    /// Waits up to 5 s (for `what`) until this replica's `provider/model` breaker is in
    /// `state`.
    async fn wait_for(&self, what: &str, provider: &str, model: &str, state: State) {
        until(what, Duration::from_secs(5), || {
            self.state_of(provider, model) == state
        })
        .await;
    }
    fn backend(&self) -> StateHandle {
        self.proxy.state().unwrap()
    }
}

/// Providers `a` (primary) and `b` (fallback), route `chat` = a/m, b/m, breakers shared
/// through Redis (namespace `t`); `breaker` holds the `[breaker]` settings, `state` more
/// `[state]` ones.
fn shared_config(a: &Sim, b: &Sim, backoff: &str, breaker: &str, state: &str) -> String {
    format!(
        r#"
[route]
attempt_timeout = "2s"
total_deadline = "10s"
retry_backoff = "{backoff}"

[breaker]
{breaker}

[providers.a]
base_url = "{}"
[providers.b]
base_url = "{}"

[routes.chat]
targets = ["a/m", "b/m"]

[state]
backend = "redis"
url_env = "TEST_REDIS_URL"
namespace = "t"
timeout = "2s"
connect_timeout = "2s"
{state}
"#,
        a.base_url(),
        b.base_url()
    )
}

/// [`shared_config`] where a model-not-found trips `a/m` at once for `open`, and re-opens for
/// far longer.
fn fleet_config(a: &Sim, b: &Sim, open: &str, extra: &str) -> String {
    let breaker = format!(
        r#"consecutive_failures = 1
half_open_probes = 1
probe_lease = "3s"
backoff_multiplier = 50.0
jitter = 0.0
max_open = "1m"
[breaker.reasons.model_not_found]
open_base = "{open}""#
    );
    let state = format!("reconcile_interval = \"200ms\"\n{extra}");
    shared_config(a, b, "10ms", &breaker, &state)
}

async fn replica(toml: &str, redis: &RedisServer) -> Replica {
    let url = redis.url();
    let config = Config::parse_with_env(toml, "fleet.toml", |v| match v {
        "TEST_REDIS_URL" => Some(url.clone()),
        "TEST_ADMIN_KEY" => Some(ADMIN_KEY.to_owned()),
        _ => None,
    })
    .unwrap();
    let proxy = Proxy::new(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    // `serve` synchronises with Redis before it accepts the first connection.
    tokio::spawn(proxy.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    assert!(proxy.state().unwrap().synced(Duration::from_secs(5)).await);
    Replica {
        addr,
        proxy,
        _stop: tx,
    }
}

async fn ask(http: &reqwest::Client, r: &Replica) -> (u16, String) {
    let resp = post_chat(http, &r.url(), "chat", false).await;
    let provider = resp
        .headers()
        .get("x-failover-provider")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status().as_u16(), provider)
}

/// Sim `a`, whose model `m` answers `status`, and a healthy sim `b`.
async fn sims_failing(status: u16) -> (Sim, Sim) {
    let a = Sim::builder()
        .fault("m", Fault::Status(status))
        .start()
        .await
        .unwrap();
    (a, sim().await)
}

/// [`sims_failing`] with model-not-found.
async fn sims() -> (Sim, Sim) {
    sims_failing(404).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_on_one_replica_sends_the_others_straight_to_the_fallback() {
    let redis = RedisServer::start(&[]);
    let (a, b) = sims().await;
    let toml = fleet_config(&a, &b, "30s", "");
    let (r1, r2, r3) = (
        replica(&toml, &redis).await,
        replica(&toml, &redis).await,
        replica(&toml, &redis).await,
    );
    let http = reqwest::Client::new();
    assert_eq!(ask(&http, &r1).await, (200, "b".into()));
    assert_eq!(a.attempts("m"), 1);
    assert_eq!(r1.state_of("a", "m"), State::Open);
    until(
        "the trip to reach the others",
        Duration::from_secs(5),
        || r2.state_of("a", "m") == State::Open && r3.state_of("a", "m") == State::Open,
    )
    .await;
    for r in [&r2, &r3, &r2, &r3] {
        assert_eq!(ask(&http, r).await, (200, "b".into()));
    }
    assert_eq!(
        a.attempts("m"),
        1,
        "no replica sent a single attempt to the open target"
    );
    // The key's expiry is the open time, on the server's clock.
    let mut c = redis.conn().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("t:open:a:m")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 20_000 && ttl <= 30_000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_through_half_open_send_exactly_the_configured_probes() {
    let redis = RedisServer::start(&[]);
    let (a, b) = sims().await;
    let toml = fleet_config(&a, &b, "400ms", "");
    let replicas = [
        replica(&toml, &redis).await,
        replica(&toml, &redis).await,
        replica(&toml, &redis).await,
    ];
    let http = reqwest::Client::new();
    assert_eq!(ask(&http, &replicas[0]).await.0, 200);
    until("every replica open", Duration::from_secs(5), || {
        replicas.iter().all(|r| r.state_of("a", "m") == State::Open)
    })
    .await;
    // Every replica sends requests concurrently through the end of the open time, the probe,
    // and the re-opening (400 ms × 50 = 20 s: far beyond this loop).
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        let round = replicas.iter().map(|r| ask(&http, r));
        for (status, _) in futures_util::future::join_all(round).await {
            assert_eq!(status, 200);
        }
    }
    assert_eq!(
        a.attempts("m"),
        2,
        "one trip, then exactly one probe fleet-wide"
    );
    for r in &replicas {
        assert_eq!(r.state_of("a", "m"), State::Open);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_after_the_trip_knows_it_before_its_first_request() {
    let redis = RedisServer::start(&[]);
    let (a, b) = sims().await;
    let toml = fleet_config(&a, &b, "30s", "");
    let r1 = replica(&toml, &redis).await;
    let http = reqwest::Client::new();
    assert_eq!(ask(&http, &r1).await, (200, "b".into()));
    // Wait for the publish to land (the key is there), then start the late replica.
    let c = redis.conn().await;
    until_async("the open key", || {
        let mut c = c.clone();
        async move { exists(&mut c, "t:open:a:m").await }
    })
    .await;
    let late = replica(&toml, &redis).await;
    assert_eq!(late.state_of("a", "m"), State::Open);
    assert_eq!(ask(&http, &late).await, (200, "b".into()));
    assert_eq!(a.attempts("m"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_leaves_local_breakers_and_a_restart_resynchronises() {
    let mut redis = RedisServer::start(&[]);
    let (a, b) = sims().await;
    a.set_fault("m2", Fault::Status(404));
    let toml = fleet_config(&a, &b, "30s", "").replace(
        r#"targets = ["a/m", "b/m"]"#,
        r#"targets = ["a/m", "b/m"]
[routes.chat2]
targets = ["a/m2", "b/m"]"#,
    );
    let (r1, r2) = (replica(&toml, &redis).await, replica(&toml, &redis).await);
    assert!(r1.backend().is_up() && r2.backend().is_up());
    redis.kill();
    until(
        "both replicas to see Redis down",
        Duration::from_secs(10),
        || !r1.backend().is_up() && !r2.backend().is_up(),
    )
    .await;
    // Every request answers through the local breakers, none waiting on Redis (timeout 2 s).
    let http = reqwest::Client::new();
    for r in [&r1, &r1, &r2, &r2] {
        let t = Instant::now();
        assert_eq!(ask(&http, r).await, (200, "b".into()));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // Each replica tripped on its own: the trip could not be shared.
    assert_eq!(a.attempts("m"), 2);
    redis.spawn();
    until(
        "both replicas to reconnect",
        Duration::from_secs(15),
        || r1.backend().is_up() && r2.backend().is_up(),
    )
    .await;
    // The restarted (empty) server learned the open breakers back from the replicas...
    assert!(exists(&mut redis.conn().await, "t:open:a:m").await);
    // ...and trips are shared again.
    let resp = post_chat(&http, &r1.url(), "chat2", false).await;
    assert_eq!(resp.status(), 200);
    r2.wait_for(
        "the new trip to reach the other replica",
        "a",
        "m2",
        State::Open,
    )
    .await;
}

/// A replica's registry of one target `p/m`, sharing through `redis` (namespace `lib`); a
/// model-not-found opens it for `open`, and a probe's lease lasts 1 s.
fn registry_with_state(redis: &RedisServer, open: Duration) -> (Arc<Registry>, StateHandle) {
    let policy = BreakerPolicy::builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .probe_lease(Duration::from_secs(1))
        .open_base(Reason::ModelNotFound, open)
        .build()
        .unwrap();
    let state = RedisState::new(
        StateConfig::builder(redis.url())
            .namespace("lib")
            .reconcile_interval(Duration::from_millis(100))
            .build()
            .unwrap(),
    )
    .unwrap();
    let registry = Arc::new(
        Registry::builder()
            .policy(policy)
            .target("p", "m")
            .on_transition(state.listener())
            .build()
            .unwrap(),
    );
    let handle = state.start(Arc::clone(&registry)).unwrap();
    (registry, handle)
}

/// Two replicas' [`registry_with_state`], both synchronised with `redis`.
async fn synced_pair(redis: &RedisServer, open: Duration) -> [(Arc<Registry>, StateHandle); 2] {
    let pair = [
        registry_with_state(redis, open),
        registry_with_state(redis, open),
    ];
    for (_, handle) in &pair {
        assert!(handle.synced(Duration::from_secs(5)).await);
    }
    pair
}

/// Whether `key` exists on the server behind `c`.
async fn exists(c: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query_async(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_a_dead_replica_expires_and_another_replica_probes() {
    let redis = RedisServer::start(&[]);
    let [(r1, _h1), (r2, _h2)] = synced_pair(&redis, Duration::from_millis(300)).await;
    let t = r1.target("p", "m").unwrap();
    let _ = t.try_acquire().unwrap().record(Outcome::failure(
        Reason::ModelNotFound,
        Duration::from_millis(1),
    ));
    until(
        "the trip to reach the second replica",
        Duration::from_secs(5),
        || r2.breaker("p", "m").unwrap().state() == State::Open,
    )
    .await;
    // A replica took the lease and died before its probe settled.
    let mut c = redis.conn().await;
    let _: () = redis::cmd("SET")
        .arg(&["lib:lease:p:m", "dead-replica", "PX", "1000"][..])
        .query_async(&mut c)
        .await
        .unwrap();
    // Both replicas ask for a probe until one is admitted; the lease must have expired by
    // then, and only one replica may hold a probe.
    let try_probes = |probes: &mut Vec<_>| {
        for r in [&r1, &r2] {
            if let Ok(p) = r.target("p", "m").unwrap().try_acquire_owned() {
                probes.push(p);
            }
        }
    };
    let mut probes = Vec::new();
    let start = Instant::now();
    while probes.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no replica took the lease over"
        );
        try_probes(&mut probes);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let holder: Option<String> = redis::cmd("GET")
        .arg("lib:lease:p:m")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_ne!(holder.as_deref(), Some("dead-replica"));
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        try_probes(&mut probes);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(probes.len(), 1, "exactly one probe fleet-wide");
    // The probe succeeds: the other replica adopts the close.
    let probe = probes.pop().unwrap();
    let _ = probe.record(Outcome::success(Duration::from_millis(1)));
    until("both replicas closed", Duration::from_secs(5), || {
        r1.breaker("p", "m").unwrap().state() == State::Closed
            && r2.breaker("p", "m").unwrap().state() == State::Closed
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_control_applies_fleet_wide() {
    let redis = RedisServer::start(&[]);
    let [(r1, _h1), (r2, _h2)] = synced_pair(&redis, Duration::from_secs(30)).await;
    let b2 = || r2.breaker("p", "*").unwrap().state();
    r1.control("p", "*")
        .unwrap()
        .force_open(Some(Duration::from_secs(60)));
    until("forced open everywhere", Duration::from_secs(5), || {
        b2() == State::ForcedOpen
    })
    .await;
    r1.control("p", "*").unwrap().disable(None);
    until("disabled everywhere", Duration::from_secs(5), || {
        b2() == State::Disabled
    })
    .await;
    r1.control("p", "*").unwrap().reset();
    until("reset everywhere", Duration::from_secs(5), || {
        b2() == State::Closed
    })
    .await;
    assert_eq!(r1.breaker("p", "*").unwrap().state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_closes_a_shared_trip_and_deletes_its_keys() {
    let redis = RedisServer::start(&[]);
    let [(r1, _h1), (r2, _h2)] = synced_pair(&redis, Duration::from_secs(30)).await;
    let t = r1.target("p", "m").unwrap();
    let _ = t.try_acquire().unwrap().record(Outcome::failure(
        Reason::ModelNotFound,
        Duration::from_millis(1),
    ));
    let b2 = || r2.breaker("p", "m").unwrap().state();
    until(
        "the trip to reach the second replica",
        Duration::from_secs(5),
        || b2() == State::Open,
    )
    .await;
    let c = redis.conn().await;
    assert!(exists(&mut c.clone(), "lib:open:p:m").await);
    r1.control("p", "m").unwrap().reset();
    until(
        "the reset to reach the second replica",
        Duration::from_secs(5),
        || b2() == State::Closed,
    )
    .await;
    // A replica that joins later (or reconciles) must not adopt the trip again.
    until_async("the open key to go", || {
        let mut c = c.clone();
        async move { !exists(&mut c, "lib:open:p:m").await }
    })
    .await;
}

#[test]
fn the_password_never_leaks_and_the_sync_metrics_are_produced() {
    const SENTINEL: &str = "sentinel-pw-8d1f0c";
    let redis = RedisServer::start(&["--requirepass", SENTINEL]);
    let mut shown = Vec::new();
    let shown_in = &mut shown;
    let (text, logs) = observed(move || async move {
        let shown = shown_in;
        // The right password: the fleet works.
        let url = format!("redis://:{SENTINEL}@127.0.0.1:{}", redis.port);
        let config = StateConfig::builder(&url).namespace("pw").build().unwrap();
        shown.push(format!("{config:?}"));
        let state = RedisState::new(config).unwrap();
        let registry = Arc::new(
            Registry::builder()
                .policy(
                    BreakerPolicy::builder()
                        .consecutive_failures(1)
                        .build()
                        .unwrap(),
                )
                .target("p", "m")
                .on_transition(state.listener())
                .build()
                .unwrap(),
        );
        shown.push(format!("{state:?}"));
        let handle = state.start(Arc::clone(&registry)).unwrap();
        assert!(handle.synced(Duration::from_secs(5)).await);
        let _ = registry
            .target("p", "m")
            .unwrap()
            .try_acquire()
            .unwrap()
            .record(Outcome::failure(
                Reason::ModelNotFound,
                Duration::from_millis(1),
            ));
        let mut c = redis.conn().await;
        let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
        assert!(ping.is_err(), "the server asks for the password");
        let authed = redis::Client::open(url.as_str()).unwrap();
        let mut c = authed.get_multiplexed_async_connection().await.unwrap();
        until_async("the open key", || {
            let mut c = c.clone();
            async move { exists(&mut c, "pw:open:p:m").await }
        })
        .await;
        shown.push(format!("{handle:?}"));
        drop(handle);
        let _: () = redis::cmd("PING").query_async(&mut c).await.unwrap();

        // A wrong password: errors, and still nothing shows it.
        let wrong = format!("redis://:{SENTINEL}-wrong@127.0.0.1:{}", redis.port);
        let state = RedisState::new(StateConfig::builder(&wrong).build().unwrap()).unwrap();
        let registry = Arc::new(Registry::builder().target("p", "m").build().unwrap());
        let handle = state.start(registry).unwrap();
        assert!(!handle.synced(Duration::from_millis(500)).await);
        assert!(!handle.is_up());
        shown.push(format!("{handle:?}"));
        shown.push(
            StateConfig::builder(format!("http://:{SENTINEL}@x"))
                .build()
                .unwrap_err()
                .to_string(),
        );
        drop(handle);
    });
    for s in shown.iter().chain([&logs, &text]) {
        assert!(!s.contains(SENTINEL), "the password leaked: {s}");
    }
    assert!(!logs.is_empty());
    assert!(
        text.contains(r#"llm_failover_state_sync_total{op="publish",outcome="ok"}"#),
        "{text}"
    );
    assert!(text.contains(r#"llm_failover_state_sync_total{op="reconcile",outcome="ok"}"#));
    assert!(text.contains("llm_failover_state_sync_total{op=\"reconcile\",outcome=\"error\"}"));
    assert!(text.contains("llm_failover_state_backend_up 0"), "{text}");
}

/// As [`until`], for an async condition.
async fn until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A reload keeps sharing: the breakers it reuses still publish to the fleet (they keep the
/// listener they were built with, so the proxy gives them one that follows the serving
/// configuration's backend). The real binary reloads on SIGHUP; an in-process replica watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reload_the_reused_breakers_still_share_their_trips() {
    let redis = RedisServer::start(&[]);
    let (a, b) = sims().await;
    let toml = fleet_config(&a, &b, "30s", "");
    // Read again on the SIGHUP below: made before the child so it is removed after it.
    let files = Files::new();
    let path = files.write("fleet.toml", &toml);
    let url = redis.url();
    let served = Served::start(&path, &[("TEST_REDIS_URL", &url)]);
    let watcher = replica(&toml, &redis).await;

    served.signal("HUP");
    served.wait_for("reloaded");

    // The child's a/m breaker survived the reload (same policy); trip it there.
    let resp = post_chat(
        &reqwest::Client::new(),
        &format!("http://{}/v1/chat/completions", served.addr),
        "chat",
        false,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(a.attempts("m"), 1);
    watcher
        .wait_for(
            "the reloaded replica's trip to reach the watcher",
            "a",
            "m",
            State::Open,
        )
        .await;
}

/// [`shared_config`] for `a` failing with 500s, counted; the breaker trips after 4 failures,
/// counted fleet-wide.
fn counting_config(a: &Sim, b: &Sim) -> String {
    let breaker = "consecutive_failures = 4
failure_rate = 1.0
min_calls = 100
window_calls = 100
jitter = 0.0";
    let state = r#"fleet_counting = true
fleet_window = "1m"
flush_interval = "5ms""#;
    shared_config(a, b, "1ms", breaker, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_counting_trips_every_replica_when_the_fleet_total_reaches_the_threshold() {
    let redis = RedisServer::start(&[]);
    let (a, b) = sims_failing(500).await;
    let toml = counting_config(&a, &b);
    let (r1, r2) = (replica(&toml, &redis).await, replica(&toml, &redis).await);
    let http = reqwest::Client::new();
    let failures = |r: &Replica| {
        r.proxy
            .registry()
            .breaker("a", "m")
            .unwrap()
            .snapshot()
            .consecutive_failures
    };
    // Each replica sees fewer than 4 failures of its own...
    for (r, upto) in [(&r1, 2), (&r2, 4)] {
        while a.attempts("m") < upto {
            assert_eq!(ask(&http, r).await, (200, "b".into()));
        }
    }
    assert_eq!(a.attempts("m"), 4);
    let local = (failures(&r1), failures(&r2));
    assert!(local.0 < 4 && local.1 < 4, "{local:?}");
    // ...and the fleet's total of 4 opens both.
    until("both replicas to open", Duration::from_secs(5), || {
        r1.state_of("a", "m") == State::Open && r2.state_of("a", "m") == State::Open
    })
    .await;
    for r in [&r1, &r2] {
        assert_eq!(ask(&http, r).await, (200, "b".into()));
    }
    assert_eq!(a.attempts("m"), 4, "no attempt reached the open target");
    // The trip emptied the fleet's count.
    assert!(!exists(&mut redis.conn().await, "t:count:a:m").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_stays_local_by_default() {
    let redis = RedisServer::start(&[]);
    let (a, b) = sims_failing(500).await;
    let toml = counting_config(&a, &b).replace("fleet_counting = true", "");
    let (r1, r2) = (replica(&toml, &redis).await, replica(&toml, &redis).await);
    let http = reqwest::Client::new();
    for (r, upto) in [(&r1, 2), (&r2, 4)] {
        while a.attempts("m") < upto {
            assert_eq!(ask(&http, r).await, (200, "b".into()));
        }
    }
    assert_eq!(a.attempts("m"), 4);
    // Nothing was counted in Redis.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("t:count:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(r1.state_of("a", "m"), State::Closed);
    assert_eq!(r2.state_of("a", "m"), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_action_on_one_proxy_applies_on_another_replica() {
    let redis = RedisServer::start(&[]);
    let (a, b) = sims().await;
    let admin = "[admin]\nname = \"ops\"\nkey_env = \"TEST_ADMIN_KEY\"\n";
    let toml = format!("{}\n{admin}", fleet_config(&a, &b, "30s", ""));
    let (r1, r2) = (replica(&toml, &redis).await, replica(&toml, &redis).await);
    let http = reqwest::Client::new();
    let act = |body: serde_json::Value| {
        http.post(format!("http://{}/v1/failover/breakers/a/m", r1.addr))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let resp = act(serde_json::json!({"action": "force_open", "duration": "10m"}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(r1.state_of("a", "m"), State::ForcedOpen);
    r2.wait_for(
        "the forced open to reach the other replica",
        "a",
        "m",
        State::ForcedOpen,
    )
    .await;
    assert_eq!(ask(&http, &r2).await, (200, "b".into()));
    assert_eq!(
        a.attempts("m"),
        0,
        "the other replica sent nothing to the forced-open target"
    );
    let resp = act(serde_json::json!({"action": "reset"})).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    r2.wait_for(
        "the reset to reach the other replica",
        "a",
        "m",
        State::Closed,
    )
    .await;
    assert_eq!(r1.state_of("a", "m"), State::Closed);
    // Without the admin key, nothing happens.
    let resp = http
        .post(format!("http://{}/v1/failover/breakers/a/m", r2.addr))
        .json(&serde_json::json!({"action": "force_open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(r2.state_of("a", "m"), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_connects_over_tls_with_a_private_ca_and_shares_a_trip() {
    let redis = RedisServer::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let (a, b) = sims().await;
    let ca = format!("ca_file = {:?}", redis.ca_file().display().to_string());
    let toml = fleet_config(&a, &b, "30s", &ca);
    let (r1, r2) = (replica(&toml, &redis).await, replica(&toml, &redis).await);
    assert!(r1.backend().is_up() && r2.backend().is_up());
    let http = reqwest::Client::new();
    assert_eq!(ask(&http, &r1).await, (200, "b".into()));
    r2.wait_for(
        "the trip to reach the other replica over TLS",
        "a",
        "m",
        State::Open,
    )
    .await;
    assert_eq!(ask(&http, &r2).await, (200, "b".into()));
    assert_eq!(
        a.attempts("m"),
        1,
        "the other replica sent nothing to the open target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_refuses_a_server_whose_ca_is_not_trusted() {
    let redis = RedisServer::start_tls();
    // The system's roots do not hold the test CA: the handshake fails, the backend stays
    // down, and requests go on with local breakers.
    let state = RedisState::new(
        StateConfig::builder(redis.url())
            .timeout(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    let registry = Arc::new(
        Registry::builder()
            .target("p", "m")
            .on_transition(state.listener())
            .build()
            .unwrap(),
    );
    let handle = state.start(Arc::clone(&registry)).unwrap();
    assert!(!handle.synced(Duration::from_secs(1)).await);
    assert!(!handle.is_up());
    assert!(registry.breaker("p", "m").unwrap().try_acquire().is_ok());
}

#[test]
fn state_settings_that_cannot_work_are_refused_with_their_field() {
    let (a, b) = (
        "http://127.0.0.1:9".to_owned(),
        "http://127.0.0.1:9".to_owned(),
    );
    let config = |url: &str, extra: &str| {
        let toml = format!(
            "[providers.a]\nbase_url = \"{a}\"\n[providers.b]\nbase_url = \"{b}\"\n\
             [routes.chat]\ntargets = [\"a/m\", \"b/m\"]\n\
             [state]\nbackend = \"redis\"\nurl_env = \"U\"\n{extra}\n"
        );
        let url = url.to_owned();
        Config::parse_with_env(&toml, "s.toml", move |v| (v == "U").then(|| url.clone()))
    };
    // A path in a fresh, empty folder: missing for sure.
    let files = Files::new();
    let missing = files.path().join("no-such-ca.pem");
    for (url, extra, field) in [
        (
            "rediss://127.0.0.1:1",
            format!("ca_file = {:?}", missing.display().to_string()),
            "state.ca_file",
        ),
        (
            "redis://127.0.0.1:1",
            format!("ca_file = {:?}", file!()),
            "state.ca_file",
        ),
        (
            "redis://127.0.0.1:1",
            "fleet_window = \"1ms\"".to_owned(),
            "state.fleet_window",
        ),
        (
            "redis://127.0.0.1:1",
            "flush_interval = \"0s\"".to_owned(),
            "state.flush_interval",
        ),
    ] {
        let e = config(url, &extra).unwrap_err().to_string();
        assert!(e.contains(field), "{extra}: {e}");
        assert!(
            !url.starts_with("redis:") || !extra.starts_with("ca") || e.contains("rediss://"),
            "{e}"
        );
    }
    let ok = config(
        "redis://127.0.0.1:1",
        "fleet_counting = true\nfleet_window = \"30s\"",
    )
    .unwrap();
    assert!(ok.state().unwrap().fleet_counting());
    // A file that is not a certificate.
    let e = config("rediss://127.0.0.1:1", &format!("ca_file = {:?}", file!()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("state.ca_file") && e.contains("not valid PEM"),
        "{e}"
    );
}

/// The issue's first case as written: a primary whose host refuses connections trips the
/// provider-wide breaker on one replica; the others go straight to the fallback, and their
/// trails show the primary skipped by its open breaker, no connection tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_primary_trips_the_provider_wide_breaker_fleet_wide() {
    let redis = RedisServer::start(&[]);
    let a = down_sim().await;
    let b = sim().await;
    let toml = fleet_config(&a, &b, "30s", "");
    let (r1, r2) = (replica(&toml, &redis).await, replica(&toml, &redis).await);
    let http = reqwest::Client::new();
    assert_eq!(ask(&http, &r1).await, (200, "b".into()));
    assert_eq!(r1.state_of("a", "*"), State::Open);
    r2.wait_for(
        "the provider-wide trip to reach the other replica",
        "a",
        "*",
        State::Open,
    )
    .await;
    let resp = post_chat(&http, &r2.url(), "chat", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"].to_str().unwrap(),
        "a/m=breaker_open; b/m=ok"
    );
}
