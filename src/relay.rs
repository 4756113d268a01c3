//! One owner for the lifecycle of a stream, the same for every provider
//! kind and endpoint: when it commits the client to a provider
//! ([`open`]), how it is relayed (keep-alives while the upstream is
//! silent), how it finishes (the upstream body read to its end, so the
//! connection is reused), and how its end ([`StreamEnd`]) settles the
//! provider's breaker ([`settle`]).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::IgnoredAny;
use tiny_http::{HTTPVersion, Request};

use crate::app::App;
use crate::config::ProviderConfig;
use crate::error::{ErrorKind, ProviderError, ProxyError};
use crate::health::Permit;
use crate::http::{self, Headers};
use crate::metrics::Usage;
use crate::openai::{ApiRequest, Endpoint};
use crate::providers::{ChatStream, Provider, deadline};
use crate::sse::{self, EventWriter};

/// Most bytes of events held before a chat or completions stream commits
/// (see [`open`]). An upstream that sends more without content commits
/// anyway: the held events are bounded, and are nothing a client would miss.
const MAX_HELD: usize = 64 * 1024;

/// The most a Responses prelude is ever held, whatever `max_body_bytes`
/// says (see [`hold_limit`]).
const MAX_HELD_RESPONSES: u64 = 256 * 1024 * 1024;

/// Most bytes of events held before a stream commits. A Responses prelude
/// (`response.created`, `response.in_progress`) echoes the request's
/// `instructions` and `tools` in each of its two events, and a coding
/// agent's request runs to 50 KB and more: with [`MAX_HELD`] such a stream
/// would commit on its prelude and lose failover. So it may hold twice the
/// largest request body plus [`MAX_HELD`], still bounded
/// ([`MAX_HELD_RESPONSES`]).
fn hold_limit(endpoint: Endpoint, max_body_bytes: u64) -> usize {
    match endpoint {
        Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings => MAX_HELD,
        Endpoint::Responses => {
            let limit = max_body_bytes
                .saturating_mul(2)
                .saturating_add(MAX_HELD as u64)
                .min(MAX_HELD_RESPONSES);
            usize::try_from(limit).unwrap_or(MAX_HELD)
        }
    }
}

/// A stream whose upstream answered 2xx and sent what commits the client to
/// it (or ended at once).
pub struct Opened<'a> {
    stream: Box<dyn ChatStream + 'a>,
    /// How the stream ends ([`Endpoint::ends_with_done`]).
    endpoint: Endpoint,
    /// The events up to and including the one that committed, encoded.
    held: Vec<u8>,
    /// The stream ended (`[DONE]`) before anything committed it.
    ended: bool,
    /// The provider's `stream_idle_timeout`, for the keep-alives.
    idle: Duration,
}

/// Open a stream and read it until it commits ([`commits`]): for chat and
/// completions on the first `data:` event that carries a role or content,
/// for Responses on the first event after the prelude. Comments and
/// keep-alives never reach here (providers drop them); events that do not
/// commit, such as Azure's leading prompt-filter chunk with empty
/// `choices` or `response.created`, are held and sent at commit. The whole
/// of it is due within `timeout` of `started`, however the upstream spends
/// it (headers, comments, pings or silence); a failure before commit
/// (an in-band `error` or `response.failed` included) fails over to the
/// next provider, and the client never sees the held events.
/// `max_body_bytes` is `server.max_body_bytes` ([`hold_limit`]).
pub fn open<'a>(
    provider: &'a dyn Provider,
    pcfg: &ProviderConfig,
    req: &ApiRequest,
    model_id: &str,
    started: Instant,
    max_body_bytes: u64,
) -> Result<Opened<'a>, ProviderError> {
    let _first_chunk = deadline::limit(started, pcfg.timeout, "timeout");
    let idle = pcfg.stream_idle_timeout;
    let endpoint = req.endpoint;
    let limit = hold_limit(endpoint, max_body_bytes);
    let mut stream = provider.stream(req, model_id)?;
    let mut held = Vec::new();
    loop {
        let Some(event) = stream.next_event()? else {
            return Ok(Opened {
                stream,
                endpoint,
                held,
                ended: true,
                idle,
            });
        };
        let commit = commits(endpoint, &event);
        held.extend_from_slice(&event);
        if commit || held.len() >= limit {
            return Ok(Opened {
                stream,
                endpoint,
                held,
                ended: false,
                idle,
            });
        }
    }
}

/// One choice of a chunk, as far as committing needs it. `Option` of
/// `IgnoredAny` is `None` for a field that is absent or null, without
/// building the value.
#[derive(Deserialize)]
struct ChoiceProbe {
    delta: Option<DeltaProbe>,
    /// Text completions.
    text: Option<TextProbe>,
    finish_reason: Option<IgnoredAny>,
}

/// What a chat delta can carry.
#[derive(Deserialize)]
struct DeltaProbe {
    role: Option<IgnoredAny>,
    content: Option<IgnoredAny>,
    tool_calls: Option<IgnoredAny>,
    function_call: Option<IgnoredAny>,
    refusal: Option<IgnoredAny>,
    audio: Option<IgnoredAny>,
    /// Reasoning text, as DeepSeek, vLLM and OpenRouter send it.
    reasoning_content: Option<IgnoredAny>,
    reasoning: Option<IgnoredAny>,
}

/// A completion's `text`: content unless it is the empty string.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextProbe {
    Text(String),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Vec<ChoiceProbe>,
}

/// A Responses event, as far as committing needs it.
#[derive(Deserialize)]
struct TypeProbe {
    #[serde(rename = "type")]
    ty: String,
}

/// Whether an encoded event commits the client to this provider: the rule
/// for every provider kind, per endpoint. Chat and completions: the event
/// carries a role or content (or ends a choice). Responses: any event but
/// the prelude ([`crate::responses::is_prelude`]). An event whose payload
/// does not parse commits: providers pass on only events they checked, and
/// anything else is content as far as the client is concerned.
fn commits(endpoint: Endpoint, event: &[u8]) -> bool {
    match endpoint {
        Endpoint::Responses => with_payload(event, |data| {
            serde_json::from_slice::<TypeProbe>(data)
                .map_or(true, |p| !crate::responses::is_prelude(&p.ty))
        }),
        Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings => {
            with_payload(event, chunk_commits)
        }
    }
}

/// `f` of the event's `data:` payload (its lines joined, as SSE does);
/// without a copy when it is one line.
fn with_payload(event: &[u8], f: impl FnOnce(&[u8]) -> bool) -> bool {
    match single_data_line(event) {
        Some(data) => f(data),
        None => {
            let text = String::from_utf8_lossy(event);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            f(data.join("\n").as_bytes())
        }
    }
}

/// A chat or completions chunk that carries a role or content.
fn chunk_commits(data: &[u8]) -> bool {
    let Ok(chunk) = serde_json::from_slice::<ChunkProbe>(data) else {
        return true;
    };
    chunk.choices.iter().any(|c| {
        c.delta.as_ref().is_some_and(|d| {
            d.role.is_some()
                || d.content.is_some()
                || d.tool_calls.is_some()
                || d.function_call.is_some()
                || d.refusal.is_some()
                || d.audio.is_some()
                || d.reasoning_content.is_some()
                || d.reasoning.is_some()
        }) || c.text.as_ref().is_some_and(|t| match t {
            TextProbe::Text(s) => !s.is_empty(),
            TextProbe::Other(_) => true,
        }) || c.finish_reason.is_some()
    })
}

/// The payload of an event that is one `data:` line (`data: {...}\n\n`, as
/// every chat provider encodes a chunk), without copying it.
fn single_data_line(event: &[u8]) -> Option<&[u8]> {
    let rest = event.strip_prefix(b"data:")?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let end = rest.iter().position(|&b| b == b'\n')?;
    (&rest[end..] == b"\n\n").then_some(&rest[..end])
}

/// How a stream ended: what [`settle`] judges the provider by.
#[derive(Debug)]
pub enum StreamEnd {
    /// `[DONE]` reached the client (or the client was gone by then).
    Complete,
    /// The client left; not the provider's fault.
    ClientGone,
    /// The upstream broke, timed out, or sent an error or a malformed event
    /// after commit.
    UpstreamError(ProviderError),
    /// The drain's deadline (`server.shutdown_timeout` after SIGTERM)
    /// passed; not the provider's fault.
    Shutdown,
}

impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamEnd::Complete => "complete",
            StreamEnd::ClientGone => "client_gone",
            StreamEnd::UpstreamError(_) => "upstream_error",
            StreamEnd::Shutdown => "shutdown",
        })
    }
}

/// Settle the provider's breaker for a stream's end: the one place that
/// does, for every kind and endpoint.
fn settle(app: &App, permit: Permit<'_>, end: &StreamEnd, provider: &str, rid: &str) {
    match end {
        StreamEnd::Complete => app.health.success(permit),
        // The permit is dropped: the breaker is left as it was.
        StreamEnd::ClientGone => log::info!("{rid} client went away mid-stream"),
        StreamEnd::UpstreamError(e) => {
            let reason = e.to_string();
            log::warn!("{rid} provider {provider} failed mid-stream: {reason}");
            if app.health.failure(permit, &reason, None) {
                if let Some(i) = app.config.providers.iter().position(|p| p.name == provider) {
                    app.metrics.breaker_opened(i);
                }
            }
        }
        StreamEnd::Shutdown => {
            log::info!(
                "{rid} stream from provider {provider} ended: server.shutdown_timeout passed"
            );
            app.phase.note_stream_cut();
        }
    }
}

/// While the upstream is silent, how often the client gets a keep-alive
/// comment: a tenth of `stream_idle_timeout`, at most every 5 s.
fn keep_alive_every(stream_idle_timeout: Duration) -> Duration {
    (stream_idle_timeout / 10).min(Duration::from_secs(5))
}

/// An SSE comment; every SSE client ignores it.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// How a relayed stream ended, and the tokens its upstream reported.
pub struct Relayed {
    pub end: StreamEnd,
    pub usage: Option<Usage>,
}

/// Send the stream to the client, event by event, and settle the
/// provider's breaker when it ends. Returns how it ended, for the log.
pub fn relay(
    app: &App,
    req: Box<Request>,
    headers: Headers,
    opened: Opened<'_>,
    permit: Permit<'_>,
    provider: &str,
    rid: &str,
) -> Relayed {
    let mut permit = Some(permit);
    let mut settled = |end: &StreamEnd| {
        if let Some(permit) = permit.take() {
            settle(app, permit, end, provider, rid);
        }
    };
    let Opened {
        mut stream,
        endpoint,
        held,
        ended,
        idle,
    } = opened;
    let body = Body {
        headers,
        held,
        ended,
        done: endpoint.ends_with_done(),
        idle,
    };
    let end = run(app, req, stream.as_mut(), body, provider, rid, &mut settled);
    settled(&end);
    Relayed {
        end,
        usage: stream.usage(),
    }
}

/// What [`open`] read of a stream besides the stream itself.
struct Body {
    headers: Headers,
    held: Vec<u8>,
    ended: bool,
    /// A complete stream ends with `data: [DONE]` (not Responses, whose
    /// terminal event is the upstream's own).
    done: bool,
    idle: Duration,
}

/// Relay the stream; `settle` is called once its end is known and before
/// the client's body ends, so that a client's next request already finds
/// the breaker's verdict (for a client that left, after).
fn run(
    app: &App,
    req: Box<Request>,
    stream: &mut dyn ChatStream,
    body: Body,
    provider: &str,
    rid: &str,
    settle: &mut dyn FnMut(&StreamEnd),
) -> StreamEnd {
    let Body {
        headers,
        mut held,
        ended,
        done,
        idle,
    } = body;
    let chunked = *req.http_version() != HTTPVersion(1, 0);
    let head = http::stream_head(headers, chunked, http::wants_close(&req));
    if ended && done {
        held.extend_from_slice(sse::DONE);
    }
    let out = match EventWriter::start(req.into_writer(), chunked, &head, &held) {
        Ok(w) => Rc::new(RefCell::new(w)),
        Err(e) => {
            log::info!("{rid} client went away before the stream started: {e}");
            return StreamEnd::ClientGone;
        }
    };
    drop(held);
    // The stream may run for minutes at this depth: give back the pages of
    // everything that went deeper before it (the upstream call, the tries
    // before it, the first events), down to what the loop below reaches.
    crate::trim::release_stack_below();
    // The relay cannot see the client while it waits for the upstream, so
    // while the upstream is silent it writes the client a keep-alive; a
    // failed write is a client that left, which ends the upstream read at
    // once and is not the provider's fault.
    let gone = Rc::new(Cell::new(false));
    // A stream blocked on a silent upstream sees the drain's deadline at
    // its next keep-alive tick.
    let shutting = Rc::new(Cell::new(false));
    let keep_alive = {
        let (out, gone) = (out.clone(), gone.clone());
        let (phase, shutting) = (app.phase.clone(), shutting.clone());
        deadline::on_silence(keep_alive_every(idle), move || {
            if phase.shutdown_due() {
                shutting.set(true);
                return Err(std::io::Error::other("the proxy is shutting down"));
            }
            let sent = out.borrow_mut().send(KEEP_ALIVE);
            gone.set(sent.is_err());
            sent
        })
    };
    // The event that ends the client's body, if any, then the end.
    let (last, end) = if ended {
        (None, StreamEnd::Complete)
    } else {
        loop {
            if app.phase.shutdown_due() {
                break (
                    Some(stream.failure_event(&shutdown_error())),
                    StreamEnd::Shutdown,
                );
            }
            match stream.next_event() {
                Ok(Some(event)) => {
                    if let Err(e) = out.borrow_mut().send(&event) {
                        log::debug!("{rid} write to the client failed: {e}");
                        return StreamEnd::ClientGone;
                    }
                }
                Ok(None) => break (done.then(|| sse::DONE.to_vec()), StreamEnd::Complete),
                Err(_) if shutting.get() => {
                    break (
                        Some(stream.failure_event(&shutdown_error())),
                        StreamEnd::Shutdown,
                    );
                }
                Err(_) if gone.get() => {
                    log::debug!("{rid} client left while provider {provider} was silent");
                    return StreamEnd::ClientGone;
                }
                Err(e) => {
                    let err = ProxyError::new(
                        ErrorKind::UpstreamStream,
                        format!(
                            "The upstream provider failed mid-stream: provider {provider}: {e}"
                        ),
                    );
                    // No [DONE]: the client must not take this for a
                    // complete answer.
                    break (
                        Some(stream.failure_event(&err)),
                        StreamEnd::UpstreamError(e),
                    );
                }
            }
        }
    };
    settle(&end);
    let sent = match &last {
        Some(event) => out.borrow_mut().send(event),
        None => Ok(()),
    };
    if matches!(end, StreamEnd::Complete) {
        // Read the end of the upstream body (normally already here) before
        // ending the client's, so the connection is back in the pool before
        // the client can send its next request. An upstream that held its
        // body open after [DONE] delays the end of the client's body (which
        // already has [DONE]) until it closes or stream_idle_timeout.
        stream.finish();
    }
    // End the client's body once the keep-alives (which share the writer)
    // have stopped.
    drop(keep_alive);
    if let (Ok(()), Ok(w)) = (sent, Rc::try_unwrap(out)) {
        let _ = w.into_inner().finish();
    }
    end
}

/// The error that ends a stream cut by the drain (its event, without
/// `[DONE]`, is the stream's [`ChatStream::failure_event`]).
fn shutdown_error() -> ProxyError {
    ProxyError::new(
        ErrorKind::ShuttingDown,
        "The proxy is shutting down and ended this stream before it completed; retry the request",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_rule() {
        let yes = [
            r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"data: {"choices":[{"index":0,"text":"Hi","finish_reason":null}]}"#,
            "data: not json",
        ];
        for e in yes {
            assert!(
                commits(Endpoint::Chat, format!("{e}\n\n").as_bytes()),
                "{e}"
            );
        }
        // Several data lines are one payload.
        assert!(commits(
            Endpoint::Chat,
            b"data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"x\"}}]}\n\n"
        ));
        let no = [
            r#"data: {"choices":[],"prompt_filter_results":[{"prompt_index":0}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{}}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{"content":null}}]}"#,
            r#"data: {"choices":[{"index":0,"text":""}]}"#,
            r#"data: {"choices":[],"usage":{"total_tokens":3}}"#,
        ];
        for e in no {
            assert!(
                !commits(Endpoint::Chat, format!("{e}\n\n").as_bytes()),
                "{e}"
            );
        }
    }

    fn responses_event(ty: &str, extra: &str) -> Vec<u8> {
        format!("event: {ty}\ndata: {{\"type\":\"{ty}\"{extra},\"sequence_number\":0}}\n\n")
            .into_bytes()
    }

    #[test]
    fn responses_commit_on_the_first_event_after_the_prelude() {
        let r = |ty: &str| commits(Endpoint::Responses, &responses_event(ty, ""));
        for held in [
            "response.created",
            "response.in_progress",
            "response.queued",
        ] {
            assert!(!r(held), "{held}");
        }
        for ty in [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.function_call_arguments.delta",
            "response.completed",
            "response.incomplete",
            "response.failed",
            "error",
        ] {
            assert!(r(ty), "{ty}");
        }
        // The payload's type decides, not the `event:` line.
        assert!(!commits(
            Endpoint::Responses,
            b"event: response.output_text.delta\ndata: {\"type\":\"response.created\"}\n\n"
        ));
        // A payload without a type, or not JSON, commits.
        assert!(commits(Endpoint::Responses, b"data: {\"x\":1}\n\n"));
        assert!(commits(Endpoint::Responses, b"data: not json\n\n"));
        // A chat chunk's rule is not the Responses one: neither of these
        // carries content.
        assert!(!commits(
            Endpoint::Chat,
            &responses_event("response.output_item.added", "")
        ));
    }

    #[test]
    fn hold_limits_per_endpoint_are_bounded() {
        assert_eq!(hold_limit(Endpoint::Chat, 32 << 20), MAX_HELD);
        assert_eq!(hold_limit(Endpoint::Completions, u64::MAX), MAX_HELD);
        assert_eq!(
            hold_limit(Endpoint::Responses, 32 << 20),
            (64 << 20) + MAX_HELD
        );
        assert_eq!(hold_limit(Endpoint::Responses, 1024), 2048 + MAX_HELD);
        assert_eq!(
            hold_limit(Endpoint::Responses, u64::MAX),
            MAX_HELD_RESPONSES as usize
        );
    }

    /// A provider whose one stream hands out scripted events.
    struct Scripted(std::sync::Mutex<Vec<Result<Option<Vec<u8>>, ProviderError>>>);

    struct ScriptedStream(Vec<Result<Option<Vec<u8>>, ProviderError>>);

    impl ChatStream for ScriptedStream {
        fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
            if self.0.is_empty() {
                return Ok(None);
            }
            self.0.remove(0)
        }
        fn finish(&mut self) {}
        fn usage(&self) -> Option<Usage> {
            None
        }
        fn failure_event(&mut self, _err: &ProxyError) -> Vec<u8> {
            Vec::new()
        }
    }

    impl Provider for Scripted {
        fn serves(&self, _: Endpoint) -> bool {
            true
        }
        fn complete(&self, _: &ApiRequest, _: &str) -> Result<Vec<u8>, ProviderError> {
            Err(ProviderError::Connect("not scripted".into()))
        }
        fn stream(
            &self,
            _: &ApiRequest,
            _: &str,
        ) -> Result<Box<dyn ChatStream + '_>, ProviderError> {
            let events = std::mem::take(&mut *self.0.lock().unwrap());
            Ok(Box::new(ScriptedStream(events)))
        }
        fn responses_native(&self) -> bool {
            true
        }
        fn retrieve_response(&self, _: &str, _: &str) -> Result<Vec<u8>, ProviderError> {
            Err(ProviderError::Connect("not scripted".into()))
        }
    }

    fn open_scripted(
        events: Vec<Result<Option<Vec<u8>>, ProviderError>>,
    ) -> Result<(Vec<u8>, bool), ProviderError> {
        let cfg = crate::config::Config::from_yaml(
            "providers:\n  p: {type: openai}\nmodels:\n  m:\n    providers:\n      p: {priority: 0}\n",
        )
        .unwrap();
        let req = ApiRequest::parse(
            Endpoint::Responses,
            br#"{"model":"m","input":"hi","stream":true}"#,
        )
        .unwrap();
        let p = Scripted(std::sync::Mutex::new(events));
        let opened = open(&p, &cfg.providers[0], &req, "m", Instant::now(), 32 << 20)?;
        Ok((opened.held, opened.ended))
    }

    #[test]
    fn a_responses_stream_holds_its_prelude_and_fails_over_on_an_error_before_output() {
        // The prelude echoes a large request (instructions + tools): more
        // than the chat limit, and still held.
        let big = format!(
            ",\"response\":{{\"instructions\":\"{}\"}}",
            "x".repeat(100 * 1024)
        );
        let created = responses_event("response.created", &big);
        let in_progress = responses_event("response.in_progress", &big);
        let err = open_scripted(vec![
            Ok(Some(created.clone())),
            Ok(Some(in_progress.clone())),
            Err(ProviderError::Decode(
                "upstream sent an error event: insufficient_quota".into(),
            )),
        ])
        .expect_err("an error before the first output event fails over");
        assert!(matches!(err, ProviderError::Decode(_)), "{err:?}");

        // The first output event commits, with the prelude sent before it.
        let added = responses_event("response.output_item.added", "");
        let (held, ended) = open_scripted(vec![
            Ok(Some(created.clone())),
            Ok(Some(in_progress.clone())),
            Ok(Some(added.clone())),
            Ok(Some(responses_event("response.output_text.delta", ""))),
        ])
        .unwrap();
        assert!(!ended);
        assert_eq!(held, [created, in_progress, added].concat());
    }
}
