//! OpenAI Chat Completions wire types, as far as the proxy needs to look
//! inside them. The request is kept as a JSON map so that every field the
//! client sent, known or not, is forwarded unchanged.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::error::ProxyError;

/// A parsed `POST /v1/chat/completions` body.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model name the client asked for.
    pub model: String,
    pub stream: bool,
    /// The whole body, `model` included.
    pub body: Map<String, Value>,
}

impl ChatRequest {
    /// Parse and check the few fields the proxy relies on.
    pub fn parse(bytes: &[u8]) -> Result<ChatRequest, ProxyError> {
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
        match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => {
                if let Some(i) = m.iter().position(|msg| !msg.is_object()) {
                    return Err(ProxyError::bad_request(format!(
                        "Invalid type for 'messages[{i}]': expected an object"
                    ))
                    .with_param(&format!("messages[{i}]")));
                }
            }
            Some(Value::Array(_)) => {
                return Err(ProxyError::bad_request(
                    "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                )
                .with_param("messages"));
            }
            None | Some(Value::Null) => {
                return Err(
                    ProxyError::bad_request("Missing required parameter: 'messages'.")
                        .with_param("messages"),
                );
            }
            Some(other) => {
                return Err(ProxyError::bad_request(format!(
                    "Invalid type for 'messages': expected an array, got {}",
                    type_name(other)
                ))
                .with_param("messages"));
            }
        }
        let stream = match body.get("stream") {
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
        Ok(ChatRequest {
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
        })
        .expect("a JSON map always serializes")
    }
}

/// Serializes a map with `model` swapped, without cloning the (possibly
/// large, image-carrying) body.
struct WithModel<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
}

impl Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.body.len()))?;
        for (k, v) in self.body {
            if k == "model" {
                m.serialize_entry(k, self.model)?;
            } else {
                m.serialize_entry(k, v)?;
            }
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
        let r = ChatRequest::parse(
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
        let e = |b: &str| ChatRequest::parse(b.as_bytes()).unwrap_err();
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
}
