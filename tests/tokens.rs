//! `llm_failover_tokens_total`: the tokens providers reported, counted by the metrics layer
//! from the attempts' spans, scraped from the proxy's own `/metrics`: a plain answer, a
//! stream, a resumed stream, Anthropic Messages native and translated, cache reads and writes.

use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::{self, Sim};
use serde_json::{Value, json};

use crate::support::{self, down_sim, sha256_hex};

const KEY: &str = "tokens-test-client-key";

/// Runs `f` on a current-thread runtime with the metrics layer and a local Prometheus
/// recorder installed for it alone; `f` gets the recorder's handle for the proxy's `/metrics`.
fn with_metrics<F: std::future::Future<Output = ()>>(
    f: impl FnOnce(metrics_exporter_prometheus::PrometheusHandle) -> F,
) {
    use tracing_subscriber::layer::SubscriberExt as _;
    // See `support::observed`: keeps tracing asking every dispatcher for new callsites.
    support::observed(|| async {});
    let recorder = llm_failover::telemetry::prometheus_builder().build_recorder();
    let handle = recorder.handle();
    let subscriber =
        tracing_subscriber::registry().with(llm_failover::telemetry::MetricsLayer::new());
    metrics::with_local_recorder(&recorder, || {
        tracing::subscriber::with_default(subscriber, || {
            tracing::callsite::rebuild_interest_cache();
            llm_failover::telemetry::describe_metrics();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f(handle));
        });
    });
}

/// Serves `toml` on loopback with `/metrics` from `handle`.
async fn serve(toml: &str, handle: metrics_exporter_prometheus::PrometheusHandle) -> String {
    let config = Config::parse(toml, "tokens.toml").unwrap();
    let proxy = Proxy::new(&config).unwrap().with_metrics(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    format!("http://{addr}")
}

/// The value of the tokens series with these labels in `/metrics` (None: no such series).
async fn tokens(base: &str, labels: [&str; 5]) -> Option<u64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let [route, provider, model, client, kind] = labels;
    let series = format!(
        "llm_failover_tokens_total{{route=\"{route}\",provider=\"{provider}\",model=\"{model}\",client=\"{client}\",kind=\"{kind}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.parse().unwrap())
}

/// Every tokens series of `/metrics`.
async fn all_tokens(base: &str) -> Vec<String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("llm_failover_tokens_total{"))
        .map(str::to_owned)
        .collect()
}

async fn post(base: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `usage` of the last data payload of an SSE body that has one.
fn stream_usage(body: &str) -> Value {
    body.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
        .last()
        .unwrap()
}

fn clients() -> String {
    format!(
        "[[clients]]\nname = \"webapp\"\nkey_sha256 = \"{}\"\nroutes = [\"*\"]\n",
        sha256_hex(KEY)
    )
}

#[test]
fn a_plain_answer_and_a_stream_count_exactly_by_route_provider_and_client() {
    with_metrics(|handle| async move {
        let (a, b) = (down_sim().await, Sim::builder().start().await.unwrap());
        let toml = format!(
            "{}\n[providers.a]\nbase_url = \"{}\"\n[providers.b]\nbase_url = \"{}\"\n\
             [routes.chat]\ntargets = [\"a/m\", \"b/gpt\"]\n",
            clients(),
            a.base_url(),
            b.base_url()
        );
        let base = serve(&toml, handle).await;
        let hi = json!([{"role": "user", "content": "hi there"}]);
        let resp = post(
            &base,
            "/v1/chat/completions",
            json!({"model": "chat", "messages": hi}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let usage = resp.json::<Value>().await.unwrap()["usage"].clone();
        let (prompt, completion) = (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
        );
        assert_eq!(
            (prompt, completion),
            (2, sim::answer_tokens().count() as u64)
        );
        let series = |kind| ["chat", "b", "gpt", "webapp", kind];
        assert_eq!(tokens(&base, series("input")).await, Some(prompt));
        assert_eq!(tokens(&base, series("output")).await, Some(completion));
        // OpenAI-compatible usage reports no cache; the refused target used nothing.
        assert_eq!(
            all_tokens(&base).await.len(),
            2,
            "{:?}",
            all_tokens(&base).await
        );

        // A stream with its usage chunk adds its own report, once.
        let resp = post(
            &base,
            "/v1/chat/completions",
            json!({"model": "chat", "messages": hi, "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let streamed = stream_usage(&resp.text().await.unwrap());
        assert_eq!(streamed["prompt_tokens"], prompt);
        assert_eq!(tokens(&base, series("input")).await, Some(2 * prompt));
        assert_eq!(
            tokens(&base, series("output")).await,
            Some(completion + streamed["completion_tokens"].as_u64().unwrap())
        );
        // A stream whose client asked for no usage chunk reports none: nothing added.
        let resp = post(
            &base,
            "/v1/chat/completions",
            json!({"model": "chat", "messages": hi, "stream": true}),
        )
        .await;
        let _ = resp.text().await.unwrap();
        assert_eq!(tokens(&base, series("input")).await, Some(2 * prompt));
    });
}

#[test]
fn a_resumed_stream_counts_each_attempt_once_not_the_summed_usage() {
    with_metrics(|handle| async move {
        let (a, b) = (
            Sim::builder().start().await.unwrap(),
            Sim::builder().start().await.unwrap(),
        );
        let toml = format!(
            "[route]\nidle_timeout = \"2s\"\nstream_resume = true\n\
             [providers.a]\nbase_url = \"{}\"\n[providers.b]\nbase_url = \"{}\"\nprefill = \"assistant\"\n\
             [routes.chat]\ntargets = [\"a/sim-cut-3\", \"b/m\"]\n",
            a.base_url(),
            b.base_url()
        );
        let base = serve(&toml, handle).await;
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "chat", "stream": true,
                "messages": [{"role": "user", "content": "hi"}],
                "stream_options": {"include_usage": true}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.unwrap();
        assert!(body.contains(r#""resumed":true"#), "{body}");
        let client_usage = stream_usage(&body);
        // b continued from the three tokens a sent: its prompt is the question's word and the
        // prefill's three, its completion the rest of the answer.
        let rest = sim::answer_tokens().count() as u64 - 3;
        let series = |kind| ["chat", "b", "m", "none", kind];
        assert_eq!(tokens(&base, series("input")).await, Some(4));
        assert_eq!(tokens(&base, series("output")).await, Some(rest));
        // The client's usage adds a's part; the counter does not count it again, and a
        // reported nothing before it broke.
        assert!(client_usage["completion_tokens"].as_u64().unwrap() > rest);
        assert_eq!(
            all_tokens(&base).await.len(),
            2,
            "{:?}",
            all_tokens(&base).await
        );
    });
}

/// A canned Anthropic answer with cache reads and writes: `input` counts only what no cache
/// read or wrote; the four kinds add up to everything used.
#[test]
fn anthropic_messages_count_cache_reads_and_writes_native_and_translated() {
    with_metrics(|handle| async move {
        let answer =
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}})
            .to_string();
        let canned = support::canned(support::http(
            "200 OK",
            "content-type: application/json\r\n",
            &answer,
        ))
        .await;
        let sim = Sim::builder().start().await.unwrap();
        let toml = format!(
            "{}\n[providers.claude]\nbase_url = \"http://{canned}/v1\"\napi = \"anthropic-messages\"\n\
             [providers.s]\nbase_url = \"{}\"\napi = \"anthropic-messages\"\n\
             [routes.claude]\ntargets = [\"claude/c\"]\n[routes.sim]\ntargets = [\"s/m\"]\n",
            clients(),
            sim.base_url().trim_end_matches('/'),
        );
        let base = serve(&toml, handle).await;
        let hi = json!([{"role": "user", "content": "hi"}]);
        // Native: an Anthropic client, an Anthropic target.
        let resp = post(
            &base,
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 50, "messages": hi}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let series = |kind| ["claude", "claude", "c", "webapp", kind];
        for (kind, n) in [
            ("input", 20),
            ("output", 5),
            ("cache_read", 100),
            ("cache_write", 7),
        ] {
            assert_eq!(tokens(&base, series(kind)).await, Some(n), "{kind}");
        }
        // Translated: a chat client, the same Anthropic target. The chat shape has no field
        // for cache writes, so they count as input there.
        let resp = post(
            &base,
            "/v1/chat/completions",
            json!({"model": "claude", "messages": hi}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(tokens(&base, series("input")).await, Some(20 + 27));
        assert_eq!(tokens(&base, series("output")).await, Some(10));
        assert_eq!(tokens(&base, series("cache_read")).await, Some(200));

        // A stream from the simulated Anthropic provider: input at message_start, output at
        // message_delta, counted once each.
        let resp = post(
            &base,
            "/v1/messages",
            json!({"model": "sim", "max_tokens": 500, "messages": hi, "stream": true}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let _ = resp.text().await.unwrap();
        let series = |kind| ["sim", "s", "m", "webapp", kind];
        assert_eq!(tokens(&base, series("input")).await, Some(1));
        assert_eq!(
            tokens(&base, series("output")).await,
            Some(sim::answer_tokens().count() as u64)
        );
        assert_eq!(tokens(&base, series("cache_read")).await, Some(0));
    });
}

#[test]
fn responses_count_exactly_natively_and_translated_streamed_or_not() {
    with_metrics(|handle| async move {
        let s = Sim::builder().start().await.unwrap();
        let toml = format!(
            "{}\n[providers.resp]\napi = \"openai-responses\"\nbase_url = \"{}\"\n\
             [providers.chat]\nbase_url = \"{}\"\n\
             [routes.native]\ntargets = [\"resp/m\"]\n[routes.translated]\ntargets = [\"chat/m\"]\n",
            clients(),
            s.base_url(),
            s.base_url()
        );
        let base = serve(&toml, handle).await;
        for route in ["native", "translated"] {
            let provider = if route == "native" { "resp" } else { "chat" };
            let series = |kind| [route, provider, "m", "webapp", kind];
            let answer: Value = post(
                &base,
                "/v1/responses",
                json!({"model": route, "input": "hi there"}),
            )
            .await
            .json()
            .await
            .unwrap();
            let (input, output) = (
                answer["usage"]["input_tokens"].as_u64().unwrap(),
                answer["usage"]["output_tokens"].as_u64().unwrap(),
            );
            assert_eq!(
                (input, output),
                (2, sim::answer_tokens().count() as u64),
                "{route}"
            );
            assert_eq!(tokens(&base, series("input")).await, Some(input), "{route}");
            assert_eq!(
                tokens(&base, series("output")).await,
                Some(output),
                "{route}"
            );

            // A stream reports its usage on its terminal event, counted once.
            let body = post(
                &base,
                "/v1/responses",
                json!({"model": route, "input": "hi there", "stream": true}),
            )
            .await
            .text()
            .await
            .unwrap();
            let done = crate::support::events(&body)
                .into_iter()
                .find(|(name, _)| name == "response.completed")
                .unwrap_or_else(|| panic!("{route}: no completion in {body}"))
                .1;
            assert_eq!(done["response"]["usage"]["input_tokens"], input, "{route}");
            assert_eq!(
                tokens(&base, series("input")).await,
                Some(2 * input),
                "{route}"
            );
            assert_eq!(
                tokens(&base, series("output")).await,
                Some(2 * output),
                "{route}"
            );
        }
    });
}
