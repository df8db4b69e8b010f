//! `llm-failover ctl`: the admin endpoints of a running proxy, from a shell.
//!
//! The proxy's URL comes from `--url` or `LLM_FAILOVER_URL` (default
//! `http://127.0.0.1:8080`). The admin key comes from an environment variable
//! (`LLM_FAILOVER_ADMIN_KEY`, or the one `--key-env` names), never from a flag: flags show in
//! `ps` and in shell history. For a proxy serving HTTPS with a certificate from a private CA,
//! `--cacert FILE` (or `LLM_FAILOVER_CACERT`) names the CA's PEM file to trust.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::Failure;

/// The URL when neither `--url` nor `LLM_FAILOVER_URL` gives one.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, clap::Args)]
pub(crate) struct CtlArgs {
    /// The proxy's base URL [env: LLM_FAILOVER_URL; default: http://127.0.0.1:8080].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The environment variable holding the admin key (never pass the key as a flag).
    #[arg(long, value_name = "VAR", default_value = "LLM_FAILOVER_ADMIN_KEY")]
    key_env: String,
    /// A PEM CA certificate to trust for an https URL [env: LLM_FAILOVER_CACERT].
    #[arg(long, value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CtlCommand {
    /// Every breaker's state, reason and open time (GET /v1/failover/status).
    Status {
        /// Print the endpoint's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Hold a breaker open: MODEL is `*` for the provider-wide breaker.
    ForceOpen(Target),
    /// Let every call through a breaker and record nothing.
    Disable(Target),
    /// Record and report a breaker's outcomes without ever rejecting a call.
    MetricsOnly(Target),
    /// Back to closed with empty counters and no override.
    Reset {
        /// The provider, as configured.
        provider: String,
        /// The model, or `*` for the provider-wide breaker.
        model: String,
    },
    /// Ask the proxy to re-read its config file (POST /v1/failover/reload).
    Reload,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The provider, as configured.
    provider: String,
    /// The model, or `*` for the provider-wide breaker.
    model: String,
    /// How long the override lasts ("10m"); without it, until another action.
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
}

pub(crate) fn run(args: &CtlArgs) -> Result<(), Failure> {
    let base = args
        .url
        .clone()
        .or_else(|| std::env::var("LLM_FAILOVER_URL").ok())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let base = base.trim_end_matches('/').to_owned();
    let key = std::env::var(&args.key_env)
        .ok()
        .filter(|k| !k.trim().is_empty());
    let (method, path, body) = match &args.command {
        CtlCommand::Status { .. } => ("GET", "/v1/failover/status".to_owned(), None),
        CtlCommand::ForceOpen(t) => action("force_open", t),
        CtlCommand::Disable(t) => action("disable", t),
        CtlCommand::MetricsOnly(t) => action("metrics_only", t),
        CtlCommand::Reset { provider, model } => (
            "POST",
            breaker_path(provider, model),
            Some(json!({"action": "reset"})),
        ),
        CtlCommand::Reload => ("POST", "/v1/failover/reload".to_owned(), Some(json!({}))),
    };
    let url = format!("{base}{path}");
    let rt = super::runtime()?;
    let answer: Value = rt.block_on(async {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let cacert = args
            .cacert
            .clone()
            .or_else(|| std::env::var_os("LLM_FAILOVER_CACERT").map(Into::into));
        if let Some(path) = cacert {
            let pem = std::fs::read(&path).map_err(|e| {
                Failure::Usage(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Failure::Usage(format!(
                    "{} is not a PEM certificate ({e}); give the CA that signed the proxy's tls_cert",
                    path.display()
                ))
            })?;
            http = http.add_root_certificate(ca);
        }
        let http = http
            .build()
            .map_err(|e| Failure::Other(format!("cannot build the HTTP client: {e}")))?;
        let mut req = if method == "GET" {
            http.get(&url)
        } else {
            http.post(&url).json(&body.unwrap_or_default())
        };
        if let Some(k) = &key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Other(format!("cannot reach the proxy at {base}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map_or_else(|| text.trim().to_owned(), str::to_owned);
        let hint = match (status.as_u16(), &key) {
            (401, None) => format!(" (no admin key: export {} first)", args.key_env),
            (401 | 403, Some(_)) => format!(
                " (the key in {} is not this proxy's admin key)",
                args.key_env
            ),
            _ => String::new(),
        };
        Err(Failure::Other(format!("{status}: {message}{hint}")))
    })?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        CtlCommand::Status { json: true } => {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            )?;
        }
        CtlCommand::Status { json: false } => table(&mut out, &answer["breakers"])?,
        CtlCommand::Reload => {
            let list = |v: &Value| {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let b = &answer["breakers"];
            let count = |k: &str| b[k].as_array().map_or(0, Vec::len);
            writeln!(
                out,
                "reloaded: routes {}; breakers kept {}, added {}, removed {}, reset {}",
                list(&answer["routes"]),
                count("kept"),
                count("added"),
                count("removed"),
                count("reset"),
            )?;
            if count("reset") > 0 {
                writeln!(
                    out,
                    "reset (policy changed, closed again): {}",
                    list(&b["reset"])
                )?;
            }
            if answer["restart_required"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                writeln!(
                    out,
                    "restart to apply: {}",
                    list(&answer["restart_required"])
                )?;
            }
            for w in answer["warnings"].as_array().into_iter().flatten() {
                writeln!(out, "warning: {}", w.as_str().unwrap_or_default())?;
            }
        }
        _ => {
            let b = &answer["breaker"];
            writeln!(
                out,
                "{} {}/{}: now {}{}",
                answer["action"].as_str().unwrap_or("done"),
                answer["provider"].as_str().unwrap_or_default(),
                answer["model"].as_str().unwrap_or_default(),
                b["state"].as_str().unwrap_or("?"),
                b["open_until"]
                    .as_str()
                    .map(|t| format!(" until {t}"))
                    .unwrap_or_default(),
            )?;
        }
    }
    Ok(())
}

fn breaker_path(provider: &str, model: &str) -> String {
    format!(
        "/v1/failover/breakers/{}/{}",
        encode(provider),
        model.split('/').map(encode).collect::<Vec<_>>().join("/")
    )
}

/// Percent-encodes a path segment (everything but unreserved characters and `*`, `:`).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'*' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn action(name: &str, t: &Target) -> (&'static str, String, Option<Value>) {
    let mut body = json!({"action": name});
    if let Some(d) = &t.duration {
        body["duration"] = Value::from(d.as_str());
    }
    ("POST", breaker_path(&t.provider, &t.model), Some(body))
}

/// The breakers as a table.
fn table(out: &mut impl std::io::Write, breakers: &Value) -> std::io::Result<()> {
    let rows: Vec<[String; 4]> = breakers
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or("-").to_owned();
            [
                format!("{}/{}", s("provider"), s("model")),
                s("state"),
                s("reason"),
                s("open_until"),
            ]
        })
        .collect();
    let header = [
        "BREAKER".to_owned(),
        "STATE".to_owned(),
        "REASON".to_owned(),
        "OPEN UNTIL".to_owned(),
    ];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in std::iter::once(&header).chain(&rows) {
        writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        )?;
    }
    Ok(())
}
