//! OpenAI and every OpenAI-compatible server (Azure OpenAI included): the request goes out as the
//! client sent it (with `model` replaced), the answer comes back unchanged
//! once it has been checked to be what the API promises.

use std::io::BufRead;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use super::{ChatStream, Provider, Upstream};
use crate::config::ResponsesMode;
use crate::error::{ProviderError, ProxyError};
use crate::openai::{ApiRequest, Endpoint};
use crate::responses::{native, translate};
use crate::sse::{self, SseReader};

pub struct OpenAi {
    up: Upstream,
    /// The URL is `{url_prefix}{model_id}{endpoint path}{url_suffix}` when
    /// `model_in_url`, else `{url_prefix}{endpoint path}{url_suffix}` (the
    /// model travels in the body).
    url_prefix: String,
    url_suffix: String,
    model_in_url: bool,
    /// How `/v1/responses` is served.
    responses: ResponsesMode,
    /// Where native Responses requests go (`POST`, and `GET …/{id}`): not
    /// under a deployment, since the Responses API names the model (Azure:
    /// the deployment) in the body.
    responses_url: String,
}

impl OpenAi {
    /// OpenAI and compatible servers: `POST {base_url}/chat/completions`
    /// (`/completions`, `/embeddings`, `/responses`) with
    /// `Authorization: Bearer KEY`.
    pub fn new(mut up: Upstream, responses: ResponsesMode) -> OpenAi {
        up.set_auth("authorization", "Bearer ");
        OpenAi {
            url_prefix: up.base_url.clone(),
            url_suffix: String::new(),
            model_in_url: false,
            responses,
            responses_url: format!("{}{}", up.base_url, Endpoint::Responses.path()),
            up,
        }
    }

    /// A server that names the model (deployment) in the path and takes its
    /// key in a header of its own (Azure OpenAI).
    pub fn with_model_in_path(
        mut up: Upstream,
        url_prefix: String,
        url_suffix: String,
        auth_header: &'static str,
        responses: ResponsesMode,
        responses_url: String,
    ) -> OpenAi {
        up.set_auth(auth_header, "");
        OpenAi {
            url_prefix,
            url_suffix,
            model_in_url: true,
            responses,
            responses_url,
            up,
        }
    }

    fn url(&self, endpoint: Endpoint, model_id: &str) -> String {
        let model = if self.model_in_url {
            utf8_percent_encode(model_id, PATH_SEGMENT).to_string()
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
        self.up.auth_headers()
    }
}

/// What is percent-encoded in a path segment (the deployment name) or a
/// query value (Azure's api-version): all but RFC 3986's unreserved
/// characters, so a value never adds a segment, a parameter or a fragment.
pub(super) const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Just enough of a stream chunk to spot an error object, and its
/// top-level `usage` member: `None` when absent, `Some(None)` when `null`
/// (which is what tells the stream to strip it, without a second scan of
/// the chunk for `"usage"`).
#[derive(Deserialize)]
struct ChunkProbe {
    error: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    usage: Option<Option<UsageProbe>>,
}

/// A member that is present, `null` included.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Whether a chunk's `choices` is empty; read only for chunks with usage.
#[derive(Deserialize)]
struct ChoicesProbe {
    #[serde(default)]
    choices: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct UsageProbe {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl Provider for OpenAi {
    fn serves(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings => true,
            Endpoint::Responses => true,
        }
    }

    fn complete(&self, req: &ApiRequest, model_id: &str) -> Result<Vec<u8>, ProviderError> {
        if req.endpoint == Endpoint::Responses {
            return match self.responses {
                ResponsesMode::Native => {
                    native::complete(&self.up, &self.responses_url, req, model_id)
                }
                ResponsesMode::Translate => {
                    translate::complete(self, req, model_id, translate::Target::Chat)
                }
            };
        }
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
        if req.endpoint == Endpoint::Responses {
            return match self.responses {
                ResponsesMode::Native => {
                    native::stream(&self.up, &self.responses_url, req, model_id)
                }
                ResponsesMode::Translate => {
                    translate::stream(self, req, model_id, translate::Target::Chat)
                }
            };
        }
        // Every stream reports its tokens: ask for usage, and take it out
        // again below when the client did not.
        let hide_usage = !req.include_usage();
        let body = if hide_usage {
            req.to_upstream_json_with_usage(model_id)
        } else {
            req.to_upstream_json(model_id)
        };
        let url = self.url(req.endpoint, model_id);
        let resp = self.up.post(&url, &self.headers(), &body, true)?;
        Ok(Box::new(OpenAiStream {
            up: &self.up,
            events: self.up.events(resp)?,
            hide_usage,
            usage: None,
        }))
    }

    fn responses_native(&self) -> bool {
        self.responses == ResponsesMode::Native
    }

    fn retrieve_response(&self, id: &str, query: &str) -> Result<Vec<u8>, ProviderError> {
        crate::responses::retrieve::fetch(&self.up, &self.responses_url, id, query)
    }
}

struct OpenAiStream<'a> {
    up: &'a Upstream,
    events: SseReader<Box<dyn BufRead + Send>>,
    /// The proxy asked for usage and the client did not: drop the usage
    /// chunk and the `"usage": null` of the others, so that the client
    /// gets the stream OpenAI sends without `include_usage`.
    hide_usage: bool,
    usage: Option<crate::metrics::Usage>,
}

impl ChatStream for OpenAiStream<'_> {
    /// Only `data:` events are passed on. Comments (`: keep-alive`,
    /// OpenRouter's `: OPENROUTER PROCESSING`) are dropped: before the first
    /// chunk they must not commit the client to this provider, and after it
    /// the proxy sends its own keep-alives while the upstream is silent.
    fn next_event(&mut self) -> Result<Option<Vec<u8>>, ProviderError> {
        loop {
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
            let probe = match serde_json::from_str::<ChunkProbe>(data) {
                Ok(ChunkProbe { error: Some(_), .. }) => {
                    return Err(self.up.in_stream_error(data));
                }
                Ok(p) => p,
                Err(_) => {
                    return Err(self
                        .up
                        .decode_error("malformed stream event", data.as_bytes()));
                }
            };
            if let Some(Some(u)) = &probe.usage {
                self.usage = Some(crate::metrics::Usage {
                    prompt: u.prompt_tokens,
                    completion: u.completion_tokens,
                });
            }
            if self.hide_usage {
                match probe.usage {
                    Some(Some(_)) => {
                        let usage_only = serde_json::from_str::<ChoicesProbe>(data)
                            .is_ok_and(|c| c.choices.is_empty());
                        if usage_only {
                            continue;
                        }
                    }
                    // OpenAI ends every other chunk with it: cut it in place.
                    Some(None) => {
                        const TAIL: &str = ",\"usage\":null}";
                        if let Some(d) = ev.data.as_mut() {
                            if d.ends_with(TAIL) {
                                d.truncate(d.len() - TAIL.len());
                                d.push('}');
                            } else if let Some(s) = strip_null_usage(d) {
                                *d = s;
                            }
                        }
                    }
                    None => {}
                }
            }
            ev.comments.clear();
            return Ok(Some(sse::encode_owned(ev)));
        }
    }

    fn finish(&mut self) {
        self.up.drain(&mut self.events);
    }

    fn usage(&self) -> Option<crate::metrics::Usage> {
        self.usage
    }

    fn failure_event(&mut self, err: &ProxyError) -> Vec<u8> {
        super::chat_failure_event(err)
    }
}

/// `json` (an object) without its top-level `"usage": null` member, as
/// OpenAI's chunks are without `include_usage`; `None` if it has none.
/// Byte-exact otherwise: only the member and one comma next to it go.
fn strip_null_usage(json: &str) -> Option<String> {
    let b = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    // Where the current top-level member began (after `{` or `,`), and the
    // comma before it.
    let mut member_start = 0;
    let mut comma_before: Option<usize> = None;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && &json[start..(i + 1).min(b.len())] == "\"usage\"" {
                    // A key if `:` follows; then the value must be `null`.
                    let rest = &json[(i + 1).min(b.len())..];
                    let after_ws = rest.trim_start();
                    if let Some(v) = after_ws.strip_prefix(':') {
                        let v = v.trim_start();
                        if let Some(tail) = v.strip_prefix("null") {
                            let end = json.len() - tail.len();
                            let tail_trim = tail.trim_start();
                            let mut out = String::with_capacity(json.len());
                            return Some(match (comma_before, tail_trim.strip_prefix(',')) {
                                // `...,"usage":null}`: drop the comma before.
                                (Some(c), _) => {
                                    out.push_str(&json[..c]);
                                    out.push_str(&json[end..]);
                                    out
                                }
                                // `{"usage":null,...}`: drop the comma after.
                                (None, Some(after)) => {
                                    out.push_str(&json[..member_start]);
                                    out.push_str(after.trim_start());
                                    out
                                }
                                (None, None) => {
                                    out.push_str(&json[..member_start]);
                                    out.push_str(&json[end..]);
                                    out
                                }
                            });
                        }
                        return None;
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth == 1 {
                    member_start = i + 1;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => {
                comma_before = Some(i);
                member_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percent_encode_segment(s: &str) -> String {
        utf8_percent_encode(s, PATH_SEGMENT).to_string()
    }

    #[test]
    fn strip_null_usage_removes_only_the_top_level_null_member() {
        let cases = [
            (
                r#"{"id":"a","choices":[],"usage":null}"#,
                Some(r#"{"id":"a","choices":[]}"#),
            ),
            (r#"{"usage":null,"id":"a"}"#, Some(r#"{"id":"a"}"#)),
            (r#"{"usage" : null}"#, Some("{}")),
            (
                r#"{"id":"a", "usage": null, "x":1}"#,
                Some(r#"{"id":"a", "x":1}"#),
            ),
            // Nested or in a string: left alone.
            (r#"{"choices":[{"usage":null}],"s":""usage":null"}"#, None),
            // Not null: left alone.
            (r#"{"usage":{"prompt_tokens":1}}"#, None),
        ];
        for (input, want) in cases {
            assert_eq!(strip_null_usage(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn a_deployment_name_is_one_encoded_path_segment() {
        // RFC 3986 unreserved characters pass; everything else, every byte
        // of a multi-byte character included, is %XX (upper-case hex).
        let all_unreserved = "AZaz09-._~";
        assert_eq!(percent_encode_segment(all_unreserved), all_unreserved);
        assert_eq!(
            percent_encode_segment("a/b c?d#e%f&g=h+i:j@k!l'm(n)o*p,q;r$s"),
            "a%2Fb%20c%3Fd%23e%25f%26g%3Dh%2Bi%3Aj%40k%21l%27m%28n%29o%2Ap%2Cq%3Br%24s"
        );
        assert_eq!(percent_encode_segment("é\u{0}\u{7f}.."), "%C3%A9%00%7F..");
    }

    #[test]
    fn azure_urls_encode_the_deployment_and_the_api_version() {
        let cfg = crate::config::Config::from_yaml(
            "providers:\n  az: {type: azure, base_url: 'https://r.openai.azure.com/', api_version: '2024-10-21&x=1 #'}\nmodels:\n  m:\n    providers:\n      az: {priority: 0, model_id: 'my dep/1'}\n",
        )
        .unwrap();
        let crate::config::ProviderKind::Azure { api_version } = &cfg.providers[0].kind else {
            panic!("not azure");
        };
        let up = super::super::Upstream::new(&cfg.providers[0], 1);
        let az = super::super::azure::new(up, api_version, cfg.providers[0].responses);
        assert_eq!(
            az.url(Endpoint::Chat, "my dep/1"),
            "https://r.openai.azure.com/openai/deployments/my%20dep%2F1/chat/completions?api-version=2024-10-21%26x%3D1%20%23"
        );
    }
}
