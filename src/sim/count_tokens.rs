//! `POST /v1/messages/count_tokens`: Anthropic's token counting, read as a Messages request
//! without `max_tokens` ([`Purpose::Count`]) and answered `{"input_tokens": N}`, N the
//! prompt's size that a message's `usage.input_tokens` reports. Errors, the `request-id`
//! header and the faults that fail a request are the Messages endpoint's; nothing is
//! generated, so the faults of an answer's delivery do not apply.

use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::messages::{Messages, Purpose, anthropic_error, read};
use super::respond::{Answer, Ask, Events, Failure, Wire};

/// The token counting protocol.
#[derive(Debug)]
pub(super) struct CountTokens;

impl Wire for CountTokens {
    fn events(&self) -> Option<&dyn Events> {
        None
    }

    fn generates(&self) -> bool {
        false
    }

    fn parse(body: &[u8]) -> Result<(Self, Ask), String> {
        Ok((CountTokens, read(body, Purpose::Count)?))
    }

    fn failure(failure: &Failure, model: &str) -> Response {
        Messages::failure(failure, model)
    }

    fn stamp(id: u64, headers: &mut HeaderMap) {
        Messages::stamp(id, headers);
    }

    fn body(&self, answer: &Answer) -> Value {
        json!({"input_tokens": answer.prompt_tokens})
    }

    /// Never sent (a count generates nothing, see [`Wire::generates`]); Anthropic's
    /// overloaded error, should it be.
    fn error_body(&self, _answer: &Answer) -> Value {
        anthropic_error("overloaded_error", "Overloaded")
    }
}
