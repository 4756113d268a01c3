//! A small validator for JSON against the official OpenAI OpenAPI spec in
//! `../shared/spec/` (or the file `LLM_PROXY_SPEC` names): types, `required`, `properties`,
//! `items`, `enum`, `$ref`, `anyOf`/`oneOf`/`allOf` and 3.0's `nullable`.
//! Enough to catch a missing or mistyped field in what the proxy answers.

use std::sync::OnceLock;

use serde_json::Value;

fn spec() -> Option<&'static Value> {
    static SPEC: OnceLock<Option<Value>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = env!("CARGO_MANIFEST_DIR");
        // The repository sits next to `shared/`, or one level deeper (a
        // worktree under `wt/`).
        let candidates = [
            std::env::var("LLM_PROXY_SPEC").unwrap_or_default(),
            format!("{dir}/../shared/spec/openai-openapi.yaml"),
            format!("{dir}/../../shared/spec/openai-openapi.yaml"),
        ];
        let text = candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())?;
        // `seed`'s bounds (±9223372036854776000) fit no YAML integer type
        // serde_yaml has; as floats they parse.
        let text = text.replace("9223372036854776000", "9.223372036854776e18");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        Some(to_json(yaml))
    })
    .as_ref()
}

/// The spec as JSON (the validator does not check numeric bounds).
fn to_json(y: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(v) => Value::Array(v.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_json(v))))
                .collect(),
        ),
        Y::Tagged(t) => to_json(t.value),
    }
}

/// Assert `v` is a valid `components.schemas.{schema}`.
pub fn assert_valid(schema: &str, v: &Value) {
    let spec = spec().expect("the OpenAI spec (../shared/spec/ or LLM_PROXY_SPEC) is readable");
    let s = &spec["components"]["schemas"][schema];
    assert!(s.is_object(), "no schema {schema} in the spec");
    let mut errors = Vec::new();
    check(spec, s, v, "$", &mut errors);
    assert!(errors.is_empty(), "{schema}: {errors:?}\n{v}");
}

fn resolve<'a>(spec: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(spec, &spec["components"]["schemas"][name])
        }
        None => s,
    }
}

fn check(spec: &Value, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let s = resolve(spec, s);
    if v.is_null() && s.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let ok = alts.iter().any(|a| {
                let mut e = Vec::new();
                check(spec, a, v, at, &mut e);
                e.is_empty()
            });
            if !ok {
                errors.push(format!("{at}: matches none of {key}"));
            }
            return;
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for a in all {
            check(spec, a, v, at, errors);
        }
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: expected {t}, got {v}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(o) = v.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !o.contains_key(r) {
                errors.push(format!("{at}: missing required '{r}'"));
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, ps) in props {
                if let Some(x) = o.get(k) {
                    check(spec, ps, x, &format!("{at}.{k}"), errors);
                }
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), s.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check(spec, items, x, &format!("{at}[{i}]"), errors);
        }
    }
}

/// The spec schema of a Responses stream event, by its `type`.
pub fn event_schema(ty: &str) -> &'static str {
    match ty {
        "response.created" => "ResponseCreatedEvent",
        "response.in_progress" => "ResponseInProgressEvent",
        "response.output_item.added" => "ResponseOutputItemAddedEvent",
        "response.output_item.done" => "ResponseOutputItemDoneEvent",
        "response.content_part.added" => "ResponseContentPartAddedEvent",
        "response.content_part.done" => "ResponseContentPartDoneEvent",
        "response.output_text.delta" => "ResponseTextDeltaEvent",
        "response.output_text.done" => "ResponseTextDoneEvent",
        "response.refusal.delta" => "ResponseRefusalDeltaEvent",
        "response.refusal.done" => "ResponseRefusalDoneEvent",
        "response.function_call_arguments.delta" => "ResponseFunctionCallArgumentsDeltaEvent",
        "response.function_call_arguments.done" => "ResponseFunctionCallArgumentsDoneEvent",
        "response.completed" => "ResponseCompletedEvent",
        "response.incomplete" => "ResponseIncompleteEvent",
        "response.failed" => "ResponseFailedEvent",
        "error" => "ResponseErrorEvent",
        other => panic!("no schema for event type {other}"),
    }
}

/// A Responses stream event (its payload) validates by the schema of its own
/// `type` and as a `ResponseStreamEvent` (the union alone only says "matches
/// none of anyOf").
pub fn assert_event_valid(v: &Value) {
    let ty = v["type"]
        .as_str()
        .unwrap_or_else(|| panic!("an event without a type: {v}"));
    assert_valid(event_schema(ty), v);
    assert_valid("ResponseStreamEvent", v);
}
