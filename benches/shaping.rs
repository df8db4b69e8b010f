//! The route's own cost, without HTTP: a call whose attempt answers at once. The one-target
//! tier case is the closed path of a plain route (compare it with the same bench before tiers
//! existed); the `least_loaded` cases add a power-of-two-choices pick among 2 and 8 targets.

#![expect(clippy::expect_used, reason = "benchmark setup should fail loudly")]
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use llm_failover::breaker::Registry;
use llm_failover::chain::{AttemptFailure, Route, Tier};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut registry = Registry::builder();
    for i in 0..8 {
        registry = registry.target(&format!("p{i}"), "m");
    }
    let registry = Arc::new(registry.build().expect("registry"));
    let one = Route::builder("one", Arc::clone(&registry))
        .target("p0", "m")
        .target("p1", "m")
        .build()
        .expect("route");
    let least = |n: usize| {
        let mut tier = Tier::least_loaded();
        for i in 0..n {
            tier = tier.target(&format!("p{i}"), "m");
        }
        Route::builder("least", Arc::clone(&registry))
            .tier(tier)
            .build()
            .expect("route")
    };
    let (two, eight) = (least(2), least(8));
    let mut g = c.benchmark_group("shaping");
    g.measurement_time(Duration::from_secs(5));
    for (name, route) in [
        ("one_target_tier_closed_path", &one),
        ("least_loaded_2", &two),
        ("least_loaded_8", &eight),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    route
                        .call(|_| async { Ok::<_, AttemptFailure>(1_u32) })
                        .await
                        .expect("ok")
                        .value,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
