//! `POST /v1/responses` (the Responses API): what every way of serving it
//! shares. Ids ([`hex128`]), the event encoder ([`Encoder`]: an `event:`
//! line, `type` and `sequence_number` in every payload), which events are
//! the prelude a stream holds back until it commits ([`is_prelude`]), the
//! request fields a translated `Response` echoes ([`Echo`]), and the two
//! events that end a stream that failed after it committed
//! ([`failure_events`]).
//!
//! How a provider serves it: [`native`] (the upstream speaks Responses) or
//! [`translate`] (through Chat Completions); [`retrieve`] answers
//! `GET /v1/responses/{id}`.

// `Echo` and `Encoder::new` are used by the translate slice; this goes when
// it is merged.
#![allow(dead_code)]

mod answer;
pub mod native;
mod request;
pub mod retrieve;
mod stream;
pub mod translate;

/// Entry points for `crate::fuzzing` (property tests and fuzz targets).
pub(crate) mod fuzz {
    pub(crate) use super::request::to_chat;
    pub(crate) use super::stream::fuzz::stream;
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value, json};

use crate::error::ProxyError;
use crate::openai::ApiRequest;

/// 64 unpredictable-enough bits, unique per process: splitmix64 of a
/// per-process seed plus a counter. Request ids (`req_…`) and Responses
/// ids share it.
fn next_u64() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = SEED.load(Ordering::Relaxed);
    if seed == 0 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        seed = t ^ (u64::from(std::process::id()) << 32) | 1;
        SEED.store(seed, Ordering::Relaxed);
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 16 hex digits (request ids: `req_<hex64>`).
pub fn hex64() -> String {
    format!("{:016x}", next_u64())
}

/// 32 hex digits: `resp_<hex>`, `msg_<hex>`, `fc_<hex>_<i>`.
pub fn hex128() -> String {
    format!("{:016x}{:016x}", next_u64(), next_u64())
}

/// Unix seconds now (`created_at`).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The events a stream holds back until it commits: before the first
/// output event nothing has been promised, so the request may still fail
/// over (the next provider's prelude then reaches the client instead).
pub fn is_prelude(event_type: &str) -> bool {
    matches!(
        event_type,
        "response.created" | "response.in_progress" | "response.queued"
    )
}

/// Encodes the events of one Responses stream: `event: TYPE\ndata: JSON\n\n`
/// with `"type"` first and `"sequence_number"` (0, 1, 2, … per stream) last.
#[derive(Debug, Default)]
pub struct Encoder {
    seq: u64,
}

impl Encoder {
    /// Numbering from 0.
    pub fn new() -> Encoder {
        Encoder { seq: 0 }
    }

    /// Numbering from `seq` (after an upstream's own events).
    pub fn starting_at(seq: u64) -> Encoder {
        Encoder { seq }
    }

    /// The `sequence_number` the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// One event of type `ty`. `body` is an object of the event's other
    /// fields (its own `type` and `sequence_number`, if any, are replaced);
    /// anything else is sent as `{"type","sequence_number"}` alone.
    pub fn event(&mut self, ty: &str, body: Value) -> Vec<u8> {
        let seq = self.seq;
        self.seq = self.seq.saturating_add(1);
        let empty = Map::new();
        let fields = match &body {
            Value::Object(m) => m,
            _ => &empty,
        };
        let data =
            serde_json::to_vec(&Tagged { ty, fields, seq }).expect("a JSON map always serializes");
        let mut out = Vec::with_capacity(data.len() + ty.len() + 16);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\n\n");
        out
    }
}

/// An event payload in wire order, without copying the fields.
struct Tagged<'a> {
    ty: &'a str,
    fields: &'a Map<String, Value>,
    seq: u64,
}

impl Serialize for Tagged<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.ty)?;
        for (k, v) in self.fields {
            if k != "type" && k != "sequence_number" {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("sequence_number", &self.seq)?;
        m.end()
    }
}

/// The request fields a translated `Response` repeats (design §1.1), in
/// the shapes the spec's `Response` schema requires.
#[derive(Debug, Clone)]
pub struct Echo {
    /// The client's model name.
    pub model: String,
    pub instructions: Value,
    /// `tools`, each `function` tool with `strict` and `parameters` filled
    /// (`null` when absent: the schema requires both).
    pub tools: Value,
    pub tool_choice: Value,
    pub parallel_tool_calls: Value,
    pub metadata: Value,
    pub temperature: Value,
    pub top_p: Value,
    pub max_output_tokens: Value,
    pub reasoning_effort: Value,
    /// `text.format`, or `{"type":"text"}`.
    pub text_format: Value,
    pub truncation: Value,
    /// Omitted from the `Response` when absent (the schema has no `null`).
    pub user: Option<String>,
}

impl Echo {
    pub fn of(req: &ApiRequest) -> Echo {
        let b = &req.body;
        let get = |k: &str| b.get(k).filter(|v| !v.is_null()).cloned();
        let tools = match b.get("tools") {
            Some(Value::Array(tools)) => Value::Array(
                tools
                    .iter()
                    .map(|t| {
                        let mut t = t.clone();
                        if let Some(o) = t.as_object_mut() {
                            if o.get("type").and_then(Value::as_str) == Some("function") {
                                o.entry("strict").or_insert(Value::Null);
                                o.entry("parameters").or_insert(Value::Null);
                            }
                        }
                        t
                    })
                    .collect(),
            ),
            _ => json!([]),
        };
        Echo {
            model: req.model.clone(),
            instructions: get("instructions").unwrap_or(Value::Null),
            tools,
            tool_choice: get("tool_choice").unwrap_or_else(|| json!("auto")),
            parallel_tool_calls: get("parallel_tool_calls")
                .filter(Value::is_boolean)
                .unwrap_or(Value::Bool(true)),
            metadata: get("metadata")
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({})),
            temperature: get("temperature").unwrap_or(Value::Null),
            top_p: get("top_p").unwrap_or(Value::Null),
            max_output_tokens: get("max_output_tokens").unwrap_or(Value::Null),
            reasoning_effort: b
                .get("reasoning")
                .and_then(|r| r.get("effort"))
                .cloned()
                .unwrap_or(Value::Null),
            text_format: b
                .get("text")
                .and_then(|t| t.get("format"))
                .filter(|f| f.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "text"})),
            truncation: get("truncation").unwrap_or_else(|| json!("disabled")),
            user: b.get("user").and_then(Value::as_str).map(str::to_string),
        }
    }

    /// A `Response` object with these fields, `output: []`, no `usage`, and
    /// `status`; the caller sets `output`, `usage`, `incomplete_details`,
    /// `error` and `completed_at` as the answer goes.
    pub fn response(&self, id: &str, created_at: u64, status: &str) -> Map<String, Value> {
        let mut r = json!({
            "id": id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "completed_at": null,
            "error": null,
            "incomplete_details": null,
            "instructions": self.instructions,
            "model": self.model,
            "output": [],
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "metadata": self.metadata,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "previous_response_id": null,
            "reasoning": {"effort": self.reasoning_effort, "summary": null},
            "text": {"format": self.text_format},
            "truncation": self.truncation,
            "store": false,
            "background": false,
        });
        let Value::Object(m) = &mut r else {
            unreachable!("a json! object")
        };
        if let Some(u) = &self.user {
            m.insert("user".into(), Value::String(u.clone()));
        }
        std::mem::take(m)
    }
}

/// The two events that end a Responses stream which failed after it
/// committed (design §3.5): `response.failed`, whose `response` is
/// `response` (the stream's own, with the same id) marked failed, then an
/// `error` event with the spec's flat fields and the proxy's nested error
/// object (`err.body()["error"]`), which is what makes the OpenAI SDKs
/// raise instead of ending quietly.
pub fn failure_events(
    enc: &mut Encoder,
    mut response: Map<String, Value>,
    err: &ProxyError,
) -> Vec<u8> {
    let object = err.error_object();
    let message = object.get("message").cloned().unwrap_or(Value::Null);
    let code = object.get("code").cloned().unwrap_or(Value::Null);
    // `ResponseErrorCode` is an enum: the proxy's own codes are not in it.
    let response_code = if err.status == 429 {
        "rate_limit_exceeded"
    } else {
        "server_error"
    };
    response.insert("status".into(), json!("failed"));
    response.insert("completed_at".into(), Value::Null);
    response.insert(
        "error".into(),
        json!({"code": response_code, "message": message}),
    );
    let mut out = enc.event("response.failed", json!({ "response": response }));
    out.extend(enc.event(
        "error",
        json!({
            "code": code,
            "message": message,
            "param": object.get("param").cloned().unwrap_or(Value::Null),
            "error": object,
        }),
    ));
    out
}

/// The error stub files return until their slice lands.
fn not_yet(what: &str) -> crate::error::ProviderError {
    crate::error::ProviderError::Status {
        status: 501,
        error: json!({
            "message": format!("{what} is not implemented in this build"),
            "type": "server_error",
            "param": null,
            "code": "not_implemented",
        }),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_of_the_promised_length_and_differ() {
        let (a, b) = (hex128(), hex128());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_eq!(hex64().len(), 16);
    }

    #[test]
    fn prelude_types() {
        for t in [
            "response.created",
            "response.in_progress",
            "response.queued",
        ] {
            assert!(is_prelude(t), "{t}");
        }
        for t in [
            "response.output_item.added",
            "response.output_text.delta",
            "response.completed",
            "response.failed",
            "error",
            "",
        ] {
            assert!(!is_prelude(t), "{t}");
        }
    }

    #[test]
    fn encoder_writes_event_line_type_first_and_counts() {
        let mut e = Encoder::new();
        let a = e.event(
            "response.created",
            json!({"response": {"id": "r"}, "type": "x", "sequence_number": 9}),
        );
        assert_eq!(
            String::from_utf8(a).unwrap(),
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"},\"sequence_number\":0}\n\n"
        );
        let b = e.event("response.in_progress", Value::Null);
        assert!(b.ends_with(b"\"sequence_number\":1}\n\n"));
        assert_eq!(e.next_seq(), 2);
        assert_eq!(
            Encoder::starting_at(7).event("e", json!({})),
            b"event: e\ndata: {\"type\":\"e\",\"sequence_number\":7}\n\n"
        );
    }

    #[test]
    fn failure_events_are_failed_then_hybrid_error_with_following_numbers() {
        let req = ApiRequest::parse(
            crate::openai::Endpoint::Responses,
            br#"{"model":"m","input":"hi","tools":[{"type":"function","name":"f"}],"user":"u"}"#,
        )
        .unwrap();
        let echo = Echo::of(&req);
        let resp = echo.response("resp_1", 5, "in_progress");
        assert_eq!(resp["tools"][0]["strict"], Value::Null);
        assert!(
            resp["tools"][0]
                .as_object()
                .unwrap()
                .contains_key("parameters")
        );
        assert_eq!(resp["user"], "u");
        let err = ProxyError::new(crate::error::ErrorKind::UpstreamStream, "cut");
        let mut enc = Encoder::starting_at(4);
        let bytes = failure_events(&mut enc, resp, &err);
        let text = String::from_utf8(bytes).unwrap();
        let events: Vec<Value> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.split("data: ").nth(1).unwrap()).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["type"], "response.failed");
        assert_eq!(events[0]["sequence_number"], 4);
        assert_eq!(events[0]["response"]["id"], "resp_1");
        assert_eq!(events[0]["response"]["status"], "failed");
        assert_eq!(events[0]["response"]["error"]["code"], "server_error");
        assert_eq!(events[1]["type"], "error");
        assert_eq!(events[1]["sequence_number"], 5);
        assert_eq!(events[1]["code"], "upstream_stream_error");
        assert_eq!(events[1]["error"], err.error_object());
    }
}
