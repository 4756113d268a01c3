//! The anthropic provider kind end to end: what a fake Anthropic upstream
//! receives, what the client gets back (JSON and streamed), and failover
//! between OpenAI and Anthropic providers in both directions.

mod support;

use serde_json::{Value, json};
use support::*;

const TEXT: &str = include_str!("fixtures/anthropic/text.json");
const TOOL_USE: &str = include_str!("fixtures/anthropic/tool_use.json");
const STREAM_TEXT: &str = include_str!("fixtures/anthropic/stream_text.sse");
const STREAM_TOOL_USE: &str = include_str!("fixtures/anthropic/stream_tool_use.sse");
const STREAM_ERROR: &str = include_str!("fixtures/anthropic/stream_error.sse");

fn fixture(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// One model, `claude`, served by an anthropic provider alone.
fn only_anthropic(fake: &Fake) -> String {
    format!(
        r#"
providers:
  claude:
    type: anthropic
    api_key: sk-ant-test-key-0001
    base_url: {}
    anthropic_version: "2023-06-01"
    max_tokens: 777
    timeout: 2
    stream_timeout: 5
models:
  claude:
    providers:
      claude: {{priority: 0, model_id: claude-3-5-sonnet-20241022}}
"#,
        fake.root_url()
    )
}

/// An openai and an anthropic provider, and two models using both:
/// `gpt-4` prefers openai, `claude` prefers anthropic.
fn mixed(openai: &Fake, anthropic: &Fake) -> String {
    format!(
        r#"
failover: {{max_failures: 10}}
providers:
  openai:
    type: openai
    api_key: sk-openai-key-0001
    base_url: {}
    timeout: 2
  claude:
    type: anthropic
    api_key: sk-ant-test-key-0002
    base_url: {}
    timeout: 2
models:
  gpt-4:
    providers:
      openai: {{priority: 0, model_id: gpt-4o}}
      claude: {{priority: 1, model_id: claude-3-5-sonnet-20241022}}
  claude:
    providers:
      claude: {{priority: 0, model_id: claude-3-5-sonnet-20241022}}
      openai: {{priority: 1, model_id: gpt-4o}}
"#,
        openai.base_url(),
        anthropic.root_url()
    )
}

fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message},
               "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}),
    )
}

/// The required fields of an OpenAI `chat.completion`.
fn assert_completion(v: &Value) {
    assert!(v["id"].is_string(), "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert!(v["model"].is_string());
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert!(c["finish_reason"].is_string());
    assert!(c.get("logprobs").is_some_and(Value::is_null));
    assert_eq!(c["message"]["role"], "assistant");
    assert!(c["message"].get("content").is_some());
    assert!(c["message"].get("refusal").is_some_and(Value::is_null));
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert!(v["usage"][k].is_u64(), "{k}: {v}");
    }
}

fn stream_request(model: &str, include_usage: bool) -> String {
    json!({"model": model, "stream": true, "stream_options": {"include_usage": include_usage},
           "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

fn open_stream(p: &Proxy, body: &str) -> ureq::http::Response<ureq::Body> {
    agent()
        .post(format!("{}/v1/chat/completions", p.url))
        .header("content-type", "application/json")
        .send(body)
        .expect("proxy answers")
}

#[test]
fn the_request_is_translated_and_sent_to_v1_messages() {
    let fake = Fake::new(Reply::json(200, fixture(TEXT)));
    let p = Proxy::start(&only_anthropic(&fake));
    let body = json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_b", "content": "rain"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stop": ["\n\nHuman:"],
        "temperature": 1.5,
        "top_p": 0.8,
        "user": "customer-7",
        "seed": 3, "presence_penalty": 0.2, "response_format": {"type": "text"}
    });
    let r = p.post_with(
        "/v1/chat/completions",
        &body.to_string(),
        &[("authorization", "Bearer client-secret-never-forwarded")],
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let got = &fake.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.header("x-api-key"), Some("sk-ant-test-key-0001"));
    assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(got.header("authorization"), None);
    assert!(
        got.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        got.json(),
        json!({
            "model": "claude-3-5-sonnet-20241022",
            "system": "You are terse.\n\nAnswer in English.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.png"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Lyon"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_a", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_b", "content": "rain"}
                ]}
            ],
            "tools": [{"name": "get_weather", "description": "Weather for a city.",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "max_tokens": 777,
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 1.0,
            "top_p": 0.8,
            "metadata": {"user_id": "customer-7"}
        })
    );
}

#[test]
fn the_answer_is_a_chat_completion() {
    let fake = Fake::new(Reply::json(200, fixture(TEXT)));
    fake.push(Reply::json(200, fixture(TOOL_USE)));
    let p = Proxy::start(&only_anthropic(&fake));

    let r = p.chat("claude");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("claude"));
    let v = r.json();
    assert_completion(&v);
    assert_eq!(v["model"], "claude");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 256);

    let v = p.chat("claude").json();
    assert_completion(&v);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! How can I help you today?"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 24);
    // Without a client limit, the configured max_tokens went upstream.
    assert_eq!(fake.requests()[0].json()["max_tokens"], 777);
}

#[test]
fn a_stream_is_translated_event_by_event() {
    let fake = Fake::new(Reply::sse(STREAM_TEXT, End::Eof));
    let p = Proxy::start(&only_anthropic(&fake));
    let resp = open_stream(&p, &stream_request("claude", true));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let events = read_events(resp, |_| {});
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    for c in &chunks {
        assert_eq!(&c["id"], id, "one id for the whole stream");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "claude");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello! How can I help?");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["prompt_tokens"], 25);
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 15);

    let sent = fake.requests()[0].json();
    assert_eq!(sent["stream"], true);
    assert!(sent.get("stream_options").is_none());
}

#[test]
fn a_streamed_tool_call_keeps_its_index() {
    let fake = Fake::new(Reply::sse(STREAM_TOOL_USE, End::Eof));
    let p = Proxy::start(&only_anthropic(&fake));
    let events = read_events(open_stream(&p, &stream_request("claude", false)), |_| {});
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut args = [String::new(), String::new()];
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        assert!(c.get("usage").is_none());
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .map_or(&[][..], |a| a)
        {
            let k = tc["index"].as_u64().unwrap() as usize;
            args[k].push_str(tc["function"]["arguments"].as_str().unwrap());
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let first: Value = serde_json::from_str(&args[0]).unwrap();
    assert_eq!(first["unit"], "fahrenheit");
    let second: Value = serde_json::from_str(&args[1]).unwrap();
    assert_eq!(second["timezone"], "America/Los_Angeles");
}

#[test]
fn overloaded_529_fails_over_to_openai() {
    let openai = Fake::ok("from openai");
    let claude = Fake::new(anthropic_error(529, "overloaded_error", "Overloaded"));
    let p = Proxy::start(&mixed(&openai, &claude));
    let r = p.chat("claude");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from openai");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("openai"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert_eq!(claude.count(), 1);
}

#[test]
fn a_400_from_anthropic_is_the_clients_in_openai_shape() {
    let openai = Fake::ok("from openai");
    let claude = Fake::new(anthropic_error(
        400,
        "invalid_request_error",
        "messages: text content blocks must be non-empty",
    ));
    let p = Proxy::start(&mixed(&openai, &claude));
    let r = p.chat("claude");
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.error();
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(
        e["message"],
        "messages: text content blocks must be non-empty"
    );
    assert_eq!(e["provider"], "claude");
    assert_eq!(openai.count(), 0, "a 400 does not fail over");
}

#[test]
fn what_anthropic_cannot_express_is_a_400_without_an_upstream_call() {
    let openai = Fake::ok("from openai");
    let claude = Fake::new(Reply::json(200, fixture(TEXT)));
    let p = Proxy::start(&mixed(&openai, &claude));
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    ]}]});
    let r = p.post("/v1/chat/completions", &body.to_string());
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.error();
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "messages[0].content[0]");
    assert!(e["message"].as_str().unwrap().contains("input_audio"));
    assert_eq!(claude.count() + openai.count(), 0);
    // The provider is healthy: the next request goes to it.
    assert_eq!(
        p.chat("claude").header("x-llm-proxy-provider"),
        Some("claude")
    );
}

#[test]
fn an_error_event_before_content_fails_over() {
    let openai = Fake::new(Reply::chunks(&["from ", "openai"], End::Done));
    let claude = Fake::new(Reply::sse(STREAM_ERROR, End::Eof));
    let p = Proxy::start(&mixed(&openai, &claude));
    let resp = open_stream(&p, &stream_request("claude", false));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "openai"
    );
    let events = read_events(resp, |_| {});
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text = delta_text(&events[..events.len() - 1]);
    assert_eq!(text, "from openai");
    assert_eq!(claude.count(), 1);
}

#[test]
fn an_error_event_after_content_ends_the_stream_without_done() {
    let openai = Fake::ok("unused");
    let cut = STREAM_TEXT
        .split_once("event: content_block_stop")
        .unwrap()
        .0
        .to_string()
        + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let claude = Fake::new(Reply::sse(&cut, End::Eof));
    let p = Proxy::start(&mixed(&openai, &claude));
    let events = read_events(open_stream(&p, &stream_request("claude", true)), |_| {});
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["code"], "upstream_stream_error");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Overloaded"),
        "{last}"
    );
    // The content before the error reached the client.
    let text = delta_text(&events[..events.len() - 1]);
    assert_eq!(text, "Hello! How can I help?");
    assert_eq!(openai.count(), 0);
}

#[test]
fn one_model_fails_over_from_openai_to_anthropic_and_back() {
    let openai = Fake::ok("from openai");
    let claude = Fake::new(Reply::json(200, fixture(TEXT)));
    let p = Proxy::start(&mixed(&openai, &claude));

    // openai (priority 0) down: anthropic answers, in OpenAI's shape.
    openai.push(Reply::error(503, "openai is down"));
    let r = p.chat("gpt-4");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("claude"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    let v = r.json();
    assert_completion(&v);
    assert_eq!(v["model"], "gpt-4");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! How can I help you today?"
    );

    // openai back: it answers again.
    let r = p.chat("gpt-4");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("openai"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from openai");

    // Streaming, the same way: openai fails, anthropic streams.
    openai.push(Reply::error(500, "openai broke"));
    claude.push(Reply::sse(STREAM_TEXT, End::Eof));
    let resp = open_stream(&p, &stream_request("gpt-4", false));
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "claude"
    );
    let events = read_events(resp, |_| {});
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    // And the other direction: anthropic (priority 0 for `claude`) down,
    // openai answers, JSON and streamed.
    claude.push(anthropic_error(529, "overloaded_error", "Overloaded"));
    let r = p.chat("claude");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("openai"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from openai");
    claude.push(anthropic_error(529, "overloaded_error", "Overloaded"));
    openai.push(Reply::chunks(&["from ", "openai"], End::Done));
    let resp = open_stream(&p, &stream_request("claude", false));
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "openai"
    );
    let events = read_events(resp, |_| {});
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], "[DONE]");
    // Anthropic back: it answers `claude` again.
    let r = p.chat("claude");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("claude"));
}
