//! Structured evidence inside response bodies and messages: providers' JSON error objects and
//! the statuses that text states.
//!
//! JSON error shapes read here. Only the fields that carry a code, a status, a message or a
//! wait are decoded; everything else is skipped. When a body is such a JSON object, its
//! message fields are the text that is scanned, not the whole document with its ids and
//! padding.
//!
//! | provider | shape |
//! |---|---|
//! | OpenAI, Mistral, vLLM, llama.cpp | `{"error": {"type", "code", "message"}}` (`code` may be a number) |
//! | OpenRouter | `{"error": {"code": 429, "message", "metadata": {"raw": "<upstream body>"}}}` |
//! | Anthropic | `{"type": "error", "error": {"type": "overloaded_error", "message"}}` |
//! | Google | `{"error": {"code": 503, "status": "UNAVAILABLE", "message", "details": [{"retryDelay": "7s"}]}}`, sometimes inside `[...]` |
//! | Ollama, TGI | `{"error": "model 'x' not found", "error_type"}` |
//! | Bedrock | `{"__type": "ThrottlingException", "message"}` |
//! | FastAPI servers | `{"detail": "..."}` |
//! | Baidu, Zhipu and others | `{"error_code": 110, "error_msg": "..."}`, `{"code": 1301, "msg": "..."}` |
//! | MiniMax | `{"base_resp": {"status_code": 1002, "status_msg": "..."}}` (often under a 200) |
//!
//! A number in `code` or `status_code` from 100 to 599 is an HTTP status; any other number
//! there, and every `error_code`, is the provider's own code.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The most codes, and the most messages, kept from one JSON document.
const MAX_FIELDS: usize = 6;
/// JSON documents larger than this are not decoded (their text is scanned raw).
const MAX_JSON: usize = 256 * 1024;
/// How deep nested error objects are followed (`error.metadata.raw` is two levels).
const MAX_NESTING: usize = 4;

/// What a JSON error object says in structured fields.
#[derive(Debug, Default)]
pub(crate) struct Structured<'a> {
    /// String values of `type`, `code`, `status`, `__type`, `error_type` (outer and inner), and
    /// providers' numeric codes as digits.
    pub(crate) codes: Vec<Cow<'a, str>>,
    /// A numeric `code` or `status` that is an HTTP status (Google, OpenRouter, vLLM).
    pub(crate) status: Option<u16>,
    /// `message`, `error` (as a string), `detail`, `metadata.raw`, `msg`, `error_msg`,
    /// `status_msg`.
    pub(crate) messages: Vec<Cow<'a, str>>,
    /// Google's `RetryInfo.retryDelay` ("7s").
    pub(crate) retry_delay: Option<Cow<'a, str>>,
}

impl<'a> Structured<'a> {
    fn code(&mut self, v: Field<'a>) {
        match v {
            Field::Str(s) if !s.is_empty() && self.codes.len() < MAX_FIELDS => {
                self.codes.push(s);
            }
            Field::Num(n) => match u16::try_from(n) {
                Ok(s) if (100..=599).contains(&s) => {
                    if self.status.is_none() {
                        self.status = Some(s);
                    }
                }
                // A provider's own number (Zhipu's 1302, MiniMax's 1002): a code.
                _ => self.number(n),
            },
            Field::Str(_) | Field::Object(_) | Field::Other => {}
        }
    }

    /// A numeric code that is never a status (Baidu's `error_code`, whose 110 is a bad token).
    fn number(&mut self, n: u64) {
        if self.codes.len() < MAX_FIELDS {
            self.codes.push(Cow::Owned(n.to_string()));
        }
    }

    fn numeric_code(&mut self, v: Field<'a>) {
        match v {
            Field::Num(n) => self.number(n),
            other => self.code(other),
        }
    }

    fn message(&mut self, v: Field<'a>) {
        if let Field::Str(s) = v
            && !s.is_empty()
            && self.messages.len() < MAX_FIELDS
        {
            self.messages.push(s);
        }
    }

    /// Takes what `o` says (its fields are left empty): taking field by field moves a few
    /// words each, where moving the object would copy all of its fields.
    fn object(&mut self, o: &mut Obj<'a>, depth: usize) {
        use std::mem::take;
        let kind = take(&mut o.kind);
        // A top-level "type" of "error" (Anthropic's envelope) says nothing.
        if !(depth == 0 && matches!(&kind, Field::Str(s) if s == "error")) {
            self.code(kind);
        }
        for v in [
            &mut o.code,
            &mut o.status,
            &mut o.aws_type,
            &mut o.error_type,
            &mut o.status_code,
        ] {
            self.code(take(v));
        }
        self.numeric_code(take(&mut o.error_code));
        for v in [
            &mut o.message,
            &mut o.message_caps,
            &mut o.detail,
            &mut o.raw,
            &mut o.msg,
            &mut o.error_msg,
            &mut o.status_msg,
        ] {
            self.message(take(v));
        }
        if let Field::Str(d) = take(&mut o.retry_delay)
            && self.retry_delay.is_none()
        {
            self.retry_delay = Some(d);
        }
        for nested in [
            &mut o.error,
            &mut o.metadata,
            &mut o.details,
            &mut o.base_resp,
        ] {
            match take(nested) {
                Field::Object(mut inner) if depth < MAX_NESTING => {
                    self.object(&mut inner, depth + 1);
                }
                // `"error": "model 'x' not found"` (Ollama, TGI).
                Field::Str(text) => self.message(Field::Str(text)),
                Field::Object(_) | Field::Num(_) | Field::Other => {}
            }
        }
    }
}

/// Reads the first JSON object in `text` (a body, or a message such as `429 {...}` or
/// `Codex error: {...}`) into `out`. Returns whether `text` was such an object from its
/// first character, so that its message fields can stand for its text. Text that holds no
/// JSON object adds nothing.
pub(crate) fn read_json<'a>(text: &'a str, out: &mut Structured<'a>) -> bool {
    let Some(start) = text.find(['{', '[']) else {
        return false;
    };
    let mut json = &text[start..];
    if json.len() > MAX_JSON {
        return false;
    }
    // Some providers (Gemini) wrap the error object in an array: read its first element.
    if let Some(rest) = json.strip_prefix('[') {
        json = rest.trim_start();
    }
    let mut stream = serde_json::Deserializer::from_str(json).into_iter::<Obj<'a>>();
    let Some(Ok(mut obj)) = stream.next() else {
        return false;
    };
    out.object(&mut obj, 0);
    text[..start].trim().is_empty()
}

/// The status a text states, if it states one in a status context.
///
/// "HTTP 503", "status: 429", "API error (503)", "error code 402", "returned 402", "got a
/// 402", and a message that starts with a status ("429 Too Many Requests", "400 status code
/// (no body)", "503: ..."), never a number inside an id or prose ("req-4291", "Processed 503
/// documents", "402 items found"), nor after a bare "code": providers number their own errors
/// ("code:500" next to `"status": "INTERNAL"`, Baidu's and Zhipu's numeric codes). Only 4xx and
/// 5xx count: a 2xx in text is not a failure.
pub(crate) fn status_in_text(text: &str) -> Option<u16> {
    let from = |m: Option<regex::Match<'_>>| {
        m.and_then(|m| m.as_str().parse::<u16>().ok())
            .filter(|s| (400..=599).contains(s))
    };
    if let Some(c) = LEADING_STATUS.captures(text) {
        let counted = c.get(2).is_some_and(|w| {
            COUNT_NOUNS
                .iter()
                .any(|n| n.eq_ignore_ascii_case(w.as_str()))
        });
        if !counted && let Some(s) = from(c.get(1)) {
            return Some(s);
        }
    }
    STATUS_IN_TEXT
        .captures_iter(text)
        .find_map(|c| from(c.get(1)))
}

/// The `<title>` of an HTML page ("502 Bad Gateway").
pub(crate) fn html_title(body: &str) -> Option<&str> {
    let c = HTML_TITLE.captures(body)?;
    Some(c.get(1)?.as_str().trim())
}

/// Words after a leading number that make it a count, not a status ("402 items found").
const COUNT_NOUNS: &[&str] = &[
    "items",
    "documents",
    "docs",
    "rows",
    "records",
    "files",
    "results",
    "entries",
    "users",
    "tokens",
    "bytes",
    "times",
    "pages",
    "lines",
    "words",
    "characters",
    "chars",
    "points",
];

static LEADING_STATUS: LazyLock<Regex> = LazyLock::new(|| {
    super::fixed_regex(r"^\s*(\d{3})(?:\s*$|[:{(<\[,;]|\s+([A-Za-z]+)|\s+(?u:[^A-Za-z\s]))")
});

static STATUS_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    super::fixed_regex(
        r"(?i)(?:\bhttp(?:/[\d.]+)?|\bstatus(?:[ _]code)?|\berror[ _]code|\breturned|\bgot(?: an?)?|\berror)\s*[:=]?\s*\(?\s*(\d{3})\b",
    )
});

static HTML_TITLE: LazyLock<Regex> =
    LazyLock::new(|| super::fixed_regex(r"(?i)<title(?u:[^>]){0,100}>((?u:[^<]){1,200})<"));

// ── The JSON shapes, decoded without buffering. ─────────────────────────────────────────

/// Any object of an error document: the envelope, `error`, `metadata`, an item of `details`,
/// MiniMax's `base_resp`.
#[derive(Deserialize)]
struct Obj<'a> {
    #[serde(borrow, default)]
    error: Field<'a>,
    #[serde(borrow, default)]
    metadata: Field<'a>,
    #[serde(borrow, default)]
    details: Field<'a>,
    #[serde(borrow, default, rename = "type")]
    kind: Field<'a>,
    #[serde(borrow, default)]
    code: Field<'a>,
    #[serde(borrow, default)]
    status: Field<'a>,
    #[serde(borrow, default, rename = "__type")]
    aws_type: Field<'a>,
    #[serde(borrow, default)]
    error_type: Field<'a>,
    #[serde(borrow, default)]
    message: Field<'a>,
    #[serde(borrow, default, rename = "Message")]
    message_caps: Field<'a>,
    #[serde(borrow, default)]
    detail: Field<'a>,
    #[serde(borrow, default)]
    raw: Field<'a>,
    #[serde(borrow, default)]
    msg: Field<'a>,
    #[serde(borrow, default)]
    error_msg: Field<'a>,
    #[serde(borrow, default)]
    error_code: Field<'a>,
    #[serde(borrow, default)]
    base_resp: Field<'a>,
    #[serde(borrow, default)]
    status_code: Field<'a>,
    #[serde(borrow, default)]
    status_msg: Field<'a>,
    #[serde(borrow, default, rename = "retryDelay")]
    retry_delay: Field<'a>,
}

/// A field's value: a string, a number, an object, or anything else, which is skipped. An
/// array stands for its first object with a `retryDelay` (Google's `details`).
#[derive(Default)]
enum Field<'a> {
    Str(Cow<'a, str>),
    Num(u64),
    Object(Box<Obj<'a>>),
    #[default]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Num(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<Self::Value, M::Error> {
                Obj::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|o| Field::Object(Box::new(o)))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut s: S) -> Result<Self::Value, S::Error> {
                let mut first = Field::Other;
                while let Some(item) = s.next_element::<Field<'a>>()? {
                    if let Field::Object(o) = &item
                        && matches!(first, Field::Other)
                        && !matches!(o.retry_delay, Field::Other)
                    {
                        first = item;
                    }
                }
                Ok(first)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<String>, Option<u16>) {
        let mut s = Structured::default();
        read_json(text, &mut s);
        (s.codes.iter().map(|c| c.to_string()).collect(), s.status)
    }

    #[test]
    fn messages_and_delays_are_extracted() {
        let mut s = Structured::default();
        let doc = r#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"x.Help"},{"@type":"x.RetryInfo","retryDelay":"37s"}]}}]"#;
        assert!(read_json(doc, &mut s));
        assert_eq!(s.messages, ["Quota exceeded"]);
        assert_eq!(s.retry_delay.as_deref(), Some("37s"));
        let mut s = Structured::default();
        let doc = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"upstream: rate limit","provider_name":"X"}}}"#;
        assert!(read_json(doc, &mut s));
        assert_eq!(
            s.messages,
            ["Provider returned error", "upstream: rate limit"]
        );
        assert_eq!(s.status, Some(429));
        let mut s = Structured::default();
        assert!(read_json(
            r#"{"error":"model 'x' not found","error_type":"not_found"}"#,
            &mut s
        ));
        assert_eq!(
            (s.messages[0].as_ref(), s.codes[0].as_ref()),
            ("model 'x' not found", "not_found")
        );
        // JSON after a prefix is read, but the text is not a JSON document.
        let mut s = Structured::default();
        assert!(!read_json(
            r#"429 {"error":{"type":"rate_limit_error"}}"#,
            &mut s
        ));
        assert_eq!(s.codes, ["rate_limit_error"]);
        assert!(!read_json("no json here", &mut Structured::default()));
    }

    #[test]
    fn provider_shapes() {
        let (codes, status) = read(
            r#"{"error":{"message":"x","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(codes, ["invalid_request_error", "context_length_exceeded"]);
        assert_eq!(status, None);
        let (codes, _) = read(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"r"}"#,
        );
        assert_eq!(codes, ["overloaded_error"]);
        let (codes, status) = read(
            r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
        );
        assert_eq!((codes, status), (vec!["UNAVAILABLE".to_owned()], Some(503)));
        let (codes, status) = read(r#"[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}]"#);
        assert_eq!(
            (codes, status),
            (vec!["RESOURCE_EXHAUSTED".to_owned()], Some(429))
        );
        let (codes, _) = read(r#"{"error":"model 'llama3' not found, try pulling it first"}"#);
        assert!(codes.is_empty());
        let (codes, _) = read(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#);
        assert_eq!(codes, ["ThrottlingException"]);
        // zai: a four-digit code is not an HTTP status.
        let (_, status) = read(r#"429 status code {"code":1305,"message":"busy"}"#);
        assert_eq!(status, None);
        let (codes, _) = read(
            r#"Codex error: {"type":"error","error":{"type":"server_error","code":"server_error"},"sequence_number":2}"#,
        );
        assert_eq!(codes, ["server_error", "server_error"]);
        let (codes, _) = read(r#"{"error":{"type":"a\u0027b","details":[{"x":1}],"code":null}}"#);
        assert_eq!(codes, ["a'b"]);
    }

    #[test]
    fn malformed_json_adds_nothing() {
        for text in [
            "{",
            "{\"error\":",
            "[[[[",
            "{\"error\":{\"type\":",
            "not json",
            "{}}}",
        ] {
            let (codes, status) = read(text);
            assert!(codes.is_empty() && status.is_none(), "{text}");
        }
    }

    #[test]
    fn status_only_in_status_context() {
        let yes = [
            ("HTTP 503", 503),
            ("status: 429", 429),
            (
                "Mistral API error (503): service temporarily unavailable",
                503,
            ),
            ("error code 402", 402),
            ("returned 402", 402),
            ("got a 402 from the API", 402),
            ("http 402", 402),
            ("429 Too Many Requests", 429),
            ("400 status code (no body)", 400),
            ("503: temporary provider response", 503),
            ("521 <!DOCTYPE html>", 521),
            ("429 {\"error\":{}}", 429),
            ("403 concurrency limit breached", 403),
            ("410", 410),
            ("HTTP/1.1 502 Bad Gateway", 502),
            ("Error code 522", 522),
        ];
        for (text, status) in yes {
            assert_eq!(status_in_text(text), Some(status), "{text}");
        }
        let no = [
            "request id req-4291 failed",
            "Processed 503 documents",
            "402 items found in the database",
            "Book a 402 room",
            "Fixed issue CHE-402 in the latest release",
            "LLM error 1310: Weekly/Monthly Limit Exhausted",
            "status: 200",
            "4290",
        ];
        for text in no {
            assert_eq!(status_in_text(text), None, "{text}");
        }
    }

    #[test]
    fn titles() {
        let page = "<!doctype html><html><head><title>502 Bad Gateway</title></head></html>";
        assert_eq!(html_title(page), Some("502 Bad Gateway"));
        assert_eq!(html_title("no html"), None);
    }
}
