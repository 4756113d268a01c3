//! Arbitrary client bytes → `ApiRequest::parse` → the Anthropic Messages
//! request (or the 400 it becomes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_proxy::fuzzing::{ProviderError, anthropic_request};

fuzz_target!(|data: &[u8]| {
    let Some(out) = anthropic_request(data, "claude-fuzz", 4096) else {
        return; // refused before any provider sees it
    };
    match out {
        Ok(v) => {
            assert_eq!(v["model"], "claude-fuzz");
            assert!(v["messages"].is_array(), "messages: {}", v["messages"]);
            assert!(
                v["max_tokens"].as_u64().is_some_and(|n| n >= 1),
                "max_tokens: {}",
                v["max_tokens"]
            );
            assert!(serde_json::to_vec(&v).is_ok());
        }
        Err(ProviderError::Refused { error }) => {
            assert_eq!(error["type"], "invalid_request_error");
            assert!(error["message"].is_string(), "error: {error}");
        }
        Err(other) => panic!("a translation fails only with a 400, got {other:?}"),
    }
});
