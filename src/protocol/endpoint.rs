//! One provider's address and key, and the HTTP client every protocol's calls go through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::Api;
use super::openai_chat::Prefill;
use crate::Reason;
use crate::chain::AttemptFailure;
use crate::classify::Classifier;

/// The `anthropic-version` sent to Anthropic Messages providers unless the client sends one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// One provider: its name, base URL, the [`Api`] it speaks, its key and what it supports.
///
/// ```
/// use llm_failover::protocol::{Api, Endpoint};
///
/// let claude = Endpoint::new("anthropic", "https://api.anthropic.com/v1")
///     .api(Api::AnthropicMessages)
///     .api_key("sk-ant-example");
/// assert_eq!(claude.provider(), "anthropic");
/// // The key never shows.
/// assert!(!format!("{claude:?}").contains("sk-ant-example"));
/// ```
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) provider: Arc<str>,
    pub(crate) base_url: String,
    api: Api,
    /// The key as given, marked sensitive; each protocol sends it its own way.
    api_key: Option<HeaderValue>,
    /// A key sent as a query parameter (name, key), for providers that take it in the URL.
    query_key: Option<(String, String)>,
    prefill: Prefill,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("base_url", &redacted_url(&self.base_url))
            .field("api", &self.api)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("prefill", &self.prefill)
            .field(
                "query_key",
                &self
                    .query_key
                    .as_ref()
                    .map(|(name, _)| format!("{name}=<redacted>")),
            )
            .finish()
    }
}

impl Endpoint {
    /// An endpoint for `provider` (the name used in routes and metrics) at `base_url`, the
    /// URL the protocol's path is appended to (`/chat/completions`, `/messages`; e.g.
    /// `https://api.openai.com/v1`, `https://api.anthropic.com/v1`). It speaks
    /// [`Api::OpenAiChat`] until [`api`](Self::api) says otherwise; its prefill support is
    /// what [`Prefill::for_base_url`] knows of the host.
    #[must_use]
    pub fn new(provider: &str, base_url: &str) -> Self {
        Self {
            provider: provider.into(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            api: Api::OpenAiChat,
            api_key: None,
            query_key: None,
            prefill: Prefill::for_base_url(base_url),
        }
    }

    /// The API the provider speaks. An Anthropic Messages provider continues an assistant
    /// prefill (its documented behaviour), so this also sets [`Prefill::Assistant`] for it;
    /// call [`prefill`](Self::prefill) afterwards to say otherwise.
    #[must_use]
    pub fn api(mut self, api: Api) -> Self {
        self.api = api;
        if api == Api::AnthropicMessages {
            self.prefill = Prefill::Assistant;
        }
        self
    }

    /// The API the provider speaks (see [`api`](Self::api)).
    #[must_use]
    pub fn api_kind(&self) -> Api {
        self.api
    }

    /// Whether and how the provider continues an assistant prefill, for stream resume.
    /// Default: [`Prefill::for_base_url`].
    #[must_use]
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }

    /// The provider's prefill support (see [`prefill`](Self::prefill)).
    #[must_use]
    pub fn prefill_mode(&self) -> Prefill {
        self.prefill
    }

    /// The API key: sent as `Authorization: Bearer …` to OpenAI providers (chat completions
    /// and Responses) and as `x-api-key` to Anthropic ones, marked sensitive, so it is never
    /// printed by `Debug` of this endpoint or of the request. Default: none. A key that is not a valid header value
    /// is ignored.
    #[must_use]
    pub fn api_key(mut self, key: impl AsRef<str>) -> Self {
        self.api_key = HeaderValue::from_str(key.as_ref().trim())
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        self
    }

    /// A key sent as the query parameter `name` (`?key=…`), for providers that take it in
    /// the URL. Errors built by this crate drop the URL, so the key does not reach messages
    /// or logs. Default: none.
    #[must_use]
    pub fn api_key_query(mut self, name: &str, key: impl Into<String>) -> Self {
        self.query_key = Some((name.to_owned(), key.into()));
        self
    }

    /// The provider's name.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The URL of `path` (e.g. `/messages`), with the query key if there is one.
    fn url(&self, path: &str) -> String {
        let url = format!("{}{path}", self.base_url);
        match (&self.query_key, reqwest::Url::parse(&url)) {
            (Some((name, key)), Ok(mut parsed)) => {
                parsed.query_pairs_mut().append_pair(name, key);
                parsed.to_string()
            }
            _ => url,
        }
    }

    /// The key's headers, as this endpoint's API sends it.
    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let Some(key) = &self.api_key else {
            return req;
        };
        match self.api {
            Api::OpenAiChat | Api::OpenAiResponses => {
                let mut bearer = b"Bearer ".to_vec();
                bearer.extend_from_slice(key.as_bytes());
                match HeaderValue::from_bytes(&bearer) {
                    Ok(mut v) => {
                        v.set_sensitive(true);
                        req.header(AUTHORIZATION, v)
                    }
                    Err(_) => req,
                }
            }
            Api::AnthropicMessages => req.header(HeaderName::from_static("x-api-key"), key.clone()),
        }
    }
}

/// A URL without its user info and query, which may carry keys.
pub(crate) fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("redacted");
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable>".to_owned(),
    }
}

/// A shared HTTP client for provider calls of every protocol: TCP_NODELAY on, a connect
/// timeout, no overall timeout (the route's deadlines bound each attempt). Each protocol
/// module adds its calls (`chat`, `messages`, ...).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    pub(crate) classifier: Arc<Classifier>,
}

impl Client {
    /// A client with a 5 s connect timeout.
    ///
    /// # Errors
    ///
    /// The TLS backend could not be initialised.
    pub fn new() -> Result<Self, reqwest::Error> {
        Self::with_connect_timeout(Duration::from_secs(5))
    }

    /// A client with the given connect timeout (a host that does not answer SYNs costs this
    /// much, not a whole attempt timeout).
    ///
    /// # Errors
    ///
    /// The TLS backend could not be initialised.
    pub fn with_connect_timeout(connect: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            classifier: Arc::default(),
        })
    }

    /// Classifies failures with `classifier` (its per-provider overrides apply to the
    /// endpoint's provider). Default: the built-in rules ([`classify`](crate::classify::classify)).
    #[must_use]
    pub fn with_classifier(mut self, classifier: Arc<Classifier>) -> Self {
        self.classifier = classifier;
        self
    }

    /// POSTs the client's `request` to `path` of `endpoint` with the target's `model` set,
    /// and `stream` when given; `None` sends no `stream` field, for a call that has none
    /// (Anthropic's token counting). See [`send`](Self::send).
    pub(crate) async fn send_model(
        &self,
        endpoint: &Endpoint,
        path: &str,
        (model, stream): (&str, Option<bool>),
        request: &Value,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, AttemptFailure> {
        let mut body = request.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("model".into(), Value::from(model));
            match stream {
                Some(stream) => obj.insert("stream".into(), Value::from(stream)),
                None => obj.remove("stream"),
            };
        }
        self.send(endpoint, path, &body, headers).await
    }

    /// [`send_model`](Self::send_model) of a request that is not streamed (`stream` false), its
    /// 2xx answer read whole ([`read_answer`]).
    pub(crate) async fn answer(
        &self,
        endpoint: &Endpoint,
        path: &str,
        model: &str,
        request: &Value,
        headers: HeaderMap,
    ) -> Result<(u16, String, Value), AttemptFailure> {
        let resp = self
            .send_model(endpoint, path, (model, Some(false)), request, headers)
            .await?;
        read_answer(resp).await
    }

    /// The failure an error `body` that `endpoint` sent with a 2xx `status` says (an error
    /// object in place of an answer): classified by the body alone, since the 2xx says only
    /// that the provider answered; the failure keeps the status.
    pub(crate) fn error_in(&self, endpoint: &Endpoint, status: u16, body: &str) -> AttemptFailure {
        let signal = crate::classify::Signal::new()
            .body(body)
            .provider(endpoint.provider());
        AttemptFailure::classified(&self.classifier.classify(&signal)).with_status(status)
    }

    /// POSTs `body` as JSON to `path` of `endpoint`, with its key and `headers`; a transport
    /// failure or a non-2xx answer is the attempt's failure, classified.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: &Value,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, AttemptFailure> {
        let req = self
            .http
            .post(endpoint.url(path))
            .headers(headers)
            .json(body);
        let resp = endpoint.authorize(req).send().await.map_err(|e| {
            AttemptFailure::from_reqwest_with(e, &self.classifier, Some(&endpoint.provider))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(AttemptFailure::from_response_with(resp, &endpoint.provider, &self.classifier).await)
    }
}

/// The 2xx answer `resp` read whole: `(status, body, body as JSON)`. A body cut short is
/// `stream_interrupted`, one that is not JSON `empty_response` (each with the status).
pub(crate) async fn read_answer(
    resp: reqwest::Response,
) -> Result<(u16, String, Value), AttemptFailure> {
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .map_err(|e| cut_short(e).with_status(status))?;
    match serde_json::from_str::<Value>(&body) {
        Ok(answer) => Ok((status, body, answer)),
        Err(_) => Err(AttemptFailure::new(Reason::EmptyResponse).with_status(status)),
    }
}

/// A transport failure while reading the body of a 2xx answer. The answer had started, so it
/// was cut short: `stream_interrupted`, which fails over. The classifier would call the same
/// error ("connection closed before message completed") `connection_reset`, which is for a
/// request that got no response and is retried on the same target: a retry that would pay for
/// a cut answer twice. The client sets no read timeout (the route's deadlines bound attempts),
/// so a body error here is never a timeout.
pub(crate) fn cut_short(err: reqwest::Error) -> AttemptFailure {
    AttemptFailure::new(Reason::StreamInterrupted).with_source(err.without_url())
}
