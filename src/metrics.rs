//! `GET /metrics`: a registry of atomic counters and histograms whose label
//! sets are fixed when the config is loaded (model × provider × key × a few
//! fixed enums, each with an `unknown` slot), and its Prometheus text
//! exposition (format 0.0.4). The request path only indexes arrays and does
//! relaxed atomic adds: no lock, no allocation. A client cannot create a
//! series: a model, key or status the config does not name is `unknown`.
//!
//! Also the one rule for who may see operator endpoints
//! ([`operator_access`]), shared by `/metrics` and `/admin/*`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::app::App;
use crate::auth::Client;
use crate::config::Config;
use crate::error::{ErrorKind, ProxyError};
use crate::openai::Endpoint;

/// Histogram bucket bounds in seconds: from the proxy's sub-millisecond
/// overhead to ten-minute streams.
pub const BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 600.0,
];
/// The same bounds in microseconds, for the comparison on the request path.
const BUCKETS_US: [u64; 20] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    600_000_000,
];

/// The `endpoint` label: what a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ep {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    Health,
    Metrics,
    Admin,
    /// Unknown paths and methods.
    Other,
}

impl Ep {
    const ALL: [Ep; 9] = [
        Ep::Chat,
        Ep::Completions,
        Ep::Embeddings,
        Ep::Responses,
        Ep::Models,
        Ep::Health,
        Ep::Metrics,
        Ep::Admin,
        Ep::Other,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Ep::Chat => "chat",
            Ep::Completions => "completions",
            Ep::Embeddings => "embeddings",
            Ep::Responses => "responses",
            Ep::Models => "models",
            Ep::Health => "health",
            Ep::Metrics => "metrics",
            Ep::Admin => "admin",
            Ep::Other => "other",
        }
    }
    pub fn of(e: Endpoint) -> Ep {
        match e {
            Endpoint::Chat => Ep::Chat,
            Endpoint::Completions => Ep::Completions,
            Endpoint::Embeddings => Ep::Embeddings,
            Endpoint::Responses => Ep::Responses,
        }
    }
}

/// The `outcome` label of an upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered (2xx, or a stream that committed).
    Success,
    /// The attempt failed in a way that moves on to the next provider.
    Failover,
    /// The upstream judged the request bad (a 4xx passed to the client).
    ClientError,
    /// The model's `request_timeout` cut the attempt short; not counted
    /// against the provider.
    Deadline,
    /// The client left during the attempt, which was abandoned; not
    /// counted against the provider.
    ClientGone,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Failover,
        Outcome::ClientError,
        Outcome::Deadline,
        Outcome::ClientGone,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failover => "failover",
            Outcome::ClientError => "client_error",
            Outcome::Deadline => "deadline",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Statuses with a series of their own; any other is `code="other"`.
/// 499 is nginx's "client closed request", logged for a client that left
/// while its request was routed.
const CODES: [u16; 20] = [
    200, 400, 401, 402, 403, 404, 405, 408, 409, 413, 422, 429, 431, 499, 500, 501, 502, 503, 504,
    505,
];

fn code_index(status: u16) -> usize {
    CODES
        .iter()
        .position(|&c| c == status)
        .unwrap_or(CODES.len())
}

/// A histogram: per-bucket (not cumulative) counts, then `+Inf`, and the
/// sum in microseconds.
#[derive(Default)]
struct Hist {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Hist {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
    fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |a, b| a.saturating_add(b.load(Relaxed)))
    }
    fn copy_from(&self, o: &Hist) {
        for (a, b) in self.buckets.iter().zip(&o.buckets) {
            a.store(b.load(Relaxed), Relaxed);
        }
        self.sum_us.store(o.sum_us.load(Relaxed), Relaxed);
    }
}

fn counters(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn hists(n: usize) -> Vec<Hist> {
    (0..n).map(|_| Hist::default()).collect()
}

/// Counts one request in flight while alive.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The registry of one config. Indexes: models in name order then
/// `unknown`; providers in config order (every provider has a name in the
/// config, so no `unknown`); keys in config order then `unknown` (no key:
/// `auth` unset, or a request refused before its key was known).
pub struct Metrics {
    models: Vec<String>,
    providers: Vec<String>,
    keys: Vec<String>,
    /// `[endpoint][model][key][code]`
    requests: Vec<AtomicU64>,
    /// `[endpoint][model]`
    request_duration: Vec<Hist>,
    /// `[provider][model][outcome]`
    upstream: Vec<AtomicU64>,
    /// `[provider]`
    upstream_duration: Vec<Hist>,
    /// `[model][provider]`
    failovers: Vec<AtomicU64>,
    /// `[provider]`
    breaker_opened: Vec<AtomicU64>,
    /// `[provider][model][key][prompt, completion]`
    tokens: Vec<AtomicU64>,
    overhead: Hist,
    /// Requests being handled; one counter for the server's lifetime,
    /// shared by the registries of every reload.
    in_flight: Arc<AtomicI64>,
}

/// What one request reports to the registry when it ends.
pub struct RequestRecord<'a> {
    pub endpoint: Ep,
    pub model: Option<&'a str>,
    pub key: Option<&'a str>,
    pub status: u16,
    pub total: Duration,
    /// Time spent waiting on upstreams (see [`Metrics::request`]).
    pub upstream: Duration,
}

impl Metrics {
    /// The registry for `config`. With `previous` (a reload), every series
    /// whose labels still exist keeps its value, so counters do not go
    /// back; series of removed names are dropped. Increments made on the
    /// previous registry by requests that end after the reload are lost.
    pub fn new(config: &Config, previous: Option<&Metrics>) -> Metrics {
        let models: Vec<String> = config.models.keys().cloned().collect();
        let providers: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let keys: Vec<String> = config
            .auth
            .as_ref()
            .map(|a| a.keys.iter().map(|k| k.name.clone()).collect())
            .unwrap_or_default();
        let (m, p, k) = (models.len() + 1, providers.len(), keys.len() + 1);
        let e = Ep::ALL.len();
        let c = CODES.len() + 1;
        let o = Outcome::ALL.len();
        let new = Metrics {
            requests: counters(e * m * k * c),
            request_duration: hists(e * m),
            upstream: counters(p * m * o),
            upstream_duration: hists(p),
            failovers: counters(m * p),
            breaker_opened: counters(p),
            tokens: counters(p * m * k * 2),
            overhead: Hist::default(),
            in_flight: previous.map_or_else(Arc::default, |p| p.in_flight.clone()),
            models,
            providers,
            keys,
        };
        if let Some(old) = previous {
            new.carry_over(old);
        }
        new
    }

    fn carry_over(&self, old: &Metrics) {
        let map = |new: &[String], old: &[String], unknown: bool| -> Vec<Option<usize>> {
            let mut v: Vec<Option<usize>> = new
                .iter()
                .map(|n| old.iter().position(|o| o == n))
                .collect();
            if unknown {
                v.push(Some(old.len()));
            }
            v
        };
        let mm = map(&self.models, &old.models, true);
        let pm = map(&self.providers, &old.providers, false);
        let km = map(&self.keys, &old.keys, true);
        let (m, p, k) = (mm.len(), pm.len(), km.len());
        let (om, op, ok) = (
            old.models.len() + 1,
            old.providers.len(),
            old.keys.len() + 1,
        );
        let (e, c, o) = (Ep::ALL.len(), CODES.len() + 1, Outcome::ALL.len());
        let copy = |a: &AtomicU64, b: &AtomicU64| a.store(b.load(Relaxed), Relaxed);
        for ei in 0..e {
            for (mi, omi) in mm.iter().enumerate() {
                let Some(omi) = *omi else { continue };
                self.request_duration[ei * m + mi].copy_from(&old.request_duration[ei * om + omi]);
                for (ki, oki) in km.iter().enumerate() {
                    let Some(oki) = *oki else { continue };
                    for ci in 0..c {
                        copy(
                            &self.requests[((ei * m + mi) * k + ki) * c + ci],
                            &old.requests[((ei * om + omi) * ok + oki) * c + ci],
                        );
                    }
                }
            }
        }
        for (pi, opi) in pm.iter().enumerate() {
            let Some(opi) = *opi else { continue };
            self.upstream_duration[pi].copy_from(&old.upstream_duration[opi]);
            copy(&self.breaker_opened[pi], &old.breaker_opened[opi]);
            for (mi, omi) in mm.iter().enumerate() {
                let Some(omi) = *omi else { continue };
                copy(&self.failovers[mi * p + pi], &old.failovers[omi * op + opi]);
                for oi in 0..o {
                    copy(
                        &self.upstream[(pi * m + mi) * o + oi],
                        &old.upstream[(opi * om + omi) * o + oi],
                    );
                }
                for (ki, oki) in km.iter().enumerate() {
                    let Some(oki) = *oki else { continue };
                    for t in 0..2 {
                        copy(
                            &self.tokens[((pi * m + mi) * k + ki) * 2 + t],
                            &old.tokens[((opi * om + omi) * ok + oki) * 2 + t],
                        );
                    }
                }
            }
        }
        self.overhead.copy_from(&old.overhead);
    }

    /// Count a request in flight until the guard is dropped.
    /// Requests being handled now (this one included, once entered).
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.in_flight.load(Relaxed)).unwrap_or(0)
    }

    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(&self.in_flight)
    }

    /// The index of a model name (`unknown` if the config has no such model).
    pub fn model(&self, name: Option<&str>) -> usize {
        name.and_then(|n| self.models.binary_search_by(|m| m.as_str().cmp(n)).ok())
            .unwrap_or(self.models.len())
    }

    fn key(&self, name: Option<&str>) -> usize {
        name.and_then(|n| self.keys.iter().position(|k| k == n))
            .unwrap_or(self.keys.len())
    }

    /// One request ended. `upstream` is the time spent waiting on
    /// upstreams; the proxy's overhead is `total` minus it.
    pub fn request(&self, r: &RequestRecord<'_>) {
        let (m, k, c) = (self.models.len() + 1, self.keys.len() + 1, CODES.len() + 1);
        let ei = Ep::ALL.iter().position(|&e| e == r.endpoint).unwrap_or(0);
        let mi = self.model(r.model);
        let ki = self.key(r.key);
        let ci = code_index(r.status);
        self.requests[((ei * m + mi) * k + ki) * c + ci].fetch_add(1, Relaxed);
        self.request_duration[ei * m + mi].observe(r.total);
        self.overhead.observe(r.total.saturating_sub(r.upstream));
    }

    /// One upstream attempt ended with `outcome` after `took` (to the
    /// response head, or to the first event of a stream).
    pub fn upstream(&self, provider: usize, model: usize, outcome: Outcome, took: Duration) {
        let (m, o) = (self.models.len() + 1, Outcome::ALL.len());
        let oi = Outcome::ALL.iter().position(|&x| x == outcome).unwrap_or(0);
        if let Some(a) = self.upstream.get((provider * m + model) * o + oi) {
            a.fetch_add(1, Relaxed);
        }
        if let Some(h) = self.upstream_duration.get(provider) {
            h.observe(took);
        }
    }

    /// The router left `provider` for the next one.
    pub fn failover(&self, model: usize, provider: usize) {
        let p = self.providers.len();
        if let Some(a) = self.failovers.get(model * p + provider) {
            a.fetch_add(1, Relaxed);
        }
    }

    /// `provider`'s breaker opened (or re-opened after a failed probe).
    pub fn breaker_opened(&self, provider: usize) {
        if let Some(a) = self.breaker_opened.get(provider) {
            a.fetch_add(1, Relaxed);
        }
    }

    /// Tokens an upstream reported in `usage`.
    pub fn tokens(&self, provider: usize, model: usize, key: Option<&str>, usage: Usage) {
        let (m, k) = (self.models.len() + 1, self.keys.len() + 1);
        let i = ((provider * m + model) * k + self.key(key)) * 2;
        if let (Some(p), Some(c)) = (self.tokens.get(i), self.tokens.get(i + 1)) {
            p.fetch_add(usage.prompt, Relaxed);
            c.fetch_add(usage.completion, Relaxed);
        }
    }

    /// The text exposition of every series, the providers' breaker state
    /// (from `app.health`) and the process metrics.
    pub fn render(&self, app: &App) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let models = |i: usize| self.models.get(i).map_or("unknown", |s| s.as_str());
        let keys = |i: usize| self.keys.get(i).map_or("unknown", |s| s.as_str());
        let (m, p, k) = (
            self.models.len() + 1,
            self.providers.len(),
            self.keys.len() + 1,
        );
        let c = CODES.len() + 1;

        head(
            &mut out,
            "llm_proxy_requests_total",
            "counter",
            "Requests answered, by endpoint, model, client key and HTTP status.",
        );
        for (ei, ep) in Ep::ALL.iter().enumerate() {
            for mi in 0..m {
                for ki in 0..k {
                    for ci in 0..c {
                        let v = self.requests[((ei * m + mi) * k + ki) * c + ci].load(Relaxed);
                        if v == 0 {
                            continue;
                        }
                        let code = CODES.get(ci).map_or("other".to_string(), |c| c.to_string());
                        let _ = writeln!(
                            out,
                            "llm_proxy_requests_total{{endpoint=\"{}\",model=\"{}\",key=\"{}\",code=\"{}\"}} {v}",
                            ep.as_str(),
                            esc(models(mi)),
                            esc(keys(ki)),
                            code
                        );
                    }
                }
            }
        }

        head(
            &mut out,
            "llm_proxy_request_duration_seconds",
            "histogram",
            "Whole requests, streams until their last byte.",
        );
        for (ei, ep) in Ep::ALL.iter().enumerate() {
            for mi in 0..m {
                let labels = format!("endpoint=\"{}\",model=\"{}\"", ep.as_str(), esc(models(mi)));
                hist(
                    &mut out,
                    "llm_proxy_request_duration_seconds",
                    &labels,
                    &self.request_duration[ei * m + mi],
                    false,
                );
            }
        }

        head(
            &mut out,
            "llm_proxy_upstream_requests_total",
            "counter",
            "Upstream attempts, by provider, model and outcome.",
        );
        for pi in 0..p {
            for mi in 0..m {
                for (oi, o) in Outcome::ALL.iter().enumerate() {
                    let v = self.upstream[(pi * m + mi) * Outcome::ALL.len() + oi].load(Relaxed);
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "llm_proxy_upstream_requests_total{{provider=\"{}\",model=\"{}\",outcome=\"{}\"}} {v}",
                            esc(&self.providers[pi]),
                            esc(models(mi)),
                            o.as_str()
                        );
                    }
                }
            }
        }

        head(
            &mut out,
            "llm_proxy_upstream_duration_seconds",
            "histogram",
            "Upstream attempts to the response head, or to the first event of a stream.",
        );
        for pi in 0..p {
            let labels = format!("provider=\"{}\"", esc(&self.providers[pi]));
            hist(
                &mut out,
                "llm_proxy_upstream_duration_seconds",
                &labels,
                &self.upstream_duration[pi],
                false,
            );
        }

        head(
            &mut out,
            "llm_proxy_failovers_total",
            "counter",
            "Failovers, by model and the provider that was left.",
        );
        for mi in 0..m {
            for pi in 0..p {
                let v = self.failovers[mi * p + pi].load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "llm_proxy_failovers_total{{model=\"{}\",provider=\"{}\"}} {v}",
                        esc(models(mi)),
                        esc(&self.providers[pi])
                    );
                }
            }
        }

        head(
            &mut out,
            "llm_proxy_provider_up",
            "gauge",
            "1 when requests may go to the provider, 0 while its breaker is open or it is disabled.",
        );
        for pi in 0..p {
            let up = app.health.snapshot(pi).available();
            let _ = writeln!(
                out,
                "llm_proxy_provider_up{{provider=\"{}\"}} {}",
                esc(&self.providers[pi]),
                u8::from(up)
            );
        }
        head(
            &mut out,
            "llm_proxy_provider_consecutive_failures",
            "gauge",
            "Failures of the provider since its last success.",
        );
        for pi in 0..p {
            let _ = writeln!(
                out,
                "llm_proxy_provider_consecutive_failures{{provider=\"{}\"}} {}",
                esc(&self.providers[pi]),
                app.health.consecutive_failures(pi)
            );
        }
        head(
            &mut out,
            "llm_proxy_breaker_opened_total",
            "counter",
            "Times the provider's breaker opened.",
        );
        for pi in 0..p {
            let _ = writeln!(
                out,
                "llm_proxy_breaker_opened_total{{provider=\"{}\"}} {}",
                esc(&self.providers[pi]),
                self.breaker_opened[pi].load(Relaxed)
            );
        }

        head(
            &mut out,
            "llm_proxy_tokens_total",
            "counter",
            "Tokens the upstreams reported in usage, by type (prompt, completion).",
        );
        for pi in 0..p {
            for mi in 0..m {
                for ki in 0..k {
                    for (t, ty) in ["prompt", "completion"].iter().enumerate() {
                        let v = self.tokens[((pi * m + mi) * k + ki) * 2 + t].load(Relaxed);
                        if v > 0 {
                            let _ = writeln!(
                                out,
                                "llm_proxy_tokens_total{{provider=\"{}\",model=\"{}\",key=\"{}\",type=\"{ty}\"}} {v}",
                                esc(&self.providers[pi]),
                                esc(models(mi)),
                                esc(keys(ki))
                            );
                        }
                    }
                }
            }
        }

        head(
            &mut out,
            "llm_proxy_in_flight_requests",
            "gauge",
            "Requests being handled, streams included.",
        );
        let _ = writeln!(
            out,
            "llm_proxy_in_flight_requests {}",
            self.in_flight.load(Relaxed).max(0)
        );
        head(
            &mut out,
            "llm_proxy_overhead_seconds",
            "histogram",
            "The proxy's own time per request: the total minus the time spent waiting on upstreams.",
        );
        hist(
            &mut out,
            "llm_proxy_overhead_seconds",
            "",
            &self.overhead,
            true,
        );
        process(&mut out);
        out
    }
}

/// `prompt_tokens` and `completion_tokens` of an upstream's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

impl Usage {
    /// The `usage` of a complete answer (chat, completion, embeddings), if
    /// it has one. Cheap on large bodies (embeddings run to megabytes):
    /// the upstreams put `usage` last, so only the value after the last
    /// `"usage"` key is parsed, not the body. Quotes inside a string are
    /// escaped, so a match followed by `:` is a key (nested keys named
    /// `usage` before the top-level one are passed over).
    pub fn of_body(body: &[u8]) -> Option<Usage> {
        #[derive(serde::Deserialize)]
        struct Counts {
            #[serde(default)]
            prompt_tokens: u64,
            #[serde(default)]
            completion_tokens: u64,
        }
        const KEY: &[u8] = b"\"usage\"";
        let at = body.windows(KEY.len()).rposition(|w| w == KEY)?;
        let rest = &body[at + KEY.len()..];
        let rest = rest.trim_ascii_start().strip_prefix(b":")?;
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Option<Counts>>();
        let counts = values.next()?.ok()??;
        Some(Usage {
            prompt: counts.prompt_tokens,
            completion: counts.completion_tokens,
        })
    }

    /// The `usage` of a Responses `response` object (`input_tokens`,
    /// `output_tokens`), if it has one. A typed probe of the top-level
    /// member, not [`Usage::of_body`]'s scan for the last `"usage"` key:
    /// in a Response, `tools` (whose schemas may have a property named
    /// `usage`) can come after it.
    pub fn of_response(body: &[u8]) -> Option<Usage> {
        #[derive(serde::Deserialize)]
        struct Counts {
            #[serde(default)]
            input_tokens: u64,
            #[serde(default)]
            output_tokens: u64,
        }
        #[derive(serde::Deserialize)]
        struct Probe {
            usage: Option<Counts>,
        }
        let counts = serde_json::from_slice::<Probe>(body).ok()?.usage?;
        Some(Usage {
            prompt: counts.input_tokens,
            completion: counts.output_tokens,
        })
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A histogram's series; one with no observations is left out unless
/// `always`.
fn hist(out: &mut String, name: &str, labels: &str, h: &Hist, always: bool) {
    let count = h.count();
    if count == 0 && !always {
        return;
    }
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cum = 0u64;
    for (i, b) in BUCKETS.iter().enumerate() {
        cum = cum.saturating_add(h.buckets[i].load(Relaxed));
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let sum = h.sum_us.load(Relaxed) as f64 / 1e6;
    let braces = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("{{{s}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
    let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
}

/// A label value escaped for the text format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Process start, for `process_start_time_seconds` when /proc is missing.
static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Note the process start time (call once, early).
pub fn note_start() {
    START.get_or_init(now_secs);
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The standard `process_*` metrics, from /proc/self (Linux).
fn process(out: &mut String) {
    const TICKS: f64 = 100.0; // USER_HZ on every Linux architecture
    const PAGE: u64 = 4096;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `state` is field 3, so field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(ut), Some(st)) = (field(14), field(15)) {
        head(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {}",
            (ut + st) as f64 / TICKS
        );
    }
    if let Some(rss) = field(24) {
        head(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(
            out,
            "process_resident_memory_bytes {}",
            rss.saturating_mul(PAGE)
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        head(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {}", dir.count().saturating_sub(1));
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let start = match (boot, field(22)) {
        (Some(b), Some(t)) => b as f64 + t as f64 / TICKS,
        _ => *START.get_or_init(now_secs),
    };
    head(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {start}");
}

/// Who may read `/metrics` and use `/admin/*`: one rule for both. With
/// `auth` configured, a key with `admin: true` (any other key: 403
/// `admin_required`; no key never gets here, it is a 401 first). Without
/// `auth`, loopback clients only (403 `admin_loopback_only`, as nginx's
/// `allow 127.0.0.1; deny all;`), except that `public` (`/metrics` with
/// `server.metrics_public: true`) serves everyone. The admin API is never
/// public: it changes routing.
pub fn operator_access(
    app: &App,
    client: Option<&Client<'_>>,
    peer: Option<SocketAddr>,
    public: bool,
) -> Result<(), ProxyError> {
    match client {
        Some(c @ Client::Key(_)) if c.is_admin() => Ok(()),
        _ if !app.auth.is_open() => Err(ProxyError::new(
            ErrorKind::AdminRequired,
            "This endpoint needs a client key with `admin: true`",
        )),
        _ if public || peer.is_some_and(|p| p.ip().is_loopback()) => Ok(()),
        _ => Err(ProxyError::new(
            ErrorKind::AdminLoopbackOnly,
            "Served only to loopback clients when no auth keys are configured \
             (server.metrics_public: true serves /metrics to all)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_in_seconds_and_microseconds_agree() {
        for (s, us) in BUCKETS.iter().zip(BUCKETS_US) {
            assert_eq!((s * 1e6).round() as u64, us);
        }
    }

    #[test]
    fn an_observation_lands_in_the_first_bucket_at_or_over_it() {
        let h = Hist::default();
        h.observe(Duration::from_micros(100)); // le=0.0001
        h.observe(Duration::from_micros(101)); // le=0.00025
        h.observe(Duration::from_secs(3600)); // +Inf
        assert_eq!(h.buckets[0].load(Relaxed), 1);
        assert_eq!(h.buckets[1].load(Relaxed), 1);
        assert_eq!(h.buckets[BUCKETS.len()].load(Relaxed), 1);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn usage_is_read_from_a_body_and_absent_or_null_is_none() {
        let u = Usage::of_body(
            br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
        );
        assert_eq!(
            u,
            Some(Usage {
                prompt: 3,
                completion: 5
            })
        );
        assert_eq!(Usage::of_body(br#"{"usage":null}"#), None);
        assert_eq!(Usage::of_body(br#"{"choices":[]}"#), None);
        assert_eq!(Usage::of_body(b"not json"), None);
        // Embeddings: only prompt tokens; the last `usage` key counts.
        let u = Usage::of_body(
            br#"{"data":[{"x":"\"usage\": {}"}],"usage": {"prompt_tokens":9,"total_tokens":9}}"#,
        );
        assert_eq!(
            u,
            Some(Usage {
                prompt: 9,
                completion: 0
            })
        );
        assert_eq!(Usage::of_body(br#"{"usage":{"prompt_tokens":-1}}"#), None);
    }

    #[test]
    fn a_response_objects_usage_is_its_own_not_a_tools_property() {
        // `usage` last would fool the `rposition` probe of of_body: here a
        // tool's schema has a property named `usage` after the real one.
        let body = br#"{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":0},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":11},"tools":[{"type":"function","name":"f","parameters":{"properties":{"usage":{"type":"string"}}}}]}"#;
        assert_eq!(
            Usage::of_response(body),
            Some(Usage {
                prompt: 7,
                completion: 4
            })
        );
        // A chat body's counts are not a Response's.
        assert_eq!(
            Usage::of_response(br#"{"object":"response","usage":{"prompt_tokens":3}}"#),
            Some(Usage::default())
        );
        assert_eq!(
            Usage::of_response(br#"{"object":"response","usage":null}"#),
            None
        );
        assert_eq!(Usage::of_response(br#"{"object":"response"}"#), None);
        assert_eq!(Usage::of_response(b"not json"), None);
        assert_eq!(
            Usage::of_response(br#"{"usage":{"input_tokens":-1,"output_tokens":2}}"#),
            None
        );
    }

    fn app(yaml: &str) -> App {
        let config = Config::from_yaml(yaml).unwrap();
        let phase = std::sync::Arc::new(crate::lifecycle::Phase::default());
        App::new(config, None, phase, std::sync::Weak::new(), None).0
    }

    const BASE: &str = "providers:\n  up: {type: openai, base_url: 'http://127.0.0.1:9/v1'}\nmodels:\n  m:\n    providers:\n      up: {priority: 0}\n";

    #[test]
    fn without_auth_only_loopback_peers_unless_metrics_are_public() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let closed = app(BASE);
        let open = Some(&Client::Open);
        assert!(operator_access(&closed, open, Some(local), false).is_ok());
        assert!(operator_access(&closed, open, Some(local6), false).is_ok());
        for peer in [Some(remote), None] {
            let err = operator_access(&closed, open, peer, false).unwrap_err();
            assert_eq!(err.kind, ErrorKind::AdminLoopbackOnly);
            assert!(err.message.contains("metrics_public"), "{}", err.message);
        }
        // Public serves everyone (the caller passes metrics_public for
        // /metrics only).
        assert!(operator_access(&closed, open, Some(remote), true).is_ok());
    }

    #[test]
    fn with_auth_only_admin_keys_wherever_they_come_from() {
        let yaml = format!(
            "{BASE}auth:\n  keys:\n    - {{name: ops, key: sk-ops-0123456789abcdef, admin: true}}\n    - {{name: dev, key: sk-dev-0123456789abcdef}}\n"
        );
        let a = app(&yaml);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let ops = a
            .auth
            .authenticate(Some("Bearer sk-ops-0123456789abcdef"))
            .ok()
            .unwrap();
        let dev = a
            .auth
            .authenticate(Some("Bearer sk-dev-0123456789abcdef"))
            .ok()
            .unwrap();
        for peer in [local, remote] {
            assert!(operator_access(&a, Some(&ops), Some(peer), false).is_ok());
            // With auth, `public` changes nothing: the key decides.
            for public in [false, true] {
                let err = operator_access(&a, Some(&dev), Some(peer), public).unwrap_err();
                assert_eq!(err.kind, ErrorKind::AdminRequired);
                // No client at all (never reached with auth set, but refused).
                let err = operator_access(&a, None, Some(peer), public).unwrap_err();
                assert_eq!(err.kind, ErrorKind::AdminRequired);
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
