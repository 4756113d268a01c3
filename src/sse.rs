//! Server-sent events: reading them from an upstream body, and writing them
//! to the client one event per flushed HTTP chunk (tiny_http's own chunked
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
                    None => ev.data = Some(value.to_string()),
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

/// `data: <json>\n\n`
pub fn data_event(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

fn frame(buf: &mut Vec<u8>, chunked: bool, data: &[u8]) {
    if data.is_empty() {
        // An empty chunk would end a chunked body.
        return;
    }
    if chunked {
        let _ = write!(buf, "{:x}\r\n", data.len());
        buf.extend_from_slice(data);
        buf.extend_from_slice(b"\r\n");
    } else {
        buf.extend_from_slice(data);
    }
}

/// Writes a response body to the client, one flushed chunk per event.
pub struct EventWriter {
    inner: Box<dyn Write + Send>,
    /// HTTP/1.1 uses chunked framing; HTTP/1.0 a close-delimited body.
    chunked: bool,
    buf: Vec<u8>,
}

impl EventWriter {
    /// Write the status line and headers, then `first` as the first event,
    /// in one write so the client sees them together.
    pub fn start(
        mut inner: Box<dyn Write + Send>,
        chunked: bool,
        head: &str,
        first: &[u8],
    ) -> io::Result<EventWriter> {
        let mut buf = Vec::with_capacity(head.len() + first.len() + 64);
        buf.extend_from_slice(head.as_bytes());
        frame(&mut buf, chunked, first);
        inner.write_all(&buf)?;
        inner.flush()?;
        buf.clear();
        Ok(EventWriter {
            inner,
            chunked,
            buf,
        })
    }

    /// Send one event now.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.clear();
        frame(&mut self.buf, self.chunked, data);
        self.inner.write_all(&self.buf)?;
        self.inner.flush()
    }

    /// End the body.
    pub fn finish(mut self) -> io::Result<()> {
        if self.chunked {
            self.inner.write_all(b"0\r\n\r\n")?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
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
        let e = r.next_event().unwrap().unwrap();
        assert_eq!(e.data.as_deref(), Some("[DONE]"));
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

    #[test]
    fn cut_streams_are_errors() {
        let mut r = SseReader::new(&b"data: {\"a\""[..]);
        assert!(r.next_event().is_err());
        let mut r = SseReader::new(&b"data: {}\n"[..]);
        assert!(r.next_event().is_err());
    }
}
