//! The faults a simulated model can have, the model-name conventions that pick them, and what
//! a sim does with an assistant prefill.

use std::time::Duration;

/// What the simulated provider does with a request for one model.
///
/// A fault is chosen per model: configured on the [`SimBuilder`](super::SimBuilder) or with
/// [`Sim::set_fault`](super::Sim::set_fault), else read from the model name
/// ([`Fault::from_model_name`]), else [`Fault::None`]. Connection refusal is not a fault of a
/// model (a refused connection never carries a model name): it is the server-level
/// [`Sim::set_down`](super::Sim::set_down) / [`Sim::down_for`](super::Sim::down_for).
///
/// Each fault means the same on `/v1/chat/completions`, `/v1/messages` and `/v1/responses`,
/// in each protocol's shapes (the [module docs](super#one-fault-table-three-protocols) have
/// the table); the wording below is the chat side's. On `/v1/responses` the terminator is
/// `response.completed` (there is no `[DONE]`) and the events before it are its
/// `response.output_text.done`, `response.content_part.done` and `response.output_item.done`.
///
/// "Token" below means one chunk of the streamed answer: the stream sends
/// [`ANSWER`](super::ANSWER) as one `chat.completion.chunk` (or `content_block_delta`, or
/// `response.output_text.delta`) per word
/// ([`answer_tokens`](super::answer_tokens)); when the request carries an assistant prefill
/// that the sim continues ([`Prefill::Continue`]), the answer is the continuation and the
/// tokens are its tokens, so `CutAfter(2)` sends two tokens of the continuation. A stream that
/// ends with `[DONE]` (and a [`Fault::NoDone`] stream, before it hangs) sends the usage chunk
/// when the request asks for it; the others never do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fault {
    /// Healthy: the whole [`ANSWER`](super::ANSWER), `finish_reason` `stop`, then
    /// `data: [DONE]` when streaming.
    #[default]
    None,
    /// 429 with OpenAI's `rate_limit_exceeded` body. With a wait, the response carries
    /// `retry-after` (whole seconds, rounded up) and `retry-after-ms`, and the message says
    /// "Please try again in ..."; without one, no header and no wait in the text.
    RateLimit {
        /// The wait the provider asks for, if any.
        retry_after: Option<Duration>,
    },
    /// 500 `server_error` on the model's first request, healthy afterwards. Setting the
    /// fault again with [`Sim::set_fault`](super::Sim::set_fault) re-arms it.
    ServerErrorOnce,
    /// Always this status with an OpenAI-style error body: 503 is "overloaded or not ready",
    /// 529 is Anthropic's `overloaded_error` body, 429 is [`Fault::RateLimit`] without a
    /// wait, 401, 404 and 500 have their OpenAI bodies, any other 4xx/5xx a generic body. A
    /// status below 200 or above 999 is answered as 500. `/v1/responses` answers as chat. On
    /// `/v1/messages`, Anthropic's error for the status, and 503 (overloaded) is answered as
    /// 529 `overloaded_error`.
    Status(u16),
    /// The first token comes after this delay. Streaming: the 200 and its headers come at
    /// once, the first chunk after the delay (a time-to-first-token fault). Not streaming:
    /// the whole response comes after the delay.
    FirstTokenDelay(Duration),
    /// Streaming: this many token chunks, then the connection closes without the
    /// `finish_reason` chunk, `[DONE]` or the end of the chunked body, so the client's body
    /// read fails. Not streaming: the headers announce the full length, half the body comes,
    /// then the connection closes.
    CutAfter(usize),
    /// Streaming: this many token chunks, then silence on an open connection. Not streaming:
    /// half the announced body, then silence.
    StallAfter(usize),
    /// Streaming: this many token chunks, then a `data:` line that is not JSON in place of
    /// the next token, then the rest of the answer, `finish_reason` and `[DONE]` (so a client
    /// that skips bad lines ends up with a "complete" answer that is missing a word; the
    /// usage chunk, when asked for, counts the valid token chunks only: one fewer than the
    /// answer's tokens when the bad line stands in for one). Not streaming: a 200 whose body is JSON cut in half (the HTTP
    /// message itself is complete).
    MalformedAfter(usize),
    /// Streaming: every token and the `finish_reason` chunk, then no `[DONE]` and the
    /// connection stays open. Not streaming: healthy (there is no terminator to omit).
    NoDone,
    /// Streaming: this many token chunks, then one chunk that reports an upstream failure the
    /// way OpenRouter does mid-stream (a top-level `error` object, `{"message": "Upstream
    /// provider error mid-stream", "code": 502}`, beside a choice with an empty delta and
    /// `finish_reason` `error`), then the body ends cleanly: no `[DONE]`, no usage chunk, but
    /// no transport error either, so only a client that reads the chunks sees the failure.
    /// Not streaming: a 200 whose JSON body is just that `error` object. On `/v1/messages`,
    /// Anthropic's `event: error` with an `overloaded_error`, as Anthropic sends mid-stream.
    /// On `/v1/responses`, `event: response.failed` with the response, `status` `failed`
    /// and `error` `{"code": "server_error", ...}` (not streaming: a 200 with that response).
    ErrorAfter(usize),
    /// 400 `context_length_exceeded`: "This model's maximum context length is ...".
    ContextOverflow,
    /// 400 `content_filter`: "Your request was rejected as a result of our safety system".
    ContentFilter,
    /// The request is read and never answered: no status, no headers, the connection stays
    /// open until the client gives up or the sim shuts down.
    Silent,
    /// The request is read, then the connection is closed with a TCP RST (`SO_LINGER` 0)
    /// before any byte of the response: the client sees "connection reset by peer".
    ResetBeforeHeaders,
    /// Healthy, and calls tools. When the request offers tools and its last message is a
    /// user message (not a tool result, not a prefill), the answer is a call of the first
    /// tool, with arguments its schema accepts (each required property with a value of its
    /// type: `"sim"` for strings, the first value of an `enum`; `{}` without required
    /// properties). Chat: `tool_calls` with an id `call_...` and `finish_reason`
    /// `tool_calls`, streamed as a chunk with the id and name, then `arguments` in pieces.
    /// Messages: a `tool_use` block with an id `toolu_...` and `stop_reason` `tool_use`,
    /// streamed as `input_json_delta`s. Responses: a `function_call` output item (`fc_...`,
    /// `call_id` `call_...`), streamed as `response.function_call_arguments.delta`s; the
    /// first tool of type `function` is called. When the last message is a tool result
    /// (chat: role `tool`; messages: a user message with a `tool_result` block; responses: a
    /// `function_call_output` item after the last user message), the answer is the text
    /// "The tool answered: " and the result's text. Without tools, [`ANSWER`](super::ANSWER).
    ToolCall,
}

impl Fault {
    /// The fault a model name asks for, or `None` when the name follows no convention (such
    /// a model is healthy unless a fault is configured for it).
    ///
    /// Names start with `sim-` and follow the table in the [module docs](super#model-names):
    /// `sim-503`, `sim-429-retry-2`, `sim-slow-2000ms`, `sim-cut-3`, `sim-reset`, ...
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_failover::sim::Fault;
    ///
    /// assert_eq!(Fault::from_model_name("sim-503"), Some(Fault::Status(503)));
    /// assert_eq!(
    ///     Fault::from_model_name("sim-429-retry-2"),
    ///     Some(Fault::RateLimit { retry_after: Some(Duration::from_secs(2)) })
    /// );
    /// assert_eq!(Fault::from_model_name("sim-cut-3"), Some(Fault::CutAfter(3)));
    /// assert_eq!(Fault::from_model_name("gpt-4o-mini"), None);
    /// assert_eq!(Fault::from_model_name("sim-cut-x"), None);
    /// ```
    #[must_use]
    pub fn from_model_name(model: &str) -> Option<Fault> {
        let spec = model.strip_prefix("sim-")?;
        let fault = match spec {
            "ok" => Fault::None,
            "429" => Fault::RateLimit { retry_after: None },
            "500-once" => Fault::ServerErrorOnce,
            "no-done" => Fault::NoDone,
            "context" => Fault::ContextOverflow,
            "filter" => Fault::ContentFilter,
            "silent" => Fault::Silent,
            "reset" => Fault::ResetBeforeHeaders,
            "tool" => Fault::ToolCall,
            _ => {
                if let Some(wait) = spec.strip_prefix("429-retry-") {
                    Fault::RateLimit {
                        retry_after: Some(parse_duration(wait)?),
                    }
                } else if let Some(delay) = spec.strip_prefix("slow-") {
                    Fault::FirstTokenDelay(parse_duration(delay)?)
                } else if let Some(n) = spec.strip_prefix("cut-") {
                    Fault::CutAfter(parse_count(n)?)
                } else if let Some(n) = spec.strip_prefix("stall-") {
                    Fault::StallAfter(parse_count(n)?)
                } else if let Some(n) = spec.strip_prefix("malformed-") {
                    Fault::MalformedAfter(parse_count(n)?)
                } else if let Some(n) = spec.strip_prefix("error-") {
                    Fault::ErrorAfter(parse_count(n)?)
                } else {
                    let status = parse_count(spec)?;
                    if !(400..=599).contains(&status) {
                        return None;
                    }
                    Fault::Status(u16::try_from(status).ok()?)
                }
            }
        };
        Some(fault)
    }
}

/// What a sim does with a request (on chat or messages; the Responses API has no prefill,
/// and a trailing assistant message there is history) whose last message is an assistant
/// message with non-empty text content (an "assistant prefill": the start of the answer, written by the
/// caller, for the model to continue). One mode per sim: [`SimBuilder::prefill`](super::SimBuilder::prefill),
/// [`Sim::set_prefill`](super::Sim::set_prefill).
///
/// Providers differ here, and a proxy that resumes a broken stream by sending the text it
/// already relayed as a prefill depends on the difference: a provider that continues gives the
/// rest of the answer, one that ignores the prefill gives the whole answer again (relayed
/// after the part already sent, the client would see it twice), one that rejects it fails
/// the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Prefill {
    /// Continue the prefill, as Anthropic, llama.cpp, Ollama and vLLM (with
    /// `continue_final_message`) do: when [`ANSWER`](super::ANSWER) starts with the prefill,
    /// the answer is the rest of it, in tokens cut after each space (a prefill that ends
    /// mid-word gets the rest of the word first; one that ends before a space gets a first
    /// token that starts with the space). A prefill that is not a prefix of
    /// [`ANSWER`](super::ANSWER) gets the whole answer, as if there were none.
    #[default]
    Continue,
    /// Ignore the prefill and send the whole [`ANSWER`](super::ANSWER), as OpenAI's chat API
    /// does.
    Ignore,
    /// Reject the request with Anthropic's 400 for models without prefill support
    /// (`invalid_request_error`, "This model does not support assistant message prefill.
    /// The conversation must end with a user message."). A model whose fault sends an error
    /// (a status, a rate limit, silence, a reset) sends that error instead; the 400 replaces
    /// answers only, and comes at once (a [`Fault::FirstTokenDelay`] does not delay it).
    Reject,
}

/// A count: ASCII digits only (no sign, no spaces).
fn parse_count(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `<n>ms`, `<n>s` or `<n>` (seconds).
fn parse_duration(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return Some(Duration::from_millis(u64::try_from(parse_count(ms)?).ok()?));
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    Some(Duration::from_secs(u64::try_from(parse_count(secs)?).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_pick_faults() {
        let cases = [
            ("sim-ok", Some(Fault::None)),
            ("sim-429", Some(Fault::RateLimit { retry_after: None })),
            (
                "sim-429-retry-2",
                Some(Fault::RateLimit {
                    retry_after: Some(Duration::from_secs(2)),
                }),
            ),
            (
                "sim-429-retry-250ms",
                Some(Fault::RateLimit {
                    retry_after: Some(Duration::from_millis(250)),
                }),
            ),
            ("sim-500-once", Some(Fault::ServerErrorOnce)),
            ("sim-500", Some(Fault::Status(500))),
            ("sim-503", Some(Fault::Status(503))),
            ("sim-529", Some(Fault::Status(529))),
            ("sim-404", Some(Fault::Status(404))),
            (
                "sim-slow-2000ms",
                Some(Fault::FirstTokenDelay(Duration::from_millis(2000))),
            ),
            (
                "sim-slow-2s",
                Some(Fault::FirstTokenDelay(Duration::from_secs(2))),
            ),
            ("sim-cut-3", Some(Fault::CutAfter(3))),
            ("sim-cut-0", Some(Fault::CutAfter(0))),
            ("sim-stall-3", Some(Fault::StallAfter(3))),
            ("sim-malformed-3", Some(Fault::MalformedAfter(3))),
            ("sim-error-2", Some(Fault::ErrorAfter(2))),
            ("sim-error-0", Some(Fault::ErrorAfter(0))),
            ("sim-no-done", Some(Fault::NoDone)),
            ("sim-context", Some(Fault::ContextOverflow)),
            ("sim-filter", Some(Fault::ContentFilter)),
            ("sim-silent", Some(Fault::Silent)),
            ("sim-reset", Some(Fault::ResetBeforeHeaders)),
            ("sim-tool", Some(Fault::ToolCall)),
        ];
        for (name, want) in cases {
            assert_eq!(Fault::from_model_name(name), want, "{name}");
        }
    }

    #[test]
    fn other_names_pick_nothing() {
        for name in [
            "gpt-4o-mini",
            "sim",
            "sim-",
            "sim-200",
            "sim-600",
            "sim-99999999999999999999999",
            "sim-cut-",
            "sim-cut--1",
            "sim-cut-+3",
            "sim-cut-3x",
            "sim-error-",
            "sim-error",
            "sim-slow-",
            "sim-slow-ms",
            "sim-slow-2m",
            "sim-429-retry-",
            "sim-unknown",
            "sim-tool-3",
            "sim-tools",
            "SIM-503",
            "xsim-503",
        ] {
            assert_eq!(Fault::from_model_name(name), None, "{name}");
        }
    }
}
