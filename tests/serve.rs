//! The `serve` and `check` commands as an operator runs them: the real binary, a config file,
//! signals.

use std::process::Command;

use llm_failover::sim::{ANSWER, Sim};
use serde_json::{Value, json};

use crate::support::{Files, Served};

const BIN: &str = env!("CARGO_BIN_EXE_llm-failover");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/failover.toml");

#[test]
fn check_accepts_the_example_on_a_bare_machine_with_a_warning() {
    let out = Command::new(BIN)
        .args(["check", "--config", EXAMPLE])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(stderr.contains("providers.openai.api_key_env"), "{stderr}");
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
    assert!(stderr.contains("ok (2 routes"), "{stderr}");
}

#[test]
fn serve_refuses_to_start_without_a_configured_key() {
    let out = Command::new(BIN)
        .args(["serve", "--config", EXAMPLE, "--listen", "127.0.0.1:0"])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("failover.toml:"), "{stderr}");
    assert!(stderr.contains("providers.openai.api_key_env"), "{stderr}");
}

#[test]
fn a_bad_config_is_rejected_with_file_line_and_field() {
    let files = Files::new();
    let path = files.write(
        "bad.toml",
        "[providers.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[routes.chat]\ntargets = [\"a/m\"]\n[routes.chat.policy]\nattempt_timout = \"5s\"\n",
    );
    for cmd in ["check", "serve"] {
        let out = Command::new(BIN)
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains("bad.toml:7:1: routes.chat.policy.attempt_timout: unknown field"),
            "{cmd}: {stderr}"
        );
    }
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/failover.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/failover.toml"));
}

/// `serve` in a child process: it answers through the route, exports metrics on /metrics, and
/// exits cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_exports_metrics_and_stops_on_sigterm() {
    let sim = Sim::builder().start().await.unwrap();
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let files = Files::new();
    let path = files.write(
        "serve.toml",
        &format!(
            "[providers.local]\nbase_url = \"http://{down}/v1\"\n[providers.sim]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"local/llama3\", \"sim/gpt-4o-mini\"]\n",
            sim.base_url()
        ),
    );
    let mut served = Served::start(&path, &[]);
    let addr = served.addr.clone();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-failover-trail"],
        "local/llama3=connection_refused; sim/gpt-4o-mini=ok"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    let scrape = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"llm_failover_requests_total{route="chat",outcome="ok"} 1"#,
        r#"llm_failover_failovers_total{route="chat",from_provider="local",to_provider="sim",reason="connection_refused"} 1"#,
        r#"llm_failover_breaker_state{provider="local",model="*",state="closed"} 1"#,
    ] {
        assert!(scrape.contains(line), "missing {line} in\n{scrape}");
    }
    let log = served.stop();
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn a_non_loopback_listen_without_client_keys_refuses_to_start() {
    let files = Files::new();
    let path = files.write(
        "open.toml",
        "[providers.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.chat]\ntargets = [\"a/m\"]\n",
    );
    // Refused before anything is bound.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in [
        "refusing to serve on 0.0.0.0:0 without client keys",
        "[[clients]]",
        "key_env",
        "key_sha256",
        "allow_unauthenticated = true",
    ] {
        assert!(stderr.contains(part), "missing {part:?} in {stderr}");
    }
    // `check` says so too, for the configured address.
    let path = files.write(
        "open-check.toml",
        "[server]\nlisten = \"0.0.0.0:8080\"\n[providers.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.chat]\ntargets = [\"a/m\"]\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("warning: serve will refuse this config: refusing to serve on 0.0.0.0:8080"),
        "{stderr}"
    );
}

/// With `allow_unauthenticated = true` it starts on a non-loopback address and warns. (The
/// one test that binds the wildcard address, on a port the OS picks, for a moment: starting
/// there is what it tests. Its only upstream is a sim on loopback.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unauthenticated_starts_on_a_non_loopback_address_and_warns() {
    let sim = Sim::builder().start().await.unwrap();
    let files = Files::new();
    let path = files.write(
        "allowed.toml",
        &format!(
            "[server]\nallow_unauthenticated = true\n[providers.sim]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"sim/m\"]\n",
            sim.base_url()
        ),
    );
    let mut served = Served::start_on(&path, "0.0.0.0:0", &[]);
    let port = served.addr.rsplit(':').next().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log = served.stop();
    assert!(
        log.contains("WARN") && log.contains("without client keys (allow_unauthenticated = true)"),
        "{log}"
    );
}

/// `ctl` against a running proxy: status, force-open, reset, reload; the admin key from the
/// environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_steers_a_running_proxy_with_the_admin_key_from_the_environment() {
    const ADMIN: &str = "ctl-admin-key-5555";
    let sim = Sim::builder().start().await.unwrap();
    let files = Files::new();
    let path = files.write(
        "ctl.toml",
        &format!(
            "[providers.sim]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"sim/gpt-4o-mini\"]\n[admin]\nname = \"ops\"\nkey_env = \"CTL_TEST_ADMIN_KEY\"\n",
            sim.base_url()
        ),
    );
    let mut served = Served::start(&path, &[("CTL_TEST_ADMIN_KEY", ADMIN)]);
    let url = format!("http://{}", served.addr);
    let ctl = |args: &[&str], key: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("ctl").args(args).env("LLM_FAILOVER_URL", &url);
        match key {
            Some(k) => cmd.env("LLM_FAILOVER_ADMIN_KEY", k),
            None => cmd.env_remove("LLM_FAILOVER_ADMIN_KEY"),
        };
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = ctl(&["status"], None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("export LLM_FAILOVER_ADMIN_KEY"),
        "{stderr}"
    );

    let (code, stdout, stderr) = ctl(&["status"], Some(ADMIN));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("BREAKER"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("sim/gpt-4o-mini") && l.contains("closed")),
        "{stdout}"
    );

    let (code, stdout, stderr) = ctl(
        &["force-open", "sim", "gpt-4o-mini", "--duration", "10m"],
        Some(ADMIN),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("force_open sim/gpt-4o-mini: now forced_open until "),
        "{stdout}"
    );
    let (_, stdout, _) = ctl(&["status", "--json"], Some(ADMIN));
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        status["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["model"] == "gpt-4o-mini" && b["state"] == "forced_open"),
        "{status}"
    );
    // The forced-open breaker holds: the request is not sent upstream.
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(sim.total_attempts(), 0);

    let (code, stdout, stderr) = ctl(&["reset", "sim", "gpt-4o-mini"], Some(ADMIN));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "reset sim/gpt-4o-mini: now closed");
    let (code, stdout, stderr) = ctl(&["force-open", "sim", "*"], Some(ADMIN));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("force_open sim/*: now forced_open"),
        "{stdout}"
    );
    // A reload re-reads the unchanged file: both breakers carry over, the forced one holds.
    let (code, stdout, stderr) = ctl(&["reload"], Some(ADMIN));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "reloaded: routes chat; breakers kept 2, added 0, removed 0, reset 0"
    );
    let (_, stdout, _) = ctl(&["status"], Some(ADMIN));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("sim/*") && l.contains("forced_open")),
        "{stdout}"
    );
    let (code, _, stderr) = ctl(&["reset", "sim", "*"], Some("not-the-admin-key"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");

    let log = served.stop();
    assert!(
        log.contains("admin ops: force_open sim/gpt-4o-mini: ok"),
        "{log}"
    );
    assert!(!log.contains(ADMIN), "the admin key was logged");
}
