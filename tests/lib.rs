//! Integration tests, compiled as one binary so they link once.

mod breaker;
