//! Reading the `usage` an answer or a stream event reports, in any protocol's shape.

use serde_json::Value;

use crate::chain::Usage;

/// The usage a provider reported in `v`: an answer, a stream chunk or event, in the shape of
/// OpenAI chat completions (`usage.prompt_tokens`, `completion_tokens`,
/// `prompt_tokens_details.cached_tokens`), the Responses API (`usage.input_tokens`,
/// `output_tokens`, `input_tokens_details.cached_tokens`) or Anthropic Messages
/// (`usage.input_tokens`, `output_tokens`, `cache_read_input_tokens`,
/// `cache_creation_input_tokens`, also under `message` in a `message_start` event). `None`
/// when `v` carries no usage object.
///
/// [`Usage::input`] counts cached tokens in, whatever the shape: Anthropic's `input_tokens`
/// leaves them out, so they are added.
///
/// ```
/// use llm_failover::protocol::usage;
///
/// let openai = serde_json::json!({"usage": {"prompt_tokens": 120, "completion_tokens": 30,
///     "prompt_tokens_details": {"cached_tokens": 100}}});
/// let u = usage(&openai).unwrap();
/// assert_eq!((u.input, u.output, u.cache_read, u.cache_write), (Some(120), Some(30), Some(100), None));
///
/// let anthropic = serde_json::json!({"usage": {"input_tokens": 20, "output_tokens": 30,
///     "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}});
/// let u = usage(&anthropic).unwrap();
/// assert_eq!((u.input, u.cache_read, u.cache_write), (Some(125), Some(100), Some(5)));
/// ```
#[must_use]
pub fn usage(v: &Value) -> Option<Usage> {
    let u = v
        .get("usage")
        .or_else(|| v.get("message")?.get("usage"))
        .or_else(|| v.get("response")?.get("usage"))
        .filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let detail = |d: &str, k: &str| u.get(d)?.get(k)?.as_u64();
    if let Some(prompt) = n("prompt_tokens") {
        // OpenAI chat completions.
        return Some(Usage {
            input: Some(prompt),
            output: n("completion_tokens"),
            cache_read: detail("prompt_tokens_details", "cached_tokens"),
            cache_write: None,
        });
    }
    if u.get("input_tokens_details").is_some() {
        // The Responses API: `input_tokens` counts the cached ones.
        return Some(Usage {
            input: n("input_tokens"),
            output: n("output_tokens"),
            cache_read: detail("input_tokens_details", "cached_tokens"),
            cache_write: None,
        });
    }
    // Anthropic Messages (or only `completion_tokens`/`output_tokens`): `input_tokens`
    // leaves the cached tokens out.
    let (read, write) = (
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    );
    let usage = Usage {
        input: n("input_tokens").map(|i| {
            i.saturating_add(read.unwrap_or(0))
                .saturating_add(write.unwrap_or(0))
        }),
        output: n("output_tokens").or_else(|| n("completion_tokens")),
        cache_read: read,
        cache_write: write,
    };
    (!usage.is_empty()).then_some(usage)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_shape_reads_with_cached_tokens_in_the_input() {
        let responses = json!({"type": "response.completed", "response": {"usage": {
            "input_tokens": 50, "output_tokens": 7, "input_tokens_details": {"cached_tokens": 40}}}});
        assert_eq!(
            usage(&responses),
            Some(Usage {
                input: Some(50),
                output: Some(7),
                cache_read: Some(40),
                cache_write: None
            })
        );
        let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 9,
            "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}});
        let u = usage(&start).unwrap();
        assert_eq!((u.input, u.output), (Some(9), Some(1)));
        let delta = json!({"type": "message_delta", "usage": {"output_tokens": 15}});
        let whole = u.merge(usage(&delta).unwrap());
        assert_eq!((whole.input, whole.output), (Some(9), Some(15)));
        assert_eq!(usage(&json!({"usage": null})), None);
        assert_eq!(usage(&json!({"usage": {}})), None);
        assert_eq!(usage(&json!({"choices": []})), None);
    }
}
