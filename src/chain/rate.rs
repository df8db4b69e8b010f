//! Requests and tokens per minute per target: the limits a provider published for a key,
//! kept on our side so that traffic over them goes to the next target before the provider
//! has to answer 429.
//!
//! A target's requests and tokens are counted over a sliding minute cut into one-second
//! slots. A request is counted until its whole slot has left the minute (60 to 61 s), so the
//! target never sees more than its limit in any 60 s. Tokens are estimated before the
//! request (see [`openai_chat::estimate_tokens`](crate::protocol::openai_chat::estimate_tokens)) and corrected
//! once the answer tells its `usage` ([`AttemptContext::report_usage`](super::AttemptContext::report_usage)).
//! When a provider's 429 carries its remaining quota (`x-ratelimit-remaining-requests` /
//! `-tokens` and their resets, see [`Quota`]), the target adopts it until the reset.

use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::ShedCause;

/// Slots of one second: one more than the minute, so a request counts for a full minute.
const SLOTS: usize = 61;
const SLOT: Duration = Duration::from_secs(1);
/// The reset assumed when a provider sends a remaining count without one.
const DEFAULT_RESET: Duration = Duration::from_secs(60);

/// A target's requests and tokens per minute (`None`: no limit).
///
/// ```
/// use llm_failover::chain::{Loads, RateLimits};
///
/// let loads = Loads::new();
/// loads.set_rate_limits("openai", "gpt-4o-mini", RateLimits::new().rpm(500).tpm(200_000));
/// let limits = loads.target("openai", "gpt-4o-mini").rate_limits();
/// assert_eq!((limits.requests_per_minute, limits.tokens_per_minute), (Some(500), Some(200_000)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt and completion) per minute.
    pub tokens_per_minute: Option<u64>,
}

impl RateLimits {
    /// No limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` requests per minute (0: no limit).
    #[must_use]
    pub fn rpm(mut self, n: u32) -> Self {
        self.requests_per_minute = (n > 0).then_some(n);
        self
    }

    /// At most `n` tokens per minute (0: no limit).
    #[must_use]
    pub fn tpm(mut self, n: u64) -> Self {
        self.tokens_per_minute = (n > 0).then_some(n);
        self
    }

    /// True when neither is set.
    #[must_use]
    pub fn is_none(&self) -> bool {
        self.requests_per_minute.is_none() && self.tokens_per_minute.is_none()
    }
}

/// What a provider said is left of a key's quota, and when it resets (OpenAI's and Groq's
/// `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`,
/// `x-ratelimit-remaining-tokens`, `x-ratelimit-reset-tokens`).
///
/// ```
/// use std::time::Duration;
/// use llm_failover::chain::Quota;
///
/// let mut headers = reqwest::header::HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-requests", "0".parse()?);
/// headers.insert("x-ratelimit-reset-requests", "1m6.5s".parse()?);
/// let q = Quota::from_headers(&headers).ok_or("no quota")?;
/// assert_eq!(q.remaining_requests, Some(0));
/// assert_eq!(q.requests_reset, Some(Duration::from_millis(66_500)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Requests left until the reset.
    pub remaining_requests: Option<u64>,
    /// When the request quota resets (60 s when the provider does not say).
    pub requests_reset: Option<Duration>,
    /// Tokens left until the reset.
    pub remaining_tokens: Option<u64>,
    /// When the token quota resets (60 s when the provider does not say).
    pub tokens_reset: Option<Duration>,
}

impl Quota {
    /// A quota of `remaining` requests until `reset`.
    #[must_use]
    pub fn requests(remaining: u64, reset: Duration) -> Self {
        Self {
            remaining_requests: Some(remaining),
            requests_reset: Some(reset),
            ..Self::default()
        }
    }

    /// A quota of `remaining` tokens until `reset`.
    #[must_use]
    pub fn tokens(remaining: u64, reset: Duration) -> Self {
        Self {
            remaining_tokens: Some(remaining),
            tokens_reset: Some(reset),
            ..Self::default()
        }
    }

    /// The quota in a response's headers; `None` when it names no remaining count.
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let count = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
        let reset = |name: &str| text(name).and_then(parse_reset);
        let q = Self {
            remaining_requests: count("x-ratelimit-remaining-requests"),
            requests_reset: reset("x-ratelimit-reset-requests"),
            remaining_tokens: count("x-ratelimit-remaining-tokens"),
            tokens_reset: reset("x-ratelimit-reset-tokens"),
        };
        (q.remaining_requests.is_some() || q.remaining_tokens.is_some()).then_some(q)
    }
}

/// A reset as providers write it: `20ms`, `1s`, `6m0s`, `1h2m3.5s` (the classifier's parser
/// of such waits, which caps them at a day), or plain seconds.
fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).ok(),
        Err(_) => crate::classify::parse_compound(s),
    }
}

/// Counts over the sliding minute, one slot per second.
#[derive(Debug)]
struct Window {
    slots: [u64; SLOTS],
    current: usize,
    /// When the current slot began.
    began: Instant,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            slots: [0; SLOTS],
            current: 0,
            began: now,
        }
    }

    fn turn(&mut self, now: Instant) {
        let ahead = now.saturating_duration_since(self.began).as_secs();
        for _ in 0..ahead.min(SLOTS as u64) {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = 0;
        }
        if ahead > 0 {
            self.began += SLOT * u32::try_from(ahead).unwrap_or(u32::MAX);
        }
    }

    fn sum(&self) -> u64 {
        self.slots.iter().sum()
    }

    /// How long until the count falls to `limit - need` or below (when `need` more fit).
    fn wait(&self, now: Instant, limit: u64, need: u64) -> Duration {
        let mut over = (self.sum() + need).saturating_sub(limit);
        // Oldest first: the slot after the current one is the oldest.
        for age in 0..SLOTS {
            let i = (self.current + 1 + age) % SLOTS;
            if over == 0 {
                break;
            }
            over = over.saturating_sub(self.slots[i]);
            if over == 0 {
                // Slot `age` (oldest = 0) leaves when the current slot is `age + 1` ahead.
                let leaves = self.began + SLOT * u32::try_from(age + 1).unwrap_or(u32::MAX);
                return leaves
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
            }
        }
        DEFAULT_RESET
    }
}

/// One target's rate limits and counts.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: RateLimits,
    requests: Window,
    tokens: Window,
    /// A provider's own word: requests or tokens left until an instant.
    adopted_requests: Option<(u64, Instant)>,
    adopted_tokens: Option<(u64, Instant)>,
}

impl Limiter {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            limits: RateLimits::default(),
            requests: Window::new(now),
            tokens: Window::new(now),
            adopted_requests: None,
            adopted_tokens: None,
        }
    }

    pub(crate) fn limits(&self) -> RateLimits {
        self.limits
    }

    pub(crate) fn set_limits(&mut self, limits: RateLimits) {
        self.limits = limits;
    }

    /// Takes a request of `tokens` (estimated), or says which limit refuses it and how long
    /// until it would fit.
    pub(crate) fn admit(&mut self, now: Instant, tokens: u64) -> Result<(), (ShedCause, Duration)> {
        self.requests.turn(now);
        self.tokens.turn(now);
        for adopted in [&mut self.adopted_requests, &mut self.adopted_tokens] {
            if adopted.is_some_and(|(_, until)| now >= until) {
                *adopted = None;
            }
        }
        if let Some((0, until)) = self.adopted_requests {
            return Err((ShedCause::RequestRate, until - now));
        }
        if let Some((left, until)) = self.adopted_tokens
            && left < tokens.max(1)
        {
            return Err((ShedCause::TokenRate, until - now));
        }
        if let Some(rpm) = self.limits.requests_per_minute {
            let rpm = u64::from(rpm);
            if self.requests.sum() >= rpm {
                return Err((ShedCause::RequestRate, self.requests.wait(now, rpm, 1)));
            }
        }
        if let Some(tpm) = self.limits.tokens_per_minute {
            let used = self.tokens.sum();
            // A request larger than the whole limit goes alone, into an empty minute.
            if used > 0 && used + tokens > tpm {
                return Err((
                    ShedCause::TokenRate,
                    self.tokens.wait(now, tpm, tokens.min(tpm)),
                ));
            }
        }
        let (r, t) = (self.requests.current, self.tokens.current);
        self.requests.slots[r] += 1;
        self.tokens.slots[t] += tokens;
        if let Some((left, _)) = &mut self.adopted_requests {
            *left = left.saturating_sub(1);
        }
        if let Some((left, _)) = &mut self.adopted_tokens {
            *left = left.saturating_sub(tokens);
        }
        Ok(())
    }

    /// A request admitted was not sent after all (its breaker refused it).
    pub(crate) fn refund(&mut self, now: Instant, tokens: u64) {
        self.requests.turn(now);
        self.tokens.turn(now);
        let (r, t) = (self.requests.current, self.tokens.current);
        self.requests.slots[r] = self.requests.slots[r].saturating_sub(1);
        self.tokens.slots[t] = self.tokens.slots[t].saturating_sub(tokens);
    }

    /// The answer said it used `actual` tokens where `estimate` were counted.
    pub(crate) fn correct(&mut self, now: Instant, estimate: u64, actual: u64) {
        self.tokens.turn(now);
        let t = self.tokens.current;
        if actual >= estimate {
            let more = actual - estimate;
            self.tokens.slots[t] += more;
            if let Some((left, _)) = &mut self.adopted_tokens {
                *left = left.saturating_sub(more);
            }
        } else {
            // Give back the overestimate, newest slots first.
            let mut less = estimate - actual;
            for age in 0..SLOTS {
                let i = (t + SLOTS - age) % SLOTS;
                let take = less.min(self.tokens.slots[i]);
                self.tokens.slots[i] -= take;
                less -= take;
                if less == 0 {
                    break;
                }
            }
        }
    }

    /// Adopts what a provider said is left.
    pub(crate) fn adopt(&mut self, now: Instant, q: &Quota) {
        if let Some(n) = q.remaining_requests {
            self.adopted_requests = Some((n, now + q.requests_reset.unwrap_or(DEFAULT_RESET)));
        }
        if let Some(n) = q.remaining_tokens {
            self.adopted_tokens = Some((n, now + q.tokens_reset.unwrap_or(DEFAULT_RESET)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_parse_as_providers_write_them() {
        let ms = |s| parse_reset(s).map(|d| d.as_millis());
        assert_eq!(ms("20ms"), Some(20));
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms("6m0s"), Some(360_000));
        assert_eq!(ms("1h2m3.5s"), Some(3_723_500));
        assert_eq!(ms("2.5"), Some(2500));
        assert_eq!(ms("soon"), None);
        assert_eq!(ms("5x"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_minute_never_holds_more_than_the_limit() {
        let mut l = Limiter::new(Instant::now());
        l.set_limits(RateLimits::new().rpm(3).tpm(100));
        let now = Instant::now;
        assert!(l.admit(now(), 10).is_ok());
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(l.admit(now(), 10).is_ok());
        assert!(l.admit(now(), 10).is_ok());
        let (cause, wait) = l.admit(now(), 10).unwrap_err();
        assert_eq!(cause, ShedCause::RequestRate);
        // The first request's slot leaves the window 61 s after it began.
        assert_eq!(wait, Duration::from_millis(59_500));
        tokio::time::advance(wait).await;
        assert!(l.admit(now(), 10).is_ok());
        // Tokens: 30 counted; 71 more do not fit until the answers correct the estimates.
        assert_eq!(l.admit(now(), 71).unwrap_err().0, ShedCause::RequestRate);
        l.set_limits(RateLimits::new().tpm(100));
        assert_eq!(l.admit(now(), 71).unwrap_err().0, ShedCause::TokenRate);
        l.correct(now(), 30, 5);
        assert!(l.admit(now(), 71).is_ok());
        // A provider's word wins until its reset.
        l.set_limits(RateLimits::new());
        l.adopt(now(), &Quota::requests(1, Duration::from_secs(10)));
        assert!(l.admit(now(), 1).is_ok());
        assert_eq!(
            l.admit(now(), 1).unwrap_err(),
            (ShedCause::RequestRate, Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(l.admit(now(), 1).is_ok());
    }
}
