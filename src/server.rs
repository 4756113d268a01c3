//! The listener, the bounded worker pool, panic isolation and shutdown.
//!
//! tiny_http accepts connections and parses requests on its own threads; one
//! accept loop here takes each request and hands it to a worker. At most
//! `workers` requests are handled at once; more wait in a queue for up to
//! `queue_timeout`, then get a 503 with `Retry-After`. Worker threads are
//! started on demand up to the bound and exit after a minute idle, so an
//! idle proxy stays small.
//!
//! Drain (`Controller::drain`, on SIGTERM/SIGINT): the listening socket is
//! closed at once (a new connection is refused), connections already open
//! are still served (a keep-alive client's next request is answered, and
//! `/health/ready` answers it 503), and the accept loop ends once no
//! request is in flight, or `DRAIN_GRACE` after `server.shutdown_timeout`
//! (streams still running at the timeout end themselves with the
//! `server_shutting_down` error event; the grace lets them).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tiny_http::Request;

use crate::app::{App, Hook};
use crate::config::{Config, ConfigError};
use crate::error::{ErrorKind, ProxyError};
use crate::http::{self, BodyState};
use crate::lifecycle::{self, DRAIN_GRACE, Lifecycle, ReloadSummary, Source};
use crate::routes;
use crate::{access_log, metrics};

/// Stack for worker threads. Handlers are shallow; the largest users are
/// serde_json's recursion (bounded at 128 levels) and TLS handshakes.
const WORKER_STACK: usize = 512 * 1024;
/// An idle worker thread exits after this long.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// Most idle worker threads kept; one finishing a request when this many
/// already wait exits at once. Waiters are woken in no set order, so under
/// a steady trickle each was woken within `WORKER_IDLE` and none exited:
/// after 1,000 concurrent streams, 1,000 idle workers kept ~40 KB of touched
/// stack each (`/proc/PID/smaps`) for as long as any traffic came.
const MAX_IDLE_WORKERS: usize = 64;
/// Requests in flight at once from which the proxy gives freed heap back to
/// the OS (`crate::trim`): every `TRIM_EVERY` while this busy, and once idle
/// again after it.
const TRIM_AFTER: usize = 64;
/// Least time between two trims while busy. Under 1,000 streams glibc held
/// ~18 MB of freed memory in its arenas at the peak (the garbage of the
/// connect burst and of finished streams); a trim costs well under a
/// millisecond of one worker's time between two requests.
const TRIM_EVERY: Duration = Duration::from_millis(250);
/// Stack for tiny_http's connection threads, which only parse request heads
/// and queue requests (std's default is 2 MiB).
const CONNECTION_STACK: usize = 256 * 1024;

/// How often the accept loop checks a drain's progress.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A running server.
pub struct Handle {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<Exit>>,
    controller: Controller,
}

/// Drains and reloads a running server, from any thread (the signal
/// thread, an admin endpoint).
#[derive(Clone)]
pub struct Controller {
    server: Arc<tiny_http::Server>,
    pool: Pool,
    lifecycle: Arc<Lifecycle>,
}

impl Controller {
    /// Begin a graceful drain: refuse new connections, answer
    /// `/health/ready` 503, let requests in flight finish until
    /// `server.shutdown_timeout`, then end the streams still running.
    /// `Handle::join` returns once the drain is over.
    pub fn drain(&self) {
        let deadline = self.lifecycle.begin_drain();
        let in_flight = self.pool.in_flight();
        self.server.stop_listening();
        log::info!(
            "draining: {in_flight} requests in flight; new connections are refused; streams still running in {:.1} s are ended",
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        );
        // Wake the accept loop so that it starts watching the drain.
        self.server.unblock();
    }

    /// Re-read the config file; see [`Lifecycle::reload`].
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        self.lifecycle.reload()
    }

    /// Requests admitted or queued and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }
}

impl lifecycle::Control for Controller {
    fn drain(&self) {
        Controller::drain(self)
    }
    fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }
}

/// How the accept loop ended.
enum Exit {
    /// `shutdown` (or dropping the handle) asked it to.
    Stopped,
    /// The listener is gone: tiny_http's accept thread ended.
    Died(String),
}

impl Handle {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drain and reload this server from another thread.
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// Re-read the config file; see [`Lifecycle::reload`].
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        self.controller.reload()
    }

    /// Begin a graceful drain; see [`Controller::drain`]. `join` returns
    /// when it is over.
    pub fn drain(&self) {
        self.controller.drain()
    }

    /// Block until the server stops. An error means it stopped on its own
    /// (the listener died, or the accept loop panicked): the caller should
    /// exit non-zero so that a supervisor restarts it.
    pub fn join(mut self) -> io::Result<()> {
        let Some(t) = self.accept.take() else {
            return Ok(());
        };
        match t.join() {
            Ok(Exit::Stopped) => Ok(()),
            Ok(Exit::Died(why)) => Err(io::Error::other(format!("the server stopped: {why}"))),
            Err(_) => Err(io::Error::other(
                "the server stopped: the accept loop panicked",
            )),
        }
    }

    /// Stop accepting requests. Requests in flight finish on their own.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop_now();
        }
    }
}

/// Bind per the config and start serving in background threads.
pub fn start(config: Config, hook: Option<Hook>) -> io::Result<Handle> {
    start_from(config, hook, Source::default())
}

/// [`start`], remembering where the config came from so that
/// [`Controller::reload`] can read it again.
pub fn start_from(config: Config, hook: Option<Hook>, source: Source) -> io::Result<Handle> {
    let addr = (config.server.host.as_str(), config.server.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("the host resolved to no address"))?;
    let listener = listen(addr, config.server.client_timeout)?;
    serve_from(listener, config, hook, source)
}

/// Serve on a listener that is already bound and listening (systemd socket
/// activation, tests). The socket options `start` sets are applied to it.
pub fn serve(listener: TcpListener, config: Config, hook: Option<Hook>) -> io::Result<Handle> {
    serve_from(listener, config, hook, Source::default())
}

/// [`serve`] with the config's [`Source`].
pub fn serve_from(
    listener: TcpListener,
    config: Config,
    hook: Option<Hook>,
    source: Source,
) -> io::Result<Handle> {
    configure(&SockRef::from(&listener), config.server.client_timeout)?;
    let addr = listener.local_addr()?;
    let limits = tiny_http::Limits {
        max_connections: config.server.max_connections,
        header_timeout: Some(config.server.header_timeout),
        stack_size: CONNECTION_STACK,
        error_body: listener_error_body,
    };
    let server = tiny_http::Server::from_listener_with_limits(listener, None, limits)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let server = Arc::new(server);
    if let Some(warning) = crate::auth::open_warning(&config, addr) {
        log::warn!("{warning}");
    }
    let lifecycle = Lifecycle::new(config, hook, source);
    let pool = Pool::new(lifecycle.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let controller = Controller {
        server: server.clone(),
        pool: pool.clone(),
        lifecycle: lifecycle.clone(),
    };
    let accept = {
        let server = server.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(&server, &pool, &lifecycle, &stop))?
    };
    Ok(Handle {
        addr,
        server,
        stop,
        accept: Some(accept),
        controller,
    })
}

/// Pending connections the kernel queues before tiny_http accepts them
/// (capped by `net.core.somaxconn`). std listens with 128: a burst of 1,000
/// clients overflowed it and the dropped SYNs were retried after 1 s, then
/// 3 s (measured: p99 3.7 s for 1,000 concurrent streams).
const LISTEN_BACKLOG: i32 = 4096;

/// Bind and listen. Accepted sockets inherit TCP_NODELAY and
/// SO_RCVTIMEO/SO_SNDTIMEO from the listening socket on Linux, so they are
/// set here once.
fn listen(addr: SocketAddr, client_timeout: Duration) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does: a restarted proxy can bind while old connections linger.
    sock.set_reuse_address(true)?;
    configure(&SockRef::from(&sock), client_timeout)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// The options accepted sockets inherit from the listener.
fn configure(sock: &SockRef<'_>, client_timeout: Duration) -> io::Result<()> {
    // Small responses and SSE events must not wait for delayed ACKs.
    sock.set_tcp_nodelay(true)?;
    // A client that stops sending its headers or body, or stops reading its
    // response, is dropped after this long and its thread freed.
    sock.set_read_timeout(Some(client_timeout))?;
    sock.set_write_timeout(Some(client_timeout))
}

/// The body of an error tiny_http answers on its own (a malformed or
/// oversized head, HTTP/2, a head too slow, too many connections), in the
/// OpenAI shape.
fn listener_error_body(status: u16, message: &str) -> String {
    ProxyError::new(ErrorKind::of_listener_status(status), message)
        .with_status(status)
        .body()
        .to_string()
}

fn accept_loop(
    server: &tiny_http::Server,
    pool: &Pool,
    lifecycle: &Lifecycle,
    stop: &AtomicBool,
) -> Exit {
    let mut exit = Exit::Stopped;
    let mut drain_started = None;
    while !stop.load(Ordering::SeqCst) {
        let draining = lifecycle.phase().drain_deadline();
        if let Some(deadline) = draining {
            let started = *drain_started.get_or_insert_with(Instant::now);
            if drain_over(pool, lifecycle, deadline, started) {
                // A request that arrived just before is still answered.
                match server.try_recv_boxed() {
                    Ok(Some(req)) => {
                        pool.submit(req);
                        continue;
                    }
                    _ => break,
                }
            }
        }
        // Wake for the earliest queued request's deadline, and while
        // draining, often enough to see the last request end.
        let wait = pool
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let wait = if draining.is_some() {
            wait.min(DRAIN_POLL)
        } else {
            wait
        };
        match server.recv_timeout_boxed(wait) {
            Ok(Some(req)) => pool.submit(req),
            Ok(None) => {}
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    log::error!("accept loop stopped: {e}");
                    exit = Exit::Died(e.to_string());
                }
                break;
            }
        }
        pool.expire();
    }
    pool.shutdown();
    exit
}

/// Is the drain over (nothing in flight, or the grace after the deadline
/// has passed)? Logs its end.
fn drain_over(pool: &Pool, lifecycle: &Lifecycle, deadline: Instant, started: Instant) -> bool {
    let in_flight = pool.in_flight();
    let took = started.elapsed().as_secs_f64();
    let cut = lifecycle.phase().streams_cut();
    if in_flight == 0 {
        if cut == 0 {
            log::info!("drained: every request finished ({took:.1} s); exiting");
        } else {
            log::info!(
                "drained ({took:.1} s): {cut} streams still running at server.shutdown_timeout were ended with server_shutting_down; exiting"
            );
        }
        return true;
    }
    if Instant::now() >= deadline + DRAIN_GRACE {
        log::warn!(
            "drain: {in_flight} requests still running {:.0} s after server.shutdown_timeout ({cut} streams ended); exiting anyway ({took:.1} s)",
            DRAIN_GRACE.as_secs_f64()
        );
        return true;
    }
    false
}

struct State {
    /// Requests admitted (counted in `active`) waiting for a thread.
    ready: VecDeque<Box<Request>>,
    /// Requests over the bound, with their deadlines.
    waiting: VecDeque<(Box<Request>, Instant)>,
    /// Requests admitted and not yet finished.
    active: usize,
    /// Threads blocked waiting for work.
    idle: usize,
    threads: usize,
    shutdown: bool,
    /// Most requests in flight at once since the heap was last trimmed.
    peak_active: usize,
    /// When the heap was last trimmed (or the pool started).
    last_trim: Instant,
}

impl State {
    /// Whether a worker that has just finished a request should trim the
    /// heap now (and note that it does): while `TRIM_AFTER` or more
    /// requests are in flight, at most once per `TRIM_EVERY`, and only by a
    /// worker with no request to take next, so that no request waits for
    /// it; and once nothing is in flight after such a burst.
    fn take_trim(&mut self, now: Instant) -> bool {
        let idle_after_burst = self.active == 0 && self.peak_active >= TRIM_AFTER;
        let busy = self.active >= TRIM_AFTER
            && self.ready.is_empty()
            && now.saturating_duration_since(self.last_trim) >= TRIM_EVERY;
        if !(idle_after_burst || busy) {
            return false;
        }
        self.last_trim = now;
        if self.active == 0 {
            self.peak_active = 0;
        }
        true
    }
}

struct PoolInner {
    state: Mutex<State>,
    work: Condvar,
    /// The current app: each request takes it once, at its start.
    lifecycle: Arc<Lifecycle>,
    max: usize,
    queue_timeout: Duration,
}

#[derive(Clone)]
struct Pool(Arc<PoolInner>);

impl Pool {
    fn new(lifecycle: Arc<Lifecycle>) -> Pool {
        let app = lifecycle.current();
        // Fixed at start; a reload that changes them says they need a restart.
        let max = app.config.server.workers;
        let queue_timeout = app.config.server.queue_timeout;
        Pool(Arc::new(PoolInner {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                waiting: VecDeque::new(),
                active: 0,
                idle: 0,
                threads: 0,
                shutdown: false,
                peak_active: 0,
                last_trim: Instant::now(),
            }),
            work: Condvar::new(),
            lifecycle,
            max,
            queue_timeout,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, req: Box<Request>) {
        let mut st = self.lock();
        if st.active < self.0.max {
            st.active += 1;
            st.peak_active = st.peak_active.max(st.active);
            st.ready.push_back(req);
            if let Some(stuck) = self.wake_or_spawn(&mut st) {
                drop(st);
                reject_overloaded(stuck, self.0.queue_timeout);
            }
        } else if st.waiting.len() < self.0.max {
            let deadline = Instant::now() + self.0.queue_timeout;
            st.waiting.push_back((req, deadline));
        } else {
            drop(st);
            reject_overloaded(req, self.0.queue_timeout);
        }
    }

    /// Make sure some thread will pick up what is in `ready`. Returns a
    /// request to refuse when no thread can be started and none exists to
    /// pick it up later (it would otherwise wait for ever).
    #[must_use]
    fn wake_or_spawn(&self, st: &mut State) -> Option<Box<Request>> {
        // Every idle thread is woken at most once per job; when more jobs
        // than idle threads are queued, start one more, but never more
        // threads than requests in hand (`active`, itself bounded by
        // `workers`): a thread that was just notified, or is finishing a
        // request, takes the job. Spawning whenever the queue outran the
        // idle count started ~200 threads for 64 clients on 2 cores.
        if st.ready.len() <= st.idle || st.threads >= st.active {
            self.0.work.notify_one();
            return None;
        }
        let pool = self.clone();
        let spawned = thread::Builder::new()
            .name("worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || pool.worker());
        match spawned {
            Ok(_) => st.threads += 1,
            Err(e) => {
                log::error!("cannot start a worker thread: {e}");
                if st.threads == 0 {
                    st.active -= 1;
                    return st.ready.pop_back();
                }
            }
        }
        None
    }

    fn in_flight(&self) -> usize {
        let st = self.lock();
        st.active.saturating_add(st.waiting.len())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.lock().waiting.front().map(|(_, d)| *d)
    }

    /// Answer 503 to queued requests whose wait is over.
    fn expire(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut st = self.lock();
            while st.waiting.front().is_some_and(|(_, d)| *d <= now) {
                expired.extend(st.waiting.pop_front().map(|(r, _)| r));
            }
        }
        for req in expired {
            reject_overloaded(req, self.0.queue_timeout);
        }
    }

    fn shutdown(&self) {
        let mut st = self.lock();
        st.shutdown = true;
        self.0.work.notify_all();
    }

    fn worker(&self) {
        // Streams give back the stack their upstream call used
        // (`relay::run`).
        crate::trim::mark_stack(WORKER_STACK);
        let mut st = self.lock();
        loop {
            let Some(req) = st.ready.pop_front() else {
                if st.shutdown || st.idle >= MAX_IDLE_WORKERS {
                    st.threads -= 1;
                    return;
                }
                st.idle += 1;
                let (guard, timeout) = self
                    .0
                    .work
                    .wait_timeout(st, WORKER_IDLE)
                    .unwrap_or_else(|e| e.into_inner());
                st = guard;
                st.idle -= 1;
                if timeout.timed_out() && st.ready.is_empty() {
                    st.threads -= 1;
                    return;
                }
                continue;
            };
            drop(st);
            let app = self.0.lifecycle.current();
            handle(&app, req);
            drop(app);
            st = self.lock();
            // Hand this thread straight to the longest-waiting request.
            match st.waiting.pop_front() {
                Some((next, _)) => st.ready.push_back(next),
                None => st.active -= 1,
            }
            // What a burst frees would otherwise stay resident in glibc's
            // arenas, during it and after it.
            if st.take_trim(Instant::now()) {
                drop(st);
                crate::trim::release_free_heap();
                st = self.lock();
            }
        }
    }
}

fn reject_overloaded(req: Box<Request>, queue_timeout: Duration) {
    let rid = request_id(&req);
    log::warn!(
        "{rid} {} {} rejected: all workers busy for {:.1} s",
        req.method(),
        req.url(),
        queue_timeout.as_secs_f64()
    );
    let err = ProxyError::overloaded(queue_timeout.as_secs().max(1));
    http::send_error(
        req,
        &err,
        vec![("x-request-id", rid)],
        false,
        BodyState::Unread,
    );
}

/// Run one request, answering 500 in the OpenAI shape if the handler panics.
fn handle(app: &App, req: Box<Request>) {
    let started = Instant::now();
    let _in_flight = app.metrics.enter();
    let rid = request_id(&req);
    let method = req.method().to_string();
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let client = req.remote_addr().copied();
    let mut slot = Some(req);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        routes::dispatch(app, &mut slot, &rid, started)
    }));
    let outcome = match outcome {
        Ok(o) => o,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!("{rid} {method} {path}: handler panicked: {what}");
            if let Some(req) = slot.take() {
                let err = ProxyError::internal(format!(
                    "The proxy hit an internal error handling this request (request id {rid})"
                ));
                // Whether the body was read is unknown: use the safe path.
                http::send_error(
                    req,
                    &err,
                    vec![("x-request-id", rid.clone())],
                    false,
                    BodyState::Unread,
                );
            }
            routes::Outcome {
                status: 500,
                ..Default::default()
            }
        }
    };
    let total = started.elapsed();
    let m = &app.metrics;
    let model = outcome.model.as_deref();
    let key = outcome.key.as_deref();
    m.request(&metrics::RequestRecord {
        endpoint: outcome.endpoint.unwrap_or(metrics::Ep::Other),
        model,
        key,
        status: outcome.status,
        total,
        upstream: outcome.upstream,
    });
    if let (Some(p), Some(u)) = (outcome.provider_index, outcome.usage) {
        m.tokens(p, m.model(model), key, u);
    }
    access_log::write(&access_log::Entry {
        request_id: &rid,
        client,
        key,
        method: &method,
        path: &path,
        model,
        provider: outcome.provider.as_deref(),
        attempts: outcome.attempts,
        status: outcome.status,
        stream: outcome.stream.as_ref().map(|e| e as &dyn std::fmt::Display),
        total,
        first_byte: outcome.first_byte,
        usage: outcome.usage,
    });
}

/// The client's `x-request-id` if it is sane, else a new one.
fn request_id(req: &Request) -> String {
    let theirs = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("x-request-id"))
        .map(|h| h.value.as_str())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
        });
    match theirs {
        Some(v) => v.to_string(),
        None => new_request_id(),
    }
}

fn new_request_id() -> String {
    format!("req_{}", crate::responses::hex64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(active: usize, peak_active: usize, last_trim: Instant) -> State {
        State {
            ready: VecDeque::new(),
            waiting: VecDeque::new(),
            active,
            idle: 0,
            threads: active,
            shutdown: false,
            peak_active,
            last_trim,
        }
    }

    #[test]
    fn a_busy_pool_trims_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut st = state(TRIM_AFTER, TRIM_AFTER, t0);
        assert!(!st.take_trim(t0), "trimmed right after starting");
        let t1 = t0 + TRIM_EVERY;
        assert!(st.take_trim(t1), "no trim while busy after TRIM_EVERY");
        assert!(!st.take_trim(t1), "trimmed twice at once");
        assert!(
            !st.take_trim(t1 + TRIM_EVERY / 2),
            "trimmed within TRIM_EVERY"
        );
        assert!(st.take_trim(t1 + TRIM_EVERY), "no second trim while busy");
        // The burst is still remembered for the trim once idle.
        assert_eq!(st.peak_active, TRIM_AFTER);
    }

    #[test]
    fn a_quiet_pool_never_trims_and_a_finished_burst_trims_once() {
        let t0 = Instant::now();
        let later = t0 + TRIM_EVERY * 10;
        let mut quiet = state(TRIM_AFTER - 1, TRIM_AFTER - 1, t0);
        assert!(!quiet.take_trim(later), "trimmed under light load");
        quiet.active = 0;
        assert!(!quiet.take_trim(later), "trimmed after light load");

        let mut burst = state(0, TRIM_AFTER, t0);
        // Once idle, at once: no wait for TRIM_EVERY.
        assert!(burst.take_trim(t0), "no trim once idle after a burst");
        assert!(!burst.take_trim(later), "trimmed again with no new burst");
    }

    #[test]
    fn a_worker_with_a_request_to_take_does_not_trim() {
        let t0 = Instant::now();
        let mut st = state(TRIM_AFTER, TRIM_AFTER, t0);
        st.ready
            .push_back(Box::new(tiny_http::TestRequest::new().into()));
        assert!(!st.take_trim(t0 + TRIM_EVERY), "a queued request waited");
        st.ready.clear();
        assert!(st.take_trim(t0 + TRIM_EVERY));
    }
}
