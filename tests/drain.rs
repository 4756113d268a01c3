//! Graceful drain (SIGTERM, SIGINT) and readiness, against the binary: new
//! connections are refused at once, `/health/ready` answers 503 to clients
//! still connected, streams in flight complete, streams past
//! `server.shutdown_timeout` end with `server_shutting_down`, the process
//! exits 0; a second signal exits at once.

mod support;

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn config(fake: &Fake, shutdown_timeout: &str) -> String {
    format!(
        "
server:
  shutdown_timeout: {shutdown_timeout}
providers:
  up:
    type: openai
    base_url: {}
    api_key: fake-drain-upstream-sierra-tango
    stream_idle_timeout: 10
models:
  m:
    providers:
      up: {{priority: 0, model_id: up-model}}
",
        fake.base_url()
    )
}

/// Open `n` streams on their own threads; returns once each has received
/// its first event. Each thread sends back all its `data:` payloads.
fn open_streams(url: &str, n: usize) -> Vec<mpsc::Receiver<Vec<String>>> {
    let (first_tx, first_rx) = mpsc::channel();
    let mut results = Vec::new();
    for _ in 0..n {
        let (tx, rx) = mpsc::channel();
        results.push(rx);
        let (url, first_tx) = (url.to_string(), first_tx.clone());
        thread::spawn(move || {
            let resp = agent()
                .post(format!("{url}/v1/chat/completions"))
                .header("content-type", "application/json")
                .send(chat_body("m", true))
                .unwrap();
            assert_eq!(resp.status(), 200);
            let mut sent = false;
            let events = read_events(resp, |_| {
                if !sent {
                    sent = true;
                    let _ = first_tx.send(());
                }
            });
            let _ = tx.send(events);
        });
    }
    for _ in 0..n {
        first_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("every stream started");
    }
    results
}

fn keep_alive_conn(bin: &Bin) -> BufReader<TcpStream> {
    let conn = TcpStream::connect(bin.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    BufReader::new(conn)
}

#[test]
fn sigterm_lets_streams_in_flight_complete_and_refuses_new_connections() {
    let done = Gate::new();
    let fake = Fake::new(Reply::chunks(&["a", "b"], End::DoneAfter(done.clone())));
    let cfg = ConfigFile::new(&config(&fake, "30"));
    let mut bin = Bin::start(cfg.path(), &["--host", "127.0.0.1", "--port", "0"]);

    // A client with a keep-alive connection, ready before the drain.
    let mut kept = keep_alive_conn(&bin);
    let (status, _, body) = raw_request(&mut kept, "GET", "/health/ready");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));

    let streams = open_streams(&bin.url, 5);
    fake.wait_for(5);
    bin.signal("TERM");
    let line = bin.wait_for("draining:");
    assert!(line.contains("5 requests in flight"), "{line}");

    // The listening socket is closed: a new connection is refused.
    let refused = TcpStream::connect(bin.addr).expect_err("a new connection is refused");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // A client still connected is told to go elsewhere; liveness holds.
    let (status, headers, body) = raw_request(&mut kept, "GET", "/health/ready");
    assert_eq!((status, body.as_str()), (503, r#"{"status":"draining"}"#));
    assert!(headers.iter().any(|(k, _)| k == "content-length"));
    let (status, _, body) = raw_request(&mut kept, "HEAD", "/health/ready");
    assert_eq!((status, body.as_str()), (503, ""));
    let (status, _, body) = raw_request(&mut kept, "GET", "/health");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // Nothing exits while the streams run.
    assert_eq!(bin.wait_exit(Duration::ZERO), None);

    done.open();
    for rx in streams {
        let events = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(delta_text(&events[..events.len() - 1]), "ab");
    }
    assert_eq!(bin.wait_exit(Duration::from_secs(20)), Some(0));
    let log = bin.full_log();
    assert!(log.contains("drained: every request finished"), "{log}");
    assert!(!log.contains("fake-drain-upstream-sierra"), "{log}");
}

/// Payloads of a stream ended by the drain: content, then the error event.
fn assert_ended_by_shutdown(events: &[String]) {
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    let err = &last["error"];
    assert_eq!(err["code"], "server_shutting_down", "{last}");
    assert_eq!(err["type"], "server_error", "{last}");
    assert!(
        err["param"].is_null() && err["message"].is_string(),
        "{last}"
    );
}

#[test]
fn streams_past_shutdown_timeout_end_with_the_error_event() {
    // One stream whose upstream goes silent, one paced by a gate: both
    // are still running at the deadline.
    let release = Gate::new();
    let next = Gate::new();
    let fake = Fake::new(Reply::chunks(&["a"], End::HangUntil(release.clone())));
    fake.push(Reply::chunks(&["a"], End::HangUntil(release.clone())));
    fake.push(Reply::Stream {
        events: chunk_events(&["x", "y"]),
        pace: Some(vec![next.clone()]),
        end: End::Done,
    });
    let cfg = ConfigFile::new(&config(&fake, "1"));
    let mut bin = Bin::start(cfg.path(), &["--host", "127.0.0.1", "--port", "0"]);
    let streams = open_streams(&bin.url, 2);
    fake.wait_for(2);

    let signalled = Instant::now();
    bin.signal("TERM");
    bin.wait_for("draining: 2 requests in flight");
    // A stream is ended at its first keep-alive tick past the deadline.
    bin.wait_for("ended: server.shutdown_timeout passed");
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    next.open();
    let mut ended = 0;
    for rx in streams {
        let events = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_ended_by_shutdown(&events);
        ended += 1;
    }
    assert_eq!(ended, 2);
    assert_eq!(bin.wait_exit(Duration::from_secs(20)), Some(0));
    release.open();
    let log = bin.full_log();
    assert!(
        log.contains("2 streams still running at server.shutdown_timeout were ended"),
        "{log}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let release = Gate::new();
    let fake = Fake::new(Reply::chunks(&["a"], End::HangUntil(release.clone())));
    let cfg = ConfigFile::new(&config(&fake, "30"));
    let mut bin = Bin::start(cfg.path(), &["--host", "127.0.0.1", "--port", "0"]);
    let _streams = open_streams(&bin.url, 1);
    // SIGINT drains like SIGTERM.
    bin.signal("INT");
    bin.wait_for("SIGINT: draining");
    bin.wait_for("draining: 1 requests in flight");
    let second = Instant::now();
    bin.signal("TERM");
    // 128 + SIGTERM, long before the 30 s shutdown_timeout.
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(143));
    assert!(second.elapsed() < Duration::from_secs(5));
    release.open();
    let log = bin.full_log();
    assert!(log.contains("SIGTERM again while draining"), "{log}");
}

#[test]
fn health_and_readiness_answer_get_and_head() {
    let fake = Fake::ok("hi");
    let proxy = Proxy::start(&config(&fake, "30"));
    let mut conn = BufReader::new(TcpStream::connect(proxy.addr).unwrap());
    let (status, h, body) = raw_request(&mut conn, "GET", "/health");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert!(h.contains(&("content-type".into(), "application/json".into())));
    let (status, h, body) = raw_request(&mut conn, "HEAD", "/health");
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(h.contains(&("content-length".into(), "15".into())), "{h:?}");
    let (status, _, body) = raw_request(&mut conn, "GET", "/health/ready");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, _, body) = raw_request(&mut conn, "HEAD", "/health/ready");
    assert_eq!((status, body.as_str()), (200, ""));
    // The same connection still serves: HEAD sent no body.
    let (status, h, body) = raw_request(&mut conn, "DELETE", "/health/ready");
    assert_eq!(status, 405, "{body}");
    assert!(h.contains(&("allow".into(), "GET, HEAD".into())), "{h:?}");
}

/// systemd SIGKILLs after `TimeoutStopSec=`: it must outlast the drain, so
/// that `systemctl restart` (an upgrade through install.sh) drains.
#[test]
fn the_unit_outlasts_the_drain_and_reloads_with_sighup() {
    let unit = include_str!("../scripts/llm-proxy.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key}= missing"))
    };
    let stop: f64 = setting("TimeoutStopSec").parse().unwrap();
    let drain = llm_proxy::config::defaults::SHUTDOWN_TIMEOUT_SECS
        + llm_proxy::lifecycle::DRAIN_GRACE.as_secs_f64();
    assert!(stop > drain, "TimeoutStopSec={stop} <= {drain}");
    assert_eq!(setting("KillSignal"), "SIGTERM");
    assert_eq!(setting("ExecReload"), "/bin/sh -c 'kill -HUP ${MAINPID}'");
    // The README tells operators to raise both together.
    let readme = include_str!("../README.md");
    assert!(readme.contains("TimeoutStopSec"), "README: TimeoutStopSec");
}

/// The drain as a function (what an embedder calls): with nothing in
/// flight, `join` returns at once and the port is closed.
#[test]
fn handle_drain_with_nothing_in_flight_ends_at_once() {
    let fake = Fake::ok("hi");
    let mut proxy = Proxy::start(&config(&fake, "30"));
    let handle = proxy.handle.take().unwrap();
    let started = Instant::now();
    handle.drain();
    handle.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let refused = TcpStream::connect(proxy.addr).expect_err("closed");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}
