//! Errors: [`ProviderError`] is what one upstream attempt can end in;
//! [`ProxyError`] is what the client gets, always in the OpenAI shape
//! `{"error":{"message","type","param","code"}}`.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

/// The outcome of one failed attempt against one provider.
#[derive(Debug, Clone)]
pub enum ProviderError {
    /// Could not connect, or the connection broke before a response.
    Connect(String),
    /// The provider's timeout elapsed.
    Timeout(String),
    /// The upstream answered with a non-2xx status.
    Status {
        status: u16,
        /// The upstream's own error, already in OpenAI shape (the `error` object).
        error: Value,
        /// From a `Retry-After` header, if any.
        retry_after: Option<Duration>,
    },
    /// A 3xx. Redirects are not followed (a `base_url` that redirects, e.g.
    /// `http://` to `https://`, is a configuration error, and following it
    /// would send the key to wherever the upstream points), but the answer
    /// is no success either: it fails over and counts against the provider.
    Redirect {
        status: u16,
        /// The `Location` header, key redacted and cut to a sane length.
        location: Option<String>,
    },
    /// A 2xx answer whose body (or first stream event) could not be decoded.
    Decode(String),
    /// The proxy refused the request for this provider before calling it:
    /// the provider's kind cannot express it (an Anthropic provider asked
    /// for `n: 2`, a translated Responses request with
    /// `previous_response_id`). A 400 with `error` (an OpenAI `error`
    /// object naming the field). It would fail the same way on every
    /// attempt, so it does not fail over; and no upstream was asked, so it
    /// is no verdict on the provider's health either way.
    Refused { error: Value },
}

impl ProviderError {
    /// Whether the next provider should be tried and this failure counted.
    /// 400, 413, 422 and other 4xx are the request's fault: they would fail
    /// everywhere, so they are returned to the client as they are.
    pub fn is_failover(&self) -> bool {
        match self {
            ProviderError::Connect(_)
            | ProviderError::Timeout(_)
            | ProviderError::Decode(_)
            | ProviderError::Redirect { .. } => true,
            ProviderError::Status { status, .. } => {
                matches!(status, 401 | 403 | 404 | 408 | 429) || *status >= 500
            }
            ProviderError::Refused { .. } => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status {
                status: 429,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }

    fn upstream_message(&self) -> String {
        match self {
            ProviderError::Connect(m) => format!("connection failed: {m}"),
            ProviderError::Timeout(m) => format!("timed out: {m}"),
            ProviderError::Decode(m) => format!("invalid response: {m}"),
            ProviderError::Redirect { status, location } => match location {
                Some(l) => format!("HTTP {status} redirect to {l} (not followed; check base_url)"),
                None => format!("HTTP {status} redirect with no Location (not followed)"),
            },
            ProviderError::Status { status, error, .. } => {
                let msg = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                // Redacted when the error was made; cut for the 503 and the log.
                format!("HTTP {status}: {}", truncate(msg, MAX_UPSTREAM_TEXT))
            }
            ProviderError::Refused { error } => {
                let msg = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                format!("refused before any upstream call: {msg}")
            }
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.upstream_message())
    }
}

/// Every error the proxy itself answers, and the one table that maps each
/// to its HTTP status and the OpenAI `type` and `code`. Every producer of
/// an error body goes through it: the routes, the server's overload and
/// panic answers, tiny_http's own refusals, the mid-stream error event, and
/// a provider's refusal of a request it cannot translate. (An upstream's
/// own 4xx is passed through as [`ErrorKind::Upstream`], with its status.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is malformed or misses a required field.
    InvalidRequest,
    /// The body could not be read (most often a client that stalled).
    BodyRead,
    /// The model is not configured.
    ModelNotFound,
    /// None of the model's providers can serve the endpoint.
    UnsupportedEndpoint,
    /// No route for the path.
    UnknownUrl,
    /// `GET /v1/responses/{id}`: no native provider has the response (or
    /// none can be asked).
    ResponseNotFound,
    /// The path exists, for another method.
    MethodNotAllowed,
    /// The body is over `max_body_bytes`.
    TooLarge,
    /// A request head that stopped arriving (tiny_http's 408).
    RequestTimeout,
    /// A request line or header over the limit (414 / 431).
    HeaderTooLarge,
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed,
    /// HTTP/2 or later (505).
    HttpVersion,
    /// Any other malformed HTTP request.
    InvalidHttp,
    /// The handler panicked.
    Internal,
    /// The worker pool stayed full for the queue timeout.
    Overloaded,
    /// Every provider of the model failed or is cooling down.
    Unavailable,
    /// The model's `request_timeout` passed before any provider answered.
    DeadlineExceeded,
    /// The client closed its connection while its request was still being
    /// routed (nginx's 499; the answer is for the log, no client reads it).
    ClientGone,
    /// The provider failed after the stream began (sent as an SSE event).
    UpstreamStream,
    /// The drain's deadline passed while the stream ran (sent as an SSE
    /// event).
    ShuttingDown,
    /// The upstream's own non-failover error, passed through.
    Upstream,
    /// A client key is required and was missing, malformed or unknown.
    InvalidApiKey,
    /// The client key may not use the model.
    ModelNotAllowed,
    /// The client key is over its `rpm` or `max_concurrent`.
    RateLimited,
    /// `/metrics` or `/admin/*` with a valid client key that lacks
    /// `admin: true`.
    AdminRequired,
    /// `/metrics` or `/admin/*` from a non-loopback client when no `auth`
    /// is configured (and, for `/metrics`, no `server.metrics_public`).
    AdminLoopbackOnly,
    /// `/admin/providers/{name}/...` for a provider that is not configured.
    ProviderNotFound,
    /// `POST /admin/reload` read a config that does not validate.
    InvalidConfig,
    /// `POST /admin/reload` when the server has no config file to re-read.
    ReloadUnavailable,
}

impl ErrorKind {
    /// `(status, type, code)`: the table.
    pub fn table(self) -> (u16, &'static str, Option<&'static str>) {
        use ErrorKind::*;
        const REQ: &str = "invalid_request_error";
        const SRV: &str = "server_error";
        match self {
            InvalidRequest => (400, REQ, None),
            BodyRead => (400, REQ, Some("body_read_error")),
            ModelNotFound => (404, REQ, Some("model_not_found")),
            UnsupportedEndpoint => (400, REQ, Some("unsupported_endpoint")),
            UnknownUrl => (404, REQ, Some("unknown_url")),
            ResponseNotFound => (404, REQ, Some("response_not_found")),
            MethodNotAllowed => (405, REQ, Some("method_not_allowed")),
            TooLarge => (413, REQ, Some("request_too_large")),
            RequestTimeout => (408, REQ, Some("header_timeout")),
            HeaderTooLarge => (431, REQ, Some("request_header_too_large")),
            ExpectationFailed => (417, REQ, Some("expectation_failed")),
            HttpVersion => (505, REQ, Some("http_version_not_supported")),
            InvalidHttp => (400, REQ, Some("invalid_http_request")),
            Internal => (500, SRV, Some("internal_error")),
            Overloaded => (503, SRV, Some("server_overloaded")),
            Unavailable => (503, SRV, Some("providers_unavailable")),
            // The issue names the code; the 408 above shares it, and the
            // status tells them apart (a head that stalled, a request that
            // ran out of time upstream).
            DeadlineExceeded => (504, SRV, Some("request_timeout")),
            ClientGone => (499, REQ, Some("client_closed_request")),
            UpstreamStream => (502, SRV, Some("upstream_stream_error")),
            ShuttingDown => (503, SRV, Some("server_shutting_down")),
            Upstream => (502, REQ, None),
            InvalidApiKey => (401, REQ, Some("invalid_api_key")),
            ModelNotAllowed => (403, REQ, Some("model_not_allowed")),
            // OpenAI's own 429s say `"type": "requests"`.
            RateLimited => (429, "requests", Some("rate_limit_exceeded")),
            AdminRequired => (403, REQ, Some("admin_required")),
            AdminLoopbackOnly => (403, REQ, Some("admin_loopback_only")),
            ProviderNotFound => (404, REQ, Some("provider_not_found")),
            InvalidConfig => (400, REQ, Some("invalid_config")),
            ReloadUnavailable => (409, REQ, Some("reload_unavailable")),
        }
    }

    /// The kind of a refusal tiny_http answers on its own, by its status.
    pub fn of_listener_status(status: u16) -> ErrorKind {
        match status {
            408 => ErrorKind::RequestTimeout,
            414 | 431 => ErrorKind::HeaderTooLarge,
            417 => ErrorKind::ExpectationFailed,
            503 => ErrorKind::Overloaded,
            505 => ErrorKind::HttpVersion,
            _ => ErrorKind::InvalidHttp,
        }
    }
}

/// An error response to the client.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: ErrorKind,
    /// The kind's status, unless the error says otherwise (an upstream's
    /// own status, tiny_http's 414 for the 431 kind).
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// The full `error` object when it comes from upstream unchanged.
    pub upstream: Option<Box<Value>>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ProxyError {
        ProxyError {
            kind,
            status: kind.table().0,
            message: message.into(),
            param: None,
            retry_after: None,
            upstream: None,
        }
    }

    pub fn with_param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorKind::InvalidRequest, message)
    }

    /// 404 for a model this proxy does not serve.
    pub fn model_not_found(model: &str) -> ProxyError {
        ProxyError::new(
            ErrorKind::ModelNotFound,
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
    }

    /// 400 for a model none of whose providers serves the endpoint.
    pub fn unsupported_endpoint(model: &str, endpoint: impl fmt::Display) -> ProxyError {
        ProxyError::new(
            ErrorKind::UnsupportedEndpoint,
            format!("The model `{model}` does not support {endpoint}: none of its providers can serve it."),
        )
        .with_param("model")
    }

    /// 404 for a path this proxy does not serve.
    pub fn no_route(method: &str, path: &str) -> ProxyError {
        ProxyError::new(
            ErrorKind::UnknownUrl,
            format!("Invalid URL ({method} {path})"),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ProxyError {
        ProxyError::new(
            ErrorKind::MethodNotAllowed,
            format!("Method {method} is not allowed for {path}; use {allowed}"),
        )
    }

    pub fn too_large(limit: u64) -> ProxyError {
        ProxyError::new(
            ErrorKind::TooLarge,
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorKind::Internal, message)
    }

    /// 503 when the worker pool stayed full for the queue timeout.
    pub fn overloaded(retry_after: u64) -> ProxyError {
        ProxyError::new(
            ErrorKind::Overloaded,
            "The proxy is at its concurrency limit; retry shortly",
        )
        .with_retry_after(retry_after)
    }

    /// 503 when every provider of a model failed or is cooling down.
    pub fn unavailable(message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorKind::Unavailable, message)
    }

    /// The upstream's own non-failover error (400, 422, ...), passed
    /// through. `error` is already a complete OpenAI `error` object (see
    /// [`normalize_upstream_error`]); only the provider's name is added.
    pub fn from_upstream(provider: &str, status: u16, error: &Value) -> ProxyError {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error");
        let mut e = ProxyError::new(ErrorKind::Upstream, message).with_status(status);
        let mut obj = error.clone();
        if let Some(o) = obj.as_object_mut() {
            o.insert("provider".into(), json!(provider));
        }
        e.upstream = Some(Box::new(obj));
        e
    }

    /// The `error` object.
    pub fn error_object(&self) -> Value {
        if let Some(u) = &self.upstream {
            return (**u).clone();
        }
        let (_, kind, code) = self.kind.table();
        json!({
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": code,
        })
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({ "error": self.error_object() })
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// Longest piece of upstream text (a non-JSON error body, an error
/// message, a body that is not what the API promises) put in a message or
/// a log line. Redaction comes first, so a cut cannot hide a key.
pub const MAX_UPSTREAM_TEXT: usize = 300;

/// Make an upstream error body into an OpenAI `error` object, with
/// `secret` redacted everywhere in it (object keys included). Handles
/// OpenAI's `{"error":{...}}`, Anthropic's `{"type":"error","error":{...}}`,
/// a bare `{"message":...}` / `{"error":"..."}`, and plain text.
pub fn normalize_upstream_error(status: u16, body: &[u8], secret: Option<&str>) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let inner = parsed.as_ref().and_then(|v| match v.get("error") {
        Some(Value::Object(o)) => Some(Value::Object(o.clone())),
        Some(Value::String(s)) => Some(json!({ "message": s })),
        _ => v
            .get("message")
            .and_then(Value::as_str)
            .map(|m| json!({ "message": m })),
    });
    let mut obj = inner.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let msg = if text.is_empty() {
            format!("upstream returned HTTP {status} with an empty body")
        } else {
            truncate(&redact(text, secret), MAX_UPSTREAM_TEXT)
        };
        json!({ "message": msg })
    });
    if let Some(o) = obj.as_object_mut() {
        if !o.get("message").is_some_and(Value::is_string) {
            let m = o
                .get("message")
                .map(|m| m.to_string())
                .unwrap_or_else(|| format!("upstream returned HTTP {status}"));
            o.insert("message".into(), json!(m));
        }
        let kind = o.get("type").and_then(Value::as_str).map(str::to_owned);
        o.insert(
            "type".into(),
            json!(kind.unwrap_or_else(|| default_type(status).to_string())),
        );
        o.entry("param").or_insert(Value::Null);
        o.entry("code").or_insert(Value::Null);
    }
    redact_value(&mut obj, secret);
    obj
}

fn default_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// Cut `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Shortest piece of a key that is treated as the key (8 bytes: one u64,
/// see `key_spans`).
const MIN_FRAGMENT: usize = 8;
/// Fewest characters of a key a masked echo must show to be one.
const MIN_MASKED_SHOWN: usize = 4;

/// Take `secret` out of `text`. Upstreams echo the key they were given,
/// and it must not reach the client or the log, whole or in part:
///
/// - the key itself, and any run of at least [`MIN_FRAGMENT`] characters
///   that occurs in it (an echo that was cut, by the upstream or by us,
///   still has those); a region covered by such runs is replaced whole;
/// - a masked echo: a run of mask characters (`*`, `•`, `…`, or three or
///   more `.`) with a start of the key directly before it and/or an end of
///   the key directly after it, at least [`MIN_MASKED_SHOWN`] characters
///   shown in all (OpenAI's `sk-proj-****abcd`, `sk-ab…wxyz`).
///
/// Callers redact before they truncate, so a cut never hides a key from
/// this. A key shorter than `MIN_FRAGMENT` is only replaced whole.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    let Some(key) = secret.filter(|k| k.len() >= 4) else {
        return text.to_string();
    };
    let mut spans = key_spans(text.as_bytes(), key.as_bytes());
    spans.extend(masked_spans(text, key));
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (mut start, mut end) in spans {
        // Keys are ASCII, but never cut a character in two.
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if end <= at {
            continue;
        }
        if start >= at {
            out.push_str(&text[at..start]);
            out.push_str("[redacted]");
        }
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Byte ranges of `text` covered by pieces of `key` of `MIN_FRAGMENT` or
/// more bytes (the key whole when it is shorter).
fn key_spans(text: &[u8], key: &[u8]) -> Vec<(usize, usize)> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut cover = |i: usize, len: usize| match spans.last_mut() {
        Some(last) if last.1 >= i => last.1 = last.1.max(i + len),
        _ => spans.push((i, i + len)),
    };
    if key.len() < MIN_FRAGMENT {
        for (i, w) in text.windows(key.len()).enumerate() {
            if w == key {
                cover(i, key.len());
            }
        }
        return spans;
    }
    // Every 8-byte window of the key as a number, sorted: a window of the
    // text is then one load and a binary search (a HashSet of slices cost
    // 90 ms for a 64 KiB body in a debug build).
    let as_u64 = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("8-byte window"));
    let mut pieces: Vec<u64> = key.windows(MIN_FRAGMENT).map(as_u64).collect();
    pieces.sort_unstable();
    pieces.dedup();
    for (i, w) in text.windows(MIN_FRAGMENT).enumerate() {
        if pieces.binary_search(&as_u64(w)).is_ok() {
            cover(i, MIN_FRAGMENT);
        }
    }
    spans
}

/// Byte ranges of `text` that are masked echoes of `key`.
fn masked_spans(text: &str, key: &str) -> Vec<(usize, usize)> {
    let is_mask = |c: char| matches!(c, '*' | '•' | '…' | '.');
    let is_token = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut spans = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !is_mask(c) {
            continue;
        }
        let mut end = start + c.len_utf8();
        let mut only_dots = c == '.';
        let mut count = 1;
        while let Some(&(i, c)) = chars.peek() {
            if !is_mask(c) {
                break;
            }
            only_dots &= c == '.';
            count += 1;
            end = i + c.len_utf8();
            chars.next();
        }
        if only_dots && count < 3 {
            continue;
        }
        let before = &text[..start];
        let left = before.len()
            - before
                .chars()
                .rev()
                .take_while(|c| is_token(*c))
                .map(char::len_utf8)
                .sum::<usize>();
        let right = end
            + text[end..]
                .chars()
                .take_while(|c| is_token(*c))
                .map(char::len_utf8)
                .sum::<usize>();
        let (shown_start, shown_end) = (&text[left..start], &text[end..right]);
        if shown_start.len() + shown_end.len() >= MIN_MASKED_SHOWN
            && key.starts_with(shown_start)
            && key.ends_with(shown_end)
        {
            spans.push((left, right));
        }
    }
    spans
}

/// [`redact`] every string in `v`, object keys included.
pub fn redact_value(v: &mut Value, secret: Option<&str>) {
    if secret.is_none() {
        return;
    }
    match v {
        Value::String(s) => *s = redact(s, secret),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, secret)),
        Value::Object(o) => {
            let entries = std::mem::take(o);
            for (k, mut x) in entries {
                redact_value(&mut x, secret);
                o.insert(redact(&k, secret), x);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_KINDS: [ErrorKind; 29] = [
        ErrorKind::InvalidRequest,
        ErrorKind::BodyRead,
        ErrorKind::ModelNotFound,
        ErrorKind::UnsupportedEndpoint,
        ErrorKind::UnknownUrl,
        ErrorKind::MethodNotAllowed,
        ErrorKind::TooLarge,
        ErrorKind::RequestTimeout,
        ErrorKind::HeaderTooLarge,
        ErrorKind::ExpectationFailed,
        ErrorKind::HttpVersion,
        ErrorKind::InvalidHttp,
        ErrorKind::Internal,
        ErrorKind::Overloaded,
        ErrorKind::Unavailable,
        ErrorKind::DeadlineExceeded,
        ErrorKind::ClientGone,
        ErrorKind::UpstreamStream,
        ErrorKind::ShuttingDown,
        ErrorKind::Upstream,
        ErrorKind::InvalidApiKey,
        ErrorKind::ModelNotAllowed,
        ErrorKind::RateLimited,
        ErrorKind::AdminRequired,
        ErrorKind::AdminLoopbackOnly,
        ErrorKind::ProviderNotFound,
        ErrorKind::InvalidConfig,
        ErrorKind::ReloadUnavailable,
        ErrorKind::ResponseNotFound,
    ];

    /// A new kind is a compile error here: add it to `ALL_KINDS` too.
    #[allow(dead_code)]
    fn all_kinds_is_complete(k: ErrorKind) {
        use ErrorKind::*;
        match k {
            InvalidRequest | BodyRead | ModelNotFound | UnsupportedEndpoint | UnknownUrl
            | MethodNotAllowed | TooLarge | RequestTimeout | HeaderTooLarge | ExpectationFailed
            | HttpVersion | InvalidHttp | Internal | Overloaded | Unavailable
            | DeadlineExceeded | ClientGone | UpstreamStream | ShuttingDown | Upstream
            | InvalidApiKey | ModelNotAllowed | RateLimited | AdminRequired | AdminLoopbackOnly
            | ProviderNotFound | InvalidConfig | ReloadUnavailable | ResponseNotFound => {}
        }
    }

    #[test]
    fn the_error_table_is_consistent() {
        let mut codes = std::collections::HashSet::new();
        for kind in ALL_KINDS {
            let (status, ty, code) = kind.table();
            assert!(
                ["invalid_request_error", "server_error", "requests"].contains(&ty),
                "{kind:?}"
            );
            // A 4xx is never a server_error: the client must not retry it
            // (a 429 says `requests`, as OpenAI's do).
            assert!(
                status >= 500 || ty == "invalid_request_error" || (status, ty) == (429, "requests"),
                "{kind:?}"
            );
            if let Some(code) = code {
                assert!(codes.insert(code), "{kind:?}: code {code} used twice");
            }
            let body = ProxyError::new(kind, "m").body();
            let e = &body["error"];
            assert_eq!(e["type"], ty);
            assert_eq!(e["code"].as_str(), code);
            for k in ["message", "type", "param", "code"] {
                assert!(e.get(k).is_some(), "{kind:?} lacks {k}");
            }
        }
        for status in [408, 414, 431, 417, 503, 505, 400, 411] {
            let kind = ErrorKind::of_listener_status(status);
            assert!(ALL_KINDS.contains(&kind));
            assert!(kind.table().0 >= 400);
        }
    }

    #[test]
    fn failover_classes() {
        let st = |s| ProviderError::Status {
            status: s,
            error: json!({"message": "m"}),
            retry_after: None,
        };
        for s in [401, 403, 404, 408, 429, 500, 502, 503, 529] {
            assert!(st(s).is_failover(), "{s}");
        }
        for s in [400, 409, 413, 422] {
            assert!(!st(s).is_failover(), "{s}");
        }
        assert!(ProviderError::Connect("x".into()).is_failover());
        assert!(ProviderError::Timeout("x".into()).is_failover());
        assert!(ProviderError::Decode("x".into()).is_failover());
        for s in [300, 301, 302, 303, 304, 307, 308] {
            let e = ProviderError::Redirect {
                status: s,
                location: None,
            };
            assert!(e.is_failover(), "{s}");
        }
    }

    #[test]
    fn normalizes_error_bodies() {
        let e = normalize_upstream_error(
            400,
            br#"{"error":{"message":"bad","type":"invalid_request_error","param":"x","code":null}}"#,
            None,
        );
        assert_eq!(e["message"], "bad");
        assert_eq!(e["param"], "x");
        let e = normalize_upstream_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            None,
        );
        assert_eq!(e["type"], "overloaded_error");
        assert_eq!(e["message"], "Overloaded");
        assert!(e["code"].is_null());
        let e = normalize_upstream_error(502, b"<html>Bad Gateway</html>", None);
        assert_eq!(e["message"], "<html>Bad Gateway</html>");
        assert_eq!(e["type"], "server_error");
        let e = normalize_upstream_error(500, b"", None);
        assert!(e["message"].as_str().unwrap().contains("empty body"));
    }

    #[test]
    fn redacts() {
        assert_eq!(
            redact("key sk-1234 bad", Some("sk-1234")),
            "key [redacted] bad"
        );
        assert_eq!(redact("fine", None), "fine");
    }

    const KEY: &str = "sk-proj-Alpha7Kq2Zx9Wm4Rt8Yp3Nd";

    /// No piece of 8 or more characters of KEY is left in `s`.
    fn clean(s: &str) -> bool {
        (0..=KEY.len() - 8).all(|i| !s.contains(&KEY[i..i + 8]))
    }

    #[test]
    fn redacts_pieces_of_the_key() {
        // Cut at every length, at the start and the end of the text.
        for n in 8..=KEY.len() {
            for piece in [&KEY[..n], &KEY[KEY.len() - n..]] {
                let r = redact(&format!("key {piece} bad"), Some(KEY));
                assert_eq!(r, "key [redacted] bad", "{piece}");
                let r = redact(&format!("{piece}…"), Some(KEY));
                assert!(clean(&r) && r.starts_with("[redacted]"), "{r}");
            }
        }
        // Seven characters say nothing about the key; ordinary text stays.
        assert_eq!(redact("sk-proj something", Some(KEY)), "sk-proj something");
        // Twice, adjacent, inside other text; multi-byte text around it.
        let r = redact(&format!("é{KEY}{KEY}é and {KEY}."), Some(KEY));
        assert_eq!(r, "é[redacted]é and [redacted].");
        // A short key is replaced only whole.
        assert_eq!(redact("ab12 ab1", Some("ab12")), "[redacted] ab1");
    }

    #[test]
    fn redacts_masked_echoes() {
        let stars = "*".repeat(40);
        for (text, want) in [
            (
                format!("Incorrect API key provided: sk-proj-{stars}p3Nd. See docs."),
                "Incorrect API key provided: [redacted]. See docs.",
            ),
            ("key sk-pro****p3Nd".to_string(), "key [redacted]"),
            ("key sk-pr…p3Nd!".to_string(), "key [redacted]!"),
            ("key sk...p3Nd".to_string(), "key [redacted]"),
            ("key ****p3Nd".to_string(), "key [redacted]"),
        ] {
            assert_eq!(redact(&text, Some(KEY)), want, "{text}");
        }
        // Not this key, or not a mask: left alone.
        for text in [
            "key sk-pr****abcd",
            "key ab****p3Nd",
            "Wait... p3Nd",
            "**bold**",
            "a ** b",
            "...",
        ] {
            assert_eq!(redact(text, Some(KEY)), text);
        }
    }

    #[test]
    fn redacts_json_keys_and_values_before_cutting() {
        let body =
            format!(r#"{{"error":{{"message":"no","details":{{"Bearer {KEY}":["{KEY}"]}}}}}}"#);
        let e = normalize_upstream_error(400, body.as_bytes(), Some(KEY));
        assert_eq!(e["details"]["Bearer [redacted]"][0], "[redacted]");
        assert!(clean(&e.to_string()), "{e}");
        // Plain text cut right through the key: nothing of it survives.
        for at in MAX_UPSTREAM_TEXT - KEY.len()..=MAX_UPSTREAM_TEXT {
            let body = format!("{}{KEY} tail", "x".repeat(at));
            let e = normalize_upstream_error(502, body.as_bytes(), Some(KEY));
            assert!(clean(e["message"].as_str().unwrap()), "{at}: {e}");
        }
        // A message that is not a string is made one, then redacted.
        let body = format!(r#"{{"message":{{"{KEY}":1}}}}"#);
        let e = normalize_upstream_error(400, body.as_bytes(), Some(KEY));
        assert!(clean(&e.to_string()), "{e}");
    }
}
