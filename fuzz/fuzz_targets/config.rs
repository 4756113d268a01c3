//! Arbitrary bytes → `Config::from_yaml_with_env` with a fixed environment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_proxy::fuzzing::Config;

const KEY: &str = "sk-fuzz-0123456789abcdef";

/// A fixed environment that sets what the shipped examples read.
fn env(name: &str) -> Option<String> {
    if name.ends_with("_KEY") {
        return Some(KEY.into());
    }
    let v = match name {
        "EMPTY" => "",
        "PORT" | "MOCK_A_PORT" | "MOCK_B_PORT" => "8080",
        "HOST" => "127.0.0.1",
        "AZURE_OPENAI_API_VERSION" => "2024-10-21",
        "AZURE_OPENAI_RESOURCE" => "fuzz",
        n if n.ends_with("_BASE_URL") => "http://127.0.0.1:9/v1",
        _ => return None,
    };
    Some(v.into())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // Config::load reads the file as UTF-8 first
    };
    let Ok(config) = Config::from_yaml_with_env(text, &env) else {
        return;
    };
    // --check-config prints this; the keys are redacted in it.
    let summary = config.summary();
    let debug = format!("{config:?}");
    assert!(!debug.contains(KEY), "a key in the config's Debug form");
    assert!(!summary.is_empty());
    assert!(config.server.workers >= 1);
    for m in config.models.values() {
        assert!(!m.routes.is_empty(), "model {} has no route", m.name);
        assert!(m.routes.iter().all(|r| r.provider < config.providers.len()));
    }
});
