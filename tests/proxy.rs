//! End-to-end behaviour of the proxy over real sockets: endpoints, request
//! forwarding, error shapes, failover classes, breakers, streaming.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Two providers for `gpt-4`: `primary` (priority 0) and `backup` (1).
fn two(primary: &Fake, backup: &Fake, failover: &str) -> String {
    format!(
        r#"
failover: {failover}
providers:
  primary:
    type: openai
    api_key: sk-primary-key-0001
    base_url: {}
    timeout: 2
    stream_timeout: 5
  backup:
    type: openai
    api_key: sk-backup-key-0002
    base_url: {}
    timeout: 2
models:
  gpt-4:
    providers:
      primary: {{priority: 0, model_id: up-primary}}
      backup: {{priority: 1, model_id: up-backup}}
"#,
        primary.base_url(),
        backup.base_url()
    )
}

fn one(fake: &Fake, extra: &str) -> String {
    format!(
        r#"
{extra}
providers:
  only:
    type: openai
    api_key: sk-only-key-0003
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

#[test]
fn health_models_and_unknown_routes() {
    let fake = Fake::ok("hi");
    let p = Proxy::start(&one(&fake, ""));

    let r = p.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));

    let r = p.get("/v1/models");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let m = &v["data"][0];
    assert_eq!(m["id"], "gpt-4");
    assert_eq!(m["object"], "model");
    assert!(m["created"].as_u64().unwrap() > 1_600_000_000);
    assert!(m["owned_by"].is_string());

    assert_eq!(p.get("/v1/models/gpt-4").json()["id"], "gpt-4");
    let r = p.get("/v1/models/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.error()["code"], "model_not_found");

    let r = p.get("/v2/whatever");
    assert_eq!(r.status, 404);
    assert_eq!(r.error()["type"], "invalid_request_error");

    let r = p.post("/health", "{}");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    r.error();
    let r = p.get("/v1/chat/completions");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(fake.count(), 0);
}

#[test]
fn forwards_body_unchanged_except_model_and_uses_provider_key() {
    let fake = Fake::ok("hello");
    let p = Proxy::start(&one(&fake, ""));
    let body = json!({
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3, "max_tokens": 7, "max_completion_tokens": 8, "top_p": 0.9,
        "stop": ["x"], "n": 1, "seed": 42, "user": "u-1",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "response_format": {"type": "json_object"},
        "some_future_field": {"nested": [1, 2, 3]}
    });
    let r = p.post_with(
        "/v1/chat/completions",
        &body.to_string(),
        &[
            ("authorization", "Bearer client-secret-never-forwarded"),
            ("x-request-id", "client-req-42"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The upstream's body comes back as it was sent.
    assert_eq!(r.json(), completion_body("hello"));
    assert_eq!(r.header("x-request-id"), Some("client-req-42"));
    assert_eq!(r.header("x-llm-proxy-provider"), Some("only"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));

    let got = &fake.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(got.header("authorization"), Some("Bearer sk-only-key-0003"));
    let mut expected = body.clone();
    expected["model"] = json!("up-only");
    assert_eq!(got.json(), expected);
}

#[test]
fn request_errors_are_openai_shaped_400s() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&one(&fake, ""));
    let cases = [
        ("{not json", None),
        ("[1,2]", None),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (
            r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (r#"{"model":"gpt-4"}"#, Some("messages")),
        (r#"{"model":"gpt-4","messages":"hi"}"#, Some("messages")),
        (r#"{"model":"gpt-4","messages":[]}"#, Some("messages")),
    ];
    for (body, param) in cases {
        let r = p.post("/v1/chat/completions", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let e = r.error();
        assert_eq!(e["type"], "invalid_request_error");
        if let Some(param) = param {
            assert_eq!(e["param"], param, "{body}");
        }
    }
    // Unknown model: 404 without calling anyone.
    let r = p.chat("gpt-5");
    assert_eq!(r.status, 404);
    assert_eq!(r.error()["code"], "model_not_found");
    assert_eq!(fake.count(), 0);
    // And the server keeps serving.
    assert_eq!(p.chat("gpt-4").status, 200);
}

#[test]
fn each_failover_status_moves_to_the_next_provider() {
    for status in [401, 403, 404, 408, 429, 500, 502, 503, 504, 529] {
        let primary = Fake::new(Reply::error(status, "upstream says no"));
        let backup = Fake::ok("from backup");
        let p = Proxy::start(&two(&primary, &backup, "{max_failures: 3}"));
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 200, "status {status}: {}", r.body);
        assert_eq!(r.json()["choices"][0]["message"]["content"], "from backup");
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
        assert_eq!(primary.count(), 1);
        assert_eq!(backup.requests()[0].json()["model"], "up-backup");
    }
}

#[test]
fn transport_failures_and_bad_bodies_fail_over() {
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hang = Gate::new();
    let replies = [
        ("connection closed", Some(Reply::Close)),
        (
            "invalid JSON 200",
            Some(Reply::raw(200, "<html>oops</html>")),
        ),
        (
            "200 without choices",
            Some(Reply::json(200, json!({"object": "x"}))),
        ),
        ("timeout", Some(Reply::Hang(hang.clone()))),
        ("connection refused", None),
    ];
    for (what, reply) in replies {
        let primary = Fake::new(reply.clone().unwrap_or(Reply::Close));
        let backup = Fake::ok("from backup");
        let mut yaml = two(&primary, &backup, "{max_failures: 3}");
        if reply.is_none() {
            yaml = yaml.replace(
                &primary.base_url(),
                &format!("http://127.0.0.1:{dead_port}/v1"),
            );
        }
        yaml = yaml.replace("timeout: 2\n    stream_timeout: 5", "timeout: 0.3");
        let p = Proxy::start(&yaml);
        let t = Instant::now();
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"), "{what}");
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"), "{what}");
        if what == "timeout" {
            assert!(t.elapsed() >= Duration::from_millis(300), "{what}");
            assert!(t.elapsed() < Duration::from_secs(2), "{what}: {}ms", ms(t));
        }
    }
    hang.open();
}

#[test]
fn client_errors_are_returned_without_failover_or_counting() {
    for status in [400, 409, 413, 422] {
        let primary = Fake::new(Reply::json(
            status,
            json!({"error": {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature", "code": "bad_value"}}),
        ));
        let backup = Fake::ok("from backup");
        let p = Proxy::start(&two(&primary, &backup, "{max_failures: 1}"));
        for _ in 0..3 {
            let r = p.chat("gpt-4");
            assert_eq!(r.status, status, "{}", r.body);
            let e = r.error();
            assert_eq!(e["message"], "bad temperature");
            assert_eq!(e["param"], "temperature");
            assert_eq!(e["code"], "bad_value");
            assert_eq!(r.header("x-llm-proxy-provider"), Some("primary"));
        }
        // With max_failures 1, a counted failure would have opened the breaker.
        assert_eq!(primary.count(), 3, "status {status}");
        assert_eq!(backup.count(), 0, "status {status}");
    }
}

#[test]
fn all_failing_gives_503_naming_the_last_failure_without_keys() {
    let primary = Fake::new(Reply::error(500, "primary exploded"));
    let backup = Fake::new(Reply::error(
        401,
        "Incorrect API key provided: sk-backup-key-0002",
    ));
    let p = Proxy::start(&two(&primary, &backup, "{max_failures: 3}"));
    let r = p.chat("gpt-4");
    assert_eq!(r.status, 503);
    let e = r.error();
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("backup"), "{msg}");
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("Incorrect API key provided"), "{msg}");
    assert!(!r.body.contains("sk-backup-key-0002"), "{}", r.body);
    assert!(!r.body.contains("sk-primary-key-0001"), "{}", r.body);
    assert_eq!(e["type"], "server_error");
    // Some provider is still available, so no Retry-After.
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
}

#[test]
fn breaker_opens_probes_once_and_closes() {
    let primary = Fake::new(Reply::error(500, "down"));
    let backup = Fake::ok("from backup");
    let cooldown = Duration::from_millis(400);
    let p = Proxy::start(&two(&primary, &backup, "{max_failures: 3, cooldown: 0.4}"));

    for i in 1..=3 {
        assert_eq!(p.chat("gpt-4").status, 200);
        assert_eq!(primary.count(), i);
    }
    // Open: the primary is skipped without a call.
    let r = p.chat("gpt-4");
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));
    assert_eq!(primary.count(), 3);

    // After the cooldown one probe goes through; it fails: open again.
    thread::sleep(cooldown + Duration::from_millis(50));
    assert_eq!(p.chat("gpt-4").header("x-llm-proxy-attempts"), Some("2"));
    assert_eq!(primary.count(), 4);
    assert_eq!(p.chat("gpt-4").header("x-llm-proxy-attempts"), Some("1"));
    assert_eq!(primary.count(), 4);

    // Next probe succeeds: closed, traffic returns to the primary.
    primary.set_default(Reply::completion("primary is back"));
    thread::sleep(cooldown + Duration::from_millis(50));
    for _ in 0..3 {
        let r = p.chat("gpt-4");
        assert_eq!(r.header("x-llm-proxy-provider"), Some("primary"));
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));
    }
    assert_eq!(primary.count(), 7);
}

#[test]
fn breaker_counts_every_concurrent_failure_and_allows_one_probe() {
    // 40 concurrent failures with max_failures 40: if any update were lost
    // the breaker would stay closed.
    let primary = Fake::new(Reply::error(503, "busy"));
    let backup = Fake::ok("from backup");
    let p = Arc::new(Proxy::start(&two(
        &primary,
        &backup,
        "{max_failures: 40, cooldown: 0.5}",
    )));
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let p = p.clone();
            thread::spawn(move || assert_eq!(p.chat("gpt-4").status, 200))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(primary.count(), 40);
    assert_eq!(p.chat("gpt-4").header("x-llm-proxy-attempts"), Some("1"));
    assert_eq!(primary.count(), 40);

    // Half-open: the probe is held at the upstream while 10 more requests
    // arrive; none of them may reach the primary.
    let release = Gate::new();
    primary.push(Reply::After(
        release.clone(),
        Box::new(Reply::completion("probe ok")),
    ));
    thread::sleep(Duration::from_millis(550));
    let probe = {
        let p = p.clone();
        thread::spawn(move || p.chat("gpt-4"))
    };
    primary.wait_for(41);
    let others: Vec<_> = (0..10)
        .map(|_| {
            let p = p.clone();
            thread::spawn(move || p.chat("gpt-4"))
        })
        .collect();
    for t in others {
        let r = t.join().unwrap();
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    }
    assert_eq!(primary.count(), 41);
    release.open();
    let r = probe.join().unwrap();
    assert_eq!(r.json()["choices"][0]["message"]["content"], "probe ok");
    // Closed again.
    primary.set_default(Reply::completion("primary"));
    assert_eq!(
        p.chat("gpt-4").header("x-llm-proxy-provider"),
        Some("primary")
    );
}

#[test]
fn retry_after_keeps_a_provider_out_and_503_carries_it() {
    let primary = Fake::new(Reply::completion("primary"));
    primary.push(Reply::error(429, "slow down").with_header("Retry-After", "1"));
    let backup = Fake::ok("backup");
    let p = Proxy::start(&two(&primary, &backup, "{max_failures: 3, cooldown: 600}"));
    assert_eq!(
        p.chat("gpt-4").header("x-llm-proxy-provider"),
        Some("backup")
    );
    // One 429 is below max_failures, but Retry-After keeps it out.
    let r = p.chat("gpt-4");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));
    assert_eq!(primary.count(), 1);
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        p.chat("gpt-4").header("x-llm-proxy-provider"),
        Some("primary")
    );

    // Everything cooling down: 503 with Retry-After, no upstream call.
    let only = Fake::new(Reply::error(500, "dead"));
    let p = Proxy::start(&one(&only, "failover: {max_failures: 1, cooldown: 30}"));
    assert_eq!(p.chat("gpt-4").status, 503);
    let r = p.chat("gpt-4");
    assert_eq!(r.status, 503);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&secs), "{secs}");
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("cooling down"), "{msg}");
    assert!(msg.contains("dead"), "last failure named: {msg}");
    assert_eq!(only.count(), 1);

    // A Retry-After longer than the cooldown is capped by it.
    let capped = Fake::new(Reply::error(429, "later").with_header("Retry-After", "3600"));
    let p = Proxy::start(&one(&capped, "failover: {max_failures: 5, cooldown: 2}"));
    p.chat("gpt-4");
    let r = p.chat("gpt-4");
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(secs <= 2, "{secs}");
}

#[test]
fn stream_events_arrive_as_upstream_sends_them() {
    // The upstream sends each event only after the client has seen the one
    // before: a proxy that buffered would deadlock (and time out) here.
    let gates: Vec<Gate> = (0..4).map(|_| Gate::new()).collect();
    let done = Gate::new();
    let fake = Fake::new(Reply::Stream {
        events: chunk_events(&["a", "b", "c", "d", "e"]),
        pace: Some(gates.clone()),
        end: End::DoneAfter(done.clone()),
    });
    let p = Proxy::start(&one(&fake, ""));
    let resp = p.open_stream("gpt-4");
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["x-llm-proxy-provider"], "only");
    let mut seen = 0;
    let start = Instant::now();
    let events = read_events(resp, |_| {
        if seen < gates.len() {
            gates[seen].open();
        } else {
            done.open();
        }
        seen += 1;
    });
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "events were held back"
    );
    assert_eq!(events.len(), 6, "{events:?}");
    let text: String = events[..5]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, "abcde");
    assert_eq!(events[5], "[DONE]");
    let sent = fake.requests()[0].json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["model"], "up-only");
}

#[test]
fn mid_stream_failure_becomes_an_error_event_without_done() {
    let primary = Fake::new(Reply::chunks(&["one", "two"], End::Cut));
    let backup = Fake::new(Reply::chunks(&["backup"], End::Done));
    let p = Proxy::start(&two(&primary, &backup, "{max_failures: 1, cooldown: 60}"));
    let events = read_events(p.open_stream("gpt-4"), |_| {});
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e != "[DONE]"));
    let err: Value = serde_json::from_str(&events[2]).unwrap();
    let e = &err["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "{err}");
    }
    assert!(e["message"].as_str().unwrap().contains("primary"), "{err}");
    // It counted: with max_failures 1 the next stream goes to the backup.
    let events = read_events(p.open_stream("gpt-4"), |_| {});
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(primary.count(), 1);
    assert_eq!(backup.count(), 1);
}

#[test]
fn malformed_event_mid_stream_is_an_error_event() {
    let mut events = chunk_events(&["ok"]);
    events.push("data: {this is not json\n\n".into());
    let fake = Fake::new(Reply::Stream {
        events,
        pace: None,
        end: End::Done,
    });
    let p = Proxy::start(&one(&fake, ""));
    let got = read_events(p.open_stream("gpt-4"), |_| {});
    assert_eq!(got.len(), 2, "{got:?}");
    let err: Value = serde_json::from_str(&got[1]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_stream_error");
}

#[test]
fn stream_fails_over_before_the_first_event() {
    for primary_reply in [
        Reply::error(503, "overloaded"),
        Reply::chunks(&[], End::Cut),
        Reply::raw(200, r#"{"error":{"message":"not a stream"}}"#),
    ] {
        let primary = Fake::new(primary_reply);
        let backup = Fake::new(Reply::chunks(&["from", " backup"], End::Done));
        let p = Proxy::start(&two(&primary, &backup, "{max_failures: 3}"));
        let resp = p.open_stream("gpt-4");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-llm-proxy-provider"], "backup");
        assert_eq!(resp.headers()["x-llm-proxy-attempts"], "2");
        let events = read_events(resp, |_| {});
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], "[DONE]");
    }
}

#[test]
fn stream_timeout_ends_a_stalled_stream_with_an_error() {
    let release = Gate::new();
    let fake = Fake::new(Reply::chunks(&["x"], End::HangUntil(release.clone())));
    let yaml = one(&fake, "").replace("timeout: 2", "timeout: 2\n    stream_timeout: 0.5");
    let p = Proxy::start(&yaml);
    let t = Instant::now();
    let events = read_events(p.open_stream("gpt-4"), |_| {});
    release.open();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(events.len(), 2, "{events:?}");
    let err: Value = serde_json::from_str(&events[1]).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{err}"
    );
}

#[test]
fn panics_answer_500_and_the_server_lives_on() {
    let fake = Fake::ok("fine");
    let hook: llm_proxy::Hook = Arc::new(|path: &str| {
        if path == "/v1/models/boom" {
            panic!("test-induced panic");
        }
    });
    let p = Proxy::start_with_hook(&one(&fake, "server: {workers: 2}"), Some(hook));
    for _ in 0..10 {
        let r = p.get("/v1/models/boom");
        assert_eq!(r.status, 500);
        assert_eq!(r.error()["type"], "server_error");
    }
    assert_eq!(p.get("/health").status, 200);
    assert_eq!(p.chat("gpt-4").status, 200);
}

#[test]
fn requests_beyond_the_worker_bound_wait_then_get_503() {
    let release = Gate::new();
    let fake = Fake::new(Reply::After(
        release.clone(),
        Box::new(Reply::completion("slow")),
    ));
    let p = Arc::new(Proxy::start(&one(
        &fake,
        "server: {workers: 1, queue_timeout: 0.3}",
    )));
    let first = {
        let p = p.clone();
        thread::spawn(move || p.chat("gpt-4"))
    };
    fake.wait_for(1);
    let t = Instant::now();
    let r = p.get("/health");
    assert_eq!(r.status, 503);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.error()["code"], "server_overloaded");
    assert!(r.header("retry-after").is_some());
    release.open();
    assert_eq!(first.join().unwrap().status, 200);
    // Capacity is back; a queued request that gets a worker in time is served.
    assert_eq!(p.get("/health").status, 200);
}

#[test]
fn oversized_bodies_are_refused_unread() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&one(&fake, "server: {max_body_bytes: 4096}"));
    // A declared length far beyond memory: answered at once, body never sent.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000000000\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    let mut r = BufReader::new(s);
    r.read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("request_too_large"), "{rest}");

    // A chunked body that grows past the limit.
    let big = format!(
        r#"{{"model":"gpt-4","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    let r = agent()
        .post(format!("{}/v1/chat/completions", p.url))
        .send(ureq::SendBody::from_reader(&mut big.as_bytes()))
        .unwrap();
    assert_eq!(r.status(), 413);
    // Under the limit is fine, and nothing reached the upstream before.
    assert_eq!(fake.count(), 0);
    assert_eq!(p.chat("gpt-4").status, 200);
}

#[test]
fn stalled_clients_are_dropped_after_the_client_timeout() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&one(&fake, "server: {client_timeout: 0.5}"));
    // Headers that never finish.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf); // returns when the proxy closes
    assert!(t.elapsed() < Duration::from_secs(5), "{}ms", ms(t));
    assert!(t.elapsed() >= Duration::from_millis(400));

    // A body that stops half-way.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{\"model\":",
    )
    .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(t.elapsed() < Duration::from_secs(5), "{}ms", ms(t));
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("body_read_error"), "{text}");
    // Still serving.
    assert_eq!(p.get("/health").status, 200);
}

/// Gap between the first two events of a stream whose upstream sends them in
/// one burst, on a client connection that just did a request/response (so the
/// client's TCP stack is in interactive mode and delays its ACKs).
fn first_gap(p: &Proxy, fake: &Fake) -> Duration {
    fake.push(Reply::Stream {
        events: vec![chunk_events(&["a", "b"]).concat()],
        pace: None,
        end: End::Done,
    });
    let client = agent();
    let health = client.get(format!("{}/health", p.url)).call().unwrap();
    assert_eq!(
        health.into_body().read_to_string().unwrap(),
        r#"{"status":"ok"}"#
    );
    let resp = client
        .post(format!("{}/v1/chat/completions", p.url))
        .send(chat_body("gpt-4", true))
        .unwrap();
    let mut first = None;
    let mut gap = None;
    let got = read_events(resp, |_| match first {
        None => first = Some(Instant::now()),
        Some(t) if gap.is_none() => gap = Some(t.elapsed()),
        _ => {}
    });
    assert_eq!(got.len(), 3);
    gap.unwrap()
}

#[test]
fn stream_events_are_not_held_back_by_nagle() {
    // The proxy writes the second event while the first is unacknowledged;
    // with Nagle on the client socket it would wait for the client's delayed
    // ACK (~40 ms). Best of three, so one scheduling hiccup cannot fail it.
    let fake = Fake::ok("x");
    let p = Proxy::start(&one(&fake, ""));
    let best = (0..3).map(|_| first_gap(&p, &fake)).min().unwrap();
    assert!(best < Duration::from_millis(20), "{best:?}");
}

#[test]
fn upstream_connections_are_reused() {
    let fake = Fake::ok("x");
    let p = Proxy::start(&one(&fake, ""));
    for _ in 0..20 {
        assert_eq!(p.chat("gpt-4").status, 200);
    }
    assert_eq!(fake.connections(), 1);
}
