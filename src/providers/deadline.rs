//! Deadlines for upstream I/O that ureq's own timeouts cannot express, set
//! by the thread that does the blocking I/O (a worker handles one request at
//! a time, so a thread-local is the request's state):
//!
//! - [`limit`]: no upstream read or write may wait past an instant. The
//!   router sets `request start + timeout` until a stream's first chunk; each
//!   upstream event read sets `now + stream_idle_timeout`. Limits nest, and
//!   an inner one never extends an outer one, so a request-wide deadline can
//!   wrap both later.
//!   The router's `request_timeout` is such an outer limit; [`take_expired`]
//!   tells it afterwards whether its own limit is what cut an attempt.
//! - [`on_silence`]: while a read waits, call a function every so often (the
//!   relay writes the client a keep-alive comment, which is how it notices a
//!   client that left while the upstream is silent; the router checks
//!   whether the client left while an attempt waits).
//!
//! [`DeadlineConnector`] wraps every upstream connection's transport to obey
//! both. ureq's own timeouts (`stream_timeout` over the whole stream) still
//! apply underneath. The same wrapper saves system calls ureq would make:
//! a request's head leaves in one write with its body, and a pooled
//! connection is probed once per reuse rather than twice
//! ([`DeadlineTransport`]); and memory: ureq reads a connection's input
//! from the wrapper's own buffer, which holds only what has not been parsed
//! yet ([`Input`]).

use std::cell::{Cell, RefCell};
use std::io;
use std::time::{Duration, Instant};

use ureq::Error;
use ureq::unversioned::transport::time::Duration as WaitFor;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

#[derive(Debug, Clone, Copy)]
struct Limit {
    at: Instant,
    /// The config key that set it, for the error message.
    what: &'static str,
    after: Duration,
}

type SilenceFn = Box<dyn FnMut() -> io::Result<()>>;

struct Silence {
    every: Duration,
    call: SilenceFn,
}

thread_local! {
    static LIMIT: Cell<Option<Limit>> = const { Cell::new(None) };
    /// The `what` of the last limit that cut a wait, until taken.
    static EXPIRED: Cell<Option<&'static str>> = const { Cell::new(None) };
    static SILENCE: RefCell<Option<Silence>> = const { RefCell::new(None) };
}

/// Restores the previous limit when dropped.
#[must_use = "the limit lasts as long as the guard"]
pub struct LimitGuard {
    prev: Option<Limit>,
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        LIMIT.set(self.prev);
    }
}

/// Upstream I/O on this thread fails with a timeout at `start + after`
/// (or at an earlier limit already in force), until the guard is dropped.
/// `what` names the setting in the error message.
pub fn limit(start: Instant, after: Duration, what: &'static str) -> LimitGuard {
    let prev = LIMIT.get();
    let mine = start.checked_add(after).map(|at| Limit { at, what, after });
    let next = match (prev, mine) {
        (Some(p), Some(m)) if p.at <= m.at => Some(p),
        (p, None) => p,
        (_, m) => m,
    };
    LIMIT.set(next);
    LimitGuard { prev }
}

/// Removes the silence function when dropped.
#[must_use = "the function is called only while the guard lives"]
pub struct SilenceGuard(());

impl Drop for SilenceGuard {
    fn drop(&mut self) {
        SILENCE.with_borrow_mut(|s| *s = None);
    }
}

/// While an upstream read on this thread has waited `every` without data,
/// call `f`; if it fails, the read fails with its error.
pub fn on_silence(every: Duration, f: impl FnMut() -> io::Result<()> + 'static) -> SilenceGuard {
    SILENCE.with_borrow_mut(|s| {
        *s = Some(Silence {
            every,
            call: Box::new(f),
        })
    });
    SilenceGuard(())
}

/// The setting (`what`) of the last [`limit`] that cut an upstream wait on
/// this thread since the last call, if any; clears it.
pub fn take_expired() -> Option<&'static str> {
    EXPIRED.take()
}

/// Time left until the limit in force on this thread, if there is one.
pub fn left(now: Instant) -> Option<Duration> {
    LIMIT.get().map(|l| l.at.saturating_duration_since(now))
}

fn expired(l: Limit) -> Error {
    EXPIRED.set(Some(l.what));
    Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{} ({} s) passed while waiting for the upstream",
            l.what,
            l.after.as_secs_f64()
        ),
    ))
}

/// Why a capped wait ended early.
enum Cap {
    /// ureq's own timeout is the nearest: its error stands.
    Ureq,
    Limit(Limit),
    Silence,
}

/// `timeout` capped by the limit and the silence interval, and which of the
/// three is nearest. `ureq_at` is when ureq's own timeout falls.
fn cap(
    timeout: NextTimeout,
    ureq_at: Option<Instant>,
    now: Instant,
    limit: Option<Limit>,
    silence: Option<Duration>,
) -> (NextTimeout, Cap) {
    let mut left = ureq_at.map(|at| at.saturating_duration_since(now));
    let mut why = Cap::Ureq;
    if let Some(l) = limit {
        let d = l.at.saturating_duration_since(now);
        if left.is_none_or(|x| d < x) {
            left = Some(d);
            why = Cap::Limit(l);
        }
    }
    if let Some(d) = silence {
        if left.is_none_or(|x| d < x) {
            left = Some(d);
            why = Cap::Silence;
        }
    }
    let mut t = timeout;
    t.after = left.map_or(WaitFor::NotHappening, WaitFor::from);
    (t, why)
}

fn ureq_deadline(timeout: &NextTimeout, now: Instant) -> Option<Instant> {
    match timeout.after {
        WaitFor::Exact(d) => now.checked_add(d),
        WaitFor::NotHappening => None,
    }
}

/// Wraps each upstream connection's transport in a [`DeadlineTransport`].
#[derive(Debug, Default)]
pub struct DeadlineConnector;

impl Connector<Box<dyn Transport>> for DeadlineConnector {
    type Out = DeadlineTransport;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(|inner| DeadlineTransport::new(inner, true)))
    }
}

/// A transport whose waits obey this thread's [`limit`] and [`on_silence`],
/// and whose requests leave with their head and the start of their body in
/// one write.
///
/// ureq transmits a request's head, then its body, each from the start of
/// the output buffer: two `send`s, each after a `setsockopt(SO_SNDTIMEO)`
/// (the timeout is derived from a deadline, so it is new every time), and
/// two packets for the upstream. So the first write after a read (or on a
/// new connection) is held back, and put in front of the next write, in
/// the output buffer: one write for both, unless the body's first piece
/// fills the buffer (a body of several KiB), when what no longer fits
/// follows in a second write. A request without a body sends its head
/// when the answer is awaited.
#[derive(Debug)]
pub struct DeadlineTransport {
    inner: Box<dyn Transport>,
    /// Connected and not yet waited on.
    fresh: bool,
    /// A request head not yet transmitted (its capacity is kept for the
    /// connection's next request).
    held: Vec<u8>,
    /// The last thing done was a write (a later write is the body).
    writing: bool,
    /// A request went out since the last liveness probe.
    used: bool,
    /// What ureq reads: see [`Input`].
    input: Input,
    /// ureq's scratch space for a chunked request body ([`TMP`]).
    tmp: Vec<u8>,
}

/// Bytes of a connection's input not yet parsed by ureq, moved out of the
/// inner transport's buffer after each read.
///
/// ureq's own buffers (`LazyBuffers`) use the input buffer as scratch space
/// while a request body is sent, and grow it to 10 KiB for that, for the
/// connection's life: at 1,000 concurrent streams, 10 MB that held a few
/// hundred bytes of the next event. Here the inner transport keeps its
/// configured input buffer (`INPUT_BUFFER`, what one read may take) and the
/// body's scratch space is [`DeadlineTransport::tmp`], 512 bytes. This
/// buffer grows to what ureq needs at once (a
/// response head larger than one read; the inner buffer alone would fail
/// such a head) and is given back when it empties after holding more than
/// [`Input::KEEP`].
#[derive(Debug, Default)]
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last consume took something (ureq's `can_use_input`).
    progress: bool,
}

impl Input {
    /// Capacity kept when the buffer empties (an event or two).
    const KEEP: usize = 1024;
    /// Most bytes ureq may leave unparsed (its largest response head is
    /// 64 KiB): an upstream cannot make the buffer grow past this.
    const MAX: usize = 256 * 1024;

    fn unconsumed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Room for at least `n` more bytes after the unconsumed ones.
    fn reserve(&mut self, n: usize) -> Result<(), Error> {
        let live = self.end - self.start;
        let need = live.saturating_add(n);
        if need > Self::MAX {
            return Err(Error::Io(io::Error::other(format!(
                "the upstream sent over {} KiB that could not be parsed",
                Self::MAX / 1024
            ))));
        }
        if self.buf.len() - self.end < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = live;
            if self.buf.len() < need {
                self.buf.resize(need, 0);
            }
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> Result<(), Error> {
        self.reserve(data.len())?;
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.progress = n > 0;
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > Self::KEEP {
                self.buf = Vec::new();
            }
        }
    }
}

impl DeadlineTransport {
    fn new(inner: Box<dyn Transport>, fresh: bool) -> DeadlineTransport {
        DeadlineTransport {
            inner,
            fresh,
            held: Vec::new(),
            writing: false,
            used: false,
            input: Input::default(),
            tmp: Vec::new(),
        }
    }

    /// Move what the inner transport has read into [`Input`]; whether there
    /// was anything.
    fn take_input(&mut self) -> Result<bool, Error> {
        let inner = self.inner.buffers();
        let n = inner.input().len();
        if n == 0 {
            return Ok(false);
        }
        self.input.append(inner.input())?;
        inner.input_consume(n);
        Ok(true)
    }

    /// Transmit `amount` bytes of the inner output buffer, within the
    /// deadline in force.
    fn send(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let now = Instant::now();
        let limit = LIMIT.get();
        if let Some(l) = limit.filter(|l| l.at <= now) {
            return Err(expired(l));
        }
        let (t, why) = cap(timeout, ureq_deadline(&timeout, now), now, limit, None);
        match (self.inner.transmit_output(amount, t), why) {
            (Err(Error::Timeout(_)), Cap::Limit(l)) => Err(expired(l)),
            (r, _) => r,
        }
    }
}

/// ureq writes into the inner transport's output buffer (which it sends
/// from), and reads from [`Input`].
impl Buffers for DeadlineTransport {
    fn output(&mut self) -> &mut [u8] {
        self.inner.buffers().output()
    }

    fn input(&self) -> &[u8] {
        self.input.unconsumed()
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        // Not used by ureq itself (transports fill their own buffers), but
        // part of the contract: room for one more read.
        let n = INPUT_RESERVE;
        if self.input.reserve(n).is_err() {
            return &mut [];
        }
        let end = self.input.end;
        &mut self.input.buf[end..]
    }

    fn input_appended(&mut self, amount: usize) {
        self.input.end = self
            .input
            .end
            .saturating_add(amount)
            .min(self.input.buf.len());
    }

    fn input_consume(&mut self, amount: usize) {
        self.input.consume(amount);
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        if self.tmp.is_empty() {
            // ureq reads a chunked body into this and frames it into the
            // output buffer (a body of known length, which is all the proxy
            // sends, goes straight to the output buffer: only the length is
            // looked at). Kept for the connection's next request.
            self.tmp = vec![0; TMP];
        }
        (&mut self.tmp, self.inner.buffers().output())
    }

    fn can_use_input(&self) -> bool {
        !self.input.unconsumed().is_empty() && self.input.progress
    }
}

/// Room [`Buffers::input_append_buf`] offers.
const INPUT_RESERVE: usize = 2048;
/// ureq's scratch space for one piece of a chunked request body.
const TMP: usize = 512;

impl Transport for DeadlineTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        self.used = true;
        let first = !std::mem::replace(&mut self.writing, true);
        if first && self.held.is_empty() && amount > 0 {
            // A request's head: it leaves with the start of the body.
            let now = Instant::now();
            if let Some(l) = LIMIT.get().filter(|l| l.at <= now) {
                return Err(expired(l));
            }
            let out = &self.inner.buffers().output()[..amount];
            self.held.extend_from_slice(out);
            return Ok(());
        }
        if self.held.is_empty() {
            return self.send(amount, timeout);
        }
        if amount == 0 {
            return Ok(());
        }
        // The head goes in front of the body in the output buffer; what no
        // longer fits there goes in a second write.
        let head = std::mem::take(&mut self.held);
        let out = self.inner.buffers().output();
        let fits = out.len().saturating_sub(head.len()).min(amount);
        let rest = out[fits..amount].to_vec();
        out.copy_within(..fits, head.len());
        out[..head.len()].copy_from_slice(&head);
        self.held = head;
        let sent = self.send(self.held.len() + fits, timeout);
        self.held.clear();
        sent?;
        if rest.is_empty() {
            return Ok(());
        }
        self.inner.buffers().output()[..rest.len()].copy_from_slice(&rest);
        self.send(rest.len(), timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.writing = false;
        if !self.held.is_empty() {
            // A request without a body: its head leaves now.
            let n = self.held.len();
            self.inner.buffers().output()[..n].copy_from_slice(&self.held);
            self.held.clear();
            self.send(n, timeout)?;
        }
        if std::mem::take(&mut self.fresh) {
            // Connecting went ~10 KB deeper than this wait for the answer
            // (ureq's connector frames); with 1,000 requests connecting at
            // once those dead pages are resident for all of them.
            crate::trim::release_stack_below();
        }
        // Input the inner transport read earlier and not yet handed over.
        if self.take_input()? {
            return Ok(true);
        }
        let ureq_at = ureq_deadline(&timeout, Instant::now());
        loop {
            let now = Instant::now();
            let limit = LIMIT.get();
            if let Some(l) = limit.filter(|l| l.at <= now) {
                return Err(expired(l));
            }
            let every = SILENCE.with_borrow(|s| s.as_ref().map(|s| s.every));
            let (t, why) = cap(timeout, ureq_at, now, limit, every);
            match (self.inner.await_input(t), why) {
                (Err(Error::Timeout(_)), Cap::Limit(l)) => return Err(expired(l)),
                (Err(Error::Timeout(_)), Cap::Silence) => {
                    let called = SILENCE.with_borrow_mut(|s| s.as_mut().map(|s| (s.call)()));
                    if let Some(Err(e)) = called {
                        return Err(Error::Io(e));
                    }
                }
                (Ok(read), _) => return Ok(self.take_input()? || read),
                (r, _) => return r,
            }
        }
    }

    /// ureq probes a connection (a non-blocking read of one byte, between
    /// two `ioctl(FIONBIO)`) when it returns it to its pool, right after
    /// its body was read to the end, and again when it takes it out for
    /// the next request. The second probe sees whatever the first would
    /// have (bytes after the body, a close) and what came since, so it
    /// alone decides: three system calls fewer per request.
    fn is_open(&mut self) -> bool {
        if std::mem::take(&mut self.used) {
            return true;
        }
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_nest_and_never_extend_an_outer_one() {
        let t0 = Instant::now();
        assert!(LIMIT.get().is_none());
        {
            let _outer = limit(t0, Duration::from_secs(10), "timeout");
            assert_eq!(LIMIT.get().unwrap().what, "timeout");
            {
                let _longer = limit(t0, Duration::from_secs(60), "stream_idle_timeout");
                assert_eq!(LIMIT.get().unwrap().what, "timeout");
            }
            {
                let _shorter = limit(t0, Duration::from_secs(1), "stream_idle_timeout");
                let l = LIMIT.get().unwrap();
                assert_eq!(
                    (l.what, l.at),
                    ("stream_idle_timeout", t0 + Duration::from_secs(1))
                );
            }
            assert_eq!(LIMIT.get().unwrap().what, "timeout");
        }
        assert!(LIMIT.get().is_none());
    }

    #[test]
    fn cap_picks_the_nearest_of_ureq_limit_and_silence() {
        let now = Instant::now();
        let t = NextTimeout::default();
        let l = Limit {
            at: now + Duration::from_secs(5),
            what: "timeout",
            after: Duration::from_secs(5),
        };
        let (c, why) = cap(t, None, now, None, None);
        assert!(matches!(why, Cap::Ureq) && c.after.is_not_happening());
        let (c, why) = cap(t, Some(now + Duration::from_secs(9)), now, Some(l), None);
        assert!(matches!(why, Cap::Limit(_)));
        assert_eq!(c.after, WaitFor::from(Duration::from_secs(5)));
        let (_, why) = cap(t, Some(now + Duration::from_secs(2)), now, Some(l), None);
        assert!(matches!(why, Cap::Ureq));
        let s = Some(Duration::from_secs(1));
        let (c, why) = cap(t, None, now, Some(l), s);
        assert!(matches!(why, Cap::Silence));
        assert_eq!(c.after, WaitFor::from(Duration::from_secs(1)));
    }

    /// A connected transport whose reads find data at once.
    #[derive(Debug)]
    struct Ready(ureq::unversioned::transport::LazyBuffers);

    impl Transport for Ready {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.0
        }
        fn transmit_output(&mut self, _: usize, _: NextTimeout) -> Result<(), Error> {
            Ok(())
        }
        fn await_input(&mut self, _: NextTimeout) -> Result<bool, Error> {
            Ok(true)
        }
        fn is_open(&mut self) -> bool {
            true
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_new_connection_gives_back_the_stack_of_connecting_once() {
        use crate::trim::testing::{go_deep, here, resident_kb_at};
        let (deep, first, again) = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(|| {
                crate::trim::mark_stack(512 * 1024);
                let at = here();
                let inner = Box::new(Ready(ureq::unversioned::transport::LazyBuffers::new(
                    64, 64,
                )));
                // As `DeadlineConnector::connect` makes it.
                let mut t = DeadlineTransport::new(inner, true);
                // As deep as connecting went.
                go_deep(160);
                let deep = resident_kb_at(at);
                assert!(t.await_input(NextTimeout::default()).unwrap());
                let first = resident_kb_at(at);
                // Later reads of the same connection release nothing.
                go_deep(160);
                assert!(t.await_input(NextTimeout::default()).unwrap());
                (deep, first, resident_kb_at(at))
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            first + 128 <= deep,
            "{deep} kB deep, {first} kB after the first wait"
        );
        assert!(
            again + 16 > deep,
            "{deep} kB deep, {again} kB after a later wait"
        );
    }

    /// A transport that records what each write sent, and counts its
    /// liveness probes.
    #[derive(Debug)]
    struct Recording {
        bufs: ureq::unversioned::transport::LazyBuffers,
        sent: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
        probes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Transport for Recording {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.bufs
        }
        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), Error> {
            let out = self.bufs.output()[..amount].to_vec();
            self.sent.lock().unwrap().push(out);
            Ok(())
        }
        fn await_input(&mut self, _: NextTimeout) -> Result<bool, Error> {
            Ok(true)
        }
        fn is_open(&mut self) -> bool {
            self.probes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        }
    }

    /// As ureq writes a request: the head into the output buffer and
    /// transmitted, then the body in pieces of at most the buffer's size.
    fn write_request(t: &mut DeadlineTransport, head: &[u8], body: &[u8]) {
        t.buffers().output()[..head.len()].copy_from_slice(head);
        t.transmit_output(head.len(), NextTimeout::default())
            .unwrap();
        let mut rest = body;
        while !rest.is_empty() {
            let out = t.buffers().output();
            let n = out.len().min(rest.len());
            out[..n].copy_from_slice(&rest[..n]);
            t.transmit_output(n, NextTimeout::default()).unwrap();
            rest = &rest[n..];
        }
        assert!(t.await_input(NextTimeout::default()).unwrap());
    }

    #[test]
    fn a_request_head_leaves_with_the_start_of_its_body() {
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let inner = Box::new(Recording {
            bufs: ureq::unversioned::transport::LazyBuffers::new(1024, 256),
            sent: sent.clone(),
            probes: Default::default(),
        });
        let mut t = DeadlineTransport::new(inner, false);
        let head = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 20\r\n\r\n";
        // A small body: head and body in one write.
        write_request(&mut t, head, b"{\"model\":\"m\",\"x\":1}");
        assert_eq!(
            std::mem::take(&mut *sent.lock().unwrap()),
            [[&head[..], b"{\"model\":\"m\",\"x\":1}"].concat()]
        );
        // The next request on the connection: the same.
        write_request(&mut t, head, b"{}");
        assert_eq!(
            std::mem::take(&mut *sent.lock().unwrap()),
            [[&head[..], b"{}"].concat()]
        );
        // A body larger than the buffer: the head with as much of the
        // body as fits, then the rest, in order.
        let big: Vec<u8> = (0..600u32).map(|i| b'a' + (i % 26) as u8).collect();
        write_request(&mut t, head, &big);
        let writes = std::mem::take(&mut *sent.lock().unwrap());
        assert_eq!(writes[0].len(), 256, "{writes:?}");
        assert_eq!(writes.concat(), [&head[..], &big].concat());
        // No body (a GET): the head leaves when the answer is awaited.
        write_request(&mut t, b"GET /v1/responses/r HTTP/1.1\r\n\r\n", b"");
        assert_eq!(
            std::mem::take(&mut *sent.lock().unwrap()),
            [b"GET /v1/responses/r HTTP/1.1\r\n\r\n".to_vec()]
        );
    }

    #[test]
    fn a_connection_is_probed_when_it_leaves_the_pool_not_when_it_returns() {
        use std::sync::atomic::Ordering::Relaxed;
        let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let inner = Box::new(Recording {
            bufs: ureq::unversioned::transport::LazyBuffers::new(1024, 256),
            sent: Default::default(),
            probes: probes.clone(),
        });
        let mut t = DeadlineTransport::new(inner, false);
        for round in 1..=3 {
            write_request(&mut t, b"POST / HTTP/1.1\r\n\r\n", b"{}");
            // ureq returns the connection to its pool: no probe.
            assert!(t.is_open());
            assert_eq!(probes.load(Relaxed), round - 1, "round {round}");
            // ureq takes it out of the pool for the next request: probed.
            assert!(t.is_open());
            assert_eq!(probes.load(Relaxed), round, "round {round}");
        }
    }

    /// A connected transport whose reads hand over the next piece of a
    /// script, into its own (small) input buffer.
    #[derive(Debug)]
    struct Scripted {
        bufs: ureq::unversioned::transport::LazyBuffers,
        pieces: std::collections::VecDeque<Vec<u8>>,
    }

    impl Transport for Scripted {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.bufs
        }
        fn transmit_output(&mut self, _: usize, _: NextTimeout) -> Result<(), Error> {
            Ok(())
        }
        fn await_input(&mut self, _: NextTimeout) -> Result<bool, Error> {
            let Some(p) = self.pieces.pop_front() else {
                return Ok(false);
            };
            let free = self.bufs.input_append_buf();
            assert!(p.len() <= free.len(), "a piece is one read");
            free[..p.len()].copy_from_slice(&p);
            self.bufs.input_appended(p.len());
            Ok(true)
        }
        fn is_open(&mut self) -> bool {
            true
        }
    }

    fn scripted(pieces: &[&[u8]]) -> DeadlineTransport {
        let inner = Box::new(Scripted {
            bufs: ureq::unversioned::transport::LazyBuffers::new(64, 64),
            pieces: pieces.iter().map(|p| p.to_vec()).collect(),
        });
        DeadlineTransport::new(inner, false)
    }

    #[test]
    fn input_larger_than_one_read_accumulates_until_parsed() {
        // A response head of 5 reads of the inner transport's 64 bytes:
        // ureq parses nothing until it is whole.
        let piece = [b'h'; 64];
        let mut t = scripted(&[&piece[..]; 5]);
        for n in 1..=5 {
            assert!(t.maybe_await_input(NextTimeout::default()).unwrap());
            assert_eq!(t.buffers().input().len(), 64 * n);
            t.buffers().input_consume(0);
        }
        // Parsed at last: consumed in two parts, in order.
        t.buffers().input_consume(300);
        assert_eq!(t.buffers().input(), &piece[..20]);
        assert!(t.buffers().can_use_input());
        t.buffers().input_consume(20);
        assert!(t.buffers().input().is_empty());
        // The script is over: no progress, nothing left over.
        assert!(!t.maybe_await_input(NextTimeout::default()).unwrap());
    }

    #[test]
    fn the_input_buffer_is_given_back_when_it_empties_after_a_large_head() {
        let big = [b'x'; 64];
        let mut pieces: Vec<&[u8]> = vec![&big; 20];
        pieces.push(b"event");
        let mut t = scripted(&pieces);
        for _ in 0..20 {
            t.maybe_await_input(NextTimeout::default()).unwrap();
            t.buffers().input_consume(0);
        }
        assert!(t.input.buf.len() >= 20 * 64);
        t.buffers().input_consume(20 * 64);
        assert_eq!(
            t.input.buf.capacity(),
            0,
            "a large buffer is freed once empty"
        );
        // A small one is kept for the next read.
        assert!(t.maybe_await_input(NextTimeout::default()).unwrap());
        assert_eq!(t.buffers().input(), b"event");
        t.buffers().input_consume(5);
        assert!(t.input.buf.capacity() > 0 && t.input.buf.capacity() <= Input::KEEP);
    }

    #[test]
    fn sending_a_body_does_not_grow_the_inner_input_buffer() {
        // ureq's own buffers grow their input to 10 KiB to serve as this
        // scratch space; the wrapper's is separate and small.
        let mut t = scripted(&[b"HTTP/1.1 200 OK\r\n\r\n"]);
        let (tmp, out) = t.buffers().tmp_and_output();
        assert_eq!((tmp.len(), out.len()), (TMP, 64));
        assert_eq!(t.inner.buffers().input_append_buf().len(), 64);
        assert!(t.maybe_await_input(NextTimeout::default()).unwrap());
        assert_eq!(t.buffers().input(), b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn unparsed_input_is_bounded() {
        let mut i = Input::default();
        let piece = vec![0u8; 64 * 1024];
        for _ in 0..4 {
            i.append(&piece).unwrap();
        }
        let err = i.append(b"x").unwrap_err().to_string();
        assert!(err.contains("256 KiB"), "{err}");
        // Consumed, it takes more again.
        i.consume(64 * 1024);
        i.append(b"x").unwrap();
    }
}
