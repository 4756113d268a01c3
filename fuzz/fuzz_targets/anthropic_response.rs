//! Arbitrary upstream bytes → an Anthropic message → `chat.completion`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_proxy::fuzzing::anthropic_response;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(v) = anthropic_response(data, "gpt-fuzz", 1_700_000_000) else {
        return; // refused as not a message: a decode error, failover
    };
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-fuzz");
    assert!(v["id"].is_string());
    let choice = &v["choices"][0];
    let finish = choice["finish_reason"].as_str().unwrap_or("");
    assert!(
        ["stop", "length", "tool_calls", "content_filter"].contains(&finish),
        "finish_reason {finish:?}"
    );
    let message = &choice["message"];
    assert!(message["content"].is_string() || message["content"].is_null());
    if let Some(calls) = message.get("tool_calls") {
        for c in calls.as_array().expect("tool_calls is an array") {
            let args = c["function"]["arguments"]
                .as_str()
                .expect("arguments is a string");
            assert!(
                serde_json::from_str::<Value>(args).is_ok(),
                "arguments {args:?}"
            );
        }
    }
    let u = &v["usage"];
    let n = |k: &str| {
        u[k].as_u64()
            .unwrap_or_else(|| panic!("usage.{k}: {}", u[k]))
    };
    assert!(n("total_tokens") >= n("prompt_tokens"));
    assert!(n("total_tokens") >= n("completion_tokens"));
});
