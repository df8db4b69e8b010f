//! What the tests of the Anthropic and the Responses translations both need: refusals checked
//! the same way, chat chunks written by a fake upstream, and streams fed and read back.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{ChatToMessages, ChatToResponses, Event, Untranslatable};

/// The feature an untranslatable request names, checking that `target` is the API named and
/// that the message names the feature.
pub(super) fn refused(result: Result<Value, Untranslatable>, target: &str) -> &'static str {
    let e = result.unwrap_err();
    assert_eq!(e.target(), target);
    assert!(e.to_string().contains(e.feature()), "{e}");
    e.feature()
}

/// A chat user message.
pub(super) fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// A fake chat upstream: the id, time and model its chunks carry, and the usage it reports.
pub(super) struct Upstream {
    /// The chunks' `id`.
    pub(super) id: &'static str,
    /// The chunks' `created`.
    pub(super) created: u64,
    /// The chunks' `model`.
    pub(super) model: &'static str,
    /// The prompt, completion and cached prompt tokens of the usage chunk.
    pub(super) tokens: [u64; 3],
}

impl Upstream {
    /// A chunk with this delta and finish reason.
    pub(super) fn chunk(&self, delta: Value, finish: Value) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }

    /// The usage chunk (no choices), as OpenAI sends it last.
    pub(super) fn usage_chunk(&self) -> String {
        let [prompt, completion, cached] = self.tokens;
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": {"prompt_tokens": prompt,
            "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}})
        .to_string()
    }
}

/// A translator of chat chunks, as the tests drive it.
pub(super) trait FromChat {
    /// One `data:` payload.
    fn data(&mut self, data: &str) -> Vec<Event>;
    /// The end of the upstream stream.
    fn end(&mut self) -> Vec<Event>;
}

impl FromChat for ChatToMessages {
    fn data(&mut self, data: &str) -> Vec<Event> {
        ChatToMessages::data(self, data)
    }

    fn end(&mut self) -> Vec<Event> {
        ChatToMessages::end(self)
    }
}

impl FromChat for ChatToResponses {
    fn data(&mut self, data: &str) -> Vec<Event> {
        ChatToResponses::data(self, data)
    }

    fn end(&mut self) -> Vec<Event> {
        ChatToResponses::end(self)
    }
}

/// Runs chat payloads through `t` (and `end()` when `end`); the events, with data parsed,
/// after checking each event's `type` is its name.
pub(super) fn events(
    mut t: impl FromChat,
    payloads: &[impl AsRef<str>],
    end: bool,
) -> Vec<(&'static str, Value)> {
    let mut out: Vec<Event> = payloads.iter().flat_map(|p| t.data(p.as_ref())).collect();
    if end {
        out.extend(t.end());
    }
    out.into_iter()
        .map(|(name, data)| {
            let v: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(v["type"], name);
            (name, v)
        })
        .collect()
}

/// The names of events.
pub(super) fn names(events: &[(&'static str, Value)]) -> Vec<&'static str> {
    events.iter().map(|(n, _)| *n).collect()
}

/// Chat payloads parsed (`[DONE]` as a string).
pub(super) fn payloads(out: impl IntoIterator<Item = String>) -> Vec<Value> {
    out.into_iter()
        .map(|p| serde_json::from_str(&p).unwrap_or(Value::String(p)))
        .collect()
}

/// The delta of a chat chunk's first choice.
pub(super) fn delta(chunk: &Value) -> &Value {
    &chunk["choices"][0]["delta"]
}

/// Any JSON value up to 4 deep, whose strings are often one of `words` and whose object keys
/// mostly `keys`: the words and keys the translation under test reads.
pub(super) fn any_json(
    words: &'static [&'static str],
    keys: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(words).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    // Each known key as likely as an unknown one.
    let known = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    leaf.prop_recursive(4, 48, 6, move |inner| {
        let keys = prop_oneof![
            known => prop::sample::select(keys).prop_map(str::to_owned),
            1 => ".{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Feeds each value, as a payload, to `t` and then ends it; checks that every event's data is
/// JSON, and counts the events named in `terminal`.
pub(super) fn terminal_events(mut t: impl FromChat, values: &[Value], terminal: &[&str]) -> usize {
    let mut out: Vec<Event> = values.iter().flat_map(|v| t.data(&v.to_string())).collect();
    out.extend(t.end());
    out.iter()
        .filter(|(name, data)| {
            assert!(serde_json::from_str::<Value>(data).is_ok(), "{data}");
            terminal.contains(name)
        })
        .count()
}
