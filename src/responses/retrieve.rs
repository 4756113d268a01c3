//! `GET /v1/responses/{id}`: a stored response, from the native provider
//! that stored it. The proxy stores nothing, and a response id names no
//! model and no provider, so the rule is a lookup:
//!
//! 1. The candidates: with `?model=NAME`, that model's native providers in
//!    priority order (403/404 for the model as for `POST`); without it,
//!    every native provider of a model the client key may use, once each,
//!    in config order.
//! 2. Each is asked `GET {responses_url}/{id}` with its own key, the query
//!    forwarded without `model`. `stream=true` is refused (400).
//! 3. The first answer that is not 404 is the answer: a 200 body unchanged,
//!    an error normalised as for `POST`. A provider that cannot be reached
//!    is skipped; if none had the response and one could not be asked, the
//!    answer is 502 (the response may be there), else 404
//!    `response_not_found`.
//! 4. Breakers are neither consulted nor updated: it is a lookup, and 404
//!    is the expected answer of every provider but one.

use percent_encoding::percent_decode_str;
use serde::Deserialize;

use crate::app::App;
use crate::error::{ErrorKind, ProviderError, ProxyError, truncate};
use crate::providers::Upstream;

/// Longest response id looked up (OpenAI's are `resp_` and 48 hex digits).
const MAX_ID: usize = 256;

/// Look `id` up for a client that may use the models `allows` accepts.
/// `query` is the request's query string (without `?`), `model=NAME`
/// included if sent. `Ok((body, provider, attempts))`: the 200 body to
/// send unchanged, the provider that answered, the number of upstream
/// calls made. An upstream's error names its provider in the body.
pub fn retrieve(
    app: &App,
    allows: &dyn Fn(&str) -> bool,
    id: &str,
    query: &str,
) -> Result<(Vec<u8>, Option<String>, u32), ProxyError> {
    // The id becomes a path segment upstream: nothing that could add a
    // segment, a query or a traversal gets there.
    let id_ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !id_ok {
        return Err(ProxyError::bad_request(format!(
            "Invalid response id '{}': expected letters, digits, '_' and '-'",
            truncate(id, 64)
        ))
        .with_param("response_id"));
    }
    let (model, forwarded) = split_query(query)?;
    let mut candidates: Vec<usize> = Vec::new();
    match &model {
        Some(name) => {
            // Before the lookup: a 403 says nothing about which models exist.
            if !allows(name) {
                return Err(crate::auth::model_not_allowed(name));
            }
            let Some(m) = app.config.models.get(name) else {
                return Err(ProxyError::model_not_found(name));
            };
            for r in &m.routes {
                if app.providers[r.provider].responses_native() && !candidates.contains(&r.provider)
                {
                    candidates.push(r.provider);
                }
            }
        }
        None => {
            for (i, p) in app.providers.iter().enumerate() {
                let used = app
                    .config
                    .models
                    .values()
                    .any(|m| allows(&m.name) && m.routes.iter().any(|r| r.provider == i));
                if used && p.responses_native() {
                    candidates.push(i);
                }
            }
        }
    }
    if candidates.is_empty() {
        return Err(not_found(
            "No native Responses provider can be asked for this response: responses are stored \
             only by native providers; this proxy stores nothing",
        ));
    }
    let mut attempts = 0u32;
    let mut unreachable: Vec<String> = Vec::new();
    for i in candidates {
        let name = &app.config.providers[i].name;
        attempts = attempts.saturating_add(1);
        match app.providers[i].retrieve_response(id, &forwarded) {
            Ok(body) => return Ok((body, Some(name.clone()), attempts)),
            Err(ProviderError::Status { status: 404, .. }) => {}
            Err(ProviderError::Status { status, error, .. }) => {
                return Err(ProxyError::from_upstream(name, status, &error));
            }
            Err(e) => {
                log::warn!("provider {name} could not be asked for a stored response: {e}");
                unreachable.push(format!("provider {name}: {e}"));
            }
        }
    }
    if unreachable.is_empty() {
        Err(not_found(&format!(
            "No response with id '{id}' was found by any native provider"
        )))
    } else {
        // The response may be at a provider that could not be asked.
        Err(ProxyError::new(
            ErrorKind::Unavailable,
            format!(
                "No provider that answered has response '{id}', and some could not be asked: {}",
                unreachable.join("; ")
            ),
        )
        .with_status(502))
    }
}

/// Just enough of a stored response to know the body is one.
#[derive(Deserialize)]
struct ResponseProbe {
    object: String,
}

/// `GET {url}/{id}?{query}` on one provider (`url` is its Responses URL),
/// with its auth: the 200 body, once it is a `response` object.
pub fn fetch(up: &Upstream, url: &str, id: &str, query: &str) -> Result<Vec<u8>, ProviderError> {
    let url = if query.is_empty() {
        format!("{url}/{id}")
    } else {
        format!("{url}/{id}?{query}")
    };
    let resp = up.get(&url, &up.auth_headers())?;
    let bytes = up.read_body(resp)?;
    let is_response = std::str::from_utf8(&bytes).is_ok()
        && serde_json::from_slice::<ResponseProbe>(&bytes).is_ok_and(|p| p.object == "response");
    if !is_response {
        return Err(up.decode_error("expected a response object", &bytes));
    }
    Ok(bytes)
}

fn not_found(message: &str) -> ProxyError {
    ProxyError::new(ErrorKind::ResponseNotFound, message).with_param("response_id")
}

/// `model` (decoded) and the rest of the query, to forward as it came.
/// `stream=true` is refused: a stored response is not replayed as events.
fn split_query(query: &str) -> Result<(Option<String>, String), ProxyError> {
    let mut model = None;
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        // Forwarded into the upstream URL: only what a query may hold.
        let valid = pair
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$'()*+,;=:@/?%[]".contains(&b));
        if !valid {
            return Err(ProxyError::bad_request(
                "Invalid query string: it holds characters a URL may not",
            )
            .with_param("query"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        match decode(k).as_str() {
            "model" => model = Some(decode(v)),
            "stream" if decode(v).eq_ignore_ascii_case("true") => {
                return Err(ProxyError::bad_request(
                    "stream=true is not supported for GET /v1/responses/{id}: the proxy returns \
                     the stored response as JSON",
                )
                .with_param("stream"));
            }
            _ => rest.push(pair),
        }
    }
    Ok((model, rest.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_model_is_taken_out_and_the_rest_forwarded_as_sent() {
        let (m, rest) = split_query("include[]=a%20b&model=gpt%2D4o&stream=false").unwrap();
        assert_eq!(m.as_deref(), Some("gpt-4o"));
        assert_eq!(rest, "include[]=a%20b&stream=false");
        assert_eq!(split_query("").unwrap(), (None, String::new()));
        assert_eq!(
            split_query("stream=TRUE").unwrap_err().param.as_deref(),
            Some("stream")
        );
        for bad in ["a=b c", "a=\"x\"", "a=<x>", "x=\u{e9}", "a=b#c", "a=\\"] {
            assert_eq!(
                split_query(bad).unwrap_err().param.as_deref(),
                Some("query"),
                "{bad:?}"
            );
        }
    }
}
