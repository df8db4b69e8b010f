//! Traffic shaping end to end: tiers, picks and concurrency limits against simulated
//! providers over loopback.

use std::sync::Arc;
use std::time::Duration;

use llm_failover::breaker::Registry;
use llm_failover::chain::openai::{Client, Endpoint};
use llm_failover::chain::{Loads, Route, RoutePolicy, Tier};
use llm_failover::sim::{Fault, Sim};
use serde_json::json;

use crate::proxy::{chat_body, config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_sends_most_requests_to_the_fast_target_and_keeps_both_in_use() {
    let fast = Sim::builder()
        .token_delay(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let slow = Sim::builder()
        .token_delay(Duration::ZERO)
        .fault("m", Fault::FirstTokenDelay(Duration::from_millis(300)))
        .start()
        .await
        .unwrap();
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
                route
                    .call(|a| {
                        let e = endpoints[usize::from(a.provider() == "slow")].clone();
                        let client = client.clone();
                        async move {
                            let body = json!({"messages": [{"role": "user", "content": "hi"}]});
                            client.chat(&e, a.model(), &body).await
                        }
                    })
                    .await
                    .unwrap();
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
    let primary = Sim::builder()
        .token_delay(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let fallback = Sim::builder()
        .token_delay(Duration::ZERO)
        .fault("m", Fault::FirstTokenDelay(Duration::from_millis(150)))
        .start()
        .await
        .unwrap();
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
