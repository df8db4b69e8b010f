//! `llm-failover classify`: provider errors in, failover reasons out, one JSON line each.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use llm_failover::classify::{Classification, Signal, classify};

#[derive(Debug, clap::Args)]
pub(crate) struct ClassifyArgs {
    /// HTTP status of the failed response.
    #[arg(long)]
    status: Option<u16>,
    /// Error code (ECONNREFUSED, RESOURCE_EXHAUSTED, insufficient_quota, ...).
    #[arg(long)]
    code: Option<String>,
    /// Error message text.
    #[arg(long)]
    message: Option<String>,
    /// Raw response body (JSON, HTML or text).
    #[arg(long)]
    body: Option<String>,
    /// A response header as "Name: value"; repeat for more.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Provider hint (openai, anthropic, ...).
    #[arg(long)]
    provider: Option<String>,
}

impl ClassifyArgs {
    fn is_single_case(&self) -> bool {
        self.status.is_some()
            || self.code.is_some()
            || self.message.is_some()
            || self.body.is_some()
            || !self.headers.is_empty()
            || self.provider.is_some()
    }
}

/// One input line of `classify`.
#[derive(Debug, Default, Deserialize)]
struct Case {
    #[serde(default, deserialize_with = "http_status")]
    status: Option<u16>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    headers: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    provider: Option<String>,
}

/// `status` is an integer from 100 to 599; a string of digits is accepted too.
fn http_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    use serde::de::Error;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    let n = match &v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match n.and_then(|n| u16::try_from(n).ok()) {
        Some(s) if (100..=599).contains(&s) => Ok(Some(s)),
        _ => Err(D::Error::custom(format!(
            "status must be an HTTP status code from 100 to 599, got {}",
            v.map(|v| v.to_string()).unwrap_or_default()
        ))),
    }
}

impl Case {
    fn signal(&self) -> Signal<'_> {
        let mut s = Signal::new();
        if let Some(status) = self.status {
            s = s.status(status);
        }
        if let Some(code) = &self.code {
            s = s.code(code.as_str());
        }
        if let Some(message) = &self.message {
            s = s.message(message.as_str());
        }
        if let Some(body) = &self.body {
            s = s.body(body.as_str());
        }
        if let Some(provider) = &self.provider {
            s = s.provider(provider.as_str());
        }
        for (name, value) in self.headers.iter().flatten() {
            let value = match value {
                serde_json::Value::String(v) => v.clone(),
                other => other.to_string(),
            };
            s = s.header(name.as_str(), value);
        }
        s
    }
}

/// One output line of `classify`.
#[derive(Debug, Serialize)]
struct Verdict {
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    matched: String,
}

fn verdict(c: &Classification) -> String {
    let v = Verdict {
        reason: c.reason.as_str(),
        retry_after_ms: c
            .retry_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        matched: c.matched.to_string(),
    };
    serde_json::to_string(&v).unwrap_or_default()
}

fn classify_line(line: &str) -> String {
    let error = |e: String| serde_json::json!({ "error": e }).to_string();
    let value = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return error("malformed input line: expected a JSON object".into()),
        Err(e) => return error(format!("malformed input line: {e}")),
    };
    match serde_json::from_value::<Case>(value) {
        Ok(case) => verdict(&classify(&case.signal())),
        Err(e) => error(format!("malformed input line: {e}")),
    }
}

pub(crate) fn run(args: &ClassifyArgs) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if args.is_single_case() {
        let mut headers = serde_json::Map::new();
        for h in &args.headers {
            let (name, value) = h.split_once(':').unwrap_or((h.as_str(), ""));
            headers.insert(name.trim().to_owned(), value.trim().into());
        }
        let case = Case {
            status: args.status,
            code: args.code.clone(),
            message: args.message.clone(),
            body: args.body.clone(),
            headers: Some(headers),
            provider: args.provider.clone(),
        };
        writeln!(out, "{}", verdict(&classify(&case.signal())))?;
        return out.flush();
    }
    let stdin = io::stdin();
    let mut line = Vec::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // Every line gets its answer line, a blank one too, so outputs pair with inputs.
        let text = String::from_utf8_lossy(&line);
        writeln!(out, "{}", classify_line(text.trim()))?;
    }
    out.flush()
}
