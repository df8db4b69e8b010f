//! Servers for the official-SDK check (`scripts/sdk/openai_sdk_check.py`, run by
//! `scripts/test.sh`): simulated providers and a real proxy in front of them, on loopback.
//!
//! ```text
//! cargo run --example sdk_fixture        # prints http://127.0.0.1:PORT/v1
//! ```
//!
//! It prints two lines on stdout, the proxy's base URL (for an SDK's `base_url`) and the URL
//! of the fixture's own status endpoint, then serves until its stdin closes or it is killed.
//! `GET {status}/attempts` answers `{"failing": N}`: the requests the simulated provider
//! behind the `failing` route has received so far (a client compares it before and after a
//! call to see how many upstream attempts the call cost). The routes (the model names a
//! client asks for):
//!
//! | route | targets | what a client sees |
//! |---|---|---|
//! | `chat` | `down/llama3` (refuses connections) → `sim/gpt-4o-mini` | the sim's answer, after a failover |
//! | `context` | `sim/sim-context` | 400 as the upstream sent it: `context_length_exceeded` |
//! | `filter` | `sim/sim-filter` | 400 as the upstream sent it: `content_filter` |
//! | `overloaded` | `sim/sim-503` | 503 from the proxy: `overloaded`, with `failover` details |
//! | `dead` | `gone/llama3` (refuses connections) | 502 from the proxy: `connection_refused` |
//! | `limited` | `sim/sim-429` | 429 from the proxy: `rate_limit`, with `failover` details |
//! | `cut` | `sim/sim-cut-3` | a stream that breaks after three tokens: an `error` event, no `[DONE]` |
//! | `failing` | `failing/sim-500` → `failing/sim-503` | 503 from the proxy after the chain's attempts, with `x-should-retry: false` |
//! | `resumed` | `sim/sim-cut-3` → `sim/gpt-4o-mini` (stream resume) | a stream cut after three tokens, finished by the second target: one whole answer |
//!
//! For `POST /v1/embeddings` (the same script; the sim's vectors have
//! [`DEFAULT_DIMENSIONS`](llm_failover::sim::DEFAULT_DIMENSIONS) floats and depend only on the
//! input's text):
//!
//! | route | targets | what a client sees |
//! |---|---|---|
//! | `embed` | `sim/text-embedding-3-small` | one vector per input, in order, with usage; floats or base64 |
//! | `embed_failover` | `down/text-embedding-3-small` (refuses connections) → `sim/text-embedding-3-small` | the same vectors, after a failover between hosts of one model |
//! | `embed_mixed` | `sim/text-embedding-3-small` → `sim/nomic-embed-text` | 400 `route_not_embeddable`: two models' vectors cannot be compared (chat still works) |
//! | `embed_limited` | `sim/sim-429` | 429 from the proxy: `rate_limit`, with `failover` details |
//!
//! For `POST /v1/responses` (the same script's `check_responses`; `resp` is the same sim
//! spoken to in the Responses API):
//!
//! | route | targets | what a client sees |
//! |---|---|---|
//! | `responses` | `resp/gpt-4o-mini` | the sim's answer, natively, streamed or not |
//! | `responses_tool` | `resp/sim-tool` | a `function_call` item, then a text answer to its `function_call_output` |
//! | `responses_failover` | `resp/sim-503` → `resp/gpt-4o-mini` | the sim's answer after a failover |
//! | `responses_to_chat` | `sim/gpt-4o-mini` | the chat API target's answer, translated |
//! | `responses_to_claude` | `claude/claude-sonnet` | the Anthropic target's answer, translated |
//! | `responses_to_chat_tool` | `sim/sim-tool` | a tool call through a chat API target, translated |
//! | `responses_overloaded` | `resp/sim-503` | 503 from the proxy: `overloaded`, with `failover` details |
//! | `responses_limited` | `resp/sim-429` | 429 from the proxy: `rate_limit`, with `failover` details |
//! | `responses_cut` | `resp/sim-cut-3` | a stream that breaks after three tokens: an `error` event, no `response.completed` |
//!
//! And for Anthropic's SDK (`scripts/sdk/anthropic_sdk_check.py`, `POST /v1/messages`;
//! `claude` is the same sim spoken to in Anthropic's API):
//!
//! | route | targets | what a client sees |
//! |---|---|---|
//! | `claude` | `claude/claude-sonnet` | the sim's answer, natively |
//! | `claude_to_openai` | `claude/sim-529` → `sim/gpt-4o-mini` | the OpenAI-compatible target's answer, translated |
//! | `openai_to_claude` | `sim/sim-503` → `claude/claude-sonnet` | the Anthropic target's answer after a failover |
//! | `claude_overloaded` | `claude/sim-529` | 529 `overloaded_error` |
//! | `claude_limited` | `claude/sim-429-retry-2` | 429 `rate_limit_error` with `retry-after` |
//! | `claude_invalid` | `claude/sim-400` | 400: the upstream's own `invalid_request_error` |
//! | `claude_cut` | `claude/sim-cut-3` | a stream that breaks after three deltas: `event: error` |
//! | `claude_tool` / `translated_tool` | `claude/sim-tool` / `sim/sim-tool` | a tool call, natively / translated |
//! | `claude_resumed` | `claude/sim-cut-3` → `claude/claude-sonnet` (stream resume) | a stream cut after three deltas, finished by the second target: one whole message |
//!
//! `POST /v1/messages/count_tokens` (the same script's `check_count_tokens`): on `claude`, the
//! sim's count, the `usage.input_tokens` of a message to the same messages; on `chat`, whose
//! targets all speak OpenAI's API, a 400 `invalid_request_error` saying that no target can
//! count tokens.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use llm_failover::proxy::{Config, Proxy};
use llm_failover::sim::Sim;
use tokio::io::AsyncReadExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Sim::builder().token_delay(Duration::ZERO).start().await?;
    // Two hosts that are powered off: every connection is refused.
    let down = Sim::builder()
        .down_for(Duration::from_secs(24 * 3600))
        .start()
        .await?;
    let gone = Sim::builder()
        .down_for(Duration::from_secs(24 * 3600))
        .start()
        .await?;
    // The provider behind `failing`, alone so its request count is the route's.
    let failing = Arc::new(Sim::builder().token_delay(Duration::ZERO).start().await?);
    let toml = format!(
        r#"
[server]
shutdown_grace = "1s"

# The checks break streams on purpose, on routes each check expects to stream: broken streams
# do not count against the breakers here, so the checks can run in any number and order.
[breaker.reasons.stream_interrupted]
effect = "ignore"

[route]
attempt_timeout = "5s"
ttft_timeout = "5s"
idle_timeout = "2s"
total_deadline = "15s"

[providers.sim]
base_url = "{sim}"
# The sim continues an assistant prefill, as Anthropic, llama.cpp and Ollama do.
prefill = "assistant"
# The same sim, spoken to in Anthropic's Messages API.
[providers.claude]
api = "anthropic-messages"
base_url = "{sim}"
# The same sim, spoken to in OpenAI's Responses API (POST {sim}/responses).
[providers.resp]
api = "openai-responses"
base_url = "{sim}"
[providers.down]
base_url = "{down}"
connect_timeout = "1s"
[providers.gone]
base_url = "{gone}"
connect_timeout = "1s"
[providers.failing]
base_url = "{failing}"

[routes.chat]
targets = ["down/llama3", "sim/gpt-4o-mini"]
[routes.context]
targets = ["sim/sim-context"]
[routes.filter]
targets = ["sim/sim-filter"]
[routes.overloaded]
targets = ["sim/sim-503"]
[routes.dead]
targets = ["gone/llama3"]
[routes.limited]
targets = ["sim/sim-429"]
[routes.cut]
targets = ["sim/sim-cut-3"]
[routes.failing]
targets = ["failing/sim-500", "failing/sim-503"]
[routes.resumed]
targets = ["sim/sim-cut-3", "sim/gpt-4o-mini"]
[routes.resumed.policy]
stream_resume = true

# For the embeddings checks of scripts/sdk/openai_sdk_check.py (POST /v1/embeddings):
[routes.embed]
targets = ["sim/text-embedding-3-small"]
[routes.embed_failover]
targets = ["down/text-embedding-3-small", "sim/text-embedding-3-small"]
[routes.embed_mixed]
targets = ["sim/text-embedding-3-small", "sim/nomic-embed-text"]
[routes.embed_limited]
targets = ["sim/sim-429"]

# For scripts/sdk/anthropic_sdk_check.py (POST /v1/messages):
[routes.claude]
targets = ["claude/claude-sonnet"]
[routes.claude_to_openai]
targets = ["claude/sim-529", "sim/gpt-4o-mini"]
[routes.openai_to_claude]
targets = ["sim/sim-503", "claude/claude-sonnet"]
[routes.claude_overloaded]
targets = ["claude/sim-529"]
[routes.claude_limited]
targets = ["claude/sim-429-retry-2"]
[routes.claude_invalid]
targets = ["claude/sim-400"]
[routes.claude_cut]
targets = ["claude/sim-cut-3"]
[routes.claude_tool]
targets = ["claude/sim-tool"]
[routes.translated_tool]
targets = ["sim/sim-tool"]
[routes.claude_resumed]
targets = ["claude/sim-cut-3", "claude/claude-sonnet"]
[routes.claude_resumed.policy]
stream_resume = true

# For check_responses in scripts/sdk/openai_sdk_check.py (POST /v1/responses):
[routes.responses]
targets = ["resp/gpt-4o-mini"]
[routes.responses_tool]
targets = ["resp/sim-tool"]
[routes.responses_failover]
targets = ["resp/sim-503", "resp/gpt-4o-mini"]
[routes.responses_to_chat]
targets = ["sim/gpt-4o-mini"]
[routes.responses_to_claude]
targets = ["claude/claude-sonnet"]
[routes.responses_to_chat_tool]
targets = ["sim/sim-tool"]
[routes.responses_overloaded]
targets = ["resp/sim-503"]
[routes.responses_limited]
targets = ["resp/sim-429"]
[routes.responses_cut]
targets = ["resp/sim-cut-3"]
"#,
        sim = sim.base_url(),
        down = down.base_url(),
        gone = gone.base_url(),
        failing = failing.base_url(),
    );
    let config = Config::parse(&toml, "sdk_fixture.toml")?;
    let proxy = Proxy::new(&config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(proxy.serve(listener, std::future::pending()));

    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let status_addr = status.local_addr()?;
    let app = axum::Router::new().route(
        "/attempts",
        axum::routing::get(move || {
            let failing = Arc::clone(&failing);
            async move { axum::Json(serde_json::json!({"failing": failing.total_attempts()})) }
        }),
    );
    let status_server = tokio::spawn(async move { axum::serve(status, app).await });

    // Both lines in one write: a reader that sees the file non-empty sees both.
    let mut out = std::io::stdout().lock();
    out.write_all(format!("http://{addr}/v1\nhttp://{status_addr}\n").as_bytes())?;
    out.flush()?;
    drop(out);

    // Serve until stdin reaches its end (the caller closed it or exited), or the server fails.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0_u8; 256];
    let wait_for_eof = async { while stdin.read(&mut buf).await.unwrap_or(0) > 0 {} };
    tokio::select! {
        () = wait_for_eof => Ok(()),
        served = server => Ok(served??),
        served = status_server => Ok(served??),
    }
}
