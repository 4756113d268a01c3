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
    /// llm-proxy patch: the read-ahead for a next request saw the client
    /// close (EOF) or reset the connection. See `Request::client_gone`.
    peer_gone: std::sync::atomic::AtomicBool,
    /// llm-proxy patch 12: the responses on this connection, see `Flow`.
    flow: Mutex<Flow>,
    /// llm-proxy patch 13: the connection's last request was read and its
    /// reading half is about to be shut (`RefinedTcpStream`'s drop), which a
    /// peek would take for the client leaving: `peer_gone` stays `false`,
    /// as it did for such connections before this patch.
    unwatched: std::sync::atomic::AtomicBool,
}

/// llm-proxy patches 12 and 13: the responses on one connection.
#[derive(Default)]
pub(crate) struct Flow {
    /// Responses not yet written to the end (writers not yet dropped).
    pub in_flight: usize,
    /// When the last one ended: the idle timeout counts from there.
    pub last_end: Option<Instant>,
    /// llm-proxy patch 13: a parked connection's way back to the pool, run
    /// when its response ends.
    pub resume: Option<Box<dyn FnOnce() + Send>>,
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
            sock,
            peer_gone: std::sync::atomic::AtomicBool::new(false),
            flow: Mutex::new(Flow::default()),
            unwatched: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// llm-proxy patch 13: see `unwatched`.
    pub(crate) fn unwatch(&self) {
        self.unwatched
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// llm-proxy patches 12 and 13: the responses on this connection.
    pub(crate) fn flow(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// llm-proxy patch 12: a response on this connection has begun (its
    /// request was read).
    pub(crate) fn response_started(&self) {
        self.flow().in_flight += 1;
    }

    /// llm-proxy patch 12: a response on this connection is over (its
    /// writer was dropped). (Patch 13: a parked connection goes back to
    /// the pool for its next request.)
    pub(crate) fn response_ended(&self, now: Instant) {
        let resume = {
            let mut flow = self.flow();
            flow.in_flight = flow.in_flight.saturating_sub(1);
            flow.last_end = Some(now);
            if flow.in_flight == 0 {
                flow.resume.take()
            } else {
                None
            }
        };
        if let Some(resume) = resume {
            resume();
        }
    }

    /// llm-proxy patch 12: whether a connection whose read-ahead has waited
    /// `timeout` without a byte is idle, at `now`.
    pub(crate) fn keep_alive_until(&self, timeout: Duration, now: Instant) -> Idle {
        let flow = self.flow();
        if flow.in_flight > 0 {
            return Idle::Busy;
        }
        match flow.last_end.and_then(|end| end.checked_add(timeout)) {
            Some(at) if at > now => Idle::Until(at),
            _ => Idle::Over,
        }
    }

    /// llm-proxy patch 12: the idle keep-alive timeout, the socket's own
    /// read timeout (`None`: none, or not known).
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.sock.as_ref().and_then(|s| s.read_timeout().ok().flatten())
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

    /// llm-proxy patch: see `note_peer_gone`. (Patch 13: the connection's
    /// thread no longer reads while a response is in flight, so this looks
    /// at the socket itself, as nginx does: a peek that does not wait sees
    /// an EOF or a reset, or a pipelined request, which is not leaving.)
    pub fn peer_gone(&self) -> bool {
        if self.peer_gone.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        if self.stopped() || self.unwatched.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let Some(sock) = &self.sock else {
            return false;
        };
        let gone = sock.peek_gone();
        if gone {
            self.note_peer_gone();
        }
        gone
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
