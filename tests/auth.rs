//! Who may use the proxy: client keys, the admin key, per-client limits, request limits, and
//! which key reaches the upstream. Real sockets on loopback, simulated providers.

use std::time::Duration;

use llm_failover::proxy::Config;
use llm_failover::sim::{ANSWER, Sim};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxy::{chat_body, start_config};
use crate::support::{json_of, model_ids, sha256_hex, sim, status_breaker};

const PROVIDER_KEY: &str = "provider-key-aaaa1111";
const WEB_KEY: &str = "client-key-web-bbbb2222";
const BATCH_KEY: &str = "client-key-batch-cccc3333";
const ADMIN_KEY: &str = "admin-key-dddd4444";

fn env(var: &str) -> Option<String> {
    match var {
        "PROVIDER_KEY" => Some(PROVIDER_KEY.into()),
        "WEB_KEY" => Some(WEB_KEY.into()),
        "ADMIN_KEY" => Some(ADMIN_KEY.into()),
        _ => None,
    }
}

/// Provider `a` at `sim` with its own key; routes `chat` (a/m1) and `secret` (a/m2); client
/// `web` (key from the environment) may use `chat`; client `batch` (key as a hash) may use
/// every route; admin `ops`. `extra` goes into web's `[[clients]]` entry.
fn keyed(sim: &Sim, web_extra: &str) -> Config {
    let toml = format!(
        r#"
[providers.a]
base_url = "{}"
api_key_env = "PROVIDER_KEY"

[routes.chat]
targets = ["a/m1"]
[routes.secret]
targets = ["a/m2"]

[[clients]]
name = "web"
key_env = "WEB_KEY"
routes = ["chat"]
{web_extra}

[[clients]]
name = "batch"
key_sha256 = "{}"
routes = ["*"]

[admin]
name = "ops"
key_env = "ADMIN_KEY"
"#,
        sim.base_url(),
        sha256_hex(BATCH_KEY)
    );
    Config::parse_with_env(&toml, "auth.toml", env).unwrap()
}

/// Status, `error.code` and the body of a response.
async fn answer(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code, body)
}

/// `r` with `key`, if any, as a Bearer token.
fn with_key(r: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(k) => r.bearer_auth(k),
        None => r,
    }
}

#[test]
fn the_auth_matrix_turns_away_everyone_it_should_before_any_upstream() {
    let (scrape, logs) = crate::support::observed(|| async {
        let sim = sim().await;
        let p = start_config(&keyed(&sim, "")).await;
        let http = reqwest::Client::new();
        let chat = |model: &str, key: Option<&str>| {
            let r = http
                .post(p.url("/v1/chat/completions"))
                .json(&chat_body(model, false));
            with_key(r, key).send()
        };

        // Turned away: status, OpenAI-style error body, and nothing reached the sim.
        let resp = chat("chat", None).await.unwrap();
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let (status, code, body) = answer(resp).await;
        assert_eq!((status, code.as_str()), (401, "missing_api_key"), "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Bearer")
        );

        let (status, code, body) = answer(chat("chat", Some("sk-not-a-key")).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (401, "invalid_api_key"), "{body}");
        assert!(!body.to_string().contains("sk-not-a-key"), "{body}");

        // The right key on a route it may not use reads like a route that does not exist.
        let (status, code, forbidden) = answer(chat("secret", Some(WEB_KEY)).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "model_not_found"),
            "{forbidden}"
        );
        let (status, code, missing) = answer(chat("nowhere", Some(WEB_KEY)).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "model_not_found"),
            "{missing}"
        );
        let listed = |b: &Value| {
            b["error"]["message"]
                .as_str()
                .unwrap()
                .rsplit_once("you may use: ")
                .unwrap()
                .1
                .to_owned()
        };
        assert_eq!(listed(&forbidden), "chat");
        assert_eq!(listed(&missing), "chat");

        // The admin key is not a client key.
        let (status, code, body) = answer(chat("chat", Some(ADMIN_KEY)).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (403, "forbidden"), "{body}");
        assert_eq!(body["error"]["type"], "permission_error");

        // A client key on the admin endpoints; no key; a wrong key.
        let control = |key: Option<&str>| {
            let r = http
                .post(p.url("/v1/failover/breakers/a/m1"))
                .json(&json!({"action": "force_open"}));
            with_key(r, key).send()
        };
        for (key, status, code) in [
            (Some(WEB_KEY), 403, "forbidden"),
            (Some(BATCH_KEY), 403, "forbidden"),
            (None, 401, "missing_api_key"),
            (Some("sk-not-a-key"), 401, "invalid_api_key"),
        ] {
            let (s, c, body) = answer(control(key).await.unwrap()).await;
            assert_eq!((s, c.as_str()), (status, code), "{key:?}: {body}");
        }
        let reload = http
            .post(p.url("/v1/failover/reload"))
            .header("x-api-key", WEB_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(reload.status(), 403);
        assert_eq!(
            sim.total_attempts(),
            0,
            "no rejected request reached the upstream"
        );
        assert!(
            p.proxy
                .registry()
                .iter()
                .all(|b| b.state().as_str() == "closed"),
            "no rejected admin action took effect"
        );

        // Status: any configured key, none without.
        let status =
            |key: Option<&str>| with_key(http.get(p.url("/v1/failover/status")), key).send();
        assert_eq!(status(None).await.unwrap().status(), 401);
        assert_eq!(status(Some("sk-not-a-key")).await.unwrap().status(), 401);
        for key in [WEB_KEY, BATCH_KEY, ADMIN_KEY] {
            assert_eq!(status(Some(key)).await.unwrap().status(), 200);
        }
        // Health needs no key.
        assert_eq!(
            http.get(p.url("/healthz")).send().await.unwrap().status(),
            200
        );

        // The right keys: Bearer, x-api-key, a key given as its hash.
        let (status, _, body) = answer(chat("chat", Some(WEB_KEY)).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        let resp = http
            .post(p.url("/v1/chat/completions"))
            .header("x-api-key", WEB_KEY)
            .json(&chat_body("chat", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
        let (status, _, _) = answer(chat("secret", Some(BATCH_KEY)).await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(sim.attempts("m1"), 2);
        assert_eq!(sim.attempts("m2"), 1);

        // A client sees its own routes only.
        let models = json_of(http.get(p.url("/v1/models")).bearer_auth(WEB_KEY)).await;
        assert_eq!(model_ids(&models), ["chat"]);
        p.stop().await.unwrap();
    });
    for line in [
        r#"llm_failover_client_rejections_total{client="unknown",reason="unauthenticated"} 6"#,
        r#"llm_failover_client_rejections_total{client="web",reason="forbidden"} 3"#,
        r#"llm_failover_client_rejections_total{client="web",reason="bad_request"} 1"#,
        r#"llm_failover_client_rejections_total{client="batch",reason="forbidden"} 1"#,
        r#"llm_failover_client_rejections_total{client="ops",reason="forbidden"} 1"#,
    ] {
        assert!(scrape.contains(line), "missing {line} in\n{scrape}");
    }
    assert!(!scrape.contains("admin_actions_total"), "{scrape}");
    assert!(logs.contains("turned away"), "{logs}");
}

#[tokio::test]
async fn the_upstream_gets_the_providers_key_never_the_clients_unless_forwarding() {
    let sim = sim().await;
    let toml = format!(
        r#"
[providers.own]
base_url = "{url}"
api_key_env = "PROVIDER_KEY"
[providers.byok]
base_url = "{url}"
api_key_env = "PROVIDER_KEY"
forward_client_key = true

[routes.own]
targets = ["own/m-own"]
[routes.byok]
targets = ["byok/m-byok"]

[[clients]]
name = "web"
key_env = "WEB_KEY"
routes = ["*"]
"#,
        url = sim.base_url()
    );
    let config = Config::parse_with_env(&toml, "fwd.toml", env).unwrap();
    let p = start_config(&config).await;
    let http = reqwest::Client::new();
    for (route, header) in [("own", "authorization"), ("byok", "x-api-key")] {
        let value = if header == "authorization" {
            format!("Bearer {WEB_KEY}")
        } else {
            WEB_KEY.to_owned()
        };
        let resp = http
            .post(p.url("/v1/chat/completions"))
            .header(header, value)
            .json(&chat_body(route, false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{route}");
    }
    assert_eq!(
        sim.last_authorization("m-own").as_deref(),
        Some(format!("Bearer {PROVIDER_KEY}").as_str()),
        "a provider gets its own key"
    );
    assert_eq!(
        sim.last_authorization("m-byok").as_deref(),
        Some(format!("Bearer {WEB_KEY}").as_str()),
        "a provider with forward_client_key gets the caller's key"
    );
    p.stop().await.unwrap();
}

#[tokio::test]
async fn over_its_request_rate_a_client_gets_429_with_an_honest_retry_after() {
    let sim = sim().await;
    let p = start_config(&keyed(&sim, "requests_per_minute = 60")).await;
    let http = reqwest::Client::new();
    // A burst of a minute's worth is admitted (GET /v1/models counts too, and is cheap).
    for i in 0..60 {
        let resp = http
            .get(p.url("/v1/models"))
            .bearer_auth(WEB_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
    }
    let resp = p.chat_as(&http, WEB_KEY, "chat", false).await;
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, code, body) = answer(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limit_exceeded"),
        "{body}"
    );
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        sim.total_attempts(),
        0,
        "the 429 never reached the upstream"
    );
    // Other clients have their own budget.
    let other = p.chat_as(&http, BATCH_KEY, "chat", false).await;
    assert_eq!(other.status(), 200);
    // Honest: after Retry-After, the next request is admitted.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let resp = p.chat_as(&http, WEB_KEY, "chat", false).await;
    assert_eq!(resp.status(), 200);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn over_its_concurrent_requests_a_client_gets_429_until_a_stream_ends() {
    // Slow tokens keep the first stream in flight while the second request arrives.
    let sim = Sim::builder()
        .token_delay(Duration::from_millis(40))
        .start()
        .await
        .unwrap();
    let p = start_config(&keyed(&sim, "max_concurrent = 1")).await;
    let http = reqwest::Client::new();
    let send = async || p.chat_as(&http, WEB_KEY, "chat", true).await;
    let first = send().await;
    assert_eq!(first.status(), 200);
    let resp = send().await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let (status, code, body) = answer(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "concurrency_limit_exceeded"),
        "{body}"
    );
    assert_eq!(sim.attempts("m1"), 1, "the 429 never reached the upstream");
    // The slot is held until the stream's last event, then freed.
    let text = first.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let again = send().await;
    assert_eq!(again.status(), 200);
    again.text().await.unwrap();
    p.stop().await.unwrap();
}

#[test]
fn admin_actions_take_effect_at_once_and_are_counted() {
    let (scrape, logs) = crate::support::observed(|| async {
        let sim = sim().await;
        let p = start_config(&keyed(&sim, "")).await;
        let http = reqwest::Client::new();
        let act = async |path: &str, body: Value| {
            let resp = http
                .post(p.url(&format!("/v1/failover/breakers/{path}")))
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            answer(resp).await
        };
        let breaker = |status: &Value, provider: &str, model: &str| {
            status_breaker(status, provider, model).cloned().unwrap()
        };
        let status = || {
            json_of(
                http.get(p.url("/v1/failover/status"))
                    .bearer_auth(ADMIN_KEY),
            )
        };

        let (code, _, body) = act("a/m1", json!({"action": "force_open", "duration": "10m"})).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["changed"], true);
        assert_eq!(body["duration_s"], 600.0);
        assert_eq!(body["breaker"]["state"], "forced_open");
        assert!(body["breaker"]["open_until"].is_string(), "{body}");
        assert_eq!(breaker(&status().await, "a", "m1")["state"], "forced_open");
        // It holds: the route's only target is forced open, the upstream is not asked.
        let resp = p.chat_as(&http, WEB_KEY, "chat", false).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(sim.total_attempts(), 0);

        // The provider-wide breaker, and a model name after the provider.
        let (code, _, body) = act("a/*", json!({"action": "metrics_only"})).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(breaker(&status().await, "a", "*")["state"], "metrics_only");
        let (code, _, _) = act("a/m2", json!({"action": "disable"})).await;
        assert_eq!(code, 200);
        assert_eq!(breaker(&status().await, "a", "m2")["state"], "disabled");
        for path in ["a/m1", "a/*", "a/m2"] {
            let (code, _, body) = act(path, json!({"action": "reset"})).await;
            assert_eq!(code, 200, "{body}");
            assert_eq!(body["breaker"]["state"], "closed");
        }
        assert_eq!(breaker(&status().await, "a", "m1")["state"], "closed");

        // Mistakes: an unknown breaker, a bad duration, an unknown action, a reload without a file.
        let (code, err, _) = act("a/nope", json!({"action": "reset"})).await;
        assert_eq!((code, err.as_str()), (404, "breaker_not_found"));
        let (code, err, _) = act("a/m1", json!({"action": "force_open", "duration": "soon"})).await;
        assert_eq!((code, err.as_str()), (400, "invalid_duration"));
        let (code, err, _) = act("a/m1", json!({"action": "explode"})).await;
        assert_eq!((code, err.as_str()), (400, "invalid_action"));
        let resp = http
            .post(p.url("/v1/failover/reload"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        // This config was parsed from text, so there is no file to read again: rejected.
        let (code, err, body) = answer(resp).await;
        assert_eq!((code, err.as_str()), (422, "invalid_config"), "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot read config auth.toml"),
            "{body}"
        );
        p.stop().await.unwrap();
    });
    for line in [
        r#"llm_failover_admin_actions_total{action="force_open",outcome="ok"} 1"#,
        r#"llm_failover_admin_actions_total{action="metrics_only",outcome="ok"} 1"#,
        r#"llm_failover_admin_actions_total{action="disable",outcome="ok"} 1"#,
        r#"llm_failover_admin_actions_total{action="reset",outcome="ok"} 3"#,
        r#"llm_failover_admin_actions_total{action="reset",outcome="error"} 1"#,
        r#"llm_failover_admin_actions_total{action="force_open",outcome="error"} 1"#,
        r#"llm_failover_admin_actions_total{action="reload",outcome="error"} 1"#,
        r#"llm_failover_client_rejections_total{client="ops",reason="bad_request"} 1"#,
        // The state gauge moved with the actions and is back at closed.
        r#"llm_failover_breaker_state{provider="a",model="m1",state="closed"} 1"#,
        r#"llm_failover_breaker_transitions_total{provider="a",model="m1",from="closed",to="forced_open",reason="none"} 1"#,
    ] {
        assert!(scrape.contains(line), "missing {line} in\n{scrape}");
    }
    assert!(logs.contains("admin ops: force_open a/m1: ok"), "{logs}");
}

#[tokio::test]
async fn a_slow_client_is_cut_off_at_the_header_timeout_while_others_are_served() {
    let sim = sim().await;
    let toml = format!(
        "[server]\nheader_read_timeout = \"1s\"\nmax_header_bytes = 8192\n[providers.a]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"a/m\"]\n",
        sim.base_url()
    );
    let p = start_config(&Config::parse(&toml, "slow.toml").unwrap()).await;
    let mut slow = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    // Far longer than the timeout allows at one byte every 250 ms.
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nx-padding: {}\r\n\r\n",
        p.addr,
        "z".repeat(200)
    );
    let (mut reader, mut writer) = slow.split();
    let trickle = async {
        for b in request.bytes() {
            if writer.write_all(&[b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        true
    };
    let closed = async {
        let mut buf = [0_u8; 1024];
        // The server closes the connection: EOF or a reset.
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let others = async {
        let http = reqwest::Client::new();
        let resp = p.chat(&http, "chat", false).await;
        assert_eq!(resp.status(), 200, "another client is served meanwhile");
        // A request head over max_header_bytes is refused.
        let resp = http
            .get(p.url("/healthz"))
            .header("x-big", "b".repeat(20_000))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 431);
    };
    let cut = async {
        tokio::select! {
            // A failed write means the server closed the connection too.
            sent_all = trickle => assert!(!sent_all, "the slow client was not cut off"),
            () = closed => {}
        }
    };
    tokio::join!(cut, others);
    drop(slow);
    p.stop().await.unwrap();
}
