//! The breaker against a small reference model: random outcome sequences, held and dropped
//! permits and clock steps; both must agree on every state and every admission.
//!
//! The model is written for obviousness, not speed: its window is a `VecDeque` it scans, its
//! open time integer arithmetic, and it has no atomics, no lock and no fast paths.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::super::clock::MockClock;
use super::super::*;

const SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Params {
    consecutive: u32,
    window: u32,
    min_calls: u32,
    rate: f64,
    probes: u32,
    successes: u32,
}

const LEASE: u64 = 5 * SEC;
const CAP: u64 = 40 * SEC;
const DECAY: u64 = 60 * SEC;
const SLOW: u64 = 3 * SEC;
const MAX_RETRY_AFTER: u64 = 120 * SEC;

fn policy_of(p: Params) -> BreakerPolicy {
    BreakerPolicy::builder()
        .jitter(0.0)
        .consecutive_failures(p.consecutive)
        .window_calls(p.window)
        .min_calls(p.min_calls)
        .failure_rate(p.rate)
        .half_open_probes(p.probes)
        .half_open_successes(p.successes)
        .probe_lease(Duration::from_nanos(LEASE))
        .max_open(Duration::from_nanos(CAP))
        .backoff_decay(Duration::from_nanos(DECAY))
        .slow_call(Duration::from_nanos(SLOW))
        .max_retry_after(Duration::from_nanos(MAX_RETRY_AFTER))
        .build()
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MPermit {
    Closed {
        generation: u64,
    },
    Probe {
        generation: u64,
        slot: usize,
        ticket: u64,
    },
}

#[derive(Debug)]
struct Model {
    p: Params,
    now: u64,
    state: MState,
    generation: u64,
    open_until: u64,
    floor: u64,
    level: u32,
    closed_since: u64,
    consecutive: u32,
    window: VecDeque<bool>,
    probes: Vec<Option<(u64, u64)>>,
    successes: u32,
    next_ticket: u64,
}

impl Model {
    fn new(p: Params, now: u64) -> Self {
        Self {
            p,
            now,
            state: MState::Closed,
            generation: 0,
            open_until: 0,
            floor: 0,
            level: 0,
            closed_since: now,
            consecutive: 0,
            window: VecDeque::new(),
            probes: vec![None; p.probes as usize],
            successes: 0,
            next_ticket: 0,
        }
    }

    fn state(&self) -> State {
        match self.state {
            MState::Closed => State::Closed,
            MState::Open => State::Open,
            MState::HalfOpen => State::HalfOpen,
        }
    }

    fn new_generation(&mut self, state: MState) {
        self.state = state;
        self.generation += 1;
        self.probes.iter_mut().for_each(|p| *p = None);
        self.successes = 0;
    }

    /// Ok(permit) or Err(retry after, in nanoseconds).
    fn acquire(&mut self) -> Result<MPermit, u64> {
        loop {
            match self.state {
                MState::Closed => {
                    return Ok(MPermit::Closed {
                        generation: self.generation,
                    });
                }
                MState::Open if self.now < self.open_until => {
                    return Err(self.open_until - self.now);
                }
                MState::Open => self.new_generation(MState::HalfOpen),
                MState::HalfOpen => {
                    let now = self.now;
                    for p in &mut self.probes {
                        if p.is_some_and(|(_, lease)| lease <= now) {
                            *p = None;
                        }
                    }
                    if let Some(slot) = self.probes.iter().position(Option::is_none) {
                        let ticket = self.next_ticket;
                        self.next_ticket += 1;
                        self.probes[slot] = Some((ticket, now + LEASE));
                        return Ok(MPermit::Probe {
                            generation: self.generation,
                            slot,
                            ticket,
                        });
                    }
                    let earliest = self.probes.iter().flatten().map(|p| p.1).min().unwrap();
                    return Err(earliest - now);
                }
            }
        }
    }

    fn open(&mut self, reason: Reason) {
        let base = u64::try_from(reason.policy().open_base.as_nanos()).unwrap();
        let cap = CAP.max(base);
        let grown = base.saturating_mul(1u64 << self.level.min(40)).min(cap);
        self.level += 1;
        self.open_until = (self.now + grown).max(self.floor);
        self.consecutive = 0;
        self.window.clear();
        self.new_generation(MState::Open);
    }

    fn close(&mut self) {
        self.consecutive = 0;
        self.window.clear();
        self.closed_since = self.now;
        self.new_generation(MState::Closed);
    }

    /// None: success; Some(None): ignored; Some(Some((reason, immediate))): counted failure.
    fn verdict(o: &Op) -> Option<Option<(Reason, bool)>> {
        match *o {
            Op::Settle {
                kind, duration_ms, ..
            } => match kind {
                Kind::Success if duration_ms * 1_000_000 > SLOW => {
                    Some(Some((Reason::Timeout, false)))
                }
                Kind::Success => None,
                Kind::Fail(r) => match r.policy().breaker {
                    BreakerEffect::Ignore => Some(None),
                    BreakerEffect::Count => Some(Some((r, false))),
                    BreakerEffect::TripImmediately => Some(Some((r, true))),
                },
            },
            _ => unreachable!(),
        }
    }

    fn settle(&mut self, permit: MPermit, op: &Op) {
        if let Op::Settle {
            retry_after_s: Some(s),
            ..
        } = *op
        {
            let floor = self.now + (s * SEC).min(MAX_RETRY_AFTER);
            self.floor = self.floor.max(floor);
            if self.state == MState::Open {
                self.open_until = self.open_until.max(floor);
            }
        }
        let verdict = Self::verdict(op);
        match permit {
            MPermit::Closed { generation } => {
                if generation != self.generation {
                    return;
                }
                match verdict {
                    None => {
                        self.consecutive = 0;
                        self.push(false);
                    }
                    Some(None) => {}
                    Some(Some((reason, immediate))) => {
                        self.consecutive += 1;
                        self.push(true);
                        let calls = self.window.len() as u32;
                        let fails = self.window.iter().filter(|f| **f).count() as u32;
                        let by_run =
                            self.p.consecutive != 0 && self.consecutive >= self.p.consecutive;
                        let by_rate = calls >= self.p.min_calls.max(1)
                            && f64::from(fails) >= self.p.rate * f64::from(calls);
                        if immediate || by_run || by_rate {
                            let healthy = (self.now - self.closed_since) / DECAY;
                            self.level = self
                                .level
                                .saturating_sub(u32::try_from(healthy).unwrap_or(u32::MAX));
                            self.open(reason);
                        }
                    }
                }
            }
            MPermit::Probe {
                generation,
                slot,
                ticket,
            } => {
                if generation != self.generation || !self.take(slot, ticket) {
                    return;
                }
                match verdict {
                    None => {
                        self.successes += 1;
                        if self.successes >= self.p.successes {
                            self.close();
                        }
                    }
                    Some(None) => {}
                    Some(Some((reason, _))) => self.open(reason),
                }
            }
        }
    }

    fn drop_permit(&mut self, permit: MPermit) {
        if let MPermit::Probe {
            generation,
            slot,
            ticket,
        } = permit
            && generation == self.generation
        {
            self.take(slot, ticket);
        }
    }

    fn take(&mut self, slot: usize, ticket: u64) -> bool {
        if self.probes[slot].is_some_and(|(t, _)| t == ticket) {
            self.probes[slot] = None;
            true
        } else {
            false
        }
    }

    fn push(&mut self, failed: bool) {
        if self.window.len() == self.p.window as usize {
            self.window.pop_front();
        }
        self.window.push_back(failed);
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Success,
    Fail(Reason),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Acquire,
    Settle {
        index: usize,
        kind: Kind,
        duration_ms: u64,
        retry_after_s: Option<u64>,
    },
    Drop {
        index: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let reason = prop_oneof![
        Just(Reason::ServerError),
        Just(Reason::ConnectionRefused),
        Just(Reason::RateLimit),
        Just(Reason::Format),
        Just(Reason::Cancelled),
        Just(Reason::AuthPermanent),
        Just(Reason::ModelNotFound),
    ];
    let kind = prop_oneof![
        3 => Just(Kind::Success),
        3 => reason.prop_map(Kind::Fail),
    ];
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (
            0usize..8,
            kind,
            prop_oneof![4 => 0u64..2_000, 1 => 2_000u64..5_000],
            proptest::option::weighted(0.15, 0u64..200),
        )
            .prop_map(|(index, kind, duration_ms, retry_after_s)| Op::Settle {
                index,
                kind,
                duration_ms,
                retry_after_s,
            }),
        1 => (0usize..8).prop_map(|index| Op::Drop { index }),
        2 => prop_oneof![0u64..3_000, 3_000u64..200_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn params() -> impl Strategy<Value = Params> {
    (
        1u32..=6,
        0u32..=4,
        1u32..=3,
        1u32..=3,
        prop_oneof![Just(0.5), Just(1.0), Just(0.3)],
    )
        .prop_flat_map(|(window, consecutive, probes, successes, rate)| {
            (1u32..=window).prop_map(move |min_calls| Params {
                consecutive,
                window,
                min_calls,
                rate,
                probes,
                successes,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_the_reference_model(p in params(), ops in prop::collection::vec(op(), 1..120)) {
        let clock = MockClock::new();
        let breaker = Breaker::builder().policy(policy_of(p)).build_with_clock(clock.clock());
        let mut model = Model::new(p, clock.now());
        let mut held: Vec<(Permit<'_>, MPermit)> = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Acquire => {
                    let real = breaker.try_acquire();
                    let expected = model.acquire();
                    match (real, expected) {
                        (Ok(permit), Ok(m)) => {
                            prop_assert_eq!(permit.is_probe(), matches!(m, MPermit::Probe { .. }), "step {}", step);
                            held.push((permit, m));
                        }
                        (Err(rej), Err(wait)) => {
                            prop_assert_eq!(rej.retry_after(), Some(Duration::from_nanos(wait)), "step {}", step);
                        }
                        (real, expected) => {
                            prop_assert!(false, "step {}: breaker {:?}, model {:?}", step, real.map(|_| ()), expected);
                        }
                    }
                }
                Op::Settle { index, kind, duration_ms, retry_after_s } => {
                    if held.is_empty() { continue; }
                    let (permit, m) = held.remove(index % held.len());
                    let d = Duration::from_millis(duration_ms);
                    let mut outcome = match kind {
                        Kind::Success => Outcome::success(d),
                        Kind::Fail(r) => Outcome::failure(r, d),
                    };
                    if let Some(s) = retry_after_s {
                        outcome = outcome.with_retry_after(Duration::from_secs(s));
                    }
                    permit.record(outcome);
                    model.settle(m, op);
                }
                Op::Drop { index } => {
                    if held.is_empty() { continue; }
                    let (permit, m) = held.remove(index % held.len());
                    drop(permit);
                    model.drop_permit(m);
                }
                Op::Advance { ms } => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms * 1_000_000;
                }
            }
            prop_assert_eq!(breaker.state(), model.state(), "step {}: {:?}", step, op);
        }
    }
}
