//! Server-sent events from an upstream, with transport errors already classified.

use std::pin::Pin;

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_core::Stream;
use futures_util::StreamExt as _;

use super::endpoint::cut_short;
use crate::Reason;
use crate::chain::AttemptFailure;

/// A boxed stream of `T`s or the failure that ended it.
pub(crate) type Failing<T> = Pin<Box<dyn Stream<Item = Result<T, AttemptFailure>> + Send>>;

/// The events of a 2xx streaming answer. A body cut short is `stream_interrupted`
/// ([`cut_short`]), as is a body that is not server-sent events; the stream ends after its
/// first failure.
pub(crate) fn events(resp: reqwest::Response) -> Failing<Event> {
    let mut failed = false;
    Box::pin(
        resp.bytes_stream()
            .eventsource()
            .take_while(move |r| {
                let go = !failed;
                failed |= r.is_err();
                std::future::ready(go)
            })
            .map(|r| {
                r.map_err(|e| match e {
                    EventStreamError::Transport(e) => cut_short(e),
                    _ => AttemptFailure::new(Reason::StreamInterrupted),
                })
            }),
    )
}

/// `events` translated one event at a time by `each` (which may fail the stream), then
/// `end()`'s items when `events` ends without a failure. Nothing follows a failure.
pub(crate) fn translated<T: Send + 'static>(
    events: Failing<Event>,
    each: impl FnMut(&Event) -> Result<Vec<T>, AttemptFailure> + Send + 'static,
    end: impl FnOnce() -> Vec<T> + Send + 'static,
) -> Failing<T> {
    struct State<E, F, T> {
        events: Failing<Event>,
        each: E,
        end: Option<F>,
        ready: std::collections::VecDeque<T>,
    }
    let start = State {
        events,
        each,
        end: Some(end),
        ready: std::collections::VecDeque::new(),
    };
    Box::pin(futures_util::stream::unfold(
        Some(start),
        |state| async move {
            let mut s = state?;
            loop {
                if let Some(item) = s.ready.pop_front() {
                    return Some((Ok(item), Some(s)));
                }
                match s.events.next().await {
                    Some(event) => match event.and_then(|e| (s.each)(&e)) {
                        Ok(items) => s.ready.extend(items),
                        Err(f) => return Some((Err(f), None)),
                    },
                    None => match s.end.take() {
                        Some(end) => s.ready.extend(end()),
                        None => return None,
                    },
                }
            }
        },
    ))
}

/// A stream translator shared by the two closures of [`translated`] (each event, and the
/// end).
pub(crate) fn shared<T>(
    translator: T,
) -> (
    std::sync::Arc<std::sync::Mutex<T>>,
    std::sync::Arc<std::sync::Mutex<T>>,
) {
    let each = std::sync::Arc::new(std::sync::Mutex::new(translator));
    let end = std::sync::Arc::clone(&each);
    (each, end)
}

/// The translator, whoever panicked while holding it (nothing it does can leave it half-done
/// in a way that matters more than the stream's own failure).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A translator's `(event name, data)` pairs with owned names.
pub(crate) fn named(events: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    events
        .into_iter()
        .map(|(name, data)| (name.to_owned(), data))
        .collect()
}

/// An event's `data` as JSON; data that is not JSON cut the stream (`stream_interrupted`).
pub(crate) fn json(data: &str) -> Result<serde_json::Value, AttemptFailure> {
    serde_json::from_str(data).map_err(|_| AttemptFailure::new(Reason::StreamInterrupted))
}

/// A stream that holds an upstream's events until one carries a token (or ends the answer),
/// then hands them out together as one chunk: the chain commits on the first token.
pub(crate) trait Grouped {
    /// One upstream event.
    type Event;
    /// The events handed out together.
    type Chunk;

    /// The events, and whether the stream is done.
    fn parts(&mut self) -> (&mut Failing<Self::Event>, &mut bool);

    /// Holds one event; true when the held events are ready to hand out.
    fn take(&mut self, event: Self::Event) -> Result<bool, AttemptFailure>;

    /// The held events, as a chunk.
    fn chunk(&mut self) -> Self::Chunk;

    /// The events still held when the upstream ends: a chunk of them if the answer has a
    /// token already (a usage chunk after the finish, from a server that sends no terminal
    /// marker), else nothing (an answer without a token is no answer). Default: nothing.
    fn rest(&mut self) -> Option<Self::Chunk> {
        None
    }
}

/// `poll_next` of a [`Grouped`] stream: it ends after its first failure.
pub(crate) fn poll_grouped<G: Grouped>(
    g: &mut G,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Option<Result<G::Chunk, AttemptFailure>>> {
    use std::task::Poll;
    if *g.parts().1 {
        return Poll::Ready(None);
    }
    loop {
        let (events, done) = g.parts();
        let event = match events.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                // The held events first: a chunk of them is not final (no marker came).
                let rest = g.rest();
                *g.parts().1 = true;
                return Poll::Ready(rest.map(Ok));
            }
            Poll::Ready(Some(Err(f))) => {
                *done = true;
                return Poll::Ready(Some(Err(f)));
            }
            Poll::Ready(Some(Ok(event))) => event,
        };
        match g.take(event) {
            Ok(false) => {}
            Ok(true) => return Poll::Ready(Some(Ok(g.chunk()))),
            Err(f) => {
                *g.parts().1 = true;
                return Poll::Ready(Some(Err(f)));
            }
        }
    }
}
