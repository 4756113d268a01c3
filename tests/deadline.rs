//! Issue 13: one deadline per request (`models.NAME.request_timeout`) and
//! stopping the failover when the client leaves. Fake upstreams hang behind
//! gates; what each received, and what /metrics says about each attempt,
//! is asserted.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// Three providers `a`, `b`, `c` (priorities 0, 1, 2) with a provider
/// `timeout` of 30 s, one failure opening a breaker, and model `m` with
/// `request_timeout` (none when `None`).
fn three(a: &Fake, b: &Fake, c: &Fake, request_timeout: Option<&str>) -> Proxy {
    three_with(a, b, c, request_timeout, "")
}

/// `three`, with a `server:` section's lines (each `  key: value\n`).
fn three_with(a: &Fake, b: &Fake, c: &Fake, request_timeout: Option<&str>, server: &str) -> Proxy {
    let mut yaml = String::new();
    if !server.is_empty() {
        yaml.push_str("server:\n");
        yaml.push_str(server);
    }
    yaml.push_str("failover:\n  max_failures: 1\n  cooldown: 600\nproviders:\n");
    for (name, f) in [("a", a), ("b", b), ("c", c)] {
        yaml.push_str(&format!(
            "  {name}:\n    type: openai\n    api_key: sk-{name}-key-000001\n    base_url: {}\n    timeout: 30\n    stream_timeout: 60\n",
            f.base_url()
        ));
    }
    yaml.push_str("models:\n  m:\n");
    if let Some(t) = request_timeout {
        yaml.push_str(&format!("    request_timeout: {t}\n"));
    }
    yaml.push_str(
        "    providers:\n      a: {priority: 0}\n      b: {priority: 1}\n      c: {priority: 2}\n",
    );
    Proxy::start(&yaml)
}

fn scrape(p: &Proxy) -> String {
    p.get("/metrics").body
}

fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

fn upstream(provider: &str, outcome: &str) -> String {
    format!(
        "llm_proxy_upstream_requests_total{{provider=\"{provider}\",model=\"m\",outcome=\"{outcome}\"}}"
    )
}

/// No piece of any provider's key in `text`.
fn no_keys(text: &str) {
    for name in ["a", "b", "c"] {
        let key = format!("sk-{name}-key-000001");
        let leaked = leaked_fragments(text, &key, 8);
        assert!(leaked.is_empty(), "key {key} leaked: {leaked:?} in {text}");
    }
}

/// A 200 event-stream head and a comment, then nothing: no first event.
fn silent_stream(g: &Gate) -> Reply {
    let mut bytes = head(
        200,
        &[
            ("content-type", "text/event-stream"),
            ("transfer-encoding", "chunked"),
        ],
    )
    .into_bytes();
    bytes.extend(chunk(b": keep-alive\n\n"));
    Reply::Raw(bytes, End::HangUntil(g.clone()))
}

/// The 504 when the deadline passed, checked for shape and timing.
fn assert_deadline(r: &Resp, t0: Instant, deadline: Duration) {
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    let e = r.error();
    assert_eq!(e["code"], "request_timeout", "{e}");
    assert_eq!(e["type"], "server_error", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("'m'"), "{msg}");
    assert!(msg.contains("request_timeout (1 s)"), "{msg}");
    // At about the deadline: not 3 x the providers' 30 s.
    assert!(took >= deadline, "{took:?}");
    assert!(took < deadline + Duration::from_millis(1500), "{took:?}");
    no_keys(&r.body);
}

#[test]
fn request_timeout_bounds_every_attempt_and_cuts_without_counting() {
    let g = Gate::new();
    let (a, b, c) = (
        Fake::ok("from a"),
        Fake::new(Reply::Hang(g.clone())),
        Fake::new(Reply::Hang(g.clone())),
    );
    a.push(Reply::Hang(g.clone()));
    let p = three(&a, &b, &c, Some("1"));
    let t0 = Instant::now();
    let r = p.chat("m");
    assert_deadline(&r, t0, Duration::from_secs(1));
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("provider a"), "{msg}");
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));
    // The deadline went on the first attempt: nothing else was called.
    assert_eq!((a.count(), b.count(), c.count()), (1, 0, 0));
    let s = scrape(&p);
    assert_eq!(value(&s, &upstream("a", "deadline")), Some(1.0), "{s}");
    assert_eq!(value(&s, &upstream("a", "failover")), None, "{s}");
    assert_eq!(
        value(&s, "llm_proxy_breaker_opened_total{provider=\"a\"}"),
        Some(0.0),
        "{s}"
    );
    // With max_failures 1, a counted failure would have opened a's breaker:
    // the next request still goes to a.
    let r = p.chat("m");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("a"));
    assert_eq!((a.count(), b.count(), c.count()), (2, 0, 0));
    g.open();
}

#[test]
fn request_timeout_covers_a_stream_until_its_first_event() {
    let g = Gate::new();
    let (a, b, c) = (
        Fake::new(Reply::chunks(&["from a"], End::Done)),
        Fake::new(silent_stream(&g)),
        Fake::new(silent_stream(&g)),
    );
    a.push(silent_stream(&g));
    let p = three(&a, &b, &c, Some("1"));
    let t0 = Instant::now();
    let r = p.post("/v1/chat/completions", &chat_body("m", true));
    assert_deadline(&r, t0, Duration::from_secs(1));
    assert_eq!((a.count(), b.count(), c.count()), (1, 0, 0));
    let s = scrape(&p);
    assert_eq!(value(&s, &upstream("a", "deadline")), Some(1.0), "{s}");
    assert_eq!(value(&s, &upstream("a", "failover")), None, "{s}");
    // Not counted: the next stream goes to a, and once it has committed the
    // request deadline no longer applies (the stream outlives it).
    let pace = Gate::new();
    a.push(Reply::Stream {
        events: chunk_events(&["one", "two"]),
        pace: Some(vec![pace.clone()]),
        end: End::Done,
    });
    let resp = p.open_stream("m");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("x-llm-proxy-provider")
            .and_then(|v| v.to_str().ok()),
        Some("a")
    );
    let t1 = Instant::now();
    let events = read_events(resp, |_| {
        if t1.elapsed() < Duration::from_millis(1300) {
            // Hold the second event past the 1 s request deadline; the
            // keep-alive and stream_idle_timeout (60 s) are what apply now.
            std::thread::sleep(Duration::from_millis(1300));
        }
        pace.open();
    });
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(delta_text(&events[..events.len() - 1]), "onetwo");
    assert_eq!((a.count(), b.count(), c.count()), (2, 0, 0));
    g.open();
}

#[test]
fn the_504_names_the_failure_before_the_deadline() {
    let g = Gate::new();
    let (a, b, c) = (
        Fake::new(Reply::error(503, "a is overloaded")),
        Fake::new(Reply::Hang(g.clone())),
        Fake::new(Reply::Hang(g.clone())),
    );
    let p = three(&a, &b, &c, Some("1"));
    let t0 = Instant::now();
    let r = p.chat("m");
    assert_deadline(&r, t0, Duration::from_secs(1));
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("last failure: provider a: HTTP 503: a is overloaded"),
        "{msg}"
    );
    assert_eq!((a.count(), b.count(), c.count()), (1, 1, 0));
    let s = scrape(&p);
    // a's 503 counted, b's cut attempt did not.
    assert_eq!(value(&s, &upstream("a", "failover")), Some(1.0), "{s}");
    assert_eq!(value(&s, &upstream("b", "deadline")), Some(1.0), "{s}");
    assert_eq!(value(&s, &upstream("b", "failover")), None, "{s}");
    assert_eq!(
        value(&s, "llm_proxy_breaker_opened_total{provider=\"b\"}"),
        Some(0.0),
        "{s}"
    );
    g.open();
}

#[test]
fn a_provider_timeout_shorter_than_the_time_left_still_counts() {
    // Each attempt waits min(provider timeout, time left): a's own 0.3 s
    // timeout fires first, counts against a, and b answers in time.
    let g = Gate::new();
    let (a, b) = (Fake::new(Reply::Hang(g.clone())), Fake::ok("from b"));
    let yaml = format!(
        "providers:\n  a:\n    type: openai\n    base_url: {}\n    timeout: 0.3\n  b:\n    type: openai\n    base_url: {}\nmodels:\n  m:\n    request_timeout: 5\n    providers:\n      a: {{priority: 0}}\n      b: {{priority: 1}}\n",
        a.base_url(),
        b.base_url()
    );
    let p = Proxy::start(&yaml);
    let t0 = Instant::now();
    let r = p.chat("m");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let s = scrape(&p);
    assert_eq!(value(&s, &upstream("a", "failover")), Some(1.0), "{s}");
    assert_eq!(value(&s, &upstream("a", "deadline")), None, "{s}");
    g.open();
}

#[test]
fn request_timeout_is_validated_and_shown() {
    let f = Fake::ok("x");
    for bad in ["0", "-1", "soon"] {
        let yaml = format!(
            "providers:\n  a:\n    type: openai\n    base_url: {}\nmodels:\n  m:\n    request_timeout: {bad}\n    providers:\n      a: {{priority: 0}}\n",
            f.base_url()
        );
        let e = llm_proxy::Config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(e.contains("models.m.request_timeout"), "{bad}: {e}");
    }
    let yaml = format!(
        "providers:\n  a:\n    type: openai\n    base_url: {}\nmodels:\n  m:\n    request_timeout: 2.5\n    providers:\n      a: {{priority: 0}}\n  n:\n    providers:\n      a: {{priority: 0}}\n",
        f.base_url()
    );
    let c = llm_proxy::Config::from_yaml(&yaml).unwrap();
    let summary = c.summary();
    assert!(summary.contains("request_timeout=2.5s"), "{summary}");
    assert_eq!(summary.matches("request_timeout").count(), 1, "{summary}");
}

/// Send a request on a keep-alive connection and return the socket
/// without reading the answer.
fn send_keep_alive(p: &Proxy, stream: bool) -> TcpStream {
    let body = chat_body("m", stream);
    let mut conn = TcpStream::connect(p.addr).unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).unwrap();
    conn
}

/// Wait until /metrics shows `series` at `want` (bounded).
fn wait_metric(p: &Proxy, series: &str, want: f64) -> String {
    let t0 = Instant::now();
    loop {
        let s = scrape(p);
        if value(&s, series) == Some(want) || t0.elapsed() > Duration::from_secs(10) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stream's connection parked without a thread whatever the load
/// (tiny_http patch 15): the client leaving is seen by a peek.
const PARKED: &str = "  park_streams_over: 0\n";

fn client_leaves_mid_attempt(stream: bool) {
    client_leaves_mid_attempt_with(stream, "");
}

fn client_leaves_mid_attempt_with(stream: bool, server: &str) {
    // a holds the request until the proxy closes the connection to it
    // (then `abandoned` opens); if the proxy never does, it would answer
    // with a failover-class 503 once `release` opens.
    let abandoned = Gate::new();
    let release = Gate::new();
    let a = Fake::ok("from a");
    a.push(Reply::Raw(
        Vec::new(),
        End::HoldUntilClosed(abandoned.clone()),
    ));
    let b = Fake::new(Reply::After(
        release.clone(),
        Box::new(Reply::error(503, "b down")),
    ));
    let c = Fake::ok("from c");
    let p = three_with(&a, &b, &c, None, server);
    let conn = send_keep_alive(&p, stream);
    a.wait_for(1);
    let left = Instant::now();
    drop(conn);
    // The hanging attempt is abandoned promptly, not at a's 30 s timeout.
    assert!(
        abandoned.wait(Duration::from_secs(5)),
        "the proxy kept waiting on a after the client left"
    );
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "{:?}",
        left.elapsed()
    );
    let s = wait_metric(&p, &upstream("a", "client_gone"), 1.0);
    assert_eq!(value(&s, &upstream("a", "client_gone")), Some(1.0), "{s}");
    release.open();
    // No further upstream call, nothing counted against a.
    assert_eq!((a.count(), b.count(), c.count()), (1, 0, 0));
    assert_eq!(value(&s, &upstream("a", "failover")), None, "{s}");
    assert_eq!(
        value(
            &s,
            "llm_proxy_provider_consecutive_failures{provider=\"a\"}"
        ),
        Some(0.0),
        "{s}"
    );
    assert!(
        s.contains("code=\"499\""),
        "the request is logged as 499: {s}"
    );
    // max_failures is 1: a is still in.
    let r = p.chat("m");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("a"), "{}", r.body);
}

#[test]
fn a_client_that_leaves_stops_the_failover() {
    client_leaves_mid_attempt(false);
}

#[test]
fn a_client_that_leaves_before_a_stream_commits_stops_the_failover() {
    client_leaves_mid_attempt(true);
}

#[test]
fn a_client_that_leaves_a_parked_stream_before_it_commits_stops_the_failover() {
    // No thread reads the parked connection: only the peek can see the
    // client leave (this fails if the peek reports nothing).
    client_leaves_mid_attempt_with(true, PARKED);
}

#[test]
fn a_client_that_stays_is_answered_after_a_slow_failover() {
    // The read-ahead (or, parked, the peek) that notices a client leaving
    // must not mistake a client that waits (and keeps its connection) for
    // one that left; nor a stream's own stop of the read-ahead after commit.
    for (stream, server) in [(false, ""), (true, ""), (true, PARKED)] {
        let g = Gate::new();
        let a = Fake::new(Reply::After(g.clone(), Box::new(Reply::error(503, "down"))));
        let b = Fake::new(Reply::ByStream {
            json: Box::new(Reply::completion("from b")),
            stream: Box::new(Reply::chunks(&["from b"], End::Done)),
        });
        let c = Fake::ok("c");
        let p = three_with(&a, &b, &c, None, server);
        let conn = send_keep_alive(&p, stream);
        a.wait_for(1);
        g.open();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains(" 200 "), "stream {stream}: {line}");
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        assert!(rest.contains("from b"), "{rest}");
        assert_eq!((a.count(), b.count(), c.count()), (1, 1, 0));
    }
}

/// `stream_idle_timeout` runs between events; `stream_timeout` still bounds
/// the whole stream: an upstream that sends an event every 0.15 s (never
/// idle for its 0.4 s) is cut at its 1 s `stream_timeout`, with the
/// mid-stream error event and no `[DONE]`, and that counts against it.
#[test]
fn stream_timeout_bounds_a_stream_that_is_never_idle() {
    let event = chunk(chunk_events(&["b"])[0].as_bytes());
    let mut first = head(
        200,
        &[
            ("content-type", "text/event-stream"),
            ("transfer-encoding", "chunked"),
        ],
    )
    .into_bytes();
    first.extend(chunk(chunk_events(&["a"])[0].as_bytes()));
    let steady = vec![
        Step::send(first),
        Step::drip(event.repeat(30), event.len(), Duration::from_millis(150)),
    ];
    let up = Raw::new(steady);
    let backup = Fake::ok("backup");
    let yaml = format!(
        "failover:\n  max_failures: 1\nproviders:\n  main:\n    type: openai\n    api_key: sk-a-key-000001\n    base_url: {}\n    timeout: 5\n    stream_timeout: 1\n    stream_idle_timeout: 0.4\n  backup:\n    type: openai\n    base_url: {}\nmodels:\n  m:\n    providers:\n      main: {{priority: 0}}\n      backup: {{priority: 1}}\n",
        up.base_url(),
        backup.base_url()
    );
    let p = Proxy::start(&yaml);
    let t0 = Instant::now();
    let events = read_events(p.open_stream("m"), |_| {});
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // More events than fit in one idle period: the stream was steady.
    assert!(events.len() >= 5, "{events:?}");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_error", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    no_keys(&events.join("\n"));
    // Counted (max_failures 1): the next request goes to the backup.
    let r = p.chat("m");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
}

/// The binary's own log at trace level, for a deadline and a client that
/// left: it says why each attempt was not counted, and no piece of a key
/// (which the first upstream echoes in its error) is in it or in the 504.
#[test]
fn the_log_says_why_and_never_shows_a_key() {
    let g = Gate::new();
    let echo = Reply::error(503, "overloaded for key sk-a-key-000001");
    let (a, b, c) = (
        Fake::new(echo),
        Fake::new(Reply::Hang(g.clone())),
        Fake::new(Reply::Hang(g.clone())),
    );
    let mut yaml = String::from("providers:\n");
    for (name, f) in [("a", &a), ("b", &b), ("c", &c)] {
        yaml.push_str(&format!(
            "  {name}:\n    type: openai\n    api_key: sk-{name}-key-000001\n    base_url: {}\n    timeout: 30\n",
            f.base_url()
        ));
    }
    yaml.push_str("models:\n  m:\n    request_timeout: 1\n    providers:\n      a: {priority: 0}\n      b: {priority: 1}\n      c: {priority: 2}\n  n:\n    providers:\n      b: {priority: 0}\n      c: {priority: 1}\n");
    let mut p = Logged::start(&yaml);
    let r = call(
        &p.url,
        "/v1/chat/completions",
        &[],
        Some(&chat_body("m", false)),
    );
    assert_eq!(r.status, 504, "{}", r.body);
    no_keys(&r.body);
    // A client that leaves while b hangs, on model n (no deadline).
    let addr = p.url.trim_start_matches("http://").to_string();
    let body = chat_body("n", false);
    let mut conn = TcpStream::connect(&addr).unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).unwrap();
    b.wait_for(2);
    drop(conn);
    // The log line of the abandoned request (bounded wait).
    let t0 = Instant::now();
    while !call(&p.url, "/metrics", &[], None)
        .body
        .contains("outcome=\"client_gone\"")
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = p.finish();
    g.open();
    assert_eq!(c.count(), 0);
    no_keys(&log);
    assert!(
        log.contains("provider b cut short") && log.contains("request_timeout passed"),
        "{log}"
    );
    assert!(
        log.contains("client left during the attempt to provider b"),
        "{log}"
    );
}
