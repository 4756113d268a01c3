//! The cases every provider-routed endpoint must pass with the same
//! failover, breakers, request ids and error shapes as chat. Each endpoint's
//! test file runs them with its own [`Case`].

use serde_json::{Value, json};

use super::spec::assert_valid;
use super::*;

/// One endpoint under test.
pub struct Case {
    /// The client path, e.g. `/v1/embeddings`.
    pub path: &'static str,
    /// The field the endpoint requires besides `model`.
    pub required: &'static str,
    /// A valid request body for `model`.
    pub body: fn(model: &str) -> Value,
    /// A valid upstream answer, marked with `tag`.
    pub answer: fn(tag: &str) -> Value,
    /// The spec schema of the answer.
    pub schema: &'static str,
    /// YAML lines (indented under the provider) added to every `openai`
    /// provider the case configures, e.g. `    responses: native\n`.
    pub openai_yaml: &'static str,
    /// A body (for model `m`) the proxy refuses with 400 naming `required`.
    pub refused_body: &'static str,
    /// Azure's path for deployment `up-az`: `None` is the deployment form
    /// (`/openai/deployments/up-az{path}?api-version=…`, model in the path);
    /// `Some(path)` is this path, with the deployment in the body's `model`.
    pub azure_path: Option<&'static str>,
}

impl Case {
    /// `config_for`, with `openai_yaml` on every `openai` provider.
    fn config(&self, model: &str, providers: &[(&str, &str, &Fake)], extra: &str) -> String {
        config_for(model, providers, extra).replace(
            "    type: openai\n",
            &format!("    type: openai\n{}", self.openai_yaml),
        )
    }

    fn primary_backup(&self, primary: &Fake, backup: &Fake, extra: &str) -> Proxy {
        Proxy::start(&self.config(
            "m",
            &[("primary", "openai", primary), ("backup", "openai", backup)],
            extra,
        ))
    }

    fn post(&self, p: &Proxy, model: &str) -> Resp {
        p.post(self.path, &(self.body)(model).to_string())
    }

    fn ok(&self, tag: &str) -> Fake {
        Fake::new(Reply::json(200, (self.answer)(tag)))
    }

    /// The answer comes back byte for byte; the upstream got the client's
    /// body with only `model` replaced, at the endpoint's path.
    pub fn passes_through(&self) {
        let fake = self.ok("only");
        let p = Proxy::start(&self.config("m", &[("up", "openai", &fake)], ""));
        let mut sent = (self.body)("m");
        sent["x_unknown"] = json!({"nested": [1, 2.5, "é", null, true]});
        sent["user"] = json!("user-1234");
        let r = p.post(self.path, &sent.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, (self.answer)("only").to_string(), "unchanged");
        assert_valid(self.schema, &r.json());
        let got = &fake.requests()[0];
        assert_eq!(got.path, format!("/v1{}", &self.path[3..]));
        assert_eq!(got.header("authorization"), Some("Bearer sk-up-key-000001"));
        sent["model"] = json!("up-up");
        assert_eq!(got.json(), sent, "only model is replaced");
    }

    /// Azure: the deployment in the path, `api-version`, `api-key`.
    pub fn azure_path(&self) {
        let fake = self.ok("az");
        let p = Proxy::start(&self.config("m", &[("az", "azure", &fake)], ""));
        let r = self.post(&p, "m");
        assert_eq!(r.status, 200, "{}", r.body);
        let got = &fake.requests()[0];
        match self.azure_path {
            None => assert_eq!(
                got.path,
                format!(
                    "/openai/deployments/up-az{}?api-version=2024-10-21",
                    &self.path[3..]
                )
            ),
            Some(path) => {
                assert_eq!(got.path, path);
                assert_eq!(got.json()["model"], "up-az");
            }
        }
        assert_eq!(got.header("api-key"), Some("sk-az-key-000001"));
        assert_eq!(got.header("authorization"), None);
    }

    /// A 500 fails over to the backup, with the same headers as chat.
    pub fn fails_over(&self) {
        let primary = Fake::new(Reply::error(500, "boom"));
        let backup = self.ok("backup");
        let p = self.primary_backup(&primary, &backup, "");
        let r = p.post_with(
            self.path,
            &(self.body)("m").to_string(),
            &[("x-request-id", "client-rid-42")],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, (self.answer)("backup").to_string());
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"));
        assert_eq!(r.header("x-request-id"), Some("client-rid-42"));
        assert_eq!((primary.count(), backup.count()), (1, 1));
    }

    /// A 200 that is not what the endpoint promises fails over too.
    pub fn wrong_shape_fails_over(&self) {
        let primary = Fake::new(Reply::json(200, json!({"object": "nonsense"})));
        let backup = self.ok("backup");
        let p = self.primary_backup(&primary, &backup, "");
        let r = self.post(&p, "m");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    }

    /// `max_failures: 1`: after one failure the primary is skipped.
    pub fn breaker_skips(&self) {
        let primary = Fake::new(Reply::error(503, "down"));
        let backup = self.ok("backup");
        let p = self.primary_backup(
            &primary,
            &backup,
            "failover: {max_failures: 1, cooldown: 60}",
        );
        for _ in 0..3 {
            let r = self.post(&p, "m");
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
        }
        assert_eq!((primary.count(), backup.count()), (1, 3));
        let ready = p.get("/v1/models");
        assert_eq!(ready.status, 200);
    }

    /// Every provider failing: 503 in the OpenAI shape, no key anywhere.
    pub fn all_fail(&self) {
        let a = Fake::new(Reply::error(500, "bad key sk-a-key-000001"));
        let p = Proxy::start(&self.config("m", &[("a", "openai", &a)], ""));
        let r = self.post(&p, "m");
        assert_eq!(r.status, 503, "{}", r.body);
        let e = r.error();
        assert_eq!(e["code"], "providers_unavailable");
        assert_valid("ErrorResponse", &r.json());
        assert!(!r.body.contains("sk-a-key"), "{}", r.body);
    }

    /// The upstream's own 400 is the client's answer, unchanged in shape,
    /// and does not count against the provider.
    pub fn upstream_400_passes_through(&self) {
        let primary = Fake::new(Reply::json(
            400,
            json!({"error": {"message": "bad input for sk-primary-key-000001", "type": "invalid_request_error", "param": self.required, "code": "bad"}}),
        ));
        let backup = self.ok("backup");
        let p = self.primary_backup(&primary, &backup, "failover: {max_failures: 1}");
        for _ in 0..2 {
            let r = self.post(&p, "m");
            assert_eq!(r.status, 400, "{}", r.body);
            let e = r.error();
            assert_eq!(e["param"], self.required);
            assert_eq!(e["code"], "bad");
            assert_eq!(e["provider"], "primary");
            assert!(!r.body.contains("sk-primary-key"), "{}", r.body);
            assert_valid("ErrorResponse", &r.json());
        }
        assert_eq!(
            (primary.count(), backup.count()),
            (2, 0),
            "breaker untouched"
        );
    }

    /// The proxy's own refusals: unknown model, wrong method, too large,
    /// malformed, missing the required field.
    pub fn refusals(&self) {
        let fake = self.ok("x");
        let yaml = self.config(
            "m",
            &[("up", "openai", &fake)],
            "server: {max_body_bytes: 4096}",
        );
        let p = Proxy::start(&yaml);
        let cases = [
            (
                self.post(&p, "nope"),
                404,
                Some("model_not_found"),
                Some("model"),
            ),
            (p.get(self.path), 405, Some("method_not_allowed"), None),
            (
                p.post(self.path, &"x".repeat(5000)),
                413,
                Some("request_too_large"),
                None,
            ),
            (p.post(self.path, "{"), 400, None, None),
            (
                p.post(self.path, self.refused_body),
                400,
                None,
                Some(self.required),
            ),
        ];
        for (i, (r, status, code, param)) in cases.iter().enumerate() {
            assert_eq!(r.status, *status, "case {i}: {}", r.body);
            let e = r.error();
            assert_eq!(e["code"].as_str(), *code, "case {i}");
            assert_eq!(e["param"].as_str(), *param, "case {i}");
            assert_valid("ErrorResponse", &r.json());
            assert!(r.header("x-request-id").is_some());
        }
        assert_eq!(fake.count(), 0);
    }

    /// Anthropic cannot serve this endpoint: it is skipped without a
    /// request and without touching its breaker, and still serves chat.
    pub fn anthropic_skipped(&self) {
        let claude = Fake::new(Reply::json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                   "content": [{"type": "text", "text": "from claude"}],
                   "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}}),
        ));
        let openai = self.ok("openai");
        let yaml = self.config(
            "m",
            &[("claude", "anthropic", &claude), ("oai", "openai", &openai)],
            "failover: {max_failures: 1}",
        );
        let p = Proxy::start(&yaml);
        for _ in 0..2 {
            let r = self.post(&p, "m");
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.header("x-llm-proxy-provider"), Some("oai"));
            assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"));
        }
        assert_eq!(claude.count(), 0);
        // Its breaker is closed: chat still goes to it first.
        let r = p.chat("m");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("claude"));
        assert_eq!(r.json()["choices"][0]["message"]["content"], "from claude");

        // A model served only by Anthropic cannot serve the endpoint at all.
        let only = Proxy::start(&config_for("c", &[("claude", "anthropic", &claude)], ""));
        let r = self.post(&only, "c");
        assert_eq!(r.status, 400, "{}", r.body);
        let e = r.error();
        assert_eq!(e["code"], "unsupported_endpoint");
        assert_eq!(e["param"], "model");
        assert!(e["message"].as_str().unwrap().contains(self.path), "{e}");
        assert_eq!(claude.count(), 1, "only the chat request reached it");
    }
}
