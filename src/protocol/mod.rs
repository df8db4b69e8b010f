//! The wire protocols: one module per API that a provider or a client speaks.
//!
//! The failover chain ([`chain`](crate::chain)) knows no protocol: an attempt is any future
//! that ends in a value or an [`AttemptFailure`](crate::chain::AttemptFailure), and a stream is
//! any stream of [`Chunk`](crate::chain::Chunk)s. What a protocol adds lives here, one folder
//! each:
//!
//! * [`openai_chat`]: OpenAI-compatible chat completions (OpenAI, OpenRouter, Groq, Together,
//!   Mistral, vLLM, llama.cpp, Ollama's `/v1`, ...);
//!
//! Each protocol module has the same parts: an `Endpoint` (one provider's base URL, key and
//! what it supports), a `Client` whose calls turn every way a provider fails into a
//! classified failure (transport errors, error statuses and bodies, a 2xx without content, a
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

pub mod openai_chat;

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
}

impl Api {
    /// Every API, in declaration order.
    pub const ALL: [Api; 1] = [Api::OpenAiChat];

    /// The configuration name: `openai-chat`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAiChat => "openai-chat",
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
