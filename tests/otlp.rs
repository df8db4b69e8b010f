//! `[telemetry]`: `serve` exports a failover's spans over OTLP/HTTP to a receiver on loopback
//! that decodes the protobuf, and serves as before, saying so once, when no collector listens.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::sync::mpsc;

use crate::support::{Files, Served, down_sim};

/// One exported span: name, ids, attributes as text, and its resource's attributes.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: HashMap<String, String>,
    resource: HashMap<String, String>,
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// An OTLP/HTTP receiver on 127.0.0.1: every span of every `POST /v1/traces` goes to the
/// channel.
async fn receiver() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Got>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in req.resource_spans {
                    let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let Span {
                                name,
                                span_id,
                                parent_span_id,
                                attributes,
                                ..
                            } = s;
                            let _ = tx.send(Got {
                                name,
                                span_id,
                                parent: parent_span_id,
                                attrs: attrs(&attributes),
                                resource: resource.clone(),
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rx)
}

fn chat(rt: &tokio::runtime::Runtime, addr: &str) -> (u16, String) {
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let trail = resp
            .headers()
            .get("x-failover-trail")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (resp.status().as_u16(), trail)
    })
}

#[test]
fn serve_exports_the_request_and_both_attempts_of_a_failover() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, mut spans, a, b) = rt.block_on(async {
        let (collector, spans) = receiver().await;
        (
            collector,
            spans,
            down_sim().await,
            crate::support::sim().await,
        )
    });
    let files = Files::new();
    let path = files.write(
        "failover.toml",
        &format!(
            r#"
[telemetry]
otlp_endpoint = "http://{collector}"
service_name = "failover-test"
sampling_ratio = 1.0
resource_attributes = {{ "deployment.environment" = "test" }}

[providers.a]
base_url = "{}"
[providers.b]
base_url = "{}"
[routes.chat]
targets = ["a/llama3", "b/gpt"]
"#,
            a.base_url(),
            b.base_url()
        ),
    );
    let mut served = Served::start(&path, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    assert_eq!(
        chat(&rt, &served.addr),
        (200, "a/llama3=connection_refused; b/gpt=ok".to_owned())
    );
    // Until the request span and both attempts have arrived (the wait guards a hang only).
    let mut got: Vec<Got> = Vec::new();
    while got.iter().filter(|s| s.name == "attempt").count() < 2
        || !got.iter().any(|s| s.name == "failover")
        || !got.iter().any(|s| s.name == "request")
    {
        let s = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), spans.recv()).await })
            .unwrap_or_else(|_| panic!("spans so far: {got:#?}"))
            .unwrap();
        got.push(s);
    }
    let log = served.stop();
    let find = |name: &str, key: &str, value: &str| {
        got.iter()
            .find(|s| s.name == name && s.attrs.get(key).map(String::as_str) == Some(value))
            .unwrap_or_else(|| panic!("no {name} span with {key}={value} in {got:#?}"))
            .clone()
    };
    let request = find("request", "client", "none");
    let failover = find("failover", "route", "chat");
    let refused = find("attempt", "gen_ai.provider.name", "a");
    let answered = find("attempt", "gen_ai.provider.name", "b");
    assert_eq!(failover.parent, request.span_id);
    assert_eq!(refused.parent, failover.span_id);
    assert_eq!(answered.parent, failover.span_id);
    assert_eq!(failover.attrs["outcome"], "ok");
    assert_eq!(refused.attrs["error.type"], "connection_refused");
    assert_eq!(refused.attrs["llm_failover.outcome"], "failure");
    assert_eq!(refused.attrs["gen_ai.request.model"], "llama3");
    assert_eq!(answered.attrs["llm_failover.outcome"], "ok");
    assert!(!answered.attrs.contains_key("error.type"), "{answered:?}");
    // The sim reports usage: it is on the answering attempt.
    assert!(
        answered.attrs.contains_key("gen_ai.usage.output_tokens"),
        "{answered:?}"
    );
    assert_eq!(answered.resource["service.name"], "failover-test");
    assert_eq!(answered.resource["deployment.environment"], "test");
    assert!(!log.contains("unreachable"), "{log}");
}

#[test]
fn without_a_collector_the_proxy_serves_and_says_so_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async { (down_sim().await, crate::support::sim().await) });
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let files = Files::new();
    let path = files.write(
        "failover.toml",
        &format!(
            "[telemetry]\notlp_endpoint = \"http://{closed}\"\n\
             [providers.a]\nbase_url = \"{}\"\n[providers.b]\nbase_url = \"{}\"\n\
             [routes.chat]\ntargets = [\"a/llama3\", \"b/gpt\"]\n",
            a.base_url(),
            b.base_url()
        ),
    );
    let mut served = Served::start(
        &path,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("RUST_LOG", "info,llm_failover::telemetry=debug"),
        ],
    );
    // Three batches fail, one after each request; every request is answered.
    for _ in 0..3 {
        assert_eq!(chat(&rt, &served.addr).0, 200);
        served.wait_for("OTLP export failed");
    }
    let log = served.stop();
    let said = log.lines().filter(|l| l.contains("is unreachable")).count();
    assert_eq!(said, 1, "{log}");
    assert!(log.contains(&format!("http://{closed}/v1/traces")), "{log}");
}

/// Bad `[telemetry]` and `[log]` values are refused at their line, naming the field; the
/// variables fill in what the file leaves out, and the file wins over them.
#[test]
fn telemetry_and_log_settings_are_checked_at_their_line() {
    use llm_failover::proxy::Config;
    let base =
        "[providers.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.chat]\ntargets = [\"a/m\"]\n";
    for (section, field) in [
        (
            "[telemetry]\notlp_endpoint = \"http://c:4318\"\nsampling_ratio = 1.5\n",
            "telemetry.sampling_ratio",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://c:4318\"\nprotocol = \"grpc\"\n",
            "telemetry.protocol",
        ),
        (
            "[telemetry]\n\notlp_endpoint = \"http://user:secret@c:4318\"\n",
            "telemetry.otlp_endpoint",
        ),
        ("[log]\n\nformat = \"yaml\"\n", "log.format"),
    ] {
        let err = Config::parse(&format!("{section}{base}"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml:3:"), "{err}");
        assert!(err.contains(field), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let from_env = Config::parse_with_env(
        base,
        "t.toml",
        env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
            ("OTEL_SERVICE_NAME", "gw"),
        ]),
    )
    .unwrap();
    let o = from_env.otlp().unwrap();
    assert_eq!(
        (o.endpoint.as_str(), o.service_name.as_str()),
        ("http://otel:4318/v1/traces", "gw")
    );
    let file_wins = Config::parse_with_env(
        &format!("[telemetry]\notlp_endpoint = \"http://file:4318\"\nservice_name = \"f\"\n[log]\nformat = \"json\"\n{base}"),
        "t.toml",
        env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4318/v1/traces"), ("OTEL_SERVICE_NAME", "gw")]),
    )
    .unwrap();
    let o = file_wins.otlp().unwrap();
    assert_eq!(
        (o.endpoint.as_str(), o.service_name.as_str()),
        ("http://file:4318/v1/traces", "f")
    );
    assert_eq!(
        file_wins.log_format(),
        Some(llm_failover::telemetry::LogFormat::Json)
    );
    assert!(
        Config::parse_with_env(base, "t.toml", env(&[]))
            .unwrap()
            .otlp()
            .is_none()
    );
}

/// `[log] format = "json"`: every line is one JSON object; a request's line carries its
/// route, client, status, duration and trail; neither a key nor the prompt appears anywhere.
#[test]
fn json_logs_parse_line_by_line_and_hold_no_key_or_prompt() {
    const PROVIDER_KEY: &str = "sk-provider-sentinel-5f2c";
    const CLIENT_KEY: &str = "client-key-sentinel-91ab";
    const PROMPT: &str = "prompt-sentinel-never-logged-77";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async { (down_sim().await, crate::support::sim().await) });
    let files = Files::new();
    let path = files.write(
        "failover.toml",
        &format!(
            "[log]\nformat = \"json\"\n\
             [[clients]]\nname = \"webapp\"\nkey_env = \"TEST_CLIENT_KEY\"\nroutes = [\"chat\"]\n\
             [providers.a]\nbase_url = \"{}\"\napi_key_env = \"TEST_PROVIDER_KEY\"\n\
             [providers.b]\nbase_url = \"{}\"\napi_key_env = \"TEST_PROVIDER_KEY\"\n\
             [routes.chat]\ntargets = [\"a/llama3\", \"b/gpt\"]\n",
            a.base_url(),
            b.base_url()
        ),
    );
    let mut served = Served::start(
        &path,
        &[
            ("TEST_PROVIDER_KEY", PROVIDER_KEY),
            ("TEST_CLIENT_KEY", CLIENT_KEY),
            ("RUST_LOG", "debug"),
        ],
    );
    rt.block_on(async {
        let http = reqwest::Client::new();
        for stream in [false, true] {
            let resp = http
                .post(format!("http://{}/v1/chat/completions", served.addr))
                .bearer_auth(CLIENT_KEY)
                .json(&serde_json::json!({"model": "chat", "stream": stream,
                    "messages": [{"role": "user", "content": PROMPT}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let _ = resp.text().await.unwrap();
        }
        // A wrong key is turned away, and logged without the key it sent.
        let resp = http
            .post(format!("http://{}/v1/chat/completions", served.addr))
            .bearer_auth(format!("{CLIENT_KEY}-wrong"))
            .json(&serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": PROMPT}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    });
    served.wait_for("\"stream\":true");
    let log = served.stop();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    for secret in [PROVIDER_KEY, CLIENT_KEY, PROMPT] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let done: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["route"] == "chat" && l.get("duration_ms").is_some())
        .collect();
    assert_eq!(done.len(), 2, "{log}");
    for (d, stream) in done.iter().zip([false, true]) {
        assert_eq!(d["client"], "webapp");
        assert_eq!(d["status"], 200);
        assert_eq!(d["stream"], stream);
        assert_eq!(d["trail"], "a/llama3=connection_refused; b/gpt=ok");
        assert_eq!(d["endpoint"], "chat_completions");
        assert!(d["duration_ms"].is_u64(), "{d}");
        assert_eq!(d["level"], "INFO");
    }
    assert_eq!(done[1]["stream_end"], "complete");
}
