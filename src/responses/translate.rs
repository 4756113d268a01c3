//! Responses on a provider without a native Responses API (`anthropic`, and
//! `openai` with `responses: translate`): the request becomes a Chat
//! Completions request ([`super::request::to_chat`]) sent through the same
//! provider's own chat path, and the answer comes back as a `Response`
//! ([`super::answer::from_chat`]) or a Responses event stream
//! ([`super::stream::ChatToResponses`]). Anthropic goes via chat too (design
//! §2.1): its chat translation already handles system hoisting, role
//! merging, tool ids and the stream's commit rules.

use serde_json::Value;

use super::answer::from_chat;
use super::request::to_chat;
use super::stream::ChatToResponses;
use crate::error::ProviderError;
use crate::openai::ApiRequest;
use crate::providers::{ChatStream, Provider};

/// What the chat request is for: the rules differ where the Anthropic
/// translation would refuse or drop what plain Chat Completions accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An OpenAI-compatible Chat Completions upstream.
    Chat,
    /// Anthropic Messages, through the provider's chat translation.
    Anthropic,
}

/// A non-streaming Responses answer from `p`'s chat path.
pub fn complete(
    p: &dyn Provider,
    req: &ApiRequest,
    model_id: &str,
    target: Target,
) -> Result<Vec<u8>, ProviderError> {
    let created_at = super::unix_now();
    let chat_req = to_chat(req, target)?;
    let body = p.complete(&chat_req, model_id)?;
    // The provider checked it is a chat.completion (OpenAI) or built it
    // (Anthropic); a body that does not parse is a decode failure.
    let chat: Value = serde_json::from_slice(&body)
        .map_err(|e| ProviderError::Decode(format!("the chat answer is not JSON: {e}")))?;
    let out = from_chat(&chat, req, &super::hex128(), created_at, super::unix_now());
    Ok(serde_json::to_vec(&out).expect("a JSON value always serializes"))
}

/// A streaming Responses answer from `p`'s chat stream.
pub fn stream<'a>(
    p: &'a dyn Provider,
    req: &ApiRequest,
    model_id: &str,
    target: Target,
) -> Result<Box<dyn ChatStream + 'a>, ProviderError> {
    let created_at = super::unix_now();
    let chat_req = to_chat(req, target)?;
    let inner = p.stream(&chat_req, model_id)?;
    Ok(Box::new(ChatToResponses::new(
        inner,
        req,
        super::hex128(),
        created_at,
    )))
}

/// The spec validator of the integration tests, for the unit tests of the
/// translation (every `Response` and event they produce is checked).
#[cfg(test)]
#[path = "../../tests/support/spec.rs"]
pub(crate) mod spec;
