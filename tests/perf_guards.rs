//! Cheap, deterministic guards against the big performance regressions that
//! `scripts/bench.sh` would show, without timing anything: upstream
//! connections are reused (non-streaming and streaming, for each kind of
//! stream), threads do not pile up after many requests, and stream events
//! are not coalesced.
//!
//! The thread count is read from /proc/self/status, which counts every
//! thread of this test process, so the tests here run one at a time.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};

use support::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(fake: &Fake) -> String {
    format!(
        r#"
providers:
  only:
    type: openai
    api_key: sk-guard-key-0001
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

fn stream_to_done(p: &Proxy) -> Vec<String> {
    let events = read_events(p.open_stream("gpt-4"), |_| {});
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events
}

#[test]
fn stream_upstream_connections_are_reused() {
    let _g = serial();
    let fake = Fake::new(Reply::chunks(&["a", "b", "c"], End::Done));
    let p = Proxy::start(&config(&fake));
    for _ in 0..30 {
        assert_eq!(stream_to_done(&p).len(), 4);
    }
    // One connection for all of them: the proxy reads each upstream body to
    // its end, so ureq can put the connection back in its pool.
    assert_eq!(fake.connections(), 1);
}

const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic/stream_text.sse");

#[test]
fn anthropic_stream_upstream_connections_are_reused() {
    let _g = serial();
    let fake = Fake::new(Reply::sse(ANTHROPIC_STREAM, End::Eof));
    let p = Proxy::start(&format!(
        r#"
providers:
  claude:
    type: anthropic
    api_key: sk-ant-guard-key-0001
    base_url: {}
    timeout: 5
models:
  gpt-4:
    providers:
      claude: {{priority: 0, model_id: claude-3-5-sonnet-20241022}}
"#,
        fake.root_url()
    ));
    for _ in 0..20 {
        // role, three deltas, finish, [DONE]
        assert_eq!(stream_to_done(&p).len(), 6);
    }
    // Like the OpenAI kind: the proxy reads past message_stop to the end of
    // the body, so the connection goes back to ureq's pool.
    assert_eq!(fake.connections(), 1);
}

#[test]
fn mixed_requests_reuse_one_upstream_connection() {
    let _g = serial();
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake));
    for i in 0..40 {
        if i % 2 == 0 {
            assert_eq!(p.chat("gpt-4").status, 200);
        } else {
            fake.push(Reply::chunks(&["a"], End::Done));
            assert_eq!(stream_to_done(&p).len(), 2);
        }
    }
    assert_eq!(fake.connections(), 1);
}

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn threads_do_not_pile_up_after_many_sequential_requests() {
    let _g = serial();
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake));
    for _ in 0..10 {
        assert_eq!(p.chat("gpt-4").status, 200);
    }
    let before = threads();
    // A new client connection for each request (each `chat` uses a new
    // agent): 1,000 requests. A thread per request that never exits, or a
    // pool that forgets idle threads, would add hundreds.
    for i in 0..1000 {
        if i % 10 == 0 {
            fake.push(Reply::chunks(&["a"], End::Done));
            stream_to_done(&p);
        } else {
            assert_eq!(p.chat("gpt-4").status, 200);
        }
    }
    let after = threads();
    // A few may be mid-exit or just started by a race between a connection
    // ending and the next one arriving; idle ones exit within a minute.
    assert!(
        after <= before + 8,
        "threads grew from {before} to {after} over 1,000 sequential requests"
    );
}

#[test]
fn stream_events_are_sent_one_per_chunk() {
    let _g = serial();
    // The upstream sends five events in one write; the proxy must still
    // frame and flush each on its own (tiny_http's own chunked writer would
    // gather them into one 8 KiB chunk, holding early events back).
    let fake = Fake::new(Reply::Stream {
        events: vec![chunk_events(&["a", "b", "c", "d", "e"]).concat()],
        pace: None,
        end: End::Done,
    });
    let p = Proxy::start(&config(&fake));
    let mut conn = TcpStream::connect(p.addr).unwrap();
    let body = chat_body("gpt-4", true);
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut chunks = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        let mut data = vec![0; size + 2];
        r.read_exact(&mut data).unwrap();
        if size == 0 {
            break;
        }
        data.truncate(size);
        chunks.push(String::from_utf8(data).unwrap());
    }
    assert_eq!(chunks.len(), 6, "{chunks:?}");
    for c in &chunks {
        assert!(
            c.starts_with("data: ") && c.ends_with("\n\n") && c.matches("data: ").count() == 1,
            "not one event per chunk: {c:?}"
        );
    }
    assert_eq!(chunks[5], "data: [DONE]\n\n");
}

#[test]
fn a_burst_of_keep_alive_connections_is_served_at_once() {
    let _g = serial();
    let fake = Fake::ok("x");
    let p = Proxy::start(&config(&fake));
    // 64 connections opened together, each sending one request and then
    // staying open. tiny_http's task pool used to queue some of them behind
    // a thread already claimed by another, where they waited for a
    // connection to close: with all of them kept alive, forever.
    let mut conns: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(p.addr).unwrap())
        .collect();
    for c in &mut conns {
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    }
    for c in &conns {
        // Only a bound for a hang, not a measurement.
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut head = [0u8; 12];
        (&*c).read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
}
