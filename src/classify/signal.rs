//! The typed input of the classifier: what is known about one failed call.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::io;

use crate::reason::Reason;

/// The most error sources followed down a `source()` chain.
const MAX_CHAIN_DEPTH: usize = 16;

/// Everything known about one failure, as typed evidence.
///
/// Build it from whatever the call produced: an HTTP status and headers, the response body,
/// an `io::Error`, a `reqwest::Error` (its whole `source()` chain is walked), an error code,
/// message text and a provider hint. The classifier weighs structured evidence before text.
///
/// Strings are borrowed where possible, so building a signal from a response costs no copy.
///
/// ```
/// use llm_failover::classify::{classify, Signal};
/// use llm_failover::Reason;
///
/// let signal = Signal::new()
///     .status(429)
///     .header("retry-after", "2")
///     .body(r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#)
///     .provider("anthropic");
/// let c = classify(&signal);
/// assert_eq!(c.reason, Reason::RateLimit);
/// assert_eq!(c.retry_after, Some(std::time::Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Signal<'a> {
    pub(crate) status: Option<u16>,
    pub(crate) code: Option<Cow<'a, str>>,
    pub(crate) io_kind: Option<io::ErrorKind>,
    pub(crate) errno: Option<i32>,
    /// A reason read off a typed error in the chain (TLS, DNS, timeout flags).
    pub(crate) typed: Option<(Reason, &'static str)>,
    pub(crate) headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub(crate) body: Option<Cow<'a, str>>,
    pub(crate) message: Option<Cow<'a, str>>,
    /// Display text of the error chain: the last resort.
    pub(crate) chain_text: Option<String>,
    pub(crate) provider: Option<Cow<'a, str>>,
    pub(crate) cancelled: bool,
}

impl<'a> Signal<'a> {
    /// An empty signal; it classifies as `unknown` until evidence is added.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The HTTP status of the response. Default: none.
    ///
    /// An explicit status outranks any status found in text or a body.
    #[must_use]
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// An error code: an errno name (`ECONNREFUSED`), a runtime code (`UND_ERR_SOCKET`) or a
    /// provider code (`RESOURCE_EXHAUSTED`, `insufficient_quota`). Default: none.
    #[must_use]
    pub fn code(mut self, code: impl Into<Cow<'a, str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The kind of an I/O error. Default: none.
    #[must_use]
    pub fn io_kind(mut self, kind: io::ErrorKind) -> Self {
        self.io_kind = Some(kind);
        self
    }

    /// A raw OS error number (errno on Unix, a WSA code on Windows). Default: none.
    #[must_use]
    pub fn errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }

    /// One response header; names are compared case-insensitively. Call once per header.
    #[must_use]
    pub fn header(mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// All headers of a response (values that are not visible ASCII are skipped).
    #[must_use]
    pub fn headers(mut self, headers: &'a reqwest::header::HeaderMap) -> Self {
        for (name, value) in headers {
            if let Ok(v) = value.to_str() {
                self.headers
                    .push((Cow::Borrowed(name.as_str()), Cow::Borrowed(v)));
            }
        }
        self
    }

    /// The raw response body: JSON, HTML or text. Default: none.
    #[must_use]
    pub fn body(mut self, body: impl Into<Cow<'a, str>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The error message. Default: none.
    #[must_use]
    pub fn message(mut self, message: impl Into<Cow<'a, str>>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Which provider answered ("openai", "anthropic", or a configured provider name); selects
    /// per-provider rules and overrides. Default: none.
    #[must_use]
    pub fn provider(mut self, provider: impl Into<Cow<'a, str>>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// The caller cancelled the call; this outranks all other evidence.
    #[must_use]
    pub fn cancelled(mut self) -> Self {
        self.cancelled = true;
        self
    }

    /// Adds the evidence of an error and its whole `source()` chain.
    ///
    /// Recognises `reqwest::Error` (status, timeout and DNS flags), `hyper::Error`,
    /// `std::io::Error` (kind, OS error number, and the error it wraps) and
    /// `rustls::Error`; the `Display` text of the chain is kept as the last resort. The walk
    /// stops after 16 sources and at the first source it has already seen.
    #[must_use]
    pub fn error(mut self, err: &(dyn StdError + 'static)) -> Self {
        let mut seen = [std::ptr::null::<()>(); MAX_CHAIN_DEPTH];
        let mut depth = 0;
        let mut text = String::new();
        let mut next = Some(err);
        while let Some(e) = next {
            let addr = std::ptr::from_ref(e).cast::<()>();
            if depth == MAX_CHAIN_DEPTH || seen[..depth].contains(&addr) {
                break;
            }
            seen[depth] = addr;
            depth += 1;
            let message = e.to_string();
            if !message.is_empty() && !text.contains(&message) {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&message);
            }
            next = self.absorb(e);
        }
        if !text.is_empty() {
            self.chain_text = Some(text);
        }
        self
    }

    /// Reads one error of a chain and says which error comes next.
    fn absorb<'e>(
        &mut self,
        e: &'e (dyn StdError + 'static),
    ) -> Option<&'e (dyn StdError + 'static)> {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if self.io_kind.is_none() {
                self.io_kind = Some(io.kind());
                self.errno = io.raw_os_error();
            }
            // `io::Error::source` skips the error it wraps; visit that error itself.
            if let Some(inner) = io.get_ref() {
                return Some(inner);
            }
        } else if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            if self.status.is_none() {
                self.status = r.status().map(|s| s.as_u16());
            }
            if r.is_dns() {
                self.set_typed(Reason::Dns, "reqwest:dns");
            } else if r.is_timeout() {
                self.set_typed(Reason::Timeout, "reqwest:timeout");
            } else if r.is_decode() {
                self.set_typed(Reason::EmptyResponse, "reqwest:decode");
            }
        } else if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                self.set_typed(Reason::Timeout, "hyper:timeout");
            } else if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                self.set_typed(Reason::ConnectionReset, "hyper:closed");
            }
        } else if e.is::<rustls::Error>() {
            self.set_typed(Reason::Tls, "rustls");
        }
        e.source()
    }

    /// The first typed finding wins, except that a deeper TLS or DNS cause is more precise
    /// than an outer timeout or decode flag.
    fn set_typed(&mut self, reason: Reason, name: &'static str) {
        let replace = match self.typed {
            None => true,
            Some((prev, _)) => {
                matches!(reason, Reason::Tls | Reason::Dns)
                    && !matches!(prev, Reason::Tls | Reason::Dns)
            }
        };
        if replace {
            self.typed = Some((reason, name));
        }
    }

    /// The signal of a `reqwest::Error`: its status, flags and whole source chain.
    ///
    /// ```no_run
    /// # async fn f() {
    /// use llm_failover::classify::{classify, Signal};
    /// if let Err(e) = reqwest::get("http://127.0.0.1:9/").await {
    ///     println!("{}", classify(&Signal::from_reqwest(&e)).reason); // connection_refused
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn from_reqwest(err: &reqwest::Error) -> Signal<'static> {
        Signal::new().error(err)
    }

    /// The signal of an I/O error (kind, OS error number and wrapped errors).
    #[must_use]
    pub fn from_io(err: &io::Error) -> Signal<'static> {
        Signal::new().error(err)
    }
}
