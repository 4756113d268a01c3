//! Client keys (`auth:`), against real sockets and fake upstreams: who may
//! call, which models, how often and how many at once; refusals reach no
//! provider and no breaker; keys appear in no response and no log; a
//! reload keeps a key's rate-limit state.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const UPSTREAM_KEY: &str = "fake-upstream-alpha-bravo-charlie";
const KEY_A: &str = "fake-client-a-delta-echo-foxtrot";
const KEY_B: &str = "fake-client-b-golf-hotel-india";

/// Models `m1` and `m2` on one provider `up`, whose breaker opens at the
/// first failure; then `auth` as given (YAML text, may be empty).
fn config(up: &Fake, auth: &str) -> String {
    format!(
        "failover:
  max_failures: 1
  cooldown: 600
providers:
  up:
    type: openai
    base_url: {}
    api_key: {UPSTREAM_KEY}
models:
  m1:
    providers:
      up: {{priority: 0}}
  m2:
    providers:
      up: {{priority: 0}}
{auth}",
        up.base_url()
    )
}

/// `team-a` (only `m1`, `extra` appended to its entry) and `team-b` (all).
fn two_keys(extra: &str) -> String {
    format!(
        "auth:
  keys:
    - name: team-a
      key: {KEY_A}
      models: [m1]
{extra}    - name: team-b
      key: {KEY_B}
"
    )
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn chat_as(url: &str, key: &str, model: &str) -> Resp {
    let auth = bearer(key);
    call(
        url,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        Some(&chat_body(model, false)),
    )
}

#[test]
fn a_missing_unknown_or_malformed_key_gets_the_same_401() {
    let up = Fake::ok("hi");
    let p = Proxy::start(&config(&up, &two_keys("")));
    let (wrong, longer, basic) = (
        bearer("sk-not-a-key"),
        bearer(&format!("{KEY_A}x")),
        format!("Basic {KEY_A}"),
    );
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", &wrong)],
        vec![("authorization", &longer)],
        vec![("authorization", KEY_A)],
        vec![("authorization", &basic)],
        vec![("authorization", "Bearer")],
    ];
    let mut bodies = Vec::new();
    for h in &cases {
        let r = call(
            &p.url,
            "/v1/chat/completions",
            h,
            Some(&chat_body("m1", false)),
        );
        assert_eq!(r.status, 401, "{h:?}: {}", r.body);
        let e = r.error();
        assert_eq!(e["code"], "invalid_api_key");
        assert_eq!(e["type"], "invalid_request_error");
        bodies.push(r.body);
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:#?}");
    // Every path but the health checks: known, unknown, wrong method, and
    // outside /v1, so that no path's existence leaks.
    for path in ["/v1/models", "/v1/models/m1", "/v1/nope", "/nope"] {
        let r = call(&p.url, path, &[], None);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.body, bodies[0], "{path}");
    }
    assert_eq!(up.count(), 0);
    // With a key, the 404 and the 405.
    let auth = bearer(KEY_B);
    assert_eq!(
        call(&p.url, "/v1/nope", &[("authorization", &auth)], None).status,
        404
    );
    let r = call(
        &p.url,
        "/v1/models",
        &[("authorization", &auth)],
        Some("{}"),
    );
    assert_eq!(r.status, 405);
    // The scheme in any case (RFC 9110), the upstream gets its own key.
    let lower = format!("bearer {KEY_B}");
    let r = call(
        &p.url,
        "/v1/chat/completions",
        &[("authorization", &lower)],
        Some(&chat_body("m1", false)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = &up.requests()[0];
    assert_eq!(
        got.header("authorization"),
        Some(bearer(UPSTREAM_KEY).as_str())
    );
    let sent = format!("{:?}{}", got.headers, String::from_utf8_lossy(&got.body));
    assert!(leaked_fragments(&sent, KEY_B, 8).is_empty(), "{sent}");
}

#[test]
fn a_model_outside_the_allow_list_gets_403_and_models_are_filtered() {
    let up = Fake::ok("hi");
    let p = Proxy::start(&config(&up, &two_keys("")));
    for model in ["m2", "no-such-model"] {
        // 403 for a model that does not exist either: a restricted key
        // learns nothing about which models exist.
        let r = chat_as(&p.url, KEY_A, model);
        assert_eq!(r.status, 403, "{model}: {}", r.body);
        let e = r.error();
        assert_eq!(e["code"], "model_not_allowed");
        assert_eq!(e["param"], "model");
    }
    assert_eq!(up.count(), 0);
    let (a, b) = (bearer(KEY_A), bearer(KEY_B));
    let ids = |key: &str| -> Vec<String> {
        let r = call(&p.url, "/v1/models", &[("authorization", key)], None);
        assert_eq!(r.status, 200);
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&a), ["m1"]);
    assert_eq!(ids(&b), ["m1", "m2"]);
    let r = call(&p.url, "/v1/models/m2", &[("authorization", &a)], None);
    assert_eq!(r.status, 403);
    assert_eq!(r.error()["code"], "model_not_allowed");
    let r = call(&p.url, "/v1/models/m1", &[("authorization", &a)], None);
    assert_eq!(r.status, 200);
    assert_eq!(chat_as(&p.url, KEY_A, "m1").status, 200);
    assert_eq!(chat_as(&p.url, KEY_B, "m2").status, 200);
    assert_eq!(up.count(), 2);
}

#[test]
fn rpm_is_exact_under_concurrency() {
    let up = Fake::ok("hi");
    let p = Proxy::start(&config(&up, &two_keys("      rpm: 10\n")));
    let barrier = Arc::new(Barrier::new(50));
    let url = Arc::new(p.url.clone());
    let answers: Vec<Resp> = (0..50)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), url.clone());
            thread::spawn(move || {
                barrier.wait();
                chat_as(&url, KEY_A, "m1")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let (ok, limited): (Vec<&Resp>, Vec<&Resp>) = answers.iter().partition(|r| r.status == 200);
    assert_eq!(
        ok.len(),
        10,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(limited.len(), 40);
    assert_eq!(up.count(), 10);
    // Each success saw its own count: remaining 9, 8, ..., 0.
    let mut remaining: Vec<u32> = ok
        .iter()
        .map(|r| {
            assert_eq!(r.header("x-ratelimit-limit-requests"), Some("10"));
            let reset = r.header("x-ratelimit-reset-requests").unwrap();
            assert!(reset.ends_with('s'), "{reset}");
            r.header("x-ratelimit-remaining-requests")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..10).collect::<Vec<_>>());
    for r in limited {
        assert_eq!(r.status, 429, "{}", r.body);
        let e = r.error();
        assert_eq!(e["code"], "rate_limit_exceeded");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("10"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
        let reset = r.header("x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with('s') && reset.len() > 1, "{reset}");
    }
    // Another key has limits of its own.
    assert_eq!(chat_as(&p.url, KEY_B, "m1").status, 200);
    assert_eq!(up.count(), 11);
}

/// A stream for `model` as `key`, its first `data:` line read.
fn open_stream_as(url: &str, key: &str) -> (BufReader<impl Read>, String) {
    let resp = agent()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", bearer(key))
        .send(chat_body("m1", true))
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = BufReader::new(resp.into_body().into_reader());
    let first = next_data(&mut r).expect("a first event");
    (r, first)
}

fn next_data(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(d) = line.trim_end().strip_prefix("data: ") {
            return Some(d.to_string());
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn max_concurrent_counts_streams_until_they_end() {
    let up = Fake::new(Reply::ByStream {
        json: Box::new(Reply::completion("hi")),
        stream: Box::new(Reply::chunks(&["x"], End::Done)),
    });
    let (g1, g2) = (Gate::new(), Gate::new());
    up.push(Reply::chunks(&["one"], End::DoneAfter(g1.clone())));
    up.push(Reply::chunks(&["two"], End::DoneAfter(g2.clone())));
    let p = Proxy::start(&config(&up, &two_keys("      max_concurrent: 2\n")));
    let (mut s1, _) = open_stream_as(&p.url, KEY_A);
    let (mut s2, _) = open_stream_as(&p.url, KEY_A);
    let r = chat_as(&p.url, KEY_A, "m1");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.error()["code"], "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(up.count(), 2);
    // Another key is not affected.
    assert_eq!(chat_as(&p.url, KEY_B, "m1").status, 200);

    g1.open();
    let mut rest = Vec::new();
    while let Some(d) = next_data(&mut s1) {
        rest.push(d);
    }
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    // The slot is given back when the request ends, just after the last
    // byte reaches the client: wait for the proxy to count it finished.
    let controller = p.handle.as_ref().unwrap().controller();
    wait_until("the first stream's request to end", || {
        controller.in_flight() == 1
    });
    assert_eq!(chat_as(&p.url, KEY_A, "m1").status, 200);
    g2.open();
    while next_data(&mut s2).is_some() {}
    wait_until("the second stream's request to end", || {
        controller.in_flight() == 0
    });
    let (_s3, _) = open_stream_as(&p.url, KEY_A);
    let (_s4, _) = open_stream_as(&p.url, KEY_A);
}

#[test]
fn refused_requests_reach_no_provider_and_no_breaker() {
    let up = Fake::ok("hi");
    let p = Proxy::start(&config(&up, &two_keys("      rpm: 1\n")));
    assert_eq!(chat_as(&p.url, KEY_A, "m1").status, 200);
    assert_eq!(up.count(), 1);
    let refusals = [
        call(
            &p.url,
            "/v1/chat/completions",
            &[],
            Some(&chat_body("m1", false)),
        ),
        chat_as(&p.url, "sk-unknown", "m1"),
        chat_as(&p.url, KEY_A, "m1"),
        chat_as(&p.url, KEY_A, "m1"),
    ];
    let statuses: Vec<u16> = refusals.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 429, 429]);
    let r = chat_as(&p.url, KEY_B, "no-such-model");
    assert_eq!(r.status, 404);
    assert_eq!(up.count(), 1);
    // max_failures is 1: had any refusal counted against `up`, its breaker
    // would be open and this would be a 503 that never reached it.
    let r = chat_as(&p.url, KEY_B, "m1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-llm-proxy-provider"), Some("up"));
    assert_eq!(up.count(), 2);
}

#[test]
fn health_checks_need_no_key() {
    let up = Fake::ok("hi");
    let p = Proxy::start(&config(&up, &two_keys("")));
    for path in ["/health", "/health/ready"] {
        assert_eq!(call(&p.url, path, &[], None).status, 200, "{path}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_key_given_as_its_sha256_works() {
    let up = Fake::ok("hi");
    let digest = ring::digest::digest(&ring::digest::SHA256, KEY_A.as_bytes());
    let digest = hex(digest.as_ref());
    let auth = format!(
        "auth:\n  keys:\n    - name: hashed\n      key_sha256: {}\n",
        digest.to_uppercase()
    );
    let p = Proxy::start(&config(&up, &auth));
    assert_eq!(chat_as(&p.url, KEY_A, "m1").status, 200);
    // The digest is not the key.
    assert_eq!(chat_as(&p.url, &digest, "m1").status, 401);
    assert_eq!(up.count(), 1);
}

#[test]
fn client_keys_appear_in_no_response_and_no_log() {
    let up = Fake::new(Reply::ByStream {
        json: Box::new(Reply::completion("hi")),
        stream: Box::new(Reply::chunks(&["a", "b"], End::Done)),
    });
    let mut p = Logged::start(&config(&up, &two_keys("      rpm: 3\n")));
    let url = p.url.clone();
    let mut seen = String::new();
    let mut keep = |r: Resp| {
        seen.push_str(&format!("{} {:?} {}\n", r.status, r.headers, r.body));
        r.status
    };
    assert_eq!(keep(chat_as(&url, KEY_A, "m1")), 200);
    assert_eq!(keep(chat_as(&url, KEY_A, "m2")), 403);
    let auth = bearer(KEY_A);
    let r = call(
        &url,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        Some(&chat_body("m1", true)),
    );
    assert_eq!(keep(r), 200);
    assert_eq!(keep(chat_as(&url, KEY_A, "m1")), 429);
    // Near misses: the key with a typo, cut, or in the wrong scheme.
    let near = [
        format!("{KEY_B}x"),
        KEY_B[..KEY_B.len() - 1].to_string(),
        format!("x{KEY_A}"),
    ];
    for k in &near {
        assert_eq!(keep(chat_as(&url, k, "m1")), 401);
    }
    let basic = format!("Basic {KEY_B}");
    assert_eq!(
        keep(call(&url, "/v1/models", &[("authorization", &basic)], None)),
        401
    );
    let b = bearer(KEY_B);
    assert_eq!(
        keep(call(&url, "/v1/models", &[("authorization", &b)], None)),
        200
    );
    assert_eq!(keep(call(&url, "/health", &[], None)), 200);
    let log = p.finish();
    for key in [KEY_A, KEY_B] {
        let leaks = leaked_fragments(&seen, key, 8);
        assert!(leaks.is_empty(), "responses leak {leaks:?}:\n{seen}");
        let leaks = leaked_fragments(&log, key, 8);
        assert!(leaks.is_empty(), "the log leaks {leaks:?}:\n{log}");
    }
    // The access log names the key (or `-`).
    for (needle, n) in [
        ("key=team-a", 4),
        ("key=team-b", 1),
        ("key=- model=- provider=- attempts=0 status=401", 4),
    ] {
        let found = log.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(found, n, "{needle}:\n{log}");
    }
    assert!(
        log.contains("POST /v1/chat/completions key=team-a"),
        "{log}"
    );
}

#[test]
fn an_open_proxy_on_a_public_address_logs_one_warning() {
    let up = Fake::ok("hi");
    let warnings = |host: &str, auth: &str| -> usize {
        let yaml = format!("server:\n  host: {host}\n{}", config(&up, auth));
        let mut p = Logged::start(&yaml);
        p.finish()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("no `auth` section"))
            .count()
    };
    assert_eq!(warnings("0.0.0.0", ""), 1);
    assert_eq!(warnings("127.0.0.1", ""), 0);
    assert_eq!(warnings("0.0.0.0", &two_keys("")), 0);
}

#[test]
fn a_reload_keeps_the_rpm_state_of_a_key_whose_name_is_unchanged() {
    let up = Fake::ok("hi");
    let keys = |b_name: &str| {
        format!(
            "auth:\n  keys:\n    - name: team-a\n      key: {KEY_A}\n      rpm: 2\n    - name: {b_name}\n      key: {KEY_B}\n      rpm: 1\n"
        )
    };
    let cfg = ConfigFile::new(&config(&up, &keys("team-b")));
    let source = llm_proxy::lifecycle::Source {
        path: Some(cfg.path().into()),
        host: Some("127.0.0.1".into()),
        port: Some(0),
    };
    let handle = llm_proxy::start_from(source.load().unwrap(), None, source).unwrap();
    let url = format!("http://{}", handle.addr());
    assert_eq!(chat_as(&url, KEY_A, "m1").status, 200);
    assert_eq!(chat_as(&url, KEY_A, "m1").status, 200);
    assert_eq!(chat_as(&url, KEY_A, "m1").status, 429);
    assert_eq!(chat_as(&url, KEY_B, "m1").status, 200);
    assert_eq!(chat_as(&url, KEY_B, "m1").status, 429);

    // team-b is renamed: a new key as far as limits go.
    cfg.write(&config(&up, &keys("team-c")));
    handle.reload().unwrap();
    let r = chat_as(&url, KEY_A, "m1");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(chat_as(&url, KEY_B, "m1").status, 200);
    assert_eq!(up.count(), 4);
    handle.shutdown();
}

fn config_error(auth: &str) -> String {
    let up = Fake::ok("hi");
    let env = |k: &str| (k == "SET_KEY").then(|| KEY_B.to_string());
    llm_proxy::Config::from_yaml_with_env(&config(&up, auth), &env)
        .expect_err("invalid")
        .to_string()
}

#[test]
fn auth_config_errors_name_the_yaml_path_and_never_the_key() {
    let sha = hex(ring::digest::digest(&ring::digest::SHA256, KEY_A.as_bytes()).as_ref());
    for (auth, want) in [
        ("auth:\n  keys: []\n".to_string(), "auth.keys: at least one key"),
        ("auth: {}\n".to_string(), "auth.keys: at least one key"),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}, key_sha256: {sha}}}\n"),
            "auth.keys[0]: give `key` or `key_sha256`, not both",
        ),
        (
            "auth:\n  keys:\n    - {name: a}\n".to_string(),
            "auth.keys[0]: `key` or `key_sha256` is required",
        ),
        (
            "auth:\n  keys:\n    - {name: a, key_sha256: abc}\n".to_string(),
            "auth.keys[0].key_sha256: must be 64 hex digits",
        ),
        (
            format!("auth:\n  keys:\n    - {{key: {KEY_A}}}\n"),
            "auth.keys[0].name: is required",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: 'a b', key: {KEY_A}}}\n"),
            "auth.keys[0].name: may contain only",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}}}\n    - {{name: a, key: {KEY_B}}}\n"),
            "auth.keys[1].name: \"a\" is already used",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}}}\n    - {{name: b, key_sha256: {sha}}}\n"),
            "auth.keys[1]: the same key as \"a\"",
        ),
        (
            "auth:\n  keys:\n    - {name: a, key: \"${SET_KEY}\"}\n    - {name: b, key: \"${SET_KEY}\"}\n".to_string(),
            "auth.keys[1]: the same key as \"a\"",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}, models: [m1, nope]}}\n"),
            "auth.keys[0].models[1]: no such model \"nope\"",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}, models: []}}\n"),
            "auth.keys[0].models: an empty list allows nothing",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}, rpm: 0}}\n"),
            "auth.keys[0].rpm: 0 is out of range (1-100000)",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}, max_concurrent: 0}}\n"),
            "auth.keys[0].max_concurrent: 0 is out of range",
        ),
        (
            "auth:\n  keys:\n    - {name: a, key: \"${UNSET_KEY}\"}\n".to_string(),
            "auth.keys[0].key:",
        ),
        (
            "auth:\n  keys:\n    - {name: a, key: \"\"}\n".to_string(),
            "auth.keys[0].key: must not be empty",
        ),
        (
            format!("auth:\n  keys:\n    - {{name: a, key: {KEY_A}, secret: 1}}\n"),
            "unknown field `secret`",
        ),
    ] {
        let e = config_error(&auth);
        assert!(e.contains(want), "want {want:?} in:\n{e}");
        for key in [KEY_A, KEY_B, sha.as_str()] {
            let leaks = leaked_fragments(&e, key, 8);
            assert!(leaks.is_empty(), "{leaks:?} in:\n{e}");
        }
    }
}

#[test]
fn the_summary_shows_names_and_limits_never_keys() {
    let up = Fake::ok("hi");
    let sha = hex(ring::digest::digest(&ring::digest::SHA256, KEY_B.as_bytes()).as_ref());
    let auth = format!(
        "auth:\n  keys:\n    - {{name: team-a, key: {KEY_A}, models: [m1], rpm: 600, max_concurrent: 20}}\n    - {{name: ops, key_sha256: {sha}, admin: true}}\n"
    );
    let c = llm_proxy::Config::from_yaml(&config(&up, &auth)).unwrap();
    let s = c.summary();
    assert!(s.contains("auth (2 keys):"), "{s}");
    assert!(
        s.contains("team-a: models=m1 rpm=600 max_concurrent=20 admin=false"),
        "{s}"
    );
    assert!(
        s.contains("ops: models=all rpm=unlimited max_concurrent=unlimited admin=true"),
        "{s}"
    );
    let debug = format!("{c:?}");
    let digest_a = hex(ring::digest::digest(&ring::digest::SHA256, KEY_A.as_bytes()).as_ref());
    for text in [&s, &debug] {
        for secret in [KEY_A, KEY_B, sha.as_str(), digest_a.as_str()] {
            let leaks = leaked_fragments(text, secret, 8);
            assert!(leaks.is_empty(), "{leaks:?} in:\n{text}");
        }
    }
    let open = llm_proxy::Config::from_yaml(&config(&up, "")).unwrap();
    assert!(open.summary().contains("auth: none (open to every client)"));
}
