//! Breaker state per provider, shared by every model that uses the provider.
//!
//! Closed: requests go through; `max_failures` consecutive failures open it.
//! Open: requests skip the provider until `cooldown` has passed. Then exactly
//! one request goes through as a probe (half-open); its success closes the
//! breaker, its failure opens it for another cooldown. Any success resets the
//! count. A 429 with `Retry-After` also keeps the provider out until then
//! (capped at the cooldown).
//!
//! The lock is never held across a network call: [`Health::admit`] takes a
//! [`Permit`], the caller does its request, then reports on the permit.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

#[derive(Default, Debug)]
struct Breaker {
    consecutive: u32,
    /// Set while open: no traffic before this instant.
    open_until: Option<Instant>,
    /// A 429's `Retry-After`: no traffic before this instant.
    rate_limited_until: Option<Instant>,
    probe_in_flight: bool,
    last_error: Option<String>,
}

impl Breaker {
    /// When traffic may resume, or `None` if it may now.
    fn blocked_until(&self, now: Instant) -> Option<Instant> {
        let open = self.open_until.filter(|t| *t > now);
        let limited = self.rate_limited_until.filter(|t| *t > now);
        match (open, limited) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Why a provider was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Open or rate limited until this instant.
    CoolingDown(Instant),
    /// Half-open and another request is the probe.
    ProbeInFlight,
}

/// Leave to send one request to a provider. Report how it went with
/// [`Health::success`] or [`Health::failure`]; dropping it unreported (a
/// panic, a client that went away) frees the probe slot without a verdict.
pub struct Permit<'a> {
    health: &'a Health,
    provider: usize,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            let mut map = self.health.write();
            if let Some(b) = map.get_mut(&self.provider) {
                b.probe_in_flight = false;
            }
        }
    }
}

/// Snapshot of one provider's state, for logs and error messages.
#[derive(Debug, Clone)]
pub struct Status {
    pub available_in: Option<Duration>,
    pub last_error: Option<String>,
}

pub struct Health {
    max_failures: u32,
    cooldown: Duration,
    breakers: RwLock<HashMap<usize, Breaker>>,
}

impl Health {
    pub fn new(providers: usize, max_failures: u32, cooldown: Duration) -> Health {
        let breakers = (0..providers).map(|i| (i, Breaker::default())).collect();
        Health {
            max_failures,
            cooldown,
            breakers: RwLock::new(breakers),
        }
    }

    // A poisoned lock only means a panic elsewhere while holding it; the
    // breaker data is plain counters and instants, still usable.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<usize, Breaker>> {
        self.breakers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<usize, Breaker>> {
        self.breakers.read().unwrap_or_else(|e| e.into_inner())
    }

    /// May a request go to `provider` now?
    pub fn admit(&self, provider: usize) -> Result<Permit<'_>, Skip> {
        let now = Instant::now();
        {
            // Fast path: a healthy provider needs only the read lock.
            let map = self.read();
            let b = &map[&provider];
            if b.open_until.is_none() && b.rate_limited_until.is_none_or(|t| t <= now) {
                return Ok(self.permit(provider, false));
            }
            if let Some(t) = b.blocked_until(now) {
                return Err(Skip::CoolingDown(t));
            }
        }
        let mut map = self.write();
        let b = map.get_mut(&provider).expect("provider index");
        if let Some(t) = b.blocked_until(now) {
            return Err(Skip::CoolingDown(t));
        }
        b.rate_limited_until = None;
        if b.open_until.is_none() {
            return Ok(self.permit(provider, false));
        }
        // Cooldown is over: half-open, one probe at a time.
        if b.probe_in_flight {
            return Err(Skip::ProbeInFlight);
        }
        b.probe_in_flight = true;
        Ok(self.permit(provider, true))
    }

    fn permit(&self, provider: usize, probe: bool) -> Permit<'_> {
        Permit {
            health: self,
            provider,
            probe,
            done: false,
        }
    }

    /// The attempt succeeded (or the upstream answered sanely, e.g. a 400).
    pub fn success(&self, mut permit: Permit<'_>) {
        permit.done = true;
        {
            let map = self.read();
            let b = &map[&permit.provider];
            if b.consecutive == 0 && b.open_until.is_none() && !permit.probe {
                return;
            }
        }
        let mut map = self.write();
        let b = map.get_mut(&permit.provider).expect("provider index");
        if b.open_until.is_some() {
            log::info!("provider {} recovered; breaker closed", permit.provider);
        }
        b.consecutive = 0;
        b.open_until = None;
        if permit.probe {
            b.probe_in_flight = false;
        }
    }

    /// The attempt failed in a way that counts against the provider.
    /// Returns true if this failure opened (or re-opened) the breaker.
    pub fn failure(
        &self,
        mut permit: Permit<'_>,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> bool {
        permit.done = true;
        let now = Instant::now();
        let mut map = self.write();
        let b = map.get_mut(&permit.provider).expect("provider index");
        b.consecutive = b.consecutive.saturating_add(1);
        b.last_error = Some(reason.to_string());
        if let Some(ra) = retry_after {
            let until = now + ra.min(self.cooldown);
            b.rate_limited_until = Some(b.rate_limited_until.map_or(until, |t| t.max(until)));
        }
        let mut opened = false;
        if permit.probe {
            b.probe_in_flight = false;
            b.open_until = Some(now + self.cooldown);
            opened = true;
        } else if b.open_until.is_none() && b.consecutive >= self.max_failures {
            b.open_until = Some(now + self.cooldown);
            opened = true;
        }
        opened
    }

    /// The state of one provider.
    pub fn status(&self, provider: usize) -> Status {
        let now = Instant::now();
        let map = self.read();
        let b = &map[&provider];
        Status {
            available_in: b.blocked_until(now).map(|t| t - now),
            last_error: b.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_max_failures_then_probes_once() {
        let h = Health::new(1, 3, Duration::from_millis(50));
        for _ in 0..2 {
            let p = h.admit(0).unwrap();
            assert!(!h.failure(p, "x", None));
        }
        let p = h.admit(0).unwrap();
        assert!(h.failure(p, "x", None));
        assert!(matches!(h.admit(0), Err(Skip::CoolingDown(_))));
        std::thread::sleep(Duration::from_millis(60));
        let probe = h.admit(0).unwrap();
        assert!(probe.is_probe());
        assert_eq!(h.admit(0).err(), Some(Skip::ProbeInFlight));
        // A failed probe re-opens for a full cooldown.
        assert!(h.failure(probe, "y", None));
        assert!(matches!(h.admit(0), Err(Skip::CoolingDown(_))));
        std::thread::sleep(Duration::from_millis(60));
        let probe = h.admit(0).unwrap();
        h.success(probe);
        let p = h.admit(0).unwrap();
        assert!(!p.is_probe());
        assert!(h.status(0).available_in.is_none());
    }

    #[test]
    fn success_resets_count() {
        let h = Health::new(1, 3, Duration::from_secs(60));
        for _ in 0..2 {
            h.failure(h.admit(0).unwrap(), "x", None);
        }
        h.success(h.admit(0).unwrap());
        for _ in 0..2 {
            h.failure(h.admit(0).unwrap(), "x", None);
        }
        assert!(h.admit(0).is_ok());
    }

    #[test]
    fn dropped_probe_frees_the_slot() {
        let h = Health::new(1, 1, Duration::from_millis(1));
        h.failure(h.admit(0).unwrap(), "x", None);
        std::thread::sleep(Duration::from_millis(5));
        drop(h.admit(0).unwrap());
        assert!(h.admit(0).unwrap().is_probe());
    }

    #[test]
    fn retry_after_is_capped_by_cooldown() {
        let h = Health::new(1, 10, Duration::from_secs(5));
        h.failure(h.admit(0).unwrap(), "429", Some(Duration::from_secs(3600)));
        let s = h.status(0);
        assert!(s.available_in.unwrap() <= Duration::from_secs(5));
        assert!(s.available_in.unwrap() > Duration::from_secs(4));
    }
}
