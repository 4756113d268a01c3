//! Issue 13, per-provider breaker settings: `providers.NAME.max_failures`
//! and `providers.NAME.cooldown` override `failover:` for that provider, in
//! the breaker, in a 429's `Retry-After` cap, in the 503's `Retry-After`,
//! in the log and in `--check-config`; a reload applies new values from
//! the provider's next verdict. (The cooldown's clock itself is tested
//! with a manual clock in src/health.rs.)

mod support;

use llm_proxy::Config;
use support::*;

const FAILOVER: &str = "failover: {max_failures: 3, cooldown: 600}";

/// Providers `quick` (its own `max_failures: 1, cooldown: 7`), `steady`
/// (the `failover:` defaults) and `backup`; models `q` (quick, then
/// backup), `s` (steady, then backup), and `quick-only`, `steady-only`.
fn two_breakers(quick: &Fake, steady: &Fake, backup: &Fake) -> String {
    format!(
        "{FAILOVER}
providers:
  quick:
    type: openai
    api_key: sk-quick-key-000001
    base_url: {}
    max_failures: 1
    cooldown: 7
  steady:
    type: openai
    api_key: sk-steady-key-000001
    base_url: {}
  backup:
    type: openai
    api_key: sk-backup-key-000001
    base_url: {}
models:
  q:
    providers:
      quick: {{priority: 0}}
      backup: {{priority: 1}}
  s:
    providers:
      steady: {{priority: 0}}
      backup: {{priority: 1}}
  quick-only:
    providers:
      quick: {{priority: 0}}
  steady-only:
    providers:
      steady: {{priority: 0}}
",
        quick.base_url(),
        steady.base_url(),
        backup.base_url()
    )
}

fn chat(url: &str, model: &str) -> Resp {
    call(
        url,
        "/v1/chat/completions",
        &[],
        Some(&chat_body(model, false)),
    )
}

fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {r:?}"))
        .parse()
        .unwrap()
}

/// Two providers with different settings: each breaker opens at its own
/// count, for its own cooldown, and says so in the log and the 503.
#[test]
fn two_providers_with_their_own_settings_break_independently() {
    let (quick, steady) = (
        Fake::new(Reply::error(500, "quick down")),
        Fake::new(Reply::error(500, "steady down")),
    );
    let backup = Fake::ok("from-backup");
    let mut p = Logged::start(&two_breakers(&quick, &steady, &backup));
    // quick opens at its first failure.
    for _ in 0..3 {
        let r = chat(&p.url, "q");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"));
    }
    assert_eq!(quick.count(), 1);
    // steady takes the failover's three.
    for _ in 0..5 {
        assert_eq!(chat(&p.url, "s").status, 200);
    }
    assert_eq!(steady.count(), 3);
    // Nothing tried; each 503 says when its own provider is back.
    let r = chat(&p.url, "quick-only");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!((6..=7).contains(&retry_after(&r)), "{r:?}");
    let r = chat(&p.url, "steady-only");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!((599..=600).contains(&retry_after(&r)), "{r:?}");
    assert_eq!((quick.count(), steady.count()), (1, 3));
    let log = p.finish();
    let opened: Vec<&str> = log.lines().filter(|l| l.contains("breaker open")).collect();
    assert_eq!(opened.len(), 2, "{log}");
    assert!(
        opened[0].contains("provider quick failed") && opened[0].contains("breaker open for 7 s"),
        "{opened:?}"
    );
    assert!(
        opened[1].contains("provider steady failed")
            && opened[1].contains("breaker open for 600 s"),
        "{opened:?}"
    );
    for key in ["sk-quick-key-000001", "sk-steady-key-000001"] {
        assert!(
            leaked_fragments(&log, key, 8).is_empty(),
            "{key} in the log"
        );
    }
}

/// A 429's `Retry-After` is capped at the provider's own cooldown, not the
/// failover's.
#[test]
fn retry_after_is_capped_at_the_providers_own_cooldown() {
    let limited = Fake::new(Reply::error(429, "slow down").with_header("Retry-After", "3600"));
    let other = Fake::new(Reply::error(429, "slow down").with_header("Retry-After", "3600"));
    let yaml = format!(
        "failover: {{max_failures: 5, cooldown: 600}}
providers:
  limited:
    type: openai
    base_url: {}
    cooldown: 4
  other:
    type: openai
    base_url: {}
models:
  l:
    providers:
      limited: {{priority: 0}}
  o:
    providers:
      other: {{priority: 0}}
",
        limited.base_url(),
        other.base_url()
    );
    let p = Proxy::start(&yaml);
    for (model, fake, range) in [("l", &limited, 3..=4), ("o", &other, 599..=600)] {
        assert_eq!(p.chat(model).status, 503);
        // One failure of five: not open, but kept out by the Retry-After.
        let r = p.chat(model);
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(fake.count(), 1, "{model}");
        assert!(range.contains(&retry_after(&r)), "{model}: {r:?}");
    }
}

/// The overrides are validated like the `failover:` keys, with the same
/// bounds and messages, naming the provider's path.
#[test]
fn bad_per_provider_values_are_refused_with_their_path() {
    let base = "providers:\n  a:\n    type: openai\n    base_url: http://127.0.0.1:9/v1\n";
    let models = "models:\n  m:\n    providers:\n      a: {priority: 0}\n";
    let cases: &[(&str, &str)] = &[
        (
            "max_failures: 0",
            "providers.a.max_failures: 0 is out of range (1-4294967295)",
        ),
        (
            "max_failures: 4294967296",
            "providers.a.max_failures: 4294967296 is out of range (1-4294967295)",
        ),
        (
            "max_failures: 1.5",
            "providers.a.max_failures: expected an integer, got 1.5",
        ),
        (
            "cooldown: 0",
            "providers.a.cooldown: must be a positive number of seconds, got 0",
        ),
        (
            "cooldown: -1",
            "providers.a.cooldown: must be a positive number of seconds, got -1",
        ),
        (
            "cooldown: soon",
            "providers.a.cooldown: expected a number, got \"soon\"",
        ),
        (
            "cooldown: 1e10",
            "providers.a.cooldown: must be a positive number of seconds, got 10000000000",
        ),
    ];
    for (line, want) in cases {
        let yaml = format!("{base}    {line}\n{models}");
        let e = Config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(e.starts_with(want), "{line}: {e}");
        // The same value under failover: the same message.
        let yaml = format!("failover:\n  {line}\n{base}{models}");
        let f = Config::from_yaml(&yaml).unwrap_err().to_string();
        assert_eq!(f.replacen("failover.", "providers.a.", 1), e, "{line}");
    }
    // A value from a variable is named by the variable, never shown: it
    // may be a key put in the wrong place.
    let secret = "sk-live-wrong-place-0123456789";
    let env = move |k: &str| (k == "COOLDOWN").then(|| secret.to_string());
    for line in ["cooldown: ${COOLDOWN}", "max_failures: ${COOLDOWN}"] {
        let yaml = format!("{base}    {line}\n{models}");
        let e = Config::from_yaml_with_env(&yaml, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"${COOLDOWN}\" (value not shown)"), "{e}");
        assert!(leaked_fragments(&e, secret, 8).is_empty(), "{e}");
    }
    // Both keys valid: set on the provider, the others inherit failover:.
    let yaml = format!(
        "failover: {{max_failures: 4, cooldown: 90}}\n{base}    max_failures: 2\n    cooldown: 0.5\n  b:\n    type: openai\n{models}"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let (a, b) = (c.provider("a").unwrap(), c.provider("b").unwrap());
    assert_eq!((a.max_failures, a.cooldown.as_secs_f64()), (2, 0.5));
    assert_eq!((b.max_failures, b.cooldown.as_secs_f64()), (4, 90.0));
    // --check-config prints each provider's own.
    let s = c.summary();
    let line = |n: &str| {
        s.lines()
            .find(|l| l.trim_start().starts_with(&format!("{n}: type=")))
            .unwrap_or_else(|| panic!("no line for {n}:\n{s}"))
            .to_string()
    };
    assert!(line("a").ends_with(" max_failures=2 cooldown=0.5s"), "{s}");
    assert!(line("b").ends_with(" max_failures=4 cooldown=90s"), "{s}");
}

/// A reload keeps the breaker (its count and its running cooldown) and
/// applies the new settings from the provider's next verdict; a running
/// cooldown is neither shortened nor lengthened by a reload.
#[test]
fn a_reload_applies_new_settings_from_the_next_verdict() {
    let down = Fake::new(Reply::error(500, "down"));
    let yaml = |settings: &str| {
        format!(
            "providers:\n  p:\n    type: openai\n    base_url: {}\n{settings}models:\n  m:\n    providers:\n      p: {{priority: 0}}\n",
            down.base_url()
        )
    };
    let file = ConfigFile::new(&yaml("    max_failures: 3\n    cooldown: 600\n"));
    let source = llm_proxy::lifecycle::Source {
        path: Some(file.path().into()),
        host: None,
        port: Some(0),
    };
    let handle = llm_proxy::start_from(source.load().unwrap(), None, source).unwrap();
    let url = format!("http://{}", handle.addr());
    // One failure of three: closed, nothing to wait for.
    let r = chat(&url, "m");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), None, "{r:?}");

    // Now two of two opens it, for the new 5 s (not 600).
    file.write(&yaml("    max_failures: 2\n    cooldown: 5\n"));
    let summary = handle.reload().unwrap();
    assert_eq!(summary.kept_breakers, ["p"]);
    let r = chat(&url, "m");
    assert_eq!(r.status, 503);
    assert_eq!(down.count(), 2);
    assert!((4..=5).contains(&retry_after(&r)), "{r:?}");
    let r = chat(&url, "m");
    assert_eq!(down.count(), 2, "open: not tried");
    assert!((4..=5).contains(&retry_after(&r)), "{r:?}");

    // Back to 600 while open: the running 5 s is kept.
    file.write(&yaml("    max_failures: 2\n    cooldown: 600\n"));
    handle.reload().unwrap();
    let r = chat(&url, "m");
    assert_eq!(down.count(), 2);
    assert!((1..=5).contains(&retry_after(&r)), "{r:?}");
    handle.shutdown();
}
