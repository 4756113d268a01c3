//! The fault-injection suite: a raw scripted upstream plays each fault of
//! README's "Failure semantics" table against JSON and stream requests, for
//! every provider kind, and each case asserts the documented outcome, whether
//! the failure counted against the provider's breaker, and that the
//! provider's key appears in no response byte and no log line.
//!
//! One table ([`table`]), one runner ([`run_row`]), a test function per row.
//! Each row runs the binary once (its log captured at trace level) with one
//! case per (provider kind, request mode): a primary provider of that kind
//! (priority 0) that plays the fault, and a healthy openai backup
//! (priority 1), with `max_failures: 1`, so "counted" is observable: the
//! next request skips the primary.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// The key of every faulty primary. No 8-character window of it may reach
/// a client or the log.
const KEY: &str = "sk-fault-primary-0123456789abcdef";
const BACKUP_KEY: &str = "sk-fault-backup-fedcba9876543210";
const COOLDOWN: u64 = 30;
/// Every primary's timeouts. `stream_idle_timeout` is the idle deadline
/// between stream events (issue 10, the streams slice): a config that does
/// not know the key refuses to start, and every row fails saying so.
const TIMEOUTS: &str = "timeout: 0.5, stream_timeout: 5, stream_idle_timeout: 0.5";
/// A stalled request must be over well before `stream_timeout` (5 s): the
/// deadlines that end it are `timeout` and `stream_idle_timeout` (0.5 s).
const PROMPTLY: Duration = Duration::from_secs(3);

const ANTHROPIC_TEXT: &str = include_str!("fixtures/anthropic/text.json");
const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic/stream_text.sse");

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    OpenAi,
    Azure,
    Anthropic,
}

const KINDS: [Kind; 3] = [Kind::OpenAi, Kind::Azure, Kind::Anthropic];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Json,
    Stream,
}

/// The documented outcome of a case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// The backup answers; the failure is counted (the next request skips
    /// the primary).
    Failover,
    /// The primary's answer reaches the client whole (every event, in
    /// order, then `[DONE]`); nothing is counted.
    Primary,
    /// A stream from the primary: the events before the fault, then one
    /// `upstream_stream_error` event and no `[DONE]`; counted.
    ErrorEvent,
    /// The upstream's own error with this status, passed through and not
    /// counted (a request the upstream judged bad).
    Passthrough(u16),
}

impl Expect {
    fn counted(self) -> bool {
        matches!(self, Expect::Failover | Expect::ErrorEvent)
    }
}

/// What a row's script is built from.
struct Ctx {
    kind: Kind,
    mode: Mode,
    /// Opened when the row ends: stalls wait on it.
    gate: Gate,
    /// An upstream that must never be called (a redirect's target).
    trap: SocketAddr,
}

type Play = Box<dyn Fn(&Ctx) -> Script + Sync>;

/// One fault: the script the primary plays, and the outcome per mode
/// (`None`: the fault does not apply to that mode).
struct Row {
    name: &'static str,
    json: Option<Expect>,
    stream: Option<Expect>,
    play: Play,
    /// The first request must be answered within this.
    within: Option<Duration>,
    /// Afterwards, ask a model served by the primary alone: a counted
    /// failure gives a 503 that names the last failure (which must not
    /// carry the key) and a `Retry-After` of at most the cooldown.
    only_probe: bool,
    /// The log must mention the redirect's `Location`.
    logs_location: bool,
}

impl Row {
    fn new(
        name: &'static str,
        json: Option<Expect>,
        stream: Option<Expect>,
        play: impl Fn(&Ctx) -> Script + Sync + 'static,
    ) -> Row {
        Row {
            name,
            json,
            stream,
            play: Box::new(play),
            within: None,
            only_probe: false,
            logs_location: false,
        }
    }
    fn within(mut self, d: Duration) -> Row {
        self.within = Some(d);
        self
    }
    fn only_probe(mut self) -> Row {
        self.only_probe = true;
        self
    }
    fn logs_location(mut self) -> Row {
        self.logs_location = true;
        self
    }
    fn expect(&self, mode: Mode) -> Option<Expect> {
        match mode {
            Mode::Json => self.json,
            Mode::Stream => self.stream,
        }
    }
}

// ---------------------------------------------------------------------------
// What each provider kind sends when it is healthy.

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Azure => "azure",
            Kind::Anthropic => "anthropic",
        }
    }

    /// A complete non-streaming body, and the content the client gets.
    fn ok_json(self) -> (String, &'static str) {
        match self {
            Kind::OpenAi | Kind::Azure => (completion_body("primary").to_string(), "primary"),
            Kind::Anthropic => (
                ANTHROPIC_TEXT.to_string(),
                "Hello! How can I help you today?",
            ),
        }
    }

    /// The SSE events of a complete stream (each ending in a blank line).
    fn events(self) -> Vec<String> {
        match self {
            Kind::OpenAi | Kind::Azure => {
                let mut e = chunk_events(&["pri", "ma", "ry"]);
                e.push("data: [DONE]\n\n".into());
                e
            }
            Kind::Anthropic => sse_events(ANTHROPIC_STREAM),
        }
    }

    /// How many of [`Kind::events`] come before the first content a client
    /// sees (anthropic: `message_start`, `content_block_start`, `ping`).
    fn before_content(self) -> usize {
        match self {
            Kind::OpenAi | Kind::Azure => 0,
            Kind::Anthropic => 3,
        }
    }

    /// The text of the first content event, and of the whole stream.
    fn stream_text(self) -> (&'static str, &'static str) {
        match self {
            Kind::OpenAi | Kind::Azure => ("pri", "primary"),
            Kind::Anthropic => ("Hello", "Hello! How can I help?"),
        }
    }

    /// An error body in the kind's own shape.
    fn error_body(self, kind: &str, message: &str) -> String {
        match self {
            Kind::OpenAi | Kind::Azure => {
                json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            }
            Kind::Anthropic => {
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
        }
        .to_string()
    }

    /// An error event inside a 2xx stream.
    fn error_event(self, message: &str) -> String {
        match self {
            Kind::OpenAi | Kind::Azure => format!(
                "data: {}\n\n",
                json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
            ),
            Kind::Anthropic => format!(
                "event: error\ndata: {}\n\n",
                self.error_body("overloaded_error", message)
            ),
        }
    }

    /// A content event whose JSON carries `pad` (written by the caller
    /// between the returned prefix and suffix): the pieces of a valid event
    /// of any size, so a proxy without a size cap would accept it.
    fn padded_event(self) -> (String, String) {
        match self {
            Kind::OpenAi | Kind::Azure => (
                r#"data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"upstream-model","choices":[{"index":0,"delta":{"content":"BIG"},"logprobs":null,"finish_reason":null}],"pad":"#.into(),
                "}\n\n".into(),
            ),
            Kind::Anthropic => (
                "event: content_block_delta\n".to_string()
                    + r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"BIG"},"pad":"#,
                "}\n\n".into(),
            ),
        }
    }

    /// A complete body with a `pad` field (prefix, suffix).
    fn padded_json(self) -> (String, String) {
        match self {
            Kind::OpenAi | Kind::Azure => (
                r#"{"id":"chatcmpl-fake","object":"chat.completion","created":1700000000,"model":"upstream-model","choices":[{"index":0,"message":{"role":"assistant","content":"BIG"},"finish_reason":"stop"}],"pad":"#.into(),
                "}".into(),
            ),
            Kind::Anthropic => (
                r#"{"id":"msg_big","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"BIG"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1},"pad":"#.into(),
                "}".into(),
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Script pieces.

const JSON_CT: (&str, &str) = ("Content-Type", "application/json");
const SSE_CT: (&str, &str) = ("Content-Type", "text/event-stream");
const CHUNKED: (&str, &str) = ("Transfer-Encoding", "chunked");
const END: &[u8] = b"0\r\n\r\n";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A head with `Content-Length: len`.
fn head_len(status: u16, ct: Option<&str>, len: usize, extra: &[(&str, &str)]) -> Vec<u8> {
    let len = len.to_string();
    let mut h: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
    h.push(("Content-Length", &len));
    h.extend_from_slice(extra);
    head(status, &h).into_bytes()
}

/// A whole response with a body of known length.
fn whole(status: u16, ct: Option<&str>, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    cat(&[&head_len(status, ct, body.len(), extra), body])
}

/// Events as chunks of a chunked body (no terminator).
fn chunks(events: &[String]) -> Vec<u8> {
    events.iter().flat_map(|e| chunk(e.as_bytes())).collect()
}

fn sse_head() -> Vec<u8> {
    head(200, &[SSE_CT, CHUNKED]).into_bytes()
}

/// `head` with about `pad` more bytes of headers (`x-pad-N`, 1,000 bytes
/// each: fewer than ureq's 128 headers) before its blank line.
fn padded_head(head: &[u8], pad: usize) -> Vec<u8> {
    let text = std::str::from_utf8(head).unwrap();
    let body_start = text
        .strip_suffix("\r\n")
        .expect("a head ends with a blank line");
    let mut h = body_start.to_string();
    for i in 0..pad / 1000 {
        h.push_str(&format!("x-pad-{i:05}: {}\r\n", "p".repeat(984)));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// The healthy answer of this kind in this mode.
fn healthy(c: &Ctx) -> (Vec<u8>, Vec<u8>) {
    match c.mode {
        Mode::Json => {
            let body = c.kind.ok_json().0;
            (
                head_len(200, Some(JSON_CT.1), body.len(), &[]),
                body.into_bytes(),
            )
        }
        Mode::Stream => (sse_head(), cat(&[&chunks(&c.kind.events()), END])),
    }
}

/// The stream's events split before the first content event
/// (`before`, `first`, `rest`).
fn split(kind: Kind) -> (Vec<String>, String, Vec<String>) {
    let mut e = kind.events();
    let n = kind.before_content();
    let rest = e.split_off(n + 1);
    let first = e.pop().unwrap();
    (e, first, rest)
}

/// Insert two bytes that are not UTF-8 into the JSON string `"text"` in
/// `body`, after its first character.
fn corrupt(body: &str, text: &str) -> Vec<u8> {
    let quoted = format!("\"{text}\"");
    let at =
        body.find(&quoted).expect("text present") + 1 + text.chars().next().unwrap().len_utf8();
    let b = body.as_bytes();
    cat(&[&b[..at], b"\xff\xfe", &b[at..]])
}

/// `"xxxx…",` lines of a JSON array, `unit` bytes each.
fn pad_unit(unit: usize, sse: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(unit + 16);
    if sse {
        b.extend_from_slice(b"data: ");
    }
    b.push(b'"');
    b.extend(std::iter::repeat_n(b'x', unit));
    b.extend_from_slice(b"\",");
    if sse {
        b.push(b'\n');
    }
    b
}

/// One `data:` line of 12 MiB (over the 8 MiB line cap), as a valid
/// content event.
fn oversized_line(kind: Kind) -> Script {
    let (prefix, suffix) = kind.padded_event();
    vec![
        Step::send(format!("{prefix}\"")),
        Step::Repeat {
            bytes: vec![b'x'; 64 * 1024],
            times: 12 * 16,
        },
        Step::send(format!("\"{suffix}")),
    ]
}

/// One event of just over 16 MiB in `data:` lines of 64 KiB with no blank
/// line between them, which join into a valid content event: over any
/// sensible cap on an event, while every line is short.
fn oversized_event(kind: Kind) -> Script {
    let (prefix, suffix) = kind.padded_event();
    vec![
        Step::send(format!("{prefix}[\n")),
        Step::Repeat {
            bytes: pad_unit(64 * 1024, true),
            times: 16 * 16 + 1,
        },
        Step::send(format!("data: \"end\"]{suffix}")),
    ]
}

/// A close-delimited stream: the events before the oversized one, the
/// oversized one (in place of the first content event, or after it when
/// `mid`), and the rest: a proxy without a cap would relay it all.
fn stream_around(kind: Kind, mid: bool, big: Script) -> Script {
    let (before, first, rest) = split(kind);
    let mut pre = before.concat();
    if mid {
        pre.push_str(&first);
    }
    let mut s = vec![Step::send(head(200, &[SSE_CT])), Step::send(pre)];
    s.extend(big);
    s.push(Step::send(rest.concat()));
    s
}

fn html_page(inner: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>Welcome</title></head>\n\n<body>\n<h1>{inner}</h1>\n\n</body>\n</html>\n"
    )
}

/// A 429 with this `Retry-After`.
fn rate_limited(value: &'static str) -> Play {
    Box::new(move |c: &Ctx| {
        let body = c
            .kind
            .error_body("rate_limit_error", "Rate limit reached, slow down");
        vec![Step::send(whole(
            429,
            Some(JSON_CT.1),
            body.as_bytes(),
            &[("Retry-After", value)],
        ))]
    })
}

/// A redirect to the trap upstream.
fn redirect(status: u16) -> Play {
    Box::new(move |c: &Ctx| {
        let location = format!("http://{}/v1/chat/completions", c.trap);
        vec![Step::send(whole(
            status,
            Some("text/html"),
            b"<html>Moved</html>",
            &[("Location", &location)],
        ))]
    })
}

/// `filler` characters, the key, more filler: the key starts at `at`.
fn key_at(at: usize, total: usize) -> String {
    format!(
        "{}{KEY}{}",
        "x".repeat(at),
        "x".repeat(total.saturating_sub(at + KEY.len()))
    )
}

// ---------------------------------------------------------------------------
// The table.

fn table() -> Vec<Row> {
    use Expect::*;
    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    vec![
        Row::new("truncated_body", Some(Failover), Some(Failover), |c| {
            match c.mode {
                Mode::Json => {
                    let (_, body) = healthy(c);
                    let sent = &body[..body.len() / 2];
                    vec![Step::send(cat(&[
                        &head_len(200, Some(JSON_CT.1), body.len() + 100, &[]),
                        sent,
                    ]))]
                }
                Mode::Stream => {
                    // The events before the first content, then half of it.
                    let (before, first, _) = split(c.kind);
                    let mut b = before.concat().into_bytes();
                    b.extend_from_slice(&first.as_bytes()[..first.len() / 2]);
                    vec![Step::send(cat(&[
                        &head_len(200, Some(SSE_CT.1), b.len() + 1000, &[]),
                        &b,
                    ]))]
                }
            }
        }),
        Row::new(
            "truncated_body_after_first_event",
            None,
            Some(ErrorEvent),
            |c| {
                let (before, first, rest) = split(c.kind);
                let mut b = (before.concat() + &first).into_bytes();
                b.extend_from_slice(&rest[0].as_bytes()[..rest[0].len() / 2]);
                vec![Step::send(cat(&[
                    &head_len(200, Some(SSE_CT.1), b.len() + 1000, &[]),
                    &b,
                ]))]
            },
        ),
        Row::new("close_after_head", Some(Failover), Some(Failover), |c| {
            vec![Step::Send(healthy(c).0)]
        }),
        Row::new("dripped_head", Some(Primary), Some(Primary), |c| {
            let (h, body) = healthy(c);
            vec![Step::drip(h, 4, ms(4)), Step::Send(body)]
        }),
        Row::new("dripped_body", Some(Primary), Some(Primary), |c| {
            let (h, body) = healthy(c);
            vec![Step::Send(h), Step::drip(body, 32, ms(4))]
        }),
        Row::new(
            "dripped_past_timeout",
            Some(Failover),
            Some(Failover),
            |c| {
                // 4 bytes every 25 ms: the body (or the stream up to its
                // first content) takes seconds.
                let (h, body) = healthy(c);
                vec![Step::Send(h), Step::drip(body, 4, ms(25))]
            },
        )
        .within(PROMPTLY),
        Row::new("stall_after_head", Some(Failover), Some(Failover), |c| {
            vec![Step::Send(healthy(c).0), Step::Wait(c.gate.clone())]
        })
        .within(PROMPTLY),
        Row::new("stall_mid_stream", None, Some(ErrorEvent), |c| {
            let (before, first, _) = split(c.kind);
            vec![
                Step::Send(sse_head()),
                Step::Send(chunks(&[before, vec![first]].concat())),
                Step::Wait(c.gate.clone()),
            ]
        })
        .within(PROMPTLY),
        Row::new("oversized_body", Some(Failover), None, |c| {
            // 80 MiB of valid JSON: over the 64 MiB cap on a response body.
            let (prefix, suffix) = c.kind.padded_json();
            let unit = pad_unit(64 * 1024 - 3, false);
            let times = 80 * 16;
            let open = format!("{prefix}[");
            let close = format!("\"end\"]{suffix}");
            let len = open.len() + unit.len() * times + close.len();
            vec![
                Step::Send(head_len(200, Some(JSON_CT.1), len, &[])),
                Step::Send(open.into_bytes()),
                Step::Repeat { bytes: unit, times },
                Step::Send(close.into_bytes()),
            ]
        }),
        Row::new("oversized_line_first", None, Some(Failover), |c| {
            stream_around(c.kind, false, oversized_line(c.kind))
        }),
        Row::new("oversized_line_mid", None, Some(ErrorEvent), |c| {
            stream_around(c.kind, true, oversized_line(c.kind))
        }),
        Row::new("oversized_event_first", None, Some(Failover), |c| {
            stream_around(c.kind, false, oversized_event(c.kind))
        }),
        Row::new("oversized_event_mid", None, Some(ErrorEvent), |c| {
            stream_around(c.kind, true, oversized_event(c.kind))
        }),
        Row::new("html_200", Some(Failover), Some(Failover), |_| {
            let page = html_page("Welcome to nginx!");
            vec![Step::send(whole(200, Some("text/html"), page.as_bytes(), &[]))]
        }),
        Row::new("stream_as_application_json", None, Some(Failover), |c| {
            let body = c.kind.events().concat();
            vec![Step::send(whole(200, Some(JSON_CT.1), body.as_bytes(), &[]))]
        }),
        Row::new("stream_as_text_plain", None, Some(Failover), |c| {
            let body = c.kind.events().concat();
            vec![Step::send(whole(200, Some("text/plain"), body.as_bytes(), &[]))]
        }),
        Row::new("stream_without_content_type", None, Some(Failover), |c| {
            let body = c.kind.events().concat();
            vec![Step::send(whole(200, None, body.as_bytes(), &[]))]
        }),
        Row::new("invalid_utf8", Some(Failover), Some(Failover), |c| {
            match c.mode {
                Mode::Json => {
                    let (body, text) = c.kind.ok_json();
                    let body = corrupt(&body, text);
                    vec![Step::send(whole(200, Some(JSON_CT.1), &body, &[]))]
                }
                Mode::Stream => {
                    let (before, first, rest) = split(c.kind);
                    let first = corrupt(&first, c.kind.stream_text().0);
                    vec![
                        Step::Send(sse_head()),
                        Step::Send(chunks(&before)),
                        Step::Send(chunk(&first)),
                        Step::Send(chunks(&rest)),
                        Step::send(END),
                    ]
                }
            }
        }),
        Row::new("invalid_utf8_mid_stream", None, Some(ErrorEvent), |c| {
            let (before, first, rest) = split(c.kind);
            let next = corrupt(&rest[0], if c.kind == Kind::Anthropic { "!" } else { "ma" });
            vec![
                Step::Send(sse_head()),
                Step::Send(chunks(&[before, vec![first]].concat())),
                Step::Send(chunk(&next)),
                Step::Send(chunks(&rest[1..])),
                Step::send(END),
            ]
        }),
        Row::new("keep_alive_then_cut", None, Some(Failover), |_| {
            vec![
                Step::Send(sse_head()),
                Step::Send(chunks(&[": keep-alive\n\n".into(), ": keep-alive\n\n".into()])),
            ]
        }),
        Row::new("keep_alive_then_stall", None, Some(Failover), |c| {
            vec![
                Step::Send(sse_head()),
                Step::Send(chunks(&[": keep-alive\n\n".into()])),
                Step::Wait(c.gate.clone()),
            ]
        })
        .within(PROMPTLY),
        retry_after("retry_after_huge_integer", "99999999999999999999"),
        retry_after("retry_after_exponent", "1e20"),
        retry_after("retry_after_negative", "-1"),
        retry_after("retry_after_nan", "NaN"),
        retry_after("retry_after_inf", "inf"),
        retry_after("retry_after_fraction", "1.5"),
        retry_after("retry_after_empty", ""),
        retry_after("retry_after_garbage", "soon, promise"),
        retry_after("retry_after_past_date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        retry_after("retry_after_far_future_date", "Fri, 31 Dec 9999 23:59:59 GMT"),
        retry_after("retry_after_rfc850_date", "Sunday, 06-Nov-94 08:49:37 GMT"),
        retry_after("retry_after_asctime_date", "Sun Nov  6 08:49:37 1994"),
        redirect_row("redirect_301", 301),
        redirect_row("redirect_302", 302),
        redirect_row("redirect_307", 307),
        redirect_row("redirect_308", 308),
        // A response head larger than one read of the upstream connection
        // (2 KiB) and than the 10 KiB ureq's own buffer held before: read
        // whole (heads up to ureq's 64 KiB limit are).
        Row::new("large_response_head", Some(Primary), Some(Primary), |c| {
            let (head, body) = healthy(c);
            vec![Step::send(cat(&[&padded_head(&head, 20 * 1024), &body]))]
        }),
        // Over ureq's 64 KiB limit: the upstream's fault.
        Row::new("oversized_response_head", Some(Failover), Some(Failover), |c| {
            let (head, body) = healthy(c);
            vec![Step::send(cat(&[&padded_head(&head, 80 * 1024), &body]))]
        }),
        Row::new("key_in_json_value", Some(Failover), Some(Failover), |c| {
            let msg = format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.example/account/api-keys.");
            let body = c.kind.error_body("invalid_request_error", &msg);
            vec![Step::send(whole(401, Some(JSON_CT.1), body.as_bytes(), &[]))]
        })
        .only_probe(),
        Row::new(
            "key_in_json_object_key",
            Some(Passthrough(400)),
            Some(Passthrough(400)),
            |c| {
                let body = match c.kind {
                    Kind::Anthropic => json!({"type": "error", "error": {"type": "invalid_request_error",
                        "message": "invalid header", "details": {(format!("x-api-key: {KEY}")): "rejected"}}}),
                    _ => json!({"error": {"message": "invalid header", "type": "invalid_request_error",
                        "param": null, "code": null, "details": {(format!("Bearer {KEY}")): "rejected"}}}),
                };
                vec![Step::send(whole(400, Some(JSON_CT.1), body.to_string().as_bytes(), &[]))]
            },
        )
        .only_probe(),
        Row::new("key_in_plain_text", Some(Failover), Some(Failover), |_| {
            let body = format!("internal error while checking key {KEY}\n");
            vec![Step::send(whole(500, Some("text/plain"), body.as_bytes(), &[]))]
        })
        .only_probe(),
        Row::new("key_in_html", Some(Failover), Some(Failover), |_| {
            let page = html_page(&format!("502 Bad Gateway: key {KEY} rejected"));
            vec![Step::send(whole(502, Some("text/html"), page.as_bytes(), &[]))]
        })
        .only_probe(),
        Row::new("key_cut_in_plain_text", Some(Failover), Some(Failover), |_| {
            // Across the 300-character cut of an error text.
            let body = key_at(285, 400);
            vec![Step::send(whole(500, Some("text/plain"), body.as_bytes(), &[]))]
        })
        .only_probe(),
        Row::new("key_cut_in_invalid_200", Some(Failover), Some(Failover), |c| {
            // Across the 200-character cut of an invalid body's excerpt.
            let text = key_at(185, 400);
            match c.mode {
                Mode::Json => vec![Step::send(whole(200, Some(JSON_CT.1), text.as_bytes(), &[]))],
                Mode::Stream => {
                    let ev = match c.kind {
                        Kind::Anthropic => format!("event: content_block_delta\ndata: {text}\n\n"),
                        _ => format!("data: {text}\n\n"),
                    };
                    vec![Step::Send(sse_head()), Step::Send(chunk(ev.as_bytes())), Step::send(END)]
                }
            }
        })
        .only_probe(),
        Row::new("key_in_error_event", None, Some(Failover), |c| {
            let ev = c.kind.error_event(&format!("key {KEY} is over quota"));
            let (before, _, _) = split(c.kind);
            vec![
                Step::Send(sse_head()),
                Step::Send(chunks(&[before, vec![ev]].concat())),
                Step::send(END),
            ]
        })
        .only_probe(),
        Row::new("key_in_error_event_mid_stream", None, Some(ErrorEvent), |c| {
            let ev = c.kind.error_event(&key_at(250, 400));
            let (before, first, _) = split(c.kind);
            vec![
                Step::Send(sse_head()),
                Step::Send(chunks(&[before, vec![first, ev]].concat())),
                Step::send(END),
            ]
        })
        .only_probe(),
    ]
}

fn retry_after(name: &'static str, value: &'static str) -> Row {
    let play = rate_limited(value);
    Row::new(name, Some(Expect::Failover), Some(Expect::Failover), play).only_probe()
}

fn redirect_row(name: &'static str, status: u16) -> Row {
    let play = redirect(status);
    Row::new(name, Some(Expect::Failover), Some(Expect::Failover), play)
        .only_probe()
        .logs_location()
}

// ---------------------------------------------------------------------------
// The runner.

struct Case {
    kind: Kind,
    mode: Mode,
    expect: Expect,
    primary: Raw,
    backup: Fake,
    ctx: Ctx,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Json => "json",
            Mode::Stream => "stream",
        }
    }
}

impl Case {
    fn id(&self) -> String {
        format!("{}_{}", self.kind.name(), self.mode.name())
    }
    fn primary_name(&self) -> String {
        format!("p_{}", self.id())
    }
    fn backup_name(&self) -> String {
        format!("b_{}", self.id())
    }
}

fn config(cases: &[Case]) -> String {
    let mut providers = String::new();
    let mut models = String::new();
    for c in cases {
        let (p, b, id) = (c.primary_name(), c.backup_name(), c.id());
        let kind_keys = match c.kind {
            Kind::OpenAi => format!("type: openai, base_url: {}", c.primary.base_url()),
            Kind::Azure => format!(
                "type: azure, base_url: {}, api_version: 2024-10-21",
                c.primary.root_url()
            ),
            Kind::Anthropic => format!("type: anthropic, base_url: {}", c.primary.root_url()),
        };
        providers.push_str(&format!(
            "  {p}: {{{kind_keys}, api_key: {KEY}, {TIMEOUTS}}}\n  {b}: {{type: openai, base_url: {}, api_key: {BACKUP_KEY}, timeout: 5}}\n",
            c.backup.base_url()
        ));
        models.push_str(&format!(
            "  m_{id}:\n    providers:\n      {p}: {{priority: 0, model_id: up-{id}}}\n      {b}: {{priority: 1}}\n  only_{id}:\n    providers:\n      {p}: {{priority: 0, model_id: up-{id}}}\n"
        ));
    }
    format!(
        "failover: {{max_failures: 1, cooldown: {COOLDOWN}}}\nproviders:\n{providers}models:\n{models}"
    )
}

/// One answer of the proxy, read whole.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    took: Duration,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Everything the client received, for the key check.
    fn all(&self) -> String {
        let mut s: String = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        s.push_str(&self.text());
        s
    }
    /// The `data:` payloads of a stream.
    fn payloads(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
    fn provider(&self) -> &str {
        self.header("x-llm-proxy-provider").unwrap_or("")
    }
    fn summary(&self) -> String {
        let t = self.text();
        let cut = t.char_indices().nth(600).map_or(t.len(), |(i, _)| i);
        format!(
            "HTTP {} from {:?} after {} ms, body: {}",
            self.status,
            self.provider(),
            self.took.as_millis(),
            &t[..cut]
        )
    }
}

/// Like `support::agent`, but a redirect from the proxy reaches the test
/// as it is.
fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

fn call(url: &str, model: &str, mode: Mode) -> Got {
    let started = Instant::now();
    let resp = client()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(chat_body(model, mode == Mode::Stream))
        .expect("the proxy answers");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = Vec::new();
    let _ = resp.into_body().into_reader().read_to_end(&mut body);
    Got {
        status,
        headers,
        body,
        took: started.elapsed(),
    }
}

/// The content deltas of stream payloads, joined (error and `[DONE]`
/// payloads have none).
fn stream_text(payloads: &[String]) -> String {
    payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Check one answer against the documented outcome.
fn check(c: &Case, g: &Got, expect: Expect) {
    let (primary, backup) = (c.primary_name(), c.backup_name());
    let s = g.summary();
    match (expect, c.mode) {
        (Expect::Failover, Mode::Json) => {
            assert_eq!(g.status, 200, "expected failover to the backup: {s}");
            assert_eq!(g.provider(), backup, "{s}");
            let v: Value = serde_json::from_slice(&g.body).unwrap_or_default();
            assert_eq!(v["choices"][0]["message"]["content"], "backup", "{s}");
        }
        (Expect::Failover, Mode::Stream) => {
            assert_eq!(g.status, 200, "expected failover to the backup: {s}");
            assert_eq!(g.provider(), backup, "expected failover to the backup: {s}");
            let p = g.payloads();
            assert_eq!(stream_text(&p), "backup", "{s}");
            assert_eq!(p.last().map(String::as_str), Some("[DONE]"), "{s}");
        }
        (Expect::Primary, Mode::Json) => {
            assert_eq!(g.status, 200, "expected the primary's answer: {s}");
            assert_eq!(g.provider(), primary, "{s}");
            let v: Value = serde_json::from_slice(&g.body).unwrap_or_default();
            assert_eq!(
                v["choices"][0]["message"]["content"],
                c.kind.ok_json().1,
                "{s}"
            );
        }
        (Expect::Primary, Mode::Stream) => {
            assert_eq!(g.status, 200, "expected the primary's stream: {s}");
            assert_eq!(g.provider(), primary, "{s}");
            let p = g.payloads();
            assert_eq!(stream_text(&p), c.kind.stream_text().1, "{s}");
            assert_eq!(p.last().map(String::as_str), Some("[DONE]"), "{s}");
            if c.kind != Kind::Anthropic {
                // Passed through: every event as sent, in order.
                let sent: Vec<String> = c
                    .kind
                    .events()
                    .iter()
                    .map(|e| e.trim_end().strip_prefix("data: ").unwrap().to_string())
                    .collect();
                assert_eq!(p, sent, "{s}");
            }
        }
        (Expect::ErrorEvent, Mode::Stream) => {
            assert_eq!(g.status, 200, "expected the primary's stream: {s}");
            assert_eq!(g.provider(), primary, "{s}");
            let p = g.payloads();
            assert!(
                !p.iter().any(|x| x == "[DONE]"),
                "no [DONE] after a failure: {s}"
            );
            let last: Value = p
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default();
            assert_eq!(
                last["error"]["code"], "upstream_stream_error",
                "expected an error event last: {s}"
            );
            assert_eq!(last["error"]["type"], "server_error", "{s}");
            assert_eq!(
                stream_text(&p),
                c.kind.stream_text().0,
                "the content before the fault, then the error: {s}"
            );
        }
        (Expect::ErrorEvent, Mode::Json) => unreachable!("an error event is a stream outcome"),
        (Expect::Passthrough(status), _) => {
            assert_eq!(g.status, status, "expected the upstream's own error: {s}");
            assert_eq!(g.provider(), primary, "{s}");
            let v: Value = serde_json::from_slice(&g.body).unwrap_or_default();
            for k in ["message", "type", "param", "code"] {
                assert!(v["error"].get(k).is_some(), "error lacks {k}: {s}");
            }
        }
    }
}

fn assert_no_key(what: &str, text: &str) {
    for key in [KEY, BACKUP_KEY] {
        let leaked = leaked_fragments(text, key, 8);
        assert!(
            leaked.is_empty(),
            "{what}: fragments of a key {leaked:?} in:\n{text}"
        );
    }
}

fn run_case(row: &Row, c: &Case, url: &str) {
    let model = format!("m_{}", c.id());
    let first = call(url, &model, c.mode);
    assert_no_key("the response", &first.all());
    check(c, &first, c.expect);
    if let Some(limit) = row.within {
        assert!(
            first.took < limit,
            "answered after {} ms, expected under {} ms: {}",
            first.took.as_millis(),
            limit.as_millis(),
            first.summary()
        );
    }
    // Counted iff the next request skips the primary.
    let second = call(url, &model, c.mode);
    assert_no_key("the second response", &second.all());
    if c.expect.counted() {
        assert_eq!(
            c.primary.count(),
            1,
            "the failure was not counted: the next request went to the primary again: {}",
            second.summary()
        );
        check(c, &second, Expect::Failover);
    } else {
        assert_eq!(c.primary.count(), 2, "{}", second.summary());
        check(c, &second, c.expect);
    }
    // The backup got what failed over, once per request, and nothing else.
    let failovers = [&first, &second]
        .iter()
        .filter(|g| g.provider() == c.backup_name())
        .count();
    assert_eq!(c.backup.count(), failovers, "requests the backup received");
    if let Some(r) = c.backup.requests().first() {
        assert_eq!(r.json()["stream"], json!(c.mode == Mode::Stream));
    }
    if row.only_probe {
        let g = call(url, &format!("only_{}", c.id()), c.mode);
        assert_no_key("the answer of the primary alone", &g.all());
        if c.expect.counted() {
            assert_eq!(g.status, 503, "primary kept out: {}", g.summary());
            let v: Value = serde_json::from_slice(&g.body).unwrap_or_default();
            assert_eq!(
                v["error"]["code"],
                "providers_unavailable",
                "{}",
                g.summary()
            );
            let secs: u64 = g
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a Retry-After in seconds: {}", g.summary()));
            assert!((1..=COOLDOWN).contains(&secs), "Retry-After {secs}");
        }
    }
}

fn run_row(name: &str) {
    let rows = table();
    let row = rows
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}"));
    let trap = Fake::ok("trap");
    let mut cases = Vec::new();
    for kind in KINDS {
        for mode in [Mode::Json, Mode::Stream] {
            let Some(expect) = row.expect(mode) else {
                continue;
            };
            let ctx = Ctx {
                kind,
                mode,
                gate: Gate::new(),
                trap: trap.addr,
            };
            let backup = match mode {
                Mode::Json => Fake::ok("backup"),
                Mode::Stream => Fake::new(Reply::chunks(&["back", "up"], End::Done)),
            };
            cases.push(Case {
                kind,
                mode,
                expect,
                primary: Raw::new((row.play)(&ctx)),
                backup,
                ctx,
            });
        }
    }
    let mut proxy = Logged::start(&config(&cases));
    let failures: Vec<String> = thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|c| {
                let url = proxy.url.clone();
                (c, s.spawn(move || run_case(row, c, &url)))
            })
            .collect();
        runs.into_iter()
            .filter_map(|(c, h)| {
                let r = h.join();
                c.ctx.gate.open();
                r.err().map(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("{name}/{}: {msg}", c.id())
                })
            })
            .collect()
    });
    let log = proxy.finish();
    assert_no_key("the log", &log);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(trap.count(), 0, "a redirect was followed");
    if row.logs_location {
        let location = format!("{}/v1/chat/completions", trap.addr);
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&location)),
            "no WARN line names the Location {location}:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------
// The key at every offset across the cuts.

/// Where the key starts in an echoed text: around the 200- and
/// 300-character cuts of error excerpts, and well clear of both.
const OFFSETS: std::ops::RangeInclusive<usize> = 150..=320;

/// One way an upstream echoes the key: a name, the status the client of a
/// model served by this provider alone gets, and the answer with the key
/// starting at a given offset of the echoed text.
type Echo = (&'static str, u16, fn(Kind, usize) -> Script);

fn echoes(mode: Mode) -> Vec<Echo> {
    match mode {
        Mode::Json => vec![
            ("a JSON value", 503, |k, at| {
                let body = k.error_body("server_error", &key_at(at, 400));
                vec![Step::send(whole(
                    500,
                    Some(JSON_CT.1),
                    body.as_bytes(),
                    &[],
                ))]
            }),
            ("a JSON object key", 400, |k, at| {
                let details = json!({(key_at(at, 400)): "rejected"});
                let body = match k {
                    Kind::Anthropic => {
                        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad", "details": details}})
                    }
                    _ => {
                        json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null, "details": details}})
                    }
                };
                vec![Step::send(whole(
                    400,
                    Some(JSON_CT.1),
                    body.to_string().as_bytes(),
                    &[],
                ))]
            }),
            ("plain text", 503, |_, at| {
                vec![Step::send(whole(
                    500,
                    Some("text/plain"),
                    key_at(at, 400).as_bytes(),
                    &[],
                ))]
            }),
            ("an HTML page", 503, |_, at| {
                let page = html_page(&key_at(at, 400));
                vec![Step::send(whole(
                    502,
                    Some("text/html"),
                    page.as_bytes(),
                    &[],
                ))]
            }),
            ("a 200 that is not a completion", 503, |_, at| {
                vec![Step::send(whole(
                    200,
                    Some(JSON_CT.1),
                    key_at(at, 400).as_bytes(),
                    &[],
                ))]
            }),
        ],
        Mode::Stream => {
            vec![
                ("plain text", 503, |_, at| {
                    vec![Step::send(whole(
                        500,
                        Some("text/plain"),
                        key_at(at, 400).as_bytes(),
                        &[],
                    ))]
                }),
                ("a malformed first event", 503, |k, at| {
                    let ev = match k {
                        Kind::Anthropic => {
                            format!("event: content_block_delta\ndata: {}\n\n", key_at(at, 400))
                        }
                        _ => format!("data: {}\n\n", key_at(at, 400)),
                    };
                    vec![
                        Step::Send(sse_head()),
                        Step::Send(chunk(ev.as_bytes())),
                        Step::send(END),
                    ]
                }),
                ("an error event before content", 503, |k, at| {
                    let (before, _, _) = split(k);
                    let ev = k.error_event(&key_at(at, 400));
                    vec![
                        Step::Send(sse_head()),
                        Step::Send(chunks(&[before, vec![ev]].concat())),
                        Step::send(END),
                    ]
                }),
                ("an error event after content", 200, |k, at| {
                    let (before, first, _) = split(k);
                    let ev = k.error_event(&key_at(at, 400));
                    vec![
                        Step::Send(sse_head()),
                        Step::Send(chunks(&[before, vec![first, ev]].concat())),
                        Step::send(END),
                    ]
                }),
            ]
        }
    }
}

/// The key echoed at every offset across the cuts, in every form, for
/// every kind and mode: no 8-character window of it reaches the client
/// (the upstream's own 400, the 503 naming the last failure, the error
/// event) or the log. The provider serves its model alone and its breaker
/// never opens, so every answer carries the upstream's failure.
#[test]
fn key_cut_at_every_offset() {
    let mut cases = Vec::new();
    for kind in KINDS {
        for mode in [Mode::Json, Mode::Stream] {
            cases.push((kind, mode, Raw::new(Vec::new())));
        }
    }
    let mut providers = String::new();
    let mut models = String::new();
    for (kind, mode, raw) in &cases {
        let id = format!("{}_{}", kind.name(), mode.name());
        let kind_keys = match kind {
            Kind::OpenAi => format!("type: openai, base_url: {}", raw.base_url()),
            Kind::Azure => format!(
                "type: azure, base_url: {}, api_version: 2024-10-21",
                raw.root_url()
            ),
            Kind::Anthropic => format!("type: anthropic, base_url: {}", raw.root_url()),
        };
        providers.push_str(&format!(
            "  p_{id}: {{{kind_keys}, api_key: {KEY}, {TIMEOUTS}}}\n"
        ));
        models.push_str(&format!(
            "  only_{id}:\n    providers:\n      p_{id}: {{priority: 0}}\n"
        ));
    }
    let mut proxy = Logged::start(&format!(
        "failover: {{max_failures: 1000000, cooldown: 1}}\nproviders:\n{providers}models:\n{models}"
    ));
    let url = proxy.url.clone();
    let failures: Vec<(String, usize, String)> = thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(kind, mode, raw)| {
                let url = url.clone();
                s.spawn(move || {
                    let model = format!("only_{}_{}", kind.name(), mode.name());
                    let mut failed = Vec::new();
                    for (form, status, play) in echoes(*mode) {
                        for at in OFFSETS {
                            raw.push(play(*kind, at));
                            let g = call(&url, &model, *mode);
                            let leaked = leaked_fragments(&g.all(), KEY, 8);
                            if g.status != status || !leaked.is_empty() {
                                let detail = format!(
                                    "expected HTTP {status} without the key, got {} fragments in {}",
                                    leaked.len(),
                                    g.summary()
                                );
                                failed.push((format!("{model}, the key in {form}"), at, detail));
                            }
                        }
                    }
                    failed
                })
            })
            .collect();
        runs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let log = proxy.finish();
    let in_log = leaked_fragments(&log, KEY, 8);
    // One line per form that leaked: at which offsets, and the first answer.
    let mut by_form: std::collections::BTreeMap<&str, (Vec<usize>, &str)> = Default::default();
    for (what, at, detail) in &failures {
        by_form
            .entry(what)
            .or_insert((Vec::new(), detail))
            .0
            .push(*at);
    }
    let report: Vec<String> = by_form
        .iter()
        .map(|(what, (ats, first))| {
            format!(
                "{what}: {} of {} offsets ({}..={}); at {}: {first}",
                ats.len(),
                OFFSETS.count(),
                ats[0],
                ats[ats.len() - 1],
                ats[0]
            )
        })
        .collect();
    assert!(
        failures.is_empty() && in_log.is_empty(),
        "{} echoes leaked the key to the client{}:\n{}",
        failures.len(),
        if in_log.is_empty() {
            String::new()
        } else {
            format!(
                " and {} of its 8-character windows reached the log",
                in_log.len()
            )
        },
        report.join("\n")
    );
}

macro_rules! rows {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_row(stringify!($name));
            }
        )*

        #[test]
        fn every_row_of_the_table_is_run() {
            let tested = [$(stringify!($name)),*];
            let table = table();
            for r in &table {
                assert!(tested.contains(&r.name), "row {} has no test", r.name);
            }
            assert_eq!(tested.len(), table.len());
        }
    };
}

rows!(
    truncated_body,
    truncated_body_after_first_event,
    close_after_head,
    dripped_head,
    dripped_body,
    dripped_past_timeout,
    stall_after_head,
    stall_mid_stream,
    oversized_body,
    oversized_line_first,
    oversized_line_mid,
    oversized_event_first,
    oversized_event_mid,
    html_200,
    stream_as_application_json,
    stream_as_text_plain,
    stream_without_content_type,
    invalid_utf8,
    invalid_utf8_mid_stream,
    keep_alive_then_cut,
    keep_alive_then_stall,
    retry_after_huge_integer,
    retry_after_exponent,
    retry_after_negative,
    retry_after_nan,
    retry_after_inf,
    retry_after_fraction,
    retry_after_empty,
    retry_after_garbage,
    retry_after_past_date,
    retry_after_far_future_date,
    retry_after_rfc850_date,
    retry_after_asctime_date,
    redirect_301,
    redirect_302,
    redirect_307,
    redirect_308,
    large_response_head,
    oversized_response_head,
    key_in_json_value,
    key_in_json_object_key,
    key_in_plain_text,
    key_in_html,
    key_cut_in_plain_text,
    key_cut_in_invalid_200,
    key_in_error_event,
    key_in_error_event_mid_stream,
);
