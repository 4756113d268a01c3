//! Issue 10 ("Hardening"), upstream errors: hostile `Retry-After` values,
//! 3xx answers, keys echoed in error bodies, and how many concurrent
//! requests a failing provider gets before its breaker opens.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::*;

/// `primary` (priority 0) then `backup` (1) for `gpt-4`.
fn two(primary: &Fake, backup: &Fake, failover: &str) -> String {
    format!(
        r#"
server: {{workers: 128}}
failover: {failover}
providers:
  primary:
    type: openai
    api_key: sk-primary-key-0001
    base_url: {}
    timeout: 5
  backup:
    type: openai
    api_key: sk-backup-key-0002
    base_url: {}
    timeout: 5
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

// ---------------------------------------------------------------------------
// Retry-After

/// Every odd value: the 429 fails over to the backup (no 500), and the
/// failure reaches the breaker (with max_failures 1 the next request skips
/// the primary).
#[test]
fn odd_retry_after_values_fail_over_and_count() {
    let values = [
        "99999999999999999999",
        "18446744073709551616",
        "1e20",
        "-1",
        "NaN",
        "inf",
        "1.5",
        "",
        "soon, please",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 99 Nov 1994 08:49:37 GMT",
    ];
    for v in values {
        let primary = Fake::new(Reply::error(429, "slow down").with_header("Retry-After", v));
        let backup = Fake::ok("from backup");
        let p = Proxy::start(&two(&primary, &backup, "{max_failures: 1, cooldown: 60}"));
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 200, "Retry-After {v:?}: {}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"), "{v:?}");
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"), "{v:?}");
        // Counted: the breaker is open, the primary is not called again.
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 200, "{v:?}");
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"), "{v:?}");
        assert_eq!(primary.count(), 1, "{v:?}");
    }
}

/// A delay too large for any integer type saturates, and is then capped at
/// the cooldown like any long Retry-After.
#[test]
fn huge_retry_after_saturates_then_is_capped_at_the_cooldown() {
    for v in ["99999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let only = Fake::new(Reply::error(429, "later").with_header("Retry-After", v));
        let p = Proxy::start(&one(&only, "{max_failures: 5, cooldown: 3}"));
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 503, "{v:?}: {}", r.body);
        // Below max_failures, but the Retry-After keeps it out: nothing is
        // tried, and the 503 says when to come back (at most the cooldown).
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 503, "{v:?}");
        assert_eq!(only.count(), 1, "{v:?}");
        let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((2..=3).contains(&secs), "{v:?}: {secs}");
    }
    // A date in the past keeps nothing out.
    let only = Fake::new(Reply::completion("ok"));
    only.push(
        Reply::error(429, "later").with_header("Retry-After", "Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    let p = Proxy::start(&one(&only, "{max_failures: 5, cooldown: 3}"));
    assert_eq!(p.chat("gpt-4").status, 503);
    assert_eq!(p.chat("gpt-4").status, 200);
    assert_eq!(only.count(), 2);
}

fn one(fake: &Fake, failover: &str) -> String {
    format!(
        r#"
failover: {failover}
providers:
  only:
    type: openai
    api_key: sk-only-key-0003
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

// ---------------------------------------------------------------------------
// 3xx

/// A redirect is not followed, not passed to the client, and not a success:
/// it fails over and counts against the provider.
#[test]
fn redirects_fail_over_and_count_for_json_and_streams() {
    for status in [301, 302, 303, 307, 308] {
        for stream in [false, true] {
            let primary = Fake::new(
                Reply::raw(status, "").with_header("Location", "https://example.invalid/v1"),
            );
            let backup = Fake::new(if stream {
                Reply::chunks(&["from ", "backup"], End::Done)
            } else {
                Reply::completion("from backup")
            });
            let p = Proxy::start(&two(&primary, &backup, "{max_failures: 1, cooldown: 60}"));
            let what = format!("{status} stream={stream}");
            let r = p.post("/v1/chat/completions", &chat_body("gpt-4", stream));
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"), "{what}");
            assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"), "{what}");
            assert!(r.body.contains("backup"), "{what}: {}", r.body);
            // Counted: max_failures 1 opened the breaker.
            let r = p.post("/v1/chat/completions", &chat_body("gpt-4", stream));
            assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"), "{what}");
            assert_eq!(primary.count(), 1, "{what}");
            // Not followed.
            assert_eq!(backup.count(), 2, "{what}");
        }
    }
}

/// The 503 names the status and where the upstream wanted to send us, with
/// the key taken out of the Location and a long Location cut.
#[test]
fn redirect_failure_names_status_and_location_without_the_key() {
    let only = Fake::new(Reply::raw(307, "").with_header(
        "Location",
        "https://api.example.invalid/v1/chat/completions?key=sk-only-key-0003",
    ));
    let p = Proxy::start(&one(&only, "{max_failures: 3, cooldown: 60}"));
    let r = p.chat("gpt-4");
    assert_eq!(r.status, 503, "{}", r.body);
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("307"), "{msg}");
    assert!(msg.contains("redirect"), "{msg}");
    assert!(
        msg.contains("https://api.example.invalid/v1/chat/completions?key=[redacted]"),
        "{msg}"
    );
    assert!(!r.body.contains("sk-only-key-0003"), "{}", r.body);

    let long = format!("https://example.invalid/{}", "a".repeat(10_000));
    only.set_default(Reply::raw(302, "").with_header("Location", &long));
    let r = p.chat("gpt-4");
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("302"), "{msg}");
    assert!(msg.contains("https://example.invalid/aaaa"), "{msg}");
    assert!(msg.len() < 1000, "{} bytes: {msg}", msg.len());

    only.set_default(Reply::raw(301, ""));
    let msg = p.chat("gpt-4").error()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("301") && msg.contains("no Location"), "{msg}");
}

// ---------------------------------------------------------------------------
// Keys in error bodies

/// The proxy binary with its stderr (at trace level) captured.
struct Binary {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    url: String,
    _config: tempfile::TempPath,
}

impl Binary {
    fn start(yaml: &str, env: &[(&str, &str)]) -> Binary {
        use std::io::{BufRead, BufReader, Write};
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        let config = f.into_temp_path();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llm-proxy"))
            .args(["--config", config.to_str().unwrap(), "--port", "0"])
            .env("LLM_PROXY_LOG", "trace")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.split_whitespace().next().unwrap_or("").to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the proxy logs where it listens");
        Binary {
            child,
            log,
            reader: Some(reader),
            url,
            _config: config,
        }
    }

    fn post(&self, body: &str) -> Resp {
        let r = agent()
            .post(format!("{}/v1/chat/completions", self.url))
            .header("content-type", "application/json")
            .send(body)
            .expect("proxy answers");
        let status = r.status().as_u16();
        let body = r.into_body().read_to_string().unwrap_or_default();
        Resp {
            status,
            headers: vec![],
            body,
        }
    }

    /// Stop the process; everything it logged.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every 8-character piece of `key`, and its masked echoes, absent from
/// `text`.
fn assert_no_trace_of(key: &str, text: &str, what: &str) {
    for i in 0..=key.len() - 8 {
        let piece = &key[i..i + 8];
        assert!(
            !text.contains(piece),
            "{what}: {piece:?} (offset {i} of the key) leaked:\n{text}"
        );
    }
    let last4 = &key[key.len() - 4..];
    for masked in [
        format!("*{last4}"),
        format!(".{last4}"),
        format!("…{last4}"),
    ] {
        assert!(
            !text.contains(&masked),
            "{what}: masked echo {masked:?} leaked:\n{text}"
        );
    }
}

const KEY_A: &str = "sk-proj-Alpha7Kq2Zx9Wm4Rt8Yp3Nd";
const KEY_B: &str = "sk-ant-Beta5Hn1Lv6Qc0Xs2Jd7FgUe";

/// Error bodies that carry `key` with its first character at byte `at` of
/// the text the proxy truncates, in each of the shapes upstreams use.
fn bodies(key: &str, at: usize) -> Vec<(&'static str, u16, String)> {
    let pad = |prefix: usize| "x".repeat(at.saturating_sub(prefix));
    let obj_key = r#"{"details":{""#.len() + "Bearer ".len();
    let html = "<html><body><h1>502 Bad Gateway</h1><p>";
    vec![
        (
            "JSON value",
            500,
            serde_json::json!({"error": {"message": format!("{}{key} was rejected", pad(0)), "type": "x"}})
                .to_string(),
        ),
        (
            "JSON object key (inside error)",
            500,
            serde_json::json!({"error": {"message": "rejected", "details": {format!("{}Bearer {key}", pad(7)): "rejected"}}})
                .to_string(),
        ),
        (
            "JSON object key",
            500,
            format!(r#"{{"details":{{"{}Bearer {key}":"rejected"}}}}"#, pad(obj_key)),
        ),
        ("plain text", 500, format!("{}{key} is not valid", pad(0))),
        (
            "HTML",
            502,
            format!("{html}{}{key}</p></body></html>", pad(html.len())),
        ),
        (
            "2xx that is not a completion",
            200,
            format!(r#"{{"unexpected": "{}{key}"}}"#, pad(r#"{"unexpected": ""#.len())),
        ),
    ]
}

/// Keys at every offset across each place the proxy cuts upstream text
/// (200 bytes for a 2xx body that is not a completion, 300 for an error
/// message), in JSON values, JSON object keys, plain text and HTML: no
/// 8-character piece of a key reaches the client's 400, the 503 after
/// failover, or the log.
#[test]
fn keys_never_leak_whole_or_in_part_through_error_bodies() {
    let alpha = Fake::new(Reply::completion("unused"));
    let beta = Fake::new(Reply::completion("unused"));
    let yaml = format!(
        r#"
failover: {{max_failures: 1000000, cooldown: 1}}
providers:
  alpha:
    type: openai
    api_key: ${{KEY_A}}
    base_url: {}
  beta:
    type: openai
    api_key: ${{KEY_B}}
    base_url: {}
models:
  gpt-4:
    providers:
      alpha: {{priority: 0}}
      beta: {{priority: 1}}
"#,
        alpha.base_url(),
        beta.base_url()
    );
    let bin = Binary::start(&yaml, &[("KEY_A", KEY_A), ("KEY_B", KEY_B)]);
    let n = KEY_A.len().max(KEY_B.len());
    let offsets: Vec<usize> = [0, 100]
        .into_iter()
        .chain((200 - n - 1)..=201)
        .chain((300 - n - 1)..=301)
        .collect();
    let mut requests = 0;
    for &at in &offsets {
        for ((what, status, a), (_, _, b)) in bodies(KEY_A, at).into_iter().zip(bodies(KEY_B, at)) {
            // Both fail: the 503 names beta's failure, the log both.
            alpha.push(Reply::raw(status, &a));
            beta.push(Reply::raw(status, &b));
            let r = bin.post(&chat_body("gpt-4", false));
            assert_eq!(r.status, 503, "{what} at {at}: {}", r.body);
            assert_no_trace_of(KEY_A, &r.body, &format!("503, {what} at {at}"));
            assert_no_trace_of(KEY_B, &r.body, &format!("503, {what} at {at}"));
            requests += 1;
            if status != 200 {
                // The same body as a 400 goes to the client as it is.
                alpha.push(Reply::raw(400, &a));
                let r = bin.post(&chat_body("gpt-4", false));
                assert_eq!(r.status, 400, "{what} at {at}: {}", r.body);
                assert_no_trace_of(KEY_A, &r.body, &format!("400, {what} at {at}"));
                requests += 1;
            }
        }
    }
    // Error events in streams: before the first content (fails over, so a
    // 503) and after it (an error event to the client).
    let error_event = |key: &str, at: usize| {
        let e =
            serde_json::json!({"error": {"message": format!("{}{key} rejected", "x".repeat(at))}});
        format!("data: {e}\n\n")
    };
    for at in (300 - n - 1)..=301 {
        let stream = |events: Vec<String>| Reply::Stream {
            events,
            pace: None,
            end: End::Done,
        };
        alpha.push(stream(vec![error_event(KEY_A, at)]));
        beta.push(stream(vec![error_event(KEY_B, at)]));
        let r = bin.post(&chat_body("gpt-4", true));
        assert_eq!(r.status, 503, "error event first, at {at}: {}", r.body);
        assert_no_trace_of(KEY_A, &r.body, &format!("stream 503 at {at}"));
        assert_no_trace_of(KEY_B, &r.body, &format!("stream 503 at {at}"));
        let mut events = chunk_events(&["partial"]);
        events.push(error_event(KEY_A, at));
        alpha.push(stream(events));
        let r = bin.post(&chat_body("gpt-4", true));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("upstream_stream_error"), "{}", r.body);
        assert_no_trace_of(KEY_A, &r.body, &format!("mid-stream error at {at}"));
        requests += 2;
    }

    // OpenAI's own masked echo, and a redirect to a URL with the key.
    let masked = format!(
        "Incorrect API key provided: {}{}{}. You can find your API key at https://platform.openai.com.",
        &KEY_A[..8],
        "*".repeat(40),
        &KEY_A[KEY_A.len() - 4..]
    );
    alpha.push(Reply::error(401, &masked));
    beta.push(Reply::error(
        401,
        &format!(
            "invalid x-api-key {}…{}",
            &KEY_B[..7],
            &KEY_B[KEY_B.len() - 4..]
        ),
    ));
    let r = bin.post(&chat_body("gpt-4", false));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("Incorrect API key provided") || r.body.contains("invalid x-api-key"));
    assert_no_trace_of(KEY_A, &r.body, "masked echo");
    assert_no_trace_of(KEY_B, &r.body, "masked echo");
    alpha.push(Reply::error(400, &masked));
    let r = bin.post(&chat_body("gpt-4", false));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("Incorrect API key provided"), "{}", r.body);
    assert_no_trace_of(KEY_A, &r.body, "masked echo, 400");
    alpha.push(
        Reply::raw(307, "")
            .with_header("Location", &format!("https://elsewhere.invalid/?k={KEY_A}")),
    );
    beta.push(Reply::error(500, "down"));
    assert_eq!(bin.post(&chat_body("gpt-4", false)).status, 503);
    requests += 3;

    // Every upstream call happened (nothing was skipped by a breaker).
    assert!(alpha.count() >= requests, "{} < {requests}", alpha.count());
    let log = bin.finish();
    assert!(log.contains("provider alpha failed"), "{log}");
    assert!(
        log.contains("307 redirect to https://elsewhere.invalid/?k=[redacted]"),
        "the WARN line names the Location:\n{log}"
    );
    assert_no_trace_of(KEY_A, &log, "log");
    assert_no_trace_of(KEY_B, &log, "log");
}

// ---------------------------------------------------------------------------
// Concurrency against a closed breaker

/// Send `n` chat requests at once; their answers.
fn burst(p: &Arc<Proxy>, n: usize) -> Vec<thread::JoinHandle<Resp>> {
    (0..n)
        .map(|_| {
            let p = p.clone();
            thread::spawn(move || p.chat("gpt-4"))
        })
        .collect()
}

/// 50 requests at once to a provider that takes long to fail (its answers
/// are held at a gate): only max_failures of them reach it, the other 47
/// go straight to the backup, and once the held ones fail the breaker is
/// open. Every request is answered by the backup.
#[test]
fn a_failing_provider_gets_at_most_max_failures_concurrent_requests() {
    let hold = Gate::new();
    let primary = Fake::new(Reply::After(
        hold.clone(),
        Box::new(Reply::error(500, "failed after a while")),
    ));
    let backup = Fake::ok("from backup");
    let p = Arc::new(Proxy::start(&two(
        &primary,
        &backup,
        "{max_failures: 3, cooldown: 60}",
    )));
    let answers = burst(&p, 50);
    primary.wait_for(3);
    // The 47 others did not wait for the 3 in flight.
    backup.wait_for(47);
    assert_eq!(primary.count(), 3);
    hold.open();
    for a in answers {
        let r = a.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    }
    assert_eq!(primary.count(), 3);
    assert_eq!(backup.count(), 50);
    // The three failures opened the breaker.
    let r = p.chat("gpt-4");
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));
    assert_eq!(primary.count(), 3);
}

/// The same bound once a provider that was healthy starts failing: after
/// its first failure, new requests are held back while max_failures are
/// pending.
#[test]
fn after_a_failure_new_requests_are_bounded_until_a_verdict() {
    let hold = Gate::new();
    let primary = Fake::new(Reply::After(
        hold.clone(),
        Box::new(Reply::error(503, "overloaded")),
    ));
    primary.push(Reply::completion("healthy"));
    primary.push(Reply::error(500, "first failure"));
    let backup = Fake::ok("from backup");
    let p = Arc::new(Proxy::start(&two(
        &primary,
        &backup,
        "{max_failures: 4, cooldown: 60}",
    )));
    assert_eq!(
        p.chat("gpt-4").header("x-llm-proxy-provider"),
        Some("primary")
    );
    assert_eq!(
        p.chat("gpt-4").header("x-llm-proxy-provider"),
        Some("backup")
    );
    let answers = burst(&p, 50);
    // One failure recorded: 3 more may be pending, no more.
    primary.wait_for(2 + 3);
    backup.wait_for(1 + 47);
    assert_eq!(primary.count(), 5);
    hold.open();
    for a in answers {
        assert_eq!(
            a.join().unwrap().header("x-llm-proxy-provider"),
            Some("backup")
        );
    }
    assert_eq!(primary.count(), 5);
    assert_eq!(p.chat("gpt-4").header("x-llm-proxy-attempts"), Some("1"));
}

/// A provider that has answered well is not throttled: 50 slow requests at
/// once all reach it.
#[test]
fn a_healthy_slow_provider_gets_all_concurrent_requests() {
    let hold = Gate::new();
    let primary = Fake::new(Reply::After(
        hold.clone(),
        Box::new(Reply::completion("slow but fine")),
    ));
    primary.push(Reply::completion("warm"));
    let backup = Fake::ok("from backup");
    let p = Arc::new(Proxy::start(&two(
        &primary,
        &backup,
        "{max_failures: 3, cooldown: 60}",
    )));
    assert_eq!(
        p.chat("gpt-4").header("x-llm-proxy-provider"),
        Some("primary")
    );
    let answers = burst(&p, 50);
    primary.wait_for(51);
    hold.open();
    for a in answers {
        let r = a.join().unwrap();
        assert_eq!(
            r.header("x-llm-proxy-provider"),
            Some("primary"),
            "{}",
            r.body
        );
    }
    assert_eq!(backup.count(), 0);
}

/// A provider with no verdict yet is held to max_failures only while
/// another provider can answer: a model's only provider gets every
/// request, slow or not, from the first.
#[test]
fn the_only_provider_is_never_refused_for_pending_requests() {
    let hold = Gate::new();
    let only = Fake::new(Reply::After(
        hold.clone(),
        Box::new(Reply::completion("slow but fine")),
    ));
    let p = Arc::new(Proxy::start(&format!(
        "server: {{workers: 128}}\n{}",
        one(&only, "{max_failures: 3, cooldown: 60}")
    )));
    let answers = burst(&p, 50);
    only.wait_for(50);
    hold.open();
    for a in answers {
        let r = a.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(only.count(), 50);
}

/// A provider held back for pending requests is still tried when every
/// other provider has failed: better a late answer than a 503.
#[test]
fn a_held_back_provider_is_tried_when_the_others_fail() {
    let hold = Gate::new();
    let primary = Fake::new(Reply::completion("primary, as a last resort"));
    for _ in 0..3 {
        primary.push(Reply::After(
            hold.clone(),
            Box::new(Reply::error(500, "slow failure")),
        ));
    }
    let backup = Fake::new(Reply::error(500, "backup down"));
    let p = Arc::new(Proxy::start(&two(
        &primary,
        &backup,
        "{max_failures: 3, cooldown: 60}",
    )));
    let held = burst(&p, 3);
    primary.wait_for(3);
    let r = p.chat("gpt-4");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("primary"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert_eq!(backup.count(), 1);
    hold.open();
    for h in held {
        assert_eq!(h.join().unwrap().status, 503);
    }
}

/// A stream counts as pending only until its first event: streams that
/// started well are no sign of a failing provider, even right after a
/// start. 10 long streams, each opened once the one before has started,
/// all go to the primary while every one of them is still open.
#[test]
fn started_streams_do_not_hold_back_the_next_ones() {
    use std::io::{BufRead, BufReader, Read};
    let end = Gate::new();
    let primary = Fake::new(Reply::chunks(
        &["long ", "answer"],
        End::DoneAfter(end.clone()),
    ));
    let backup = Fake::new(Reply::chunks(&["backup"], End::Done));
    let p = Proxy::start(&two(&primary, &backup, "{max_failures: 3, cooldown: 60}"));
    let mut open = Vec::new();
    for i in 0..10 {
        let r = p.open_stream("gpt-4");
        let provider = r.headers().get("x-llm-proxy-provider").cloned();
        assert_eq!(
            provider.as_ref().and_then(|v| v.to_str().ok()),
            Some("primary"),
            "stream {i}"
        );
        let mut body = BufReader::new(r.into_body().into_reader());
        let mut line = String::new();
        while !line.starts_with("data: ") {
            line.clear();
            assert!(body.read_line(&mut line).unwrap() > 0, "stream {i} ended");
        }
        assert!(line.contains("long "), "{line}");
        open.push(body);
    }
    end.open();
    for mut body in open {
        let mut rest = String::new();
        body.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("answer") && rest.contains("[DONE]"), "{rest}");
    }
    assert_eq!(primary.count(), 10);
    assert_eq!(backup.count(), 0);
}

/// Upstream text is cut before it reaches a message, an error event or a
/// log line, however long the upstream made it.
#[test]
fn long_upstream_messages_are_cut() {
    let long = "y".repeat(20_000);
    let primary = Fake::new(Reply::error(500, &long));
    let backup = Fake::new(Reply::raw(502, &long));
    let p = Proxy::start(&two(&primary, &backup, "{max_failures: 100, cooldown: 60}"));
    let r = p.chat("gpt-4");
    assert_eq!(r.status, 503);
    assert!(r.body.len() < 1000, "{} bytes", r.body.len());

    let e = serde_json::json!({"error": {"message": long}});
    let mut events = chunk_events(&["partial"]);
    events.push(format!("data: {e}\n\n"));
    primary.set_default(Reply::Stream {
        events,
        pace: None,
        end: End::Done,
    });
    let r = p.post("/v1/chat/completions", &chat_body("gpt-4", true));
    assert!(r.body.contains("upstream_stream_error"), "{}", r.body);
    assert!(r.body.len() < 1500, "{} bytes", r.body.len());
}
