//! Issue 10 ("Hardening"), upstream errors: hostile `Retry-After` values,
//! 3xx answers, keys echoed in error bodies, and how many concurrent
//! requests a failing provider gets before its breaker opens.

mod support;

use support::*;

/// `primary` (priority 0) then `backup` (1) for `gpt-4`.
fn two(primary: &Fake, backup: &Fake, failover: &str) -> String {
    format!(
        r#"
server: {{workers: 128}}
failover: {failover}
providers:
  primary:
    type: openai
    api_key: sk-primary-key-0001
    base_url: {}
    timeout: 5
  backup:
    type: openai
    api_key: sk-backup-key-0002
    base_url: {}
    timeout: 5
models:
  gpt-4:
    providers:
      primary: {{priority: 0, model_id: up-primary}}
      backup: {{priority: 1, model_id: up-backup}}
"#,
        primary.base_url(),
        backup.base_url()
    )
}

// ---------------------------------------------------------------------------
// Retry-After

/// Every odd value: the 429 fails over to the backup (no 500), and the
/// failure reaches the breaker (with max_failures 1 the next request skips
/// the primary).
#[test]
fn odd_retry_after_values_fail_over_and_count() {
    let values = [
        "99999999999999999999",
        "18446744073709551616",
        "1e20",
        "-1",
        "NaN",
        "inf",
        "1.5",
        "",
        "soon, please",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 99 Nov 1994 08:49:37 GMT",
    ];
    for v in values {
        let primary = Fake::new(Reply::error(429, "slow down").with_header("Retry-After", v));
        let backup = Fake::ok("from backup");
        let p = Proxy::start(&two(&primary, &backup, "{max_failures: 1, cooldown: 60}"));
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 200, "Retry-After {v:?}: {}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"), "{v:?}");
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"), "{v:?}");
        // Counted: the breaker is open, the primary is not called again.
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 200, "{v:?}");
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"), "{v:?}");
        assert_eq!(primary.count(), 1, "{v:?}");
    }
}

/// A delay too large for any integer type saturates, and is then capped at
/// the cooldown like any long Retry-After.
#[test]
fn huge_retry_after_saturates_then_is_capped_at_the_cooldown() {
    for v in ["99999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let only = Fake::new(Reply::error(429, "later").with_header("Retry-After", v));
        let p = Proxy::start(&one(&only, "{max_failures: 5, cooldown: 3}"));
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 503, "{v:?}: {}", r.body);
        // Below max_failures, but the Retry-After keeps it out: nothing is
        // tried, and the 503 says when to come back (at most the cooldown).
        let r = p.chat("gpt-4");
        assert_eq!(r.status, 503, "{v:?}");
        assert_eq!(only.count(), 1, "{v:?}");
        let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((2..=3).contains(&secs), "{v:?}: {secs}");
    }
    // A date in the past keeps nothing out.
    let only = Fake::new(Reply::completion("ok"));
    only.push(
        Reply::error(429, "later").with_header("Retry-After", "Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    let p = Proxy::start(&one(&only, "{max_failures: 5, cooldown: 3}"));
    assert_eq!(p.chat("gpt-4").status, 503);
    assert_eq!(p.chat("gpt-4").status, 200);
    assert_eq!(only.count(), 2);
}

fn one(fake: &Fake, failover: &str) -> String {
    format!(
        r#"
failover: {failover}
providers:
  only:
    type: openai
    api_key: sk-only-key-0003
    base_url: {}
    timeout: 5
models:
  gpt-4:
    providers:
      only: {{priority: 0, model_id: up-only}}
"#,
        fake.base_url()
    )
}

// ---------------------------------------------------------------------------
// 3xx

/// A redirect is not followed, not passed to the client, and not a success:
/// it fails over and counts against the provider.
#[test]
fn redirects_fail_over_and_count_for_json_and_streams() {
    for status in [301, 302, 303, 307, 308] {
        for stream in [false, true] {
            let primary = Fake::new(
                Reply::raw(status, "").with_header("Location", "https://example.invalid/v1"),
            );
            let backup = Fake::new(if stream {
                Reply::chunks(&["from ", "backup"], End::Done)
            } else {
                Reply::completion("from backup")
            });
            let p = Proxy::start(&two(&primary, &backup, "{max_failures: 1, cooldown: 60}"));
            let what = format!("{status} stream={stream}");
            let r = p.post("/v1/chat/completions", &chat_body("gpt-4", stream));
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            assert_eq!(r.header("x-llm-proxy-provider"), Some("backup"), "{what}");
            assert_eq!(r.header("x-llm-proxy-attempts"), Some("2"), "{what}");
            assert!(r.body.contains("backup"), "{what}: {}", r.body);
            // Counted: max_failures 1 opened the breaker.
            let r = p.post("/v1/chat/completions", &chat_body("gpt-4", stream));
            assert_eq!(r.header("x-llm-proxy-attempts"), Some("1"), "{what}");
            assert_eq!(primary.count(), 1, "{what}");
            // Not followed.
            assert_eq!(backup.count(), 2, "{what}");
        }
    }
}

/// The 503 names the status and where the upstream wanted to send us, with
/// the key taken out of the Location and a long Location cut.
#[test]
fn redirect_failure_names_status_and_location_without_the_key() {
    let only = Fake::new(Reply::raw(307, "").with_header(
        "Location",
        "https://api.example.invalid/v1/chat/completions?key=sk-only-key-0003",
    ));
    let p = Proxy::start(&one(&only, "{max_failures: 3, cooldown: 60}"));
    let r = p.chat("gpt-4");
    assert_eq!(r.status, 503, "{}", r.body);
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("307"), "{msg}");
    assert!(msg.contains("redirect"), "{msg}");
    assert!(
        msg.contains("https://api.example.invalid/v1/chat/completions?key=[redacted]"),
        "{msg}"
    );
    assert!(!r.body.contains("sk-only-key-0003"), "{}", r.body);

    let long = format!("https://example.invalid/{}", "a".repeat(10_000));
    only.set_default(Reply::raw(302, "").with_header("Location", &long));
    let r = p.chat("gpt-4");
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("302"), "{msg}");
    assert!(msg.contains("https://example.invalid/aaaa"), "{msg}");
    assert!(msg.len() < 1000, "{} bytes: {msg}", msg.len());

    only.set_default(Reply::raw(301, ""));
    let msg = p.chat("gpt-4").error()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("301") && msg.contains("no Location"), "{msg}");
}
