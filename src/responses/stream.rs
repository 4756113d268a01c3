//! Stream: `chat.completion.chunk` events → Responses stream events
//! (design §3). [`ChatToResponses`] wraps the chat stream of an OpenAI or
//! Anthropic provider (asked for its usage chunk) and hands out one
//! encoded event per [`ChatStream::next_event`] call, because the relay
//! judges commit one event at a time: `response.created` and
//! `response.in_progress` come first and are held by the relay; the first
//! output event commits the stream.

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use super::answer::{
    call_item, message_item, refusal_part, skeleton, status_of, text_part, usage_of,
};
use super::{Encoder, failure_events};
use crate::error::{ProviderError, ProxyError};
use crate::openai::ApiRequest;
use crate::providers::ChatStream;

/// Largest total of text, refusal and arguments one stream may accumulate.
/// The end of a stream repeats all of it several times at once (`*.done`,
/// `content_part.done`, `output_item.done`, the terminal `response`), so a
/// hostile upstream could make one stream hold about five times this. The
/// longest real answers (128k output tokens) are about 0.5 MiB of text.
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// Largest number of tool calls in one answer.
const MAX_CALLS: usize = 1024;

/// The kind of the message part being written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

/// The open output `message` item: its parts, the last one open.
struct Msg {
    output_index: usize,
    parts: Vec<(PartKind, String)>,
}

/// One tool call, from its first chunk to its `output_item.done`.
struct Call {
    chat_index: u64,
    /// Its position among the answer's calls (for its `fc_` id).
    nth: usize,
    /// Set when announced (`output_item.added`).
    output_index: Option<usize>,
    call_id: Option<String>,
    name: String,
    args: String,
}

pub struct ChatToResponses<'a> {
    inner: Box<dyn ChatStream + 'a>,
    /// The `Response` every lifecycle event carries (status and output are
    /// set per event).
    base: Map<String, Value>,
    hex: String,
    enc: Encoder,
    queue: VecDeque<Vec<u8>>,
    started: bool,
    /// `Ok(None)` is next: the terminal event was queued.
    ended: bool,
    /// `failure_event` has nothing more to say.
    terminal_sent: bool,
    msg: Option<Msg>,
    /// Messages are numbered per answer, so a second one gets its own id.
    msgs: usize,
    call: Option<Call>,
    calls: usize,
    next_output_index: usize,
    /// Closed items in output order, for the terminal event's `output`.
    done: Vec<Value>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    bytes: usize,
}

impl<'a> ChatToResponses<'a> {
    /// `req` is the client's Responses request (for the echo fields).
    pub fn new(
        inner: Box<dyn ChatStream + 'a>,
        req: &ApiRequest,
        hex: String,
        created_at: u64,
    ) -> ChatToResponses<'a> {
        ChatToResponses {
            inner,
            base: skeleton(req, &hex, created_at, "in_progress"),
            hex,
            enc: Encoder::new(),
            queue: VecDeque::new(),
            started: false,
            ended: false,
            terminal_sent: false,
            msg: None,
            msgs: 0,
            call: None,
            calls: 0,
            next_output_index: 0,
            done: Vec::new(),
            finish_reason: None,
            usage: None,
            bytes: 0,
        }
    }

    fn emit(&mut self, ty: &str, body: Value) {
        let ev = self.enc.event(ty, body);
        self.queue.push_back(ev);
    }

    /// The response as a lifecycle event carries it.
    fn response(&self, status: &str, output: Vec<Value>) -> Value {
        let mut r = self.base.clone();
        r.insert("status".into(), json!(status));
        r.insert("output".into(), Value::Array(output));
        Value::Object(r)
    }

    fn msg_id(&self) -> String {
        if self.msgs <= 1 {
            format!("msg_{}", self.hex)
        } else {
            format!("msg_{}_{}", self.hex, self.msgs - 1)
        }
    }

    fn grow(&mut self, n: usize) -> Result<(), ProviderError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_OUTPUT_BYTES {
            return Err(ProviderError::Decode(format!(
                "the answer is over {MAX_OUTPUT_BYTES} bytes of text and arguments"
            )));
        }
        Ok(())
    }

    /// Text or refusal for the message item, opening it (and the part) if
    /// needed.
    fn message_delta(&mut self, kind: PartKind, delta: &str) -> Result<(), ProviderError> {
        self.grow(delta.len())?;
        self.close_call();
        if self.msg.is_none() {
            let output_index = self.next_output_index;
            self.next_output_index += 1;
            self.msgs += 1;
            let mut item = message_item(&self.hex, "in_progress", Vec::new());
            item["id"] = json!(self.msg_id());
            self.emit(
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.msg = Some(Msg {
                output_index,
                parts: Vec::new(),
            });
        }
        let open_kind = self.msg.as_ref().and_then(|m| m.parts.last()).map(|p| p.0);
        if open_kind != Some(kind) {
            if open_kind.is_some() {
                self.close_part();
            }
            let m = self.msg.as_mut().expect("opened above");
            m.parts.push((kind, String::new()));
            let (oi, ci) = (m.output_index, m.parts.len() - 1);
            let part = match kind {
                PartKind::Text => text_part(""),
                PartKind::Refusal => refusal_part(""),
            };
            let item_id = self.msg_id();
            self.emit(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": oi, "content_index": ci, "part": part}),
            );
        }
        let m = self.msg.as_mut().expect("opened above");
        let (oi, ci) = (m.output_index, m.parts.len() - 1);
        m.parts[ci].1.push_str(delta);
        let item_id = self.msg_id();
        match kind {
            PartKind::Text => self.emit(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": oi, "content_index": ci,
                       "delta": delta, "logprobs": []}),
            ),
            PartKind::Refusal => self.emit(
                "response.refusal.delta",
                json!({"item_id": item_id, "output_index": oi, "content_index": ci,
                       "delta": delta}),
            ),
        }
        Ok(())
    }

    /// `*.done` and `content_part.done` for the message's open part.
    fn close_part(&mut self) {
        let Some(m) = &self.msg else { return };
        let Some((kind, text)) = m.parts.last() else {
            return;
        };
        let (oi, ci) = (m.output_index, m.parts.len() - 1);
        let item_id = self.msg_id();
        let (done, part) = match kind {
            PartKind::Text => (
                (
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": oi, "content_index": ci,
                           "text": text, "logprobs": []}),
                ),
                text_part(text),
            ),
            PartKind::Refusal => (
                (
                    "response.refusal.done",
                    json!({"item_id": item_id, "output_index": oi, "content_index": ci,
                           "refusal": text}),
                ),
                refusal_part(text),
            ),
        };
        self.emit(done.0, done.1);
        self.emit(
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": oi, "content_index": ci, "part": part}),
        );
    }

    fn item_status(&self) -> &'static str {
        if status_of(self.finish_reason.as_deref()).0 == "completed" {
            "completed"
        } else {
            "incomplete"
        }
    }

    /// The message item as it stands, with `status`.
    fn msg_item(&self, status: &str) -> Option<Value> {
        let m = self.msg.as_ref()?;
        let content = m
            .parts
            .iter()
            .map(|(k, t)| match k {
                PartKind::Text => text_part(t),
                PartKind::Refusal => refusal_part(t),
            })
            .collect();
        let mut item = message_item(&self.hex, status, content);
        item["id"] = json!(self.msg_id());
        Some(item)
    }

    fn close_msg(&mut self) {
        if self.msg.is_none() {
            return;
        }
        self.close_part();
        let status = self.item_status();
        let item = self.msg_item(status).expect("checked above");
        let oi = self.msg.take().expect("checked above").output_index;
        self.emit(
            "response.output_item.done",
            json!({"output_index": oi, "item": item}),
        );
        self.done.push(item);
    }

    fn call_item(&self, c: &Call, status: &str) -> Value {
        let call_id = c
            .call_id
            .clone()
            .unwrap_or_else(|| format!("call_{}_{}", self.hex, c.nth));
        call_item(&self.hex, c.nth, &call_id, &c.name, &c.args, status)
    }

    /// `output_item.added` for the open call, once.
    fn announce(&mut self) {
        let Some(c) = &self.call else { return };
        if c.output_index.is_some() {
            return;
        }
        let oi = self.next_output_index;
        self.next_output_index += 1;
        let mut item = self.call_item(c, "in_progress");
        item["arguments"] = json!("");
        self.emit(
            "response.output_item.added",
            json!({"output_index": oi, "item": item}),
        );
        if let Some(c) = &mut self.call {
            c.output_index = Some(oi);
        }
    }

    fn close_call(&mut self) {
        if self.call.is_none() {
            return;
        }
        self.announce();
        let c = self.call.take().expect("checked above");
        let oi = c.output_index.expect("announced above");
        let item = self.call_item(&c, "completed");
        self.emit(
            "response.function_call_arguments.done",
            json!({"item_id": item["id"], "name": c.name, "output_index": oi,
                   "arguments": c.args}),
        );
        self.emit(
            "response.output_item.done",
            json!({"output_index": oi, "item": item}),
        );
        self.done.push(item);
    }

    /// One `delta.tool_calls[]` entry.
    fn tool_delta(&mut self, tc: &Value) -> Result<(), ProviderError> {
        let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
        let name = tc.pointer("/function/name").and_then(Value::as_str);
        let args = tc
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        let id = tc.get("id").and_then(Value::as_str);
        self.grow(args.len() + name.map_or(0, str::len) + id.map_or(0, str::len))?;
        if self.call.as_ref().is_none_or(|c| c.chat_index != index) {
            self.close_msg();
            self.close_call();
            if self.calls >= MAX_CALLS {
                return Err(ProviderError::Decode(format!(
                    "the answer has more than {MAX_CALLS} tool calls"
                )));
            }
            self.call = Some(Call {
                chat_index: index,
                nth: self.calls,
                output_index: None,
                call_id: None,
                name: String::new(),
                args: String::new(),
            });
            self.calls += 1;
        }
        let c = self.call.as_mut().expect("set above");
        if c.call_id.is_none() {
            c.call_id = id.filter(|i| !i.is_empty()).map(str::to_string);
        }
        // Some servers split the name across deltas; it is announced
        // whole, at the first argument fragment.
        if let Some(n) = name {
            c.name.push_str(n);
        }
        if !args.is_empty() {
            self.announce();
            let c = self.call.as_mut().expect("set above");
            c.args.push_str(args);
            let oi = c.output_index.expect("announced above");
            let item_id = format!("fc_{}_{}", self.hex, c.nth);
            self.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": oi, "delta": args}),
            );
        }
        Ok(())
    }

    /// Map one chat chunk (the JSON of one `data:` event).
    fn chunk(&mut self, chunk: &Value) -> Result<(), ProviderError> {
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(());
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(t) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.message_delta(PartKind::Text, t)?;
            }
            if let Some(r) = delta
                .get("refusal")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.message_delta(PartKind::Refusal, r)?;
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for tc in calls {
                    self.tool_delta(tc)?;
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(f.to_string());
        }
        Ok(())
    }

    /// The chat stream ended complete: close every item, then the
    /// terminal event.
    fn end(&mut self) {
        self.close_msg();
        self.close_call();
        if self.done.is_empty() {
            // An empty answer still has a message, so `output_text` is "".
            self.message_delta_empty();
        }
        let (status, details) = status_of(self.finish_reason.as_deref());
        let mut r = self.base.clone();
        r.insert("status".into(), json!(status));
        if status == "completed" {
            r.insert("completed_at".into(), json!(super::unix_now()));
        }
        r.insert("incomplete_details".into(), details);
        r.insert("output".into(), Value::Array(self.done.clone()));
        r.insert("usage".into(), usage_of(self.usage.as_ref()));
        let ty = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(ty, json!({"response": r}));
        self.ended = true;
        self.terminal_sent = true;
    }

    /// The events of an empty message item.
    fn message_delta_empty(&mut self) {
        let oi = self.next_output_index;
        self.next_output_index += 1;
        self.msgs += 1;
        let mut item = message_item(&self.hex, "in_progress", Vec::new());
        item["id"] = json!(self.msg_id());
        self.emit(
            "response.output_item.added",
            json!({"output_index": oi, "item": item}),
        );
        self.msg = Some(Msg {
            output_index: oi,
            parts: vec![(PartKind::Text, String::new())],
        });
        let item_id = self.msg_id();
        self.emit(
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": oi, "content_index": 0,
                   "part": text_part("")}),
        );
        self.close_msg();
    }
}

/// The JSON of a chat stream event (`data: {...}\n\n`, possibly with other
/// SSE fields).
fn chunk_json(event: &[u8]) -> Result<Value, ProviderError> {
    let text = String::from_utf8_lossy(event);
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    serde_json::from_str(&data)
        .map_err(|e| ProviderError::Decode(format!("malformed chat chunk from the provider: {e}")))
}

impl ChatStream for ChatToResponses<'_> {
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        if !self.started {
            self.started = true;
            let r = self.response("in_progress", Vec::new());
            self.emit("response.created", json!({"response": r}));
            self.emit("response.in_progress", json!({"response": r}));
        }
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            match self.inner.next_event()? {
                Some(ev) => {
                    let chunk = chunk_json(&ev)?;
                    self.chunk(&chunk)?;
                }
                None => self.end(),
            }
        }
    }

    fn finish(&mut self) {
        self.inner.finish();
    }

    fn usage(&self) -> Option<crate::metrics::Usage> {
        self.inner.usage()
    }

    /// `response.failed` with what was produced so far (open items as
    /// `incomplete`), then an `error` event with the spec's flat fields and
    /// the proxy's error object nested, which makes the OpenAI SDKs raise.
    fn failure_event(&mut self, err: &ProxyError) -> Vec<u8> {
        if self.terminal_sent {
            return Vec::new();
        }
        self.terminal_sent = true;
        self.queue.clear();
        let mut output = self.done.clone();
        if let Some(item) = self.msg_item("incomplete") {
            output.push(item);
        }
        if let Some(c) = self.call.as_ref().filter(|c| c.output_index.is_some()) {
            output.push(self.call_item(c, "incomplete"));
        }
        let mut r = self.base.clone();
        r.insert("output".into(), Value::Array(output));
        if let Some(u) = &self.usage {
            r.insert("usage".into(), usage_of(Some(u)));
        }
        failure_events(&mut self.enc, r, err)
    }
}

/// A chat stream of given events, for `crate::fuzzing`.
pub(crate) mod fuzz {
    use std::collections::VecDeque;

    use super::ChatToResponses;
    use crate::error::{ErrorKind, ProviderError, ProxyError};
    use crate::openai::{ApiRequest, Endpoint};
    use crate::providers::ChatStream;

    struct Given(VecDeque<Vec<u8>>);

    impl ChatStream for Given {
        fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
            Ok(self.0.pop_front())
        }
        fn finish(&mut self) {}
        fn usage(&self) -> Option<crate::metrics::Usage> {
            None
        }
        fn failure_event(&mut self, _: &ProxyError) -> Vec<u8> {
            Vec::new()
        }
    }

    /// See `crate::fuzzing::responses_stream`.
    pub(crate) fn stream(chunks: &[Vec<u8>]) -> (Vec<Vec<u8>>, Option<ProviderError>, Vec<u8>) {
        let req = ApiRequest::parse(
            Endpoint::Responses,
            br#"{"model":"m","input":"hi","stream":true}"#,
        )
        .expect("a valid request");
        let inner = Box::new(Given(chunks.iter().cloned().collect()));
        let mut s = ChatToResponses::new(inner, &req, "0".repeat(32), 1);
        let mut events = Vec::new();
        let err = loop {
            match s.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let failure = s.failure_event(&ProxyError::new(ErrorKind::UpstreamStream, "cut"));
        (events, err, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::super::translate::spec::{assert_event_valid, assert_valid};
    use super::*;
    use crate::error::ErrorKind;
    use crate::openai::Endpoint;

    const HEX: &str = "00112233445566778899aabbccddeeff";

    /// A chat stream that hands out scripted results, one per call, then
    /// `Ok(None)`; it records `finish`.
    struct Script {
        items: VecDeque<Result<Option<Vec<u8>>, ProviderError>>,
        finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl ChatStream for Script {
        fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
            self.items.pop_front().unwrap_or(Ok(None))
        }
        fn finish(&mut self) {
            self.finished
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        fn usage(&self) -> Option<crate::metrics::Usage> {
            Some(crate::metrics::Usage {
                prompt: 4,
                completion: 2,
            })
        }
        fn failure_event(&mut self, _: &ProxyError) -> Vec<u8> {
            Vec::new()
        }
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Result<Option<Vec<u8>>, ProviderError> {
        let c = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Ok(Some(format!("data: {c}\n\n").into_bytes()))
    }

    fn usage_chunk() -> Result<Option<Vec<u8>>, ProviderError> {
        let c = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
                       "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}});
        Ok(Some(format!("data: {c}\n\n").into_bytes()))
    }

    fn text(t: &str) -> Result<Option<Vec<u8>>, ProviderError> {
        chunk(json!({"content": t}), None)
    }

    fn call(
        index: u64,
        id: Option<&str>,
        name: Option<&str>,
        args: &str,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        let mut f = json!({"arguments": args});
        if let Some(n) = name {
            f["name"] = json!(n);
        }
        let mut tc = json!({"index": index, "type": "function", "function": f});
        if let Some(id) = id {
            tc["id"] = json!(id);
        }
        chunk(json!({"tool_calls": [tc]}), None)
    }

    fn stream(items: Vec<Result<Option<Vec<u8>>, ProviderError>>) -> ChatToResponses<'static> {
        let Value::Object(body) = json!({"model": "client-model", "input": "hi", "stream": true,
            "tools": [{"type": "function", "name": "w"}]})
        else {
            panic!()
        };
        let req = ApiRequest {
            endpoint: Endpoint::Chat,
            model: "client-model".into(),
            stream: true,
            body,
        };
        let inner = Script {
            items: items.into(),
            finished: Default::default(),
        };
        ChatToResponses::new(Box::new(inner), &req, HEX.into(), 100)
    }

    /// Parse one or more encoded events; check each: its `event:` line
    /// names its `type`, and it is valid by its own schema and the union.
    fn parse(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        let mut out = Vec::new();
        for block in text.split("\n\n").filter(|b| !b.is_empty()) {
            let mut lines = block.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .expect("an event: line");
            let data = lines
                .next()
                .unwrap()
                .strip_prefix("data: ")
                .expect("a data: line");
            assert!(lines.next().is_none(), "one data line: {block}");
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["type"], name);
            assert_event_valid(&v);
            out.push(v);
        }
        out
    }

    /// Every event until the end (one per call), and the error that ended
    /// it, if any.
    fn run(s: &mut ChatToResponses<'_>) -> (Vec<Value>, Option<ProviderError>) {
        let mut events = Vec::new();
        loop {
            match s.next_event() {
                Ok(Some(ev)) => {
                    let mut e = parse(&ev);
                    assert_eq!(e.len(), 1, "one event per call");
                    events.push(e.remove(0));
                }
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    fn assert_seq(events: &[Value]) {
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64, "{e}");
        }
    }

    #[test]
    fn text_only() {
        let mut s = stream(vec![
            chunk(json!({"role": "assistant", "content": ""}), None),
            text("Hi"),
            text(" there"),
            chunk(json!({}), Some("stop")),
            usage_chunk(),
        ]);
        let (ev, err) = run(&mut s);
        assert!(err.is_none());
        assert_seq(&ev);
        assert_eq!(
            types(&ev),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let id = format!("resp_{HEX}");
        for e in [&ev[0], &ev[1], &ev[9]] {
            assert_eq!(e["response"]["id"], id, "one id for every lifecycle event");
        }
        assert_eq!(ev[0]["response"]["status"], "in_progress");
        assert!(ev[0]["response"].get("usage").is_none());
        assert_eq!(ev[4]["delta"], "Hi");
        assert_eq!(ev[4]["item_id"], format!("msg_{HEX}"));
        assert_eq!(ev[6]["text"], "Hi there");
        assert_eq!(ev[8]["item"]["status"], "completed");
        let done = &ev[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(done["usage"]["input_tokens"], 4);
        assert_eq!(done["usage"]["total_tokens"], 6);
        s.finish();
        assert_eq!(s.usage().map(|u| u.prompt), Some(4));
    }

    #[test]
    fn one_tool_call_with_a_name_split_across_deltas() {
        let mut s = stream(vec![
            call(0, Some("call_1"), Some("get_"), ""),
            call(0, None, Some("weather"), ""),
            call(0, None, None, "{\"city\":"),
            call(0, None, None, "\"Paris\"}"),
            chunk(json!({}), Some("tool_calls")),
        ]);
        let (ev, err) = run(&mut s);
        assert!(err.is_none());
        assert_seq(&ev);
        assert_eq!(
            types(&ev),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(
            ev[2]["item"],
            json!({"type": "function_call", "id": format!("fc_{HEX}_0"), "call_id": "call_1",
                   "name": "get_weather", "arguments": "", "status": "in_progress"})
        );
        assert_eq!(ev[5]["name"], "get_weather");
        assert_eq!(ev[5]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(ev[6]["item"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(ev[7]["response"]["output"][0]["call_id"], "call_1");
        assert_eq!(
            ev[7]["response"]["usage"]["total_tokens"], 0,
            "no usage chunk: zeros"
        );
    }

    #[test]
    fn text_then_two_tools_and_a_call_without_arguments() {
        let mut s = stream(vec![
            text("Checking"),
            call(0, Some("call_a"), Some("w"), "{}"),
            call(1, Some("call_b"), Some("v"), ""),
            call(2, None, Some("u"), "{\"x\":1}"),
            chunk(json!({}), Some("tool_calls")),
        ]);
        let (ev, err) = run(&mut s);
        assert!(err.is_none());
        assert_seq(&ev);
        assert_eq!(
            types(&ev),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                // call_b: no argument fragment; announced when call 2 starts.
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let oi: Vec<u64> = ev
            .iter()
            .filter(|e| e["type"] == "response.output_item.added")
            .map(|e| e["output_index"].as_u64().unwrap())
            .collect();
        assert_eq!(oi, [0, 1, 2, 3], "output_index counts items");
        let out = &ev.last().unwrap()["response"]["output"];
        assert_eq!(out[1]["call_id"], "call_a");
        assert_eq!(out[2]["arguments"], "");
        assert_eq!(
            out[3]["call_id"],
            format!("call_{HEX}_2"),
            "a missing id is minted"
        );
        assert_eq!(out[3]["id"], format!("fc_{HEX}_2"));
    }

    #[test]
    fn length_ends_incomplete_and_empty_answer_has_a_message() {
        let mut s = stream(vec![text("Hel"), chunk(json!({}), Some("length"))]);
        let (ev, _) = run(&mut s);
        let last = ev.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        assert_eq!(last["response"]["completed_at"], Value::Null);

        let mut s = stream(vec![chunk(json!({"role": "assistant"}), Some("stop"))]);
        let (ev, _) = run(&mut s);
        assert_seq(&ev);
        assert_eq!(
            types(&ev),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(ev[7]["response"]["output"][0]["content"][0]["text"], "");
    }

    #[test]
    fn refusal_after_text_is_a_second_part() {
        let mut s = stream(vec![
            text("Well"),
            chunk(json!({"refusal": "no"}), None),
            chunk(json!({}), Some("stop")),
        ]);
        let (ev, _) = run(&mut s);
        assert_seq(&ev);
        let t = types(&ev);
        assert_eq!(
            &t[2..],
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.content_part.added",
                "response.refusal.delta",
                "response.refusal.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(ev[7]["content_index"], 1);
        assert_eq!(
            ev.last().unwrap()["response"]["output"][0]["content"],
            json!([text_part("Well"), refusal_part("no")])
        );
    }

    #[test]
    fn error_before_content_emits_only_the_prelude() {
        let mut s = stream(vec![
            chunk(json!({"role": "assistant"}), None),
            Err(ProviderError::Decode(
                "upstream sent an error event: overloaded".into(),
            )),
        ]);
        let (ev, err) = run(&mut s);
        assert_eq!(types(&ev), ["response.created", "response.in_progress"]);
        assert!(matches!(err, Some(ProviderError::Decode(_))), "{err:?}");
        // A malformed chunk is a decode failure too (the relay fails over).
        let mut s = stream(vec![Ok(Some(b"data: {nope\n\n".to_vec()))]);
        let (ev, err) = run(&mut s);
        assert_eq!(ev.len(), 2);
        assert!(matches!(err, Some(ProviderError::Decode(_))), "{err:?}");
    }

    #[test]
    fn error_after_commit_ends_with_failed_and_a_hybrid_error() {
        let mut s = stream(vec![
            text("Hi"),
            call(0, Some("call_1"), Some("w"), "{\"a\""),
            Err(ProviderError::Connect("stream interrupted".into())),
        ]);
        let (ev, err) = run(&mut s);
        assert!(err.is_some());
        let err = ProxyError::new(ErrorKind::UpstreamStream, "provider up failed mid-stream");
        let tail = parse(&s.failure_event(&err));
        assert_eq!(types(&tail), ["response.failed", "error"]);
        let all: Vec<Value> = ev.into_iter().chain(tail.iter().cloned()).collect();
        assert_seq(&all);
        let failed = &tail[0]["response"];
        assert_eq!(failed["id"], format!("resp_{HEX}"));
        assert_eq!(failed["status"], "failed");
        assert_eq!(
            failed["error"],
            json!({"code": "server_error", "message": "provider up failed mid-stream"})
        );
        assert_eq!(failed["output"][0]["status"], "completed");
        assert_eq!(failed["output"][1]["status"], "incomplete");
        assert_eq!(failed["output"][1]["arguments"], "{\"a\"");
        let e = &tail[1];
        assert_eq!(e["code"], "upstream_stream_error");
        assert_eq!(e["message"], "provider up failed mid-stream");
        assert_eq!(e["param"], Value::Null);
        assert_eq!(
            e["error"],
            err.error_object(),
            "the nested object makes SDKs raise"
        );
        assert!(s.failure_event(&err).is_empty(), "once");

        // A 429 maps to the enum's rate_limit_exceeded.
        let mut s = stream(vec![text("x"), Err(ProviderError::Connect("cut".into()))]);
        let _ = run(&mut s);
        let err = ProxyError::new(ErrorKind::RateLimited, "slow down");
        let tail = parse(&s.failure_event(&err));
        assert_eq!(tail[0]["response"]["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn no_failure_event_after_the_terminal_event() {
        let mut s = stream(vec![text("x"), chunk(json!({}), Some("stop"))]);
        let _ = run(&mut s);
        let err = ProxyError::new(ErrorKind::ShuttingDown, "draining");
        assert!(s.failure_event(&err).is_empty());
    }

    #[test]
    fn the_validator_catches_what_this_module_avoids() {
        // So that the checks above can fail: the traps of design §1.1.
        // Deltas need `logprobs`, even empty.
        let bad = json!({"type": "response.output_text.delta", "sequence_number": 0,
               "item_id": "m", "output_index": 0, "content_index": 0, "delta": "x"});
        let r = std::panic::catch_unwind(|| assert_valid("ResponseTextDeltaEvent", &bad));
        assert!(r.is_err(), "{bad}");
        let mut s = stream(vec![text("x"), chunk(json!({}), Some("stop"))]);
        let (ev, _) = run(&mut s);
        let mut done = ev.last().unwrap().clone();
        done["response"]["usage"] = Value::Null;
        assert!(
            std::panic::catch_unwind(|| assert_valid("ResponseCompletedEvent", &done)).is_err()
        );
    }

    #[test]
    fn output_is_bounded() {
        let big = "x".repeat(1024 * 1024);
        let mut items: Vec<_> = (0..20).map(|_| text(&big)).collect();
        items.push(chunk(json!({}), Some("stop")));
        let mut s = stream(items);
        let mut n = 0;
        let err = loop {
            match s.next_event() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("an unbounded answer ended normally"),
                Err(e) => break e,
            }
        };
        assert!(n > 12, "{n}");
        assert!(
            matches!(err, ProviderError::Decode(ref m) if m.contains("bytes")),
            "{err:?}"
        );
    }
}
