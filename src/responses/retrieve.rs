//! `GET /v1/responses/{id}`: only providers with native Responses store
//! responses (the proxy stores nothing), so the lookup goes to them.
//!
//! PLACEHOLDER (core): the native slice replaces this file whole, keeping
//! both signatures ([`retrieve`] is called by `routes.rs`, [`fetch`] by
//! `OpenAi::retrieve_response`). Until then every call answers 501 /
//! `not_implemented`.

use crate::app::App;
use crate::error::{ErrorKind, ProviderError, ProxyError};
use crate::providers::Upstream;

/// Look `id` up for a client that may use the models `allows` accepts.
/// `query` is the request's query string (without `?`), `model=NAME`
/// included if sent. `Ok((body, provider, attempts))`: the 200 body to
/// send unchanged, the provider that answered, the number of upstream
/// calls made.
pub fn retrieve(
    app: &App,
    allows: &dyn Fn(&str) -> bool,
    id: &str,
    query: &str,
) -> Result<(Vec<u8>, Option<String>, u32), ProxyError> {
    let _ = (app, allows, id, query);
    Err(ProxyError::new(
        ErrorKind::Internal,
        "GET /v1/responses/{id} is not implemented in this build",
    )
    .with_status(501))
}

/// `GET {url}/{id}?{query}` on one provider (`url` is its Responses URL),
/// with its auth (`up.auth_headers()`).
pub fn fetch(up: &Upstream, url: &str, id: &str, query: &str) -> Result<Vec<u8>, ProviderError> {
    let _ = (up, url, id, query);
    Err(super::not_yet("GET /v1/responses/{id}"))
}
