//! Integration tests, compiled as one binary so they link once.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests fail the test loudly, as the tests do"
)]

mod auth;
mod breaker;
mod chain;
mod classify;
mod demo;
mod embeddings;
mod messages;
mod otlp;
mod proxy;
mod proxy_faults;
mod reload;
mod responses;
mod resume;
mod secrets;
mod serve;
mod shaping;
#[cfg(feature = "redis")]
mod state;
mod support;
mod telemetry;
mod tls;
mod tokens;
