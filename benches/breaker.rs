//! Breaker hot paths against recloser and failsafe, in the same run and the same workload.
//!
//! * `closed`: admit a call and record its success.
//! * `open`: reject a call.
//! * `half_open`: the admission check while recovering. llm-failover rejects a call because
//!   its probe slot is taken; recloser and failsafe bound no probes, so they admit (recloser
//!   also records the success into its half-open ring, failsafe only checks permission).
//! * `closed_2_threads`: `closed` on two threads at once on one shared breaker (time per call
//!   per thread).

#![expect(clippy::unwrap_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_main};
use failsafe::{CircuitBreaker as _, backoff, failure_policy};
use llm_failover::Reason;
use llm_failover::breaker::{Breaker, BreakerPolicy, Outcome};

const HOUR: Duration = Duration::from_secs(3600);

fn ours() -> Breaker {
    Breaker::new(BreakerPolicy::default())
}

fn ours_open() -> Breaker {
    let policy = BreakerPolicy::builder()
        .consecutive_failures(1)
        .open_base(Reason::ServerError, HOUR)
        .build()
        .unwrap();
    let b = Breaker::new(policy);
    b.try_acquire()
        .unwrap()
        .record(Outcome::failure(Reason::ServerError, Duration::ZERO));
    assert!(b.try_acquire().is_err());
    b
}

fn recloser_closed() -> recloser::Recloser {
    recloser::Recloser::default()
}

fn recloser_open() -> recloser::Recloser {
    let r = recloser::Recloser::custom()
        .closed_len(1)
        .open_wait(HOUR)
        .build();
    for _ in 0..3 {
        let _ = r.call(|| Err::<(), ()>(()));
    }
    assert!(matches!(
        r.call(|| Ok::<(), ()>(())),
        Err(recloser::Error::Rejected)
    ));
    r
}

type Failsafe = failsafe::StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, ()>;

fn failsafe_with(wait: Duration) -> Failsafe {
    failsafe::Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            5,
            backoff::constant(wait),
        ))
        .build()
}

fn closed_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed");
    let b = ours();
    g.bench_function("llm-failover", |bench| {
        bench.iter(|| {
            b.try_acquire()
                .map(|p| p.record(Outcome::success(black_box(Duration::ZERO))))
        });
    });
    let r = recloser_closed();
    g.bench_function("recloser", |bench| {
        bench.iter(|| r.call(|| Ok::<_, ()>(black_box(1))));
    });
    let f = failsafe_with(HOUR);
    g.bench_function("failsafe", |bench| {
        bench.iter(|| f.call(|| Ok::<_, ()>(black_box(1))));
    });
    g.finish();
}

fn open_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    let b = ours_open();
    g.bench_function("llm-failover", |bench| {
        bench.iter(|| {
            b.try_acquire()
                .map(|p| p.record(Outcome::success(Duration::ZERO)))
        });
    });
    let r = recloser_open();
    g.bench_function("recloser", |bench| {
        bench.iter(|| r.call(|| Ok::<_, ()>(black_box(1))));
    });
    let f = failsafe_with(HOUR);
    for _ in 0..5 {
        let _ = f.call(|| Err::<(), ()>(()));
    }
    assert!(!f.is_call_permitted());
    g.bench_function("failsafe", |bench| {
        bench.iter(|| f.call(|| Ok::<_, ()>(black_box(1))));
    });
    g.finish();
}

fn half_open_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("half_open");
    let b = ours();
    b.control().force_open(Some(Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(20));
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    g.bench_function("llm-failover", |bench| {
        bench.iter(|| {
            b.try_acquire()
                .map(|p| p.record(Outcome::success(Duration::ZERO)))
        });
    });
    drop(probe);
    g.bench_function("recloser", |bench| {
        bench.iter_custom(|iters| {
            // A half-open ring longer than the run, so every call stays half-open.
            let r = recloser::Recloser::custom()
                .closed_len(1)
                .half_open_len(usize::try_from(iters).unwrap() + 2)
                .open_wait(Duration::ZERO)
                .build();
            for _ in 0..3 {
                let _ = r.call(|| Err::<(), ()>(()));
            }
            let start = Instant::now();
            for _ in 0..iters {
                let _ = black_box(r.call(|| Ok::<_, ()>(black_box(1))));
            }
            start.elapsed()
        });
    });
    let f = failsafe_with(Duration::from_nanos(1));
    for _ in 0..5 {
        let _ = f.call(|| Err::<(), ()>(()));
    }
    std::thread::sleep(Duration::from_millis(1));
    assert!(f.is_call_permitted());
    g.bench_function("failsafe", |bench| {
        bench.iter(|| f.is_call_permitted());
    });
    g.finish();
}

/// Runs `op` `iters` times on each of two threads at once; the time per call per thread.
fn two_threads(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                op();
            }
            start.elapsed()
        });
        barrier.wait();
        let start = Instant::now();
        for _ in 0..iters {
            op();
        }
        let mine = start.elapsed();
        mine.max(worker.join().unwrap_or(mine))
    })
}

fn closed_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_2_threads");
    let b = ours();
    g.bench_function("llm-failover", |bench| {
        bench.iter_custom(|iters| {
            two_threads(iters, &|| {
                let _ = black_box(
                    b.try_acquire()
                        .map(|p| p.record(Outcome::success(black_box(Duration::ZERO)))),
                );
            })
        });
    });
    let r = recloser_closed();
    g.bench_function("recloser", |bench| {
        bench.iter_custom(|iters| {
            two_threads(iters, &|| {
                let _ = black_box(r.call(|| Ok::<_, ()>(black_box(1))));
            })
        });
    });
    let f = failsafe_with(HOUR);
    g.bench_function("failsafe", |bench| {
        bench.iter_custom(|iters| {
            two_threads(iters, &|| {
                let _ = black_box(f.call(|| Ok::<_, ()>(black_box(1))));
            })
        });
    });
    g.finish();
}

/// The criterion group (in a module so the generated function needs no docs).
mod group {
    use super::{closed_ops, closed_two_threads, half_open_ops, open_ops};
    criterion::criterion_group!(
        benches,
        closed_ops,
        open_ops,
        half_open_ops,
        closed_two_threads
    );
}
criterion_main!(group::benches);
