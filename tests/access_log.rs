//! The access log of the real binary: one line per request with the
//! fields the issue lists, JSON lines with `server.log_format: json`, no
//! own timestamp under journald, never a key or message content.

mod support;

use serde_json::Value;
use support::*;

const CLIENT_KEY: &str = "fake-client-log-juliet-kilo-lima";
const SECRET_CONTENT: &str = "the-secret-prompt-Zq81";

fn config(up: &Fake, extra: &str) -> String {
    format!(
        "{}auth:
  keys:
    - name: team-a
      key: {CLIENT_KEY}
",
        config_for("m", &[("up", "openai", up)], extra)
    )
}

fn body(stream: bool) -> String {
    serde_json::json!({"model": "m", "stream": stream,
        "messages": [{"role": "user", "content": SECRET_CONTENT}]})
    .to_string()
}

#[test]
fn json_format_writes_one_object_per_line_with_every_field() {
    let up = Fake::ok("answer");
    let cfg = ConfigFile::new(&config(&up, "server: {log_format: json}"));
    let mut bin = Bin::start(cfg.path(), &["--port", "0"]);
    let auth = format!("Bearer {CLIENT_KEY}");
    let r = call(
        &bin.url,
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-request-id", "log-json-1")],
        Some(&body(false)),
    );
    assert_eq!(r.status, 200);
    up.push(Reply::chunks(&["a", "b"], End::Done));
    let r = call(
        &bin.url,
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-request-id", "log-json-2")],
        Some(&body(true)),
    );
    assert_eq!(r.status, 200);
    let line = bin.wait_for("\"log-json-1\"");
    let v: Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(v["type"], "access");
    assert_eq!(v["level"], "info");
    assert_eq!(v["request_id"], "log-json-1");
    assert_eq!(v["key"], "team-a");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/v1/chat/completions");
    assert_eq!(v["model"], "m");
    assert_eq!(v["provider"], "up");
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["status"], 200);
    assert_eq!(v["stream"], Value::Null);
    assert_eq!(v["prompt_tokens"], 3);
    assert_eq!(v["completion_tokens"], 2);
    assert!(v["total_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert!(
        v["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    let ts = v["ts"].as_str().unwrap();
    // 2026-11-27T21:18:16.123Z
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');

    let line = bin.wait_for("\"log-json-2\"");
    let v: Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(v["stream"], "complete");
    assert!(v["first_byte_ms"].as_f64().is_some(), "{line}");
    assert!(
        v["first_byte_ms"].as_f64() <= v["total_ms"].as_f64(),
        "{line}"
    );

    bin.signal("TERM");
    assert_eq!(bin.wait_exit(std::time::Duration::from_secs(20)), Some(0));
    let log = bin.full_log();
    // Every line, not only the access lines, is one JSON object.
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["ts"].is_string() && v["level"].is_string(), "{l}");
    }
    // Debug level: each attempt's provider, status and timing.
    assert!(
        log.contains("log-json-1 attempt 1 provider up answered 200 after"),
        "{log}"
    );
    assert!(leaked_fragments(&log, CLIENT_KEY, 8).is_empty(), "{log}");
    assert!(!log.contains(SECRET_CONTENT), "{log}");
}

#[test]
fn text_format_has_an_rfc3339_timestamp_unless_under_journald() {
    let up = Fake::ok("answer");
    let cfg = ConfigFile::new(&config(&up, ""));
    let auth = format!("Bearer {CLIENT_KEY}");
    for journald in [false, true] {
        let env: &[(&str, &str)] = if journald {
            &[("JOURNAL_STREAM", "8:12345")]
        } else {
            &[]
        };
        let mut bin = Bin::start_with_env(cfg.path(), &["--port", "0"], env);
        let r = call(
            &bin.url,
            "/v1/chat/completions",
            &[("authorization", &auth), ("x-request-id", "log-text-1")],
            Some(&body(false)),
        );
        assert_eq!(r.status, 200);
        let line = bin.wait_for("log-text-1 POST");
        for part in [
            "[llm_proxy::access] log-text-1 POST /v1/chat/completions key=team-a model=m provider=up attempts=1 status=200 ",
            "prompt_tokens=3 completion_tokens=2 client=127.0.0.1:",
        ] {
            assert!(line.contains(part), "{part}: {line}");
        }
        if journald {
            assert!(line.starts_with("INFO  [llm_proxy::access]"), "{line}");
        } else {
            let (ts, rest) = line.split_once(' ').unwrap();
            assert_eq!(ts.len(), 24, "{line}");
            assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
            assert!(rest.starts_with("INFO  [llm_proxy::access]"), "{line}");
        }
        let log = bin.log_text();
        assert!(leaked_fragments(&log, CLIENT_KEY, 8).is_empty(), "{log}");
        assert!(!log.contains(SECRET_CONTENT), "{log}");
    }
}

#[test]
fn an_unknown_log_format_is_a_config_error() {
    let up = Fake::ok("x");
    let yaml = config_for("m", &[("up", "openai", &up)], "server: {log_format: xml}");
    let err = llm_proxy::Config::from_yaml(&yaml).unwrap_err().to_string();
    assert!(err.contains("server.log_format"), "{err}");
    assert!(err.contains("text, json"), "{err}");
    let yaml = config_for(
        "m",
        &[("up", "openai", &up)],
        "server: {log_format: json, metrics_public: true}",
    );
    let c = llm_proxy::Config::from_yaml(&yaml).unwrap();
    assert!(c.server.metrics_public);
}
