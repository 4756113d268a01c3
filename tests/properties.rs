//! Property tests for the parsers that read hostile bytes, through the same
//! thin entry points (`llm_proxy::fuzzing`) as the cargo-fuzz targets in
//! `fuzz/`. Each property says what must hold for every generated input;
//! proptest shrinks a failure to a small case and prints it. Inputs that
//! fuzzing found are replayed from `fuzz/regressions/` at the end.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llm_proxy::fuzzing::{
    AnthropicStreamMapper, Config, Event, ProviderError, anthropic_request, anthropic_response,
    encode, expand_str, responses_stream, responses_to_chat, retry_after, sse_events,
    sse_events_from,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------
// SSE

/// Hands out `data` in pieces of the given sizes (cycled), as a network does.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Parse `body` as it arrives in pieces of `sizes` through a small buffer.
fn parse_in_pieces(
    body: &[u8],
    sizes: Vec<usize>,
    capacity: usize,
) -> (Vec<Event>, Option<io::Error>) {
    let pieces = Pieces {
        data: body,
        sizes,
        next: 0,
    };
    sse_events_from(BufReader::with_capacity(capacity, pieces))
}

/// A field value as an upstream can send it: anything but CR and LF.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\r\n]{0,24}",
        select(vec![
            "",
            " ",
            "[DONE]",
            "{\"a\":1}",
            ": x",
            "data: y",
            "é€😀"
        ])
        .prop_map(String::from),
    ]
}

/// A well-formed event: at least one field the writer encodes.
fn event() -> impl Strategy<Value = Event> {
    (
        option::of(field()),
        option::of(vec(field(), 1..4)),
        vec(field(), 0..3),
    )
        .prop_filter("an event has a field", |(n, d, c)| {
            n.is_some() || d.is_some() || !c.is_empty()
        })
        .prop_map(|(name, data, comments)| Event {
            name,
            data: data.map(|lines| lines.join("\n")),
            comments,
        })
}

/// Bytes that look like SSE often enough to reach every branch.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        select(vec![
            "data:", "data: ", "event: ", "id: 1", ":", ": ping", "retry: 9", "\n", "\r\n", "\r",
            "\n\n", "x", " ", "é", "{}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        vec(any::<u8>(), 0..4),
    ];
    vec(token, 0..40).prop_map(|t| t.concat())
}

/// Sizes of the pieces a body arrives in.
fn sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..48, 1..8)
}

proptest! {
    /// Any sequence of well-formed events, encoded and delivered in pieces
    /// split at any byte, with LF or CRLF line ends, parses back to the
    /// same events.
    #[test]
    fn sse_events_survive_any_split(
        events in vec(event(), 0..6),
        sizes in sizes(),
        capacity in 1usize..64,
        crlf in any::<bool>(),
    ) {
        let mut body: Vec<u8> = events.iter().flat_map(encode).collect();
        if crlf {
            body = String::from_utf8(body).unwrap().replace('\n', "\r\n").into_bytes();
        }
        let (got, err) = parse_in_pieces(&body, sizes, capacity);
        prop_assert!(err.is_none(), "error {:?}", err);
        prop_assert_eq!(got, events);
    }

    /// A stream cut anywhere inside its last event is an error after the
    /// complete events, never a silently shorter stream.
    #[test]
    fn sse_cut_inside_an_event_is_an_error(
        events in vec(event(), 1..5),
        cut in any::<prop::sample::Index>(),
        capacity in 1usize..64,
    ) {
        let encoded: Vec<Vec<u8>> = events.iter().map(encode).collect();
        let before: usize = encoded[..encoded.len() - 1].iter().map(Vec::len).sum();
        let last = encoded.last().unwrap().len();
        // Keep 1..last-1 bytes of the last event: not nothing, not its blank line.
        let keep = 1 + cut.index(last - 1);
        let body: Vec<u8> = encoded.concat();
        let (got, err) = sse_events(&body[..before + keep], capacity);
        prop_assert_eq!(&got[..], &events[..events.len() - 1]);
        let kind = err.map(|e| e.kind());
        prop_assert_eq!(kind, Some(io::ErrorKind::UnexpectedEof));
    }

    /// Arbitrary bytes: the same outcome however they arrive, and every
    /// event read re-encodes to bytes that parse back to it (the proxy
    /// re-encodes upstream events for its clients). A value with a CR is
    /// left out: the reader strips one CR per line end, so `x\r` would lose
    /// its CR on the second pass.
    #[test]
    fn sse_arbitrary_bytes_parse_the_same_and_round_trip(
        body in sse_bytes(),
        sizes in sizes(),
        capacity in 1usize..64,
    ) {
        let (whole, whole_err) = sse_events(&body, 8192);
        let (split, split_err) = parse_in_pieces(&body, sizes, capacity);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(split_err.map(|e| e.kind()), whole_err.map(|e| e.kind()));
        for ev in whole.iter().filter(|e| **e != Event::default()) {
            let fields = ev.name.iter().chain(ev.data.iter()).chain(ev.comments.iter());
            if fields.into_iter().any(|f| f.contains('\r')) {
                continue;
            }
            let (back, err) = sse_events(&encode(ev), capacity);
            prop_assert!(err.is_none(), "{:?} does not parse: {:?}", ev, err);
            prop_assert_eq!(back, vec![ev.clone()]);
        }
    }
}

// ---------------------------------------------------------------------------
// Retry-After

/// 9999-12-31T23:59:59Z, the last second an HTTP date can name.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

proptest! {
    /// Delta-seconds: every u64, with or without surrounding blanks.
    #[test]
    fn retry_after_any_u64_seconds(n in any::<u64>(), now in 0..=LAST_HTTP_DATE, pad in any::<bool>()) {
        let v = if pad { format!(" {n}\t") } else { n.to_string() };
        prop_assert_eq!(retry_after(&v, at(now)), Some(Duration::from_secs(n)));
    }

    /// An HTTP date (as httpdate formats it) `k` seconds ahead of `now` is
    /// `k` seconds; a date in the past is zero.
    #[test]
    fn retry_after_http_dates(now in 0..=LAST_HTTP_DATE, delta in 0u64..=400 * 86_400) {
        let ahead = now.saturating_add(delta).min(LAST_HTTP_DATE);
        let header = httpdate::fmt_http_date(at(ahead));
        prop_assert_eq!(retry_after(&header, at(now)), Some(Duration::from_secs(ahead - now)), "{}", header);
        let behind = now.saturating_sub(delta);
        let header = httpdate::fmt_http_date(at(behind));
        prop_assert_eq!(retry_after(&header, at(now)), Some(Duration::ZERO), "{}", header);
    }

    /// No header value makes the parser panic: a panic there is a 500 on
    /// every request to that upstream.
    #[test]
    fn retry_after_never_panics(
        v in prop_oneof![
            "[-+ 0-9.eE]{0,32}",
            "[0-9]{15,40}(\\.[0-9]{0,3})?",
            "[A-Za-z]{3}, [0-9]{1,3} [A-Za-z]{3} -?[0-9]{1,20} [0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3} GMT",
            any::<String>(),
        ],
        now in 0..=LAST_HTTP_DATE,
    ) {
        let _ = retry_after(&v, at(now));
    }
}

// ---------------------------------------------------------------------------
// Config: ${VAR} expansion and the loader

fn var_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}"
}

proptest! {
    /// Any string, with any environment: a result, never a panic.
    #[test]
    fn expansion_never_panics(s in "(\\$|\\{|\\}|:-|[A-Za-z_0-9]|.){0,40}", set in any::<bool>()) {
        let env = |_: &str| set.then(|| "v$".to_string());
        let _ = expand_str(&s, &env);
    }

    /// `$$` is a literal `$`: escaping every `$` of any string gives it back.
    #[test]
    fn dollar_dollar_round_trips(s in any::<String>()) {
        let escaped = s.replace('$', "$$");
        prop_assert_eq!(expand_str(&escaped, &|_| None), Ok(s));
    }

    /// `${NAME}` is the variable's value, inserted as it is (a `$` in the
    /// value is not expanded again); `${NAME:-default}` is the default when
    /// the variable is unset or empty.
    #[test]
    fn variables_and_defaults_expand(
        prefix in "[^$]{0,8}",
        name in var_name(),
        value in any::<String>(),
        default in "[^}]{0,8}",
        suffix in "[^$]{0,8}",
        set in any::<bool>(),
    ) {
        let env = |n: &str| (set && n == name).then(|| value.clone());
        let got = expand_str(&format!("{prefix}${{{name}}}{suffix}"), &env);
        if set {
            prop_assert_eq!(got, Ok(format!("{prefix}{value}{suffix}")));
        } else {
            prop_assert!(got.unwrap_err().contains(&name));
        }
        let got = expand_str(&format!("{prefix}${{{name}:-{default}}}{suffix}"), &env);
        let expected = if set && !value.is_empty() { &value } else { &default };
        prop_assert_eq!(got, Ok(format!("{prefix}{expected}{suffix}")));
    }
}

/// The shipped configs, as seeds that the config property mutates.
fn shipped_configs() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(root.join("config.yaml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A shipped config with a few spans replaced by YAML-ish noise loads
    /// or is refused, and never panics; a loaded one is consistent.
    #[test]
    fn mutated_configs_load_or_are_refused(
        seed in any::<prop::sample::Index>(),
        edits in vec((any::<prop::sample::Index>(), 0usize..12, "([-:{}\\[\\]&*!|>'\"#%@`,?$ \n]|[a-z0-9_]{1,6}|\\$\\{[A-Z_]{1,8}\\}){0,6}"), 1..4),
    ) {
        let configs = shipped_configs();
        let mut text = seed.get(&configs).clone();
        for (at, len, with) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(start..end, &with);
        }
        let env = |n: &str| n.ends_with("_KEY").then(|| "sk-prop-secret".to_string());
        if let Ok(c) = Config::from_yaml_with_env(&text, &env) {
            let _ = c.summary();
            let debug = format!("{c:?}");
            prop_assert!(!debug.contains("sk-prop-secret"));
            for m in c.models.values() {
                prop_assert!(!m.routes.is_empty());
                prop_assert!(m.routes.iter().all(|r| r.provider < c.providers.len()));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Anthropic translation

const KEYS: &[&str] = &[
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "tool_call_id",
    "id",
    "function",
    "name",
    "arguments",
    "image_url",
    "url",
    "input",
    "index",
    "delta",
    "usage",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "stop_reason",
    "partial_json",
    "content_block",
    "message",
    "tools",
    "tool_choice",
    "parameters",
];
const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "text",
    "tool_use",
    "image_url",
    "function",
    "text_delta",
    "input_json_delta",
    "max_tokens",
    "end_turn",
    "tool_use",
    "data:image/png;base64,AAAA",
    "data:;base64,",
    "https://example.com/a.png",
    "{}",
    "{\"a\":",
    "auto",
    "required",
    "none",
];

/// Any JSON, with keys and strings from the vocabulary the translation looks at.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(WORDS).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec(
                (
                    prop_oneof![select(KEYS).prop_map(String::from), "[a-z_]{1,6}"],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A chat message: a role from the API (or not), with any content.
fn chat_message() -> impl Strategy<Value = Value> {
    (
        select(vec![
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
            "",
        ]),
        option::of(json_value()),
        option::of(json_value()),
        option::of(prop_oneof![Just(json!("call_1")), json_value()]),
    )
        .prop_map(|(role, content, calls, call_id)| {
            let mut m = Map::new();
            m.insert("role".into(), json!(role));
            let fields = [
                ("content", content),
                ("tool_calls", calls),
                ("tool_call_id", call_id),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

proptest! {
    /// Any chat request translates to a Messages request with alternating
    /// user/assistant turns, or to a 400 naming the field; never a panic.
    #[test]
    fn anthropic_request_translates_or_is_a_400(
        messages in vec(chat_message(), 1..6),
        extra in vec((select(vec!["max_tokens", "max_completion_tokens", "stop", "temperature", "n", "tools", "tool_choice", "parallel_tool_calls", "user", "stream"]), json_value()), 0..4),
    ) {
        let mut body = json!({"model": "m", "messages": messages});
        for (k, v) in extra {
            body[k] = v;
        }
        let Some(out) = anthropic_request(body.to_string().as_bytes(), "claude-x", 4096) else {
            return Ok(()); // refused by the proxy's own checks
        };
        match out {
            Ok(v) => {
                let msgs = v["messages"].as_array().expect("messages");
                let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
                prop_assert!(roles.iter().all(|r| *r == "user" || *r == "assistant"), "{:?}", roles);
                prop_assert!(roles.windows(2).all(|w| w[0] != w[1]), "roles do not alternate: {:?}", roles);
                prop_assert!(v["max_tokens"].as_u64().is_some_and(|n| n >= 1));
            }
            Err(ProviderError::Refused { error }) => {
                prop_assert_eq!(&error["type"], "invalid_request_error");
                prop_assert!(error["param"].is_string(), "{}", error);
            }
            Err(other) => prop_assert!(false, "not a 400: {:?}", other),
        }
    }

    /// Any token counts an upstream reports add up without overflow: a
    /// count near u64::MAX saturates instead of panicking (debug builds) or
    /// wrapping to a small number (release builds).
    #[test]
    fn anthropic_usage_never_overflows(
        input in any::<u64>(),
        creation in any::<u64>(),
        read in any::<u64>(),
        output in any::<u64>(),
    ) {
        let msg = json!({"content": [], "usage": {
            "input_tokens": input, "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read, "output_tokens": output}});
        let v = anthropic_response(msg.to_string().as_bytes(), "gpt", 1).expect("a message");
        let prompt = input.saturating_add(creation).saturating_add(read);
        prop_assert_eq!(&v["usage"]["prompt_tokens"], &json!(prompt));
        prop_assert_eq!(&v["usage"]["completion_tokens"], &json!(output));
        prop_assert_eq!(&v["usage"]["total_tokens"], &json!(prompt.saturating_add(output)));
    }

    /// Any message with a content list becomes a well-formed completion.
    #[test]
    fn anthropic_any_message_is_a_completion(
        content in vec(json_value(), 0..5),
        rest in vec((select(KEYS), json_value()), 0..4),
    ) {
        let mut msg = json!({"content": content});
        for (k, v) in rest {
            if k != "content" {
                msg[k] = v;
            }
        }
        let v = anthropic_response(msg.to_string().as_bytes(), "gpt", 1).expect("a message");
        prop_assert_eq!(&v["object"], "chat.completion");
        let m = &v["choices"][0]["message"];
        prop_assert!(m["content"].is_string() || m["content"].is_null());
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            let args = c["function"]["arguments"].as_str().unwrap();
            prop_assert!(serde_json::from_str::<Value>(args).is_ok(), "{}", args);
        }
    }

    /// Any sequence of Anthropic stream events maps to well-formed chunks
    /// with at most one finish_reason, or ends with an error.
    #[test]
    fn anthropic_stream_events_map_to_chunks(
        events in vec((
            option::of(select(vec!["message_start", "content_block_start", "content_block_delta",
                "content_block_stop", "message_delta", "message_stop", "ping", "error", "other"])),
            json_value(),
        ), 0..12),
        include_usage in any::<bool>(),
    ) {
        let mut mapper = AnthropicStreamMapper::new("gpt", include_usage, 1);
        let mut finishes = 0;
        for (name, data) in events {
            let Ok(chunks) = mapper.map(name, &data.to_string()) else { break };
            for c in chunks {
                let text = String::from_utf8(c).unwrap();
                let json = text.strip_prefix("data: ").and_then(|t| t.strip_suffix("\n\n"));
                prop_assert!(json.is_some_and(|j| !j.contains('\n')), "{:?}", text);
                let v: Value = serde_json::from_str(json.unwrap()).unwrap();
                prop_assert_eq!(&v["object"], "chat.completion.chunk");
                finishes += usize::from(v["choices"][0]["finish_reason"].is_string());
            }
            if mapper.stopped() {
                break;
            }
        }
        prop_assert!(finishes <= 1);
    }
}

// ---------------------------------------------------------------------------
// The Responses translation (src/responses/): requests and chat streams.

/// A Responses `input` item: known item types and roles (or not), with
/// any content, parts of known types (or not), and any other fields.
fn responses_item() -> impl Strategy<Value = Value> {
    let part = (
        select(vec![
            "input_text",
            "input_image",
            "input_file",
            "output_text",
            "refusal",
            "x",
        ]),
        vec(
            (
                select(vec!["text", "image_url", "file_id", "detail", "refusal"]),
                json_value(),
            ),
            0..3,
        ),
    )
        .prop_map(|(ty, fields)| {
            let mut m: Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            m.insert("type".into(), json!(ty));
            Value::Object(m)
        })
        .boxed();
    let content = prop_oneof![json_value(), vec(part.clone(), 0..3).prop_map(Value::Array)];
    (
        option::of(select(vec![
            "message",
            "function_call",
            "function_call_output",
            "reasoning",
            "item_reference",
            "web_search_call",
            "",
        ])),
        option::of(select(vec![
            "user",
            "assistant",
            "system",
            "developer",
            "tool",
            "",
        ])),
        option::of(content),
        vec(
            (
                select(vec![
                    "call_id",
                    "name",
                    "arguments",
                    "output",
                    "id",
                    "status",
                ]),
                prop_oneof![
                    json_value(),
                    Just(json!("{}")),
                    Just(json!("call_1")),
                    vec(part, 0..2).prop_map(Value::Array)
                ],
            ),
            0..4,
        ),
    )
        .prop_map(|(ty, role, content, rest)| {
            let mut m: Map<String, Value> =
                rest.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if let Some(t) = ty {
                m.insert("type".into(), json!(t));
            }
            if let Some(r) = role {
                m.insert("role".into(), json!(r));
            }
            if let Some(c) = content {
                m.insert("content".into(), c);
            }
            Value::Object(m)
        })
}

/// Items with the shape the translation accepts, and values at its edges:
/// calls whose arguments are not an object, images with odd URLs.
fn responses_item_well_formed() -> impl Strategy<Value = Value> {
    let args = select(vec![
        "{}",
        "",
        " ",
        "[1]",
        "{\"a\":1}",
        "x",
        "null",
        "\"s\"",
    ]);
    let url = select(vec![
        "https://example.com/a.png",
        "http://x",
        "ftp://x/y.png",
        "data:image/png;base64,AAAA",
        "data:;base64,",
        "data:image/png,AAAA",
        "",
    ]);
    prop_oneof![
        args.prop_map(
            |a| json!({"type": "function_call", "call_id": "c:1", "name": "f", "arguments": a})
        ),
        url.prop_map(
            |u| json!({"role": "user", "content": [{"type": "input_image", "image_url": u}]})
        ),
        select(vec!["user", "assistant", "system", "developer"])
            .prop_map(|r| json!({"role": r, "content": [{"type": "input_text", "text": "t"}]})),
        Just(json!({"type": "function_call_output", "call_id": "c:1", "output": "ok"})),
    ]
}

/// A chat chunk event as a provider's chat stream hands it out: deltas
/// with content, refusals and tool calls (indexes, ids, name and argument
/// fragments), finish reasons, usage chunks, and the odd malformed one.
fn chat_chunk() -> impl Strategy<Value = Vec<u8>> {
    let tool = (
        0u64..3,
        option::of(select(vec!["call_1", "call_2", ""])),
        option::of(select(vec!["get_", "weather", ""])),
        option::of("[{}\\\":a-z ]{0,6}"),
    )
        .prop_map(|(i, id, name, args)| {
            let mut f = Map::new();
            if let Some(n) = name {
                f.insert("name".into(), json!(n));
            }
            if let Some(a) = args {
                f.insert("arguments".into(), json!(a));
            }
            let mut t = json!({"index": i, "function": f});
            if let Some(id) = id {
                t["id"] = json!(id);
            }
            t
        });
    let delta = (
        option::of(any::<String>()),
        option::of(select(vec!["no", ""])),
        vec(tool, 0..2),
    )
        .prop_map(|(content, refusal, tools)| {
            let mut d = json!({});
            if let Some(c) = content {
                d["content"] = json!(c);
            }
            if let Some(r) = refusal {
                d["refusal"] = json!(r);
            }
            if !tools.is_empty() {
                d["tool_calls"] = json!(tools);
            }
            d
        });
    prop_oneof![
        8 => (delta, option::of(select(vec!["stop", "length", "tool_calls", "content_filter", "x"])))
            .prop_map(|(d, f)| json!({"choices": [{"index": 0, "delta": d, "finish_reason": f}]})),
        1 => any::<u64>().prop_map(|n| json!({"choices": [], "usage": {"prompt_tokens": n, "completion_tokens": n, "total_tokens": n}})),
        1 => json_value(),
    ]
    .prop_map(|v| format!("data: {v}\n\n").into_bytes())
}

proptest! {
    /// Any Responses request translates to a chat request, or to a 400
    /// naming a field; never a panic. On an Anthropic provider, what the
    /// translation lets through the Anthropic translation never refuses
    /// (so every 400 names the Responses field, not a chat one).
    #[test]
    fn responses_request_translates_or_is_a_400_naming_a_field(
        input in prop_oneof![
            1 => json_value(),
            4 => vec(prop_oneof![responses_item(), responses_item_well_formed()], 0..5)
                .prop_map(Value::Array),
        ],
        extra in vec((select(vec!["instructions", "tools", "tool_choice", "parallel_tool_calls",
            "max_output_tokens", "temperature", "text", "reasoning", "include", "top_logprobs",
            "background", "user", "stream", "previous_response_id"]), json_value()), 0..4),
        anthropic in any::<bool>(),
    ) {
        let mut body = json!({"model": "m", "input": input});
        for (k, v) in extra {
            body[k] = v;
        }
        let Some(out) = responses_to_chat(body.to_string().as_bytes(), anthropic) else {
            return Ok(()); // refused by the proxy's own checks
        };
        match out {
            Ok(chat) => {
                prop_assert!(chat["messages"].as_array().is_some_and(|m| !m.is_empty()));
                if anthropic {
                    let a = anthropic_request(chat.to_string().as_bytes(), "claude-x", 4096);
                    prop_assert!(matches!(a, Some(Ok(_))), "{} -> {:?}", chat, a);
                }
            }
            Err(ProviderError::Refused { error }) => {
                prop_assert_eq!(&error["type"], "invalid_request_error");
                prop_assert!(error["param"].as_str().is_some_and(|p| !p.is_empty()), "{}", error);
            }
            Err(other) => prop_assert!(false, "not a refusal: {:?}", other),
        }
    }

    /// Any chat stream becomes Responses events with `sequence_number`
    /// 0, 1, 2, … (the failure events too), each one event with an
    /// `event:` line naming its `type`, created first; a complete stream
    /// ends with exactly one terminal event and nothing after it.
    #[test]
    fn responses_stream_events_are_numbered_and_end_once(chunks in vec(chat_chunk(), 0..12)) {
        let (events, err, failure) = responses_stream(&chunks);
        let mut all = events.clone();
        if err.is_some() {
            all.push(failure.clone());
        }
        let mut seq = 0u64;
        let mut terminal = 0;
        for (i, ev) in all.iter().enumerate() {
            let text = std::str::from_utf8(ev).unwrap();
            let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
            prop_assert!(i == events.len() || blocks.len() == 1, "one event per call: {}", text);
            for b in blocks {
                let mut lines = b.lines();
                let name = lines.next().and_then(|l| l.strip_prefix("event: ")).unwrap();
                let v: Value = serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
                prop_assert_eq!(&v["type"], name);
                prop_assert_eq!(&v["sequence_number"], &json!(seq));
                if seq == 0 {
                    prop_assert_eq!(name, "response.created");
                }
                seq += 1;
                terminal += usize::from(matches!(name, "response.completed" | "response.incomplete" | "response.failed"));
            }
        }
        prop_assert_eq!(terminal, 1);
        if err.is_none() {
            prop_assert!(failure.is_empty(), "nothing after the terminal event");
        }
    }
}

// ---------------------------------------------------------------------------
// Inputs the fuzz targets found, replayed (fuzz/regressions/TARGET/).

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

#[test]
fn fuzz_regressions_anthropic_response() {
    for (name, bytes) in regressions("anthropic_response") {
        let v = anthropic_response(&bytes, "gpt", 1).unwrap_or_else(|| panic!("{name}"));
        assert!(v["usage"]["total_tokens"].is_u64(), "{name}");
    }
}

#[test]
fn fuzz_regressions_retry_after() {
    for (name, bytes) in regressions("retry_after") {
        // The fuzz target's layout: 5 bytes of `now`, then the value.
        let (head, value) = bytes.split_at(5);
        let mut b = [0u8; 8];
        b[..5].copy_from_slice(head);
        let now = at(u64::from_le_bytes(b) % (LAST_HTTP_DATE + 1));
        let value = std::str::from_utf8(value).unwrap_or_else(|e| panic!("{name}: {e}"));
        let _ = retry_after(value, now);
        let _ = retry_after("1e20", now);
    }
}

// ---------------------------------------------------------------------------
// Found while writing the config target; src/config.rs belongs to branch
// config, so the test waits there.

/// A `${VAR}` in the wrong field (a typo such as `base_url: ${OPENAI_API_KEY}`
/// for `${OPENAI_BASE_URL}`) must not put the variable's value, a key as
/// often as not, into the startup error that goes to the journal. nginx and
/// Envoy show the text as written; so should we.
#[test]
fn config_errors_do_not_echo_expanded_values() {
    const KEY: &str = "sk-live-0123456789abcdef";
    let env = |n: &str| (n == "OPENAI_API_KEY").then(|| KEY.to_string());
    // `field: ${OPENAI_API_KEY}` in one section of an otherwise valid config.
    let config = |section: &str, field: &str| {
        let line = |indent: &str| format!("{indent}{field}: ${{OPENAI_API_KEY}}\n");
        let at = |s: &str, indent: &str| {
            if s == section {
                line(indent)
            } else {
                String::new()
            }
        };
        format!(
            "server:\n  host: 127.0.0.1\n{}{}\
             providers:\n  a:\n    type: anthropic\n    api_key: ${{OPENAI_API_KEY}}\n{}\
             models:\n  m:\n    providers:\n      a: {{priority: 0, model_id: x}}\n",
            at("server", "  "),
            at("failover", "failover:\n  "),
            at("provider", "    "),
        )
    };
    let fields = [
        ("server", "port"),
        ("server", "workers"),
        ("server", "queue_timeout"),
        ("server", "max_body_bytes"),
        ("server", "log_level"),
        ("failover", "max_failures"),
        ("failover", "cooldown"),
        ("provider", "base_url"),
        ("provider", "timeout"),
        ("provider", "max_tokens"),
    ];
    let mut leaks = Vec::new();
    for (section, field) in fields {
        let text = config(section, field);
        match Config::from_yaml_with_env(&text, &env) {
            Ok(_) => panic!("{section}.{field} = a key was accepted:\n{text}"),
            Err(e) => {
                let e = e.to_string();
                // Refused for the field under test, not for something else.
                assert!(e.contains(field), "{section}.{field}: another error: {e}");
                if e.contains(KEY) {
                    leaks.push(e);
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "the key is in these errors:\n{}",
        leaks.join("\n")
    );
}
