//! `llm-proxy status`: the binary run against a running proxy; its table
//! and its exit codes (0 all models served, 1 some model has no available
//! provider, 2 the proxy cannot be reached or refuses the key).

mod support;

use std::process::Command;

use support::*;

const ADMIN_KEY: &str = "fake-operator-hotel-india-golf";
const USER_KEY: &str = "fake-member-lima-mike-tango";

/// Run `llm-proxy status` with `args` (and no admin key in the
/// environment unless given): exit code, stdout, stderr.
fn status(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("status")
        .args(args)
        .env_remove("LLM_PROXY_ADMIN_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Models `m` (primary, backup) and `solo` (solo only).
fn config(primary: &Fake, backup: &Fake, solo: &Fake, extra: &str) -> String {
    let mut yaml = config_for(
        "m",
        &[("primary", "openai", primary), ("backup", "openai", backup)],
        &format!("failover:\n  max_failures: 1\n  cooldown: 600\n{extra}"),
    );
    yaml = yaml.replace(
        "models:\n",
        &format!(
            "  solo:\n    type: openai\n    api_key: fake-solo-upstream-bravo-kilo\n    base_url: {}\nmodels:\n  solo:\n    providers:\n      solo: {{priority: 0, model_id: s}}\n",
            solo.base_url()
        ),
    );
    yaml
}

#[test]
fn all_up_exits_0_and_prints_every_provider() {
    let (primary, backup, solo) = (Fake::ok("a"), Fake::ok("b"), Fake::ok("c"));
    let p = Proxy::start(&config(&primary, &backup, &solo, ""));
    let (code, out, err) = status(&["--url", &p.url], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().unwrap();
    for col in [
        "PROVIDER",
        "TYPE",
        "STATE",
        "FAILURES",
        "LAST ERROR",
        "RECOVERS IN",
    ] {
        assert!(header.contains(col), "{out}");
    }
    for name in ["primary", "backup", "solo"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
        assert!(row.contains("openai") && row.contains("closed"), "{row}");
    }
    assert!(
        out.contains("Every model has an available provider"),
        "{out}"
    );
}

#[test]
fn a_model_whose_only_provider_is_disabled_exits_1_and_is_named() {
    let (primary, backup, solo) = (Fake::ok("a"), Fake::ok("b"), Fake::ok("c"));
    primary.push(Reply::error(500, "primary exploded"));
    let p = Proxy::start(&config(&primary, &backup, &solo, ""));
    // primary's breaker opens; m is still served by backup.
    assert_eq!(p.chat("m").header("x-llm-proxy-provider"), Some("backup"));
    let (code, out, err) = status(&["--url", &p.url], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let row = out.lines().find(|l| l.starts_with("primary")).unwrap();
    assert!(
        row.contains("open") && row.contains("primary exploded"),
        "{row}"
    );
    assert!(row.contains("1 (1 total)"), "{row}");
    assert!(row.contains("600s") || row.contains("599s"), "{row}");

    assert_eq!(p.post("/admin/providers/solo/disable", "").status, 200);
    let (code, out, err) = status(&["--url", &p.url], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let row = out.lines().find(|l| l.starts_with("solo")).unwrap();
    assert!(
        row.contains("disabled") && row.contains("until enabled"),
        "{row}"
    );
    assert!(
        out.contains("Models with no available provider: solo"),
        "{out}"
    );
    assert_eq!(p.post("/admin/providers/solo/enable", "").status, 200);
    assert_eq!(status(&["--url", &p.url], &[]).0, 0);
}

#[test]
fn keys_wrong_key_and_unreachable_exit_2_without_printing_the_key() {
    let (primary, backup, solo) = (Fake::ok("a"), Fake::ok("b"), Fake::ok("c"));
    let auth = format!(
        "auth:\n  keys:\n    - name: ops\n      key: {ADMIN_KEY}\n      admin: true\n    - name: team\n      key: {USER_KEY}\n"
    );
    let p = Proxy::start(&config(&primary, &backup, &solo, &auth));
    let (code, out, err) = status(&["--url", &p.url, "--key", ADMIN_KEY], &[]);
    assert_eq!(code, 0, "{out}{err}");
    // The key from the environment.
    let (code, out, err) = status(&["--url", &p.url], &[("LLM_PROXY_ADMIN_KEY", ADMIN_KEY)]);
    assert_eq!(code, 0, "{out}{err}");
    for (args, env, why) in [
        (vec!["--url", &p.url], vec![], "401"),
        (
            vec!["--url", &p.url, "--key", "fake-wrong-sierra-victor-echo"],
            vec![],
            "401",
        ),
        (vec!["--url", &p.url, "--key", USER_KEY], vec![], "403"),
        (
            vec!["--url", &p.url],
            vec![("LLM_PROXY_ADMIN_KEY", USER_KEY)],
            "403",
        ),
    ] {
        let (code, out, err) = status(&args, &env);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(why), "{err}");
        for key in [ADMIN_KEY, USER_KEY, "fake-wrong-sierra-victor-echo"] {
            assert!(leaked_fragments(&err, key, 8).is_empty(), "{err}");
        }
    }
    // Nothing listens there any more.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (code, _, err) = status(&["--url", &gone, "--key", ADMIN_KEY], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    assert!(leaked_fragments(&err, ADMIN_KEY, 8).is_empty(), "{err}");
}

#[test]
fn the_url_comes_from_the_config_file() {
    let (primary, backup, solo) = (Fake::ok("a"), Fake::ok("b"), Fake::ok("c"));
    let p = Proxy::start(&config(&primary, &backup, &solo, ""));
    let file = ConfigFile::new(&config(
        &primary,
        &backup,
        &solo,
        &format!("server:\n  host: 0.0.0.0\n  port: {}\n", p.addr.port()),
    ));
    assert_eq!(p.post("/admin/providers/solo/disable", "").status, 200);
    let (code, out, err) = status(&["--config", file.path()], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("solo"), "{out}");
}

#[test]
fn bad_arguments_exit_2() {
    let (code, _, err) = status(&["--bogus"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown argument"), "{err}");
    let (code, _, err) = status(&["--url"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--url needs a value"), "{err}");
}
