//! Table tests: every rule, with provider error formats as the providers document them.

use super::*;
use crate::reason::Reason::*;
use rules::RULES;
use table::Hits;

fn msg(text: &str) -> Reason {
    classify(&Signal::new().message(text)).reason
}

fn status_body(status: u16, body: &str) -> Reason {
    classify(&Signal::new().status(status).body(body)).reason
}

fn check(cases: &[(&str, Reason)], f: impl Fn(&str) -> Reason) {
    let mut wrong = Vec::new();
    for (input, want) in cases {
        let got = f(input);
        if got != *want {
            wrong.push(format!("{input:?}: got {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn status_alone_follows_the_table_on_every_path() {
    // The same status as a field, in a JSON body, and in text must agree.
    for status in [
        400_u16, 401, 402, 403, 404, 408, 413, 422, 429, 499, 500, 502, 503, 504, 520, 521, 522,
        524, 529,
    ] {
        let want = rules::status_reason(status).unwrap_or(Unknown);
        let field = classify(&Signal::new().status(status)).reason;
        let body =
            classify(&Signal::new().body(format!(r#"{{"error":{{"code":{status}}}}}"#))).reason;
        let text = msg(&format!("HTTP {status}"));
        let leading = msg(&format!("{status} status code"));
        let api = msg(&format!("Provider API error ({status})"));
        assert_eq!(
            [field, body, text, leading, api],
            [want; 5],
            "status {status}"
        );
    }
}

#[test]
fn gateway_statuses_given_only_as_a_property() {
    // The replaced system missed these when the message said nothing.
    let quiet = |status| {
        classify(
            &Signal::new()
                .status(status)
                .message("request failed upstream"),
        )
        .reason
    };
    assert_eq!(quiet(502), ServerError);
    assert_eq!(quiet(503), ServerError);
    assert_eq!(quiet(504), Timeout);
    assert_eq!(
        classify(&Signal::new().status(503).message("Service Unavailable")).reason,
        Overloaded
    );
}

#[test]
fn transport_codes_as_codes_io_kinds_errnos_and_text() {
    let cases = [
        ("ECONNREFUSED", ConnectionRefused),
        ("ENOTFOUND", Dns),
        ("EAI_AGAIN", Dns),
        ("ENETUNREACH", Unreachable),
        ("EHOSTUNREACH", Unreachable),
        ("EHOSTDOWN", Unreachable),
        ("ENETDOWN", Unreachable),
        ("ECONNRESET", ConnectionReset),
        ("EPIPE", ConnectionReset),
        ("ETIMEDOUT", Timeout),
        ("UND_ERR_CONNECT_TIMEOUT", Timeout),
        ("CERT_HAS_EXPIRED", Tls),
    ];
    for (code, want) in cases {
        assert_eq!(
            classify(&Signal::new().code(code)).reason,
            want,
            "code {code}"
        );
        assert_eq!(
            msg(&format!("Error: connect {code} 127.0.0.1:11434")),
            want,
            "text {code}"
        );
        // A transport code field outranks a status: the connection never produced one.
        assert_eq!(
            classify(&Signal::new().code(code).status(500)).reason,
            want,
            "code+status {code}"
        );
    }
    use std::io::ErrorKind as K;
    let kinds = [
        (K::ConnectionRefused, ConnectionRefused),
        (K::ConnectionReset, ConnectionReset),
        (K::ConnectionAborted, ConnectionReset),
        (K::BrokenPipe, ConnectionReset),
        (K::UnexpectedEof, ConnectionReset),
        (K::TimedOut, Timeout),
        (K::HostUnreachable, Unreachable),
        (K::NetworkUnreachable, Unreachable),
        (K::NetworkDown, Unreachable),
    ];
    for (kind, want) in kinds {
        let e = std::io::Error::new(kind, "boom");
        assert_eq!(classify(&Signal::from_io(&e)).reason, want, "{kind:?}");
    }
    #[cfg(unix)]
    for (errno, want) in [
        (libc::ECONNREFUSED, ConnectionRefused),
        (libc::ECONNRESET, ConnectionReset),
        (libc::EPIPE, ConnectionReset),
        (libc::ETIMEDOUT, Timeout),
        (libc::ENETUNREACH, Unreachable),
        (libc::EHOSTUNREACH, Unreachable),
        (libc::EHOSTDOWN, Unreachable),
        (libc::ENETDOWN, Unreachable),
    ] {
        let e = std::io::Error::from_raw_os_error(errno);
        assert_eq!(classify(&Signal::from_io(&e)).reason, want, "errno {errno}");
        assert_eq!(
            classify(&Signal::new().errno(errno)).reason,
            want,
            "errno {errno}"
        );
    }
    let texts = [
        ("connect ECONNREFUSED 127.0.0.1:11434", ConnectionRefused),
        (
            "dial tcp 127.0.0.1:11434: connect: connection refused",
            ConnectionRefused,
        ),
        ("getaddrinfo ENOTFOUND api.openai.com", Dns),
        (
            "dns error: failed to lookup address information: Name or service not known",
            Dns,
        ),
        ("Temporary failure in name resolution", Dns),
        ("connect: network is unreachable", Unreachable),
        ("No route to host", Unreachable),
        ("invalid peer certificate: UnknownIssuer", Tls),
        ("TLS handshake failed", Tls),
        ("socket hang up", ConnectionReset),
        ("read ECONNRESET", ConnectionReset),
        ("Connection reset by peer (os error 104)", ConnectionReset),
        ("request timed out", Timeout),
        ("operation timed out", Timeout),
        ("The operation was aborted due to timeout", Timeout),
    ];
    check(&texts, msg);
}

#[test]
fn openai_errors() {
    let bodies = [
        (
            429,
            r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
            RateLimit,
        ),
        (
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            Billing,
        ),
        (
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            Auth,
        ),
        (
            400,
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ContextOverflow,
        ),
        (
            404,
            r#"{"error":{"message":"The model `gpt-5-turbo` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
            ModelNotFound,
        ),
        (
            400,
            r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#,
            ContentFilter,
        ),
        (
            400,
            r#"{"error":{"message":"Invalid value for 'temperature': expected a number.","type":"invalid_request_error","param":"temperature","code":null}}"#,
            Format,
        ),
        (
            500,
            r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
            ServerError,
        ),
        (
            503,
            r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#,
            Overloaded,
        ),
        (
            403,
            r#"{"error":{"message":"Your organization has been disabled.","type":"invalid_request_error","code":"account_deactivated"}}"#,
            AuthPermanent,
        ),
    ];
    for (status, body, want) in bodies {
        assert_eq!(status_body(status, body), want, "{body}");
    }
}

#[test]
fn anthropic_errors() {
    let bodies = [
        (
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208423 tokens > 200000 maximum"}}"#,
            ContextOverflow,
        ),
        (
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
            Billing,
        ),
        (
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            Auth,
        ),
        (
            403,
            r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
            Auth,
        ),
        (
            404,
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-3-opus-99"}}"#,
            ModelNotFound,
        ),
        (
            413,
            r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
            ContextOverflow,
        ),
        (
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
            RateLimit,
        ),
        (
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            ServerError,
        ),
        (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            Overloaded,
        ),
        (
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0: thinking blocks cannot be modified"}}"#,
            Format,
        ),
    ];
    for (status, body, want) in bodies {
        assert_eq!(status_body(status, body), want, "{body}");
    }
    // The SDK's in-stream error has no status: the envelope alone decides.
    assert_eq!(
        msg(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        Overloaded
    );
}

#[test]
fn google_errors() {
    let bodies = [
        r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
        r#"[{"error":{"code":429,"message":"Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}]"#,
    ];
    for body in bodies {
        let c = classify(&Signal::new().body(body));
        assert_eq!(c.reason, RateLimit, "{body}");
    }
    let c = classify(&Signal::new().body(bodies[1]));
    assert_eq!(c.retry_after, Some(Duration::from_secs(37)));
    let more = [
        (
            r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
            Overloaded,
        ),
        (
            r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#,
            Auth,
        ),
        (
            r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
            ContextOverflow,
        ),
        (
            r#"{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta","status":"NOT_FOUND"}}"#,
            ModelNotFound,
        ),
        (
            r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
            ServerError,
        ),
        (
            r#"{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}"#,
            Timeout,
        ),
        (
            r#"{"error":{"code":403,"message":"Permission denied on resource project x.","status":"PERMISSION_DENIED"}}"#,
            Auth,
        ),
        (
            r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
            Format,
        ),
    ];
    check(&more, |b| classify(&Signal::new().body(b)).reason);
}

#[test]
fn bedrock_ollama_vllm_llamacpp_tgi_mistral() {
    let bedrock = classify(
        &Signal::new()
            .status(400)
            .header(
                "x-amzn-ErrorType",
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            )
            .body(r#"{"message":"Too many requests, please wait before trying again."}"#),
    );
    assert_eq!(bedrock.reason, RateLimit);
    let cases = [
        (
            400,
            r#"{"__type":"ValidationException","message":"Input is too long for requested model."}"#,
            ContextOverflow,
        ),
        (
            400,
            r#"{"__type":"ValidationException","message":"Malformed input request: extraneous key [foo] is not permitted"}"#,
            Format,
        ),
        (
            403,
            r#"{"__type":"AccessDeniedException","message":"You don't have access to the model with the specified model ID."}"#,
            Auth,
        ),
        (
            503,
            r#"{"__type":"ServiceUnavailableException","message":"Bedrock is unable to process your request."}"#,
            Overloaded,
        ),
        (
            424,
            r#"{"__type":"ModelErrorException","message":"The model returned an error"}"#,
            ServerError,
        ),
        (
            408,
            r#"{"__type":"ModelTimeoutException","message":"Model timed out"}"#,
            Timeout,
        ),
        (
            404,
            r#"{"error":"model 'llama3:70b' not found, try pulling it first"}"#,
            ModelNotFound,
        ),
        (
            500,
            r#"{"error":"llama runner process has terminated: signal: killed"}"#,
            ServerError,
        ),
        (
            400,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).","type":"BadRequestError","param":null,"code":400}"#,
            ContextOverflow,
        ),
        (
            400,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}}"#,
            ContextOverflow,
        ),
        (
            422,
            r#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`","error_type":"validation"}"#,
            ContextOverflow,
        ),
        (
            400,
            r#"{"object":"error","message":"Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length","type":"invalid_request_error","param":null,"code":null}"#,
            ContextOverflow,
        ),
        (
            503,
            r#"{"error":"Model is currently loading","estimated_time":20.0}"#,
            Overloaded,
        ),
    ];
    for (status, body, want) in cases {
        assert_eq!(status_body(status, body), want, "{body}");
    }
}

#[test]
fn html_error_pages() {
    let cf = |code: u16, title: &str| {
        format!(
            "<!DOCTYPE html><html><head><title>{title} | Cloudflare</title></head><body><span>Error code {code}</span><h1>{title}</h1></body></html>"
        )
    };
    // The status comes from the page alone.
    let pages = [
        (cf(520, "Web server is returning an unknown error"), ServerError),
        (cf(521, "Web server is down"), ServerError),
        (cf(522, "Connection timed out"), Timeout),
        (cf(524, "A timeout occurred"), Timeout),
        ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>".to_owned(), ServerError),
        ("<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>".to_owned(), Timeout),
        ("<html><head><title>503 Service Temporarily Unavailable</title></head><body>nginx</body></html>".to_owned(), Overloaded),
    ];
    for (page, want) in pages {
        assert_eq!(
            classify(&Signal::new().body(page.as_str())).reason,
            want,
            "{page}"
        );
    }
    // With an explicit status, the page can only refine it.
    let challenge = "<!doctype html><html><head><title>Just a moment...</title></head><body>Checking your browser before accessing. Enable JavaScript and cookies to continue</body></html>";
    assert_eq!(status_body(403, challenge), Auth);
}

#[test]
fn rate_limits_quota_and_billing() {
    let cases = [
        ("429 Too Many Requests", RateLimit),
        ("Rate limit exceeded", RateLimit),
        ("ThrottlingException: Rate exceeded", RateLimit),
        (
            "RESOURCE_EXHAUSTED: Quota exceeded for requests per minute",
            RateLimit,
        ),
        (
            "Too many tokens per day. Please try again tomorrow.",
            RateLimit,
        ),
        ("concurrency limit has been reached", RateLimit),
        ("Weekly usage limit exhausted.", RateLimit),
        ("Monthly spend limit reached.", RateLimit),
        ("HTTP 402 Payment Required: rate limit exceeded", RateLimit),
        (
            "402 Payment Required: Monthly spend limit reached. Please visit your billing settings.",
            RateLimit,
        ),
        (
            "HTTP 402: request reached organization usage limit, try again later",
            RateLimit,
        ),
        ("402 Payment Required", Billing),
        (
            "402 Payment Required: Weekly/Monthly Limit Exhausted",
            Billing,
        ),
        (
            "402 Payment Required: The account associated with this API key has reached its maximum allowed monthly spending limit.",
            Billing,
        ),
        (
            "HTTP 402: Your usage limit has been reached. Please upgrade your plan.",
            Billing,
        ),
        ("insufficient credits", Billing),
        (
            "Your credit balance is too low to access the Anthropic API.",
            Billing,
        ),
        ("429 insufficient_quota", Billing),
        (
            "OpenAI API error (429): insufficient_quota: Your account has insufficient quota balance",
            Billing,
        ),
        ("billing hard limit reached", Billing),
        ("429 Too Many Requests: model overloaded", RateLimit),
        ("403 concurrency limit breached", Auth),
    ];
    check(&cases, msg);
}

#[test]
fn chinese_provider_messages() {
    let cases = [
        ("请求过于频繁，请稍后重试", RateLimit),
        ("调用频率超限", RateLimit),
        ("配额已用尽", RateLimit),
        ("余额不足，请充值", Billing),
        ("账户已欠费", Billing),
        ("认证失败", Auth),
        ("无效的令牌", Auth),
        ("服务繁忙，请稍后再试", Overloaded),
        ("系统负载过高", Overloaded),
        ("错误：上下文过长，请减少输入", ContextOverflow),
        ("输入超出模型最大上下文长度", ContextOverflow),
        ("连接超时", Timeout),
        ("网络错误", ConnectionReset),
        ("内容违规", ContentFilter),
        ("模型不存在", ModelNotFound),
    ];
    check(&cases, msg);
}

#[test]
fn auth_permanent_context_and_content() {
    let cases = [
        ("Your api key has been revoked", AuthPermanent),
        ("API_KEY_REVOKED", AuthPermanent),
        ("This organization has been deactivated", AuthPermanent),
        (
            "OAuth authentication is currently not allowed for this organization",
            AuthPermanent,
        ),
        ("Invalid API key", Auth),
        ("Not logged in · Please run /login", Auth),
        ("Unauthorized", Auth),
        (
            "prompt is too long: 208423 tokens > 200000 maximum",
            ContextOverflow,
        ),
        (
            "Codex ran out of room in the model's context window.",
            ContextOverflow,
        ),
        (
            "the request exceeds the available context size, try increasing it",
            ContextOverflow,
        ),
        (
            "Please reduce the length of the messages or completion.",
            ContextOverflow,
        ),
        (
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            ContentFilter,
        ),
        ("Response was blocked due to SAFETY", ContentFilter),
        (
            "This model does not support assistant message prefill.",
            Format,
        ),
        (
            "model_is_deactivated: this model has been deactivated",
            ModelNotFound,
        ),
        ("Unknown model: openai/gpt-9", ModelNotFound),
    ];
    check(&cases, msg);
}

#[test]
fn streams_and_empty_responses() {
    let cases = [
        (
            "Anthropic stream ended before message_stop",
            StreamInterrupted,
        ),
        ("Stream ended without finish_reason", StreamInterrupted),
        ("stream was aborted", StreamInterrupted),
        // A body cut short under the connection is a reset, as the typed path says of an
        // `UnexpectedEof` (tests/classify.rs, truncated_body_is_a_transport_failure).
        ("incomplete chunked encoding", ConnectionReset),
        ("terminated", StreamInterrupted),
        (
            "Unhandled stop reason: MALFORMED_RESPONSE",
            StreamInterrupted,
        ),
        ("empty response from model", EmptyResponse),
    ];
    check(&cases, msg);
    assert_eq!(classify(&Signal::new().status(200)).reason, EmptyResponse);
}

#[test]
fn numbers_are_statuses_only_in_status_context() {
    let cases = [
        ("request id req-4291 failed", Unknown),
        ("Processed 503 documents", Unknown),
        ("402 items found in the database", Unknown),
        ("Book a 402 room", Unknown),
        ("Fixed issue CHE-402 in the latest release", Unknown),
        ("got a 402 from the API", Billing),
        ("error code 402", Billing),
        ("", Unknown),
    ];
    check(&cases, msg);
}

#[test]
fn structured_beats_text_and_status_beats_guesses() {
    // An explicit status beats a status in text.
    let s = Signal::new().status(429).message("HTTP 500 from upstream");
    assert_eq!(classify(&s).reason, RateLimit);
    // A provider code beats a generic wording...
    let s = Signal::new().body(r#"{"error":{"type":"rate_limit_error","message":"bad request"}}"#);
    assert_eq!(classify(&s).reason, RateLimit);
    // ...and cannot move a status out of its class.
    let s = Signal::new()
        .status(401)
        .body(r#"{"type":"error","error":{"type":"server_error"}}"#);
    assert_eq!(classify(&s).reason, Auth);
    // A class code yields to a specific wording.
    let s = Signal::new().status(400).body(r#"{"error":{"type":"invalid_request_error","message":"maximum context length is 8192 tokens"}}"#);
    assert_eq!(classify(&s).reason, ContextOverflow);
    // The caller's cancellation outranks everything.
    let s = Signal::new().status(429).code("ECONNREFUSED").cancelled();
    assert_eq!(classify(&s).reason, Cancelled);
    // An io error outranks a status read before the body broke.
    let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let s = Signal::from_io(&e).status(200);
    assert_eq!(classify(&s).reason, ConnectionReset);
}

#[test]
fn provider_rules_and_overrides() {
    let qwen = Signal::new()
        .message(r#"429 {"error":{"code":"insufficient_quota","message":"Allocated quota exceeded, please increase your quota limit."}}"#)
        .provider("qwen-plus");
    assert_eq!(classify(&qwen).reason, RateLimit);
    let openai = Signal::new()
        .message(r#"429 {"error":{"code":"insufficient_quota"}}"#)
        .provider("openai");
    assert_eq!(classify(&openai).reason, Billing);

    let c = Classifier::builder()
        .status("gw", 400, Overloaded)
        .code("gw", "1305", Overloaded)
        .code("gw", "E_BUSY", RateLimit)
        .pattern("gw", r"upstream .* sleeping", Timeout)
        .map(|b| b.build());
    let c = c.unwrap_or_default();
    let with = |s: Signal<'static>| c.classify(&s.provider("GW"));
    assert_eq!(with(Signal::new().status(400)).reason, Overloaded);
    assert_eq!(
        with(Signal::new().status(400)).matched,
        Matched::Override("status")
    );
    assert_eq!(
        with(Signal::new().message("HTTP 400 bad")).reason,
        Overloaded
    );
    // A numeric code in the body is a code (not a status) for overrides too.
    assert_eq!(
        with(Signal::new().body(r#"{"code":1305,"message":"busy"}"#)).reason,
        Overloaded
    );
    assert_eq!(
        with(Signal::new().body(r#"{"error":{"code":"E_BUSY"}}"#)).reason,
        RateLimit
    );
    assert_eq!(with(Signal::new().code("e_busy")).reason, RateLimit);
    assert_eq!(
        with(Signal::new().message("upstream is sleeping")).reason,
        Timeout
    );
    // Other providers are untouched.
    assert_eq!(
        classify(&Signal::new().status(400).provider("gw2")).reason,
        Format
    );
    // A bad pattern is an error that names it.
    let err = Classifier::builder().pattern("gw", "(", Timeout).err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("\"(\"") && text.contains("gw"), "{text}");
}

#[test]
fn retry_hints_come_with_the_reason() {
    let c = classify(&Signal::new().status(429).header("Retry-After", "2"));
    assert_eq!(
        (c.reason, c.retry_after),
        (RateLimit, Some(Duration::from_secs(2)))
    );
    let c = classify(&Signal::new().message("Rate limit reached. Please try again in 20ms."));
    assert_eq!(c.retry_after, Some(Duration::from_millis(20)));
    let c = classify(
        &Signal::new()
            .status(429)
            .header("retry-after-ms", "1500")
            .header("retry-after", "9"),
    );
    assert_eq!(c.retry_after, Some(Duration::from_millis(1500)));
}

#[test]
fn matched_names_the_deciding_rule() {
    let c = classify(&Signal::new().status(503).message("Service Unavailable"));
    assert_eq!(
        c.matched.to_string(),
        "status 503 refined by rule overloaded"
    );
    assert_eq!(
        classify(&Signal::new().code("ECONNREFUSED"))
            .matched
            .to_string(),
        "rule ECONNREFUSED"
    );
    assert_eq!(
        classify(&Signal::new().message("HTTP 504"))
            .matched
            .to_string(),
        "text status 504"
    );
    assert_eq!(classify(&Signal::new()).matched, Matched::Nothing);
}

#[test]
fn the_rule_table_fits_the_hit_set() {
    assert!(RULES.len() <= 256);
    let mut hits = Hits::default();
    let mut want = vec![0, 63, 64, 200, RULES.len() - 1];
    for &i in &want {
        hits.insert(i);
    }
    want.sort_unstable();
    assert_eq!(hits.iter().collect::<Vec<_>>(), want);
}

#[test]
fn long_texts_are_cut_on_a_char_boundary() {
    let s = "é".repeat(MAX_TEXT);
    let cut = cut(&s);
    assert!(cut.len() <= MAX_TEXT && cut.len() >= MAX_TEXT - 1);
    // Evidence past the cut is not read; evidence before it is.
    let late = format!("{}rate limit", "x".repeat(MAX_TEXT));
    assert_eq!(msg(&late), Unknown);
    let early = format!("rate limit{}", "x".repeat(MAX_TEXT));
    assert_eq!(msg(&early), RateLimit);
}

#[test]
fn server_failures_without_any_status_were_in_stream() {
    // An SDK's mid-stream error event: the event's JSON, no status.
    let event =
        r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#;
    assert_eq!(msg(event), StreamInterrupted);
    assert_eq!(
        msg("An error occurred while processing your request. You can retry your request."),
        StreamInterrupted
    );
    // The same evidence with a status is a server error.
    assert_eq!(
        classify(&Signal::new().status(500).body(event)).reason,
        ServerError
    );
    assert_eq!(msg(&format!("500 {event}")), ServerError);
    // Specific failures keep their reason inside a stream too.
    assert_eq!(
        msg(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        Overloaded
    );
    // A finish reason of "error" is a terminal event, not an interruption.
    assert_eq!(msg("finish_reason: error"), ServerError);
    // The caller's code field is taken at face value.
    assert_eq!(
        classify(&Signal::new().code("server_error")).reason,
        ServerError
    );
}

#[test]
fn provider_numbers_after_a_bare_code_are_not_statuses() {
    assert_eq!(
        msg("got status: INTERNAL upstream failure code:500"),
        StreamInterrupted
    );
    assert_eq!(
        msg(r#"{"error_code":110,"error_msg":"Access token invalid or no longer valid"}"#),
        Auth
    );
    assert_eq!(msg("error code: 429"), RateLimit);
    assert_eq!(msg("status code 429"), RateLimit);
}

#[test]
fn a_status_with_no_body_does_not_stop_failover() {
    assert_eq!(msg("400 status code (no body)"), Unknown);
    assert_eq!(msg("Error: HTTP 422: No response body"), Unknown);
    // ...but other statuses keep their meaning without a body.
    assert_eq!(msg("404 status code (no body)"), ModelNotFound);
    assert_eq!(msg("524 status code (no body)"), Timeout);
    assert_eq!(
        classify(&Signal::new().status(400).message("Bad request")).reason,
        Format
    );
}

#[test]
fn words_echoed_from_the_request_do_not_move_a_400() {
    let cases = [
        (
            400,
            "'Forbidden City' is not of type 'object' - 'messages.0.content'",
        ),
        (
            400,
            "Invalid schema for function 'get_rate_limit': missing 'type'",
        ),
        (400, "Function overloading is not supported"),
        (422, "field 'timeout_ms' must be an integer"),
        (400, "tool 'server_error_report' has an invalid description"),
    ];
    for (status, message) in cases {
        let got = classify(&Signal::new().status(status).message(message)).reason;
        assert_eq!(got, Format, "{status} {message}");
    }
    // What a provider says about its own state still counts.
    assert_eq!(
        classify(
            &Signal::new()
                .status(400)
                .message("HTTP 400: ThrottlingException: Too many concurrent requests")
        )
        .reason,
        RateLimit
    );
    assert_eq!(
        classify(
            &Signal::new()
                .status(400)
                .message("API key not valid. Please pass a valid API key.")
        )
        .reason,
        Auth
    );
}
