//! The registry: one breaker per configured (provider, model) plus one provider-wide breaker
//! per provider.
//!
//! Only configured targets have breakers, so the registry is bounded by configuration and a
//! typo or a hostile model name cannot grow it. The provider-wide breaker gates every model of
//! its provider: a dead host (connection refused, DNS, unreachable, TLS) or a bad key takes all
//! of them out at once, while model-scoped reasons (rate limit, model not found, overloaded)
//! open only that model's breaker and its siblings stay in service.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::reason::{BreakerEffect, Scope};
use crate::telemetry::names::breaker::PROVIDER_WIDE;

use super::clock::Clock;
use super::error::{CallError, RegistryError, Rejected};
use super::{
    Breaker, BreakerPolicy, ControlHandle, Failure, Listener, Outcome, OwnedPermit, Permit,
    Transition,
};

struct ProviderEntry {
    breaker: Breaker,
    models: HashMap<String, Breaker>,
}

/// Breakers for the configured targets, keyed by (provider, model), with provider-wide
/// parents.
///
/// ```
/// use std::time::Duration;
/// use llm_failover::Reason;
/// use llm_failover::breaker::{BreakerPolicy, Outcome, Registry, State};
///
/// let registry = Registry::builder()
///     .policy(BreakerPolicy::builder().consecutive_failures(1).build()?)
///     .target("openai", "gpt-4o")
///     .target("openai", "gpt-4o-mini")
///     .build()?;
///
/// // A refused connection indicts the host: every model of the provider is out.
/// let target = registry.target("openai", "gpt-4o").expect("configured");
/// let permit = target.try_acquire().expect("closed");
/// permit.record(Outcome::failure(Reason::ConnectionRefused, Duration::from_millis(3)));
/// assert_eq!(registry.breaker("openai", "*").unwrap().state(), State::Open);
/// assert!(registry.target("openai", "gpt-4o-mini").unwrap().try_acquire().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Registry {
    providers: HashMap<String, ProviderEntry>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Builds a [`Registry`].
#[must_use]
pub struct RegistryBuilder {
    policy: BreakerPolicy,
    provider_policies: Vec<(String, BreakerPolicy)>,
    targets: Vec<(String, String, Option<BreakerPolicy>)>,
    listener: Option<Listener>,
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("policy", &self.policy)
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl RegistryBuilder {
    /// The policy of every breaker not given its own. Default: [`BreakerPolicy::default`].
    pub fn policy(mut self, policy: BreakerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy of `provider`'s provider-wide breaker. Default: the registry's policy.
    pub fn provider_policy(mut self, provider: &str, policy: BreakerPolicy) -> Self {
        self.provider_policies.push((provider.to_owned(), policy));
        self
    }

    /// Adds a breaker for `model` of `provider` (and a provider-wide breaker for `provider`
    /// if it has none yet), with the registry's policy.
    pub fn target(mut self, provider: &str, model: &str) -> Self {
        self.targets
            .push((provider.to_owned(), model.to_owned(), None));
        self
    }

    /// Adds a breaker for `model` of `provider` with its own policy.
    pub fn target_with_policy(
        mut self,
        provider: &str,
        model: &str,
        policy: BreakerPolicy,
    ) -> Self {
        self.targets
            .push((provider.to_owned(), model.to_owned(), Some(policy)));
        self
    }

    /// Calls `listener` with every transition of every breaker. Default: none.
    pub fn on_transition(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The registry, every breaker closed.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Duplicate`] when a target is configured twice;
    /// [`RegistryError::BadName`] for an empty name or a model named `*`.
    pub fn build(self) -> Result<Registry, RegistryError> {
        self.build_with_clock(&Clock::default())
    }

    /// The registry, reusing the breakers of `previous` (a registry being replaced, as on a
    /// configuration reload) wherever they still fit: a (provider, model) pair, or a provider's
    /// provider-wide breaker, that exists in both with an **equal policy** is the same
    /// [`Breaker`] in both, so its state, counts, operator override and any permit in flight
    /// carry over. A breaker whose policy changed starts again closed with empty counts (and
    /// no override): its window, thresholds and open times would not mean the same under the
    /// new policy. Breakers only in `previous` are left out. A breaker carried over keeps the
    /// transition listener it was built with.
    ///
    /// ```
    /// use llm_failover::breaker::{Registry, State};
    ///
    /// let old = Registry::builder().target("openai", "gpt-4o").target("local", "llama3").build()?;
    /// old.control("openai", "gpt-4o").unwrap().force_open(None);
    /// let new = Registry::builder().target("openai", "gpt-4o").build_from(&old)?;
    /// assert_eq!(new.breaker("openai", "gpt-4o").unwrap().state(), State::ForcedOpen);
    /// assert!(new.breaker("local", "llama3").is_none());
    /// # Ok::<(), llm_failover::breaker::RegistryError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_from(self, previous: &Registry) -> Result<Registry, RegistryError> {
        let mut registry = self.build()?;
        let reuse = |fresh: &mut Breaker, provider: &str, model: &str| {
            if let Some(old) = previous.breaker(provider, model)
                && old.policy() == fresh.policy()
            {
                *fresh = old.clone();
            }
        };
        for (provider, entry) in &mut registry.providers {
            reuse(&mut entry.breaker, provider, PROVIDER_WIDE);
            for (model, breaker) in &mut entry.models {
                reuse(breaker, provider, model);
            }
        }
        Ok(registry)
    }

    pub(crate) fn build_with_clock(self, clock: &Clock) -> Result<Registry, RegistryError> {
        let make = |provider: &str, model: &str, policy: BreakerPolicy| {
            let mut b = Breaker::builder().policy(policy).target(provider, model);
            if let Some(l) = &self.listener {
                b = b.on_transition(l.clone());
            }
            b.build_with_clock(clock.clone())
        };
        let mut providers: HashMap<String, ProviderEntry> = HashMap::new();
        for (provider, model, policy) in &self.targets {
            if provider.is_empty() {
                return Err(RegistryError::BadName {
                    name: provider.clone(),
                });
            }
            if model.is_empty() || model == PROVIDER_WIDE {
                return Err(RegistryError::BadName {
                    name: model.clone(),
                });
            }
            let entry = providers.entry(provider.clone()).or_insert_with(|| {
                let policy = self
                    .provider_policies
                    .iter()
                    .rev()
                    .find(|(p, _)| p == provider)
                    .map_or_else(|| self.policy.clone(), |(_, policy)| policy.clone());
                ProviderEntry {
                    breaker: make(provider, PROVIDER_WIDE, policy),
                    models: HashMap::new(),
                }
            });
            if entry.models.contains_key(model) {
                return Err(RegistryError::Duplicate {
                    provider: provider.clone(),
                    model: model.clone(),
                });
            }
            let policy = policy.clone().unwrap_or_else(|| self.policy.clone());
            entry
                .models
                .insert(model.clone(), make(provider, model, policy));
        }
        Ok(Registry { providers })
    }
}

impl Registry {
    /// A builder with the default policy and no targets.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            policy: BreakerPolicy::default(),
            provider_policies: Vec::new(),
            targets: Vec::new(),
            listener: None,
        }
    }

    /// The breakers guarding `model` of `provider`; `None` when that target is not
    /// configured.
    #[must_use]
    pub fn target(&self, provider: &str, model: &str) -> Option<Target<'_>> {
        let entry = self.providers.get(provider)?;
        Some(Target {
            provider: &entry.breaker,
            model: entry.models.get(model)?,
        })
    }

    /// The two breakers of a target (provider-wide, model), as handles that share their
    /// state: for a route to keep instead of looking the target up on every request.
    pub(crate) fn handles(&self, provider: &str, model: &str) -> Option<(Breaker, Breaker)> {
        let entry = self.providers.get(provider)?;
        Some((entry.breaker.clone(), entry.models.get(model)?.clone()))
    }

    /// One breaker: `model` of `provider`, or the provider-wide breaker when `model` is `*`.
    #[must_use]
    pub fn breaker(&self, provider: &str, model: &str) -> Option<&Breaker> {
        let entry = self.providers.get(provider)?;
        if model == PROVIDER_WIDE {
            Some(&entry.breaker)
        } else {
            entry.models.get(model)
        }
    }

    /// The control handle of one breaker (`model` = `*` for the provider-wide one).
    #[must_use]
    pub fn control(&self, provider: &str, model: &str) -> Option<ControlHandle> {
        self.breaker(provider, model).map(Breaker::control)
    }

    /// Every breaker: each provider-wide breaker, then its models.
    pub fn iter(&self) -> impl Iterator<Item = &Breaker> {
        self.providers
            .values()
            .flat_map(|e| std::iter::once(&e.breaker).chain(e.models.values()))
    }

    /// Whether `breaker` is one of this registry's own (the same breaker, not an equal one):
    /// after [`RegistryBuilder::build_from`], tells a carried-over breaker from a new one.
    #[must_use]
    pub fn holds(&self, breaker: &Breaker) -> bool {
        self.breaker(breaker.provider(), breaker.model())
            .is_some_and(|b| std::ptr::eq(b.shared(), breaker.shared()))
    }

    /// How many breakers the registry holds (models plus provider-wide).
    #[must_use]
    pub fn len(&self) -> usize {
        self.providers.values().map(|e| 1 + e.models.len()).sum()
    }

    /// True when no target is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

/// The two breakers guarding one (provider, model) target.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    provider: &'a Breaker,
    model: &'a Breaker,
}

impl<'a> Target<'a> {
    /// The target of these two breakers (see [`Registry::handles`]).
    #[inline]
    pub(crate) fn of(provider: &'a Breaker, model: &'a Breaker) -> Self {
        Target { provider, model }
    }

    /// Asks both breakers: the provider-wide one first (it gates every model), then the
    /// model's.
    ///
    /// # Errors
    ///
    /// [`Rejected`] from whichever breaker refused ([`Rejected::is_provider_wide`] says which).
    #[inline]
    pub fn try_acquire(&self) -> Result<TargetPermit<'a>, Rejected> {
        let provider = self.provider.try_acquire()?;
        let model = self.model.try_acquire()?;
        Ok(TargetPermit {
            provider,
            model,
            model_policy: self.model.policy(),
        })
    }

    /// As [`try_acquire`](Self::try_acquire), with permits that own handles on the breakers,
    /// for attempts that outlive the borrow of the registry (a stream returned to a caller).
    ///
    /// # Errors
    ///
    /// [`Rejected`] as [`try_acquire`](Self::try_acquire).
    pub fn try_acquire_owned(&self) -> Result<OwnedTargetPermit, Rejected> {
        let provider = self.provider.try_acquire_owned()?;
        let model = self.model.try_acquire_owned()?;
        Ok(OwnedTargetPermit { provider, model })
    }

    /// Runs `fut` if both breakers admit it and records its outcome where its reason's scope
    /// says (see [`TargetPermit::record`]).
    ///
    /// # Errors
    ///
    /// [`CallError::Rejected`] without running `fut`; [`CallError::Inner`] with its error.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: Failure,
    {
        let permit = self.try_acquire().map_err(CallError::Rejected)?;
        let clock = &self.model.shared().clock;
        let start = clock.now();
        let result = fut.await;
        let took = Duration::from_nanos(clock.now().saturating_sub(start));
        permit.record(Outcome::of(&result, took));
        result.map_err(CallError::Inner)
    }

    /// The provider-wide breaker.
    #[must_use]
    pub fn provider_breaker(&self) -> &'a Breaker {
        self.provider
    }

    /// The model's breaker.
    #[must_use]
    pub fn model_breaker(&self) -> &'a Breaker {
        self.model
    }
}

/// Permits from both breakers of a target; settle with [`record`](Self::record), or drop to
/// release both without an outcome.
#[must_use = "settle the permit with `record` so the breakers learn the outcome"]
#[derive(Debug)]
pub struct TargetPermit<'a> {
    provider: Permit<'a>,
    model: Permit<'a>,
    model_policy: &'a BreakerPolicy,
}

impl TargetPermit<'_> {
    /// Settles the attempt on the breaker the outcome concerns:
    ///
    /// * success: both breakers;
    /// * a failure whose reason is ignored: neither;
    /// * a provider-scoped failure (transport, auth, billing): the provider-wide breaker, the
    ///   model's permit is released without an outcome;
    /// * a model-scoped failure: the model's breaker; the provider-wide permit is released
    ///   (the host answered, which says nothing either way about the provider).
    ///
    /// Scope and effect come from the model breaker's policy. Returns the transitions caused,
    /// `[provider-wide, model]`.
    pub fn record(self, outcome: Outcome) -> [Option<Transition>; 2] {
        record_pair(self.model_policy, self.provider, self.model, outcome)
    }
}

/// Owned permits from both breakers of a target, from [`Target::try_acquire_owned`].
#[must_use = "settle the permit with `record` so the breakers learn the outcome"]
#[derive(Debug)]
pub struct OwnedTargetPermit {
    provider: OwnedPermit,
    model: OwnedPermit,
}

impl OwnedTargetPermit {
    /// Settles the attempt, as [`TargetPermit::record`].
    pub fn record(self, outcome: Outcome) -> [Option<Transition>; 2] {
        let model_breaker = std::sync::Arc::clone(&self.model.shared);
        record_pair(&model_breaker.policy, self.provider, self.model, outcome)
    }
}

/// A permit that can be settled or given back: [`Permit`] and [`OwnedPermit`].
trait Settle {
    fn settle(self, outcome: Outcome) -> Option<Transition>;
    fn give_back(self);
}

impl Settle for Permit<'_> {
    fn settle(self, outcome: Outcome) -> Option<Transition> {
        self.record(outcome)
    }
    fn give_back(self) {
        self.release();
    }
}

impl Settle for OwnedPermit {
    fn settle(self, outcome: Outcome) -> Option<Transition> {
        self.record(outcome)
    }
    fn give_back(self) {
        self.release();
    }
}

/// Records `outcome` on the breaker of a target that it concerns (see [`TargetPermit::record`]).
fn record_pair<P: Settle>(
    model_policy: &BreakerPolicy,
    provider: P,
    model: P,
    outcome: Outcome,
) -> [Option<Transition>; 2] {
    let Some(reason) = outcome.reason() else {
        return [provider.settle(outcome), model.settle(outcome)];
    };
    let rp = model_policy.reason(reason);
    let counts = match rp.breaker {
        BreakerEffect::Ignore => false,
        BreakerEffect::Count | BreakerEffect::TripImmediately => true,
    };
    if !counts {
        return [None, None];
    }
    match rp.scope {
        Scope::Provider => {
            model.give_back();
            [provider.settle(outcome), None]
        }
        Scope::Model => {
            provider.give_back();
            [None, model.settle(outcome)]
        }
    }
}
