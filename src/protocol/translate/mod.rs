//! Translation between OpenAI chat completions, Anthropic Messages and OpenAI Responses, on
//! JSON values.
//!
//! A route may mix targets that speak different APIs: a client of `/v1/chat/completions`
//! may be served by an Anthropic target and a client of `/v1/messages` by an
//! OpenAI-compatible one. This module carries requests, answers and streams across, as pure
//! functions ([`chat_request_to_messages`], [`messages_request_to_chat`],
//! [`messages_answer_to_chat`], [`chat_answer_to_messages`]) and two stateful stream
//! translators ([`MessagesToChat`], [`ChatToMessages`]). It does no I/O: the proxy reads and
//! writes the bodies and events.
//!
//! OpenAI's Responses API is translated to and from chat completions the same way
//! ([`responses_request_to_chat`], [`chat_request_to_responses`], [`responses_answer_to_chat`],
//! [`chat_answer_to_responses`], [`ResponsesToChat`], [`ChatToResponses`]); a Responses
//! request reaches an Anthropic target through chat. A request that depends on state kept by
//! the provider ([`stateful`]) is never translated.
//!
//! The rule is that a translation never changes what the client asked for. What only
//! optimises or shapes sampling (`cache_control`, `top_k`, `seed`, penalties) is dropped;
//! what would change the answer (a second choice, a JSON schema, log probabilities, extended
//! thinking, server tools, documents) makes the request [`Untranslatable`], and the proxy
//! skips that target, naming the feature in the trail. Translating a request never panics,
//! nor does translating an answer or an event, whatever the input: values of the wrong type
//! are treated as absent.
//!
//! The table of what is translated, dropped or makes a target ineligible is
//! `docs/translation.md`, shown in the [`protocol`](super) module docs.

use serde_json::{Value, json};

mod answer;
mod chat;
mod request;
mod responses;
mod stream;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

pub use self::answer::{chat_answer_to_messages, messages_answer_to_chat};
pub use self::request::{chat_request_to_messages, messages_request_to_chat};
pub use self::responses::{
    ChatToResponses, ResponsesToChat, chat_answer_to_responses, chat_request_to_responses,
    responses_answer_to_chat, responses_request_to_chat, stateful,
};
pub use self::stream::{ChatToMessages, Event, MessagesToChat};

/// The API named in [`Untranslatable::target`](Untranslatable::target) for an OpenAI chat target.
pub(crate) const OPENAI_CHAT: &str = "OpenAI chat completions";
/// The API named in [`Untranslatable::target`] for an Anthropic target.
pub(crate) const ANTHROPIC: &str = "Anthropic Messages";
/// The API named in [`Untranslatable::target`] for an OpenAI Responses target.
pub(crate) const RESPONSES: &str = "OpenAI Responses";

/// Why a request cannot be carried to the other protocol without changing its meaning.
///
/// The proxy skips the target and puts the message in the trail.
///
/// ```
/// use llm_failover::protocol::translate::chat_request_to_messages;
///
/// let two_choices = serde_json::json!({
///     "messages": [{"role": "user", "content": "hi"}],
///     "n": 2,
/// });
/// let err = chat_request_to_messages(&two_choices).unwrap_err();
/// assert_eq!(err.feature(), "n");
/// assert_eq!(err.target(), "Anthropic Messages");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{feature} has no equivalent in {target}: {why}")]
pub struct Untranslatable {
    /// The request's feature, as the client named it (`n`, `response_format`, `thinking`...).
    pub(crate) feature: &'static str,
    /// The API that lacks it ([`OPENAI_CHAT`], [`ANTHROPIC`] or [`RESPONSES`]).
    pub(crate) target: &'static str,
    /// What the translation would have changed.
    pub(crate) why: String,
}

impl Untranslatable {
    /// The request's feature, as the client named it (`n`, `response_format`, `thinking`...).
    #[must_use]
    pub fn feature(&self) -> &'static str {
        self.feature
    }

    /// The API that lacks it: `"OpenAI chat completions"`, `"Anthropic Messages"` or
    /// `"OpenAI Responses"`.
    #[must_use]
    pub fn target(&self) -> &'static str {
        self.target
    }

    /// A request that `target` cannot carry.
    #[cold]
    fn new(target: &'static str, feature: &'static str, why: impl Into<String>) -> Self {
        Self {
            feature,
            target,
            why: why.into(),
        }
    }

    /// A request that an Anthropic target cannot carry.
    #[cold]
    fn anthropic(feature: &'static str, why: impl Into<String>) -> Self {
        Self::new(ANTHROPIC, feature, why)
    }

    /// A request that an OpenAI chat target cannot carry.
    #[cold]
    fn chat(feature: &'static str, why: impl Into<String>) -> Self {
        Self::new(OPENAI_CHAT, feature, why)
    }

    /// A request that an OpenAI Responses target cannot carry.
    #[cold]
    fn responses(feature: &'static str, why: impl Into<String>) -> Self {
        Self::new(RESPONSES, feature, why)
    }
}

/// The string at `v[k]`, or "".
fn str_at<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The array at `v[k]`, or none.
fn array_at<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A block's, item's, part's or event's `type`, or "".
fn kind(v: &Value) -> &str {
    str_at(v, "type")
}

/// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and reasons not known yet.
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as an Anthropic `stop_reason`.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A non-negative integer field of `v`, 0 when absent or of another type.
fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Anthropic usage as OpenAI usage: the prompt counts the cached tokens (read and written),
/// which Anthropic's `input_tokens` leaves out.
fn chat_usage(usage: &Value) -> Value {
    let read = count(usage, "cache_read_input_tokens");
    let prompt = count(usage, "input_tokens")
        .saturating_add(read)
        .saturating_add(count(usage, "cache_creation_input_tokens"));
    let completion = count(usage, "output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": {"cached_tokens": read},
    })
}

/// OpenAI usage as Anthropic usage: `input_tokens` without the cached tokens. OpenAI does not
/// report cache writes, so `cache_creation_input_tokens` is 0.
fn messages_usage(usage: &Value) -> Value {
    let cached = usage
        .get("prompt_tokens_details")
        .map_or(0, |d| count(d, "cached_tokens"));
    json!({
        "input_tokens": count(usage, "prompt_tokens").saturating_sub(cached),
        "output_tokens": count(usage, "completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

/// A chat id for an Anthropic message id: `msg_X` becomes `chatcmpl-X`.
fn chat_id(message_id: Option<&str>) -> String {
    swap_prefix(message_id, "msg_", "chatcmpl-")
}

/// An Anthropic message id for a chat id: `chatcmpl-X` becomes `msg_X`.
fn message_id(chat_id: Option<&str>) -> String {
    swap_prefix(chat_id, "chatcmpl-", "msg_")
}

/// `id` with the prefix `from` (when it has it) replaced by `to`; a fresh id after `to` when
/// there is no id.
fn swap_prefix(id: Option<&str>, from: &str, to: &str) -> String {
    match id {
        Some(id) => format!("{to}{}", id.strip_prefix(from).unwrap_or(id)),
        None => format!("{to}{}", fresh_id()),
    }
}

/// 24 random alphanumerics, for answers that came without an id.
fn fresh_id() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect()
}

/// Now, in unix seconds (a chat answer's `created`).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
