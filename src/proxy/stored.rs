//! Which provider holds each Responses answer the proxy relayed, so that a request naming it
//! (`previous_response_id`) goes back there and nowhere else.
//!
//! The Responses API keeps a conversation on the provider: a request that continues one
//! means nothing to another provider, which would answer without the context (or fail). The
//! proxy sees every answer it relays, so it remembers, for each response id, the provider that
//! answered and whether that provider stored it (a Responses provider, unless the request said
//! `store: false`; an answer translated from chat completions or Anthropic is stored nowhere).
//! The memory is bounded ([`CAPACITY`] ids, the oldest forgotten first), kept across reloads,
//! and per process: replicas behind a load balancer each know the answers they relayed, and a
//! request naming an id this process never saw goes to the route's Responses targets in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// How many response ids are remembered.
pub(super) const CAPACITY: usize = 100_000;

/// Who answered one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holder {
    /// The provider that answered.
    pub(super) provider: Arc<str>,
    /// Whether the provider stored the response (so it can continue from it).
    pub(super) kept: bool,
}

/// The remembered response ids, oldest first.
#[derive(Debug, Default)]
pub(super) struct Stored {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<Arc<str>, Holder>,
    order: VecDeque<Arc<str>>,
}

impl Stored {
    /// Remembers that `provider` answered `id` (and whether it `kept` it).
    pub(super) fn remember(&self, id: &str, provider: &str, kept: bool) {
        if id.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let id: Arc<str> = Arc::from(id);
        let holder = Holder {
            provider: Arc::from(provider),
            kept,
        };
        if inner.by_id.insert(Arc::clone(&id), holder).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// Who answered `id`, if this process relayed it and still remembers it.
    pub(super) fn holder(&self, id: &str) -> Option<Holder> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.by_id.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_holder_and_forgets_the_oldest_past_capacity() {
        let s = Stored::default();
        s.remember("resp_first", "openai", true);
        s.remember("resp_translated", "ollama", false);
        assert_eq!(
            s.holder("resp_first"),
            Some(Holder {
                provider: Arc::from("openai"),
                kept: true
            })
        );
        assert!(!s.holder("resp_translated").unwrap().kept);
        assert_eq!(s.holder("resp_unknown"), None);
        for i in 0..CAPACITY {
            s.remember(&format!("resp_{i}"), "azure", true);
        }
        assert_eq!(s.holder("resp_first"), None, "the oldest is forgotten");
        assert_eq!(s.holder("resp_translated"), None);
        assert_eq!(s.holder("resp_0").unwrap().provider.as_ref(), "azure");
        assert_eq!(
            s.holder(&format!("resp_{}", CAPACITY - 1))
                .unwrap()
                .provider
                .as_ref(),
            "azure"
        );
    }

    #[test]
    fn an_empty_id_is_not_remembered() {
        let s = Stored::default();
        s.remember("", "openai", true);
        assert_eq!(s.holder(""), None);
    }
}
