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
//! * [`RULES`]: rule families, in priority order. A family is one fact (a context window
//!   overflowed, a key was revoked) with every code and wording it is known by, in every
//!   language seen: provider `type`/`code`/`status` values, exception names, errno names,
//!   English and Chinese prose. A code is looked up by exact value in structured fields (a
//!   dotted code such as `Throttling.RateQuota` also by its head) and found as a whole word in
//!   text, through the same row; a purely numeric code (Zhipu's `1302`, Baidu's `18`) is read
//!   only from structured fields and only for the providers that define it.
//!
//! # Priority
//!
//! Rows are ordered in four tiers ([`Tier`]); a unit test checks the table is sorted by tier.
//!
//! 1. transport codes (`ECONNREFUSED`, `UND_ERR_SOCKET`, `ReadTimeout`): the connection itself
//!    failed, whatever any text says;
//! 2. provider codes that name one failure (`context_length_exceeded`, `insufficient_quota`,
//!    `ThrottlingException`);
//! 3. wordings, most specific first: transport wordings, then context overflow (before rate
//!    limits, which also speak of "tokens"), content filter, revoked keys, rate limits, billing,
//!    quota windows, overload, auth, missing model (before "not supported": a 404 that says a
//!    model "is not found for API version v1beta, or is not supported" is `model_not_found`),
//!    invalid requests, timeouts, stream cuts, resets, server errors;
//! 4. codes that name only a class (`invalid_request_error`, `authentication_error`,
//!    `api_error`, `INTERNAL`, SDK wrapper classes such as `APIConnectionError`) and providers'
//!    numeric codes: the message beside them says more (a key "has been disabled" under
//!    `authentication_error` is `auth_permanent`). (Gateways reuse the numbers: z.ai answers `1113`, "in arrears"
//!    in its reference, with "invalid api endpoint or credentials".)
//!
//! With a status, the first row whose reason [`refines`] the status's reason wins, so a context
//! overflow beats the 500 it arrives under (llama.cpp) and a 429 that says "overloaded" stays
//! a rate limit. Two families of different reasons in the same tier that match the same case
//! are ordered by [`PRECEDENCE`], where each such overlap is written down with its why; the
//! classifier's tests run the conformance corpus (`tests/corpus/`) through the table and fail
//! on any overlap that is not written there.
//!
//! # Where a spend limit ends and a rate limit begins
//!
//! A limit that ends by itself is `rate_limit`: per second to per month, a plan's or a
//! subscription's usage window ("daily limit reached", "weekly/monthly limit exhausted",
//! "resets tomorrow", "try again in 5 hours", "配额已用尽"), even on a 402. A limit that only
//! money or a plan change ends is `billing`: credits, balance, arrears, payment, a budget or an
//! account's spending limit, a lifetime ("total") allowance, an expired plan, "upgrade your
//! plan", "top up", even on a 429. When a text says both, the money wins ("402 Payment
//! Required: Weekly/Monthly Limit Exhausted" is billing), with one exception kept from the
//! replaced system: a "spend limit reached" (the cap a customer sets on a workspace or project
//! and raises in its settings) is a rate limit, while a "spending limit" (the provider's cap on
//! the account) is billing.
//!
//! Text patterns are compiled once into one [`regex::RegexSet`] (linear-time automata, no
//! backtracking), so a hostile body cannot stall classification.

use crate::reason::Reason;

/// How a rule recognises its evidence.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Matcher {
    /// Error codes: exact (ASCII case-insensitive) values of structured fields, or whole words
    /// in text. Purely numeric codes are never looked for in text.
    Codes(&'static [&'static str]),
    /// Wordings: regular expressions over message, body and error-chain text (ASCII
    /// case-insensitive), one alternative each.
    Words(&'static [&'static str]),
}

/// The tiers of the table, in priority order (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tier {
    /// Codes of a failed connection.
    Transport,
    /// Provider codes that name one failure.
    Decisive,
    /// Wordings.
    Wording,
    /// Codes that name only a class, and numeric provider codes.
    Class,
}

/// One row of the table: one fact's codes, or one fact's wordings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    /// The fact this row belongs to; a family may have a row of codes and a row of wordings.
    /// Shown as `matched` for wordings (codes show the code itself).
    pub(crate) family: &'static str,
    pub(crate) reason: Reason,
    /// The reason when no HTTP status is known at all (see [`in_stream`]); else `reason`.
    pub(crate) without_status: Reason,
    pub(crate) matcher: Matcher,
    pub(crate) tier: Tier,
    /// When not empty, the rule applies only when the provider hint starts with one of these
    /// names, and it outranks the rules below it for the same evidence.
    pub(crate) providers: &'static [&'static str],
}

const fn row(tier: Tier, reason: Reason, family: &'static str, matcher: Matcher) -> Rule {
    Rule {
        family,
        reason,
        without_status: reason,
        matcher,
        tier,
        providers: &[],
    }
}

/// Transport codes (tier 1).
const fn transport(reason: Reason, family: &'static str, codes: &'static [&'static str]) -> Rule {
    row(Tier::Transport, reason, family, Matcher::Codes(codes))
}

/// Provider codes that name one failure (tier 2).
const fn codes(reason: Reason, family: &'static str, codes: &'static [&'static str]) -> Rule {
    row(Tier::Decisive, reason, family, Matcher::Codes(codes))
}

/// Wordings of one fact (tier 3).
const fn words(reason: Reason, family: &'static str, words: &'static [&'static str]) -> Rule {
    row(Tier::Wording, reason, family, Matcher::Words(words))
}

/// Codes that name only a class, and numeric provider codes (tier 4).
const fn class(reason: Reason, family: &'static str, codes: &'static [&'static str]) -> Rule {
    row(Tier::Class, reason, family, Matcher::Codes(codes))
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

const fn for_providers(providers: &'static [&'static str], rule: Rule) -> Rule {
    Rule { providers, ..rule }
}

/// Zhipu's names: the open platform (bigmodel.cn), z.ai and the GLM models.
const ZHIPU: &[&str] = &["zhipu", "zai", "z-ai", "z.ai", "glm", "bigmodel"];
/// MiniMax (`base_resp.status_code`).
const MINIMAX: &[&str] = &["minimax"];
/// Baidu Qianfan / ERNIE (`error_code`).
const BAIDU: &[&str] = &["baidu", "qianfan", "ernie", "wenxin"];

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

/// The rule families, most decisive first: the order is the priority (see the module docs).
pub(crate) static RULES: &[Rule] = &[
    // ── Tier 1: transport codes (errno names, Node/undici, Python exception classes). ──────
    transport(ConnectionRefused, "connection_refused", &["ECONNREFUSED"]),
    transport(
        Dns,
        "dns",
        &[
            "ENOTFOUND",
            "EAI_AGAIN",
            "EAI_NONAME",
            "EAI_FAIL",
            "EAI_NODATA",
            "ClientConnectorDNSError",
            "gaierror",
        ],
    ),
    transport(
        Unreachable,
        "unreachable",
        &["ENETUNREACH", "EHOSTUNREACH", "EHOSTDOWN", "ENETDOWN"],
    ),
    transport(
        Tls,
        "tls",
        &[
            "CERT_HAS_EXPIRED",
            "CERT_NOT_YET_VALID",
            "DEPTH_ZERO_SELF_SIGNED_CERT",
            "SELF_SIGNED_CERT_IN_CHAIN",
            "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
            "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
            "ERR_TLS_CERT_ALTNAME_INVALID",
            "ERR_SSL_WRONG_VERSION_NUMBER",
            "CERTIFICATE_VERIFY_FAILED",
            "EPROTO",
            "SSLCertVerificationError",
            "ClientConnectorCertificateError",
            "ClientConnectorSSLError",
        ],
    ),
    transport(
        ConnectionReset,
        "connection_reset",
        &[
            "ECONNRESET",
            "EPIPE",
            "ECONNABORTED",
            "ENETRESET",
            "UND_ERR_SOCKET",
            "UND_ERR_CLOSED",
            "UND_ERR_DESTROYED",
            "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
            "ERR_STREAM_PREMATURE_CLOSE",
            "ServerDisconnectedError",
            "RemoteProtocolError",
            "RemoteDisconnected",
            "ChunkedEncodingError",
            "ClientPayloadError",
            "ClientConnectionResetError",
            "IncompleteRead",
            // hyper's kind for a connection closed before the message completed.
            "IncompleteMessage",
            // Python's ssl: the peer closed the connection during the handshake; no
            // certificate failed (Node says "socket disconnected before secure TLS connection
            // was established", with ECONNRESET).
            "SSLEOFError",
        ],
    ),
    transport(
        Timeout,
        "timeout",
        &[
            "ETIMEDOUT",
            "ESOCKETTIMEDOUT",
            "UND_ERR_CONNECT_TIMEOUT",
            "UND_ERR_HEADERS_TIMEOUT",
            "UND_ERR_BODY_TIMEOUT",
            // undici and fetch report an AbortSignal.timeout() as an abort.
            "UND_ERR_ABORTED",
            "ABORT_ERR",
            "DEADLINE_EXCEEDED",
            "ModelTimeoutException",
            "RequestTimeOut",
            "ReadTimeout",
            "ConnectTimeout",
            "WriteTimeout",
            "PoolTimeout",
            "ReadTimeoutError",
            "ConnectTimeoutError",
            "APITimeoutError",
            "ServerTimeoutError",
            "TimeoutError",
            "ERR_SOCKET_CONNECTION_TIMEOUT",
        ],
    ),
    // Gemini's finish reason for a response it could not finish producing; Bedrock's error
    // event inside a stream.
    transport(
        StreamInterrupted,
        "stream_interrupted",
        &["MALFORMED_RESPONSE", "ModelStreamErrorException"],
    ),
    // ── Tier 2: provider codes that name one failure. ─────────────────────────────────────
    codes(
        ContextOverflow,
        "context_overflow",
        &[
            "context_length_exceeded",
            "context_window_exceeded",
            "model_context_window_exceeded",
            "exceed_context_size_error",
            "string_above_max_length",
            "request_too_large",
            "prompt_too_long",
            // LiteLLM's exception class for every provider's overflow.
            "ContextWindowExceededError",
        ],
    ),
    codes(
        ContentFilter,
        "content_filter",
        &[
            "content_filter",
            "content_policy_violation",
            "responsible_ai_policy_violation",
            "data_inspection_failed",
            "DataInspectionFailed",
            "PROHIBITED_CONTENT",
            "SAFETY",
            "sensitive_words_detected",
            "SensitiveContentDetected",
            "InputTextSensitiveContentDetected",
            "OutputTextSensitiveContentDetected",
        ],
    ),
    codes(
        AuthPermanent,
        "revoked",
        &[
            "API_KEY_REVOKED",
            "account_deactivated",
            "deactivated_workspace",
            "organization_deactivated",
        ],
    ),
    // Alibaba DashScope's OpenAI-compatible mode reports its allocation throttle
    // (Throttling.AllocationQuota) as insufficient_quota: for Qwen it is a rate limit.
    for_providers(
        &["qwen", "dashscope"],
        codes(RateLimit, "dashscope_quota", &["insufficient_quota"]),
    ),
    codes(
        Billing,
        "billing",
        &[
            "insufficient_quota",
            "billing_hard_limit_reached",
            "insufficient_balance",
            "insufficient_user_quota",
            "GoUsageLimitError",
            "Arrearage",
            "AccountOverdueError",
            "exceeded_current_quota_error",
            "payment_required",
        ],
    ),
    codes(
        RateLimit,
        "rate_limit",
        &[
            "rate_limit_error",
            "rate_limit_exceeded",
            "rate_limit_reached_error",
            "rpm_rate_limit_exceeded",
            "tpm_rate_limit_exceeded",
            "too_many_requests",
            "too_many_requests_error",
            "queue_exceeded",
            "ResourceExhausted",
            "ThrottlingException",
            "Throttling",
            "TooManyRequestsException",
            "ServiceQuotaExceededException",
            "RateLimitExceeded",
            "ModelAccountRpmRateLimitExceeded",
            "ModelAccountTpmRateLimitExceeded",
            "RateLimitError",
            "quota_exceeded",
            "QuotaExceeded",
            "model_cooldown",
        ],
    ),
    codes(
        Overloaded,
        "overloaded",
        &[
            "overloaded_error",
            "engine_overloaded",
            "engine_overloaded_error",
            "ServerOverloaded",
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "ModelNotReadyException",
            "unavailable_error",
        ],
    ),
    codes(
        Auth,
        "auth",
        &[
            "AccessDeniedException",
            "UnrecognizedClientException",
            "ExpiredTokenException",
            "InvalidSignatureException",
        ],
    ),
    // Credentials that a client library could not find (botocore, the AWS SDK for JS).
    codes(
        Auth,
        "missing_credentials",
        &[
            "NoCredentialsError",
            "ProfileNotFound",
            "CredentialsProviderError",
        ],
    ),
    codes(
        ModelNotFound,
        "model_not_found",
        &[
            "model_not_found",
            "model_is_deactivated",
            "model_decommissioned",
            "model_not_supported",
            "DeploymentNotFound",
            "ResourceNotFoundException",
            "ModelNotFound",
            "InvalidEndpointOrModel",
            "resource_not_found_error",
        ],
    ),
    in_stream(codes(
        ServerError,
        "server_error",
        &["InternalServerException", "ModelErrorException"],
    )),
    // vLLM's engine died: the server is up, its model is not.
    codes(
        ServerError,
        "engine_dead",
        &["AsyncEngineDeadError", "EngineDeadError"],
    ),
    // ── Tier 3: wordings. ───────────────────────────────────────────────────────────────
    // Go's "net/http: TLS handshake timeout" is slowness, not a certificate: before `tls`.
    words(
        Timeout,
        "handshake_timeout",
        &[r"handshake (timeout|timed out)"],
    ),
    words(
        ConnectionRefused,
        "connection_refused",
        &[
            r"connection refused|actively refused|connect call failed",
            r"couldn'?t connect to server|all connection attempts failed|could not connect to (\w+ app|ollama)|failed to connect to ollama",
        ],
    ),
    words(
        Dns,
        "dns",
        &[
            r"\bdns (error|lookup|resolution)|name resolution (failed|failure|error)|failed to lookup address|name or service not known|nodename nor servname",
            r"no such host|getaddrinfo|could not resolve (host|proxy)|temporary failure in name resolution|name does not resolve",
            r"\blookup (?u:\S)+( on (?u:\S)+)?: (i/o timeout|server misbehaving)|unknownhostexception|resolving timed out",
        ],
    ),
    words(
        Unreachable,
        "unreachable",
        &[
            r"network (is )?unreachable|no route to host|host is down|network is down|host (is )?unreachable",
        ],
    ),
    words(
        Tls,
        "tls",
        &[
            r"\b(tls|ssl) (handshake|alert|error)|invalid peer certificate|certificate (verify|verification|has expired|is not valid|unknown)",
            r"unknown issuer|self[- ]signed certificate|received corrupt message|handshake failure|wrong version number",
            r"\bx509: |ssl certificate problem|unable to (get local issuer|verify the first) certificate|\bssl_error_\w+|\berr_ssl_\w+",
            r"does not match certificate's altnames|no alternative certificate subject name|\b(sslv3|tlsv1(\.\d)?) alert|fatal alert|handshakefailure",
            r"issued by an authority that is not trusted|untrusted (certificate|root|authority)",
        ],
    ),
    // Every wording we know, before rate limits ("tokens") and server errors (llama.cpp says
    // "context size has been exceeded" under a 500).
    words(
        ContextOverflow,
        "context_overflow",
        &[
            r"(maximum|max) context (length|window)|context (length|window|limit|size) (exceeded|is exceeded|has been exceeded|overflow)",
            r"exceed(s|ed)? (the |your |its )?(model'?s? )?(maximum |max |available )?context (length|window|size|limit)",
            r"prompt (is )?too (long|large)|input is too long|too many input tokens|context overflow|context the overflows",
            r"out of room in the model'?s context window|exceeded model token limit|loaded with context length of only",
            r"exceeds the maximum number of (input )?tokens|configured context size|available context size",
            r"tokens \+ `?max_new_tokens`? must be|must have less than \d+ tokens|reduce the length of the messages|cannot exceed \d+ tokens",
            r"(input|prompt) (length|token count|tokens)( \(?\d+\)?)?( tokens?)? (exceeds?|is greater than|is larger than) (the )?(model|maximum|max|limit|context)",
            r"total (number of )?tokens( in the prompt)?( \(?\d+\)?)? (cannot exceed|exceeds?)|too large for model with \d+ maximum context length",
            r"range of input length should be|input (token )?length (is )?too long|input tokens exceed|(maximum|max) prompt length",
            r"model only supports up to \d+|size limit exceeded by \d+ tokens|longer than the maximum model length|\bmax_model_len\b",
            r"(prompt|input)( \(\d+ tokens?\))? is too long|larger than the max(imum)? context size|greater than the context length",
            r"\b(message|conversation|input|prompt|text|content|query)s?( you submitted)? (is|was|are|were) too long|context (window|length|size) is (only )?\d+",
            r"(longer|larger|bigger) than (the )?(model'?s? )?(maximum |max |available )?context (length|window|size|limit)|reduce the (size|length) of (your|the) (prompt|input|messages?)",
            r"too many (input |prompt )?tokens (in|for) (the|your) (prompt|input|messages|request)",
            r"上下文(过长|长度超|超出|超过|超限|窗口)|超(出|过)(?u:[^，。]){0,20}上下文|(prompt|输入|文本|请求)(内容)? ?(过长|超长)|(超出|超过)(?u:[^，。]){0,8}(最大)?长度",
            r"(输入|提示词?|prompt|文本|请求|消息)的?(长度|token ?数|tokens?|字数)(已)?(超过|超出|超限|过长|大于)",
        ],
    ),
    words(
        ContentFilter,
        "content_filter",
        &[
            r"content (management |filtering )?policy|content filter|safety system|flagged by (our|the) (moderation|content|safety)",
            r"blocked (due to|by|for) (our |the )?(safety|content|policy|moderation)|responsible ai|content exists risk|considered high risk",
            r"content moderation|moderation (system|filter)|\bpolicy violation|safety filter|\b(content|response|output|completion) (was |has been )?(filtered|censored)",
            r"(unsafe|sensitive|harmful|inappropriate) content|\bnew_sensitive\b|\bflagged for\b|requires moderation|blocked output",
            r"violation of (our|the) (usage|content|acceptable use)|usage guidelines|flagged as (potentially )?violating|usage polic(y|ies)",
            r"内容(违规|不合规|安全)|敏感(内容|词|信息)|不安全",
        ],
    ),
    // A limit that resets soon, stated in words, even on a 402; a workspace's "spend limit"
    // (see the module docs).
    words(
        RateLimit,
        "rate_limit",
        &[
            r"\brate[ _-]?limit|too many (requests|concurrent|tokens)|throttl(ed|ing)|\brate exceeded",
            r"(spend limit (reached|exceeded|hit))|((reached|hit|exceeded) (your |the |its )?(\w+ )?spend limit)",
            r"reached (the |your |its )?(organi[sz]ation|org)('s)? usage limit|limit will reset",
        ],
    ),
    words(
        Billing,
        "billing",
        &[
            r"payment required|credit balance (is )?too low|insufficient (\w+ )?(credits?|balance|funds)|out of (\w+ )?credits",
            r"(used|use) (up |all )?(your |all |of your )?(available )?(credits|points)|requires? more credits|add (more )?credits",
            r"top up|purchase (a subscription|credits|more)|upgrade your plan|(billing|payment) (hard )?limit",
            r"spending limit|out of extra usage|no (available )?balance|usage is unavailable for this account",
            r"subscription plan does not (yet )?include|balance (is )?(insufficient|exhausted|depleted|too low)",
            r"\bin arrears|overdue (balance|payment)|(exceeded|reached) (its |your |the )?(\w+ )?budget|budget (has been )?(exceeded|reached|exhausted)",
            r"\btotal (request|usage) limit|free trial (quota |credits? )?(has |have )?(expired|ended|been exhausted|exhausted)",
            r"(plan|package|subscription) (has )?(expired|ended|lapsed)|no active subscription|outstanding invoice|invoice is overdue|unpaid (invoice|balance|bill)",
            r"billing (account )?(is )?(not active|inactive|disabled|not enabled)|enable billing|billing (has not been|to be) enabled|requires? a paid (plan|tier|subscription)|paid plan (is )?required",
            r"credits? (are |is |have been |has been )?(depleted|exhausted|used up)|out of (\w+ ){0,2}(balance|funds)",
            r"\bno (\w+ )?(credits?|balance|funds) (left|remaining|available)|payment (is )?required|card (was )?declined",
            r"payment method|payment (failed|declined)|credit limit (exceeded|reached)",
            r"余额不足|欠费|(资源包|套餐)(已)?(用完|耗尽|过期|到期)",
        ],
    ),
    // After billing: an account suspended for an overdue invoice is billing.
    words(
        AuthPermanent,
        "revoked",
        &[
            r"\b(api[ _-]?key|key|token|account|organi[sz]ation|org|workspace|user|credential)s?\b(?u:[^.])*\b(has been|have been|was|were|is|are|got) (permanently )?(revoked|deactivated|disabled|suspended|banned|terminated|locked)",
            r"\b(api[ _-]?key|key|token|account|organi[sz]ation|workspace)s? (revoked|deactivated|disabled|suspended|banned|terminated)\b",
            r"\b(revoked|deactivated|disabled|suspended|banned) (api[ _-]?)?(key|token|account|organi[sz]ation|workspace)\b",
            r"not allowed for this organi[sz]ation",
            r"(账户|账号|帐户|帐号|密钥|令牌)(已|已经)?被?(锁定|封禁|冻结|禁用|吊销|注销)",
        ],
    ),
    // Quotas and usage windows that reset on their own (see the module docs).
    words(
        RateLimit,
        "quota",
        &[
            r"quota\b(?u:[^.]){0,30}\b(exceeded|reached|exhausted|used up|depleted)|exceeded (your |the )?(\w+ )?quota|resources? (has been |have been )?exhausted",
            r"used (up )?all (of )?(your|the) (\w+ )?(requests|messages|tokens|quota)|\b\d+ (requests|messages|calls|prompts) (every|per|each) (\d+ )?(second|minute|hour|day|week|month)s?",
            r"(usage|request|token) limit (reached|exhausted|exceeded|hit)|usage limit|concurrency limit|cooling down|cooldown",
            r"(requests|tokens) per (min|minute|second|day|hour)|\b(rpm|tpm|rpd|tpd)\b",
            r"\b(daily|weekly|monthly|hourly|\d+[- ]?hours?) ((usage|request|token|message|api|call|free|plan)s? )?(limit|quota|cap|allowance)s?\b",
            r"\bresets? (tomorrow|at \d|in \d|on )|(try again|come back|available again) tomorrow",
            r"\bhigh (concurrency|frequency)\b|reduce (the )?(concurrency|frequency)|max concurrency",
            r"\b(sending|making|send|make) (requests|calls) too (quickly|fast|frequently|often)|requests? (are |were )?too (frequent|fast)",
            r"\bper[- ](second|minute|hour|day|month) (\w+ )?(limit|quota|cap)",
            r"请求过于频繁|频率(超限|过高|过快)|调用频率|请求频率|限流|限速|配额|额度|并发(数)?(过高|超限|超过|过大)|(今日|每日|当日)(调用)?(次数|额度|限额)",
            r"次数(已达|超过|超出|超限|已用完)|已达(到)?(?u:[^，。]){0,6}上限|(调用|请求)(次数)?上限",
        ],
    ),
    // "服务繁忙" ("service busy") is an overload; the replaced system's suite calls it a
    // timeout. "Temporarily unable to *process* your request" (Azure's 500
    // InternalServerError) says nothing of capacity and stays a server error; unable to
    // *handle* or *serve* it does.
    words(
        Overloaded,
        "overloaded",
        &[
            r"overload|at (full |maximum )?capacity|over capacity|\bsaturated\b|high demand|service (is )?(temporarily )?unavailable|service_unavailable",
            r"servers? (is|are) (currently )?busy|temporarily unable to (handle|service)|no (available )?capacity|capacity (constraints|issues|exceeded)|capacity (is )?(temporarily )?(exhausted|reached|unavailable)",
            r"model is (currently )?loading|\b(under|experiencing) (an? )?(unusually |very |extremely )?(high|heavy|large|extreme)( volume of| amount of)? (load|traffic|demand|requests|usage)",
            r"\bhigh (load|traffic)\b|\b(server|service|model|engine|system|upstream|cluster|worker|backend|gpu|node)s? (is |are )?(all )?(currently |temporarily )?(too |very )?busy|\btoo busy",
            r"\ball (\w+ )?(workers|servers|instances|gpus|replicas) are (busy|occupied|in use)",
            r"currently unable to (handle|process|serve)|too many (people|users) (are )?(using|accessing)|insufficient capacity|(under|down for) maintenance|no instances available|^\s*loading model\s*$|is currently loading",
            r"繁忙|(负载|负荷|压力)(较|过|太|很|偏)(高|大|重)|负载(已满|已饱和|饱和)|过载|访问(量|人数)(过大|过多)|算力不足|资源紧张|暂时无法提供服务|服务(暂时)?不可用|服务暂不可用",
        ],
    ),
    words(
        Auth,
        "auth",
        &[
            r"invalid[ _-]?(x-)?(api[ _-]?)?key|incorrect api key|api key (is )?(not valid|invalid|missing|not found)|no api key|missing api key",
            r"could not authenticate|authentication (failed|fails|error|required)|unauthori[sz]ed|not authorized",
            r"(invalid|bad|incorrect|wrong|missing) ([\w-]+ ){0,3}credentials|insufficient permissions|permission denied|access denied",
            r"missing scopes?|token refresh failed|re-?authenticate|not logged in|please run /login|no permission",
            r"(invalid|expired) (access |bearer |oauth |auth |authentication |api )?token|token (is )?(invalid|expired)|extract \w+ from token",
            r"\b(api[ _-]?key|key|token) (has )?expired|invalid authentication|missing (authorization|authentication|auth) (header|token)",
            r"\bunauthenticated\b|(do not|don't) have access to (this|the) (resource|api|endpoint|operation|feature)|lacks? (the )?(required )?(scopes?|permissions?)",
            r"(do not|don't) have permission|token included in the request is (invalid|expired)|signature we calculated does not match",
            r"认证失败|鉴权失败|身份验证失败|未授权|无效的?(令牌|密钥)|(令牌|密钥|api ?key)(已)?(过期|无效|错误)|无权(访问|限)|没有权限|权限不足",
        ],
    ),
    // Credentials a client looked for and did not find: a profile without a key, an unset
    // environment variable. The key may exist elsewhere: `auth`, not `auth_permanent`.
    words(
        Auth,
        "missing_credentials",
        &[
            r"\bno (api[ _-]?keys?|credentials?|auth(entication)? (token|method)|access token)s? (found|configured|provided|set|available)",
            r"\b(credentials?|api[ _-]?key) (not found|missing|not configured|not set|not provided) for",
            r"unable to locate credentials|could not (load|find|resolve) (the )?(default )?credentials|could not resolve authentication method",
            r"\bprofile (?u:\S)+ (could not be found|not found)|_api_key\b(?u:[^.]){0,20}(is )?(missing|not set|empty)|environment variable is (missing|not set|empty)",
            r"failed to retrieve a token|credential authentication unavailable|(didn't|did not) provide an api key|did not find (?u:\S)*api[_ ]?key",
            r"(default )?credentials were not found",
        ],
    ),
    // A model that does not exist, before "not supported": Gemini says a missing model "is not
    // found for API version v1beta, or is not supported for generateContent".
    words(
        ModelNotFound,
        "model_not_found",
        &[
            r"model[ _]not[ _]found|\bmodel:? (?u:[^\s,;])+ (not found|does not exist)|(unknown|invalid|unsupported) model",
            r"no such model|no endpoints found (for|matching)|model (?u:[^\s,;])+ (has been|was|is) (deprecated|retired|decommissioned)",
            r"does not exist or you do not have access|\b(not found|unavailable|not available|does not exist) (for|in|on) (the |this )?api[ -]?version|model not exist|\bmodel (?u:[^\s,;])+ (was|is) not found",
            r"has been decommissioned|api deployment for this resource does not exist|no models? (are )?loaded|model (?u:[^\s,;])+ could not be found",
            r"model identifier is invalid|invalid model identifier|not a valid model|\bmodel (does not|doesn't) exist",
            r"\bmodel ((?u:[^\s,;])+ )?(has been|was|is) (deprecated|retired|decommissioned|discontinued|removed|sunset)",
            r"\bmodel( you requested| requested)? (could not|cannot|can't) be found|(could not|cannot) find (the )?model|\bmodel\b(?u:[^.]){0,30}\b(deprecated|no longer (supported|available|served))\b",
            r"模型不存在|模型(?u:[^，。]){0,20}不存在",
        ],
    ),
    // "No endpoints found that support image input" is a request the route cannot serve,
    // not a missing model.
    words(
        Format,
        "unsupported_input",
        &[r"no endpoints found that support|does not support|not supported"],
    ),
    words(
        Format,
        "invalid_request",
        &[
            r"invalid (request|input|parameter|argument|value|json|schema|format)|malformed (request|json|input|body)|request malformed|bad request|missing required|is required",
            r"parameter error|thinking blocks? cannot be modified|signature`? in `?thinking|exceed the maximum allowed size",
            r"参数错误|参数非法|参数无效",
        ],
    ),
    words(
        Timeout,
        "timeout",
        &[
            r"\btimed? ?out\b|timeout\b|deadline exceeded|took (too long|longer than)|operation was aborted|reason: abort\b|finish_reason: abort\b|超时",
        ],
    ),
    words(
        StreamInterrupted,
        "stream_interrupted",
        &[
            r"ended (before|without) (a |the |any )?(message_?stop|messagestop|terminal|final|finish_reason|\[done\]|next event|sending any chunks)",
            r"stream (was )?(closed|aborted|interrupted|terminated|cut)|stream_read_error|malformed_response|^\s*terminated\s*$",
            r"stream (ended|disconnected) (unexpectedly|prematurely|early)|stream ended without|\bstream error\b|stream \d+ was not closed cleanly",
        ],
    ),
    // The connection ended before the response did, including a body cut short after the
    // status line: the typed path says the same of an `UnexpectedEof` under a body error.
    words(
        ConnectionReset,
        "connection_reset",
        &[
            r"connection (was )?(reset|closed|aborted|lost|error|broken)|reset by peer|broken pipe|socket hang ?up|other side closed",
            r"unexpected eof|closed before (the )?(message|response)|network[ _]error|websocket closed unexpectedly",
            r"incomplete (chunked|message|response|read)|premature (close|end)|server disconnected|remote end closed connection",
            r"peer closed connection|closed connection without|error (reading|writing) a body (from|to) connection|end of file before message length reached",
            r"payload is not completed|transfer closed with|empty reply from server|\b(recv|send) failure|failure when receiving data",
            r"socket disconnected|forcibly closed|closed idle connection|\bgoaway\b|(^|: )eof\s*$|eof occurred in violation of protocol|write to closing transport",
            r"\b(remote|peer|server|host)( host)? (unexpectedly )?closed the connection|\bsocket (is |was )?closed\b",
            r"网络(错误|异常)|连接(中断|断开|重置)",
        ],
    ),
    in_stream(words(
        ServerError,
        "server_error",
        &[
            r"internal (server )?error|server error|server had an error|bad gateway",
            r"error occurred while processing your request",
            r"服务(器)?(内部)?错误|内部错误",
        ],
    )),
    // "Request failed" / "fetch failed" with no status means no response arrived at all
    // (after server errors: "Request failed during generation: Server error" is one).
    words(
        ConnectionReset,
        "no_response",
        &[r"\brequest failed\b|\bfetch failed\b"],
    ),
    // A finish reason of "error" is the stream's own terminal event: not an interruption.
    words(
        ServerError,
        "finish_error",
        &[r"(finish|stop)[ _]reason: error\b"],
    ),
    words(
        EmptyResponse,
        "empty_response",
        &[r"empty (response|completion|choices|content)|returned no (choices|content|output)"],
    ),
    // "400 status code (no body)": a status with an empty body says nothing about the
    // request, so it must not stop failover as `format` would. Gateways answer bare 400s and
    // 422s for their own faults.
    words(
        Reason::Unknown,
        "no_body",
        &[r"\(no body\)|no response body|empty body"],
    ),
    // Messages that say nothing ("An unknown error occurred") match no rule and are
    // `unknown`, which fails over while targets remain; the replaced system's suite calls that
    // one a timeout.
    // ── Tier 4: codes that name only a class; every code and wording above is more specific.
    class(Cancelled, "cancelled", &["CANCELLED"]),
    // Google's gRPC status for every quota, rate or credit exhaustion: "Your prepayment
    // credits are depleted" comes as RESOURCE_EXHAUSTED too.
    class(RateLimit, "resource_exhausted", &["RESOURCE_EXHAUSTED"]),
    class(Overloaded, "unavailable", &["UNAVAILABLE"]),
    in_stream(class(
        ServerError,
        "server_error_class",
        &[
            "server_error",
            "api_error",
            "INTERNAL",
            "InternalError",
            "InternalServiceError",
            "InternalServerError",
        ],
    )),
    // Every refused key gets these, a revoked one included: "This API key has been disabled"
    // under `authentication_error` is `auth_permanent`, which the wording says.
    class(
        Auth,
        "auth_class",
        &[
            "invalid_api_key",
            "InvalidApiKey",
            "authentication_error",
            "invalid_authentication",
            "invalid_authentication_error",
            "UNAUTHENTICATED",
            "AuthenticationError",
        ],
    ),
    class(
        Auth,
        "permission",
        &[
            "permission_error",
            "permission_denied_error",
            "PERMISSION_DENIED",
            "PermissionDeniedError",
            "AccessDenied",
        ],
    ),
    class(
        ModelNotFound,
        "not_found",
        &["not_found_error", "NOT_FOUND", "NotFoundError"],
    ),
    class(
        Format,
        "invalid_request_class",
        &[
            "invalid_request_error",
            "INVALID_ARGUMENT",
            "FAILED_PRECONDITION",
            "BadRequestError",
            "ValidationException",
            "InvalidParameter",
            "UnprocessableEntityError",
        ],
    ),
    // SDK and client wrappers around a failed connection: what they wrap says more.
    class(
        ConnectionReset,
        "connection_error_class",
        &[
            "APIConnectionError",
            "ConnectError",
            "ClientConnectorError",
            "ClientOSError",
        ],
    ),
    // Numeric codes, read only from structured fields and only for their provider.
    // Zhipu / z.ai (docs.z.ai/api-reference/api-code).
    for_providers(
        ZHIPU,
        class(
            Auth,
            "zhipu_auth",
            &["1000", "1001", "1002", "1003", "1004", "1111", "1220"],
        ),
    ),
    for_providers(
        ZHIPU,
        class(AuthPermanent, "zhipu_locked", &["1112", "1121"]),
    ),
    for_providers(ZHIPU, class(Billing, "zhipu_billing", &["1113", "1309"])),
    for_providers(
        ZHIPU,
        class(ModelNotFound, "zhipu_model", &["1211", "1221", "1222"]),
    ),
    for_providers(
        ZHIPU,
        class(Format, "zhipu_request", &["1210", "1213", "1214", "1215"]),
    ),
    for_providers(ZHIPU, class(ContextOverflow, "zhipu_context", &["1261"])),
    for_providers(ZHIPU, class(ContentFilter, "zhipu_content", &["1301"])),
    for_providers(
        ZHIPU,
        class(
            RateLimit,
            "zhipu_rate",
            &["1302", "1303", "1304", "1308", "1310"],
        ),
    ),
    for_providers(ZHIPU, class(Overloaded, "zhipu_overloaded", &["1305"])),
    for_providers(ZHIPU, class(ConnectionReset, "zhipu_network", &["1234"])),
    // MiniMax `base_resp.status_code` (platform.minimax.io, error codes).
    for_providers(MINIMAX, class(Timeout, "minimax_timeout", &["1001"])),
    for_providers(
        MINIMAX,
        class(
            RateLimit,
            "minimax_rate",
            &["1002", "1039", "1041", "2045", "2056"],
        ),
    ),
    for_providers(MINIMAX, class(Auth, "minimax_auth", &["1004", "2049"])),
    for_providers(MINIMAX, class(Billing, "minimax_billing", &["1008"])),
    for_providers(
        MINIMAX,
        in_stream(class(ServerError, "minimax_server", &["1024", "1033"])),
    ),
    for_providers(
        MINIMAX,
        class(ContentFilter, "minimax_content", &["1026", "1027"]),
    ),
    for_providers(MINIMAX, class(Format, "minimax_request", &["2013"])),
    // Baidu Qianfan `error_code` (its API error code reference).
    for_providers(BAIDU, class(Overloaded, "baidu_unavailable", &["2"])),
    for_providers(
        BAIDU,
        class(
            RateLimit,
            "baidu_rate",
            &["4", "17", "18", "336501", "336502"],
        ),
    ),
    for_providers(BAIDU, class(Billing, "baidu_total", &["19"])),
    for_providers(
        BAIDU,
        class(Auth, "baidu_auth", &["6", "13", "14", "110", "111"]),
    ),
    for_providers(
        BAIDU,
        in_stream(class(ServerError, "baidu_server", &["336000"])),
    ),
    for_providers(
        BAIDU,
        class(Format, "baidu_request", &["336001", "336002", "336003"]),
    ),
];

/// May `rule` decide a failure whose status stands for `base` (none without a status)?
///
/// Its reason must [`refine`](refines) the status's. A class code of the request's fault
/// (`invalid_request_error`, `INVALID_ARGUMENT`) moves no status but a 2xx: OpenAI-compatible
/// servers put `invalid_request_error` on every 4xx, a 404 for a missing model included.
pub(crate) fn may_decide(rule: &Rule, base: Option<Reason>) -> bool {
    let Some(base) = base else {
        return true;
    };
    let class_fault = rule.tier == Tier::Class && rule.reason == Format;
    refines(base, rule.reason) && (!class_fault || matches!(base, Format | EmptyResponse))
}

/// Overlaps of two families of different reasons in the same tier, each with the order the
/// table gives them and why: `(winner, loser, why)`. Across tiers the tier decides. The
/// classifier's tests fail when a corpus case matches two such families and the pair is not
/// here, or when the table orders a pair against this list.
#[cfg(test)]
pub(crate) static PRECEDENCE: &[(&str, &str, &str)] = &[
    // Transport wordings.
    (
        "handshake_timeout",
        "tls",
        "Go's \"net/http: TLS handshake timeout\" is a slow network: no certificate failed",
    ),
    (
        "tls",
        "timeout",
        "a TLS alert or certificate error is the more precise fact; a handshake that only timed out is decided above both",
    ),
    (
        "dns",
        "timeout",
        "Go's \"dial tcp: lookup HOST: i/o timeout\" is the resolver timing out: a DNS failure",
    ),
    (
        "connection_refused",
        "connection_reset",
        "an SDK's \"Connection error.\" around \"Connection refused\": the cause it wraps is the fact",
    ),
    (
        "server_error",
        "no_response",
        "\"Request failed during generation: Server error\" (TGI) had an answer: the server failed",
    ),
    // Provider wordings.
    (
        "context_overflow",
        "rate_limit",
        "\"too many tokens: total number of tokens in the prompt cannot exceed N\" (Cohere): no wait makes the prompt fit",
    ),
    (
        "context_overflow",
        "invalid_request",
        "\"Invalid request: Your request exceeded model token limit\" (Moonshot) is the window, not a malformed request",
    ),
    (
        "context_overflow",
        "quota",
        "\"token limit exceeded: reduce the size of your prompt\": a prompt that must shrink does not fit however long one waits",
    ),
    (
        "billing",
        "invalid_request",
        "\"Payment is required to continue\": what is missing is money, not a field of the request",
    ),
    (
        "billing",
        "quota",
        "money beats a window: \"402 Payment Required: Weekly/Monthly Limit Exhausted\" (see the module docs)",
    ),
    (
        "billing",
        "revoked",
        "an account suspended for an overdue invoice comes back with a payment",
    ),
    (
        "model_not_found",
        "unsupported_input",
        "Gemini: a missing model \"is not found for API version v1beta, or is not supported for generateContent\"",
    ),
    // Codes.
    (
        "dashscope_quota",
        "billing",
        "DashScope's compatible mode calls its allocation throttle (Throttling.AllocationQuota) insufficient_quota",
    ),
    (
        "server_error_class",
        "invalid_request_class",
        "DashScope's \"InternalError.Algo.InvalidParameter\": the server names its own failure first; a wording above both decides",
    ),
];

/// The regex that finds a rule's evidence in text, for the one [`regex::RegexSet`]; `None`
/// for a row of numeric codes, which are read from structured fields only.
///
/// Codes are matched as whole words. A code with `_` or `.` in it cannot be prose, so it is
/// matched in any case; a plain word (`INTERNAL`, `UNAVAILABLE`) only as written, so prose
/// ("internal") does not trigger it.
pub(crate) fn text_pattern(rule: &Rule) -> Option<String> {
    match rule.matcher {
        Matcher::Codes(codes) => {
            let words: Vec<String> = codes
                .iter()
                .filter(|c| !is_numeric(c))
                .map(|c| {
                    if c.contains(['_', '.']) {
                        format!("(?i:{})", regex::escape(c))
                    } else {
                        regex::escape(c)
                    }
                })
                .collect();
            (!words.is_empty()).then(|| format!(r"\b(?:{})\b", words.join("|")))
        }
        Matcher::Words(words) => Some(format!("(?i)(?:{})", words.join("|"))),
    }
}

/// A code of digits only: a provider's number, never looked for in text.
pub(crate) fn is_numeric(code: &str) -> bool {
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles_and_codes_are_unique_per_provider() {
        for rule in RULES {
            if let Some(p) = text_pattern(rule) {
                assert!(
                    regex::RegexBuilder::new(&p).unicode(false).build().is_ok(),
                    "{} does not compile: {p}",
                    rule.family
                );
            }
        }
        let mut codes: Vec<_> = RULES
            .iter()
            .flat_map(|r| {
                let list: &[&str] = match r.matcher {
                    Matcher::Codes(c) => c,
                    Matcher::Words(_) => &[],
                };
                list.iter().map(|c| (c.to_ascii_lowercase(), r.providers))
            })
            .collect();
        let n = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n, "a code appears twice for the same provider");
    }

    #[test]
    fn the_table_is_sorted_by_tier_and_a_family_has_one_reason() {
        for pair in RULES.windows(2) {
            assert!(
                pair[0].tier <= pair[1].tier,
                "{} ({:?}) is above {} ({:?})",
                pair[0].family,
                pair[0].tier,
                pair[1].family,
                pair[1].tier
            );
        }
        for a in RULES {
            for b in RULES {
                if a.family == b.family {
                    assert_eq!(a.reason, b.reason, "family {} has two reasons", a.family);
                }
            }
        }
        // Numeric codes are provider-scoped: a number means nothing across providers.
        for r in RULES {
            if let Matcher::Codes(list) = r.matcher
                && list.iter().any(|c| is_numeric(c))
            {
                assert!(
                    !r.providers.is_empty(),
                    "{} has numbers for everyone",
                    r.family
                );
            }
        }
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
