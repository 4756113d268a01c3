//! `POST /v1/completions` (legacy text completions, as served by vLLM and
//! Ollama): openai and azure kinds, JSON and SSE, with chat's failover,
//! breakers, request ids and error shapes.

mod support;

use serde_json::{Value, json};
use support::endpoint::Case;
use support::spec::assert_valid;
use support::*;

fn answer(tag: &str) -> Value {
    json!({
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": "up-model",
        "choices": [{"text": format!("from {tag}"), "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    })
}

const CASE: Case = Case {
    path: "/v1/completions",
    required: "prompt",
    body: |model| json!({"model": model, "prompt": "Say this is a test", "max_tokens": 7}),
    answer,
    schema: "CreateCompletionResponse",
    openai_yaml: "",
    refused_body: r#"{"model":"m"}"#,
    azure_path: None,
};

/// Text completion chunks, as vLLM sends them.
fn text_events(parts: &[&str]) -> Vec<String> {
    parts
        .iter()
        .map(|t| {
            let c = json!({"id": "cmpl-1", "object": "text_completion", "created": 1_700_000_000,
                           "model": "up-model",
                           "choices": [{"text": t, "index": 0, "logprobs": null, "finish_reason": null}]});
            format!("data: {c}\n\n")
        })
        .collect()
}

/// A fake that streams these texts, then `end`.
fn text_stream(parts: &[&str], end: End) -> Fake {
    Fake::new(Reply::Stream {
        events: text_events(parts),
        pace: None,
        end,
    })
}

fn stream_body(model: &str) -> String {
    json!({"model": model, "prompt": "Say hi", "stream": true}).to_string()
}

fn open(p: &Proxy, model: &str) -> ureq::http::Response<ureq::Body> {
    agent()
        .post(format!("{}/v1/completions", p.url))
        .header("content-type", "application/json")
        .send(stream_body(model))
        .expect("proxy answers")
}

fn texts(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(String::from))
        .collect()
}

#[test]
fn completions_pass_through_with_only_model_replaced() {
    CASE.passes_through();
}

#[test]
fn completions_azure_path() {
    CASE.azure_path();
}

#[test]
fn completions_fail_over_on_500() {
    CASE.fails_over();
}

#[test]
fn completions_fail_over_on_a_body_without_choices() {
    CASE.wrong_shape_fails_over();
}

#[test]
fn completions_breaker_skips_a_failed_provider() {
    CASE.breaker_skips();
}

#[test]
fn completions_all_failed_is_503_without_keys() {
    CASE.all_fail();
}

#[test]
fn completions_upstream_400_passes_through() {
    CASE.upstream_400_passes_through();
}

#[test]
fn completions_refusals_in_the_openai_shape() {
    CASE.refusals();
}

#[test]
fn completions_skip_anthropic_without_touching_its_breaker() {
    CASE.anthropic_skipped();
}

#[test]
fn completions_stream_relays_events_and_done() {
    let fake = text_stream(&["Hel", "lo"], End::Done);
    let p = Proxy::start(&config_for("m", &[("up", "openai", &fake)], ""));
    let resp = open(&p, "m");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    assert!(resp.headers().get("date").is_some());
    let events = read_events(resp, |_| {});
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(texts(&events), "Hello");
    assert_eq!(events[2], "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    // (The spec has no schema for completion chunks: `finish_reason` is
    // null until the last, which CreateCompletionResponse does not allow.)
    assert_eq!(first["object"], "text_completion");
    let got = &fake.requests()[0];
    assert_eq!(got.path, "/v1/completions");
    assert_eq!(got.header("accept"), Some("text/event-stream"));
    assert_eq!(got.json()["model"], "up-up");
    assert_eq!(got.json()["stream"], true);
}

#[test]
fn completions_stream_fails_over_before_commit() {
    let primary = Fake::new(Reply::error(502, "bad gateway"));
    let backup = text_stream(&["from backup"], End::Done);
    let p = primary_backup(&primary, &backup, "");
    let resp = open(&p, "m");
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "backup"
    );
    let events = read_events(resp, |_| {});
    assert_eq!(texts(&events), "from backup");
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[test]
fn completions_stream_mid_stream_error_is_an_error_event_without_done() {
    let primary = text_stream(&["partial"], End::Cut);
    let backup = Fake::new(Reply::json(200, answer("backup")));
    let p = primary_backup(
        &primary,
        &backup,
        "failover: {max_failures: 1, cooldown: 60}",
    );
    let events = read_events(open(&p, "m"), |_| {});
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(texts(&events[..1]), "partial");
    let err: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_stream_error");
    assert_eq!(err["error"]["type"], "server_error");
    assert_valid("ErrorResponse", &err);
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert!(!events[1].contains("sk-primary-key"), "{}", events[1]);
    // The failure counted: the next request skips the primary.
    let r = p.post("/v1/completions", &(CASE.body)("m").to_string());
    assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    assert_eq!(primary.count(), 1);
}

#[test]
fn completions_stream_reuses_the_upstream_connection() {
    let fake = text_stream(&["a", "b"], End::Done);
    let p = Proxy::start(&config_for("m", &[("up", "openai", &fake)], ""));
    for _ in 0..5 {
        let events = read_events(open(&p, "m"), |_| {});
        assert_eq!(events.last().unwrap(), "[DONE]");
    }
    assert_eq!(fake.count(), 5);
    assert_eq!(
        fake.connections(),
        1,
        "every stream finished its upstream body"
    );
}
