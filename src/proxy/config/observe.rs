//! `[telemetry]` (OTLP span export) and `[log]` (the log's format): how the binary reports,
//! checked when the configuration is read. Both apply when `serve` starts (a reload keeps the
//! running export and log).
//!
//! The standard OpenTelemetry variables fill in what `[telemetry]` leaves out:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL as is), `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (a base URL, `/v1/traces` added), `OTEL_SERVICE_NAME`, and `OTEL_RESOURCE_ATTRIBUTES`
//! (read by the SDK; `resource_attributes` win over it). With no endpoint from either, no span
//! is exported.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, ConfigError, Located};
use crate::telemetry::{DEFAULT_SERVICE_NAME, LogFormat, OtlpSettings};

/// `[telemetry]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TelemetryFile {
    otlp_endpoint: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    service_name: Option<Spanned<String>>,
    #[serde(alias = "sample_ratio")]
    sampling_ratio: Option<Spanned<f64>>,
    resource_attributes: Option<Spanned<BTreeMap<String, String>>>,
}

/// `[log]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    format: Option<Spanned<String>>,
}

/// The only protocol this build exports with.
const HTTP_PROTOBUF: &str = "http/protobuf";

/// Checks `[telemetry]` with the environment: the settings to export with, or `None`.
pub(super) fn telemetry(
    c: &Checker<'_>,
    file: Option<Spanned<TelemetryFile>>,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<Located>,
) -> Result<Option<OtlpSettings>, ConfigError> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let (section, t) = match file {
        Some(f) => {
            let span = f.span();
            (Some(span), Some(f.into_inner()))
        }
        None => (None, None),
    };
    if let Some(p) = t.as_ref().and_then(|t| t.protocol.as_ref())
        && p.get_ref() != HTTP_PROTOBUF
    {
        return Err(c.error(
            &p.span(),
            "telemetry.protocol",
            format!(
                "this build exports OTLP over {HTTP_PROTOBUF} only; write protocol = \
                 \"{HTTP_PROTOBUF}\" (port 4318 on a collector), or leave it out"
            ),
        ));
    }
    if let Some(r) = t.as_ref().and_then(|t| t.sampling_ratio.as_ref()) {
        let ratio = *r.get_ref();
        if !(0.0..=1.0).contains(&ratio) {
            return Err(c.error(
                &r.span(),
                "telemetry.sampling_ratio",
                format!(
                    "{ratio} is not a share of traces: give a number from 0 (none) to 1 (every trace)"
                ),
            ));
        }
    }
    let from_file = match t.as_ref().and_then(|t| t.otlp_endpoint.as_ref()) {
        Some(e) => Some(
            traces_url(e.get_ref())
                .map_err(|m| c.error(&e.span(), "telemetry.otlp_endpoint", m))?,
        ),
        None => None,
    };
    let endpoint = match from_file {
        Some(url) => Some(url),
        None => {
            let traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
            let base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
            let checked = match (traces, base) {
                (Some(url), _) => Some(checked_env(
                    &url,
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    true,
                )),
                (None, Some(url)) => Some(checked_env(&url, "OTEL_EXPORTER_OTLP_ENDPOINT", false)),
                (None, None) => None,
            };
            match checked {
                Some(Ok(url)) => Some(url),
                Some(Err(m)) => {
                    warnings.push(c.at(
                        &section.clone().unwrap_or(0..0),
                        Some("telemetry.otlp_endpoint".into()),
                        format!("{m}; no span is exported"),
                    ));
                    return Ok(None);
                }
                None => None,
            }
        }
    };
    if let Some(p) = env("OTEL_EXPORTER_OTLP_PROTOCOL").filter(|p| p != HTTP_PROTOBUF)
        && endpoint.is_some()
    {
        warnings.push(c.at(
            &section.clone().unwrap_or(0..0),
            Some("telemetry.protocol".into()),
            format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported; spans go over {HTTP_PROTOBUF}"
            ),
        ));
    }
    let Some(endpoint) = endpoint else {
        if let Some(span) = section {
            warnings.push(c.at(
                &span,
                Some("telemetry.otlp_endpoint".into()),
                "no otlp_endpoint (nor OTEL_EXPORTER_OTLP_ENDPOINT): no span is exported",
            ));
        }
        return Ok(None);
    };
    let mut settings = OtlpSettings::new(endpoint);
    let service = t
        .as_ref()
        .and_then(|t| t.service_name.as_ref())
        .map(|s| s.get_ref().clone())
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
    settings = settings.service_name(service);
    if let Some(t) = t {
        if let Some(r) = t.sampling_ratio {
            settings = settings.sampling_ratio(r.into_inner());
        }
        for (k, v) in t
            .resource_attributes
            .map(Spanned::into_inner)
            .unwrap_or_default()
        {
            settings = settings.resource_attribute(k, v);
        }
    }
    Ok(Some(settings))
}

/// An endpoint from the environment, checked as one from the file would be.
fn checked_env(url: &str, var: &str, whole: bool) -> Result<String, String> {
    let checked = if whole {
        traces_url(url).map(|_| url.to_owned())
    } else {
        traces_url(url)
    };
    checked.map_err(|m| format!("{var}: {m}"))
}

/// The traces URL of an OTLP/HTTP endpoint: `/v1/traces` added to a base URL (one with no
/// path), kept when the path is already given. A URL with credentials or a query is refused:
/// it would show in the log when the collector is unreachable.
fn traces_url(endpoint: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| {
        format!("{endpoint:?} is not a URL ({e}); write it like \"http://127.0.0.1:4318\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "an OTLP/HTTP endpoint is http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(
            "the endpoint holds credentials or a query; give the collector's plain URL and put \
             headers it needs in OTEL_EXPORTER_OTLP_HEADERS"
                .into(),
        );
    }
    let path = url.path().trim_end_matches('/');
    if path.is_empty() {
        Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
    } else {
        Ok(endpoint.to_owned())
    }
}

/// Checks `[log]`: the format asked for, `None` when the section leaves it out.
pub(super) fn log(
    c: &Checker<'_>,
    file: Option<Spanned<LogFile>>,
) -> Result<Option<LogFormat>, ConfigError> {
    let Some(format) = file.and_then(|f| f.into_inner().format) else {
        return Ok(None);
    };
    format
        .get_ref()
        .parse()
        .map(Some)
        .map_err(|m: String| c.error(&format.span(), "log.format", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_get_the_traces_path_and_credentials_are_refused() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c/otlp/v1/traces").unwrap(),
            "https://c/otlp/v1/traces"
        );
        assert!(traces_url("http://u:p@c:4318").is_err());
        assert!(traces_url("http://c:4318/?key=x").is_err());
        assert!(traces_url("grpc://c:4317").is_err());
        assert!(traces_url("c:4318").is_err());
    }
}
