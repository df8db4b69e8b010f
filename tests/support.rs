//! Helpers shared by the integration tests.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

/// Everything the fmt layer writes.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

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
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    (scrape.render(), logs)
}
