//! Server-sent events: reading them from an upstream body, and writing them
//! to the client one flushed write per event (tiny_http's own chunked
//! writer would hold events back until 8 KiB had gathered).

use std::io::{self, BufRead, Write};

/// Largest event accepted from an upstream, all its lines (comments,
/// names, unknown fields) counted; a larger one is an error rather than
/// unbounded memory (an upstream that sent 1,000 `data:` lines of 1 MiB
/// without a blank line took the proxy to 1 GB). Real chunks are a few
/// hundred bytes; the largest real ones carry a base64 image of a few MB.
pub const MAX_EVENT: usize = 4 * 1024 * 1024;
/// A line buffer grown past this by a large event is given back after it.
const KEEP_LINE_CAPACITY: usize = 64 * 1024;
/// Most bytes read after a stream's last event to reach the end of the body.
const MAX_DRAIN: usize = 4 * 1024;

/// One upstream event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub name: Option<String>,
    /// The `data:` lines joined with `\n`; `None` if there were none.
    pub data: Option<String>,
    /// Comment lines (`: keep-alive`), without the colon.
    pub comments: Vec<String>,
}

/// Reads events from a buffered upstream body.
pub struct SseReader<R> {
    inner: R,
    line: Vec<u8>,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(inner: R) -> Self {
        SseReader {
            inner,
            line: Vec::with_capacity(512),
        }
    }

    /// Read the rest of a finished body and discard it, so the connection
    /// under it can be reused. Gives up (the connection is then closed) if
    /// more than a few bytes follow, which no conforming upstream sends
    /// after its last event.
    pub fn drain(&mut self) {
        // Through the reader's own buffer: io::copy would put 8 KiB on the
        // worker's stack, which stays resident for the thread's life.
        let mut left = MAX_DRAIN;
        while left > 0 {
            let n = match self.inner.fill_buf() {
                Ok([]) | Err(_) => return,
                Ok(b) => b.len(),
            };
            self.inner.consume(n);
            left = left.saturating_sub(n);
        }
    }

    /// The next event, or `None` at a clean end of the body.
    /// A body that ends in the middle of an event is an error, and so is an
    /// event larger than [`MAX_EVENT`] (`InvalidData`), found before more
    /// than `MAX_EVENT + 2` bytes of it are buffered.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        let mut ev = Event::default();
        let mut any = false;
        // Bytes of this event so far; never more than MAX_EVENT.
        let mut size = 0usize;
        loop {
            self.line.clear();
            let room = MAX_EVENT - size;
            // + 2: the blank line that ends a full event still fits.
            let mut limited = <&mut R as std::io::Read>::take(&mut self.inner, room as u64 + 2);
            let n = limited.read_until(b'\n', &mut self.line)?;
            if n == 0 {
                return if any {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended in the middle of an event",
                    ))
                } else {
                    Ok(None)
                };
            }
            let blank = matches!(&self.line[..], b"\n" | b"\r\n");
            if n > room && !blank {
                self.line = Vec::new();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "an upstream event was larger than {} MiB",
                        MAX_EVENT / (1024 * 1024)
                    ),
                ));
            }
            let mut l = &self.line[..];
            if l.ends_with(b"\n") {
                l = &l[..l.len() - 1];
            } else {
                // EOF without a newline: the stream was cut.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended in the middle of a line",
                ));
            }
            if l.ends_with(b"\r") {
                l = &l[..l.len() - 1];
            }
            if l.is_empty() {
                if any {
                    if self.line.capacity() > KEEP_LINE_CAPACITY {
                        self.line = Vec::with_capacity(512);
                    }
                    return Ok(Some(ev));
                }
                continue;
            }
            any = true;
            size += n;
            let text = std::str::from_utf8(l)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "event is not UTF-8"))?;
            let (field, value) = match text.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (text, ""),
            };
            match field {
                "" => ev.comments.push(value.to_string()),
                "data" => match &mut ev.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    // Room for the framing that `encode_owned` adds in place.
                    None => {
                        let mut d = String::with_capacity(value.len() + FRAMING);
                        d.push_str(value);
                        ev.data = Some(d);
                    }
                },
                "event" => ev.name = Some(value.to_string()),
                _ => {} // id, retry and unknown fields: not used by LLM APIs
            }
        }
    }
}

/// Serialize an event in the form clients expect.
pub fn encode(ev: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(ev.data.as_ref().map_or(16, |d| d.len() + 16));
    for c in &ev.comments {
        out.extend_from_slice(b": ");
        out.extend_from_slice(c.as_bytes());
        out.push(b'\n');
    }
    if let Some(n) = &ev.name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    if let Some(d) = &ev.data {
        for line in d.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    out
}

/// Bytes that `data: ` and the blank line add to a one-line payload.
const FRAMING: usize = b"data: \n\n".len();

/// [`encode`], taking the event: an event that is one `data:` line (as
/// every chat chunk is) is framed in its own buffer (sized for it by
/// [`SseReader`]), without a second allocation or a scan per line.
pub fn encode_owned(ev: Event) -> Vec<u8> {
    match ev {
        Event {
            name: None,
            data: Some(d),
            comments,
        } if comments.is_empty() && !d.as_bytes().contains(&b'\n') => {
            let mut out = d.into_bytes();
            out.reserve_exact(FRAMING);
            out.splice(0..0, *b"data: ");
            out.extend_from_slice(b"\n\n");
            out
        }
        ev => encode(&ev),
    }
}

/// `data: <json>\n\n`
pub fn data_event(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The next-write buffer grown past this by a large event is given back
/// after it (a stream's events are a few hundred bytes; an image can be MBs).
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// Writes a response body to the client: each event in one write, flushed.
///
/// HTTP/1.1 bodies are chunked, one chunk per event, framed here into the
/// buffer of the next write (a hex size line, the event, CRLF): the head
/// and first event leave in one write, every later event in one write,
/// and the body ends only in `finish`, never from a `Drop` (a write there
/// would wait up to `client_timeout` on a client that has just failed one
/// or stopped reading). chunked_transfer's `Encoder` did this framing
/// until issue 14: it formatted each size line into a new `String` and
/// copied each event twice: 640 of the 9,190 instructions an event cost.
/// It also split events larger than 0xFFFF bytes, which HTTP does not
/// need.
pub struct EventWriter {
    inner: Box<dyn Write + Send>,
    /// HTTP/1.1: chunked framing. HTTP/1.0: the body is close-delimited and
    /// the events go out as they are.
    chunked: bool,
    /// The next write; empty between writes, its capacity reused.
    out: Vec<u8>,
}

impl EventWriter {
    /// Write the status line and headers, then `first` as the first event,
    /// in one write so the client sees them together.
    pub fn start(
        inner: Box<dyn Write + Send>,
        chunked: bool,
        head: &str,
        first: &[u8],
    ) -> io::Result<EventWriter> {
        let mut out = Vec::with_capacity(head.len() + first.len() + 64);
        out.extend_from_slice(head.as_bytes());
        let mut w = EventWriter {
            inner,
            chunked,
            out,
        };
        w.send(first)?;
        Ok(w)
    }

    /// Send one event now.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        // No empty chunk: it would end the body.
        if self.chunked && !data.is_empty() {
            push_chunk(&mut self.out, data);
        } else {
            self.out.extend_from_slice(data);
        }
        let sent = self.inner.write_all(&self.out);
        self.out.clear();
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = Vec::new();
        }
        sent?;
        self.inner.flush()
    }

    /// End the body.
    pub fn finish(mut self) -> io::Result<()> {
        if self.chunked {
            self.inner.write_all(LAST_CHUNK)?;
        }
        self.inner.flush()
    }
}

/// Append `data` to `out` as one HTTP/1.1 chunk (RFC 9112 §7.1): its size
/// in hex, CRLF, the data, CRLF. `data` is not empty.
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut size = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut at = size.len();
    let mut n = data.len();
    loop {
        at -= 1;
        size[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.reserve(size.len() - at + data.len() + 4);
    out.extend_from_slice(&size[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body (RFC 9112 §7.1): a zero-size chunk, no trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn parses_events_and_comments() {
        let body = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let mut r = SseReader::new(&body[..]);
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(e.comments, vec!["keep-alive".to_string()]);
        assert_eq!(e.data, None);
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(e.name.as_deref(), Some("message_start"));
        assert_eq!(e.data.as_deref(), Some("{\"a\":1}"));
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(e.data.as_deref(), Some("x\ny"));
        assert_eq!(encode(&e), b"data: x\ndata: y\n\n");
        assert_eq!(encode_owned(e.clone()), encode(&e));
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(e.data.as_deref(), Some("[DONE]"));
        assert_eq!(encode_owned(e.clone()), b"data: [DONE]\n\n");
        assert_eq!(r.next_event().unwrap(), None);
    }

    #[test]
    fn events_are_capped_in_total_not_per_line() {
        // Many lines, each well under the cap, no blank line.
        let line = format!("data: {}\n", "x".repeat(1024 * 1024 - 7));
        let body = line.repeat(MAX_EVENT / line.len() + 1);
        let mut r = SseReader::new(body.as_bytes());
        let e = r.next_event().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 4 MiB"), "{e}");

        // Comments count too: they are buffered like data.
        let comment = format!(": {}\n", "c".repeat(64 * 1024));
        let body = comment.repeat(MAX_EVENT / comment.len() + 1);
        let mut r = SseReader::new(body.as_bytes());
        assert!(r.next_event().is_err());

        // An event just under the cap is whole, and the next one reads on.
        let mut body = line.repeat(MAX_EVENT / line.len());
        body.push_str("\ndata: next\n\n");
        let mut r = SseReader::new(body.as_bytes());
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(
            e.data.unwrap().len(),
            MAX_EVENT / line.len() * (line.len() - 6) - 1
        );
        assert_eq!(
            r.next_event().unwrap().unwrap().data.as_deref(),
            Some("next")
        );
        assert!(r.line.capacity() <= KEEP_LINE_CAPACITY);
    }

    /// A client socket that records each write, and counts flushes.
    #[derive(Clone, Default)]
    struct Recorder(std::sync::Arc<std::sync::Mutex<(Vec<Vec<u8>>, usize)>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().1 += 1;
            Ok(())
        }
    }

    impl Recorder {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.0.lock().unwrap().0.clone()
        }
        fn flushes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    const HEAD: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn chunked_events_are_one_flushed_write_each() {
        let rec = Recorder::default();
        let mut w = EventWriter::start(Box::new(rec.clone()), true, HEAD, b"data: a\n\n").unwrap();
        // Head and first event together, in one write.
        assert_eq!(
            rec.writes(),
            [format!("{HEAD}9\r\ndata: a\n\n\r\n").into_bytes()]
        );
        assert_eq!(rec.flushes(), 1);
        // Nothing is written for nothing: an empty chunk would end the body.
        w.send(b"").unwrap();
        assert_eq!(rec.writes().len(), 1);
        // A large event is one chunk (HTTP has no limit on its size), in
        // one write.
        let big = format!("data: {}\n\n", "x".repeat(3 * 0xFFFF));
        w.send(big.as_bytes()).unwrap();
        let framed = format!("{:x}\r\n{big}\r\n", big.len()).into_bytes();
        assert_eq!(rec.writes()[1], framed);
        // And the buffer it needed is not kept for the rest of the stream.
        assert!(w.out.capacity() <= KEEP_OUT_CAPACITY);
        w.send(DONE).unwrap();
        assert_eq!(rec.writes().len(), 3);
        assert_eq!(rec.flushes(), 4);
        w.finish().unwrap();
        let writes = rec.writes();
        assert_eq!(writes.last().unwrap(), b"0\r\n\r\n");
        assert_eq!(writes.len(), 4);
        // And the body decodes to the events, in order, then ends.
        let body = writes.concat()[HEAD.len()..].to_vec();
        let mut decoded = Vec::new();
        chunked_transfer::Decoder::new(&body[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(
            decoded,
            [&b"data: a\n\n"[..], big.as_bytes(), DONE].concat()
        );
    }

    #[test]
    fn http_1_0_bodies_are_the_events_as_they_are() {
        let rec = Recorder::default();
        let head = "HTTP/1.0 200 OK\r\n\r\n";
        let mut w = EventWriter::start(Box::new(rec.clone()), false, head, b"data: a\n\n").unwrap();
        w.send(DONE).unwrap();
        w.finish().unwrap();
        assert_eq!(
            rec.writes(),
            [format!("{head}data: a\n\n").into_bytes(), DONE.to_vec()]
        );
    }

    #[test]
    fn a_failed_write_is_not_retried_and_ends_nothing() {
        // A client that stopped reading: the write fails (after its
        // timeout). Dropping the writer must not write again.
        struct Failing(std::sync::Arc<std::sync::Mutex<usize>>);
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                *self.0.lock().unwrap() += 1;
                Err(io::ErrorKind::TimedOut.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let calls = std::sync::Arc::new(std::sync::Mutex::new(0));
        let w = EventWriter::start(Box::new(Failing(calls.clone())), true, HEAD, b"data: a\n\n");
        assert!(w.is_err());
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[test]
    fn cut_streams_are_errors() {
        let mut r = SseReader::new(&b"data: {\"a\""[..]);
        assert!(r.next_event().is_err());
        let mut r = SseReader::new(&b"data: {}\n"[..]);
        assert!(r.next_event().is_err());
    }
}
