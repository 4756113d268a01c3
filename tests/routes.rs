//! Typed routes and the one response writer: every path and method gets
//! the answer its route defines, and every answer carries the same headers
//! (`Date` included), whichever way it was written. Also the one rule for
//! when a stream commits.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use support::*;

/// Headers that only some answers carry, by design.
const ROUTE_SPECIFIC: [&str; 6] = [
    "allow",
    "cache-control",
    "retry-after",
    "connection",
    "x-llm-proxy-provider",
    "x-llm-proxy-attempts",
];

fn header_names(r: &Resp) -> BTreeSet<String> {
    r.headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| !ROUTE_SPECIFIC.contains(&k.as_str()))
        .collect()
}

#[test]
fn every_answer_has_the_same_headers_date_included() {
    let fake = Fake::ok("hello");
    let yaml = config_for(
        "m",
        &[("up", "openai", &fake)],
        "server: {max_body_bytes: 4096}",
    );
    let p = Proxy::start(&yaml);
    let big = "x".repeat(8192);
    let answers = [
        ("GET /health", p.get("/health")),
        ("GET /v1/models", p.get("/v1/models")),
        ("GET /v1/models/nope", p.get("/v1/models/nope")),
        ("GET /nope (body unread)", p.get("/nope")),
        ("GET chat (405, unread)", p.get("/v1/chat/completions")),
        ("POST chat", p.chat("m")),
        ("POST chat, bad JSON", p.post("/v1/chat/completions", "{")),
        (
            "POST chat, 413 unread",
            p.post("/v1/chat/completions", &big),
        ),
    ];
    let expected: BTreeSet<String> = [
        "content-length",
        "content-type",
        "date",
        "server",
        "x-request-id",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for (what, r) in &answers {
        assert_eq!(header_names(r), expected, "{what}: {:?}", r.headers);
        let date = r.header("date").unwrap();
        let when =
            httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{what}: {date}: {e}"));
        let skew = SystemTime::now()
            .duration_since(when)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(5), "{what}: {date}");
    }
    let statuses: Vec<u16> = answers.iter().map(|(_, r)| r.status).collect();
    assert_eq!(statuses, [200, 200, 404, 404, 405, 200, 400, 413]);
}

#[test]
fn each_route_answers_its_methods_only() {
    let fake = Fake::ok("hello");
    let p = Proxy::start(&config_for("m", &[("up", "openai", &fake)], ""));
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"] {
        let r = p.get(path);
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.header("allow"), Some("POST"), "{path}");
        assert_eq!(r.error()["code"], "method_not_allowed", "{path}");
    }
    for path in ["/health", "/v1/models", "/v1/models/m"] {
        let r = p.post(path, "{}");
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{path}");
    }
    // Near misses are not routes: no POST falls through to chat.
    for path in [
        "/v1/chat",
        "/v1/completions/x",
        "/v1/embedding",
        "/v2/embeddings",
        "/embeddings",
    ] {
        let r = p.post(path, &chat_body("m", false));
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.error()["code"], "unknown_url", "{path}");
    }
    assert_eq!(fake.count(), 0);
}

/// Azure's leading prompt-filter chunk (`choices: []`) carries no content:
/// a provider that sends it and then fails has not committed the client,
/// so the request fails over instead of ending in a mid-stream error.
#[test]
fn a_chunk_without_content_does_not_commit_the_stream() {
    let filter = "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n";
    let primary = Fake::new(Reply::Stream {
        events: vec![filter.to_string()],
        pace: None,
        end: End::Cut,
    });
    let backup = Fake::new(Reply::chunks(&["from ", "backup"], End::Done));
    let p = primary_backup(&primary, &backup, "");
    let resp = p.open_stream("m");
    assert_eq!(
        resp.headers().get("x-llm-proxy-provider").unwrap(),
        "backup"
    );
    let events = read_events(resp, |_| {});
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(delta_text(&events[..events.len() - 1]), "from backup");
    assert!(
        !events.iter().any(|e| e.contains("prompt_filter_results")),
        "the failed provider's held chunk is not sent: {events:?}"
    );
    assert_eq!((primary.count(), backup.count()), (1, 1));
}

/// The held chunk is sent at commit, before the content, when the same
/// provider goes on to answer.
#[test]
fn a_held_chunk_is_sent_at_commit() {
    let mut events = vec![
        "data: {\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n".to_string(),
    ];
    events.extend(chunk_events(&["Hi"]));
    let fake = Fake::new(Reply::Stream {
        events,
        pace: None,
        end: End::Done,
    });
    let p = Proxy::start(&config_for("m", &[("up", "openai", &fake)], ""));
    let got = read_events(p.open_stream("m"), |_| {});
    assert!(got[0].contains("prompt_filter_results"), "{got:?}");
    assert_eq!(got.last().unwrap(), "[DONE]");
    assert_eq!(delta_text(&got[1..got.len() - 1]), "Hi");
}

#[test]
fn models_and_errors_validate_against_the_spec() {
    let fake = Fake::ok("hello");
    let p = Proxy::start(&config_for("m", &[("up", "openai", &fake)], ""));
    spec::assert_valid("ListModelsResponse", &p.get("/v1/models").json());
    spec::assert_valid("Model", &p.get("/v1/models/m").json());
    for r in [p.get("/v1/models/x"), p.get("/x"), p.get("/v1/embeddings")] {
        spec::assert_valid("ErrorResponse", &r.json());
    }
    spec::assert_valid("CreateChatCompletionResponse", &p.chat("m").json());
}

/// The validator is not vacuous: it finds the spec and rejects an error
/// without `param`, a model without `owned_by`.
#[test]
fn the_spec_validator_rejects_missing_fields() {
    let bad = [
        (
            "ErrorResponse",
            serde_json::json!({"error": {"message": "m", "type": "t", "code": null}}),
        ),
        (
            "Model",
            serde_json::json!({"id": "m", "object": "model", "created": 1}),
        ),
        (
            "ListModelsResponse",
            serde_json::json!({"object": "list", "data": [{"id": 5}]}),
        ),
    ];
    for (schema, v) in bad {
        let caught = std::panic::catch_unwind(|| spec::assert_valid(schema, &v));
        assert!(caught.is_err(), "{schema} accepted {v}");
    }
}
