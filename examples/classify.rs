//! Classifies a real failure (a refused connection on loopback) and a few provider answers.
//!
//! Run with `cargo run --example classify`.

#![expect(clippy::print_stdout, reason = "an example shows its results")]

use llm_failover::classify::{Signal, classify};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A port that nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    if let Err(err) = reqwest::Client::new().post(&url).send().await {
        let c = classify(&Signal::from_reqwest(&err));
        println!("refused connection  -> {} ({})", c.reason, c.matched);
    }

    let cases = [
        ("bare 502", Signal::new().status(502)),
        (
            "Anthropic 529",
            Signal::new().status(529).body(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
        ),
        (
            "429 + Retry-After",
            Signal::new().status(429).header("Retry-After", "2"),
        ),
        (
            "text status",
            Signal::new().message("Mistral API error (503): service temporarily unavailable"),
        ),
        (
            "an id, not a status",
            Signal::new().message("request id req-4291 failed"),
        ),
    ];
    for (name, signal) in cases {
        let c = classify(&signal);
        let wait = c
            .retry_after
            .map(|d| format!(", wait {d:?}"))
            .unwrap_or_default();
        println!("{name:<19} -> {}{wait} ({})", c.reason, c.matched);
    }
    Ok(())
}
