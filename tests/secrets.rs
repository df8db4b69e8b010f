//! A sentinel API key sent in a header, in a URL query, and echoed back in a provider's error
//! body never reaches logs, spans, the Prometheus scrape or the errors a route returns.

use std::sync::Arc;
use std::time::Duration;

use llm_failover::breaker::Registry;
use llm_failover::chain::{AttemptFailure, Route, RoutePolicy};
use llm_failover::protocol::openai_chat::{Client, Endpoint};

use crate::proxy::start_config;
use crate::support::{Files, answering, http, route_chat, sha256_hex, sim};

const SENTINEL: &str = "sk-SENTINEL-7f3a9c0e1b2d4f6a";

/// A provider that answers 401 with an OpenAI error body quoting the request it received,
/// headers and all, as some gateways do.
async fn echoing_provider() -> std::net::SocketAddr {
    echoing_provider_with("401 Unauthorized", "invalid_api_key", None).await
}

/// A provider that answers `status` with an OpenAI error body (`code`) quoting the request it
/// received; `saw` turns true when a request carried the sentinel.
async fn echoing_provider_with(
    status: &'static str,
    code: &'static str,
    saw: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> std::net::SocketAddr {
    echoing_provider_seeing(status, code, saw, SENTINEL).await
}

/// [`echoing_provider_with`], where `saw` turns true when a request carried `needle`.
async fn echoing_provider_seeing(
    status: &'static str,
    code: &'static str,
    saw: Option<Arc<std::sync::atomic::AtomicBool>>,
    needle: &'static str,
) -> std::net::SocketAddr {
    answering(move |request| {
        let seen = request.replace(['"', '\\', '\r', '\n'], " ");
        if let Some(saw) = &saw {
            saw.fetch_or(seen.contains(needle), std::sync::atomic::Ordering::SeqCst);
        }
        let body = format!(
            r#"{{"error":{{"message":"Request rejected. We received: {seen}","type":"invalid_request_error","code":"{code}"}}}}"#
        );
        http(status, "content-type: application/json\r\n", &body)
    })
    .await
}

#[test]
fn the_sentinel_key_appears_nowhere() {
    let mut returned = Vec::new();
    let mut echoed = false;
    let (scrape, logs) = crate::support::observed(|| async {
        let sim = sim().await;
        let echo = echoing_provider().await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let endpoints = [
            Endpoint::new("query", &format!("http://{closed}/v1")).api_key_query("key", SENTINEL),
            Endpoint::new("echo", &format!("http://{echo}/v1")).api_key(SENTINEL),
            Endpoint::new("sim", &sim.base_url()).api_key(SENTINEL),
        ];
        let registry = Arc::new(
            Registry::builder()
                .target("query", "m")
                .target("echo", "m")
                .target("sim", "m")
                .build()
                .unwrap(),
        );
        let client = Client::new().unwrap();
        let policy = RoutePolicy::builder()
            .attempt_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let route = |targets: &[&str]| {
            let mut b = Route::builder("chat", Arc::clone(&registry)).policy(policy.clone());
            for t in targets {
                b = b.target(t, "m");
            }
            b.build().unwrap()
        };
        let call = async |route: Route| route_chat(&route, &client, &endpoints).await;
        // Two failures, then an answer.
        let answer = call(route(&["query", "echo", "sim"])).await.unwrap();
        returned.push(format!("{} {:?}", answer.trail, answer.trail));
        // Every target fails: the error the caller gets.
        registry.control("query", "*").unwrap().reset();
        registry.control("echo", "*").unwrap().reset();
        let err = call(route(&["query", "echo"])).await.unwrap_err();
        returned.push(format!("{err} {err:?}"));
        if let Some(f) = err.last_failure() {
            returned.push(format!("{f} {f:?}"));
            echoed = f
                .response()
                .map(|r| r.body.contains(SENTINEL))
                .unwrap_or(false);
        }
        returned.push(format!("{:?}", endpoints));
        let failure: Option<&AttemptFailure> = err.last_failure();
        assert!(failure.is_some());
    });
    assert!(
        echoed,
        "the echoing provider did send the key back, so the test means something"
    );
    assert!(
        logs.contains("gen_ai.provider.name"),
        "spans were logged: {logs}"
    );
    assert!(
        !logs.contains(SENTINEL),
        "the key leaked into logs or spans"
    );
    assert!(scrape.contains("llm_failover_failures_total"), "{scrape}");
    assert!(!scrape.contains(SENTINEL), "the key leaked into the scrape");
    for r in &returned {
        assert!(
            !r.contains(SENTINEL),
            "the key leaked into a returned error: {r}"
        );
    }
}

/// The proxy: keys from the environment, sent upstream as header and query, echoed back by a
/// provider in an error the proxy returns; none of it reaches the client, the logs, the scrape,
/// the status endpoint or a `Debug` print.
#[test]
fn the_proxy_never_shows_a_providers_key() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let saw = Arc::new(AtomicBool::new(false));
    let mut seen_by_client = Vec::new();
    let (scrape, logs) = crate::support::observed(|| async {
        let sim = sim().await;
        let echo = echoing_provider().await;
        let format =
            echoing_provider_with("400 Bad Request", "invalid_value", Some(Arc::clone(&saw))).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let toml = format!(
            r#"
[providers.query]
base_url = "http://{closed}/v1"
api_key_env = "KEY"
api_key_query = "key"
[providers.echo]
base_url = "http://{echo}/v1"
api_key_env = "KEY"
[providers.format]
base_url = "http://{format}/v1"
api_key_env = "KEY"
[providers.sim]
base_url = "{}"
api_key_env = "KEY"
[providers.claude_echo]
api = "anthropic-messages"
base_url = "http://{echo}/v1"
api_key_env = "KEY"
[providers.claude_format]
api = "anthropic-messages"
base_url = "http://{format}/v1"
api_key_env = "KEY"
[providers.claude]
api = "anthropic-messages"
base_url = "{}"
api_key_env = "KEY"
[providers.resp_echo]
api = "openai-responses"
base_url = "http://{echo}/v1"
api_key_env = "KEY"
[providers.resp_format]
api = "openai-responses"
base_url = "http://{format}/v1"
api_key_env = "KEY"
[providers.resp]
api = "openai-responses"
base_url = "{}"
api_key_env = "KEY"
[routes.chat]
targets = ["query/m", "echo/m", "sim/m"]
[routes.returned]
targets = ["format/m", "sim/m"]
[routes.broken]
targets = ["echo/m"]
[routes.claude]
targets = ["claude_echo/m", "claude/m"]
[routes.claude_returned]
targets = ["claude_format/m", "claude/m"]
[routes.claude_broken]
targets = ["claude_echo/m"]
[routes.responses]
targets = ["resp_echo/m", "resp/m"]
[routes.responses_returned]
targets = ["resp_format/m", "resp/m"]
[routes.responses_broken]
targets = ["resp_echo/m"]
"#,
            sim.base_url(),
            sim.base_url(),
            sim.base_url()
        );
        let config = llm_failover::proxy::Config::parse_with_env(&toml, "t.toml", |v| {
            (v == "KEY").then(|| SENTINEL.to_owned())
        })
        .unwrap();
        seen_by_client.push(format!("{config:?}"));
        let p = start_config(&config).await;
        seen_by_client.push(format!("{:?}", p.proxy));
        let http = reqwest::Client::new();
        for (route, stream) in [
            ("chat", false),
            ("chat", true),
            ("returned", false),
            ("broken", false),
            ("broken", true),
        ] {
            let resp = p.chat(&http, route, stream).await;
            seen_by_client.push(format!("{:?}", resp.headers()));
            seen_by_client.push(resp.text().await.unwrap());
        }
        // The Messages endpoint, and the chat endpoint through Anthropic targets.
        for (route, stream) in [
            ("claude", false),
            ("claude", true),
            ("claude_returned", false),
            ("claude_broken", false),
            ("claude_broken", true),
        ] {
            let body = serde_json::json!({
                "model": route,
                "max_tokens": 64,
                "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            });
            let resp = http
                .post(p.url("/v1/messages"))
                .json(&body)
                .send()
                .await
                .unwrap();
            seen_by_client.push(format!("{:?}", resp.headers()));
            seen_by_client.push(resp.text().await.unwrap());
            let resp = p.chat(&http, route, stream).await;
            seen_by_client.push(format!("{:?}", resp.headers()));
            seen_by_client.push(resp.text().await.unwrap());
        }
        // The Responses endpoint, and the chat endpoint through Responses targets.
        for (route, stream) in [
            ("responses", false),
            ("responses", true),
            ("responses_returned", false),
            ("responses_broken", false),
            ("responses_broken", true),
        ] {
            let body = serde_json::json!({"model": route, "stream": stream, "input": "hi"});
            let resp = http
                .post(p.url("/v1/responses"))
                .json(&body)
                .send()
                .await
                .unwrap();
            seen_by_client.push(format!("{:?}", resp.headers()));
            seen_by_client.push(resp.text().await.unwrap());
            let resp = p.chat(&http, route, stream).await;
            seen_by_client.push(format!("{:?}", resp.headers()));
            seen_by_client.push(resp.text().await.unwrap());
        }
        for path in ["/v1/failover/status", "/v1/models", "/healthz"] {
            let body = http
                .get(p.url(path))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            seen_by_client.push(body);
        }
    });
    assert!(
        saw.load(Ordering::SeqCst),
        "the provider received the key, and echoed it back, so the test means something"
    );
    let returned = seen_by_client
        .iter()
        .find(|b| b.contains("invalid_value"))
        .expect("the returned 400 reached the client");
    assert!(returned.contains("<redacted>"), "{returned}");
    assert!(
        seen_by_client
            .iter()
            .any(|b| b.contains(llm_failover::sim::ANSWER)),
        "the chat route answered"
    );
    assert!(
        seen_by_client
            .iter()
            .any(|b| b.contains(r#""object":"response""#) && b.contains(llm_failover::sim::ANSWER)),
        "the Responses route answered"
    );
    for s in &seen_by_client {
        assert!(
            !s.contains(SENTINEL),
            "the key reached the client or a Debug print: {s}"
        );
    }
    assert!(logs.contains("gen_ai.provider.name"), "spans were logged");
    assert!(
        !logs.contains(SENTINEL),
        "the key leaked into logs or spans"
    );
    assert!(scrape.contains("llm_failover_requests_total"), "{scrape}");
    assert!(!scrape.contains(SENTINEL), "the key leaked into the scrape");
}

/// Client keys, the admin key and key hashes: used in every way a caller can (right, wrong,
/// on the wrong endpoint, forwarded to a provider that echoes it back), none of them, nor the
/// hashes, reaches logs, spans, the scrape, a response, the status endpoint, a `Debug` print
/// or `check`'s output.
#[test]
fn client_and_admin_keys_and_their_hashes_appear_nowhere() {
    use std::sync::atomic::{AtomicBool, Ordering};

    const CLIENT: &str = "sk-CLIENT-SENTINEL-2b7e151628aed2a6";
    const HASHED: &str = "sk-HASHED-SENTINEL-abf7158809cf4f3c";
    const ADMIN: &str = "sk-ADMIN-SENTINEL-762e7160f38b4da5";
    let mut sentinels = vec![CLIENT.to_owned(), HASHED.to_owned(), ADMIN.to_owned()];
    for k in [CLIENT, HASHED, ADMIN] {
        sentinels.push(sha256_hex(k));
        sentinels.push(sha256_hex(k).to_uppercase());
    }
    let env = |v: &str| match v {
        "CLIENT_KEY" => Some(CLIENT.to_owned()),
        "ADMIN_KEY" => Some(ADMIN.to_owned()),
        "PROVIDER_KEY" => Some("provider-key".to_owned()),
        _ => None,
    };

    let saw = Arc::new(AtomicBool::new(false));
    let mut seen = Vec::new();
    let mut toml = String::new();
    let (scrape, logs) = crate::support::observed(|| async {
        let sim = sim().await;
        let echo = echoing_provider_seeing(
            "400 Bad Request",
            "invalid_value",
            Some(Arc::clone(&saw)),
            CLIENT,
        )
        .await;
        toml = format!(
            r#"
[providers.sim]
base_url = "{}"
api_key_env = "PROVIDER_KEY"
[providers.byok]
base_url = "http://{echo}/v1"
forward_client_key = true
[routes.chat]
targets = ["sim/m"]
[routes.echo]
targets = ["byok/m"]
[[clients]]
name = "web"
key_env = "CLIENT_KEY"
routes = ["*"]
[[clients]]
name = "batch"
key_sha256 = "{}"
routes = ["chat"]
[admin]
key_env = "ADMIN_KEY"
"#,
            sim.base_url(),
            sha256_hex(HASHED).to_uppercase()
        );
        let config = llm_failover::proxy::Config::parse_with_env(&toml, "t.toml", env).unwrap();
        seen.push(format!("{config:?}"));
        let p = start_config(&config).await;
        seen.push(format!("{:?}", p.proxy));
        let http = reqwest::Client::new();
        let wrong = format!("{CLIENT}x");
        for key in [CLIENT, HASHED, ADMIN, wrong.as_str()] {
            for (route, stream) in [
                ("chat", false),
                ("chat", true),
                ("echo", false),
                ("echo", true),
            ] {
                let resp = p.chat_as(&http, key, route, stream).await;
                seen.push(format!("{:?}", resp.headers()));
                seen.push(resp.text().await.unwrap());
            }
            for path in ["/v1/failover/status", "/v1/models", "/healthz"] {
                let resp = http
                    .get(p.url(path))
                    .header("x-api-key", key)
                    .send()
                    .await
                    .unwrap();
                seen.push(format!("{:?}", resp.headers()));
                seen.push(resp.text().await.unwrap());
            }
            for action in ["force_open", "reset"] {
                let resp = http
                    .post(p.url("/v1/failover/breakers/sim/*"))
                    .bearer_auth(key)
                    .json(&serde_json::json!({"action": action}))
                    .send()
                    .await
                    .unwrap();
                seen.push(resp.text().await.unwrap());
            }
        }
    });
    assert!(
        saw.load(Ordering::SeqCst),
        "the provider that forwards the client key received it and echoed it back"
    );
    assert!(
        seen.iter()
            .any(|b| b.contains("invalid_value") && b.contains("<redacted>")),
        "the echoed key came back to the client, scrubbed"
    );
    assert!(
        seen.iter().any(|b| b.contains(llm_failover::sim::ANSWER)),
        "the chat route answered"
    );
    assert!(
        seen.iter().any(|b| b.contains("forced_open")),
        "the admin action went through"
    );
    // `check` on the same file, with the variables set and not set.
    let files = Files::new();
    let path = files.write("keys.toml", &toml);
    for set in [true, false] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_llm-failover"));
        cmd.args(["check", "--config"]).arg(&path);
        if set {
            cmd.env("CLIENT_KEY", CLIENT)
                .env("ADMIN_KEY", ADMIN)
                .env("PROVIDER_KEY", "p");
        } else {
            cmd.env_remove("CLIENT_KEY").env_remove("ADMIN_KEY");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
        seen.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    assert!(
        seen.iter()
            .any(|s| s.contains("2 client keys, an admin key")),
        "check ran: {seen:?}"
    );
    assert!(logs.contains("gen_ai.provider.name"), "spans were logged");
    assert!(logs.contains("turned away"), "rejections were logged");
    assert!(
        scrape.contains("llm_failover_client_rejections_total"),
        "{scrape}"
    );
    for s in &sentinels {
        assert!(!logs.contains(s.as_str()), "{s} leaked into logs or spans");
        assert!(!scrape.contains(s.as_str()), "{s} leaked into the scrape");
        for text in &seen {
            assert!(
                !text.contains(s.as_str()),
                "{s} reached a response, check or a Debug print: {text}"
            );
        }
    }
}
