//! OpenAI and every OpenAI-compatible server: the request goes out as the
//! client sent it (with `model` replaced), the answer comes back unchanged
//! once it has been checked to be what the API promises.

use std::io::BufRead;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::{ChatStream, Provider, Upstream};
use crate::error::ProviderError;
use crate::openai::ChatRequest;
use crate::sse::{self, SseReader};

pub struct OpenAi {
    up: Upstream,
    url: String,
    auth: Option<String>,
}

impl OpenAi {
    pub fn new(up: Upstream) -> OpenAi {
        let url = format!("{}/chat/completions", up.base_url);
        let auth = up
            .api_key
            .as_ref()
            .map(|k| format!("Bearer {}", k.expose()));
        OpenAi { up, url, auth }
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        match &self.auth {
            Some(a) => vec![("authorization", a.as_str())],
            None => Vec::new(),
        }
    }
}

/// Just enough of a `chat.completion` to know the body is one.
#[derive(Deserialize)]
struct CompletionProbe {
    #[allow(dead_code)]
    choices: Vec<IgnoredAny>,
}

/// Just enough of a stream chunk to spot an error object.
#[derive(Deserialize)]
struct ChunkProbe {
    error: Option<Value>,
}

impl Provider for OpenAi {
    fn complete(&self, req: &ChatRequest, model_id: &str) -> Result<Vec<u8>, ProviderError> {
        let body = req.to_upstream_json(model_id);
        let resp = self.up.post(&self.url, &self.headers(), &body, false)?;
        let bytes = self.up.read_body(resp)?;
        if serde_json::from_slice::<CompletionProbe>(&bytes).is_err() {
            return Err(self
                .up
                .decode_error("expected a chat.completion object", &bytes));
        }
        Ok(bytes)
    }

    fn stream(
        &self,
        req: &ChatRequest,
        model_id: &str,
    ) -> Result<Box<dyn ChatStream + '_>, ProviderError> {
        let body = req.to_upstream_json(model_id);
        let resp = self.up.post(&self.url, &self.headers(), &body, true)?;
        let is_json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            let bytes = self.up.read_body(resp)?;
            return Err(self
                .up
                .decode_error("expected an event stream, got JSON", &bytes));
        }
        Ok(Box::new(OpenAiStream {
            up: &self.up,
            events: SseReader::new(self.up.reader(resp)),
        }))
    }
}

struct OpenAiStream<'a> {
    up: &'a Upstream,
    events: SseReader<Box<dyn BufRead + Send>>,
}

impl ChatStream for OpenAiStream<'_> {
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        let ev = self
            .events
            .next_event()
            .map_err(|e| self.up.stream_error(e))?
            .ok_or_else(|| {
                ProviderError::Connect("upstream closed the stream before [DONE]".into())
            })?;
        if let Some(data) = &ev.data {
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
        }
        Ok(Some(sse::encode(&ev)))
    }
}
