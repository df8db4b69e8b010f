//! The wait a provider asked for: headers first, then the body, then the message text.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use regex::Regex;

/// The longest wait a provider hint may ask for; larger values are capped to this.
///
/// A daily quota that resets "in 24 hours" is honoured; a `Retry-After` of ten years is not.
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// "try again in 2s", "retry after 6 seconds", "Retry-After: 2 hours", "retry in 1m30s": the
/// words that announce a wait, up to the wait's first digit.
static TEXT_HINT: LazyLock<Regex> = LazyLock::new(|| {
    super::fixed_regex(
        r"(?i)\b(?:try again|retry|retry[- ]after|wait)(?:\s+(?:in|after|for))?\s*:?\s*\d",
    )
});

/// The wait the headers ask for.
///
/// `retry-after-ms` wins over `retry-after` (seconds or an HTTP date), which wins over the
/// rate-limit reset headers (`x-ratelimit-reset-requests` / `-tokens` as "1m30s" or "20ms",
/// `x-ratelimit-reset` in seconds or epoch seconds, `anthropic-ratelimit-*-reset` as RFC 3339
/// timestamps). Of the reset headers, those whose `remaining` says 0 are used when any does;
/// else the longest, because the hint is a floor on how long to stay away.
pub(crate) fn from_headers<'h>(
    headers: impl Iterator<Item = (&'h str, &'h str)> + Clone,
    now: impl Fn() -> SystemTime,
) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .clone()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return cap(secs_f64(ms / 1000.0)?);
    }
    if let Some(v) = get("retry-after") {
        if let Ok(s) = v.parse::<f64>() {
            return cap(secs_f64(s)?);
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return cap(at.duration_since(now()).unwrap_or(Duration::ZERO));
        }
    }
    let mut exhausted: Option<Duration> = None;
    let mut any: Option<Duration> = None;
    for (name, value) in headers.clone() {
        let Some(reset) = reset_of(name, value, &now) else {
            continue;
        };
        any = any.max(Some(reset));
        // x-ratelimit-reset-tokens ↔ x-ratelimit-remaining-tokens,
        // anthropic-ratelimit-tokens-reset ↔ anthropic-ratelimit-tokens-remaining.
        let remaining_name = name
            .to_ascii_lowercase()
            .replacen("-reset", "-remaining", 1);
        let remaining = get(&remaining_name);
        if remaining.is_some_and(|r| r == "0") {
            exhausted = exhausted.max(Some(reset));
        }
    }
    cap(exhausted.or(any)?)
}

/// The wait one rate-limit reset header states, if `name` is one.
fn reset_of(name: &str, value: &str, now: &impl Fn() -> SystemTime) -> Option<Duration> {
    let value = value.trim();
    let starts = |p: &str| {
        name.get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    };
    let ends = |p: &str| {
        name.len()
            .checked_sub(p.len())
            .and_then(|i| name.get(i..))
            .is_some_and(|t| t.eq_ignore_ascii_case(p))
    };
    if starts("anthropic-ratelimit-") && ends("-reset") {
        let at = humantime::parse_rfc3339_weak(value).ok()?;
        return Some(at.duration_since(now()).unwrap_or(Duration::ZERO));
    }
    if starts("x-ratelimit-reset") {
        if let Ok(n) = value.parse::<f64>() {
            // x-ratelimit-reset is seconds on most providers and epoch seconds on a few.
            if n > 1_000_000_000.0 {
                let at = SystemTime::UNIX_EPOCH + Duration::try_from_secs_f64(n).ok()?;
                return Some(at.duration_since(now()).unwrap_or(Duration::ZERO));
            }
            return secs_f64(n);
        }
        return parse_compound(value);
    }
    None
}

/// The wait message text asks for: "try again in 2s", "retry after 6 seconds".
pub(crate) fn from_text(text: &str) -> Option<Duration> {
    // A match ends just after the wait's first digit: only its end is needed, so no captures
    // and no backward scan for its start. The first announced wait that parses counts.
    let mut from = 0;
    while let Some(end) = TEXT_HINT.shortest_match_at(text, from) {
        if let Some(wait) = text.get(end - 1..).and_then(parse_compound) {
            return cap(wait);
        }
        from = end;
    }
    None
}

/// The wait of a structured delay field such as Google's `retryDelay` ("7s", "1.5s").
pub(crate) fn from_delay(delay: &str) -> Option<Duration> {
    cap(parse_compound(delay)?)
}

fn secs_f64(s: f64) -> Option<Duration> {
    if s.is_finite() && s >= 0.0 {
        Some(Duration::try_from_secs_f64(s.min(MAX_RETRY_HINT.as_secs_f64())).ok()?)
    } else {
        None
    }
}

fn cap(d: Duration) -> Option<Duration> {
    Some(d.min(MAX_RETRY_HINT))
}

/// Duration units by their names, with their length in seconds.
const UNITS: &[(&[&str], f64)] = &[
    (&["ms", "msec", "millisecond", "milliseconds"], 0.001),
    (&["s", "sec", "secs", "second", "seconds"], 1.0),
    (&["m", "min", "mins", "minute", "minutes"], 60.0),
    (&["h", "hr", "hrs", "hour", "hours"], 3600.0),
    (&["d", "day", "days"], 86400.0),
];

/// Parses "1m30s", "20ms", "2m59.56s", "6h", "24 hours", "7.5 seconds": numbers with units,
/// summed. Stops at the first word that is not a unit; needs at least one number with a unit.
pub(crate) fn parse_compound(s: &str) -> Option<Duration> {
    let mut total = 0.0_f64;
    let mut rest = s.trim_start();
    let mut parsed = false;
    while let Some(first) = rest.chars().next() {
        if !first.is_ascii_digit() {
            break;
        }
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let Ok(n) = rest[..num_end].parse::<f64>() else {
            break;
        };
        let after = rest[num_end..].trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let unit = &after[..unit_end];
        let Some((_, scale)) = UNITS
            .iter()
            .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(unit)))
        else {
            break;
        };
        total += n * scale;
        parsed = true;
        rest = after[unit_end..].trim_start();
    }
    if parsed { secs_f64(total) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn hdrs(pairs: &[(&'static str, &'static str)]) -> Option<Duration> {
        from_headers(pairs.iter().copied(), || at(1_700_000_000))
    }

    #[test]
    fn compound_durations() {
        assert_eq!(parse_compound("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_compound("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_compound("2m59.5s"),
            Some(Duration::from_millis(179_500))
        );
        assert_eq!(parse_compound("6h."), Some(Duration::from_secs(6 * 3600)));
        assert_eq!(
            parse_compound("24 hours"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_compound("3 apples"), None);
        assert_eq!(parse_compound("soon"), None);
        assert_eq!(parse_compound("1.2.3s"), None);
    }

    #[test]
    fn retry_after_seconds_ms_and_dates() {
        assert_eq!(hdrs(&[("Retry-After", "2")]), Some(Duration::from_secs(2)));
        assert_eq!(
            hdrs(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            hdrs(&[("retry-after", "9"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(at(1_700_000_030));
        let pairs = [("Retry-After", date.as_str())];
        assert_eq!(
            from_headers(pairs.iter().copied(), || at(1_700_000_000)),
            Some(Duration::from_secs(30))
        );
        // A date in the past means "now", not an error.
        let past = httpdate::fmt_http_date(at(1_600_000_000));
        let pairs = [("Retry-After", past.as_str())];
        assert_eq!(
            from_headers(pairs.iter().copied(), || at(1_700_000_000)),
            Some(Duration::ZERO)
        );
        assert_eq!(hdrs(&[("retry-after", "-5")]), None);
        assert_eq!(hdrs(&[("retry-after", "soon")]), None);
    }

    #[test]
    fn absurd_values_are_capped() {
        assert_eq!(
            hdrs(&[("retry-after", "999999999999")]),
            Some(MAX_RETRY_HINT)
        );
        assert_eq!(hdrs(&[("retry-after", "1e300")]), Some(MAX_RETRY_HINT));
        assert_eq!(from_text("try again in 900 days"), Some(MAX_RETRY_HINT));
    }

    #[test]
    fn rate_limit_reset_headers_prefer_the_exhausted_limit() {
        let both = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-remaining-tokens", "1200"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(hdrs(&both), Some(Duration::from_millis(20)));
        let unknown = [
            ("x-ratelimit-reset-requests", "1m30s"),
            ("x-ratelimit-reset-tokens", "2s"),
        ];
        assert_eq!(hdrs(&unknown), Some(Duration::from_secs(90)));
        let anthropic = [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:27Z"),
        ];
        assert_eq!(hdrs(&anthropic), Some(Duration::from_secs(7)));
        assert_eq!(
            hdrs(&[("x-ratelimit-reset", "1700000012")]),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            hdrs(&[("x-ratelimit-reset", "3")]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(hdrs(&[("content-type", "text/plain")]), None);
    }

    #[test]
    fn hints_in_text() {
        let cases = [
            ("Please try again in 2s.", 2_000),
            ("retry after 6 seconds", 6_000),
            ("429 RPM limit exceeded; Retry-After: 2 hours", 7_200_000),
            (
                "rate limit reached for requests. Retry after 6h.",
                21_600_000,
            ),
            ("Rate limit reached. Please try again in 1m30s.", 90_000),
            ("Please retry in 7.528812s.", 7_528),
        ];
        for (text, ms) in cases {
            let got = from_text(text).map(|d| d.as_millis());
            assert_eq!(got, Some(ms), "{text}");
        }
        assert_eq!(from_text("try again after 11:34 AM"), None);
        assert_eq!(from_text("You can retry your request"), None);
        assert_eq!(from_delay("17s"), Some(Duration::from_secs(17)));
        assert_eq!(from_delay("0.25s"), Some(Duration::from_millis(250)));
    }
}
