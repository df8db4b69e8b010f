//! Anthropic's token counting (`POST {base_url}/messages/count_tokens`): the input tokens a
//! Messages request would use, counted by the provider, without generating anything.
//!
//! The request is a Messages request without `max_tokens` (`model`, `messages`, `system`,
//! `tools`, `tool_choice`, `thinking`), sent as a Messages call is (the key as `x-api-key`,
//! the client's `anthropic-version` and `anthropic-beta`) with `model` set and no `stream`.
//! Its failures are classified as a Messages call's; a 2xx without an integer
//! `input_tokens` is `empty_response`. Only Anthropic Messages providers count tokens: the
//! other protocols have no such endpoint, and an attempt on one of them fails as
//! [`ineligible`](AttemptFailure::ineligible), having sent nothing.

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::anthropic_headers;
use crate::Reason;
use crate::chain::AttemptFailure;
use crate::protocol::Api;
use crate::protocol::endpoint::{Client, Endpoint, read_answer};

/// The path of token counting, after the endpoint's base URL.
const COUNT_TOKENS_PATH: &str = "/messages/count_tokens";

/// The provider speaks a protocol without token counting.
#[derive(Debug, thiserror::Error)]
#[error(
    "{api} has no token counting; only a provider that speaks anthropic-messages can answer POST /v1/messages/count_tokens"
)]
pub struct NoTokenCounting {
    api: Api,
}

impl Client {
    /// Counts the input tokens of the Messages `request` (`messages`, `system`, `tools`, ...)
    /// for the target's `model`: the upstream's answer, `{"input_tokens": N}`. Of `headers`
    /// (the client's), `anthropic-version` and `anthropic-beta` are sent on; nothing else.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use llm_failover::protocol::{Api, Client, Endpoint};
    ///
    /// let client = Client::new()?;
    /// let claude = Endpoint::new("anthropic", "https://api.anthropic.com/v1")
    ///     .api(Api::AnthropicMessages)
    ///     .api_key(std::env::var("ANTHROPIC_API_KEY")?);
    /// let request = serde_json::json!({"messages": [{"role": "user", "content": "Hi"}]});
    /// let headers = reqwest::header::HeaderMap::new();
    /// let count = client
    ///     .count_tokens(&claude, "claude-sonnet-4-5", &request, &headers)
    ///     .await?;
    /// println!("{} input tokens", count["input_tokens"]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] for every way the call can fail, classified as a Messages call's
    /// (see the [module docs](super)); ineligible for an endpoint of another [`Api`].
    pub async fn count_tokens(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
        headers: &HeaderMap,
    ) -> Result<Value, AttemptFailure> {
        match endpoint.api_kind() {
            Api::AnthropicMessages => {}
            api @ (Api::OpenAiChat | Api::OpenAiResponses) => {
                return Err(AttemptFailure::ineligible(NoTokenCounting { api }));
            }
        }
        let resp = self
            .send_model(
                endpoint,
                COUNT_TOKENS_PATH,
                (model, None),
                request,
                anthropic_headers(headers),
            )
            .await?;
        let (status, body, answer) = read_answer(resp).await?;
        if answer["type"] == "error" {
            return Err(self.error_in(endpoint, status, &body));
        }
        if answer["input_tokens"].as_u64().is_none() {
            return Err(AttemptFailure::new(Reason::EmptyResponse).with_status(status));
        }
        Ok(answer)
    }
}
