//! A committed stream as server-sent events: the upstream's events as they come, then the
//! protocol's end (`[DONE]`, `message_stop`), or an error event and no end when the answer
//! broke.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use futures_core::Stream;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::access_log::{AccessLog, StreamEnd};
use super::error::{failover_body, shutdown_body};
use crate::chain::{Chunk, FailoverStream};
use crate::protocol::anthropic_messages::MessagesChunk;
use crate::protocol::openai_chat::ChatChunk;
use crate::protocol::openai_responses::ResponsesChunk;

/// How a protocol's chunks go out as server-sent events.
pub(super) trait Wire: Chunk {
    /// Writes the chunk's events to `out`, `before_end` just before the protocol's terminal
    /// event if the chunk has it; true if it had.
    fn write(&self, out: &mut Vec<u8>, before_end: &[u8]) -> bool;

    /// The terminal event, for a complete answer whose upstream did not send one.
    const END: &'static str;

    /// The error event that ends a broken stream, from the proxy's (OpenAI-shaped) error.
    fn error(body: &serde_json::Value) -> Bytes;
}

impl Wire for ChatChunk {
    fn write(&self, out: &mut Vec<u8>, before_end: &[u8]) -> bool {
        let mut end = false;
        for d in self.data() {
            if d.trim() == "[DONE]" {
                end = true;
                out.extend_from_slice(before_end);
            }
            out.extend_from_slice(&event(None, d));
        }
        end
    }

    const END: &'static str = "data: [DONE]\n\n";

    fn error(body: &serde_json::Value) -> Bytes {
        event(None, &body.to_string())
    }
}

impl Wire for MessagesChunk {
    fn write(&self, out: &mut Vec<u8>, before_end: &[u8]) -> bool {
        let mut end = false;
        for (name, data) in self.events() {
            if name == "message_stop" {
                end = true;
                out.extend_from_slice(before_end);
            }
            out.extend_from_slice(&event(Some(name), data));
        }
        end
    }

    const END: &'static str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn error(body: &serde_json::Value) -> Bytes {
        let (_, shaped) = super::error::anthropic_shape(axum::http::StatusCode::BAD_GATEWAY, body);
        event(Some("error"), &shaped.to_string())
    }
}

impl Wire for ResponsesChunk {
    fn write(&self, out: &mut Vec<u8>, before_end: &[u8]) -> bool {
        let mut end = false;
        for (name, data) in self.events() {
            if name == "response.completed" || name == "response.incomplete" {
                end = true;
                out.extend_from_slice(before_end);
            }
            out.extend_from_slice(&event(Some(name), data));
        }
        end
    }

    /// Nothing: a Responses answer is complete only at its terminal event, which carries the
    /// whole response and cannot be made up.
    const END: &'static str = "";

    /// An `error` event with the Responses API's fields (`code`, `message`, `param`) and the
    /// whole error object as `error`, which the OpenAI SDKs raise as `APIError`.
    fn error(body: &serde_json::Value) -> Bytes {
        let error = &body["error"];
        let data = serde_json::json!({
            "type": "error",
            "code": error["code"],
            "message": error["message"],
            "param": null,
            "error": error,
        });
        event(Some("error"), &data.to_string())
    }
}

/// A stream being relayed.
struct Relay<C, S> {
    upstream: FailoverStream<C, S>,
    cut: watch::Receiver<bool>,
    scrub: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// The upstream's `[DONE]` has gone out.
    done_sent: bool,
    /// The request's access log, written when the stream ends.
    log: AccessLog,
}

impl<C, S> Relay<C, S>
where
    C: Chunk,
    S: Stream<Item = Result<C, crate::chain::AttemptFailure>> + Unpin,
{
    /// For a resumed stream, a comment line with the whole trail (the `x-failover-trail`
    /// header went out before the resume): before the `[DONE]` or the error event.
    fn trail_comment(&self) -> Bytes {
        if !self.upstream.resumed() {
            return Bytes::new();
        }
        Bytes::from(format!(
            ": {}: {}\n",
            super::headers::TRAIL,
            self.upstream.trail()
        ))
    }
}

fn event(name: Option<&str>, data: &str) -> Bytes {
    let mut b = String::with_capacity(data.len() + 8);
    if let Some(name) = name {
        b.push_str("event: ");
        b.push_str(name);
        b.push('\n');
    }
    b.push_str("data: ");
    b.push_str(data);
    b.push_str("\n\n");
    Bytes::from(b)
}

/// The SSE body of a committed stream. It ends with the protocol's terminal event (`[DONE]`,
/// `message_stop`) only when the answer is complete (the proxy sends it if the upstream
/// ended a complete answer without one); a break ends it with one error event whose body
/// names the attempts; the end of the shutdown grace period ends it with a `shutting_down`
/// error. A stream resumed on another target has a comment line `: x-failover-trail: ...`
/// before its end. `scrub` removes keys from upstream text.
pub(super) fn body<C, S>(
    upstream: FailoverStream<C, S>,
    cut: watch::Receiver<bool>,
    scrub: Arc<dyn Fn(&str) -> String + Send + Sync>,
    log: AccessLog,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send
where
    C: Wire + Unpin + Send + 'static,
    S: Stream<Item = Result<C, crate::chain::AttemptFailure>> + Unpin + Send + 'static,
{
    let start = Some(Relay {
        upstream,
        cut,
        scrub,
        done_sent: false,
        log,
    });
    futures_util::stream::unfold(start, |relay| async move {
        let mut r = relay?;
        let next = tokio::select! {
            biased;
            Ok(_) = r.cut.wait_for(|c| *c) => {
                r.log.stream_ended(StreamEnd::Shutdown, &r.upstream.trail().to_string());
                return Some((Ok(C::error(&shutdown_body())), None));
            }
            next = r.upstream.next() => next,
        };
        match next {
            Some(Ok(chunk)) => {
                let mut out = Vec::new();
                let before_end = r.trail_comment();
                r.done_sent |= chunk.write(&mut out, &before_end);
                Some((Ok(Bytes::from(out)), Some(r)))
            }
            Some(Err(e)) => {
                r.log
                    .stream_ended(StreamEnd::Broken, &r.upstream.trail().to_string());
                let body = failover_body(&e, &*r.scrub);
                let mut out = r.trail_comment().to_vec();
                out.extend_from_slice(&C::error(&body));
                Some((Ok(Bytes::from(out)), None))
            }
            None if r.done_sent => {
                r.log
                    .stream_ended(StreamEnd::Complete, &r.upstream.trail().to_string());
                None
            }
            None => {
                r.log
                    .stream_ended(StreamEnd::Complete, &r.upstream.trail().to_string());
                let mut out = r.trail_comment().to_vec();
                out.extend_from_slice(C::END.as_bytes());
                Some((Ok(Bytes::from(out)), None))
            }
        }
    })
}
