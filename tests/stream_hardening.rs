//! Upstream streams as hostile input (issue 10, "Hardening"): an event's
//! size is bounded, a stream commits the client to a provider only with its
//! first chunk, a stream that is not an event stream fails over, the first
//! event has a deadline (`timeout`) and so has every later one
//! (`stream_idle_timeout`), and a client that leaves while the upstream is
//! silent is noticed without counting against the provider.
//!
//! Each test runs against an OpenAI-type and an Anthropic-type upstream where
//! the defect applies to both.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const STREAM_TEXT: &str = include_str!("fixtures/anthropic/stream_text.sse");
const TEXT: &str = include_str!("fixtures/anthropic/text.json");
const MAIN_KEY: &str = "sk-main-secret-key-0001";

#[derive(Clone, Copy, Debug)]
enum Kind {
    OpenAi,
    Anthropic,
}

const KINDS: [Kind; 2] = [Kind::OpenAi, Kind::Anthropic];

/// Model `m`: provider `main` of `kind` first, then an openai `backup`.
/// `main_extra` is added to main's YAML (timeouts under test).
fn config(kind: Kind, main: &Fake, backup: &Fake, main_extra: &str) -> String {
    let (ty, url) = match kind {
        Kind::OpenAi => ("openai", main.base_url()),
        Kind::Anthropic => ("anthropic", main.root_url()),
    };
    format!(
        r#"
failover: {{max_failures: 1, cooldown: 60}}
providers:
  main:
    type: {ty}
    api_key: {MAIN_KEY}
    base_url: {url}
    {main_extra}
  backup:
    type: openai
    api_key: sk-backup-key-0002
    base_url: {}
    timeout: 5
models:
  m:
    providers:
      main: {{priority: 0, model_id: up-main}}
      backup: {{priority: 1, model_id: up-backup}}
"#,
        backup.base_url()
    )
}

fn backup_fake() -> Fake {
    Fake::new(Reply::chunks(&["from ", "backup"], End::Done))
}

/// What a normal, complete answer of `main` looks like for its kind.
fn main_ok(kind: Kind) -> Reply {
    match kind {
        Kind::OpenAi => Reply::chunks(&["from ", "main"], End::Done),
        Kind::Anthropic => Reply::sse(STREAM_TEXT, End::Eof),
    }
}

/// A non-streaming answer of `main`.
fn main_completion(kind: Kind) -> Reply {
    match kind {
        Kind::OpenAi => Reply::completion("main"),
        Kind::Anthropic => Reply::raw(200, TEXT),
    }
}

/// Events of `main` up to and including its first content ("a").
fn first_content(kind: Kind) -> Vec<String> {
    match kind {
        Kind::OpenAi => chunk_events(&["a"]),
        Kind::Anthropic => {
            let mut e = before_content(kind);
            e.push(anthropic_delta("a"));
            e
        }
    }
}

/// Events of `main` that carry no content: nothing to commit on.
fn before_content(kind: Kind) -> Vec<String> {
    match kind {
        Kind::OpenAi => vec![],
        Kind::Anthropic => sse_events(STREAM_TEXT)[..3].to_vec(),
    }
}

fn anthropic_delta(text: &str) -> String {
    let d =
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}});
    format!("event: content_block_delta\ndata: {d}\n\n")
}

/// `lines` data lines of 1 MiB each, no blank line: one endless event.
fn flood(lines: usize) -> Vec<String> {
    let line = format!("data: {}\n", "x".repeat(1024 * 1024));
    vec![line; lines]
}

const MIB: usize = 1024 * 1024;

/// A whole streamed answer: headers and the raw body.
struct Streamed {
    provider: Option<String>,
    attempts: Option<String>,
    body: String,
}

impl Streamed {
    fn data(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
    fn text(&self) -> String {
        let data: Vec<String> = self
            .data()
            .into_iter()
            .filter(|d| d != "[DONE]" && !d.contains("\"error\""))
            .collect();
        delta_text(&data)
    }
    /// The error object of the stream's final error event.
    fn error(&self) -> Value {
        let last = self.data().pop().expect("an event");
        let v: Value = serde_json::from_str(&last).unwrap_or_else(|_| panic!("{}", self.body));
        let e = v["error"].clone();
        assert!(e.is_object(), "no error event at the end: {}", self.body);
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error lacks {k}: {e}");
        }
        e
    }
}

fn stream(p: &Proxy) -> Streamed {
    let resp = p.open_stream("m");
    assert_eq!(resp.status().as_u16(), 200);
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let provider = h("x-llm-proxy-provider");
    let attempts = h("x-llm-proxy-attempts");
    let mut body = String::new();
    let _ = resp.into_body().into_reader().read_to_string(&mut body);
    Streamed {
        provider,
        attempts,
        body,
    }
}

fn assert_backup_answered(s: &Streamed, kind: Kind) {
    assert_eq!(
        s.provider.as_deref(),
        Some("backup"),
        "{kind:?}: {}",
        s.body
    );
    assert_eq!(s.attempts.as_deref(), Some("2"), "{kind:?}");
    assert_eq!(s.text(), "from backup", "{kind:?}: {}", s.body);
    assert_eq!(s.data().last().map(String::as_str), Some("[DONE]"));
    assert!(!s.body.contains(MAIN_KEY));
}

fn http_head(content_type: Option<&str>, len: usize) -> String {
    let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
    format!("HTTP/1.1 200 OK\r\n{ct}Content-Length: {len}\r\n\r\n")
}

// ---------------------------------------------------------------------------
// Commit rule and Content-Type (defect 3).

/// `: keep-alive`, a blank line, then a cut: nothing has been committed,
/// so the backup answers and the comment never reaches the client.
#[test]
fn a_comment_before_content_does_not_commit() {
    for kind in KINDS {
        let main = Fake::new(main_ok(kind));
        let mut events = vec![": keep-alive\n\n".to_string()];
        events.extend(before_content(kind));
        events.push(": OPENROUTER PROCESSING\n\n".into());
        main.push(Reply::Stream {
            events,
            pace: None,
            end: End::Cut,
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(kind, &main, &backup, "timeout: 5"));
        let s = stream(&p);
        assert_backup_answered(&s, kind);
        assert!(
            !s.body.contains("keep-alive") && !s.body.contains("OPENROUTER"),
            "{kind:?}: {}",
            s.body
        );
    }
}

/// An HTML page with a blank line in it, as a 200 to a stream request.
#[test]
fn an_html_page_as_a_stream_answer_fails_over() {
    for kind in KINDS {
        let main = Fake::new(main_ok(kind));
        let page = "<html>\n\n<body>Service temporarily unavailable</body>\n\n</html>\n";
        let raw = format!("{}{page}", http_head(Some("text/html"), page.len()));
        main.push(Reply::Raw(raw.into_bytes(), End::Done));
        let backup = backup_fake();
        let p = Proxy::start(&config(kind, &main, &backup, "timeout: 5"));
        let s = stream(&p);
        assert_backup_answered(&s, kind);
        assert!(!s.body.contains("html"), "{kind:?}: {}", s.body);
    }
}

/// A well-formed event stream under the wrong (or no) Content-Type is not
/// what the API promises: fail over rather than guess.
#[test]
fn a_stream_answer_that_is_not_text_event_stream_fails_over() {
    for kind in KINDS {
        let body: String = match kind {
            Kind::OpenAi => chunk_events(&["from ", "main"]).concat() + "data: [DONE]\n\n",
            Kind::Anthropic => STREAM_TEXT.to_string(),
        };
        for ct in [Some("text/plain"), Some("application/x-ndjson"), None] {
            let main = Fake::new(main_ok(kind));
            let raw = format!("{}{body}", http_head(ct, body.len()));
            main.push(Reply::Raw(raw.into_bytes(), End::Done));
            let backup = backup_fake();
            let p = Proxy::start(&config(kind, &main, &backup, "timeout: 5"));
            let s = stream(&p);
            assert_backup_answered(&s, kind);
        }
        // The same body as text/event-stream (with parameters) is accepted.
        let main = Fake::new(main_ok(kind));
        let raw = format!(
            "{}{body}",
            http_head(Some("Text/Event-Stream; charset=utf-8"), body.len())
        );
        main.push(Reply::Raw(raw.into_bytes(), End::Done));
        let backup = backup_fake();
        let p = Proxy::start(&config(kind, &main, &backup, "timeout: 5"));
        let s = stream(&p);
        assert_eq!(s.provider.as_deref(), Some("main"), "{kind:?}: {}", s.body);
        assert_eq!(s.data().last().map(String::as_str), Some("[DONE]"));
    }
}

// ---------------------------------------------------------------------------
// Bounded events (defect 2).

/// One endless event of 1 MiB data lines before any content: the proxy stops
/// reading at the event cap, closes the upstream and fails over; it does not
/// buffer what the upstream keeps sending.
#[test]
fn an_oversized_event_before_content_fails_over() {
    for kind in KINDS {
        let main = Fake::new(main_ok(kind));
        let closed = Gate::new();
        let mut events = before_content(kind);
        events.extend(flood(64));
        main.push(Reply::Stream {
            events,
            pace: None,
            end: End::HoldUntilClosed(closed.clone()),
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 5\n    stream_timeout: 8",
        ));
        let s = stream(&p);
        assert_backup_answered(&s, kind);
        assert!(closed.wait(Duration::from_secs(5)), "{kind:?}");
        // The proxy read at most the cap (plus what socket buffers hold),
        // not the 64 MiB the upstream had to send.
        assert!(
            main.written() < 32 * MIB,
            "{kind:?}: the proxy accepted {} MiB of one event",
            main.written() / MIB
        );
    }
}

/// The same after content reached the client: the stream ends with the
/// error event naming the cause, without `[DONE]`, and the provider's key
/// appears nowhere.
#[test]
fn an_oversized_event_after_content_ends_the_stream_with_an_error() {
    for kind in KINDS {
        let main = Fake::new(main_ok(kind));
        let closed = Gate::new();
        let mut events = first_content(kind);
        events.extend(flood(64));
        main.push(Reply::Stream {
            events,
            pace: None,
            end: End::HoldUntilClosed(closed.clone()),
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 5\n    stream_timeout: 8",
        ));
        let s = stream(&p);
        assert_eq!(s.provider.as_deref(), Some("main"));
        assert_eq!(s.text(), "a", "{kind:?}: {}", s.body);
        let e = s.error();
        assert_eq!(e["code"], "upstream_stream_error");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("larger than"), "{kind:?}: {msg}");
        assert!(!s.body.contains("[DONE]"));
        assert!(!s.body.contains(MAIN_KEY));
        assert!(closed.wait(Duration::from_secs(5)), "{kind:?}");
        assert!(
            main.written() < 32 * MIB,
            "{kind:?}: the proxy accepted {} MiB of one event",
            main.written() / MIB
        );
    }
}

// ---------------------------------------------------------------------------
// Deadlines (defect 8).

/// 200 and headers, then silence (after keep-alive comments or Anthropic's
/// content-free events): the first chunk is due within `timeout` of the
/// request, so the backup answers long before `stream_timeout`.
#[test]
fn an_upstream_silent_after_its_headers_fails_over_within_timeout() {
    for kind in KINDS {
        let main = Fake::new(main_ok(kind));
        let release = Gate::new();
        let mut events = vec![": keep-alive\n\n".to_string()];
        events.extend(before_content(kind));
        main.push(Reply::Stream {
            events,
            pace: None,
            end: End::HangUntil(release.clone()),
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 0.3\n    stream_timeout: 20",
        ));
        let started = Instant::now();
        let s = stream(&p);
        let took = started.elapsed();
        release.open();
        assert_backup_answered(&s, kind);
        assert!(
            took < Duration::from_secs(5),
            "{kind:?}: failover took {} ms",
            took.as_millis()
        );
    }
}

/// Content, then silence: the stream ends with a timeout error event after
/// `stream_idle_timeout`, and that counts against the provider.
#[test]
fn an_upstream_silent_mid_stream_times_out_after_stream_idle_timeout() {
    for kind in KINDS {
        let main = Fake::new(main_completion(kind));
        let release = Gate::new();
        main.push(Reply::Stream {
            events: first_content(kind),
            pace: None,
            end: End::HangUntil(release.clone()),
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 5\n    stream_timeout: 20\n    stream_idle_timeout: 0.5",
        ));
        let started = Instant::now();
        let s = stream(&p);
        let took = started.elapsed();
        release.open();
        assert_eq!(s.provider.as_deref(), Some("main"));
        assert_eq!(s.text(), "a", "{kind:?}: {}", s.body);
        let e = s.error();
        assert_eq!(e["code"], "upstream_stream_error");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("stream_idle_timeout"), "{kind:?}: {msg}");
        assert!(!s.body.contains("[DONE]") && !s.body.contains(MAIN_KEY));
        assert!(
            took < Duration::from_secs(5),
            "{kind:?}: took {} ms",
            took.as_millis()
        );
        // Counted: with max_failures 1 the next request skips main.
        let r = p.chat("m");
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"), "{kind:?}");
    }
}

/// An upstream that keeps sending events is never idle, however long the
/// stream: the idle deadline runs between events, not over the stream.
#[test]
fn a_slow_but_steady_stream_is_not_idle() {
    for kind in KINDS {
        let main = Fake::new(main_ok(kind));
        let mut events = first_content(kind);
        // Six more events 0.15 s apart: 0.9 s in all, past the 0.4 s idle
        // deadline, never 0.4 s without an event.
        for _ in 0..6 {
            events.push(match kind {
                Kind::OpenAi => chunk_events(&["b"]).remove(0),
                Kind::Anthropic => anthropic_delta("b"),
            });
        }
        let n = events.len();
        let pace: Vec<Gate> = (0..n).map(|_| Gate::new()).collect();
        let end = match kind {
            Kind::OpenAi => End::Done,
            Kind::Anthropic => {
                events.extend(sse_events(STREAM_TEXT)[7..].to_vec());
                End::Eof
            }
        };
        let first_paced = n - 7; // the gates before the six "b"s
        main.push(Reply::Stream {
            events,
            pace: Some(pace.clone()),
            end,
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 5\n    stream_idle_timeout: 0.4",
        ));
        let opener = std::thread::spawn(move || {
            for (i, g) in pace.iter().enumerate() {
                if i >= first_paced {
                    std::thread::sleep(Duration::from_millis(150));
                }
                g.open();
            }
        });
        let s = stream(&p);
        opener.join().unwrap();
        assert_eq!(s.text(), "abbbbbb", "{kind:?}: {}", s.body);
        assert_eq!(s.data().last().map(String::as_str), Some("[DONE]"));
    }
}

/// The client leaves while the upstream is silent: the proxy notices within
/// a fraction of `stream_idle_timeout` (it sends the client a keep-alive
/// comment while the upstream is silent), closes the upstream, and does not
/// count it against the provider.
#[test]
fn a_client_leaving_during_an_upstream_stall_is_noticed_and_not_counted() {
    for kind in KINDS {
        let main = Fake::new(main_completion(kind));
        let closed = Gate::new();
        main.push(Reply::Stream {
            events: first_content(kind),
            pace: None,
            end: End::HoldUntilClosed(closed.clone()),
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 5\n    stream_timeout: 30\n    stream_idle_timeout: 4",
        ));
        let resp = p.open_stream("m");
        let mut r = BufReader::new(resp.into_body().into_reader());
        let mut line = String::new();
        while !(line.starts_with("data: ") && line.contains(r#""content":"a""#)) {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "{kind:?}: no content");
        }
        let left = Instant::now();
        drop(r);
        // Well before stream_idle_timeout (4 s), let alone stream_timeout.
        assert!(
            closed.wait(Duration::from_secs(3)),
            "{kind:?}: the upstream was still held {} ms after the client left",
            left.elapsed().as_millis()
        );
        // Not counted: with max_failures 1 main still gets the next request.
        let r = p.chat("m");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("main"), "{kind:?}");
    }
}

/// While the upstream is silent the client gets SSE comments, which every
/// SSE client ignores; the content is unchanged.
#[test]
fn a_silent_upstream_gets_the_client_keep_alive_comments() {
    for kind in KINDS {
        let main = Fake::new(main_ok(kind));
        let resume = Gate::new();
        let mut events = first_content(kind);
        let end = match kind {
            Kind::OpenAi => End::DoneAfter(resume.clone()),
            Kind::Anthropic => {
                events.extend(sse_events(STREAM_TEXT)[7..].to_vec());
                End::Eof
            }
        };
        let k = first_content(kind).len();
        let mut pace: Vec<Gate> = (0..events.len()).map(|_| Gate::new()).collect();
        // Hold back what follows the first content until the test resumes it.
        pace[k - 1] = resume.clone();
        for g in pace.iter().skip(k) {
            g.open();
        }
        for g in pace.iter().take(k - 1) {
            g.open();
        }
        main.push(Reply::Stream {
            events,
            pace: Some(pace),
            end,
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 5\n    stream_idle_timeout: 2",
        ));
        let resp = p.open_stream("m");
        let mut r = BufReader::new(resp.into_body().into_reader());
        let mut body = String::new();
        let mut line = String::new();
        let mut resumed = false;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            body.push_str(&line);
            if line.starts_with(": keep-alive") && !resumed {
                resumed = true;
                resume.open();
            }
        }
        assert!(resumed, "{kind:?}: no keep-alive comment: {body}");
        let s = Streamed {
            provider: None,
            attempts: None,
            body,
        };
        assert_eq!(s.data().last().map(String::as_str), Some("[DONE]"));
        assert!(s.text().starts_with('a'), "{kind:?}: {}", s.body);
    }
}

/// An upstream that holds its body open after its last event: the client's
/// answer (which already has `[DONE]`) ends after `stream_idle_timeout`, not
/// `stream_timeout`, and the stream counts as complete.
#[test]
fn an_upstream_holding_its_body_open_after_the_last_event_is_let_go() {
    for kind in KINDS {
        let main = Fake::new(main_completion(kind));
        let closed = Gate::new();
        let events = match kind {
            Kind::OpenAi => {
                let mut e = chunk_events(&["a"]);
                e.push("data: [DONE]\n\n".into());
                e
            }
            Kind::Anthropic => sse_events(STREAM_TEXT),
        };
        main.push(Reply::Stream {
            events,
            pace: None,
            end: End::HoldUntilClosed(closed.clone()),
        });
        let backup = backup_fake();
        let p = Proxy::start(&config(
            kind,
            &main,
            &backup,
            "timeout: 5\n    stream_timeout: 20\n    stream_idle_timeout: 0.5",
        ));
        let started = Instant::now();
        let s = stream(&p);
        let took = started.elapsed();
        assert_eq!(
            s.data().last().map(String::as_str),
            Some("[DONE]"),
            "{kind:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{kind:?}: the answer ended after {} ms",
            took.as_millis()
        );
        assert!(closed.wait(Duration::from_secs(5)), "{kind:?}");
        // A success: main still gets the next request.
        let r = p.chat("m");
        assert_eq!(r.header("x-llm-proxy-provider"), Some("main"), "{kind:?}");
    }
}

// ---------------------------------------------------------------------------
// Secrets.

/// The binary at trace level, through the failures above with upstreams
/// that echo the key: the key reaches neither a client nor the log.
#[test]
fn stream_failures_never_show_the_key_in_answers_or_logs() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    let main = Fake::new(Reply::completion("main"));
    let echo = format!("<html>\n\n<body>bad key {MAIN_KEY}</body>\n\n</html>\n");
    let page = format!("{}{echo}", http_head(Some("text/html"), echo.len()));
    main.push(Reply::Raw(page.into_bytes(), End::Done));
    let mut oversized = chunk_events(&["a"]);
    oversized.extend(vec![format!("data: {MAIN_KEY} {}\n", "k".repeat(MIB)); 8]);
    main.push(Reply::Stream {
        events: oversized,
        pace: None,
        end: End::Cut,
    });
    let release = Gate::new();
    main.push(Reply::Stream {
        events: vec![format!(": {MAIN_KEY}\n\n"), chunk_events(&["a"]).remove(0)],
        pace: None,
        end: End::HangUntil(release.clone()),
    });
    let backup = backup_fake();
    let yaml = config(
        Kind::OpenAi,
        &main,
        &backup,
        "timeout: 5\n    stream_idle_timeout: 0.3",
    )
    .replace(
        "failover: {max_failures: 1, cooldown: 60}",
        "failover: {max_failures: 10}",
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let path = file.into_temp_path();

    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-proxy"))
        .args(["--config", path.to_str().unwrap(), "--port", "0"])
        .env("LLM_PROXY_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the proxy did not start: {log:?}"));
        log.push(line.clone());
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let open = || {
        let resp = agent()
            .post(format!("{url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .send(chat_body("m", true))
            .unwrap();
        resp.into_body().read_to_string().unwrap_or_default()
    };
    // An HTML page before commit: failover to the backup.
    let body = open();
    assert!(
        body.contains("backup") && !body.contains(MAIN_KEY),
        "{body}"
    );
    // An oversized event after content: the error event.
    let body = open();
    assert!(
        body.contains("larger than") && !body.contains(MAIN_KEY),
        "{body}"
    );
    // Silence after content: the idle timeout's error event.
    let body = open();
    release.open();
    assert!(
        body.contains("stream_idle_timeout") && !body.contains(MAIN_KEY),
        "{body}"
    );

    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    log.extend(rx.try_iter());
    let all = log.join("\n");
    assert!(
        all.contains("expected an event stream, got text/html"),
        "{all}"
    );
    assert!(all.contains("failed mid-stream"), "{all}");
    assert!(!all.contains(MAIN_KEY), "the key reached the log:\n{all}");
    assert!(
        !all.contains(&MAIN_KEY[..12]),
        "a key fragment reached the log:\n{all}"
    );
}
