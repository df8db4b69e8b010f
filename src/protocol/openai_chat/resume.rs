//! Stream resume for OpenAI-compatible chat: the continuation request and the splice.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{ChatChunk, ChatStream, has_content, prompt_tokens};
use crate::chain::{AttemptContext, AttemptFailure, Opening, Resume, Trail};
use crate::protocol::prefix::Prefix;

/// Whether and how a provider continues an assistant prefill: a chat request whose last
/// message is the assistant's, answered by the rest of that message.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefill {
    /// It does not, or it is not known to: such a target never gets a continuation.
    /// OpenAI's chat API is one: it answers a trailing assistant message anew, so the reader
    /// would get the answer twice. The default for hosts [`Prefill::for_base_url`] does not
    /// know.
    #[default]
    None,
    /// A trailing assistant message is continued as it is: Anthropic, llama.cpp's server,
    /// Ollama.
    Assistant,
    /// vLLM: the trailing assistant message is continued when the request also says
    /// `"continue_final_message": true, "add_generation_prompt": false`.
    ContinueFinalMessage,
}

impl Prefill {
    /// Every mode, in declaration order.
    pub const ALL: [Prefill; 3] = [
        Prefill::None,
        Prefill::Assistant,
        Prefill::ContinueFinalMessage,
    ];

    /// The configuration name: `none`, `assistant` or `continue_final_message`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Prefill::None => "none",
            Prefill::Assistant => "assistant",
            Prefill::ContinueFinalMessage => "continue_final_message",
        }
    }

    /// The mode a base URL's host is known to support: [`Assistant`](Self::Assistant) for
    /// `api.anthropic.com` and for port 11434 (Ollama's), else [`None`](Self::None) (vLLM and
    /// llama.cpp cannot be told from their URL: configure them).
    ///
    /// ```
    /// use llm_failover::protocol::openai_chat::Prefill;
    ///
    /// assert_eq!(Prefill::for_base_url("https://api.anthropic.com/v1"), Prefill::Assistant);
    /// assert_eq!(Prefill::for_base_url("http://127.0.0.1:11434/v1"), Prefill::Assistant);
    /// assert_eq!(Prefill::for_base_url("https://api.openai.com/v1"), Prefill::None);
    /// ```
    #[must_use]
    pub fn for_base_url(base_url: &str) -> Prefill {
        let Ok(url) = reqwest::Url::parse(base_url) else {
            return Prefill::None;
        };
        let anthropic = url
            .host_str()
            .is_some_and(|h| h == "api.anthropic.com" || h.ends_with(".anthropic.com"));
        if anthropic || url.port() == Some(11434) {
            Prefill::Assistant
        } else {
            Prefill::None
        }
    }
}

impl std::fmt::Display for Prefill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Prefill {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Prefill::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown prefill mode {s:?}; use none, assistant or continue_final_message")
            })
    }
}

/// The request fields that limit the completion's tokens.
const LIMITS: [&str; 2] = ["max_completion_tokens", "max_tokens"];

/// Opens a chat stream for an attempt with a request body.
type Open = Box<dyn FnMut(AttemptContext, Arc<Value>) -> Opening<ChatStream> + Send>;

/// The [`Resume`] of an OpenAI-compatible chat stream, for
/// [`Route::resumable_stream`](crate::chain::Route::resumable_stream).
///
/// It follows the text the reader was given. When the stream breaks, the continuation
/// request is the original one with that text appended as the last, assistant message
/// (without its trailing whitespace, which Anthropic rejects; the continuation's leading
/// whitespace makes up for it), `max_tokens` / `max_completion_tokens` reduced by the tokens
/// already streamed (one per content chunk), and for [`Prefill::ContinueFinalMessage`] the
/// two vLLM flags; everything else (tools, temperature, stop sequences) is unchanged. Only
/// targets whose [`Prefill`] is not `None` are asked. An answer that holds more than text (a
/// tool call, a refusal, reasoning, a second choice) is not continued.
///
/// The continuation's chunks reach the reader as part of the same answer: the original `id`
/// and `created`, no second `role`, and on the chunk with the `finish_reason` and on the
/// usage chunk an extension field `failover` (`{"resumed": true, "trail": "..."}`, the trail
/// as in `x-failover-trail`). A usage chunk adds the broken attempt's usage: what it
/// reported, else an estimate (its prompt at 4 bytes a token, one token per content chunk
/// streamed).
pub struct ChatResume {
    request: Arc<Value>,
    prefill: Box<dyn Fn(&str) -> Prefill + Send>,
    open: Open,
    /// The answer's text so far.
    prefix: Prefix,
    /// The usage the broken attempt reported, if it did.
    usage: Option<Value>,
    id: Option<Value>,
    created: Option<Value>,
    /// Only text was sent: a prefill can carry it.
    plain: bool,
}

impl std::fmt::Debug for ChatResume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatResume")
            .field("tokens", &self.prefix.tokens())
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

impl ChatResume {
    /// Resumes streams of `request`: `prefill` says what each provider supports (for
    /// example from its [`Endpoint::prefill_mode`](super::Endpoint::prefill_mode)), and
    /// `open` opens a stream on an attempt's target with a request body (the continuation's),
    /// as the route's own attempts do.
    pub fn new<F, Fut>(
        request: Arc<Value>,
        prefill: impl Fn(&str) -> Prefill + Send + 'static,
        mut open: F,
    ) -> Self
    where
        F: FnMut(AttemptContext, Arc<Value>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<ChatStream, AttemptFailure>> + Send + 'static,
    {
        Self {
            request,
            prefill: Box::new(prefill),
            open: Box::new(move |ctx, body| Box::pin(open(ctx, body))),
            prefix: Prefix::default(),
            usage: None,
            id: None,
            created: None,
            plain: true,
        }
    }

    /// The completion limit the request set, if any.
    fn limit(&self) -> Option<u64> {
        LIMITS
            .into_iter()
            .filter_map(|k| self.request.get(k)?.as_u64())
            .min()
    }

    /// The usage of the broken attempt: reported, else estimated.
    fn spent(&self) -> (u64, u64) {
        let field = |k: &str| self.usage.as_ref().and_then(|u| u.get(k)?.as_u64());
        match (field("prompt_tokens"), field("completion_tokens")) {
            (Some(p), Some(c)) => (p, c),
            _ => (prompt_tokens(&self.request), self.prefix.tokens()),
        }
    }

    /// Fits one continuation event into the answer; `None` when nothing is left of it.
    fn splice_event(&mut self, event: &str, trail: &Trail) -> Option<String> {
        let Ok(Value::Object(mut v)) = serde_json::from_str::<Value>(event) else {
            return Some(event.to_owned());
        };
        for (k, original) in [("id", &self.id), ("created", &self.created)] {
            if let Some(o) = original {
                v.insert(k.into(), o.clone());
            }
        }
        let mut keep = false;
        let mut last = false;
        if let Some(choice) = v
            .get_mut("choices")
            .and_then(|c| c.get_mut(0))
            .and_then(Value::as_object_mut)
        {
            if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                delta.remove("role");
                let content = delta.get("content").and_then(Value::as_str);
                if let Some(rest) = content.and_then(|c| self.prefix.pay(c)) {
                    delta.insert("content".into(), Value::from(rest));
                }
                keep |= has_content(&Value::Object(delta.clone()));
            }
            last = choice.get("finish_reason").is_some_and(|r| !r.is_null());
        }
        let no_choices = v
            .get("choices")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if let Some(usage) = v.get_mut("usage").filter(|u| u.is_object()) {
            // Usage is cumulative (some servers send it on every chunk): each gets the broken
            // attempt's added. The usage chunk proper (no choices) is the last of an answer.
            let (prompt, completion) = self.spent();
            add(usage, "prompt_tokens", prompt);
            add(usage, "completion_tokens", completion);
            add(usage, "total_tokens", prompt + completion);
            last |= no_choices;
        }
        if last {
            v.insert(
                "failover".into(),
                json!({"resumed": true, "trail": trail.to_string()}),
            );
        }
        (keep || last).then(|| Value::Object(v).to_string())
    }
}

/// `usage[key] += n`.
fn add(usage: &mut Value, key: &str, n: u64) {
    let was = usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    usage[key] = Value::from(was + n);
}

impl Resume<ChatChunk, ChatStream> for ChatResume {
    fn sent(&mut self, chunk: &ChatChunk) {
        for d in chunk.data() {
            let Ok(v) = serde_json::from_str::<Value>(d) else {
                continue;
            };
            if self.id.is_none() {
                self.id = v.get("id").cloned();
                self.created = v.get("created").cloned();
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                self.usage = Some(u.clone());
            }
            let choices = v.get("choices").and_then(Value::as_array);
            for choice in choices.into_iter().flatten() {
                if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                    self.plain = false;
                }
                let Some(delta) = choice.get("delta") else {
                    continue;
                };
                if let Some(text) = delta.get("content").and_then(Value::as_str) {
                    self.prefix.push(text);
                }
                let mut other = delta.clone();
                if let Some(o) = other.as_object_mut() {
                    o.remove("content");
                }
                self.plain &= !has_content(&other);
            }
        }
    }

    fn continuable(&self) -> bool {
        let one_choice = self
            .request
            .get("n")
            .and_then(Value::as_u64)
            .is_none_or(|n| n <= 1);
        self.plain && one_choice && self.prefix.continuable(self.limit())
    }

    fn accepts(&self, provider: &str, _model: &str) -> bool {
        (self.prefill)(provider) != Prefill::None
    }

    fn open(&mut self, attempt: AttemptContext) -> Opening<ChatStream> {
        let mut body = (*self.request).clone();
        let prefill = self.prefix.prefill();
        if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
            // A request that ends with its own prefill gets the text appended to it: the
            // provider continues only the last message.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" && last["content"].is_string() => {
                    let own = last["content"].as_str().unwrap_or_default();
                    last["content"] = Value::from(format!("{own}{prefill}"));
                }
                _ => messages.push(json!({"role": "assistant", "content": prefill})),
            }
        }
        let vllm = (self.prefill)(attempt.provider()) == Prefill::ContinueFinalMessage;
        if let Some(obj) = body.as_object_mut() {
            for key in LIMITS {
                if let Some(max) = obj.get(key).and_then(Value::as_u64) {
                    obj.insert(key.into(), Value::from(self.prefix.left_of(max)));
                }
            }
            if vllm {
                obj.insert("continue_final_message".into(), Value::Bool(true));
                obj.insert("add_generation_prompt".into(), Value::Bool(false));
            }
        }
        let opening = (self.open)(attempt, Arc::new(body));
        Box::pin(async move {
            // The answer has its tokens already: a continuation that only finishes it (the
            // break came after its last token) is whole, not empty.
            let mut stream = opening.await?;
            stream.group.answered = true;
            Ok(stream)
        })
    }

    fn splice(&mut self, chunk: ChatChunk, trail: &Trail) -> Option<ChatChunk> {
        let data: Vec<String> = chunk
            .data
            .iter()
            .filter_map(|d| {
                if d.trim() == "[DONE]" {
                    Some(d.clone())
                } else {
                    self.splice_event(d, trail)
                }
            })
            .collect();
        (!data.is_empty()).then_some(ChatChunk { data, ..chunk })
    }
}
