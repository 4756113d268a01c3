//! OpenAI and every OpenAI-compatible server (Azure OpenAI included): the request goes out as the
//! client sent it (with `model` replaced), the answer comes back unchanged
//! once it has been checked to be what the API promises.

use std::io::BufRead;

use serde::Deserialize;
use serde_json::Value;

use super::{ChatStream, Provider, Upstream};
use crate::error::ProviderError;
use crate::openai::{ApiRequest, Endpoint};
use crate::sse::{self, SseReader};

pub struct OpenAi {
    up: Upstream,
    /// The URL is `{url_prefix}{model_id}{endpoint path}{url_suffix}` when
    /// `model_in_url`, else `{url_prefix}{endpoint path}{url_suffix}` (the
    /// model travels in the body).
    url_prefix: String,
    url_suffix: String,
    model_in_url: bool,
    /// The auth header, name and value.
    auth: Option<(&'static str, String)>,
}

impl OpenAi {
    /// OpenAI and compatible servers: `POST {base_url}/chat/completions`
    /// (`/completions`, `/embeddings`) with `Authorization: Bearer KEY`.
    pub fn new(up: Upstream) -> OpenAi {
        let auth = up
            .api_key
            .as_ref()
            .map(|k| ("authorization", format!("Bearer {}", k.expose())));
        OpenAi {
            url_prefix: up.base_url.clone(),
            url_suffix: String::new(),
            model_in_url: false,
            auth,
            up,
        }
    }

    /// A server that names the model (deployment) in the path and takes its
    /// key in a header of its own (Azure OpenAI).
    pub fn with_model_in_path(
        up: Upstream,
        url_prefix: String,
        url_suffix: String,
        auth_header: &'static str,
    ) -> OpenAi {
        let auth = up
            .api_key
            .as_ref()
            .map(|k| (auth_header, k.expose().to_string()));
        OpenAi {
            url_prefix,
            url_suffix,
            model_in_url: true,
            auth,
            up,
        }
    }

    fn url(&self, endpoint: Endpoint, model_id: &str) -> String {
        let model = if self.model_in_url {
            percent_encode_segment(model_id)
        } else {
            String::new()
        };
        format!(
            "{}{model}{}{}",
            self.url_prefix,
            endpoint.path(),
            self.url_suffix
        )
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        match &self.auth {
            Some((name, value)) => vec![(*name, value.as_str())],
            None => Vec::new(),
        }
    }
}

/// Percent-encode a URL path segment (RFC 3986 unreserved characters pass).
fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Just enough of a stream chunk to spot an error object.
#[derive(Deserialize)]
struct ChunkProbe {
    error: Option<Value>,
}

impl Provider for OpenAi {
    fn serves(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings => true,
        }
    }

    fn complete(&self, req: &ApiRequest, model_id: &str) -> Result<Vec<u8>, ProviderError> {
        let body = req.to_upstream_json(model_id);
        let url = self.url(req.endpoint, model_id);
        let resp = self.up.post(&url, &self.headers(), &body, false)?;
        let bytes = self.up.read_body(resp)?;
        // The probe skips string contents, and serde_json does not check
        // the UTF-8 of what it skips: a body that is not UTF-8 (so not JSON,
        // RFC 8259 §8.1) would otherwise reach the client as it came.
        if std::str::from_utf8(&bytes).is_err() {
            return Err(self.up.decode_error("the body is not UTF-8", &bytes));
        }
        if !req.endpoint.accepts_body(&bytes) {
            let what = format!("expected {}", req.endpoint.body_name());
            return Err(self.up.decode_error(&what, &bytes));
        }
        Ok(bytes)
    }

    fn stream(
        &self,
        req: &ApiRequest,
        model_id: &str,
    ) -> Result<Box<dyn ChatStream + '_>, ProviderError> {
        let body = req.to_upstream_json(model_id);
        let url = self.url(req.endpoint, model_id);
        let resp = self.up.post(&url, &self.headers(), &body, true)?;
        Ok(Box::new(OpenAiStream {
            up: &self.up,
            events: self.up.events(resp)?,
        }))
    }
}

struct OpenAiStream<'a> {
    up: &'a Upstream,
    events: SseReader<Box<dyn BufRead + Send>>,
}

impl ChatStream for OpenAiStream<'_> {
    /// Only `data:` events are passed on. Comments (`: keep-alive`,
    /// OpenRouter's `: OPENROUTER PROCESSING`) are dropped: before the first
    /// chunk they must not commit the client to this provider, and after it
    /// the proxy sends its own keep-alives while the upstream is silent.
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        let mut ev = loop {
            let ev = self.up.next_event(&mut self.events)?.ok_or_else(|| {
                ProviderError::Connect("upstream closed the stream before [DONE]".into())
            })?;
            if ev.data.is_some() {
                break ev;
            }
        };
        let data = ev.data.as_deref().unwrap_or_default();
        if data.trim() == "[DONE]" {
            return Ok(None);
        }
        match serde_json::from_str::<ChunkProbe>(data) {
            Ok(ChunkProbe { error: Some(_) }) => return Err(self.up.in_stream_error(data)),
            Ok(_) => {}
            Err(_) => {
                return Err(self
                    .up
                    .decode_error("malformed stream event", data.as_bytes()));
            }
        }
        ev.comments.clear();
        Ok(Some(sse::encode(&ev)))
    }

    fn finish(&mut self) {
        self.up.drain(&mut self.events);
    }
}
