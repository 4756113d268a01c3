//! The listener under hostile or odd clients: a bound on open connections,
//! a deadline for a whole request head, refused thread spawns, a dead accept
//! thread, and HTTP that must be answered and closed (HTTP/2 request lines,
//! Content-Length with Transfer-Encoding, oversized headers).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_llm-proxy");
const KEY: &str = "sk-hardening-secret-9431";

fn config(fake: &Fake, server: &str) -> String {
    format!(
        r#"
server: {server}
providers:
  only:
    type: openai
    api_key: {KEY}
    base_url: {}
    timeout: 2
models:
  gpt-4:
    providers:
      only: {{priority: 0, model_id: up-only}}
"#,
        fake.base_url()
    )
}

/// Send `bytes` on a new connection and read until the proxy closes it.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    // The proxy may answer and close before it has read everything.
    let _ = s.write_all(bytes);
    (read_to_close(&mut s), t.elapsed())
}

/// Everything until EOF (or a reset after the answer); panics if the proxy
/// keeps the connection open for 10 s.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "connection not closed: {e}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status and OpenAI error object of one raw response, asserting that
/// it is the only response and that it says `Connection: close`.
fn one_error(raw: &str) -> (u16, Value) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {raw:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {raw:?}"));
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("connection: close"), "{raw:?}");
    assert!(lower.contains("content-type: application/json"), "{raw:?}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw:?}"));
    let e = v["error"].clone();
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "error lacks {k}: {raw:?}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    (status, e)
}

#[test]
fn http2_request_lines_get_505_and_close() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake, "{}"));
    for req in [
        &b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n"[..],
        // The HTTP/2 connection preface of a prior-knowledge client.
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let (raw, took) = exchange(p.addr, req);
        let (status, e) = one_error(&raw);
        assert_eq!(status, 505, "{raw}");
        assert!(
            raw.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
            "{raw}"
        );
        assert_eq!(e["code"], "http_version_not_supported", "{raw}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    assert_eq!(fake.count(), 0);
    assert_eq!(p.get("/health").status, 200);
}

#[test]
fn content_length_with_transfer_encoding_is_400_and_close() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake, "{}"));
    let body = chat_body("gpt-4", false);
    // A smuggling attempt: the chunked body ends at once, and what a front
    // proxy that trusted Content-Length took as body is a second request.
    let smuggled = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let (raw, _) = exchange(p.addr, req.as_bytes());
    let (status, e) = one_error(&raw);
    assert_eq!(status, 400, "{raw}");
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(
        raw.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {raw}"
    );

    // Two Content-Length headers that disagree: the same risk.
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
         Content-Length: 3\r\n\r\n{body}",
        body.len()
    );
    let (raw, _) = exchange(p.addr, req.as_bytes());
    assert_eq!(one_error(&raw).0, 400, "{raw}");
    assert_eq!(fake.count(), 0, "nothing reached the upstream");
    assert_eq!(p.chat("gpt-4").status, 200);
}

#[test]
fn oversized_heads_get_431_and_close() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake, "{}"));
    let big = "a".repeat(17 * 1024);
    let req = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (raw, _) = exchange(p.addr, req.as_bytes());
    let (status, e) = one_error(&raw);
    assert_eq!(status, 431, "{raw}");
    assert!(
        raw.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{raw}"
    );
    assert_eq!(e["type"], "invalid_request_error");

    // Many headers under the line limit that add up past the head limit.
    let line = format!("X-Pad: {}\r\n", "b".repeat(15 * 1024));
    let req = format!("GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n", line.repeat(6));
    let (raw, _) = exchange(p.addr, req.as_bytes());
    assert_eq!(one_error(&raw).0, 431, "{raw}");

    // A request line past the limit is 414 (as nginx answers).
    let req = format!("GET /{big} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (raw, _) = exchange(p.addr, req.as_bytes());
    assert_eq!(one_error(&raw).0, 414, "{raw}");
    assert_eq!(p.get("/health").status, 200);
}

#[test]
fn connections_over_max_connections_get_503_and_the_rest_are_served() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake, "{max_connections: 3}"));
    // Three connections that send one byte of a request line and stall.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(p.addr).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    // Once all three are counted (accepted in order), a fourth is refused.
    let (raw, took) = exchange(p.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, e) = one_error(&raw);
    assert_eq!(status, 503, "{raw}");
    assert_eq!(e["type"], "server_error");
    assert!(
        raw.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{raw}"
    );
    assert!(took < Duration::from_secs(2), "refused at once: {took:?}");
    // The held connections are still open and served.
    held[0]
        .write_all(b"ET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    held[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let raw = read_to_close(&mut held[0]);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // Closing them frees their slots.
    held.clear();
    wait_served(p.addr);
}

/// Poll until a plain request is answered 200 (slots are freed once the
/// connection threads see the close), at most 10 s.
fn wait_served(addr: SocketAddr) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let got = TcpStream::connect(addr).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            Some(String::from_utf8_lossy(&buf).into_owned())
        });
        if got
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            return;
        }
        assert!(Instant::now() < end, "not serving again: {got:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_request_head_has_a_total_deadline() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake, "{header_timeout: 1, client_timeout: 30}"));
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let t = Instant::now();
    // A client that trickles its head, one header line every 100 ms: each
    // read is quick, so only a deadline for the whole head stops it.
    let trickle = thread::spawn(move || {
        w.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
        for i in 0..100 {
            thread::sleep(Duration::from_millis(100));
            if w.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
                return i;
            }
        }
        100
    });
    let raw = read_to_close(&mut s);
    let took = t.elapsed();
    let (status, e) = one_error(&raw);
    assert_eq!(status, 408, "{raw}");
    assert_eq!(e["code"], "header_timeout", "{raw}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(trickle.join().unwrap() < 100);
    assert_eq!(p.get("/health").status, 200);
}

#[test]
fn a_dead_accept_thread_ends_serving_with_an_error() {
    let fake = Fake::ok("x");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = listener.try_clone().unwrap();
    let config = llm_proxy::Config::from_yaml(&config(&fake, "{}")).unwrap();
    let handle = llm_proxy::serve(listener, config, None).unwrap();
    let addr = handle.addr();
    wait_served(addr);
    // Break the listening socket under tiny_http's accept thread: on Linux,
    // shutdown() of a listening socket makes accept() fail with EINVAL for
    // good, as a listener that is gone would.
    socket2::SockRef::from(&ours)
        .shutdown(std::net::Shutdown::Read)
        .unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    let joined = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("join() returns once the accept thread is gone");
    let err = joined.expect_err("a dead accept thread is an error");
    assert!(err.to_string().contains("accept"), "{err}");
}

/// A user id no other process on the machine has, for RLIMIT_NPROC (which
/// counts every thread of the real user id, and which root ignores).
fn spare_uid() -> u32 {
    60_000 + std::process::id() % 5_000
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn thread_exhaustion_rejects_connections_and_the_server_recovers() {
    if !is_root()
        || Command::new("setpriv").arg("--help").output().is_err()
        || Command::new("prlimit").arg("--help").output().is_err()
    {
        eprintln!("skipped: needs root, setpriv and prlimit to run the proxy as a spare uid");
        return;
    }
    let fake = Fake::ok("x");
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        config(
            &fake,
            &format!("{{port: {port}, log_level: trace, header_timeout: 1}}"),
        ),
    )
    .unwrap();
    // Readable by the spare uid.
    for p in [dir.path(), path.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let uid = spare_uid().to_string();
    // At most 40 threads for this uid: fewer than the connections below.
    /// Stops the proxy however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new("prlimit")
        .args([
            "--nproc=40",
            "--",
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
        ])
        .args(["--clear-groups", "--", BIN, "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    let log = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < end, "the proxy did not start");
        thread::sleep(Duration::from_millis(20));
    }
    // 60 connections that each send one byte, as in the issue's report.
    let mut conns: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"G").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    // Those the proxy could not start a thread for were answered 503 at
    // once; the others 408 when their head did not arrive in 1 s.
    let (mut refused, mut timed_out) = (0, 0);
    for s in conns.iter_mut() {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        if head.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else if head.starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert_eq!(refused + timed_out, 60, "{refused} + {timed_out}");
    conns.clear();
    // The process is alive, and once the connections are gone it serves.
    assert!(child.0.try_wait().unwrap().is_none(), "the proxy exited");
    wait_served(addr);
    let served = Proxy {
        handle: None,
        url: format!("http://{addr}"),
        addr,
    }
    .chat("gpt-4");
    assert_eq!(served.status, 200, "{}", served.body);
    drop(child);
    let log = log.join().unwrap();
    assert!(refused > 0, "no connection was refused; log:\n{log}");
    assert!(
        log.contains("cannot start a thread for a new connection"),
        "{log}"
    );
    assert!(!log.contains(KEY), "the key leaked into the log");
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn threads_left_idle_by_a_burst_exit() {
    // 150 requests in flight at once, then none: at most 64 idle workers
    // and 16 idle connection threads stay (each keeps its touched stack).
    let gate = Gate::new();
    let fake = Fake::new(Reply::After(gate.clone(), Box::new(Reply::completion("x"))));
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config(&fake, &format!("{{port: {port}}}"))).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_served(addr);
    let p = Proxy {
        handle: None,
        url: format!("http://{addr}"),
        addr,
    };
    let url = p.url.clone();
    let clients: Vec<_> = (0..150)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || {
                let p = Proxy {
                    handle: None,
                    url,
                    addr,
                };
                p.chat("gpt-4").status
            })
        })
        .collect();
    fake.wait_for(150);
    assert!(threads_of(pid) >= 150 + 150, "{}", threads_of(pid));
    gate.open();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    // The workers' idle timeout is 60 s: this must not wait for it.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = threads_of(pid);
        if n <= 64 + 16 + 10 {
            break;
        }
        assert!(Instant::now() < end, "{n} threads stay after the burst");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stream_holds_one_thread_its_worker() {
    // While it streams, a stream holds its worker and nothing more: its
    // kept connection is parked without a thread (vendored tiny_http, patch
    // 15; `park_streams_over: 0` parks whatever the load) and comes back
    // for the client's next request when the stream ends. Before patch 15
    // its connection's thread waited in the read-ahead for the whole
    // stream: 2 threads (124 for these 60 streams).
    let gate = Gate::new();
    let fake = Fake::new(Reply::chunks(&["a"], End::DoneAfter(gate.clone())));
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        config(&fake, &format!("{{port: {port}, park_streams_over: 0}}")),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_served(addr);
    let url = format!("http://{addr}");
    let streams = 60;
    let (first_tx, first_rx) = mpsc::channel();
    let clients: Vec<_> = (0..streams)
        .map(|_| {
            let url = url.clone();
            let first_tx = first_tx.clone();
            thread::spawn(move || {
                let p = Proxy {
                    handle: None,
                    url,
                    addr,
                };
                let mut sent = false;
                let events = read_events(p.open_stream("gpt-4"), |_| {
                    if !sent {
                        sent = true;
                        let _ = first_tx.send(());
                    }
                });
                let done = events.last().is_some_and(|e| e == "[DONE]");
                (delta_text(&events[..events.len().saturating_sub(1)]), done)
            })
        })
        .collect();
    for _ in 0..streams {
        first_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("every stream started");
    }
    // Every stream is under way: a worker each, plus at most 16 idle
    // connection threads and the few fixed ones.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = threads_of(pid);
        if n <= streams + 16 + 10 {
            break;
        }
        assert!(Instant::now() < end, "{n} threads for {streams} streams");
        thread::sleep(Duration::from_millis(50));
    }
    gate.open();
    for c in clients {
        assert_eq!(c.join().unwrap(), ("a".to_string(), true));
    }
}

#[test]
fn a_stream_that_fails_to_start_keeps_its_connection() {
    // A stream request answered with an error instead of the stream (a
    // JSON body with its length) keeps its connection, as any answer does:
    // the next request on it is answered.
    let fake = Fake::new(Reply::completion("next"));
    fake.push(Reply::error(500, "upstream broke"));
    let p = Proxy::start(&config(&fake, "{}"));
    let stream = chat_body("gpt-4", true);
    let chat = chat_body("gpt-4", false);
    let post = |body: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(post(&stream).as_bytes()).unwrap();
    let first = read_one(&mut s);
    let (head, body) = first.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 5"), "{first}");
    let e = serde_json::from_str::<Value>(body).unwrap()["error"].clone();
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    assert!(!first.contains(KEY), "{first}");
    assert!(
        e["message"].as_str().unwrap().contains("upstream broke"),
        "{first}"
    );
    s.write_all(post(&chat).as_bytes()).unwrap();
    let second = read_one(&mut s);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("next"), "{second}");
}

/// One response with a `Content-Length` body, read off a kept connection.
fn read_one(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    buf.extend_from_slice(&body);
    String::from_utf8_lossy(&buf).into_owned()
}
