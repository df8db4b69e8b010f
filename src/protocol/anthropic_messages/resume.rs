//! Stream resume for Anthropic Messages: the continuation request and the splice.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{MessagesChunk, MessagesStream};
use crate::chain::{AttemptContext, AttemptFailure, Opening, Resume, Trail};
use crate::protocol::openai_chat::Prefill;
use crate::protocol::prefix::Prefix;

/// Opens a Messages stream for an attempt with a request body.
type Open = Box<dyn FnMut(AttemptContext, Arc<Value>) -> Opening<MessagesStream> + Send>;

/// The usage fields of a Messages answer that count input.
const INPUT: [&str; 3] = [
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
];

/// The [`Resume`] of an Anthropic Messages stream, for
/// [`Route::resumable_stream`](crate::chain::Route::resumable_stream).
///
/// It follows the text the reader was given. When the stream breaks, the continuation
/// request is the original one with that text as the last, assistant message (Anthropic's
/// documented prefill; appended to the request's own trailing assistant message if it has
/// one), without its trailing whitespace, which Anthropic rejects (the continuation's leading
/// whitespace makes up for it), and `max_tokens` reduced by the tokens already streamed (one
/// per text delta); everything else is unchanged. Only targets whose [`Prefill`] is
/// [`Assistant`](Prefill::Assistant) are asked: Anthropic ones, and OpenAI-compatible ones
/// configured so, through translation (vLLM's `continue_final_message` has no Messages
/// equivalent to travel in). An answer that holds more than text (a tool use, thinking) is not
/// continued.
///
/// The continuation's events reach the reader as part of the same message: its
/// `message_start` is dropped (the reader has the original's, with its `id`), its first text
/// block continues the block the break left open (its `content_block_start` is dropped), the
/// blocks after it are numbered on, and its `message_delta` carries the usage of both
/// attempts (the broken one's as it reported it, its output estimated at one token per text
/// delta) and an extension field `failover` (`{"resumed": true, "trail": "..."}`, the trail
/// as in `x-failover-trail`).
pub struct MessagesResume {
    request: Arc<Value>,
    prefill: Box<dyn Fn(&str) -> Prefill + Send>,
    open: Open,
    /// The answer's text so far.
    prefix: Prefix,
    /// The input usage the broken attempt reported in its `message_start`.
    input: Vec<(&'static str, u64)>,
    /// The block the break left open, and the index of the next block.
    open_block: Option<u64>,
    next_block: u64,
    /// Only text was sent: a prefill can carry it.
    plain: bool,
    /// The continuation's blocks: how its first index maps to the reader's.
    shift: Option<(u64, u64)>,
    /// The input usage of the continuation's `message_start`.
    continuation_input: Vec<(&'static str, u64)>,
}

impl std::fmt::Debug for MessagesResume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagesResume")
            .field("tokens", &self.prefix.tokens())
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

impl MessagesResume {
    /// Resumes streams of `request`: `prefill` says what each provider supports (for
    /// example from its [`Endpoint::prefill_mode`](crate::protocol::Endpoint::prefill_mode)),
    /// and `open` opens a stream on an attempt's target with a request body (the
    /// continuation's), as the route's own attempts do.
    pub fn new<F, Fut>(
        request: Arc<Value>,
        prefill: impl Fn(&str) -> Prefill + Send + 'static,
        mut open: F,
    ) -> Self
    where
        F: FnMut(AttemptContext, Arc<Value>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<MessagesStream, AttemptFailure>> + Send + 'static,
    {
        Self {
            request,
            prefill: Box::new(prefill),
            open: Box::new(move |ctx, body| Box::pin(open(ctx, body))),
            prefix: Prefix::default(),
            input: Vec::new(),
            open_block: None,
            next_block: 0,
            plain: true,
            shift: None,
            continuation_input: Vec::new(),
        }
    }

    /// A continuation block index as the reader numbers it. The first block the continuation
    /// starts fixes the mapping (see [`start_block`](Self::start_block)).
    fn index(&self, index: u64) -> u64 {
        match self.shift {
            Some((from, to)) => to + index.saturating_sub(from),
            None => index,
        }
    }

    /// The continuation starts block `index`: the events the reader gets for it. Its first
    /// text block continues the block the break left open; any other first block starts
    /// after it, which is closed first.
    fn start_block(&mut self, index: u64, mut event: Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.shift.is_none() {
            let block = &event["content_block"];
            match self.open_block {
                Some(open) if block["type"] == "text" => {
                    self.shift = Some((index, open));
                    // Its text (Anthropic sends none here) goes on as a delta of the open block.
                    let text = block["text"].as_str().unwrap_or_default().to_owned();
                    return self.text_delta(open, &text).into_iter().collect();
                }
                Some(open) => {
                    out.push(named(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": open}),
                    ));
                    self.shift = Some((index, open + 1));
                }
                None => self.shift = Some((index, self.next_block)),
            }
        }
        event["index"] = Value::from(self.index(index));
        out.push(named("content_block_start", &event));
        out
    }

    /// A `text_delta` of `text` (less the whitespace the prefill owes) in block `index`, if
    /// any text is left.
    fn text_delta(&mut self, index: u64, text: &str) -> Option<(String, String)> {
        let text = self.prefix.pay(text).unwrap_or_else(|| text.to_owned());
        (!text.is_empty()).then(|| {
            named(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": text}}),
            )
        })
    }

    /// Fits one continuation event into the answer: the events the reader gets for it.
    fn splice_event(&mut self, name: String, data: String, trail: &Trail) -> Vec<(String, String)> {
        let Ok(mut event) = serde_json::from_str::<Value>(&data) else {
            return vec![(name, data)];
        };
        let index = event["index"].as_u64().unwrap_or(0);
        match name.as_str() {
            "message_start" => {
                self.continuation_input = input_usage(&event["message"]["usage"]);
                Vec::new()
            }
            "content_block_start" => self.start_block(index, event),
            "content_block_delta" if event["delta"]["type"] == "text_delta" => {
                let text = event["delta"]["text"].as_str().unwrap_or_default();
                let text = text.to_owned();
                self.text_delta(self.index(index), &text)
                    .into_iter()
                    .collect()
            }
            "content_block_delta" | "content_block_stop" => {
                event["index"] = Value::from(self.index(index));
                vec![named(&name, &event)]
            }
            "message_delta" => {
                self.add_usage(&mut event["usage"]);
                event["failover"] = json!({"resumed": true, "trail": trail.to_string()});
                vec![named(&name, &event)]
            }
            _ => vec![(name, data)],
        }
    }

    /// The usage of a continuation's `message_delta`, plus the broken attempt's: its input as
    /// reported and its output as streamed. The input fields of both attempts are summed
    /// here, the continuation's from the `message_delta` (cumulative) or else its
    /// `message_start`.
    fn add_usage(&self, usage: &mut Value) {
        if !usage.is_object() {
            *usage = json!({});
        }
        for key in INPUT {
            let broken = find(&self.input, key);
            let continued = usage[key]
                .as_u64()
                .or_else(|| Some(find(&self.continuation_input, key)).filter(|n| *n > 0));
            if broken > 0 || continued.is_some() {
                usage[key] = Value::from(broken + continued.unwrap_or(0));
            }
        }
        let output = usage["output_tokens"].as_u64().unwrap_or(0);
        usage["output_tokens"] = Value::from(output + self.prefix.tokens());
    }
}

/// An event as the stream carries it.
fn named(name: &str, data: &Value) -> (String, String) {
    (name.to_owned(), data.to_string())
}

/// The input fields of a usage object that are numbers.
fn input_usage(usage: &Value) -> Vec<(&'static str, u64)> {
    INPUT
        .into_iter()
        .filter_map(|k| Some((k, usage[k].as_u64()?)))
        .collect()
}

fn find(usage: &[(&'static str, u64)], key: &str) -> u64 {
    usage.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n)
}

impl Resume<MessagesChunk, MessagesStream> for MessagesResume {
    fn sent(&mut self, chunk: &MessagesChunk) {
        for (name, data) in chunk.events() {
            let Ok(event) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            let index = event["index"].as_u64().unwrap_or(0);
            match name.as_str() {
                "message_start" => self.input = input_usage(&event["message"]["usage"]),
                "content_block_start" => {
                    let block = &event["content_block"];
                    self.plain &= block["type"] == "text";
                    self.prefix.push(block["text"].as_str().unwrap_or_default());
                    self.open_block = Some(index);
                    self.next_block = index + 1;
                }
                "content_block_delta" => match event["delta"]["type"].as_str() {
                    Some("text_delta") => {
                        self.prefix
                            .push(event["delta"]["text"].as_str().unwrap_or_default());
                    }
                    _ => self.plain = false,
                },
                "content_block_stop" => self.open_block = None,
                _ => {}
            }
        }
    }

    fn continuable(&self) -> bool {
        let limit = self.request["max_tokens"].as_u64();
        self.plain && self.prefix.continuable(limit)
    }

    fn accepts(&self, provider: &str, _model: &str) -> bool {
        (self.prefill)(provider) == Prefill::Assistant
    }

    fn open(&mut self, attempt: AttemptContext) -> Opening<MessagesStream> {
        let mut body = (*self.request).clone();
        let prefill = self.prefix.prefill().to_owned();
        if let Some(messages) = body["messages"].as_array_mut() {
            // A request that ends with its own prefill gets the text appended to it: the
            // provider continues only the last message.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" => append_text(last, &prefill),
                _ => messages.push(json!({"role": "assistant", "content": prefill})),
            }
        }
        if let Some(max) = body["max_tokens"].as_u64() {
            body["max_tokens"] = Value::from(self.prefix.left_of(max));
        }
        // Each continuation is numbered from its own first block.
        self.shift = None;
        self.continuation_input.clear();
        let opening = (self.open)(attempt, Arc::new(body));
        Box::pin(async move {
            // The answer has its tokens already: a continuation that only finishes it (the
            // break came after its last token) is whole, not empty.
            let mut stream = opening.await?;
            stream.group.answered = true;
            Ok(stream)
        })
    }

    fn splice(&mut self, chunk: MessagesChunk, trail: &Trail) -> Option<MessagesChunk> {
        let MessagesChunk {
            events,
            finished,
            done,
        } = chunk;
        let events: Vec<(String, String)> = events
            .into_iter()
            .flat_map(|(name, data)| self.splice_event(name, data, trail))
            .collect();
        (!events.is_empty()).then_some(MessagesChunk {
            events,
            finished,
            done,
        })
    }
}

/// Appends `text` to an assistant message: to its string content, or as a text block (to its
/// last block if that is text).
fn append_text(message: &mut Value, text: &str) {
    match &mut message["content"] {
        Value::String(own) => own.push_str(text),
        Value::Array(blocks) => match blocks.last_mut() {
            Some(last) if last["type"] == "text" && last["text"].is_string() => {
                let own = last["text"].as_str().unwrap_or_default();
                last["text"] = Value::from(format!("{own}{text}"));
            }
            _ => blocks.push(json!({"type": "text", "text": text})),
        },
        content => *content = Value::from(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(events: &[(&str, Value)]) -> MessagesChunk {
        MessagesChunk {
            events: events.iter().map(|(n, d)| named(n, d)).collect(),
            finished: false,
            done: false,
        }
    }

    fn resume(request: Value) -> MessagesResume {
        MessagesResume::new(
            Arc::new(request),
            |_| Prefill::Assistant,
            |_, _| async { Err(AttemptFailure::new(crate::Reason::Unknown)) },
        )
    }

    fn delta(index: u64, text: &str) -> (&'static str, Value) {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": text}}),
        )
    }

    /// What the reader was given before the break: a message with block 0 open.
    fn broken() -> MessagesResume {
        let mut r =
            resume(json!({"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}));
        r.sent(&chunk(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1",
                       "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ),
            delta(0, "The "),
        ]));
        r.sent(&chunk(&[delta(0, "quick ")]));
        r
    }

    #[test]
    fn the_continuation_request_carries_the_text_as_a_prefill_without_trailing_space() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut r = broken();
        assert!(r.continuable());
        r.open = Box::new(move |_, body| {
            tx.send(body).unwrap();
            Box::pin(async { Err(AttemptFailure::new(crate::Reason::Unknown)) })
        });
        drop(r.open(AttemptContext::for_test("claude", "m")));
        let body = rx.recv().unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": "The quick"})
        );
        assert_eq!(body["max_tokens"], 98);
    }

    #[test]
    fn the_continuation_joins_the_open_block_and_its_usage_adds_the_broken_attempts() {
        let mut r = broken();
        // The chain opens the continuation, then splices what it sends.
        drop(r.open(AttemptContext::for_test("claude", "m")));
        let trail = Trail::default();
        let start = r.splice(
            chunk(&[
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_2",
                           "usage": {"input_tokens": 12, "output_tokens": 1}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}}),
                ),
                ("ping", json!({"type": "ping"})),
                delta(0, " brown"),
            ]),
            &trail,
        );
        let start = start.unwrap();
        let names: Vec<&str> = start.events().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ping", "content_block_delta"]);
        assert_eq!(start.text(), "brown");
        let end = r
            .splice(
                chunk(&[
                    delta(0, " fox"),
                    (
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": 0}),
                    ),
                    (
                        "message_delta",
                        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": 2}}),
                    ),
                ]),
                &trail,
            )
            .unwrap();
        assert_eq!(end.text(), " fox");
        let delta: Value = serde_json::from_str(&end.events()[2].1).unwrap();
        assert_eq!(delta["usage"]["output_tokens"], 4);
        assert_eq!(delta["usage"]["input_tokens"], 22);
        assert_eq!(delta["usage"]["cache_read_input_tokens"], 4);
        assert_eq!(delta["failover"]["resumed"], true);
    }

    #[test]
    fn a_continuation_that_starts_with_another_block_closes_the_open_one_first() {
        let mut r = broken();
        drop(r.open(AttemptContext::for_test("claude", "m")));
        let out = r
            .splice(
                chunk(&[(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                           "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
                )]),
                &Trail::default(),
            )
            .unwrap();
        let events: Vec<(String, Value)> = out
            .events()
            .iter()
            .map(|(n, d)| (n.clone(), serde_json::from_str(d).unwrap()))
            .collect();
        assert_eq!(events[0].0, "content_block_stop");
        assert_eq!(events[0].1["index"], 0);
        assert_eq!(events[1].0, "content_block_start");
        assert_eq!(events[1].1["index"], 1);
    }

    #[test]
    fn an_answer_with_more_than_text_or_no_room_left_is_not_continued() {
        let mut tool = broken();
        tool.sent(&chunk(&[(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
                   "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        )]));
        assert!(!tool.continuable());
        let mut full = resume(json!({"max_tokens": 2, "messages": []}));
        full.sent(&chunk(&[delta(0, "a"), delta(0, "b")]));
        assert!(!full.continuable());
    }

    #[test]
    fn text_is_appended_to_the_requests_own_prefill() {
        let mut s = json!({"role": "assistant", "content": "{"});
        append_text(&mut s, "\"a\"");
        assert_eq!(s["content"], "{\"a\"");
        let mut b = json!({"role": "assistant", "content": [{"type": "text", "text": "x"}]});
        append_text(&mut b, "y");
        assert_eq!(b["content"], json!([{"type": "text", "text": "xy"}]));
    }
}
