//! Anthropic Messages API behind the OpenAI Chat Completions interface.
//! Clients keep sending `chat.completion` requests; this module translates
//! them to `POST {base_url}/v1/messages` ([`to_anthropic`]), and translates
//! the answer back: a `Message` into a `chat.completion` ([`from_anthropic`]),
//! Anthropic's stream events into `chat.completion.chunk` events
//! ([`map_event`]). The translation is pure functions, tested below against
//! fixtures in `tests/fixtures/anthropic/`; HTTP is done by [`Upstream`].

use std::collections::VecDeque;
use std::io::BufRead;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{ChatStream, Provider, Upstream};
use crate::error::{ProviderError, ProxyError};
use crate::openai::{ApiRequest, Endpoint, type_name};
use crate::responses::translate;
use crate::sse::{self, SseReader};

pub struct Anthropic {
    up: Upstream,
    /// `{base_url}/v1/messages`
    url: String,
    /// The `anthropic-version` header.
    version: String,
    /// `max_tokens` when the client sets no limit (Anthropic requires one).
    max_tokens: u32,
}

/// `version` and `max_tokens` come from [`crate::config::ProviderKind::Anthropic`],
/// which has defaulted them.
pub fn new(up: Upstream, version: &str, max_tokens: u32) -> Anthropic {
    Anthropic {
        url: format!("{}/v1/messages", up.base_url),
        version: version.to_string(),
        max_tokens,
        up,
    }
}

impl Anthropic {
    fn send(
        &self,
        req: &ApiRequest,
        model_id: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, ProviderError> {
        let body = to_anthropic(req, model_id, self.max_tokens)?;
        let body = serde_json::to_vec(&body).expect("a JSON value always serializes");
        let mut headers = vec![("anthropic-version", self.version.as_str())];
        if let Some(key) = &self.up.api_key {
            headers.push(("x-api-key", key.expose()));
        }
        self.up.post(&self.url, &headers, &body, req.stream)
    }
}

impl Provider for Anthropic {
    /// The Messages API has no embeddings, and legacy text completions are
    /// not translated.
    fn serves(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            // Translated through Chat Completions.
            Endpoint::Chat | Endpoint::Responses => true,
            Endpoint::Completions | Endpoint::Embeddings => false,
        }
    }

    fn complete(&self, req: &ApiRequest, model_id: &str) -> Result<Vec<u8>, ProviderError> {
        if req.endpoint == Endpoint::Responses {
            return translate::complete(self, req, model_id, translate::Target::Anthropic);
        }
        let resp = self.send(req, model_id)?;
        let bytes = self.up.read_body(resp)?;
        let msg = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(|v| v.get("content").is_some_and(Value::is_array));
        let Some(msg) = msg else {
            return Err(self
                .up
                .decode_error("expected an Anthropic message object", &bytes));
        };
        let out = from_anthropic(&msg, &req.model, unix_now());
        Ok(serde_json::to_vec(&out).expect("a JSON value always serializes"))
    }

    fn stream(
        &self,
        req: &ApiRequest,
        model_id: &str,
    ) -> Result<Box<dyn ChatStream + '_>, ProviderError> {
        if req.endpoint == Endpoint::Responses {
            return translate::stream(self, req, model_id, translate::Target::Anthropic);
        }
        let resp = self.send(req, model_id)?;
        Ok(Box::new(AnthropicStream {
            up: &self.up,
            events: self.up.events(resp)?,
            state: State::new(&req.model, req.include_usage(), unix_now()),
            queue: VecDeque::new(),
        }))
    }

    /// The Messages API stores no responses.
    fn responses_native(&self) -> bool {
        false
    }

    fn retrieve_response(&self, _id: &str, _query: &str) -> Result<Vec<u8>, ProviderError> {
        Err(ProviderError::Status {
            status: 404,
            error: serde_json::json!({
                "message": "Anthropic stores no responses",
                "type": "invalid_request_error",
                "param": null,
                "code": "response_not_found",
            }),
            retry_after: None,
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Thin wrappers over the private translation for `crate::fuzzing` (fuzz
/// targets and property tests); no logic of their own beyond what
/// [`Anthropic::complete`] and [`AnthropicStream`] do around it.
pub(crate) mod fuzz {
    use super::*;

    pub(crate) fn to_anthropic(
        req: &ApiRequest,
        model_id: &str,
        default_max_tokens: u32,
    ) -> Result<Value, ProviderError> {
        super::to_anthropic(req, model_id, default_max_tokens)
    }

    /// The body check of [`Anthropic::complete`], then [`from_anthropic`].
    pub(crate) fn complete(body: &[u8], model: &str, created: u64) -> Option<Value> {
        let msg = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(|v| v.get("content").is_some_and(Value::is_array))?;
        Some(from_anthropic(&msg, model, created))
    }

    /// One stream's [`State`] and [`map_event`].
    pub struct StreamMapper(State);

    impl StreamMapper {
        pub fn new(model: &str, include_usage: bool, created: u64) -> StreamMapper {
            StreamMapper(State::new(model, include_usage, created))
        }

        /// The encoded chunks one event becomes, or why it ends the stream.
        pub fn map(&mut self, name: Option<&str>, data: &str) -> Result<Vec<Vec<u8>>, String> {
            map_event(name, data, &mut self.0).map_err(|f| format!("{f:?}"))
        }

        /// `message_stop` arrived: the stream is complete.
        pub fn stopped(&self) -> bool {
            self.0.stopped
        }
    }
}

// ---------------------------------------------------------------------------
// Request: OpenAI → Anthropic.

/// A 400 for a request Anthropic cannot express, made before any upstream
/// call: the router hands it to the client without failing over, and
/// without a verdict on the provider's health.
fn bad_request(message: impl Into<String>, param: &str) -> ProviderError {
    ProviderError::Refused {
        error: ProxyError::bad_request(message)
            .with_param(param)
            .error_object(),
    }
}

/// One Anthropic message being built: plain text stays a string (the
/// common case), anything else is a list of content blocks.
enum Content {
    Text(String),
    Blocks(Vec<Value>),
}

impl Content {
    fn into_blocks(self) -> Vec<Value> {
        match self {
            Content::Text(t) => vec![json!({"type": "text", "text": t})],
            Content::Blocks(b) => b,
        }
    }
    fn into_value(self) -> Value {
        match self {
            Content::Text(t) => Value::String(t),
            Content::Blocks(b) => Value::Array(b),
        }
    }
}

/// Translate a Chat Completions request into a Messages request body.
/// Fields with no Anthropic meaning are dropped (the README lists them);
/// what cannot be expressed at all is a 400 naming the field.
fn to_anthropic(
    req: &ApiRequest,
    model_id: &str,
    default_max_tokens: u32,
) -> Result<Value, ProviderError> {
    let b = &req.body;
    let present = |k: &str| b.get(k).filter(|v| !v.is_null());
    let mut out = Map::new();
    out.insert("model".into(), json!(model_id));

    let (system, messages) = translate_messages(b.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), json!(messages));

    // max_completion_tokens replaced max_tokens in OpenAI's API; either will do.
    let max_tokens = match ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|k| present(k).map(|v| (k, v)))
    {
        None => u64::from(default_max_tokens),
        Some((k, v)) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad_request(format!("'{k}' must be a positive integer, got {v}"), k))?,
    };
    out.insert("max_tokens".into(), json!(max_tokens));

    if let Some(stop) = present("stop") {
        let seqs = match stop {
            Value::String(s) => vec![json!(s)],
            Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
            other => {
                return Err(bad_request(
                    format!(
                        "'stop' must be a string or an array of strings, got {}",
                        type_name(other)
                    ),
                    "stop",
                ));
            }
        };
        if !seqs.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(seqs));
        }
    }
    if let Some(t) = present("temperature") {
        // OpenAI allows 0..2, Anthropic 0..1: clamp, so that a request that
        // works on an OpenAI provider still works after failing over here.
        let t = match t.as_f64() {
            Some(f) if f > 1.0 => json!(1.0),
            _ => t.clone(),
        };
        out.insert("temperature".into(), t);
    }
    if let Some(p) = present("top_p") {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(n) = present("n") {
        if n.as_u64() != Some(1) {
            return Err(bad_request(
                "Anthropic providers return one choice; 'n' must be 1",
                "n",
            ));
        }
    }
    if req.stream {
        out.insert("stream".into(), json!(true));
    }

    let tools = match present("tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, t)| translate_tool(i, t))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(bad_request(
                format!("'tools' must be an array, got {}", type_name(other)),
                "tools",
            ));
        }
    };
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = match present("tool_choice") {
            None => None,
            Some(c) => Some(translate_tool_choice(c)?),
        };
        if present("parallel_tool_calls") == Some(&json!(false)) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c["type"] != "none" {
                c["disable_parallel_tool_use"] = json!(true);
            }
        }
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }

    if let Some(user) = present("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    Ok(Value::Object(out))
}

/// `system`/`developer` texts, and the rest as Anthropic messages with
/// consecutive same-role turns merged (Anthropic wants user and assistant
/// to alternate; tool results become user turns).
fn translate_messages(
    messages: Option<&Value>,
) -> Result<(Vec<String>, Vec<Value>), ProviderError> {
    let messages = messages.and_then(Value::as_array).map_or(&[][..], |m| m);
    let mut system = Vec::new();
    let mut out: Vec<(&'static str, Content)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").filter(|c| !c.is_null());
        let (role, content) = match role {
            "system" | "developer" => {
                system.push(text_only(content, &format!("messages[{i}].content"))?);
                continue;
            }
            "user" => {
                let c = match content {
                    Some(Value::String(s)) => Content::Text(s.clone()),
                    Some(Value::Array(parts)) => Content::Blocks(
                        parts
                            .iter()
                            .enumerate()
                            .map(|(j, p)| user_part(p, &format!("messages[{i}].content[{j}]")))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => {
                        return Err(bad_request(
                            format!("messages[{i}]: a user message needs content"),
                            &format!("messages[{i}].content"),
                        ));
                    }
                };
                ("user", c)
            }
            "assistant" => match assistant_content(m, i)? {
                Some(c) => ("assistant", c),
                // Nothing said and nothing called: Anthropic refuses empty turns.
                None => continue,
            },
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad_request(
                            format!("messages[{i}]: a tool message needs 'tool_call_id'"),
                            &format!("messages[{i}].tool_call_id"),
                        )
                    })?;
                let result = match content {
                    None => json!(""),
                    Some(Value::String(s)) => json!(s),
                    Some(c) => json!([{
                        "type": "text",
                        "text": text_only(Some(c), &format!("messages[{i}].content"))?,
                    }]),
                };
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": tool_id(id),
                    "content": result,
                });
                ("user", Content::Blocks(vec![block]))
            }
            other => {
                return Err(bad_request(
                    format!(
                        "messages[{i}]: role '{other}' is not supported by Anthropic providers"
                    ),
                    &format!("messages[{i}].role"),
                ));
            }
        };
        match out.last_mut() {
            Some((last_role, last)) if *last_role == role => {
                let prev = std::mem::replace(last, Content::Blocks(Vec::new()));
                let mut blocks = prev.into_blocks();
                blocks.extend(content.into_blocks());
                *last = Content::Blocks(blocks);
            }
            _ => out.push((role, content)),
        }
    }
    let out = out
        .into_iter()
        .map(|(role, c)| json!({"role": role, "content": c.into_value()}))
        .collect();
    Ok((system, out))
}

/// The text of content that may only hold text: a string, or text parts.
fn text_only(content: Option<&Value>, param: &str) -> Result<String, ProviderError> {
    match content {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (kind, _) => {
                        return Err(bad_request(
                            format!(
                                "content part type {:?} is not supported here by Anthropic providers; only text",
                                kind.unwrap_or("")
                            ),
                            &format!("{param}[{j}]"),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Err(bad_request(
            format!(
                "content must be a string or an array, got {}",
                type_name(other)
            ),
            param,
        )),
    }
}

/// One content part of a user message.
fn user_part(part: &Value, param: &str) -> Result<Value, ProviderError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => match part.get("text") {
            Some(Value::String(t)) => Ok(json!({"type": "text", "text": t})),
            _ => Err(bad_request("a text part needs 'text'", param)),
        },
        Some("image_url") => {
            let url = match part.get("image_url") {
                Some(Value::String(u)) => Some(u.as_str()),
                Some(o) => o.get("url").and_then(Value::as_str),
                None => None,
            }
            .ok_or_else(|| bad_request("an image_url part needs 'image_url.url'", param))?;
            image_block(url).ok_or_else(|| {
                bad_request(
                    "image URLs must be http(s) URLs or base64 data URLs (data:image/png;base64,...)",
                    &format!("{param}.image_url.url"),
                )
            })
        }
        other => Err(bad_request(
            format!(
                "content part type {:?} is not supported by Anthropic providers (text and image_url are)",
                other.unwrap_or("")
            ),
            param,
        )),
    }
}

fn image_block(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        if media_type.is_empty() {
            return None;
        }
        return Some(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Some(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    None
}

/// An assistant turn: its text, then a `tool_use` block per tool call.
/// `None` when there is nothing in it.
fn assistant_content(m: &Value, i: usize) -> Result<Option<Content>, ProviderError> {
    let param = format!("messages[{i}].content");
    let text = match m.get("content").filter(|c| !c.is_null()) {
        None => String::new(),
        Some(Value::Array(parts)) => {
            // Refusal parts are text the model said; keep them as text.
            let mut texts = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let t = match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text"),
                    Some("refusal") => p.get("refusal"),
                    _ => None,
                };
                match t.and_then(Value::as_str) {
                    Some(t) => texts.push(t),
                    None => {
                        return Err(bad_request(
                            "assistant content parts must be text or refusal",
                            &format!("{param}[{j}]"),
                        ));
                    }
                }
            }
            texts.join("\n")
        }
        c => text_only(c, &param)?,
    };
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(c)) => &c[..],
        Some(_) => {
            return Err(bad_request(
                "'tool_calls' must be an array",
                &format!("messages[{i}].tool_calls"),
            ));
        }
    };
    if calls.is_empty() {
        return Ok((!text.is_empty()).then_some(Content::Text(text)));
    }
    let mut blocks = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for (j, call) in calls.iter().enumerate() {
        let p = format!("messages[{i}].tool_calls[{j}]");
        let id = call.get("id").and_then(Value::as_str);
        let name = call.pointer("/function/name").and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(bad_request(
                "a tool call needs 'id' and 'function.name'",
                &p,
            ));
        };
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Anthropic wants the input as an object; OpenAI sends a JSON string
        // (empty for a call without arguments).
        let input = if args.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(args)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    bad_request(
                        "tool call arguments must be a JSON object",
                        &format!("{p}.function.arguments"),
                    )
                })?
        };
        blocks.push(json!({"type": "tool_use", "id": tool_id(id), "name": name, "input": input}));
    }
    Ok(Some(Content::Blocks(blocks)))
}

/// A tool call id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`). After a
/// failover the conversation carries ids minted by another provider, and
/// some use other characters (`functions.get_weather:0`); the mapping is the
/// same for a call and its result, so they still match.
fn tool_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() { "_".into() } else { clean }
}

fn translate_tool(i: usize, tool: &Value) -> Result<Value, ProviderError> {
    let param = format!("tools[{i}]");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad_request(
            "only tools of type 'function' are supported by Anthropic providers",
            &format!("{param}.type"),
        ));
    }
    let f = tool.get("function").unwrap_or(&Value::Null);
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("a tool needs 'function.name'", &param))?;
    let mut out = json!({
        "name": name,
        // A function without parameters takes none; Anthropic requires a schema.
        "input_schema": f
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(d) = f.get("description").and_then(Value::as_str) {
        out["description"] = json!(d);
    }
    Ok(out)
}

fn translate_tool_choice(c: &Value) -> Result<Value, ProviderError> {
    match c {
        Value::String(s) if s == "auto" => Ok(json!({"type": "auto"})),
        Value::String(s) if s == "required" => Ok(json!({"type": "any"})),
        Value::String(s) if s == "none" => Ok(json!({"type": "none"})),
        Value::Object(_) => match c.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Ok(json!({"type": "tool", "name": name})),
            None => Err(bad_request(
                "tool_choice must be auto, required, none or {\"type\":\"function\",\"function\":{\"name\":...}}",
                "tool_choice",
            )),
        },
        _ => Err(bad_request(
            "tool_choice must be auto, required, none or a named function",
            "tool_choice",
        )),
    }
}

// ---------------------------------------------------------------------------
// Response: Anthropic → OpenAI.

/// `stop_reason` → `finish_reason`. Unknown (newer) reasons read as a normal stop.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new.
        _ => "stop",
    }
}

/// Token counts as Anthropic reports them. Its `input_tokens` excludes
/// cached input; OpenAI's `prompt_tokens` includes it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Usage {
    input: u64,
    cache_creation: u64,
    cache_read: Option<u64>,
    output: u64,
}

impl Usage {
    /// Update from an Anthropic `usage` object; absent fields keep their value.
    fn update(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(n) = get("input_tokens") {
            self.input = n;
        }
        if let Some(n) = get("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = get("cache_read_input_tokens") {
            self.cache_read = Some(n);
        }
        if let Some(n) = get("output_tokens") {
            self.output = n;
        }
    }

    fn to_openai(self) -> Value {
        // Saturating: the counts are the upstream's word, and u64::MAX + 1
        // must not panic a handler (debug) or wrap to a small number (release).
        let prompt = self
            .input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read.unwrap_or(0));
        let mut u = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
        });
        if let Some(cached) = self.cache_read {
            u["prompt_tokens_details"] = json!({ "cached_tokens": cached });
        }
        u
    }
}

/// An Anthropic `Message` as a `chat.completion` for `model` (the name the
/// client asked for, so failover does not show in the answer).
fn from_anthropic(msg: &Value, model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut has_text = false;
    let mut calls = Vec::new();
    for block in msg["content"].as_array().map_or(&[][..], |c| c) {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                has_text = true;
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or_else(|| json!("")),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or_else(|| json!("")),
                        "arguments": input.to_string(),
                    },
                }));
            }
            // thinking, redacted_thinking, server tool blocks: nothing to map.
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if has_text { Value::String(text) } else { Value::Null },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let mut usage = Usage::default();
    usage.update(&msg["usage"]);
    json!({
        "id": msg.get("id").and_then(Value::as_str).unwrap_or("chatcmpl-anthropic"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(msg.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage.to_openai(),
    })
}

// ---------------------------------------------------------------------------
// Streaming: Anthropic events → chat.completion.chunk events.

/// What one stream has seen so far.
#[derive(Debug)]
struct State {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// The `{"role":"assistant"}` chunk has gone out. It is held back until
    /// there is content, so that an error event before any content fails
    /// the attempt over instead of committing the client to this provider.
    role_sent: bool,
    /// Anthropic block index of each tool call; the position is the OpenAI
    /// `tool_calls[].index`.
    tools: Vec<u64>,
    usage: Usage,
    finish_sent: bool,
    /// `message_stop` arrived: the stream is complete.
    stopped: bool,
}

impl State {
    fn new(model: &str, include_usage: bool, created: u64) -> State {
        State {
            id: "chatcmpl-anthropic".into(),
            created,
            model: model.into(),
            include_usage,
            role_sent: false,
            tools: Vec::new(),
            usage: Usage::default(),
            finish_sent: false,
            stopped: false,
        }
    }

    fn envelope(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// Queue a chunk with `delta`, preceded by the role chunk if it is the first.
    fn emit(&mut self, out: &mut Vec<Vec<u8>>, delta: Value, finish: Option<&str>) {
        if !self.role_sent {
            self.role_sent = true;
            let role = json!({"role": "assistant", "content": ""});
            out.push(self.chunk(role, None));
        }
        out.push(self.chunk(delta, finish));
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        let c = self.envelope(json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish,
        }]));
        sse::data_event(c.to_string().as_bytes())
    }
}

/// Tool calls one streamed message may have: the translation remembers
/// each one's block index, and that memory must stay bounded.
const MAX_TOOL_CALLS: usize = 1024;

/// Why an upstream event ends the stream.
#[derive(Debug, PartialEq)]
enum Fail {
    /// An `error` event.
    ErrorEvent,
    /// Not what the API promises; the text says what.
    Malformed(&'static str),
}

/// Map one Anthropic event to the encoded OpenAI chunks it becomes (often
/// none). `name` is the SSE `event:` field; without one, the data's `type`.
fn map_event(name: Option<&str>, data: &str, st: &mut State) -> Result<Vec<Vec<u8>>, Fail> {
    let parsed = serde_json::from_str::<Value>(data);
    let kind = match name {
        Some(n) => n.to_string(),
        None => parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    };
    let mut out = Vec::new();
    match kind.as_str() {
        "ping" => {}
        "error" => return Err(Fail::ErrorEvent),
        "message_start"
        | "content_block_start"
        | "content_block_delta"
        | "content_block_stop"
        | "message_delta"
        | "message_stop" => {
            let v = parsed.map_err(|_| Fail::Malformed("stream event is not JSON"))?;
            map_known(&kind, &v, st, &mut out)?;
        }
        // New event types may be added at any time; they are ignored.
        _ => {}
    }
    Ok(out)
}

fn map_known(kind: &str, v: &Value, st: &mut State, out: &mut Vec<Vec<u8>>) -> Result<(), Fail> {
    let index = || {
        v.get("index")
            .and_then(Value::as_u64)
            .ok_or(Fail::Malformed("content block event without an index"))
    };
    match kind {
        "message_start" => {
            let m = &v["message"];
            if let Some(id) = m.get("id").and_then(Value::as_str) {
                st.id = id.to_string();
            }
            st.usage.update(&m["usage"]);
        }
        "content_block_start" => {
            let i = index()?;
            let block = &v["content_block"];
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let t = block.get("text").and_then(Value::as_str).unwrap_or("");
                    if !t.is_empty() {
                        st.emit(out, json!({ "content": t }), None);
                    }
                }
                Some("tool_use") => {
                    if st.tools.len() >= MAX_TOOL_CALLS {
                        return Err(Fail::Malformed("more tool calls than one message may have"));
                    }
                    let k = st.tools.len();
                    st.tools.push(i);
                    let delta = json!({"tool_calls": [{
                        "index": k,
                        "id": block.get("id").cloned().unwrap_or_else(|| json!("")),
                        "type": "function",
                        "function": {
                            "name": block.get("name").cloned().unwrap_or_else(|| json!("")),
                            "arguments": "",
                        },
                    }]});
                    st.emit(out, delta, None);
                }
                _ => {}
            }
        }
        "content_block_delta" => {
            let i = index()?;
            let d = &v["delta"];
            match d.get("type").and_then(Value::as_str) {
                Some("text_delta") => {
                    let t = d.get("text").and_then(Value::as_str).unwrap_or("");
                    if !t.is_empty() {
                        st.emit(out, json!({ "content": t }), None);
                    }
                }
                Some("input_json_delta") => {
                    let k = st
                        .tools
                        .iter()
                        .position(|b| *b == i)
                        .ok_or(Fail::Malformed("input_json_delta outside a tool_use block"))?;
                    let part = d.get("partial_json").and_then(Value::as_str).unwrap_or("");
                    if !part.is_empty() {
                        let delta =
                            json!({"tool_calls": [{"index": k, "function": {"arguments": part}}]});
                        st.emit(out, delta, None);
                    }
                }
                // thinking_delta, signature_delta, citations_delta: no OpenAI form.
                _ => {}
            }
        }
        "content_block_stop" => {}
        "message_delta" => {
            st.usage.update(&v["usage"]);
            let reason = v.pointer("/delta/stop_reason").and_then(Value::as_str);
            if reason.is_some() && !st.finish_sent {
                st.finish_sent = true;
                st.emit(out, json!({}), Some(finish_reason(reason)));
            }
        }
        "message_stop" => {
            if !st.finish_sent {
                st.finish_sent = true;
                st.emit(out, json!({}), Some("stop"));
            }
            if st.include_usage {
                let mut c = st.envelope(json!([]));
                c["usage"] = st.usage.to_openai();
                out.push(sse::data_event(c.to_string().as_bytes()));
            }
            st.stopped = true;
        }
        _ => {}
    }
    Ok(())
}

struct AnthropicStream<'a> {
    up: &'a Upstream,
    events: SseReader<Box<dyn BufRead + Send>>,
    state: State,
    /// Chunks already mapped but not yet handed out (one event per call).
    queue: VecDeque<Vec<u8>>,
}

impl ChatStream for AnthropicStream<'_> {
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        loop {
            if let Some(chunk) = self.queue.pop_front() {
                return Ok(Some(chunk));
            }
            if self.state.stopped {
                return Ok(None);
            }
            let ev = self.up.next_event(&mut self.events)?.ok_or_else(|| {
                ProviderError::Connect("upstream closed the stream before message_stop".into())
            })?;
            let Some(data) = ev.data.as_deref() else {
                continue; // a comment
            };
            match map_event(ev.name.as_deref(), data, &mut self.state) {
                Ok(chunks) => self.queue.extend(chunks),
                Err(Fail::ErrorEvent) => return Err(self.up.in_stream_error(data)),
                Err(Fail::Malformed(what)) => {
                    return Err(self.up.decode_error(what, data.as_bytes()));
                }
            }
        }
    }

    fn usage(&self) -> Option<crate::metrics::Usage> {
        let u = &self.state.usage;
        Some(crate::metrics::Usage {
            prompt: u
                .input
                .saturating_add(u.cache_creation)
                .saturating_add(u.cache_read.unwrap_or(0)),
            completion: u.output,
        })
    }

    fn finish(&mut self) {
        self.up.drain(&mut self.events);
    }

    fn failure_event(&mut self, err: &ProxyError) -> Vec<u8> {
        super::chat_failure_event(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = include_str!("../../tests/fixtures/anthropic/text.json");
    const TOOL_USE: &str = include_str!("../../tests/fixtures/anthropic/tool_use.json");
    const MAX_TOKENS: &str = include_str!("../../tests/fixtures/anthropic/max_tokens.json");
    const STREAM_TEXT: &str = include_str!("../../tests/fixtures/anthropic/stream_text.sse");
    const STREAM_TOOL_USE: &str =
        include_str!("../../tests/fixtures/anthropic/stream_tool_use.sse");
    const STREAM_ERROR: &str = include_str!("../../tests/fixtures/anthropic/stream_error.sse");

    fn request(body: Value) -> ApiRequest {
        ApiRequest::parse(Endpoint::Chat, body.to_string().as_bytes()).expect("valid request")
    }

    fn translate(body: Value) -> Value {
        to_anthropic(&request(body), "claude-x", 4096).expect("translates")
    }

    /// The 400 a request translates to: (message, param).
    fn refused(body: Value) -> (String, String) {
        match to_anthropic(&request(body), "claude-x", 4096) {
            Err(ProviderError::Refused { error }) => {
                assert_eq!(error["type"], "invalid_request_error");
                assert!(error["code"].is_null());
                (
                    error["message"].as_str().unwrap().to_string(),
                    error["param"].as_str().unwrap_or("").to_string(),
                )
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[test]
    fn request_moves_system_and_maps_limits_stop_sampling_and_user() {
        let out = translate(json!({
            "model": "claude", "stream": true,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                user("Bonjour"),
            ],
            "max_completion_tokens": 300, "max_tokens": 5,
            "stop": "END", "temperature": 0.4, "top_p": 0.9, "user": "user-42",
            "n": 1, "seed": 7, "frequency_penalty": 0.5, "presence_penalty": 0.1,
            "logprobs": true, "top_logprobs": 2, "logit_bias": {"42": 1},
            "response_format": {"type": "json_object"}, "service_tier": "auto",
            "store": true, "metadata": {"a": "b"}, "stream_options": {"include_usage": true},
            "some_future_field": 1
        }));
        assert_eq!(
            out,
            json!({
                "model": "claude-x",
                "system": "Be brief.\n\nUse French.",
                "messages": [{"role": "user", "content": "Bonjour"}],
                "max_tokens": 300,
                "stop_sequences": ["END"],
                "temperature": 0.4,
                "top_p": 0.9,
                "stream": true,
                "metadata": {"user_id": "user-42"},
            })
        );
        // The configured default when the client sets no limit; stop lists.
        let out = to_anthropic(
            &request(json!({"model": "m", "messages": [user("hi")], "stop": ["a", "b"]})),
            "claude-x",
            1234,
        )
        .unwrap();
        assert_eq!(out["max_tokens"], 1234);
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));
        assert!(out.get("stream").is_none() && out.get("system").is_none());
        let out = translate(json!({"model": "m", "messages": [user("hi")], "max_tokens": 9}));
        assert_eq!(out["max_tokens"], 9);
    }

    #[test]
    fn temperature_over_one_is_clamped() {
        let t =
            |v: Value| translate(json!({"model": "m", "messages": [user("x")], "temperature": v}));
        assert_eq!(t(json!(1.7))["temperature"], 1.0);
        assert_eq!(t(json!(1))["temperature"], 1);
        assert_eq!(t(json!(0))["temperature"], 0);
    }

    #[test]
    fn request_maps_tools_tool_choice_tool_calls_and_results() {
        let weather = json!({"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": true}});
        let clock = json!({"type": "function", "function": {"name": "now"}});
        let out = translate(json!({
            "model": "m",
            "messages": [
                user("Weather in Paris and Rome, and the time?"),
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                    {"id": "call_3", "type": "function", "function": {"name": "now", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "tool", "tool_call_id": "call_3", "content": "12:00"},
                user("Thanks. And tomorrow?"),
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_4", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}
            ],
            "tools": [weather, clock],
            "tool_choice": "required",
            "parallel_tool_calls": false
        }));
        assert_eq!(
            out["tools"],
            json!([
                {"name": "get_weather", "description": "Weather for a city.",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}}
            ])
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Rome, and the time?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
                    {"type": "tool_use", "id": "call_3", "name": "now", "input": {}}
                ]},
                // Consecutive tool results, and the user text after them, are one user turn.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2",
                     "content": [{"type": "text", "text": "21C"}]},
                    {"type": "tool_result", "tool_use_id": "call_3", "content": "12:00"},
                    {"type": "text", "text": "Thanks. And tomorrow?"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_4", "name": "get_weather", "input": {"city": "Paris"}}
                ]}
            ])
        );

        let choice = |c: Value| {
            translate(json!({"model": "m", "messages": [user("x")],
                             "tools": [clock.clone()], "tool_choice": c}))["tool_choice"]
                .clone()
        };
        assert_eq!(choice(json!("auto")), json!({"type": "auto"}));
        assert_eq!(choice(json!("none")), json!({"type": "none"}));
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "now"}})),
            json!({"type": "tool", "name": "now"})
        );
        // Without tools there is nothing to choose from.
        let out = translate(json!({"model": "m", "messages": [user("x")], "tool_choice": "auto"}));
        assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
    }

    #[test]
    fn foreign_tool_call_ids_are_made_acceptable_on_both_sides() {
        let out = translate(json!({"model": "m", "messages": [
            user("x"),
            {"role": "assistant", "tool_calls": [{"id": "functions.get_weather:0", "type": "function",
              "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "ok"}
        ]}));
        assert_eq!(
            out["messages"][1]["content"][0]["id"],
            "functions_get_weather_0"
        );
        assert_eq!(
            out["messages"][2]["content"][0]["tool_use_id"],
            "functions_get_weather_0"
        );
        assert_eq!(tool_id("toolu_01A-b"), "toolu_01A-b");
    }

    #[test]
    fn request_maps_images() {
        let out = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]}]}),
        );
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ])
        );
    }

    #[test]
    fn what_anthropic_cannot_express_is_a_400_naming_the_field() {
        let parts =
            |p: Value| json!({"model": "m", "messages": [{"role": "user", "content": [p]}]});
        let (msg, param) = refused(parts(
            json!({"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}),
        ));
        assert!(msg.contains("input_audio"), "{msg}");
        assert_eq!(param, "messages[0].content[0]");
        let (_, param) = refused(parts(
            json!({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}),
        ));
        assert_eq!(param, "messages[0].content[0].image_url.url");
        let (_, param) = refused(json!({"model": "m", "messages": [user("x")], "n": 2}));
        assert_eq!(param, "n");
        let (_, param) = refused(json!({"model": "m", "messages": [
            user("x"),
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
              "function": {"name": "f", "arguments": "[1,2]"}}]}
        ]}));
        assert_eq!(param, "messages[1].tool_calls[0].function.arguments");
        let (_, param) = refused(
            json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
        );
        assert_eq!(param, "messages[0].role");
        let (_, param) = refused(json!({"model": "m", "messages": [user("x")], "max_tokens": 0}));
        assert_eq!(param, "max_tokens");
        let (_, param) = refused(json!({"model": "m", "messages": [user("x")],
            "tools": [{"type": "custom", "custom": {"name": "x"}}]}));
        assert_eq!(param, "tools[0].type");
        // A 400 is the request's fault: no failover.
        let e = to_anthropic(
            &request(json!({"model": "m", "messages": [user("x")], "n": 3})),
            "c",
            1,
        )
        .unwrap_err();
        assert!(!e.is_failover());
    }

    /// The fields the OpenAI schema requires of a `chat.completion`.
    fn assert_completion_shape(v: &Value) {
        assert!(v["id"].is_string(), "{v}");
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].is_u64());
        assert!(v["model"].is_string());
        let choices = v["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 1);
        for c in choices {
            assert_eq!(c["index"], 0);
            assert!(c["finish_reason"].is_string());
            assert!(c.get("logprobs").is_some_and(Value::is_null));
            let m = &c["message"];
            assert_eq!(m["role"], "assistant");
            assert!(
                m.get("content")
                    .is_some_and(|c| c.is_string() || c.is_null())
            );
            assert!(m.get("refusal").is_some_and(Value::is_null));
        }
        let u = &v["usage"];
        for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert!(u[k].is_u64(), "usage.{k}: {u}");
        }
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
        );
    }

    fn fixture(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn response_text() {
        let v = from_anthropic(&fixture(TEXT), "claude", 1_700_000_000);
        assert_completion_shape(&v);
        assert_eq!(v["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
        assert_eq!(v["model"], "claude", "the model the client asked for");
        assert_eq!(v["created"], 1_700_000_000);
        let c = &v["choices"][0];
        assert_eq!(c["message"]["content"], "Hello! How can I help you today?");
        assert!(c["message"].get("tool_calls").is_none());
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24,
                   "prompt_tokens_details": {"cached_tokens": 0}})
        );
    }

    #[test]
    fn response_tool_use_with_cached_tokens() {
        let v = from_anthropic(&fixture(TOOL_USE), "claude", 1);
        assert_completion_shape(&v);
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(
            c["message"]["content"],
            "I'll check the current weather in San Francisco for you."
        );
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "celsius"})
        );
        // Cached input counts as prompt tokens, as in OpenAI's usage.
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 640, "completion_tokens": 92, "total_tokens": 732,
                   "prompt_tokens_details": {"cached_tokens": 256}})
        );
    }

    #[test]
    fn response_max_tokens_and_no_text() {
        let v = from_anthropic(&fixture(MAX_TOKENS), "claude", 1);
        assert_completion_shape(&v);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        // Usage without cache counters has no details.
        let v = from_anthropic(
            &json!({"id": "msg_1", "content": [], "stop_reason": "refusal",
                    "usage": {"input_tokens": 3, "output_tokens": 0}}),
            "claude",
            1,
        );
        assert_completion_shape(&v);
        assert!(v["choices"][0]["message"]["content"].is_null());
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3})
        );
    }

    #[test]
    fn finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(Some(stop)), finish, "{stop}");
        }
    }

    /// (event name, data) pairs of an SSE fixture.
    fn events(sse_text: &str) -> Vec<(Option<String>, String)> {
        let mut r = SseReader::new(sse_text.as_bytes());
        let mut out = Vec::new();
        while let Some(e) = r.next_event().unwrap() {
            out.push((e.name, e.data.unwrap()));
        }
        out
    }

    /// Run a fixture through `map_event`: the decoded chunks, and the
    /// failure that ended it, if any.
    fn run(sse_text: &str, include_usage: bool) -> (Vec<Value>, Option<Fail>, State) {
        let mut st = State::new("claude", include_usage, 1_700_000_000);
        let mut chunks = Vec::new();
        for (name, data) in events(sse_text) {
            match map_event(name.as_deref(), &data, &mut st) {
                Ok(out) => chunks.extend(out.into_iter().map(|c| {
                    let s = String::from_utf8(c).unwrap();
                    let json = s
                        .strip_prefix("data: ")
                        .unwrap()
                        .strip_suffix("\n\n")
                        .unwrap();
                    serde_json::from_str::<Value>(json).unwrap()
                })),
                Err(f) => return (chunks, Some(f), st),
            }
        }
        (chunks, None, st)
    }

    fn assert_chunk_shape(c: &Value, id: &str) {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], 1_700_000_000);
        assert_eq!(c["model"], "claude");
        for ch in c["choices"].as_array().unwrap() {
            assert_eq!(ch["index"], 0);
            assert!(ch["delta"].is_object());
            assert!(ch.get("finish_reason").is_some());
            assert!(ch.get("logprobs").is_some_and(Value::is_null));
        }
    }

    #[test]
    fn stream_text() {
        let (chunks, fail, st) = run(STREAM_TEXT, true);
        assert_eq!(fail, None);
        assert!(st.stopped);
        let id = "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY";
        chunks.iter().for_each(|c| assert_chunk_shape(c, id));
        let deltas: Vec<&Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| &c["choices"][0]["delta"])
            .collect();
        assert_eq!(
            deltas,
            [
                &json!({"role": "assistant", "content": ""}),
                &json!({"content": "Hello"}),
                &json!({"content": "!"}),
                &json!({"content": " How can I help?"}),
                &json!({}),
            ]
        );
        let finishes: Vec<&Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .collect();
        assert_eq!(finishes[..4], [&Value::Null; 4]);
        assert_eq!(finishes[4], "stop");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                   "prompt_tokens_details": {"cached_tokens": 0}})
        );
        // Without include_usage, no usage chunk.
        let (chunks, _, _) = run(STREAM_TEXT, false);
        assert_eq!(chunks.len(), 5);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn stream_tool_use() {
        let (chunks, fail, _) = run(STREAM_TOOL_USE, false);
        assert_eq!(fail, None);
        chunks
            .iter()
            .for_each(|c| assert_chunk_shape(c, "msg_014p7gG3wDgGV9EUtLvnow3U"));
        let mut text = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for c in &chunks {
            let d = &c["choices"][0]["delta"];
            text.push_str(d["content"].as_str().unwrap_or(""));
            for tc in d["tool_calls"].as_array().map_or(&[][..], |a| a) {
                let k = tc["index"].as_u64().unwrap() as usize;
                if k == calls.len() {
                    assert_eq!(tc["type"], "function");
                    calls.push((
                        tc["id"].as_str().unwrap().into(),
                        tc["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                calls[k]
                    .2
                    .push_str(tc["function"]["arguments"].as_str().unwrap());
            }
        }
        assert_eq!(text, "Okay, let's check the weather for San Francisco, CA:");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(calls[0].1, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].2).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
        );
        assert_eq!(calls[1].1, "get_time");
        let args: Value = serde_json::from_str(&calls[1].2).unwrap();
        assert_eq!(args, json!({"timezone": "America/Los_Angeles"}));
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(last["choices"][0]["delta"], json!({}));
    }

    #[test]
    fn stream_error_before_content_produces_nothing_first() {
        let (chunks, fail, _) = run(STREAM_ERROR, true);
        // message_start and ping produced nothing, so the proxy can still fail over.
        assert!(chunks.is_empty(), "{chunks:?}");
        assert_eq!(fail, Some(Fail::ErrorEvent));
    }

    #[test]
    fn unknown_events_are_ignored_and_malformed_ones_fail() {
        let mut st = State::new("claude", false, 1);
        assert_eq!(
            map_event(Some("ping"), "{\"type\":\"ping\"}", &mut st),
            Ok(vec![])
        );
        assert_eq!(
            map_event(
                Some("brand_new_event"),
                "{\"type\":\"brand_new_event\"}",
                &mut st
            ),
            Ok(vec![])
        );
        assert_eq!(
            map_event(None, "{\"type\":\"also_new\"}", &mut st),
            Ok(vec![])
        );
        let thinking = r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#;
        assert_eq!(
            map_event(Some("content_block_delta"), thinking, &mut st),
            Ok(vec![])
        );
        assert!(matches!(
            map_event(Some("content_block_delta"), "{not json", &mut st),
            Err(Fail::Malformed(_))
        ));
        let stray = r#"{"type":"content_block_delta","index":5,"delta":{"type":"input_json_delta","partial_json":"{"}}"#;
        assert!(matches!(
            map_event(Some("content_block_delta"), stray, &mut st),
            Err(Fail::Malformed(_))
        ));
        assert_eq!(
            map_event(
                None,
                r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
                &mut st
            ),
            Err(Fail::ErrorEvent)
        );
    }

    #[test]
    fn tool_calls_per_message_are_bounded() {
        let mut st = State::new("claude", false, 1);
        let start = |i: usize| {
            json!({"type":"content_block_start","index":i,
                "content_block":{"type":"tool_use","id":format!("t{i}"),"name":"f","input":{}}})
            .to_string()
        };
        for i in 0..MAX_TOOL_CALLS {
            assert!(map_event(None, &start(i), &mut st).is_ok());
        }
        assert!(matches!(
            map_event(None, &start(MAX_TOOL_CALLS), &mut st),
            Err(Fail::Malformed(_))
        ));
        assert_eq!(st.tools.len(), MAX_TOOL_CALLS);
    }

    /// The whole stream object over a fixture body: one event per call,
    /// `Ok(None)` after `message_stop`, an error before content as the very
    /// first result, and a body cut before `message_stop` as an error.
    #[test]
    fn chat_stream_over_fixtures() {
        let cfg = crate::config::Config::from_yaml(
            "providers:\n  a: {type: anthropic, api_key: sk-ant-test-0001}\nmodels:\n  m:\n    providers:\n      a: {priority: 0}\n",
        )
        .unwrap();
        let up = Upstream::new(&cfg.providers[0], 1);
        let open = |body: &'static str| AnthropicStream {
            up: &up,
            events: SseReader::new(Box::new(body.as_bytes()) as Box<dyn BufRead + Send>),
            state: State::new("claude", false, 1),
            queue: VecDeque::new(),
        };
        let mut s = open(STREAM_TEXT);
        let mut n = 0;
        while let Some(ev) = s.next_event().unwrap() {
            assert!(ev.starts_with(b"data: {") && ev.ends_with(b"\n\n"));
            n += 1;
        }
        assert_eq!(n, 5);

        let mut s = open(STREAM_ERROR);
        let e = s.next_event().unwrap_err();
        assert!(e.is_failover());
        assert!(e.to_string().contains("Overloaded"), "{e}");

        let cut = &STREAM_TEXT[..STREAM_TEXT.find("event: message_delta").unwrap()];
        let mut s = open(cut);
        let mut got = 0;
        let e = loop {
            match s.next_event() {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("a cut stream ended cleanly"),
                Err(e) => break e,
            }
        };
        assert_eq!(got, 4);
        assert!(e.to_string().contains("message_stop"), "{e}");
    }
}
