//! Traffic shaping end to end: tiers, picks and concurrency limits against simulated
//! providers over loopback.

use std::sync::Arc;
use std::time::Duration;

use llm_failover::breaker::Registry;
use llm_failover::chain::{Loads, Route, RoutePolicy, Tier};
use llm_failover::protocol::openai_chat::{Client, Endpoint};
use llm_failover::sim::{Fault, Sim};

use crate::proxy::{chat_body, config, start};
use crate::support::{post_chat, route_chat};

/// A sim that sends its tokens without a pause, with `faults` by model.
async fn instant_sim(faults: &[(&str, Fault)]) -> Sim {
    let mut builder = Sim::builder().token_delay(Duration::ZERO);
    for (model, fault) in faults {
        builder = builder.fault(*model, fault.clone());
    }
    builder.start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_sends_most_requests_to_the_fast_target_and_keeps_both_in_use() {
    let fast = instant_sim(&[]).await;
    let slow = instant_sim(&[("m", Fault::FirstTokenDelay(Duration::from_millis(300)))]).await;
    let registry = Arc::new(
        Registry::builder()
            .target("fast", "m")
            .target("slow", "m")
            .build()
            .unwrap(),
    );
    // A short memory, so the slow target is tried again once its last sample has faded.
    let loads = Arc::new(Loads::new().with_decay(Duration::from_millis(100)));
    let route = Arc::new(
        Route::builder("chat", registry)
            .tier(Tier::least_loaded().target("fast", "m").target("slow", "m"))
            .loads(Arc::clone(&loads))
            .policy(
                RoutePolicy::builder()
                    .attempt_timeout(Duration::from_secs(5))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    );
    let client = Client::new().unwrap();
    let endpoints = Arc::new([
        Endpoint::new("fast", &fast.base_url()),
        Endpoint::new("slow", &slow.base_url()),
    ]);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (route, client, endpoints) =
            (Arc::clone(&route), client.clone(), Arc::clone(&endpoints));
        workers.push(tokio::spawn(async move {
            for _ in 0..20 {
                route_chat(&route, &client, &endpoints[..]).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let (f, s) = (fast.attempts("m"), slow.attempts("m"));
    assert_eq!(f + s, 80, "every request answered at its first target");
    assert!(s >= 1, "the slow target stays in use: {f} fast, {s} slow");
    assert!(f >= 3 * s, "most go to the fast target: {f} fast, {s} slow");
    for l in loads.all() {
        assert_eq!(l.inflight(), 0, "{l:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_with_a_concurrency_limit_never_sees_more_and_the_excess_gets_a_clean_503() {
    let primary = instant_sim(&[]).await;
    let fallback = instant_sim(&[("m", Fault::FirstTokenDelay(Duration::from_millis(150)))]).await;
    let proxy = start(&config(
        &primary,
        &fallback,
        &["a/m", "b/m"],
        "[providers.b.models.m]\nmax_inflight = 2\n",
    ))
    .await;
    // The primary dies; a bounded load loop goes on.
    primary.set_down(true).await;
    let http = reqwest::Client::new();
    let url = proxy.url("/v1/chat/completions");
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (http, url) = (http.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let resp = tokio::time::timeout(
                    Duration::from_secs(20),
                    http.post(&url).json(&chat_body("chat", false)).send(),
                )
                .await
                .expect("no request hangs")
                .unwrap();
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let trail = resp
                    .headers()
                    .get("x-failover-trail")
                    .map(|v| v.to_str().unwrap().to_owned());
                if status == 503 {
                    // A place frees up soon: worth a retry after the wait.
                    assert_eq!(resp.headers()["x-should-retry"], "true");
                    assert!(resp.headers().contains_key("retry-after-ms"));
                }
                seen.push((status, retry_after, trail));
            }
            seen
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for w in workers {
        for (status, retry_after, trail) in w.await.unwrap() {
            match status {
                200 => ok += 1,
                503 => {
                    shed += 1;
                    assert!(retry_after.is_some(), "a 503 says when to come back");
                    let trail = trail.unwrap_or_default();
                    assert!(trail.ends_with("b/m=shed"), "{trail}");
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert!(
        fallback.peak_inflight("m") <= 2,
        "the fallback saw {} at once",
        fallback.peak_inflight("m")
    );
    assert!(ok >= 2 && shed >= 1, "{ok} answered, {shed} shed");
    assert_eq!(ok + shed, 30);
    for r in proxy.proxy.routes() {
        for l in r.loads().all() {
            assert_eq!(l.inflight(), 0, "{l:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_of_20_percent_bounds_retries_during_an_outage_counted_at_the_sim() {
    let sim = instant_sim(&[("p", Fault::Status(500))]).await;
    let fallback = instant_sim(&[]).await;
    let registry = Arc::new(
        Registry::builder()
            .target("primary", "p")
            .target("fallback", "f")
            .build()
            .unwrap(),
    );
    // The outage must not open the breaker: every 500 reaches the retry decision.
    registry.control("primary", "*").unwrap().disable(None);
    registry.control("primary", "p").unwrap().disable(None);
    let route = Route::builder("chat", registry)
        .target("primary", "p")
        .target("fallback", "f")
        .policy(
            RoutePolicy::builder()
                .retry_backoff(Duration::from_millis(1))
                .retry_budget_ratio(0.2)
                .retry_budget_floor(1)
                .retry_budget_window(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let client = Client::new().unwrap();
    let endpoints = [
        Endpoint::new("primary", &sim.base_url()),
        Endpoint::new("fallback", &fallback.base_url()),
    ];
    let n = 100;
    for _ in 0..n {
        let a = route_chat(&route, &client, &endpoints).await.unwrap();
        assert_eq!(&*a.provider, "fallback");
    }
    // Without a budget every 500 would be retried once: 200 at the sim. With it: the first
    // attempts, 20% of them, and the floor (1/s over the 60 s window).
    let retries = sim.attempts("p") - n;
    assert!(retries <= 20 + 60, "{retries} retries");
    assert!(retries >= 20, "{retries} retries: the ratio is usable");
    assert_eq!(fallback.attempts("f"), n);
}

/// What the official OpenAI SDKs do with an error: retry 408, 409, 429 and 5xx twice unless
/// the response says `x-should-retry: false` (and always when it says `true`).
async fn sdk_like_call(http: &reqwest::Client, url: &str) -> (u16, u32) {
    let mut tries = 0;
    loop {
        tries += 1;
        let resp = post_chat(http, url, "chat", false).await;
        let status = resp.status().as_u16();
        let should = resp
            .headers()
            .get("x-should-retry")
            .map(|v| v.to_str().unwrap() == "true");
        let retryable = should.unwrap_or(matches!(status, 408 | 409 | 429 | 500..));
        if status == 200 || !retryable || tries == 3 {
            return (status, tries);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_honours_x_should_retry_replays_a_failed_chain_once_not_three_times() {
    let a = instant_sim(&[("m", Fault::Status(500))]).await;
    let b = instant_sim(&[("m", Fault::Status(500))]).await;
    let proxy = start(&config(&a, &b, &["a/m", "b/m"], "")).await;
    let http = reqwest::Client::new();
    let url = proxy.url("/v1/chat/completions");
    let resp = post_chat(&http, &url, "chat", false).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let once = (a.attempts("m"), b.attempts("m"));
    assert!(once.0 >= 1 && once.1 >= 1, "{once:?}");

    let (status, tries) = sdk_like_call(&http, &url).await;
    assert_eq!((status, tries), (502, 1), "the client gives up at once");
    assert_eq!(
        (a.attempts("m"), b.attempts("m")),
        (2 * once.0, 2 * once.1),
        "one more chain, not three"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_past_its_rpm_is_skipped_before_the_provider_has_to_say_429() {
    let limited = instant_sim(&[]).await;
    let fallback = instant_sim(&[]).await;
    let proxy = start(&config(
        &limited,
        &fallback,
        &["a/m", "b/m"],
        "[providers.a.models.m]\nrpm = 5\ntpm = 100000\n",
    ))
    .await;
    let http = reqwest::Client::new();
    let url = proxy.url("/v1/chat/completions");
    let mut trails = Vec::new();
    // Eight requests take far less than the minute the limit counts over.
    for _ in 0..8 {
        let resp = post_chat(&http, &url, "chat", false).await;
        assert_eq!(resp.status(), 200);
        trails.push(
            resp.headers()["x-failover-trail"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(limited.attempts("m"), 5, "{trails:?}");
    assert_eq!(fallback.attempts("m"), 3, "{trails:?}");
    for t in &trails[5..] {
        assert!(t.starts_with("a/m=shed"), "{t}");
    }
}
