//! `[[clients]]` and `[admin]`: who may use the proxy and who may steer it. Keys are kept only
//! as SHA-256 hashes; the file names an environment variable or holds the hash, never a key.

use std::num::NonZeroU32;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use toml::Spanned;

use super::{Checker, ConfigError, Located, RouteConfig};

/// The label value of requests without a valid key; no client may be called so.
pub(crate) const UNKNOWN_CLIENT: &str = "unknown";

/// The default name of the admin, for logs and events.
const DEFAULT_ADMIN_NAME: &str = "admin";

/// The SHA-256 hash of a key. Never printed, not even in `Debug`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyHash(pub(crate) [u8; 32]);

impl KeyHash {
    /// The hash of `key` as given (its UTF-8 bytes, nothing trimmed).
    pub(crate) fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Reads 64 hex digits (either case).
    fn parse_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut out = [0_u8; 32];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            *o = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One `[[clients]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientFile {
    name: Spanned<String>,
    key_env: Option<Spanned<String>>,
    key_sha256: Option<Spanned<String>>,
    routes: Spanned<Vec<Spanned<String>>>,
    requests_per_minute: Option<Spanned<u32>>,
    max_concurrent: Option<Spanned<u32>>,
}

/// `[admin]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    name: Option<Spanned<String>>,
    key_env: Option<Spanned<String>>,
    key_sha256: Option<Spanned<String>>,
}

/// One client, checked.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) name: String,
    /// `None` when `key_env` names a variable that is not set (`serve` refuses then).
    pub(crate) key: Option<KeyHash>,
    /// The routes it may use, resolved from its names and globs.
    pub(crate) routes: Vec<String>,
    pub(crate) requests_per_minute: Option<NonZeroU32>,
    pub(crate) max_concurrent: Option<NonZeroU32>,
}

/// The admin, checked.
#[derive(Debug, Clone)]
pub(crate) struct AdminConfig {
    pub(crate) name: String,
    /// `None` when `key_env` names a variable that is not set (`serve` refuses then).
    pub(crate) key: Option<KeyHash>,
}

/// A `*` glob as an anchored regex.
fn glob(pattern: &str) -> Option<regex::Regex> {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    regex::Regex::new(&format!("^{}$", parts.join(".*"))).ok()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The key of a client or the admin: the variable's value hashed, or the given hash.
fn key(
    c: &Checker<'_>,
    at: &std::ops::Range<usize>,
    field: &str,
    key_env: Option<Spanned<String>>,
    key_sha256: Option<Spanned<String>>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<Located>,
) -> Result<Option<KeyHash>, ConfigError> {
    match (key_env, key_sha256) {
        (Some(var), None) => Ok(match env(var.get_ref()).filter(|k| !k.trim().is_empty()) {
            Some(k) => Some(KeyHash::of(&k)),
            None => {
                warnings.push(c.at(
                    &var.span(),
                    Some(format!("{field}.key_env")),
                    format!(
                        "environment variable {} is not set; export it before `serve`, or give \
                         the key's hash as key_sha256 instead",
                        var.get_ref()
                    ),
                ));
                None
            }
        }),
        (None, Some(hex)) => KeyHash::parse_hex(hex.get_ref().trim())
            .map(Some)
            .ok_or_else(|| {
                c.error(
                    &hex.span(),
                    format!("{field}.key_sha256"),
                    "is not a SHA-256 hash: write the 64 hex digits that \
                     `printf %s \"$KEY\" | sha256sum` prints",
                )
            }),
        (Some(var), Some(_)) => Err(c.error(
            &var.span(),
            field,
            "give the key one way: key_env or key_sha256, not both",
        )),
        (None, None) => Err(c.error(
            at,
            field,
            "has no key: add key_env = \"VARIABLE_HOLDING_THE_KEY\" or key_sha256 = \"<64 hex \
             digits of sha256(key)>\"",
        )),
    }
}

/// Checks `[[clients]]` and `[admin]` against the routes.
pub(crate) fn check(
    c: &Checker<'_>,
    clients: Vec<Spanned<ClientFile>>,
    admin: Option<Spanned<AdminFile>>,
    routes: &[RouteConfig],
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<Located>,
) -> Result<(Vec<ClientConfig>, Option<AdminConfig>), ConfigError> {
    let route_names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    let mut out: Vec<ClientConfig> = Vec::new();
    for entry in clients {
        let span = entry.span();
        let f = entry.into_inner();
        let name = f.name.get_ref().clone();
        if !valid_name(&name) || name == UNKNOWN_CLIENT {
            return Err(c.error(
                &f.name.span(),
                "clients.name",
                format!(
                    "{name:?} is not a usable client name: use 1 to 64 letters, digits, '-', '_' \
                     or '.', and not \"{UNKNOWN_CLIENT}\" (it labels requests without a valid key)"
                ),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(c.error(
                &f.name.span(),
                "clients.name",
                format!("two clients are called {name:?}; give each its own name"),
            ));
        }
        let field = format!("clients.{name}");
        let key = key(c, &span, &field, f.key_env, f.key_sha256, env, warnings)?;
        if f.routes.get_ref().is_empty() {
            return Err(c.error(
                &f.routes.span(),
                format!("{field}.routes"),
                "lists no route; name the routes this client may use, or write [\"*\"] for all",
            ));
        }
        let mut allowed: Vec<String> = Vec::new();
        for pattern in f.routes.get_ref() {
            let matched: Vec<&str> = match glob(pattern.get_ref()) {
                Some(re) => route_names
                    .iter()
                    .copied()
                    .filter(|r| re.is_match(r))
                    .collect(),
                None => Vec::new(),
            };
            if matched.is_empty() {
                return Err(c.error(
                    &pattern.span(),
                    format!("{field}.routes"),
                    format!(
                        "{:?} matches no route; the routes are {route_names:?} (a '*' matches any \
                         characters)",
                        pattern.get_ref()
                    ),
                ));
            }
            for m in matched {
                if !allowed.iter().any(|a| a == m) {
                    allowed.push(m.to_owned());
                }
            }
        }
        let positive = |v: Option<Spanned<u32>>, what: &str| {
            v.map(|v| {
                NonZeroU32::new(*v.get_ref()).ok_or_else(|| {
                    c.error(
                        &v.span(),
                        format!("{field}.{what}"),
                        "must be at least 1; leave it out for no limit",
                    )
                })
            })
            .transpose()
        };
        let requests_per_minute = positive(f.requests_per_minute, "requests_per_minute")?;
        let max_concurrent = positive(f.max_concurrent, "max_concurrent")?;
        if let Some(k) = key
            && let Some(other) = out.iter().find(|o| o.key == Some(k))
        {
            return Err(c.error(
                &span,
                field,
                format!(
                    "has the same key as client {:?}; give each client its own key",
                    other.name
                ),
            ));
        }
        out.push(ClientConfig {
            name,
            key,
            routes: allowed,
            requests_per_minute,
            max_concurrent,
        });
    }
    let admin = match admin {
        None => None,
        Some(a) => {
            let span = a.span();
            let a = a.into_inner();
            let name = match a.name {
                Some(n) if !valid_name(n.get_ref()) || n.get_ref() == UNKNOWN_CLIENT => {
                    return Err(c.error(
                        &n.span(),
                        "admin.name",
                        "use 1 to 64 letters, digits, '-', '_' or '.', and not \"unknown\"",
                    ));
                }
                Some(n) => n.into_inner(),
                None => DEFAULT_ADMIN_NAME.to_owned(),
            };
            if out.iter().any(|o| o.name == name) {
                return Err(c.error(
                    &span,
                    "admin.name",
                    format!(
                        "a client is called {name:?} too; give the admin its own name (name = \"...\")"
                    ),
                ));
            }
            let key = key(c, &span, "admin", a.key_env, a.key_sha256, env, warnings)?;
            if let Some(k) = key
                && let Some(other) = out.iter().find(|o| o.key == Some(k))
            {
                return Err(c.error(
                    &span,
                    "admin",
                    format!(
                        "the admin key is also client {:?}'s key; the admin key must be a key of \
                         its own",
                        other.name
                    ),
                ));
            }
            Some(AdminConfig { name, key })
        }
    };
    Ok((out, admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_hashes_read_in_either_case_and_match_the_key() {
        // printf %s hello | sha256sum
        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(KeyHash::parse_hex(hex), Some(KeyHash::of("hello")));
        assert_eq!(
            KeyHash::parse_hex(&hex.to_uppercase()),
            Some(KeyHash::of("hello"))
        );
        assert_eq!(KeyHash::parse_hex(&hex[1..]), None);
        assert_eq!(KeyHash::parse_hex(&hex.replace('c', "g")), None);
        assert_eq!(format!("{:?}", KeyHash::of("hello")), "<redacted>");
    }

    #[test]
    fn globs_are_anchored() {
        let g = glob("fast-*").unwrap();
        assert!(g.is_match("fast-1"));
        assert!(!g.is_match("xfast-1"));
        assert!(glob("chat").unwrap().is_match("chat"));
        assert!(!glob("chat").unwrap().is_match("chat2"));
        assert!(glob("a.b").unwrap().is_match("a.b"));
        assert!(!glob("a.b").unwrap().is_match("axb"));
    }
}
