//! The classifier against real errors: real sockets on loopback, real HTTP responses, real
//! reqwest error chains, and the `classify` command line.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use llm_failover::Reason;
use llm_failover::classify::{Classification, Signal, classify};
use proptest::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::{canned, http};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sends a GET and classifies the failure: the error chain, or the status, headers and body.
async fn fail(client: &reqwest::Client, url: &str) -> Classification {
    match client.get(url).send().await {
        Err(e) => classify(&Signal::from_reqwest(&e)),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            match resp.text().await {
                Ok(body) => classify(
                    &Signal::new()
                        .status(status)
                        .headers(&headers)
                        .body(body.as_str()),
                ),
                // The body broke after the status line: the error chain says how.
                Err(e) => classify(&Signal::from_reqwest(&e).status(status)),
            }
        }
    }
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = fail(
        &client(),
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
    )
    .await;
    assert_eq!(c.reason, Reason::ConnectionRefused, "{c:?}");
}

#[tokio::test]
async fn silent_server_is_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        // Hold the connection open without answering until the client gives up.
        let mut sock = sock;
        let mut buf = [0_u8; 4096];
        while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let c = fail(&client, &format!("http://{addr}/")).await;
    assert_eq!(c.reason, Reason::Timeout, "{c:?}");
    held.abort();
}

#[tokio::test]
async fn reset_connection_is_connection_reset() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut buf = [0_u8; 4096];
        let _ = std::io::Read::read(&mut sock, &mut buf);
        // SO_LINGER 0: closing sends RST instead of FIN.
        socket2::SockRef::from(&sock)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(sock);
    });
    let c = fail(&client(), &format!("http://{addr}/")).await;
    assert_eq!(c.reason, Reason::ConnectionReset, "{c:?}");
    server.join().unwrap();
}

#[tokio::test]
async fn tls_against_plain_tcp_is_tls() {
    let addr = canned(http("400 Bad Request", "", "")).await;
    let c = fail(&client(), &format!("https://{addr}/")).await;
    assert_eq!(c.reason, Reason::Tls, "{c:?}");
}

/// A resolver that follows RFC 6761 for `.invalid` and resolves nothing else, so the test
/// sends no packet to any name server.
struct InvalidTld;

impl reqwest::dns::Resolve for InvalidTld {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let err = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "failed to lookup address information: {} does not resolve",
                name.as_str()
            ),
        );
        Box::pin(async move { Err(err.into()) })
    }
}

#[tokio::test]
async fn unresolvable_name_is_dns() {
    let client = reqwest::Client::builder()
        .dns_resolver(Arc::new(InvalidTld))
        .build()
        .unwrap();
    let c = fail(&client, "http://llm.example.invalid/v1/models").await;
    assert_eq!(c.reason, Reason::Dns, "{c:?}");
}

#[tokio::test]
async fn bare_503_is_a_server_failure() {
    let addr = canned(http("503 Service Unavailable", "", "")).await;
    let c = fail(&client(), &format!("http://{addr}/")).await;
    assert!(
        matches!(c.reason, Reason::ServerError | Reason::Overloaded),
        "{c:?}"
    );
}

#[tokio::test]
async fn too_many_requests_with_retry_after() {
    let addr = canned(http(
        "429 Too Many Requests",
        "retry-after: 2\r\ncontent-type: application/json\r\n",
        r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#,
    ))
    .await;
    let c = fail(&client(), &format!("http://{addr}/")).await;
    assert_eq!(c.reason, Reason::RateLimit, "{c:?}");
    assert_eq!(c.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn truncated_body_is_a_transport_failure() {
    // The server promises 100 bytes and closes after 10.
    let addr = canned("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"choices\"").await;
    let c = fail(&client(), &format!("http://{addr}/")).await;
    assert_eq!(c.reason, Reason::ConnectionReset, "{c:?}");
}

#[tokio::test]
async fn malformed_json_body_is_classified_not_a_panic() {
    let addr = canned(http(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"choices"#,
    ))
    .await;
    let err = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap_err();
    assert_eq!(
        classify(&Signal::from_reqwest(&err)).reason,
        Reason::EmptyResponse
    );
}

#[test]
fn error_chains_with_cycles_and_depth_terminate() {
    #[derive(Debug)]
    struct Deep(u32, Option<Box<Deep>>);
    impl std::fmt::Display for Deep {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            if self.0 == 0 {
                f.write_str("connection refused")
            } else {
                write!(f, "layer {}", self.0)
            }
        }
    }
    impl std::error::Error for Deep {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|d| d as _)
        }
    }
    // A chain far deeper than the walk's cap, whose bottom says "connection refused": the walk
    // stops at the cap and never reads it.
    let mut e = Deep(0, None);
    for i in 1..1000 {
        e = Deep(i, Some(Box::new(e)));
    }
    assert_eq!(classify(&Signal::new().error(&e)).reason, Reason::Unknown);

    // A chain whose source points back at itself.
    #[derive(Debug)]
    struct Loop;
    impl std::fmt::Display for Loop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connection refused")
        }
    }
    impl std::error::Error for Loop {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&Loop)
        }
    }
    assert_eq!(
        classify(&Signal::new().error(&Loop)).reason,
        Reason::ConnectionRefused
    );

    // An io::Error wrapping a custom error: the wrapped error is read too.
    let inner = std::io::Error::other(Loop);
    assert_eq!(
        classify(&Signal::from_io(&inner)).reason,
        Reason::ConnectionRefused
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics_and_yields_a_known_reason(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        message in ".{0,300}",
        status in proptest::option::of(any::<u16>()),
        code in proptest::option::of("[A-Za-z_]{0,20}"),
        headers in proptest::collection::vec(("[a-zA-Z-]{1,30}", ".{0,40}"), 0..6),
    ) {
        let body = String::from_utf8_lossy(&body);
        let mut s = Signal::new().body(body.as_ref()).message(message.as_str());
        if let Some(st) = status { s = s.status(st); }
        if let Some(c) = &code { s = s.code(c.as_str()); }
        for (n, v) in &headers { s = s.header(n.as_str(), v.as_str()); }
        let c = classify(&s);
        prop_assert!(Reason::ALL.contains(&c.reason));
        prop_assert!(c.retry_after.is_none_or(|d| d <= llm_failover::classify::MAX_RETRY_HINT));
    }

    #[test]
    fn json_shaped_garbage_never_panics(
        parts in proptest::collection::vec(prop_oneof![
            Just("{"), Just("}"), Just("["), Just("]"), Just("\"error\":"), Just("\"code\":"),
            Just("\"type\":"), Just("503"), Just("\"x\""), Just(","), Just("null"), Just("\\u00"),
        ], 0..60),
    ) {
        let text = parts.concat();
        let c = classify(&Signal::new().body(text.as_str()).message(text.as_str()));
        prop_assert!(Reason::ALL.contains(&c.reason));
    }
}

// ── The command line. ─────────────────────────────────────────────────────────────────

fn run_cli(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-failover"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cli_reads_json_lines_and_answers_in_order() {
    let input = concat!(
        r#"{"status": 429, "headers": {"Retry-After": "2"}}"#,
        "\n",
        "this is not json\n",
        r#"{"code": "ECONNREFUSED"}"#,
        "\n",
        r#"{"message": "HTTP 503", "provider": "groq"}"#,
        "\n",
        r#"{"status": "teapot"}"#,
        "\n",
        r#"{"body": "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}", "status": 529}"#,
        "\n",
    );
    let out = run_cli(&["classify"], input);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0]["reason"], "rate_limit");
    assert_eq!(lines[0]["retry_after_ms"], 2000);
    assert!(lines[1]["error"].as_str().unwrap().contains("malformed"));
    assert!(lines[1].get("reason").is_none());
    assert_eq!(lines[2]["reason"], "connection_refused");
    assert!(lines[2].get("retry_after_ms").is_none());
    assert_eq!(lines[3]["reason"], "server_error");
    assert!(lines[4]["error"].as_str().unwrap().contains("status"));
    assert_eq!(lines[5]["reason"], "overloaded");
    assert!(
        lines[5]["matched"]
            .as_str()
            .unwrap()
            .contains("overloaded_error")
    );
}

#[test]
fn cli_flags_classify_one_case() {
    let out = run_cli(
        &[
            "classify",
            "--status",
            "429",
            "--header",
            "retry-after-ms: 250",
            "--message",
            "slow down",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["reason"], "rate_limit");
    assert_eq!(v["retry_after_ms"], 250);
    let out = run_cli(&["classify", "--code", "EAI_AGAIN"], "");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["reason"], "dns");
}

#[test]
fn cli_answers_invalid_utf8_blank_lines_and_non_objects_with_error_lines() {
    let mut input = b"\n\xff\xfe{\"status\": 500}\n".to_vec();
    input.extend_from_slice(b"{\"status\": 500}\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-failover"))
        .arg("classify")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("error"),
        "a blank line gets an error line"
    );
    assert!(lines[1].contains("error"));
    assert!(lines[2].contains("server_error"));
    // JSON that is not an object is an error line too.
    let out = run_cli(&["classify"], "[503]\n\"x\"\n");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("expected a JSON object"))
            .count(),
        2,
        "{out}"
    );
}
