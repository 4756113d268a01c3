//! What fuzzing found, end to end: the proxy in front of a fake upstream
//! that sends the input the fuzz target turned up, and what the client
//! gets. (The inputs themselves are in `fuzz/regressions/`; the pure
//! functions are covered in `tests/properties.rs`.)

mod support;

use serde_json::{Value, json};
use support::*;

const MAX: u64 = u64::MAX;

fn only_anthropic(fake: &Fake) -> String {
    format!(
        r#"
providers:
  claude:
    type: anthropic
    api_key: sk-ant-fuzz-key-0001
    base_url: {}
    timeout: 2
    stream_timeout: 5
models:
  claude:
    providers:
      claude: {{priority: 0, model_id: claude-x}}
"#,
        fake.root_url()
    )
}

/// Token counts at the top of u64 (fuzz/regressions/anthropic_response/):
/// the sums saturate. Before the fix a debug build answered 500 (the
/// handler panicked on the overflow) and a release build wrapped the
/// totals to small numbers.
#[test]
fn anthropic_token_counts_near_u64_max_saturate() {
    let fake = Fake::new(Reply::json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant",
               "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": MAX, "cache_read_input_tokens": 5, "output_tokens": 7}}),
    ));
    let p = Proxy::start(&only_anthropic(&fake));
    let r = p.chat("claude");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hi");
    assert_eq!(v["usage"]["prompt_tokens"], MAX, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"], MAX);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
}

/// The same in a stream's final usage chunk: the stream completes with
/// saturated totals and `[DONE]`.
#[test]
fn anthropic_stream_usage_near_u64_max_saturates() {
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_2",
            "content": [], "usage": {"input_tokens": MAX, "cache_creation_input_tokens": MAX,
            "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "hi"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": MAX}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let sse: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    let fake = Fake::new(Reply::sse(&sse, End::Eof));
    let p = Proxy::start(&only_anthropic(&fake));
    let body = json!({"model": "claude", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = agent()
        .post(format!("{}/v1/chat/completions", p.url))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("proxy answers");
    assert_eq!(resp.status(), 200);
    let events = read_events(resp, |_| {});
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert_eq!(delta_text(&events[..events.len() - 1]), "hi");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], MAX, "{usage}");
    assert_eq!(usage["usage"]["completion_tokens"], MAX);
    assert_eq!(usage["usage"]["total_tokens"], MAX);
}
