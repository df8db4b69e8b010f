//! The retry budget: extra attempts per first attempt over a sliding window, with a floor per
//! second (tower's `TpsBudget` is the model).
//!
//! # Why not tower's `TpsBudget`
//!
//! Every request deposits, and only a failing one withdraws. `TpsBudget` takes a mutex and
//! reads the clock on each deposit, which is most of what a route's closed path cost more
//! once the budget came in. Here a deposit is one relaxed atomic add on a running count;
//! the window is kept by withdrawals, which are rare (they follow a failure): each one reads
//! the clock, turns the window's slots, and files the deposits made since the last turn into
//! the slots they were made in (spread evenly between the last turn and now: the count does
//! not say when each came).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How many slots the window is cut into.
const SLOTS: usize = 10;

/// A route's retry budget.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// First attempts so far, ever.
    deposits: AtomicU64,
    ratio: f64,
    /// Extra attempts the window allows whatever the traffic (floor per second × window).
    reserve: f64,
    slot: Duration,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// First attempts per slot, and extra attempts per slot, the current slot at `current`.
    deposited: [f64; SLOTS],
    withdrawn: [u64; SLOTS],
    current: usize,
    /// When the current slot began.
    began: Instant,
    /// The deposit count at the last turn.
    seen: u64,
}

impl RetryBudget {
    /// `ratio` extra attempts per first attempt plus `floor` per second, over `window`.
    pub(crate) fn new(window: Duration, floor: u32, ratio: f32) -> Self {
        let now = Instant::now();
        let slots = u32::try_from(SLOTS).unwrap_or(u32::MAX);
        Self {
            deposits: AtomicU64::new(0),
            ratio: f64::from(ratio),
            reserve: f64::from(floor) * window.as_secs_f64(),
            slot: (window / slots).max(Duration::from_millis(1)),
            window: Mutex::new(Window {
                deposited: [0.0; SLOTS],
                withdrawn: [0; SLOTS],
                current: 0,
                began: now,
                seen: 0,
            }),
        }
    }

    /// A first attempt: one relaxed add, no lock, no clock.
    #[inline]
    pub(crate) fn deposit(&self) {
        self.deposits.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one extra attempt if the window allows it.
    pub(crate) fn withdraw(&self) -> bool {
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        self.turn(&mut w, now);
        let deposited: f64 = w.deposited.iter().sum();
        let withdrawn: u64 = w.withdrawn.iter().sum();
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let left = self.reserve + deposited * self.ratio - withdrawn as f64;
        if left < 1.0 {
            return false;
        }
        let c = w.current;
        w.withdrawn[c] += 1;
        true
    }

    /// Moves the window on to `now` and files the deposits made since the last turn (which
    /// was in the then current slot) evenly over the slots from that one to now's.
    fn turn(&self, w: &mut Window, now: Instant) {
        let count = self.deposits.load(Ordering::Relaxed);
        let new = count.saturating_sub(w.seen);
        w.seen = count;
        let slot_nanos = self.slot.as_nanos().max(1);
        let ahead = now.saturating_duration_since(w.began).as_nanos() / slot_nanos;
        let moved = usize::try_from(ahead).unwrap_or(usize::MAX).min(SLOTS);
        for _ in 0..moved {
            w.current = (w.current + 1) % SLOTS;
            w.deposited[w.current] = 0.0;
            w.withdrawn[w.current] = 0;
        }
        if ahead > 0 {
            let step = self
                .slot
                .saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX));
            w.began = w.began.checked_add(step).unwrap_or(now).min(now);
        }
        if new == 0 {
            return;
        }
        // Over a gap longer than the window only the window's share is kept.
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let per_slot = new as f64 / (ahead as f64 + 1.0);
        for k in 0..=moved.min(SLOTS - 1) {
            let i = (w.current + SLOTS - k) % SLOTS;
            w.deposited[i] += per_slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_ratio_plus_the_floor_and_old_deposits_fall_out() {
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.2);
        for _ in 0..100 {
            b.deposit();
        }
        let mut n = 0;
        while b.withdraw() {
            n += 1;
        }
        assert_eq!(n, 30, "20% of 100 plus 1/s over 10 s");
        // Past the window: only the floor again.
        tokio::time::advance(Duration::from_secs(11)).await;
        let mut n = 0;
        while b.withdraw() {
            n += 1;
        }
        assert_eq!(n, 10);
        // A long quiet stretch with deposits: only the window's share of them counts.
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..1000 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(100)).await;
        let mut n = 0;
        while b.withdraw() {
            n += 1;
        }
        assert!((10..=20).contains(&n), "{n}");
    }
}
