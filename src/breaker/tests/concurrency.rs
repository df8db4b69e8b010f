//! Many threads and tasks hammering a half-open breaker: at most N probes of one cycle are
//! ever in flight together, and cancelled probes never wedge it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::super::clock::MockClock;
use super::super::*;

const N: u32 = 3;

fn half_open_breaker(clock: &MockClock) -> Breaker {
    let policy = BreakerPolicy::builder()
        .jitter(0.0)
        .consecutive_failures(1)
        .half_open_probes(N)
        .half_open_successes(2)
        .probe_lease(Duration::from_secs(5))
        .build()
        .unwrap();
    let breaker = Breaker::builder()
        .policy(policy)
        .build_with_clock(clock.clock());
    breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::failure(Reason::ServerError, Duration::ZERO));
    clock.advance(Duration::from_secs(3600));
    breaker
}

fn probe_generation(p: &Permit<'_>) -> Option<u64> {
    match p.kind {
        PermitKind::Probe { generation, .. } => Some(generation),
        PermitKind::Closed { .. } | PermitKind::Untracked | PermitKind::Settled => None,
    }
}

/// In-flight probes per cycle, checked against N on every admission.
#[derive(Default)]
struct Ledger {
    in_flight: Mutex<HashMap<u64, u32>>,
    admitted: AtomicU64,
}

impl Ledger {
    fn admit(&self, generation: u64) {
        let mut map = self.in_flight.lock().unwrap();
        let n = map.entry(generation).or_default();
        *n += 1;
        assert!(
            *n <= N,
            "cycle {generation} has {n} probes in flight, more than {N}"
        );
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Called *before* the permit is settled or dropped, so the count never lags the slot.
    fn leave(&self, generation: u64) {
        let mut map = self.in_flight.lock().unwrap();
        if let Some(n) = map.get_mut(&generation) {
            *n -= 1;
        }
    }
}

#[test]
fn threads_hammering_half_open_never_exceed_n_probes_per_cycle() {
    let clock = MockClock::new();
    let breaker = half_open_breaker(&clock);
    let ledger = Ledger::default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (breaker, ledger, stop) = (&breaker, &ledger, &stop);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(permit) = breaker.try_acquire() else {
                        std::hint::spin_loop();
                        continue;
                    };
                    let Some(generation) = probe_generation(&permit) else {
                        // Closed: settle as a failure now and then to reopen.
                        let outcome = if rng.u8(..10) == 0 {
                            Outcome::failure(Reason::ServerError, Duration::ZERO)
                        } else {
                            Outcome::success(Duration::ZERO)
                        };
                        permit.record(outcome);
                        continue;
                    };
                    ledger.admit(generation);
                    for _ in 0..rng.u32(..50) {
                        std::hint::spin_loop();
                    }
                    ledger.leave(generation);
                    match rng.u8(..4) {
                        0 => drop(permit),
                        1 => {
                            permit.record(Outcome::failure(Reason::Timeout, Duration::ZERO));
                        }
                        2 => {
                            permit.record(Outcome::failure(Reason::Format, Duration::ZERO));
                        }
                        _ => {
                            permit.record(Outcome::success(Duration::ZERO));
                        }
                    }
                }
            });
        }
        // The clock thread moves time so open states end and cycles turn over, 2,000 times,
        // and on until a probe was admitted: on a loaded machine the workers may not have run
        // at all by then (an event to wait for, not a number of turns).
        let mut turns = 0_u64;
        while turns < 2_000 || ledger.admitted.load(Ordering::Relaxed) == 0 && turns < 10_000_000 {
            clock.advance(Duration::from_millis(500));
            std::thread::yield_now();
            turns += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(ledger.admitted.load(Ordering::Relaxed) > 0);
    // Not wedged: once time passes, the breaker admits a probe and closes on successes.
    clock.advance(Duration::from_secs(3600));
    for _ in 0..2 {
        let permit = breaker.try_acquire().unwrap();
        permit.record(Outcome::success(Duration::ZERO));
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn cancelled_probe_tasks_never_wedge_the_breaker() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let clock = MockClock::new();
    let breaker = half_open_breaker(&clock);
    let ledger = Arc::new(Ledger::default());
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let breaker = breaker.clone();
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    let Ok(permit) = breaker.try_acquire() else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    if let Some(generation) = probe_generation(&permit) {
                        ledger.admit(generation);
                        ledger.leave(generation);
                    }
                    // Every probe is cancelled: dropped without an outcome.
                    drop(permit);
                    tokio::task::yield_now().await;
                }
            }));
        }
        // A task whose call future is aborted mid-flight while holding a probe slot.
        let held = {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                let _ = breaker
                    .call(std::future::pending::<Result<(), Reason>>())
                    .await;
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        held.abort();
        let _ = held.await;
    });
    assert!(ledger.admitted.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "cancellations count for nothing"
    );
    // Every slot is free again without waiting for a lease: N probes fit at once.
    let probes: Vec<_> = (0..N).map(|_| breaker.try_acquire().unwrap()).collect();
    assert!(breaker.try_acquire().is_err());
    for p in probes {
        p.record(Outcome::success(Duration::ZERO));
    }
    assert_eq!(breaker.state(), State::Closed);
}
