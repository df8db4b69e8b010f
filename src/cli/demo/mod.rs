//! `llm-failover demo`: the whole crate at work on loopback, with no network, keys or config.
//!
//! Two simulated providers start on `127.0.0.1`: `local` (the primary, `local/llama3`) and
//! `cloud` (the fallback, `cloud/gpt-4o-mini`), each also hosting the embedding model
//! `nomic-embed-text`. The proxy is built the way `serve` builds it, from TOML read by the
//! real [`Config::parse`], with breaker open times scaled to the run so the whole closed →
//! open → half_open → closed cycle fits in it. A few workers send real HTTP requests through
//! the proxy, in turn on each of its client APIs (chat completions, Anthropic Messages and the
//! Responses API, streaming and not, and embeddings), and `/metrics` is served next to the
//! API. Partway through, the primary's host is powered off (its port refuses connections),
//! and later it comes back ([`scenario`]).
//!
//! What the terminal shows ([`view`]): the phase of the simulation, each breaker's state and
//! why, where requests were served (read back from the `x-failover-*` headers the proxy
//! sends), which failures moved requests on, and how requests ended. On a terminal the screen
//! is redrawn in place; otherwise (CI, a pipe) one plain line is printed per event and per
//! second, and a summary at the end, so logs stay readable and tests can parse them.

mod scenario;
mod tap;
mod traffic;
mod view;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{RwLock, mpsc, oneshot, watch};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::Sim;
use llm_failover::telemetry::{self, MetricsLayer};

use self::scenario::Timeline;
use self::traffic::Board;
use self::view::View;
use super::Failure;

/// The shortest run that still shows the whole cycle.
const MIN_DURATION: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long to run, like "30s" or "2m". The outage and the recovery scale with it, so a
    /// short run still shows the whole cycle (at least 2s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Where the proxy and its /metrics listen (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (write it like \"30s\")"))?;
    if d < MIN_DURATION {
        return Err(format!(
            "{s} is too short to show an outage and a recovery; give at least {}",
            humantime::format_duration(MIN_DURATION)
        ));
    }
    Ok(d)
}

pub(crate) fn run(args: &DemoArgs) -> Result<(), Failure> {
    super::runtime()?.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> Result<(), Failure> {
    let timeline = Timeline::new(args.duration);
    let tty = std::io::stdout().is_terminal();
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let board = Arc::new(Board::new(notes_tx));

    // Metrics first: the layer caches metric handles from the recorder it finds.
    let scrape =
        telemetry::install_prometheus_recorder().map_err(|e| Failure::Other(e.to_string()))?;
    let metrics = MetricsLayer::new();
    install_tracing(metrics.clone(), tap::TransitionTap::new(Arc::clone(&board)));

    let primary = Arc::new(Sim::builder().token_delay(TOKEN_DELAY).start().await?);
    let fallback = Sim::builder().token_delay(TOKEN_DELAY).start().await?;
    let toml = scenario::config_toml(&timeline, args.listen, &primary, &fallback);
    let config = Config::parse(&toml, "demo.toml")
        .map_err(|e| Failure::Other(format!("the demo's own config is invalid: {e}")))?;
    let proxy = Proxy::new(&config)
        .map_err(|e| Failure::Other(e.to_string()))?
        .with_metrics(scrape);
    metrics.register_breakers(proxy.registry().iter().map(|b| (b.provider(), b.model())));

    let listener = tokio::net::TcpListener::bind(config.listen())
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {}: {e}", config.listen())))?;
    let addr = listener.local_addr()?;
    let (stop_proxy, proxy_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(proxy.clone().serve(listener, async move {
        let _ = proxy_stopped.await;
    }));

    // The power goes off between requests: see `scenario::run`.
    let gate = Arc::new(RwLock::new(()));
    let (stop_traffic, traffic_stop) = watch::channel(false);
    let workers = traffic::start(addr, &board, &gate, &traffic_stop)?;
    let script = tokio::spawn(scenario::run(
        timeline,
        Arc::clone(&primary),
        Arc::clone(&board),
        Arc::clone(&gate),
    ));

    let mut view = View::new(
        tty,
        addr,
        timeline,
        proxy.registry(),
        Arc::clone(&board),
        notes,
    );
    let ending = view.run(args.duration, super::stop_signal()).await?;

    // Wind down: traffic first (requests in flight finish), then the script and the proxy.
    let _ = stop_traffic.send(true);
    for w in workers {
        let _ = w.await;
    }
    script.abort();
    let _ = stop_proxy.send(());
    match server.await {
        Ok(result) => result?,
        Err(e) => return Err(Failure::Other(format!("the proxy task failed: {e}"))),
    }
    view.finish(ending)
}

/// The pause between two streamed tokens of the simulated providers: long enough that a
/// stream is visibly a stream, short enough that a request takes well under a second.
const TOKEN_DELAY: Duration = Duration::from_millis(4);

/// Metrics from the crate's spans and events, the transitions for the screen, and logs on
/// stderr only when `RUST_LOG` asks (the screen is the demo's log).
fn install_tracing(metrics: MetricsLayer, tap: tap::TransitionTap) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(metrics)
        .with(tap)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humantime_and_not_too_short() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("1s").is_err_and(|e| e.contains("at least 2s")));
        assert!(parse_duration("soon").is_err());
    }
}
