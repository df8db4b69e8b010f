//! The breaker's clock: monotonic nanoseconds since the breaker was built, plus wall time for
//! telemetry and for adopting deadlines from other replicas.
//!
//! The clock is crate-private (as metrics-exporter-prometheus keeps its clock out of its public
//! API): applications always get the system clock, tests inject a [`MockClock`] through the
//! crate-private `build_with_clock` constructors and step time without sleeping.
//!
//! The system clock reads `CLOCK_MONOTONIC_COARSE` through `coarsetime` (about 5 ns against
//! about 18 ns for `std::time::Instant` on this machine). Its resolution of a few milliseconds
//! is far below any breaker timing.
//!
//! The open-state rejection path, which must cost no more than the closed path, reads the
//! clock through [`Clock::recent`]: one relaxed load of a value that one background thread,
//! started with the first breaker, refreshes every [`RECENT_PERIOD`]. A rejection may
//! therefore outlast the open time by up to that period. If the thread cannot be started,
//! `recent` reads the clock itself.

#[cfg(test)]
use std::sync::Arc;
use std::sync::OnceLock;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(test)]
use std::time::UNIX_EPOCH;
use std::time::{Duration, SystemTime};

/// Monotonic nanoseconds since the clock's epoch.
pub(crate) type Nanos = u64;

/// A clock the breaker reads: the system clock or a test's mock.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    /// The coarse monotonic system clock.
    System(SystemClock),
    /// A clock that only moves when a test says so.
    #[cfg(test)]
    Mock(MockClock),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::System(SystemClock::new())
    }
}

impl Clock {
    /// Monotonic nanoseconds since the clock's epoch; never 0 or `u64::MAX`.
    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        match self {
            Clock::System(c) => c.now(),
            #[cfg(test)]
            Clock::Mock(c) => c.now(),
        }
    }

    /// As [`now`](Self::now), up to [`RECENT_PERIOD`] behind, for the rejection path.
    #[inline]
    pub(crate) fn recent(&self) -> Nanos {
        match self {
            Clock::System(c) => c.recent(),
            #[cfg(test)]
            Clock::Mock(c) => c.now(),
        }
    }

    /// How far behind the real time [`now`](Self::now) may read: the coarse clock advances
    /// once a kernel tick (1 to 10 ms). A wait told to a caller is this much longer, so that a
    /// caller who waits exactly that long is not turned away by a clock that has not ticked.
    #[inline]
    pub(crate) fn slack(&self) -> Nanos {
        match self {
            Clock::System(_) => COARSE_SLACK,
            #[cfg(test)]
            Clock::Mock(_) => 0,
        }
    }

    /// The wall time that corresponds to the monotonic instant `at`.
    pub(crate) fn wall_at(&self, at: Nanos) -> SystemTime {
        let now = self.now();
        let wall_now = match self {
            Clock::System(_) => SystemTime::now(),
            #[cfg(test)]
            Clock::Mock(c) => c.wall_now(),
        };
        if at >= now {
            wall_now + Duration::from_nanos(at - now)
        } else {
            wall_now - Duration::from_nanos(now - at)
        }
    }

    /// The monotonic instant that corresponds to the wall time `at` (saturating at now when
    /// `at` is in the past).
    pub(crate) fn mono_at(&self, at: SystemTime) -> Nanos {
        let now = self.now();
        let wall_now = match self {
            Clock::System(_) => SystemTime::now(),
            #[cfg(test)]
            Clock::Mock(c) => c.wall_now(),
        };
        match at.duration_since(wall_now) {
            Ok(ahead) => now.saturating_add(nanos_of(ahead)),
            Err(_) => now,
        }
    }
}

/// Whole nanoseconds of `d`, saturating at `u64::MAX / 2` so sums cannot overflow.
#[inline]
pub(crate) fn nanos_of(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).map_or(u64::MAX / 2, |n| n.min(u64::MAX / 2))
}

/// The coarse monotonic system clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemClock {
    epoch: coarsetime::Instant,
    /// The refreshing thread runs, so `recent` may read its value.
    refreshed: bool,
}

/// Offset added to every reading so that 0 never means "now".
const ORIGIN: Nanos = 1_000_000_000;

/// How often the background thread refreshes the clock that [`Clock::recent`] reads.
pub(crate) const RECENT_PERIOD: Duration = Duration::from_millis(5);

/// The coarse clock's tick at its longest (a kernel with `HZ=100`), in nanoseconds.
const COARSE_SLACK: Nanos = 10_000_000;

/// Whether the refreshing thread runs (started once, with the first system clock).
static UPDATER: OnceLock<bool> = OnceLock::new();

impl SystemClock {
    pub(crate) fn new() -> Self {
        let refreshed = *UPDATER.get_or_init(|| {
            coarsetime::Instant::update();
            let period = u64::try_from(RECENT_PERIOD.as_millis()).unwrap_or(5);
            // The updater is kept for the life of the process: leak its handle.
            coarsetime::Updater::new(period)
                .start()
                .map(std::mem::forget)
                .is_ok()
        });
        Self {
            epoch: coarsetime::Instant::now_without_cache_update(),
            refreshed,
        }
    }

    #[inline]
    fn recent(&self) -> Nanos {
        if !self.refreshed {
            return self.now();
        }
        ORIGIN
            + coarsetime::Instant::recent()
                .duration_since(self.epoch)
                .as_nanos()
    }

    #[inline]
    fn now(&self) -> Nanos {
        // `now_without_cache_update` does not write coarsetime's global cache, so threads
        // rejecting calls on the same breaker do not bounce a shared cache line.
        let d = coarsetime::Instant::now_without_cache_update().duration_since(self.epoch);
        ORIGIN + d.as_nanos()
    }
}

/// A clock that only moves when told to; clones share the same time.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct MockClock {
    nanos: Arc<AtomicU64>,
}

#[cfg(test)]
impl Default for MockClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl MockClock {
    /// The wall time the mock's monotonic origin corresponds to (2023-11-14T22:13:20Z).
    const WALL_ORIGIN_SECS: u64 = 1_700_000_000;

    /// A mock clock at its origin.
    pub(crate) fn new() -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(ORIGIN)),
        }
    }

    /// Moves time forward by `d`.
    pub(crate) fn advance(&self, d: Duration) {
        self.nanos.fetch_add(nanos_of(d), Ordering::SeqCst);
    }

    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        self.nanos.load(Ordering::SeqCst)
    }

    /// The wall time now.
    pub(crate) fn wall_now(&self) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(Self::WALL_ORIGIN_SECS)
            + Duration::from_nanos(self.now() - ORIGIN)
    }

    /// This mock as a [`Clock`].
    pub(crate) fn clock(&self) -> Clock {
        Clock::Mock(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_moves_only_when_advanced_and_maps_wall_time_both_ways() {
        let mock = MockClock::new();
        let clock = mock.clock();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        mock.advance(Duration::from_secs(3));
        assert_eq!(clock.now(), t0 + 3_000_000_000);
        let at = clock.now() + 5_000_000_000;
        let wall = clock.wall_at(at);
        assert_eq!(clock.mono_at(wall), at);
        // A wall time in the past maps to now, never before it.
        assert_eq!(clock.mono_at(UNIX_EPOCH), clock.now());
    }

    #[test]
    fn system_clock_is_monotonic_and_never_zero() {
        let clock = Clock::default();
        let a = clock.now();
        let b = clock.now();
        assert!(a >= ORIGIN && b >= a);
    }
}
