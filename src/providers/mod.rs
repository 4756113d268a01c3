//! The [`Provider`] trait, the one place that builds a provider from its
//! kind, and the HTTP plumbing every provider shares: one ureq agent per
//! provider, error classification, `Retry-After` parsing.

// pub(crate) for the thin wrappers that `crate::fuzzing` exposes.
pub(crate) mod anthropic;
mod azure;
pub mod deadline;
mod openai;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use ureq::Agent;
use ureq::http::{Response, Uri};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Connector, DefaultConnector, NextTimeout};

use crate::config::{Config, ProviderConfig, ProviderKind};
use crate::error::{
    MAX_UPSTREAM_TEXT, ProviderError, ProxyError, normalize_upstream_error, redact, truncate,
};
use crate::openai::{ApiRequest, Endpoint};
use crate::sse::{Event, SseReader};

/// One upstream kind. Implementations translate the OpenAI request into
/// their wire format and their answers back; HTTP is done by [`Upstream`].
/// The request names its [`Endpoint`]; a kind serves the endpoints it says
/// it [`serves`](Provider::serves), and the router never calls it for others.
pub trait Provider: Send + Sync {
    /// Whether this kind can serve `endpoint` at all. One that cannot is
    /// skipped for it without touching its breaker. Match exhaustively, so
    /// that a new endpoint is a compile error in every provider kind.
    fn serves(&self, endpoint: Endpoint) -> bool;

    /// A non-streaming answer: the OpenAI body for `req.endpoint`.
    fn complete(&self, req: &ApiRequest, model_id: &str) -> Result<Vec<u8>, ProviderError>;

    /// A streaming answer. Returns once the upstream has answered 2xx.
    fn stream(
        &self,
        req: &ApiRequest,
        model_id: &str,
    ) -> Result<Box<dyn ChatStream + '_>, ProviderError>;

    /// Whether `/v1/responses` goes to the upstream as it is (its
    /// `responses: native`); only such a provider stores responses, so only
    /// it is asked for `GET /v1/responses/{id}`.
    fn responses_native(&self) -> bool;

    /// `GET /v1/responses/{id}` (`query` without `?`) on this provider: the
    /// 200 body. Called only when [`Provider::responses_native`].
    fn retrieve_response(&self, id: &str, query: &str) -> Result<Vec<u8>, ProviderError>;
}

/// The OpenAI-shaped events of one upstream stream (chat or text
/// completions). When it commits and how it ends is decided by
/// [`crate::relay`], the same for every kind.
pub trait ChatStream: Send {
    /// The next event to send to the client, fully encoded (`data: {...}\n\n`).
    /// `Ok(None)` is a complete stream (the caller sends `data: [DONE]`).
    /// `Err` is a stream that broke: cut, timed out, malformed or an error event.
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError>;

    /// Called after a complete stream (`Ok(None)`) has reached the client:
    /// read what is left of the upstream body, normally just the end of its
    /// chunked framing, so that ureq returns the connection to its pool.
    /// Without this every stream opened a new upstream connection. It has
    /// no default on purpose: a stream kind that forgot it (Anthropic's did)
    /// opened a connection per stream without any test failing.
    fn finish(&mut self);

    /// The tokens the upstream reported for this stream so far (for
    /// `/metrics` and the access log), whether or not the client asked for
    /// a usage chunk; `None` if it reported none.
    fn usage(&self) -> Option<crate::metrics::Usage>;

    /// The encoded event(s) that end this stream after `err`, once it has
    /// committed: for chat and text completions `data: {error body}`
    /// ([`chat_failure_event`]), for Responses `response.failed` and
    /// `error` (`crate::responses::failure_events`). May be empty (an
    /// upstream that already ended the stream in its own shape). No
    /// default: a new stream kind decides what its clients understand.
    fn failure_event(&mut self, err: &ProxyError) -> Vec<u8>;
}

/// The event that ends a chat or text completions stream after `err`: the
/// error body as a `data:` event, and no `[DONE]`, so the client cannot
/// take it for a complete answer.
pub fn chat_failure_event(err: &ProxyError) -> Vec<u8> {
    crate::sse::data_event(err.body().to_string().as_bytes())
}

/// Build the provider for a config entry.
pub fn build(cfg: &ProviderConfig, pool_size: usize) -> Box<dyn Provider> {
    let upstream = Upstream::new(cfg, pool_size);
    match &cfg.kind {
        ProviderKind::OpenAi => Box::new(openai::OpenAi::new(upstream, cfg.responses)),
        ProviderKind::Azure { api_version } => {
            Box::new(azure::new(upstream, api_version, cfg.responses))
        }
        ProviderKind::Anthropic {
            version,
            max_tokens,
        } => Box::new(anthropic::new(upstream, version, *max_tokens)),
    }
}

/// Notes for `--check-config`: each model that none of its providers can
/// serve for some endpoint (a model served only by Anthropic has no
/// embeddings). Not an error: the endpoint answers 400
/// `unsupported_endpoint` for it, and the model's other endpoints work.
pub fn endpoint_notes(config: &Config) -> Vec<String> {
    let providers: Vec<Box<dyn Provider>> = config.providers.iter().map(|p| build(p, 1)).collect();
    let mut notes = Vec::new();
    for m in config.models.values() {
        let missing: Vec<String> = Endpoint::ALL
            .into_iter()
            .filter(|e| !m.routes.iter().any(|r| providers[r.provider].serves(*e)))
            .map(|e| e.to_string())
            .collect();
        if !missing.is_empty() {
            notes.push(format!(
                "note: model {} cannot serve {}: none of its providers supports it",
                m.name,
                missing.join(", ")
            ));
        }
    }
    notes
}

/// Bytes buffered per upstream connection. ureq's defaults of 128 KiB each
/// way would cost 256 KiB per concurrent stream; 16 KiB each way still cost
/// 32 MB of the 108 MB resident at 1,000 concurrent streams. The input
/// buffer is what one read takes (events are 100-400 bytes; a large JSON
/// answer takes a few more reads): ureq parses from
/// [`deadline::DeadlineTransport`]'s own buffer, which grows for a response
/// head larger than this and holds only what is not parsed yet. The output
/// buffer has to hold our request head (an Azure AD token alone can pass
/// 2 KiB); a body goes out in pieces of its size.
const INPUT_BUFFER: usize = 2 * 1024;
const OUTPUT_BUFFER: usize = 4 * 1024;
/// Buffer of the line reader over a stream's body. ureq buffers the bytes
/// below it already (its input buffer), and its body reader offers
/// no `BufRead`, so this second buffer only has to hold what one read hands
/// over: most events are 100-400 bytes and arrive one per read; a larger
/// one (an image) takes a few more reads, copied from ureq's buffer. 1 KiB
/// instead of 4 KiB saves 3 MB at 1,000 streams.
const STREAM_READ_BUFFER: usize = 1024;
/// Largest successful non-streaming body accepted from an upstream.
const MAX_RESPONSE_BODY: u64 = 64 * 1024 * 1024;
/// Largest error body read from an upstream (the rest is not needed).
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// A 3xx's `Location` is cut to this many bytes in messages and logs.
const MAX_LOCATION: usize = 300;
/// The start of a 2xx body that is not what the API promises, in messages.
const MAX_DECODE_TEXT: usize = 200;
/// Bytes read of a 2xx answer to a stream request that is not an event
/// stream, to show its start in the error (200 characters are shown).
const NOT_A_STREAM_PREVIEW: u64 = 1024;

/// A provider's HTTP client: its agent, base URL, key and timeouts.
pub struct Upstream {
    agent: Agent,
    pub base_url: String,
    pub api_key: Option<crate::config::Secret>,
    timeout: Duration,
    stream_timeout: Duration,
    stream_idle_timeout: Duration,
    /// The auth header, name and value, for kinds that send the key in one
    /// header (set by the kind: `Authorization: Bearer …`, Azure's
    /// `api-key`); `None` without a key.
    auth: Option<(&'static str, String)>,
}

impl Upstream {
    pub(crate) fn new(cfg: &ProviderConfig, pool_size: usize) -> Upstream {
        let config = Agent::config_builder()
            // Keep the body of error answers; classification needs it.
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("llm-proxy/", env!("CARGO_PKG_VERSION")))
            .timeout_global(Some(cfg.timeout))
            .max_idle_connections(pool_size)
            .max_idle_connections_per_host(pool_size)
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            .build();
        Upstream {
            agent: Agent::with_parts(
                config,
                // ureq has no deadline that moves with each event.
                DefaultConnector::default().chain(deadline::DeadlineConnector),
                CachingResolver::default(),
            ),
            base_url: cfg.base_url.clone(),
            api_key: cfg.api_key.clone(),
            timeout: cfg.timeout,
            stream_timeout: cfg.stream_timeout,
            stream_idle_timeout: cfg.stream_idle_timeout,
            auth: None,
        }
    }

    fn key(&self) -> Option<&str> {
        self.api_key.as_ref().map(|k| k.expose())
    }

    /// Send the key in header `name`, as `prefix` + key.
    fn set_auth(&mut self, name: &'static str, prefix: &str) {
        self.auth = self.key().map(|k| (name, format!("{prefix}{k}")));
    }

    /// The auth header set by the kind, if any, for [`Upstream::post`] and
    /// [`Upstream::get`].
    pub fn auth_headers(&self) -> Vec<(&str, &str)> {
        match &self.auth {
            Some((name, value)) => vec![(*name, value.as_str())],
            None => Vec::new(),
        }
    }

    /// POST `body` to `url` with `headers`. Returns the response once it is
    /// 2xx; any other outcome is classified into a [`ProviderError`].
    pub fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        stream: bool,
    ) -> Result<Response<ureq::Body>, ProviderError> {
        let mut rb = self
            .agent
            .post(url)
            .header("content-type", "application/json")
            .header(
                "accept",
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        // A deadline in force (the model's `request_timeout`) bounds
        // connecting too, which happens below the transport that enforces
        // it on every other wait.
        let connect = deadline::left(Instant::now()).map_or(self.timeout, |l| l.min(self.timeout));
        if stream {
            // `timeout` bounds connecting and waiting for the headers;
            // `stream_timeout` the whole stream.
            rb = rb
                .config()
                .timeout_global(Some(self.stream_timeout))
                .timeout_connect(Some(connect))
                .timeout_recv_response(Some(self.timeout))
                .build();
        } else if connect < self.timeout {
            rb = rb.config().timeout_connect(Some(connect)).build();
        }
        let resp = rb.send(body).map_err(|e| self.transport_error(e))?;
        self.classify(resp)
    }

    /// GET `url` with `headers` (a lookup, `GET /v1/responses/{id}`),
    /// bounded by `timeout`. Returns the response once it is 2xx, like
    /// [`Upstream::post`].
    #[allow(dead_code)] // for responses::retrieve (native slice)
    pub fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<ureq::Body>, ProviderError> {
        let mut rb = self.agent.get(url).header("accept", "application/json");
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let connect = deadline::left(Instant::now()).map_or(self.timeout, |l| l.min(self.timeout));
        if connect < self.timeout {
            rb = rb.config().timeout_connect(Some(connect)).build();
        }
        let resp = rb.call().map_err(|e| self.transport_error(e))?;
        self.classify(resp)
    }

    /// A response as it is if 2xx, else its classified failure.
    fn classify(&self, resp: Response<ureq::Body>) -> Result<Response<ureq::Body>, ProviderError> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let redirect = (300..400).contains(&status).then(|| {
            resp.headers().get("location").map(|v| {
                let l = String::from_utf8_lossy(v.as_bytes());
                truncate(&redact(&l, self.key()), MAX_LOCATION)
            })
        });
        let mut buf = Vec::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut buf);
        if let Some(location) = redirect {
            return Err(ProviderError::Redirect { status, location });
        }
        let error = normalize_upstream_error(status, &buf, self.key());
        Err(ProviderError::Status {
            status,
            error,
            retry_after,
        })
    }

    /// Read a whole 2xx body.
    pub fn read_body(&self, resp: Response<ureq::Body>) -> Result<Vec<u8>, ProviderError> {
        resp.into_body()
            .with_config()
            .limit(MAX_RESPONSE_BODY)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))
    }

    /// A 2xx streaming answer as SSE events. An answer that is not
    /// `text/event-stream` is a decode failure, so the request fails over:
    /// JSON (some servers ignore `stream`, or put an error in a 200), an
    /// HTML page from something in front of the API, or no type at all
    /// (whose blank lines would otherwise parse as events).
    pub fn events(
        &self,
        resp: Response<ureq::Body>,
    ) -> Result<SseReader<Box<dyn BufRead + Send>>, ProviderError> {
        let media = resp
            .headers()
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .unwrap_or_default();
        let media = media.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("text/event-stream") {
            let what = if media.is_empty() {
                "expected an event stream, got no Content-Type".to_string()
            } else {
                format!("expected an event stream, got {}", truncate(media, 64))
            };
            // The start of the body, for the message; the rest is not needed.
            let mut start = Vec::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(NOT_A_STREAM_PREVIEW)
                .read_to_end(&mut start);
            return Err(self.decode_error(&what, &start));
        }
        let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(
            STREAM_READ_BUFFER,
            resp.into_body().into_reader(),
        ));
        Ok(SseReader::new(reader))
    }

    /// The next event of a stream, due within `stream_idle_timeout` (and
    /// within any earlier deadline in force, such as the router's for the
    /// first chunk). Every event counts, comments and pings included: an
    /// upstream that sends them is not idle.
    pub fn next_event(
        &self,
        events: &mut SseReader<Box<dyn BufRead + Send>>,
    ) -> Result<Option<Event>, ProviderError> {
        let _due = deadline::limit(
            Instant::now(),
            self.stream_idle_timeout,
            "stream_idle_timeout",
        );
        events.next_event().map_err(|e| self.stream_error(e))
    }

    /// Read the rest of a complete stream's body (see [`ChatStream::finish`]),
    /// for no longer than `stream_idle_timeout`: an upstream that holds its
    /// body open after the last event must not hold the worker.
    pub fn drain(&self, events: &mut SseReader<Box<dyn BufRead + Send>>) {
        let _due = deadline::limit(
            Instant::now(),
            self.stream_idle_timeout,
            "stream_idle_timeout",
        );
        events.drain();
    }

    /// Classify a transport failure (connect, TLS, timeout, cut body).
    pub fn transport_error(&self, e: ureq::Error) -> ProviderError {
        let msg = truncate(&redact(&e.to_string(), self.key()), MAX_UPSTREAM_TEXT);
        match e {
            ureq::Error::Timeout(_) => ProviderError::Timeout(msg),
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ProviderError::Timeout(msg)
            }
            ureq::Error::BodyExceedsLimit(_) => {
                ProviderError::Decode(format!("response body too large ({msg})"))
            }
            _ => ProviderError::Connect(msg),
        }
    }

    /// Classify a read error while streaming.
    pub fn stream_error(&self, e: std::io::Error) -> ProviderError {
        let msg = truncate(&redact(&e.to_string(), self.key()), MAX_UPSTREAM_TEXT);
        // ureq reports its own timeouts as io errors wrapping `Error::Timeout`.
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || e.get_ref()
                .and_then(|i| i.downcast_ref::<ureq::Error>())
                .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
        if timed_out {
            ProviderError::Timeout(msg)
        } else if e.kind() == std::io::ErrorKind::InvalidData {
            ProviderError::Decode(msg)
        } else {
            ProviderError::Connect(format!("stream interrupted: {msg}"))
        }
    }

    /// A JSON error object that arrived inside a 2xx stream.
    pub fn in_stream_error(&self, raw: &str) -> ProviderError {
        let error = normalize_upstream_error(500, raw.as_bytes(), self.key());
        let msg = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error event");
        // Already redacted: cutting it cannot hide part of a key.
        let msg = truncate(msg, MAX_UPSTREAM_TEXT);
        ProviderError::Decode(format!("upstream sent an error event: {msg}"))
    }

    /// A 2xx body that is not what the API promises.
    pub fn decode_error(&self, what: &str, body: &[u8]) -> ProviderError {
        let text = String::from_utf8_lossy(body);
        let text = redact(text.trim(), self.key());
        ProviderError::Decode(format!("{what}: {}", truncate(&text, MAX_DECODE_TEXT)))
    }
}

/// How long a resolved upstream address is reused.
const DNS_CACHE_TTL: Duration = Duration::from_secs(30);

/// ureq resolves the host on every request, before it looks in its pool
/// for an idle connection, and with a timeout configured it does so on a
/// new thread. That was a thread spawned, and a DNS lookup made, for every
/// upstream request (perf: thread creation and teardown were the largest
/// user-space cost of a proxied request). This resolver answers IP
/// literals directly and remembers other hosts' addresses for
/// `DNS_CACHE_TTL`; a miss goes to ureq's own resolver.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let Some(authority) = uri.authority() else {
            return self.inner.resolve(uri, config, timeout);
        };
        let port = authority
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        let key = format!("{host}:{port}");
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addrs)) = cache.get(&key) {
            if now.duration_since(*at) < DNS_CACHE_TTL {
                return Ok(addrs.clone());
            }
        }
        // Not held across the lookup: a slow DNS server must not stall
        // requests that could use the cache.
        drop(cache);
        let addrs = self.inner.resolve(uri, config, timeout)?;
        cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(key, (now, addrs.clone()));
        Ok(addrs)
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
///
/// The value is hostile input and must never panic: digits accumulate with
/// saturating arithmetic (`99999999999999999999` is `u64::MAX` seconds,
/// which the breaker then caps at the cooldown), and anything else that is
/// not a date (`-1`, `1e20`, `NaN`, `inf`, empty, garbage) is no value at
/// all. `1.5`, seen in the wild though not in the RFC, is 1.5 s. Dates
/// take all three forms the RFC requires a recipient to accept; a date in
/// the past is zero.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Some(d) = parse_delay_seconds(v) {
        return Some(d);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `DIGITS` or `DIGITS.DIGITS`, saturating; fractions past nanoseconds
/// are ignored.
fn parse_delay_seconds(v: &str) -> Option<Duration> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (v, None),
    };
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    let secs = int.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    let mut nanos = 0u32;
    let mut scale = 100_000_000u32;
    for b in frac.unwrap_or("").bytes().take(9) {
        nanos += u32::from(b - b'0') * scale;
        scale /= 10;
    }
    // nanos < 1e9, so this cannot carry into (and overflow) the seconds.
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_answers_ip_literals_and_caches_names() {
        let r = CachingResolver::default();
        let config = ureq::config::Config::default();
        let timeout = NextTimeout::default;
        let uri: Uri = "http://127.0.0.1:9/v1".parse().unwrap();
        let addrs = r.resolve(&uri, &config, timeout()).unwrap();
        assert_eq!(&addrs[..], &["127.0.0.1:9".parse::<SocketAddr>().unwrap()]);
        assert!(r.cache.lock().unwrap().is_empty(), "IP literals bypass DNS");
        let uri: Uri = "http://localhost:9/v1".parse().unwrap();
        let first = r.resolve(&uri, &config, timeout()).unwrap();
        let cached_at = r.cache.lock().unwrap()["localhost:9"].0;
        let again = r.resolve(&uri, &config, timeout()).unwrap();
        assert_eq!(&first[..], &again[..]);
        assert_eq!(r.cache.lock().unwrap()["localhost:9"].0, cached_at);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // The obsolete forms RFC 9110 still requires.
        for old in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(
                parse_retry_after(old, now),
                Some(Duration::from_secs(7)),
                "{old}"
            );
        }
    }

    #[test]
    fn retry_after_hostile_values_never_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
        let max = Some(Duration::from_secs(u64::MAX));
        assert_eq!(parse_retry_after("99999999999999999999", now), max);
        assert_eq!(parse_retry_after("18446744073709551616", now), max);
        assert_eq!(
            parse_retry_after("99999999999999999999.999999999999", now),
            Some(Duration::new(u64::MAX, 999_999_999))
        );
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        for bad in [
            "1e20",
            "-1",
            "+1",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "",
            " ",
            "1.",
            ".5",
            "1.2.3",
            "0x10",
            "garbage",
            "١٢",
            "Sun, 99 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        // Past: zero. Far future: a long wait, capped later by the breaker.
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).unwrap();
        assert!(far > Duration::from_secs(200_000_000_000), "{far:?}");
    }
}
