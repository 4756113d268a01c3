//! llm-proxy: one OpenAI-compatible endpoint in front of many LLM providers,
//! with priority failover, per-provider breakers and recovery.
//!
//! Synchronous by design: tiny_http accepts, a bounded pool of worker threads
//! handles requests, each blocking on ureq calls to the providers of the
//! requested model in priority order. See `README.md` for the behaviour and
//! `STYLE.md` in the shared folder for where each decision lives.

// `deny`, not `forbid`: `trim` is the one module allowed unsafe code (calls
// into the C library that give memory back: malloc_trim, madvise).
#![deny(unsafe_code)]

mod app;
pub mod config;
mod error;
mod health;
mod http;
pub mod lifecycle;
mod openai;
mod providers;
mod relay;
mod router;
mod routes;
mod server;
mod sse;
mod trim;

pub use app::Hook;
pub use config::{Config, ConfigError};
pub use providers::endpoint_notes;
pub use server::{Controller, Handle, serve, serve_from, start, start_from};

/// Initialise logging: `LLM_PROXY_LOG` wins over the config's level.
pub fn init_logging(config_level: log::LevelFilter) {
    let level = std::env::var("LLM_PROXY_LOG")
        .ok()
        .and_then(|v| config::parse_level(&v))
        .unwrap_or(config_level);
    let _ = simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Warn)
        .with_module_level("llm_proxy", level)
        .init();
}
