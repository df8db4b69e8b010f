//! Reading the OpenAI chat side, whatever the other API: the features only chat can carry, the
//! chunks of a chat stream, and the parts of a chat answer.
//!
//! Chat completions is the hub of this module: Anthropic Messages and OpenAI Responses are each
//! translated to and from chat. What a chat request, chunk or answer says is therefore read the
//! same way for either target, here, and each translation writes its own API's shape.

use serde_json::{Map, Value, json};

use super::{Event, Untranslatable, chat_id, kind, now, str_at};

/// Refuses a chat request that asks for what no other API can carry: several choices, log
/// probabilities, audio, `logit_bias`, a web search, or the legacy function calling. `target`
/// is the API named in the error ([`ANTHROPIC`](super::ANTHROPIC) or
/// [`RESPONSES`](super::RESPONSES)); each translation checks its own target's gaps after this.
pub(super) fn refuse_chat_only(req: &Value, target: &'static str) -> Result<(), Untranslatable> {
    let refuse = |feature: &'static str, why: &str| Err(Untranslatable::new(target, feature, why));
    let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    if req
        .get("n")
        .and_then(Value::as_f64)
        .is_some_and(|n| n > 1.0)
    {
        return refuse("n", "it gives one answer, not several choices");
    }
    if req.get("logprobs").and_then(Value::as_bool) == Some(true)
        || req
            .get("top_logprobs")
            .is_some_and(|v| !v.is_null() && v.as_u64() != Some(0))
    {
        return refuse(
            "logprobs",
            "token log probabilities are not carried back into a chat answer",
        );
    }
    if set("audio") {
        return refuse("audio", "it answers in text only");
    }
    if req
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|m| m == "audio"))
    {
        return refuse("modalities", "it answers in text only, not audio");
    }
    if req
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|b| !b.is_empty())
    {
        return refuse("logit_bias", "it cannot forbid or favour tokens");
    }
    if set("web_search_options") {
        return refuse(
            "web_search_options",
            "a web search is a tool the provider runs, which the request would have to name",
        );
    }
    for legacy in ["functions", "function_call"] {
        if set(legacy) {
            return refuse(
                legacy,
                "the legacy function calling answers in a shape tools do not",
            );
        }
    }
    Ok(())
}

/// What one chat `data:` payload says, read once for any stream translator.
#[derive(Debug)]
pub(super) enum Payload {
    /// Empty, or not a JSON object: nothing to translate.
    Nothing,
    /// `[DONE]`: the upstream says the answer is whole, even without a finish reason.
    Done,
    /// A chunk with an `error` (not null): the error, an object or a string.
    Error(Value),
    /// A chunk of the answer.
    Chunk(Chunk),
}

/// A chat chunk: its id, time and usage, and what its first choice (`index` 0) adds.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    /// The chunk's `id`, when a string.
    pub(super) id: Option<String>,
    /// The chunk's `created`, when a whole number.
    pub(super) created: Option<u64>,
    /// The chunk's `usage`, when an object.
    pub(super) usage: Option<Value>,
    /// The delta's `content`, when a string (maybe empty).
    pub(super) content: Option<String>,
    /// The delta's `refusal`, when a string (maybe empty).
    pub(super) refusal: Option<String>,
    /// The delta's `tool_calls`, as they came (elements of any type).
    pub(super) tool_calls: Vec<Value>,
    /// The choice's `finish_reason`, when a string that is not empty.
    pub(super) finish: Option<String>,
}

impl Payload {
    /// Reads one payload (surrounding white space ignored).
    pub(super) fn parse(data: &str) -> Self {
        let data = data.trim();
        if data.is_empty() {
            return Self::Nothing;
        }
        if data == "[DONE]" {
            return Self::Done;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(data) else {
            return Self::Nothing;
        };
        if let Some(error) = chunk.remove("error").filter(|e| !e.is_null()) {
            return Self::Error(error);
        }
        let mut choice = take_first_choice(&mut chunk);
        let mut delta = choice.get_mut("delta").map(Value::take).unwrap_or_default();
        let take = |v: &mut Value, k: &str| v.get_mut(k).map(Value::take);
        Self::Chunk(Chunk {
            id: string(chunk.remove("id")),
            created: chunk.get("created").and_then(Value::as_u64),
            usage: chunk.remove("usage").filter(Value::is_object),
            content: string(take(&mut delta, "content")),
            refusal: string(take(&mut delta, "refusal")),
            tool_calls: match take(&mut delta, "tool_calls") {
                Some(Value::Array(calls)) => calls,
                _ => Vec::new(),
            },
            finish: string(take(&mut choice, "finish_reason")).filter(|f| !f.is_empty()),
        })
    }
}

/// The string `v` holds, if it is one.
fn string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Takes the choice of `index` 0 (a choice without an index counts as 0) out of a chunk;
/// `null` when there is none.
fn take_first_choice(chunk: &mut Map<String, Value>) -> Value {
    chunk
        .get_mut("choices")
        .and_then(Value::as_array_mut)
        .and_then(|c| {
            c.iter_mut()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        })
        .map(Value::take)
        .unwrap_or_default()
}

/// The message of a chat error (an `error` object's `message`, the error when it is a string,
/// else the error as JSON).
pub(super) fn error_message(error: &Value) -> String {
    match (error, error.get("message")) {
        (_, Some(Value::String(m))) | (Value::String(m), _) => m.clone(),
        (other, _) => other.to_string(),
    }
}

/// A chat answer's first choice, `null` when it has none.
pub(super) fn first_choice(answer: &Value) -> &Value {
    answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .unwrap_or(&Value::Null)
}

/// The text and the refusal of a chat assistant message: its `content` (a string, or `text` and
/// `refusal` parts) and its `refusal` after.
pub(super) fn text_and_refusal(message: &Value) -> (String, String) {
    let mut text = String::new();
    let mut refusal = String::new();
    match message.get("content") {
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                match kind(p) {
                    "text" => text.push_str(str_at(p, "text")),
                    "refusal" => refusal.push_str(str_at(p, "refusal")),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    refusal.push_str(str_at(message, "refusal"));
    (text, refusal)
}

/// A chat assistant message, each field only when it has something; `content` is `null` when
/// there is no text but a refusal or tool calls, as OpenAI writes it.
pub(super) fn assistant_message(
    text: String,
    refusal: String,
    reasoning: String,
    calls: Vec<Value>,
) -> Value {
    let mut message = json!({"role": "assistant"});
    message["content"] = if text.is_empty() && (!calls.is_empty() || !refusal.is_empty()) {
        Value::Null
    } else {
        Value::from(text)
    };
    if !refusal.is_empty() {
        message["refusal"] = Value::from(refusal);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::from(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

/// Where the reading of a chat stream stands, whatever it is written as.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// The first chunk arrived: the answer was opened.
    pub(super) started: bool,
    /// The finish reason arrived: the end is owed, and waits for the usage that follows it.
    pub(super) finish: Option<String>,
    /// The last usage the upstream reported.
    pub(super) usage: Option<Value>,
    /// The end or an error was written: nothing more follows.
    pub(super) ended: bool,
    /// The index the next chat tool call without one gets.
    next_call: u64,
}

impl Progress {
    /// The chat index of the call that `call` opens (its own, else the next).
    pub(super) fn new_call(&mut self, call: &CallDelta<'_>) -> u64 {
        let number = call.index.unwrap_or(self.next_call);
        self.next_call = self.next_call.max(number.saturating_add(1));
        number
    }
}

/// One element of a chunk's `tool_calls`: a new call, or more arguments of the open one.
#[derive(Debug)]
pub(super) struct CallDelta<'a> {
    /// The call's id, when it has one that is not empty (a new call).
    pub(super) id: Option<&'a str>,
    /// The function's name, or "".
    pub(super) name: &'a str,
    /// More of the arguments, when there are any.
    pub(super) arguments: Option<&'a str>,
    /// The call's chat index, when it has one.
    index: Option<u64>,
}

impl<'a> CallDelta<'a> {
    /// Reads one element of `tool_calls`.
    pub(super) fn of(call: &'a Value) -> Self {
        let function = call.get("function").unwrap_or(&Value::Null);
        Self {
            id: call
                .get("id")
                .and_then(Value::as_str)
                .filter(|i| !i.is_empty()),
            name: str_at(function, "name"),
            arguments: function
                .get("arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty()),
            index: call.get("index").and_then(Value::as_u64),
        }
    }

    /// Whether it continues the open call, of chat index `open`: it has that index, or no
    /// index and no id.
    pub(super) fn continues(&self, open: u64) -> bool {
        self.index.map_or(self.id.is_none(), |i| i == open)
    }
}

/// A stream translator that reads chat chunks. [`read`] and [`end`] decide, the same for every
/// target, when the answer opens, what a chunk adds, and when the answer ends or fails; the
/// writer writes its own API's events.
pub(super) trait ChunkWriter {
    /// Where the reading stands.
    fn progress(&mut self) -> &mut Progress;
    /// Opens the answer, from its first chunk.
    fn open_answer(&mut self, chunk: &Chunk, out: &mut Vec<Event>);
    /// What a chunk before the finish adds: its text, refusal and tool calls.
    fn add(&mut self, chunk: Chunk, out: &mut Vec<Event>);
    /// Closes the open block or item, if one is.
    fn close_open(&mut self, out: &mut Vec<Event>);
    /// Writes the end of the answer (the open part is closed), from the progress's finish
    /// reason and usage.
    fn write_end(&mut self, out: &mut Vec<Event>);
    /// Writes an upstream error (nothing follows it).
    fn write_error(&mut self, error: &Value, out: &mut Vec<Event>);
}

/// One upstream `data:` payload through `writer`: the events it becomes (0..n).
///
/// The first chunk opens the answer; the finish reason closes the open part, and the end
/// waits for the usage chunk (OpenAI sends it last), `[DONE]` or [`end`]. An error ends the
/// stream.
pub(super) fn read(writer: &mut impl ChunkWriter, data: &str) -> Vec<Event> {
    let mut out = Vec::new();
    if writer.progress().ended {
        return out;
    }
    let mut chunk = match Payload::parse(data) {
        Payload::Nothing => return out,
        Payload::Done => {
            if writer.progress().started {
                finish(writer, &mut out);
            }
            return out;
        }
        Payload::Error(error) => {
            writer.progress().ended = true;
            writer.write_error(&error, &mut out);
            return out;
        }
        Payload::Chunk(chunk) => chunk,
    };
    if !writer.progress().started {
        writer.progress().started = true;
        writer.open_answer(&chunk, &mut out);
    }
    let progress = writer.progress();
    let has_usage = chunk.usage.is_some();
    if has_usage {
        progress.usage = chunk.usage.take();
    }
    if progress.finish.is_some() {
        // After the finish only usage is awaited; it ends the answer.
        if has_usage {
            finish(writer, &mut out);
        }
        return out;
    }
    let finished = chunk.finish.take();
    writer.add(chunk, &mut out);
    if finished.is_some() {
        writer.close_open(&mut out);
        writer.progress().finish = finished;
    }
    out
}

/// The upstream stream ended (no more input): the end of the answer if it finished, else
/// nothing (a partial answer is not made to look whole).
pub(super) fn end(writer: &mut impl ChunkWriter) -> Vec<Event> {
    let mut out = Vec::new();
    if writer.progress().finish.is_some() {
        finish(writer, &mut out);
    }
    out
}

/// Ends the answer once: the open part, then the writer's end.
fn finish(writer: &mut impl ChunkWriter, out: &mut Vec<Event>) {
    if writer.progress().ended {
        return;
    }
    writer.progress().ended = true;
    writer.close_open(out);
    writer.write_end(out);
}

/// What every chunk of a chat stream being written repeats: its id, time and model.
#[derive(Debug)]
pub(super) struct ChunkHead {
    /// The chat id (`chatcmpl-...`).
    pub(super) id: String,
    /// The answer's model.
    pub(super) model: Value,
    /// The answer's time, in unix seconds.
    pub(super) created: u64,
}

impl ChunkHead {
    /// A fresh id, no model yet, and now.
    pub(super) fn new() -> Self {
        Self {
            id: chat_id(None),
            model: Value::from(""),
            created: now(),
        }
    }

    /// One chat chunk with this delta and finish reason.
    pub(super) fn chunk(&self, delta: Value, finish: Value) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    }

    /// Takes the id (made a chat id by `chat_id`) and the model (when a string) of the answer
    /// that the upstream opens; returns the first chunk, with the assistant's role.
    pub(super) fn open(&mut self, answer: &Value, chat_id: fn(Option<&str>) -> String) -> String {
        if let Some(id) = answer.get("id").and_then(Value::as_str) {
            self.id = chat_id(Some(id));
        }
        if let Some(model) = answer.get("model").filter(|m| m.is_string()) {
            self.model = model.clone();
        }
        self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    }

    /// A chunk with text in the delta field `field`, or none when the text is empty.
    pub(super) fn text(&self, field: &str, text: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut delta = Map::new();
        delta.insert(field.into(), Value::from(text));
        vec![self.chunk(Value::Object(delta), Value::Null)]
    }

    /// The usage chunk (no choices), `usage` already in chat's terms.
    pub(super) fn usage(&self, usage: Value) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
        .to_string()
    }
}
