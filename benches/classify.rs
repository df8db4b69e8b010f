//! What one classification costs: a status alone, a provider JSON body, an HTML error page, a
//! message without status or code (the whole table's wordings), a real reqwest error chain, and
//! a hostile 1 MB body.

#![expect(clippy::expect_used, reason = "benchmark setup should fail loudly")]
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use llm_failover::classify::{Signal, classify};

/// A realistic 1 KiB OpenAI-style error body.
fn json_1k() -> String {
    let mut body = String::from(
        r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29500, Requested 1200. Please try again in 1.4s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded","details":{"#,
    );
    let mut i = 0;
    while body.len() < 1000 {
        body.push_str(&format!(r#""k{i}":"value number {i} of padding","#));
        i += 1;
    }
    body.push_str(r#""end":true}}}"#);
    body
}

/// A 4 KiB Cloudflare-style HTML error page.
fn html_4k() -> String {
    let mut page = String::from(
        "<!DOCTYPE html><html lang=\"en-US\"><head><title>api.example.com | 522: Connection timed out</title><style>",
    );
    while page.len() < 3900 {
        page.push_str(
            "body{margin:0;padding:0}.cf-error-details{font-family:sans-serif;color:#404040} ",
        );
    }
    page.push_str("</style></head><body><h1>Connection timed out</h1><span>Error code 522</span></body></html>");
    page
}

/// 1 MB built to provoke backtracking in a naive matcher: near misses of many rules.
fn hostile_1m() -> String {
    let unit =
        "model model model x status: HTTP 4 rate limi quota exceede {\"error\":{\"type\": ((((( ";
    unit.repeat(1_000_000 / unit.len() + 1)
}

fn reqwest_error() -> reqwest::Error {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .send()
            .await
            .expect_err("nothing listens on a dropped port")
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("status_only", |b| {
        b.iter(|| classify(black_box(&Signal::new().status(503))))
    });
    let json = json_1k();
    g.bench_function("json_1k", |b| {
        b.iter(|| classify(black_box(&Signal::new().status(429).body(json.as_str()))))
    });
    let html = html_4k();
    g.bench_function("html_4k", |b| {
        b.iter(|| classify(black_box(&Signal::new().body(html.as_str()))))
    });
    // Prose alone: no status, code or JSON, so the answer rests on the wordings.
    let message = "You have reached your weekly usage limit for this plan. It resets on Monday at 09:00 UTC; upgrade for more.";
    g.bench_function("message_only", |b| {
        b.iter(|| classify(black_box(&Signal::new().message(message))))
    });
    let err = reqwest_error();
    g.bench_function("reqwest_chain", |b| {
        b.iter(|| classify(black_box(&Signal::from_reqwest(&err))))
    });
    let hostile = hostile_1m();
    g.bench_function("hostile_1m", |b| {
        b.iter(|| classify(black_box(&Signal::new().body(hostile.as_str()))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
