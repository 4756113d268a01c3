//! Native Responses providers (`azure`, and `openai` with `responses:
//! native`): the body goes upstream with only `model` replaced, and the
//! answer and its events come back unchanged. What this module adds is the
//! judgement the router and the relay need: which 2xx answers are failures
//! (a 200 whose `status` is `failed`, an in-band `error` or `response.failed`
//! event before the first output), and how a stream that breaks after it
//! has committed ends honestly (`response.failed` and an `error` event).

use std::io::BufRead;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{MAX_UPSTREAM_TEXT, ProviderError, ProxyError, redact, redact_value, truncate};
use crate::metrics::Usage;
use crate::openai::{ApiRequest, Endpoint};
use crate::providers::{ChatStream, Upstream};
use crate::sse::{self, Event, SseReader};

/// Most bytes of finished output items kept for the `output` of a
/// synthesized `response.failed`; past it the items are not kept (the
/// client already has them as events), so a long stream costs no memory.
const MAX_KEPT_OUTPUT: usize = 256 * 1024;

/// `POST` the request to a native `/responses` URL and return the answer
/// unchanged once it is a `response` object that did not fail.
pub fn complete(
    up: &Upstream,
    url: &str,
    req: &ApiRequest,
    model_id: &str,
) -> Result<Vec<u8>, ProviderError> {
    // Not `to_upstream_json_with_usage`: `stream_options.include_usage` is
    // no Responses field, and OpenAI refuses unknown `stream_options` keys.
    let body = req.to_upstream_json(model_id);
    let resp = up.post(url, &up.auth_headers(), &body, false)?;
    let bytes = up.read_body(resp)?;
    check_answer(up, &bytes)?;
    Ok(bytes)
}

/// Open a native Responses stream.
pub fn stream<'a>(
    up: &'a Upstream,
    url: &str,
    req: &ApiRequest,
    model_id: &str,
) -> Result<Box<dyn ChatStream + 'a>, ProviderError> {
    let body = req.to_upstream_json(model_id);
    let resp = up.post(url, &up.auth_headers(), &body, true)?;
    Ok(Box::new(NativeStream::new(up, up.events(resp)?, model_id)))
}

/// Why a 2xx body was refused, for the message.
#[derive(Deserialize)]
struct FailedProbe {
    status: Option<String>,
    error: Option<ErrorProbe>,
}

#[derive(Deserialize)]
struct ErrorProbe {
    code: Option<Value>,
    message: Option<Value>,
}

impl ErrorProbe {
    /// `code: message`, for the failure's message (redacted by the caller).
    fn text(&self) -> String {
        let s = |v: &Option<Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        match (s(&self.code), s(&self.message)) {
            (c, m) if c.is_empty() && m.is_empty() => "no message".to_string(),
            (c, m) if c.is_empty() => m,
            (c, m) if m.is_empty() => c,
            (c, m) => format!("{c}: {m}"),
        }
    }
}

/// A 2xx body is what [`Endpoint::Responses`] accepts: a `response`
/// object (with `output`) that did not fail. `status: failed` in a 200 is
/// the upstream's failure, so the request fails over like any other, and
/// the message carries the upstream's error (the breaker's `last_error`).
pub fn check_answer(up: &Upstream, bytes: &[u8]) -> Result<(), ProviderError> {
    // The probe skips string contents, whose UTF-8 serde_json does not
    // check: a body that is not UTF-8 is not JSON (RFC 8259 §8.1).
    if std::str::from_utf8(bytes).is_err() {
        return Err(up.decode_error("the body is not UTF-8", bytes));
    }
    if Endpoint::Responses.accepts_body(bytes) {
        return Ok(());
    }
    match serde_json::from_slice::<FailedProbe>(bytes) {
        Ok(p) if p.status.as_deref() == Some("failed") => {
            let text = p.error.map_or("no error given".to_string(), |e| e.text());
            Err(up.decode_error("the upstream answered a failed response", text.as_bytes()))
        }
        _ => {
            let what = format!("expected {}", Endpoint::Responses.body_name());
            Err(up.decode_error(&what, bytes))
        }
    }
}

/// What every event of a Responses stream has.
#[derive(Deserialize)]
struct EventProbe {
    #[serde(rename = "type")]
    ty: String,
    sequence_number: Option<u64>,
}

/// The `response` of a lifecycle event, as a map.
#[derive(Deserialize)]
struct WithResponse {
    response: Map<String, Value>,
}

/// The `item` of `response.output_item.done`.
#[derive(Deserialize)]
struct WithItem {
    item: Value,
}

/// An `error` event: the spec's flat fields, or the nested `error` object
/// OpenAI and Azure actually send.
#[derive(Deserialize)]
struct ErrorEvent {
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    error: Option<ErrorProbe>,
}

/// A `response.failed` event's `response.error`.
#[derive(Deserialize)]
struct FailedEvent {
    response: FailedResponse,
}

#[derive(Deserialize)]
struct FailedResponse {
    error: Option<ErrorProbe>,
}

/// The `usage` of a terminal event's `response`.
#[derive(Deserialize)]
struct TerminalProbe {
    response: TerminalResponse,
}

#[derive(Deserialize)]
struct TerminalResponse {
    usage: Option<UsageProbe>,
}

#[derive(Deserialize)]
struct UsageProbe {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

/// Where a stream is.
#[derive(Debug)]
enum Ending {
    /// No terminal event yet.
    Open,
    /// `response.completed` or `response.incomplete` was passed on: the
    /// next call is the end.
    Complete,
    /// The upstream's own `response.failed` or `error` was passed on after
    /// commit; the next call returns this, so the breaker counts it, and
    /// nothing is appended (the upstream ended the stream in its shape).
    Failed(ProviderError),
}

/// A native upstream's event stream, re-encoded event by event (`event:`
/// and `data:` lines; every `data:` payload as the upstream sent it).
pub struct NativeStream<'a> {
    up: &'a Upstream,
    events: SseReader<Box<dyn BufRead + Send>>,
    /// For a synthesized failure when the upstream sent no `response.created`.
    model: String,
    /// An event other than the prelude (created, in_progress, queued) was
    /// returned: from here a failure ends the stream instead of failing over.
    committed: bool,
    /// The highest `sequence_number` seen.
    last_seq: Option<u64>,
    /// The `response` of the first `response.created`.
    created: Option<Map<String, Value>>,
    /// The items of `response.output_item.done`, up to [`MAX_KEPT_OUTPUT`].
    done_items: Vec<Value>,
    kept_bytes: usize,
    ending: Ending,
    usage: Option<Usage>,
}

impl<'a> NativeStream<'a> {
    pub fn new(
        up: &'a Upstream,
        events: SseReader<Box<dyn BufRead + Send>>,
        model: &str,
    ) -> NativeStream<'a> {
        NativeStream {
            up,
            events,
            model: model.to_string(),
            committed: false,
            last_seq: None,
            created: None,
            done_items: Vec::new(),
            kept_bytes: 0,
            ending: Ending::Open,
            usage: None,
        }
    }

    fn malformed(&self, data: &str) -> ProviderError {
        self.up
            .decode_error("malformed stream event", data.as_bytes())
    }

    /// The failure an in-band `error` event stands for. Both shapes are
    /// read: the spec's flat `code`/`message`, and the nested `error`
    /// object OpenAI and Azure send.
    fn error_event(&self, data: &str) -> ProviderError {
        let text = match serde_json::from_str::<ErrorEvent>(data) {
            Ok(ErrorEvent { error: Some(e), .. }) => e.text(),
            Ok(ErrorEvent { code, message, .. }) => ErrorProbe { code, message }.text(),
            Err(_) => "no message".to_string(),
        };
        self.in_band("an error event", &text)
    }

    /// The failure an in-band `response.failed` event stands for.
    fn failed_event(&self, data: &str) -> ProviderError {
        let text = serde_json::from_str::<FailedEvent>(data)
            .ok()
            .and_then(|f| f.response.error)
            .map_or("no error given".to_string(), |e| e.text());
        self.in_band("response.failed", &text)
    }

    /// A decode failure (so it fails over before commit), the upstream's
    /// text redacted before it is cut.
    fn in_band(&self, what: &str, text: &str) -> ProviderError {
        let key = self.up.api_key.as_ref().map(|k| k.expose());
        ProviderError::Decode(format!(
            "upstream sent {what}: {}",
            truncate(&redact(text, key), MAX_UPSTREAM_TEXT)
        ))
    }

    /// `data` with the provider's key taken out of every string (as
    /// [`redact_value`] does for error bodies); unchanged, byte for byte,
    /// when it has none.
    fn without_key(&self, data: String) -> String {
        let key = self.up.api_key.as_ref().map(|k| k.expose());
        if redact(&data, key) == data {
            return data;
        }
        match serde_json::from_str::<Value>(&data) {
            Ok(mut v) => {
                redact_value(&mut v, key);
                v.to_string()
            }
            Err(_) => redact(&data, key),
        }
    }

    /// Note what the failure events and the metrics need from an event.
    fn observe(&mut self, ty: &str, data: &str) {
        match ty {
            "response.created" if self.created.is_none() => {
                if let Ok(w) = serde_json::from_str::<WithResponse>(data) {
                    self.created = Some(w.response);
                }
            }
            "response.output_item.done" if self.kept_bytes < MAX_KEPT_OUTPUT => {
                self.kept_bytes = self.kept_bytes.saturating_add(data.len());
                if self.kept_bytes <= MAX_KEPT_OUTPUT {
                    if let Ok(w) = serde_json::from_str::<WithItem>(data) {
                        self.done_items.push(w.item);
                    }
                }
            }
            "response.completed" | "response.incomplete" => {
                if let Ok(TerminalProbe {
                    response: TerminalResponse { usage: Some(u) },
                }) = serde_json::from_str(data)
                {
                    self.usage = Some(Usage {
                        prompt: u.input_tokens,
                        completion: u.output_tokens,
                    });
                }
            }
            _ => {}
        }
    }

    /// The `response` of a synthesized `response.failed`: the one the
    /// upstream announced in `response.created` (same id, model, tools),
    /// with the output items that were finished. `failure_events` marks
    /// it failed.
    fn held_response(&self) -> Map<String, Value> {
        let mut r = self.created.clone().unwrap_or_else(|| {
            // An upstream that skipped `response.created`: a minimal
            // response, valid as the spec's `Response`.
            let mut m = Map::new();
            m.insert("id".into(), json!(format!("resp_{}", super::hex128())));
            m.insert("object".into(), json!("response"));
            m.insert("created_at".into(), json!(super::unix_now()));
            m.insert("model".into(), json!(self.model));
            m.insert("instructions".into(), Value::Null);
            m.insert("incomplete_details".into(), Value::Null);
            m.insert("tools".into(), json!([]));
            m.insert("tool_choice".into(), json!("auto"));
            m.insert("parallel_tool_calls".into(), json!(true));
            m.insert("metadata".into(), json!({}));
            m.insert("temperature".into(), Value::Null);
            m.insert("top_p".into(), Value::Null);
            m
        });
        r.insert("output".into(), Value::Array(self.done_items.clone()));
        // Upstreams send `null` for these before the end; the schema
        // allows them only absent.
        for k in ["usage", "user"] {
            if r.get(k).is_some_and(Value::is_null) {
                r.remove(k);
            }
        }
        r
    }
}

/// `event: TY` and the payload's `data:` lines, the payload unchanged.
fn encode(ty: &str, data: String) -> Vec<u8> {
    sse::encode(&Event {
        name: Some(ty.to_string()),
        data: Some(data),
        comments: Vec::new(),
    })
}

impl ChatStream for NativeStream<'_> {
    /// Comments are dropped, as for chat: before the first output they
    /// must not commit the client, and after it the proxy sends its own
    /// keep-alives.
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        match &self.ending {
            Ending::Open => {}
            Ending::Complete => return Ok(None),
            Ending::Failed(e) => return Err(e.clone()),
        }
        loop {
            let Some(ev) = self.up.next_event(&mut self.events)? else {
                return Err(ProviderError::Connect(
                    "upstream closed the stream before response.completed".into(),
                ));
            };
            let Some(mut data) = ev.data else { continue };
            if data.trim() == "[DONE]" {
                // Some gateways end with it; after a terminal event it is
                // never read (the stream has ended), so here none came.
                return Err(ProviderError::Connect(
                    "upstream sent [DONE] before response.completed".into(),
                ));
            }
            let probe = match serde_json::from_str::<EventProbe>(&data) {
                // The type becomes the `event:` line: no line breaks.
                Ok(p) if !p.ty.is_empty() && !p.ty.contains(['\r', '\n']) => p,
                _ => return Err(self.malformed(&data)),
            };
            if let Some(s) = probe.sequence_number {
                self.last_seq = Some(self.last_seq.map_or(s, |l| l.max(s)));
            }
            let ty = probe.ty;
            match ty.as_str() {
                "error" | "response.failed" => {
                    let e = if ty == "error" {
                        self.error_event(&data)
                    } else {
                        self.failed_event(&data)
                    };
                    if !self.committed {
                        return Err(e);
                    }
                    self.ending = Ending::Failed(e);
                    // Passed on in the upstream's words, but never with
                    // its key, which an upstream may echo in an error.
                    data = self.without_key(data);
                }
                "response.completed" | "response.incomplete" => {
                    self.observe(&ty, &data);
                    self.ending = Ending::Complete;
                }
                _ => self.observe(&ty, &data),
            }
            if !super::is_prelude(&ty) {
                self.committed = true;
            }
            return Ok(Some(encode(&ty, data)));
        }
    }

    fn finish(&mut self) {
        self.up.drain(&mut self.events);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// `response.failed` (the held `response.created` response, failed)
    /// and an `error` event that carries the spec's flat fields and the
    /// proxy's nested `error` object, numbered on from the upstream's last
    /// event. Nothing when the upstream already ended the stream itself.
    fn failure_event(&mut self, err: &ProxyError) -> Vec<u8> {
        if !matches!(self.ending, Ending::Open) {
            return Vec::new();
        }
        let seq = self.last_seq.map_or(0, |s| s.saturating_add(1));
        let mut enc = super::Encoder::starting_at(seq);
        let out = super::failure_events(&mut enc, self.held_response(), err);
        self.last_seq = enc.next_seq().checked_sub(1);
        // Once: nothing is sent after these.
        self.ending = Ending::Failed(ProviderError::Connect("stream already ended".into()));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::error::ErrorKind;

    const KEY: &str = "sk-native-test-key-0123456789";

    fn upstream() -> Upstream {
        let cfg = crate::config::Config::from_yaml(&format!(
            "providers:\n  o: {{type: openai, base_url: 'http://127.0.0.1:9/v1', api_key: '{KEY}'}}\nmodels:\n  m:\n    providers:\n      o: {{priority: 0}}\n"
        ))
        .unwrap();
        Upstream::new(&cfg.providers[0], 1)
    }

    /// A stream over `events` (`(type, extra fields)`), numbered from 0.
    fn body(events: &[(&str, Value)]) -> String {
        let mut out = String::new();
        for (seq, (ty, extra)) in events.iter().enumerate() {
            let mut m = extra.as_object().cloned().unwrap_or_default();
            m.insert("type".into(), json!(ty));
            m.insert("sequence_number".into(), json!(seq));
            out.push_str(&format!("event: {ty}\ndata: {}\n\n", Value::Object(m)));
        }
        out
    }

    fn created() -> Value {
        json!({"response": {"id": "resp_up1", "object": "response", "created_at": 7,
            "status": "in_progress", "model": "gpt-4.1", "output": [], "usage": null,
            "user": null, "error": null, "incomplete_details": null, "instructions": null,
            "tools": [], "tool_choice": "auto", "parallel_tool_calls": true,
            "metadata": {}, "temperature": null, "top_p": null}})
    }

    fn item_added() -> Value {
        json!({"output_index": 0, "item": {"type": "message", "id": "msg_1",
            "status": "in_progress", "role": "assistant", "content": []}})
    }

    fn item_done() -> Value {
        json!({"output_index": 0, "item": {"type": "message", "id": "msg_1",
            "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []}]}})
    }

    fn open<'a>(up: &'a Upstream, text: &str) -> NativeStream<'a> {
        let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.as_bytes().to_vec()));
        NativeStream::new(up, SseReader::new(reader), "gpt-4.1")
    }

    /// Every event until the end or an error.
    fn drain(s: &mut NativeStream<'_>) -> (Vec<String>, Result<(), ProviderError>) {
        let mut out = Vec::new();
        loop {
            match s.next_event() {
                Ok(Some(e)) => out.push(String::from_utf8(e).unwrap()),
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    fn data_of(event: &str) -> Value {
        let d: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        serde_json::from_str(&d.join("\n")).unwrap()
    }

    #[test]
    fn events_pass_unchanged_with_their_event_line_and_usage_is_read() {
        let up = upstream();
        let mut text = String::from(": keep-alive\n\n");
        text.push_str(&body(&[
            ("response.created", created()),
            ("response.in_progress", created()),
            ("response.output_item.added", item_added()),
            ("response.output_text.delta", json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi", "logprobs": []})),
            ("response.output_item.done", item_done()),
            ("response.completed", json!({"response": {"id": "resp_up1", "object": "response", "status": "completed", "output": [],
                "usage": {"input_tokens": 11, "output_tokens": 3, "total_tokens": 14}}})),
        ]));
        // A gateway's [DONE] after the terminal event is never read as one.
        text.push_str("data: [DONE]\n\n");
        let mut s = open(&up, &text);
        let (events, end) = drain(&mut s);
        assert!(end.is_ok(), "{end:?}");
        // Comments dropped; every other event exactly as the upstream framed it.
        let want: Vec<String> = text
            .split_inclusive("\n\n")
            .skip(1)
            .take(6)
            .map(str::to_string)
            .collect();
        assert_eq!(events, want);
        assert_eq!(
            s.usage(),
            Some(Usage {
                prompt: 11,
                completion: 3
            })
        );
        // The terminal event ended it: nothing more, and nothing to append.
        assert!(s.next_event().unwrap().is_none());
        assert!(
            s.failure_event(&ProxyError::new(ErrorKind::ShuttingDown, "x"))
                .is_empty()
        );
    }

    #[test]
    fn response_incomplete_also_ends_the_stream_with_its_usage() {
        let up = upstream();
        let text = body(&[
            ("response.created", created()),
            ("response.output_item.added", item_added()),
            (
                "response.incomplete",
                json!({"response": {"id": "resp_up1", "object": "response",
                "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                "output": [], "usage": {"input_tokens": 5, "output_tokens": 16}}}),
            ),
            ("response.output_text.delta", json!({"delta": "never read"})),
        ]);
        let mut s = open(&up, &text);
        let (events, end) = drain(&mut s);
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(events.len(), 3);
        assert_eq!(
            s.usage(),
            Some(Usage {
                prompt: 5,
                completion: 16
            })
        );
        assert!(s.failure_event(&ProxyError::internal("x")).is_empty());
    }

    #[test]
    fn a_data_payload_keeps_its_bytes_and_takes_its_type_as_event_name() {
        let up = upstream();
        // No `event:` line, odd spacing, a second data line: the payload is
        // the upstream's, the event line is its type.
        let text = "data: {\"type\":\"response.output_text.delta\",  \"delta\":\"a\\u00e9\",\ndata: \"sequence_number\":4}\n\n";
        let mut s = open(&up, text);
        let e = String::from_utf8(s.next_event().unwrap().unwrap()).unwrap();
        assert_eq!(
            e,
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",  \"delta\":\"a\\u00e9\",\ndata: \"sequence_number\":4}\n\n"
        );
    }

    #[test]
    fn in_band_errors_before_the_first_output_fail_over() {
        let up = upstream();
        let nested = json!({"error": {"type": "insufficient_quota", "code": "insufficient_quota",
            "message": format!("You exceeded your quota (key {KEY})"), "param": null}});
        let flat = json!({"code": "insufficient_quota", "message": "You exceeded your quota", "param": null});
        let failed = json!({"response": {"id": "resp_up1", "object": "response", "status": "failed",
            "output": [], "error": {"code": "rate_limit_exceeded", "message": "slow down"}}});
        for (ty, extra, want) in [
            (
                "error",
                nested,
                "insufficient_quota: You exceeded your quota",
            ),
            ("error", flat, "insufficient_quota: You exceeded your quota"),
            ("response.failed", failed, "rate_limit_exceeded: slow down"),
        ] {
            let text = body(&[
                ("response.created", created()),
                ("response.in_progress", created()),
                (ty, extra),
            ]);
            let mut s = open(&up, &text);
            let (events, end) = drain(&mut s);
            assert_eq!(events.len(), 2, "only the prelude came through: {events:?}");
            let e = end.unwrap_err();
            assert!(e.is_failover(), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(!msg.contains("sk-native"), "the key leaked: {msg}");
        }
    }

    #[test]
    fn the_upstreams_own_failure_after_output_passes_and_nothing_is_appended() {
        let up = upstream();
        let failed = json!({"response": {"id": "resp_up1", "object": "response", "status": "failed",
            "output": [], "error": {"code": "server_error", "message": "model crashed"}}});
        for (ty, extra) in [
            ("response.failed", failed),
            (
                "error",
                json!({"code": "server_error", "message": "model crashed", "param": null}),
            ),
        ] {
            let text = body(&[
                ("response.created", created()),
                ("response.output_item.added", item_added()),
                (ty, extra),
                ("response.output_text.delta", json!({"delta": "never read"})),
            ]);
            let mut s = open(&up, &text);
            let (events, end) = drain(&mut s);
            assert_eq!(events.len(), 3);
            assert_eq!(events[2], text.split_inclusive("\n\n").nth(2).unwrap());
            let e = end.unwrap_err();
            assert!(e.to_string().contains("model crashed"), "{e}");
            let err = ProxyError::new(ErrorKind::UpstreamStream, "failed mid-stream");
            assert!(s.failure_event(&err).is_empty(), "{ty}");
        }
    }

    #[test]
    fn a_cut_after_output_ends_with_failed_and_error_for_the_held_response() {
        let up = upstream();
        let mut text = body(&[
            ("response.created", created()),
            ("response.in_progress", created()),
            ("response.output_item.added", item_added()),
            ("response.output_item.done", item_done()),
        ]);
        text.push_str("event: response.output_text.delta\ndata: {\"type\":\"respo");
        let mut s = open(&up, &text);
        let (events, end) = drain(&mut s);
        assert_eq!(events.len(), 4);
        assert!(end.unwrap_err().is_failover());
        let err = ProxyError::new(ErrorKind::UpstreamStream, "The upstream provider failed");
        let out = String::from_utf8(s.failure_event(&err)).unwrap();
        let parts: Vec<&str> = out.split_inclusive("\n\n").collect();
        assert_eq!(parts.len(), 2, "{out}");
        assert!(parts[0].starts_with("event: response.failed\n"), "{out}");
        assert!(parts[1].starts_with("event: error\n"), "{out}");
        let failed = data_of(parts[0]);
        assert_eq!(failed["sequence_number"], 4);
        assert_eq!(failed["response"]["id"], "resp_up1");
        assert_eq!(failed["response"]["model"], "gpt-4.1");
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(failed["response"]["error"]["code"], "server_error");
        assert_eq!(failed["response"]["output"], json!([item_done()["item"]]));
        // `null` is not a valid `usage` or `user`: left out.
        assert!(failed["response"].get("usage").is_none(), "{failed}");
        assert!(failed["response"].get("user").is_none(), "{failed}");
        let error = data_of(parts[1]);
        assert_eq!(error["sequence_number"], 5);
        assert_eq!(error["code"], "upstream_stream_error");
        assert_eq!(error["message"], "The upstream provider failed");
        assert_eq!(error["error"], err.error_object());
        // Once.
        assert!(s.failure_event(&err).is_empty());
    }

    #[test]
    fn without_created_the_failure_still_names_a_response() {
        let up = upstream();
        let text = body(&[("response.output_item.added", item_added())]);
        let mut s = open(&up, &text);
        let (events, end) = drain(&mut s);
        assert_eq!(events.len(), 1);
        assert!(
            end.unwrap_err()
                .to_string()
                .contains("before response.completed")
        );
        let err = ProxyError::new(ErrorKind::ShuttingDown, "shutting down");
        let out = String::from_utf8(s.failure_event(&err)).unwrap();
        let failed = data_of(out.split_inclusive("\n\n").next().unwrap());
        assert_eq!(failed["sequence_number"], 1);
        let id = failed["response"]["id"].as_str().unwrap();
        assert!(id.starts_with("resp_") && id.len() == 37, "{id}");
        assert_eq!(failed["response"]["model"], "gpt-4.1");
    }

    #[test]
    fn hostile_streams_are_errors_not_events() {
        let up = upstream();
        let prelude = body(&[("response.created", created())]);
        for bad in [
            "data: [DONE]\n\n",
            "data: not json\n\n",
            "data: {\"sequence_number\":1}\n\n",
            "data: {\"type\":\"\"}\n\n",
            "data: {\"type\":\"x\\ndata: {}\"}\n\n",
            "data: {\"type\":5}\n\n",
        ] {
            let mut s = open(&up, &format!("{prelude}{bad}"));
            let (events, end) = drain(&mut s);
            assert_eq!(events.len(), 1, "{bad:?}");
            assert!(end.unwrap_err().is_failover(), "{bad:?}");
        }
        // A sequence number at the top of the range does not overflow.
        let text = format!(
            "{prelude}data: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{}}}\n\n",
            u64::MAX
        );
        let mut s = open(&up, &text);
        let _ = drain(&mut s);
        let out = String::from_utf8(s.failure_event(&ProxyError::internal("x"))).unwrap();
        assert!(
            out.contains(&format!("\"sequence_number\":{}", u64::MAX)),
            "{out}"
        );
    }

    #[test]
    fn a_200_that_failed_or_is_no_response_is_a_failover() {
        let up = upstream();
        let ok = br#"{"id":"resp_1","object":"response","status":"completed","output":[]}"#;
        assert!(check_answer(&up, ok).is_ok());
        let failed = format!(
            r#"{{"id":"resp_1","object":"response","status":"failed","output":[],"error":{{"code":"server_error","message":"boom {KEY}"}}}}"#
        );
        let e = check_answer(&up, failed.as_bytes()).unwrap_err();
        assert!(e.is_failover());
        assert!(e.to_string().contains("server_error: boom"), "{e}");
        assert!(!e.to_string().contains("sk-native"), "{e}");
        for bad in [
            &br#"{"object":"chat.completion","choices":[]}"#[..],
            br#"{"object":"response"}"#,
            b"<html>",
            b"{\"object\":\"response\",\"output\":[],\"x\":\"\xff\"}",
        ] {
            assert!(check_answer(&up, bad).unwrap_err().is_failover());
        }
    }
}
