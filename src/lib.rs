//! **llm-failover** keeps LLM-backed applications answering when a model provider fails.
//!
//! Chat bots and agents call a local Ollama box, OpenAI, Anthropic, Gemini, OpenRouter and
//! others, and providers fail in many ways: a powered-off host refuses connections, DNS fails,
//! a 429 arrives with `Retry-After`, a 502/503/504 arrives as a bare status, Anthropic answers
//! 529 "overloaded", a stream stops halfway. This crate turns every such failure into one
//! [`Reason`] from a closed set, so that the decision to fail over, and the metrics an
//! operator watches, never depend on guessing at error text in more than one place.
//!
//! ```
//! use llm_failover::classify::{classify, Signal};
//! use llm_failover::Reason;
//!
//! // A local model host that is powered off: the connection is refused.
//! let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//! assert_eq!(classify(&Signal::from_io(&refused)).reason, Reason::ConnectionRefused);
//!
//! // A rate limit with the wait the provider asked for.
//! let c = classify(&Signal::new().status(429).header("retry-after", "2"));
//! assert_eq!(c.reason, Reason::RateLimit);
//! assert_eq!(c.retry_after, Some(std::time::Duration::from_secs(2)));
//!
//! // What a reason means for failover is data attached to it.
//! assert!(Reason::ConnectionRefused.policy().scope == llm_failover::reason::Scope::Provider);
//! ```
//!
//! # Design
//!
//! Data flows one way, and each stage is a module that can be read and tested alone:
//!
//! ```text
//! provider call ──error──▶ classify ──Reason──▶ breaker (per provider / per model)
//!      ▲                                          │ admit / reject / trip
//!      └──────────── failover chain (route) ◀─────┘
//! every step emits tracing spans/events ──▶ MetricsLayer ──▶ Prometheus
//! ```
//!
//! * [`reason`]: the closed set of failure reasons and each reason's default policy (fail
//!   over or not, count against a breaker or not, provider-wide or per model, base open time).
//!   Everything else speaks in reasons; no error text crosses this line.
//! * [`classify`]: typed evidence (status, headers, body, `io::Error`, `reqwest` error chains,
//!   codes, message text) in, one reason and the provider's requested wait out. One table of
//!   rules decides, structured evidence before text.
//! * [`breaker`]: a circuit breaker per provider and per model, driven by reasons only:
//!   closed, open, half-open with bounded probes, and operator states; a lock-free closed path.
//! * [`chain`]: routes of targets tried in order through their breakers, with deadlines,
//!   retries by reason, hedging, and streams that commit at their first token. It knows no
//!   wire protocol: an attempt is any future.
//! * [`protocol`]: one module per wire API a provider or a client speaks (OpenAI chat
//!   completions, Anthropic Messages): the calls that turn every way a provider fails into a
//!   classified attempt failure, stream parsing for the first token and the end, and
//!   translation between the APIs.
//! * [`telemetry`]: the names of every span and event, and the `tracing-subscriber`
//!   [`MetricsLayer`](telemetry::MetricsLayer) that turns them into Prometheus metrics.
//! * [`tower`](mod@tower): the breaker as a `tower` layer.
//! * [`sim`]: a simulated OpenAI-compatible provider whose faults (429, 529, resets, cut and
//!   stalled streams, refused connections, ...) are chosen per model name; it serves the
//!   tests, the demo and the benchmarks, never real traffic.

pub mod breaker;
pub mod chain;
pub mod classify;
mod duration;
pub mod protocol;
pub mod proxy;
pub mod reason;
pub mod sim;
pub mod state;
pub mod telemetry;
pub mod tower;

pub use reason::Reason;
