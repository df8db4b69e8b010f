//! One log line per client request (the access log): endpoint, route, client name, status,
//! duration and the failover trail; never a key, a header or a prompt.
//!
//! The request runs inside the proxy's `request` span (client name and endpoint), so the
//! request's `failover` span and its attempts sit below it and the metrics layer can label
//! the tokens they report with the client. The line is the `request_done` event, written when
//! the response is ready, or for a stream when its last event went out (or the client went
//! away).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::http::HeaderMap;
use tracing::Span;

use super::auth::Caller;
use super::headers;
use crate::telemetry::names::access;

/// The access log of one request; cloned into a stream's body, written once.
#[derive(Clone)]
pub(super) struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    span: Span,
    started: Instant,
    endpoint: Box<str>,
    client: Box<str>,
    /// The route, once the request is checked (a name from the configuration).
    route: OnceLock<Arc<str>>,
    /// Whether the line was written.
    written: AtomicBool,
}

/// How a streamed answer ended, for [`AccessLog::stream_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// The answer was whole and its terminal event went out.
    Complete,
    /// The stream broke and ended with an error event.
    Broken,
    /// The proxy shut down before the stream ended.
    Shutdown,
}

impl StreamEnd {
    fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::Broken => "broken",
            StreamEnd::Shutdown => "shutdown",
        }
    }
}

impl AccessLog {
    /// Starts the log of a request from `caller` to the endpoint at `path`.
    pub(super) fn start(caller: &Caller, path: &str) -> Self {
        let client = caller
            .client
            .as_ref()
            .map_or(access::NO_CLIENT, |c| &*c.name);
        // The path is one of the proxy's own routes (axum matched it): `/v1/chat/completions`
        // is `chat_completions`.
        let endpoint: Box<str> = path
            .trim_start_matches("/v1/")
            .trim_matches('/')
            .replace('/', "_")
            .into();
        let span = tracing::info_span!(
            target: "llm_failover::proxy",
            "request",
            client = client,
            endpoint = &*endpoint,
        );
        Self {
            inner: Arc::new(Inner {
                span,
                started: Instant::now(),
                endpoint,
                client: client.into(),
                route: OnceLock::new(),
                written: AtomicBool::new(false),
            }),
        }
    }

    /// The request's span: run the request inside it.
    pub(super) fn span(&self) -> Span {
        self.inner.span.clone()
    }

    /// The request was checked and goes to `route`.
    pub(super) fn route(&self, route: &str) {
        let _ = self.inner.route.set(route.into());
    }

    /// The response is ready: writes the line, unless it is a stream's (written at its end).
    pub(super) fn answered(&self, status: u16, headers: &HeaderMap, stream: bool) {
        if !stream {
            let trail = headers
                .get(headers::TRAIL)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            self.write(status, false, trail, None);
        }
    }

    /// A streamed answer ended, its attempts being `trail`.
    pub(super) fn stream_ended(&self, end: StreamEnd, trail: &str) {
        self.write(200, true, trail, Some(end.as_str()));
    }

    fn write(&self, status: u16, stream: bool, trail: &str, end: Option<&str>) {
        if !self.inner.written.swap(true, Ordering::AcqRel) {
            self.inner.emit(status, stream, trail, end);
        }
    }
}

/// How a stream ends when its reader goes away before its last event.
const CLIENT_GONE: &str = "client_gone";

impl Inner {
    /// The `request_done` event.
    fn emit(&self, status: u16, stream: bool, trail: &str, end: Option<&str>) {
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let route = self.route.get().map(|r| &**r);
        tracing::info!(
            name: "request_done",
            target: "llm_failover::proxy",
            parent: &self.span,
            endpoint = &*self.endpoint,
            route = route,
            client = &*self.client,
            status = status,
            duration_ms = duration_ms,
            stream = stream,
            trail = (!trail.is_empty()).then_some(trail),
            stream_end = end,
            "{} {} {status} in {duration_ms} ms{}{}{}",
            self.endpoint,
            route.unwrap_or("-"),
            if trail.is_empty() { "" } else { "; trail: " },
            trail,
            if end == Some(CLIENT_GONE) {
                "; the client went away before the stream ended"
            } else {
                ""
            },
        );
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A stream whose reader went away before its end: the line says so.
        if !*self.written.get_mut() {
            self.emit(200, true, "", Some(CLIENT_GONE));
        }
    }
}
