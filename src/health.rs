//! Breaker state per provider, shared by every model that uses the provider.
//!
//! Each breaker has its own [`Settings`] (the provider's `max_failures`
//! and `cooldown`, or the `failover:` ones it inherits).
//!
//! Closed: requests go through; `max_failures` consecutive failures open it.
//! Open: requests skip the provider until `cooldown` has passed. Then exactly
//! one request goes through as a probe (half-open); its success closes the
//! breaker, its failure opens it for another cooldown. Any success resets the
//! count. A 429 with `Retry-After` also keeps the provider out until then
//! (capped at the provider's cooldown).
//!
//! Closed but unproven: a closed breaker whose latest verdict was a
//! failure, or that has had no verdict yet, is not known to be healthy.
//! Counting only verdicts, a provider that takes long to fail would get
//! every concurrent request before the first failure came back (all 50 of
//! a burst, with a provider taking 1 s to fail). So while unproven,
//! requests in flight count as failures to come: a request is admitted
//! only while `consecutive + pending < max_failures`, where `pending` is
//! the requests admitted while unproven that have not reported yet. Others
//! get [`Skip::Pending`], and the router tries them elsewhere first.
//!
//! The router admits a model's last provider in priority order, and one it
//! comes back to after every other provider failed, with
//! [`Health::admit_last_resort`], which ignores the bound: there is nowhere
//! better to send the request, so a model's only provider is never refused
//! for it.
//!
//! A success proves the provider: from then on it takes any number of
//! concurrent requests, so a healthy provider is never throttled to
//! `max_failures`; after its next failure, at most `max_failures` requests
//! are sent to it beyond those already in flight. A stream's verdict comes
//! when it ends, but its first event ([`Health::answered`]) already proves
//! the provider and ends the stream's pending place, so long streams do
//! not hold back the next ones.
//!
//! The lock is never held across a network call: [`Health::admit`] takes a
//! [`Permit`], the caller does its request, then reports on the permit.
//!
//! A live reload builds a new `Health` from the old one
//! ([`Health::carry_over`]): a provider whose key (name, type, base URL) is
//! unchanged shares its breaker with the old `Health`, so its cooldown goes
//! on, and requests still in flight on the old config report to the same
//! breaker. The reload's settings replace the breaker's at once, but only
//! verdicts read them: a running cooldown (or `Retry-After` wait) ends when
//! it was due, and the new `cooldown` applies from the provider's next
//! verdict (the failure that opens it, a failed probe); the failures
//! counted so far stay, and are compared with the new `max_failures` at
//! the next failure and the next admission. Per-key state added later (e.g. client rate limits keyed by key
//! name) is carried over the same way: an `Arc` per entry, keyed by name.
//!
//! Time comes from the [`Clock`] given to [`Health::new`]: the process uses
//! [`SystemClock`], tests a clock they move by hand, so cooldowns and
//! `Retry-After` are tested without sleeping or racing a loaded machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

/// Where [`Health`] reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The monotonic clock of the process.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// One provider's breaker settings: its own `max_failures` and `cooldown`,
/// or the `failover:` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive failures that open the breaker (at least 1).
    pub max_failures: u32,
    /// How long an open breaker keeps the provider out, and the most a
    /// 429's `Retry-After` does.
    pub cooldown: Duration,
}

#[derive(Debug)]
struct Breaker {
    /// Replaced by a reload; read at each admission and verdict.
    settings: Settings,
    consecutive: u32,
    /// Set while open: no traffic before this instant.
    open_until: Option<Instant>,
    /// A 429's `Retry-After`: no traffic before this instant.
    rate_limited_until: Option<Instant>,
    probe_in_flight: bool,
    /// The latest verdict was a success: no bound on requests in flight.
    proven: bool,
    /// Requests admitted while not `proven` and not yet reported.
    pending: u32,
    last_error: Option<String>,
    /// Wall-clock time of the latest failure, for the admin API.
    last_failure_at: Option<SystemTime>,
    /// Taken out of rotation by an operator (`POST
    /// /admin/providers/{name}/disable`) until enabled again. Part of the
    /// breaker, so it survives a reload like the rest of its state.
    disabled: bool,
    /// Requests admitted since start (counted under the read lock).
    requests: AtomicU64,
    /// Failures reported since start.
    failures: u64,
}

impl Breaker {
    fn new(settings: Settings) -> Breaker {
        Breaker {
            settings,
            consecutive: 0,
            open_until: None,
            rate_limited_until: None,
            probe_in_flight: false,
            proven: false,
            pending: 0,
            last_error: None,
            last_failure_at: None,
            disabled: false,
            requests: AtomicU64::new(0),
            failures: 0,
        }
    }

    /// The permit no longer holds the probe slot or a pending place.
    fn release(&mut self, permit: &Permit<'_>) {
        if permit.probe {
            self.probe_in_flight = false;
        }
        if permit.pending {
            self.pending = self.pending.saturating_sub(1);
        }
    }

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
    /// Closed but unproven, and `max_failures` minus the failures so far
    /// are already in flight: try elsewhere first.
    Pending,
    /// Taken out of rotation by an operator.
    Disabled,
}

/// Leave to send one request to a provider. Report how it went with
/// [`Health::success`] or [`Health::failure`]; dropping it unreported (a
/// panic, a client that went away) frees the probe slot without a verdict.
pub struct Permit<'a> {
    health: &'a Health,
    provider: usize,
    probe: bool,
    /// Counted in the breaker's `pending`.
    pending: bool,
    done: bool,
}

impl Permit<'_> {
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if (self.probe || self.pending) && !self.done {
            self.health.write(self.provider).release(self);
        }
    }
}

/// Snapshot of one provider's state, for logs and error messages.
#[derive(Debug, Clone)]
pub struct Status {
    pub available_in: Option<Duration>,
    pub last_error: Option<String>,
}

/// A breaker's state as the admin API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    /// The cooldown is over; the next request is the probe.
    HalfOpen,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
        }
    }
}

/// Everything the admin API reports about one provider.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: State,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_failure_at: Option<SystemTime>,
    /// `None`: a request may go to it now (or, disabled, never by itself).
    pub available_in: Option<Duration>,
    pub requests: u64,
    pub failures: u64,
}

impl Snapshot {
    /// Whether a request could be sent to the provider now.
    pub fn available(&self) -> bool {
        self.state != State::Disabled && self.available_in.is_none()
    }
}

pub struct Health {
    clock: Box<dyn Clock>,
    /// Indexed like the config's providers; shared with the `Health` of
    /// the config before a reload where the provider's key is unchanged.
    breakers: Vec<Arc<RwLock<Breaker>>>,
    /// What identifies each provider's breaker across reloads.
    keys: Vec<String>,
}

impl Health {
    /// Breakers for `settings.len()` providers, one per provider in config
    /// order, each with its settings.
    pub fn new(settings: Vec<Settings>, clock: Box<dyn Clock>) -> Health {
        let providers = settings
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i.to_string(), s))
            .collect();
        Health::carry_over(providers, clock, None).0
    }

    /// A `Health` for providers identified by a key, each with its
    /// settings (one per provider, in config order). A key also in
    /// `previous` shares its breaker with it, whose settings become these
    /// (see the module docs for when they take effect); the others start
    /// closed. Returns the indexes of the providers whose breaker was
    /// carried over.
    pub fn carry_over(
        providers: Vec<(String, Settings)>,
        clock: Box<dyn Clock>,
        previous: Option<&Health>,
    ) -> (Health, Vec<usize>) {
        let mut kept = Vec::new();
        let mut keys = Vec::with_capacity(providers.len());
        let mut breakers = Vec::with_capacity(providers.len());
        for (i, (key, settings)) in providers.into_iter().enumerate() {
            let old = previous.and_then(|p| {
                p.keys
                    .iter()
                    .position(|k| *k == key)
                    .map(|j| p.breakers[j].clone())
            });
            let breaker = match old {
                Some(b) => {
                    kept.push(i);
                    b.write().unwrap_or_else(|e| e.into_inner()).settings = settings;
                    b
                }
                None => Arc::new(RwLock::new(Breaker::new(settings))),
            };
            keys.push(key);
            breakers.push(breaker);
        }
        let health = Health {
            clock,
            breakers,
            keys,
        };
        (health, kept)
    }

    // A poisoned lock only means a panic elsewhere while holding it; the
    // breaker data is plain counters and instants, still usable.
    fn write(&self, provider: usize) -> RwLockWriteGuard<'_, Breaker> {
        self.breakers[provider]
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self, provider: usize) -> RwLockReadGuard<'_, Breaker> {
        self.breakers[provider]
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// May a request go to `provider` now?
    pub fn admit(&self, provider: usize) -> Result<Permit<'_>, Skip> {
        self.admit_inner(provider, false)
    }

    /// Like [`Health::admit`], but past the bound on pending requests of
    /// an unproven provider: for when no other provider answered.
    pub fn admit_last_resort(&self, provider: usize) -> Result<Permit<'_>, Skip> {
        self.admit_inner(provider, true)
    }

    fn admit_inner(&self, provider: usize, last_resort: bool) -> Result<Permit<'_>, Skip> {
        let now = self.clock.now();
        {
            // Fast path: a healthy provider needs only the read lock.
            let b = self.read(provider);
            if b.disabled {
                return Err(Skip::Disabled);
            }
            if b.proven && b.open_until.is_none() && b.rate_limited_until.is_none_or(|t| t <= now) {
                b.requests.fetch_add(1, Ordering::Relaxed);
                return Ok(self.permit(provider, false, false));
            }
            if let Some(t) = b.blocked_until(now) {
                return Err(Skip::CoolingDown(t));
            }
        }
        let mut b = self.write(provider);
        if b.disabled {
            return Err(Skip::Disabled);
        }
        if let Some(t) = b.blocked_until(now) {
            return Err(Skip::CoolingDown(t));
        }
        b.rate_limited_until = None;
        if b.open_until.is_none() {
            if b.proven {
                *b.requests.get_mut() += 1;
                return Ok(self.permit(provider, false, false));
            }
            if !last_resort && b.consecutive.saturating_add(b.pending) >= b.settings.max_failures {
                return Err(Skip::Pending);
            }
            b.pending = b.pending.saturating_add(1);
            *b.requests.get_mut() += 1;
            return Ok(self.permit(provider, false, true));
        }
        // Cooldown is over: half-open, one probe at a time.
        if b.probe_in_flight {
            return Err(Skip::ProbeInFlight);
        }
        b.probe_in_flight = true;
        *b.requests.get_mut() += 1;
        Ok(self.permit(provider, true, false))
    }

    fn permit(&self, provider: usize, probe: bool, pending: bool) -> Permit<'_> {
        Permit {
            health: self,
            provider,
            probe,
            pending,
            done: false,
        }
    }

    /// A stream answered 2xx and its first event arrived; its verdict
    /// comes when it ends. A provider that starts streams well is not one
    /// that takes long to fail: the stream stops counting as pending, and
    /// the provider counts as proven until a failure says otherwise.
    pub fn answered(&self, permit: &mut Permit<'_>) {
        if permit.probe {
            return;
        }
        {
            let b = self.read(permit.provider);
            if b.proven && !permit.pending {
                return;
            }
        }
        let mut b = self.write(permit.provider);
        b.proven = true;
        b.release(permit);
        permit.pending = false;
    }

    /// The attempt succeeded (or the upstream answered sanely, e.g. a 400).
    pub fn success(&self, mut permit: Permit<'_>) {
        permit.done = true;
        if !permit.probe && !permit.pending {
            let b = self.read(permit.provider);
            if b.proven && b.consecutive == 0 && b.open_until.is_none() {
                return;
            }
        }
        let mut b = self.write(permit.provider);
        if b.open_until.is_some() {
            log::info!("provider {} recovered; breaker closed", permit.provider);
        }
        b.consecutive = 0;
        b.open_until = None;
        b.proven = true;
        b.release(&permit);
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
        let now = self.clock.now();
        let mut b = self.write(permit.provider);
        b.consecutive = b.consecutive.saturating_add(1);
        b.proven = false;
        b.release(&permit);
        b.last_error = Some(reason.to_string());
        b.last_failure_at = Some(SystemTime::now());
        b.failures = b.failures.saturating_add(1);
        let Settings {
            max_failures,
            cooldown,
        } = b.settings;
        if let Some(ra) = retry_after {
            let until = now + ra.min(cooldown);
            b.rate_limited_until = Some(b.rate_limited_until.map_or(until, |t| t.max(until)));
        }
        // A failed probe re-opens for another cooldown.
        let opens = permit.probe || (b.open_until.is_none() && b.consecutive >= max_failures);
        if opens {
            b.open_until = Some(now + cooldown);
        }
        opens
    }

    /// Take `provider` out of rotation until [`Health::enable`]. Returns
    /// false if it already was.
    pub fn disable(&self, provider: usize) -> bool {
        !std::mem::replace(&mut self.write(provider).disabled, true)
    }

    /// Put `provider` back in rotation, its breaker as it was. Returns
    /// false if it was not disabled.
    pub fn enable(&self, provider: usize) -> bool {
        std::mem::replace(&mut self.write(provider).disabled, false)
    }

    /// Close the breaker: no failures counted, no cooldown, no
    /// `Retry-After` wait. The provider is unproven again, as at start;
    /// whether it is disabled is left as it is.
    pub fn reset(&self, provider: usize) {
        let mut b = self.write(provider);
        b.consecutive = 0;
        b.open_until = None;
        b.rate_limited_until = None;
        b.proven = false;
    }

    /// What the admin API reports about `provider`.
    pub fn snapshot(&self, provider: usize) -> Snapshot {
        let now = self.clock.now();
        let b = self.read(provider);
        let state = if b.disabled {
            State::Disabled
        } else {
            match b.open_until {
                Some(t) if t > now => State::Open,
                Some(_) => State::HalfOpen,
                None => State::Closed,
            }
        };
        Snapshot {
            state,
            consecutive_failures: b.consecutive,
            last_error: b.last_error.clone(),
            last_failure_at: b.last_failure_at,
            available_in: b.blocked_until(now).map(|t| t - now),
            requests: b.requests.load(Ordering::Relaxed),
            failures: b.failures,
        }
    }

    /// The settings `provider`'s breaker goes by now (for the log line of
    /// a breaker that opened: the cooldown it opened for).
    pub fn settings(&self, provider: usize) -> Settings {
        self.read(provider).settings
    }

    /// Failures of one provider since its last success (for `/metrics`).
    pub fn consecutive_failures(&self, provider: usize) -> u32 {
        self.read(provider).consecutive
    }

    /// The state of one provider.
    pub fn status(&self, provider: usize) -> Status {
        let now = self.clock.now();
        let b = self.read(provider);
        Status {
            available_in: b.blocked_until(now).map(|t| t - now),
            last_error: b.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A clock that moves only when told to.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    /// A breaker for one provider on a manual clock, and the clock.
    fn health(max_failures: u32, cooldown: Duration) -> (Health, ManualClock) {
        let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
        let h = Health::new(
            vec![settings(max_failures, cooldown)],
            Box::new(clock.clone()),
        );
        (h, clock)
    }

    fn settings(max_failures: u32, cooldown: Duration) -> Settings {
        Settings {
            max_failures,
            cooldown,
        }
    }

    const NS: Duration = Duration::from_nanos(1);

    #[test]
    fn opens_after_max_failures_then_probes_once() {
        let cooldown = Duration::from_secs(600);
        let (h, clock) = health(3, cooldown);
        for _ in 0..2 {
            let p = h.admit(0).unwrap();
            assert!(!h.failure(p, "x", None));
        }
        let p = h.admit(0).unwrap();
        let opened = clock.now();
        assert!(h.failure(p, "x", None));
        assert_eq!(h.admit(0).err(), Some(Skip::CoolingDown(opened + cooldown)));
        assert_eq!(h.status(0).available_in, Some(cooldown));
        assert_eq!(h.status(0).last_error.as_deref(), Some("x"));
        // Closed to the last nanosecond of the cooldown, half-open at its end.
        clock.advance(cooldown - NS);
        assert_eq!(h.admit(0).err(), Some(Skip::CoolingDown(opened + cooldown)));
        assert_eq!(h.status(0).available_in, Some(NS));
        clock.advance(NS);
        assert_eq!(h.status(0).available_in, None);
        let probe = h.admit(0).unwrap();
        assert!(probe.is_probe());
        assert_eq!(h.admit(0).err(), Some(Skip::ProbeInFlight));
        // A failed probe re-opens for a full cooldown from its failure.
        clock.advance(Duration::from_secs(7));
        let reopened = clock.now();
        assert!(h.failure(probe, "y", None));
        assert_eq!(
            h.admit(0).err(),
            Some(Skip::CoolingDown(reopened + cooldown))
        );
        clock.advance(cooldown - NS);
        assert!(matches!(h.admit(0), Err(Skip::CoolingDown(_))));
        clock.advance(NS);
        let probe = h.admit(0).unwrap();
        h.success(probe);
        let p = h.admit(0).unwrap();
        assert!(!p.is_probe());
        assert!(h.status(0).available_in.is_none());
    }

    #[test]
    fn carry_over_keeps_the_breakers_of_unchanged_keys_only() {
        let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
        let cooldown = Duration::from_secs(600);
        let keys = |k: &[&str]| {
            k.iter()
                .map(|s| (s.to_string(), settings(1, cooldown)))
                .collect::<Vec<_>>()
        };
        let (old, kept) = Health::carry_over(keys(&["a", "b"]), Box::new(clock.clone()), None);
        assert!(kept.is_empty());
        assert!(old.failure(old.admit(0).unwrap(), "down", None));
        assert!(old.failure(old.admit(1).unwrap(), "down", None));
        // "a" moved to index 1 and is kept; "b" changed (e.g. its base URL).
        let (new, kept) =
            Health::carry_over(keys(&["b2", "a"]), Box::new(clock.clone()), Some(&old));
        assert_eq!(kept, vec![1]);
        assert!(matches!(new.admit(1), Err(Skip::CoolingDown(_))));
        assert_eq!(new.status(1).last_error.as_deref(), Some("down"));
        assert!(new.admit(0).is_ok());
        // Shared, not copied: a verdict on the old one (a request in
        // flight across the reload) is seen by the new one.
        clock.advance(cooldown);
        let probe = old.admit(0).unwrap();
        assert!(probe.is_probe());
        assert_eq!(new.admit(1).err(), Some(Skip::ProbeInFlight));
        old.success(probe);
        assert!(new.admit(1).is_ok());
    }

    #[test]
    fn disable_enable_and_reset() {
        let cooldown = Duration::from_secs(600);
        let (h, clock) = health(1, cooldown);
        assert!(h.failure(h.admit(0).unwrap(), "down", None));
        let s = h.snapshot(0);
        assert_eq!((s.state, s.consecutive_failures), (State::Open, 1));
        assert_eq!((s.requests, s.failures), (1, 1));
        assert!(s.last_failure_at.is_some() && !s.available());
        // Disabled: never admitted, not even as a last resort or a probe.
        assert!(h.disable(0));
        assert!(!h.disable(0));
        clock.advance(cooldown);
        assert_eq!(h.admit(0).err(), Some(Skip::Disabled));
        assert_eq!(h.admit_last_resort(0).err(), Some(Skip::Disabled));
        assert_eq!(h.snapshot(0).state, State::Disabled);
        // Enabled: its breaker as it was (the cooldown is over: half-open).
        assert!(h.enable(0));
        assert_eq!(h.snapshot(0).state, State::HalfOpen);
        let probe = h.admit(0).unwrap();
        assert!(probe.is_probe());
        assert!(h.failure(probe, "still down", None));
        assert_eq!(h.snapshot(0).state, State::Open);
        // Reset: closed, count zero, a 429's wait forgotten; the next
        // request is an ordinary one.
        h.reset(0);
        let s = h.snapshot(0);
        assert_eq!((s.state, s.consecutive_failures), (State::Closed, 0));
        assert!(s.available());
        assert_eq!((s.requests, s.failures), (2, 2));
        h.failure(h.admit(0).unwrap(), "429", Some(Duration::from_secs(60)));
        assert!(matches!(h.admit(0), Err(Skip::CoolingDown(_))));
        h.reset(0);
        assert!(!h.admit(0).unwrap().is_probe());
    }

    #[test]
    fn success_resets_count() {
        let (h, _) = health(3, Duration::from_secs(60));
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
        let (h, clock) = health(1, Duration::from_secs(1));
        h.failure(h.admit(0).unwrap(), "x", None);
        clock.advance(Duration::from_secs(1));
        let probe = h.admit(0).unwrap();
        assert!(probe.is_probe());
        assert_eq!(h.admit(0).err(), Some(Skip::ProbeInFlight));
        drop(probe);
        assert!(h.admit(0).unwrap().is_probe());
    }

    #[test]
    fn unproven_providers_get_at_most_max_failures_pending() {
        let (h, _) = health(3, Duration::from_secs(60));
        // No verdict yet: three in flight, the fourth is held back.
        let held: Vec<_> = (0..3).map(|_| h.admit(0).unwrap()).collect();
        assert_eq!(h.admit(0).err(), Some(Skip::Pending));
        // Unless nothing else can answer.
        let extra = h.admit_last_resort(0).unwrap();
        drop(extra);
        // An attempt that ends without a verdict frees its place.
        let mut held = held.into_iter();
        drop(held.next());
        let again = h.admit(0).unwrap();
        assert_eq!(h.admit(0).err(), Some(Skip::Pending));
        // A success proves the provider: no bound any more.
        h.success(again);
        let many: Vec<_> = (0..100).map(|_| h.admit(0).unwrap()).collect();
        // Its next failure: consecutive 1 (+ the 2 still pending from
        // before) leaves no room until a verdict.
        let mut many = many.into_iter();
        h.failure(many.next().unwrap(), "x", None);
        assert_eq!(h.admit(0).err(), Some(Skip::Pending));
        // The two old pending ones fail: the breaker opens at 3.
        h.failure(held.next().unwrap(), "x", None);
        assert!(h.failure(held.next().unwrap(), "x", None));
        assert!(matches!(h.admit(0), Err(Skip::CoolingDown(_))));
        // The 99 admitted while proven were never counted as pending.
        assert_eq!(h.read(0).pending, 0);
        drop(many);
        assert_eq!(h.read(0).pending, 0);
    }

    #[test]
    fn a_failure_after_success_bounds_new_requests() {
        let (h, _) = health(4, Duration::from_secs(60));
        h.success(h.admit(0).unwrap());
        h.failure(h.admit(0).unwrap(), "x", None);
        let held: Vec<_> = (0..3).map(|_| h.admit(0).unwrap()).collect();
        assert_eq!(h.admit(0).err(), Some(Skip::Pending));
        // One of them succeeds: proven again, the bound is gone.
        let mut held = held.into_iter();
        h.success(held.next().unwrap());
        assert!((0..10).all(|_| h.admit(0).is_ok()));
    }

    #[test]
    fn a_started_stream_proves_the_provider() {
        let (h, _) = health(2, Duration::from_secs(60));
        let mut streams: Vec<_> = (0..2).map(|_| h.admit(0).unwrap()).collect();
        assert_eq!(h.admit(0).err(), Some(Skip::Pending));
        h.answered(&mut streams[0]);
        assert_eq!(h.read(0).pending, 1);
        assert!((0..10).all(|_| h.admit(0).is_ok()));
        // Its end is still a verdict, and a failure bounds again.
        let first = streams.remove(0);
        h.failure(first, "cut mid-stream", None);
        assert_eq!(h.admit(0).err(), Some(Skip::Pending));
        drop(streams);
        assert_eq!(h.read(0).pending, 0);
    }

    #[test]
    fn retry_after_is_capped_by_cooldown() {
        let (h, clock) = health(10, Duration::from_secs(5));
        h.failure(h.admit(0).unwrap(), "429", Some(Duration::from_secs(3600)));
        assert_eq!(h.status(0).available_in, Some(Duration::from_secs(5)));
        clock.advance(Duration::from_secs(5) - NS);
        assert!(matches!(h.admit(0), Err(Skip::CoolingDown(_))));
        clock.advance(NS);
        // Not opened (one failure of ten): a normal request, not a probe.
        assert!(!h.admit(0).unwrap().is_probe());
    }

    #[test]
    fn retry_after_keeps_the_provider_out_until_then() {
        let (h, clock) = health(10, Duration::from_secs(600));
        let start = clock.now();
        // Two requests in flight; the first answers 429, Retry-After: 30.
        let (first, second) = (h.admit(0).unwrap(), h.admit(0).unwrap());
        h.failure(first, "429", Some(Duration::from_secs(30)));
        let until = start + Duration::from_secs(30);
        assert_eq!(h.admit(0).err(), Some(Skip::CoolingDown(until)));
        // Rate limited is not "pending": a last resort waits too.
        assert_eq!(h.admit_last_resort(0).err(), Some(Skip::CoolingDown(until)));
        // The second answers later with a shorter Retry-After: the wait
        // is not shortened.
        clock.advance(Duration::from_secs(10));
        h.failure(second, "429", Some(Duration::from_secs(1)));
        assert_eq!(h.status(0).available_in, Some(Duration::from_secs(20)));
        clock.advance(Duration::from_secs(20) - NS);
        assert_eq!(h.admit(0).err(), Some(Skip::CoolingDown(until)));
        clock.advance(NS);
        assert_eq!(h.status(0).available_in, None);
        assert!(!h.admit(0).unwrap().is_probe());
    }

    #[test]
    fn a_rate_limited_open_breaker_waits_for_the_later_of_the_two() {
        let (h, clock) = health(1, Duration::from_secs(60));
        let start = clock.now();
        // Opens (one failure of one) with a 30 s Retry-After: 60 s wins.
        assert!(h.failure(h.admit(0).unwrap(), "429", Some(Duration::from_secs(30))));
        assert_eq!(
            h.admit(0).err(),
            Some(Skip::CoolingDown(start + Duration::from_secs(60)))
        );
        clock.advance(Duration::from_secs(60));
        assert!(h.admit(0).unwrap().is_probe());
    }

    #[test]
    fn each_breaker_goes_by_its_own_settings() {
        let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
        let (short, long) = (Duration::from_secs(5), Duration::from_secs(600));
        let h = Health::new(
            vec![settings(1, short), settings(3, long)],
            Box::new(clock.clone()),
        );
        let start = clock.now();
        // Provider 0 opens at its first failure, provider 1 at its third.
        assert!(h.failure(h.admit(0).unwrap(), "529", None));
        for opens in [false, false, true] {
            assert_eq!(h.failure(h.admit(1).unwrap(), "500", None), opens);
        }
        assert_eq!(h.admit(0).err(), Some(Skip::CoolingDown(start + short)));
        assert_eq!(h.admit(1).err(), Some(Skip::CoolingDown(start + long)));
        assert_eq!(h.settings(0), settings(1, short));
        assert_eq!(h.settings(1), settings(3, long));
        // The short one reopens to a probe at its own time, the other not.
        clock.advance(short - NS);
        assert!(matches!(h.admit(0), Err(Skip::CoolingDown(_))));
        clock.advance(NS);
        let probe = h.admit(0).unwrap();
        assert!(probe.is_probe());
        assert_eq!(h.admit(1).err(), Some(Skip::CoolingDown(start + long)));
        assert_eq!(h.snapshot(0).state, State::HalfOpen);
        assert_eq!(h.snapshot(1).state, State::Open);
        // Its failed probe re-opens it for its own cooldown again.
        assert!(h.failure(probe, "529", None));
        assert_eq!(h.status(0).available_in, Some(short));
        clock.advance(short);
        h.success(h.admit(0).unwrap());
        assert_eq!(h.snapshot(0).state, State::Closed);
        assert_eq!(h.status(1).available_in, Some(long - short - short));
        // Each breaker's pending bound is its own max_failures.
        let fresh = Health::new(
            vec![settings(1, short), settings(3, long)],
            Box::new(clock.clone()),
        );
        let _held0 = fresh.admit(0).unwrap();
        assert_eq!(fresh.admit(0).err(), Some(Skip::Pending));
        let _held1: Vec<_> = (0..3).map(|_| fresh.admit(1).unwrap()).collect();
        assert_eq!(fresh.admit(1).err(), Some(Skip::Pending));
    }

    #[test]
    fn retry_after_is_capped_by_each_providers_own_cooldown() {
        let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
        let h = Health::new(
            vec![
                settings(10, Duration::from_secs(4)),
                settings(10, Duration::from_secs(600)),
            ],
            Box::new(clock.clone()),
        );
        let hour = Some(Duration::from_secs(3600));
        assert!(!h.failure(h.admit(0).unwrap(), "429", hour));
        assert!(!h.failure(h.admit(1).unwrap(), "429", hour));
        assert_eq!(h.status(0).available_in, Some(Duration::from_secs(4)));
        assert_eq!(h.status(1).available_in, Some(Duration::from_secs(600)));
        clock.advance(Duration::from_secs(4));
        assert!(!h.admit(0).unwrap().is_probe());
        assert!(matches!(h.admit(1), Err(Skip::CoolingDown(_))));
    }

    #[test]
    fn a_reload_applies_new_settings_from_the_next_verdict() {
        let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
        let one = |s: Settings| vec![("a".to_string(), s)];
        let (old, _) = Health::carry_over(
            one(settings(1, Duration::from_secs(600))),
            Box::new(clock.clone()),
            None,
        );
        let opened = clock.now();
        assert!(old.failure(old.admit(0).unwrap(), "down", None));
        // Reloaded with a 10 s cooldown while open: the running 600 s is
        // kept (not cut short, so no burst of traffic to a provider that
        // was failing a moment ago; POST /admin/providers/a/reset is the
        // way to end it early).
        let short = Duration::from_secs(10);
        let (new, kept) =
            Health::carry_over(one(settings(1, short)), Box::new(clock.clone()), Some(&old));
        assert_eq!(kept, vec![0]);
        assert_eq!(new.settings(0), settings(1, short));
        let long_end = opened + Duration::from_secs(600);
        assert_eq!(new.admit(0).err(), Some(Skip::CoolingDown(long_end)));
        // Its next verdict goes by the new cooldown, whichever config the
        // request started on (the breaker is shared).
        clock.advance(Duration::from_secs(600));
        let probe = old.admit(0).unwrap();
        assert!(probe.is_probe());
        let reopened = clock.now();
        assert!(old.failure(probe, "still down", None));
        assert_eq!(
            new.admit(0).err(),
            Some(Skip::CoolingDown(reopened + short))
        );
        // A raised cooldown likewise leaves the running 10 s alone.
        let (newer, _) = Health::carry_over(
            one(settings(1, Duration::from_secs(3600))),
            Box::new(clock.clone()),
            Some(&new),
        );
        assert_eq!(
            newer.admit(0).err(),
            Some(Skip::CoolingDown(reopened + short))
        );

        // max_failures: the count so far is kept and compared with the new
        // value at the next failure.
        let (a, _) = Health::carry_over(
            one(settings(5, Duration::from_secs(60))),
            Box::new(clock.clone()),
            None,
        );
        for _ in 0..2 {
            assert!(!a.failure(a.admit(0).unwrap(), "x", None));
        }
        let (b, _) = Health::carry_over(
            one(settings(3, Duration::from_secs(60))),
            Box::new(clock.clone()),
            Some(&a),
        );
        assert!(b.failure(b.admit(0).unwrap(), "x", None));
        assert!(matches!(b.admit(0), Err(Skip::CoolingDown(_))));
    }
}
