//! Breaker integration tests through the public API.
