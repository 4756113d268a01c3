//! Request: a Responses `CreateResponse` body → a Chat Completions request
//! (design §2.2). The Anthropic kind then goes on through its own
//! `to_anthropic`; what that would refuse is refused here first
//! ([`Target::Anthropic`]), so that the 400 names the Responses field
//! (`input[2].arguments`), not the chat one it became.
//!
//! Fields with no Chat equivalent are dropped (README "Responses
//! translation" lists them); fields that would change the answer if dropped
//! are a 400 naming the field, raised before any upstream call.

use serde_json::{Map, Value, json};

use super::translate::Target;
use crate::error::{ProviderError, ProxyError};
use crate::openai::{ApiRequest, Endpoint, type_name};

/// A 400 for a request the translation cannot express, made before any
/// upstream call: no failover, and no verdict on the provider's health.
pub(crate) fn bad_request(message: impl Into<String>, param: &str) -> ProviderError {
    ProviderError::Refused {
        error: ProxyError::bad_request(message)
            .with_param(param)
            .error_object(),
    }
}

/// Fields that need state the proxy does not keep, or that change what the
/// model sees or how it is checked: any non-null value is refused.
const STATEFUL: [(&str, &str); 5] = [
    (
        "previous_response_id",
        "previous_response_id needs a provider with native Responses support; this provider translates Responses to Chat Completions and the proxy stores nothing. Send the whole conversation in 'input'.",
    ),
    (
        "conversation",
        "conversation needs stored state; this provider translates Responses to Chat Completions and the proxy stores nothing. Send the whole conversation in 'input'.",
    ),
    (
        "prompt",
        "prompt templates are stored by OpenAI; this provider translates Responses to Chat Completions and cannot use them",
    ),
    (
        "moderation",
        "moderation is not available on a provider that translates Responses to Chat Completions",
    ),
    (
        "context_management",
        "context_management (compaction) is not available on a provider that translates Responses to Chat Completions",
    ),
];

/// Translate a Responses request into a Chat Completions request for the
/// same model name (the provider puts its own `model_id` in). A stream asks
/// for the usage chunk: `response.completed` carries usage.
pub fn to_chat(req: &ApiRequest, target: Target) -> Result<ApiRequest, ProviderError> {
    let b = &req.body;
    let present = |k: &str| b.get(k).filter(|v| !v.is_null());

    for (field, why) in STATEFUL {
        if present(field).is_some() {
            return Err(bad_request(why, field));
        }
    }
    if let Some(bg) = present("background") {
        if bg != &Value::Bool(false) {
            return Err(bad_request(
                "background responses need stored state and polling; the proxy stores nothing",
                "background",
            ));
        }
    }
    match present("include") {
        None => {}
        Some(Value::Array(items))
            if items
                .iter()
                .any(|v| v.as_str() == Some("message.output_text.logprobs")) =>
        {
            return Err(bad_request(
                "logprobs are not translated for this provider; remove 'message.output_text.logprobs' from include",
                "include",
            ));
        }
        Some(Value::Array(_)) => {}
        Some(other) => {
            return Err(bad_request(
                format!("'include' must be an array, got {}", type_name(other)),
                "include",
            ));
        }
    }
    if present("top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return Err(bad_request(
            "logprobs are not translated for this provider; 'top_logprobs' must be 0",
            "top_logprobs",
        ));
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));

    let mut messages = Vec::new();
    match present("instructions") {
        None => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(other) => {
            return Err(bad_request(
                format!("'instructions' must be a string, got {}", type_name(other)),
                "instructions",
            ));
        }
    }
    match present("input") {
        None => {
            return Err(bad_request(
                "Missing required parameter: 'input' (a provider that translates Responses needs the whole conversation in it)",
                "input",
            ));
        }
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, target, &mut messages)?;
            }
        }
        Some(other) => {
            return Err(bad_request(
                format!(
                    "'input' must be a string or an array of items, got {}",
                    type_name(other)
                ),
                "input",
            ));
        }
    }
    if messages.is_empty() {
        return Err(bad_request(
            "'input' has no message to send (an empty list, or only reasoning items)",
            "input",
        ));
    }
    out.insert("messages".into(), Value::Array(messages));

    let tools = match present("tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, i))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(bad_request(
                format!("'tools' must be an array, got {}", type_name(other)),
                "tools",
            ));
        }
    };
    let choice = present("tool_choice").map(tool_choice).transpose()?;
    // OpenAI refuses `tool_choice` and `parallel_tool_calls` without tools;
    // without tools neither can change the answer.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
        match present("parallel_tool_calls") {
            None => {}
            Some(Value::Bool(p)) => {
                out.insert("parallel_tool_calls".into(), json!(p));
            }
            Some(other) => {
                return Err(bad_request(
                    format!(
                        "'parallel_tool_calls' must be a boolean, got {}",
                        type_name(other)
                    ),
                    "parallel_tool_calls",
                ));
            }
        }
    }

    if let Some(m) = present("max_output_tokens") {
        if target == Target::Anthropic && m.as_u64().is_none_or(|n| n < 1) {
            return Err(bad_request(
                format!("'max_output_tokens' must be a positive integer, got {m}"),
                "max_output_tokens",
            ));
        }
        out.insert("max_tokens".into(), m.clone());
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = present(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(format) = present("text").and_then(|t| t.get("format")) {
        if let Some(rf) = response_format(format, target)? {
            out.insert("response_format".into(), rf);
        }
    }
    if target == Target::Chat {
        let effort = present("reasoning")
            .and_then(|r| r.get("effort"))
            .and_then(Value::as_str);
        if let Some(e) = effort.filter(|e| *e != "none") {
            out.insert("reasoning_effort".into(), json!(e));
        }
    }
    if let Some(u) = present("user") {
        out.insert("user".into(), u.clone());
    }
    if req.stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(ApiRequest {
        endpoint: Endpoint::Chat,
        model: req.model.clone(),
        stream: req.stream,
        body: out,
    })
}

/// One `input` item, appended to `messages` as chat messages.
fn input_item(
    item: &Value,
    i: usize,
    target: Target,
    messages: &mut Vec<Value>,
) -> Result<(), ProviderError> {
    let p = format!("input[{i}]");
    if !item.is_object() {
        return Err(bad_request(
            format!("{p} must be an object, got {}", type_name(item)),
            &p,
        ));
    }
    let str_field = |k: &str| -> Result<&str, ProviderError> {
        item.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request(format!("{p} needs a string '{k}'"), &format!("{p}.{k}")))
    };
    match item.get("type").and_then(Value::as_str) {
        None | Some("message") => message(item, i, target, messages),
        Some("function_call") => {
            let call_id = str_field("call_id")?;
            let name = str_field("name")?;
            let args = str_field("arguments")?;
            if target == Target::Anthropic
                && !args.trim().is_empty()
                && !serde_json::from_str::<Value>(args).is_ok_and(|v| v.is_object())
            {
                return Err(bad_request(
                    "function_call arguments must be a JSON object for this provider",
                    &format!("{p}.arguments"),
                ));
            }
            let call = json!({
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": args},
            });
            // Calls right after an assistant turn belong to it: a chat
            // assistant message carries its text and its tool calls.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" => {
                    let calls = last
                        .as_object_mut()
                        .expect("messages are objects")
                        .entry("tool_calls")
                        .or_insert_with(|| json!([]));
                    if let Some(c) = calls.as_array_mut() {
                        c.push(call);
                    }
                }
                _ => messages.push(json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [call],
                })),
            }
            Ok(())
        }
        Some("function_call_output") => {
            let call_id = str_field("call_id")?;
            let content = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => text_parts(
                    parts,
                    &format!("{p}.output"),
                    &["input_text", "output_text"],
                )?,
                _ => {
                    return Err(bad_request(
                        format!("{p} needs 'output': a string or an array of input_text parts"),
                        &format!("{p}.output"),
                    ));
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
            Ok(())
        }
        // The previous provider's private (often encrypted) reasoning: no
        // other model can read it.
        Some("reasoning") => Ok(()),
        Some("item_reference") => Err(bad_request(
            format!(
                "{p}: item_reference needs stored state; the proxy stores nothing. Send the item itself."
            ),
            &p,
        )),
        Some(other) => Err(bad_request(
            format!(
                "{p}: input items of type '{other}' are not supported by a provider that translates Responses to Chat Completions"
            ),
            &format!("{p}.type"),
        )),
    }
}

/// A message item (`EasyInputMessage`, `InputMessage`, or an echoed
/// `OutputMessage`). `id` and `status` are ignored.
fn message(
    item: &Value,
    i: usize,
    target: Target,
    messages: &mut Vec<Value>,
) -> Result<(), ProviderError> {
    let p = format!("input[{i}]");
    let role = item
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request(format!("{p} needs a 'role'"), &format!("{p}.role")))?;
    let cp = format!("{p}.content");
    let content = item.get("content").filter(|c| !c.is_null());
    match role {
        "user" => {
            let content = match content {
                Some(Value::String(s)) => json!(s),
                Some(Value::Array(parts)) => Value::Array(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(j, part)| user_part(part, &format!("{cp}[{j}]"), target))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(bad_request(
                        format!("{p}: a user message needs content (a string or a list of parts)"),
                        &cp,
                    ));
                }
            };
            messages.push(json!({"role": "user", "content": content}));
        }
        "system" | "developer" => {
            let text = match content {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => text_parts(parts, &cp, &["input_text"])?,
                _ => {
                    return Err(bad_request(
                        format!("{p}: a {role} message needs content"),
                        &cp,
                    ));
                }
            };
            messages.push(json!({"role": "system", "content": text}));
        }
        "assistant" => {
            let text = match content {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    text_parts(parts, &cp, &["output_text", "input_text", "refusal"])?
                }
                Some(other) => {
                    return Err(bad_request(
                        format!(
                            "{p}: content must be a string or a list of parts, got {}",
                            type_name(other)
                        ),
                        &cp,
                    ));
                }
            };
            messages.push(json!({"role": "assistant", "content": text}));
        }
        other => {
            return Err(bad_request(
                format!("{p}: role '{other}' is not one of user, assistant, system, developer"),
                &format!("{p}.role"),
            ));
        }
    }
    Ok(())
}

/// The text of parts that may only hold text, joined by newlines. `kinds`
/// are the part types accepted; `refusal` parts give their `refusal`.
fn text_parts(parts: &[Value], param: &str, kinds: &[&str]) -> Result<String, ProviderError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        let field = if kind == "refusal" { "refusal" } else { "text" };
        match part.get(field).and_then(Value::as_str) {
            Some(t) if kinds.contains(&kind) => texts.push(t),
            _ => {
                return Err(bad_request(
                    format!(
                        "{param}[{j}]: part type '{kind}' is not supported here by a provider that translates Responses; only {}",
                        kinds.join(", ")
                    ),
                    &format!("{param}[{j}]"),
                ));
            }
        }
    }
    Ok(texts.join("\n"))
}

/// One content part of a user message, as a chat part.
fn user_part(part: &Value, param: &str, target: Target) -> Result<Value, ProviderError> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text") => match part.get("text") {
            Some(Value::String(t)) => Ok(json!({"type": "text", "text": t})),
            _ => Err(bad_request(
                "an input_text part needs 'text'",
                &format!("{param}.text"),
            )),
        },
        Some("input_image") => {
            let Some(url) = part
                .get("image_url")
                .filter(|u| !u.is_null())
                .map(|u| u.as_str().unwrap_or(""))
            else {
                return Err(bad_request(
                    "images by file_id are stored files; a provider that translates Responses needs 'image_url' (an http(s) or data: URL)",
                    &format!(
                        "{param}.{}",
                        if part.get("file_id").is_some() {
                            "file_id"
                        } else {
                            "image_url"
                        }
                    ),
                ));
            };
            let acceptable = url.starts_with("https://")
                || url.starts_with("http://")
                || url
                    .strip_prefix("data:")
                    .and_then(|r| r.split_once(','))
                    .is_some_and(|(meta, _)| {
                        meta.strip_suffix(";base64").is_some_and(|m| !m.is_empty())
                    });
            if (target == Target::Anthropic && !acceptable) || url.is_empty() {
                return Err(bad_request(
                    "image URLs must be http(s) URLs or base64 data URLs (data:image/png;base64,...)",
                    &format!("{param}.image_url"),
                ));
            }
            let mut image = json!({"url": url});
            if let Some(d) = part.get("detail").and_then(Value::as_str) {
                image["detail"] = json!(d);
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some("input_file") => Err(bad_request(
            "input_file parts are not supported by a provider that translates Responses to Chat Completions",
            param,
        )),
        other => Err(bad_request(
            format!(
                "content part type '{}' is not supported in a user message (input_text and input_image are)",
                other.unwrap_or("")
            ),
            &format!("{param}.type"),
        )),
    }
}

/// A `function` tool as a chat tool; every other (hosted) tool is refused:
/// dropping it would change what the model can do.
fn tool(t: &Value, i: usize) -> Result<Value, ProviderError> {
    let p = format!("tools[{i}]");
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(bad_request(
                format!(
                    "tools of type '{}' are not supported by a provider that translates Responses; only 'function'",
                    other.unwrap_or("")
                ),
                &format!("{p}.type"),
            ));
        }
    }
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("a function tool needs 'name'", &format!("{p}.name")))?;
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    for k in ["description", "parameters", "strict"] {
        if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
            f.insert(k.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": f}))
}

fn tool_choice(c: &Value) -> Result<Value, ProviderError> {
    match c {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(c.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(bad_request(
                    "a function tool_choice needs 'name'",
                    "tool_choice",
                )),
            }
        }
        _ => Err(bad_request(
            "tool_choice must be auto, none, required or {\"type\":\"function\",\"name\":...} on a provider that translates Responses",
            "tool_choice",
        )),
    }
}

/// `text.format` as a chat `response_format`; `None` for plain text.
fn response_format(format: &Value, target: Target) -> Result<Option<Value>, ProviderError> {
    let kind = format.get("type").and_then(Value::as_str);
    if matches!(kind, Some("json_schema" | "json_object")) && target == Target::Anthropic {
        return Err(bad_request(
            "structured output (text.format json_schema / json_object) is not available on an Anthropic provider; the answer would not follow the format",
            "text.format",
        ));
    }
    match kind {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = format.get("name").and_then(Value::as_str).ok_or_else(|| {
                bad_request("a json_schema format needs 'name'", "text.format.name")
            })?;
            let mut js = Map::new();
            js.insert("name".into(), json!(name));
            for k in ["schema", "strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    js.insert(k.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        _ => Err(bad_request(
            "text.format.type must be text, json_schema or json_object",
            "text.format.type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: Value) -> ApiRequest {
        let bytes = serde_json::to_vec(&body).unwrap();
        let body: Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
        ApiRequest {
            endpoint: Endpoint::Chat,
            model: body["model"].as_str().unwrap().to_string(),
            stream: body.get("stream") == Some(&json!(true)),
            body,
        }
    }

    fn chat(body: Value, target: Target) -> Value {
        let out = to_chat(&req(body), target).unwrap();
        assert_eq!(out.endpoint, Endpoint::Chat);
        Value::Object(out.body)
    }

    /// The (param, message) of the 400 a request becomes.
    fn refused(body: Value, target: Target) -> (String, String) {
        match to_chat(&req(body), target) {
            Err(e @ ProviderError::Refused { .. }) => {
                assert!(!e.is_failover(), "a refusal never fails over");
                let ProviderError::Refused { error } = e else {
                    unreachable!()
                };
                assert_eq!(error["type"], "invalid_request_error");
                (
                    error["param"].as_str().unwrap_or("").to_string(),
                    error["message"].as_str().unwrap_or("").to_string(),
                )
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    fn both(body: Value) -> String {
        let (a, _) = refused(body.clone(), Target::Chat);
        let (b, _) = refused(body, Target::Anthropic);
        assert_eq!(a, b);
        a
    }

    #[test]
    fn string_input_and_instructions() {
        let out = chat(
            json!({"model": "m", "input": "hi", "instructions": "be brief"}),
            Target::Chat,
        );
        assert_eq!(
            out,
            json!({"model": "m", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ]})
        );
    }

    #[test]
    fn sampling_limits_user_and_stream() {
        let out = chat(
            json!({"model": "m", "input": "hi", "max_output_tokens": 50, "temperature": 1.5,
                   "top_p": 0.9, "user": "u-1", "stream": true, "metadata": {"a": "b"},
                   "store": true, "truncation": "auto", "service_tier": "flex",
                   "prompt_cache_key": "k", "safety_identifier": "s", "max_tool_calls": 3,
                   "stream_options": {"include_obfuscation": false},
                   "include": ["reasoning.encrypted_content"], "top_logprobs": 0,
                   "background": false, "previous_response_id": null,
                   "text": {"format": {"type": "text"}, "verbosity": "low"},
                   "reasoning": {"effort": "high", "summary": "auto"}, "x_unknown": 1}),
            Target::Chat,
        );
        assert_eq!(
            out,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 50, "temperature": 1.5, "top_p": 0.9, "user": "u-1",
                   "reasoning_effort": "high",
                   "stream": true, "stream_options": {"include_usage": true}})
        );
        // Anthropic: reasoning.effort is dropped (to_anthropic clamps the
        // temperature itself).
        let out = chat(
            json!({"model": "m", "input": "hi", "reasoning": {"effort": "low"}}),
            Target::Anthropic,
        );
        assert!(out.get("reasoning_effort").is_none(), "{out}");
        let out = chat(
            json!({"model": "m", "input": "hi", "reasoning": {"effort": "none"}}),
            Target::Chat,
        );
        assert!(out.get("reasoning_effort").is_none(), "{out}");
    }

    #[test]
    fn message_items_with_parts() {
        let out = chat(
            json!({"model": "m", "input": [
                {"role": "developer", "content": "rules"},
                {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ]},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "seen", "annotations": [], "logprobs": []},
                             {"type": "refusal", "refusal": "but no"}]},
                {"role": "user", "content": "again"},
            ]}),
            Target::Anthropic,
        );
        assert_eq!(
            out["messages"],
            json!([
                {"role": "system", "content": "rules"},
                {"role": "system", "content": "a\nb"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ]},
                {"role": "assistant", "content": "seen\nbut no"},
                {"role": "user", "content": "again"},
            ])
        );
    }

    #[test]
    fn function_call_round_trip_merges_into_the_assistant_turn() {
        let out = chat(
            json!({"model": "m", "input": [
                {"role": "user", "content": "weather?"},
                {"type": "reasoning", "id": "rs_1", "encrypted_content": "xx", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_a", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_b", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "rain"}]},
                {"type": "function_call", "call_id": "call_c", "name": "w", "arguments": ""},
            ],
            "tools": [{"type": "function", "name": "w", "description": "weather",
                       "parameters": {"type": "object"}, "strict": true},
                      {"type": "function", "name": "v"}],
            "tool_choice": {"type": "function", "name": "w"},
            "parallel_tool_calls": false}),
            Target::Anthropic,
        );
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "checking", "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_c", "type": "function", "function": {"name": "w", "arguments": ""}},
                ]},
            ])
        );
        assert_eq!(
            out["tools"],
            json!([
                {"type": "function", "function": {"name": "w", "description": "weather",
                 "parameters": {"type": "object"}, "strict": true}},
                {"type": "function", "function": {"name": "v"}},
            ])
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "function", "function": {"name": "w"}})
        );
        assert_eq!(out["parallel_tool_calls"], json!(false));
    }

    #[test]
    fn tool_choice_strings_and_no_tools() {
        for c in ["auto", "none", "required"] {
            let out = chat(
                json!({"model": "m", "input": "x", "tool_choice": c,
                       "tools": [{"type": "function", "name": "f"}]}),
                Target::Chat,
            );
            assert_eq!(out["tool_choice"], json!(c));
        }
        // Without tools OpenAI refuses both fields; they change nothing.
        let out = chat(
            json!({"model": "m", "input": "x", "tool_choice": "auto", "parallel_tool_calls": true}),
            Target::Chat,
        );
        assert!(out.get("tool_choice").is_none() && out.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn text_format_to_response_format_on_chat_only() {
        let schema = json!({"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true});
        let out = chat(
            json!({"model": "m", "input": "x", "text": {"format": schema}}),
            Target::Chat,
        );
        assert_eq!(
            out["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": true}})
        );
        let out = chat(
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}),
            Target::Chat,
        );
        assert_eq!(out["response_format"], json!({"type": "json_object"}));
        for f in [schema, json!({"type": "json_object"})] {
            let (p, _) = refused(
                json!({"model": "m", "input": "x", "text": {"format": f}}),
                Target::Anthropic,
            );
            assert_eq!(p, "text.format");
        }
        let (p, _) = refused(
            json!({"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}}),
            Target::Chat,
        );
        assert_eq!(p, "text.format.type");
    }

    #[test]
    fn stateful_fields_are_refused_naming_them() {
        let (p, msg) = refused(
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            Target::Anthropic,
        );
        assert_eq!(p, "previous_response_id");
        assert!(
            msg.contains("native Responses") && msg.contains("stores nothing"),
            "{msg}"
        );
        for (k, v) in [
            ("conversation", json!("conv_1")),
            ("prompt", json!({"id": "pmpt_1"})),
            ("moderation", json!({"mode": "x"})),
            ("context_management", json!([{"type": "compaction"}])),
            ("background", json!(true)),
            ("top_logprobs", json!(3)),
        ] {
            let mut b = json!({"model": "m", "input": "x"});
            b[k] = v;
            assert_eq!(both(b), k);
        }
        assert_eq!(
            both(json!({"model": "m", "input": "x", "include": ["message.output_text.logprobs"]})),
            "include"
        );
        assert_eq!(both(json!({"model": "m"})), "input");
        assert_eq!(both(json!({"model": "m", "input": null})), "input");
        assert_eq!(both(json!({"model": "m", "input": 5})), "input");
        assert_eq!(both(json!({"model": "m", "input": []})), "input");
        assert_eq!(
            both(json!({"model": "m", "input": "x", "instructions": ["a"]})),
            "instructions"
        );
    }

    #[test]
    fn input_items_that_cannot_be_translated_are_refused_naming_them() {
        let one = |item: Value| {
            both(json!({"model": "m", "input": [{"role": "user", "content": "a"}, item]}))
        };
        assert_eq!(
            one(json!({"type": "item_reference", "id": "msg_1"})),
            "input[1]"
        );
        for t in [
            "web_search_call",
            "file_search_call",
            "computer_call",
            "computer_call_output",
            "mcp_call",
            "custom_tool_call",
            "local_shell_call",
            "image_generation_call",
            "code_interpreter_call",
            "compaction",
        ] {
            assert_eq!(one(json!({"type": t, "id": "x"})), "input[1].type", "{t}");
        }
        assert_eq!(one(json!("text")), "input[1]");
        assert_eq!(one(json!({"content": "no role"})), "input[1].role");
        assert_eq!(
            one(json!({"role": "tool", "content": "x"})),
            "input[1].role"
        );
        assert_eq!(one(json!({"role": "user"})), "input[1].content");
        let part = |p: Value| one(json!({"role": "user", "content": [p]}));
        assert_eq!(
            part(json!({"type": "input_file", "file_id": "f"})),
            "input[1].content[0]"
        );
        assert_eq!(
            part(json!({"type": "input_image", "file_id": "file_1"})),
            "input[1].content[0].file_id"
        );
        assert_eq!(
            part(json!({"type": "input_audio"})),
            "input[1].content[0].type"
        );
        assert_eq!(
            part(json!({"type": "input_text"})),
            "input[1].content[0].text"
        );
        assert_eq!(
            one(
                json!({"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]})
            ),
            "input[1].content[0]"
        );
        assert_eq!(
            one(json!({"type": "function_call_output", "call_id": "c",
                       "output": [{"type": "input_image", "image_url": "https://x"}]})),
            "input[1].output[0]"
        );
        assert_eq!(
            one(json!({"type": "function_call_output", "output": "x"})),
            "input[1].call_id"
        );
        assert_eq!(
            one(json!({"type": "function_call", "call_id": "c", "arguments": "{}"})),
            "input[1].name"
        );
    }

    #[test]
    fn tools_and_tool_choice_other_than_function_are_refused() {
        for t in [
            "web_search",
            "web_search_preview",
            "file_search",
            "computer_use_preview",
            "code_interpreter",
            "image_generation",
            "mcp",
            "local_shell",
            "custom",
        ] {
            assert_eq!(
                both(
                    json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": t}]})
                ),
                "tools[1].type",
                "{t}"
            );
        }
        assert_eq!(
            both(json!({"model": "m", "input": "x", "tools": [{"type": "function"}]})),
            "tools[0].name"
        );
        assert_eq!(
            both(json!({"model": "m", "input": "x", "tools": {}})),
            "tools"
        );
        for c in [
            json!({"type": "allowed_tools", "tools": []}),
            json!({"type": "web_search"}),
            json!("sometimes"),
            json!({"type": "function"}),
        ] {
            assert_eq!(
                both(json!({"model": "m", "input": "x", "tool_choice": c,
                            "tools": [{"type": "function", "name": "f"}]})),
                "tool_choice"
            );
        }
    }

    #[test]
    fn anthropic_refusals_name_the_responses_field() {
        let (p, _) = refused(
            json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "ftp://x/y.png"}]}]}),
            Target::Anthropic,
        );
        assert_eq!(p, "input[0].content[0].image_url");
        // The same URL goes to an OpenAI-compatible upstream, which judges it.
        chat(
            json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "ftp://x/y.png"}]}]}),
            Target::Chat,
        );
        let call = json!({"model": "m", "input": [
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]});
        let (p, _) = refused(call.clone(), Target::Anthropic);
        assert_eq!(p, "input[0].arguments");
        chat(call, Target::Chat);
        let (p, _) = refused(
            json!({"model": "m", "input": "x", "max_output_tokens": 0}),
            Target::Anthropic,
        );
        assert_eq!(p, "max_output_tokens");
    }
}
