//! Failover across a model's providers: priority order, by weight inside a
//! priority, skip what the breaker keeps out, count what fails, stop at the
//! first answer, at the model's `request_timeout`, or when the client leaves.

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
use fastrand::Rng;

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
    let routes = attempt_order(
        model,
        |r| app.providers[r.provider].serves(req.endpoint),
        &mut Rng::new(),
    );
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

    // Routes in the order drawn above. One refused only because enough requests
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
            match relay::open(
                provider.as_ref(),
                pcfg,
                req,
                &route.model_id,
                started,
                app.config.server.max_body_bytes,
            ) {
                // Success for the breaker is decided when the stream ends.
                Ok(opened) => {
                    let answered = Answered {
                        request_id,
                        provider: &pcfg.name,
                        started,
                    };
                    answered.done(&mut trace, app, route.provider, mi, "(stream, first event)");
                    app.health.answered(&mut permit);
                    return (Ok(Answer::Stream { opened, permit }), trace);
                }
                Err(e) => e,
            }
        } else {
            match provider.complete(req, &route.model_id) {
                Ok(body) => {
                    let answered = Answered {
                        request_id,
                        provider: &pcfg.name,
                        started,
                    };
                    answered.done(&mut trace, app, route.provider, mi, "200");
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
        if let ProviderError::Refused { error } = &attempt {
            attempt_done(
                &mut trace,
                app,
                route.provider,
                mi,
                Outcome::ClientError,
                took,
            );
            // No upstream was asked: the permit goes back without a
            // verdict, so a refusal neither forgets a failure nor closes a
            // half-open breaker.
            drop(permit);
            let err = ProxyError::from_upstream(&pcfg.name, 400, error);
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
                // The breaker's own, which a reload may have changed since
                // this request started.
                format!(
                    "; breaker open for {} s",
                    app.health.settings(route.provider).cooldown.as_secs_f64()
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

/// The order one request tries a model's routes, leaving out those `usable`
/// refuses: tiers in priority order; inside a tier, the weighted routes by
/// weighted sampling without replacement (each next pick among the routes
/// not yet picked, in proportion to weight), then the tier's `weight: 0`
/// spares in config order.
///
/// Breakers are not looked at here: the caller skips a provider that is
/// out when it comes to it. That keeps the shares right among the routes
/// that are in: in an order drawn this way, the first of any subset of the
/// tier is that subset's route `i` with probability `w_i / sum(w)` over the
/// subset.
pub(crate) fn attempt_order<'m>(
    model: &'m ModelConfig,
    usable: impl Fn(&Route) -> bool,
    rng: &mut Rng,
) -> Vec<&'m Route> {
    let mut order = Vec::with_capacity(model.routes.len());
    for tier in &model.tiers {
        let routes = model.tier(tier);
        // The tier's weighted routes, then drawn in place: each step swaps
        // its pick among the routes not yet picked into the next slot.
        let start = order.len();
        order.extend(routes.iter().filter(|r| r.weight > 0 && usable(r)));
        // At most routes x 1,000,000 (the config's bound): no overflow.
        let mut total: u64 = order[start..].iter().map(|r| u64::from(r.weight)).sum();
        for next in start..order.len().saturating_sub(1) {
            let mut ticket = rng.u64(0..total);
            let picked = order[next..]
                .iter()
                .position(|r| match ticket.checked_sub(u64::from(r.weight)) {
                    Some(rest) => {
                        ticket = rest;
                        false
                    }
                    None => true,
                })
                .map_or(order.len() - 1, |i| next + i);
            order.swap(next, picked);
            total -= u64::from(order[next].weight);
        }
        order.extend(routes.iter().filter(|r| r.weight == 0 && usable(r)));
    }
    order
}

/// An attempt that answered: counted and logged the same for JSON and
/// streams.
struct Answered<'a> {
    request_id: &'a str,
    provider: &'a str,
    started: Instant,
}

impl Answered<'_> {
    fn done(&self, trace: &mut Trace, app: &App, provider: usize, model: usize, what: &str) {
        let took = self.started.elapsed();
        attempt_done(trace, app, provider, model, Outcome::Success, took);
        log::debug!(
            "{} attempt {} provider {} answered {what} after {:.1} ms",
            self.request_id,
            trace.attempts,
            self.provider,
            took.as_secs_f64() * 1000.0
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose route `i` is provider `i`, with these
    /// `(priority, weight)` pairs, in this (config) order.
    fn model(routes: &[(u32, u32)]) -> ModelConfig {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(provider, &(priority, weight))| Route {
                provider,
                priority,
                weight,
                model_id: "m".into(),
            })
            .collect();
        ModelConfig::new("m".into(), routes)
    }

    fn order(m: &ModelConfig, rng: &mut Rng) -> Vec<usize> {
        attempt_order(m, |_| true, rng)
            .iter()
            .map(|r| r.provider)
            .collect()
    }

    const PICKS: usize = 10_000;

    /// How often each provider comes first over `PICKS` orders, as a
    /// percentage, among the routes `usable` keeps.
    fn first_shares(m: &ModelConfig, usable: impl Fn(&Route) -> bool, seed: u64) -> Vec<f64> {
        let mut rng = Rng::with_seed(seed);
        let mut counts = vec![0usize; m.routes.len()];
        for _ in 0..PICKS {
            let o = attempt_order(m, &usable, &mut rng);
            counts[o[0].provider] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 * 100.0 / PICKS as f64)
            .collect()
    }

    fn assert_near(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 2.0, "shares {got:?}, expected {want:?}");
        }
    }

    #[test]
    fn first_picks_follow_the_weights() {
        for seed in [1, 2, 3] {
            assert_near(
                &first_shares(&model(&[(0, 3), (0, 1)]), |_| true, seed),
                &[75.0, 25.0],
            );
            assert_near(
                &first_shares(&model(&[(0, 5), (0, 3), (0, 2), (1, 7)]), |_| true, seed),
                &[50.0, 30.0, 20.0, 0.0],
            );
            // The migration steps: 10% and 50% to the new provider.
            assert_near(
                &first_shares(&model(&[(0, 9), (0, 1)]), |_| true, seed),
                &[90.0, 10.0],
            );
            assert_near(
                &first_shares(&model(&[(0, 1), (0, 1)]), |_| true, seed),
                &[50.0, 50.0],
            );
        }
    }

    #[test]
    fn a_provider_left_out_leaves_the_others_their_relative_shares() {
        // Left out by `usable`, or skipped by the router when its breaker
        // is open (the first of the others in the drawn order): either way
        // 3:2 between the two left.
        let m = model(&[(0, 5), (0, 3), (0, 2)]);
        assert_near(
            &first_shares(&m, |r| r.provider != 0, 7),
            &[0.0, 60.0, 40.0],
        );
        let mut rng = Rng::with_seed(7);
        let mut counts = [0usize; 3];
        for _ in 0..PICKS {
            let first_in = order(&m, &mut rng).into_iter().find(|&p| p != 0).unwrap();
            counts[first_in] += 1;
        }
        let shares: Vec<f64> = counts
            .iter()
            .map(|&c| c as f64 * 100.0 / PICKS as f64)
            .collect();
        assert_near(&shares, &[0.0, 60.0, 40.0]);
    }

    #[test]
    fn every_route_once_tiers_in_priority_order() {
        // Config order mixes the tiers; the order never does.
        let m = model(&[(2, 1), (0, 4), (1, 1), (0, 1), (1, 2), (0, 0), (2, 1)]);
        let tier_of = |p: usize| m.routes.iter().find(|r| r.provider == p).unwrap().priority;
        let mut rng = Rng::with_seed(42);
        let mut seen_orders = std::collections::HashSet::new();
        for _ in 0..1000 {
            let o = order(&m, &mut rng);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                [0, 1, 2, 3, 4, 5, 6],
                "each route exactly once: {o:?}"
            );
            let tiers: Vec<u32> = o.iter().map(|&p| tier_of(p)).collect();
            assert!(tiers.is_sorted(), "tiers out of order: {o:?}");
            // The spare (5) closes tier 0.
            assert_eq!(o[2], 5, "{o:?}");
            seen_orders.insert(o);
        }
        // Both orders of every two-route tier happen.
        assert_eq!(seen_orders.len(), 2 * 2 * 2, "{seen_orders:?}");
    }

    #[test]
    fn later_picks_are_by_weight_among_the_rest() {
        // Given `a` first, `b` comes next 3 times in 5 (3:2 against `c`).
        let m = model(&[(0, 5), (0, 3), (0, 2)]);
        let mut rng = Rng::with_seed(9);
        let (mut a_first, mut then_b) = (0usize, 0usize);
        while a_first < PICKS {
            let o = order(&m, &mut rng);
            if o[0] == 0 {
                a_first += 1;
                then_b += usize::from(o[1] == 1);
            }
        }
        let share = then_b as f64 * 100.0 / PICKS as f64;
        assert!((share - 60.0).abs() <= 2.0, "{share}");
    }

    #[test]
    fn spares_come_after_the_weighted_routes_of_their_tier_in_config_order() {
        let m = model(&[(0, 0), (0, 1), (0, 0), (0, 1), (1, 1)]);
        let mut rng = Rng::with_seed(3);
        for _ in 0..200 {
            let o = order(&m, &mut rng);
            assert!(matches!(o[..2], [1, 3] | [3, 1]), "{o:?}");
            assert_eq!(o[2..], [0, 2, 4], "{o:?}");
        }
        // A tier of spares only: config order, which is a strict failover.
        let m = model(&[(0, 0), (0, 0), (0, 0)]);
        assert_eq!(order(&m, &mut rng), [0, 1, 2]);
        // A spare that cannot serve is left out like any other route.
        let m = model(&[(0, 1), (0, 0)]);
        let o = attempt_order(&m, |r| r.provider != 1, &mut rng);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].provider, 0);
    }

    #[test]
    fn the_largest_weights_do_not_overflow() {
        let w = crate::config::defaults::MAX_WEIGHT;
        let m = model(&[(0, w); 64]);
        let mut rng = Rng::with_seed(5);
        assert_eq!(order(&m, &mut rng).len(), 64);
    }
}
