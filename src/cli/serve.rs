//! `llm-failover serve` and `llm-failover check`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use llm_failover::proxy::{Config, Proxy};
use llm_failover::telemetry::{self, LogFormat, MetricsLayer, OtlpExport};

use super::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The configuration file (see examples/failover.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen here instead of the configured `server.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The configuration file to check.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Logs to stderr (`RUST_LOG`, default `info`) in `format` (text, or one JSON object a
/// line), metrics from the same spans, and the spans to an OTLP collector when `otlp` exports.
fn install_tracing(metrics: MetricsLayer, format: LogFormat, otlp: Option<&OtlpExport>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        // Text unless asked otherwise, terminal or not (journald, `docker logs`): colours
        // only on a terminal.
        _ => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(metrics)
        .with(otlp.map(OtlpExport::layer))
        .try_init();
}

use tracing_subscriber::{Layer, Registry};

/// Reads and checks the config; a bad file is a usage error naming line and field.
fn load(path: &PathBuf) -> Result<Config, Failure> {
    Config::from_file(path).map_err(|e| Failure::Usage(e.to_string()))
}

pub(crate) fn check(args: &CheckArgs) -> Result<(), Failure> {
    let config = load(&args.config)?;
    let mut err = std::io::stderr().lock();
    for w in config.warnings() {
        writeln!(err, "warning: {w}")?;
    }
    if let Some(exposure) = config.exposure() {
        writeln!(err, "warning: serve will refuse this config: {exposure}")?;
    }
    let routes = config.route_names().count();
    let breakers = config.targets().count();
    let clients = config.client_names().count();
    writeln!(
        err,
        "{}: ok ({routes} route{}, {breakers} model breaker{}, {clients} client key{}, {}admin key, {} warning{}); serve listens on {}",
        args.config.display(),
        if routes == 1 { "" } else { "s" },
        if breakers == 1 { "" } else { "s" },
        if clients == 1 { "" } else { "s" },
        if config.has_admin() { "an " } else { "no " },
        config.warnings().len(),
        if config.warnings().len() == 1 {
            ""
        } else {
            "s"
        },
        config.listen(),
    )?;
    Ok(())
}

pub(crate) fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let mut config = load(&args.config)?;
    if let Some(addr) = args.listen {
        config.set_listen(addr);
    }
    // Before the runtime: the exporter's HTTP client is a blocking one.
    let otlp = config
        .otlp()
        .map(OtlpExport::start)
        .transpose()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let exporting = otlp.as_ref();
    let rt = super::runtime()?;
    // Inside the runtime: the shared-state backend starts its tasks on it.
    let proxy = {
        let _runtime = rt.enter();
        Proxy::new(&config).map_err(|e| Failure::Usage(e.to_string()))?
    };
    rt.block_on(async move {
        // The recorder first: the layer registers its breaker-state gauges with the recorder
        // that is installed when it does.
        let proxy = match config.metrics_listen() {
            Some(addr) => {
                telemetry::install_prometheus(addr).map_err(|e| Failure::Other(e.to_string()))?;
                proxy
            }
            None => proxy.with_metrics(
                telemetry::install_prometheus_recorder()
                    .map_err(|e| Failure::Other(e.to_string()))?,
            ),
        };
        let metrics = MetricsLayer::new();
        metrics.register_breakers(proxy.registry().iter().map(|b| (b.provider(), b.model())));
        install_tracing(metrics, config.log_format().unwrap_or_default(), exporting);
        if let Some(o) = config.otlp() {
            tracing::info!(
                target: "llm_failover::telemetry",
                "exporting spans over OTLP/HTTP to {} as service {} (sampling ratio {})",
                o.endpoint,
                o.service_name,
                o.sampling_ratio
            );
        }
        #[cfg(feature = "redis")]
        if let Some(state) = proxy.state() {
            // The gauge shows the backend's state from the first scrape on.
            state.report();
        }
        for w in config.warnings() {
            tracing::warn!(target: "llm_failover::proxy", "{w}");
        }
        if let Some(addr) = config.metrics_listen() {
            tracing::info!(target: "llm_failover::proxy", "metrics on http://{addr}/metrics");
        }
        let addr = config.listen();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::Other(format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr()?;
        reload_on_hangup(&proxy);
        tracing::info!(
            target: "llm_failover::proxy",
            routes = ?proxy.routes().iter().map(|r| r.name()).collect::<Vec<_>>(),
            "serving the OpenAI-compatible API on {}://{local}/v1",
            if config.tls() { "https" } else { "http" }
        );
        proxy.serve(listener, super::stop_signal()).await?;
        tracing::info!(target: "llm_failover::proxy", "stopped");
        Ok::<(), Failure>(())
    })?;
    if let Some(o) = otlp {
        // The last spans: sent, or said to be lost (the collector's state was logged).
        let _ = o.shutdown();
    }
    Ok(())
}

/// Reloads the configuration on every SIGHUP (`systemctl reload`, `kill -HUP`). A rejected
/// file is logged with its file:line:field error and the running configuration stays.
fn reload_on_hangup(proxy: &Proxy) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    target: "llm_failover::proxy",
                    "cannot listen for SIGHUP ({e}); use `llm-failover ctl reload` to reload"
                );
                return;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!(target: "llm_failover::proxy", "SIGHUP: reloading the configuration");
                let p = proxy.clone();
                // The outcome is logged and counted by `reload` itself.
                let _ = tokio::task::spawn_blocking(move || p.reload()).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = proxy;
}
