//! Azure OpenAI: the OpenAI wire format, with the deployment (the route's
//! `model_id`) in the path (`/openai/deployments/{id}/chat/completions`,
//! `…/completions`, `…/embeddings`), `api-version` in the query and the key in an
//! `api-key` header. Streams pass through as they come, including Azure's
//! leading chunk with empty `choices` (prompt filter results).

use super::Upstream;
use super::openai::OpenAi;
use crate::config::ProviderConfig;

pub fn new(up: Upstream, cfg: &ProviderConfig) -> OpenAi {
    let prefix = format!("{}/openai/deployments/", up.base_url);
    let version = cfg.api_version.as_deref().unwrap_or_default();
    let suffix = format!("?api-version={version}");
    OpenAi::with_model_in_path(up, prefix, suffix, "api-key")
}
