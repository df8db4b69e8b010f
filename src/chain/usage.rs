//! The tokens an attempt used, as its provider reported them.
//!
//! A provider tells its usage in the answer (or in a stream's usage chunk, or spread over a
//! stream's events, as Anthropic does: the input at `message_start`, the output at
//! `message_delta`). The chain records what an attempt reported on its span with the
//! OpenTelemetry GenAI names (`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_creation.input_tokens`); the
//! [`MetricsLayer`](crate::telemetry::MetricsLayer) counts them in
//! `llm_failover_tokens_total` when the span closes. Each attempt counts what it reported
//! itself: a resumed stream's usage (which adds both attempts for the client) is never
//! counted again.

use tracing::Span;

use crate::telemetry::names::chain as field;

/// Token counts of one attempt. A field is `None` when the provider did not report it.
///
/// `input` is every input token, those read from or written to a prompt cache included (as
/// OpenAI's `prompt_tokens` and the OpenTelemetry attribute count them); `cache_read` and
/// `cache_write` say how many of them were.
///
/// ```
/// use llm_failover::chain::Usage;
///
/// let start = Usage { input: Some(120), cache_read: Some(100), ..Usage::default() };
/// let delta = Usage { output: Some(30), ..Usage::default() };
/// let whole = start.merge(delta);
/// assert_eq!((whole.input, whole.output, whole.cache_read), (Some(120), Some(30), Some(100)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    pub input: Option<u64>,
    /// Output (completion) tokens.
    pub output: Option<u64>,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read: Option<u64>,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write: Option<u64>,
}

impl Usage {
    /// `later`'s counts where it has them, else these: usage reported in parts (Anthropic's
    /// stream) or cumulatively (a usage object on every chunk) adds up to the last report.
    #[must_use]
    pub fn merge(self, later: Usage) -> Usage {
        Usage {
            input: later.input.or(self.input),
            output: later.output.or(self.output),
            cache_read: later.cache_read.or(self.cache_read),
            cache_write: later.cache_write.or(self.cache_write),
        }
    }

    /// True when no count was reported.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// Records the reported counts on an attempt's span (later records overwrite earlier
    /// ones; the metrics layer counts the last when the span closes).
    pub(crate) fn record(&self, span: &Span) {
        for (name, value) in [
            (field::INPUT_TOKENS, self.input),
            (field::OUTPUT_TOKENS, self.output),
            (field::CACHE_READ_TOKENS, self.cache_read),
            (field::CACHE_WRITE_TOKENS, self.cache_write),
        ] {
            if let Some(n) = value {
                span.record(name, n);
            }
        }
    }
}
