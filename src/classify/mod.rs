//! One classifier: any provider failure becomes exactly one [`Reason`], with the wait the
//! provider asked for.
//!
//! # Why one classifier
//!
//! The system this crate replaces had two classification paths, one for HTTP statuses and
//! one for message text, and they disagreed: 504 was a timeout on one path and unknown on the
//! other, 502/503/504 were missed when they came only as a status field, and ECONNREFUSED was
//! missing altogether, so failover never triggered when a local model host was powered off.
//! Here every path goes through one table ([`rules`](self) in the source): a status found in
//! text is looked up exactly like a status field, and a code found in text exactly like a
//! code field.
//!
//! # Precedence
//!
//! Structured evidence is weighed before text:
//!
//! 1. the caller's cancellation;
//! 2. typed transport evidence: an `io::ErrorKind` or OS error number, a TLS or DNS error in
//!    a `reqwest`/`hyper` source chain, a timeout flag, an explicit transport code field
//!    (`ECONNREFUSED`);
//! 3. operator overrides for the provider (code, then pattern, then status);
//! 4. the status: the explicit field, else a status in the provider's JSON body (Google's
//!    `"code": 503`), else a status stated in text ("HTTP 503", "API error (503)", a message
//!    that starts with "429 ...");
//! 5. codes and text patterns, in table order: provider codes that name one failure
//!    (`rate_limit_error`, `insufficient_quota`, `ThrottlingException`), then wordings, then
//!    codes that name only a class (`invalid_request_error`, `api_error`, `INTERNAL`).
//!
//! With a status, the first code or pattern whose reason *refines* the status's reason wins
//! (a 400 that says "maximum context length" is `context_overflow`; a 429 that says
//! "overloaded" stays `rate_limit`); without one, the first code or pattern wins; with
//! neither, the status's own reason; with nothing, `unknown`. A server-side failure found in
//! text with no status anywhere is `stream_interrupted`: that is how SDKs report an error
//! event inside a stream that had already answered 200.
//!
//! The texts read are the message, the body and the error chain's `Display` text; a JSON error
//! document is read through its message fields (`error.message`, Ollama's `error` string,
//! OpenRouter's `metadata.raw`, ...) rather than whole. All text matching is at most one
//! [`regex::RegexSet`] pass per text, compiled once (less when a structured code already
//! decides); texts are read up to 64 KiB, so a hostile 1 MB body costs no more than a 64 KiB
//! one.
//!
//! ```
//! use llm_failover::classify::{classify, Signal};
//! use llm_failover::Reason;
//!
//! // A 502 that arrives only as a status property, with a message that says nothing.
//! assert_eq!(classify(&Signal::new().status(502).message("upstream said no")).reason, Reason::ServerError);
//! // ECONNREFUSED as a code, in text, or as an io::Error: the same reason.
//! assert_eq!(classify(&Signal::new().code("ECONNREFUSED")).reason, Reason::ConnectionRefused);
//! assert_eq!(classify(&Signal::new().message("connect ECONNREFUSED 127.0.0.1:11434")).reason, Reason::ConnectionRefused);
//! let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//! assert_eq!(classify(&Signal::from_io(&io)).reason, Reason::ConnectionRefused);
//! // A number is a status only in status context.
//! assert_eq!(classify(&Signal::new().message("request req-4291 failed")).reason, Reason::Unknown);
//! ```

mod body;
mod retry;
mod rules;
mod signal;
mod table;

use std::fmt;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use regex::RegexSet;

pub use retry::MAX_RETRY_HINT;
pub(crate) use retry::parse_compound;
pub use signal::Signal;

use crate::reason::Reason;
use table::{TABLE, Table, provider_matches, rule_name};

/// Texts are read up to this many bytes.
const MAX_TEXT: usize = 64 * 1024;

/// The verdict on one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Classification {
    /// The one reason.
    pub reason: Reason,
    /// The wait the provider asked for, capped at [`MAX_RETRY_HINT`].
    pub retry_after: Option<Duration>,
    /// Which evidence decided, for people reading logs (never a metric label).
    pub matched: Matched,
}

/// Where a status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusSource {
    /// The status field of the signal.
    Explicit,
    /// A numeric code in the provider's JSON error body.
    Body,
    /// A status stated in message, body or error-chain text.
    Text,
}

/// Which evidence decided a [`Classification`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Matched {
    /// The caller cancelled.
    Cancelled,
    /// An I/O error kind.
    Io(std::io::ErrorKind),
    /// A raw OS error number.
    Errno(i32),
    /// A typed error in the source chain (`rustls`, `reqwest:dns`, `hyper:timeout`, ...).
    Typed(&'static str),
    /// An operator override for the provider.
    Override(&'static str),
    /// A rule of the table (a code or a named pattern), possibly refining a status.
    Rule {
        /// The rule's name: the code itself, or the pattern's name.
        rule: &'static str,
        /// The status it refined, if there was one.
        status: Option<(u16, StatusSource)>,
    },
    /// The status alone.
    Status(u16, StatusSource),
    /// Nothing matched: the reason is `unknown`.
    Nothing,
}

impl fmt::Display for StatusSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatusSource::Explicit => "status",
            StatusSource::Body => "body status",
            StatusSource::Text => "text status",
        })
    }
}

impl fmt::Display for Matched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matched::Cancelled => f.write_str("cancelled"),
            Matched::Io(kind) => write!(f, "io {kind:?}"),
            Matched::Errno(n) => write!(f, "errno {n}"),
            Matched::Typed(t) => f.write_str(t),
            Matched::Override(what) => write!(f, "override {what}"),
            Matched::Rule { rule, status: None } => write!(f, "rule {rule}"),
            Matched::Rule {
                rule,
                status: Some((s, src)),
            } => write!(f, "{src} {s} refined by rule {rule}"),
            Matched::Status(s, src) => write!(f, "{src} {s}"),
            Matched::Nothing => f.write_str("nothing"),
        }
    }
}

/// Compiles one of the classifier's fixed patterns (ASCII mode, like the rule table).
#[expect(clippy::expect_used, reason = "fixed patterns, compiled by every test")]
fn fixed_regex(pattern: &str) -> regex::Regex {
    regex::RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .expect("fixed pattern compiles")
}

static DEFAULT: LazyLock<Classifier> = LazyLock::new(Classifier::default);

/// Classifies a signal with the built-in rules and no overrides.
///
/// ```
/// use llm_failover::classify::{classify, Signal};
/// use llm_failover::Reason;
///
/// let c = classify(&Signal::new().status(529));
/// assert_eq!(c.reason, Reason::Overloaded);
/// ```
#[must_use]
pub fn classify(signal: &Signal<'_>) -> Classification {
    DEFAULT.classify(signal)
}

/// Operator overrides for one provider.
#[derive(Debug, Clone)]
struct ProviderOverrides {
    provider: String,
    codes: Vec<(String, Reason)>,
    statuses: Vec<(u16, Reason)>,
    patterns: Option<(RegexSet, Vec<Reason>)>,
}

/// The classifier: the built-in table plus operator overrides per provider.
///
/// [`classify`] uses a shared classifier without overrides; build one with
/// [`Classifier::builder`] when some provider needs a status, code or pattern mapped
/// differently (some answer 400 or 404 for transient failures).
///
/// ```
/// use llm_failover::classify::{Classifier, Signal};
/// use llm_failover::Reason;
///
/// let classifier = Classifier::builder()
///     .status("flaky-gw", 404, Reason::Overloaded)
///     .pattern("flaky-gw", r"upstream busy", Reason::Overloaded)?
///     .build();
/// let s = Signal::new().status(404).provider("flaky-gw");
/// assert_eq!(classifier.classify(&s).reason, Reason::Overloaded);
/// // Other providers keep the built-in meaning.
/// let s = Signal::new().status(404).provider("openai");
/// assert_eq!(classifier.classify(&s).reason, Reason::ModelNotFound);
/// # Ok::<(), llm_failover::classify::OverrideError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    overrides: Vec<ProviderOverrides>,
}

/// Builds a [`Classifier`] with per-provider overrides.
#[derive(Debug, Default)]
#[must_use]
pub struct ClassifierBuilder {
    overrides: Vec<(String, OverrideRule)>,
}

#[derive(Debug)]
enum OverrideRule {
    Status(u16, Reason),
    Code(String, Reason),
    Pattern(String, Reason),
}

/// An override that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// The pattern is not a valid regular expression.
    #[error(
        "override pattern {pattern:?} for provider {provider:?} is not a valid regular expression: {source}"
    )]
    Pattern {
        /// The provider the override was for.
        provider: String,
        /// The pattern as given.
        pattern: String,
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
}

impl ClassifierBuilder {
    /// Maps an HTTP status to `reason` for `provider`, wherever the status came from.
    pub fn status(mut self, provider: impl Into<String>, status: u16, reason: Reason) -> Self {
        self.overrides
            .push((provider.into(), OverrideRule::Status(status, reason)));
        self
    }

    /// Maps an error code (exact, ASCII case-insensitive) to `reason` for `provider`. It
    /// matches the code field and codes in the provider's JSON error body (string or number).
    pub fn code(
        mut self,
        provider: impl Into<String>,
        code: impl Into<String>,
        reason: Reason,
    ) -> Self {
        self.overrides
            .push((provider.into(), OverrideRule::Code(code.into(), reason)));
        self
    }

    /// Maps text matching `pattern` (a regular expression, case-insensitive) in the message,
    /// body or error chain to `reason` for `provider`.
    ///
    /// # Errors
    ///
    /// [`OverrideError::Pattern`] when the pattern does not compile.
    pub fn pattern(
        mut self,
        provider: impl Into<String>,
        pattern: impl Into<String>,
        reason: Reason,
    ) -> Result<Self, OverrideError> {
        let (provider, pattern) = (provider.into(), pattern.into());
        if let Err(source) = regex::RegexBuilder::new(&pattern).build() {
            return Err(OverrideError::Pattern {
                provider,
                pattern,
                source,
            });
        }
        self.overrides
            .push((provider, OverrideRule::Pattern(pattern, reason)));
        Ok(self)
    }

    /// The classifier.
    #[must_use]
    pub fn build(self) -> Classifier {
        let mut out: Vec<ProviderOverrides> = Vec::new();
        let mut patterns: Vec<(usize, String, Reason)> = Vec::new();
        for (provider, rule) in self.overrides {
            let i = match out
                .iter()
                .position(|o| o.provider.eq_ignore_ascii_case(&provider))
            {
                Some(i) => i,
                None => {
                    out.push(ProviderOverrides {
                        provider,
                        codes: Vec::new(),
                        statuses: Vec::new(),
                        patterns: None,
                    });
                    out.len() - 1
                }
            };
            match rule {
                OverrideRule::Status(s, r) => out[i].statuses.push((s, r)),
                OverrideRule::Code(c, r) => out[i].codes.push((c, r)),
                OverrideRule::Pattern(p, r) => patterns.push((i, p, r)),
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            let (pats, reasons): (Vec<String>, Vec<Reason>) = patterns
                .iter()
                .filter(|(j, _, _)| *j == i)
                .map(|(_, p, r)| (format!("(?i){p}"), *r))
                .unzip();
            if !pats.is_empty() {
                // Each pattern compiled alone in `pattern`, so the set compiles too.
                o.patterns = RegexSet::new(pats).ok().map(|set| (set, reasons));
            }
        }
        Classifier { overrides: out }
    }
}

/// A text cut to [`MAX_TEXT`] bytes, on a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Classifier {
    /// A builder for a classifier with overrides.
    pub fn builder() -> ClassifierBuilder {
        ClassifierBuilder::default()
    }

    /// Classifies one failure.
    #[must_use]
    pub fn classify(&self, signal: &Signal<'_>) -> Classification {
        self.classify_at(signal, SystemTime::now)
    }

    /// Classifies with `now` as the clock for HTTP-date and timestamp hints.
    pub(crate) fn classify_at(
        &self,
        signal: &Signal<'_>,
        now: impl Fn() -> SystemTime,
    ) -> Classification {
        read(signal, |structured, texts| {
            let (reason, matched) = self.decide(&TABLE, signal, structured, texts);
            let retry_after = retry::from_headers(
                signal.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())),
                now,
            )
            .or_else(|| {
                structured
                    .retry_delay
                    .as_deref()
                    .and_then(retry::from_delay)
            })
            .or_else(|| texts.iter().copied().find_map(retry::from_text));
            Classification {
                reason,
                retry_after,
                matched,
            }
        })
    }

    fn decide(
        &self,
        table: &Table,
        signal: &Signal<'_>,
        structured: &body::Structured<'_>,
        texts: &[&str],
    ) -> (Reason, Matched) {
        if signal.cancelled {
            return (Reason::Cancelled, Matched::Cancelled);
        }
        if let Some(kind) = signal.io_kind
            && let Some(r) = rules::io_kind_reason(kind)
        {
            return (r, Matched::Io(kind));
        }
        if let Some(errno) = signal.errno
            && let Some(r) = rules::errno_reason(errno)
        {
            return (r, Matched::Errno(errno));
        }
        if let Some((r, name)) = signal.typed {
            return (r, Matched::Typed(name));
        }
        let provider = signal.provider.as_deref();
        if let Some(code) = signal.code.as_deref() {
            let transport = table
                .code_rows(code)
                .map(|i| &table.rules[i])
                .find(|r| provider_matches(r, provider))
                .filter(|r| r.tier == rules::Tier::Transport);
            if let Some(rule) = transport {
                return (
                    rule.reason,
                    Matched::Rule {
                        rule: rule_name(rule, std::iter::once(code)),
                        status: None,
                    },
                );
            }
        }
        let status = status_of(signal, structured, texts);
        if let Some(verdict) = self.overridden(signal, structured, texts, status) {
            return verdict;
        }
        let evidence = Evidence::gather(table, signal, structured, texts, status, Scan::Verdict);
        let chosen = evidence.eligible(table, provider).next();
        // The caller's own code field is taken at face value; a failure found in message or
        // body text with no status anywhere was reported inside a stream (`rules::in_stream`).
        let from_code_field = |i: usize| {
            signal
                .code
                .as_deref()
                .is_some_and(|c| table.code_rows(c).any(|j| j == i))
        };
        let name = |rule| rule_name(rule, field_codes(signal, structured));
        match (chosen, status, evidence.base) {
            (Some((i, rule)), None, _) if !from_code_field(i) => (
                rule.without_status,
                Matched::Rule {
                    rule: name(rule),
                    status: None,
                },
            ),
            (Some((_, rule)), status, base) => (
                rule.reason,
                Matched::Rule {
                    rule: name(rule),
                    status: status.filter(|_| base.is_some()),
                },
            ),
            (None, Some((s, src)), Some(b)) => (b, Matched::Status(s, src)),
            (None, _, _) => (Reason::Unknown, Matched::Nothing),
        }
    }

    /// The operator's override for the provider, if one applies (code, then pattern, then
    /// status).
    fn overridden(
        &self,
        signal: &Signal<'_>,
        structured: &body::Structured<'_>,
        texts: &[&str],
        status: Option<(u16, StatusSource)>,
    ) -> Option<(Reason, Matched)> {
        let p = signal.provider.as_deref()?;
        let o = self
            .overrides
            .iter()
            .find(|o| o.provider.eq_ignore_ascii_case(p))?;
        let numeric = structured.status.map(|s| s.to_string());
        let by_code = field_codes(signal, structured)
            .chain(numeric.as_deref())
            .find_map(|c| {
                o.codes
                    .iter()
                    .find(|(oc, _)| oc.eq_ignore_ascii_case(c))
                    .map(|(_, r)| *r)
            });
        if let Some(r) = by_code {
            return Some((r, Matched::Override("code")));
        }
        if let Some((set, reasons)) = &o.patterns {
            let by_pattern = texts
                .iter()
                .find_map(|t| set.matches(t).iter().next())
                .and_then(|i| reasons.get(i));
            if let Some(r) = by_pattern {
                return Some((*r, Matched::Override("pattern")));
            }
        }
        let (s, _) = status?;
        let (_, r) = o.statuses.iter().find(|(os, _)| *os == s)?;
        Some((*r, Matched::Override("status")))
    }
}

/// Reads a signal's message and body: the JSON error documents they hold, and the texts to
/// scan (the message and body as they are, except that a JSON error document is read through
/// its message fields; then the error chain), each cut to [`MAX_TEXT`].
fn read<R>(signal: &Signal<'_>, f: impl FnOnce(&body::Structured<'_>, &[&str]) -> R) -> R {
    let mut structured = body::Structured::default();
    let raw = [signal.message.as_deref(), signal.body.as_deref()];
    let is_json = raw.map(|t| t.is_some_and(|t| body::read_json(t, &mut structured)));
    let texts: Vec<&str> = raw
        .into_iter()
        .zip(is_json)
        .filter_map(|(t, json)| t.filter(|_| !json))
        .chain(structured.messages.iter().map(AsRef::as_ref))
        .chain(signal.chain_text.as_deref())
        .map(cut)
        .collect();
    f(&structured, &texts)
}

/// Codes in structured places: the code field, the JSON body, Bedrock's `x-amzn-errortype`.
fn field_codes<'a>(
    signal: &'a Signal<'_>,
    structured: &'a body::Structured<'_>,
) -> impl Iterator<Item = &'a str> {
    let aws_type = signal
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-errortype"))
        .map(|(_, v)| v.split(':').next().unwrap_or_default());
    signal
        .code
        .as_deref()
        .into_iter()
        .chain(structured.codes.iter().map(AsRef::as_ref))
        .chain(aws_type)
}

/// The status: the explicit field, else a status in the JSON body, else one stated in text
/// (or an HTML page's title).
fn status_of(
    signal: &Signal<'_>,
    structured: &body::Structured<'_>,
    texts: &[&str],
) -> Option<(u16, StatusSource)> {
    signal
        .status
        .map(|s| (s, StatusSource::Explicit))
        .or(structured.status.map(|s| (s, StatusSource::Body)))
        .or_else(|| {
            let title = signal.body.as_deref().and_then(body::html_title);
            texts
                .iter()
                .copied()
                .chain(title)
                .find_map(body::status_in_text)
                .map(|s| (s, StatusSource::Text))
        })
}

/// How much of the table [`Evidence::gather`] matches a signal against.
#[derive(Debug, Clone, Copy)]
enum Scan {
    /// What can still decide: a structured code of the first two tiers spares the scan for
    /// wordings, which rank below it (see `table`).
    Verdict,
    /// Every row, for the table's audit of overlapping families.
    #[cfg(test)]
    Every,
}

/// What the rule table makes of a signal: the status's own reason and the rows matched.
struct Evidence {
    base: Option<Reason>,
    hits: table::Hits,
}

impl Evidence {
    fn gather(
        table: &Table,
        signal: &Signal<'_>,
        structured: &body::Structured<'_>,
        texts: &[&str],
        status: Option<(u16, StatusSource)>,
        scan: Scan,
    ) -> Self {
        let base = status.and_then(|(s, _)| rules::status_reason(s));
        let provider = signal.provider.as_deref();
        let hits = table.hits(field_codes(signal, structured), texts, |r| match scan {
            Scan::Verdict => provider_matches(r, provider) && rules::may_decide(r, base),
            #[cfg(test)]
            Scan::Every => false,
        });
        Self { base, hits }
    }

    /// The rows that may decide, in priority order: those for the provider that
    /// [`rules::may_decide`] under the status. The first one decides.
    fn eligible<'t>(
        &'t self,
        table: &'t Table,
        provider: Option<&'t str>,
    ) -> impl Iterator<Item = (usize, &'t rules::Rule)> + 't {
        self.hits
            .iter()
            .map(|i| (i, &table.rules[i]))
            .filter(move |(_, r)| provider_matches(r, provider))
            .filter(|(_, r)| rules::may_decide(r, self.base))
    }
}

#[cfg(test)]
mod audit;
#[cfg(test)]
mod tests;
