//! The failover chain against the simulated provider over loopback: one test per fault, each
//! asserting what the caller got and how many attempts each upstream saw.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use llm_failover::Reason;
use llm_failover::breaker::{BreakerPolicy, Registry, State};
use llm_failover::chain::{
    Answer, AttemptFailure, FailoverError, FailoverErrorKind, FailoverStream, Route, RoutePolicy,
};
use llm_failover::protocol::openai_chat::{ChatChunk, Client, Endpoint};
use llm_failover::sim::{ANSWER, Fault, Sim};
use serde_json::json;

/// Two providers, each a sim: `primary` serves model `p`, `fallback` serves model `f`.
struct Rig {
    primary: Sim,
    fallback: Sim,
    registry: Arc<Registry>,
    client: Client,
    endpoints: [Endpoint; 2],
}

const P: &str = "p";
const F: &str = "f";

fn breaker_policy() -> BreakerPolicy {
    BreakerPolicy::builder()
        .consecutive_failures(3)
        .jitter(0.0)
        .trip_immediately(Reason::ConnectionRefused)
        .open_base(Reason::ConnectionRefused, Duration::from_millis(300))
        .build()
        .unwrap()
}

async fn rig(primary_fault: Fault) -> Rig {
    let primary = Sim::builder()
        .fault(P, primary_fault)
        .token_delay(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let fallback = Sim::builder()
        .token_delay(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let registry = Registry::builder()
        .policy(breaker_policy())
        .target("primary", P)
        .target("fallback", F)
        .build()
        .unwrap();
    let endpoints = [
        Endpoint::new("primary", &primary.base_url()).api_key("sk-test-primary"),
        Endpoint::new("fallback", &fallback.base_url()).api_key("sk-test-fallback"),
    ];
    Rig {
        primary,
        fallback,
        registry: Arc::new(registry),
        client: Client::with_connect_timeout(Duration::from_secs(2)).unwrap(),
        endpoints,
    }
}

fn policy() -> llm_failover::chain::RoutePolicyBuilder {
    RoutePolicy::builder()
        .attempt_timeout(Duration::from_millis(800))
        .ttft_timeout(Duration::from_millis(800))
        .idle_timeout(Duration::from_millis(300))
        .total_deadline(Duration::from_secs(10))
        .retry_backoff(Duration::from_millis(10))
}

impl Rig {
    fn route(&self, policy: RoutePolicy) -> Route {
        Route::builder("chat", Arc::clone(&self.registry))
            .target("primary", P)
            .target("fallback", F)
            .policy(policy)
            .build()
            .unwrap()
    }

    fn endpoint(&self, provider: &str) -> &Endpoint {
        if provider == "primary" {
            &self.endpoints[0]
        } else {
            &self.endpoints[1]
        }
    }

    async fn call(&self, route: &Route) -> Result<Answer<serde_json::Value>, FailoverError> {
        let request = json!({"messages": [{"role": "user", "content": "hi"}]});
        route
            .call(|a| {
                let endpoint = self.endpoint(a.provider()).clone();
                let client = self.client.clone();
                let request = request.clone();
                async move { client.chat(&endpoint, a.model(), &request).await }
            })
            .await
    }

    async fn stream(
        &self,
        route: &Route,
    ) -> Result<
        Answer<FailoverStream<ChatChunk, llm_failover::protocol::openai_chat::ChatStream>>,
        FailoverError,
    > {
        let request = json!({"messages": [{"role": "user", "content": "hi"}]});
        route
            .stream(|a| {
                let endpoint = self.endpoint(a.provider()).clone();
                let client = self.client.clone();
                let request = request.clone();
                async move { client.chat_stream(&endpoint, a.model(), &request).await }
            })
            .await
    }

    fn seen(&self) -> (u64, u64) {
        (self.primary.attempts(P), self.fallback.attempts(F))
    }
}

fn text(answer: &serde_json::Value) -> &str {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

/// Reads a stream to its end: the text, and the error it ended with, if any.
async fn read(
    mut s: FailoverStream<ChatChunk, llm_failover::protocol::openai_chat::ChatStream>,
) -> (String, Option<FailoverError>) {
    let mut out = String::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(chunk) => out.push_str(&chunk.text()),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[tokio::test]
async fn a_refused_primary_is_tried_once_skipped_while_open_and_used_again_after_recovery() {
    let r = rig(Fault::None).await;
    let route = r.route(policy().build().unwrap());
    r.primary.set_down(true).await;

    let a = r.call(&route).await.unwrap();
    assert_eq!(text(&a.value), ANSWER);
    assert_eq!(
        a.trail.to_string(),
        "primary/p=connection_refused; fallback/f=ok"
    );
    assert_eq!(
        r.registry.breaker("primary", "*").unwrap().state(),
        State::Open
    );

    // While the breaker is open the primary is skipped without a connection attempt.
    let a = r.call(&route).await.unwrap();
    assert_eq!(a.trail.to_string(), "primary/p=breaker_open; fallback/f=ok");
    assert_eq!(r.seen(), (0, 2));

    // The host comes back; once the open time is over one probe goes to it and closes it.
    r.primary.set_down(false).await;
    let wait = r
        .registry
        .target("primary", P)
        .unwrap()
        .try_acquire()
        .unwrap_err()
        .retry_after()
        .unwrap();
    tokio::time::sleep(wait).await;
    let a = r.call(&route).await.unwrap();
    assert_eq!(
        &*a.provider, "primary",
        "waited {wait:?}; trail {}",
        a.trail
    );
    assert_eq!(
        r.registry.breaker("primary", "*").unwrap().state(),
        State::Closed
    );
    assert_eq!(r.seen(), (1, 2));
}

#[tokio::test]
async fn a_429_with_retry_after_2_is_not_retried_sooner_than_2_seconds() {
    let r = rig(Fault::RateLimit {
        retry_after: Some(Duration::from_secs(2)),
    })
    .await;
    let route = r.route(
        policy()
            .max_retry_wait(Duration::from_secs(3))
            .build()
            .unwrap(),
    );
    let start = Instant::now();
    let a = r.call(&route).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Retried once on the same target after the wait, then failed over.
    assert_eq!(r.seen(), (2, 1));
    assert_eq!(
        a.trail.to_string(),
        "primary/p=rate_limit; primary/p=rate_limit; fallback/f=ok"
    );
    assert_eq!(
        a.trail.attempts()[0].retry_after,
        Some(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn a_429_with_a_long_wait_fails_over_at_once() {
    let r = rig(Fault::RateLimit {
        retry_after: Some(Duration::from_secs(30)),
    })
    .await;
    let route = r.route(policy().build().unwrap());
    let a = r.call(&route).await.unwrap();
    assert_eq!(text(&a.value), ANSWER);
    assert_eq!(r.seen(), (1, 1));
    assert_eq!(
        a.trail.attempts()[0].retry_after,
        Some(Duration::from_secs(30))
    );
    assert_eq!(a.trail.attempts()[0].status, Some(429));
}

#[tokio::test]
async fn a_content_filter_is_returned_not_laundered_through_another_model() {
    let r = rig(Fault::ContentFilter).await;
    let route = r.route(policy().build().unwrap());
    let err = r.call(&route).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContentFilter)
    );
    assert_eq!(
        err.last_failure().and_then(AttemptFailure::status),
        Some(400)
    );
    assert_eq!(r.seen(), (1, 0));
}

#[tokio::test]
async fn context_overflow_is_returned_without_a_larger_target() {
    let r = rig(Fault::ContextOverflow).await;
    let route = r.route(policy().build().unwrap());
    let err = r.call(&route).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContextOverflow)
    );
    assert_eq!(r.seen(), (1, 0));
}

#[tokio::test]
async fn a_silent_primary_costs_one_attempt_timeout() {
    let r = rig(Fault::Silent).await;
    let route = r.route(policy().max_retries(3).build().unwrap());
    let a = r.call(&route).await.unwrap();
    assert_eq!(text(&a.value), ANSWER);
    assert_eq!(a.trail.to_string(), "primary/p=timeout; fallback/f=ok");
    assert_eq!(r.seen(), (1, 1));
}

#[tokio::test]
async fn server_failures_by_kind() {
    // (fault, attempts on the primary, trail)
    let cases = [
        (
            Fault::ServerErrorOnce,
            (2, 0),
            "primary/p=server_error; primary/p=ok",
        ),
        (
            Fault::Status(500),
            (2, 1),
            "primary/p=server_error; primary/p=server_error; fallback/f=ok",
        ),
        (
            Fault::Status(503),
            (1, 1),
            "primary/p=overloaded; fallback/f=ok",
        ),
        (
            Fault::Status(504),
            (1, 1),
            "primary/p=timeout; fallback/f=ok",
        ),
        (
            Fault::Status(529),
            (1, 1),
            "primary/p=overloaded; fallback/f=ok",
        ),
        (
            Fault::ResetBeforeHeaders,
            (2, 1),
            "primary/p=connection_reset; primary/p=connection_reset; fallback/f=ok",
        ),
    ];
    for (fault, seen, trail) in cases {
        let r = rig(fault.clone()).await;
        let route = r.route(policy().build().unwrap());
        let a = r.call(&route).await.unwrap();
        assert_eq!(text(&a.value), ANSWER, "{fault:?}");
        assert_eq!(a.trail.to_string(), trail, "{fault:?}");
        assert_eq!(r.seen(), seen, "{fault:?}");
    }
}

#[tokio::test]
async fn streams_fail_over_before_the_first_token_and_never_end_short() {
    // A slow first token fails over invisibly.
    let r = rig(Fault::FirstTokenDelay(Duration::from_secs(5))).await;
    let route = r.route(policy().build().unwrap());
    let a = r.stream(&route).await.unwrap();
    assert_eq!(&*a.provider, "fallback");
    let (text, err) = read(a.value).await;
    assert!(err.is_none());
    assert_eq!(text, ANSWER);

    // Breaks after the first token end with an error, never with a short answer.
    for (fault, want) in [
        (Fault::CutAfter(3), Reason::StreamInterrupted),
        (Fault::StallAfter(3), Reason::Timeout),
        (Fault::MalformedAfter(3), Reason::StreamInterrupted),
    ] {
        let r = rig(fault.clone()).await;
        let route = r.route(policy().build().unwrap());
        let a = r.stream(&route).await.unwrap();
        assert_eq!(&*a.provider, "primary", "{fault:?}");
        let (text, err) = read(a.value).await;
        assert_ne!(text, ANSWER, "{fault:?}");
        assert!(ANSWER.starts_with(&text), "{fault:?}: {text}");
        let err = err.unwrap_or_else(|| panic!("{fault:?} ended without an error"));
        assert_eq!(
            err.kind(),
            FailoverErrorKind::StreamBroken(want),
            "{fault:?}"
        );
        assert_eq!(r.seen(), (1, 0), "{fault:?}");
    }
}

#[tokio::test]
async fn a_stream_without_done_finishes_promptly_and_whole() {
    let r = rig(Fault::NoDone).await;
    let route = r.route(
        policy()
            .idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let a = r.stream(&route).await.unwrap();
    let (text, err) = read(a.value).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, ANSWER);
    assert_eq!(
        r.registry
            .breaker("primary", P)
            .unwrap()
            .snapshot()
            .consecutive_failures,
        0
    );
}

#[tokio::test]
async fn a_flapping_primary_is_served_again_after_it_comes_back() {
    let r = rig(Fault::None).await;
    let route = r.route(policy().build().unwrap());
    // Down until the test says so, not for a while: a first call that starts late on a
    // loaded machine must still find the host down (a timed outage of 200 ms raced it).
    r.primary.set_down(true).await;
    let a = r.call(&route).await.unwrap();
    assert_eq!(&*a.provider, "fallback", "trail {}", a.trail);
    r.primary.set_down(false).await;
    let wait = r
        .registry
        .target("primary", P)
        .unwrap()
        .try_acquire()
        .err()
        .and_then(|e| e.retry_after())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let a = r.call(&route).await.unwrap();
    // The trail says why if it was not the primary (this failed once under load: issue 21).
    assert_eq!(
        &*a.provider, "primary",
        "waited {wait:?}; trail {}",
        a.trail
    );
}

/// A provider at `addr` whose every answer is `response`, behind the route's primary.
async fn canned_primary(response: String) -> (Rig, Route) {
    let r = rig(Fault::None).await;
    let addr = crate::support::canned(response).await;
    let mut r = r;
    r.endpoints[0] = Endpoint::new("primary", &format!("http://{addr}/v1"));
    let route = r.route(policy().build().unwrap());
    (r, route)
}

fn sse(events: &[&str]) -> String {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    crate::support::http("200 OK", "content-type: text/event-stream\r\n", &body)
}

#[tokio::test]
async fn a_withheld_answer_is_a_content_filter_and_an_empty_one_fails_over() {
    // Azure filters output: a 200 whose choice finished with "content_filter".
    let filtered = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}"#;
    let (r, route) = canned_primary(sse(&[filtered, "[DONE]"])).await;
    let err = r.stream(&route).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContentFilter)
    );
    assert_eq!(r.seen().1, 0);
    let body = json!({"choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"content_filter"}]}).to_string();
    let (r, route) = canned_primary(crate::support::http(
        "200 OK",
        "content-type: application/json\r\n",
        &body,
    ))
    .await;
    let err = r.call(&route).await.unwrap_err();
    assert_eq!(
        err.kind(),
        FailoverErrorKind::Returned(Reason::ContentFilter)
    );

    // A stream that finishes before any token is empty: the fallback answers instead.
    let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#;
    let stop = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    let (r, route) = canned_primary(sse(&[role, "", stop, "[DONE]"])).await;
    let a = r.stream(&route).await.unwrap();
    assert_eq!(
        a.trail.to_string(),
        "primary/p=empty_response; fallback/f=ok"
    );
    let (text, err) = read(a.value).await;
    assert!(err.is_none());
    assert_eq!(text, ANSWER);
}

#[tokio::test]
async fn a_200_carrying_an_error_object_is_the_error_it_describes() {
    // Some gateways answer 200 with an error object: its code decides, not the 200.
    let body = json!({"error": {"message": "Upstream provider error", "code": 502}}).to_string();
    let (r, route) = canned_primary(crate::support::http(
        "200 OK",
        "content-type: application/json\r\n",
        &body,
    ))
    .await;
    let a = r.call(&route).await.unwrap();
    // A server error is retried once in place, as a 502 status would be.
    assert_eq!(
        a.trail.to_string(),
        "primary/p=server_error; primary/p=server_error; fallback/f=ok"
    );
}
