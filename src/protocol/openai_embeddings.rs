//! OpenAI embeddings (`POST {base_url}/embeddings`), for use inside a route's attempts.
//!
//! Failing over between embedding models is only safe between targets that produce the same
//! vectors: two models' vectors cannot be compared, and a search index filled by one model
//! and queried with the other returns nonsense without an error. So the proxy serves
//! embeddings only on routes whose targets all name one upstream model, and this module
//! checks every answer: a vector of another length than the answer's first, a count of
//! vectors that is not the count of inputs, or an answer without vectors is a classified
//! failure ([`Reason::EmptyResponse`]: a 2xx without usable content), never passed on.
//!
//! Only OpenAI-compatible providers serve embeddings; an Anthropic Messages provider has no
//! such endpoint, and an attempt on it fails as
//! [`ineligible`](AttemptFailure::ineligible), having sent nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use llm_failover::protocol::{Client, Endpoint};
//!
//! let client = Client::new()?;
//! let local = Endpoint::new("local", "http://127.0.0.1:11434/v1");
//! let request = serde_json::json!({"input": ["first", "second"]});
//! let answer = client.embeddings(&local, "nomic-embed-text", &request).await?;
//! assert_eq!(answer.count(), 2);
//! println!("{} dimensions", answer.dimensions());
//! # Ok(()) }
//! ```

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::Api;
use super::endpoint::{Client, Endpoint, cut_short};
use crate::Reason;
use crate::chain::AttemptFailure;

/// A checked embeddings answer: the upstream's JSON and the length of its vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    answer: Value,
    dimensions: usize,
    count: usize,
}

impl Embeddings {
    /// The answer as the upstream sent it (`{"object": "list", "data": [...], "usage": ...}`).
    #[must_use]
    pub fn answer(&self) -> &Value {
        &self.answer
    }

    /// The answer, taken.
    #[must_use]
    pub fn into_answer(self) -> Value {
        self.answer
    }

    /// The length of every vector (floats, also for `encoding_format = "base64"`).
    #[must_use]
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// How many vectors the answer holds.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }
}

/// The provider speaks a protocol without embeddings.
#[derive(Debug, thiserror::Error)]
#[error("{api} has no embeddings endpoint")]
pub struct NoEmbeddings {
    api: Api,
}

/// What is wrong with an embeddings answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadEmbeddings {
    /// The answer holds no vectors, or one that is not a list of numbers or base64.
    #[error("the answer holds no readable vectors")]
    Unreadable,
    /// Vectors of different lengths in one answer, or another length than an earlier answer.
    #[error("a vector of {found} dimensions where {expected} were expected")]
    Dimensions {
        /// The length the answer should have had.
        expected: usize,
        /// The length it had.
        found: usize,
    },
    /// Fewer or more vectors than inputs.
    #[error("{found} vectors for {expected} inputs")]
    Count {
        /// The number of inputs.
        expected: usize,
        /// The number of vectors.
        found: usize,
    },
}

impl BadEmbeddings {
    /// As an attempt's failure: a 2xx without usable content, which fails over.
    #[must_use]
    pub fn into_failure(self) -> AttemptFailure {
        AttemptFailure::new(Reason::EmptyResponse).with_source(self)
    }
}

impl Client {
    /// One embeddings request with `model` set: the upstream's answer, checked (see the
    /// [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`AttemptFailure`] for every way the call can fail, classified; ineligible for an
    /// endpoint whose API has no embeddings.
    pub async fn embeddings(
        &self,
        endpoint: &Endpoint,
        model: &str,
        request: &Value,
    ) -> Result<Embeddings, AttemptFailure> {
        let api = endpoint.api_kind();
        if api == Api::AnthropicMessages {
            return Err(AttemptFailure::ineligible(NoEmbeddings { api }));
        }
        let mut body = request.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("model".into(), Value::from(model));
        }
        let resp = self
            .send(endpoint, "/embeddings", &body, HeaderMap::new())
            .await?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| cut_short(e).with_status(status))?;
        let answer = serde_json::from_str::<Value>(&text)
            .map_err(|_| BadEmbeddings::Unreadable.into_failure().with_status(status))?;
        check(answer, inputs(request)).map_err(|e| e.into_failure().with_status(status))
    }
}

/// An embeddings request's tokens, estimated before it is sent, for the targets'
/// tokens-per-minute limits: its `input` as JSON, over 4 bytes a token.
///
/// ```
/// use llm_failover::protocol::openai_embeddings::estimate_tokens;
///
/// let request = serde_json::json!({"input": ["sixteen chars ok", "and sixteen more"]});
/// // 39 bytes of JSON.
/// assert_eq!(estimate_tokens(&request), 39 / 4);
/// ```
#[must_use]
pub fn estimate_tokens(request: &Value) -> u64 {
    super::estimate(request, &["input"], &[])
}

/// How many vectors a request asks for: one per string of `input`, or per list of tokens;
/// `None` when `input` has none of the documented shapes (the upstream then decides).
fn inputs(request: &Value) -> Option<usize> {
    match request.get("input")? {
        Value::String(_) => Some(1),
        Value::Array(items) => match items.first() {
            // A list of token ids is one input.
            Some(Value::Number(_)) => Some(1),
            Some(_) => Some(items.len()),
            None => None,
        },
        _ => None,
    }
}

/// Checks that `answer` holds `expected` vectors (when known) of one length.
pub(crate) fn check(answer: Value, expected: Option<usize>) -> Result<Embeddings, BadEmbeddings> {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or(BadEmbeddings::Unreadable)?;
    let mut lengths = data.iter().map(|item| length(item.get("embedding")?));
    let dimensions = lengths.next().flatten().ok_or(BadEmbeddings::Unreadable)?;
    for found in lengths {
        let found = found.ok_or(BadEmbeddings::Unreadable)?;
        if found != dimensions {
            return Err(BadEmbeddings::Dimensions {
                expected: dimensions,
                found,
            });
        }
    }
    let count = data.len();
    if let Some(expected) = expected.filter(|&n| n != count) {
        return Err(BadEmbeddings::Count {
            expected,
            found: count,
        });
    }
    Ok(Embeddings {
        answer,
        dimensions,
        count,
    })
}

/// The length of one vector: a non-empty list of numbers, or base64 of little-endian f32s.
fn length(embedding: &Value) -> Option<usize> {
    match embedding {
        Value::Array(v) if !v.is_empty() && v.iter().all(Value::is_number) => Some(v.len()),
        Value::String(s) => base64_len(s)
            .filter(|n| *n > 0 && n % 4 == 0)
            .map(|n| n / 4),
        _ => None,
    }
}

/// The decoded length of standard base64, if `s` is base64.
fn base64_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    let body = &b[..b.len() - pad];
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    (pad <= 2 && body.iter().all(alphabet)).then(|| b.len() / 4 * 3 - pad)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inputs_count_strings_and_token_lists() {
        assert_eq!(inputs(&json!({"input": "one"})), Some(1));
        assert_eq!(inputs(&json!({"input": ["a", "b", "c"]})), Some(3));
        assert_eq!(inputs(&json!({"input": [1, 2, 3]})), Some(1));
        assert_eq!(inputs(&json!({"input": [[1, 2], [3]]})), Some(2));
        assert_eq!(inputs(&json!({"input": []})), None);
        assert_eq!(inputs(&json!({})), None);
    }

    #[test]
    fn answers_are_checked_for_one_length_and_one_vector_per_input() {
        let answer = |vectors: Value| json!({"object": "list", "data": vectors});
        let ok = check(
            answer(json!([{"embedding": [0.1, 0.2]}, {"embedding": [0.3, 0.4]}])),
            Some(2),
        )
        .unwrap();
        assert_eq!((ok.dimensions(), ok.count()), (2, 2));
        assert!(matches!(
            check(
                answer(json!([{"embedding": [0.1, 0.2]}, {"embedding": [0.3]}])),
                None
            ),
            Err(BadEmbeddings::Dimensions {
                expected: 2,
                found: 1
            })
        ));
        assert!(matches!(
            check(answer(json!([{"embedding": [0.1]}])), Some(2)),
            Err(BadEmbeddings::Count {
                expected: 2,
                found: 1
            })
        ));
        for bad in [
            json!({"data": []}),
            json!({"data": [{"embedding": []}]}),
            json!({"data": [{"embedding": ["x"]}]}),
            json!({"data": [{"embedding": "not base64!"}]}),
            json!({"error": {"message": "no"}}),
        ] {
            assert!(
                matches!(check(bad.clone(), None), Err(BadEmbeddings::Unreadable)),
                "{bad}"
            );
        }
    }

    #[test]
    fn base64_vectors_count_their_floats() {
        // Three f32s: 12 bytes, 16 base64 characters.
        let three = "AACAPwAAAEAAAEBA";
        let ok = check(json!({"data": [{"embedding": three}]}), Some(1)).unwrap();
        assert_eq!(ok.dimensions(), 3);
        // 1.0f32 alone, padded.
        assert_eq!(base64_len("AACAPw=="), Some(4));
        assert_eq!(base64_len("AAC"), None);
        // Six bytes are not a whole number of f32s.
        assert_eq!(length(&json!("AAAAAAAA")), None);
    }

    #[test]
    fn a_bad_answer_fails_over_as_empty_response() {
        let f = BadEmbeddings::Unreadable.into_failure();
        assert_eq!(f.reason(), Reason::EmptyResponse);
        assert!(!f.is_ineligible());
    }
}
