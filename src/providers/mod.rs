//! The [`Provider`] trait, the one place that builds a provider from its
//! kind, and the HTTP plumbing every provider shares: one ureq agent per
//! provider, error classification, `Retry-After` parsing.

// pub(crate) for the thin wrappers that `crate::fuzzing` exposes.
pub(crate) mod anthropic;
mod azure;
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
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::config::{ProviderConfig, ProviderKind};
use crate::error::{ProviderError, normalize_upstream_error, redact, truncate};
use crate::openai::ChatRequest;
use crate::sse::SseReader;

/// One upstream kind. Implementations translate the OpenAI request into
/// their wire format and their answers back; HTTP is done by [`Upstream`].
pub trait Provider: Send + Sync {
    /// A non-streaming completion: the body of an OpenAI `chat.completion`.
    fn complete(&self, req: &ChatRequest, model_id: &str) -> Result<Vec<u8>, ProviderError>;

    /// A streaming completion. Returns once the upstream has answered 2xx.
    fn stream(
        &self,
        req: &ChatRequest,
        model_id: &str,
    ) -> Result<Box<dyn ChatStream + '_>, ProviderError>;
}

/// The OpenAI-shaped events of one upstream stream.
pub trait ChatStream: Send {
    /// The next event to send to the client, fully encoded (`data: {...}\n\n`).
    /// `Ok(None)` is a complete stream (the caller sends `data: [DONE]`).
    /// `Err` is a stream that broke: cut, timed out, malformed or an error event.
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError>;

    /// Called after a complete stream (`Ok(None)`) has reached the client:
    /// read what is left of the upstream body, normally just the end of its
    /// chunked framing, so that ureq returns the connection to its pool.
    /// Without this every stream opened a new upstream connection.
    fn finish(&mut self) {}
}

/// Build the provider for a config entry.
pub fn build(cfg: &ProviderConfig, pool_size: usize) -> Box<dyn Provider> {
    let upstream = Upstream::new(cfg, pool_size);
    match cfg.kind {
        ProviderKind::OpenAi => Box::new(openai::OpenAi::new(upstream)),
        ProviderKind::Azure => Box::new(azure::new(upstream, cfg)),
        ProviderKind::Anthropic => Box::new(anthropic::new(upstream, cfg)),
    }
}

/// Bytes buffered per upstream connection. ureq's defaults of 128 KiB each
/// way would cost 256 KiB per concurrent stream; 16 KiB each way still cost
/// 32 MB of the 108 MB resident at 1,000 concurrent streams. ureq grows the
/// input buffer past this when a response head needs it, and keeps at
/// least 10 KiB of it while sending a body, so 10 KiB costs nothing extra;
/// the output buffer only has to hold our request head, a body goes out in
/// pieces of this size.
const INPUT_BUFFER: usize = 10 * 1024;
const OUTPUT_BUFFER: usize = 4 * 1024;
/// Buffer of the line reader over a stream's body (ureq buffers below it).
const STREAM_READ_BUFFER: usize = 4 * 1024;
/// Largest successful non-streaming body accepted from an upstream.
const MAX_RESPONSE_BODY: u64 = 64 * 1024 * 1024;
/// Largest error body read from an upstream (the rest is not needed).
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// A provider's HTTP client: its agent, base URL, key and timeouts.
pub struct Upstream {
    agent: Agent,
    pub base_url: String,
    pub api_key: Option<crate::config::Secret>,
    timeout: Duration,
    stream_timeout: Duration,
}

impl Upstream {
    fn new(cfg: &ProviderConfig, pool_size: usize) -> Upstream {
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
                DefaultConnector::default(),
                CachingResolver::default(),
            ),
            base_url: cfg.base_url.clone(),
            api_key: cfg.api_key.clone(),
            timeout: cfg.timeout,
            stream_timeout: cfg.stream_timeout,
        }
    }

    fn key(&self) -> Option<&str> {
        self.api_key.as_ref().map(|k| k.expose())
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
        if stream {
            // `timeout` bounds connecting and waiting for the headers;
            // `stream_timeout` the whole stream.
            rb = rb
                .config()
                .timeout_global(Some(self.stream_timeout))
                .timeout_connect(Some(self.timeout))
                .timeout_recv_response(Some(self.timeout))
                .build();
        }
        let resp = rb.send(body).map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut buf = Vec::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut buf);
        let mut error = normalize_upstream_error(status, &buf);
        redact_value(&mut error, self.key());
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

    /// A 2xx streaming answer as SSE events. An upstream that answered with
    /// JSON instead (some servers ignore `stream`, or put an error in a 200)
    /// is a decode failure, so the request fails over.
    pub fn events(
        &self,
        resp: Response<ureq::Body>,
    ) -> Result<SseReader<Box<dyn BufRead + Send>>, ProviderError> {
        let is_json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            let bytes = self.read_body(resp)?;
            return Err(self.decode_error("expected an event stream, got JSON", &bytes));
        }
        let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(
            STREAM_READ_BUFFER,
            resp.into_body().into_reader(),
        ));
        Ok(SseReader::new(reader))
    }

    /// Classify a transport failure (connect, TLS, timeout, cut body).
    pub fn transport_error(&self, e: ureq::Error) -> ProviderError {
        let msg = redact(&e.to_string(), self.key());
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
        let msg = redact(&e.to_string(), self.key());
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
        let mut error = normalize_upstream_error(500, raw.as_bytes());
        redact_value(&mut error, self.key());
        let msg = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error event")
            .to_string();
        ProviderError::Decode(format!("upstream sent an error event: {msg}"))
    }

    /// A 2xx body that is not what the API promises.
    pub fn decode_error(&self, what: &str, body: &[u8]) -> ProviderError {
        let text = String::from_utf8_lossy(body);
        ProviderError::Decode(redact(
            &format!("{what}: {}", truncate(text.trim(), 200)),
            self.key(),
        ))
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

fn redact_value(v: &mut Value, key: Option<&str>) {
    if key.is_none() {
        return;
    }
    match v {
        Value::String(s) => *s = redact(s, key),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, key)),
        Value::Object(o) => o.values_mut().for_each(|x| redact_value(x, key)),
        _ => {}
    }
}

/// `Retry-After`: delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = parse_http_date(v)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate only (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || day == 0 || day > 31 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days.checked_mul(86_400)? + (h * 3600 + m * 60 + sec) as i64;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
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
    }
}
