//! Config loading: environment expansion and the validation messages, each
//! naming the YAML path it is about.

use std::time::Duration;

use llm_proxy::Config;
use llm_proxy::config::ProviderKind;

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

fn load(yaml: &str) -> Result<Config, String> {
    Config::from_yaml_with_env(yaml, &env(&[("KEY", "sk-from-env"), ("PORT", "9123")]))
        .map_err(|e| e.to_string())
}

fn err(yaml: &str) -> String {
    match load(yaml) {
        Ok(_) => panic!("config unexpectedly valid:\n{yaml}"),
        Err(e) => e,
    }
}

const GOOD: &str = r#"
server:
  port: ${PORT:-8000}
  workers: 16
failover:
  max_failures: 5
  cooldown: 30
providers:
  openai:
    type: openai
    api_key: ${KEY}
    base_url: ${BASE:-https://api.openai.com/v1/}
    timeout: 10
  local:
    type: openai
    base_url: http://127.0.0.1:11434/v1
models:
  gpt-4:
    providers:
      openai:
        priority: 0
        model_id: gpt-4-0613
      local:
        priority: 1
  llama:
    providers:
      local: {priority: 0, model_id: llama3}
"#;

#[test]
fn a_valid_config_with_env_expansion_and_defaults() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.server.port, 9123, "a number from ${{PORT}}");
    assert_eq!(c.server.host, "127.0.0.1");
    assert_eq!(c.server.workers, 16);
    assert_eq!(c.failover.max_failures, 5);
    assert_eq!(c.failover.cooldown, Duration::from_secs(30));
    let openai = c.provider("openai").unwrap();
    assert_eq!(openai.api_key.as_ref().unwrap().expose(), "sk-from-env");
    assert_eq!(
        openai.base_url, "https://api.openai.com/v1",
        "default, no slash"
    );
    assert_eq!(openai.timeout, Duration::from_secs(10));
    assert_eq!(openai.stream_timeout, Duration::from_secs(600));
    assert_eq!(openai.stream_idle_timeout, Duration::from_secs(60));
    let local = c.provider("local").unwrap();
    assert!(local.api_key.is_none());
    assert_eq!(local.timeout, Duration::from_secs(60));
    let m = &c.models["gpt-4"];
    assert_eq!(m.routes.len(), 2);
    assert_eq!(c.providers[m.routes[0].provider].name, "openai");
    assert_eq!(m.routes[0].model_id, "gpt-4-0613");
    assert_eq!(
        m.routes[1].model_id, "gpt-4",
        "model_id defaults to the name"
    );
    // The summary never shows the key.
    let s = c.summary();
    assert!(!s.contains("sk-from-env"), "{s}");
    assert!(s.contains("api_key=set (redacted)"), "{s}");
    assert!(!format!("{c:?}").contains("sk-from-env"));
}

#[test]
fn defaults_when_sections_are_missing() {
    let c = load(
        "providers:\n  p:\n    type: openai\nmodels:\n  m:\n    providers:\n      p:\n        priority: 0\n",
    )
    .unwrap();
    assert_eq!(c.server.port, 8000);
    assert_eq!(c.server.workers, 1024);
    assert_eq!(c.failover.max_failures, 3);
    assert_eq!(c.failover.cooldown, Duration::from_secs(600));
    assert_eq!(c.providers[0].base_url, "https://api.openai.com/v1");
}

#[test]
fn an_unset_variable_names_the_variable_and_the_path() {
    let e = err(&GOOD.replace("${KEY}", "${MISSING_KEY}"));
    assert!(e.contains("providers.openai.api_key"), "{e}");
    assert!(e.contains("MISSING_KEY"), "{e}");
}

#[test]
fn validation_messages_name_the_yaml_path() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "server:\n  port: ${PORT:-8000}",
            "server:\n  port: 8000\n  bogus: 1",
            &["bogus"],
        ),
        (
            "    timeout: 10",
            "    timeout: 10\n    colour: red",
            &["colour"],
        ),
        (
            "      local: {priority: 0, model_id: llama3}",
            "      backup: {priority: 0}",
            &["models.llama.providers.backup", "no such provider"],
        ),
        (
            "      local:\n        priority: 1",
            "      local:\n        priority: 1\n        weight: 1000001",
            &["models.gpt-4.providers.local.weight: 1000001 is out of range (0-1000000)"],
        ),
        (
            "      local:\n        priority: 1",
            "      local:\n        priority: 1\n        weight: -1",
            &["models.gpt-4.providers.local.weight: -1 is out of range (0-1000000)"],
        ),
        (
            "      local:\n        priority: 1",
            "      local:\n        priority: 1\n        weight: 0.5",
            &["models.gpt-4.providers.local.weight: expected an integer, got 0.5"],
        ),
        (
            "    base_url: http://127.0.0.1:11434/v1",
            "    base_url: localhost:11434",
            &["providers.local.base_url", "http://"],
        ),
        (
            "    base_url: http://127.0.0.1:11434/v1",
            "    base_url: http://host:99999/v1",
            &["providers.local.base_url", "port"],
        ),
        (
            "    type: openai\n    base_url: http://127",
            "    type: gemini\n    base_url: http://127",
            &["gemini"],
        ),
        ("  cooldown: 30", "  cooldown: -1", &["failover.cooldown"]),
        (
            "  max_failures: 5",
            "  max_failures: 0",
            &["failover.max_failures"],
        ),
        ("  workers: 16", "  workers: 0", &["server.workers"]),
        ("    timeout: 10", "    timeout: soon", &["timeout", "soon"]),
        (
            "    timeout: 10",
            "    timeout: 10\n    stream_idle_timeout: 0",
            &["providers.openai.stream_idle_timeout", "positive"],
        ),
    ];
    for (from, to, needles) in cases {
        assert!(GOOD.contains(from), "bad test case: {from}");
        let e = err(&GOOD.replacen(from, to, 1));
        for n in *needles {
            assert!(e.contains(n), "expected {n:?} in: {e}");
        }
    }
}

#[test]
fn models_need_providers() {
    let e = err("providers:\n  p:\n    type: openai\nmodels:\n  m:\n    providers: {}\n");
    assert!(e.contains("models.m.providers"), "{e}");
    let e = err("providers:\n  p:\n    type: openai\nmodels: {}\n");
    assert!(e.contains("models"), "{e}");
    let e = err("");
    assert!(e.contains("empty"), "{e}");
    let e = err("providers: [1, 2");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn the_shipped_example_configs_are_valid() {
    for path in ["config/config.yaml", "config/demo.yaml"] {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap();
        // Keys come from the environment; everything else has a default.
        let c = Config::from_yaml_with_env(&text, &|k| {
            k.ends_with("_KEY").then(|| "test-value".to_string())
        });
        assert!(c.is_ok(), "{path}: {}", c.err().unwrap());
    }
}

#[test]
fn anthropic_providers_have_defaults_and_their_own_keys() {
    let one = |fields: &str| {
        format!(
            "providers:\n  claude:\n    type: anthropic\n    api_key: ${{KEY}}\n{fields}models:\n  m:\n    providers:\n      claude: {{priority: 0}}\n"
        )
    };
    let c = load(&one("")).unwrap();
    let p = c.provider("claude").unwrap();
    assert_eq!(p.kind.as_str(), "anthropic");
    assert_eq!(p.base_url, "https://api.anthropic.com");
    assert_eq!(
        p.kind,
        ProviderKind::Anthropic {
            version: "2023-06-01".into(),
            max_tokens: 4096
        }
    );
    assert_eq!(p.api_key.as_ref().unwrap().expose(), "sk-from-env");

    let c = load(&one(
        "    base_url: http://127.0.0.1:9/\n    anthropic_version: 2024-01-01\n    max_tokens: ${PORT}\n",
    ))
    .unwrap();
    let p = c.provider("claude").unwrap();
    assert_eq!(p.base_url, "http://127.0.0.1:9");
    assert_eq!(
        p.kind,
        ProviderKind::Anthropic {
            version: "2024-01-01".into(),
            max_tokens: 9123
        }
    );

    let e = err(&one("    max_tokens: 0\n"));
    assert!(e.contains("providers.claude.max_tokens"), "{e}");
    let e = err(&one("    max_tokens: lots\n"));
    assert!(e.contains("providers.claude.max_tokens"), "{e}");
    let e = err(&one("    anthropic_version: ''\n"));
    assert!(e.contains("providers.claude.anthropic_version"), "{e}");
    let e = err(&one("    api_version: 2024-10-21\n"));
    assert!(
        e.contains("providers.claude.api_version: not used by type anthropic"),
        "{e}"
    );
    // And the anthropic-only keys are refused elsewhere.
    for key in ["anthropic_version: 2023-06-01", "max_tokens: 10"] {
        let e = err(&GOOD.replacen("    timeout: 10", &format!("    timeout: 10\n    {key}"), 1));
        assert!(e.contains("not used by type openai"), "{key}: {e}");
    }
    // OpenAI providers carry none of them.
    let c = load(GOOD).unwrap();
    assert_eq!(c.provider("openai").unwrap().kind, ProviderKind::OpenAi);
}

/// Apply each (from, to) edit to GOOD and expect the error to contain the
/// needle; report every case that does not.
fn expect_each(cases: &[(&str, &str, &str)]) {
    let mut wrong = Vec::new();
    for (from, to, needle) in cases {
        assert!(GOOD.contains(from), "bad test case: {from}");
        match load(&GOOD.replacen(from, to, 1)) {
            Ok(_) => wrong.push(format!("{to:?}: accepted, expected {needle:?}")),
            Err(e) if !e.contains(needle) => {
                wrong.push(format!("{to:?}: expected {needle:?} in: {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn duplicate_keys_are_rejected_at_any_depth_naming_the_path() {
    let cases: &[(&str, &str, &str)] = &[
        // Top level.
        (
            "failover:\n",
            "failover:\n  max_failures: 5\nfailover:\n",
            "failover: duplicate key",
        ),
        // A fixed key inside a provider.
        (
            "    timeout: 10\n",
            "    timeout: 10\n    timeout: 20\n",
            "providers.openai.timeout: duplicate key",
        ),
        // A user-chosen name: two providers called `local`.
        (
            "  local:\n    type: openai\n",
            "  local:\n    type: azure\n  local:\n    type: openai\n",
            "providers.local: duplicate key",
        ),
        // Two models with the same name.
        (
            "  llama:\n",
            "  gpt-4:\n    providers:\n      local: {priority: 0}\n  llama:\n",
            "models.gpt-4: duplicate key",
        ),
        // The same provider twice in one model.
        (
            "      local:\n        priority: 1\n",
            "      local:\n        priority: 1\n      local:\n        priority: 2\n",
            "models.gpt-4.providers.local: duplicate key",
        ),
        // Inside a flow mapping.
        (
            "{priority: 0, model_id: llama3}",
            "{priority: 0, model_id: llama3, priority: 1}",
            "models.llama.providers.local.priority: duplicate key",
        ),
        // Quoting does not make a different key.
        (
            "  local:\n    type: openai\n",
            "  local:\n    type: openai\n  \"local\":\n    type: openai\n",
            "providers.local: duplicate key",
        ),
    ];
    expect_each(cases);
}

#[test]
fn every_duplicate_key_is_reported() {
    let yaml = GOOD
        .replacen("  workers: 16\n", "  workers: 16\n  workers: 32\n", 1)
        .replacen(
            "  local:\n    type: openai\n",
            "  local:\n    type: openai\n  local:\n    type: openai\n",
            1,
        );
    let e = err(&yaml);
    assert!(e.contains("2 errors"), "{e}");
    assert!(e.contains("server.workers: duplicate key"), "{e}");
    assert!(e.contains("providers.local: duplicate key"), "{e}");
}

#[test]
fn every_validation_error_is_reported_not_just_the_first() {
    let yaml = GOOD
        .replacen("  port: ${PORT:-8000}", "  port: 99999", 1)
        .replacen(
            "    type: openai\n    base_url: http://127",
            "    type: gemini\n    base_url: http://127",
            1,
        )
        .replacen("  cooldown: 30", "  cooldown: -1", 1)
        .replacen(
            "      local: {priority: 0, model_id: llama3}",
            "      backup: {priority: 0}",
            1,
        );
    let text = err(&yaml);
    assert!(text.starts_with("4 errors:\n"), "{text}");
    // One line per error after the count, in the order of the file.
    let lines: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
    assert_eq!(lines.len(), 4, "{text}");
    for needle in [
        "server.port: 99999 is out of range (0-65535)",
        "failover.cooldown: ",
        "providers.local.type: unknown provider type \"gemini\"",
        "models.llama.providers.backup: no such provider",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(needle)),
            "no line starting with {needle:?} in {lines:#?}"
        );
    }
}

#[test]
fn one_broken_provider_does_not_make_its_routes_unknown() {
    // The provider exists; only its type is wrong. Saying "no such provider"
    // for the routes that use it would send the reader the wrong way.
    let e = err(&GOOD.replacen(
        "    type: openai\n    base_url: http://127",
        "    type: gemini\n    base_url: http://127",
        1,
    ));
    assert!(e.contains("providers.local.type"), "{e}");
    assert!(!e.contains("no such provider"), "{e}");
}

#[test]
fn integers_out_of_range_say_so_and_name_the_range() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "  port: ${PORT:-8000}",
            "  port: 99999",
            "server.port: 99999 is out of range (0-65535)",
        ),
        (
            "  port: ${PORT:-8000}",
            "  port: -1",
            "server.port: -1 is out of range (0-65535)",
        ),
        (
            "  port: ${PORT:-8000}",
            "  port: ${BIG:-70000}",
            "server.port: 70000 is out of range (0-65535)",
        ),
        (
            "  workers: 16",
            "  workers: 100001",
            "server.workers: 100001 is out of range (1-100000)",
        ),
        (
            "  workers: 16",
            "  workers: 0",
            "server.workers: 0 is out of range (1-100000)",
        ),
        (
            "  workers: 16",
            "  workers: 16\n  max_body_bytes: 100",
            "server.max_body_bytes: 100 is out of range (1024-",
        ),
        (
            "  max_failures: 5",
            "  max_failures: 4294967296",
            "failover.max_failures: 4294967296 is out of range (1-4294967295)",
        ),
        (
            "        priority: 1",
            "        priority: 99999999999",
            "models.gpt-4.providers.local.priority: 99999999999 is out of range (0-4294967295)",
        ),
        (
            "  port: ${PORT:-8000}",
            "  port: 80.5",
            "server.port: expected an integer, got 80.5",
        ),
        (
            "  port: ${PORT:-8000}",
            "  port: eighty",
            "server.port: expected an integer, got \"eighty\"",
        ),
    ];
    expect_each(cases);
    // The edges are accepted.
    let c = load(&GOOD.replacen("  port: ${PORT:-8000}", "  port: 65535", 1)).unwrap();
    assert_eq!(c.server.port, 65535);
    let c = load(&GOOD.replacen("  workers: 16", "  workers: 100000", 1)).unwrap();
    assert_eq!(c.server.workers, 100_000);
}

#[test]
fn a_variable_in_a_number_is_not_echoed_when_its_value_is_not_one() {
    // A secret put where a number belongs, by mistake: the message names
    // the variable, never its value.
    for (from, to) in [
        ("  port: ${PORT:-8000}", "  port: ${KEY}"),
        ("    timeout: 10", "    timeout: ${KEY}"),
    ] {
        let e = err(&GOOD.replacen(from, to, 1));
        assert!(e.contains("${KEY}"), "{e}");
        assert!(!e.contains("sk-from"), "the value reached the message: {e}");
    }
}

#[test]
fn azure_settings_live_on_the_kind() {
    let yaml = "providers:\n  az:\n    type: azure\n    base_url: https://r.openai.azure.com\n    api_version: ${V:-2024-10-21}\nmodels:\n  m:\n    providers:\n      az: {priority: 0}\n";
    let c = load(yaml).unwrap();
    assert_eq!(
        c.provider("az").unwrap().kind,
        ProviderKind::Azure {
            api_version: "2024-10-21".into()
        }
    );
    assert!(c.summary().contains(" api_version=2024-10-21\n"));
    // Empty after expansion is as good as missing.
    let e = err(&yaml.replace("${V:-2024-10-21}", "''"));
    assert!(
        e.contains("providers.az.api_version: is required for type azure"),
        "{e}"
    );
}

#[test]
fn an_unknown_type_still_has_its_common_keys_checked() {
    let e = err(&GOOD.replacen("type: openai", "type: gemini", 1).replacen(
        "    timeout: 10",
        "    timeout: -1\n    max_tokens: 5",
        1,
    ));
    assert!(
        e.contains("providers.openai.type: unknown provider type \"gemini\""),
        "{e}"
    );
    assert!(e.contains("providers.openai.timeout"), "{e}");
    // The kind is unknown, so whether max_tokens belongs to it is not judged.
    assert!(!e.contains("max_tokens"), "{e}");
}

#[test]
fn providers_sharing_a_priority_form_a_tier_with_weights() {
    let yaml = GOOD.replacen(
        "      local:\n        priority: 1\n",
        "      local:\n        priority: 0\n        weight: 3\n",
        1,
    );
    let c = load(&yaml).unwrap();
    let m = &c.models["gpt-4"];
    let names: Vec<(&str, u32, u32)> = m
        .routes
        .iter()
        .map(|r| (c.providers[r.provider].name.as_str(), r.priority, r.weight))
        .collect();
    // Within a tier, in name order; weight 1 unless set.
    assert_eq!(names, [("local", 0, 3), ("openai", 0, 1)]);
    assert_eq!(m.tiers.len(), 1);
    assert_eq!(m.tiers[0].priority, 0);
    assert_eq!(m.tiers[0].routes, 0..2);

    // Tiers in priority order, whatever the order in the file; a spare.
    let c = load(
        "providers:\n  p: {type: openai}\n  q: {type: openai}\n  r: {type: openai}\n  s: {type: openai}\nmodels:\n  m:\n    providers:\n      p: {priority: 7}\n      q: {priority: 2, weight: 0}\n      r: {priority: 7, weight: '${W:-5}'}\n      s: {priority: 2}\n",
    )
    .unwrap();
    let m = &c.models["m"];
    let tiers: Vec<(u32, Vec<(&str, u32)>)> = m
        .tiers
        .iter()
        .map(|t| {
            let routes = m
                .tier(t)
                .iter()
                .map(|r| (c.providers[r.provider].name.as_str(), r.weight))
                .collect();
            (t.priority, routes)
        })
        .collect();
    assert_eq!(
        tiers,
        [(2, vec![("q", 0), ("s", 1)]), (7, vec![("p", 1), ("r", 5)])]
    );
    let s = c.summary();
    assert!(
        s.contains("  m:\n    tier 2: s@m 100%, q@m spare\n    tier 7: p@m 16.7%, r@m 83.3%\n"),
        "{s}"
    );
}

/// `providers.NAME.responses`: native for Azure and OpenAI's own API,
/// translate for every other OpenAI-compatible server and always for
/// Anthropic (where the key is refused); shown by `--check-config`.
#[test]
fn responses_mode_defaults_overrides_and_refusals() {
    use llm_proxy::config::ResponsesMode::{Native, Translate};
    let models = "models:\n  m:\n    providers:\n      o: {priority: 0}\n";
    let c = load(&format!(
        "providers:\n  o: {{type: openai}}\n  oa: {{type: openai, base_url: 'https://API.openai.com:443/v1'}}\n  v: {{type: openai, base_url: 'http://127.0.0.1:8000/v1'}}\n  look: {{type: openai, base_url: 'https://api.openai.com.evil.example/v1'}}\n  az: {{type: azure, base_url: 'https://r.openai.azure.com', api_version: '2024-10-21'}}\n  an: {{type: anthropic}}\n  vn: {{type: openai, base_url: 'http://127.0.0.1:8000/v1', responses: native}}\n  ot: {{type: openai, responses: translate}}\n  azt: {{type: azure, base_url: 'https://r.openai.azure.com', api_version: '2024-10-21', responses: translate}}\n{models}"
    ))
    .unwrap();
    let mode = |n: &str| c.provider(n).unwrap().responses;
    assert_eq!(mode("o"), Native, "the default base_url is api.openai.com");
    assert_eq!(mode("oa"), Native);
    assert_eq!(mode("v"), Translate);
    assert_eq!(mode("look"), Translate, "a look-alike host is not OpenAI");
    assert_eq!(mode("az"), Native);
    assert_eq!(mode("an"), Translate);
    assert_eq!(mode("vn"), Native);
    assert_eq!(mode("ot"), Translate);
    assert_eq!(mode("azt"), Translate);
    let s = c.summary();
    assert!(
        s.contains("  v: type=openai ") && s.contains(" responses=translate "),
        "{s}"
    );
    let line = s.lines().find(|l| l.starts_with("  vn: ")).unwrap();
    assert!(line.contains(" responses=native "), "{line}");

    let e = err(&format!(
        "providers:\n  o: {{type: anthropic, responses: native}}\n{models}"
    ));
    assert!(
        e.contains("providers.o.responses: not used by type anthropic"),
        "{e}"
    );
    let e = err(&format!(
        "providers:\n  o: {{type: openai, responses: passthrough}}\n{models}"
    ));
    assert!(
        e.contains("providers.o.responses: must be native or translate"),
        "{e}"
    );
}
