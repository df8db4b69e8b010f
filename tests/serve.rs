//! The `serve` and `check` commands as an operator runs them: the real binary, a config file,
//! signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use llm_failover::sim::{ANSWER, Sim};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_llm-failover");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/failover.toml");

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("llm-failover-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

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
    let path = temp_config(
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
    let path = temp_config(
        "serve.toml",
        &format!(
            "[providers.local]\nbase_url = \"http://{down}/v1\"\n[providers.sim]\nbase_url = \"{}\"\n[routes.chat]\ntargets = [\"local/llama3\", \"sim/gpt-4o-mini\"]\n",
            sim.base_url()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The address it bound, from its log line.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("API on http://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .map(str::to_owned)
        })
        .unwrap();
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
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
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let log = rest.join().unwrap().join("\n");
    assert!(log.contains("shutting down"), "{log}");
}
