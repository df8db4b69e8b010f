//! Configuration checks: every problem names its file, line and field.

use std::path::Path;

use super::{Config, ConfigError};

fn env_none(_: &str) -> Option<String> {
    None
}

fn err(src: &str) -> ConfigError {
    Config::parse_with_env(src, Path::new("t.toml"), env_none).unwrap_err()
}

/// The error of `BASE` followed by `extra`, checked to name `field` (or a field under it) at
/// `line` of `extra` (offset by `BASE`'s lines); returns its text.
fn located_at(extra: &str, line: usize, field: &str) -> String {
    let e = err(&format!("{BASE}{extra}"));
    let Some(at) = e.location() else {
        panic!("{extra:?}: no location in {e}");
    };
    assert_eq!(at.line, BASE.lines().count() + line, "{extra:?}: {e}");
    assert!(
        at.field.as_deref().is_some_and(|f| f.starts_with(field)),
        "{extra:?}: field {:?}, want {field}: {e}",
        at.field
    );
    e.to_string()
}

const BASE: &str = r#"
[providers.a]
base_url = "http://127.0.0.1:9/v1"

[routes.chat]
targets = ["a/m"]
"#;

/// Each bad configuration, the line the error must name, and its field.
#[test]
fn errors_name_line_and_field() {
    let cases: &[(&str, usize, &str)] = &[
        ("[server]\nlisten = \"everywhere\"\n", 2, "server.listen"),
        (
            "[server]\nmax_body_bytes = 10\n",
            2,
            "server.max_body_bytes",
        ),
        (
            "[server]\nshutdown_grace = \"soon\"\n",
            2,
            "server.shutdown_grace",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nmetrics_listen = \"127.0.0.1:1\"\n",
            3,
            "server.metrics_listen",
        ),
        ("[server]\nport = 1\n", 2, "server.port"),
        (
            "[route]\nmax_retries = 1\natempt_timeout = \"5s\"\n",
            3,
            "route.atempt_timeout",
        ),
        (
            "[route]\nidle_timeout = \"5 parsecs\"\n",
            2,
            "route.idle_timeout",
        ),
        ("[breaker]\nfailure_rate = 1.5\n", 2, "breaker.failure_rate"),
        (
            "[breaker.reasons.dns]\neffect = \"sometimes\"\n",
            2,
            "breaker.reasons.dns.effect",
        ),
        (
            "[breaker.reasons.nonsense]\neffect = \"count\"\n",
            1,
            "breaker.reasons",
        ),
        (
            "[providers.a.breaker]\nmin_calls = 3\nhalf_open_probes = 0\n",
            3,
            "providers.a.breaker.half_open_probes",
        ),
        (
            "[providers.b]\nbase_url = \"ftp://x\"\n",
            2,
            "providers.b.base_url",
        ),
        (
            "[providers.b]\nbase_url = \"https://u:p@x/v1\"\n",
            2,
            "providers.b.base_url",
        ),
        (
            "[providers.b]\nbase_url = \"http://x/v1\"\nbogus = true\n",
            3,
            "providers.b.bogus",
        ),
        (
            "[providers.a.classify]\nstatus = { \"99\" = \"overloaded\" }\n",
            2,
            "providers.a.classify.status",
        ),
        (
            "[providers.a.classify]\npattern = [{ regex = \"(\", reason = \"overloaded\" }]\n",
            2,
            "providers.a.classify.pattern.regex",
        ),
        (
            "[routes.more]\ntargets = [\"a/m\", \"c/m\"]\n",
            2,
            "routes.more.targets",
        ),
        (
            "[routes.more]\ntargets = [\"nomodel\"]\n",
            2,
            "routes.more.targets",
        ),
        (
            "[routes.more]\ntargets = [\"a/m\", \"a/m\"]\n",
            2,
            "routes.more.targets",
        ),
        ("[routes.more]\ntargets = []\n", 2, "routes.more.targets"),
        (
            "[routes.more]\ntargets = [\"a/m\"]\ntiers = [{ targets = [\"a/m\"] }]\n",
            3,
            "routes.more.tiers",
        ),
        ("[routes.more]\n", 1, "routes.more.targets"),
        (
            "[routes.more]\ntiers = [{ pick = \"fastest\", targets = [\"a/m\"] }]\n",
            2,
            "routes.more.tiers",
        ),
        (
            "[routes.more]\ntiers = [{ targets = [\"a/m\", \"c/m\"] }]\n",
            2,
            "routes.more.tiers",
        ),
        (
            "[routes.more]\ntiers = [{ targets = [\"a/m\"] }, { targets = [\"a/m\"] }]\n",
            2,
            "routes.more.tiers",
        ),
        (
            "[routes.more]\ntiers = [{ pick = \"weighted\", targets = [{ target = \"a/m\", weight = 0 }] }]\n",
            2,
            "routes.more.tiers",
        ),
        (
            "[routes.more]\ntiers = [{ targets = [] }]\n",
            2,
            "routes.more.tiers",
        ),
        (
            "[providers.c]\nbase_url = \"http://x/v1\"\nmax_inflight = 0\n",
            3,
            "providers.c.max_inflight",
        ),
        (
            "[providers.c]\nbase_url = \"http://x/v1\"\n[providers.c.models.m]\ntpm = 0\n",
            4,
            "providers.c.models.m.tpm",
        ),
        (
            "[providers.c]\nbase_url = \"http://x/v1\"\nslow_start = \"10s\"\nslow_start_aggression = 0.0\n",
            4,
            "providers.c.slow_start_aggression",
        ),
        (
            "[providers.c]\nbase_url = \"http://x/v1\"\nprefill = \"yes\"\n",
            3,
            "providers.c.prefill",
        ),
        (
            "[routes.more]\ntargets = [\"a/m\"]\n[routes.more.policy]\nstream_resume = \"on\"\n",
            4,
            "routes.more.policy.stream_resume",
        ),
        (
            "[routes.more]\ntargets = [\"a/m\"]\n[routes.more.policy]\nhedge_after = 5\n",
            4,
            "routes.more.policy.hedge_after",
        ),
        (
            "[routes.more]\ntargets = [\"a/m\"]\n[routes.more.policy.actions]\nformat = \"shrug\"\n",
            4,
            "routes.more.policy.actions",
        ),
    ];
    for (extra, line, field) in cases {
        let text = located_at(extra, *line, field);
        let offset = BASE.lines().count();
        assert!(
            text.starts_with(&format!("t.toml:{}:", offset + line)),
            "{text}"
        );
    }
}

#[test]
fn syntax_errors_and_missing_routes_are_located() {
    let e = err("[providers.a]\nbase_url = \n");
    assert_eq!(e.location().map(|l| l.line), Some(2), "{e}");
    let e = err("[providers.a]\nbase_url = \"http://x/v1\"\n");
    assert!(e.to_string().contains("no route"), "{e}");
    let e = err("[routes.chat]\n");
    assert!(e.to_string().contains("targets"), "{e}");
}

#[test]
fn provider_breakers_override_the_defaults_field_by_field() {
    let src = r#"
[breaker]
consecutive_failures = 7
max_open = "2m"
[breaker.reasons.rate_limit]
open_base = "20s"

[providers.a]
base_url = "http://127.0.0.1:9/v1"
[providers.a.breaker]
consecutive_failures = 2
[providers.a.breaker.reasons.rate_limit]
scope = "provider"

[providers.b]
base_url = "http://127.0.0.1:9/v1"

[route]
attempt_timeout = "9s"
max_retries = 3

[routes.chat]
targets = ["a/m", "b/m"]
[routes.chat.policy]
max_retries = 0
"#;
    let c = Config::parse_with_env(src, Path::new("t.toml"), env_none).unwrap();
    let a = &c.providers["a"].breaker;
    let b = &c.providers["b"].breaker;
    assert_eq!(a.consecutive_failures(), 2);
    assert_eq!(b.consecutive_failures(), 7);
    assert_eq!(a.max_open, std::time::Duration::from_secs(120));
    let rl = |p: &crate::breaker::BreakerPolicy| p.reasons[crate::Reason::RateLimit as usize];
    assert_eq!(rl(a).open_base, std::time::Duration::from_secs(20));
    assert_eq!(rl(a).scope, crate::reason::Scope::Provider);
    assert_eq!(rl(b).scope, crate::reason::Scope::Model);
    let policy = &c.routes[0].policy;
    assert_eq!(policy.attempt_timeout(), std::time::Duration::from_secs(9));
    assert_eq!(policy.max_retries, 0);
}

#[test]
fn a_missing_key_is_a_warning_for_check_and_located() {
    let src = "[providers.a]\nbase_url = \"http://x/v1\"\napi_key_env = \"NOT_SET_ANYWHERE\"\n[routes.chat]\ntargets = [\"a/m\"]\n";
    let c = Config::parse_with_env(src, Path::new("t.toml"), env_none).unwrap();
    let missing: Vec<_> = c.missing_keys().collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].line, 3);
    assert!(missing[0].message.contains("NOT_SET_ANYWHERE"));
    let set = Config::parse_with_env(src, Path::new("t.toml"), |_| Some("k".into())).unwrap();
    assert_eq!(set.missing_keys().count(), 0);
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/failover.toml");
    let src = std::fs::read_to_string(path).unwrap();
    let c = Config::parse_with_env(&src, Path::new(path), env_none).unwrap();
    assert_eq!(c.route_names().collect::<Vec<_>>(), ["chat", "fast"]);
    assert!(c.listen().ip().is_loopback());
    // Only the OpenAI key is missing on a bare machine.
    assert_eq!(c.missing_keys().count(), 1);
}

/// `[[clients]]` and `[admin]` mistakes, each at its line and field; no error shows a key or
/// a hash.
#[test]
fn client_and_admin_mistakes_name_line_and_field() {
    let hash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let cases: Vec<(String, usize, &str)> = vec![
        (
            "[[clients]]\nname = \"web\"\nroutes = [\"chat\"]\n".into(),
            1,
            "clients.web",
        ),
        (
            "[[clients]]\nname = \"web\"\nkey_env = \"K\"\nkey_sha256 = \"ab\"\nroutes = [\"chat\"]\n"
                .into(),
            3,
            "clients.web",
        ),
        (
            "[[clients]]\nname = \"web\"\nkey_sha256 = \"sk-live-not-a-hash\"\nroutes = [\"chat\"]\n"
                .into(),
            3,
            "clients.web.key_sha256",
        ),
        (
            format!("[[clients]]\nname = \"web\"\nkey_sha256 = \"{hash}\"\nroutes = [\"chat\", \"cha*x\"]\n"),
            4,
            "clients.web.routes",
        ),
        (
            format!("[[clients]]\nname = \"web\"\nkey_sha256 = \"{hash}\"\nroutes = []\n"),
            4,
            "clients.web.routes",
        ),
        (
            format!("[[clients]]\nname = \"unknown\"\nkey_sha256 = \"{hash}\"\nroutes = [\"*\"]\n"),
            2,
            "clients.name",
        ),
        (
            format!("[[clients]]\nname = \"a b\"\nkey_sha256 = \"{hash}\"\nroutes = [\"*\"]\n"),
            2,
            "clients.name",
        ),
        (
            format!("[[clients]]\nname = \"web\"\nkey_sha256 = \"{hash}\"\nroutes = [\"*\"]\nrequests_per_minute = 0\n"),
            5,
            "clients.web.requests_per_minute",
        ),
        (
            format!("[[clients]]\nname = \"web\"\nkey_sha256 = \"{hash}\"\nroutes = [\"*\"]\nkye_env = \"X\"\n"),
            5,
            "clients.kye_env",
        ),
        (
            format!("[[clients]]\nname = \"web\"\nkey_sha256 = \"{hash}\"\nroutes = [\"*\"]\n[[clients]]\nname = \"web\"\nkey_sha256 = \"{}\"\nroutes = [\"*\"]\n", hash.replace('2', "3")),
            6,
            "clients.name",
        ),
        (
            format!("[[clients]]\nname = \"web\"\nkey_sha256 = \"{hash}\"\nroutes = [\"*\"]\n[[clients]]\nname = \"app\"\nkey_sha256 = \"{}\"\nroutes = [\"*\"]\n", hash.to_uppercase()),
            5,
            "clients.app",
        ),
        (
            format!("[[clients]]\nname = \"web\"\nkey_sha256 = \"{hash}\"\nroutes = [\"*\"]\n[admin]\nkey_sha256 = \"{hash}\"\n"),
            5,
            "admin",
        ),
        ("[admin]\nname = \"ops\"\n".into(), 1, "admin"),
        (
            "[server]\nmax_header_bytes = 100\n".into(),
            2,
            "server.max_header_bytes",
        ),
        (
            "[server]\nmax_connections = 0\n".into(),
            2,
            "server.max_connections",
        ),
        (
            "[server]\nheader_read_timeout = \"slow\"\n".into(),
            2,
            "server.header_read_timeout",
        ),
    ];
    for (extra, line, field) in &cases {
        let text = located_at(extra, *line, field);
        assert!(!text.contains(hash), "{text}");
        assert!(!text.contains(&hash.to_uppercase()), "{text}");
        assert!(!text.contains("sk-live-not-a-hash"), "{text}");
    }
}

#[test]
fn client_keys_resolve_routes_and_missing_key_variables_stop_serve() {
    let src = format!(
        "{BASE}[routes.fast-1]\ntargets = [\"a/m\"]\n[routes.fast-2]\ntargets = [\"a/m\"]\n\
         [[clients]]\nname = \"web\"\nkey_env = \"WEB_KEY\"\nroutes = [\"fast-*\", \"fast-1\"]\n\
         requests_per_minute = 10\nmax_concurrent = 2\n[admin]\nkey_env = \"ADMIN_KEY\"\n"
    );
    let c = Config::parse_with_env(&src, Path::new("t.toml"), env_none).unwrap();
    assert_eq!(c.clients[0].routes, ["fast-1", "fast-2"]);
    assert_eq!(c.client_names().collect::<Vec<_>>(), ["web"]);
    assert!(c.has_admin());
    let missing: Vec<String> = c.missing_keys().filter_map(|w| w.field.clone()).collect();
    assert_eq!(missing, ["clients.web.key_env", "admin.key_env"]);
    assert!(matches!(
        super::Proxy::new(&c),
        Err(super::ProxyError::MissingKey(_))
    ));
    let set = Config::parse_with_env(&src, Path::new("t.toml"), |_| Some("k".into()));
    // The same key for a client and the admin is refused.
    let e = set.unwrap_err().to_string();
    assert!(e.contains("admin key is also client \"web\"'s key"), "{e}");
}

#[test]
fn tiers_and_limits_are_read() {
    let src = r#"
[providers.a]
base_url = "http://127.0.0.1:9/v1"
max_inflight = 8
max_inflight_total = 12
rpm = 500
tpm = 200000

[providers.a.models.small]
max_inflight = 2
rpm = 60

[providers.b]
base_url = "http://127.0.0.1:9/v1"
slow_start = "30s"
slow_start_aggression = 2.0

[routes.chat]
tiers = [
  { pick = "least_loaded", targets = ["a/m", "b/m"] },
  { pick = "weighted", targets = [{ target = "a/small", weight = 3 }, "b/small"] },
]

[routes.plain]
targets = ["b/m", "a/m"]
"#;
    let config = Config::parse_with_env(src, Path::new("t.toml"), env_none).unwrap();
    assert_eq!(config.max_inflight("a", "m"), Some(8));
    assert_eq!(config.max_inflight("a", "small"), Some(2));
    assert_eq!(config.max_inflight("b", "m"), None);
    use crate::chain::RateLimits;
    assert_eq!(
        config.rate_limits("a", "m"),
        RateLimits::new().rpm(500).tpm(200_000)
    );
    // A model's own rpm, the provider's tpm.
    assert_eq!(
        config.rate_limits("a", "small"),
        RateLimits::new().rpm(60).tpm(200_000)
    );
    assert!(config.rate_limits("b", "m").is_none());
    assert_eq!(
        config.slow_start("b", "m"),
        Some(crate::chain::SlowStart::new(std::time::Duration::from_secs(30)).aggression(2.0))
    );
    assert_eq!(config.slow_start("a", "m"), None);
    assert_eq!(config.provider_max_inflight("a"), Some(12));
    assert_eq!(config.provider_max_inflight("b"), None);
    let proxy = super::Proxy::new(&config).unwrap();
    let chat = &proxy.routes()[0];
    use crate::chain::Pick;
    assert_eq!(
        chat.tiers(),
        [
            (Pick::LeastLoaded, vec![("a", "m"), ("b", "m")]),
            (Pick::Weighted, vec![("a", "small"), ("b", "small")]),
        ]
    );
    let plain = &proxy.routes()[1];
    assert_eq!(
        plain.tiers(),
        [
            (Pick::Ordered, vec![("b", "m")]),
            (Pick::Ordered, vec![("a", "m")])
        ]
    );
    // One board: the same target's load is shared by both routes.
    assert!(std::sync::Arc::ptr_eq(
        &chat.loads().get("a", "m").unwrap(),
        &plain.loads().get("a", "m").unwrap()
    ));
    assert_eq!(
        chat.loads().get("a", "small").unwrap().max_inflight(),
        Some(2)
    );
    assert_eq!(
        chat.loads().get("a", "small").unwrap().rate_limits(),
        RateLimits::new().rpm(60).tpm(200_000)
    );
    assert!(chat.is_rate_limited());
    assert_eq!(chat.loads().provider_inflight("a"), Some((0, Some(12))));
    assert_eq!(chat.loads().provider_inflight("b"), None);
    assert!(plain.loads().get("b", "m").unwrap().rate_limits().is_none());
}

/// A route whose targets mix upstream models, one of them named like an embedding model, is
/// a warning at its `targets` (or `tiers`) line, since `POST /v1/embeddings` refuses it; a chat
/// route that mixes models and an embedding route of one model get none. The warning does
/// not stop `serve`.
#[test]
fn a_route_mixing_an_embedding_model_with_another_is_a_warning() {
    let src = r#"
[providers.a]
base_url = "http://127.0.0.1:9/v1"
[providers.b]
base_url = "http://127.0.0.1:10/v1"

[routes.chat]
targets = ["a/llama3", "b/gpt-4o-mini"]
[routes.search]
targets = ["a/text-embedding-3-small", "b/text-embedding-3-small"]
[routes.mixed]
targets = ["a/nomic-embed-text", "b/text-embedding-3-small"]
[routes.tiered]
tiers = [{ targets = ["a/bge-m3"] }, { targets = ["b/mxbai-embed-large"] }]
[routes.larger]
targets = ["a/BGE-M3"]
larger_context = ["b/gpt-4o"]
[routes.local]
targets = ["a/nomic-embed-text"]
"#;
    let c = Config::parse_with_env(src, Path::new("t.toml"), env_none).unwrap();
    let line_of = |needle: &str| src.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let mut found: Vec<(&str, usize, &str)> = c
        .warnings()
        .iter()
        .map(|w| (w.field.as_deref().unwrap(), w.line, w.message.as_str()))
        .collect();
    found.sort_unstable();
    let located: Vec<(&str, usize)> = found.iter().map(|&(f, l, _)| (f, l)).collect();
    assert_eq!(
        located,
        [
            ("routes.larger.targets", line_of("a/BGE-M3")),
            (
                "routes.mixed.targets",
                line_of("a/nomic-embed-text\", \"b/")
            ),
            ("routes.tiered.tiers", line_of("a/bge-m3")),
        ],
        "{:#?}",
        c.warnings()
    );
    let mixed = found[1].2;
    for part in [
        "(nomic-embed-text, text-embedding-3-small)",
        "POST /v1/embeddings will refuse the route `mixed` with 400 route_not_embeddable",
        "vectors of two models cannot be compared",
        "one route per embedding model",
    ] {
        assert!(mixed.contains(part), "{part:?} not in {mixed}");
    }
    assert!(found[0].2.contains("(BGE-M3, gpt-4o)"), "{}", found[0].2);
    assert_eq!(c.missing_keys().count(), 0);
    // Each route warned about is one the endpoint refuses; the others it serves, or (a chat
    // route) refuses without a warning.
    let proxy = super::Proxy::new(&c).unwrap();
    let routes = proxy.routes();
    let mut refused: Vec<&str> = routes
        .iter()
        .filter(|r| super::handlers::embeddable(r).is_err())
        .map(|r| r.name())
        .collect();
    refused.sort_unstable();
    assert_eq!(refused, ["chat", "larger", "mixed", "tiered"]);
}

#[test]
fn embedding_models_are_known_by_embed_or_bge_in_their_names() {
    for model in [
        "text-embedding-3-small",
        "text-embedding-ada-002",
        "nomic-embed-text",
        "mxbai-embed-large",
        "bge-m3",
        "BAAI/bge-large-en-v1.5",
        "Qwen3-Embedding-8B",
    ] {
        assert!(super::config::looks_like_embedding_model(model), "{model}");
    }
    for model in [
        "gpt-4o-mini",
        "llama3",
        "claude-sonnet",
        "qwen2.5:7b",
        "sim-429",
    ] {
        assert!(!super::config::looks_like_embedding_model(model), "{model}");
    }
}
