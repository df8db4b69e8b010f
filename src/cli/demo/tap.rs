//! Breaker transitions for the screen, read from the crate's own `breaker_transition` events
//! (the same events the `MetricsLayer` turns into metrics), so none is missed between two
//! redraws, not even a half-open state that lasts one probe.

use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use llm_failover::telemetry::names::{self, breaker as field};

use super::traffic::{Board, Note};

/// One state change of one breaker, as the event tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Transition {
    pub(super) provider: String,
    pub(super) model: String,
    pub(super) from: String,
    pub(super) to: String,
    /// What tripped it (`none` when nothing did).
    pub(super) reason: String,
    /// How long it stays open (transitions into `open`).
    pub(super) open_for_ms: Option<u64>,
    /// The automatic state machine moving under an operator override: nothing changed for
    /// callers.
    pub(super) shadow: bool,
}

impl Visit for Transition {
    fn record_str(&mut self, f: &Field, value: &str) {
        let slot = match f.name() {
            field::PROVIDER => &mut self.provider,
            field::MODEL => &mut self.model,
            field::FROM => &mut self.from,
            field::TO => &mut self.to,
            field::REASON => &mut self.reason,
            _ => return,
        };
        value.clone_into(slot);
    }

    fn record_u64(&mut self, f: &Field, value: u64) {
        if f.name() == field::OPEN_FOR_MS {
            self.open_for_ms = Some(value);
        }
    }

    fn record_bool(&mut self, f: &Field, value: bool) {
        if f.name() == field::SHADOW {
            self.shadow = value;
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// A tracing layer that sends each breaker transition to the board. It keeps the default
/// callsite interest (see the telemetry module docs) and skips other events by their
/// metadata.
pub(super) struct TransitionTap {
    board: Arc<Board>,
}

impl TransitionTap {
    pub(super) fn new(board: Arc<Board>) -> Self {
        Self { board }
    }
}

impl<S: tracing::Subscriber> Layer<S> for TransitionTap {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != names::BREAKER_TARGET || meta.name() != names::BREAKER_TRANSITION_EVENT
        {
            return;
        }
        let mut t = Transition::default();
        event.record(&mut t);
        if !t.shadow {
            self.board.note(Note::Transition(t));
        }
    }
}
