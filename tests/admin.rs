//! The admin API (`/admin/`), against real sockets and fake upstreams: what
//! it reports, the effect of disable / enable / reset on routing, reload,
//! and the access rule.

mod support;

use serde_json::Value;
use support::*;

const ADMIN_KEY: &str = "fake-admin-mike-november-oscar";
const USER_KEY: &str = "fake-user-papa-quebec-romeo";

const FAILOVER: &str = "failover:\n  max_failures: 1\n  cooldown: 600\n";

fn providers(p: &Proxy) -> Vec<Value> {
    let r = p.get("/admin/providers");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].as_array().unwrap().clone()
}

fn provider(p: &Proxy, name: &str) -> Value {
    providers(p)
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no provider {name}"))
}

fn model_available(p: &Proxy, id: &str) -> (bool, Vec<String>) {
    let r = p.get("/admin/models");
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap()
        .clone();
    let names = m["available_providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (m["available"].as_bool().unwrap(), names)
}

#[test]
fn disable_takes_a_provider_out_of_rotation_and_enable_puts_it_back() {
    let (primary, backup) = (Fake::ok("from-primary"), Fake::ok("from-backup"));
    let p = primary_backup(&primary, &backup, FAILOVER);
    let r = p.post("/admin/providers/primary/disable", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "disabled");
    assert_eq!(provider(&p, "primary")["state"], "disabled");
    assert_eq!(model_available(&p, "m"), (true, vec!["backup".to_string()]));
    // The metric dashboards read: a disabled provider is not up.
    let up = |p: &Proxy| {
        let m = p.get("/metrics").body;
        (
            m.contains("llm_proxy_provider_up{provider=\"primary\"} 1"),
            m.contains("llm_proxy_provider_up{provider=\"backup\"} 1"),
        )
    };
    assert_eq!(up(&p), (false, true));

    for _ in 0..3 {
        let r = p.chat("m");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    }
    assert_eq!(primary.count(), 0, "a disabled provider gets no request");
    let v = provider(&p, "primary");
    assert_eq!(
        (v["requests"].as_u64(), v["failures"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(provider(&p, "backup")["requests"], 3);

    let r = p.post("/admin/providers/primary/enable", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "closed");
    assert_eq!(up(&p), (true, true));
    let r = p.chat("m");
    assert_eq!(r.header("x-llm-proxy-provider"), Some("primary"));
    assert_eq!(primary.count(), 1);
}

#[test]
fn a_model_whose_only_provider_is_disabled_is_unavailable() {
    let only = Fake::ok("x");
    let p = Proxy::start(&config_for("m", &[("only", "openai", &only)], FAILOVER));
    assert!(model_available(&p, "m").0);
    assert_eq!(p.post("/admin/providers/only/disable", "").status, 200);
    assert_eq!(model_available(&p, "m"), (false, vec![]));
    let r = p.chat("m");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.error()["code"], "providers_unavailable");
    assert_eq!(only.count(), 0);
}

#[test]
fn reset_closes_an_open_breaker_and_the_provider_gets_the_next_request() {
    let (primary, backup) = (Fake::ok("from-primary"), Fake::ok("from-backup"));
    primary.push(Reply::error(500, "boom"));
    let p = primary_backup(&primary, &backup, FAILOVER);
    // One failure opens the breaker (max_failures 1); the backup answers.
    assert_eq!(p.chat("m").header("x-llm-proxy-provider"), Some("backup"));
    let v = provider(&p, "primary");
    assert_eq!(v["state"], "open", "{v}");
    assert_eq!(v["consecutive_failures"], 1);
    assert_eq!(v["failures"], 1);
    assert_eq!(v["requests"], 1);
    assert!(v["last_error"].as_str().unwrap().contains("500"), "{v}");
    let at = v["last_failure_at"].as_str().unwrap();
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    let secs = v["available_in_seconds"].as_u64().unwrap();
    assert!((599..=600).contains(&secs), "{v}");
    // Still open: the next request skips it.
    assert_eq!(p.chat("m").header("x-llm-proxy-provider"), Some("backup"));
    assert_eq!(primary.count(), 1);

    let r = p.post("/admin/providers/primary/reset", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["state"], "closed", "{v}");
    assert_eq!(v["consecutive_failures"], 0);
    assert!(v["available_in_seconds"].is_null(), "{v}");
    let r = p.chat("m");
    assert_eq!(
        r.header("x-llm-proxy-provider"),
        Some("primary"),
        "{}",
        r.body
    );
    assert_eq!(primary.count(), 2);
}

#[test]
fn the_provider_list_never_shows_a_key() {
    let (primary, backup) = (Fake::ok("a"), Fake::ok("b"));
    let p = primary_backup(&primary, &backup, FAILOVER);
    let r = p.get("/admin/providers");
    assert_eq!(r.status, 200);
    for name in ["primary", "backup"] {
        let key = format!("sk-{name}-key-000001");
        assert!(leaked_fragments(&r.body, &key, 8).is_empty(), "{}", r.body);
    }
    let v = provider(&p, "primary");
    assert_eq!(v["type"], "openai");
    assert_eq!(v["base_url"], primary.base_url());
    assert_eq!(v["state"], "closed");
}

#[test]
fn unknown_provider_and_unknown_action() {
    let (primary, backup) = (Fake::ok("a"), Fake::ok("b"));
    let p = primary_backup(&primary, &backup, FAILOVER);
    let r = p.post("/admin/providers/nope/disable", "");
    assert_eq!(r.status, 404, "{}", r.body);
    let e = r.error();
    assert_eq!(e["code"], "provider_not_found");
    assert!(e["message"].as_str().unwrap().contains("nope"));
    let r = p.post("/admin/providers/primary/explode", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.error()["code"], "unknown_url");
    // An action is a POST.
    let r = p.get("/admin/providers/primary/disable");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

/// A proxy started in-process from a config file, so that
/// `POST /admin/reload` has a file to read again.
fn from_file(file: &ConfigFile) -> Proxy {
    let source = llm_proxy::lifecycle::Source {
        path: Some(file.path().into()),
        host: None,
        port: Some(0),
    };
    let config = source.load().expect("valid config");
    let handle = llm_proxy::start_from(config, None, source).expect("proxy starts");
    let addr = handle.addr();
    Proxy {
        handle: Some(handle),
        url: format!("http://{addr}"),
        addr,
    }
}

#[test]
fn disable_survives_a_reload_and_an_invalid_config_answers_400_with_its_path() {
    let (primary, backup) = (Fake::ok("from-primary"), Fake::ok("from-backup"));
    let yaml = config_for(
        "m",
        &[
            ("primary", "openai", &primary),
            ("backup", "openai", &backup),
        ],
        FAILOVER,
    );
    let file = ConfigFile::new(&yaml);
    let p = from_file(&file);
    assert_eq!(p.post("/admin/providers/primary/disable", "").status, 200);

    // Same providers, one more model: the disabled one stays disabled.
    file.write(&format!(
        "{yaml}  m2:\n    providers:\n      primary: {{priority: 0, model_id: x}}\n"
    ));
    let r = p.post("/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["models"], 2, "{v}");
    assert_eq!(provider(&p, "primary")["state"], "disabled");
    assert_eq!(model_available(&p, "m2"), (false, vec![]));
    assert_eq!(p.chat("m").header("x-llm-proxy-provider"), Some("backup"));
    assert_eq!(primary.count(), 0);

    // An invalid config: 400 naming the YAML path; the old one serves on.
    file.write(&yaml.replace("model_id: up-backup", "model_id: up-backup, bogus: 1"));
    let r = p.post("/admin/reload", "");
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.error();
    assert_eq!(e["code"], "invalid_config");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("models.m.providers.backup"), "{msg}");
    for name in ["primary", "backup"] {
        assert!(!r.body.contains(&format!("sk-{name}-key")), "{}", r.body);
    }
    let models = p.get("/v1/models").json();
    assert_eq!(models["data"].as_array().unwrap().len(), 2, "{models}");
    assert_eq!(p.chat("m2").status, 503);
    assert_eq!(p.chat("m").header("x-llm-proxy-provider"), Some("backup"));
}

fn auth_config(up: &Fake) -> String {
    config_for(
        "m",
        &[("up", "openai", up)],
        &format!(
            "{FAILOVER}auth:\n  keys:\n    - name: ops\n      key: {ADMIN_KEY}\n      admin: true\n    - name: team\n      key: {USER_KEY}\n"
        ),
    )
}

#[test]
fn with_auth_the_admin_api_needs_an_admin_key() {
    let up = Fake::ok("x");
    let mut p = Logged::start(&auth_config(&up));
    let bearer = |k: &str| format!("Bearer {k}");
    for path in ["/admin/providers", "/admin/models"] {
        let r = call(&p.url, path, &[], None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.error()["code"], "invalid_api_key");
        let r = call(&p.url, path, &[("Authorization", &bearer(USER_KEY))], None);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert_eq!(r.error()["code"], "admin_required");
        let r = call(&p.url, path, &[("Authorization", &bearer(ADMIN_KEY))], None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // A non-admin key cannot act either, and its attempt changes nothing.
    let path = "/admin/providers/up/disable";
    let r = call(
        &p.url,
        path,
        &[("Authorization", &bearer(USER_KEY))],
        Some(""),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(&p.url, path, &[], Some(""));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(
        &p.url,
        "/v1/chat/completions",
        &[("Authorization", &bearer(USER_KEY))],
        Some(&chat_body("m", false)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The admin key can; the action is logged with its name, not the key.
    let r = call(
        &p.url,
        path,
        &[("Authorization", &bearer(ADMIN_KEY))],
        Some(""),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "disabled");
    let r = call(
        &p.url,
        "/v1/chat/completions",
        &[("Authorization", &bearer(USER_KEY))],
        Some(&chat_body("m", false)),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(up.count(), 1);
    let log = p.finish();
    let line = log
        .lines()
        .find(|l| l.contains("admin disable provider up"))
        .unwrap_or_else(|| panic!("no admin log line:\n{log}"));
    assert!(
        line.contains("key=ops") && line.contains("client=127.0.0.1:"),
        "{line}"
    );
    for key in [ADMIN_KEY, USER_KEY, "sk-up-key-000001"] {
        assert!(
            leaked_fragments(&log, key, 12).is_empty(),
            "{key} in the log"
        );
    }
}

#[test]
fn without_auth_loopback_clients_may_act_and_it_is_logged_as_key_dash() {
    let up = Fake::ok("x");
    let mut p = Logged::start(&config_for("m", &[("up", "openai", &up)], FAILOVER));
    let r = call(&p.url, "/admin/providers/up/reset", &[], Some(""));
    assert_eq!(r.status, 200, "{}", r.body);
    let log = p.finish();
    let line = log
        .lines()
        .find(|l| l.contains("admin reset provider up"))
        .unwrap_or_else(|| panic!("no admin log line:\n{log}"));
    assert!(line.contains("key=- client=127.0.0.1:"), "{line}");
}

#[test]
fn disable_survives_sighup() {
    let (primary, backup) = (Fake::ok("from-primary"), Fake::ok("from-backup"));
    let yaml = config_for(
        "m",
        &[
            ("primary", "openai", &primary),
            ("backup", "openai", &backup),
        ],
        FAILOVER,
    );
    let file = ConfigFile::new(&yaml);
    let mut bin = Bin::start(file.path(), &["--host", "127.0.0.1", "--port", "0"]);
    let r = call(&bin.url, "/admin/providers/primary/disable", &[], Some(""));
    assert_eq!(r.status, 200, "{}", r.body);
    file.write(&yaml.replace("timeout: 2", "timeout: 3"));
    bin.signal("HUP");
    bin.wait_for("reload: now serving the new config");
    let r = call(&bin.url, "/admin/providers", &[], None);
    let v = r.json();
    let p = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "primary")
        .unwrap()
        .clone();
    assert_eq!(p["state"], "disabled", "{v}");
    let r = call(
        &bin.url,
        "/v1/chat/completions",
        &[],
        Some(&chat_body("m", false)),
    );
    assert_eq!(
        r.header("x-llm-proxy-provider"),
        Some("backup"),
        "{}",
        r.body
    );
    assert_eq!(primary.count(), 0);
    // A changed base_url is another provider: its state starts afresh.
    let moved = Fake::ok("moved");
    file.write(&yaml.replace(&primary.base_url(), &moved.base_url()));
    bin.signal("HUP");
    bin.wait_for("breaker state kept for [backup]");
    let r = call(
        &bin.url,
        "/v1/chat/completions",
        &[],
        Some(&chat_body("m", false)),
    );
    assert_eq!(
        r.header("x-llm-proxy-provider"),
        Some("primary"),
        "{}",
        r.body
    );
    assert_eq!(moved.count(), 1);
}
