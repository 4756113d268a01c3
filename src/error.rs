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

    /// The upstream status, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } | ProviderError::Redirect { status, .. } => {
                Some(*status)
            }
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
                format!("HTTP {status}: {msg}")
            }
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.upstream_message())
    }
}

/// An error response to the client.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// The full `error` object when it comes from upstream unchanged.
    pub upstream: Option<Box<Value>>,
}

impl ProxyError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ProxyError {
        ProxyError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            upstream: None,
        }
    }

    pub fn with_param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    pub fn with_code(mut self, c: &str) -> Self {
        self.code = Some(c.to_string());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ProxyError {
        ProxyError::new(400, "invalid_request_error", message)
    }

    /// 404 for a model this proxy does not serve.
    pub fn model_not_found(model: &str) -> ProxyError {
        ProxyError::new(
            404,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404 for a path this proxy does not serve.
    pub fn no_route(method: &str, path: &str) -> ProxyError {
        ProxyError::new(
            404,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
        .with_code("unknown_url")
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ProxyError {
        ProxyError::new(
            405,
            "invalid_request_error",
            format!("Method {method} is not allowed for {path}; use {allowed}"),
        )
        .with_code("method_not_allowed")
    }

    pub fn too_large(limit: u64) -> ProxyError {
        ProxyError::new(
            413,
            "invalid_request_error",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    pub fn internal(message: impl Into<String>) -> ProxyError {
        ProxyError::new(500, "server_error", message).with_code("internal_error")
    }

    /// 503 when the worker pool stayed full for the queue timeout.
    pub fn overloaded(retry_after: u64) -> ProxyError {
        ProxyError::new(
            503,
            "server_error",
            "The proxy is at its concurrency limit; retry shortly",
        )
        .with_code("server_overloaded")
        .with_retry_after(retry_after)
    }

    /// 503 when every provider of a model failed or is cooling down.
    pub fn unavailable(message: impl Into<String>) -> ProxyError {
        ProxyError::new(503, "server_error", message).with_code("providers_unavailable")
    }

    /// The upstream's own non-failover error (400, 422, ...), passed through.
    pub fn from_upstream(provider: &str, status: u16, error: &Value) -> ProxyError {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error")
            .to_string();
        let mut e = ProxyError::new(status, "invalid_request_error", message);
        let mut obj = error.clone();
        if let Some(o) = obj.as_object_mut() {
            // The OpenAI schema requires all four keys.
            for k in ["type", "param", "code"] {
                o.entry(k).or_insert(Value::Null);
            }
            if o.get("type").is_none_or(Value::is_null) {
                o.insert("type".into(), json!("invalid_request_error"));
            }
            o.insert("provider".into(), json!(provider));
        }
        e.upstream = Some(Box::new(obj));
        e
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        if let Some(u) = &self.upstream {
            return json!({ "error": u });
        }
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// Make an upstream error body into an OpenAI `error` object. Handles
/// OpenAI's `{"error":{...}}`, Anthropic's `{"type":"error","error":{...}}`,
/// a bare `{"message":...}` / `{"error":"..."}`, and plain text.
pub fn normalize_upstream_error(status: u16, body: &[u8]) -> Value {
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
            truncate(text, 300)
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

/// Replace every occurrence of `secret` in `text`. Upstreams sometimes echo
/// the key they were given; it must not reach the client or the log.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(k) if k.len() >= 4 && text.contains(k) => text.replace(k, "[redacted]"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        );
        assert_eq!(e["message"], "bad");
        assert_eq!(e["param"], "x");
        let e = normalize_upstream_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e["type"], "overloaded_error");
        assert_eq!(e["message"], "Overloaded");
        assert!(e["code"].is_null());
        let e = normalize_upstream_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(e["message"], "<html>Bad Gateway</html>");
        assert_eq!(e["type"], "server_error");
        let e = normalize_upstream_error(500, b"");
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
}
