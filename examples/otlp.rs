//! Exports the chain's spans over OTLP/HTTP, so a route's requests and attempts show up in an
//! OpenTelemetry backend (Jaeger, Tempo, Honeycomb, ...) with the GenAI attribute names
//! (`gen_ai.provider.name`, `gen_ai.request.model`, `error.type`).
//!
//! Run with a collector listening (the endpoint defaults to `http://127.0.0.1:4318`):
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run --example otlp
//! ```
//!
//! Without a collector it runs the same and the export fails quietly at shutdown. It drives a
//! route whose primary (a simulated provider on loopback) is down, so the trace shows a
//! refused attempt, the failover and the answering fallback.

#![expect(clippy::print_stdout, reason = "an example shows its results")]

use std::sync::Arc;
use std::time::Duration;

use llm_failover::breaker::Registry;
use llm_failover::chain::Route;
use llm_failover::protocol::openai_chat::{Client, Endpoint};
use llm_failover::sim::Sim;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4318".into());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(Duration::from_secs(2))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("llm-failover-example")
                .build(),
        )
        .build();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llm_failover=debug"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("llm-failover")))
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .init();

    let primary = Sim::builder().start().await?;
    let fallback = Sim::builder().start().await?;
    primary.set_down(true).await;
    let registry = Arc::new(
        Registry::builder()
            .target("local", "llama3")
            .target("cloud", "gpt-4o-mini")
            .build()?,
    );
    let route = Route::builder("chat", registry)
        .target("local", "llama3")
        .target("cloud", "gpt-4o-mini")
        .build()?;
    let client = Client::new()?;
    let endpoints = [
        Endpoint::new("local", &primary.base_url()),
        Endpoint::new("cloud", &fallback.base_url()),
    ];
    let request = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
    let answer = route
        .call(|a| {
            let endpoint = endpoints[usize::from(a.provider() == "cloud")].clone();
            let (client, request) = (client.clone(), request.clone());
            async move { client.chat(&endpoint, a.model(), &request).await }
        })
        .await?;
    println!("answered by {}; trail: {}", answer.provider, answer.trail);

    // Flushes the batch (a missing collector is reported, not fatal).
    if let Err(e) = provider.shutdown() {
        println!("span export: {e}");
    }
    Ok(())
}
