//! llm-failover: keeps LLM-backed applications answering when a model provider fails.

pub mod breaker;
pub mod reason;
pub mod telemetry;

pub use reason::Reason;
