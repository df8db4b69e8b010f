//! Installing the Prometheus exporter with buckets that suit LLM latencies.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use super::catalog::{METRICS, MetricKind, describe_metrics};

/// Histogram bucket bounds for the crate's latency histograms, in seconds: from 10 ms (a
/// refused connection, a cache hit) to 120 s (a long generation).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// How often the recorder without a listener drains its histograms when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installing the Prometheus exporter failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The scrape listener could not be started on the address.
    #[error(
        "could not listen for Prometheus scrapes on {addr}: the address is in use or not \
         available on this machine; choose another address or stop what holds it"
    )]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the exporter reported.
        #[source]
        source: BuildError,
    },
    /// A global `metrics` recorder was installed before.
    #[error(
        "a global metrics recorder is already installed; install the Prometheus exporter once, \
         at start-up, before anything records metrics"
    )]
    AlreadyInstalled(#[source] BuildError),
    /// The background thread that serves scrapes or drains histograms could not start.
    #[error(
        "could not start the metrics exporter's background thread; the system may be out of threads or memory"
    )]
    Thread(#[source] std::io::Error),
}

/// A [`PrometheusBuilder`] with [`LATENCY_BUCKETS`] for the crate's histograms (so they are
/// rendered as Prometheus histograms, not summaries). Add your own settings, then build.
///
/// ```
/// let recorder = llm_failover::telemetry::prometheus_builder().build_recorder();
/// let handle = recorder.handle();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::histogram!("llm_failover_attempt_duration_seconds").record(0.3);
/// });
/// assert!(handle.render().contains(r#"llm_failover_attempt_duration_seconds_bucket{le="0.5"} 1"#));
/// ```
#[must_use]
pub fn prometheus_builder() -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new();
    for m in METRICS.iter().filter(|m| m.kind == MetricKind::Histogram) {
        builder =
            match builder.set_buckets_for_metric(Matcher::Full(m.name.into()), LATENCY_BUCKETS) {
                Ok(b) => b,
                // Only an empty bucket list is refused, and ours is not empty.
                Err(e) => unreachable!("{e}"),
            };
    }
    builder
}

/// Installs the Prometheus exporter as the global `metrics` recorder, serving scrapes over
/// HTTP on `addr` (any path), and describes every metric. Returns a handle that renders the
/// same scrape text.
///
/// Inside a Tokio runtime the listener runs on it; otherwise on a background thread of its
/// own. Call it once at start-up, before the first request, so the
/// [`MetricsLayer`](super::MetricsLayer) registers its handles with this recorder.
///
/// ```no_run
/// let handle = llm_failover::telemetry::install_prometheus(([127, 0, 0, 1], 9464).into())?;
/// # Ok::<(), llm_failover::telemetry::ExporterError>(())
/// ```
///
/// # Errors
///
/// [`ExporterError::Listen`] when `addr` cannot be bound, [`ExporterError::AlreadyInstalled`]
/// when a global recorder exists already, [`ExporterError::Thread`] when the background thread
/// cannot start.
pub fn install_prometheus(addr: SocketAddr) -> Result<PrometheusHandle, ExporterError> {
    let builder = prometheus_builder().with_http_listener(addr);
    let listen = |source| ExporterError::Listen { addr, source };
    let recorder = if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let (recorder, exporter) = {
            let _entered = rt.enter();
            builder.build().map_err(listen)?
        };
        rt.spawn(exporter);
        recorder
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExporterError::Thread)?;
        let (recorder, exporter) = {
            let _entered = rt.enter();
            builder.build().map_err(listen)?
        };
        std::thread::Builder::new()
            .name("llm-failover-metrics".into())
            .spawn(move || rt.block_on(exporter))
            .map_err(ExporterError::Thread)?;
        recorder
    };
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder)
        .map_err(|e| ExporterError::AlreadyInstalled(e.into()))?;
    describe_metrics();
    Ok(handle)
}

/// Installs the Prometheus recorder as the global `metrics` recorder without a listener, and
/// describes every metric: render the scrape yourself with [`PrometheusHandle::render`] (the
/// proxy serves it on `/metrics`). A background thread drains histograms every 5 s, so memory
/// stays bounded when nobody scrapes.
///
/// ```no_run
/// let handle = llm_failover::telemetry::install_prometheus_recorder()?;
/// let scrape: String = handle.render();
/// # Ok::<(), llm_failover::telemetry::ExporterError>(())
/// ```
///
/// # Errors
///
/// [`ExporterError::AlreadyInstalled`] when a global recorder exists already,
/// [`ExporterError::Thread`] when the upkeep thread cannot start.
pub fn install_prometheus_recorder() -> Result<PrometheusHandle, ExporterError> {
    let recorder = prometheus_builder().build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder)
        .map_err(|e| ExporterError::AlreadyInstalled(e.into()))?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("llm-failover-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(ExporterError::Thread)?;
    describe_metrics();
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_span_10ms_to_120s_in_order() {
        assert_eq!(LATENCY_BUCKETS.first(), Some(&0.01));
        assert_eq!(LATENCY_BUCKETS.last(), Some(&120.0));
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_taken_address_is_named_in_the_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = install_prometheus(addr).unwrap_err();
        assert!(matches!(err, ExporterError::Listen { addr: a, .. } if a == addr));
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
