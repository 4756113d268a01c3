//! Writing responses to the client. Bodies that are already in memory go out
//! as one write (status line, headers and body together), so Nagle and
//! delayed ACKs never split them; event streams go through [`crate::sse`].

use std::io::Write;

use tiny_http::{HTTPVersion, Request};

use crate::error::ProxyError;

/// Headers added to a response besides the content headers.
pub type Headers = Vec<(&'static str, String)>;

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => "Status",
    }
}

/// What an answer carries, for its content headers.
pub enum Content {
    /// A JSON body of this many bytes.
    Json(usize),
    /// An event stream of unknown length, chunked unless HTTP/1.0.
    EventStream { chunked: bool },
    /// Prometheus text exposition (`/metrics`) of this many bytes.
    Metrics(usize),
}

/// The headers of every answer, in one place: the caller's (request id,
/// provider, `Allow`, ...), then `Date`, `Server`, the content headers,
/// `Retry-After` and `Connection: close` as asked.
fn all_headers(
    mut headers: Headers,
    content: Content,
    retry_after: Option<u64>,
    close: bool,
) -> Headers {
    headers.push(("Date", date()));
    headers.push(("Server", "llm-proxy".into()));
    match content {
        Content::Json(len) => {
            headers.push(("Content-Type", "application/json".into()));
            headers.push(("Content-Length", len.to_string()));
        }
        Content::Metrics(len) => {
            headers.push((
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8".into(),
            ));
            headers.push(("Content-Length", len.to_string()));
            headers.push(("Cache-Control", "no-store".into()));
        }
        Content::EventStream { chunked } => {
            headers.push(("Content-Type", "text/event-stream".into()));
            headers.push(("Cache-Control", "no-cache".into()));
            headers.push(("X-Accel-Buffering", "no".into()));
            if chunked {
                headers.push(("Transfer-Encoding", "chunked".into()));
            }
        }
    }
    if let Some(secs) = retry_after {
        headers.push(("Retry-After", secs.to_string()));
    }
    if close {
        headers.push(("Connection", "close".into()));
    }
    headers
}

/// The `Date` header's value (RFC 9110 §6.6.1), formatted once a second
/// per thread.
fn date() -> String {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        c.1.clone()
    })
}

/// The status line and headers, ending with the blank line.
fn head(status: u16, headers: &Headers) -> String {
    let mut h = String::with_capacity(256);
    h.push_str("HTTP/1.1 ");
    h.push_str(&status.to_string());
    h.push(' ');
    h.push_str(reason(status));
    h.push_str("\r\n");
    for (k, v) in headers {
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

/// The head of an event stream. A chunked stream keeps its connection
/// (the read-ahead for the next request waits while it is written: vendored
/// tiny_http, patch 12) unless the client said `Connection: close`; an
/// unchunked one (HTTP/1.0) ends with the connection, so it says so.
pub fn stream_head(headers: Headers, chunked: bool, client_close: bool) -> String {
    let close = !chunked || client_close;
    head(
        200,
        &all_headers(headers, Content::EventStream { chunked }, None, close),
    )
}

/// Whether the client said this is its last request on the connection.
pub fn wants_close(req: &Request) -> bool {
    let close_header = req.headers().iter().any(|h| {
        h.field.equiv("Connection") && h.value.as_str().to_ascii_lowercase().contains("close")
    });
    close_header || *req.http_version() == HTTPVersion(1, 0)
}

/// Whether the request's body has been read when the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    /// Read (or there was none): the answer goes out as one write.
    Read,
    /// Not read: tiny_http writes the answer first and only then discards
    /// what remains of the body (`into_writer` would drain it first).
    Unread,
}

/// Send a complete JSON answer: the one writer of every non-stream answer.
pub fn send(
    req: Box<Request>,
    status: u16,
    headers: Headers,
    body: &[u8],
    close: bool,
    state: BodyState,
    retry_after: Option<u64>,
) {
    let content = Content::Json(body.len());
    send_as(
        req,
        status,
        headers,
        (content, body),
        close,
        state,
        retry_after,
    )
}

/// `/metrics`: the text exposition, 200.
pub fn send_metrics(req: Box<Request>, headers: Headers, body: &[u8]) {
    let content = Content::Metrics(body.len());
    send_as(
        req,
        200,
        headers,
        (content, body),
        false,
        BodyState::Unread,
        None,
    )
}

fn send_as(
    req: Box<Request>,
    status: u16,
    headers: Headers,
    (content, body): (Content, &[u8]),
    close: bool,
    state: BodyState,
    retry_after: Option<u64>,
) {
    // A stream request whose stream did not start ends its connection too.
    let close = close || wants_close(&req) || req.reading_stopped();
    let headers = all_headers(headers, content, retry_after, close);
    let sent = match state {
        BodyState::Read => {
            let h = head(status, &headers);
            let mut buf = Vec::with_capacity(h.len() + body.len());
            buf.extend_from_slice(h.as_bytes());
            // HEAD: the GET's headers, Content-Length included, no body.
            if *req.method() != tiny_http::Method::Head {
                buf.extend_from_slice(body);
            }
            let mut w = req.into_writer();
            w.write_all(&buf).and_then(|_| w.flush())
        }
        BodyState::Unread => {
            let mut resp = tiny_http::Response::from_data(body)
                .with_status_code(status)
                .with_chunked_threshold(usize::MAX);
            // tiny_http writes Content-Length itself, from the data.
            for (k, v) in headers.iter().filter(|(k, _)| *k != "Content-Length") {
                if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                    resp.add_header(h);
                }
            }
            req.respond(resp)
        }
    };
    if let Err(e) = sent {
        log::debug!("client went away before the response was written: {e}");
    }
}

/// Send `err` in the OpenAI shape.
pub fn send_error(
    req: Box<Request>,
    err: &ProxyError,
    headers: Headers,
    close: bool,
    state: BodyState,
) {
    let body = serde_json::to_vec(&err.body()).expect("JSON value serializes");
    send(
        req,
        err.status,
        headers,
        &body,
        close,
        state,
        err.retry_after,
    );
}
