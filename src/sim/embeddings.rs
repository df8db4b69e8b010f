//! `POST /v1/embeddings`: OpenAI's embeddings, read into an [`Ask`] and answered with
//! deterministic vectors, in OpenAI's shapes (errors are the chat endpoint's).

use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{Chat, mid_stream_error, read_request};
use super::respond::{Answer, Ask, Events, Failure, Wire, words};

/// The vector length when the request does not ask for one (`dimensions`).
pub const DEFAULT_DIMENSIONS: usize = 16;

/// The part of an embeddings request the sim reads.
#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// One embeddings request: its inputs and the shape it asked for.
#[derive(Debug)]
pub(super) struct Embeddings {
    /// Each input as text (a list of token ids as its JSON).
    inputs: Vec<String>,
    dimensions: usize,
    base64: bool,
}

impl Wire for Embeddings {
    fn events(&self) -> Option<&dyn Events> {
        None
    }

    fn parse(body: &[u8]) -> Result<(Self, Ask), String> {
        let (body, req) = read_request(body, |req: &EmbeddingsRequest| req.model.as_str())?;
        let inputs: Vec<String> = match &req.input {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) if items.first().is_some_and(Value::is_number) => {
                vec![req.input.to_string()]
            }
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if inputs.is_empty() || inputs.iter().any(String::is_empty) {
            return Err("'input' must be a non-empty string or array".into());
        }
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(format!(
                    "'{other}' is not one of ['float', 'base64'] - 'encoding_format'"
                ));
            }
        };
        let dimensions = req.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
        if dimensions == 0 {
            return Err("'dimensions' must be at least 1".into());
        }
        let ask = Ask {
            stream: false,
            max_tokens: None,
            prompt_tokens: inputs.iter().map(|i| words(i)).sum(),
            prefill: None,
            tool: None,
            tool_result: None,
            previous_response: None,
            model: req.model,
            body,
        };
        Ok((
            Embeddings {
                inputs,
                dimensions,
                base64,
            },
            ask,
        ))
    }

    fn failure(failure: &Failure, model: &str) -> Response {
        Chat::failure(failure, model)
    }

    fn body(&self, answer: &Answer) -> Value {
        let data: Vec<Value> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let v = vector(text, self.dimensions);
                let embedding = if self.base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Value::from(base64(&bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        json!({
            "object": "list",
            "data": data,
            "model": answer.model,
            "usage": {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens},
        })
    }

    fn error_body(&self, _answer: &Answer) -> Value {
        json!({"error": mid_stream_error()})
    }
}

/// A unit vector of `n` floats that depends only on `text`: the same input gets the same
/// vector from every sim, as it would from two hosts of one model.
fn vector(text: &str, n: usize) -> Vec<f32> {
    // FNV-1a of the text seeds a xorshift sequence.
    let mut state = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
        .max(1);
    let raw: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The top 24 bits, as a float in [-1, 1).
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    raw.into_iter().map(|x| x / norm).collect()
}

/// Standard base64, padded.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_length_and_depend_only_on_the_text() {
        let a = vector("hello", 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, vector("hello", 16));
        assert_ne!(a, vector("hellp", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn base64_is_standard_and_padded() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&1.0f32.to_le_bytes()), "AACAPw==");
    }

    #[test]
    fn requests_are_read_as_openai_reads_them() {
        let (e, ask) = Embeddings::parse(br#"{"model": "m", "input": ["a b", "c"]}"#).unwrap();
        assert_eq!((e.inputs.len(), e.dimensions, e.base64), (2, 16, false));
        assert_eq!(ask.prompt_tokens, 3);
        let (e, _) = Embeddings::parse(
            br#"{"model": "m", "input": [1, 2], "dimensions": 4, "encoding_format": "base64"}"#,
        )
        .unwrap();
        assert_eq!((e.inputs.len(), e.dimensions, e.base64), (1, 4, true));
        for bad in [
            &br#"{"model": "m"}"#[..],
            br#"{"model": "", "input": "x"}"#,
            br#"{"model": "m", "input": []}"#,
            br#"{"model": "m", "input": "x", "encoding_format": "hex"}"#,
        ] {
            assert!(
                Embeddings::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
