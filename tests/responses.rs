//! `/v1/responses` end to end, through the proxy and fake upstreams of every
//! kind: a native provider (`openai` with `responses: native`, and Azure),
//! a translating `openai` provider and an Anthropic one. Every answer and
//! every event is validated against the spec, each event by the schema of
//! its own `type`. Also: failover across kinds before the first output
//! event, refusals that never reach an upstream nor its breaker, `store`,
//! metrics, a drain during a stream, and the mock's own answers.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use support::endpoint::Case;
use support::spec::assert_valid;
use support::*;

const ANTHROPIC_TEXT: &str = include_str!("fixtures/anthropic/text.json");
const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic/stream_text.sse");
const ANTHROPIC_TOOL_STREAM: &str = include_str!("fixtures/anthropic/stream_tool_use.sse");
const ANTHROPIC_ERROR_STREAM: &str = include_str!("fixtures/anthropic/stream_error.sse");

// ---------------------------------------------------------------------------
// Native upstream answers, as OpenAI sends them.

/// A complete, spec-valid Response whose text is `from {tag}`.
fn response_body(tag: &str) -> Value {
    let mut r = in_progress(tag);
    r["status"] = json!("completed");
    r["completed_at"] = json!(1_700_000_001);
    r["output"] = json!([{
        "type": "message", "id": format!("msg_{tag}"), "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": format!("from {tag}"), "annotations": [], "logprobs": []}],
    }]);
    r["usage"] = json!({
        "input_tokens": 4, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 6,
    });
    r
}

/// The Response of `response.created` / `response.in_progress`.
fn in_progress(tag: &str) -> Value {
    json!({
        "id": format!("resp_{tag}"), "object": "response", "created_at": 1_700_000_000,
        "status": "in_progress", "completed_at": null, "error": null, "incomplete_details": null,
        "instructions": null, "model": "gpt-4.1", "output": [], "tools": [],
        "tool_choice": "auto", "parallel_tool_calls": true, "metadata": {},
        "temperature": 1.0, "top_p": 1.0, "max_output_tokens": null,
        "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
        "text": {"format": {"type": "text"}}, "truncation": "disabled", "store": true,
        "background": false,
    })
}

/// `event:` + `data:` frames with `sequence_number` 0, 1, 2…
fn frames(events: Vec<Value>) -> Vec<String> {
    events
        .into_iter()
        .enumerate()
        .map(|(seq, mut e)| {
            e["sequence_number"] = json!(seq);
            format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())
        })
        .collect()
}

fn prelude(tag: &str) -> Vec<Value> {
    vec![
        json!({"type": "response.created", "response": in_progress(tag)}),
        json!({"type": "response.in_progress", "response": in_progress(tag)}),
    ]
}

/// A native text stream: `from ` + `{tag}`, in the spec's order.
fn native_events(tag: &str) -> Vec<String> {
    let item = |status: &str, content: Value| {
        json!({"type": "message", "id": format!("msg_{tag}"), "status": status,
               "role": "assistant", "content": content})
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    let at = |mut e: Value| {
        e["item_id"] = json!(format!("msg_{tag}"));
        e["output_index"] = json!(0);
        e["content_index"] = json!(0);
        e
    };
    let text = format!("from {tag}");
    let mut events = prelude(tag);
    events.extend([
        json!({"type": "response.output_item.added", "output_index": 0, "item": item("in_progress", json!([]))}),
        at(json!({"type": "response.content_part.added", "part": part("")})),
        at(json!({"type": "response.output_text.delta", "delta": "from ", "logprobs": []})),
        at(json!({"type": "response.output_text.delta", "delta": tag, "logprobs": []})),
        at(json!({"type": "response.output_text.done", "text": text, "logprobs": []})),
        at(json!({"type": "response.content_part.done", "part": part(&text)})),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": item("completed", json!([part(&text)]))}),
        json!({"type": "response.completed", "response": response_body(tag)}),
    ]);
    frames(events)
}

/// The prelude, then an in-band `error` (OpenAI's `insufficient_quota`).
fn native_error_first(code: &str) -> Vec<String> {
    let mut events = prelude("quota");
    events.push(
        json!({"type": "error", "code": code, "message": "You exceeded your current quota.",
                       "param": null}),
    );
    frames(events)
}

/// The prelude, then `response.failed`.
fn native_failed_first() -> Vec<String> {
    let mut failed = in_progress("failed");
    failed["status"] = json!("failed");
    failed["error"] = json!({"code": "server_error", "message": "The model had an error."});
    let mut events = prelude("failed");
    events.push(json!({"type": "response.failed", "response": failed}));
    frames(events)
}

fn native_stream(events: Vec<String>) -> Reply {
    Reply::Stream {
        events,
        pace: None,
        end: End::Eof,
    }
}

// ---------------------------------------------------------------------------
// Chat upstream answers (the translating openai provider).

/// Content deltas, the finish chunk and the usage chunk.
fn chat_events(parts: &[&str], usage: (u64, u64)) -> Vec<String> {
    let mut events = chunk_events(parts);
    let chunk = |choices: Value, usage: Value| {
        let c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                       "created": 1_700_000_000, "model": "upstream-model",
                       "choices": choices, "usage": usage});
        format!("data: {c}\n\n")
    };
    events.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        Value::Null,
    ));
    events.push(chunk(
        json!([]),
        json!({"prompt_tokens": usage.0, "completion_tokens": usage.1,
               "total_tokens": usage.0 + usage.1}),
    ));
    events
}

fn chat_stream(parts: &[&str], usage: (u64, u64)) -> Reply {
    Reply::Stream {
        events: chat_events(parts, usage),
        pace: None,
        end: End::Done,
    }
}

// ---------------------------------------------------------------------------
// Configs and requests.

/// A config serving `m` from `providers` (name, kind, fake) in priority
/// order. Kinds: `native` and `translate` (openai with that `responses:`
/// mode), `anthropic`, `azure`. Keys are `sk-{name}-key-000001`.
fn config(providers: &[(&str, &str, &Fake)], extra: &str) -> String {
    let mut yaml = format!("{extra}\nproviders:\n");
    for (name, kind, fake) in providers {
        let (ty, base, more) = match *kind {
            "native" => ("openai", fake.base_url(), "    responses: native\n"),
            "translate" => ("openai", fake.base_url(), "    responses: translate\n"),
            "anthropic" => ("anthropic", fake.root_url(), ""),
            "azure" => ("azure", fake.root_url(), "    api_version: 2024-10-21\n"),
            other => panic!("no kind {other}"),
        };
        yaml.push_str(&format!(
            "  {name}:\n    type: {ty}\n    api_key: sk-{name}-key-000001\n    base_url: {base}\n    timeout: 2\n    stream_timeout: 5\n{more}"
        ));
    }
    yaml.push_str("models:\n  m:\n    providers:\n");
    for (i, (name, _, _)) in providers.iter().enumerate() {
        yaml.push_str(&format!(
            "      {name}: {{priority: {i}, model_id: up-{name}}}\n"
        ));
    }
    yaml
}

fn request(stream: bool) -> Value {
    json!({"model": "m", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 50,
           "stream": stream})
}

fn open(p: &Proxy, body: &Value) -> ureq::http::Response<ureq::Body> {
    agent()
        .post(format!("{}/v1/responses", p.url))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("proxy answers")
}

/// One event as the client got it.
#[derive(Debug)]
struct Event {
    /// The `event:` line's name.
    name: String,
    /// The `data:` payload, exactly as sent.
    raw: String,
    data: Value,
}

/// Reads a Responses stream to its end. `[DONE]` would fail the JSON parse:
/// OpenAI does not send it on Responses streams, nor may the proxy.
fn read_stream(resp: ureq::http::Response<ureq::Body>) -> Vec<Event> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let data: Value =
                serde_json::from_str(d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}"));
            out.push(Event {
                name: std::mem::take(&mut name),
                raw: d.to_string(),
                data,
            });
        }
    }
    out
}

/// Every event valid by its own schema and by the union; the `event:` line
/// matches `type`; sequence numbers strictly increase; exactly one prelude,
/// first; one `response.id` across the lifecycle events. Returns the types.
fn assert_stream_valid(events: &[Event]) -> Vec<String> {
    assert!(!events.is_empty(), "an empty stream");
    let mut types = Vec::new();
    let mut ids = Vec::new();
    for e in events {
        let ty = e.data["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no type: {}", e.raw));
        assert_eq!(e.name, ty, "event line vs type: {}", e.raw);
        support::spec::assert_event_valid(&e.data);
        if let Some(id) = e.data["response"]["id"].as_str() {
            ids.push(id.to_string());
        }
        types.push(ty.to_string());
    }
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.data["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers {seqs:?}"
    );
    assert_eq!(types[0], "response.created", "{types:?}");
    assert_eq!(types[1], "response.in_progress", "{types:?}");
    let created = types.iter().filter(|t| *t == "response.created").count();
    assert_eq!(created, 1, "{types:?}");
    ids.dedup();
    assert_eq!(ids.len(), 1, "lifecycle ids {ids:?}");
    types
}

/// The spec order of one text item, repeated event types collapsed.
const TEXT_ORDER: [&str; 9] = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
];

fn collapsed(types: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = types.iter().map(String::as_str).collect();
    out.dedup();
    out
}

fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.data["type"] == "response.output_text.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect()
}

/// A text stream in spec order whose deltas, `output_text.done` and final
/// Response all say `text`. Returns the final Response.
fn assert_text_stream(events: &[Event], text: &str) -> Value {
    let types = assert_stream_valid(events);
    assert_eq!(collapsed(&types), TEXT_ORDER, "{types:?}");
    assert_eq!(text_of(events), text);
    let done = events
        .iter()
        .find(|e| e.data["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done.data["text"], text);
    let last = &events.last().unwrap().data["response"];
    assert_eq!(last["status"], "completed");
    assert_eq!(last["output"][0]["content"][0]["text"], text);
    assert_valid("Response", last);
    last.clone()
}

fn provider(p: &Proxy, name: &str) -> Value {
    let r = p.get("/admin/providers");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no provider {name}"))
        .clone()
}

fn assert_untouched(p: &Proxy, name: &str) {
    let v = provider(p, name);
    assert_eq!(v["state"], "closed", "{v}");
    assert_eq!(v["consecutive_failures"], 0, "{v}");
    assert_eq!(v["failures"], 0, "{v}");
}

// ---------------------------------------------------------------------------
// The shared endpoint cases, on a native provider.

const CASE: Case = Case {
    path: "/v1/responses",
    required: "input",
    body: |model| json!({"model": model, "input": [{"role": "user", "content": "hi"}], "store": false}),
    answer: response_body,
    schema: "Response",
    openai_yaml: "    responses: native\n",
    refused_body: r#"{"model":"m","input":5}"#,
    azure_path: Some("/openai/v1/responses"),
};

#[test]
fn native_json_passes_through_with_only_model_replaced() {
    CASE.passes_through();
}

#[test]
fn native_azure_uses_the_v1_path_and_the_deployment_in_the_body() {
    CASE.azure_path();
}

#[test]
fn native_fails_over_on_500() {
    CASE.fails_over();
}

#[test]
fn native_fails_over_on_a_body_that_is_not_a_response() {
    CASE.wrong_shape_fails_over();
}

#[test]
fn native_breaker_skips_a_failed_provider() {
    CASE.breaker_skips();
}

#[test]
fn native_all_failed_is_503_without_keys() {
    CASE.all_fail();
}

#[test]
fn native_upstream_400_passes_through() {
    CASE.upstream_400_passes_through();
}

#[test]
fn refusals_in_the_openai_shape() {
    CASE.refusals();
}

// ---------------------------------------------------------------------------
// One provider kind at a time: JSON and stream.

#[test]
fn native_stream_passes_every_event_through_unchanged() {
    let upstream = native_events("native");
    let fake = Fake::new(native_stream(upstream.clone()));
    let p = Proxy::start(&config(&[("up", "native", &fake)], ""));
    let resp = open(&p, &request(true));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-llm-proxy-provider").unwrap(), "up");
    let events = read_stream(resp);
    assert_text_stream(&events, "from native");
    let sent: Vec<String> = upstream
        .iter()
        .map(|f| f.lines().nth(1).unwrap()["data: ".len()..].to_string())
        .collect();
    let got: Vec<String> = events.iter().map(|e| e.raw.clone()).collect();
    assert_eq!(got, sent, "every payload byte for byte");
    let req = &fake.requests()[0];
    assert_eq!(req.path, "/v1/responses");
    let mut want = request(true);
    want["model"] = json!("up-up");
    assert_eq!(req.json(), want, "only model replaced, no stream_options");
}

#[test]
fn translated_openai_json_is_a_response_from_a_chat_completion() {
    let fake = Fake::new(Reply::completion("from chat"));
    let p = Proxy::start(&config(&[("up", "translate", &fake)], ""));
    let r = p.post("/v1/responses", &request(false).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_valid("Response", &v);
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "m");
    assert_eq!(v["instructions"], "Be brief.");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], "from chat");
    assert_eq!(v["usage"]["input_tokens"], 3);
    assert_eq!(v["usage"]["output_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 5);
    let req = &fake.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    let sent = req.json();
    assert_eq!(sent["model"], "up-up");
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(sent["max_tokens"], 50);
    for field in ["input", "instructions", "max_output_tokens"] {
        assert!(sent.get(field).is_none(), "{field} sent upstream: {sent}");
    }
}

#[test]
fn translated_openai_stream_is_responses_events_in_spec_order() {
    let fake = Fake::new(chat_stream(&["from ", "chat"], (5, 7)));
    let p = Proxy::start(&config(&[("up", "translate", &fake)], ""));
    let resp = open(&p, &request(true));
    assert_eq!(resp.status(), 200);
    let events = read_stream(resp);
    let done = assert_text_stream(&events, "from chat");
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(done["usage"]["output_tokens"], 7);
    let sent = fake.requests()[0].json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[test]
fn anthropic_json_is_a_response_from_a_message() {
    let fake = Fake::new(Reply::raw(200, ANTHROPIC_TEXT));
    let p = Proxy::start(&config(&[("claude", "anthropic", &fake)], ""));
    let r = p.post("/v1/responses", &request(false).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_valid("Response", &v);
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "Hello! How can I help you today?"
    );
    assert_eq!(v["usage"]["input_tokens"], 12);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("claude"));
    let req = &fake.requests()[0];
    assert_eq!(req.path, "/v1/messages");
    let sent = req.json();
    assert_eq!(sent["model"], "up-claude");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["messages"][0]["role"], "user");
}

#[test]
fn anthropic_stream_is_responses_events_in_spec_order() {
    let fake = Fake::new(Reply::sse(ANTHROPIC_STREAM, End::Eof));
    let p = Proxy::start(&config(&[("claude", "anthropic", &fake)], ""));
    let resp = open(&p, &request(true));
    assert_eq!(resp.status(), 200);
    let events = read_stream(resp);
    let done = assert_text_stream(&events, "Hello! How can I help?");
    assert_eq!(done["usage"]["input_tokens"], 25);
    assert_eq!(done["usage"]["output_tokens"], 15);
    assert_eq!(fake.requests()[0].json()["stream"], true);
}

#[test]
fn anthropic_streamed_tool_call_is_a_function_call_item() {
    let fake = Fake::new(Reply::sse(ANTHROPIC_TOOL_STREAM, End::Eof));
    let p = Proxy::start(&config(&[("claude", "anthropic", &fake)], ""));
    let mut body = request(true);
    body["tools"] = json!([{"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]);
    let events = read_stream(open(&p, &body));
    let types = assert_stream_valid(&events);
    assert_eq!(types.last().unwrap(), "response.completed");
    // The fixture: text, then two tool calls (get_weather, get_time).
    let done: Vec<&Event> = events
        .iter()
        .filter(|e| e.data["type"] == "response.function_call_arguments.done")
        .collect();
    assert_eq!(done.len(), 2, "{types:?}");
    let output = events.last().unwrap().data["response"]["output"].clone();
    // The text before the calls is its own message item, first.
    assert_eq!(output[0]["type"], "message");
    let calls = &output.as_array().unwrap()[1..];
    for ((d, call), (name, call_id)) in done.iter().zip(calls).zip([
        ("get_weather", "toolu_01T1x1fJ34qAmk2tNTrN7Up6"),
        ("get_time", "toolu_01HJk2Xq3bVkPyDtCYqg9yEW"),
    ]) {
        let item_id = &d.data["item_id"];
        let deltas: String = events
            .iter()
            .filter(|e| {
                e.data["type"] == "response.function_call_arguments.delta"
                    && &e.data["item_id"] == item_id
            })
            .map(|e| e.data["delta"].as_str().unwrap())
            .collect();
        assert_eq!(d.data["name"], name);
        assert_eq!(d.data["arguments"], deltas);
        let args: Value = serde_json::from_str(&deltas).expect("JSON arguments");
        assert!(args.is_object(), "{args}");
        assert_eq!(call["type"], "function_call");
        assert_eq!(&call["id"], item_id);
        assert_eq!(call["name"], name);
        assert_eq!(call["call_id"], call_id);
        assert_eq!(call["arguments"], deltas);
    }
}

// ---------------------------------------------------------------------------
// Failover across kinds before the first output event.

#[test]
fn a_native_in_band_error_before_output_fails_over_to_anthropic() {
    let native = Fake::new(native_stream(native_error_first("insufficient_quota")));
    let claude = Fake::new(Reply::sse(ANTHROPIC_STREAM, End::Eof));
    let p = Proxy::start(&config(
        &[
            ("native", "native", &native),
            ("claude", "anthropic", &claude),
        ],
        "failover: {max_failures: 5}",
    ));
    let resp = open(&p, &request(true));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "claude"
    );
    assert_eq!(resp.headers().get("x-llm-proxy-attempts").unwrap(), "2");
    let events = read_stream(resp);
    // The native prelude was held and dropped: only Anthropic's reached us.
    assert_text_stream(&events, "Hello! How can I help?");
    assert!(
        !events.iter().any(|e| e.raw.contains("resp_quota")),
        "{events:?}"
    );
    assert_eq!((native.count(), claude.count()), (1, 1));
    assert_eq!(provider(&p, "native")["consecutive_failures"], 1);
}

#[test]
fn a_native_response_failed_before_output_fails_over_to_translate() {
    let native = Fake::new(native_stream(native_failed_first()));
    let chat = Fake::new(chat_stream(&["from ", "chat"], (1, 2)));
    let p = Proxy::start(&config(
        &[("native", "native", &native), ("chat", "translate", &chat)],
        "",
    ));
    let resp = open(&p, &request(true));
    assert_eq!(resp.headers().get("x-llm-proxy-provider").unwrap(), "chat");
    assert_eq!(resp.headers().get("x-llm-proxy-attempts").unwrap(), "2");
    assert_text_stream(&read_stream(resp), "from chat");
}

#[test]
fn an_anthropic_error_before_content_fails_over_to_native() {
    let claude = Fake::new(Reply::sse(ANTHROPIC_ERROR_STREAM, End::Eof));
    let native = Fake::new(native_stream(native_events("native")));
    let p = Proxy::start(&config(
        &[
            ("claude", "anthropic", &claude),
            ("native", "native", &native),
        ],
        "",
    ));
    let resp = open(&p, &request(true));
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "native"
    );
    assert_eq!(resp.headers().get("x-llm-proxy-attempts").unwrap(), "2");
    let events = read_stream(resp);
    assert_text_stream(&events, "from native");
    assert_eq!(events[0].data["response"]["id"], "resp_native");
}

#[test]
fn json_fails_over_from_native_429_to_anthropic() {
    let native = Fake::new(Reply::json(
        429,
        json!({"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                         "param": null, "code": "insufficient_quota"}}),
    ));
    let claude = Fake::new(Reply::raw(200, ANTHROPIC_TEXT));
    let p = Proxy::start(&config(
        &[
            ("native", "native", &native),
            ("claude", "anthropic", &claude),
        ],
        "",
    ));
    let r = p.post("/v1/responses", &request(false).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("claude"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert_valid("Response", &r.json());
}

// ---------------------------------------------------------------------------
// After the first output event: an honest end, never a silent one.

#[test]
fn a_translated_cut_after_output_ends_with_failed_and_error() {
    let fake = Fake::new(Reply::chunks(&["half ", "an answer"], End::Cut));
    let p = Proxy::start(&config(
        &[("up", "translate", &fake)],
        "failover: {max_failures: 5}",
    ));
    let events = read_stream(open(&p, &request(true)));
    let types = assert_stream_valid(&events);
    let n = types.len();
    assert_eq!(types[n - 2..], ["response.failed", "error"], "{types:?}");
    let failed = &events[n - 2].data["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["id"], events[0].data["response"]["id"]);
    let error = &events[n - 1].data;
    assert!(error["message"].is_string(), "{error}");
    // The nested error makes the Python SDK raise (design §3.5).
    assert!(error["error"]["message"].is_string(), "{error}");
    assert!(!types.iter().any(|t| t == "response.completed"));
    assert_eq!(provider(&p, "up")["consecutive_failures"], 1);
}

#[test]
fn a_drain_during_a_stream_ends_it_with_failed_and_error() {
    let release = Gate::new();
    let fake = Fake::new(Reply::chunks(
        &["before ", "the drain"],
        End::HangUntil(release.clone()),
    ));
    // The drain's deadline is seen at a keep-alive tick (a tenth of
    // stream_idle_timeout), well before stream_timeout would end it.
    let p = Proxy::start(
        &config(
            &[("up", "translate", &fake)],
            "server: {shutdown_timeout: 1}",
        )
        .replace(
            "    stream_timeout: 5\n",
            "    stream_timeout: 30\n    stream_idle_timeout: 5\n",
        ),
    );
    let (tx, rx) = mpsc::channel();
    let url = p.url.clone();
    let (first_tx, first_rx) = mpsc::channel();
    thread::spawn(move || {
        let resp = agent()
            .post(format!("{url}/v1/responses"))
            .header("content-type", "application/json")
            .send(request(true).to_string())
            .unwrap();
        let mut out = Vec::new();
        let mut name = String::new();
        for line in BufReader::new(resp.into_body().into_reader()).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let data: Value = serde_json::from_str(d).unwrap();
                if data["type"] == "response.output_text.delta" {
                    let _ = first_tx.send(());
                }
                out.push(Event {
                    name: std::mem::take(&mut name),
                    raw: d.to_string(),
                    data,
                });
            }
        }
        let _ = tx.send(out);
    });
    first_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the stream committed");
    p.handle.as_ref().unwrap().drain();
    let events = rx.recv_timeout(Duration::from_secs(20)).expect("ended");
    release.open();
    let types = assert_stream_valid(&events);
    let n = types.len();
    assert_eq!(types[n - 2..], ["response.failed", "error"], "{types:?}");
    assert_eq!(events[n - 2].data["response"]["status"], "failed");
    let code = events[n - 1].data["code"].as_str().unwrap();
    assert!(code.contains("shutting_down"), "{code}");
    assert_eq!(text_of(&events), "before the drain");
}

// ---------------------------------------------------------------------------
// Refusals, store, metrics.

#[test]
fn what_a_translation_cannot_keep_is_a_400_without_an_upstream_call() {
    let chat = Fake::ok("unused");
    let claude = Fake::new(Reply::raw(200, ANTHROPIC_TEXT));
    for (kind, fake) in [("translate", &chat), ("anthropic", &claude)] {
        let p = Proxy::start(&config(&[("up", kind, fake)], ""));
        let mut cases = vec![
            (
                json!({"previous_response_id": "resp_abc"}),
                "previous_response_id",
            ),
            (json!({"conversation": "conv_abc"}), "conversation"),
            (json!({"background": true}), "background"),
            (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        ];
        if kind == "anthropic" {
            cases.push((
                json!({"text": {"format": {"type": "json_schema", "name": "x",
                                           "schema": {"type": "object"}}}}),
                "text.format",
            ));
        }
        for (extra, param) in cases {
            let mut body = request(false);
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let r = p.post("/v1/responses", &body.to_string());
            assert_eq!(r.status, 400, "{kind} {param}: {}", r.body);
            let e = r.error();
            assert_eq!(e["param"], param, "{kind}: {e}");
            assert_eq!(e["type"], "invalid_request_error", "{kind}: {e}");
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains(param.split('[').next().unwrap()),
                "{kind}: the message names the field: {e}"
            );
            assert_valid("ErrorResponse", &r.json());
            assert!(!r.body.contains("sk-up-key"), "{}", r.body);
        }
        assert_untouched(&p, "up");
    }
    assert_eq!((chat.count(), claude.count()), (0, 0));
}

#[test]
fn store_is_forwarded_to_native_and_ignored_by_translation() {
    let native = Fake::new(Reply::json(200, response_body("native")));
    let chat = Fake::new(Reply::completion("from chat"));
    let mut body = request(false);
    body["store"] = json!(true);

    let p = Proxy::start(&config(&[("up", "native", &native)], ""));
    let r = p.post("/v1/responses", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(native.requests()[0].json()["store"], true);

    let p = Proxy::start(&config(&[("up", "translate", &chat)], ""));
    let r = p.post("/v1/responses", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(chat.requests()[0].json().get("store").is_none());
    assert_eq!(r.json()["store"], false, "the proxy stores nothing");
}

#[test]
fn metrics_count_responses_and_their_usage_from_json_and_stream() {
    let fake = Fake::new(Reply::ByStream {
        json: Box::new(Reply::completion("from chat")),
        stream: Box::new(chat_stream(&["a", "b"], (5, 7))),
    });
    let p = Proxy::start(&config(&[("up", "translate", &fake)], ""));
    assert_eq!(
        p.post("/v1/responses", &request(false).to_string()).status,
        200
    );
    let events = read_stream(open(&p, &request(true)));
    assert_eq!(events.last().unwrap().data["type"], "response.completed");
    let m = p.get("/metrics").body;
    for line in [
        "llm_proxy_requests_total{endpoint=\"responses\",model=\"m\",key=\"unknown\",code=\"200\"} 2",
        // 3 + 5 and 2 + 7: the JSON answer's usage and the stream's.
        "llm_proxy_tokens_total{provider=\"up\",model=\"m\",key=\"unknown\",type=\"prompt\"} 8",
        "llm_proxy_tokens_total{provider=\"up\",model=\"m\",key=\"unknown\",type=\"completion\"} 9",
    ] {
        assert!(m.lines().any(|l| l == line), "no `{line}` in\n{m}");
    }
}

// ---------------------------------------------------------------------------
// The mock (scripts/sdk-check.sh's upstream) answers what the spec says.

struct Mock {
    child: Child,
    url: String,
}

impl Mock {
    fn start(args: &[&str]) -> Mock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llm-proxy-mock"))
            .args(["--port", "0", "--name", "mk", "--stream-chunks", "4"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the mock starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit_once(" listening on ")
            .map(|(_, u)| u.to_string())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Mock { child, url }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_mock_answers_spec_valid_responses_and_events() {
    let mock = Mock::start(&[]);
    let tools = json!([{"type": "function", "name": "get_weather",
                        "parameters": {"type": "object", "properties": {}}}]);
    for (path, body) in [
        ("/v1/responses", json!({"model": "x", "input": "hi"})),
        (
            "/openai/v1/responses",
            json!({"model": "x", "input": "hi", "tools": tools}),
        ),
    ] {
        let r = call(&mock.url, path, &[], Some(&body.to_string()));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_valid("Response", &r.json());
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let resp = agent()
            .post(format!("{}{path}", mock.url))
            .send(streamed.to_string())
            .unwrap();
        let events = read_stream(resp);
        let types = assert_stream_valid(&events);
        assert_eq!(types.last().unwrap(), "response.completed");
        if body.get("tools").is_none() {
            assert_text_stream(&events, &text_of(&events));
        }
    }
    let id = call(
        &mock.url,
        "/v1/responses",
        &[],
        Some(r#"{"model":"x","input":"a"}"#),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = call(&mock.url, &format!("/v1/responses/{id}"), &[], None);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["id"], id);
    assert_valid("Response", &got.json());
    assert_eq!(
        call(&mock.url, "/v1/responses/resp_mk_999", &[], None).status,
        404
    );
}

#[test]
fn the_mock_plays_an_in_band_quota_error_and_a_cut() {
    let quota = Mock::start(&["--responses-error-first", "insufficient_quota"]);
    let body = json!({"model": "x", "input": "hi", "stream": true}).to_string();
    let resp = agent()
        .post(format!("{}/v1/responses", quota.url))
        .send(body.as_str())
        .unwrap();
    let events = read_stream(resp);
    let types = assert_stream_valid(&events);
    assert_eq!(types, ["response.created", "response.in_progress", "error"]);
    assert_eq!(events[2].data["code"], "insufficient_quota");
    let r = call(
        &quota.url,
        "/v1/responses",
        &[],
        Some(r#"{"model":"x","input":"hi"}"#),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.error()["code"], "insufficient_quota");

    let cut = Mock::start(&["--cut-after", "3"]);
    let resp = agent()
        .post(format!("{}/v1/responses", cut.url))
        .send(body.as_str())
        .unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(resp.into_body().into_reader());
    let ended = loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break "a clean end",
            Ok(_) => lines.push(line),
            Err(_) => break "an error",
        }
    };
    assert_eq!(ended, "an error", "a cut body does not end cleanly");
    let data = lines.iter().filter(|l| l.starts_with("data: ")).count();
    assert_eq!(data, 3, "{lines:?}");
}

// ---------------------------------------------------------------------------
// Native streams after the first output event; a prelude larger than the
// chat hold limit; secrets; retrieval.

/// The native text stream cut after its first delta (events 0-4).
fn native_cut_events() -> Vec<String> {
    native_events("cut")[..5].to_vec()
}

#[test]
fn a_native_response_failed_after_output_is_passed_on_unchanged_and_ends_the_stream() {
    let mut upstream = native_events("late")[..5].to_vec();
    let mut failed = in_progress("late");
    failed["status"] = json!("failed");
    failed["error"] = json!({"code": "server_error", "message": "The model had an error."});
    let last = json!({"type": "response.failed", "response": failed, "sequence_number": 5});
    upstream.push(format!("event: response.failed\ndata: {last}\n\n"));
    let fake = Fake::new(native_stream(upstream));
    let p = Proxy::start(&config(
        &[("up", "native", &fake)],
        "failover: {max_failures: 5}",
    ));
    let events = read_stream(open(&p, &request(true)));
    let types = assert_stream_valid(&events);
    assert_eq!(
        types.last().unwrap(),
        "response.failed",
        "nothing appended: {types:?}"
    );
    assert_eq!(events.last().unwrap().raw, last.to_string(), "unchanged");
    assert_eq!(provider(&p, "up")["consecutive_failures"], 1);
}

#[test]
fn a_native_cut_after_output_ends_with_failed_for_the_announced_response() {
    let fake = Fake::new(Reply::Stream {
        events: native_cut_events(),
        pace: None,
        end: End::Cut,
    });
    let p = Proxy::start(&config(
        &[("up", "native", &fake)],
        "failover: {max_failures: 5}",
    ));
    let events = read_stream(open(&p, &request(true)));
    let types = assert_stream_valid(&events);
    let n = types.len();
    assert_eq!(types[..n - 2].len(), 5, "{types:?}");
    assert_eq!(types[n - 2..], ["response.failed", "error"], "{types:?}");
    let failed = &events[n - 2].data;
    assert_eq!(
        failed["response"]["id"], "resp_cut",
        "the held response's id"
    );
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(
        failed["sequence_number"], 5,
        "numbered on from the upstream's"
    );
    assert_eq!(events[n - 1].data["sequence_number"], 6);
    assert!(events[n - 1].data["error"]["message"].is_string());
    assert!(!types.iter().any(|t| t == "response.completed"));
    assert_eq!(provider(&p, "up")["consecutive_failures"], 1);
}

#[test]
fn a_prelude_far_larger_than_the_chat_hold_limit_still_fails_over() {
    // Both prelude events echo instructions and tools: 2 x 200 KB held.
    let big = "x".repeat(200 * 1024);
    let mut events = prelude("quota");
    for e in &mut events {
        e["response"]["instructions"] = json!(big);
    }
    events.push(json!({"type": "error", "code": "insufficient_quota",
                       "message": "You exceeded your current quota.", "param": null}));
    let native = Fake::new(native_stream(frames(events)));
    let claude = Fake::new(Reply::sse(ANTHROPIC_STREAM, End::Eof));
    let p = Proxy::start(&config(
        &[
            ("native", "native", &native),
            ("claude", "anthropic", &claude),
        ],
        "server: {max_body_bytes: 1048576}",
    ));
    let mut body = request(true);
    body["instructions"] = json!(big);
    let resp = open(&p, &body);
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "claude"
    );
    assert_eq!(resp.headers().get("x-llm-proxy-attempts").unwrap(), "2");
    let events = read_stream(resp);
    assert_text_stream(&events, "Hello! How can I help?");
}

#[test]
fn an_in_band_error_naming_the_key_reaches_neither_client_nor_log() {
    let key = "sk-up-key-000001";
    let mut events = prelude("quota");
    events.push(json!({"type": "error", "code": "invalid_api_key",
                       "message": format!("Incorrect API key provided: {key}."), "param": null}));
    let fake = Fake::new(native_stream(frames(events)));
    let mut bin = Logged::start(&config(&[("up", "native", &fake)], ""));
    let r = call(
        &bin.url,
        "/v1/responses",
        &[],
        Some(&request(true).to_string()),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    r.error();
    assert!(leaked_fragments(&r.body, key, 8).is_empty(), "{}", r.body);
    let log = bin.finish();
    // The failure's line (written before the 503 is sent, unlike the
    // access line) quotes the upstream's message, with the key taken out.
    assert!(log.contains("Incorrect API key provided"), "{log}");
    assert!(leaked_fragments(&log, key, 8).is_empty(), "{log}");
}

/// Two native providers and a translating one, for model `m`, and a model
/// `t` on the translating one alone; key `team` may use only `t`.
fn retrieval_config(a: &Fake, b: &Fake, chat: &Fake) -> String {
    let yaml = config(
        &[
            ("a", "native", a),
            ("b", "native", b),
            ("chat", "translate", chat),
        ],
        "auth:\n  keys:\n    - {name: all, key: fake-all-key-whiskey, admin: true}\n    - {name: team, key: fake-team-key-xray, models: [t]}\n",
    );
    format!("{yaml}  t:\n    providers:\n      chat: {{priority: 0, model_id: up-chat}}\n")
}

#[test]
fn retrieval_asks_the_native_providers_a_key_may_use() {
    let stored = response_body("stored");
    let a = Fake::new(Reply::error(
        404,
        "No response found with id 'resp_stored'.",
    ));
    let b = Fake::new(Reply::json(200, stored.clone()));
    let chat = Fake::ok("unused");
    let p = Proxy::start(&retrieval_config(&a, &b, &chat));
    let all = [("authorization", "Bearer fake-all-key-whiskey")];
    let team = [("authorization", "Bearer fake-team-key-xray")];

    let r = call(&p.url, "/v1/responses/resp_stored", &all, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), stored);
    assert_valid("Response", &r.json());
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert_eq!(
        a.requests()[0].header("authorization"),
        Some("Bearer sk-a-key-000001")
    );
    assert_eq!(
        b.requests()[0].header("authorization"),
        Some("Bearer sk-b-key-000001")
    );

    // ?model= narrows to that model's providers (in priority order), and
    // is not forwarded; the rest of the query is.
    let r = call(
        &p.url,
        "/v1/responses/resp_stored?model=m&include[]=x",
        &all,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = &b.requests()[1];
    assert!(!sent.path.contains("model="), "{}", sent.path);
    assert!(sent.path.contains("include"), "{}", sent.path);

    // Every candidate says 404: 404 in the OpenAI shape.
    b.push(Reply::error(404, "No response found with id 'resp_gone'."));
    let r = call(&p.url, "/v1/responses/resp_gone", &all, None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_valid("ErrorResponse", &r.json());
    assert_eq!(r.error()["code"], "response_not_found");

    // A key whose models are all translated: nobody to ask.
    let before = a.count() + b.count();
    let r = call(&p.url, "/v1/responses/resp_stored", &team, None);
    assert_eq!(r.status, 404, "{}", r.body);
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("native"), "{msg}");
    // A model the key may not use.
    let r = call(&p.url, "/v1/responses/resp_stored?model=m", &team, None);
    assert_eq!(r.status, 403, "{}", r.body);
    // Retrieval by stream is not relayed.
    let r = call(&p.url, "/v1/responses/resp_stored?stream=true", &all, None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "stream");
    assert_eq!(
        a.count() + b.count(),
        before,
        "none of these reached an upstream"
    );
    assert_eq!(chat.count(), 0);
    for body in [&r.body] {
        for k in ["sk-a-key", "sk-b-key", "fake-all-key"] {
            assert!(!body.contains(k), "{body}");
        }
    }
    // A lookup is no verdict on a provider.
    let r = call(&p.url, "/admin/providers", &all, None);
    let a_state = r.json()["data"][0].clone();
    assert_eq!(a_state["name"], "a");
    assert_eq!(a_state["state"], "closed", "{a_state}");
    assert_eq!(a_state["failures"], 0, "{a_state}");
}
