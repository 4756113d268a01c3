//! The state every request handler shares: the config, one provider (and so
//! one ureq agent) per configured provider, and the breakers. A live reload
//! builds a new `App` (see `crate::lifecycle`); requests in flight keep the
//! one they started on.

use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::Auth;
use crate::config::Config;
use crate::health::{Health, Settings, SystemClock};
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::providers::{self, Provider};

/// Called at the start of every request with the request path. Embedders
/// and tests use it to observe (or, in tests, to fault) request handling.
pub type Hook = Arc<dyn Fn(&str) + Send + Sync>;

pub struct App {
    pub config: Config,
    /// Indexed like `config.providers`.
    pub providers: Vec<Box<dyn Provider>>,
    pub health: Health,
    /// Client keys and their limit state (open without `auth`).
    pub auth: Auth,
    /// Counters and histograms for `/metrics` (carried over a reload).
    pub metrics: Metrics,
    /// Unix time the proxy started, reported as each model's `created`.
    pub created: u64,
    pub hook: Option<Hook>,
    /// Running or draining: readiness, and when streams must end.
    pub phase: Arc<Phase>,
    /// For `lifecycle.reload()` from a handler (`POST /admin/reload`).
    pub lifecycle: Weak<Lifecycle>,
}

impl App {
    /// Build the app for `config`. With `previous` (a reload), providers
    /// whose (name, type, base URL) is unchanged keep their breaker state
    /// (their indexes are returned), and client keys whose name is
    /// unchanged keep their rate-limit and concurrency state.
    pub fn new(
        config: Config,
        hook: Option<Hook>,
        phase: Arc<Phase>,
        lifecycle: Weak<Lifecycle>,
        previous: Option<&App>,
    ) -> (App, Vec<usize>) {
        let providers = config
            .providers
            .iter()
            .map(|p| providers::build(p, config.server.workers))
            .collect();
        // The key says which breaker is the provider's; its settings may
        // change with a reload (see `Health::carry_over`).
        let breakers = config
            .providers
            .iter()
            .map(|p| {
                let key = format!("{}\n{}\n{}", p.name, p.kind.as_str(), p.base_url);
                let settings = Settings {
                    max_failures: p.max_failures,
                    cooldown: p.cooldown,
                };
                (key, settings)
            })
            .collect();
        let (health, kept) =
            Health::carry_over(breakers, Box::new(SystemClock), previous.map(|p| &p.health));
        let (auth, kept_keys) = Auth::new(config.auth.as_ref(), previous.map(|p| &p.auth));
        if previous.is_some() && config.auth.is_some() {
            log::info!(
                "client keys: rate-limit state kept for [{}]",
                kept_keys.join(", ")
            );
        }
        let metrics = Metrics::new(&config, previous.map(|p| &p.metrics));
        let created = previous.map(|p| p.created).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        let app = App {
            config,
            providers,
            health,
            auth,
            metrics,
            created,
            hook,
            phase,
            lifecycle,
        };
        (app, kept)
    }
}
