//! Arbitrary upstream bytes → `SseReader` → Anthropic stream events →
//! `chat.completion.chunk` events, the way `AnthropicStream` drives them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_proxy::fuzzing::{AnthropicStreamMapper, sse_events};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The first byte's low bit: the client asked for a usage chunk.
    let Some((&b, body)) = data.split_first() else {
        return;
    };
    let mut mapper = AnthropicStreamMapper::new("gpt-fuzz", b & 1 == 1, 1_700_000_000);
    let (events, _) = sse_events(body, 8192);
    let mut finishes = 0;
    for ev in events {
        let Some(data) = ev.data.as_deref() else {
            continue; // a comment
        };
        let Ok(chunks) = mapper.map(ev.name.as_deref(), data) else {
            return; // the stream ends with an error
        };
        for c in chunks {
            let text = std::str::from_utf8(&c).expect("chunks are UTF-8");
            let json = text
                .strip_prefix("data: ")
                .and_then(|t| t.strip_suffix("\n\n"))
                .unwrap_or_else(|| panic!("not one SSE data event: {text:?}"));
            assert!(!json.contains('\n'), "a chunk spans lines: {json:?}");
            let v: Value = serde_json::from_str(json).expect("a chunk is JSON");
            assert_eq!(v["object"], "chat.completion.chunk");
            assert_eq!(v["model"], "gpt-fuzz");
            if v["choices"][0]["finish_reason"].is_string() {
                finishes += 1;
            }
            if let Some(u) = v.get("usage") {
                let n = |k: &str| {
                    u[k].as_u64()
                        .unwrap_or_else(|| panic!("usage.{k}: {}", u[k]))
                };
                assert!(n("total_tokens") >= n("prompt_tokens"));
            }
        }
        if mapper.stopped() {
            break; // the proxy stops reading at message_stop
        }
    }
    assert!(finishes <= 1, "{finishes} finish_reason chunks");
});
