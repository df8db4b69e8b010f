//! `POST /v1/embeddings` end to end: a proxy on loopback in front of simulated providers, with
//! failover only between targets of one upstream model.

use llm_failover::proxy::Config;
use llm_failover::sim::{DEFAULT_DIMENSIONS, Fault, Sim};
use serde_json::{Value, json};

use crate::proxy::{Running, start_config};
use crate::support::{canned, down_sim, get_json, http, sim};

/// A proxy with one OpenAI-compatible provider per `(name, base_url)`, an Anthropic one
/// `claude` on `claude_url`, and `routes` (TOML).
async fn proxy(providers: &[(&str, String)], claude_url: &str, routes: &str) -> Running {
    let mut toml = format!(
        "[providers.claude]\napi = \"anthropic-messages\"\nbase_url = \"{claude_url}\"\n\n"
    );
    for (name, url) in providers {
        toml.push_str(&format!("[providers.{name}]\nbase_url = \"{url}\"\n\n"));
    }
    toml.push_str(routes);
    start_config(&Config::parse(&toml, "test.toml").unwrap()).await
}

async fn embed(r: &Running, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(r.url("/v1/embeddings"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The vectors of an answer, as floats.
fn vectors(answer: &Value) -> Vec<Vec<f64>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn one_input_and_a_batch_are_answered_with_their_vectors_and_usage() {
    let up = sim().await;
    let r = proxy(
        &[("openai", up.base_url())],
        "http://127.0.0.1:9",
        "[routes.search]\ntargets = [\"openai/text-embedding-3-small\"]",
    )
    .await;
    let resp = embed(&r, &json!({"model": "search", "input": "hello world"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "openai/text-embedding-3-small=ok"
    );
    let one: Value = resp.json().await.unwrap();
    assert_eq!(one["object"], "list");
    assert_eq!(vectors(&one).len(), 1);
    assert_eq!(vectors(&one)[0].len(), DEFAULT_DIMENSIONS);
    assert_eq!(one["usage"]["prompt_tokens"], 2);
    // The upstream got the target's model and the request's own fields.
    let batch = json!({"model": "search", "input": ["a", "b c", "d"], "dimensions": 4});
    let answer: Value = embed(&r, &batch).await.json().await.unwrap();
    let sent = up.last_request("text-embedding-3-small").unwrap();
    assert_eq!(sent["model"], "text-embedding-3-small");
    assert_eq!(sent["dimensions"], 4);
    let v = vectors(&answer);
    assert_eq!(v.len(), 3);
    assert!(v.iter().all(|v| v.len() == 4));
    assert_eq!(answer["data"][2]["index"], 2);
    // base64 passes through as the upstream encoded it.
    let b64 =
        json!({"model": "search", "input": "x", "dimensions": 3, "encoding_format": "base64"});
    let answer: Value = embed(&r, &b64).await.json().await.unwrap();
    let encoded = answer["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded.len(), 16, "three f32s: {encoded}");
}

#[tokio::test]
async fn a_refused_primary_fails_over_to_a_host_of_the_same_model() {
    let (down, up) = (down_sim().await, sim().await);
    let r = proxy(
        &[("local", down.base_url()), ("openai", up.base_url())],
        "http://127.0.0.1:9",
        "[routes.search]\ntargets = [\"local/nomic-embed-text\", \"openai/nomic-embed-text\"]",
    )
    .await;
    let resp = embed(&r, &json!({"model": "search", "input": ["q"]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "local/nomic-embed-text=connection_refused; openai/nomic-embed-text=ok"
    );
    assert_eq!(resp.headers()["x-failover-provider"], "openai");
    assert_eq!(vectors(&resp.json().await.unwrap()).len(), 1);
}

#[tokio::test]
async fn a_route_whose_targets_name_different_models_is_refused_before_any_provider() {
    let (a, b) = (sim().await, sim().await);
    let r = proxy(
        &[("openai", a.base_url()), ("local", b.base_url())],
        "http://127.0.0.1:9",
        "[routes.mixed]\ntargets = [\"openai/text-embedding-3-small\", \"local/nomic-embed-text\"]\n\n\
         [routes.search]\ntargets = [\"openai/text-embedding-3-small\"]",
    )
    .await;
    let resp = embed(&r, &json!({"model": "mixed", "input": "q"})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_embeddable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`mixed`"), "{message}");
    assert!(
        message.contains("openai/text-embedding-3-small, local/nomic-embed-text"),
        "{message}"
    );
    assert_eq!(a.total_attempts() + b.total_attempts(), 0);
    // /v1/models says which routes serve embeddings.
    let models = get_json(&reqwest::Client::new(), &r.url("/v1/models")).await;
    let endpoints = |id: &str| crate::support::endpoints(&models, id);
    assert!(endpoints("search").contains(&"/v1/embeddings".to_owned()));
    assert!(!endpoints("mixed").contains(&"/v1/embeddings".to_owned()));
    assert!(endpoints("mixed").contains(&"/v1/chat/completions".to_owned()));
}

#[tokio::test]
async fn vectors_of_another_length_than_the_first_answer_are_a_failure_not_an_answer() {
    let primary = sim().await;
    // Another host of "the same model" that answers with 8 dimensions.
    let eight: Vec<f64> = vec![0.125; 8];
    let wrong = canned(http(
        "200 OK",
        "content-type: application/json\r\n",
        &json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": eight}]})
            .to_string(),
    ))
    .await;
    let r = proxy(
        &[
            ("primary", primary.base_url()),
            ("other", format!("http://{wrong}/v1")),
        ],
        "http://127.0.0.1:9",
        "[routes.search]\ntargets = [\"primary/emb\", \"other/emb\"]",
    )
    .await;
    let request = json!({"model": "search", "input": "q"});
    let first = embed(&r, &request).await;
    assert_eq!(first.status(), 200);
    primary.set_fault("emb", Fault::Status(500));
    let second = embed(&r, &request).await;
    assert_eq!(second.status(), 502);
    assert_eq!(
        second.headers()["x-failover-trail"],
        // The route's default policy retries a 500 once on the same target.
        "primary/emb=server_error; primary/emb=server_error; other/emb=empty_response"
    );
    // Asking for a length holds every target to it, also the first answer.
    primary.clear_fault("emb");
    let asked = embed(
        &r,
        &json!({"model": "search", "input": "q", "dimensions": 8}),
    )
    .await;
    assert_eq!(asked.status(), 200, "the sim answers the asked length");
    assert_eq!(asked.headers()["x-failover-provider"], "primary");
}

#[tokio::test]
async fn provider_errors_keep_their_status_and_an_anthropic_target_is_skipped() {
    let up = Sim::builder()
        .fault("emb", Fault::RateLimit { retry_after: None })
        .start()
        .await
        .unwrap();
    let claude = sim().await;
    let r = proxy(
        &[("openai", up.base_url())],
        &claude.base_url(),
        "[routes.search]\ntargets = [\"claude/emb\", \"openai/emb\"]",
    )
    .await;
    let resp = embed(&r, &json!({"model": "search", "input": "q"})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        // The route's default policy retries a rate limit once on the same target.
        "claude/emb=ineligible; openai/emb=rate_limit; openai/emb=rate_limit"
    );
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
    assert_eq!(claude.total_attempts(), 0);
    // Client mistakes are 400s that reach no provider.
    for bad in [
        json!({"model": "search"}),
        json!({"model": "search", "input": []}),
        json!({"model": "search", "input": "q", "stream": true}),
    ] {
        let resp = embed(&r, &bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(up.total_attempts(), 2);
}
