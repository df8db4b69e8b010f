//! The wire protocols: one module per API that a provider or a client speaks.
//!
//! The failover chain ([`chain`](crate::chain)) knows no protocol: an attempt is any future
//! that ends in a value or an [`AttemptFailure`](crate::chain::AttemptFailure), and a stream is
//! any stream of [`Chunk`](crate::chain::Chunk)s. What a protocol adds lives here, one folder
//! each:
//!
//! * [`openai_chat`]: OpenAI-compatible chat completions (OpenAI, OpenRouter, Groq, Together,
//!   Mistral, vLLM, llama.cpp, Ollama's `/v1`, ...);
//! * [`anthropic_messages`]: Anthropic's Messages API (Anthropic, and Claude-compatible hosts);
//! * [`openai_responses`]: OpenAI's Responses API (OpenAI, Azure OpenAI, OpenRouter, ...);
//! * [`openai_embeddings`]: OpenAI embeddings, on any OpenAI-compatible provider (no stream,
//!   no translation: vectors of two models cannot be compared).
//!
//! What they share is beside them: the [`Endpoint`] (one provider's base URL, [`Api`], key
//! and prefill support) and the [`Client`] (one HTTP client; each protocol adds its calls).
//!
//! Each protocol module has the same parts: calls on the [`Client`] that turn every way a
//! provider fails into a classified failure (transport errors, error statuses and bodies, a 2xx without content, a
//! body cut short, an error event inside a stream), a stream type that groups the upstream's
//! events so that the chain commits on the first *token*, and a resume (continuing a broken
//! stream from an assistant prefill).
//!
//! # Adding a protocol
//!
//! A new API is one new folder here with those parts, a variant of [`Api`], and one line in
//! the proxy's endpoint table (`proxy::handlers`).
//!
//! [`Api`] names the protocols in configuration (`[providers.NAME] api = "..."`).
//!
#![doc = include_str!("../../docs/translation.md")]

pub mod anthropic_messages;
mod endpoint;
pub mod openai_chat;
pub mod openai_embeddings;
pub mod openai_responses;
mod prefix;
mod sse;
pub mod translate;
mod usage;

pub use self::endpoint::{ANTHROPIC_VERSION, Client, Endpoint};
pub use self::usage::usage;

/// The wire API a provider speaks, as configured by `[providers.NAME] api`.
///
/// ```
/// use llm_failover::protocol::Api;
///
/// assert_eq!("openai-chat".parse::<Api>(), Ok(Api::OpenAiChat));
/// assert_eq!(Api::default().as_str(), "openai-chat");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Api {
    /// OpenAI chat completions (`POST {base_url}/chat/completions`, `Authorization: Bearer`).
    #[default]
    OpenAiChat,
    /// Anthropic Messages (`POST {base_url}/messages`, `x-api-key`, `anthropic-version`).
    AnthropicMessages,
    /// OpenAI Responses (`POST {base_url}/responses`, `Authorization: Bearer`).
    OpenAiResponses,
}

impl Api {
    /// Every API, in declaration order.
    pub const ALL: [Api; 3] = [
        Api::OpenAiChat,
        Api::AnthropicMessages,
        Api::OpenAiResponses,
    ];

    /// The configuration name: `openai-chat`, `anthropic-messages` or `openai-responses`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAiChat => "openai-chat",
            Api::AnthropicMessages => "anthropic-messages",
            Api::OpenAiResponses => "openai-responses",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Api {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Api::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Api::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown api {s:?}; use one of: {}", names.join(", "))
            })
    }
}

/// A request's tokens, estimated before it is sent: the `prompt` fields as JSON over 4 bytes
/// a token, plus the first of the `limit` fields that is a number (the most it may answer).
fn estimate(request: &serde_json::Value, prompt: &[&str], limit: &[&str]) -> u64 {
    /// Counts the bytes written to it.
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut bytes = Count(0);
    for key in prompt {
        if let Some(v) = request.get(*key) {
            // Writing to a counter cannot fail.
            let _ = serde_json::to_writer(&mut bytes, v);
        }
    }
    let completion = limit
        .iter()
        .find_map(|k| request.get(*k).and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    bytes.0 / 4 + completion
}
