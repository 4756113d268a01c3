//! `(method, path)` → [`Route`], parsed once and matched exhaustively, and
//! the handlers: read the request, hand it to the router, write the answer
//! through [`crate::http`] (streams through [`crate::relay`]).

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;
use tiny_http::{Method, Request};

use crate::app::App;
use crate::auth::Client;
use crate::error::ProxyError;
use crate::http::{self, BodyState, Headers};
use crate::metrics::{Ep, Usage};
use crate::openai::{ApiRequest, Endpoint};
use crate::relay::{self, StreamEnd};
use crate::router::{self, Answer};

/// What the access log line reports about one request.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: u16,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub attempts: u32,
    /// For streams: how the stream ended.
    pub stream: Option<StreamEnd>,
    /// The client key's name, when `auth` is set and the key was valid.
    pub key: Option<String>,
    /// The `endpoint` label of `/metrics`.
    pub endpoint: Option<Ep>,
    /// The index of `provider` in the config.
    pub provider_index: Option<usize>,
    /// Time spent waiting on upstreams.
    pub upstream: Duration,
    /// For streams: when the response head and first events were written.
    pub first_byte: Option<Duration>,
    /// The tokens the upstream reported.
    pub usage: Option<Usage>,
}

impl Outcome {
    fn status(status: u16) -> Outcome {
        Outcome {
            status,
            ..Outcome::default()
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health` (liveness)
    Health,
    /// `GET /health/ready` (readiness: 503 once draining)
    Ready,
    /// `GET /v1/models`
    Models,
    /// `GET /v1/models/{id}`
    Model(String),
    /// `GET /metrics` (Prometheus)
    Metrics,
    /// `POST` to an endpoint routed to providers.
    Api(Endpoint),
    /// `GET /v1/responses/{id}`: a stored response, from the providers with
    /// native Responses (the proxy stores nothing).
    Response(String),
    /// `/admin/...` (see [`crate::admin`]).
    Admin(crate::admin::Request),
    /// No such path.
    NotFound,
    /// The path exists for the methods in `allow`.
    MethodNotAllowed { allow: &'static str },
}

/// The methods a route answers, as its `Allow` header lists them.
const GET: &str = "GET, HEAD";
const POST: &str = "POST";

impl Route {
    pub fn parse(method: &Method, path: &str) -> Route {
        let (allow, route) = match path {
            "/health" => (GET, Route::Health),
            "/health/ready" => (GET, Route::Ready),
            "/v1/models" => (GET, Route::Models),
            "/metrics" => (GET, Route::Metrics),
            p if p.starts_with("/admin/") => match crate::admin::parse(p) {
                Some((allow, request)) => (allow, Route::Admin(request)),
                None => return Route::NotFound,
            },
            p => match (Endpoint::from_client_path(p), p.strip_prefix("/v1/models/")) {
                (Some(endpoint), _) => (POST, Route::Api(endpoint)),
                (None, Some(id)) => (GET, Route::Model(id.to_string())),
                (None, None) => match p.strip_prefix("/v1/responses/") {
                    // `/cancel`, `/input_items` and the like are not relayed.
                    Some(id) if !id.is_empty() && !id.contains('/') => {
                        (GET, Route::Response(id.to_string()))
                    }
                    _ => return Route::NotFound,
                },
            },
        };
        if allow.split(", ").any(|m| m == method.as_str()) {
            route
        } else {
            Route::MethodNotAllowed { allow }
        }
    }
}

/// The request being answered. `slot` holds it until it is answered; if the
/// handler panics first, the caller still has it and can answer 500.
struct Exchange<'s> {
    slot: &'s mut Option<Box<Request>>,
    rid: &'s str,
    /// Sent with every answer to the request: the client key's
    /// `x-ratelimit-*` headers, once it is admitted.
    limits: Headers,
}

impl Exchange<'_> {
    fn headers(&self) -> Headers {
        let mut h = vec![("x-request-id", self.rid.to_string())];
        h.extend(self.limits.iter().cloned());
        h
    }

    /// The request, to answer it: the one place it leaves the slot.
    fn take(&mut self) -> Option<Box<Request>> {
        let req = self.slot.take();
        if req.is_none() {
            log::error!("{} answered twice", self.rid);
        }
        req
    }

    fn json(&mut self, status: u16, headers: Headers, body: &[u8], close: bool) -> Outcome {
        if let Some(req) = self.take() {
            http::send(req, status, headers, body, close, BodyState::Read, None);
        }
        Outcome::status(status)
    }

    fn error(
        &mut self,
        err: &ProxyError,
        headers: Headers,
        close: bool,
        state: BodyState,
    ) -> Outcome {
        if let Some(req) = self.take() {
            http::send_error(req, err, headers, close, state);
        }
        Outcome::status(err.status)
    }
}

/// Handle one request.
pub fn dispatch(
    app: &App,
    slot: &mut Option<Box<Request>>,
    rid: &str,
    started: Instant,
) -> Outcome {
    let Some(req) = slot.as_ref() else {
        return Outcome::status(500);
    };
    let (path, query) = match req.url().split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (req.url().to_string(), String::new()),
    };
    let method = req.method().clone();
    if let Some(hook) = &app.hook {
        hook(&path);
    }
    let route = Route::parse(&method, &path);
    let endpoint = Some(route.endpoint(&path));
    let peer = req
        .remote_addr()
        .copied()
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    // Every route but the health checks needs a client key when `auth` is
    // set, checked before 404 and 405 so that a caller without one learns
    // nothing about which paths exist.
    let client = match route {
        Route::Health | Route::Ready => Ok(None),
        _ => app
            .auth
            .authenticate(crate::auth::authorization(req))
            .map(Some),
    };
    let mut ex = Exchange {
        slot,
        rid,
        limits: Vec::new(),
    };
    let client = match client {
        Ok(c) => c,
        Err(err) => {
            let h = ex.headers();
            let mut outcome = ex.error(&err, h, false, BodyState::Unread);
            outcome.endpoint = endpoint;
            return outcome;
        }
    };
    let key = client.as_ref().and_then(|c| c.name()).map(str::to_string);
    let call = Call {
        method: &method,
        path: &path,
        query: &query,
        peer,
        started,
    };
    let mut outcome = answer(app, ex, route, client.as_ref(), &call);
    outcome.key = key;
    outcome.endpoint = endpoint;
    outcome
}

/// What the handlers need to know about the request besides its route.
struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    /// After `?`, empty if none.
    query: &'a str,
    peer: std::net::SocketAddr,
    started: Instant,
}

impl Route {
    /// The `endpoint` label of `/metrics` for this route.
    fn endpoint(&self, path: &str) -> Ep {
        match self {
            Route::Api(e) => Ep::of(*e),
            Route::Response(_) => Ep::Responses,
            Route::Models | Route::Model(_) => Ep::Models,
            Route::Health | Route::Ready => Ep::Health,
            Route::Metrics => Ep::Metrics,
            _ if path.starts_with("/admin/") => Ep::Admin,
            _ => Ep::Other,
        }
    }
}

/// Answer a request whose caller is known (`client` is `None` only for the
/// health checks).
fn answer(
    app: &App,
    mut ex: Exchange<'_>,
    route: Route,
    client: Option<&Client<'_>>,
    call: &Call<'_>,
) -> Outcome {
    let (method, path, started) = (call.method, call.path, call.started);
    // A request to a route that exists counts against the key's limits
    // (429 when over). The admission holds a `max_concurrent` slot until
    // the answer, a stream included, has ended.
    let counted = !matches!(
        route,
        Route::Health | Route::Ready | Route::NotFound | Route::MethodNotAllowed { .. }
    );
    let _admission = match client.filter(|_| counted) {
        None => None,
        Some(c) => match c.admit(Instant::now()) {
            Ok(a) => {
                ex.limits = a.headers.clone();
                Some(a)
            }
            Err(refused) => {
                let mut h = ex.headers();
                h.extend(refused.headers);
                return ex.error(&refused.error, h, false, BodyState::Unread);
            }
        },
    };
    let allows = |m: &str| client.is_none_or(|c| c.allows(m));
    let base = ex.headers();
    match route {
        Route::Health | Route::Ready => {
            let (status, body) = crate::lifecycle::health(path, &app.phase);
            let mut h = base;
            h.push(("Cache-Control", "no-store".into()));
            ex.json(status, h, body, false)
        }
        Route::Models => {
            let data: Vec<_> = app
                .config
                .models
                .keys()
                .filter(|m| allows(m))
                .map(|m| model_json(app, m))
                .collect();
            let body = json!({ "object": "list", "data": data });
            ex.json(200, base, body.to_string().as_bytes(), false)
        }
        // Before the lookup: a 403 says nothing about which models exist.
        Route::Model(id) if !allows(&id) => ex.error(
            &crate::auth::model_not_allowed(&id),
            base,
            false,
            BodyState::Read,
        ),
        Route::Model(id) if app.config.models.contains_key(&id) => ex.json(
            200,
            base,
            model_json(app, &id).to_string().as_bytes(),
            false,
        ),
        Route::Model(id) => ex.error(
            &ProxyError::model_not_found(&id),
            base,
            false,
            BodyState::Read,
        ),
        Route::Metrics => match crate::metrics::operator_access(
            app,
            client,
            Some(call.peer),
            app.config.server.metrics_public,
        ) {
            Ok(()) => {
                let body = app.metrics.render(app);
                if let Some(req) = ex.take() {
                    http::send_metrics(req, base, body.as_bytes());
                }
                Outcome::status(200)
            }
            Err(err) => ex.error(&err, base, false, BodyState::Unread),
        },
        Route::Api(endpoint) => api(app, ex, endpoint, &allows, started),
        Route::Response(id) => retrieve(app, ex, &id, call.query, &allows),
        Route::Admin(request) => {
            let peer = ex.slot.as_ref().and_then(|r| r.remote_addr().copied());
            let open = crate::auth::Client::Open;
            let caller = client.unwrap_or(&open);
            let mut h = base;
            h.push(("Cache-Control", "no-store".into()));
            // The body of an admin POST is not read: nothing in it is used.
            match crate::admin::handle(app, &request, caller, peer, ex.rid) {
                Ok(body) => {
                    let body = body.to_string();
                    match ex.take() {
                        Some(req) => {
                            http::send(req, 200, h, body.as_bytes(), false, BodyState::Unread, None)
                        }
                        None => return Outcome::status(500),
                    }
                    Outcome::status(200)
                }
                Err(err) => ex.error(&err, h, false, BodyState::Unread),
            }
        }
        Route::NotFound => {
            let err = ProxyError::no_route(method.as_str(), path);
            ex.error(&err, base, false, BodyState::Unread)
        }
        Route::MethodNotAllowed { allow } => {
            let err = ProxyError::method_not_allowed(method.as_str(), path, allow);
            let mut h = base;
            h.push(("Allow", allow.to_string()));
            ex.error(&err, h, false, BodyState::Unread)
        }
    }
}

fn model_json(app: &App, id: &str) -> serde_json::Value {
    json!({ "id": id, "object": "model", "created": app.created, "owned_by": "llm-proxy" })
}

/// Read the body, up to `max_body_bytes`; `Err` is the status of the
/// answer already sent.
fn read_body(app: &App, ex: &mut Exchange<'_>) -> Result<Vec<u8>, u16> {
    let limit = app.config.server.max_body_bytes;
    let Some(req) = ex.slot.as_mut() else {
        return Err(500);
    };
    // Refuse an oversized body before reading any of it.
    if req.body_length().is_some_and(|n| n as u64 > limit) {
        let h = ex.headers();
        return Err(ex
            .error(&ProxyError::too_large(limit), h, false, BodyState::Unread)
            .status);
    }
    let mut body = Vec::with_capacity(req.body_length().unwrap_or(0).min(1 << 20));
    if let Err(e) = req.as_reader().take(limit + 1).read_to_end(&mut body) {
        // Most often the client stalled past client_timeout.
        log::info!("{} could not read the request body: {e}", ex.rid);
        let err = ProxyError::new(
            crate::error::ErrorKind::BodyRead,
            format!("Could not read the request body: {e}"),
        );
        let h = ex.headers();
        return Err(ex.error(&err, h, true, BodyState::Read).status);
    }
    if body.len() as u64 > limit {
        // Chunked upload past the limit: stop reading and close.
        let h = ex.headers();
        return Err(ex
            .error(&ProxyError::too_large(limit), h, true, BodyState::Read)
            .status);
    }
    Ok(body)
}

/// `GET /v1/responses/{id}`: the lookup is `responses::retrieve`'s; the
/// answer has the same headers as a routed request's.
fn retrieve(
    app: &App,
    mut ex: Exchange<'_>,
    id: &str,
    query: &str,
    allows: &dyn Fn(&str) -> bool,
) -> Outcome {
    let mut headers = ex.headers();
    match crate::responses::retrieve::retrieve(app, allows, id, query) {
        Ok((body, provider, attempts)) => {
            if let Some(p) = &provider {
                headers.push(("x-llm-proxy-provider", p.clone()));
            }
            headers.push(("x-llm-proxy-attempts", attempts.to_string()));
            let mut outcome = ex.json(200, headers, &body, false);
            outcome.provider_index = provider
                .as_deref()
                .and_then(|p| app.config.providers.iter().position(|c| c.name == p));
            outcome.provider = provider;
            outcome.attempts = attempts;
            outcome
        }
        Err(err) => ex.error(&err, headers, false, BodyState::Unread),
    }
}

/// An endpoint routed to providers: the same for all of them.
fn api(
    app: &App,
    mut ex: Exchange<'_>,
    endpoint: Endpoint,
    allows: &dyn Fn(&str) -> bool,
    started: Instant,
) -> Outcome {
    let body = match read_body(app, &mut ex) {
        Ok(b) => b,
        Err(status) => return Outcome::status(status),
    };
    let request = match ApiRequest::parse(endpoint, &body) {
        Ok(r) => r,
        Err(err) => {
            let h = ex.headers();
            return ex.error(&err, h, false, BodyState::Read);
        }
    };
    drop(body);
    // Over `server.park_streams_over` requests in flight (see its default).
    if request.stream && app.metrics.in_flight() > app.config.server.park_streams_over {
        // The answer will take long: the connection's thread need not
        // read ahead for the client's next request meanwhile (vendored
        // tiny_http, patch 15); the connection comes back when the answer
        // ends, and the router's client-gone check peeks at it.
        if let Some(req) = ex.slot.as_ref() {
            req.park_connection();
        }
    }
    let mut outcome = Outcome {
        model: Some(request.model.clone()),
        ..Outcome::default()
    };
    // Before the lookup: a 403 says nothing about which models exist.
    if !allows(&request.model) {
        let h = ex.headers();
        let err = crate::auth::model_not_allowed(&request.model);
        outcome.status = ex.error(&err, h, false, BodyState::Read).status;
        return outcome;
    }
    let Some(model) = app.config.models.get(&request.model) else {
        let h = ex.headers();
        outcome.status = ex
            .error(
                &ProxyError::model_not_found(&request.model),
                h,
                false,
                BodyState::Read,
            )
            .status;
        return outcome;
    };

    // While the providers are tried, the connection's thread reads ahead
    // for a next request, which is how a client that left is noticed.
    let client = ex.slot.as_ref().map(|r| r.client_watch());
    // A stream keeps its connection too: the read-ahead waits while the
    // stream is written (vendored tiny_http, patch 12) and the client's
    // next request follows it on the same connection.
    let (result, trace) = router::route(app, model, &request, ex.rid, client);
    outcome.attempts = trace.attempts;
    outcome.provider = trace.provider.clone();
    outcome.provider_index = trace.provider_index;
    outcome.upstream = trace.upstream;
    let mut headers = ex.headers();
    if let Some(p) = &trace.provider {
        headers.push(("x-llm-proxy-provider", p.clone()));
    }
    headers.push(("x-llm-proxy-attempts", trace.attempts.to_string()));
    // tiny_http reads ahead for the next request on this connection and
    // gives up after client_timeout; after a long request, ask the client
    // not to reuse the connection rather than race that.
    let long = started.elapsed() * 2 > app.config.server.client_timeout;
    match result {
        Ok(Answer::Json(body)) => {
            outcome.usage = match endpoint {
                Endpoint::Responses => Usage::of_response(&body),
                Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings => {
                    Usage::of_body(&body)
                }
            };
            outcome.status = ex.json(200, headers, &body, long).status;
        }
        Ok(Answer::Stream { opened, permit }) => {
            // The stream may run for minutes; the parsed request (a
            // prompt of tens of KB for an agent) is not needed once it has
            // committed: at 1,000 streams it would be tens of MB.
            drop(request);
            outcome.status = 200;
            if let Some(req) = ex.take() {
                let provider = trace.provider.as_deref().unwrap_or("");
                let relay_started = Instant::now();
                outcome.first_byte = Some(relay_started - started);
                let relayed = relay::relay(app, req, headers, opened, permit, provider, ex.rid);
                // The relay waits on the upstream (and the client): not overhead.
                outcome.upstream = outcome.upstream.saturating_add(relay_started.elapsed());
                outcome.stream = Some(relayed.end);
                outcome.usage = relayed.usage;
            }
        }
        Err(err) => outcome.status = ex.error(&err, headers, long, BodyState::Read).status,
    }
    outcome
}
