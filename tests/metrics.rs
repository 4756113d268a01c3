//! `GET /metrics` against real sockets and fake upstreams: every metric's
//! value after a scripted sequence, tokens from streams (and the stream the
//! client sees, byte for byte), label values only from the config, the
//! access rule, and `promtool check metrics` on a scrape.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::*;

const KEY_ADMIN: &str = "fake-admin-uniform-victor-whiskey";
const KEY_USER: &str = "fake-user-xray-yankee-zulu";

/// The value of the series written exactly as `series` (name and labels).
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

fn expect(scrape: &str, series: &str, want: f64) {
    assert_eq!(value(scrape, series), Some(want), "{series}\n{scrape}");
}

/// A chunk as OpenAI sends it with `include_usage`: `"usage": null`.
fn with_null_usage(event: &str) -> String {
    let data = event.trim_end().strip_prefix("data: ").unwrap();
    let mut v: Value = serde_json::from_str(data).unwrap();
    v["usage"] = Value::Null;
    format!("data: {v}\n\n")
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    let v = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "upstream-model", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    });
    format!("data: {v}\n\n")
}

fn stream_reply(events: &[String]) -> Reply {
    Reply::sse(&events.concat(), End::Done)
}

#[test]
fn every_metric_after_two_successes_a_failover_a_breaker_opening_and_a_stream() {
    let primary = Fake::ok("from primary");
    let backup = Fake::ok("from backup");
    let p = primary_backup(
        &primary,
        &backup,
        "failover: {max_failures: 1, cooldown: 600}",
    );
    // Two successes (3 prompt and 2 completion tokens each).
    assert_eq!(p.chat("m").status, 200);
    assert_eq!(p.chat("m").status, 200);
    // A failover: primary fails, its breaker opens (max_failures 1).
    primary.push(Reply::error(500, "down"));
    let r = p.chat("m");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    // A stream with usage; the client did not ask for it.
    let parts = ["Hel", "lo"];
    let plain = chunk_events(&parts);
    let mut upstream: Vec<String> = plain.iter().map(|e| with_null_usage(e)).collect();
    upstream.push(usage_chunk(11, 7));
    backup.push(stream_reply(&upstream));
    let r = p.post("/v1/chat/completions", &chat_body("m", true));
    assert_eq!(r.status, 200);
    // Exactly OpenAI's stream without include_usage.
    assert_eq!(r.body, format!("{}data: [DONE]\n\n", plain.concat()));
    let asked = backup.requests().last().unwrap().json();
    assert_eq!(asked["stream_options"], json!({"include_usage": true}));
    // A made-up model creates no series.
    assert_eq!(p.chat("no-such-model").status, 404);

    let m = p.get("/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let s = &m.body;
    assert!(!s.contains("no-such-model"), "{s}");
    let req = |model: &str, code: &str| {
        format!(
            "llm_proxy_requests_total{{endpoint=\"chat\",model=\"{model}\",key=\"unknown\",code=\"{code}\"}}"
        )
    };
    expect(s, &req("m", "200"), 4.0);
    expect(s, &req("unknown", "404"), 1.0);
    expect(
        s,
        "llm_proxy_request_duration_seconds_count{endpoint=\"chat\",model=\"m\"}",
        4.0,
    );
    expect(
        s,
        "llm_proxy_request_duration_seconds_bucket{endpoint=\"chat\",model=\"m\",le=\"+Inf\"}",
        4.0,
    );
    let up = |prov: &str, outcome: &str| {
        format!(
            "llm_proxy_upstream_requests_total{{provider=\"{prov}\",model=\"m\",outcome=\"{outcome}\"}}"
        )
    };
    expect(s, &up("primary", "success"), 2.0);
    expect(s, &up("primary", "failover"), 1.0);
    expect(s, &up("backup", "success"), 2.0);
    assert_eq!(value(s, &up("backup", "failover")), None, "{s}");
    expect(
        s,
        "llm_proxy_upstream_duration_seconds_count{provider=\"primary\"}",
        3.0,
    );
    expect(
        s,
        "llm_proxy_upstream_duration_seconds_count{provider=\"backup\"}",
        2.0,
    );
    expect(
        s,
        "llm_proxy_failovers_total{model=\"m\",provider=\"primary\"}",
        1.0,
    );
    expect(s, "llm_proxy_provider_up{provider=\"primary\"}", 0.0);
    expect(s, "llm_proxy_provider_up{provider=\"backup\"}", 1.0);
    expect(
        s,
        "llm_proxy_provider_consecutive_failures{provider=\"primary\"}",
        1.0,
    );
    expect(
        s,
        "llm_proxy_provider_consecutive_failures{provider=\"backup\"}",
        0.0,
    );
    expect(
        s,
        "llm_proxy_breaker_opened_total{provider=\"primary\"}",
        1.0,
    );
    expect(
        s,
        "llm_proxy_breaker_opened_total{provider=\"backup\"}",
        0.0,
    );
    let tokens = |prov: &str, ty: &str| {
        format!(
            "llm_proxy_tokens_total{{provider=\"{prov}\",model=\"m\",key=\"unknown\",type=\"{ty}\"}}"
        )
    };
    expect(s, &tokens("primary", "prompt"), 6.0);
    expect(s, &tokens("primary", "completion"), 4.0);
    // The JSON answer (3 + 2) and the stream (11 + 7).
    expect(s, &tokens("backup", "prompt"), 14.0);
    expect(s, &tokens("backup", "completion"), 9.0);
    // The scrape itself is in flight.
    expect(s, "llm_proxy_in_flight_requests", 1.0);
    // Five requests ended before the scrape.
    expect(s, "llm_proxy_overhead_seconds_count", 5.0);
    assert!(
        value(s, "process_resident_memory_bytes").unwrap() > 1e6,
        "{s}"
    );
    assert!(value(s, "process_open_fds").unwrap() >= 3.0, "{s}");
    assert!(value(s, "process_cpu_seconds_total").unwrap() >= 0.0, "{s}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value(s, "process_start_time_seconds").unwrap();
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "{start} vs {now}"
    );

    // The scrape is counted once it has ended.
    let s = p.get("/metrics").body;
    expect(
        &s,
        "llm_proxy_requests_total{endpoint=\"metrics\",model=\"unknown\",key=\"unknown\",code=\"200\"}",
        1.0,
    );
}

#[test]
fn a_client_that_asked_for_usage_gets_the_upstream_stream_unchanged() {
    let up = Fake::ok("x");
    let p = Proxy::start(&config_for("m", &[("up", "openai", &up)], ""));
    let mut events: Vec<String> = chunk_events(&["a", "b"])
        .iter()
        .map(|e| with_null_usage(e))
        .collect();
    events.push(usage_chunk(5, 2));
    up.push(stream_reply(&events));
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = p.post("/v1/chat/completions", &body.to_string());
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("{}data: [DONE]\n\n", events.concat()));
    // The upstream got the client's body unchanged (bar the model id).
    let sent = up.requests()[0].json();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    let s = p.get("/metrics").body;
    expect(
        &s,
        "llm_proxy_tokens_total{provider=\"up\",model=\"m\",key=\"unknown\",type=\"prompt\"}",
        5.0,
    );
    expect(
        &s,
        "llm_proxy_tokens_total{provider=\"up\",model=\"m\",key=\"unknown\",type=\"completion\"}",
        2.0,
    );
}

#[test]
fn other_stream_options_are_kept_when_usage_is_added() {
    let up = Fake::ok("x");
    let p = Proxy::start(&config_for("m", &[("up", "openai", &up)], ""));
    up.push(stream_reply(&chunk_events(&["a"])));
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_obfuscation": false},
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = p.post("/v1/chat/completions", &body.to_string());
    assert_eq!(r.status, 200);
    // An upstream that sends no usage: the stream passes unchanged.
    assert_eq!(
        r.body,
        format!("{}data: [DONE]\n\n", chunk_events(&["a"]).concat())
    );
    assert_eq!(
        up.requests()[0].json()["stream_options"],
        json!({"include_obfuscation": false, "include_usage": true})
    );
}

#[test]
fn anthropic_streams_count_their_tokens() {
    let up = Fake::ok("x");
    let p = Proxy::start(&config_for("m", &[("claude", "anthropic", &up)], ""));
    let sse = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":13,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    up.push(Reply::sse(sse, End::Eof));
    let r = p.post("/v1/chat/completions", &chat_body("m", true));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("usage"), "{}", r.body);
    let s = p.get("/metrics").body;
    expect(
        &s,
        "llm_proxy_tokens_total{provider=\"claude\",model=\"m\",key=\"unknown\",type=\"prompt\"}",
        13.0,
    );
    expect(
        &s,
        "llm_proxy_tokens_total{provider=\"claude\",model=\"m\",key=\"unknown\",type=\"completion\"}",
        4.0,
    );
}

fn keyed(up: &Fake, extra: &str) -> String {
    format!(
        "{}auth:
  keys:
    - name: ops
      key: {KEY_ADMIN}
      admin: true
    - name: team
      key: {KEY_USER}
",
        config_for("m", &[("up", "openai", up)], extra)
    )
}

#[test]
fn with_auth_metrics_need_an_admin_key_and_count_by_key_name() {
    let up = Fake::ok("x");
    let p = Proxy::start(&keyed(&up, ""));
    let user = format!("Bearer {KEY_USER}");
    let admin = format!("Bearer {KEY_ADMIN}");
    let r = call(
        &p.url,
        "/v1/chat/completions",
        &[("authorization", &user)],
        Some(&chat_body("m", false)),
    );
    assert_eq!(r.status, 200);
    // No key: 401; a key without admin: 403; loopback changes nothing.
    assert_eq!(call(&p.url, "/metrics", &[], None).status, 401);
    let r = call(&p.url, "/metrics", &[("authorization", &user)], None);
    assert_eq!(r.status, 403);
    assert_eq!(r.error()["code"], "admin_required");
    assert!(!r.body.contains(KEY_USER), "{}", r.body);
    let r = call(&p.url, "/metrics", &[("authorization", &admin)], None);
    assert_eq!(r.status, 200);
    let s = &r.body;
    expect(
        s,
        "llm_proxy_requests_total{endpoint=\"chat\",model=\"m\",key=\"team\",code=\"200\"}",
        1.0,
    );
    expect(
        s,
        "llm_proxy_tokens_total{provider=\"up\",model=\"m\",key=\"team\",type=\"prompt\"}",
        3.0,
    );
    expect(
        s,
        "llm_proxy_requests_total{endpoint=\"metrics\",model=\"unknown\",key=\"team\",code=\"403\"}",
        1.0,
    );
    // Names, never keys.
    for secret in [KEY_ADMIN, KEY_USER, "sk-up-key-000001"] {
        assert!(leaked_fragments(s, secret, 8).is_empty(), "{s}");
    }
}

#[test]
fn without_auth_metrics_are_served_to_loopback_clients() {
    let up = Fake::ok("x");
    let p = Proxy::start(&config_for("m", &[("up", "openai", &up)], ""));
    assert_eq!(p.get("/metrics").status, 200);
    // POST is not a scrape.
    let r = p.post("/metrics", "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn counters_survive_a_reload_for_names_that_stay() {
    let up = Fake::ok("x");
    let cfg = ConfigFile::new(&config_for("m", &[("up", "openai", &up)], ""));
    let source = llm_proxy::lifecycle::Source {
        path: Some(cfg.path().into()),
        host: Some("127.0.0.1".into()),
        port: Some(0),
    };
    let handle = llm_proxy::start_from(source.load().unwrap(), None, source).unwrap();
    let url = format!("http://{}", handle.addr());
    assert_eq!(
        call(
            &url,
            "/v1/chat/completions",
            &[],
            Some(&chat_body("m", false))
        )
        .status,
        200
    );
    // Another model added: the old series keep their values.
    let mut yaml = config_for("m", &[("up", "openai", &up)], "");
    yaml.push_str("  m2:\n    providers:\n      up: {priority: 0}\n");
    cfg.write(&yaml);
    handle.reload().unwrap();
    let s = call(&url, "/metrics", &[], None).body;
    expect(
        &s,
        "llm_proxy_requests_total{endpoint=\"chat\",model=\"m\",key=\"unknown\",code=\"200\"}",
        1.0,
    );
    expect(
        &s,
        "llm_proxy_tokens_total{provider=\"up\",model=\"m\",key=\"unknown\",type=\"prompt\"}",
        3.0,
    );
    handle.shutdown();
}

#[test]
fn promtool_accepts_the_scrape() {
    let primary = Fake::ok("a");
    let backup = Fake::ok("b");
    let p = primary_backup(
        &primary,
        &backup,
        "failover: {max_failures: 1, cooldown: 600}",
    );
    assert_eq!(p.chat("m").status, 200);
    primary.push(Reply::error(500, "down"));
    assert_eq!(p.chat("m").status, 200);
    assert_eq!(p.chat("nope").status, 404);
    assert_eq!(p.get("/nope").status, 404);
    let scrape = p.get("/metrics").body;
    let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(scrape.as_bytes())?;
            c.wait_with_output()
        })
    else {
        eprintln!("skip: promtool not on PATH (scripts/test.sh installs it)");
        return;
    };
    assert!(
        out.status.success(),
        "promtool: {}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lint findings are printed even when the format is valid.
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn time_a_stream_waits_on_its_upstream_is_not_overhead() {
    let up = Fake::ok("x");
    let p = Proxy::start(&config_for("m", &[("up", "openai", &up)], ""));
    let gate = Gate::new();
    up.push(Reply::Stream {
        events: chunk_events(&["a", "b"]),
        pace: Some(vec![gate.clone()]),
        end: End::Done,
    });
    // The upstream holds its second event for 300 ms.
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            gate.open();
        })
    };
    let r = p.post("/v1/chat/completions", &chat_body("m", true));
    opener.join().unwrap();
    assert_eq!(r.status, 200);
    let s = p.get("/metrics").body;
    let total = value(
        &s,
        "llm_proxy_request_duration_seconds_sum{endpoint=\"chat\",model=\"m\"}",
    )
    .unwrap();
    let overhead = value(&s, "llm_proxy_overhead_seconds_sum").unwrap();
    assert!(total >= 0.25, "{total}");
    assert!(overhead < 0.1, "overhead {overhead} of {total}");
}
