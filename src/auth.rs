//! Client keys (`auth:` in the config): who may call the proxy, which
//! models each key may use, and each key's limits.
//!
//! - Authentication: `Authorization: Bearer <key>`. Only SHA-256 digests of
//!   the keys are kept. The presented token is hashed once and compared
//!   with every configured digest in constant time, without an early exit:
//!   a missing header, a malformed one and an unknown key cost the same
//!   work and get the same 401.
//! - `rpm`: a sliding window of 60 s. A key has admitted at most `rpm`
//!   requests in any 60 s; the window keeps one timestamp per admitted
//!   request (at most `rpm`, see `config::MAX_RPM`). Exact under
//!   concurrency: one mutex per key, held for a few comparisons, never
//!   across the network.
//! - `max_concurrent`: a slot taken at admission and given back when the
//!   [`Admission`] is dropped (a stream's: when the stream ends; a panic
//!   unwinds through the drop too, so no slot leaks).
//! - A live reload keeps the rate-limit and concurrency state of every key
//!   whose name is unchanged (like `Health::carry_over` for breakers).
//!
//! Every refusal happens before a provider is chosen, so it reaches no
//! provider and touches no breaker.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::config::{AuthConfig, ClientKey, Config};
use crate::error::{ErrorKind, ProxyError};

/// The window `rpm` counts over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Response headers (same shape as `crate::http::Headers`).
pub type Headers = Vec<(&'static str, String)>;

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The client keys of one config, with their limit state.
pub struct Auth {
    /// `None`: no `auth` section, the proxy is open.
    keys: Option<Vec<Entry>>,
}

/// One configured key and its limit state.
pub struct Entry {
    key: ClientKey,
    limits: Arc<Limits>,
}

/// One key's limit state; shared with the [`Admission`]s in flight and
/// carried over a reload.
#[derive(Default)]
struct Limits {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When each request of the last [`WINDOW`] was admitted, oldest first.
    window: VecDeque<Instant>,
    in_flight: u32,
}

impl Limits {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while it is held; a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Auth {
    /// The keys of `config`; with `previous` (a reload), keys whose name is
    /// unchanged keep their limit state. Returns their names too.
    pub fn new(config: Option<&AuthConfig>, previous: Option<&Auth>) -> (Auth, Vec<String>) {
        let Some(config) = config else {
            return (Auth { keys: None }, Vec::new());
        };
        let mut kept = Vec::new();
        let keys = config
            .keys
            .iter()
            .map(|k| {
                let old = previous
                    .and_then(|p| p.keys.as_ref())
                    .and_then(|keys| keys.iter().find(|e| e.key.name == k.name));
                let limits = match old {
                    Some(e) => {
                        kept.push(k.name.clone());
                        e.limits.clone()
                    }
                    None => Arc::default(),
                };
                Entry {
                    key: k.clone(),
                    limits,
                }
            })
            .collect();
        (Auth { keys: Some(keys) }, kept)
    }

    /// Who is calling, from the `Authorization` header's value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Client<'_>, ProxyError> {
        let Some(keys) = &self.keys else {
            return Ok(Client::Open);
        };
        // Missing or malformed: hash the empty token, which is no key
        // (validation refuses an empty one), so that every refusal does
        // the same work.
        let token = authorization.and_then(bearer).unwrap_or("");
        let presented = sha256(token.as_bytes());
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, e) in keys.iter().enumerate() {
            let same = e.key.digest.0.ct_eq(&presented);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), same);
            found |= same;
        }
        if bool::from(found) {
            let i = usize::try_from(index).unwrap_or(usize::MAX);
            keys.get(i).map(Client::Key).ok_or_else(invalid_api_key)
        } else {
            Err(invalid_api_key())
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }
}

/// The token of `Bearer <token>` (the scheme in any case, as RFC 9110 says).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The `Authorization` header of a request, if any.
pub fn authorization(req: &tiny_http::Request) -> Option<&str> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str())
}

/// The caller of one request.
pub enum Client<'a> {
    /// No `auth` configured.
    Open,
    Key(&'a Entry),
}

impl Client<'_> {
    /// The key's name, for the access log.
    pub fn name(&self) -> Option<&str> {
        match self {
            Client::Open => None,
            Client::Key(e) => Some(&e.key.name),
        }
    }

    /// Whether this is a key with `admin: true` (see
    /// `crate::metrics::operator_access`).
    pub fn is_admin(&self) -> bool {
        matches!(self, Client::Key(e) if e.key.admin)
    }

    /// Whether this client may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        match self {
            Client::Open => true,
            Client::Key(e) => e.key.models.as_ref().is_none_or(|m| m.contains(model)),
        }
    }

    /// [`Client::allows`] as the 403 to send.
    pub fn check_model(&self, model: &str) -> Result<(), ProxyError> {
        if self.allows(model) {
            Ok(())
        } else {
            Err(model_not_allowed(model))
        }
    }

    /// Count one request against the key's limits at `now`. The
    /// [`Admission`] holds a `max_concurrent` slot until it is dropped.
    pub fn admit(&self, now: Instant) -> Result<Admission, Box<Refused>> {
        let Client::Key(e) = self else {
            return Ok(Admission {
                limits: None,
                headers: Vec::new(),
            });
        };
        let (rpm, max) = (e.key.rpm, e.key.max_concurrent);
        let mut st = e.limits.lock();
        while st
            .window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            st.window.pop_front();
        }
        let over_rpm = rpm.is_some_and(|r| st.window.len() >= r as usize);
        let over_concurrent = max.is_some_and(|m| st.in_flight >= m);
        if over_rpm || over_concurrent {
            // Until the oldest request leaves the window; for concurrency
            // there is no telling: a second.
            let wait = if over_rpm {
                next_free(&st.window, now)
            } else {
                Duration::from_secs(1)
            };
            let headers = rpm.map_or_else(Vec::new, |r| rpm_headers(r, &st.window, now));
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let error = if over_rpm {
                rpm_exceeded(rpm.unwrap_or(0), secs.max(1))
            } else {
                concurrency_exceeded(max.unwrap_or(0))
            };
            return Err(Box::new(Refused { error, headers }));
        }
        if rpm.is_some() {
            st.window.push_back(now);
        }
        st.in_flight = st.in_flight.saturating_add(1);
        let headers = rpm.map_or_else(Vec::new, |r| rpm_headers(r, &st.window, now));
        drop(st);
        Ok(Admission {
            limits: Some(e.limits.clone()),
            headers,
        })
    }
}

/// Time until the oldest request in `window` leaves it.
fn next_free(window: &VecDeque<Instant>, now: Instant) -> Duration {
    window.front().map_or(Duration::ZERO, |t| {
        (*t + WINDOW).saturating_duration_since(now)
    })
}

/// OpenAI's `x-ratelimit-*-requests` headers. The reset is when the next
/// request is allowed again once the limit is reached: when the oldest
/// request counted leaves the window.
fn rpm_headers(rpm: u32, window: &VecDeque<Instant>, now: Instant) -> Headers {
    let used = u32::try_from(window.len()).unwrap_or(u32::MAX);
    vec![
        ("x-ratelimit-limit-requests", rpm.to_string()),
        (
            "x-ratelimit-remaining-requests",
            rpm.saturating_sub(used).to_string(),
        ),
        (
            "x-ratelimit-reset-requests",
            openai_duration(next_free(window, now)),
        ),
    ]
}

/// A duration as OpenAI (Go) writes it: `120ms`, `6s`, `1.5s`, `1m0s`;
/// to the millisecond.
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (m, rest) = (ms / 60_000, ms % 60_000);
    let secs = if rest % 1000 == 0 {
        format!("{}s", rest / 1000)
    } else {
        let frac = format!("{:03}", rest % 1000);
        format!("{}.{}s", rest / 1000, frac.trim_end_matches('0'))
    };
    if m > 0 { format!("{m}m{secs}") } else { secs }
}

/// A request admitted against a key's limits. Dropping it gives back the
/// `max_concurrent` slot.
pub struct Admission {
    limits: Option<Arc<Limits>>,
    /// The `x-ratelimit-*` headers for the response (none without `rpm`).
    pub headers: Headers,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(l) = &self.limits {
            let mut st = l.lock();
            st.in_flight = st.in_flight.saturating_sub(1);
        }
    }
}

/// A request over a key's limits: the 429 and its headers (the
/// `Retry-After` header comes from the error).
pub struct Refused {
    pub error: ProxyError,
    pub headers: Headers,
}

/// 401: the same for a missing header, a malformed one and an unknown key,
/// so that it says nothing about which keys exist.
pub fn invalid_api_key() -> ProxyError {
    ProxyError::new(
        ErrorKind::InvalidApiKey,
        "Missing or invalid API key. Send your client key as `Authorization: Bearer <key>`.",
    )
}

/// 403: the key may not use this model.
pub fn model_not_allowed(model: &str) -> ProxyError {
    ProxyError::new(
        ErrorKind::ModelNotAllowed,
        format!("This API key may not use the model `{model}`."),
    )
    .with_param("model")
}

/// 429: the key's `rpm` is used up.
pub fn rpm_exceeded(rpm: u32, retry_after: u64) -> ProxyError {
    ProxyError::new(
        ErrorKind::RateLimited,
        format!(
            "Rate limit reached for this API key: {rpm} requests per minute. Please try again in {retry_after}s."
        ),
    )
    .with_retry_after(retry_after)
}

/// 429: the key has `max_concurrent` requests in flight.
pub fn concurrency_exceeded(max: u32) -> ProxyError {
    ProxyError::new(
        ErrorKind::RateLimited,
        format!(
            "Too many concurrent requests for this API key: at most {max} at once. Please try again when one has finished."
        ),
    )
    .with_retry_after(1)
}

/// The startup warning for an open proxy (no `auth`) on an address other
/// than loopback.
pub fn open_warning(config: &Config, addr: SocketAddr) -> Option<String> {
    (config.auth.is_none() && !addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr} with no `auth` section: any client that can reach this address can use every model and provider key; configure `auth.keys` or bind to 127.0.0.1"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, KeyDigest};

    fn key(name: &str, secret: &str, rpm: Option<u32>, max: Option<u32>) -> ClientKey {
        ClientKey {
            name: name.into(),
            digest: KeyDigest(sha256(secret.as_bytes())),
            models: None,
            rpm,
            max_concurrent: max,
            admin: false,
        }
    }

    fn auth(keys: Vec<ClientKey>) -> Auth {
        Auth::new(Some(&AuthConfig { keys }), None).0
    }

    #[test]
    fn bearer_forms() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn authenticates_the_right_key_and_refuses_the_rest() {
        let a = auth(vec![
            key("a", "secret-a", None, None),
            key("b", "secret-b", None, None),
        ]);
        for (h, want) in [("Bearer secret-a", "a"), ("Bearer secret-b", "b")] {
            assert_eq!(a.authenticate(Some(h)).ok().unwrap().name(), Some(want));
        }
        let bodies: Vec<_> = [None, Some("Bearer nope"), Some("secret-a"), Some("Bearer ")]
            .into_iter()
            .map(|h| a.authenticate(h).err().unwrap().body())
            .collect();
        assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
        assert_eq!(bodies[0]["error"]["code"], "invalid_api_key");
        let open = Auth::new(None, None).0;
        assert!(open.authenticate(None).ok().unwrap().name().is_none());
    }

    #[test]
    fn rpm_is_a_sliding_minute() {
        let a = auth(vec![key("a", "s", Some(3), None)]);
        let c = a.authenticate(Some("Bearer s")).ok().unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let first = c.admit(at(0)).ok().unwrap();
        assert_eq!(first.headers[1].1, "2");
        assert_eq!(first.headers[2].1, "1m0s");
        drop(first);
        drop(c.admit(at(10_000)).ok().unwrap());
        let third = c.admit(at(20_000)).ok().unwrap();
        assert_eq!(third.headers[1].1, "0");
        assert_eq!(third.headers[2].1, "40s");
        drop(third);
        let refused = c.admit(at(30_500)).err().unwrap();
        assert_eq!(refused.error.status, 429);
        assert_eq!(refused.error.retry_after, Some(30));
        assert_eq!(refused.headers[2].1, "29.5s");
        // The first leaves the window at 60 s: one more, not two.
        assert!(c.admit(at(59_999)).is_err());
        drop(c.admit(at(60_000)).ok().unwrap());
        assert!(c.admit(at(60_001)).is_err());
        drop(c.admit(at(70_000)).ok().unwrap());
    }

    #[test]
    fn concurrency_slots_come_back_on_drop_and_on_panic() {
        let a = auth(vec![key("a", "s", None, Some(2))]);
        let c = a.authenticate(Some("Bearer s")).ok().unwrap();
        let now = Instant::now();
        let one = c.admit(now).ok().unwrap();
        let two = c.admit(now).ok().unwrap();
        let refused = c.admit(now).err().unwrap();
        assert_eq!(refused.error.kind, crate::error::ErrorKind::RateLimited);
        assert_eq!(refused.error.retry_after, Some(1));
        drop(one);
        let three = c.admit(now).ok().unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = three;
            panic!("handler bug");
        }));
        assert!(caught.is_err());
        drop(c.admit(now).ok().unwrap());
        drop(two);
    }

    #[test]
    fn reload_keeps_state_by_name() {
        let (old, _) = Auth::new(
            Some(&AuthConfig {
                keys: vec![key("a", "s", Some(1), None), key("b", "t", Some(1), None)],
            }),
            None,
        );
        let now = Instant::now();
        let c = old.authenticate(Some("Bearer s")).ok().unwrap();
        drop(c.admit(now).ok().unwrap());
        let d = old.authenticate(Some("Bearer t")).ok().unwrap();
        drop(d.admit(now).ok().unwrap());
        // `a` keeps its name (new secret even); `b` is renamed `c`.
        let (new, kept) = Auth::new(
            Some(&AuthConfig {
                keys: vec![key("a", "s2", Some(1), None), key("c", "t", Some(1), None)],
            }),
            Some(&old),
        );
        assert_eq!(kept, vec!["a".to_string()]);
        let c = new.authenticate(Some("Bearer s2")).ok().unwrap();
        assert!(c.admit(now).is_err());
        let d = new.authenticate(Some("Bearer t")).ok().unwrap();
        assert!(d.admit(now).is_ok());
    }

    #[test]
    fn durations_as_openai_writes_them() {
        for (ms, want) in [
            (0, "0ms"),
            (120, "120ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (6000, "6s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
        ] {
            assert_eq!(openai_duration(Duration::from_millis(ms)), want);
        }
    }
}
