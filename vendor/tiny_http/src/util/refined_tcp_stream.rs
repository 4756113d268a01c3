use std::io::Result as IoResult;
use std::io::{Error as IoError, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;
#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use crate::ssl::SslStream;

pub(crate) enum Stream {
    Http(Connection),
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    Https(SslStream),
}

impl Clone for Stream {
    fn clone(&self) -> Self {
        match self {
            Stream::Http(tcp_stream) => Stream::Http(tcp_stream.try_clone().unwrap()),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => Stream::Https(ssl_stream.clone()),
        }
    }
}

impl From<Connection> for Stream {
    fn from(tcp_stream: Connection) -> Self {
        Stream::Http(tcp_stream)
    }
}

impl Stream {
    fn secure(&self) -> bool {
        match self {
            Stream::Http(_) => false,
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(_) => true,
        }
    }

    fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.peer_addr(),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.peer_addr(),
        }
    }

    fn read_timeout(&self) -> IoResult<Option<Duration>> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.read_timeout(),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(_) => Ok(None),
        }
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.set_read_timeout(t),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(_) => Ok(()),
        }
    }

    fn shutdown(&mut self, how: Shutdown) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.shutdown(how),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.read(buf),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.write(buf),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.write(buf),
        }
    }

    fn flush(&mut self) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.flush(),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.flush(),
        }
    }
}

/// llm-proxy patch: a deadline for the reads on one connection, shared by
/// its reading half and its `ClientConnection`, which sets it for the whole
/// of a request head (`header_timeout`) and for the short drain before it
/// closes a connection it refused. The socket's own `SO_RCVTIMEO` bounds a
/// single read only; a client sending a byte now and then would never hit it.
#[derive(Default)]
pub struct Deadline(Mutex<Option<Instant>>);

impl Deadline {
    pub fn set(&self, at: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// llm-proxy patch: lets the handler of a connection's last request stop
/// the connection's thread from reading ahead for a next one, which it would
/// otherwise do (holding a thread and its stack) for as long as the response
/// lasts: `shutdown(SHUT_RD)` wakes its read with EOF, and the flag keeps it
/// from serving a request it read before that.
pub struct Stopper {
    closing: std::sync::atomic::AtomicBool,
    sock: Option<Connection>,
    /// llm-proxy patch 15: see [`Park`].
    park: Mutex<Park>,
    /// llm-proxy patch 15: written to ask the connection's thread, waiting
    /// for a next request head in `poll`, to park the connection.
    #[cfg(target_os = "linux")]
    wake: Option<std::os::fd::OwnedFd>,
    /// llm-proxy patch 15: queues a parked connection's task again.
    resumer: std::sync::OnceLock<crate::util::Resumer>,
    /// llm-proxy patch 15: `idle_timeout`, read once.
    idle_timeout: std::sync::OnceLock<Option<Duration>>,
    /// llm-proxy patch: the read-ahead for a next request saw the client
    /// close (EOF) or reset the connection. See `Request::client_gone`.
    peer_gone: std::sync::atomic::AtomicBool,
    /// llm-proxy patch 12: responses on this connection not yet written to
    /// the end, and when the last one ended (see `keep_alive_until`).
    responses: std::sync::atomic::AtomicUsize,
    last_end: Mutex<Option<Instant>>,
}

/// llm-proxy patch 15: a connection parked while its request is handled.
///
/// A connection's thread reads ahead for the client's next request while
/// the current one is handled (patch 12). For a request that will take
/// long (an event stream), the handler asks it to stop and go back to the
/// pool: `Request::park_connection`. The thread waits for a next head in
/// `poll` on the socket and an eventfd, so a write to the eventfd wakes it;
/// it then hands the connection's task here and leaves, and the end of the
/// response (the writer dropped) queues the task again. The states, under
/// one lock with the count of responses in flight:
pub(crate) enum Park {
    /// Nothing asked.
    Idle,
    /// The handler asked; the thread has not seen it yet.
    Requested,
    /// The thread saw it and is returning the task.
    Parking,
    /// The task waits here for the response to end.
    Parked(Box<dyn crate::util::Task>),
}

/// llm-proxy patch 15: what waiting for a next request head ended with.
pub(crate) enum HeadWait {
    /// Bytes (or an EOF) to read.
    Ready,
    /// Nothing within the timeout.
    TimedOut,
    /// The handler asked to park the connection (see [`Park`]).
    Park,
}

/// llm-proxy patch 12: what the read-ahead for a next request does when
/// the socket's own read timeout (the idle keep-alive timeout) passes
/// before a byte of a next request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    /// A response is still being written (an event stream that outlives
    /// the timeout): the connection is not idle; keep waiting.
    Busy,
    /// Idle, but for less than the timeout (it counts from the end of the
    /// last response): wait until then.
    Until(Instant),
    /// Idle for the whole timeout: close the connection.
    Over,
}

impl Stopper {
    pub(crate) fn new(sock: Option<Connection>) -> Stopper {
        Stopper {
            closing: std::sync::atomic::AtomicBool::new(false),
            park: Mutex::new(Park::Idle),
            // A connection without one (eventfd failed: out of descriptors)
            // is never parked.
            #[cfg(target_os = "linux")]
            wake: sock.as_ref().and_then(|_| {
                use rustix::event::{eventfd, EventfdFlags};
                eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok()
            }),
            resumer: std::sync::OnceLock::new(),
            idle_timeout: std::sync::OnceLock::new(),
            sock,
            peer_gone: std::sync::atomic::AtomicBool::new(false),
            responses: std::sync::atomic::AtomicUsize::new(0),
            last_end: Mutex::new(None),
        }
    }

    /// llm-proxy patch 12: a response on this connection has begun (its
    /// request was read).
    pub(crate) fn response_started(&self) {
        self.responses
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// llm-proxy patch 12: a response on this connection is over (its
    /// writer was dropped). (Patch 15: a parked connection is queued again.)
    pub(crate) fn response_ended(&self, now: Instant) {
        *self.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        let parked = {
            let mut park = self.park_lock();
            self.responses
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            std::mem::replace(&mut *park, Park::Idle)
        };
        if let Park::Parked(task) = parked {
            self.resume_now(task);
        }
    }

    fn park_lock(&self) -> std::sync::MutexGuard<'_, Park> {
        self.park.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn in_flight(&self) -> bool {
        self.responses.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// llm-proxy patch 15: where a parked connection's task is queued again.
    pub(crate) fn set_resumer(&self, r: crate::util::Resumer) {
        let _ = self.resumer.set(r);
    }

    /// llm-proxy patch 15: ask the connection's thread to park the
    /// connection until the response in flight ends (see [`Park`]). Does
    /// nothing off Linux, without an eventfd, or with no response in flight.
    pub(crate) fn request_park(&self) {
        #[cfg(target_os = "linux")]
        {
            let Some(wake) = &self.wake else { return };
            if self.resumer.get().is_none() {
                return;
            }
            let mut park = self.park_lock();
            if matches!(*park, Park::Idle) && self.in_flight() {
                *park = Park::Requested;
                let _ = rustix::io::write(wake, &1u64.to_ne_bytes());
            }
        }
    }

    /// llm-proxy patch 15: wait up to `timeout` (`None`: for ever) for the
    /// first byte of a next request head, or for a request to park.
    pub(crate) fn wait_for_head(&self, timeout: Option<Duration>) -> HeadWait {
        #[cfg(target_os = "linux")]
        {
            use rustix::event::{poll, PollFd, PollFlags, Timespec};
            use std::convert::TryFrom;
            let (Some(sock), Some(wake)) = (&self.sock, &self.wake) else {
                return HeadWait::Ready;
            };
            let until = timeout.and_then(|t| Instant::now().checked_add(t));
            loop {
                let left = until.map(|u| u.saturating_duration_since(Instant::now()));
                let ts = match left.map(Timespec::try_from) {
                    Some(Ok(ts)) => Some(ts),
                    Some(Err(_)) | None => None,
                };
                let sock_fd = sock.as_fd();
                let mut fds = [
                    PollFd::new(&sock_fd, PollFlags::IN | PollFlags::RDHUP),
                    PollFd::new(wake, PollFlags::IN),
                ];
                match poll(&mut fds, ts.as_ref()) {
                    Ok(0) => return HeadWait::TimedOut,
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    // The read that follows reports the socket's error.
                    Err(_) => return HeadWait::Ready,
                }
                if !fds[1].revents().is_empty() {
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(wake, &mut buf);
                    let mut park = self.park_lock();
                    if matches!(*park, Park::Requested) {
                        if self.in_flight() {
                            *park = Park::Parking;
                            return HeadWait::Park;
                        }
                        *park = Park::Idle;
                    }
                }
                if !fds[0].revents().is_empty() {
                    return HeadWait::Ready;
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = timeout;
            HeadWait::Ready
        }
    }

    /// llm-proxy patch 15: hand over the connection's task once its thread
    /// saw a park request; `Err` gives it back if the response has ended
    /// meanwhile (the thread then carries on with it).
    pub(crate) fn park(
        &self,
        task: Box<dyn crate::util::Task>,
    ) -> Result<(), Box<dyn crate::util::Task>> {
        let mut park = self.park_lock();
        if matches!(*park, Park::Parking) && self.in_flight() {
            *park = Park::Parked(task);
            Ok(())
        } else {
            *park = Park::Idle;
            Err(task)
        }
    }

    /// llm-proxy patch 15: queue a parked task again (or one that could not
    /// be parked: its response ended while it was being parked).
    pub(crate) fn resume_now(&self, task: Box<dyn crate::util::Task>) {
        match self.resumer.get() {
            Some(r) => r.resume(task),
            None => drop(task),
        }
    }

    /// llm-proxy patch 15: whether the connection's thread has stopped
    /// reading it to park it (so the client leaving is seen by a peek). A
    /// request not yet seen changes nothing: the read-ahead, if any, still
    /// runs (a connection without one, after `Connection: close`, keeps
    /// `gone` false, as before).
    fn parked(&self) -> bool {
        matches!(*self.park_lock(), Park::Parking | Park::Parked(_))
    }

    /// llm-proxy patch 15: a peek at the socket, not waiting: an EOF or a
    /// reset is the client gone; data (a next request) or nothing is not.
    fn peek_gone(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            use rustix::net::{recv, RecvFlags};
            let Some(sock) = &self.sock else { return false };
            let mut b = [0u8; 1];
            return match recv(sock.as_fd(), &mut b[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
                Ok((_, 0)) => true,
                Ok(_) => false,
                Err(e) => matches!(
                    e,
                    rustix::io::Errno::CONNRESET | rustix::io::Errno::PIPE | rustix::io::Errno::NOTCONN
                ),
            };
        }
        #[allow(unreachable_code)]
        false
    }

    /// llm-proxy patch 12: whether a connection whose read-ahead has waited
    /// `timeout` without a byte is idle, at `now`.
    pub(crate) fn keep_alive_until(&self, timeout: Duration, now: Instant) -> Idle {
        if self.responses.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return Idle::Busy;
        }
        let last_end = *self.last_end.lock().unwrap_or_else(|e| e.into_inner());
        match last_end.and_then(|end| end.checked_add(timeout)) {
            Some(at) if at > now => Idle::Until(at),
            _ => Idle::Over,
        }
    }

    /// llm-proxy patch 12: the idle keep-alive timeout, the socket's own
    /// read timeout (`None`: none, or not known). (Patch 15: read once, at
    /// the connection's first wait for a request head, before any deadline
    /// read has changed the socket's timeout: one system call per
    /// connection, not one per wait.)
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        *self
            .idle_timeout
            .get_or_init(|| self.sock.as_ref().and_then(|s| s.read_timeout().ok().flatten()))
    }

    pub fn stop(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(sock) = &self.sock {
            let _ = sock.shutdown(Shutdown::Read);
        }
    }

    /// Make the connection's reads return at once when no data is there
    /// (for draining a connection refused on the accept thread).
    pub(crate) fn set_nonblocking(&self) -> bool {
        self.sock
            .as_ref()
            .is_some_and(|sock| sock.set_nonblocking(true).is_ok())
    }

    pub fn stopped(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// llm-proxy patch: the read-ahead ended because the client closed or
    /// reset the connection. An EOF caused by `stop` (our own
    /// `shutdown(SHUT_RD)`) is not the client's doing and is not recorded.
    pub(crate) fn note_peer_gone(&self) {
        if !self.stopped() {
            self.peer_gone
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// llm-proxy patch: see `note_peer_gone`. (Patch 15: while the
    /// connection is parked, a peek.)
    pub fn peer_gone(&self) -> bool {
        self.peer_gone.load(std::sync::atomic::Ordering::Acquire)
            || (self.parked() && !self.stopped() && self.peek_gone())
    }
}

pub struct RefinedTcpStream {
    stream: Stream,
    close_read: bool,
    close_write: bool,
    /// llm-proxy patch: see `Deadline`.
    deadline: Option<Arc<Deadline>>,
    /// The socket's own read timeout, while a deadline has replaced it.
    saved_timeout: Option<Option<Duration>>,
}

impl RefinedTcpStream {
    pub(crate) fn new<S>(stream: S) -> (RefinedTcpStream, RefinedTcpStream)
    where
        S: Into<Stream>,
    {
        let stream: Stream = stream.into();

        let (read, write) = (stream.clone(), stream);

        let read = RefinedTcpStream {
            stream: read,
            close_read: true,
            close_write: false,
            deadline: None,
            saved_timeout: None,
        };

        let write = RefinedTcpStream {
            stream: write,
            close_read: false,
            close_write: true,
            deadline: None,
            saved_timeout: None,
        };

        (read, write)
    }

    /// Returns true if this struct wraps around a secure connection.
    #[inline]
    pub(crate) fn secure(&self) -> bool {
        self.stream.secure()
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.stream.peer_addr()
    }

    /// llm-proxy patch: reads obey `deadline` while it is set.
    pub(crate) fn with_deadline(mut self, deadline: Arc<Deadline>) -> RefinedTcpStream {
        self.deadline = Some(deadline);
        self
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            self.stream.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        // llm-proxy patch: while a deadline is set, each read waits at most
        // until it (one setsockopt per read, only then); after, the socket's
        // own timeout is put back.
        let Some(at) = self.deadline.as_ref().and_then(|d| d.get()) else {
            if let Some(saved) = self.saved_timeout.take() {
                self.stream.set_read_timeout(saved)?;
            }
            return self.stream.read(buf);
        };
        let timed_out = || IoError::new(ErrorKind::TimedOut, "read deadline passed");
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let saved = match self.saved_timeout {
            Some(saved) => saved,
            None => {
                let saved = self.stream.read_timeout()?;
                self.saved_timeout = Some(saved);
                saved
            }
        };
        let wait = match saved {
            Some(own) if own < left => own,
            _ => left,
        };
        self.stream.set_read_timeout(Some(wait))?;
        match self.stream.read(buf) {
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    && Instant::now() >= at =>
            {
                Err(timed_out())
            }
            r => r,
        }
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.stream.flush()
    }
}
