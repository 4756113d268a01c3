//! Azure OpenAI: the OpenAI wire format, with the deployment (the route's
//! `model_id`) in the path, `api-version` in the query and the key in an
//! `api-key` header. Streams pass through as they come, including Azure's
//! leading chunk with empty `choices` (prompt filter results).

use super::Upstream;
use super::openai::OpenAi;

/// `api_version` comes from [`crate::config::ProviderKind::Azure`].
pub fn new(up: Upstream, api_version: &str) -> OpenAi {
    let prefix = format!("{}/openai/deployments/", up.base_url);
    let suffix = format!("/chat/completions?api-version={api_version}");
    OpenAi::with_model_in_path(up, prefix, suffix, "api-key")
}
