//! Live reload: the config file read again under load, by the endpoint, `ctl` and SIGHUP;
//! breakers carried over, removed routes gone, bad files rejected, and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use llm_failover::proxy::{Config, Proxy, Reloaded};
use llm_failover::sim::Sim;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::proxy::{Running, chat_body, start_config};
use crate::support::{
    Files, Served, get_json, json_of, post_chat, sha256_hex, sim, status_breaker,
};

/// Provider `a` (the load's target, `chat`) and provider `b` (`held`, whose breaker is forced
/// open); generation `n` adds route `extra{n}` and its own timeouts.
fn generation(sim: &Sim, n: u32) -> String {
    format!(
        r#"
[providers.a]
base_url = "{url}"
attempt_timeout = "{a}s"

[providers.b]
base_url = "{url}"

[routes.chat]
targets = ["a/m1"]
[routes.chat.policy]
ttft_timeout = "{t}s"

[routes.held]
targets = ["b/held"]

[routes.extra{n}]
targets = ["a/m{n}x"]
"#,
        url = sim.base_url(),
        a = 20 + n,
        t = 40 + n,
    )
}

/// Status and body (`null` if not JSON) of a POST of `body` to `url`.
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let resp = http.post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Reloads `proxy` from its file on a blocking thread (the read blocks).
async fn reload_file(proxy: &Proxy) -> Reloaded {
    let proxy = proxy.clone();
    tokio::task::spawn_blocking(move || proxy.reload())
        .await
        .unwrap()
        .unwrap()
}

/// Status and body of a non-streaming chat for `route`, posted to the proxy `p`.
async fn chat(http: &reqwest::Client, p: &Running, route: &str) -> (u16, Value) {
    post(
        http,
        &p.url("/v1/chat/completions"),
        &chat_body(route, false),
    )
    .await
}

/// Ten reloads that change routes and timeouts while four clients send requests without a
/// pause: every request is answered; the forced-open breaker stays open; a route removed by
/// a reload is a 404 afterwards; a bad file is rejected with file:line:field and the last good
/// configuration keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_request_and_keep_breaker_state() {
    let sim = sim().await;
    // Read again on every reload: kept to the end, after the proxy stops.
    let files = Files::new();
    let path = files.write("load.toml", &generation(&sim, 0));
    let p = start_config(&Config::from_file(&path).unwrap()).await;
    let http = reqwest::Client::new();
    let (status, body) = post(
        &http,
        &p.url("/v1/failover/breakers/b/held"),
        &json!({"action": "force_open"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The load: each client loops until told to stop, counting what it got.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (done_tx, done_rx) = watch::channel(0usize);
    let done_tx = Arc::new(done_tx);
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (http, url) = (http.clone(), p.url("/v1/chat/completions"));
        let (stop, failures, done_tx, served) = (
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&done_tx),
            Arc::clone(&served),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = post(&http, &url, &chat_body("chat", i % 2 == 0)).await;
                if status != 200 {
                    failures.lock().unwrap().push((status, body));
                }
                let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                done_tx.send_replace(n);
            }
        }));
    }
    let mut done = done_rx.clone();
    let reload = |http: reqwest::Client, url: String| async move {
        let resp = http.post(url).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap())
    };
    for n in 1..=10u32 {
        std::fs::write(&path, generation(&sim, n)).unwrap();
        let (status, body) = reload(http.clone(), p.url("/v1/failover/reload")).await;
        assert_eq!(status, 200, "reload {n}: {body}");
        assert_eq!(
            body["routes"],
            json!(["chat", format!("extra{n}"), "held"]),
            "{body}"
        );
        assert_eq!(
            body["breakers"]["removed"],
            json!([format!("a/m{}x", n - 1)])
        );
        assert_eq!(body["breakers"]["added"], json!([format!("a/m{n}x")]));
        assert_eq!(body["breakers"]["reset"], json!([]));
        // The new route serves at once, the one removed is gone.
        let (status, _) = chat(&http, &p, &format!("extra{n}")).await;
        assert_eq!(status, 200);
        let (status, body) = chat(&http, &p, &format!("extra{}", n - 1)).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "model_not_found");
        // Let the load run across each generation before the next reload.
        let seen = *done.borrow_and_update();
        done.wait_for(|&now| now >= seen + 4).await.unwrap();
    }

    // A bad file: rejected with the place of the mistake; the last good config serves on.
    std::fs::write(
        &path,
        generation(&sim, 11).replace("attempt_timeout = \"31s\"", "attempt_timeout = 31"),
    )
    .unwrap();
    let (status, body) = reload(http.clone(), p.url("/v1/failover/reload")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("load.toml:4:") && message.contains("providers.a.attempt_timeout"),
        "{message}"
    );
    assert!(
        message.contains("the running configuration stays"),
        "{message}"
    );
    let (status, _) = chat(&http, &p, "extra10").await;
    assert_eq!(status, 200, "the last good config serves");
    let seen = *done.borrow_and_update();
    done.wait_for(|&now| now >= seen + 4).await.unwrap();

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests failed across reloads: {failures:?}"
    );
    assert!(served.load(Ordering::Relaxed) >= 44);

    // The breaker forced open before the first reload is still the same breaker, still open.
    let status = get_json(&http, &p.url("/v1/failover/status")).await;
    let held = status_breaker(&status, "b", "held").unwrap();
    assert_eq!(held["state"], "forced_open", "{status}");
    let (status, _) = chat(&http, &p, "held").await;
    assert_eq!(status, 503);
    assert_eq!(sim.attempts("held"), 0);
    p.stop().await.unwrap();
}

/// A breaker tripped by failures stays open across a reload that keeps its policy; one whose
/// policy changed starts again closed. Per-client rate limits survive a reload when the key
/// and the limit are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_breaker_survives_and_a_changed_policy_resets() {
    // Nothing listens there: connections are refused.
    let dead_url = "http://127.0.0.1:9/v1";
    let sim = sim().await;
    let write = |threshold: u32, extra: &str| {
        format!(
            r#"
[providers.dead]
base_url = "{dead_url}"
[providers.dead.breaker]
consecutive_failures = 1
[providers.ok]
base_url = "{ok}"
[providers.ok.breaker]
consecutive_failures = {threshold}

[routes.chat]
targets = ["dead/m", "ok/m"]
{extra}
"#,
            ok = sim.base_url()
        )
    };
    let files = Files::new();
    let path = files.write("trip.toml", &write(5, ""));
    let p = start_config(&Config::from_file(&path).unwrap()).await;
    let http = reqwest::Client::new();
    let (status, _) = chat(&http, &p, "chat").await;
    assert_eq!(status, 200);
    let registry = p.proxy.registry();
    let opened = registry.breaker("dead", "*").unwrap().clone();
    assert_eq!(opened.state(), llm_failover::breaker::State::Open);
    p.proxy
        .registry()
        .control("ok", "m")
        .unwrap()
        .force_open(None);

    // `ok`'s breaker policy changes, `dead`'s does not.
    std::fs::write(&path, write(7, "[routes.other]\ntargets = [\"ok/n\"]\n")).unwrap();
    let done = reload_file(&p.proxy).await;
    assert_eq!(done.reset, ["ok/*", "ok/m"]);
    assert_eq!(done.added, ["ok/n"]);
    assert!(done.kept.contains(&"dead/*".to_owned()), "{done:?}");
    let registry = p.proxy.registry();
    let dead_wide = registry.breaker("dead", "*").unwrap();
    // The same breaker, in the same open state.
    assert!(registry.holds(&opened));
    assert_eq!(dead_wide.state(), llm_failover::breaker::State::Open);
    assert_eq!(
        dead_wide.snapshot().reason,
        Some(llm_failover::Reason::ConnectionRefused)
    );
    assert_eq!(
        registry.breaker("ok", "m").unwrap().state(),
        llm_failover::breaker::State::Closed
    );
    // Still open: the request goes straight to `ok`, which answers now.
    let resp = p.chat(&http, "chat", false).await;
    assert_eq!(resp.status(), 200);
    let trail = resp.headers()["x-failover-trail"].to_str().unwrap();
    assert!(trail.ends_with("ok/m=ok"), "{trail}");
    assert_eq!(sim.attempts("m"), 2);

    // A new `listen` applies only at the next start, and the reload says so.
    std::fs::write(
        &path,
        write(
            7,
            "[routes.other]\ntargets = [\"ok/n\"]\n[server]\nlisten = \"127.0.0.1:8081\"\n",
        ),
    )
    .unwrap();
    let done = reload_file(&p.proxy).await;
    assert_eq!(done.restart_required, ["server.listen"]);
    p.stop().await.unwrap();
}

/// The real binary reloads on SIGHUP and on the endpoint: a new route serves, a removed one's
/// breaker leaves the state gauge (all its series at 0), a bad file is logged with its
/// file:line:field error and the running config stays; the reloads are counted and the
/// success timestamp is exported from the start.
#[test]
fn serve_reloads_its_config_on_sighup_and_counts_reloads() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(sim());
    let config = |routes: &str| {
        format!(
            "[providers.sim]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"sim/m\"]\n{routes}",
            sim.base_url()
        )
    };
    // Made before the child (which reads it on every SIGHUP), so it is removed after it.
    let files = Files::new();
    let path = files.write(
        "hup.toml",
        &config("[routes.old]\ntargets = [\"sim/gone\"]\n"),
    );
    let mut served = Served::start(&path, &[]);
    let addr = served.addr.clone();
    let chat = |route: &str| {
        rt.block_on(async {
            post_chat(
                &reqwest::Client::new(),
                &format!("http://{addr}/v1/chat/completions"),
                route,
                false,
            )
            .await
            .status()
            .as_u16()
        })
    };
    assert_eq!(chat("added"), 404);
    assert_eq!(chat("old"), 200);
    let get = |path: &str| {
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    let stamp = |scrape: &str| -> f64 {
        scrape
            .lines()
            .find_map(|l| {
                l.strip_prefix("llm_failover_config_last_reload_success_timestamp_seconds ")
            })
            .unwrap_or_else(|| panic!("no timestamp in {scrape}"))
            .parse()
            .unwrap()
    };
    let started = stamp(&get("/metrics"));
    assert!(started > 1.6e9, "{started}");

    std::fs::write(&path, config("[routes.added]\ntargets = [\"sim/n\"]\n")).unwrap();
    served.signal("HUP");
    let line = served.wait_for("reloaded");
    assert!(line.contains("chat") && line.contains("added"), "{line}");
    assert_eq!(chat("added"), 200);
    assert_eq!(chat("old"), 404);
    // Through the endpoint too (no keys configured: anyone on loopback is the admin).
    let answer = rt.block_on(json_of(
        reqwest::Client::new().post(format!("http://{addr}/v1/failover/reload")),
    ));
    assert_eq!(answer["reloaded"], true, "{answer}");

    std::fs::write(&path, config("[routes.broken]\ntargets = [\"sim\"]\n")).unwrap();
    served.signal("HUP");
    let line = served.wait_for("reload rejected");
    assert!(
        line.contains("hup.toml:6:") && line.contains("routes.broken.targets"),
        "{line}"
    );
    assert_eq!(chat("added"), 200, "the running config stays");
    assert_eq!(chat("chat"), 200);

    let scrape = get("/metrics");
    for line in [
        r#"llm_failover_config_reloads_total{outcome="ok"} 2"#,
        r#"llm_failover_config_reloads_total{outcome="error"} 1"#,
        r#"llm_failover_admin_actions_total{action="reload",outcome="ok"} 1"#,
        r#"llm_failover_breaker_state{provider="sim",model="n",state="closed"} 1"#,
        r#"llm_failover_breaker_state{provider="sim",model="m",state="closed"} 1"#,
    ] {
        assert!(scrape.contains(line), "missing {line} in\n{scrape}");
    }
    let gone: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with(r#"llm_failover_breaker_state{provider="sim",model="gone""#))
        .collect();
    assert_eq!(gone.len(), 6, "{scrape}");
    assert!(gone.iter().all(|l| l.ends_with(" 0")), "{gone:?}");
    assert!(stamp(&scrape) >= started);

    served.signal("TERM");
    assert!(served.child.wait().unwrap().success());
}

/// A reload rejected because a key was written where its hash belongs, or for a typo next to a
/// hash, answers with the place of the mistake and never the key or the hash; a client whose
/// key is unchanged keeps its rate bucket across a good reload (its next request is still
/// over the limit), even though its name changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_errors_echo_no_key_and_client_limits_survive() {
    const CLIENT: &str = "sk-RELOAD-SENTINEL-3c1f9a77e2b04d58";
    const ADMIN: &str = "sk-RELOAD-ADMIN-SENTINEL-9e41b2c6d7a0f315";
    let sim = sim().await;
    let file = |client_name: &str, client_key: &str, extra: &str| {
        format!(
            "[providers.a]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"a/m\"]\n\
             [[clients]]\nname = \"{client_name}\"\nkey_sha256 = \"{client_key}\"\nroutes = [\"*\"]\n\
             requests_per_minute = 1\n{extra}[admin]\nname = \"ops\"\nkey_sha256 = \"{}\"\n",
            sim.base_url(),
            sha256_hex(ADMIN)
        )
    };
    let files = Files::new();
    let path = files.write("keys.toml", &file("web", &sha256_hex(CLIENT), ""));
    let p = start_config(&Config::from_file(&path).unwrap()).await;
    let http = reqwest::Client::new();
    let chat = || {
        http.post(p.url("/v1/chat/completions"))
            .bearer_auth(CLIENT)
            .json(&chat_body("chat", false))
            .send()
    };
    assert_eq!(chat().await.unwrap().status(), 200);
    assert_eq!(chat().await.unwrap().status(), 429);
    let reload = || {
        http.post(p.url("/v1/failover/reload"))
            .bearer_auth(ADMIN)
            .send()
    };

    let mut seen = Vec::new();
    for (bad, place) in [
        (
            file("web", CLIENT, ""),
            "keys.toml:7:14: clients.web.key_sha256",
        ),
        (
            file("web", &sha256_hex(CLIENT), "max_concurent = 2\n"),
            "clients",
        ),
    ] {
        std::fs::write(&path, bad).unwrap();
        let resp = reload().await.unwrap();
        assert_eq!(resp.status(), 422);
        let text = resp.text().await.unwrap();
        assert!(text.contains(place), "{text}");
        seen.push(text);
        seen.push(p.proxy.reload().unwrap_err().to_string());
    }
    for text in &seen {
        for secret in [
            CLIENT.to_owned(),
            ADMIN.to_owned(),
            sha256_hex(CLIENT),
            sha256_hex(ADMIN),
        ] {
            assert!(!text.contains(&secret), "{secret} in {text}");
        }
    }
    // The old config still serves, and the bucket is the same one.
    assert_eq!(chat().await.unwrap().status(), 429);
    std::fs::write(&path, file("web-renamed", &sha256_hex(CLIENT), "")).unwrap();
    assert_eq!(reload().await.unwrap().status(), 200);
    assert_eq!(
        chat().await.unwrap().status(),
        429,
        "the rate bucket carried over"
    );
    p.stop().await.unwrap();
}
