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

/// The status line and headers, ending with the blank line.
pub fn head(status: u16, headers: &Headers, extra: &str) -> String {
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
    h.push_str(extra);
    h.push_str("\r\n");
    h
}

/// Whether the client said this is its last request on the connection.
pub fn wants_close(req: &Request) -> bool {
    let close_header = req.headers().iter().any(|h| {
        h.field.equiv("Connection") && h.value.as_str().to_ascii_lowercase().contains("close")
    });
    close_header || *req.http_version() == HTTPVersion(1, 0)
}

/// Send a complete JSON response. Only for requests whose body has been read
/// (or never had one): `into_writer` drops tiny_http's body reader, which
/// would first drain an unread body.
pub fn send_json(req: Request, status: u16, mut headers: Headers, body: &[u8], close: bool) {
    headers.push(("Content-Type", "application/json".into()));
    headers.push(("Content-Length", body.len().to_string()));
    // A stream request whose stream did not start ends its connection too.
    let close = close || wants_close(&req) || req.reading_stopped();
    let h = head(
        status,
        &headers,
        if close { "Connection: close\r\n" } else { "" },
    );
    let mut buf = Vec::with_capacity(h.len() + body.len());
    buf.extend_from_slice(h.as_bytes());
    buf.extend_from_slice(body);
    let mut w = req.into_writer();
    if let Err(e) = w.write_all(&buf).and_then(|_| w.flush()) {
        log::debug!("client went away before the response was written: {e}");
    }
}

pub fn send_error(req: Request, err: &ProxyError, mut headers: Headers, close: bool) {
    if let Some(secs) = err.retry_after {
        headers.push(("Retry-After", secs.to_string()));
    }
    let body = serde_json::to_vec(&err.body()).expect("JSON value serializes");
    send_json(req, err.status, headers, &body, close);
}

/// An error response for a request whose body has NOT been read. tiny_http
/// writes it first and only then discards what remains of the body.
pub fn send_error_unread(req: Request, err: &ProxyError, headers: Headers) {
    let body = serde_json::to_vec(&err.body()).expect("JSON value serializes");
    let mut resp = tiny_http::Response::from_data(body)
        .with_status_code(err.status)
        .with_chunked_threshold(usize::MAX);
    let mut all = headers;
    all.push(("Content-Type", "application/json".into()));
    if let Some(secs) = err.retry_after {
        all.push(("Retry-After", secs.to_string()));
    }
    for (k, v) in all {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            resp.add_header(h);
        }
    }
    if let Err(e) = req.respond(resp) {
        log::debug!("client went away before the response was written: {e}");
    }
}
