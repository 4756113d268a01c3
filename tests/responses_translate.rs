//! `/v1/responses` on providers that translate (issue 12, design §2-§3):
//! `anthropic`, and `openai` with `responses: translate`. Fake upstreams
//! receive Chat Completions or Anthropic Messages requests; the client
//! gets `Response` objects and Responses event streams, each checked
//! against the spec by its own schema. Also: a request the proxy refuses
//! itself is no verdict on the provider's health.

mod support;

use serde_json::{Value, json};
use support::*;

/// An anthropic provider `claude` (breaker after two failures) serving
/// model `claude`.
fn anthropic_only(fake: &Fake) -> String {
    format!(
        r#"
failover: {{max_failures: 2, cooldown: 600}}
providers:
  claude:
    type: anthropic
    api_key: sk-ant-refusal-key-0001
    base_url: {}
    timeout: 2
    stream_timeout: 5
models:
  claude:
    providers:
      claude: {{priority: 0, model_id: claude-up}}
"#,
        fake.root_url()
    )
}

fn admin_provider(p: &Proxy, name: &str) -> Value {
    let r = p.get("/admin/providers");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no provider {name}: {}", r.body))
        .clone()
}

/// A request the translation refuses never reached the upstream: the
/// breaker must not count it as the provider answering well (which would
/// forget a failure, or close a half-open breaker on no evidence).
#[test]
fn a_refusal_is_no_verdict_on_the_provider() {
    let fake = Fake::new(Reply::json(
        200,
        serde_json::from_str(include_str!("fixtures/anthropic/text.json")).unwrap(),
    ));
    fake.push(Reply::error(500, "down"));
    let p = Proxy::start(&anthropic_only(&fake));
    let r = p.chat("claude");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(admin_provider(&p, "claude")["consecutive_failures"], 1);
    // Anthropic returns one choice: `n: 2` is refused before any call.
    let r = p.post(
        "/v1/chat/completions",
        &json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "n");
    assert_eq!(fake.count(), 1, "no upstream call");
    let s = admin_provider(&p, "claude");
    assert_eq!(
        s["consecutive_failures"], 1,
        "the refusal forgot a failure: {s}"
    );
    // The next real failure opens the breaker, as two in a row should.
    fake.push(Reply::error(500, "down again"));
    assert_eq!(p.chat("claude").status, 503);
    assert_eq!(admin_provider(&p, "claude")["state"], "open");
}
