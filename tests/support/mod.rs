//! Test support: scripted fake upstreams (real HTTP servers on 127.0.0.1:0
//! that record what they received) and a proxy started in-process.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod endpoint;
pub mod spec;

/// A one-shot signal a test can open, and a fake upstream can wait on.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
    /// Wait until opened (or `max`, so a broken test cannot hang forever).
    pub fn wait(&self, max: Duration) -> bool {
        let g = self.0.0.lock().unwrap();
        let (g, _) = self.0.1.wait_timeout_while(g, max, |o| !*o).unwrap();
        *g
    }
}

/// How a stream ends.
#[derive(Clone)]
pub enum End {
    /// `data: [DONE]` and a clean end of the body.
    Done,
    /// The connection is closed in the middle of the body.
    Cut,
    /// Wait for the gate, then `Done`.
    DoneAfter(Gate),
    /// Send nothing more until the gate opens, then close.
    HangUntil(Gate),
    /// A clean end of the body without `data: [DONE]` (Anthropic streams
    /// end after their `message_stop` event).
    Eof,
    /// Send nothing more and keep the connection open until the proxy
    /// closes it; then open the gate (the test's signal that the proxy gave
    /// up on this upstream). Also opened if the proxy closes the connection
    /// while events are still being sent.
    HoldUntilClosed(Gate),
}

/// What the fake answers to one request.
#[derive(Clone)]
pub enum Reply {
    Json {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Raw SSE events (each a full `data: ...\n\n` text), sent as chunks.
    Stream {
        events: Vec<String>,
        /// Wait for this gate before each event after the first.
        pace: Option<Vec<Gate>>,
        end: End,
    },
    /// Exactly these bytes (status line, headers and body, framing
    /// included), then `end` (`Cut`, `HangUntil` and `HoldUntilClosed` are
    /// meaningful here; the others close the connection).
    Raw(Vec<u8>, End),
    /// Read the request and never answer until the gate opens; then close.
    Hang(Gate),
    /// Close the connection without answering.
    Close,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Wait for the gate, then answer.
    After(Gate, Box<Reply>),
    /// `stream` to a request with `"stream": true`, else `json`.
    ByStream {
        json: Box<Reply>,
        stream: Box<Reply>,
    },
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body: body.to_string(),
            headers: vec![],
        }
    }
    pub fn raw(status: u16, body: &str) -> Reply {
        Reply::Json {
            status,
            body: body.to_string(),
            headers: vec![],
        }
    }
    pub fn with_header(self, k: &str, v: &str) -> Reply {
        match self {
            Reply::Json {
                status,
                body,
                mut headers,
            } => {
                headers.push((k.into(), v.into()));
                Reply::Json {
                    status,
                    body,
                    headers,
                }
            }
            other => other,
        }
    }
    /// A valid `chat.completion` with this content.
    pub fn completion(content: &str) -> Reply {
        Reply::json(200, completion_body(content))
    }
    /// An OpenAI-shaped error.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": null}}),
        )
    }
    /// A recorded SSE body (events separated by blank lines, as in
    /// `tests/fixtures/`), sent one event per chunk, then `end`.
    pub fn sse(text: &str, end: End) -> Reply {
        Reply::Stream {
            events: sse_events(text),
            pace: None,
            end,
        }
    }
    /// A stream of content deltas, then `end`.
    pub fn chunks(parts: &[&str], end: End) -> Reply {
        Reply::Stream {
            events: chunk_events(parts),
            pace: None,
            end,
        }
    }
}

pub fn completion_body(content: &str) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    })
}

/// Split an SSE body into its events, each ending with a blank line.
pub fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| format!("{e}\n\n"))
        .collect()
}

pub fn chunk_events(parts: &[&str]) -> Vec<String> {
    parts
        .iter()
        .map(|p| {
            let c = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "upstream-model",
                "choices": [{"index": 0, "delta": {"content": p}, "logprobs": null, "finish_reason": null}]
            });
            format!("data: {c}\n\n")
        })
        .collect()
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Its place among the requests every fake of the process received,
    /// so a test can tell which upstream the proxy called first.
    pub arrival: u64,
}

/// Numbers [`Received::arrival`].
static ARRIVALS: AtomicU64 = AtomicU64::new(0);

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("upstream got JSON")
    }
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    connections: AtomicUsize,
    /// Bytes of stream events written to the proxy, all connections.
    written: AtomicUsize,
    stop: AtomicBool,
}

/// A scripted upstream. Replies are taken from the script in order; when it
/// is empty, the default reply is used.
pub struct Fake {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Fake {
    pub fn new(default: Reply) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            connections: AtomicUsize::new(0),
            written: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                thread::spawn(move || serve(conn, &s));
            }
        });
        Fake { addr, shared }
    }

    /// A fake that answers every request with a completion saying `content`.
    pub fn ok(content: &str) -> Fake {
        Fake::new(Reply::completion(content))
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`, the form an anthropic provider's `base_url` takes.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, r: Reply) -> &Fake {
        self.shared.script.lock().unwrap().push_back(r);
        self
    }

    pub fn set_default(&self, r: Reply) {
        *self.shared.default.lock().unwrap() = r;
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Bytes of stream events the proxy accepted from this fake.
    pub fn written(&self) -> usize {
        self.shared.written.load(Ordering::SeqCst)
    }

    /// Block until at least `n` requests have arrived.
    pub fn wait_for(&self, n: usize) {
        let g = self.shared.received.lock().unwrap();
        let (g, _) = self
            .shared
            .arrived
            .wait_timeout_while(g, Duration::from_secs(20), |r| r.len() < n)
            .unwrap();
        assert!(
            g.len() >= n,
            "expected {n} upstream requests, got {}",
            g.len()
        );
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, s: &Shared) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        let reply = s
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| s.default.lock().unwrap().clone());
        let reply = match reply {
            Reply::ByStream { json, stream } => {
                let streaming = serde_json::from_slice::<Value>(&req.body)
                    .is_ok_and(|v| v["stream"] == json!(true));
                if streaming { *stream } else { *json }
            }
            other => other,
        };
        {
            let mut r = s.received.lock().unwrap();
            r.push(req);
            s.arrived.notify_all();
        }
        if !answer(&mut conn, reply, s) {
            return;
        }
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Received {
        method,
        path,
        headers,
        body,
        arrival: ARRIVALS.fetch_add(1, Ordering::SeqCst),
    })
}

/// Returns whether the connection can be used for another request.
fn answer(conn: &mut TcpStream, reply: Reply, s: &Shared) -> bool {
    match reply {
        Reply::Json {
            status,
            body,
            headers,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            head.push_str(&body);
            conn.write_all(head.as_bytes()).is_ok()
        }
        Reply::Stream { events, pace, end } => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
            if conn.write_all(head.as_bytes()).is_err() {
                return false;
            }
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    if let Some(g) = pace.as_ref().and_then(|p| p.get(i - 1)) {
                        g.wait(Duration::from_secs(20));
                    }
                }
                if write_chunk(conn, e.as_bytes()).is_err() {
                    // The proxy closed the connection while we were sending.
                    if let End::HoldUntilClosed(g) = &end {
                        g.open();
                    }
                    return false;
                }
                s.written.fetch_add(e.len(), Ordering::SeqCst);
            }
            match end {
                End::Done => finish_stream(conn),
                End::DoneAfter(g) => {
                    g.wait(Duration::from_secs(20));
                    finish_stream(conn)
                }
                End::Cut => {
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    false
                }
                End::HangUntil(g) => {
                    g.wait(Duration::from_secs(60));
                    false
                }
                End::Eof => conn.write_all(b"0\r\n\r\n").is_ok(),
                End::HoldUntilClosed(g) => hold_until_closed(conn, &g),
            }
        }
        Reply::Raw(bytes, end) => {
            if conn.write_all(&bytes).is_err() {
                return false;
            }
            match end {
                End::Cut => {
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                }
                End::HangUntil(g) => {
                    g.wait(Duration::from_secs(60));
                }
                End::HoldUntilClosed(g) => {
                    hold_until_closed(conn, &g);
                }
                End::Done | End::DoneAfter(_) | End::Eof => {}
            }
            false
        }
        Reply::Hang(g) => {
            g.wait(Duration::from_secs(60));
            false
        }
        Reply::Close => false,
        Reply::Delay(d, r) => {
            thread::sleep(d);
            answer(conn, *r, s)
        }
        Reply::After(g, r) => {
            g.wait(Duration::from_secs(20));
            answer(conn, *r, s)
        }
        Reply::ByStream { json, .. } => answer(conn, *json, s),
    }
}

/// Wait (at most a minute) for the proxy to close the connection, then
/// open `g`. Anything the proxy sends meanwhile is discarded.
fn hold_until_closed(conn: &mut TcpStream, g: &Gate) -> bool {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = [0u8; 1024];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    g.open();
    false
}

fn write_chunk(conn: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut b = format!("{:x}\r\n", data.len()).into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n");
    conn.write_all(&b)?;
    conn.flush()
}

fn finish_stream(conn: &mut TcpStream) -> bool {
    write_chunk(conn, b"data: [DONE]\n\n").is_ok() && conn.write_all(b"0\r\n\r\n").is_ok()
}

// ---------------------------------------------------------------------------
// The proxy under test.

pub struct Proxy {
    pub handle: Option<llm_proxy::Handle>,
    pub url: String,
    pub addr: SocketAddr,
}

impl Proxy {
    pub fn start(yaml: &str) -> Proxy {
        Proxy::start_with_hook(yaml, None)
    }

    pub fn start_with_hook(yaml: &str, hook: Option<llm_proxy::Hook>) -> Proxy {
        let mut config = llm_proxy::Config::from_yaml(yaml).expect("test config is valid");
        config.server.port = 0;
        let handle = llm_proxy::start(config, hook).expect("proxy starts");
        let addr = handle.addr();
        Proxy {
            handle: Some(handle),
            url: format!("http://{addr}"),
            addr,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        let resp = agent()
            .get(format!("{}{path}", self.url))
            .call()
            .expect("proxy answers");
        Resp::read(resp)
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.post_with(path, body, &[])
    }

    pub fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
        let mut rb = agent()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json");
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Resp::read(rb.send(body).expect("proxy answers"))
    }

    /// POST a chat request for `model` with one user message.
    pub fn chat(&self, model: &str) -> Resp {
        self.post("/v1/chat/completions", &chat_body(model, false))
    }

    /// Open a streaming chat request; the body is read by the caller.
    pub fn open_stream(&self, model: &str) -> ureq::http::Response<ureq::Body> {
        agent()
            .post(format!("{}/v1/chat/completions", self.url))
            .header("content-type", "application/json")
            .send(chat_body(model, true))
            .expect("proxy answers")
    }
}

/// GET `url` + `path` (no body) or, with a body, POST it as JSON; with
/// extra `headers` (e.g. `Authorization`).
pub fn call(url: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let resp = match body {
        None => {
            let mut rb = agent().get(format!("{url}{path}"));
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb.call()
        }
        Some(body) => {
            let mut rb = agent()
                .post(format!("{url}{path}"))
                .header("content-type", "application/json");
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb.send(body)
        }
    };
    Resp::read(resp.expect("proxy answers"))
}

pub fn chat_body(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Tests assert what the proxy answered, a 3xx included.
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    fn read(resp: ureq::http::Response<ureq::Body>) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp.into_body().read_to_string().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// Assert the OpenAI error shape and return the error object.
    pub fn error(&self) -> Value {
        let v = self.json();
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("no error: {v}"))
            .clone();
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error lacks {k}: {e}");
        }
        assert!(e["message"].is_string() && e["type"].is_string(), "{e}");
        e
    }
}

/// Read SSE `data:` payloads from a streaming response until the body ends,
/// calling `each` with every payload as it arrives.
pub fn read_events(
    resp: ureq::http::Response<ureq::Body>,
    mut each: impl FnMut(&str),
) -> Vec<String> {
    let mut out = Vec::new();
    let reader = BufReader::new(resp.into_body().into_reader());
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(d) = line.strip_prefix("data: ") {
            each(d);
            out.push(d.to_string());
        }
    }
    out
}

/// The content deltas of stream chunk payloads (as `read_events` returns
/// them), joined; chunks without text content are skipped.
pub fn delta_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| {
            let c: Value = serde_json::from_str(e).unwrap();
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Time since `start` in ms, for messages.
pub fn ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

// ---------------------------------------------------------------------------
// A raw scripted upstream: bytes on the socket, exactly as scripted, for the
// faults a well-behaved HTTP server cannot produce (a short body, a dripped
// head, a stall after the 200, an oversized event, bytes that are not UTF-8).

/// One step of what a [`Raw`] upstream does on a connection after it has
/// read the request. When the script ends, the connection is closed.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes at once.
    Send(Vec<u8>),
    /// Write these bytes `chunk` at a time, pausing `every` before each
    /// piece after the first (a slow upstream; the pause is the behaviour
    /// under test, not a way of ordering events).
    Drip {
        bytes: Vec<u8>,
        chunk: usize,
        every: Duration,
    },
    /// Write these bytes `times` times (large bodies without holding them
    /// in memory).
    Repeat { bytes: Vec<u8>, times: usize },
    /// Send nothing until the gate opens (or 60 s pass).
    Wait(Gate),
}

impl Step {
    pub fn send(b: impl AsRef<[u8]>) -> Step {
        Step::Send(b.as_ref().to_vec())
    }
    pub fn drip(b: impl AsRef<[u8]>, chunk: usize, every: Duration) -> Step {
        Step::Drip {
            bytes: b.as_ref().to_vec(),
            chunk: chunk.max(1),
            every,
        }
    }
}

/// Everything a [`Raw`] upstream needs per connection: the steps to play.
pub type Script = Vec<Step>;

struct RawShared {
    script: Mutex<VecDeque<Script>>,
    default: Script,
    received: Mutex<Vec<Received>>,
    stop: AtomicBool,
}

/// A scripted upstream that speaks raw bytes: for each connection it reads
/// one request (recorded), plays the next queued script (else the default
/// one), and closes the connection.
pub struct Raw {
    pub addr: SocketAddr,
    shared: Arc<RawShared>,
}

impl Raw {
    pub fn new(default: Script) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(RawShared {
            script: Mutex::new(VecDeque::new()),
            default,
            received: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || play(conn, &s));
            }
        });
        Raw { addr, shared }
    }

    /// Queue a script for the next connection.
    pub fn push(&self, s: Script) -> &Raw {
        self.shared.script.lock().unwrap().push_back(s);
        self
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn play(conn: TcpStream, s: &RawShared) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Some(req) = read_request(&mut reader) else {
        return;
    };
    let script = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.default.clone());
    s.received.lock().unwrap().push(req);
    let mut conn = conn;
    for step in script {
        let ok = match step {
            Step::Send(b) => conn.write_all(&b).and_then(|_| conn.flush()).is_ok(),
            Step::Drip {
                bytes,
                chunk,
                every,
            } => bytes.chunks(chunk).enumerate().all(|(i, piece)| {
                if i > 0 {
                    thread::sleep(every);
                }
                conn.write_all(piece).and_then(|_| conn.flush()).is_ok()
            }),
            Step::Repeat { bytes, times } => (0..times).all(|_| conn.write_all(&bytes).is_ok()),
            Step::Wait(g) => {
                g.wait(Duration::from_secs(60));
                true
            }
        };
        if !ok {
            break;
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// An HTTP/1.1 response head with these headers and `Connection: close`.
pub fn head(status: u16, headers: &[(&str, &str)]) -> String {
    let mut h = format!("HTTP/1.1 {status} Scripted\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("Connection: close\r\n\r\n");
    h
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut b = format!("{:x}\r\n", data.len()).into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n");
    b
}

// ---------------------------------------------------------------------------
// The binary under test, with its log captured.

/// The `llm-proxy` binary running on a config, its stderr captured line by
/// line (for asserting what reached the log).
pub struct Logged {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
    pub url: String,
    _config: tempfile::TempPath,
}

impl Logged {
    /// Start the binary on `yaml` (port 0) with `LLM_PROXY_LOG=trace`;
    /// returns once it logged its address, or panics with what it logged
    /// (a rejected config, for example).
    pub fn start(yaml: &str) -> Logged {
        use std::process::{Command, Stdio};
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        let config = f.into_temp_path();
        let mut child = Command::new(env!("CARGO_BIN_EXE_llm-proxy"))
            .args(["--config", config.to_str().unwrap(), "--port", "0"])
            .env("LLM_PROXY_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = lines.clone();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            // Bytes, not lines of text: a log line that is not UTF-8 must
            // still be checked, not end the capture.
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                buf.clear();
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.split_whitespace().next().unwrap_or("").to_string());
                }
                l.lock().unwrap().push(line);
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(20));
        let mut p = Logged {
            child,
            lines,
            reader: Some(reader),
            url: String::new(),
            _config: config,
        };
        match url {
            Ok(u) => p.url = u,
            Err(_) => panic!("the proxy did not start:\n{}", p.finish()),
        }
        p
    }

    /// Stop the process and return everything it logged.
    pub fn finish(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `n`-character window of `secret` that occurs in `text`.
/// One pass over `text` (which may be a stream of many MiB, and tests are
/// not optimised): only positions whose byte occurs in the secret are
/// compared.
pub fn leaked_fragments(text: &str, secret: &str, n: usize) -> Vec<String> {
    let (t, k) = (text.as_bytes(), secret.as_bytes());
    if n == 0 || k.len() < n || t.len() < n {
        return Vec::new();
    }
    let windows: Vec<&[u8]> = k.windows(n).collect();
    let mut found = vec![false; windows.len()];
    let mut in_key = [false; 256];
    for &b in k {
        in_key[usize::from(b)] = true;
    }
    for (i, &b) in t[..=t.len() - n].iter().enumerate() {
        if !in_key[usize::from(b)] {
            continue;
        }
        let w = &t[i..i + n];
        for (f, kw) in found.iter_mut().zip(&windows) {
            *f |= w == *kw;
        }
    }
    windows
        .iter()
        .zip(found)
        .filter(|(_, f)| *f)
        .map(|(w, _)| String::from_utf8_lossy(w).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// The binary as a subprocess, for what only a process has: signals, its
// exit status, its log.

pub const BIN: &str = env!("CARGO_BIN_EXE_llm-proxy");

/// A config file the test can rewrite (a live reload reads it again).
pub struct ConfigFile(pub tempfile::TempPath);

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let c = ConfigFile(f.into_temp_path());
        c.write(text);
        c
    }
    /// Replace the file's content in one step (write beside it, rename), as
    /// an editor or a config manager does.
    pub fn write(&self, text: &str) {
        let tmp = format!("{}.new", self.0.display());
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

/// The proxy binary, running, with its stderr (the log) read line by line.
pub struct Bin {
    pub pid: u32,
    /// The exit status, sent by a thread blocked in `wait`.
    exited: std::sync::mpsc::Receiver<i32>,
    status: Option<i32>,
    pub url: String,
    pub addr: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Bin {
    /// Start with `--config path` and `args`, logging at debug; returns
    /// once it logged the address it listens on.
    pub fn start(config: &str, args: &[&str]) -> Bin {
        Bin::start_with_env(config, args, &[])
    }

    /// [`Bin::start`] with these environment variables set.
    pub fn start_with_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Bin {
        let mut child = std::process::Command::new(BIN)
            .args(["--config", config])
            .args(args)
            .envs(env.iter().copied())
            .env("LLM_PROXY_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let pid = child.id();
        let (done, exited) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let code = child.wait().unwrap().code().unwrap_or(-1);
            let _ = done.send(code);
        });
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut bin = Bin {
            pid,
            exited,
            status: None,
            url: String::new(),
            addr: "127.0.0.1:1".parse().unwrap(),
            lines,
            log: Vec::new(),
        };
        let line = bin.wait_for("listening on http://");
        let url = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        bin.addr = url.trim_start_matches("http://").parse().unwrap();
        bin.url = url;
        bin
    }

    /// Block until a log line containing `needle` arrives (20 s at most).
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}; got {:#?}", self.log));
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Send a signal (`TERM`, `INT`, `HUP`) to this process, by its PID.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit (at most `max`); its exit status, or
    /// `None` if it is still running then.
    pub fn wait_exit(&mut self, max: Duration) -> Option<i32> {
        if self.status.is_none() {
            self.status = self.exited.recv_timeout(max).ok();
        }
        self.status
    }

    /// Everything logged so far (drains the lines already sent).
    pub fn log_text(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
        self.log.join("\n")
    }

    /// Everything it logged, once it has exited (the pipe is at EOF).
    pub fn full_log(&mut self) -> String {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(l);
        }
        self.log.join("\n")
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        if self.wait_exit(Duration::ZERO).is_none() {
            // Not `signal`: a destructor must not panic.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
            let _ = self.wait_exit(Duration::from_secs(10));
        }
    }
}

/// One request on a raw connection that stays open (keep-alive): the
/// status, the headers (names lowercased) and the body as read by its
/// `Content-Length` (none for HEAD).
pub fn raw_request(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: proxy\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; if method == "HEAD" { 0 } else { len }];
    conn.read_exact(&mut body).unwrap();
    (status, headers, String::from_utf8(body).unwrap())
}

// ---------------------------------------------------------------------------
// Configs for the endpoint tests.

/// A config serving `model` from `providers` (name, `type`, fake), in
/// priority order, with `extra` YAML at the top level. Each provider's key
/// is `sk-{name}-key-000001` (for asserting it never leaks).
pub fn config_for(model: &str, providers: &[(&str, &str, &Fake)], extra: &str) -> String {
    let mut yaml = format!("{extra}\nproviders:\n");
    for (name, kind, fake) in providers {
        let base = if *kind == "openai" {
            fake.base_url()
        } else {
            fake.root_url()
        };
        yaml.push_str(&format!(
            "  {name}:\n    type: {kind}\n    api_key: sk-{name}-key-000001\n    base_url: {base}\n    timeout: 2\n    stream_timeout: 5\n"
        ));
        if *kind == "azure" {
            yaml.push_str("    api_version: 2024-10-21\n");
        }
    }
    yaml.push_str(&format!("models:\n  {model}:\n    providers:\n"));
    for (i, (name, _, _)) in providers.iter().enumerate() {
        yaml.push_str(&format!(
            "      {name}: {{priority: {i}, model_id: up-{name}}}\n"
        ));
    }
    yaml
}

/// A proxy serving model `m` from `primary` then `backup` (openai kind).
pub fn primary_backup(primary: &Fake, backup: &Fake, extra: &str) -> Proxy {
    Proxy::start(&config_for(
        "m",
        &[("primary", "openai", primary), ("backup", "openai", backup)],
        extra,
    ))
}
