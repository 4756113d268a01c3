//! Azure OpenAI: the OpenAI wire format, with the deployment (the route's
//! `model_id`) in the path (`/openai/deployments/{id}/chat/completions`,
//! `…/completions`, `…/embeddings`), `api-version` in the query and the key in an
//! `api-key` header. Streams pass through as they come, including Azure's
//! leading chunk with empty `choices` (prompt filter results).
//! `/v1/responses` (native) goes to the v1 API, `{base_url}/openai/v1/responses`,
//! with the deployment in the body's `model` and no `api-version`.

use percent_encoding::utf8_percent_encode;

use super::Upstream;
use super::openai::{OpenAi, PATH_SEGMENT};
use crate::config::ResponsesMode;

/// `api_version` comes from [`crate::config::ProviderKind::Azure`].
pub fn new(up: Upstream, api_version: &str, responses: ResponsesMode) -> OpenAi {
    let prefix = format!("{}/openai/deployments/", up.base_url);
    // Encoded like the deployment: a value from the config must not add a
    // query parameter or a fragment, or make the URL invalid.
    let version = utf8_percent_encode(api_version, PATH_SEGMENT);
    let suffix = format!("?api-version={version}");
    let responses_url = format!("{}/openai/v1/responses", up.base_url);
    OpenAi::with_model_in_path(up, prefix, suffix, "api-key", responses, responses_url)
}
