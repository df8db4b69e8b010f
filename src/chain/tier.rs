//! Tiers: interchangeable targets within a route, and how the chain picks among them.
//!
//! A route is an ordered list of tiers. The targets of one tier are interchangeable (two keys
//! of one provider, two regions, two hosts of a self-hosted model); the chain picks one by the
//! tier's [`Pick`] policy, fails over to the tier's other targets first, and only then to the
//! next tier. A tier of one target is today's plain target, so a route of one-target tiers
//! behaves as an ordered failover chain.

use std::sync::Arc;

use serde::Deserialize;

/// How the chain picks the first target of a tier; the others follow it in the tier's order,
/// wrapping around, when it fails or is skipped.
///
/// ```
/// use llm_failover::chain::{Pick, Tier};
///
/// let tier = Tier::least_loaded().target("openai-eu", "gpt-4o-mini").target("openai-us", "gpt-4o-mini");
/// assert_eq!(tier.pick(), Pick::LeastLoaded);
/// assert_eq!("least_loaded".parse::<Pick>(), Ok(Pick::LeastLoaded));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Pick {
    /// The tier's targets in the order written: the first one while it serves.
    #[default]
    Ordered,
    /// At random, in proportion to each target's static weight.
    Weighted,
    /// Power of two choices: two targets at random, and of those the one with the lower
    /// in-flight count weighted by its latency average (see [`Loads`](super::Loads)). A
    /// target at its concurrency limit or with an open breaker is never picked while another
    /// is available.
    LeastLoaded,
}

impl Pick {
    /// The snake_case name (a span field value and the config spelling).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Pick::Ordered => "ordered",
            Pick::Weighted => "weighted",
            Pick::LeastLoaded => "least_loaded",
        }
    }
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Pick`] policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a pick policy; write \"ordered\", \"weighted\" or \"least_loaded\"")]
pub struct UnknownPick(String);

impl std::str::FromStr for Pick {
    type Err = UnknownPick;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ordered" => Ok(Pick::Ordered),
            "weighted" => Ok(Pick::Weighted),
            "least_loaded" => Ok(Pick::LeastLoaded),
            other => Err(UnknownPick(other.to_owned())),
        }
    }
}

/// One target of a tier as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TierTarget {
    pub(crate) provider: Arc<str>,
    pub(crate) model: Arc<str>,
    pub(crate) weight: u32,
}

/// A tier of interchangeable targets and its [`Pick`] policy, for
/// [`RouteBuilder::tier`](super::RouteBuilder::tier).
///
/// ```
/// use llm_failover::chain::Tier;
///
/// // Two keys of one provider, shared 3:1; a route's plain `.target(p, m)` is a tier of one.
/// let tier = Tier::weighted()
///     .weighted_target("openai-key-a", "gpt-4o-mini", 3)
///     .weighted_target("openai-key-b", "gpt-4o-mini", 1);
/// assert_eq!(tier.targets().count(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Tier {
    pub(crate) pick: Pick,
    pub(crate) targets: Vec<TierTarget>,
}

impl Tier {
    /// An empty tier picking by `pick`.
    pub fn new(pick: Pick) -> Self {
        Self {
            pick,
            targets: Vec::new(),
        }
    }

    /// An empty [`Pick::Ordered`] tier.
    pub fn ordered() -> Self {
        Self::new(Pick::Ordered)
    }

    /// An empty [`Pick::Weighted`] tier.
    pub fn weighted() -> Self {
        Self::new(Pick::Weighted)
    }

    /// An empty [`Pick::LeastLoaded`] tier.
    pub fn least_loaded() -> Self {
        Self::new(Pick::LeastLoaded)
    }

    /// Appends a target with weight 1.
    pub fn target(self, provider: &str, model: &str) -> Self {
        self.weighted_target(provider, model, 1)
    }

    /// Appends a target with a weight (used by [`Pick::Weighted`]; the route's
    /// [`build`](super::RouteBuilder::build) refuses a weight of zero).
    pub fn weighted_target(mut self, provider: &str, model: &str, weight: u32) -> Self {
        self.targets.push(TierTarget {
            provider: provider.into(),
            model: model.into(),
            weight,
        });
        self
    }

    /// The pick policy.
    #[must_use]
    pub fn pick(&self) -> Pick {
        self.pick
    }

    /// The targets, in order, as (provider, model, weight).
    pub fn targets(&self) -> impl Iterator<Item = (&str, &str, u32)> {
        self.targets
            .iter()
            .map(|t| (&*t.provider, &*t.model, t.weight))
    }
}

/// The index in `0..len` of the cheaper of two distinct targets drawn at random (for two
/// targets: of both), and its cost (each cost is asked once). Ties go to the first drawn.
pub(crate) fn two_choices(len: usize, cost: impl Fn(usize) -> f64) -> (usize, f64) {
    if len < 2 {
        return (0, if len == 0 { f64::INFINITY } else { cost(0) });
    }
    let a = fastrand::usize(..len);
    let mut b = fastrand::usize(..len - 1);
    if b >= a {
        b += 1;
    }
    let (ca, cb) = (cost(a), cost(b));
    if cb < ca { (b, cb) } else { (a, ca) }
}

/// An index drawn in proportion to `weight(i)`, skipping unavailable ones (weight 0 here);
/// 0 when every weight is 0.
pub(crate) fn weighted(len: usize, weight: impl Fn(usize) -> u64) -> usize {
    let total: u64 = (0..len).map(&weight).sum();
    if total == 0 {
        return 0;
    }
    let mut x = fastrand::u64(..total);
    for i in 0..len {
        let w = weight(i);
        if x < w {
            return i;
        }
        x -= w;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_choices_prefers_the_cheaper_and_uses_all() {
        let costs = [3.0, 1.0, 2.0, f64::INFINITY];
        let mut seen = [0; 4];
        for _ in 0..1000 {
            seen[two_choices(4, |i| costs[i]).0] += 1;
        }
        assert_eq!(seen[3], 0, "{seen:?}");
        assert!(seen[1] > seen[2] && seen[2] > seen[0], "{seen:?}");
        assert!(seen[0] > 0);
        assert_eq!(two_choices(2, |i| [2.0, 1.0][i]), (1, 1.0));
    }

    #[test]
    fn weighted_follows_the_weights() {
        let w = [3_u64, 1, 0];
        let mut seen = [0; 3];
        for _ in 0..4000 {
            seen[weighted(3, |i| w[i])] += 1;
        }
        assert_eq!(seen[2], 0);
        assert!((2600..3400).contains(&seen[0]), "{seen:?}");
    }
}
