//! What the proxy adds on the wire: the same chat completion sent by one keep-alive `reqwest`
//! client straight to a simulated provider and through the proxy in front of it, every server
//! in this process on 127.0.0.1 and one multi-thread Tokio runtime. Telemetry is installed as
//! `llm-failover serve` installs it (the Prometheus recorder, the `MetricsLayer`, an `info`
//! log layer, writing to a sink here), so the proxy pays for its metrics as it does in use.
//!
//! * `latency_healthy/*`: one request at a time. `direct` posts to the primary sim, `proxy`
//!   posts to the route `healthy` = `[a/model, b/model]` whose primary answers; the difference
//!   of the two is the latency the proxy adds. `direct_stream` / `proxy_stream` are the same
//!   with `"stream": true`, reading the whole SSE body (the sim sends its tokens back to back).
//! * `latency_dead_primary/*`: `direct` posts to the fallback sim, `proxy` to the route
//!   `dead` = `[dead/model, b/model]` whose primary host refuses connections. Before it is
//!   measured, requests go through until the trail says `dead/model=breaker_open`: from then
//!   on the primary is rejected locally and each request is served by the fallback, which is
//!   the steady state of an outage.
//! * `latency_protocols/*`: Anthropic Messages, one request at a time: `direct_messages` to
//!   the sim, `proxy_messages[_stream]` through the route `claude` (the sim in Anthropic's API),
//!   and translated: `messages_to_chat[_stream]` (an Anthropic request on the route `healthy`,
//!   OpenAI-compatible targets) and `chat_to_messages[_stream]` (a chat request on `claude`).
//!   The OpenAI Responses API the same way: `direct_responses[_stream]` to the sim,
//!   `proxy_responses[_stream]` through the route `responses` (the sim in the Responses API),
//!   and `responses_to_chat[_stream]` (a Responses request on `healthy`). Embeddings:
//!   `direct_embeddings` to the sim, `proxy_embeddings` through `healthy` (both targets name
//!   one model, so the route serves embeddings).
//! * `throughput/*`: requests per second with [`CONCURRENCY`] requests in flight (tasks
//!   pulling from a shared count): `direct`, `proxy_healthy`, `proxy_dead_primary`. Criterion
//!   reports it as elements per second.
//!
//! Criterion gives means. After the groups, each case is run again a fixed number of times
//! and a table of p50 and p99 (one at a time) and of requests per second with their p50 and
//! p99 under load is printed to stderr: the numbers for a note. Under `cargo test` (no
//! `--bench` argument) or `-- --test` everything runs a few times only, to check it works.
//!
//! On a shared machine the absolute numbers move from run to run; compare the cases of one
//! run.

#![expect(clippy::expect_used, reason = "benchmark setup should fail loudly")]
#![expect(
    clippy::print_stderr,
    reason = "the percentile table is printed for the reader"
)]
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::Sim;
use llm_failover::telemetry::{self, MetricsLayer};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Requests in flight in the `throughput` group and the load part of the table.
const CONCURRENCY: u64 = 32;

/// One kind of request: where it goes and its body, serialized once.
#[derive(Clone)]
struct Case {
    url: Arc<str>,
    body: hyper::body::Bytes,
}

impl Case {
    /// An OpenAI Responses request (`/responses`).
    fn responses(base: &str, model: &str, stream: bool) -> Self {
        let body = json!({"model": model, "stream": stream, "input": "hi"});
        Self {
            url: format!("{base}/responses").into(),
            body: serde_json::to_vec(&body).expect("json").into(),
        }
    }

    /// An embeddings request (`/embeddings`) of one short input.
    fn embeddings(base: &str, model: &str) -> Self {
        let body = json!({"model": model, "input": "the quick brown fox"});
        Self {
            url: format!("{base}/embeddings").into(),
            body: serde_json::to_vec(&body).expect("json").into(),
        }
    }

    /// An Anthropic Messages request (`/messages`).
    fn messages(base: &str, model: &str, stream: bool) -> Self {
        let body = json!({
            "model": model,
            "max_tokens": 256,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        });
        Self {
            url: format!("{base}/messages").into(),
            body: serde_json::to_vec(&body).expect("json").into(),
        }
    }

    fn new(base: &str, model: &str, stream: bool) -> Self {
        let body = json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        });
        Self {
            url: format!("{base}/chat/completions").into(),
            body: serde_json::to_vec(&body).expect("json").into(),
        }
    }

    /// Sends the request and reads the whole answer (every SSE event of a stream).
    async fn call(&self, http: &reqwest::Client) -> reqwest::Response {
        let resp = http
            .post(&*self.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(self.body.clone())
            .send()
            .await
            .expect("the server answers");
        assert_eq!(resp.status(), 200, "{}", self.url);
        resp
    }

    async fn run(&self, http: &reqwest::Client) -> usize {
        let body = self.call(http).await.bytes().await.expect("the whole body");
        body.len()
    }
}

struct Setup {
    rt: Runtime,
    http: reqwest::Client,
    direct: Case,
    direct_stream: Case,
    direct_fallback: Case,
    proxy: Case,
    proxy_stream: Case,
    proxy_dead: Case,
    /// Anthropic Messages: to the sim, through the proxy natively, and translated both ways.
    direct_messages: Case,
    proxy_messages: Case,
    proxy_messages_stream: Case,
    messages_to_chat: Case,
    messages_to_chat_stream: Case,
    chat_to_messages: Case,
    chat_to_messages_stream: Case,
    /// The Responses API: to the sim, through the proxy natively, and translated to chat.
    direct_responses: Case,
    direct_responses_stream: Case,
    proxy_responses: Case,
    proxy_responses_stream: Case,
    responses_to_chat: Case,
    responses_to_chat_stream: Case,
    /// Embeddings: to the sim, and through the proxy.
    direct_embeddings: Case,
    proxy_embeddings: Case,
    /// The sims (primary, fallback, dead) and the proxy's stop signal: dropped last.
    _servers: (Sim, Sim, Sim, oneshot::Sender<()>),
}

fn config(a: &Sim, b: &Sim, dead: &Sim) -> String {
    format!(
        r#"
# Once the dead host's breaker opens, it stays open for the whole run.
[breaker]
max_open = "24h"
[breaker.reasons.connection_refused]
open_base = "24h"

[providers.a]
base_url = "{0}"
# The same sim in Anthropic's Messages API.
[providers.claude]
api = "anthropic-messages"
base_url = "{0}"
# The same sim in the OpenAI Responses API.
[providers.resp]
api = "openai-responses"
base_url = "{0}"
[providers.b]
base_url = "{1}"
[providers.dead]
base_url = "{2}"

[routes.healthy]
targets = ["a/model", "b/model"]
[routes.dead]
targets = ["dead/model", "b/model"]
[routes.claude]
targets = ["claude/model"]
[routes.responses]
targets = ["resp/model"]
"#,
        a.base_url(),
        b.base_url(),
        dead.base_url()
    )
}

/// Telemetry as `llm-failover serve` installs it, the log lines going to a sink.
fn install_telemetry(proxy: &Proxy) -> Proxy {
    let handle = telemetry::install_prometheus_recorder().expect("recorder");
    let metrics = MetricsLayer::new();
    metrics.register_breakers(proxy.registry().iter().map(|b| (b.provider(), b.model())));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(fmt)
        .with(metrics)
        .init();
    proxy.clone().with_metrics(handle)
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (a, b, dead, proxy_url, stop) = rt.block_on(async {
        let start = || Sim::builder().token_delay(Duration::ZERO);
        let a = start().start().await.expect("sim");
        let b = start().start().await.expect("sim");
        let dead = start()
            .down_for(Duration::from_secs(24 * 3600))
            .start()
            .await
            .expect("sim");
        let config = Config::parse(&config(&a, &b, &dead), "bench.toml").expect("config");
        let proxy = install_telemetry(&Proxy::new(&config).expect("proxy"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(proxy.serve(listener, async move {
            let _ = stopped.await;
        }));
        (a, b, dead, url, stop)
    });
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .expect("client");
    let s = Setup {
        direct: Case::new(&a.base_url(), "model", false),
        direct_stream: Case::new(&a.base_url(), "model", true),
        direct_fallback: Case::new(&b.base_url(), "model", false),
        proxy: Case::new(&proxy_url, "healthy", false),
        proxy_stream: Case::new(&proxy_url, "healthy", true),
        proxy_dead: Case::new(&proxy_url, "dead", false),
        direct_messages: Case::messages(&a.base_url(), "model", false),
        proxy_messages: Case::messages(&proxy_url, "claude", false),
        proxy_messages_stream: Case::messages(&proxy_url, "claude", true),
        messages_to_chat: Case::messages(&proxy_url, "healthy", false),
        messages_to_chat_stream: Case::messages(&proxy_url, "healthy", true),
        chat_to_messages: Case::new(&proxy_url, "claude", false),
        chat_to_messages_stream: Case::new(&proxy_url, "claude", true),
        direct_responses: Case::responses(&a.base_url(), "model", false),
        direct_responses_stream: Case::responses(&a.base_url(), "model", true),
        proxy_responses: Case::responses(&proxy_url, "responses", false),
        proxy_responses_stream: Case::responses(&proxy_url, "responses", true),
        responses_to_chat: Case::responses(&proxy_url, "healthy", false),
        responses_to_chat_stream: Case::responses(&proxy_url, "healthy", true),
        direct_embeddings: Case::embeddings(&a.base_url(), "model"),
        proxy_embeddings: Case::embeddings(&proxy_url, "healthy"),
        http,
        _servers: (a, b, dead, stop),
        rt,
    };
    s.check_and_open_the_dead_breaker();
    s
}

impl Setup {
    /// Checks that the routes answer as the groups assume, and sends requests to the dead
    /// route until its primary's breaker is open.
    fn check_and_open_the_dead_breaker(&self) {
        self.rt.block_on(async {
            let trail = |r: &reqwest::Response| {
                r.headers()
                    .get("x-failover-trail")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let healthy = trail(&self.proxy.call(&self.http).await);
            assert_eq!(healthy, "a/model=ok");
            let stream = trail(&self.proxy_stream.call(&self.http).await);
            assert_eq!(stream, "a/model=ok");
            for _ in 0..100 {
                let t = trail(&self.proxy_dead.call(&self.http).await);
                if t == "dead/model=breaker_open; b/model=ok" {
                    return;
                }
                assert!(t.ends_with("b/model=ok"), "{t}");
            }
            panic!("the dead primary's breaker did not open within 100 requests");
        });
    }
}

/// `n` requests of `case` with `concurrency` in flight, stopping early at `deadline`; the
/// time each took and the whole.
async fn batch(
    http: &reqwest::Client,
    case: &Case,
    n: u64,
    concurrency: u64,
    deadline: Option<Instant>,
) -> (Vec<Duration>, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (http, case, next) = (http.clone(), case.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut times = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n
                    && deadline.is_none_or(|d| Instant::now() < d)
                {
                    let t = Instant::now();
                    black_box(case.run(&http).await);
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times = Vec::with_capacity(usize::try_from(n).unwrap_or_default());
    for t in tasks {
        times.extend(t.await.expect("load task"));
    }
    (times, start.elapsed())
}

/// p50 and p99 of `times`.
fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort_unstable();
    let at = |q: usize| times[(times.len() * q / 100).min(times.len() - 1)];
    (at(50), at(99))
}

/// `cargo bench` passes `--bench`; `cargo test` does not, and `-- --test` asks for a smoke run.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

fn latency(c: &mut Criterion, s: &Setup) {
    let mut g = c.benchmark_group("latency_healthy");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (id, case) in [
        ("direct", &s.direct),
        ("proxy", &s.proxy),
        ("direct_stream", &s.direct_stream),
        ("proxy_stream", &s.proxy_stream),
    ] {
        g.bench_function(id, |b| b.to_async(&s.rt).iter(|| case.run(&s.http)));
    }
    g.finish();

    // Anthropic Messages: natively, and translated (an Anthropic client on an OpenAI-compatible
    // target, an OpenAI client on an Anthropic target); the differences from `proxy` and
    // `proxy_stream` above are what translation adds.
    let mut g = c.benchmark_group("latency_protocols");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (id, case) in [
        ("direct_messages", &s.direct_messages),
        ("proxy_messages", &s.proxy_messages),
        ("proxy_messages_stream", &s.proxy_messages_stream),
        ("messages_to_chat", &s.messages_to_chat),
        ("messages_to_chat_stream", &s.messages_to_chat_stream),
        ("chat_to_messages", &s.chat_to_messages),
        ("chat_to_messages_stream", &s.chat_to_messages_stream),
        ("direct_responses", &s.direct_responses),
        ("direct_responses_stream", &s.direct_responses_stream),
        ("proxy_responses", &s.proxy_responses),
        ("proxy_responses_stream", &s.proxy_responses_stream),
        ("responses_to_chat", &s.responses_to_chat),
        ("responses_to_chat_stream", &s.responses_to_chat_stream),
        ("direct_embeddings", &s.direct_embeddings),
        ("proxy_embeddings", &s.proxy_embeddings),
    ] {
        g.bench_function(id, |b| b.to_async(&s.rt).iter(|| case.run(&s.http)));
    }
    g.finish();

    let mut g = c.benchmark_group("latency_dead_primary");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (id, case) in [("direct", &s.direct_fallback), ("proxy", &s.proxy_dead)] {
        g.bench_function(id, |b| b.to_async(&s.rt).iter(|| case.run(&s.http)));
    }
    g.finish();
}

fn throughput(c: &mut Criterion, s: &Setup) {
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (id, case) in [
        ("direct", &s.direct),
        ("proxy_healthy", &s.proxy),
        ("proxy_dead_primary", &s.proxy_dead),
    ] {
        g.bench_function(id, |b| {
            b.to_async(&s.rt).iter_custom(|iters| async move {
                batch(&s.http, case, iters, CONCURRENCY, None).await.1
            })
        });
    }
    g.finish();
}

/// The table for the note: p50/p99 one request at a time, and requests per second with
/// p50/p99 under [`CONCURRENCY`] in flight. Each part of a case stops at its request count or
/// its time budget, whichever comes first, and the table says how many requests it took.
fn report(s: &Setup) {
    let (sequential, loaded, budget) = if quick() {
        (20, 200, Duration::from_millis(500))
    } else {
        (2000, 20_000, Duration::from_secs(4))
    };
    let cases = [
        ("healthy", "direct", &s.direct),
        ("healthy", "proxy", &s.proxy),
        ("healthy", "direct_stream", &s.direct_stream),
        ("healthy", "proxy_stream", &s.proxy_stream),
        ("dead_primary", "direct", &s.direct_fallback),
        ("dead_primary", "proxy", &s.proxy_dead),
        ("anthropic", "direct", &s.direct_messages),
        ("anthropic", "proxy", &s.proxy_messages),
        ("anthropic", "proxy_stream", &s.proxy_messages_stream),
        ("translated", "msgs_to_chat", &s.messages_to_chat),
        ("translated", "msgs_to_chat_s", &s.messages_to_chat_stream),
        ("translated", "chat_to_msgs", &s.chat_to_messages),
        ("translated", "chat_to_msgs_s", &s.chat_to_messages_stream),
        ("responses", "direct", &s.direct_responses),
        ("responses", "direct_stream", &s.direct_responses_stream),
        ("responses", "proxy", &s.proxy_responses),
        ("responses", "proxy_stream", &s.proxy_responses_stream),
        ("translated", "resp_to_chat", &s.responses_to_chat),
        ("translated", "resp_to_chat_s", &s.responses_to_chat_stream),
        ("embeddings", "direct", &s.direct_embeddings),
        ("embeddings", "proxy", &s.proxy_embeddings),
    ];
    eprintln!(
        "\nproxy load table (loopback, one process; compare rows of one run): up to \
         {sequential} requests one at a time, then up to {loaded} with {CONCURRENCY} in flight, \
         each for at most {budget:?}"
    );
    eprintln!(
        "{:<13} {:<14} {:>6} {:>10} {:>10} | {:>6} {:>8} {:>10} {:>10}",
        "case", "path", "n", "p50", "p99", "n", "rps", "p50@load", "p99@load"
    );
    for (group, path, case) in cases {
        let (one, many) = s.rt.block_on(async {
            let by = || Some(Instant::now() + budget);
            (
                batch(&s.http, case, sequential, 1, by()).await.0,
                batch(&s.http, case, loaded, CONCURRENCY, by()).await,
            )
        });
        let (n1, (p50, p99)) = (one.len(), percentiles(one));
        let (times, elapsed) = many;
        #[expect(
            clippy::cast_precision_loss,
            reason = "a request count, far below 2^52"
        )]
        let rps = times.len() as f64 / elapsed.as_secs_f64();
        let (n2, (l50, l99)) = (times.len(), percentiles(times));
        eprintln!(
            "{group:<13} {path:<14} {n1:>6} {p50:>10.1?} {p99:>10.1?} | {n2:>6} {rps:>8.0} \
             {l50:>10.1?} {l99:>10.1?}"
        );
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    latency(c, &s);
    throughput(c, &s);
    report(&s);
}

criterion_group!(benches, bench);
criterion_main!(benches);
