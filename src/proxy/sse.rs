//! A committed stream as server-sent events: the upstream's events as they come, then
//! `[DONE]`, or an `error` event and no `[DONE]` when the answer broke.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use futures_core::Stream;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::error::{failover_body, shutdown_body};
use crate::chain::FailoverStream;
use crate::protocol::openai_chat::{ChatChunk, ChatStream};

/// A stream being relayed.
struct Relay {
    upstream: FailoverStream<ChatChunk, ChatStream>,
    cut: watch::Receiver<bool>,
    scrub: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// The upstream's `[DONE]` has gone out.
    done_sent: bool,
}

impl Relay {
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

fn event(data: &str) -> Bytes {
    let mut b = String::with_capacity(data.len() + 8);
    b.push_str("data: ");
    b.push_str(data);
    b.push_str("\n\n");
    Bytes::from(b)
}

/// The SSE body of a committed stream. It ends with `[DONE]` only when the answer is
/// complete (the proxy sends it if the upstream ended with a `finish_reason` but without
/// one); a break ends it with one `error` event whose body names the attempts; the end of
/// the shutdown grace period ends it with a `shutting_down` error. A stream resumed on
/// another target has a comment line `: x-failover-trail: ...` before its end. `scrub`
/// removes keys from upstream text.
pub(super) fn body(
    upstream: FailoverStream<ChatChunk, ChatStream>,
    cut: watch::Receiver<bool>,
    scrub: Arc<dyn Fn(&str) -> String + Send + Sync>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let start = Some(Relay {
        upstream,
        cut,
        scrub,
        done_sent: false,
    });
    futures_util::stream::unfold(start, |relay| async move {
        let mut r = relay?;
        let next = tokio::select! {
            biased;
            Ok(_) = r.cut.wait_for(|c| *c) => {
                return Some((Ok(event(&shutdown_body().to_string())), None));
            }
            next = r.upstream.next() => next,
        };
        match next {
            Some(Ok(chunk)) => {
                let mut out = Vec::new();
                for d in chunk.data() {
                    if d.trim() == "[DONE]" {
                        r.done_sent = true;
                        out.extend_from_slice(&r.trail_comment());
                    }
                    out.extend_from_slice(&event(d));
                }
                Some((Ok(Bytes::from(out)), Some(r)))
            }
            Some(Err(e)) => {
                let body = failover_body(&e, &*r.scrub);
                let mut out = r.trail_comment().to_vec();
                out.extend_from_slice(&event(&body.to_string()));
                Some((Ok(Bytes::from(out)), None))
            }
            None if r.done_sent => None,
            None => {
                let mut out = r.trail_comment().to_vec();
                out.extend_from_slice(&event("[DONE]"));
                Some((Ok(Bytes::from(out)), None))
            }
        }
    })
}
