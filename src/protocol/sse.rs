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

/// The named events of a client's protocol, written from chat completions' `data:` payloads
/// by `writer` (`ChatToMessages`, `ChatToResponses`) through its `data` and `end`.
pub(crate) struct FromChat<W> {
    pub(crate) writer: W,
    pub(crate) data: fn(&mut W, &str) -> Vec<(&'static str, String)>,
    pub(crate) end: fn(&mut W) -> Vec<(&'static str, String)>,
}

/// `events` (of any protocol) translated into a client's named events through chat
/// completions: `to_chat` turns each upstream event into chat `data:` payloads (the payload
/// itself, for a chat upstream), and `from` writes the client's events from them, and its
/// end when `events` ends without a failure.
pub(crate) fn through_chat<W: Send + 'static>(
    events: Failing<Event>,
    mut to_chat: impl FnMut(&Event) -> Result<Vec<String>, AttemptFailure> + Send + 'static,
    from: FromChat<W>,
) -> Failing<(String, String)> {
    let named = |events: Vec<(&'static str, String)>| -> Vec<(String, String)> {
        events
            .into_iter()
            .map(|(name, data)| (name.to_owned(), data))
            .collect()
    };
    let FromChat { writer, data, end } = from;
    // Both closures write with the one writer: each event, then the end.
    let each = std::sync::Arc::new(std::sync::Mutex::new(writer));
    let last = std::sync::Arc::clone(&each);
    translated(
        events,
        move |e| {
            let payloads = to_chat(e)?;
            let mut w = lock(&each);
            Ok(named(
                payloads.iter().flat_map(|d| data(&mut w, d)).collect(),
            ))
        },
        move || named(end(&mut lock(&last))),
    )
}

/// The writer, whoever panicked while holding it (nothing it does can leave it half-done in
/// a way that matters more than the stream's own failure).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An event's `data` as JSON; data that is not JSON cut the stream (`stream_interrupted`).
pub(crate) fn json(data: &str) -> Result<serde_json::Value, AttemptFailure> {
    serde_json::from_str(data).map_err(|_| AttemptFailure::new(Reason::StreamInterrupted))
}

/// What every grouped stream keeps: the upstream's events, who sends them (to classify their
/// error events), the events held until one carries a token, and how far the answer got.
pub(crate) struct Group<E> {
    events: Failing<E>,
    provider: std::sync::Arc<str>,
    classifier: std::sync::Arc<crate::classify::Classifier>,
    /// Events that carry no token yet, waiting for one that does.
    pub(crate) pending: Vec<E>,
    /// A token has arrived.
    pub(crate) answered: bool,
    /// The stream is done: its terminal event came, or its end, or a failure.
    pub(crate) done: bool,
}

impl<E> Group<E> {
    /// The group of `events` from `endpoint`, whose error events `classifier` reads.
    pub(crate) fn new(
        events: Failing<E>,
        endpoint: &super::Endpoint,
        classifier: &std::sync::Arc<crate::classify::Classifier>,
    ) -> Self {
        Self {
            events,
            provider: std::sync::Arc::clone(&endpoint.provider),
            classifier: std::sync::Arc::clone(classifier),
            pending: Vec::new(),
            answered: false,
            done: false,
        }
    }

    /// The failure an error event's data (an error body) says, classified for this provider.
    pub(crate) fn failure(&self, body: &str) -> AttemptFailure {
        let signal = crate::classify::Signal::new()
            .body(body)
            .provider(&*self.provider);
        AttemptFailure::classified(&self.classifier.classify(&signal))
    }

    /// The held events, as a chunk's: taken, so the group holds none.
    pub(crate) fn take_pending(&mut self) -> Vec<E> {
        std::mem::take(&mut self.pending)
    }

    /// Whether events are held after a token came (what [`Grouped::rest`] hands out).
    pub(crate) fn holds_rest(&self) -> bool {
        self.answered && !self.pending.is_empty()
    }
}

impl<E> std::fmt::Debug for Group<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("provider", &self.provider)
            .field("pending", &self.pending.len())
            .field("answered", &self.answered)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// A stream that holds an upstream's events until one carries a token (or ends the answer),
/// then hands them out together as one chunk: the chain commits on the first token.
pub(crate) trait Grouped {
    /// One upstream event.
    type Event;
    /// The events handed out together.
    type Chunk;

    /// The events and what is held of them.
    fn group(&mut self) -> &mut Group<Self::Event>;

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
    if g.group().done {
        return Poll::Ready(None);
    }
    loop {
        let group = g.group();
        let event = match group.events.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                // The held events first: a chunk of them is not final (no marker came).
                let rest = g.rest();
                g.group().done = true;
                return Poll::Ready(rest.map(Ok));
            }
            Poll::Ready(Some(Err(f))) => {
                group.done = true;
                return Poll::Ready(Some(Err(f)));
            }
            Poll::Ready(Some(Ok(event))) => event,
        };
        match g.take(event) {
            Ok(false) => {}
            Ok(true) => return Poll::Ready(Some(Ok(g.chunk()))),
            Err(f) => {
                g.group().done = true;
                return Poll::Ready(Some(Err(f)));
            }
        }
    }
}
