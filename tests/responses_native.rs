//! `/v1/responses` on native providers (`type: openai` with `responses:
//! native`, and `type: azure`), against fake upstreams: the body goes out
//! with only `model` replaced, answers and events come back byte for byte,
//! in-band errors before the first output fail over, a failure after it
//! ends the stream honestly; and `GET /v1/responses/{id}`'s lookup rule.
//! Every answer and event is checked against the spec's schemas.

mod support;

use serde_json::{Value, json};
use support::spec::assert_valid;
use support::*;

/// A `Response` as OpenAI sends it (compact JSON from the fake, so any
/// re-serialization by the proxy would show).
fn response(id: &str, status: &str, output: Value, usage: bool) -> Value {
    let mut r = json!({
        "id": id, "object": "response", "created_at": 1_700_000_000,
        "status": status,
        "completed_at": if status == "completed" { json!(1_700_000_001) } else { Value::Null },
        "error": null, "incomplete_details": null, "instructions": null,
        "model": "gpt-4.1-2025-04-14", "output": output,
        "parallel_tool_calls": true, "metadata": {}, "tool_choice": "auto", "tools": [],
        "temperature": 1.0, "top_p": 1.0, "max_output_tokens": null,
        "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
        "text": {"format": {"type": "text"}}, "truncation": "disabled",
        "store": true, "background": false
    });
    if usage {
        r["usage"] = json!({"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13});
    }
    r
}

fn message(text: &str, status: &str) -> Value {
    json!({"type": "message", "id": "msg_1", "status": status, "role": "assistant",
        "content": if status == "in_progress" { json!([]) } else {
            json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]) }})
}

/// One upstream event. The payload has a space after each colon and `é`
/// escaped, which the proxy would lose if it re-serialized anything.
fn event(ty: &str, seq: u64, fields: Value) -> String {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), json!(ty));
    for (k, v) in fields.as_object().unwrap() {
        m.insert(k.clone(), v.clone());
    }
    m.insert("sequence_number".into(), json!(seq));
    let data = Value::Object(m)
        .to_string()
        .replace("\":", "\": ")
        .replace('é', "\\u00e9");
    format!("event: {ty}\ndata: {data}\n\n")
}

/// `response.created` … the first text delta (seq 0..=4) of response `id`.
fn opening(id: &str) -> Vec<String> {
    let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
    vec![
        event(
            "response.created",
            0,
            json!({"response": response(id, "in_progress", json!([]), false)}),
        ),
        event(
            "response.in_progress",
            1,
            json!({"response": response(id, "in_progress", json!([]), false)}),
        ),
        event(
            "response.output_item.added",
            2,
            json!({"output_index": 0, "item": message("", "in_progress")}),
        ),
        event(
            "response.content_part.added",
            3,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part}),
        ),
        event(
            "response.output_text.delta",
            4,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Caf", "logprobs": []}),
        ),
    ]
}

/// A whole text stream of response `id`, saying "Café".
fn full_stream(id: &str) -> Vec<String> {
    let done = message("Café", "completed");
    let mut ev = opening(id);
    ev.extend([
        event("response.output_text.delta", 5, json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "é", "logprobs": []})),
        event("response.output_text.done", 6, json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Café", "logprobs": []})),
        event("response.content_part.done", 7, json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": done["content"][0]})),
        event("response.output_item.done", 8, json!({"output_index": 0, "item": done})),
        event("response.completed", 9, json!({"response": response(id, "completed", json!([done]), true)})),
    ]);
    ev
}

fn stream_reply(events: Vec<String>, end: End) -> Reply {
    Reply::Stream {
        events,
        pace: None,
        end,
    }
}

/// One client event: its `event:` name and its `data:` payload.
#[derive(Debug, PartialEq)]
struct Ev {
    name: Option<String>,
    data: String,
}

/// The events of a whole SSE body (keep-alive comments skipped).
fn events_of(body: &str) -> Vec<Ev> {
    body.split("\n\n")
        .filter_map(|e| {
            let mut name = None;
            let mut data: Vec<&str> = Vec::new();
            for l in e.lines() {
                if let Some(n) = l.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = l.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            (!data.is_empty()).then(|| Ev {
                name,
                data: data.join("\n"),
            })
        })
        .collect()
}

/// Each event's name is its type, and it validates by its own schema and
/// as a `ResponseStreamEvent`.
fn assert_events_valid(events: &[Ev]) {
    for e in events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        let ty = v["type"].as_str().unwrap();
        assert_eq!(e.name.as_deref(), Some(ty), "{}", e.data);
        support::spec::assert_event_valid(&v);
    }
}

/// The payloads of upstream events, as the client must get them.
fn payloads(events: &[String]) -> Vec<String> {
    events.iter().map(|e| events_of(e).remove(0).data).collect()
}

/// A config: each `(name, kind, fake)` a provider (openai ones native
/// unless named `tr…`), all serving model `m` in the order given.
fn config(providers: &[(&str, &str, &Fake)], extra: &str) -> String {
    let mut yaml = format!("{extra}\nproviders:\n");
    for (name, kind, fake) in providers {
        let base = if *kind == "azure" {
            fake.root_url()
        } else {
            fake.base_url()
        };
        yaml.push_str(&format!(
            "  {name}:\n    type: {kind}\n    api_key: sk-{name}-key-000001\n    base_url: {base}\n    timeout: 5\n    stream_timeout: 10\n"
        ));
        match *kind {
            "azure" => yaml.push_str("    api_version: 2024-10-21\n"),
            _ if !name.starts_with("tr") => yaml.push_str("    responses: native\n"),
            _ => {}
        }
    }
    yaml.push_str("models:\n  m:\n    providers:\n");
    for (i, (name, _, _)) in providers.iter().enumerate() {
        yaml.push_str(&format!(
            "      {name}: {{priority: {i}, model_id: up-{name}}}\n"
        ));
    }
    yaml
}

fn provider_state(p: &Proxy, name: &str) -> Value {
    let r = p.get("/admin/providers");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap()
        .clone()
}

fn assert_no_key(text: &str) {
    assert!(!text.contains("-key-000001"), "a key leaked: {text}");
}

#[test]
fn native_json_passes_byte_for_byte_with_only_model_replaced() {
    let body = response(
        "resp_up1",
        "completed",
        json!([message("Café", "completed")]),
        true,
    )
    .to_string()
    .replace("\":", "\": ")
    .replace('é', "\\u00e9");
    let fake = Fake::new(Reply::raw(200, &body));
    let p = Proxy::start(&config(&[("nat", "openai", &fake)], ""));
    let sent = json!({"model": "m", "input": [{"role": "user", "content": "hi"}],
        "instructions": "be brief", "store": true, "previous_response_id": "resp_prev",
        "include": ["reasoning.encrypted_content"], "x_unknown": {"a": [1]}});
    let r = p.post("/v1/responses", &sent.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, body, "the answer is the upstream's, byte for byte");
    assert_valid("Response", &r.json());
    assert_eq!(r.header("x-llm-proxy-provider"), Some("nat"));
    let got = &fake.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/v1/responses");
    assert_eq!(
        got.header("authorization"),
        Some("Bearer sk-nat-key-000001")
    );
    let mut want = sent.clone();
    want["model"] = json!("up-nat");
    assert_eq!(got.json(), want, "only model replaced, nothing added");
}

#[test]
fn a_200_whose_status_is_failed_fails_over() {
    let mut failed = response("resp_bad", "failed", json!([]), false);
    failed["error"] = json!({"code": "server_error", "message": "the model crashed"});
    let first = Fake::new(Reply::json(200, failed));
    let good = response(
        "resp_ok",
        "completed",
        json!([message("ok", "completed")]),
        true,
    );
    let second = Fake::new(Reply::json(200, good.clone()));
    let p = Proxy::start(&config(
        &[("a", "openai", &first), ("b", "openai", &second)],
        "",
    ));
    let r = p.post("/v1/responses", r#"{"model":"m","input":"hi"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), good);
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    let a = provider_state(&p, "a");
    assert_eq!(a["failures"], 1, "{a}");
    assert!(
        a["last_error"]
            .as_str()
            .unwrap()
            .contains("the model crashed"),
        "{a}"
    );
}

#[test]
fn azure_native_goes_to_the_v1_responses_url_with_api_key() {
    let body = response(
        "resp_az",
        "completed",
        json!([message("hi", "completed")]),
        true,
    );
    let fake = Fake::new(Reply::ByStream {
        json: Box::new(Reply::json(200, body.clone())),
        stream: Box::new(stream_reply(full_stream("resp_az"), End::Eof)),
    });
    let p = Proxy::start(&config(&[("az", "azure", &fake)], ""));
    let r = p.post("/v1/responses", r#"{"model":"m","input":"hi"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), body);
    let r = p.post(
        "/v1/responses",
        r#"{"model":"m","input":"hi","stream":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(events_of(&r.body).len(), 10, "{}", r.body);
    for got in fake.requests() {
        // The v1 API: no deployment in the path, no api-version.
        assert_eq!(got.path, "/openai/v1/responses");
        assert_eq!(got.header("api-key"), Some("sk-az-key-000001"));
        assert_eq!(got.header("authorization"), None);
        assert_eq!(
            got.json()["model"],
            "up-az",
            "the deployment goes in the body"
        );
        assert!(got.json().get("stream_options").is_none());
    }
}

#[test]
fn native_stream_passes_every_payload_unchanged() {
    let upstream = full_stream("resp_s1");
    let fake = Fake::new(stream_reply(upstream.clone(), End::Eof));
    let p = Proxy::start(&config(&[("nat", "openai", &fake)], ""));
    let r = p.post(
        "/v1/responses",
        r#"{"model":"m","input":"hi","stream":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let got = events_of(&r.body);
    let data: Vec<String> = got.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        data,
        payloads(&upstream),
        "every payload as the upstream sent it"
    );
    assert!(!r.body.contains("[DONE]"), "{}", r.body);
    assert_events_valid(&got);
    // Only `model` replaced: no `stream_options` for a Responses stream.
    assert_eq!(
        fake.requests()[0].json(),
        json!({"model": "up-nat", "input": "hi", "stream": true})
    );
    assert_eq!(provider_state(&p, "nat")["failures"], 0);
}

#[test]
fn an_in_band_error_before_output_fails_over_to_the_next_native() {
    let mut quota = opening("resp_q")[..2].to_vec();
    quota.push(event(
        "error",
        2,
        json!({"error": {"type": "insufficient_quota", "code": "insufficient_quota",
            "message": "You exceeded your current quota (sk-a-key-000001)", "param": null}}),
    ));
    let first = Fake::new(stream_reply(quota, End::Eof));
    let upstream = full_stream("resp_ok");
    let second = Fake::new(stream_reply(upstream.clone(), End::Eof));
    let p = Proxy::start(&config(
        &[("a", "openai", &first), ("b", "openai", &second)],
        "",
    ));
    let r = p.post(
        "/v1/responses",
        r#"{"model":"m","input":"hi","stream":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    let got = events_of(&r.body);
    // One prelude, the second provider's: the first's was only held.
    let data: Vec<String> = got.iter().map(|e| e.data.clone()).collect();
    assert_eq!(data, payloads(&upstream));
    assert!(!r.body.contains("resp_q"), "{}", r.body);
    assert_events_valid(&got);
    let a = provider_state(&p, "a");
    assert_eq!(a["failures"], 1, "{a}");
    let why = a["last_error"].as_str().unwrap();
    assert!(why.contains("insufficient_quota"), "{why}");
    assert_no_key(why);
}

#[test]
fn the_upstreams_failure_after_output_is_passed_through_with_nothing_appended() {
    let mut upstream = opening("resp_f");
    let mut failed = response("resp_f", "failed", json!([]), false);
    failed["error"] = json!({"code": "server_error", "message": "The model failed mid-answer"});
    upstream.push(event("response.failed", 5, json!({"response": failed})));
    let fake = Fake::new(stream_reply(upstream.clone(), End::Eof));
    let p = Proxy::start(&config(&[("nat", "openai", &fake)], ""));
    let r = p.post(
        "/v1/responses",
        r#"{"model":"m","input":"hi","stream":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = events_of(&r.body);
    let data: Vec<String> = got.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        data,
        payloads(&upstream),
        "ends with the upstream's own event"
    );
    assert_events_valid(&got);
    // Counted against the provider all the same.
    let s = provider_state(&p, "nat");
    assert_eq!(s["failures"], 1, "{s}");
}

#[test]
fn a_cut_after_output_ends_with_failed_and_error_for_the_held_response() {
    let upstream = opening("resp_cut");
    let fake = Fake::new(stream_reply(upstream.clone(), End::Cut));
    let p = Proxy::start(&config(&[("nat", "openai", &fake)], ""));
    let r = p.post(
        "/v1/responses",
        r#"{"model":"m","input":"hi","stream":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = events_of(&r.body);
    assert_eq!(got.len(), upstream.len() + 2, "{}", r.body);
    let data: Vec<String> = got[..upstream.len()]
        .iter()
        .map(|e| e.data.clone())
        .collect();
    assert_eq!(data, payloads(&upstream));
    assert_events_valid(&got);
    let failed: Value = serde_json::from_str(&got[5].data).unwrap();
    assert_eq!(failed["type"], "response.failed");
    assert_eq!(
        failed["sequence_number"], 5,
        "numbered on from the upstream's"
    );
    assert_eq!(
        failed["response"]["id"], "resp_cut",
        "the held response's id"
    );
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["code"], "server_error");
    let error: Value = serde_json::from_str(&got[6].data).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["sequence_number"], 6);
    assert_eq!(error["code"], "upstream_stream_error");
    assert_eq!(error["error"]["code"], "upstream_stream_error");
    assert_no_key(&r.body);
    let s = provider_state(&p, "nat");
    assert_eq!(s["failures"], 1, "{s}");
}

// ---------------------------------------------------------------------------
// GET /v1/responses/{id}

fn stored(id: &str) -> Value {
    response(
        id,
        "completed",
        json!([message("stored", "completed")]),
        true,
    )
}

fn not_found() -> Reply {
    Reply::json(
        404,
        json!({"error": {"message": "Response with id 'x' not found.", "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

/// Two models, each on its own native provider, and a third on a
/// translating one.
fn two_natives(a: &Fake, b: &Fake, tr: &Fake, extra: &str) -> Proxy {
    let yaml = format!(
        "{extra}
providers:
  a: {{type: openai, base_url: '{}', api_key: sk-a-key-000001, responses: native}}
  b: {{type: openai, base_url: '{}', api_key: sk-b-key-000001, responses: native}}
  tr: {{type: openai, base_url: '{}', api_key: sk-tr-key-000001}}
models:
  ma:
    providers:
      a: {{priority: 0}}
  mb:
    providers:
      b: {{priority: 0}}
  mt:
    providers:
      tr: {{priority: 0}}
",
        a.base_url(),
        b.base_url(),
        tr.base_url()
    );
    Proxy::start(&yaml)
}

#[test]
fn retrieve_asks_each_native_provider_until_one_has_it() {
    let a = Fake::new(not_found());
    let body = stored("resp_abc").to_string();
    let b = Fake::new(Reply::raw(200, &body));
    let tr = Fake::ok("never");
    let p = two_natives(&a, &b, &tr, "");
    let r = p.get("/v1/responses/resp_abc?include[]=message.output_text.logprobs");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, body, "the stored response unchanged");
    assert_valid("Response", &r.json());
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
    for (fake, key) in [(&a, "sk-a-key-000001"), (&b, "sk-b-key-000001")] {
        let got = &fake.requests()[0];
        assert_eq!(got.method, "GET");
        assert_eq!(
            got.path,
            "/v1/responses/resp_abc?include[]=message.output_text.logprobs"
        );
        assert_eq!(
            got.header("authorization"),
            Some(format!("Bearer {key}").as_str())
        );
    }
    assert_eq!(tr.count(), 0, "a translating provider stores nothing");
    // A lookup: no breaker counts it, the 404 included.
    for name in ["a", "b"] {
        let s = provider_state(&p, name);
        assert_eq!(
            (s["requests"].as_u64(), s["failures"].as_u64()),
            (Some(0), Some(0)),
            "{s}"
        );
    }
}

#[test]
fn retrieve_with_model_asks_only_that_models_natives_and_passes_errors() {
    let a = Fake::new(Reply::raw(200, &stored("resp_1").to_string()));
    let b = Fake::new(Reply::error(401, "bad key sk-b-key-000001"));
    let tr = Fake::ok("never");
    let p = two_natives(&a, &b, &tr, "");
    let r = p.get("/v1/responses/resp_1?model=mb");
    assert_eq!(r.status, 401, "{}", r.body);
    let e = r.error();
    assert_eq!(e["provider"], "b");
    assert_no_key(&r.body);
    assert_eq!(a.count(), 0, "model mb is not on provider a");
    assert_eq!(
        b.requests()[0].path,
        "/v1/responses/resp_1",
        "model is not forwarded"
    );
    let r = p.get("/v1/responses/resp_1?model=nope");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.error()["code"], "model_not_found");
    let r = p.get("/v1/responses/resp_1?model=mt");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.error()["code"], "response_not_found");
    assert!(
        r.error()["message"]
            .as_str()
            .unwrap()
            .contains("stores nothing"),
        "{}",
        r.body
    );
    assert_eq!(tr.count(), 0);
}

#[test]
fn retrieve_answers_404_when_no_native_provider_has_it() {
    let a = Fake::new(not_found());
    let b = Fake::new(not_found());
    let tr = Fake::ok("never");
    let p = two_natives(&a, &b, &tr, "");
    let r = p.get("/v1/responses/resp_gone");
    assert_eq!(r.status, 404, "{}", r.body);
    let e = r.error();
    assert_eq!(e["code"], "response_not_found");
    assert!(e["message"].as_str().unwrap().contains("resp_gone"), "{e}");
    assert_eq!((a.count(), b.count(), tr.count()), (1, 1, 0));
}

#[test]
fn retrieve_refuses_stream_bad_ids_and_models_the_key_may_not_use() {
    let a = Fake::new(Reply::raw(200, &stored("resp_1").to_string()));
    let b = Fake::new(Reply::raw(200, &stored("resp_1").to_string()));
    let tr = Fake::ok("never");
    let auth = "auth:\n  keys:\n    - name: only-b\n      key: client-key-bravo-000001\n      models: [mb]\n";
    let p = two_natives(&a, &b, &tr, auth);
    let get = |path: &str| {
        call(
            &p.url,
            path,
            &[("authorization", "Bearer client-key-bravo-000001")],
            None,
        )
    };
    let r = get("/v1/responses/resp_1?stream=true");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "stream");
    for bad in [
        "/v1/responses/resp_%2F..",
        "/v1/responses/..",
        "/v1/responses/a%3Fb",
    ] {
        let r = get(bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let r = get("/v1/responses/resp_1?model=ma");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error()["code"], "model_not_allowed");
    assert_eq!((a.count(), b.count()), (0, 0), "refusals reach no provider");
    // Without a model: only the providers of models the key may use.
    let r = get("/v1/responses/resp_1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    assert_eq!((a.count(), b.count()), (0, 1));
}

#[test]
fn retrieve_asks_a_provider_whose_breaker_is_open() {
    let a = Fake::new(not_found());
    let b = Fake::new(Reply::raw(200, &stored("resp_1").to_string()));
    // b's breaker opens on one failed POST, for ten minutes.
    b.push(Reply::error(500, "down"));
    let tr = Fake::ok("never");
    let p = two_natives(
        &a,
        &b,
        &tr,
        "failover:\n  max_failures: 1\n  cooldown: 600\n",
    );
    let r = p.post("/v1/responses", r#"{"model":"mb","input":"hi"}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(provider_state(&p, "b")["state"], "open");
    let r = p.get("/v1/responses/resp_1");
    assert_eq!(
        r.status, 200,
        "a lookup does not consult the breaker: {}",
        r.body
    );
    assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    let s = provider_state(&p, "b");
    assert_eq!(
        (s["state"].as_str(), s["failures"].as_u64()),
        (Some("open"), Some(1)),
        "{s}"
    );
}

#[test]
fn keys_echoed_by_native_upstreams_reach_neither_client_nor_log() {
    const KEY: &str = "sk-a-key-000001";
    let mut quota = opening("resp_q")[..2].to_vec();
    quota.push(event(
        "error",
        2,
        json!({"code": "insufficient_quota", "message": format!("quota exceeded for {KEY}"), "param": null}),
    ));
    let a = Fake::new(stream_reply(quota, End::Eof));
    let mut failed = response("resp_f", "failed", json!([]), false);
    failed["error"] = json!({"code": "server_error", "message": format!("bad key {KEY}")});
    a.push(stream_reply(opening("resp_q"), End::Eof)); // no terminal event
    a.push(Reply::json(200, failed));
    a.push(Reply::error(
        401,
        &format!("Incorrect API key provided: {KEY}"),
    ));
    let b = Fake::new(Reply::Close);
    // Every request reaches `a`: its breaker never opens here.
    let mut p = Logged::start(&config(
        &[("a", "openai", &a), ("b", "openai", &b)],
        "failover:\n  max_failures: 100\n",
    ));
    let stream = r#"{"model":"m","input":"hi","stream":true}"#;
    let mut seen = String::new();
    // 1: cut after output (EOF without a terminal event): failed + error.
    let r = call(&p.url, "/v1/responses", &[], Some(stream));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("event: response.failed"), "{}", r.body);
    seen.push_str(&r.body);
    // 2: a 200 that failed, then b closes: 503 naming the failures.
    let r = call(
        &p.url,
        "/v1/responses",
        &[],
        Some(r#"{"model":"m","input":"hi"}"#),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    seen.push_str(&r.body);
    // 3: the lookup's 401 is passed through.
    let r = call(&p.url, "/v1/responses/resp_x", &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    seen.push_str(&r.body);
    // 4: the in-band error before output, then b closes.
    let r = call(&p.url, "/v1/responses", &[], Some(stream));
    assert_eq!(r.status, 503, "{}", r.body);
    seen.push_str(&r.body);
    let admin = call(&p.url, "/admin/providers", &[], None);
    seen.push_str(&admin.body);
    let log = p.finish();
    assert!(
        log.contains("insufficient_quota"),
        "the log says why:\n{log}"
    );
    seen.push_str(&log);
    let leaks = leaked_fragments(&seen, KEY, 8);
    assert!(leaks.is_empty(), "key fragments leaked: {leaks:?}\n{seen}");
}

#[test]
fn a_drain_during_a_native_stream_ends_it_with_failed_and_error() {
    let release = Gate::new();
    let upstream = opening("resp_d");
    let fake = Fake::new(stream_reply(
        upstream.clone(),
        End::HangUntil(release.clone()),
    ));
    // Keep-alive ticks every 0.1 s, where the relay sees the drain's deadline.
    let yaml = config(
        &[("nat", "openai", &fake)],
        "server:\n  shutdown_timeout: 0.3\n",
    )
    .replace(
        "stream_timeout: 10\n",
        "stream_timeout: 10\n    stream_idle_timeout: 1\n",
    );
    let p = Proxy::start(&yaml);
    let url = p.url.clone();
    let client = std::thread::spawn(move || {
        call(
            &url,
            "/v1/responses",
            &[],
            Some(r#"{"model":"m","input":"hi","stream":true}"#),
        )
    });
    fake.wait_for(1);
    p.handle.as_ref().unwrap().drain();
    let r = client.join().unwrap();
    release.open();
    assert_eq!(r.status, 200, "{}", r.body);
    let got = events_of(&r.body);
    assert_eq!(got.len(), upstream.len() + 2, "{}", r.body);
    assert_events_valid(&got);
    let failed: Value = serde_json::from_str(&got[5].data).unwrap();
    assert_eq!(failed["response"]["id"], "resp_d");
    assert_eq!(failed["sequence_number"], 5);
    let error: Value = serde_json::from_str(&got[6].data).unwrap();
    assert_eq!(error["code"], "server_shutting_down");
    assert_eq!(error["sequence_number"], 6);
}

#[test]
fn a_complete_native_stream_leaves_its_connection_for_the_next_request() {
    let fake = Fake::new(stream_reply(full_stream("resp_r"), End::Eof));
    let p = Proxy::start(&config(&[("nat", "openai", &fake)], ""));
    for _ in 0..3 {
        let r = p.post(
            "/v1/responses",
            r#"{"model":"m","input":"hi","stream":true}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(events_of(&r.body).len(), 10);
    }
    assert_eq!(fake.count(), 3);
    assert_eq!(
        fake.connections(),
        1,
        "the body was read to its end each time"
    );
}
