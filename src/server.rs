//! The listener, the bound on concurrent requests, panic isolation and
//! shutdown.
//!
//! tiny_http accepts connections and runs each on a thread of its own pool
//! (started on demand, exiting after 5 s idle); every request is handled
//! right there, on its connection's thread, with no hand-off. At most
//! `workers` requests are handled at once; more wait for a free place for up
//! to `queue_timeout`, then get a 503 with `Retry-After`.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tiny_http::Request;

use crate::app::{App, Hook};
use crate::config::Config;
use crate::error::ProxyError;
use crate::http;
use crate::routes;

/// A running server.
pub struct Handle {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Handle {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Block until the server stops.
    pub fn join(mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
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
    let addr = (config.server.host.as_str(), config.server.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("the host resolved to no address"))?;
    let listener = listen(addr, config.server.client_timeout)?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App::new(config, hook));
    let gate = Arc::new(Gate::new(
        app.config.server.workers,
        app.config.server.queue_timeout,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let handler: tiny_http::Handler = {
        let stop = stop.clone();
        Arc::new(move |req| {
            let queue_timeout = gate.queue_timeout;
            if stop.load(Ordering::SeqCst) {
                reject_overloaded(req, queue_timeout);
                return;
            }
            match gate.enter() {
                Some(_slot) => handle(&app, req),
                None => reject_overloaded(req, queue_timeout),
            }
        })
    };
    let server = tiny_http::Server::from_listener_with_handler(listener, handler)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let server = Arc::new(server);
    let accept = {
        let server = server.clone();
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || wait_for_stop(&server))?
    };
    Ok(Handle {
        addr,
        server,
        stop,
        accept: Some(accept),
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
    // Small responses and SSE events must not wait for delayed ACKs.
    sock.set_tcp_nodelay(true)?;
    // A client that stops sending its headers or body, or stops reading its
    // response, is dropped after this long and its thread freed.
    sock.set_read_timeout(Some(client_timeout))?;
    sock.set_write_timeout(Some(client_timeout))?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// Waits until the server is unblocked. Requests never arrive here: they
/// are handled on their connection's thread (see [`start`]).
fn wait_for_stop(server: &tiny_http::Server) {
    while let Ok(req) = server.recv() {
        drop(req);
    }
}

/// The bound on requests handled at once: a counting semaphore whose
/// waiters give up after `queue_timeout`. No more than `workers` requests
/// wait either; beyond that the answer is an immediate 503.
struct Gate {
    state: Mutex<GateState>,
    freed: Condvar,
    max: usize,
    queue_timeout: Duration,
}

struct GateState {
    active: usize,
    waiting: usize,
}

impl Gate {
    fn new(max: usize, queue_timeout: Duration) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                active: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            max,
            queue_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot, or `None` when none freed up within `queue_timeout`.
    fn enter(&self) -> Option<Slot<'_>> {
        let mut st = self.lock();
        if st.active < self.max {
            st.active += 1;
            return Some(Slot(self));
        }
        if st.waiting >= self.max {
            return None;
        }
        st.waiting += 1;
        let deadline = Instant::now() + self.queue_timeout;
        loop {
            let now = Instant::now();
            if st.active < self.max || now >= deadline {
                st.waiting -= 1;
                if st.active < self.max {
                    st.active += 1;
                    return Some(Slot(self));
                }
                return None;
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One admitted request; frees its place when dropped.
struct Slot<'a>(&'a Gate);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().active -= 1;
        self.0.freed.notify_one();
    }
}

fn reject_overloaded(req: Request, queue_timeout: Duration) {
    let rid = request_id(&req);
    log::warn!(
        "{rid} {} {} rejected: all workers busy for {:.1} s",
        req.method(),
        req.url(),
        queue_timeout.as_secs_f64()
    );
    let err = ProxyError::overloaded(queue_timeout.as_secs().max(1));
    http::send_error_unread(req, &err, vec![("x-request-id", rid)]);
}

/// Run one request, answering 500 in the OpenAI shape if the handler panics.
fn handle(app: &App, req: Request) {
    let started = Instant::now();
    let rid = request_id(&req);
    let method = req.method().to_string();
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let mut slot = Some(req);
    let outcome = catch_unwind(AssertUnwindSafe(|| routes::dispatch(app, &mut slot, &rid)));
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
                http::send_error_unread(req, &err, vec![("x-request-id", rid.clone())]);
            }
            routes::Outcome {
                status: 500,
                ..Default::default()
            }
        }
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    log::info!(
        "{rid} {method} {path} model={} provider={} attempts={} status={}{} {ms:.1}ms",
        outcome.model.as_deref().unwrap_or("-"),
        outcome.provider.as_deref().unwrap_or("-"),
        outcome.attempts,
        outcome.status,
        outcome
            .note
            .map(|n| format!(" stream={n}"))
            .unwrap_or_default(),
    );
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
    static SEED: AtomicU64 = AtomicU64::new(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = SEED.load(Ordering::Relaxed);
    if seed == 0 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        seed = t ^ (u64::from(std::process::id()) << 32) | 1;
        SEED.store(seed, Ordering::Relaxed);
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 of seed+n: unique per process, unpredictable enough for ids.
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("req_{z:016x}")
}
