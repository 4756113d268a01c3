//! Responses through a provider that speaks it (`responses: native`): the
//! body goes out with only `model` replaced, the answer and the events come
//! back unchanged; in-band errors before the first output event fail over.
//!
//! PLACEHOLDER (core): the native slice replaces this file whole. The
//! signatures are fixed (resp-common.md); until then every call answers
//! 501 `not_implemented`. `up.auth_headers()` gives the provider's auth
//! header (`Authorization: Bearer …` or Azure's `api-key`).

use crate::error::ProviderError;
use crate::openai::ApiRequest;
use crate::providers::{ChatStream, Upstream};

/// `POST url` (the provider's Responses URL) and the `Response` it answers.
pub fn complete(
    up: &Upstream,
    url: &str,
    req: &ApiRequest,
    model_id: &str,
) -> Result<Vec<u8>, ProviderError> {
    let _ = (up, url, req, model_id);
    Err(super::not_yet("Native Responses"))
}

/// `POST url` with `stream: true`, as Responses events.
pub fn stream<'a>(
    up: &'a Upstream,
    url: &str,
    req: &ApiRequest,
    model_id: &str,
) -> Result<Box<dyn ChatStream + 'a>, ProviderError> {
    let _ = (up, url, req, model_id);
    Err(super::not_yet("Native Responses"))
}
