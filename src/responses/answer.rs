//! Answer: a `chat.completion` → a Responses `Response` object (design
//! §2.3), and the `Response` skeleton the stream's lifecycle events carry
//! (§1.1: every field the spec requires, echoed from the request).

use serde_json::{Map, Value, json};

use super::Echo;
use crate::openai::ApiRequest;

/// A `Response` with the request's echo fields (design §1.1), `status`,
/// and no output yet. `usage` is left out: the spec does not allow `null`,
/// and it is added where it is known (the terminal events, a JSON answer).
pub fn skeleton(req: &ApiRequest, hex: &str, created_at: u64, status: &str) -> Map<String, Value> {
    Echo::of(req).response(&format!("resp_{hex}"), created_at, status)
}

/// `status` and `incomplete_details` from a chat `finish_reason`.
pub fn status_of(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// `ResponseUsage` from a chat `usage` object (zeros where it is missing).
/// Cache writes are not reported by Chat Completions: always 0.
pub fn usage_of(chat_usage: Option<&Value>) -> Value {
    let n = |p: &str| {
        chat_usage
            .and_then(|u| u.pointer(p))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let input = n("/prompt_tokens");
    let output = n("/completion_tokens");
    let total = chat_usage
        .and_then(|u| u.get("total_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(input.saturating_add(output));
    json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": n("/prompt_tokens_details/cached_tokens"),
            "cache_write_tokens": 0,
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": n("/completion_tokens_details/reasoning_tokens"),
        },
        "total_tokens": total,
    })
}

/// An `output_text` content part.
pub fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `refusal` content part.
pub fn refusal_part(refusal: &str) -> Value {
    json!({"type": "refusal", "refusal": refusal})
}

/// An output `message` item.
pub fn message_item(hex: &str, status: &str, content: Vec<Value>) -> Value {
    json!({
        "type": "message",
        "id": format!("msg_{hex}"),
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

/// A `function_call` output item. `i` is the call's index among the
/// answer's calls.
pub fn call_item(
    hex: &str,
    i: usize,
    call_id: &str,
    name: &str,
    args: &str,
    status: &str,
) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{hex}_{i}"),
        "call_id": call_id,
        "name": name,
        "arguments": args,
        "status": status,
    })
}

/// A whole `chat.completion` as a `Response`. Only `choices[0]` is read:
/// the request translation never asks for more.
pub fn from_chat(chat: &Value, req: &ApiRequest, hex: &str, created_at: u64, now: u64) -> Value {
    let choice = chat.pointer("/choices/0");
    let msg = choice.and_then(|c| c.get("message"));
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let (status, details) = status_of(finish);
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };

    let mut output = Vec::new();
    let mut content = Vec::new();
    if let Some(t) = msg
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(text_part(t));
    }
    if let Some(r) = msg.and_then(|m| m.get("refusal")).and_then(Value::as_str) {
        content.push(refusal_part(r));
    }
    let calls = msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map_or(&[][..], |c| &c[..]);
    if !content.is_empty() {
        output.push(message_item(hex, item_status, content));
    }
    for (i, call) in calls.iter().enumerate() {
        let s = |p: &str| call.pointer(p).and_then(Value::as_str);
        let call_id = s("/id").map_or_else(|| format!("call_{hex}_{i}"), str::to_string);
        output.push(call_item(
            hex,
            i,
            &call_id,
            s("/function/name").unwrap_or(""),
            s("/function/arguments").unwrap_or(""),
            "completed",
        ));
    }
    if output.is_empty() {
        // `output_text` is "" and `output[0]` exists, as clients expect.
        output.push(message_item(hex, item_status, vec![text_part("")]));
    }

    let mut r = skeleton(req, hex, created_at, status);
    if status == "completed" {
        r.insert("completed_at".into(), json!(now));
    }
    r.insert("incomplete_details".into(), details);
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), usage_of(chat.get("usage")));
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::super::translate::spec::assert_valid;
    use super::*;
    use crate::openai::Endpoint;

    const HEX: &str = "00112233445566778899aabbccddeeff";

    fn req(body: Value) -> ApiRequest {
        let Value::Object(body) = body else { panic!() };
        ApiRequest {
            endpoint: Endpoint::Chat,
            model: body["model"].as_str().unwrap().to_string(),
            stream: false,
            body,
        }
    }

    fn plain() -> ApiRequest {
        req(json!({"model": "client-model", "input": "hi"}))
    }

    fn completion(message: Value, finish: Value, usage: Value) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
               "choices": [{"index": 0, "message": message, "finish_reason": finish}],
               "usage": usage})
    }

    fn answer(chat: &Value, r: &ApiRequest) -> Value {
        let out = from_chat(chat, r, HEX, 100, 105);
        assert_valid("Response", &out);
        out
    }

    #[test]
    fn text_answer_with_echo_fields() {
        let r = req(
            json!({"model": "client-model", "input": "hi", "instructions": "be brief",
            "tools": [{"type": "function", "name": "f", "description": "d"}],
            "tool_choice": "auto", "parallel_tool_calls": false, "temperature": 0.5,
            "max_output_tokens": 20, "metadata": {"k": "v"}, "user": "u1", "store": true,
            "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "low"},
            "truncation": "auto"}),
        );
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": "Hello"}),
                json!("stop"),
                json!({"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
                       "prompt_tokens_details": {"cached_tokens": 3},
                       "completion_tokens_details": {"reasoning_tokens": 1}}),
            ),
            &r,
        );
        assert_eq!(out["id"], format!("resp_{HEX}"));
        assert_eq!(out["status"], "completed");
        assert_eq!(out["completed_at"], 105);
        assert_eq!(out["created_at"], 100);
        assert_eq!(out["model"], "client-model");
        assert_eq!(out["instructions"], "be brief");
        assert_eq!(
            out["output"],
            json!([{"type": "message", "id": format!("msg_{HEX}"), "status": "completed",
                    "role": "assistant", "content": [
                        {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]}])
        );
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                   "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 1},
                   "total_tokens": 9})
        );
        assert_eq!(
            out["tools"],
            json!([{"type": "function", "name": "f", "description": "d", "parameters": null, "strict": null}])
        );
        assert_eq!(out["parallel_tool_calls"], false);
        assert_eq!(out["temperature"], 0.5);
        assert_eq!(out["max_output_tokens"], 20);
        assert_eq!(out["metadata"], json!({"k": "v"}));
        assert_eq!(out["user"], "u1");
        assert_eq!(out["store"], false, "the proxy stores nothing");
        assert_eq!(out["text"], json!({"format": {"type": "json_object"}}));
        assert_eq!(out["reasoning"], json!({"effort": "low", "summary": null}));
        assert_eq!(out["truncation"], "auto");
        assert_eq!(out["incomplete_details"], Value::Null);
        // No user sent: none echoed (`user: null` is not valid).
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": "x"}),
                json!("stop"),
                json!(null),
            ),
            &plain(),
        );
        assert!(out.get("user").is_none());
        assert_eq!(out["tool_choice"], "auto");
        assert_eq!(out["metadata"], json!({}));
        assert_eq!(out["usage"]["total_tokens"], 0, "missing usage is zeros");
    }

    #[test]
    fn tool_calls_and_text_then_tools() {
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": "Let me check", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":1}"}},
                    {"type": "function", "function": {"name": "v", "arguments": "{}"}},
                ]}),
                json!("tool_calls"),
                json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
            ),
            &plain(),
        );
        assert_eq!(out["status"], "completed");
        let o = out["output"].as_array().unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o[0]["content"][0]["text"], "Let me check");
        assert_eq!(
            o[1],
            json!({"type": "function_call", "id": format!("fc_{HEX}_0"), "call_id": "call_1",
                   "name": "w", "arguments": "{\"c\":1}", "status": "completed"})
        );
        assert_eq!(
            o[2]["call_id"],
            format!("call_{HEX}_1"),
            "a missing id is minted"
        );
        assert_eq!(o[2]["id"], format!("fc_{HEX}_1"));
        // Tools only: no message item.
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}),
                json!("tool_calls"),
                json!(null),
            ),
            &plain(),
        );
        assert_eq!(out["output"].as_array().unwrap().len(), 1);
        assert_eq!(out["output"][0]["type"], "function_call");
    }

    #[test]
    fn length_content_filter_empty_and_refusal() {
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": "Hel"}),
                json!("length"),
                json!(null),
            ),
            &plain(),
        );
        assert_eq!(out["status"], "incomplete");
        assert_eq!(
            out["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(out["completed_at"], Value::Null);
        assert_eq!(out["output"][0]["status"], "incomplete");
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": ""}),
                json!("content_filter"),
                json!(null),
            ),
            &plain(),
        );
        assert_eq!(
            out["incomplete_details"],
            json!({"reason": "content_filter"})
        );
        // Nothing said: one empty message, so output_text is "".
        assert_eq!(out["output"][0]["content"], json!([text_part("")]));
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": null, "refusal": "I can't"}),
                json!("stop"),
                json!(null),
            ),
            &plain(),
        );
        assert_eq!(
            out["output"][0]["content"],
            json!([{"type": "refusal", "refusal": "I can't"}])
        );
        // Unknown finish reasons and no choices at all still make a valid Response.
        let out = answer(&json!({"choices": []}), &plain());
        assert_eq!(out["status"], "completed");
        let out = answer(
            &completion(
                json!({"role": "assistant", "content": "x"}),
                json!("weird"),
                json!(null),
            ),
            &plain(),
        );
        assert_eq!(out["status"], "completed");
    }
}
