//! Two proxy replicas sharing breaker state through a local Redis: one replica's trip takes
//! effect on the other before it sends a single request to the dead primary.
//!
//! Needs `redis-server` on the PATH (Debian: `apt-get install redis-server`):
//!
//! ```text
//! cargo run --example fleet --features redis
//! ```
#![expect(clippy::print_stdout, reason = "an example prints what happens")]

use std::process::{Command, Stdio};
use std::time::Duration;

use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::{Fault, Sim};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A throwaway Redis on a free loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // Its working folder, removed when `dir` drops: below, once Redis has stopped, or on an
    // early return.
    let dir = tempfile::Builder::new()
        .prefix("llm-failover-fleet-")
        .tempdir()?;
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()?;
    let url = format!("redis://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let result = run(&url, &client).await;
    let _ = redis.kill();
    let _ = redis.wait();
    drop(dir);
    result
}

async fn run(url: &str, http: &reqwest::Client) -> Result<(), Box<dyn std::error::Error>> {
    // The primary's model is gone (404: trips its breaker at once); the fallback answers.
    let primary = Sim::builder()
        .fault("llama3", Fault::Status(404))
        .start()
        .await?;
    let fallback = Sim::builder().start().await?;
    let toml = format!(
        r#"
[providers.local]
base_url = "{}"
[providers.cloud]
base_url = "{}"
[routes.chat]
targets = ["local/llama3", "cloud/gpt-4o-mini"]

[state]
backend = "redis"
url_env = "REDIS_URL"
namespace = "example"
"#,
        primary.base_url(),
        fallback.base_url()
    );
    let config = Config::parse_with_env(&toml, "fleet.toml", |v| {
        (v == "REDIS_URL").then(|| url.to_owned())
    })?;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let proxy = Proxy::new(&config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
        // Wait for Redis (bounded) so the replica starts with the fleet's state.
        let mut tries = 0;
        while !proxy.state().is_some_and(|s| s.is_up()) && tries < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tries += 1;
        }
        replicas.push((addr, proxy));
    }
    let ask = |addr: std::net::SocketAddr| {
        http.post(format!("http://{addr}/v1/chat/completions"))
            .json(&serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let r = ask(replicas[0].0).await?;
    println!(
        "replica 1: trail {:?}",
        r.headers()
            .get("x-failover-trail")
            .map(|v| v.to_str().unwrap_or_default())
    );
    let registry = replicas[1].1.registry();
    let breaker = registry.breaker("local", "llama3").ok_or("no breaker")?;
    let mut waited = 0;
    while breaker.state() != llm_failover::breaker::State::Open && waited < 500 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        waited += 1;
    }
    println!(
        "replica 2: local/llama3 is {} (learned from replica 1)",
        breaker.state()
    );
    let r = ask(replicas[1].0).await?;
    println!(
        "replica 2: trail {:?}",
        r.headers()
            .get("x-failover-trail")
            .map(|v| v.to_str().unwrap_or_default())
    );
    println!(
        "the primary saw {} request(s): replica 2 sent none",
        primary.attempts("llama3")
    );
    Ok(())
}
