//! The state every request handler shares: the config, one provider (and so
//! one ureq agent) per configured provider, and the breakers.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::health::{Health, SystemClock};
use crate::providers::{self, Provider};

/// Called at the start of every request with the request path. Embedders
/// and tests use it to observe (or, in tests, to fault) request handling.
pub type Hook = Arc<dyn Fn(&str) + Send + Sync>;

pub struct App {
    pub config: Config,
    /// Indexed like `config.providers`.
    pub providers: Vec<Box<dyn Provider>>,
    pub health: Health,
    /// Unix time the proxy started, reported as each model's `created`.
    pub created: u64,
    pub hook: Option<Hook>,
}

impl App {
    pub fn new(config: Config, hook: Option<Hook>) -> App {
        let providers = config
            .providers
            .iter()
            .map(|p| providers::build(p, config.server.workers))
            .collect();
        let health = Health::new(
            config.providers.len(),
            config.failover.max_failures,
            config.failover.cooldown,
            Box::new(SystemClock),
        );
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        App {
            config,
            providers,
            health,
            created,
            hook,
        }
    }
}
