//! HTTPS: the proxy terminates TLS with the configured certificate, serves HTTP/1.1 and
//! HTTP/2 (ALPN), streams over both, and refuses a bad certificate setup at load with
//! file:line:field errors.

use llm_failover::proxy::Config;
use llm_failover::sim::{ANSWER, Sim};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::proxy::{chat_body, sse_data, start_config};
use crate::support::Files;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A test CA and a certificate for 127.0.0.1 and localhost that it signed.
fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn config_text(sim_url: &str, cert: &str, key: &str) -> String {
    format!(
        "[server]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n[providers.sim]\nbase_url = \"{sim_url}\"\n[routes.chat]\ntargets = [\"sim/m\"]\n"
    )
}

/// HTTP/1.1 and HTTP/2 over TLS, plain and streaming, trusting the test CA; the server's
/// graceful shutdown works over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_http2_with_streams() {
    let sim = Sim::builder().start().await.unwrap();
    let pki = pki();
    let files = Files::new();
    files.write("cert.pem", &pki.cert_pem);
    files.write("key.pem", &pki.key_pem);
    // Relative paths: from the config file's directory.
    let path = files.write(
        "tls.toml",
        &config_text(&sim.base_url(), "cert.pem", "key.pem"),
    );
    let config = Config::from_file(&path).unwrap();
    assert!(config.tls());
    let p = start_config(&config).await;
    let url = format!("https://127.0.0.1:{}/v1/chat/completions", p.addr.port());
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let h1 = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .http1_only()
        .build()
        .unwrap();
    let h2 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    for (client, version) in [
        (&h1, reqwest::Version::HTTP_11),
        (&h2, reqwest::Version::HTTP_2),
    ] {
        let resp = client
            .post(&url)
            .json(&chat_body("chat", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-failover-provider"], "sim");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);

        let resp = client
            .post(&url)
            .json(&chat_body("chat", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let data = sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
        assert!(data.len() > 2, "{text}");
    }
    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/chat/completions",
            p.addr.port()
        ))
        .json(&chat_body("chat", false))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    drop((h1, h2));
    p.stop().await.unwrap();
}

/// Unreadable files, a file with no certificate, no key, and a key that does not match: each
/// is an error at the setting's line, naming the field.
#[test]
fn bad_tls_settings_are_rejected_at_load_with_file_line_and_field() {
    let a = pki();
    let b = pki();
    let files = Files::new();
    let cert = files.write("c.pem", &a.cert_pem);
    let key = files.write("k.pem", &a.key_pem);
    let other_key = files.write("other-k.pem", &b.key_pem);
    let url = "http://127.0.0.1:9/v1";
    let cases = [
        (
            config_text(url, "/nonexistent/cert.pem", &key.display().to_string()),
            "bad.toml:2:12: server.tls_cert: cannot read /nonexistent/cert.pem",
        ),
        (
            config_text(url, &cert.display().to_string(), "/nonexistent/key.pem"),
            "bad.toml:3:11: server.tls_key: cannot read /nonexistent/key.pem",
        ),
        (
            config_text(url, &key.display().to_string(), &key.display().to_string()),
            "server.tls_cert: ",
        ),
        (
            config_text(
                url,
                &cert.display().to_string(),
                &cert.display().to_string(),
            ),
            "holds no private key",
        ),
        (
            config_text(
                url,
                &cert.display().to_string(),
                &other_key.display().to_string(),
            ),
            "the key does not belong to the certificate",
        ),
        (
            format!(
                "[server]\ntls_cert = \"{}\"\n[providers.sim]\nbase_url = \"{url}\"\n[routes.chat]\ntargets = [\"sim/m\"]\n",
                cert.display()
            ),
            "bad.toml:2:12: server.tls_cert: tls_cert needs tls_key",
        ),
    ];
    for (text, expected) in cases {
        let path = files.write("bad.toml", &text);
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}\nexpected {expected:?}");
        assert!(err.contains("bad.toml:"), "{err}");
        // Nothing of a key file is ever repeated.
        for secret in [&a.key_pem, &b.key_pem] {
            let body = secret.lines().nth(1).unwrap();
            assert!(!err.contains(body), "{err}");
        }
    }
    let path = files.write(
        "nocert.toml",
        &config_text(url, &key.display().to_string(), &key.display().to_string()),
    );
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("holds no certificate"), "{err}");
}
