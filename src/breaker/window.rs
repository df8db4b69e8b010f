//! Sliding windows of outcomes for the failure-rate rule, lock-free and O(1) per record.
//!
//! Both windows keep their totals in one packed atomic word and update it by the difference
//! between what a record writes and what it evicts (resilience4j's subtract-on-evict), so
//! reading the failure rate never scans the window.
//!
//! * [`CountRing`]: the last N outcomes. Each slot is one byte; a record claims the next slot
//!   with `fetch_add`, swaps its outcome in and applies the delta. When the window is full of
//!   successes a further success changes nothing, so it returns after one load: the steady
//!   closed path writes no shared memory at all.
//! * [`TimeBuckets`]: B buckets of `width` each, every bucket one word holding its epoch, calls
//!   and failures. Moving to a new epoch clears the buckets that fell out (at most B, amortised
//!   O(1) per bucket width) and subtracts what they held.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::clock::{Clock, Nanos};

/// Calls and failures currently in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
}

/// Totals are packed as `calls << 32 | failures`, updated with wrapping deltas. A racing
/// evict can make the failure half briefly negative; decoding it as `i32` keeps the calls half
/// exact and the failure count is clamped into `0..=calls`.
#[inline]
fn decode(t: u64) -> Counts {
    let low = t as u32 as i32;
    let calls = (t.wrapping_sub(i64::from(low) as u64) >> 32) as u32;
    Counts {
        calls,
        failures: (low.max(0) as u32).min(calls),
    }
}

#[inline]
const fn pack_counts(calls: u64, failures: u64) -> u64 {
    (calls << 32).wrapping_add(failures)
}

/// A window over outcomes, by count or by time.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountRing),
    Time(TimeBuckets),
}

impl Window {
    /// Records one outcome and returns the counts after it.
    #[inline]
    pub(crate) fn record(&self, failed: bool, clock: &Clock) -> Counts {
        match self {
            Window::Count(ring) => ring.record(failed),
            Window::Time(buckets) => buckets.record(failed, clock.now()),
        }
    }

    /// The current counts.
    pub(crate) fn counts(&self) -> Counts {
        match self {
            Window::Count(ring) => ring.counts(),
            Window::Time(buckets) => buckets.counts(),
        }
    }

    /// Empties the window (on a state transition; never on the record path).
    pub(crate) fn clear(&self) {
        match self {
            Window::Count(ring) => ring.clear(),
            Window::Time(buckets) => buckets.clear(),
        }
    }
}

const EMPTY: u8 = 0;
const OK: u8 = 0b01;
const FAILED: u8 = 0b11;

#[inline]
const fn slot_counts(v: u8) -> u64 {
    pack_counts((v & 1) as u64, ((v >> 1) & 1) as u64)
}

/// The last `size` outcomes.
#[derive(Debug)]
pub(crate) struct CountRing {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    totals: AtomicU64,
    size: u32,
}

impl CountRing {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(1);
        Self {
            slots: (0..size).map(|_| AtomicU8::new(EMPTY)).collect(),
            next: AtomicU64::new(0),
            totals: AtomicU64::new(0),
            size,
        }
    }

    #[inline]
    pub(crate) fn counts(&self) -> Counts {
        decode(self.totals.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn record(&self, failed: bool) -> Counts {
        if !failed {
            let now = self.counts();
            if now.failures == 0 && now.calls == self.size {
                // Every slot holds a success: writing one more over the oldest changes nothing.
                return now;
            }
        }
        self.record_slow(failed)
    }

    #[cold]
    fn record_slow(&self, failed: bool) -> Counts {
        let i = (self.next.fetch_add(1, Ordering::Relaxed) % u64::from(self.size)) as usize;
        let new = if failed { FAILED } else { OK };
        let Some(slot) = self.slots.get(i) else {
            return self.counts();
        };
        let old = slot.swap(new, Ordering::AcqRel);
        if old == new {
            return self.counts();
        }
        let delta = slot_counts(new).wrapping_sub(slot_counts(old));
        decode(
            self.totals
                .fetch_add(delta, Ordering::AcqRel)
                .wrapping_add(delta),
        )
    }

    pub(crate) fn clear(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(EMPTY, Ordering::AcqRel);
            if old != EMPTY {
                self.totals.fetch_sub(slot_counts(old), Ordering::AcqRel);
            }
        }
    }
}

/// Bucket words: `epoch (low 32 bits) << 32 | calls << 16 | failures`.
const BUCKET_MAX: u64 = 0xFFFF;

#[inline]
const fn bucket(epoch: u32, calls: u64, failures: u64) -> u64 {
    ((epoch as u64) << 32) | (calls << 16) | failures
}

#[inline]
const fn bucket_epoch(b: u64) -> u32 {
    (b >> 32) as u32
}

#[inline]
const fn bucket_calls(b: u64) -> u64 {
    (b >> 16) & BUCKET_MAX
}

#[inline]
const fn bucket_failures(b: u64) -> u64 {
    b & BUCKET_MAX
}

/// True when epoch `a` is after epoch `b` (wrapping comparison on the stored low 32 bits).
#[inline]
const fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Outcomes of the last `buckets × width`, in buckets of `width`.
///
/// A bucket counts at most 65 535 calls; past that it keeps its first 65 535 outcomes, a
/// sample that still gives the rate.
#[derive(Debug)]
pub(crate) struct TimeBuckets {
    buckets: Box<[AtomicU64]>,
    width: Nanos,
    head: AtomicU64,
    totals: AtomicU64,
}

impl TimeBuckets {
    pub(crate) fn new(buckets: u32, width: Nanos) -> Self {
        Self {
            buckets: (0..buckets.max(1)).map(|_| AtomicU64::new(0)).collect(),
            width: width.max(1),
            head: AtomicU64::new(0),
            totals: AtomicU64::new(0),
        }
    }

    #[inline]
    fn slot(&self, epoch: u64) -> Option<&AtomicU64> {
        self.buckets
            .get((epoch % self.buckets.len() as u64) as usize)
    }

    pub(crate) fn counts(&self) -> Counts {
        decode(self.totals.load(Ordering::Acquire))
    }

    pub(crate) fn record(&self, failed: bool, now: Nanos) -> Counts {
        let epoch = now / self.width;
        self.advance(epoch);
        let Some(slot) = self.slot(epoch) else {
            return self.counts();
        };
        let e32 = epoch as u32;
        let add_failures = u64::from(failed);
        let mut old = slot.load(Ordering::Acquire);
        loop {
            let oe = bucket_epoch(old);
            let (new, delta) = if oe == e32 {
                if bucket_calls(old) == BUCKET_MAX {
                    return self.counts();
                }
                (
                    old + bucket(0, 1, add_failures),
                    pack_counts(1, add_failures),
                )
            } else if after(e32, oe) {
                let evicted = pack_counts(bucket_calls(old), bucket_failures(old));
                (
                    bucket(e32, 1, add_failures),
                    pack_counts(1, add_failures).wrapping_sub(evicted),
                )
            } else {
                // The bucket already belongs to a later epoch: this record is too old to count.
                return self.counts();
            };
            match slot.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return decode(
                        self.totals
                            .fetch_add(delta, Ordering::AcqRel)
                            .wrapping_add(delta),
                    );
                }
                Err(seen) => old = seen,
            }
        }
    }

    /// Moves the head to `epoch`, emptying the buckets of epochs that left the window.
    fn advance(&self, epoch: u64) {
        let head = self.head.load(Ordering::Acquire);
        if epoch <= head
            || self
                .head
                .compare_exchange(head, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let len = self.buckets.len() as u64;
        let first = (head + 1).max(epoch.saturating_sub(len - 1));
        for e in first..=epoch {
            let Some(slot) = self.slot(e) else { continue };
            let e32 = e as u32;
            let mut old = slot.load(Ordering::Acquire);
            while after(e32, bucket_epoch(old)) {
                match slot.compare_exchange_weak(
                    old,
                    bucket(e32, 0, 0),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        let evicted = pack_counts(bucket_calls(old), bucket_failures(old));
                        self.totals.fetch_sub(evicted, Ordering::AcqRel);
                        break;
                    }
                    Err(seen) => old = seen,
                }
            }
        }
    }

    pub(crate) fn clear(&self) {
        for slot in self.buckets.iter() {
            let mut old = slot.load(Ordering::Acquire);
            loop {
                let emptied = bucket(bucket_epoch(old), 0, 0);
                match slot.compare_exchange_weak(old, emptied, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        let evicted = pack_counts(bucket_calls(old), bucket_failures(old));
                        self.totals.fetch_sub(evicted, Ordering::AcqRel);
                        break;
                    }
                    Err(seen) => old = seen,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(calls: u32, failures: u32) -> Counts {
        Counts { calls, failures }
    }

    #[test]
    fn ring_subtracts_what_it_evicts() {
        let ring = CountRing::new(3);
        assert_eq!(ring.record(true), c(1, 1));
        assert_eq!(ring.record(false), c(2, 1));
        assert_eq!(ring.record(false), c(3, 1));
        // The fourth record evicts the first failure.
        assert_eq!(ring.record(false), c(3, 0));
        assert_eq!(ring.record(true), c(3, 1));
        ring.clear();
        assert_eq!(ring.counts(), c(0, 0));
        assert_eq!(ring.record(true), c(1, 1));
    }

    #[test]
    fn ring_full_of_successes_ignores_further_successes_without_moving() {
        let ring = CountRing::new(2);
        ring.record(false);
        ring.record(false);
        let next = ring.next.load(Ordering::Relaxed);
        assert_eq!(ring.record(false), c(2, 0));
        assert_eq!(ring.next.load(Ordering::Relaxed), next);
        assert_eq!(ring.record(true), c(2, 1));
    }

    #[test]
    fn decode_survives_a_transiently_negative_failure_half() {
        let t = pack_counts(3, 0).wrapping_sub(pack_counts(0, 1));
        assert_eq!(decode(t), c(3, 0));
    }

    #[test]
    fn time_buckets_expire_old_outcomes_without_a_scan_per_record() {
        let s = 1_000_000_000;
        let w = TimeBuckets::new(3, s);
        assert_eq!(w.record(true, 10 * s), c(1, 1));
        assert_eq!(w.record(false, 10 * s + 1), c(2, 1));
        assert_eq!(w.record(true, 11 * s), c(3, 2));
        // Epoch 13 evicts epoch 10 (window is epochs 11..=13).
        assert_eq!(w.record(false, 13 * s), c(2, 1));
        // A long idle gap empties the whole window.
        assert_eq!(w.record(false, 100 * s), c(1, 0));
        // A late record for an epoch whose bucket moved on is dropped.
        assert_eq!(w.record(true, 97 * s), c(1, 0));
        w.clear();
        assert_eq!(w.counts(), c(0, 0));
    }

    #[test]
    fn time_bucket_saturates_instead_of_overflowing() {
        let w = TimeBuckets::new(1, 1_000);
        for _ in 0..(BUCKET_MAX + 10) {
            w.record(false, 5_000);
        }
        assert_eq!(w.counts(), c(BUCKET_MAX as u32, 0));
        assert_eq!(w.record(false, 6_000), c(1, 0));
    }
}
