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
use crate::openai::ApiRequest;
use crate::providers::{ChatStream, Provider, deadline};
use crate::sse::{self, EventWriter};

/// Most bytes of events held before the stream commits (see [`open`]).
/// An upstream that sends more without content commits anyway: the held
/// events are bounded, and are nothing a client would miss.
const MAX_HELD: usize = 64 * 1024;

/// A stream whose upstream answered 2xx and sent what commits the client to
/// it (or ended at once).
pub struct Opened<'a> {
    stream: Box<dyn ChatStream + 'a>,
    /// The events up to and including the one that committed, encoded.
    held: Vec<u8>,
    /// The stream ended (`[DONE]`) before anything committed it.
    ended: bool,
    /// The provider's `stream_idle_timeout`, for the keep-alives.
    idle: Duration,
}

/// Open a stream and read it until it commits: on the first `data:` event
/// that carries a role or content. Comments and keep-alives never reach
/// here (providers drop them); events without content, such as Azure's
/// leading prompt-filter chunk with empty `choices`, are held and sent at
/// commit. The whole of it is due within `timeout` of `started`, however
/// the upstream spends it (headers, comments, pings or silence); a failure
/// before commit fails over to the next provider.
pub fn open<'a>(
    provider: &'a dyn Provider,
    pcfg: &ProviderConfig,
    req: &ApiRequest,
    model_id: &str,
    started: Instant,
) -> Result<Opened<'a>, ProviderError> {
    let _first_chunk = deadline::limit(started, pcfg.timeout, "timeout");
    let idle = pcfg.stream_idle_timeout;
    let mut stream = provider.stream(req, model_id)?;
    let mut held = Vec::new();
    loop {
        let Some(event) = stream.next_event()? else {
            return Ok(Opened {
                stream,
                held,
                ended: true,
                idle,
            });
        };
        let commit = commits(&event);
        held.extend_from_slice(&event);
        if commit || held.len() >= MAX_HELD {
            return Ok(Opened {
                stream,
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

/// Whether an encoded event carries a role or content (or ends a choice):
/// the rule for commit, the same for every provider kind and endpoint.
fn commits(event: &[u8]) -> bool {
    let probe = match single_data_line(event) {
        Some(data) => serde_json::from_slice::<ChunkProbe>(data),
        None => {
            let text = String::from_utf8_lossy(event);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            serde_json::from_str::<ChunkProbe>(&data.join("\n"))
        }
    };
    let Ok(chunk) = probe else {
        // Providers pass on only events they checked; anything else is
        // content as far as the client is concerned.
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
/// every provider encodes a chunk), without copying it.
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
    req: Request,
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
        held,
        ended,
        idle,
    } = opened;
    let body = Body {
        headers,
        held,
        ended,
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
    idle: Duration,
}

/// Relay the stream; `settle` is called once its end is known and before
/// the client's body ends, so that a client's next request already finds
/// the breaker's verdict (for a client that left, after).
fn run(
    app: &App,
    req: Request,
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
        idle,
    } = body;
    let chunked = *req.http_version() != HTTPVersion(1, 0);
    let head = http::stream_head(headers, chunked);
    if ended {
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
                Ok(None) => break (Some(sse::DONE.to_vec()), StreamEnd::Complete),
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
            assert!(commits(format!("{e}\n\n").as_bytes()), "{e}");
        }
        // Several data lines are one payload.
        assert!(commits(
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
            assert!(!commits(format!("{e}\n\n").as_bytes()), "{e}");
        }
    }
}
