//! `/v1/responses` on providers that translate (issue 12, design §2-§3):
//! `anthropic`, and `openai` with `responses: translate`. Fake upstreams
//! receive Chat Completions or Anthropic Messages requests; the client
//! gets `Response` objects and Responses event streams, each checked
//! against the spec by its own schema. Also: a request the proxy refuses
//! itself is no verdict on the provider's health.

mod support;

use serde_json::{Value, json};
use support::*;

/// An anthropic provider `claude` (breaker after two failures) serving
/// model `claude`.
fn anthropic_only(fake: &Fake) -> String {
    format!(
        r#"
failover: {{max_failures: 2, cooldown: 600}}
providers:
  claude:
    type: anthropic
    api_key: sk-ant-refusal-key-0001
    base_url: {}
    timeout: 2
    stream_timeout: 5
models:
  claude:
    providers:
      claude: {{priority: 0, model_id: claude-up}}
"#,
        fake.root_url()
    )
}

fn admin_provider(p: &Proxy, name: &str) -> Value {
    let r = p.get("/admin/providers");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no provider {name}: {}", r.body))
        .clone()
}

/// A request the translation refuses never reached the upstream: the
/// breaker must not count it as the provider answering well (which would
/// forget a failure, or close a half-open breaker on no evidence).
#[test]
fn a_refusal_is_no_verdict_on_the_provider() {
    let fake = Fake::new(Reply::json(
        200,
        fixture(include_str!("fixtures/anthropic/text.json")),
    ));
    fake.push(Reply::error(500, "down"));
    let p = Proxy::start(&anthropic_only(&fake));
    let r = p.chat("claude");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(admin_provider(&p, "claude")["consecutive_failures"], 1);
    // Anthropic returns one choice: `n: 2` is refused before any call.
    let r = p.post(
        "/v1/chat/completions",
        &json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "n");
    assert_eq!(fake.count(), 1, "no upstream call");
    let s = admin_provider(&p, "claude");
    assert_eq!(
        s["consecutive_failures"], 1,
        "the refusal forgot a failure: {s}"
    );
    // The next real failure opens the breaker, as two in a row should.
    fake.push(Reply::error(500, "down again"));
    assert_eq!(p.chat("claude").status, 503);
    assert_eq!(admin_provider(&p, "claude")["state"], "open");
}

const ANT_TOOL_USE: &str = include_str!("fixtures/anthropic/tool_use.json");
const ANT_STREAM_TEXT: &str = include_str!("fixtures/anthropic/stream_text.sse");
const ANT_STREAM_TOOL_USE: &str = include_str!("fixtures/anthropic/stream_tool_use.sse");
const ANT_STREAM_ERROR: &str = include_str!("fixtures/anthropic/stream_error.sse");
const FUNCTION_ROUND_TRIP: &str = include_str!("fixtures/responses/function_round_trip.json");

/// Providers `chat` (openai at a local URL: `responses: translate` by
/// default) and `claude` (anthropic). Models: `gpt` (chat), `claude`
/// (claude), `claude-then-gpt` (claude, then chat).
fn translated(chat: &Fake, claude: &Fake) -> String {
    format!(
        r#"
failover: {{max_failures: 3, cooldown: 600}}
providers:
  chat:
    type: openai
    api_key: sk-chat-translate-key-01
    base_url: {}
    timeout: 2
    stream_timeout: 5
  claude:
    type: anthropic
    api_key: sk-ant-translate-key-01
    base_url: {}
    max_tokens: 555
    timeout: 2
    stream_timeout: 5
models:
  gpt:
    providers:
      chat: {{priority: 0, model_id: up-gpt}}
  claude:
    providers:
      claude: {{priority: 0, model_id: up-claude}}
  claude-then-gpt:
    providers:
      claude: {{priority: 0, model_id: up-claude}}
      chat: {{priority: 1, model_id: up-gpt}}
"#,
        chat.base_url(),
        claude.root_url()
    )
}

fn fixture(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn responses(p: &Proxy, body: &Value) -> Resp {
    p.post("/v1/responses", &body.to_string())
}

/// A Responses event stream as the client got it: every event has an
/// `event:` line naming its `type`, validates by its own schema and the
/// union, and `sequence_number` counts from 0; no `[DONE]`.
fn events(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        r.headers
    );
    assert!(!r.body.contains("[DONE]"), "{}", r.body);
    let mut out = Vec::new();
    for block in r.body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("event: "))
            .unwrap_or_else(|| panic!("no event line: {block:?}"));
        let data = lines.next().and_then(|l| l.strip_prefix("data: ")).unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], name);
        support::spec::assert_event_valid(&v);
        assert_eq!(v["sequence_number"], out.len() as u64, "{v}");
        out.push(v);
    }
    out
}

fn types(ev: &[Value]) -> Vec<&str> {
    ev.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Chat chunks with these deltas (one per event), then `finish` and a
/// usage chunk.
fn chat_chunks(deltas: &[Value], finish: &str) -> Vec<String> {
    let chunk = |delta: &Value, finish: Value| {
        let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut out: Vec<String> = deltas.iter().map(|d| chunk(d, Value::Null)).collect();
    out.push(chunk(&json!({}), json!(finish)));
    out.push(format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up",
               "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}})
    ));
    out
}

fn chat_stream(deltas: &[Value], finish: &str, end: End) -> Reply {
    Reply::Stream {
        events: chat_chunks(deltas, finish),
        pace: None,
        end,
    }
}

/// The SDK's function-tool round trip, turn 2 (design §5.1), on an
/// openai-translate provider: the upstream gets the chat conversation of
/// design §2.2, the client a valid `Response`.
#[test]
fn json_round_trip_on_openai_translate_sends_the_chat_request_of_the_design() {
    let chat = Fake::new(Reply::json(
        200,
        json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "up-gpt",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "It is sunny in Paris."}}],
               "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36,
                         "prompt_tokens_details": {"cached_tokens": 10}}}),
    ));
    let claude = Fake::ok("unused");
    let p = Proxy::start(&translated(&chat, &claude));
    let mut body = fixture(FUNCTION_ROUND_TRIP);
    body["model"] = json!("gpt");
    let r = responses(&p, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("chat"));
    let v = r.json();
    support::spec::assert_valid("Response", &v);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt");
    assert_eq!(v["store"], false, "stored nothing, though asked to");
    assert_eq!(v["metadata"], json!({"trace": "t-1"}));
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "It is sunny in Paris."
    );
    assert_eq!(v["usage"]["input_tokens"], 30);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 10);
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));

    let got = &chat.requests()[0];
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(
        got.header("authorization"),
        Some("Bearer sk-chat-translate-key-01")
    );
    assert_eq!(
        got.json(),
        json!({
            "model": "up-gpt",
            "messages": [
                {"role": "system", "content": "You answer about weather."},
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_abc", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_abc", "content": "sunny, 24 C"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"], "additionalProperties": false},
                "strict": true}}],
            "tool_choice": "auto",
            "parallel_tool_calls": true,
            "max_tokens": 300,
            "temperature": 0.3,
            "reasoning_effort": "medium",
            "user": "user-42",
        })
    );
}

/// The same request to Anthropic: the Messages request the existing chat
/// translation makes of it, and a valid `Response` with the tool call.
#[test]
fn json_on_anthropic_goes_via_chat_and_maps_tool_use_to_function_call() {
    let chat = Fake::ok("unused");
    let claude = Fake::new(Reply::json(200, fixture(ANT_TOOL_USE)));
    let p = Proxy::start(&translated(&chat, &claude));
    let mut body = fixture(FUNCTION_ROUND_TRIP);
    body["model"] = json!("claude");
    let r = responses(&p, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    support::spec::assert_valid("Response", &v);
    assert_eq!(v["status"], "completed");
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.len(), 2, "{v}");
    assert_eq!(out[0]["type"], "message");
    assert_eq!(
        out[0]["content"][0]["text"],
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(out[1]["type"], "function_call");
    assert_eq!(out[1]["call_id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(out[1]["name"], "get_weather");
    let args: Value = serde_json::from_str(out[1]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    // Cache reads are input tokens, and reported as cached.
    assert_eq!(v["usage"]["input_tokens"], 384 + 256);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 256);
    assert_eq!(v["usage"]["output_tokens"], 92);

    assert_eq!(chat.count(), 0);
    let got = claude.requests()[0].json();
    assert_eq!(claude.requests()[0].path, "/v1/messages");
    assert_eq!(got["model"], "up-claude");
    assert_eq!(got["system"], "You answer about weather.");
    assert_eq!(got["max_tokens"], 300);
    assert_eq!(got["metadata"], json!({"user_id": "user-42"}));
    assert_eq!(
        got["messages"],
        json!([
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_abc",
                "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_abc",
                "content": "sunny, 24 C"}]},
        ])
    );
    assert_eq!(got["tools"][0]["name"], "get_weather");
    assert_eq!(got["tool_choice"], json!({"type": "auto"}));
}

/// A length stop is `status: incomplete` with the reason, on both kinds.
#[test]
fn length_is_incomplete_with_max_output_tokens() {
    let chat = Fake::new(Reply::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "finish_reason": "length",
                            "message": {"role": "assistant", "content": "Once upon"}}],
               "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}),
    ));
    let claude = Fake::new(Reply::json(
        200,
        fixture(include_str!("fixtures/anthropic/max_tokens.json")),
    ));
    let p = Proxy::start(&translated(&chat, &claude));
    for model in ["gpt", "claude"] {
        let r = responses(
            &p,
            &json!({"model": model, "input": "tell a story", "max_output_tokens": 2}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        support::spec::assert_valid("Response", &v);
        assert_eq!(v["status"], "incomplete", "{model}");
        assert_eq!(
            v["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(v["max_output_tokens"], 2);
    }
    assert_eq!(chat.requests()[0].json()["max_tokens"], 2);
    assert_eq!(claude.requests()[0].json()["max_tokens"], 2);
}

/// Streams on both kinds: text, and text then a tool call; the events of
/// design §3.2 in order, one `response.created`, usage at the end.
#[test]
fn streams_on_both_kinds_follow_the_spec_order() {
    let chat = Fake::new(chat_stream(
        &[
            json!({"role": "assistant", "content": ""}),
            json!({"content": "Hello"}),
            json!({"content": " world"}),
        ],
        "stop",
        End::Done,
    ));
    let claude = Fake::new(Reply::sse(ANT_STREAM_TEXT, End::Eof));
    let p = Proxy::start(&translated(&chat, &claude));
    for model in ["gpt", "claude"] {
        let r = responses(&p, &json!({"model": model, "input": "hi", "stream": true}));
        let ev = events(&r);
        let t = types(&ev);
        assert_eq!(
            t[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ],
            "{model}"
        );
        assert_eq!(
            t[t.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ],
            "{model}"
        );
        assert!(
            t[4..t.len() - 4]
                .iter()
                .all(|x| *x == "response.output_text.delta")
        );
        let deltas: String = ev
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        let done = ev.last().unwrap();
        assert_eq!(done["response"]["output"][0]["content"][0]["text"], deltas);
        assert_eq!(done["response"]["id"], ev[0]["response"]["id"]);
        assert!(done["response"]["usage"]["input_tokens"].as_u64().unwrap() > 0);
        if model == "gpt" {
            assert_eq!(deltas, "Hello world");
        }
    }
    let sent = chat.requests()[0].json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[test]
fn streamed_tool_calls_on_both_kinds() {
    let chat = Fake::new(chat_stream(
        &[
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1",
                   "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                   "function": {"name": "get_time", "arguments": "{}"}}]}),
        ],
        "tool_calls",
        End::Done,
    ));
    let claude = Fake::new(Reply::sse(ANT_STREAM_TOOL_USE, End::Eof));
    let p = Proxy::start(&translated(&chat, &claude));
    let tools = json!([{"type": "function", "name": "get_weather"}, {"type": "function", "name": "get_time"}]);
    let r = responses(
        &p,
        &json!({"model": "gpt", "input": "hi", "stream": true, "tools": tools}),
    );
    let ev = events(&r);
    assert_eq!(
        types(&ev),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let out = &ev.last().unwrap()["response"]["output"];
    assert_eq!(out[0]["call_id"], "call_1");
    assert_eq!(out[0]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(out[1]["call_id"], "call_2");
    assert_eq!(ev[7]["output_index"], 1);

    // Anthropic: text, then a tool_use block.
    let r = responses(
        &p,
        &json!({"model": "claude", "input": "hi", "stream": true, "tools": tools}),
    );
    let ev = events(&r);
    let t = types(&ev);
    let call_added = t
        .iter()
        .rposition(|x| *x == "response.output_item.added")
        .unwrap();
    assert_eq!(ev[call_added]["item"]["type"], "function_call");
    assert!(
        ev[call_added]["item"]["call_id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_")
    );
    let done = ev.last().unwrap();
    assert_eq!(done["type"], "response.completed");
    let out = done["response"]["output"].as_array().unwrap();
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out.last().unwrap()["type"], "function_call");
    serde_json::from_str::<Value>(out.last().unwrap()["arguments"].as_str().unwrap())
        .expect("arguments are JSON");
}

/// Anthropic's `error` event before any content fails over; the client
/// sees one prelude, the second provider's.
#[test]
fn an_error_before_output_fails_over_and_the_client_sees_one_prelude() {
    let chat = Fake::new(chat_stream(
        &[json!({"content": "from chat"})],
        "stop",
        End::Done,
    ));
    let claude = Fake::new(Reply::sse(ANT_STREAM_ERROR, End::Eof));
    let p = Proxy::start(&translated(&chat, &claude));
    let r = responses(
        &p,
        &json!({"model": "claude-then-gpt", "input": "hi", "stream": true}),
    );
    assert_eq!(
        r.header("x-llm-proxy-attempts"),
        Some("2"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-llm-proxy-provider"), Some("chat"));
    let ev = events(&r);
    assert_eq!(
        types(&ev)
            .iter()
            .filter(|t| **t == "response.created")
            .count(),
        1
    );
    assert_eq!(ev.last().unwrap()["type"], "response.completed");
    assert_eq!(
        ev.last().unwrap()["response"]["output"][0]["content"][0]["text"],
        "from chat"
    );
    assert_eq!(claude.count(), 1);
}

/// A cut after the first output event: `response.failed` with the text so
/// far, then the hybrid `error` event, numbered on; never a clean end.
#[test]
fn a_cut_after_output_ends_with_failed_and_error() {
    let chat = Fake::new(Reply::Stream {
        events: chat_chunks(&[json!({"content": "Hel"})], "stop")[..1].to_vec(),
        pace: None,
        end: End::Cut,
    });
    let claude = Fake::ok("unused");
    let mut p = Logged::start(&translated(&chat, &claude));
    let r = call(
        &p.url,
        "/v1/responses",
        &[],
        Some(&json!({"model": "gpt", "input": "hi", "stream": true}).to_string()),
    );
    let ev = events(&r);
    let t = types(&ev);
    assert_eq!(
        t,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
            "error",
        ]
    );
    let failed = &ev[5]["response"];
    assert_eq!(failed["id"], ev[0]["response"]["id"]);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "server_error");
    assert_eq!(failed["output"][0]["status"], "incomplete");
    assert_eq!(failed["output"][0]["content"][0]["text"], "Hel");
    assert_eq!(ev[6]["code"], "upstream_stream_error");
    assert_eq!(ev[6]["error"]["code"], "upstream_stream_error");
    let body_and_log = format!("{}{}", r.body, p.finish());
    for key in ["sk-chat-translate-key-01", "sk-ant-translate-key-01"] {
        assert!(
            leaked_fragments(&body_and_log, key, 8).is_empty(),
            "{key} leaked"
        );
    }
}

/// What cannot be translated is a 400 naming the field: no upstream call,
/// no failover to the next provider, the breaker untouched.
#[test]
fn refusals_name_the_field_call_nobody_and_leave_the_breaker_alone() {
    let chat = Fake::ok("unused");
    let claude = Fake::ok("unused");
    let p = Proxy::start(&translated(&chat, &claude));
    let cases = [
        (
            "claude",
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            "gpt",
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            "claude-then-gpt",
            json!({"tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            "claude",
            json!({"text": {"format": {"type": "json_object"}}}),
            "text.format",
        ),
        (
            "gpt",
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0]",
        ),
        ("gpt", json!({"background": true}), "background"),
        (
            "claude",
            json!({"input": [{"role": "user", "content": [
            {"type": "input_file", "file_id": "file_1"}]}]}),
            "input[0].content[0]",
        ),
    ];
    for (model, extra, param) in cases {
        let mut body = json!({"model": model, "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        for stream in [false, true] {
            body["stream"] = json!(stream);
            let r = responses(&p, &body);
            assert_eq!(r.status, 400, "{model} {body}: {}", r.body);
            let e = r.error();
            assert_eq!(e["param"], param, "{body}");
            assert_eq!(e["type"], "invalid_request_error");
            assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));
        }
    }
    let r = responses(
        &p,
        &json!({"model": "claude", "input": "hi", "previous_response_id": "resp_1"}),
    );
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("native Responses"), "{msg}");
    assert_eq!((chat.count(), claude.count()), (0, 0), "no upstream call");
    for name in ["chat", "claude"] {
        let s = admin_provider(&p, name);
        assert_eq!(s["state"], "closed");
        assert_eq!(s["failures"], 0, "{s}");
    }
}
