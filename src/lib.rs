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

mod access_log;
mod admin;
mod app;
mod auth;
pub mod config;
mod error;
mod health;
mod http;
pub mod lifecycle;
mod metrics;
mod openai;
mod providers;
mod relay;
mod responses;
mod router;
mod routes;
mod server;
mod sse;
mod trim;

/// Thin entry points to the parsers that read hostile bytes, for the
/// `cargo fuzz` targets in `fuzz/` and the property tests in
/// `tests/properties.rs`. Not an API: it exists so that the modules behind
/// it can stay private, and it may change with them at any time.
#[doc(hidden)]
pub mod fuzzing {
    use std::io::{self, BufRead, BufReader};
    use std::time::{Duration, SystemTime};

    use serde_json::Value;

    pub use crate::config::{Config, ConfigError, expand_str};
    pub use crate::error::ProviderError;
    pub use crate::providers::anthropic::fuzz::StreamMapper as AnthropicStreamMapper;
    pub use crate::sse::{Event, SseReader, encode};

    /// Every event of an upstream body read through a buffer of `capacity`
    /// bytes (at least 1), and the error that ended it, if any.
    pub fn sse_events(body: &[u8], capacity: usize) -> (Vec<Event>, Option<io::Error>) {
        sse_events_from(BufReader::with_capacity(capacity.max(1), body))
    }

    /// Every event `body` yields, and the error that ended it, if any.
    pub fn sse_events_from(body: impl BufRead) -> (Vec<Event>, Option<io::Error>) {
        let mut r = SseReader::new(body);
        let mut events = Vec::new();
        loop {
            match r.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }

    /// `Retry-After` as an upstream sends it, read at `now`.
    pub fn retry_after(v: &str, now: SystemTime) -> Option<Duration> {
        crate::providers::parse_retry_after(v, now)
    }

    /// A client body through the path an Anthropic route takes: `None` if
    /// the proxy rejects it before any provider sees it, else the
    /// translated Messages request or the 400 it becomes.
    pub fn anthropic_request(
        body: &[u8],
        model_id: &str,
        max_tokens: u32,
    ) -> Option<Result<Value, ProviderError>> {
        let req = crate::openai::ApiRequest::parse(crate::openai::Endpoint::Chat, body).ok()?;
        Some(crate::providers::anthropic::fuzz::to_anthropic(
            &req, model_id, max_tokens,
        ))
    }

    /// A client body through the path a translated `/v1/responses` takes:
    /// `None` if the proxy rejects it before any provider sees it, else the
    /// Chat Completions body it becomes (`anthropic`: with the extra checks
    /// for an Anthropic provider) or the 400 it becomes.
    pub fn responses_to_chat(body: &[u8], anthropic: bool) -> Option<Result<Value, ProviderError>> {
        let req =
            crate::openai::ApiRequest::parse(crate::openai::Endpoint::Responses, body).ok()?;
        let target = if anthropic {
            crate::responses::translate::Target::Anthropic
        } else {
            crate::responses::translate::Target::Chat
        };
        Some(crate::responses::fuzz::to_chat(&req, target).map(|r| Value::Object(r.body)))
    }

    /// Chat stream events (each a whole encoded event, as a provider's
    /// chat stream hands them out) through the Responses stream
    /// translation: every event it produced, one per call, the error that
    /// ended it, if any, and then what its failure event would be.
    pub fn responses_stream(chunks: &[Vec<u8>]) -> (Vec<Vec<u8>>, Option<ProviderError>, Vec<u8>) {
        crate::responses::fuzz::stream(chunks)
    }

    /// An upstream body through the path a non-streaming Anthropic answer
    /// takes: `None` if it is refused as not a message, else the
    /// `chat.completion` it becomes.
    pub fn anthropic_response(body: &[u8], model: &str, created: u64) -> Option<Value> {
        crate::providers::anthropic::fuzz::complete(body, model, created)
    }
}

pub use app::Hook;
pub use config::{Config, ConfigError};
pub use providers::endpoint_notes;
pub use server::{Controller, Handle, serve, serve_from, start, start_from};

/// Initialise logging: `LLM_PROXY_LOG` wins over the config's level;
/// `format` is `server.log_format`. See `access_log` for the line formats.
pub fn init_logging(config_level: log::LevelFilter, format: config::LogFormat) {
    let level = std::env::var("LLM_PROXY_LOG")
        .ok()
        .and_then(|v| config::parse_level(&v))
        .unwrap_or(config_level);
    metrics::note_start();
    access_log::init(level, format);
}
