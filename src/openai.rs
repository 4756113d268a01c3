//! The OpenAI API surface the proxy serves: its [`Endpoint`]s and their
//! request bodies, as far as the proxy needs to look inside them. A request
//! is kept as a JSON map so that every field the client sent, known or not,
//! is forwarded unchanged.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::error::ProxyError;

/// An OpenAI endpoint that is routed to providers. Everything that differs
/// between endpoints is decided here: the path, the required field, whether
/// it streams, and what a successful body must look like. A provider says
/// which endpoints it serves in [`crate::providers::Provider::serves`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/completions` (legacy text completions)
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/responses` (the Responses API): forwarded to providers
    /// that speak it (`responses: native`), translated for the others.
    Responses,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
    ];

    /// The path under `/v1` (the client's) and under an OpenAI-compatible
    /// `base_url` or Azure deployment (the upstream's).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
        }
    }

    /// The endpoint served at the client path `path`, if any.
    pub fn from_client_path(path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix("/v1")?;
        Endpoint::ALL.into_iter().find(|e| e.path() == rest)
    }

    /// Whether `"stream": true` asks for server-sent events.
    fn streams(self) -> bool {
        match self {
            Endpoint::Chat | Endpoint::Completions | Endpoint::Responses => true,
            Endpoint::Embeddings => false,
        }
    }

    /// Whether a complete stream ends with `data: [DONE]`. A Responses
    /// stream ends with its terminal event (`response.completed`,
    /// `response.incomplete`), as OpenAI sends it, and nothing after.
    pub fn ends_with_done(self) -> bool {
        match self {
            Endpoint::Chat | Endpoint::Completions => true,
            // No stream; never asked.
            Endpoint::Embeddings => true,
            Endpoint::Responses => false,
        }
    }

    /// The field, besides `model`, without which the request is refused
    /// here rather than by every upstream in turn. A Responses request may
    /// stand in `prompt` or `conversation` for `input` (native upstreams
    /// judge that; a translating provider refuses it without `input`).
    fn required(self) -> Option<&'static str> {
        match self {
            Endpoint::Chat => Some("messages"),
            Endpoint::Completions => Some("prompt"),
            Endpoint::Embeddings => Some("input"),
            Endpoint::Responses => None,
        }
    }

    /// Whether a 2xx body is what this endpoint promises: enough of it
    /// to know it is one, nothing more (the body goes back unchanged).
    pub fn accepts_body(self, body: &[u8]) -> bool {
        match self {
            Endpoint::Chat | Endpoint::Completions => {
                serde_json::from_slice::<ChoicesProbe>(body).is_ok()
            }
            Endpoint::Embeddings => {
                serde_json::from_slice::<ListProbe>(body).is_ok_and(|l| l.object == "list")
            }
            // A 200 that says the response failed is no answer: it fails
            // over like any other broken body.
            Endpoint::Responses => serde_json::from_slice::<ResponseProbe>(body)
                .is_ok_and(|r| r.object == "response" && r.status.as_deref() != Some("failed")),
        }
    }

    /// What [`Endpoint::accepts_body`] expects, for error messages.
    pub fn body_name(self) -> &'static str {
        match self {
            Endpoint::Chat => "a chat.completion object",
            Endpoint::Completions => "a text_completion object",
            Endpoint::Embeddings => "a list object with data",
            Endpoint::Responses => "a response object with output, not failed",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/v1{}", self.path())
    }
}

/// Just enough of a `chat.completion` / `text_completion` to know the body
/// is one.
#[derive(serde::Deserialize)]
struct ChoicesProbe {
    #[allow(dead_code)]
    choices: Vec<serde::de::IgnoredAny>,
}

/// Just enough of an embeddings answer (`{"object":"list","data":[...]}`).
#[derive(serde::Deserialize)]
struct ListProbe {
    object: String,
    #[allow(dead_code)]
    data: Vec<serde::de::IgnoredAny>,
}

/// Just enough of a Responses `response` object.
#[derive(serde::Deserialize)]
struct ResponseProbe {
    object: String,
    status: Option<String>,
    #[allow(dead_code)]
    output: Vec<serde::de::IgnoredAny>,
}

/// A parsed request body for one of the [`Endpoint`]s.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub endpoint: Endpoint,
    /// The model name the client asked for.
    pub model: String,
    pub stream: bool,
    /// The whole body, `model` included.
    pub body: Map<String, Value>,
}

impl ApiRequest {
    /// Parse and check the few fields the proxy relies on.
    pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<ApiRequest, ProxyError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            ProxyError::bad_request(format!(
                "We could not parse the JSON body of your request: {e}"
            ))
        })?;
        let Value::Object(body) = value else {
            return Err(ProxyError::bad_request(
                "The request body must be a JSON object",
            ));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) => {
                return Err(
                    ProxyError::bad_request("You must provide a model parameter.")
                        .with_param("model"),
                );
            }
            Some(other) => {
                return Err(ProxyError::bad_request(format!(
                    "Invalid type for 'model': expected a non-empty string, got {}",
                    type_name(other)
                ))
                .with_param("model"));
            }
        };
        if let Some(field) = endpoint.required() {
            if body.get(field).is_none_or(Value::is_null) {
                return Err(ProxyError::bad_request(format!(
                    "Missing required parameter: '{field}'."
                ))
                .with_param(field));
            }
        }
        match endpoint {
            Endpoint::Chat => check_messages(&body["messages"])?,
            Endpoint::Responses => check_input(body.get("input"))?,
            // Passed on as sent: the upstream judges `prompt` and `input`.
            Endpoint::Completions | Endpoint::Embeddings => {}
        }
        let stream = match body.get("stream") {
            // Embeddings have no stream; the field goes upstream as sent.
            _ if !endpoint.streams() => false,
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ProxyError::bad_request(format!(
                    "Invalid type for 'stream': expected a boolean, got {}",
                    type_name(other)
                ))
                .with_param("stream"));
            }
        };
        Ok(ApiRequest {
            endpoint,
            model,
            stream,
            body,
        })
    }

    /// `stream_options.include_usage`: the client wants a final usage chunk.
    pub fn include_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The body for an OpenAI-compatible upstream: the client's body with
    /// `model` replaced by the provider's `model_id`, nothing else changed.
    pub fn to_upstream_json(&self, model_id: &str) -> Vec<u8> {
        serde_json::to_vec(&WithModel {
            body: &self.body,
            model: model_id,
            include_usage: false,
        })
        .expect("a JSON map always serializes")
    }

    /// [`ApiRequest::to_upstream_json`] with `stream_options.include_usage:
    /// true` (other `stream_options` kept): what the proxy sends an
    /// OpenAI-type upstream for a stream, so that every stream reports its
    /// tokens. The stream then carries `"usage": null` in every chunk and a
    /// final usage chunk, which the provider removes again when the client
    /// did not ask for them.
    pub fn to_upstream_json_with_usage(&self, model_id: &str) -> Vec<u8> {
        serde_json::to_vec(&WithModel {
            body: &self.body,
            model: model_id,
            include_usage: true,
        })
        .expect("a JSON map always serializes")
    }
}

/// `messages`: a non-empty array of objects.
fn check_messages(messages: &Value) -> Result<(), ProxyError> {
    match messages {
        Value::Array(m) if !m.is_empty() => {
            if let Some(i) = m.iter().position(|msg| !msg.is_object()) {
                return Err(ProxyError::bad_request(format!(
                    "Invalid type for 'messages[{i}]': expected an object"
                ))
                .with_param(&format!("messages[{i}]")));
            }
            Ok(())
        }
        Value::Array(_) => Err(ProxyError::bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
        )
        .with_param("messages")),
        other => Err(ProxyError::bad_request(format!(
            "Invalid type for 'messages': expected an array, got {}",
            type_name(other)
        ))
        .with_param("messages")),
    }
}

/// Responses `input`, if present: a string or an array of objects (items).
/// What the items say is the upstream's (or the translation's) to judge.
fn check_input(input: Option<&Value>) -> Result<(), ProxyError> {
    match input {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) => match items.iter().position(|i| !i.is_object()) {
            None => Ok(()),
            Some(i) => Err(ProxyError::bad_request(format!(
                "Invalid type for 'input[{i}]': expected an object"
            ))
            .with_param(&format!("input[{i}]"))),
        },
        Some(other) => Err(ProxyError::bad_request(format!(
            "Invalid type for 'input': expected a string or an array of input items, got {}",
            type_name(other)
        ))
        .with_param("input")),
    }
}

/// Serializes a map with `model` swapped, without cloning the (possibly
/// large, image-carrying) body.
struct WithModel<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    /// Set `stream_options.include_usage: true`.
    include_usage: bool,
}

impl Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let mut options_seen = false;
        for (k, v) in self.body {
            if k == "model" {
                m.serialize_entry(k, self.model)?;
            } else if k == "stream_options" && self.include_usage {
                options_seen = true;
                let mut o = v.as_object().cloned().unwrap_or_default();
                o.insert("include_usage".into(), Value::Bool(true));
                m.serialize_entry(k, &o)?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        if self.include_usage && !options_seen {
            m.serialize_entry(
                "stream_options",
                &serde_json::json!({"include_usage": true}),
            )?;
        }
        m.end()
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_replaces_model_keeping_unknown_fields() {
        let r = ApiRequest::parse(
            Endpoint::Chat,
            br#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"x_custom":{"a":[1,2]},"stream":true}"#,
        )
        .unwrap();
        assert_eq!(r.model, "gpt-4");
        assert!(r.stream);
        let out: Value = serde_json::from_slice(&r.to_upstream_json("gpt-4-0613")).unwrap();
        assert_eq!(out["model"], "gpt-4-0613");
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["x_custom"]["a"][1], 2);
        assert_eq!(out["messages"][0]["content"], "hi");
    }

    #[test]
    fn rejects_bad_shapes() {
        let e = |b: &str| ApiRequest::parse(Endpoint::Chat, b.as_bytes()).unwrap_err();
        assert_eq!(e("{").status, 400);
        assert_eq!(e("[]").status, 400);
        assert_eq!(e(r#"{"messages":[{}]}"#).param.as_deref(), Some("model"));
        assert_eq!(
            e(r#"{"model":5,"messages":[{}]}"#).param.as_deref(),
            Some("model")
        );
        assert_eq!(e(r#"{"model":"m"}"#).param.as_deref(), Some("messages"));
        assert_eq!(
            e(r#"{"model":"m","messages":"hi"}"#).param.as_deref(),
            Some("messages")
        );
        assert_eq!(
            e(r#"{"model":"m","messages":[]}"#).param.as_deref(),
            Some("messages")
        );
        assert_eq!(
            e(r#"{"model":"m","messages":[{}],"stream":"yes"}"#)
                .param
                .as_deref(),
            Some("stream")
        );
    }

    #[test]
    fn responses_input_is_optional_but_checked_when_present() {
        let p = |b: &str| ApiRequest::parse(Endpoint::Responses, b.as_bytes());
        // `prompt` or `conversation` may stand in for it: the upstream judges.
        assert!(p(r#"{"model":"m","prompt":{"id":"pmpt_1"}}"#).is_ok());
        assert!(
            p(r#"{"model":"m","input":"hi","stream":true}"#)
                .unwrap()
                .stream
        );
        assert!(p(r#"{"model":"m","input":[{"role":"user","content":"hi"}]}"#).is_ok());
        let e = p(r#"{"model":"m","input":5}"#).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("input")));
        let e = p(r#"{"model":"m","input":[{"role":"user","content":"hi"},"x"]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[1]"));
        assert_eq!(
            Endpoint::from_client_path("/v1/responses"),
            Some(Endpoint::Responses)
        );
        assert!(!Endpoint::Responses.ends_with_done());
        assert!(Endpoint::Chat.ends_with_done() && Endpoint::Completions.ends_with_done());
    }

    #[test]
    fn a_responses_body_is_a_response_object_that_did_not_fail() {
        let ok = |b: &str| Endpoint::Responses.accepts_body(b.as_bytes());
        assert!(ok(
            r#"{"id":"resp_1","object":"response","status":"completed","output":[]}"#
        ));
        assert!(ok(
            r#"{"object":"response","status":"incomplete","output":[{"type":"message"}]}"#
        ));
        assert!(!ok(
            r#"{"object":"response","status":"failed","output":[]}"#
        ));
        assert!(!ok(r#"{"object":"chat.completion","choices":[]}"#));
        assert!(!ok(r#"{"object":"response"}"#));
        assert!(!ok(r#"{"error":{"message":"x"}}"#));
    }
}
