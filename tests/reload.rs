//! Live reload (SIGHUP) against the binary: a new config takes effect under
//! load without an error to any client, requests in flight finish on the
//! old one, a provider cooling down stays cooling down, an invalid config
//! keeps the old one, and a port change needs a restart.

mod support;

use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use support::*;

const KEY: &str = "fake-reload-upstream-oscar-papa";

/// Model `m`: `down` first, then `second`; `port` written only if given.
fn config(down: &Fake, second: (&str, &Fake), port: Option<u16>) -> String {
    let server = match port {
        Some(p) => format!("server:\n  host: 127.0.0.1\n  port: {p}\n"),
        None => String::new(),
    };
    format!(
        "{server}failover:
  max_failures: 1
  cooldown: 600
providers:
  down:
    type: openai
    base_url: {}
    api_key: {KEY}
  {}:
    type: openai
    base_url: {}
    api_key: {KEY}
models:
  m:
    providers:
      down: {{priority: 0, model_id: d}}
      {}: {{priority: 1, model_id: s}}
",
        down.base_url(),
        second.0,
        second.1.base_url(),
        second.0,
    )
}

/// Answers JSON or a stream, each saying `word`.
fn answering(word: &str) -> Fake {
    Fake::new(Reply::ByStream {
        json: Box::new(Reply::completion(word)),
        stream: Box::new(Reply::chunks(&[word, "!"], End::Done)),
    })
}

/// One chat request; returns the answer's text (a stream's deltas, which
/// must end with [DONE]). Any error fails the test.
fn ask(url: &str, stream: bool) -> String {
    let resp = agent()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(chat_body("m", stream))
        .unwrap();
    assert_eq!(resp.status(), 200);
    if stream {
        let events = read_events(resp, |_| {});
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        delta_text(&events[..events.len() - 1])
            .trim_end_matches('!')
            .to_string()
    } else {
        let v: serde_json::Value = serde_json::from_reader(resp.into_body().into_reader()).unwrap();
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[test]
fn reload_under_load_switches_routes_and_keeps_cooldowns() {
    let down = Fake::new(Reply::error(500, "down"));
    let old = answering("old");
    let new = answering("new");
    // The first request fails on `down` (its breaker opens for 600 s) and
    // streams from `old`, held open across the reload.
    let held = Gate::new();
    old.push(Reply::chunks(&["held"], End::DoneAfter(held.clone())));
    let cfg = ConfigFile::new(&config(&down, ("old", &old), None));
    let mut bin = Bin::start(cfg.path(), &["--host", "127.0.0.1", "--port", "0"]);
    let in_flight = {
        let resp = agent()
            .post(format!("{}/v1/chat/completions", bin.url))
            .header("content-type", "application/json")
            .send(chat_body("m", true))
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-llm-proxy-provider"], "old");
        resp
    };
    assert_eq!(down.count(), 1);

    // 8 clients, streams and not, each a bounded number of requests.
    let reloaded = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (url, reloaded, done, answers) = (
                bin.url.clone(),
                reloaded.clone(),
                done.clone(),
                answers.clone(),
            );
            thread::spawn(move || {
                for n in 0..40 {
                    let after = reloaded.load(Ordering::SeqCst);
                    let word = ask(&url, (i + n) % 2 == 0);
                    answers.lock().unwrap().push((after, word));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Reload once the load is well under way.
    let mut seen = old.count();
    while done.load(Ordering::SeqCst) < 40 {
        old.wait_for(seen + 1);
        seen = old.count();
    }
    cfg.write(&config(&down, ("new", &new), None));
    bin.signal("HUP");
    let line = bin.wait_for("reload: now serving the new config");
    reloaded.store(true, Ordering::SeqCst);
    assert!(line.contains("breaker state kept for [down]"), "{line}");
    for c in clients {
        c.join().expect("no client saw an error");
    }

    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 8 * 40);
    // Started after the reload: the new route, every time.
    let after: Vec<_> = answers.iter().filter(|(a, _)| *a).collect();
    assert!(!after.is_empty());
    assert!(after.iter().all(|(_, w)| w == "new"), "{after:?}");
    assert!(answers.iter().any(|(_, w)| w == "old"));
    assert!(new.count() >= after.len());
    // `down` was cooling down before and still is: it got nothing more.
    assert_eq!(down.count(), 1);

    // The stream in flight at the reload finishes on the old config.
    held.open();
    let events = read_events(in_flight, |_| {});
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(delta_text(&events[..events.len() - 1]), "held");
    let log = bin.log_text();
    assert!(!log.contains(KEY), "{log}");
}

#[test]
fn an_invalid_config_keeps_the_old_one_and_a_port_change_needs_a_restart() {
    let down = Fake::new(Reply::error(500, "down"));
    let old = answering("old");
    let new = answering("new");
    // The port is the file's (no --port), so that a change to it is seen.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = ConfigFile::new(&config(&down, ("old", &old), Some(port)));
    let mut bin = Bin::start(cfg.path(), &[]);
    assert_eq!(bin.addr.port(), port);
    assert_eq!(ask(&bin.url, false), "old");

    // Invalid: the model names a provider that does not exist.
    let bad = config(&down, ("new", &new), Some(port))
        .replace("      new: {priority: 1", "      nope: {priority: 1");
    cfg.write(&bad);
    bin.signal("HUP");
    let line = bin.wait_for("reload failed; still serving the previous config");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(cfg.path()), "{line}");
    assert!(line.contains("models.m.providers.nope"), "{line}");
    assert_eq!(ask(&bin.url, false), "old");
    assert_eq!(ask(&bin.url, true), "old");

    // Valid, but on another port: the route changes, the port does not.
    cfg.write(&config(&down, ("new", &new), Some(port.wrapping_add(1))));
    bin.signal("HUP");
    let line = bin.wait_for("server.port changed; it needs a restart");
    assert!(line.contains("WARN"), "{line}");
    bin.wait_for("reload: now serving the new config");
    assert_eq!(ask(&bin.url, false), "new");
    assert_eq!(ask(&bin.url, true), "new");
    // Still the same listener; /health answers where it always did.
    let mut conn = BufReader::new(std::net::TcpStream::connect(bin.addr).unwrap());
    assert_eq!(raw_request(&mut conn, "GET", "/health").0, 200);
    let log = bin.log_text();
    assert!(!log.contains(KEY), "{log}");
}

#[test]
fn reload_keeps_the_environment_the_process_started_with() {
    // `${VAR}`s expand from the process's environment, which a reload
    // cannot change: a key changed in /etc/llm-proxy/env takes effect at
    // `systemctl restart` (which drains), not at a reload.
    let up = answering("up");
    let text = |model: &str| {
        format!(
            "providers:
  up:
    type: openai
    base_url: {}
    api_key: ${{RELOAD_TEST_KEY}}
models:
  {model}:
    providers:
      up: {{priority: 0, model_id: x}}
",
            up.base_url()
        )
    };
    let cfg = ConfigFile::new(&text("m"));
    let mut bin = Bin::start_with_env(
        cfg.path(),
        &["--host", "127.0.0.1", "--port", "0"],
        &[("RELOAD_TEST_KEY", "fake-first-quebec-romeo")],
    );
    cfg.write(&text("m2"));
    bin.signal("HUP");
    bin.wait_for("reload: now serving the new config");
    let resp = agent()
        .post(format!("{}/v1/chat/completions", bin.url))
        .header("content-type", "application/json")
        .send(chat_body("m2", false))
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = up.requests();
    assert_eq!(
        got.last().unwrap().header("authorization"),
        Some("Bearer fake-first-quebec-romeo")
    );
}

/// The reload as a function (what `POST /admin/reload` calls): a summary on
/// success, the `ConfigError` (file and YAML path) on failure.
#[test]
fn handle_reload_returns_a_summary_or_the_config_error() {
    let down = Fake::new(Reply::error(500, "down"));
    let old = answering("old");
    let new = answering("new");
    let cfg = ConfigFile::new(&config(&down, ("old", &old), None));
    let source = llm_proxy::lifecycle::Source {
        path: Some(cfg.path().into()),
        host: Some("127.0.0.1".into()),
        port: Some(0),
    };
    let handle = llm_proxy::start_from(source.load().unwrap(), None, source).unwrap();
    let url = format!("http://{}", handle.addr());
    assert_eq!(ask(&url, false), "old");

    cfg.write(&config(&down, ("new", &new), None).replace("cooldown: 600", "cooldown: -1"));
    let err = handle.reload().expect_err("invalid").to_string();
    assert!(
        err.contains(cfg.path()) && err.contains("failover.cooldown"),
        "{err}"
    );
    assert_eq!(ask(&url, false), "old");

    cfg.write(&config(&down, ("new", &new), Some(1)));
    let summary = handle.reload().unwrap();
    assert_eq!(summary.kept_breakers, vec!["down".to_string()]);
    // --port 0 (here: `Source::port`) wins over the file: no restart needed.
    assert!(summary.needs_restart.is_empty(), "{summary}");
    assert_eq!(ask(&url, false), "new");
    assert_eq!(down.count(), 1);
}
