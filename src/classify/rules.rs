//! The one table of truth.
//!
//! Every way the classifier turns evidence into a [`Reason`] is written down here, once:
//!
//! * [`status_reason`]: what an HTTP status means, whether the status came as a field, from a
//!   provider's JSON body (`"code": 503`) or out of message text ("HTTP 503"). The paths cannot
//!   disagree because there is only this one function.
//! * [`refines`]: which more specific reasons the text or a provider code may put in place of
//!   the status's reason (a 400 that says "context length" is `context_overflow`; a 401 that
//!   says "server_error" stays `auth`).
//! * [`RULES`]: error codes (errno names, provider `type`/`code`/`status` values, exception
//!   names) and text patterns, in priority order. A code is looked up by exact value in
//!   structured fields and found as a whole word in text, through the same entry.
//!
//! Text patterns are compiled once into one [`regex::RegexSet`] (linear-time automata, no
//! backtracking), so a hostile body cannot stall classification.

use crate::reason::Reason;

/// How a rule recognises its evidence.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Matcher {
    /// An error code: an exact (ASCII case-insensitive) value of a structured field, or a
    /// whole word in text.
    Code(&'static str),
    /// A regular expression over message, body and error-chain text (ASCII case-insensitive).
    Text(&'static str),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    /// Shown as `matched` by the CLI: which rule decided.
    pub(crate) name: &'static str,
    pub(crate) reason: Reason,
    /// The reason when no HTTP status is known at all (see [`in_stream`]); else `reason`.
    pub(crate) without_status: Reason,
    pub(crate) matcher: Matcher,
    /// When set, the rule applies only when the provider hint starts with this name, and it
    /// outranks the rules below it for the same evidence.
    pub(crate) provider: Option<&'static str>,
}

const fn code(reason: Reason, code: &'static str) -> Rule {
    Rule {
        name: code,
        reason,
        without_status: reason,
        matcher: Matcher::Code(code),
        provider: None,
    }
}

const fn text(reason: Reason, name: &'static str, pattern: &'static str) -> Rule {
    Rule {
        name,
        reason,
        without_status: reason,
        matcher: Matcher::Text(pattern),
        provider: None,
    }
}

/// A server-side failure that arrives without any HTTP status was reported inside a stream
/// that had already answered 200: SDKs turn a mid-stream `error` event into an error whose
/// message is the event's JSON (Anthropic's `{"type":"error","error":{"type":"api_error"}}`)
/// or its text (OpenAI's "An error occurred while processing your request. You can retry
/// your request"), with no status, while an HTTP error always carries one ("500 {...}").
/// Such a failure cut the answer short: `stream_interrupted`. With a status it is
/// `server_error`, as the design contract says of 5xx and `api_error` bodies. (The replaced
/// system's suite calls these timeouts, except a Codex `error` event, which it calls a server
/// error; here all of them are one case.)
const fn in_stream(rule: Rule) -> Rule {
    Rule {
        without_status: StreamInterrupted,
        ..rule
    }
}

const fn for_provider(provider: &'static str, rule: Rule) -> Rule {
    Rule {
        provider: Some(provider),
        ..rule
    }
}

use Reason::{
    Auth, AuthPermanent, Billing, Cancelled, ConnectionRefused, ConnectionReset, ContentFilter,
    ContextOverflow, Dns, EmptyResponse, Format, ModelNotFound, Overloaded, RateLimit, ServerError,
    StreamInterrupted, Timeout, Tls, Unreachable,
};

/// The reason an HTTP status stands for on its own.
///
/// 503 is `server_error` here and becomes `overloaded` when the text says "Service
/// Unavailable" or "overloaded" (see [`refines`]): a bare 503 from a proxy in front of a
/// provider says little about the provider's capacity.
pub(crate) fn status_reason(status: u16) -> Option<Reason> {
    Some(match status {
        200..=299 => EmptyResponse,
        400 | 405 | 406 | 411 | 414 | 415 | 416 | 417 | 422 | 431 => Format,
        401 | 403 | 407 => Auth,
        402 => Billing,
        404 => ModelNotFound,
        // Not mapped: 409, 410 (the replaced system's suite calls a bare "410" a timeout; we
        // know no provider meaning for it, so it fails over as `unknown`), 425 and the rest.
        408 | 499 | 504 | 522 | 524 => Timeout,
        413 => ContextOverflow,
        429 => RateLimit,
        451 => ContentFilter,
        529 => Overloaded,
        // Every other 5xx, whichever path it came by. The replaced system's suite calls a 502
        // in "Azure OpenAI API error (502)" and a Google `{"code":500,"status":"INTERNAL"}` a
        // timeout while calling "502 Bad Gateway" a server error: the disagreement between
        // paths that this one table exists to end.
        500..=599 => ServerError,
        _ => return None,
    })
}

/// The reason an I/O error kind stands for, if it says anything about the provider.
pub(crate) fn io_kind_reason(kind: std::io::ErrorKind) -> Option<Reason> {
    use std::io::ErrorKind as K;
    Some(match kind {
        K::ConnectionRefused => ConnectionRefused,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown | K::AddrNotAvailable => {
            Unreachable
        }
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::NotConnected => {
            ConnectionReset
        }
        K::UnexpectedEof => ConnectionReset,
        K::TimedOut => Timeout,
        _ => return None,
    })
}

/// The reason a raw OS error number stands for: through its `io::ErrorKind`, plus the errnos
/// that the standard library leaves uncategorised.
pub(crate) fn errno_reason(errno: i32) -> Option<Reason> {
    if let Some(r) = io_kind_reason(std::io::Error::from_raw_os_error(errno).kind()) {
        return Some(r);
    }
    #[cfg(unix)]
    {
        if errno == libc::EHOSTDOWN {
            return Some(Unreachable);
        }
        if errno == libc::ENETRESET {
            return Some(ConnectionReset);
        }
    }
    None
}

/// May evidence for `specific` replace the reason of the status, `base`?
///
/// A status states the class of failure; text and provider codes may only sharpen it within
/// that class. A 429 that mentions "overloaded" is still a rate limit; a 403 about exhausted
/// credits is billing; a 401 whose body says "server_error" is still auth.
pub(crate) fn refines(base: Reason, specific: Reason) -> bool {
    if base == specific {
        return true;
    }
    match base {
        // A 400/422 is the request's fault unless the provider says which other failure it
        // is: words echoed from the request ("timeout_ms", "overloading") must not turn it
        // into a transport or server failure.
        Format => matches!(
            specific,
            ContextOverflow
                | ContentFilter
                | ModelNotFound
                | Billing
                | Auth
                | AuthPermanent
                | RateLimit
                | Reason::Unknown
        ),
        Reason::Unknown => !matches!(
            specific,
            ConnectionRefused | Dns | Unreachable | Tls | Cancelled
        ),
        EmptyResponse => !matches!(
            specific,
            ConnectionRefused | Dns | Unreachable | Tls | Cancelled | Reason::Unknown
        ),
        // A 403 that says the credits ran out is billing (the replaced system's suite keeps
        // xAI's "403 You have run out of credits" as auth; the key is fine, the account empty).
        Auth => matches!(specific, AuthPermanent | Billing | ContentFilter),
        Billing => matches!(specific, RateLimit | AuthPermanent),
        ModelNotFound => matches!(specific, ContextOverflow | Format | ContentFilter | Auth),
        ContextOverflow => matches!(specific, RateLimit | Format),
        RateLimit => matches!(specific, Billing),
        Timeout => matches!(specific, Overloaded | RateLimit),
        ServerError => matches!(specific, Overloaded | Timeout | ContextOverflow | RateLimit),
        ContentFilter | Overloaded => false,
        ConnectionRefused | Dns | Unreachable | Tls | ConnectionReset | StreamInterrupted
        | AuthPermanent | Cancelled => false,
    }
}

/// Error codes and text patterns, most decisive first: the order is the priority.
///
/// Transport codes come first, then provider codes that name one failure, then wordings, then
/// codes that name only a class. Among wordings, specific ones come before generic ones (a
/// "spend limit reached" is a temporary limit even on a 402; "payment required" is billing
/// even when the text also speaks of a monthly limit).
pub(crate) static RULES: &[Rule] = &[
    // ── Transport: errno names and runtime codes (Node, undici, gRPC, curl). ──────────────
    code(ConnectionRefused, "ECONNREFUSED"),
    code(Dns, "ENOTFOUND"),
    code(Dns, "EAI_AGAIN"),
    code(Dns, "EAI_NONAME"),
    code(Dns, "EAI_FAIL"),
    code(Dns, "EAI_NODATA"),
    code(Unreachable, "ENETUNREACH"),
    code(Unreachable, "EHOSTUNREACH"),
    code(Unreachable, "EHOSTDOWN"),
    code(Unreachable, "ENETDOWN"),
    code(Tls, "CERT_HAS_EXPIRED"),
    code(Tls, "DEPTH_ZERO_SELF_SIGNED_CERT"),
    code(Tls, "SELF_SIGNED_CERT_IN_CHAIN"),
    code(Tls, "UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
    code(Tls, "ERR_TLS_CERT_ALTNAME_INVALID"),
    code(Tls, "EPROTO"),
    code(ConnectionReset, "ECONNRESET"),
    code(ConnectionReset, "EPIPE"),
    code(ConnectionReset, "ECONNABORTED"),
    code(ConnectionReset, "ENETRESET"),
    code(ConnectionReset, "UND_ERR_SOCKET"),
    code(ConnectionReset, "UND_ERR_CLOSED"),
    code(ConnectionReset, "ERR_STREAM_PREMATURE_CLOSE"),
    code(Timeout, "ETIMEDOUT"),
    code(Timeout, "ESOCKETTIMEDOUT"),
    code(Timeout, "UND_ERR_CONNECT_TIMEOUT"),
    code(Timeout, "UND_ERR_HEADERS_TIMEOUT"),
    code(Timeout, "UND_ERR_BODY_TIMEOUT"),
    // undici and fetch report an AbortSignal.timeout() as an abort.
    code(Timeout, "UND_ERR_ABORTED"),
    code(Timeout, "ABORT_ERR"),
    code(Timeout, "DEADLINE_EXCEEDED"),
    code(Timeout, "ModelTimeoutException"),
    // Gemini's finish reason for a response it could not finish producing.
    code(StreamInterrupted, "MALFORMED_RESPONSE"),
    // ── Provider codes that name one failure. ─────────────────────────────────────────────
    code(ContextOverflow, "context_length_exceeded"),
    code(ContextOverflow, "exceed_context_size_error"),
    code(ContextOverflow, "string_above_max_length"),
    code(ContentFilter, "content_filter"),
    code(ContentFilter, "content_policy_violation"),
    code(ContentFilter, "responsible_ai_policy_violation"),
    code(ContentFilter, "data_inspection_failed"),
    code(ContentFilter, "PROHIBITED_CONTENT"),
    code(ContentFilter, "SAFETY"),
    code(AuthPermanent, "API_KEY_REVOKED"),
    code(AuthPermanent, "account_deactivated"),
    code(AuthPermanent, "deactivated_workspace"),
    code(AuthPermanent, "organization_deactivated"),
    // Alibaba DashScope's OpenAI-compatible mode reports its allocation throttle
    // (Throttling.AllocationQuota) as insufficient_quota: for Qwen it is a rate limit.
    for_provider("qwen", code(RateLimit, "insufficient_quota")),
    for_provider("dashscope", code(RateLimit, "insufficient_quota")),
    code(Billing, "insufficient_quota"),
    code(Billing, "billing_hard_limit_reached"),
    code(Billing, "insufficient_balance"),
    code(Billing, "GoUsageLimitError"),
    code(RateLimit, "rate_limit_error"),
    code(RateLimit, "rate_limit_exceeded"),
    code(RateLimit, "RESOURCE_EXHAUSTED"),
    code(RateLimit, "ResourceExhausted"),
    code(RateLimit, "ThrottlingException"),
    code(RateLimit, "Throttling"),
    code(RateLimit, "TooManyRequestsException"),
    code(RateLimit, "ServiceQuotaExceededException"),
    code(RateLimit, "quota_exceeded"),
    code(RateLimit, "model_cooldown"),
    code(Overloaded, "overloaded_error"),
    code(Overloaded, "engine_overloaded"),
    code(Overloaded, "ServiceUnavailableException"),
    code(Overloaded, "ModelNotReadyException"),
    code(Auth, "invalid_api_key"),
    code(Auth, "authentication_error"),
    code(Auth, "invalid_authentication"),
    code(Auth, "UNAUTHENTICATED"),
    code(Auth, "AccessDeniedException"),
    code(Auth, "UnrecognizedClientException"),
    code(ModelNotFound, "model_not_found"),
    code(ModelNotFound, "model_is_deactivated"),
    code(ModelNotFound, "DeploymentNotFound"),
    code(ModelNotFound, "ResourceNotFoundException"),
    in_stream(code(ServerError, "InternalServerException")),
    in_stream(code(ServerError, "ModelErrorException")),
    // ── Transport and stream wordings. ─────────────────────────────────────────────────
    text(
        ConnectionRefused,
        "connection_refused",
        r"connection refused|actively refused",
    ),
    text(
        Dns,
        "dns",
        r"\bdns error|failed to lookup address|name or service not known|nodename nor servname|no such host|getaddrinfo|could not resolve host|temporary failure in name resolution|name does not resolve",
    ),
    text(
        Unreachable,
        "unreachable",
        r"network is unreachable|no route to host|host is down|network is down|host unreachable",
    ),
    text(
        Tls,
        "tls",
        r"\b(tls|ssl) (handshake|alert|error)|invalid peer certificate|certificate (verify|verification|has expired|is not valid|unknown)|unknown issuer|self[- ]signed certificate|received corrupt message|handshake failure",
    ),
    // ── Context overflow: every wording we know, before rate limits ("tokens"). ──────────
    text(
        ContextOverflow,
        "context_overflow",
        concat!(
            r"(maximum|max) context (length|window)|context (length|window|limit) (exceeded|is exceeded)",
            r"|exceed(s|ed)? (the |your |its )?(model'?s? )?(maximum |max |available )?context (length|window|size|limit)",
            r"|prompt (is )?too (long|large)|input is too long|too many input tokens|context overflow",
            r"|out of room in the model'?s context window|exceeded model token limit",
            r"|exceeds the maximum number of (input )?tokens|configured context size",
            r"|tokens \+ `?max_new_tokens`? must be|must have less than \d+ tokens",
            r"|reduce the length of the messages|cannot exceed \d+ tokens",
            r"|上下文(过长|长度超|超出|超过|超限)|超(出|过)(?u:[^，。])*上下文",
        ),
    ),
    text(
        ContentFilter,
        "content_filter",
        concat!(
            r"content (management |filtering )?policy|content filter|safety system|flagged by (our|the) (moderation|content|safety)",
            r"|blocked (due to|by) (safety|content|policy|moderation)|responsible ai",
            r"|内容(违规|不合规|安全)|敏感(内容|词)",
        ),
    ),
    text(
        AuthPermanent,
        "revoked",
        concat!(
            r"\b(api[ _-]?key|key|token|account|organi[sz]ation|org|workspace|user|credential)s?\b(?u:[^.])*\b(has been|was|is|are|got) (permanently )?(revoked|deactivated|disabled|suspended|banned|terminated)",
            r"|\b(api[ _-]?key|key|token) revoked|not allowed for this organi[sz]ation",
        ),
    ),
    // A limit that resets soon, stated in words, even on a 402.
    text(
        RateLimit,
        "rate_limit",
        concat!(
            r"\brate[ _-]?limit|too many (requests|concurrent|tokens)|spend limit reached|throttl(ed|ing)",
            r"|reached (the |your |its )?(organi[sz]ation|org)('s)? usage limit|limit will reset",
        ),
    ),
    text(
        Billing,
        "billing",
        concat!(
            r"payment required|credit balance (is )?too low|insufficient (\w+ )?(credits?|balance|funds)|out of (\w+ )?credits",
            r"|(used|use) (up |all )?(your |all |of your )?(available )?(credits|points)|requires? more credits|add (more )?credits",
            r"|top up|purchase (a subscription|credits|more)|upgrade your plan|(billing|payment) (hard )?limit",
            r"|spending limit|out of extra usage|no (available )?balance|usage is unavailable for this account",
            r"|subscription plan does not (yet )?include|余额不足|欠费",
        ),
    ),
    // Quotas and usage caps that reset on their own.
    text(
        RateLimit,
        "quota",
        concat!(
            r"quota (limit )?(exceeded|reached|exhausted)|exceeded (your |the )?(\w+ )?quota|resources? (has been |have been )?exhausted",
            r"|(usage|request|token) limit (reached|exhausted|exceeded|hit)|usage limit|concurrency limit|cooling down|cooldown",
            r"|(requests|tokens) per (min|minute|second|day|hour)|\b(rpm|tpm|rpd|tpd)\b",
            r"|请求过于频繁|频率超限|调用频率|请求频率|限流|配额|额度",
        ),
    ),
    // "服务繁忙" ("service busy") is an overload; the replaced system's suite calls it a
    // timeout.
    text(
        Overloaded,
        "overloaded",
        concat!(
            r"overload|at capacity|over capacity|high demand|service (is )?(temporarily )?unavailable|service_unavailable",
            r"|servers? (is|are) (currently )?busy|temporarily unable to (handle|service)|no capacity|capacity (constraints|issues)",
            r"|model is (currently )?loading|服务繁忙|服务器繁忙|系统繁忙|负载过高|过载",
        ),
    ),
    text(
        Auth,
        "auth",
        concat!(
            r"invalid[ _-]?(x-)?(api[ _-]?)?key|incorrect api key|api key (is )?(not valid|invalid|missing|not found)|no api key|missing api key",
            r"|could not authenticate|authentication (failed|error|required)|unauthori[sz]ed|not authorized",
            r"|(invalid|bad|incorrect|wrong|missing) ([\w-]+ ){0,3}credentials|insufficient permissions|permission denied|access denied",
            r"|missing scopes?|token refresh failed|re-?authenticate|not logged in|please run /login",
            r"|(invalid|expired) (access |bearer |oauth |auth )?token|token (is )?(invalid|expired)|extract \w+ from token",
            r"|认证失败|鉴权失败|未授权|无效的?(令牌|密钥)",
        ),
    ),
    // "No endpoints found that support image input" is a request the route cannot serve,
    // not a missing model.
    text(
        Format,
        "unsupported_input",
        r"no endpoints found that support|does not support|not supported",
    ),
    text(
        ModelNotFound,
        "model_not_found",
        concat!(
            r"model[ _]not[ _]found|\bmodel:? (?u:[^\s,;])+ (not found|does not exist)|(unknown|invalid|unsupported) model",
            r"|no such model|no endpoints found|model (?u:[^\s,;])+ (has been|was|is) (deprecated|retired|decommissioned)",
            r"|does not exist or you do not have access|模型不存在",
        ),
    ),
    text(
        Format,
        "invalid_request",
        concat!(
            r"invalid (request|input|parameter|argument|value|json|schema|format)|malformed (request|json|input|body)|request malformed|bad request|missing required|is required",
            r"|parameter error|thinking blocks? cannot be modified|signature`? in `?thinking|exceed the maximum allowed size",
            r"|参数错误",
        ),
    ),
    text(
        Timeout,
        "timeout",
        r"\btimed? ?out\b|timeout\b|deadline exceeded|took too long|operation was aborted|reason: abort\b|finish_reason: abort\b|超时",
    ),
    text(
        StreamInterrupted,
        "stream_interrupted",
        concat!(
            r"ended (before|without) (a |the |any )?(message_?stop|messagestop|terminal|final|finish_reason|\[done\]|next event|sending any chunks)",
            r"|stream (was )?(closed|aborted|interrupted|terminated|cut)|stream_read_error|malformed_response",
            r"|incomplete (chunked|message|response)|premature (close|end)|^\s*terminated\s*$",
        ),
    ),
    // "Request failed" / "fetch failed" with no status means no response arrived at all.
    text(
        ConnectionReset,
        "no_response",
        r"\brequest failed\b|\bfetch failed\b",
    ),
    text(
        ConnectionReset,
        "connection_reset",
        concat!(
            r"connection (was )?(reset|closed|aborted|lost|error)|reset by peer|broken pipe|socket hang ?up|other side closed",
            r"|unexpected eof|closed before (the )?(message|response)|network[ _]error|websocket closed unexpectedly",
            r"|网络(错误|异常)|连接(中断|断开|重置)",
        ),
    ),
    in_stream(text(
        ServerError,
        "server_error",
        concat!(
            r"internal (server )?error|server error|server had an error|bad gateway",
            r"|error occurred while processing your request",
            r"|服务(器)?(内部)?错误|内部错误",
        ),
    )),
    // A finish reason of "error" is the stream's own terminal event: not an interruption.
    text(
        ServerError,
        "finish_error",
        r"(finish|stop)[ _]reason: error\b",
    ),
    text(
        EmptyResponse,
        "empty_response",
        r"empty (response|completion|choices|content)|returned no (choices|content|output)",
    ),
    // "400 status code (no body)": a status with an empty body says nothing about the
    // request, so it must not stop failover as `format` would. Gateways answer bare 400s and
    // 422s for their own faults.
    text(
        Reason::Unknown,
        "no_body",
        r"\(no body\)|no response body|empty body",
    ),
    // Messages that say nothing ("An unknown error occurred") match no rule and are
    // `unknown`, which fails over while targets remain; the replaced system's suite calls that
    // one a timeout.
    // ── Codes that name only a class: every code and wording above is more specific. ────
    code(Cancelled, "CANCELLED"),
    code(Overloaded, "UNAVAILABLE"),
    in_stream(code(ServerError, "server_error")),
    in_stream(code(ServerError, "api_error")),
    in_stream(code(ServerError, "INTERNAL")),
    code(Auth, "permission_error"),
    code(Auth, "PERMISSION_DENIED"),
    code(ModelNotFound, "not_found_error"),
    code(ModelNotFound, "NOT_FOUND"),
    code(Format, "invalid_request_error"),
    code(Format, "INVALID_ARGUMENT"),
    code(Format, "FAILED_PRECONDITION"),
    code(Format, "BadRequestError"),
    code(Format, "ValidationException"),
];

/// The regex that finds a rule's evidence in text, for the one [`regex::RegexSet`].
///
/// Codes are matched as whole words. A code with `_` or `.` in it cannot be prose, so it is
/// matched in any case; a plain word (`INTERNAL`, `UNAVAILABLE`) only as written, so prose
/// ("internal") does not trigger it.
pub(crate) fn text_pattern(rule: &Rule) -> String {
    match rule.matcher {
        Matcher::Code(c) => {
            let case = if c.contains(['_', '.']) { "(?i)" } else { "" };
            format!(r"{case}\b{}\b", regex::escape(c))
        }
        Matcher::Text(p) => format!("(?i){p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles_and_codes_are_unique_per_provider() {
        for rule in RULES {
            let p = text_pattern(rule);
            assert!(
                regex::RegexBuilder::new(&p).unicode(false).build().is_ok(),
                "{} does not compile: {p}",
                rule.name
            );
        }
        let mut codes: Vec<_> = RULES
            .iter()
            .filter_map(|r| match r.matcher {
                Matcher::Code(c) => Some((c.to_ascii_lowercase(), r.provider)),
                Matcher::Text(_) => None,
            })
            .collect();
        let n = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n, "a code appears twice for the same provider");
    }

    #[test]
    fn statuses_from_the_design_contract() {
        let cases = [
            (400, Format),
            (401, Auth),
            (402, Billing),
            (403, Auth),
            (404, ModelNotFound),
            (408, Timeout),
            (413, ContextOverflow),
            (422, Format),
            (429, RateLimit),
            (499, Timeout),
            (500, ServerError),
            (502, ServerError),
            (503, ServerError),
            (504, Timeout),
            (520, ServerError),
            (521, ServerError),
            (522, Timeout),
            (524, Timeout),
            (529, Overloaded),
            (200, EmptyResponse),
        ];
        for (status, reason) in cases {
            assert_eq!(status_reason(status), Some(reason), "{status}");
        }
        assert_eq!(status_reason(302), None);
        assert_eq!(status_reason(99), None);
        assert_eq!(status_reason(409), None);
        assert_eq!(status_reason(410), None);
    }

    #[test]
    fn refinement_keeps_the_class_of_the_status() {
        assert!(refines(RateLimit, Billing));
        assert!(!refines(RateLimit, Overloaded));
        assert!(refines(Format, ContextOverflow));
        assert!(!refines(Format, ConnectionRefused));
        assert!(!refines(Auth, ServerError));
        assert!(refines(Timeout, Overloaded));
        assert!(refines(ServerError, Overloaded));
        assert!(refines(Billing, RateLimit));
        assert!(!refines(Overloaded, ServerError));
    }
}
