//! Event streams keep their client connection (issue 14): the next request
//! on it, stream or not, is answered, however long the stream lasted
//! (vendored tiny_http, patch 12), and the connection still closes when the
//! client asks for it or stays idle for `server.client_timeout` after the
//! last response.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "sk-keepalive-secret-5170";

fn config(fake: &Fake, server: &str) -> String {
    format!(
        r#"
server: {server}
providers:
  only:
    type: openai
    api_key: {KEY}
    base_url: {}
    timeout: 5
models:
  gpt-4:
    providers:
      only: {{priority: 0, model_id: up-only}}
"#,
        fake.base_url()
    )
}

/// The `server:` flow map `base`, parking every stream's connection if
/// `park`.
fn server(base: &str, park: bool) -> String {
    if !park {
        return base.to_string();
    }
    let inner = base.trim_start_matches('{').trim_end_matches('}').trim();
    if inner.is_empty() {
        "{park_streams_over: 0}".to_string()
    } else {
        format!("{{{inner}, park_streams_over: 0}}")
    }
}

fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn send_chat(s: &mut TcpStream, stream: bool, extra: &str) {
    let body = chat_body("gpt-4", stream);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
}

/// One response read off a kept connection: its head (lowercased) and its
/// body (chunked framing decoded, or `Content-Length` bytes).
fn read_response(r: &mut BufReader<TcpStream>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "connection closed before a response; head so far {head:?}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).unwrap();
            assert_eq!(&chunk[size..], b"\r\n");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a length")
            .trim()
            .parse()
            .unwrap();
        body.resize(len, 0);
        r.read_exact(&mut body).unwrap();
    }
    (head, String::from_utf8(body).unwrap())
}

/// The `data:` payloads of an SSE body, keep-alive comments skipped.
fn payloads(body: &str) -> Vec<String> {
    sse_events(body)
        .iter()
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// The text of a stream's content deltas; asserts it ends with `[DONE]`.
fn text(body: &str) -> String {
    let mut p = payloads(body);
    assert_eq!(p.pop().as_deref(), Some("[DONE]"), "{body}");
    delta_text(&p)
}

/// Wait for the proxy to close the connection: true on EOF (or a reset).
fn closed(r: &mut BufReader<TcpStream>) -> bool {
    let mut b = [0u8; 1];
    match r.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn two_streams_and_a_chat_share_one_client_connection() {
    two_streams_and_a_chat_share_one_client_connection_with(false);
}

/// The same with the connection parked while the stream runs (tiny_http
/// patch 15, `park_streams_over: 0`).
#[test]
fn two_streams_and_a_chat_share_one_client_connection_parked() {
    two_streams_and_a_chat_share_one_client_connection_with(true);
}

fn two_streams_and_a_chat_share_one_client_connection_with(park: bool) {
    let fake = Fake::new(Reply::chunks(&["kept ", "alive"], End::Done));
    fake.push(Reply::chunks(&["one"], End::Done));
    fake.push(Reply::chunks(&["two"], End::Done));
    fake.push(Reply::completion("three"));
    let p = Proxy::start(&config(&fake, &server("{}", park)));
    let (mut s, mut r) = connect(p.addr);

    for want in ["one", "two"] {
        send_chat(&mut s, true, "");
        let (head, body) = read_response(&mut r);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(text(&body), want, "{body}");
    }
    send_chat(&mut s, false, "");
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("three"), "{body}");
    // All three reached the upstream over the one client connection.
    assert_eq!(fake.count(), 3);
    assert!(!body.contains(KEY));
}

#[test]
fn a_stream_longer_than_client_timeout_leaves_a_usable_connection() {
    a_stream_longer_than_client_timeout_leaves_a_usable_connection_with(false);
}

/// The same with the connection parked while the stream runs (tiny_http
/// patch 15, `park_streams_over: 0`).
#[test]
fn a_stream_longer_than_client_timeout_leaves_a_usable_connection_parked() {
    a_stream_longer_than_client_timeout_leaves_a_usable_connection_with(true);
}

fn a_stream_longer_than_client_timeout_leaves_a_usable_connection_with(park: bool) {
    // The connection's read-ahead for a next request waits out
    // client_timeout (0.5 s) more than twice while the stream is written:
    // it must keep waiting, and not close the connection after the stream.
    let gate = Gate::new();
    let fake = Fake::new(Reply::completion("after"));
    fake.push(Reply::chunks(&["slow"], End::DoneAfter(gate.clone())));
    let p = Proxy::start(&config(&fake, &server("{client_timeout: 0.5}", park)));
    let (mut s, mut r) = connect(p.addr);

    send_chat(&mut s, true, "");
    let opener = {
        let gate = gate.clone();
        // The stream's length is the point of the test: time must pass.
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(1300));
            gate.open();
        })
    };
    let started = Instant::now();
    let (head, body) = read_response(&mut r);
    opener.join().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1300));
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(text(&body), "slow", "{body}");

    send_chat(&mut s, false, "");
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("after"), "{body}");
}

#[test]
fn a_kept_connection_still_closes_when_idle_for_client_timeout_after_a_stream() {
    a_kept_connection_still_closes_when_idle_for_client_timeout_after_a_stream_with(false);
}

/// The same with the connection parked while the stream runs (tiny_http
/// patch 15, `park_streams_over: 0`).
#[test]
fn a_kept_connection_still_closes_when_idle_for_client_timeout_after_a_stream_parked() {
    a_kept_connection_still_closes_when_idle_for_client_timeout_after_a_stream_with(true);
}

fn a_kept_connection_still_closes_when_idle_for_client_timeout_after_a_stream_with(park: bool) {
    // Keep-alive must not keep an idle connection (and its thread) for
    // ever: client_timeout counts from the end of the last response.
    let fake = Fake::new(Reply::chunks(&["x"], End::Done));
    let p = Proxy::start(&config(&fake, &server("{client_timeout: 0.5}", park)));
    let (mut s, mut r) = connect(p.addr);
    send_chat(&mut s, true, "");
    let (head, _) = read_response(&mut r);
    assert!(!head.contains("connection: close"), "{head}");
    let ended = Instant::now();
    assert!(closed(&mut r), "the idle connection was not closed");
    let idle = ended.elapsed();
    assert!(idle >= Duration::from_millis(400), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(5), "closed after {idle:?}");
}

#[test]
fn a_stream_to_a_client_that_asked_to_close_closes_the_connection() {
    a_stream_to_a_client_that_asked_to_close_closes_the_connection_with(false);
}

/// The same with the connection parked while the stream runs (tiny_http
/// patch 15, `park_streams_over: 0`).
#[test]
fn a_stream_to_a_client_that_asked_to_close_closes_the_connection_parked() {
    a_stream_to_a_client_that_asked_to_close_closes_the_connection_with(true);
}

fn a_stream_to_a_client_that_asked_to_close_closes_the_connection_with(park: bool) {
    let fake = Fake::new(Reply::chunks(&["bye"], End::Done));
    let p = Proxy::start(&config(&fake, &server("{}", park)));

    // HTTP/1.1 with `Connection: close`: chunked, says close, then EOF.
    let (mut s, mut r) = connect(p.addr);
    send_chat(&mut s, true, "Connection: close\r\n");
    let (head, body) = read_response(&mut r);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(text(&body), "bye", "{body}");
    assert!(closed(&mut r), "the connection was not closed");

    // HTTP/1.0: a close-delimited body.
    let (mut s, mut r) = connect(p.addr);
    let body = chat_body("gpt-4", true);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut all = String::new();
    r.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(text(body), "bye", "{body}");
}
