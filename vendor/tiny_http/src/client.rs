use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Method};
use crate::util::refined_tcp_stream::{Deadline, HeadWait, Idle, Stopper};
use crate::util::RefinedTcpStream;
use crate::Limits;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    /// llm-proxy patch: the read deadline of this connection (see
    /// `Deadline`), the limits, and whether a request head has begun.
    deadline: Arc<Deadline>,
    stopper: Arc<Stopper>,
    limits: Limits,
    head_started: bool,
    head_bytes: usize,
    /// llm-proxy patch 15: the read-ahead stopped to park the connection
    /// (see `refined_tcp_stream::Park`).
    parked: bool,
}

/// llm-proxy patch: longest request line or header line accepted.
const MAX_LINE: usize = 16 * 1024;
/// llm-proxy patch: most headers accepted in one request.
const MAX_HEADERS: usize = 128;
/// llm-proxy patch: longest request head (request line and all headers).
const MAX_HEAD: usize = 64 * 1024;
/// llm-proxy patch: how long and how much of a refused connection's input is
/// read and discarded before it is closed, so that the close does not reset
/// the connection before the client has read the answer (nginx's lingering
/// close).
const LINGER: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 256 * 1024;

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    /// llm-proxy patch: answer with this status and message, then close.
    Refuse(u16, String),
    /// llm-proxy patch 15: park the connection (no request read).
    Park,
}

/// llm-proxy patch: a complete response tiny_http writes itself (an error,
/// then the connection is closed), with a body from `Limits::error_body`.
pub(crate) fn canned(limits: &Limits, status: u16, message: &str) -> Vec<u8> {
    let body = (limits.error_body)(status, message);
    let reason = crate::common::StatusCode(status).default_reason_phrase();
    let retry = if status == 503 { "Retry-After: 1\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{retry}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        deadline: Arc<Deadline>,
        stopper: Arc<Stopper>,
        limits: Limits,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            deadline,
            stopper,
            limits,
            head_started: false,
            head_bytes: 0,
            parked: false,
        }
    }

    /// llm-proxy patch 15: whether the last `next` stopped to park the
    /// connection (cleared).
    pub(crate) fn take_parked(&mut self) -> bool {
        std::mem::take(&mut self.parked)
    }

    /// llm-proxy patch 15: the connection's shared state.
    pub(crate) fn stopper(&self) -> Arc<Stopper> {
        self.stopper.clone()
    }

    /// llm-proxy patch: answer `status` without reading a request and close,
    /// for a connection refused before it got a thread. Runs on the accept
    /// thread, so it discards only the input already there, without waiting
    /// (a flood of silent connections must not slow the accept loop).
    pub(crate) fn refuse(mut self, status: u16, message: &str) {
        self.answer_and_close(status, message, None);
    }

    /// llm-proxy patch: write a canned error, then read and discard input
    /// for at most `linger` (`None`: what has arrived) before the connection
    /// is dropped (and closed).
    fn answer_and_close(&mut self, status: u16, message: &str, linger: Option<Duration>) {
        use std::io::Write;
        let bytes = canned(&self.limits, status, message);
        let mut writer = self.sink.next().unwrap();
        if writer.write_all(&bytes).and_then(|_| writer.flush()).is_err() {
            return;
        }
        drop(writer);
        match linger {
            Some(linger) => self.deadline.set(Some(Instant::now() + linger)),
            None if self.stopper.set_nonblocking() => {}
            None => return,
        }
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match self.next_header_source.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        self.no_more_requests = true;
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    /// (llm-proxy patch: at most `MAX_LINE` bytes.)
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    fn read_next_line(&mut self, request_line: bool) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            // llm-proxy patch 15: before the first byte of a next head, with
            // nothing buffered, wait in `poll` (a park request wakes it).
            let byte = if request_line
                && !self.head_started
                && buf.is_empty()
                && self.next_header_source.nothing_buffered()
            {
                let timeout = match self.deadline.get() {
                    Some(at) => Some(at.saturating_duration_since(Instant::now())),
                    None => self.stopper.idle_timeout(),
                };
                match self.stopper.wait_for_head(timeout) {
                    HeadWait::Ready => self.next_header_source.by_ref().bytes().next(),
                    HeadWait::TimedOut => Some(Err(IoError::new(
                        ErrorKind::TimedOut,
                        "no next request within the timeout",
                    ))),
                    HeadWait::Park => return Err(ReadError::Park),
                }
            } else {
                self.next_header_source.by_ref().bytes().next()
            };

            let byte = match byte {
                Some(Ok(b)) => b,
                // llm-proxy patch: a head that stops arriving is answered
                // 408 (an idle keep-alive connection is closed quietly).
                Some(Err(e))
                    if self.head_started
                        && matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
                {
                    return Err(ReadError::Refuse(
                        408,
                        "The request head did not arrive in time".into(),
                    ));
                }
                // llm-proxy patch 12: the idle timeout passed before a byte
                // of a next head. A connection whose response is still being
                // written (an event stream) is not idle, and the timeout
                // counts from the end of the last response: only then is
                // the connection closed (quietly, as before).
                Some(Err(e)) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    let timeout = self.stopper.idle_timeout().unwrap_or_default();
                    match self.stopper.keep_alive_until(timeout, Instant::now()) {
                        Idle::Busy => {
                            self.deadline.set(None);
                            continue;
                        }
                        Idle::Until(at) => {
                            self.deadline.set(Some(at));
                            continue;
                        }
                        Idle::Over => {
                            self.deadline.set(None);
                            return Err(ReadError::ReadIoError(IoError::new(
                                ErrorKind::WouldBlock,
                                "the connection was idle for its timeout",
                            )));
                        }
                    }
                }
                Some(Err(e)) => return Err(ReadError::ReadIoError(e)),
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };

            // llm-proxy patch: the head's deadline runs from its first byte,
            // as Envoy's request_headers_timeout does; before it, an idle
            // keep-alive connection waits for the socket's own timeout.
            if !self.head_started {
                self.head_started = true;
                // (llm-proxy patch 12: replacing any idle deadline.)
                self.deadline
                    .set(self.limits.header_timeout.map(|t| Instant::now() + t));
            }

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                self.head_bytes += buf.len() + 2;
                return AsciiString::from_ascii(buf).map_err(|_| {
                    ReadError::Refuse(400, "The request head is not ASCII".into())
                });
            }

            prev_byte_was_cr = byte == b'\r';

            // llm-proxy patch: bound a line and the whole head, so a client
            // cannot make the server buffer an endless request line or
            // header; answered as nginx does (414, 431).
            if buf.len() >= MAX_LINE {
                return Err(if request_line {
                    ReadError::Refuse(414, format!("The request line is longer than {MAX_LINE} bytes"))
                } else {
                    ReadError::Refuse(431, format!("A request header is longer than {MAX_LINE} bytes"))
                });
            }
            if self.head_bytes + buf.len() >= MAX_HEAD {
                return Err(ReadError::Refuse(
                    431,
                    format!("The request headers are larger than {MAX_HEAD} bytes in all"),
                ));
            }
            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Box<Request>, ReadError> {
        let (method, path, version, headers) = {
            // reading the request line
            self.head_started = false;
            self.head_bytes = 0;
            let (method, path, version) = {
                let line = self.read_next_line(true)?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };
            // llm-proxy patch: refuse HTTP/2 and later at once, as nginx
            // does. (Checked after the head was parsed, the 505 was written
            // behind the request's own response, which never came: the
            // client got no answer and the connection thread hung.)
            if version > HTTPVersion(1, 1) {
                return Err(ReadError::Refuse(
                    505,
                    "This server supports HTTP/1.0 and HTTP/1.1 only".into(),
                ));
            }

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(false)?;

                    if line.is_empty() {
                        break;
                    };
                    // llm-proxy patch: bound the number of headers too.
                    if headers.len() >= MAX_HEADERS {
                        return Err(ReadError::Refuse(
                            431,
                            format!("The request has more than {MAX_HEADERS} headers"),
                        ));
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };
        // llm-proxy patch: the head is complete; its body has the socket's
        // own timeout.
        self.deadline.set(None);
        check_framing(&headers)?;

        self.build(method, path, version, headers)
    }

    /// llm-proxy patch: the request, once its head is read, built on the heap
    /// in a frame of its own. A `Request` is ~600 bytes: returned by value,
    /// every caller up to the connection's task kept a slot for it, ~2.7 KB
    /// of frames that stayed on the connection thread's stack (resident)
    /// while it waits for the next head, one page per connection.
    #[inline(never)]
    fn build(
        &mut self,
        method: Method,
        path: String,
        version: HTTPVersion,
        headers: Vec<crate::Header>,
    ) -> Result<Box<Request>, ReadError> {
        // building the writer for the request
        // (llm-proxy patch 12: which tells the read-ahead while it lives.)
        let writer = InFlight::new(self.sink.next().unwrap(), self.stopper.clone());

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let mut request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // llm-proxy patch: see `Request::stop_reading_ahead`.
        request.set_stopper(self.stopper.clone());

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    /// (llm-proxy patch: boxed, see `ClientConnection::build`.)
    type Item = Box<Request>;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Box<Request>> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        // (llm-proxy patch: or the previous one stopped the read-ahead)
        if self.no_more_requests || self.stopper.stopped() {
            return None;
        }

        loop {
            // llm-proxy patch: every refusal is answered in one canned
            // shape (`Limits::error_body`) with `Connection: close`, and
            // the connection is then closed: after a bad head we do not
            // know where the next request would start.
            let refusal = match self.read() {
                Ok(rq) => Ok(rq),
                Err(ReadError::WrongRequestLine) => {
                    Err((400, "The request line is malformed".to_string()))
                }
                Err(ReadError::WrongHeader(_)) => {
                    Err((400, "A request header is malformed".to_string()))
                }
                Err(ReadError::ExpectationFailed(_)) => Err((
                    417,
                    "Only `Expect: 100-continue` is supported".to_string(),
                )),
                Err(ReadError::Refuse(status, message)) => Err((status, message)),
                Err(ReadError::Park) => {
                    self.parked = true;
                    return None;
                }
                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    Err((408, "The request head did not arrive in time".to_string()))
                }
                // EOF, reset, or an idle keep-alive connection timing out.
                // llm-proxy patch: an EOF or a reset while no head had
                // begun is the client leaving, possibly while its request
                // is still being handled (`Request::client_gone`); a
                // timeout is not.
                Err(ReadError::ReadIoError(ref err)) => {
                    if !self.head_started
                        && matches!(
                            err.kind(),
                            ErrorKind::ConnectionAborted
                                | ErrorKind::ConnectionReset
                                | ErrorKind::UnexpectedEof
                                | ErrorKind::BrokenPipe
                        )
                    {
                        self.stopper.note_peer_gone();
                    }
                    return None;
                }
            };
            let rq = match refusal {
                // llm-proxy patch: the previous response was the last
                // (`Request::stop_reading_ahead`).
                _ if self.stopper.stopped() => {
                    if let Ok(rq) = refusal {
                        (*rq).discard();
                    }
                    return None;
                }
                Ok(rq) => rq,
                Err((status, message)) => {
                    log::debug!("refusing a request: {status} {message}");
                    self.answer_and_close(status, &message, Some(LINGER));
                    return None;
                }
            };

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// llm-proxy patch 12: a response's writer, counted as in flight on its
/// connection (`Stopper::response_started`) until it is dropped, so that
/// the read-ahead for a next request neither gives up on the connection
/// while the response is written nor counts its idle timeout from before
/// the response ended.
struct InFlight<W: std::io::Write> {
    inner: W,
    stopper: Arc<Stopper>,
}

impl<W: std::io::Write> InFlight<W> {
    fn new(inner: W, stopper: Arc<Stopper>) -> InFlight<W> {
        stopper.response_started();
        InFlight { inner, stopper }
    }
}

impl<W: std::io::Write> std::io::Write for InFlight<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.inner.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> IoResult<()> {
        self.inner.write_all(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for InFlight<W> {
    fn drop(&mut self) {
        self.stopper.response_ended(Instant::now());
    }
}

/// llm-proxy patch: refuse framing that two parsers could read differently
/// (request smuggling behind a front proxy), as nginx does: both
/// `Content-Length` and `Transfer-Encoding`, or `Content-Length` values
/// that disagree.
fn check_framing(headers: &[crate::Header]) -> Result<(), ReadError> {
    let mut lengths = headers.iter().filter(|h| h.field.equiv("Content-Length"));
    let first = lengths.next();
    let te = headers.iter().any(|h| h.field.equiv("Transfer-Encoding"));
    if first.is_some() && te {
        return Err(ReadError::Refuse(
            400,
            "The request has both Content-Length and Transfer-Encoding".into(),
        ));
    }
    if let Some(first) = first {
        if lengths.any(|h| h.value.as_str().trim() != first.value.as_str().trim()) {
            return Err(ReadError::Refuse(
                400,
                "The request has conflicting Content-Length headers".into(),
            ));
        }
    }
    Ok(())
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
