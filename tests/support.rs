//! Helpers shared by the integration tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use llm_failover::chain::{Answer, FailoverError, Route};
use llm_failover::protocol::openai_chat::{Client, Endpoint};
use llm_failover::sim::Sim;
use serde_json::Value;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A fresh folder for one test's files (config files, certificates), removed with all it
/// holds when the value is dropped, also when the test fails.
///
/// The value is the guard: bind it to a name (not `_`) and keep it for as long as anything
/// reads the files. A proxy started with `serve --config PATH` reads `PATH` again on every
/// reload, so make the `Files` before the [`Served`] (locals drop in reverse order) and the
/// folder outlives the process. Every value is a folder of its own, so tests that run at the
/// same time never share one.
pub struct Files(tempfile::TempDir);

impl Files {
    /// Makes the folder, `llm-failover-*` under the system's temporary directory.
    pub fn new() -> Self {
        Self(
            tempfile::Builder::new()
                .prefix("llm-failover-")
                .tempdir()
                .unwrap(),
        )
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes `text` to the file `name` in the folder (replacing it if it exists) and returns
    /// its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// An HTTP/1.1 response with a correct content-length.
pub fn http(status_line: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A loopback server that answers every connection with `response` (sent as is), after
/// reading the request.
pub async fn canned(response: impl Into<String>) -> SocketAddr {
    let response: Arc<str> = response.into().into();
    answering(move |_| response.to_string()).await
}

/// A loopback server that reads each connection's request (its first 8 KiB, as text) and
/// sends back what `answer` makes of it.
pub async fn answering(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> SocketAddr {
    let answer = Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let response = answer(&String::from_utf8_lossy(&buf[..n]));
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

/// One call through `route` of a one-message chat, each attempt sent to the endpoint of its
/// provider.
pub async fn route_chat(
    route: &Route,
    client: &Client,
    endpoints: &[Endpoint],
) -> Result<Answer<Value>, FailoverError> {
    route
        .call(|a| {
            let e = endpoints
                .iter()
                .find(|e| e.provider() == a.provider())
                .unwrap()
                .clone();
            let client = client.clone();
            async move {
                let body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
                client.chat(&e, a.model(), &body).await
            }
        })
        .await
}

/// The SHA-256 of `key`, as lowercase hex (a `key_sha256` value).
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A sim with no faults configured.
pub async fn sim() -> Sim {
    Sim::builder().start().await.unwrap()
}

/// Posts [`chat_body`](crate::proxy::chat_body)`(model, stream)` to `url`.
pub async fn post_chat(
    http: &reqwest::Client,
    url: &str,
    model: &str,
    stream: bool,
) -> reqwest::Response {
    http.post(url)
        .json(&crate::proxy::chat_body(model, stream))
        .send()
        .await
        .unwrap()
}

/// Sends `req` and reads the JSON body of its response.
pub async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// The JSON body of a GET of `url`.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    json_of(http.get(url)).await
}

/// A sim whose port refuses connections for an hour.
pub async fn down_sim() -> Sim {
    Sim::builder()
        .down_for(Duration::from_secs(3600))
        .start()
        .await
        .unwrap()
}

/// The ids in a `/v1/models` body, in order.
pub fn model_ids(models: &Value) -> Vec<&str> {
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

/// The entry for `provider`/`model` in the `breakers` of a `/v1/failover/status` body.
pub fn status_breaker<'a>(status: &'a Value, provider: &str, model: &str) -> Option<&'a Value> {
    status["breakers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["provider"] == provider && b["model"] == model)
}

/// The `llm-failover serve` binary on a config file, its log (stderr) read line by line;
/// killed on drop.
pub struct Served {
    pub child: Child,
    lines: Receiver<String>,
    /// Every log line read so far.
    seen: std::cell::RefCell<Vec<String>>,
    /// The API's `host:port`.
    pub addr: String,
}

impl Served {
    /// Runs `serve --listen 127.0.0.1:0 --config path` with `RUST_LOG=info` and `env` (which
    /// may set another `RUST_LOG`), and waits until it says where its API is.
    pub fn start(path: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_on(path, "127.0.0.1:0", env)
    }

    /// [`start`](Self::start) with `--listen listen`.
    pub fn start_on(path: &Path, listen: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llm-failover"))
            .args(["serve", "--listen", listen, "--config"])
            .arg(path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut served = Self {
            child,
            lines,
            seen: std::cell::RefCell::default(),
            addr: String::new(),
        };
        let line = served.wait_for("API on http://");
        served.addr = line
            .split("API on http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_owned();
        served
    }

    /// Waits for the log line that has `needle` (the wait is a guard against a hang only).
    pub fn wait_for(&self, needle: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!("no log line with {needle:?} in {:?}", self.seen.borrow())
                });
            self.seen.borrow_mut().push(l.clone());
            if l.contains(needle) {
                return l;
            }
        }
    }

    /// Sends the process signal `sig` (`HUP`, `TERM`) with `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Served {
    /// Sends SIGTERM, checks that the process exits cleanly, and returns its whole log.
    pub fn stop(&mut self) -> String {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit after SIGTERM: {status}");
        let mut log = self.seen.take();
        // The reader ends with the process's stderr.
        log.extend(self.lines.iter());
        log.join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the fmt layer writes.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// What was written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` to its end on a current-thread runtime with the metrics layer and a log capture
/// (every span's events included) installed for it alone; returns the Prometheus scrape and
/// the logs.
pub fn observed<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) -> (String, String) {
    use tracing_subscriber::layer::SubscriberExt as _;
    // tracing-core computes a new callsite's interest from the registering thread's
    // dispatcher alone while at most one dispatcher exists. A test thread without one (a
    // plain `#[tokio::test]`) that hits a callsite first would then cache "never" for every
    // thread, and this capture would miss the event. A second dispatcher, alive for the whole
    // run, keeps tracing asking all of them.
    static KEEPER: std::sync::LazyLock<tracing::Dispatch> = std::sync::LazyLock::new(|| {
        tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default())
    });
    std::sync::LazyLock::force(&KEEPER);
    let logs = Logs::default();
    let recorder = llm_failover::telemetry::prometheus_builder().build_recorder();
    let scrape = recorder.handle();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(llm_failover::telemetry::MetricsLayer::new())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
                .with_ansi(false),
        );
    metrics::with_local_recorder(&recorder, || {
        tracing::subscriber::with_default(subscriber, || {
            // Callsites first seen by another test's thread, with no subscriber interested,
            // cached "never": ask again now that this one is installed.
            tracing::callsite::rebuild_interest_cache();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f());
        });
    });
    (scrape.render(), logs.text())
}

/// The `(event, data)` pairs of a named-event SSE body (Anthropic Messages, OpenAI Responses);
/// events without a name or whose data is not JSON are left out.
pub fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}

/// The `endpoints` that a `/v1/models` body lists for `route`.
pub fn endpoints(models: &Value, route: &str) -> Vec<String> {
    let model = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == route)
        .unwrap_or_else(|| panic!("no route {route} in {models}"));
    serde_json::from_value(model["endpoints"].clone()).unwrap()
}
