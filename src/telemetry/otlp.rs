//! Exporting the crate's spans over OTLP/HTTP (protobuf), as `llm-failover serve` does with
//! `[telemetry] otlp_endpoint`.
//!
//! The spans are the ones the [`MetricsLayer`](super::MetricsLayer) reads (the proxy's
//! `request`, the chain's `failover` and `attempt` with their OpenTelemetry GenAI fields), so
//! a trace shows a failover as the metrics count it. Only spans under `llm_failover` are
//! exported: the HTTP stacks' own spans stay out, and so does the exporter's own traffic.
//!
//! Export never holds a request: finished spans go into a bounded queue (2048 spans, or
//! `OTEL_BSP_MAX_QUEUE_SIZE`) that a background thread sends in batches (every 5 s, or
//! `OTEL_BSP_SCHEDULE_DELAY` milliseconds); when the queue is full, new spans are dropped. A
//! collector that cannot be reached is logged once (a warning under
//! `llm_failover::telemetry`), and once more when it answers again; each failed batch is a
//! debug line only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The service name when neither the configuration nor `OTEL_SERVICE_NAME` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "llm-failover";

/// The bound on the spans waiting for export, unless `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise.
const MAX_QUEUE: usize = 2048;

/// How long one batch may take to reach the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to export spans.
///
/// ```
/// use llm_failover::telemetry::OtlpSettings;
///
/// let s = OtlpSettings::new("http://127.0.0.1:4318/v1/traces")
///     .service_name("gateway")
///     .sampling_ratio(0.25)
///     .resource_attribute("deployment.environment", "prod");
/// assert_eq!(s.endpoint, "http://127.0.0.1:4318/v1/traces");
/// assert_eq!(s.sampling_ratio, 0.25);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The traces URL (`.../v1/traces`) the batches are posted to.
    pub endpoint: String,
    /// `service.name` of the resource. Default: [`DEFAULT_SERVICE_NAME`].
    pub service_name: String,
    /// The share of new traces sampled, 0 to 1 (a child follows its parent). Default: 1.
    pub sampling_ratio: f64,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES` is read too; these win).
    pub resource_attributes: Vec<(String, String)>,
}

impl OtlpSettings {
    /// Export to the traces URL `endpoint`, with every default.
    #[must_use]
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: DEFAULT_SERVICE_NAME.into(),
            sampling_ratio: 1.0,
            resource_attributes: Vec::new(),
        }
    }

    /// Sets `service.name`. Default: [`DEFAULT_SERVICE_NAME`].
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Sets the share of new traces sampled (clamped to 0..=1). Default: 1, every trace.
    #[must_use]
    pub fn sampling_ratio(mut self, ratio: f64) -> Self {
        self.sampling_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    /// Adds a resource attribute. Default: none beyond the service name and the SDK's own.
    #[must_use]
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.resource_attributes.push((key.into(), value.into()));
        self
    }
}

/// The exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot export spans to {endpoint}: {source}; check [telemetry] otlp_endpoint")]
pub struct OtlpError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// A running span export: a layer for the subscriber, and the flush at the end.
#[derive(Debug)]
pub struct OtlpExport {
    provider: SdkTracerProvider,
}

impl OtlpExport {
    /// Starts the export `settings` describe: a batch processor on its own thread. Call it
    /// outside an async context (its HTTP client is a blocking one) and before the
    /// subscriber is installed.
    ///
    /// # Errors
    ///
    /// [`OtlpError`] when the exporter cannot be built (an endpoint that is not a URL).
    pub fn start(settings: &OtlpSettings) -> Result<Self, OtlpError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| OtlpError {
                endpoint: settings.endpoint.clone(),
                source,
            })?;
        let exporter = Reported {
            inner: exporter,
            endpoint: settings.endpoint.clone(),
            down: AtomicBool::new(false),
        };
        let mut batch = BatchConfigBuilder::default();
        if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
            batch = batch.with_max_queue_size(MAX_QUEUE);
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes(
                settings
                    .resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        Ok(Self { provider })
    }

    /// The layer that hands the crate's spans (INFO and above) to the exporter.
    #[must_use]
    pub fn layer<S>(&self) -> impl Layer<S> + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("llm-failover"))
            .with_filter(Targets::new().with_target("llm_failover", tracing::Level::INFO))
    }

    /// Sends every finished span now; waits for the collector (at most its timeout).
    ///
    /// # Errors
    ///
    /// The SDK's error when a batch could not be sent.
    pub fn flush(&self) -> OTelSdkResult {
        self.provider.force_flush()
    }

    /// Flushes and stops the export thread.
    ///
    /// # Errors
    ///
    /// The SDK's error when the last batch could not be sent.
    pub fn shutdown(self) -> OTelSdkResult {
        self.provider.shutdown()
    }
}

/// An exporter that says once that the collector is unreachable, and once that it is back.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    endpoint: String,
    down: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "llm_failover::telemetry",
                        endpoint = %self.endpoint,
                        "the OTLP collector at {} is unreachable ({e}); spans are dropped until \
                         it answers (said once; RUST_LOG=llm_failover::telemetry=debug shows \
                         each failed batch)",
                        self.endpoint
                    );
                }
                tracing::debug!(
                    target: "llm_failover::telemetry",
                    spans,
                    "OTLP export failed: {e}"
                );
            }
            Ok(()) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        target: "llm_failover::telemetry",
                        "the OTLP collector at {} answers again",
                        self.endpoint
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// How `llm-failover serve` writes its log (`[log] format`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal). The default.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields at the top
    /// level (`message`, and for `request_done`: `endpoint`, `route`, `client`, `status`,
    /// `duration_ms`, `stream`, `trail`), and `spans` (the enclosing spans' fields).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}; use \"text\" or \"json\""
            )),
        }
    }
}
