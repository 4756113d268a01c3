//! How `relay` carries a Responses stream (design §3.3), whatever the
//! provider kind: the prelude (`response.created`, `response.in_progress`)
//! is held until the first output event, so an error before it (an
//! in-band `error` such as `insufficient_quota`) fails over and the client
//! sees only the next provider's prelude; a complete stream ends with the
//! upstream's terminal event and no `data: [DONE]`; a stream that breaks
//! after commit ends with the stream's own failure events.
//!
//! These go through a `responses: native` provider, so they need the
//! native slice's `NativeStream` (src/responses/native.rs). On branch
//! resp-core alone, where native.rs is the placeholder answering 501, they
//! fail; they pass once resp-native is merged.

mod support;

use serde_json::{Value, json};
use support::*;

/// A minimal `Response` object as an upstream sends it in lifecycle events.
fn response(id: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "response", "created_at": 1_700_000_000, "status": status,
        "error": null, "incomplete_details": null, "instructions": null, "model": "up-model",
        "output": [], "parallel_tool_calls": true, "metadata": {}, "tool_choice": "auto",
        "tools": [], "temperature": null, "top_p": null
    })
}

fn event(ty: &str, seq: u64, mut body: Value) -> String {
    body["type"] = json!(ty);
    body["sequence_number"] = json!(seq);
    format!("event: {ty}\ndata: {body}\n\n")
}

/// A complete text stream from `id` saying `text`.
fn complete_stream(id: &str, text: &str) -> Vec<String> {
    let item = json!({"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []});
    let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
    let done_part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    let done_item = json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [done_part]});
    let mut completed = response(id, "completed");
    completed["output"] = json!([done_item]);
    completed["usage"] = json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5});
    vec![
        event(
            "response.created",
            0,
            json!({"response": response(id, "in_progress")}),
        ),
        event(
            "response.in_progress",
            1,
            json!({"response": response(id, "in_progress")}),
        ),
        event(
            "response.output_item.added",
            2,
            json!({"output_index": 0, "item": item}),
        ),
        event(
            "response.content_part.added",
            3,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part}),
        ),
        event(
            "response.output_text.delta",
            4,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}),
        ),
        event(
            "response.output_text.done",
            5,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        ),
        event(
            "response.content_part.done",
            6,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": done_part}),
        ),
        event(
            "response.output_item.done",
            7,
            json!({"output_index": 0, "item": done_item}),
        ),
        event("response.completed", 8, json!({"response": completed})),
    ]
}

fn config(a: &Fake, b: &Fake) -> String {
    format!(
        "providers:\n  a: {{type: openai, base_url: '{}', api_key: sk-a-secret-0123456789, responses: native}}\n  b: {{type: openai, base_url: '{}', api_key: sk-b-secret-0123456789, responses: native}}\nmodels:\n  m:\n    providers:\n      a: {{priority: 0, model_id: up-a}}\n      b: {{priority: 1, model_id: up-b}}\n",
        a.base_url(),
        b.base_url()
    )
}

/// The client's events: (type, payload) in order, and the raw body.
fn stream(p: &Proxy, body: &str) -> (Resp, Vec<(String, Value)>) {
    let r = p.post("/v1/responses", body);
    let events = r
        .body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            let data: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            if data.is_empty() {
                return None; // a keep-alive comment
            }
            let v: Value = serde_json::from_str(&data.join("\n"))
                .unwrap_or_else(|err| panic!("not JSON ({err}): {e}"));
            Some((v["type"].as_str().unwrap_or("").to_string(), v))
        })
        .collect();
    (r, events)
}

#[test]
fn an_in_band_error_before_output_fails_over_and_the_client_sees_one_prelude() {
    let quota = json!({"code": "insufficient_quota", "message": "You exceeded your current quota", "param": null});
    let a = Fake::new(Reply::Stream {
        events: vec![
            event(
                "response.created",
                0,
                json!({"response": response("resp_from_a", "in_progress")}),
            ),
            event(
                "response.in_progress",
                1,
                json!({"response": response("resp_from_a", "in_progress")}),
            ),
            event("error", 2, quota),
        ],
        pace: None,
        end: End::Eof,
    });
    let b = Fake::new(Reply::Stream {
        events: complete_stream("resp_from_b", "Hi from b"),
        pace: None,
        end: End::Eof,
    });
    let p = Proxy::start(&config(&a, &b));
    let (r, events) = stream(&p, r#"{"model":"m","input":"hi","stream":true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    // Only b's stream, every payload as b sent it, and nothing after its
    // terminal event: no `[DONE]`.
    assert!(!r.body.contains("resp_from_a"), "{}", r.body);
    assert!(!r.body.contains("[DONE]"), "{}", r.body);
    let sent: Vec<Value> = complete_stream("resp_from_b", "Hi from b")
        .iter()
        .map(|e| serde_json::from_str(e.split("data: ").nth(1).unwrap().trim()).unwrap())
        .collect();
    let got: Vec<Value> = events.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(got, sent);
    assert_eq!(
        events
            .iter()
            .filter(|(t, _)| t == "response.created")
            .count(),
        1
    );
    // Each upstream got the body with only `model` replaced: no
    // `stream_options` (not a Responses field).
    for (fake, model) in [(&a, "up-a"), (&b, "up-b")] {
        let got = fake.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "/v1/responses");
        assert_eq!(
            got[0].json(),
            json!({"model": model, "input": "hi", "stream": true})
        );
    }
    assert!(!r.body.contains("sk-a-secret"), "{}", r.body);
}

#[test]
fn a_stream_cut_after_output_ends_with_response_failed_and_an_error_event() {
    let mut events = complete_stream("resp_cut", "Hi");
    events.truncate(5); // up to the first text delta
    let a = Fake::new(Reply::Stream {
        events,
        pace: None,
        end: End::Cut,
    });
    let b = Fake::ok("never asked");
    let p = Proxy::start(&config(&a, &b));
    let (r, events) = stream(&p, r#"{"model":"m","input":"hi","stream":true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.count(), 0, "a committed stream never fails over");
    assert!(!r.body.contains("[DONE]"), "{}", r.body);
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
            "error",
        ],
        "{}",
        r.body
    );
    let (failed, error) = (&events[5].1, &events[6].1);
    assert_eq!(failed["response"]["id"], "resp_cut");
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["sequence_number"], 5);
    assert_eq!(error["sequence_number"], 6);
    assert_eq!(error["error"]["code"], "upstream_stream_error");
    assert!(!r.body.contains("sk-a-secret"), "{}", r.body);
}

/// The value of the series written exactly as `series`.
fn series(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

/// `/metrics` counts Responses under `endpoint="responses"`, with the
/// tokens of a JSON `response` (its `input_tokens`/`output_tokens`, not a
/// tool property named `usage` after them) and of a stream (from its
/// terminal event).
#[test]
fn metrics_count_responses_and_their_tokens() {
    let mut body = response("resp_json", "completed");
    body["usage"] = json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 11});
    body["tools"] = json!([{"type": "function", "name": "f", "strict": null,
        "parameters": {"type": "object", "properties": {"usage": {"type": "string"}}}}]);
    let a = Fake::new(Reply::ByStream {
        json: Box::new(Reply::json(200, body.clone())),
        stream: Box::new(Reply::Stream {
            events: complete_stream("resp_stream", "Hi"),
            pace: None,
            end: End::Eof,
        }),
    });
    let b = Fake::ok("never asked");
    let p = Proxy::start(&config(&a, &b));
    let r = p.post("/v1/responses", r#"{"model":"m","input":"hi"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), body, "a native JSON answer comes back unchanged");
    let (r, _) = stream(&p, r#"{"model":"m","input":"hi","stream":true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let scrape = p.get("/metrics").body;
    let want = |s: &str, v: f64| assert_eq!(series(&scrape, s), Some(v), "{s}\n{scrape}");
    want(
        "llm_proxy_requests_total{endpoint=\"responses\",model=\"m\",key=\"unknown\",code=\"200\"}",
        2.0,
    );
    // 7 + 3 prompt, 4 + 2 completion (complete_stream's usage).
    want(
        "llm_proxy_tokens_total{provider=\"a\",model=\"m\",key=\"unknown\",type=\"prompt\"}",
        10.0,
    );
    want(
        "llm_proxy_tokens_total{provider=\"a\",model=\"m\",key=\"unknown\",type=\"completion\"}",
        6.0,
    );
    assert_eq!(b.count(), 0);
}

/// `GET /v1/responses/{id}` is routed (GET and HEAD only; sub-paths are
/// not relayed) to the native providers' lookup, with the routed
/// endpoints' headers.
#[test]
fn get_a_response_is_routed_to_the_native_lookup() {
    let stored = response("resp_stored", "completed");
    let a = Fake::new(Reply::error(
        404,
        "No response found with id 'resp_stored'.",
    ));
    let b = Fake::new(Reply::json(200, stored.clone()));
    let p = Proxy::start(&config(&a, &b));
    let r = p.get("/v1/responses/resp_stored");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), stored);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert!(r.header("x-request-id").is_some());
    let got = b.requests();
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("GET", "/v1/responses/resp_stored")
    );
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer sk-b-secret-0123456789")
    );

    let r = p.post("/v1/responses/resp_stored", "{}");
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    for path in ["/v1/responses/resp_stored/cancel", "/v1/responses/"] {
        let r = p.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        r.error();
    }
    assert_eq!(
        a.count() + b.count(),
        2,
        "only the first GET reached upstreams"
    );
    let scrape = p.get("/metrics").body;
    assert!(
        scrape.contains("llm_proxy_requests_total{endpoint=\"responses\",model=\"unknown\",key=\"unknown\",code=\"200\"} 1"),
        "{scrape}"
    );
}

/// A Responses stream still running when the drain's
/// `server.shutdown_timeout` passes ends like any Responses stream that
/// fails after commit: `response.failed` for the same response, then an
/// `error` event `server_shutting_down` (not the chat `data: {error}`
/// event, which a Responses client would not recognise), no `[DONE]`.
#[test]
fn a_drain_ends_a_responses_stream_with_failed_and_error_events() {
    let release = Gate::new();
    let mut events = complete_stream("resp_drained", "Hi");
    events.truncate(5);
    let a = Fake::new(Reply::Stream {
        events,
        pace: None,
        end: End::HangUntil(release.clone()),
    });
    let b = Fake::ok("never asked");
    // Keep-alive ticks, at which a silent stream sees the deadline, every 0.5 s.
    let yaml = format!("server: {{shutdown_timeout: 1}}\n{}", config(&a, &b)).replacen(
        "responses: native}",
        "responses: native, stream_idle_timeout: 5}",
        1,
    );
    let p = Proxy::start(&yaml);
    // The head arrives at commit, with the held prelude.
    let resp = agent()
        .post(format!("{}/v1/responses", p.url))
        .header("content-type", "application/json")
        .send(r#"{"model":"m","input":"hi","stream":true}"#)
        .unwrap();
    assert_eq!(resp.status(), 200);
    p.handle.as_ref().unwrap().drain();
    let body = resp.into_body().read_to_string().unwrap();
    release.open();
    assert!(!body.contains("[DONE]"), "{body}");
    let payloads: Vec<Value> = body
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let n = payloads.len();
    assert_eq!(n, 7, "{body}");
    let (failed, error) = (&payloads[n - 2], &payloads[n - 1]);
    assert_eq!(failed["type"], "response.failed", "{body}");
    assert_eq!(failed["response"]["id"], "resp_drained");
    assert_eq!(failed["sequence_number"], 5);
    assert_eq!(error["type"], "error");
    assert_eq!(error["sequence_number"], 6);
    assert_eq!(error["code"], "server_shutting_down");
    assert_eq!(error["error"]["code"], "server_shutting_down");
}

/// An upstream that echoes its key in an in-band error (before output, so
/// the request fails over) and in an error after output: the key reaches
/// neither the client nor the trace-level log, whole or in part.
#[test]
fn keys_echoed_in_responses_error_events_reach_neither_client_nor_log() {
    let key_a = "sk-a-secret-0123456789";
    let echo = json!({"code": "invalid_api_key", "param": null,
        "message": format!("Incorrect API key provided: {key_a}")});
    let a = Fake::new(Reply::Stream {
        events: vec![
            event(
                "response.created",
                0,
                json!({"response": response("resp_a", "in_progress")}),
            ),
            event("error", 1, echo.clone()),
        ],
        pace: None,
        end: End::Eof,
    });
    let mut b_events = complete_stream("resp_b", "Hi");
    b_events.truncate(5);
    // After output the upstream's own error is passed on: with its key
    // taken out.
    let key_b = "sk-b-secret-0123456789";
    let message = format!("Incorrect API key provided: {key_b}");
    b_events.push(event(
        "error",
        5,
        json!({"code": "server_error", "param": null, "message": message}),
    ));
    let b = Fake::new(Reply::Stream {
        events: b_events,
        pace: None,
        end: End::Cut,
    });
    let mut bin = Logged::start(&config(&a, &b));
    let r = call(
        &bin.url,
        "/v1/responses",
        &[],
        Some(r#"{"model":"m","input":"hi","stream":true}"#),
    );
    let log = bin.finish();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert!(!r.body.contains("resp_a"), "{}", r.body);
    assert!(log.contains("provider a"), "the failover is logged:\n{log}");
    assert!(r.body.contains("Incorrect API key provided"), "{}", r.body);
    for key in [key_a, key_b] {
        assert!(leaked_fragments(&r.body, key, 8).is_empty(), "{}", r.body);
        assert!(leaked_fragments(&log, key, 8).is_empty(), "{log}");
    }
}

/// A coding agent's request (here 150 KB of instructions) is echoed in both
/// prelude events: 300 KB held, far past the 64 KiB that commits a chat
/// stream, and an error after it still fails over.
#[test]
fn a_large_prelude_is_held_and_still_fails_over() {
    let instructions = "Follow the repository's conventions. ".repeat(4096);
    assert!(instructions.len() > 150_000);
    let mut big = response("resp_big_a", "in_progress");
    big["instructions"] = json!(instructions);
    let a = Fake::new(Reply::Stream {
        events: vec![
            event("response.created", 0, json!({"response": big.clone()})),
            event("response.in_progress", 1, json!({"response": big})),
            event(
                "response.failed",
                2,
                json!({"response": {"id": "resp_big_a", "status": "failed",
                    "error": {"code": "server_error", "message": "overloaded"}}}),
            ),
        ],
        pace: None,
        end: End::Eof,
    });
    let b = Fake::new(Reply::Stream {
        events: complete_stream("resp_big_b", "Done"),
        pace: None,
        end: End::Eof,
    });
    let p = Proxy::start(&config(&a, &b));
    let body = json!({"model": "m", "input": "hi", "instructions": instructions, "stream": true});
    let (r, events) = stream(&p, &body.to_string());
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-llm-proxy-provider"),
        Some("b"),
        "{}",
        &r.body[..200.min(r.body.len())]
    );
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert!(!r.body.contains("resp_big_a"));
    assert_eq!(events.first().unwrap().1["response"]["id"], "resp_big_b");
    assert_eq!(events.last().unwrap().0, "response.completed");
}
