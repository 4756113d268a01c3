//! The process's lifecycle: running, draining (SIGTERM, SIGINT), live
//! reload (SIGHUP), and the readiness they imply.
//!
//! [`Phase`] is the state every request can see (through `App::phase`):
//! readiness, and whether the drain's deadline has passed (streams still
//! running then end with the `server_shutting_down` error event).
//! [`Lifecycle`] owns the current [`App`] (swapped whole by a reload; each
//! request clones the `Arc` once at its start, so requests in flight finish
//! on the config they started with) and the config file to re-read.
//! [`watch_signals`] is the thread that turns signals into calls on them.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::app::{App, Hook};
use crate::config::{Config, ConfigError};

/// How long after `server.shutdown_timeout` a drain still waits for
/// streams to end themselves (a stream blocked on a silent upstream sees
/// the deadline at its next keep-alive tick, at most 5 s apart) before the
/// process exits anyway. The systemd unit's `TimeoutStopSec=` must exceed
/// `server.shutdown_timeout` plus this.
pub const DRAIN_GRACE: Duration = Duration::from_secs(6);

/// Running, or draining until a deadline.
#[derive(Default)]
pub struct Phase {
    /// `Some(deadline)` once draining.
    draining: Mutex<Option<Instant>>,
    /// `draining.is_some()`, read without the lock on every stream event.
    is_draining: AtomicBool,
    /// Streams ended by the drain's deadline.
    cut: AtomicUsize,
}

impl Phase {
    /// When draining, its deadline.
    pub fn drain_deadline(&self) -> Option<Instant> {
        if !self.is_draining.load(Ordering::Acquire) {
            return None;
        }
        *self.draining.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream was ended with `server_shutting_down`.
    pub fn note_stream_cut(&self) {
        self.cut.fetch_add(1, Ordering::Relaxed);
    }

    pub fn streams_cut(&self) -> usize {
        self.cut.load(Ordering::Relaxed)
    }

    /// `/health/ready`: 200 while running, 503 once draining.
    pub fn is_ready(&self) -> bool {
        self.drain_deadline().is_none()
    }

    /// Draining and past `server.shutdown_timeout`: a stream still running
    /// must end now, with the `server_shutting_down` error event.
    pub fn shutdown_due(&self) -> bool {
        self.shutdown_due_at(Instant::now())
    }

    fn shutdown_due_at(&self, now: Instant) -> bool {
        self.drain_deadline().is_some_and(|d| now >= d)
    }

    /// Start draining; returns the deadline (the first one, if already
    /// draining).
    fn begin_drain(&self, now: Instant, timeout: Duration) -> Instant {
        let mut d = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = *d.get_or_insert_with(|| now + timeout);
        self.is_draining.store(true, Ordering::Release);
        deadline
    }
}

/// Where the config came from, so that a reload reads it the same way.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub path: Option<PathBuf>,
    /// `--host` / `--port`, which win over the file at every load.
    pub host: Option<String>,
    pub port: Option<u16>,
}

impl Source {
    /// Read and validate the config file, with the command line's
    /// overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let Some(path) = &self.path else {
            return Err(ConfigError::message(
                "the server was started without a config file; nothing to reload",
            ));
        };
        let mut config = Config::load(path)?;
        if let Some(h) = &self.host {
            config.server.host = h.clone();
        }
        if let Some(p) = self.port {
            config.server.port = p;
        }
        Ok(config)
    }
}

/// What a successful reload changed, for the log and `POST /admin/reload`.
#[derive(Debug, Default, Clone)]
pub struct ReloadSummary {
    pub models: usize,
    pub providers: usize,
    /// Providers whose (name, type, base URL) is unchanged: their breaker
    /// state (cooldowns included) carried over.
    pub kept_breakers: Vec<String>,
    /// Settings that changed but take effect only at a restart.
    pub needs_restart: Vec<String>,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} models, {} providers; breaker state kept for [{}]",
            self.models,
            self.providers,
            self.kept_breakers.join(", ")
        )?;
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; {} changed and needs a restart (ignored until then)",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The current [`App`], the [`Phase`] and the config source.
pub struct Lifecycle {
    current: RwLock<Arc<App>>,
    phase: Arc<Phase>,
    source: Source,
    /// Serialises reloads (SIGHUP and the admin endpoint may race).
    reloading: Mutex<()>,
    hook: Option<Hook>,
}

impl Lifecycle {
    pub fn new(config: Config, hook: Option<Hook>, source: Source) -> Arc<Lifecycle> {
        Arc::new_cyclic(|me: &Weak<Lifecycle>| {
            let phase = Arc::new(Phase::default());
            let app = App::new(config, hook.clone(), phase.clone(), me.clone(), None).0;
            Lifecycle {
                current: RwLock::new(Arc::new(app)),
                phase,
                source,
                reloading: Mutex::new(()),
                hook,
            }
        })
    }

    /// The app a new request runs on.
    pub fn current(&self) -> Arc<App> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Start draining: `/health/ready` answers 503 from now on, and streams
    /// still running at the returned deadline end with an error event.
    pub fn begin_drain(&self) -> Instant {
        let timeout = self.current().config.server.shutdown_timeout;
        self.phase.begin_drain(Instant::now(), timeout)
    }

    /// Re-read and validate the config file; if valid, new requests use it
    /// (requests in flight finish on the old one). An invalid config
    /// changes nothing.
    pub fn reload(self: &Arc<Self>) -> Result<ReloadSummary, ConfigError> {
        let config = self.source.load()?;
        Ok(self.swap(config))
    }

    /// Serve `config` from now on, carrying breaker state over.
    pub fn swap(self: &Arc<Self>, mut config: Config) -> ReloadSummary {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current();
        let mut needs_restart = Vec::new();
        // The listener is bound once: keep serving where it is.
        if config.server.host != old.config.server.host {
            needs_restart.push("server.host".to_string());
            config.server.host = old.config.server.host.clone();
        }
        if config.server.port != old.config.server.port {
            needs_restart.push("server.port".to_string());
            config.server.port = old.config.server.port;
        }
        // Set once on the listener and its threads: a restart applies them.
        for (key, changed) in [
            (
                "server.client_timeout",
                config.server.client_timeout != old.config.server.client_timeout,
            ),
            (
                "server.header_timeout",
                config.server.header_timeout != old.config.server.header_timeout,
            ),
            (
                "server.max_connections",
                config.server.max_connections != old.config.server.max_connections,
            ),
            (
                "server.workers",
                config.server.workers != old.config.server.workers,
            ),
            (
                "server.queue_timeout",
                config.server.queue_timeout != old.config.server.queue_timeout,
            ),
            (
                "server.log_level",
                config.server.log_level != old.config.server.log_level,
            ),
        ] {
            if changed {
                needs_restart.push(key.to_string());
            }
        }
        let (models, providers) = (config.models.len(), config.providers.len());
        let (app, kept) = App::new(
            config,
            self.hook.clone(),
            self.phase.clone(),
            Arc::downgrade(self),
            Some(&old),
        );
        let kept_breakers = kept
            .iter()
            .map(|&i| app.config.providers[i].name.clone())
            .collect();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(app);
        ReloadSummary {
            models,
            providers,
            kept_breakers,
            needs_restart,
        }
    }
}

/// What the signal thread asks of the server.
pub trait Control: Send + 'static {
    /// Begin the drain (first SIGTERM or SIGINT).
    fn drain(&self);
    fn lifecycle(&self) -> &Arc<Lifecycle>;
}

/// SIGTERM, SIGINT and SIGHUP, caught (their default action, ending the
/// process, no longer applies) and queued until [`watch_signals`] handles
/// them. Call it before binding, so that a signal sent while the server
/// starts is not lost.
pub struct CaughtSignals(signal_hook::iterator::Signals);

pub fn catch_signals() -> std::io::Result<CaughtSignals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map(CaughtSignals)
}

/// Handle the caught signals on a thread of their own, for as long as the
/// process lives: the first SIGTERM/SIGINT drains, a second exits at once
/// with status 128 + the signal (130 for SIGINT, 143 for SIGTERM), SIGHUP
/// reloads.
pub fn watch_signals(signals: CaughtSignals, control: impl Control) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let CaughtSignals(mut signals) = signals;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut draining = false;
            for sig in signals.forever() {
                let name = match sig {
                    SIGTERM => "SIGTERM",
                    SIGINT => "SIGINT",
                    _ => "SIGHUP",
                };
                match sig {
                    SIGHUP => {
                        log::info!("{name}: reloading the config");
                        match control.lifecycle().reload() {
                            Ok(summary) => {
                                for key in &summary.needs_restart {
                                    log::warn!(
                                        "reload: {key} changed; it needs a restart to take effect and is ignored until then"
                                    );
                                }
                                log::info!("reload: now serving the new config: {summary}");
                            }
                            Err(e) => log::error!(
                                "reload failed; still serving the previous config: {e}"
                            ),
                        }
                    }
                    _ if draining => {
                        log::warn!("{name} again while draining: exiting at once");
                        std::process::exit(128 + sig);
                    }
                    _ => {
                        draining = true;
                        log::info!("{name}: draining");
                        control.drain();
                    }
                }
            }
        })?;
    Ok(())
}

/// The answer to `/health` (liveness: 200 `{"status":"ok"}` while the
/// process serves) or `/health/ready` (200 `{"status":"ready"}`, 503
/// `{"status":"draining"}` once draining). `routes.rs` writes it, to GET
/// or HEAD.
pub fn health(path: &str, phase: &Phase) -> (u16, &'static [u8]) {
    match path {
        "/health" => (200, br#"{"status":"ok"}"#),
        _ if phase.is_ready() => (200, br#"{"status":"ready"}"#),
        _ => (503, br#"{"status":"draining"}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_drains_once_until_its_first_deadline() {
        let phase = Phase::default();
        let t0 = Instant::now();
        assert!(phase.is_ready());
        assert!(!phase.shutdown_due_at(t0 + Duration::from_secs(3600)));
        let deadline = phase.begin_drain(t0, Duration::from_secs(30));
        assert_eq!(deadline, t0 + Duration::from_secs(30));
        assert!(!phase.is_ready());
        // A second signal or call does not move the deadline.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(phase.begin_drain(later, Duration::from_secs(30)), deadline);
        assert!(!phase.shutdown_due_at(deadline - Duration::from_nanos(1)));
        assert!(phase.shutdown_due_at(deadline));
    }
}
