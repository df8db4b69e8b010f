//! llm-failover: keeps LLM-backed applications answering when a model provider fails.

pub mod classify;
pub mod reason;

pub use reason::Reason;
