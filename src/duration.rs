//! Durations in configuration: humantime strings ("30s", "10m", "1h30m"), read and written in
//! one place so every error reads the same.

use std::borrow::Cow;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// A duration read from a humantime string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                D::Error::custom(format!(
                    "{e} in {s:?} (write durations like \"30s\" or \"2m\")"
                ))
            })
    }
}

/// `#[serde(with = "crate::duration")]` for a `Duration` field.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// `#[serde(with = "crate::duration")]` for a `Duration` field.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    HumanDuration::deserialize(d).map(|h| h.0)
}

/// `#[serde(with = "crate::duration::option")]` for an `Option<Duration>` field.
pub(crate) mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    use super::HumanDuration;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<HumanDuration>::deserialize(d)?.map(|h| h.0))
    }
}
