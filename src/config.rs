//! Configuration: YAML is parsed into raw serde structs (unknown keys rejected),
//! `${VAR}` / `${VAR:-default}` are expanded from the environment, and a
//! `validate` step turns the result into the runtime [`Config`]. Every error
//! names the YAML path it is about, and all of them are reported at once:
//! duplicate keys by a pass before the typed parse, validation errors as
//! `validate` goes (only a syntax or shape error from serde stops early).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::num::IntErrorKind;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny};
use serde_yaml::Value;

/// Defaults, in one place so the README and `--check-config` can quote them.
pub mod defaults {
    pub const HOST: &str = "127.0.0.1";
    pub const PORT: u16 = 8000;
    pub const WORKERS: usize = 1024;
    pub const QUEUE_TIMEOUT_SECS: f64 = 5.0;
    pub const CLIENT_TIMEOUT_SECS: f64 = 30.0;
    pub const HEADER_TIMEOUT_SECS: f64 = 10.0;
    /// How long a drain (SIGTERM) lets requests in flight run; the systemd
    /// unit's `TimeoutStopSec=` must exceed it.
    pub const SHUTDOWN_TIMEOUT_SECS: f64 = 30.0;
    /// 1,000 streams plus headroom; `TasksMax=` in the unit allows for it.
    pub const MAX_CONNECTIONS: usize = 2048;
    /// Parking a stream's connection saves a thread (~10 MB at 1,000
    /// streams) for two thread wake-ups per stream (~12% CPU per stream at
    /// 16 clients): above bench.sh's 64-client scenarios, far below 1,000.
    pub const PARK_STREAMS_OVER: u64 = 128;
    pub const MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
    pub const LOG_LEVEL: &str = "info";
    pub const MAX_FAILURES: u32 = 3;
    pub const COOLDOWN_SECS: f64 = 600.0;
    pub const TIMEOUT_SECS: f64 = 60.0;
    pub const STREAM_TIMEOUT_SECS: f64 = 600.0;
    pub const STREAM_IDLE_TIMEOUT_SECS: f64 = 60.0;
    pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
    pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
    pub const ANTHROPIC_VERSION: &str = "2023-06-01";
    pub const ANTHROPIC_MAX_TOKENS: u32 = 4096;
    /// A route's share of its tier when `weight` is not set.
    pub const WEIGHT: u32 = 1;
    /// The largest `weight`: a tier's total stays far from overflow.
    pub const MAX_WEIGHT: u32 = 1_000_000;
}

/// A startup error: the config could not be read, parsed or validated. It
/// carries every problem found (validation does not stop at the first), each
/// naming its YAML path.
#[derive(Debug)]
pub struct ConfigError {
    /// The file the config came from, when it came from one.
    file: Option<String>,
    /// At least one.
    messages: Vec<String>,
}

impl ConfigError {
    /// An error that is not about one YAML path.
    pub(crate) fn message(message: impl Into<String>) -> ConfigError {
        ConfigError::one(message)
    }

    fn one(message: impl Into<String>) -> ConfigError {
        ConfigError::many(vec![message.into()])
    }

    fn many(messages: Vec<String>) -> ConfigError {
        debug_assert!(!messages.is_empty());
        ConfigError {
            file: None,
            messages,
        }
    }
}

/// One problem: `FILE: PATH: message`. Several: a count, then one per line.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        match self.messages.as_slice() {
            [one] => f.write_str(one),
            all => {
                write!(f, "{} errors:", all.len())?;
                for m in all {
                    write!(f, "\n  {m}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: &str, msg: impl fmt::Display) -> ConfigError {
    ConfigError::one(format!("{path}: {msg}"))
}

/// A string that must never be printed: `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The real value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// ---------------------------------------------------------------------------
// Raw, as written in YAML. Scalars stay unexpanded here, so serde's errors
// (unknown keys, wrong shapes) carry the path and line of the original file;
// `${VAR}` expansion and number parsing happen in `validate`, which knows
// each value's path.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    failover: RawFailover,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    auth: Option<RawAuth>,
}

/// `auth`: client keys (see `crate::auth`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    keys: Option<Vec<RawClientKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientKey {
    name: Option<String>,
    key: Option<String>,
    key_sha256: Option<String>,
    models: Option<Vec<String>>,
    rpm: Option<Value>,
    max_concurrent: Option<Value>,
    admin: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: Option<String>,
    port: Option<Value>,
    workers: Option<Value>,
    queue_timeout: Option<Value>,
    client_timeout: Option<Value>,
    header_timeout: Option<Value>,
    shutdown_timeout: Option<Value>,
    max_connections: Option<Value>,
    park_streams_over: Option<Value>,
    max_body_bytes: Option<Value>,
    log_level: Option<String>,
    log_format: Option<String>,
    metrics_public: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    max_failures: Option<Value>,
    cooldown: Option<Value>,
}

/// One provider, any kind: `type` picks the kind, and `validate` refuses
/// fields the kind does not use. (A serde-tagged enum would lose the key
/// path in error messages.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    #[serde(rename = "type")]
    kind: String,
    api_key: Option<String>,
    base_url: Option<String>,
    timeout: Option<Value>,
    stream_timeout: Option<Value>,
    stream_idle_timeout: Option<Value>,
    /// Overrides `failover.max_failures` for this provider.
    max_failures: Option<Value>,
    /// Overrides `failover.cooldown` for this provider.
    cooldown: Option<Value>,
    /// azure only.
    api_version: Option<String>,
    /// anthropic only.
    anthropic_version: Option<String>,
    /// anthropic only.
    max_tokens: Option<Value>,
    /// openai and azure: `native` or `translate` (`/v1/responses`).
    responses: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    providers: BTreeMap<String, RawRoute>,
    request_timeout: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    priority: Value,
    weight: Option<Value>,
    model_id: Option<String>,
}

/// Expands variables and parses numbers, naming the path on error, and
/// collects the errors `validate` goes on after.
struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: RefCell<Vec<String>>,
}

impl Expander<'_> {
    /// Record a problem; validation goes on to find the others.
    fn report(&self, e: ConfigError) {
        self.errors.borrow_mut().extend(e.messages);
    }

    /// The value, or, after recording the error, a placeholder: a config
    /// with any error is never used, so the placeholder only lets
    /// validation go on to report the rest.
    fn check<T: Default>(&self, r: Result<T, ConfigError>) -> T {
        r.unwrap_or_else(|e| {
            self.report(e);
            T::default()
        })
    }

    fn string(&self, path: &str, v: Option<String>) -> Result<Option<String>, ConfigError> {
        v.map(|s| {
            if s.contains('$') {
                expand_str(&s, self.env).map_err(|m| err(path, m))
            } else {
                Ok(s)
            }
        })
        .transpose()
    }

    fn number<T>(&self, path: &str, v: Option<Value>) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        let Some(Scalar { text, shown }) = self.scalar(path, v)? else {
            return Ok(None);
        };
        text.parse::<T>()
            .map(Some)
            .map_err(|e| err(path, format!("expected a number, got {shown} ({e})")))
    }

    /// A number's text, expanded and trimmed, and how an error may show it.
    fn scalar(&self, path: &str, v: Option<Value>) -> Result<Option<Scalar>, ConfigError> {
        Ok(Some(match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => Scalar {
                text: n.to_string(),
                shown: n.to_string(),
            },
            // A variable may hold a secret put here by mistake: an error
            // names the variable, not its value.
            Some(Value::String(s)) if s.contains('$') => Scalar {
                text: self
                    .string(path, Some(s.clone()))?
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                shown: format!("{s:?} (value not shown)"),
            },
            Some(Value::String(s)) => Scalar {
                text: s.trim().to_string(),
                shown: format!("{s:?}"),
            },
            Some(other) => Scalar {
                text: String::new(),
                shown: serde_yaml::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            },
        }))
    }

    /// An integer within `range` (inclusive), which must fit `T`.
    fn int<T: TryFrom<i128>>(
        &self,
        path: &str,
        v: Option<Value>,
        range: RangeInclusive<i128>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(Scalar { text, shown }) = self.scalar(path, v)? else {
            return Ok(None);
        };
        let out_of_range = || {
            err(
                path,
                format!("{text} is out of range ({}-{})", range.start(), range.end()),
            )
        };
        match text.parse::<i128>() {
            Ok(n) if range.contains(&n) => T::try_from(n).map(Some).map_err(|_| out_of_range()),
            Ok(_) => Err(out_of_range()),
            Err(e)
                if matches!(
                    e.kind(),
                    IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
                ) =>
            {
                Err(out_of_range())
            }
            Err(_) => Err(err(path, format!("expected an integer, got {shown}"))),
        }
    }

    fn secs(&self, path: &str, v: Option<Value>, default: f64) -> Result<Duration, ConfigError> {
        let v = self.number::<f64>(path, v)?.unwrap_or(default);
        if !v.is_finite() || v <= 0.0 || v > 1e9 {
            return Err(err(
                path,
                format!("must be a positive number of seconds, got {v}"),
            ));
        }
        Ok(Duration::from_secs_f64(v))
    }
}

/// See [`Expander::scalar`].
struct Scalar {
    text: String,
    shown: String,
}

// ---------------------------------------------------------------------------
// Validated, as used at run time.

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub failover: FailoverConfig,
    /// Providers in name order; routes refer to them by index.
    pub providers: Vec<ProviderConfig>,
    /// Models by the name clients use.
    pub models: BTreeMap<String, ModelConfig>,
    /// Client keys; `None`: the proxy is open.
    pub auth: Option<AuthConfig>,
}

/// `auth`: never empty (see `validate_auth`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub keys: Vec<ClientKey>,
}

/// One client key. Only the key's SHA-256 is kept: a `key:` value is
/// hashed during validation and dropped.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// Unique; shown in logs, never the key.
    pub name: String,
    pub digest: KeyDigest,
    /// The models this key may use; `None`: every model.
    pub models: Option<BTreeSet<String>>,
    /// Requests per sliding minute; `None`: unlimited.
    pub rpm: Option<u32>,
    /// Requests in flight at once, streams included; `None`: unlimited.
    pub max_concurrent: Option<u32>,
    /// May call `/metrics` and `/admin/*` (with the observability issue).
    pub admin: bool,
}

/// The SHA-256 of a client key. `Debug` does not print it: a digest of a
/// short key can be reversed by brute force.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest([redacted])")
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Requests handled at once; more wait up to `queue_timeout`.
    pub workers: usize,
    pub queue_timeout: Duration,
    /// Read/write timeout on client sockets (slow or stalled clients).
    pub client_timeout: Duration,
    /// A whole request head must arrive within this, from its first byte.
    pub header_timeout: Duration,
    /// How long a drain waits for requests in flight before ending streams.
    pub shutdown_timeout: Duration,
    /// Open client connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// With more requests than this in flight, a stream's client connection
    /// waits without a thread while the stream runs (tiny_http patch 15).
    pub park_streams_over: u64,
    pub max_body_bytes: u64,
    pub log_level: log::LevelFilter,
    /// How log lines are written (the access log included).
    pub log_format: LogFormat,
    /// Serve `/metrics` to any client when `auth` is not set (otherwise
    /// only to loopback clients).
    pub metrics_public: bool,
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per record.
    #[default]
    Text,
    /// One JSON object per line (Loki, Vector).
    Json,
}

#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub max_failures: u32,
    pub cooldown: Duration,
}

/// The provider kinds, each with the settings only it uses (defaulted once,
/// in `validate`). Matched exhaustively wherever a kind needs handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI or any server speaking the OpenAI Chat Completions API.
    OpenAi,
    /// Azure OpenAI: deployment in the path, `api-version` query, `api-key` header.
    Azure {
        /// The `api-version` query parameter (required, never empty).
        api_version: String,
    },
    /// Anthropic Messages API, translated to and from Chat Completions.
    Anthropic {
        /// The `anthropic-version` header (never empty).
        version: String,
        /// `max_tokens` when the client sends neither `max_tokens` nor
        /// `max_completion_tokens` (Anthropic requires one).
        max_tokens: u32,
    },
}

impl ProviderKind {
    /// The `type` that selects this kind in the YAML.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure { .. } => "azure",
            ProviderKind::Anthropic { .. } => "anthropic",
        }
    }
}

/// How a provider serves `POST /v1/responses` (`providers.NAME.responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsesMode {
    /// The upstream speaks the Responses API: the body goes out with only
    /// `model` replaced, and the answer comes back unchanged.
    Native,
    /// The request is translated to Chat Completions (or, for anthropic,
    /// to Messages through them) and the answer back.
    Translate,
}

impl ResponsesMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponsesMode::Native => "native",
            ResponsesMode::Translate => "translate",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub api_key: Option<Secret>,
    /// Without a trailing slash.
    pub base_url: String,
    pub timeout: Duration,
    pub stream_timeout: Duration,
    /// Longest wait for a stream's next event (comments included).
    pub stream_idle_timeout: Duration,
    /// Consecutive failures that open this provider's breaker: its own
    /// `max_failures`, else `failover.max_failures`.
    pub max_failures: u32,
    /// How long its open breaker keeps it out, and the most a 429's
    /// `Retry-After` does: its own `cooldown`, else `failover.cooldown`.
    pub cooldown: Duration,
    /// How `/v1/responses` reaches it. Always `Translate` for anthropic.
    pub responses: ResponsesMode,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    /// Sorted by priority, lowest first; within a priority, in provider
    /// name order (the order of the YAML map, which serde sorts).
    pub routes: Vec<Route>,
    /// The routes that share a priority, lowest priority first; built once
    /// at load so a request only draws its order (see `router::attempt_order`).
    pub tiers: Vec<Tier>,
    /// Bounds a whole request, every attempt included (for a stream: until
    /// it commits); `None`: only each provider's own timeouts.
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub priority: u32,
    /// Share of its tier, relative to the tier's other weights; 0: a hot
    /// spare, tried only after every weighted route of its tier.
    pub weight: u32,
    pub model_id: String,
}

/// Routes that share a priority: a request picks among them by weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub priority: u32,
    /// Indices into [`ModelConfig::routes`] (contiguous: routes are sorted).
    pub routes: std::ops::Range<usize>,
}

impl ModelConfig {
    /// A model from its routes: sorts them by priority (stable, so equal
    /// priorities keep their order) and groups the tiers.
    pub fn new(name: String, mut routes: Vec<Route>) -> ModelConfig {
        routes.sort_by_key(|r| r.priority);
        let mut tiers: Vec<Tier> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match tiers.last_mut() {
                Some(t) if t.priority == r.priority => t.routes.end = i + 1,
                _ => tiers.push(Tier {
                    priority: r.priority,
                    routes: i..i + 1,
                }),
            }
        }
        ModelConfig {
            name,
            routes,
            tiers,
            request_timeout: None,
        }
    }

    /// A tier's routes.
    pub fn tier(&self, tier: &Tier) -> &[Route] {
        &self.routes[tier.routes.clone()]
    }
}

impl Config {
    /// Read, expand and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Config::from_yaml_with_env(&text, &|k| std::env::var(k).ok()).map_err(|mut e| {
            e.file = Some(path.display().to_string());
            e
        })
    }

    /// Parse from YAML text, expanding variables from the process environment.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, &|k| std::env::var(k).ok())
    }

    /// Parse from YAML text with an explicit environment (tests use this).
    pub fn from_yaml_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::one("the config is empty"));
        }
        let duplicates = duplicate_keys(text);
        if !duplicates.is_empty() {
            return Err(ConfigError::many(duplicates));
        }
        // serde stops at the first error it meets; validation does not.
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::one(e.to_string()))?;
        let x = Expander {
            env,
            errors: RefCell::default(),
        };
        let result = validate(raw, &x);
        let mut errors = x.errors.into_inner();
        match result {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(ConfigError::many(errors)),
            Err(e) => {
                errors.extend(e.messages);
                Err(ConfigError::many(errors))
            }
        }
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// A human-readable summary with secrets redacted, for `--check-config`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let sv = &self.server;
        let _ = writeln!(
            s,
            "server: {}:{} workers={} max_connections={} queue_timeout={}s client_timeout={}s header_timeout={}s shutdown_timeout={}s max_body_bytes={} log_level={}",
            sv.host,
            sv.port,
            sv.workers,
            sv.max_connections,
            sv.queue_timeout.as_secs_f64(),
            sv.client_timeout.as_secs_f64(),
            sv.header_timeout.as_secs_f64(),
            sv.shutdown_timeout.as_secs_f64(),
            sv.max_body_bytes,
            sv.log_level
        );
        let _ = writeln!(
            s,
            "failover: max_failures={} cooldown={}s",
            self.failover.max_failures,
            self.failover.cooldown.as_secs_f64()
        );
        let _ = writeln!(s, "providers ({}):", self.providers.len());
        for p in &self.providers {
            let key = match &p.api_key {
                Some(k) if !k.expose().is_empty() => "set (redacted)",
                _ => "not set",
            };
            let _ = write!(
                s,
                "  {}: type={} base_url={} api_key={} timeout={}s stream_timeout={}s stream_idle_timeout={}s responses={} max_failures={} cooldown={}s",
                p.name,
                p.kind.as_str(),
                p.base_url,
                key,
                p.timeout.as_secs_f64(),
                p.stream_timeout.as_secs_f64(),
                p.stream_idle_timeout.as_secs_f64(),
                p.responses.as_str(),
                // The breaker settings in effect, its own or inherited.
                p.max_failures,
                p.cooldown.as_secs_f64()
            );
            match &p.kind {
                ProviderKind::Azure { api_version } => {
                    let _ = write!(s, " api_version={api_version}");
                }
                ProviderKind::OpenAi | ProviderKind::Anthropic { .. } => {}
            }
            s.push('\n');
        }
        let _ = writeln!(s, "models ({}):", self.models.len());
        for m in self.models.values() {
            let _ = writeln!(s, "  {}:", m.name);
            for t in &m.tiers {
                let routes = m.tier(t);
                let total: u64 = routes.iter().map(|r| u64::from(r.weight)).sum();
                // Spares last, as a request tries them.
                let (weighted, spares): (Vec<&Route>, Vec<&Route>) =
                    routes.iter().partition(|r| r.weight > 0);
                let shares: Vec<String> = weighted
                    .iter()
                    .chain(&spares)
                    .map(|r| {
                        let share = if r.weight == 0 {
                            "spare".to_string()
                        } else {
                            percent(u64::from(r.weight), total)
                        };
                        format!("{}@{} {share}", self.providers[r.provider].name, r.model_id)
                    })
                    .collect();
                let _ = writeln!(s, "    tier {}: {}", t.priority, shares.join(", "));
            }
            if let Some(t) = m.request_timeout {
                let _ = writeln!(s, "    request_timeout={}s", t.as_secs_f64());
            }
        }
        // Names and limits only: never a key nor its digest.
        match &self.auth {
            None => s.push_str("auth: none (open to every client)\n"),
            Some(a) => {
                let _ = writeln!(s, "auth ({} keys):", a.keys.len());
                let or_all = |v: Option<u32>| v.map_or("unlimited".to_string(), |n| n.to_string());
                for k in &a.keys {
                    let models = k.models.as_ref().map_or("all".to_string(), |m| {
                        m.iter().cloned().collect::<Vec<_>>().join(",")
                    });
                    let _ = writeln!(
                        s,
                        "  {}: models={models} rpm={} max_concurrent={} admin={}",
                        k.name,
                        or_all(k.rpm),
                        or_all(k.max_concurrent),
                        k.admin
                    );
                }
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Duplicate keys.

/// Every duplicate mapping key in the document, at any depth, as
/// `PATH: duplicate key`. serde alone keeps the last of two equal keys in a
/// map (two providers with one name: the first silently vanishes) and, in a
/// struct, stops at the first with a message that does not name the key's
/// path. A syntax error is left to the typed parse, which reports its line.
fn duplicate_keys(text: &str) -> Vec<String> {
    let found = RefCell::new(Vec::new());
    let walk = KeyWalk {
        path: String::new(),
        found: &found,
    };
    let _ = walk.deserialize(serde_yaml::Deserializer::from_str(text));
    found.into_inner()
}

/// Visits every node of a YAML document, noting repeated keys per mapping.
struct KeyWalk<'a> {
    /// The YAML path of the node being visited (empty at the root).
    path: String,
    found: &'a RefCell<Vec<String>>,
}

impl KeyWalk<'_> {
    fn child(&self, segment: &str) -> KeyWalk<'_> {
        let path = if self.path.is_empty() {
            segment.to_string()
        } else if segment.starts_with('[') {
            format!("{}{segment}", self.path)
        } else {
            format!("{}.{segment}", self.path)
        };
        KeyWalk {
            path,
            found: self.found,
        }
    }
}

/// A key as the config's paths show it. `local` and `"local"` are the same
/// key to the config (both become the string "local"), so they compare equal.
fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

impl<'de> DeserializeSeed<'de> for KeyWalk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for KeyWalk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while seq
            .next_element_seed(self.child(&format!("[{i}]")))?
            .is_some()
        {
            i = i.saturating_add(1);
        }
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<Value>()? {
            let name = key_name(&key);
            let child = self.child(&name);
            if !seen.insert(name) {
                self.found
                    .borrow_mut()
                    .push(format!("{}: duplicate key", child.path));
            }
            map.next_value_seed(child)?;
        }
        Ok(())
    }

    /// A tagged value (`!Tag value`).
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (IgnoredAny, variant) = data.variant()?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

// ---------------------------------------------------------------------------
// Environment expansion.

/// Expand `${VAR}` and `${VAR:-default}` in one string. `$$` is a literal `$`.
pub fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?} in ${{{expr}}}"));
            }
            match (
                env(name).filter(|v| !v.is_empty() || default.is_none()),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Validation.

/// Every check reports through `x` and goes on, so one run names every
/// problem; the caller turns any report into an error. One function per
/// section below; each returns a value (placeholders where a field was
/// refused) so that the sections after it are still checked.
fn validate(raw: RawConfig, x: &Expander<'_>) -> Result<Config, ConfigError> {
    let server = validate_server(raw.server, x);
    let failover = validate_failover(raw.failover, x);
    let providers: Vec<ProviderConfig> = raw
        .providers
        .into_iter()
        .map(|(name, p)| validate_provider(name, p, &failover, x))
        .collect();
    let models = validate_models(raw.models, &providers, x);
    let auth = raw.auth.map(|a| validate_auth(a, &models, x));
    Ok(Config {
        server,
        failover,
        providers,
        models,
        auth,
    })
}

/// Most `rpm` a key may have: the sliding window keeps one timestamp per
/// request of the last minute (16 bytes each, 1.6 MB at this limit).
pub const MAX_RPM: u32 = 100_000;

/// `auth`. An empty `keys` list is an error, not "refuse everything" nor
/// "open": it is most often a template or a variable gone wrong, and
/// either guess would be wrong for someone (an open proxy leaks spend, a
/// closed one is an outage); a reload with it keeps the old config.
fn validate_auth(
    a: RawAuth,
    models: &BTreeMap<String, ModelConfig>,
    x: &Expander<'_>,
) -> AuthConfig {
    let raw = a.keys.unwrap_or_default();
    if raw.is_empty() {
        x.report(err(
            "auth.keys",
            "at least one key is required (remove `auth` to run open)",
        ));
    }
    let mut keys: Vec<ClientKey> = Vec::with_capacity(raw.len());
    for (i, k) in raw.into_iter().enumerate() {
        let path = format!("auth.keys[{i}]");
        let at = |field: &str| format!("{path}.{field}");
        let name = x.check(x.string(&at("name"), k.name)).unwrap_or_default();
        if name.is_empty() {
            x.report(err(&at("name"), "is required and must not be empty"));
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
        {
            // It goes into log lines as `key=NAME`.
            x.report(err(
                &at("name"),
                "may contain only letters, digits and - _ . : @",
            ));
        } else if keys.iter().any(|o| o.name == name) {
            x.report(err(&at("name"), format!("{name:?} is already used")));
        }
        // The key's value never goes into a message: only its path.
        let digest = match (k.key, k.key_sha256) {
            (Some(_), Some(_)) => {
                x.report(err(&path, "give `key` or `key_sha256`, not both"));
                None
            }
            (None, None) => {
                x.report(err(&path, "`key` or `key_sha256` is required"));
                None
            }
            (Some(key), None) => match x.string(&at("key"), Some(key)) {
                Ok(Some(key)) if !key.is_empty() => {
                    Some(KeyDigest(crate::auth::sha256(key.as_bytes())))
                }
                Ok(_) => {
                    x.report(err(&at("key"), "must not be empty"));
                    None
                }
                Err(e) => {
                    x.report(e);
                    None
                }
            },
            (None, Some(hex)) => {
                let hex = x.check(x.string(&at("key_sha256"), Some(hex)));
                let parsed = hex.as_deref().map(str::trim).and_then(parse_sha256);
                if parsed.is_none() {
                    x.report(err(
                        &at("key_sha256"),
                        "must be 64 hex digits (the SHA-256 of the key)",
                    ));
                }
                parsed.map(KeyDigest)
            }
        };
        if let Some(d) = &digest
            && let Some(o) = keys.iter().find(|o| o.digest == *d)
        {
            x.report(err(
                &path,
                format!("the same key as {:?}; every key must differ", o.name),
            ));
        }
        let allowed = k.models.map(|list| {
            if list.is_empty() {
                x.report(err(
                    &at("models"),
                    "an empty list allows nothing; omit it to allow every model",
                ));
            }
            let mut set = BTreeSet::new();
            for (j, m) in list.into_iter().enumerate() {
                if !models.contains_key(&m) {
                    x.report(err(
                        &format!("{path}.models[{j}]"),
                        format!("no such model {m:?}"),
                    ));
                }
                set.insert(m);
            }
            set
        });
        let rpm = x.check(x.int(&at("rpm"), k.rpm, 1..=i128::from(MAX_RPM)));
        let max_concurrent = x.check(x.int(
            &at("max_concurrent"),
            k.max_concurrent,
            1..=i128::from(u32::MAX),
        ));
        keys.push(ClientKey {
            name,
            digest: digest.unwrap_or(KeyDigest([0; 32])),
            models: allowed,
            rpm,
            max_concurrent,
            admin: k.admin.unwrap_or(false),
        });
    }
    AuthConfig { keys }
}

/// 64 hex digits, either case.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// `server`.
fn validate_server(s: RawServer, x: &Expander<'_>) -> ServerConfig {
    let from_variable = s.log_level.as_deref().is_some_and(|l| l.contains('$'));
    let written = s.log_level.clone();
    let log_level = match x.check(x.string("server.log_level", s.log_level)) {
        None => log::LevelFilter::Info,
        Some(l) => parse_level(&l).unwrap_or_else(|| {
            // A variable's value is not quoted: it may be a key.
            let shown = match written.as_deref() {
                Some(w) if from_variable => format!("{w:?} (value not shown)"),
                _ => format!("{l:?}"),
            };
            x.report(err(
                "server.log_level",
                format!("unknown level {shown} (off, error, warn, info, debug, trace)"),
            ));
            log::LevelFilter::Info
        }),
    };
    let log_format = match x
        .check(x.string("server.log_format", s.log_format))
        .as_deref()
    {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            x.report(err(
                "server.log_format",
                format!("unknown format {other:?} (text, json)"),
            ));
            LogFormat::Text
        }
    };
    ServerConfig {
        host: x
            .check(x.string("server.host", s.host))
            .unwrap_or_else(|| defaults::HOST.to_string()),
        port: x
            .check(x.int("server.port", s.port, 0..=65535))
            .unwrap_or(defaults::PORT),
        workers: x
            .check(x.int("server.workers", s.workers, 1..=100_000))
            .unwrap_or(defaults::WORKERS),
        queue_timeout: x.check(x.secs(
            "server.queue_timeout",
            s.queue_timeout,
            defaults::QUEUE_TIMEOUT_SECS,
        )),
        client_timeout: x.check(x.secs(
            "server.client_timeout",
            s.client_timeout,
            defaults::CLIENT_TIMEOUT_SECS,
        )),
        header_timeout: x.check(x.secs(
            "server.header_timeout",
            s.header_timeout,
            defaults::HEADER_TIMEOUT_SECS,
        )),
        shutdown_timeout: x.check(x.secs(
            "server.shutdown_timeout",
            s.shutdown_timeout,
            defaults::SHUTDOWN_TIMEOUT_SECS,
        )),
        max_connections: x
            .check(x.int("server.max_connections", s.max_connections, 1..=1_000_000))
            .unwrap_or(defaults::MAX_CONNECTIONS),
        park_streams_over: x
            .check(x.int(
                "server.park_streams_over",
                s.park_streams_over,
                0..=1_000_000,
            ))
            .unwrap_or(defaults::PARK_STREAMS_OVER),
        max_body_bytes: x
            .check(x.int(
                "server.max_body_bytes",
                s.max_body_bytes,
                1024..=i128::from(u64::MAX),
            ))
            .unwrap_or(defaults::MAX_BODY_BYTES),
        log_level,
        log_format,
        metrics_public: s.metrics_public.unwrap_or(false),
    }
}

/// `failover`.
fn validate_failover(f: RawFailover, x: &Expander<'_>) -> FailoverConfig {
    let (max_failures, cooldown) = validate_breaker(
        "failover",
        f.max_failures,
        f.cooldown,
        defaults::MAX_FAILURES,
        Duration::from_secs_f64(defaults::COOLDOWN_SECS),
        x,
    );
    FailoverConfig {
        max_failures,
        cooldown,
    }
}

/// `PATH.max_failures` and `PATH.cooldown`, in `failover:` or on one
/// provider (one set of bounds and messages for both), or the defaults
/// given.
fn validate_breaker(
    path: &str,
    max_failures: Option<Value>,
    cooldown: Option<Value>,
    default_max_failures: u32,
    default_cooldown: Duration,
    x: &Expander<'_>,
) -> (u32, Duration) {
    let max_failures = x
        .check(x.int(
            &format!("{path}.max_failures"),
            max_failures,
            1..=i128::from(u32::MAX),
        ))
        .unwrap_or(default_max_failures);
    let cooldown = match cooldown {
        None | Some(Value::Null) => default_cooldown,
        set => x.check(x.secs(&format!("{path}.cooldown"), set, 0.0)),
    };
    (max_failures, cooldown)
}

/// The `type` values, as the error for an unknown one lists them.
const PROVIDER_TYPES: [&str; 3] = ["openai", "azure", "anthropic"];

/// The raw fields that belong to one kind each.
struct RawKindFields {
    api_version: Option<String>,
    anthropic_version: Option<String>,
    max_tokens: Option<Value>,
}

/// `providers.NAME`; `failover` gives the breaker settings it does not set.
fn validate_provider(
    name: String,
    p: RawProvider,
    failover: &FailoverConfig,
    x: &Expander<'_>,
) -> ProviderConfig {
    let path = format!("providers.{name}");
    let at = |field: &str| format!("{path}.{field}");
    let kind = validate_kind(
        &path,
        &p.kind,
        RawKindFields {
            api_version: p.api_version,
            anthropic_version: p.anthropic_version,
            max_tokens: p.max_tokens,
        },
        x,
    );
    // An error shows the URL as written when it came from a variable: a
    // `${VAR}` in the wrong field often holds a key.
    let written = p.base_url.clone();
    let base = x.check(x.string(&at("base_url"), p.base_url));
    let base = match &kind {
        Some(ProviderKind::OpenAi) | None => {
            base.unwrap_or_else(|| defaults::OPENAI_BASE_URL.into())
        }
        Some(ProviderKind::Anthropic { .. }) => {
            base.unwrap_or_else(|| defaults::ANTHROPIC_BASE_URL.into())
        }
        Some(ProviderKind::Azure { .. }) => base.unwrap_or_else(|| {
            x.report(err(
                &at("base_url"),
                "is required for type azure (https://RESOURCE.openai.azure.com)",
            ));
            String::new()
        }),
    };
    // Checked once: an azure provider without one was reported above.
    let base_url = if base.is_empty() {
        String::new()
    } else {
        let shown = match written.as_deref() {
            Some(w) if w.contains('$') => format!("{w:?} (value not shown)"),
            _ => format!("{base:?}"),
        };
        x.check(base_url(&at("base_url"), &base, &shown))
    };
    let (max_failures, cooldown) = validate_breaker(
        &path,
        p.max_failures,
        p.cooldown,
        failover.max_failures,
        failover.cooldown,
        x,
    );
    let responses = validate_responses(&at("responses"), kind.as_ref(), &base_url, p.responses, x);
    ProviderConfig {
        // A placeholder for an unknown type, reported above: the keys every
        // kind has are still checked, and the config is refused anyway.
        kind: kind.unwrap_or(ProviderKind::OpenAi),
        api_key: x
            .check(x.string(&at("api_key"), p.api_key))
            .filter(|k| !k.is_empty())
            .map(Secret::new),
        base_url,
        timeout: x.check(x.secs(&at("timeout"), p.timeout, defaults::TIMEOUT_SECS)),
        stream_timeout: x.check(x.secs(
            &at("stream_timeout"),
            p.stream_timeout,
            defaults::STREAM_TIMEOUT_SECS,
        )),
        stream_idle_timeout: x.check(x.secs(
            &at("stream_idle_timeout"),
            p.stream_idle_timeout,
            defaults::STREAM_IDLE_TIMEOUT_SECS,
        )),
        max_failures,
        cooldown,
        responses,
        name,
    }
}

/// `providers.NAME.responses`: `native` or `translate` on openai and azure,
/// refused on anthropic (whose Messages API has no Responses). Default:
/// native for azure and for OpenAI's own API (`api.openai.com`), translate
/// for every other OpenAI-compatible server, since most serve Responses
/// partly or not at all.
fn validate_responses(
    path: &str,
    kind: Option<&ProviderKind>,
    base_url: &str,
    raw: Option<String>,
    x: &Expander<'_>,
) -> ResponsesMode {
    let set = x.check(x.string(path, raw));
    let default = match kind {
        Some(ProviderKind::Azure { .. }) => ResponsesMode::Native,
        Some(ProviderKind::OpenAi) if is_openai_host(base_url) => ResponsesMode::Native,
        Some(ProviderKind::OpenAi) | Some(ProviderKind::Anthropic { .. }) | None => {
            ResponsesMode::Translate
        }
    };
    let Some(v) = set else {
        return default;
    };
    if let Some(ProviderKind::Anthropic { .. }) = kind {
        x.report(err(
            path,
            "not used by type anthropic (its /v1/responses is always translated)",
        ));
        return default;
    }
    match v.as_str() {
        "native" => ResponsesMode::Native,
        "translate" => ResponsesMode::Translate,
        other => {
            x.report(err(
                path,
                format!("must be native or translate, not {other:?}"),
            ));
            default
        }
    }
}

/// Whether `base_url` (validated, or empty) is OpenAI's own API.
fn is_openai_host(base_url: &str) -> bool {
    let rest = base_url
        .strip_prefix("https://")
        .or_else(|| base_url.strip_prefix("http://"))
        .unwrap_or("");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    host.eq_ignore_ascii_case("api.openai.com")
}

/// `providers.NAME.type` and the fields that belong to one kind: refused on
/// the other kinds, defaulted here (the one place) for their own. `None`
/// for an unknown type (reported).
fn validate_kind(
    path: &str,
    type_name: &str,
    f: RawKindFields,
    x: &Expander<'_>,
) -> Option<ProviderKind> {
    let at = |field: &str| format!("{path}.{field}");
    if !PROVIDER_TYPES.contains(&type_name) {
        x.report(err(
            &at("type"),
            format!(
                "unknown provider type {type_name:?} (expected one of: {})",
                PROVIDER_TYPES.join(", ")
            ),
        ));
        return None;
    }
    for (field, set, owner) in [
        ("api_version", f.api_version.is_some(), "azure"),
        (
            "anthropic_version",
            f.anthropic_version.is_some(),
            "anthropic",
        ),
        ("max_tokens", f.max_tokens.is_some(), "anthropic"),
    ] {
        if set && owner != type_name {
            x.report(err(&at(field), format!("not used by type {type_name}")));
        }
    }
    Some(match type_name {
        "azure" => {
            let api_version = x
                .check(x.string(&at("api_version"), f.api_version))
                .unwrap_or_default();
            if api_version.is_empty() {
                x.report(err(
                    &at("api_version"),
                    "is required for type azure (for example 2024-10-21)",
                ));
            }
            ProviderKind::Azure { api_version }
        }
        "anthropic" => {
            let vpath = at("anthropic_version");
            let version = x
                .check(x.string(&vpath, f.anthropic_version))
                .unwrap_or_else(|| defaults::ANTHROPIC_VERSION.into());
            if version.is_empty() {
                x.report(err(&vpath, "must not be empty"));
            }
            let max_tokens = x
                .check(x.int(&at("max_tokens"), f.max_tokens, 1..=i128::from(u32::MAX)))
                .unwrap_or(defaults::ANTHROPIC_MAX_TOKENS);
            ProviderKind::Anthropic {
                version,
                max_tokens,
            }
        }
        _ => ProviderKind::OpenAi,
    })
}

/// `models`.
fn validate_models(
    raw: BTreeMap<String, RawModel>,
    providers: &[ProviderConfig],
    x: &Expander<'_>,
) -> BTreeMap<String, ModelConfig> {
    if raw.is_empty() {
        x.report(err("models", "at least one model is required"));
    }
    raw.into_iter()
        .map(|(name, m)| (name.clone(), validate_model(name, m, providers, x)))
        .collect()
}

/// `models.NAME`: its routes, sorted by priority; those sharing a
/// priority form a tier.
fn validate_model(
    name: String,
    m: RawModel,
    providers: &[ProviderConfig],
    x: &Expander<'_>,
) -> ModelConfig {
    let path = format!("models.{name}.providers");
    if m.providers.is_empty() {
        x.report(err(&path, "a model needs at least one provider"));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(m.providers.len());
    for (pname, r) in m.providers {
        let rpath = format!("{path}.{pname}");
        let ppath = format!("{rpath}.priority");
        let priority = x.int::<u32>(&ppath, Some(r.priority), 0..=i128::from(u32::MAX));
        let model_id = x
            .check(x.string(&format!("{rpath}.model_id"), r.model_id))
            .unwrap_or_else(|| name.clone());
        if model_id.is_empty() {
            x.report(err(&format!("{rpath}.model_id"), "must not be empty"));
        }
        let weight = x
            .check(x.int(
                &format!("{rpath}.weight"),
                r.weight,
                0..=i128::from(defaults::MAX_WEIGHT),
            ))
            .unwrap_or(defaults::WEIGHT);
        let Some(provider) = providers.iter().position(|p| p.name == pname) else {
            x.report(err(&rpath, "no such provider"));
            continue;
        };
        let priority = match priority {
            Ok(Some(p)) => p,
            Ok(None) => {
                x.report(err(&ppath, "is required"));
                continue;
            }
            Err(e) => {
                x.report(e);
                continue;
            }
        };
        routes.push(Route {
            provider,
            priority,
            weight,
            model_id,
        });
    }
    // Absent or null: no deadline. A value must be positive (the 0 passed
    // as the default is never used).
    let request_timeout = m.request_timeout.filter(|v| !v.is_null()).map(|v| {
        let path = format!("models.{name}.request_timeout");
        x.check(x.secs(&path, Some(v), 0.0))
    });
    ModelConfig {
        request_timeout,
        ..ModelConfig::new(name, routes)
    }
}

/// `part` of `whole` as a percentage for people: `75%`, `33.3%`.
fn percent(part: u64, whole: u64) -> String {
    let p = format!("{:.1}", part as f64 * 100.0 / whole.max(1) as f64);
    format!("{}%", p.strip_suffix(".0").unwrap_or(&p))
}

pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    s.trim().parse::<log::LevelFilter>().ok()
}

/// Accept `http(s)://host[:port][/path]`, return it without a trailing slash.
/// `shown` is how an error quotes the URL (see the caller).
fn base_url(path: &str, url: &str, shown: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| err(path, format!("invalid URL {shown}: {why}"));
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace"));
    }
    if url.contains(['?', '#']) {
        return Err(bad("must not contain a query or fragment"));
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported; use api_key"));
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| bad("unterminated IPv6 address"))?;
        let after = &v6[end + 1..];
        if !after.is_empty() && !after.starts_with(':') {
            return Err(bad("junk after IPv6 address"));
        }
        if let Some(port) = after.strip_prefix(':') {
            port.parse::<u16>().map_err(|_| bad("invalid port"))?;
        }
        &v6[..end]
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if let Some(p) = port {
            p.parse::<u16>().map_err(|_| bad("invalid port"))?;
        }
        host
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(bad("invalid host"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        let e = env(&[("A", "x"), ("EMPTY", "")]);
        assert_eq!(expand_str("${A}", &e).unwrap(), "x");
        assert_eq!(expand_str("a-${A}-b", &e).unwrap(), "a-x-b");
        assert_eq!(expand_str("${B:-dflt}", &e).unwrap(), "dflt");
        assert_eq!(expand_str("${EMPTY:-dflt}", &e).unwrap(), "dflt");
        assert_eq!(expand_str("${EMPTY}", &e).unwrap(), "");
        assert_eq!(expand_str("$$5 and $x", &e).unwrap(), "$5 and $x");
        assert!(expand_str("${B}", &e).unwrap_err().contains("B is not set"));
        assert!(expand_str("${A", &e).is_err());
    }

    #[test]
    fn duplicate_keys_in_sequences_and_tagged_values() {
        assert_eq!(
            duplicate_keys("a:\n  - {x: 1, y: 2}\n  - {x: 1, x: 2}\n"),
            ["a[1].x: duplicate key"]
        );
        assert_eq!(
            duplicate_keys("a: !tag {x: 1, x: 2}\n1: a\n\"1\": b\n"),
            ["a.x: duplicate key", "1: duplicate key"]
        );
        assert!(duplicate_keys("a: {x: 1}\nb: {x: 1}\n").is_empty());
        // A syntax error is the typed parse's to report.
        assert!(duplicate_keys("a: [1, 2\n").is_empty());
    }

    #[test]
    fn base_url_checks() {
        assert_eq!(
            base_url("p", "http://h:1/v1/", "").unwrap(),
            "http://h:1/v1"
        );
        assert!(base_url("p", "ftp://h", "").is_err());
        assert!(base_url("p", "http://", "").is_err());
        assert!(base_url("p", "http://h:99999", "").is_err());
        assert!(base_url("p", "http://[::1]:80/v1", "").is_ok());
        assert!(base_url("p", "http://h x", "").is_err());
    }
}
