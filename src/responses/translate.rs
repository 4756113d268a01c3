//! Responses through a provider that does not speak it: the request is
//! translated to Chat Completions (`Target::Chat` for an OpenAI-compatible
//! upstream, `Target::Anthropic` for Anthropic, whose provider translates
//! the chat request on), and the answer back into a `Response` or a
//! Responses event stream.
//!
//! PLACEHOLDER (core): the translate slice replaces this file whole. The
//! signatures are fixed (resp-common.md); until then every call answers
//! 501 `not_implemented`.

use crate::error::ProviderError;
use crate::openai::ApiRequest;
use crate::providers::{ChatStream, Provider};

/// What the chat request is shaped for: `Anthropic` adds the checks that
/// the Anthropic translation would refuse, so that the client sees
/// Responses paths (`input[2]…`) in a 400 rather than chat ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Chat,
    Anthropic,
}

/// A `Response` (JSON) from `p`, called with a chat request.
pub fn complete(
    p: &dyn Provider,
    req: &ApiRequest,
    model_id: &str,
    target: Target,
) -> Result<Vec<u8>, ProviderError> {
    let _ = (p, req, model_id, target);
    Err(super::not_yet("Responses translation"))
}

/// A Responses event stream from `p`'s chat stream.
pub fn stream<'a>(
    p: &'a dyn Provider,
    req: &ApiRequest,
    model_id: &str,
    target: Target,
) -> Result<Box<dyn ChatStream + 'a>, ProviderError> {
    let _ = (p, req, model_id, target);
    Err(super::not_yet("Responses translation"))
}
