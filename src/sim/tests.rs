//! The sim against a real client on loopback.
