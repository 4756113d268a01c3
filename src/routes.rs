//! (method, path) → handler, and the handlers themselves.

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use tiny_http::{HTTPVersion, Method, Request};

use crate::app::App;
use crate::error::ProxyError;
use crate::health::Permit;
use crate::http::{self, Headers};
use crate::openai::ChatRequest;
use crate::providers::{ChatStream, deadline};
use crate::router::{self, Answer};
use crate::sse::{self, EventWriter};

/// What the access log line reports about one request.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: u16,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub attempts: u32,
    /// For streams: how the stream ended.
    pub note: Option<&'static str>,
    /// The client key's name, if `auth` is set and the key was valid.
    pub key: Option<String>, // auth hook
}

impl Outcome {
    fn status(status: u16) -> Outcome {
        Outcome {
            status,
            ..Outcome::default()
        }
    }
}

/// Handle one request. `slot` holds the request until a handler takes it to
/// respond; if the handler panics first, the caller still has it and can
/// answer 500.
pub fn dispatch(app: &App, slot: &mut Option<Request>, rid: &str, started: Instant) -> Outcome {
    let mut key = None; // auth hook
    let mut outcome = serve(app, slot, rid, started, &mut key); // auth hook
    outcome.key = key; // auth hook
    outcome // auth hook
} // auth hook

fn serve(
    app: &App,
    slot: &mut Option<Request>,
    rid: &str,
    started: Instant,
    key: &mut Option<String>, // auth hook
) -> Outcome {
    let req = slot.as_ref().expect("request present");
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    if let Some(hook) = &app.hook {
        hook(&path);
    }
    let base = || -> Headers { vec![("x-request-id", rid.to_string())] };
    // llm-proxy drain hook (branch `drain`): liveness and readiness, GET
    // and HEAD. On `core` these become `Route::Health` / `Route::Ready`.
    if path == "/health" || path == "/health/ready" {
        let req = slot.take().expect("request");
        let status = crate::lifecycle::answer_health(req, &path, &app.phase, base());
        return Outcome::status(status);
    }
    // auth hook: every other path needs a key (when `auth` is set), before
    // 404/405, so that no path's existence leaks to a caller without one.
    let client = match app.auth.authenticate(crate::auth::authorization(req)) {
        Ok(c) => c,
        Err(err) => {
            http::send_error_unread(slot.take().expect("request"), &err, base()); // auth hook
            return Outcome::status(err.status); // auth hook
        }
    }; // auth hook
    *key = client.name().map(str::to_string); // auth hook
    let allowed = match path.as_str() {
        "/v1/chat/completions" => "POST",
        "/v1/models" => "GET",
        p if p.starts_with("/v1/models/") => "GET",
        _ => {
            let err = ProxyError::no_route(method.as_str(), &path);
            http::send_error_unread(slot.take().expect("request"), &err, base());
            return Outcome::status(404);
        }
    };
    if method.as_str() != allowed {
        let err = ProxyError::method_not_allowed(method.as_str(), &path, allowed);
        let mut h = base();
        h.push(("Allow", allowed.to_string()));
        http::send_error_unread(slot.take().expect("request"), &err, h);
        return Outcome::status(405);
    }
    // auth hook: count the request against the key's limits (429 when over).
    let admission = match client.admit(Instant::now()) {
        Ok(a) => a,
        Err(refused) => {
            let mut h = base(); // auth hook
            h.extend(refused.headers); // auth hook
            http::send_error_unread(slot.take().expect("request"), &refused.error, h); // auth hook
            return Outcome::status(429); // auth hook
        }
    }; // auth hook
    let limit_headers = &admission.headers; // auth hook
    let base = || -> Headers { [base(), limit_headers.clone()].concat() }; // auth hook
    match (method, path.as_str()) {
        (Method::Get, "/v1/models") => {
            let data: Vec<_> = app
                .config
                .models
                .keys()
                .filter(|m| client.allows(m)) // auth hook
                .map(|m| model_json(app, m))
                .collect();
            let body = json!({ "object": "list", "data": data });
            http::send_json(
                slot.take().expect("request"),
                200,
                base(),
                body.to_string().as_bytes(),
                false,
            );
            Outcome::status(200)
        }
        (Method::Get, p) => {
            let id = &p["/v1/models/".len()..];
            let req = slot.take().expect("request");
            if let Err(err) = client.check_model(id) {
                http::send_error(req, &err, base(), false); // auth hook
                Outcome::status(403) // auth hook
            } else if app.config.models.contains_key(id) {
                let body = model_json(app, id).to_string();
                http::send_json(req, 200, base(), body.as_bytes(), false);
                Outcome::status(200)
            } else {
                http::send_error(req, &ProxyError::model_not_found(id), base(), false);
                Outcome::status(404)
            }
        }
        _ => chat(app, slot, rid, started, &client, limit_headers), // auth hook
    }
}

fn model_json(app: &App, id: &str) -> serde_json::Value {
    json!({ "id": id, "object": "model", "created": app.created, "owned_by": "llm-proxy" })
}

fn chat(
    app: &App,
    slot: &mut Option<Request>,
    rid: &str,
    started: Instant,
    client: &crate::auth::Client<'_>, // auth hook
    limit_headers: &Headers,          // auth hook
) -> Outcome {
    let base = || -> Headers {
        [
            vec![("x-request-id", rid.to_string())],
            limit_headers.clone(),
        ]
        .concat()
    }; // auth hook
    let limit = app.config.server.max_body_bytes;
    let req = slot.as_mut().expect("request present");

    // Refuse an oversized body before reading any of it.
    if req.body_length().is_some_and(|n| n as u64 > limit) {
        let err = ProxyError::too_large(limit);
        http::send_error_unread(slot.take().expect("request"), &err, base());
        return Outcome::status(413);
    }
    let mut body = Vec::with_capacity(req.body_length().unwrap_or(0).min(1 << 20));
    if let Err(e) = req.as_reader().take(limit + 1).read_to_end(&mut body) {
        // Most often the client stalled past client_timeout.
        log::info!("{rid} could not read the request body: {e}");
        let err = ProxyError::bad_request(format!("Could not read the request body: {e}"))
            .with_code("body_read_error");
        http::send_error(slot.take().expect("request"), &err, base(), true);
        return Outcome::status(400);
    }
    if body.len() as u64 > limit {
        // Chunked upload past the limit: stop reading and close.
        let err = ProxyError::too_large(limit);
        http::send_error(slot.take().expect("request"), &err, base(), true);
        return Outcome::status(413);
    }

    let chat = match ChatRequest::parse(&body) {
        Ok(c) => c,
        Err(err) => {
            http::send_error(slot.take().expect("request"), &err, base(), false);
            return Outcome::status(err.status);
        }
    };
    drop(body);
    let mut outcome = Outcome {
        model: Some(chat.model.clone()),
        ..Outcome::default()
    };
    // auth hook: before the lookup, so that a 403 says nothing about
    // which models exist.
    if let Err(err) = client.check_model(&chat.model) {
        http::send_error(slot.take().expect("request"), &err, base(), false); // auth hook
        outcome.status = 403; // auth hook
        return outcome; // auth hook
    } // auth hook
    let Some(model) = app.config.models.get(&chat.model) else {
        let err = ProxyError::model_not_found(&chat.model);
        http::send_error(slot.take().expect("request"), &err, base(), false);
        outcome.status = 404;
        return outcome;
    };

    // A stream is the connection's last response (`Connection: close`):
    // free the connection's thread now rather than when the stream ends.
    if chat.stream {
        slot.as_ref().expect("request").stop_reading_ahead();
    }
    let (result, trace) = router::route(app, model, &chat, rid);
    outcome.attempts = trace.attempts;
    outcome.provider = trace.provider.clone();
    let mut headers = base();
    if let Some(p) = &trace.provider {
        headers.push(("x-llm-proxy-provider", p.clone()));
    }
    headers.push(("x-llm-proxy-attempts", trace.attempts.to_string()));
    // tiny_http reads ahead for the next request on this connection and
    // gives up after client_timeout; after a long request, ask the client
    // not to reuse the connection rather than race that.
    let long = started.elapsed() * 2 > app.config.server.client_timeout;
    let req = slot.take().expect("request");
    match result {
        Ok(Answer::Json(body)) => {
            http::send_json(req, 200, headers, &body, long);
            outcome.status = 200;
        }
        Ok(Answer::Stream {
            stream,
            first,
            permit,
            idle,
        }) => {
            outcome.status = 200;
            let provider = trace.provider.as_deref().unwrap_or("");
            outcome.note = Some(relay(
                app, req, headers, stream, first, permit, idle, provider, rid,
            ));
        }
        Err(err) => {
            outcome.status = err.status;
            http::send_error(req, &err, headers, long);
        }
    }
    outcome
}

/// While the upstream is silent, how often the client gets a keep-alive
/// comment: a tenth of `stream_idle_timeout`, at most every 5 s.
fn keep_alive_every(stream_idle_timeout: Duration) -> Duration {
    (stream_idle_timeout / 10).min(Duration::from_secs(5))
}

/// An SSE comment; every SSE client ignores it.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// End the client's body, once the keep-alives (which share the writer)
/// have stopped.
fn end_body(
    out: Rc<RefCell<EventWriter>>,
    keep_alive: deadline::SilenceGuard,
) -> std::io::Result<()> {
    drop(keep_alive);
    match Rc::try_unwrap(out) {
        Ok(w) => w.into_inner().finish(),
        Err(_) => Ok(()),
    }
}

/// Send the stream to the client, event by event, and settle the provider's
/// breaker when it ends. Returns how it ended, for the log.
#[allow(clippy::too_many_arguments)]
fn relay(
    app: &App,
    req: Request,
    mut headers: Headers,
    mut stream: Box<dyn ChatStream + '_>,
    first: Option<Vec<u8>>,
    permit: Permit<'_>,
    idle: Duration,
    provider: &str,
    rid: &str,
) -> &'static str {
    let chunked = *req.http_version() != HTTPVersion(1, 0);
    headers.push(("Content-Type", "text/event-stream".into()));
    headers.push(("Cache-Control", "no-cache".into()));
    headers.push(("X-Accel-Buffering", "no".into()));
    if chunked {
        headers.push(("Transfer-Encoding", "chunked".into()));
    }
    // A stream outlives tiny_http's read-ahead on the connection: close it.
    let head = http::head(200, &headers, "Connection: close\r\n");
    let first_is_done = first.is_none();
    let first = first.unwrap_or_else(|| sse::DONE.to_vec());
    let out = match EventWriter::start(req.into_writer(), chunked, &head, &first) {
        Ok(w) => Rc::new(RefCell::new(w)),
        Err(e) => {
            log::info!("{rid} client went away before the stream started: {e}");
            return "client_gone";
        }
    };
    // The relay cannot see the client while it waits for the upstream, so
    // while the upstream is silent it writes the client a keep-alive; a
    // failed write is a client that left, which ends the upstream read at
    // once and is not the provider's fault.
    let gone = Rc::new(Cell::new(false));
    // llm-proxy drain hook (branch `drain`): a stream blocked on a silent
    // upstream sees the drain's deadline at its next keep-alive tick.
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
    if first_is_done {
        stream.finish();
        let _ = end_body(out, keep_alive);
        app.health.success(permit);
        return "complete";
    }
    loop {
        // llm-proxy drain hook (branch `drain`): past the drain's deadline
        // (`server.shutdown_timeout` after SIGTERM), end the stream with the
        // `server_shutting_down` error event and no [DONE]. On `core`, this
        // and the `shutting` arm below become `StreamEnd::Shutdown`.
        if app.phase.shutdown_due() {
            return shut_down(app, out, keep_alive, provider, rid);
        }
        match stream.next_event() {
            Ok(Some(event)) => {
                if let Err(e) = out.borrow_mut().send(&event) {
                    log::info!("{rid} client went away mid-stream: {e}");
                    // Not the provider's fault; leave its breaker alone.
                    return "client_gone";
                }
            }
            Ok(None) => {
                let sent = out.borrow_mut().send(sse::DONE);
                // Read the end of the upstream body (normally already here)
                // before ending the client's, so the connection is back in
                // the pool before the client can send its next request. An
                // upstream that held its body open after [DONE] would delay
                // the end of the client's body (which already has [DONE])
                // until it closes or stream_idle_timeout.
                stream.finish();
                let _ = sent.and_then(|_| end_body(out, keep_alive));
                app.health.success(permit);
                return "complete";
            }
            Err(_) if shutting.get() => {
                return shut_down(app, out, keep_alive, provider, rid);
            }
            Err(_) if gone.get() => {
                log::info!("{rid} client went away while provider {provider} was silent");
                return "client_gone";
            }
            Err(e) => {
                let reason = e.to_string();
                app.health.failure(permit, &reason, None);
                log::warn!("{rid} provider {provider} failed mid-stream: {reason}");
                let err = json!({
                    "error": {
                        "message": format!("The upstream provider failed mid-stream: provider {provider}: {reason}"),
                        "type": "server_error",
                        "param": null,
                        "code": "upstream_stream_error",
                    }
                });
                let event = sse::data_event(err.to_string().as_bytes());
                // No [DONE]: the client must not take this for a complete answer.
                let sent = out.borrow_mut().send(&event);
                let _ = sent.and_then(|_| end_body(out, keep_alive));
                return "upstream_error";
            }
        }
    }
}

/// llm-proxy drain hook (branch `drain`): end a stream that is still running
/// at the drain's deadline with the `server_shutting_down` error event and
/// no `[DONE]`. Not the provider's fault: its permit is dropped without a
/// verdict. On `core` this is `StreamEnd::Shutdown` and the error comes
/// from the `ErrorKind` table.
fn shut_down(
    app: &App,
    out: Rc<RefCell<EventWriter>>,
    keep_alive: deadline::SilenceGuard,
    provider: &str,
    rid: &str,
) -> &'static str {
    log::info!("{rid} stream from provider {provider} ended: server.shutdown_timeout passed");
    app.phase.note_stream_cut();
    let err = json!({
        "error": {
            "message": "The proxy is shutting down and ended this stream before it completed; retry the request",
            "type": "server_error",
            "param": null,
            "code": "server_shutting_down",
        }
    });
    let event = sse::data_event(err.to_string().as_bytes());
    let sent = out.borrow_mut().send(&event);
    let _ = sent.and_then(|_| end_body(out, keep_alive));
    "shutdown"
}
