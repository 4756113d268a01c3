//! Failover across a model's providers: priority order, skip what the
//! breaker keeps out, count what fails, stop at the first answer, at the
//! model's `request_timeout`, or when the client leaves.

use std::time::{Duration, Instant};

use tiny_http::ClientWatch;

use crate::app::App;
use crate::config::{ModelConfig, Route};
use crate::error::{ErrorKind, ProviderError, ProxyError};
use crate::health::{Permit, Skip};
use crate::metrics::Outcome;
use crate::openai::ApiRequest;
use crate::providers::deadline;
use crate::relay::{self, Opened};

/// How often an attempt that waits on its upstream checks whether the
/// client has left.
const CLIENT_CHECK_EVERY: Duration = Duration::from_millis(200);

/// The `what` of the request-wide limit (see [`deadline::limit`]).
const REQUEST_TIMEOUT: &str = "request_timeout";

/// A successful routing decision.
pub enum Answer<'a> {
    /// A complete body for the request's endpoint.
    Json(Vec<u8>),
    /// A stream that has committed (see [`relay::open`]). Its provider's
    /// breaker is settled by [`relay::relay`] when it ends, with `permit`.
    Stream {
        opened: Opened<'a>,
        permit: Permit<'a>,
    },
}

/// What the caller needs for headers and the log line, success or not.
pub struct Trace {
    /// Upstream calls made.
    pub attempts: u32,
    /// Name of the provider that answered (or failed last).
    pub provider: Option<String>,
    /// Its index in the config.
    pub provider_index: Option<usize>,
    /// Time spent waiting on upstreams (every attempt, to its response
    /// head, or its first event for streams).
    pub upstream: Duration,
}

/// Try the model's providers for `req`. `client` tells whether the client
/// has left (see [`ClientWatch`]); then no further attempt is made, and the
/// attempt under way is abandoned without counting against its provider.
pub fn route<'a>(
    app: &'a App,
    model: &ModelConfig,
    req: &ApiRequest,
    request_id: &str,
    client: Option<ClientWatch>,
) -> (Result<Answer<'a>, ProxyError>, Trace) {
    let mut trace = Trace {
        attempts: 0,
        provider: None,
        provider_index: None,
        upstream: Duration::ZERO,
    };
    let metrics = &app.metrics;
    let mi = metrics.model(Some(&model.name));
    let mut last_failure: Option<(String, ProviderError)> = None;
    let mut skipped: Vec<String> = Vec::new();
    // A kind that cannot serve the endpoint (Anthropic has no embeddings)
    // is left out without touching its breaker.
    let routes: Vec<&Route> = model
        .routes
        .iter()
        .filter(|r| app.providers[r.provider].serves(req.endpoint))
        .collect();
    if routes.is_empty() {
        let err = ProxyError::unsupported_endpoint(&model.name, req.endpoint);
        return (Err(err), trace);
    }

    // The request's deadline wraps every attempt's own limits (a limit
    // never extends an outer one), and, for a stream, ends at its commit,
    // when `route` returns.
    let begun = Instant::now();
    let due = model.request_timeout.and_then(|t| begun.checked_add(t));
    let _request_limit = model
        .request_timeout
        .map(|t| deadline::limit(begun, t, REQUEST_TIMEOUT));
    let gone = move || client.as_ref().is_some_and(ClientWatch::gone);
    // While an attempt waits on its upstream, a client that left ends the
    // wait (the relay sets its own keep-alive function after commit).
    let _client_check = deadline::on_silence(CLIENT_CHECK_EVERY, {
        let gone = gone.clone();
        move || {
            if gone() {
                Err(std::io::Error::other("the client closed its connection"))
            } else {
                Ok(())
            }
        }
    });

    // Routes in priority order. One refused only because enough requests
    // to it are pending (see health.rs) goes to the end, to be tried again
    // past that bound once every other provider failed or is out; the
    // model's last provider is admitted past it at once, as nothing but
    // those deferred ones comes after it.
    let mut order: Vec<(&Route, bool)> = routes.iter().map(|r| (*r, false)).collect();
    let mut next = 0;
    while let Some(&(route, deferred)) = order.get(next) {
        // Before taking a permit: an attempt that cannot be used, or has
        // no time, is not started.
        if gone() {
            log::info!("{request_id} client left; no further provider is tried");
            return (Err(client_gone()), trace);
        }
        if due.is_some_and(|at| Instant::now() >= at) {
            let err = timed_out(model, last_failure.as_ref(), None);
            return (Err(err), trace);
        }
        next += 1;
        let pcfg = &app.config.providers[route.provider];
        let admitted = if deferred || next == routes.len() {
            app.health.admit_last_resort(route.provider)
        } else {
            app.health.admit(route.provider)
        };
        let mut permit = match admitted {
            Ok(p) => p,
            Err(Skip::Pending) => {
                log::debug!(
                    "{request_id} provider {} has enough requests pending; trying it last",
                    pcfg.name
                );
                order.push((route, true));
                continue;
            }
            Err(skip) => {
                log::debug!("{request_id} skipping provider {}: {skip:?}", pcfg.name);
                skipped.push(pcfg.name.clone());
                continue;
            }
        };
        if permit.is_probe() {
            log::info!(
                "{request_id} probing provider {} after its cooldown",
                pcfg.name
            );
        }
        trace.attempts += 1;
        trace.provider = Some(pcfg.name.clone());
        trace.provider_index = Some(route.provider);
        let provider = &app.providers[route.provider];
        let started = Instant::now();
        // Only this attempt's expiry counts below.
        let _ = deadline::take_expired();
        let attempt = if req.stream {
            match relay::open(provider.as_ref(), pcfg, req, &route.model_id, started) {
                // Success for the breaker is decided when the stream ends.
                Ok(opened) => {
                    let took = started.elapsed();
                    attempt_done(&mut trace, app, route.provider, mi, Outcome::Success, took);
                    log::debug!(
                        "{request_id} attempt {} provider {} answered{} after {:.1} ms",
                        trace.attempts,
                        pcfg.name,
                        if req.stream {
                            " (stream, first event)"
                        } else {
                            " 200"
                        },
                        took.as_secs_f64() * 1000.0
                    );
                    app.health.answered(&mut permit);
                    return (Ok(Answer::Stream { opened, permit }), trace);
                }
                Err(e) => e,
            }
        } else {
            match provider.complete(req, &route.model_id) {
                Ok(body) => {
                    let took = started.elapsed();
                    attempt_done(&mut trace, app, route.provider, mi, Outcome::Success, took);
                    log::debug!(
                        "{request_id} attempt {} provider {} answered{} after {:.1} ms",
                        trace.attempts,
                        pcfg.name,
                        if req.stream {
                            " (stream, first event)"
                        } else {
                            " 200"
                        },
                        took.as_secs_f64() * 1000.0
                    );
                    app.health.success(permit);
                    return (Ok(Answer::Json(body)), trace);
                }
                Err(e) => e,
            }
        };
        let took = started.elapsed();
        log::debug!(
            "{request_id} attempt {} provider {} {} after {:.1} ms",
            trace.attempts,
            pcfg.name,
            match &attempt {
                ProviderError::Status { status, .. } => format!("status {status}"),
                _ => "failed".to_string(),
            },
            took.as_secs_f64() * 1000.0
        );
        // Neither ending is the provider's fault: the permit is dropped
        // and the breaker left as it was.
        if gone() {
            attempt_done(
                &mut trace,
                app,
                route.provider,
                mi,
                Outcome::ClientGone,
                took,
            );
            log::info!(
                "{request_id} client left during the attempt to provider {}; abandoned, not counted against it",
                pcfg.name
            );
            return (Err(client_gone()), trace);
        }
        let cut = deadline::take_expired() == Some(REQUEST_TIMEOUT)
            || (matches!(attempt, ProviderError::Timeout(_))
                && due.is_some_and(|at| Instant::now() >= at));
        if cut {
            attempt_done(&mut trace, app, route.provider, mi, Outcome::Deadline, took);
            log::warn!(
                "{request_id} provider {} cut short after {:.0} ms: the model's request_timeout passed; not counted against it",
                pcfg.name,
                took.as_secs_f64() * 1000.0
            );
            let err = timed_out(model, last_failure.as_ref(), Some(&pcfg.name));
            return (Err(err), trace);
        }
        if let ProviderError::Status { status, error, .. } = &attempt {
            if !attempt.is_failover() {
                attempt_done(
                    &mut trace,
                    app,
                    route.provider,
                    mi,
                    Outcome::ClientError,
                    took,
                );
                // The upstream judged the request itself bad: it would fail
                // everywhere, and the provider is healthy. Its error was
                // normalised once, where the upstream answered.
                app.health.success(permit);
                let err = ProxyError::from_upstream(&pcfg.name, *status, error);
                return (Err(err), trace);
            }
        }
        attempt_done(&mut trace, app, route.provider, mi, Outcome::Failover, took);
        metrics.failover(mi, route.provider);
        let reason = attempt.to_string();
        let opened = app.health.failure(permit, &reason, attempt.retry_after());
        if opened {
            metrics.breaker_opened(route.provider);
        }
        log::warn!(
            "{request_id} provider {} failed after {:.0} ms: {reason}{}",
            pcfg.name,
            took.as_secs_f64() * 1000.0,
            if opened {
                format!(
                    "; breaker open for {} s",
                    app.config.failover.cooldown.as_secs()
                )
            } else {
                String::new()
            }
        );
        last_failure = Some((pcfg.name.clone(), attempt));
    }

    (
        Err(exhausted(app, model, &routes, last_failure, &skipped)),
        trace,
    )
}

/// Count one upstream attempt (metrics, and the time spent upstream).
fn attempt_done(
    trace: &mut Trace,
    app: &App,
    provider: usize,
    model: usize,
    outcome: Outcome,
    took: Duration,
) {
    trace.upstream = trace.upstream.saturating_add(took);
    app.metrics.upstream(provider, model, outcome, took);
}

/// The answer (for the log: no client reads it) when the client left.
fn client_gone() -> ProxyError {
    ProxyError::new(
        ErrorKind::ClientGone,
        "The client closed its connection before a provider answered",
    )
}

/// The 504 when the model's `request_timeout` is spent. It names the last
/// failure counted, else the provider the deadline cut (`cut`).
fn timed_out(
    model: &ModelConfig,
    last_failure: Option<&(String, ProviderError)>,
    cut: Option<&str>,
) -> ProxyError {
    let secs = model.request_timeout.unwrap_or_default().as_secs_f64();
    let mut message = format!(
        "No provider for model '{}' answered within its request_timeout ({secs} s)",
        model.name
    );
    match (last_failure, cut) {
        (Some((name, e)), _) => {
            message.push_str(&format!("; last failure: provider {name}: {e}"));
        }
        (None, Some(name)) => {
            message.push_str(&format!(
                "; last failure: provider {name}: no answer before the deadline"
            ));
        }
        (None, None) => {}
    }
    ProxyError::new(ErrorKind::DeadlineExceeded, message)
}

/// The 503 after every provider failed or was skipped.
fn exhausted(
    app: &App,
    model: &ModelConfig,
    routes: &[&Route],
    last_failure: Option<(String, ProviderError)>,
    skipped: &[String],
) -> ProxyError {
    let last = match last_failure {
        Some((name, e)) => Some(format!("provider {name}: {e}")),
        None => {
            // Nothing was tried: name the most recent failure we know of.
            routes.iter().find_map(|r| {
                app.health
                    .status(r.provider)
                    .last_error
                    .map(|e| format!("provider {}: {e}", app.config.providers[r.provider].name))
            })
        }
    };
    let mut message = if skipped.len() == routes.len() {
        format!(
            "All providers for model '{}' are cooling down after failures",
            model.name
        )
    } else {
        format!("All providers for model '{}' failed", model.name)
    };
    if let Some(last) = last {
        message.push_str("; last failure: ");
        message.push_str(&last);
    }
    let mut err = ProxyError::unavailable(message);
    // Retry-After when nothing can be tried right now: the earliest return.
    let mut soonest: Option<Duration> = None;
    for r in routes {
        match app.health.status(r.provider).available_in {
            Some(d) => soonest = Some(soonest.map_or(d, |s| s.min(d))),
            None => return err,
        }
    }
    if let Some(d) = soonest {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        err = err.with_retry_after(secs.max(1));
    }
    err
}
