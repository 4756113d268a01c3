//! `POST /v1/embeddings`: openai and azure kinds; the body goes upstream
//! with only `model` replaced and the answer comes back unchanged.

mod support;

use serde_json::{Value, json};
use support::endpoint::Case;
use support::*;

fn answer(tag: &str) -> Value {
    json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 1.5e-7]}],
        "model": format!("text-embedding-{tag}"),
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    })
}

const CASE: Case = Case {
    path: "/v1/embeddings",
    required: "input",
    body: |model| json!({"model": model, "input": ["one", "two"], "encoding_format": "float"}),
    answer,
    schema: "CreateEmbeddingResponse",
    openai_yaml: "",
    refused_body: r#"{"model":"m"}"#,
    azure_path: None,
};

#[test]
fn embeddings_pass_through_with_only_model_replaced() {
    CASE.passes_through();
}

#[test]
fn embeddings_base64_and_string_input_pass_through() {
    let b64 = json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": "AACAPwAAAEA="}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2}
    });
    let fake = Fake::new(Reply::json(200, b64.clone()));
    let p = Proxy::start(&config_for("m", &[("up", "openai", &fake)], ""));
    let sent =
        json!({"model": "m", "input": "a string", "encoding_format": "base64", "dimensions": 2});
    let r = p.post("/v1/embeddings", &sent.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, b64.to_string());
    let got = fake.requests()[0].json();
    assert_eq!(got["input"], "a string");
    assert_eq!(got["encoding_format"], "base64");
    assert_eq!(got["dimensions"], 2);
}

#[test]
fn embeddings_a_stream_field_is_passed_through_not_obeyed() {
    let fake = Fake::new(Reply::json(200, answer("x")));
    let p = Proxy::start(&config_for("m", &[("up", "openai", &fake)], ""));
    let r = p.post(
        "/v1/embeddings",
        r#"{"model":"m","input":"x","stream":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(fake.requests()[0].json()["stream"], true);
}

#[test]
fn embeddings_azure_path() {
    CASE.azure_path();
}

#[test]
fn embeddings_fail_over_on_500() {
    CASE.fails_over();
}

#[test]
fn embeddings_fail_over_on_a_body_that_is_not_a_list() {
    CASE.wrong_shape_fails_over();
}

#[test]
fn embeddings_breaker_skips_a_failed_provider() {
    CASE.breaker_skips();
}

#[test]
fn embeddings_all_failed_is_503_without_keys() {
    CASE.all_fail();
}

#[test]
fn embeddings_upstream_400_passes_through() {
    CASE.upstream_400_passes_through();
}

#[test]
fn embeddings_refusals_in_the_openai_shape() {
    CASE.refusals();
}

#[test]
fn embeddings_skip_anthropic_without_touching_its_breaker() {
    CASE.anthropic_skipped();
}
