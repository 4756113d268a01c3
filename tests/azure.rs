//! Azure OpenAI: deployment in the path, api-version in the query, the key
//! in `api-key`, and streams passed through with Azure's leading chunk.

mod support;

use serde_json::{Value, json};
use support::*;

fn config(fake: &Fake) -> String {
    format!(
        r#"
providers:
  az:
    type: azure
    api_key: azure-key-0001
    base_url: http://{}
    api_version: 2024-10-21
models:
  gpt-4o:
    providers:
      az: {{priority: 0, model_id: my-gpt4o-deployment}}
"#,
        fake.addr
    )
}

#[test]
fn azure_requests_use_deployment_path_query_and_api_key() {
    let fake = Fake::ok("from azure");
    let p = Proxy::start(&config(&fake));
    let r = p.post_with(
        "/v1/chat/completions",
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1})
            .to_string(),
        &[("authorization", "Bearer client-key")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from azure");
    let got = &fake.requests()[0];
    assert_eq!(
        got.path,
        "/openai/deployments/my-gpt4o-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(got.header("api-key"), Some("azure-key-0001"));
    assert_eq!(
        got.header("authorization"),
        None,
        "client auth never forwarded"
    );
    assert_eq!(got.json()["temperature"], 0.1);
}

#[test]
fn azure_streams_pass_through_including_the_empty_choices_chunk() {
    let mut events = vec![
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n".to_string(),
    ];
    events.extend(chunk_events(&["Hel", "lo"]));
    let fake = Fake::new(Reply::Stream {
        events,
        pace: None,
        end: End::Done,
    });
    let p = Proxy::start(&config(&fake));
    let got = read_events(p.open_stream("gpt-4o"), |_| {});
    assert_eq!(got.len(), 4, "{got:?}");
    let first: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(first["choices"], json!([]));
    assert!(first["prompt_filter_results"].is_array());
    assert_eq!(got[3], "[DONE]");
    assert!(fake.requests()[0].path.contains("api-version=2024-10-21"));
}

#[test]
fn azure_config_requires_base_url_and_api_version() {
    let e = |yaml: &str| llm_proxy::Config::from_yaml(yaml).unwrap_err().to_string();
    let base = "providers:\n  az:\n    type: azure\n    base_url: https://r.openai.azure.com\n    api_version: 2024-10-21\nmodels:\n  m:\n    providers:\n      az: {priority: 0}\n";
    assert!(llm_proxy::Config::from_yaml(base).is_ok());
    let msg = e(&base.replace("    api_version: 2024-10-21\n", ""));
    assert!(msg.contains("providers.az.api_version"), "{msg}");
    let msg = e(&base.replace("    base_url: https://r.openai.azure.com\n", ""));
    assert!(msg.contains("providers.az.base_url"), "{msg}");
    let msg = e(&base.replace("type: azure", "type: openai"));
    assert!(
        msg.contains("providers.az.api_version: not used by type openai"),
        "{msg}"
    );
}
