//! Weights inside a priority, end to end: providers that share a priority
//! form a tier; a request tries its tier by weight, each provider once,
//! before the next tier; a `weight: 0` provider is a hot spare; a reload
//! that changes weights takes effect.

mod support;

use std::collections::BTreeSet;

use support::*;

const KEY: &str = "sk-weights-test-key-0123456789";

/// Model `m` over these `(name, fake, priority, weight)` routes, with
/// this `failover:` section.
fn config(routes: &[(&str, &Fake, u32, u32)], failover: &str) -> String {
    let mut providers = String::new();
    let mut model = String::new();
    for (name, fake, priority, weight) in routes {
        providers.push_str(&format!(
            "  {name}:\n    type: openai\n    base_url: {}\n    api_key: {KEY}\n    timeout: 5\n",
            fake.base_url()
        ));
        model.push_str(&format!(
            "      {name}: {{priority: {priority}, weight: {weight}, model_id: up-{name}}}\n"
        ));
    }
    format!("failover: {failover}\nproviders:\n{providers}models:\n  m:\n    providers:\n{model}")
}

/// Which provider each upstream call of the fakes went to, in the order
/// the proxy made them.
fn calls(fakes: &[(&str, &Fake)]) -> Vec<(u64, String)> {
    let mut all: Vec<(u64, String)> = fakes
        .iter()
        .flat_map(|(name, f)| {
            f.requests().into_iter().map(move |r| {
                assert_eq!(r.json()["model"], format!("up-{name}"));
                (r.arrival, name.to_string())
            })
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_failing_request_tries_each_provider_once_tier_by_tier() {
    let fail = || Fake::new(Reply::error(500, "upstream down"));
    let (a, b, spare, c, d) = (fail(), fail(), fail(), fail(), fail());
    // The breakers never open here: every request sees all five.
    let yaml = config(
        &[
            ("a", &a, 0, 2),
            ("b", &b, 0, 1),
            ("spare", &spare, 0, 0),
            ("c", &c, 1, 1),
            ("d", &d, 1, 1),
        ],
        "{max_failures: 1000}",
    );
    let p = Proxy::start(&yaml);
    const REQUESTS: usize = 40;
    for _ in 0..REQUESTS {
        let r = p.chat("m");
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-attempts"), Some("5"));
        assert!(!r.body.contains(KEY), "{}", r.body);
    }
    let fakes = [
        ("a", &a),
        ("b", &b),
        ("spare", &spare),
        ("c", &c),
        ("d", &d),
    ];
    for (name, f) in fakes {
        assert_eq!(f.count(), REQUESTS, "{name} once per request");
    }
    let calls = calls(&fakes);
    let mut first_of_tier0 = BTreeSet::new();
    let mut first_of_tier1 = BTreeSet::new();
    for request in calls.chunks(5) {
        let names: Vec<&str> = request.iter().map(|(_, n)| n.as_str()).collect();
        let set: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(set.len(), 5, "no provider twice: {names:?}");
        assert!(matches!(names[..2], ["a", "b"] | ["b", "a"]), "{names:?}");
        assert_eq!(names[2], "spare", "{names:?}");
        assert!(matches!(names[3..], ["c", "d"] | ["d", "c"]), "{names:?}");
        first_of_tier0.insert(names[0]);
        first_of_tier1.insert(names[3]);
    }
    // The order is drawn per request (all-equal draws: p < 1e-7).
    assert_eq!(first_of_tier0.len(), 2, "{calls:?}");
    assert_eq!(first_of_tier1.len(), 2, "{calls:?}");
}

#[test]
fn a_spare_serves_only_when_the_weighted_providers_of_its_tier_are_out() {
    let (a, b, spare, backup) = (
        Fake::ok("from a"),
        Fake::ok("from b"),
        Fake::ok("from spare"),
        Fake::ok("from backup"),
    );
    let yaml = config(
        &[
            ("a", &a, 0, 1),
            ("b", &b, 0, 1),
            ("spare", &spare, 0, 0),
            ("backup", &backup, 1, 1),
        ],
        "{max_failures: 1, cooldown: 600}",
    );
    let p = Proxy::start(&yaml);
    for _ in 0..20 {
        let r = p.chat("m");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(matches!(r.header("x-llm-proxy-provider"), Some("a" | "b")));
    }
    assert_eq!(a.count() + b.count(), 20);
    assert!(a.count() > 0 && b.count() > 0, "both share the tier");
    assert_eq!(spare.count(), 0);

    // `a` fails once: its breaker opens, `b` takes the tier alone.
    a.set_default(Reply::error(500, "a down"));
    for _ in 0..10 {
        let r = p.chat("m");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("b"));
    }
    assert_eq!(spare.count(), 0, "one weighted provider is still in");

    // `b` fails too: that request and the next go to the spare, not to
    // the next tier.
    b.set_default(Reply::error(500, "b down"));
    let (a_before, b_before) = (a.count(), b.count());
    for _ in 0..5 {
        let r = p.chat("m");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-llm-proxy-provider"), Some("spare"));
    }
    assert_eq!(a.count(), a_before, "a's breaker is open");
    assert_eq!(
        b.count(),
        b_before + 1,
        "b failed once, then its breaker opened"
    );
    assert_eq!(spare.count(), 5);
    assert_eq!(backup.count(), 0);
}

#[test]
fn a_reload_that_changes_weights_takes_effect() {
    let (old, new) = (Fake::ok("old"), Fake::ok("new"));
    let weights = |o: u32, n: u32| config(&[("old", &old, 0, o), ("new", &new, 0, n)], "{}");
    // Old only (new a spare), then new only (old a spare): no chance in it.
    let cfg = ConfigFile::new(&weights(1, 0));
    let mut bin = Bin::start(cfg.path(), &["--host", "127.0.0.1", "--port", "0"]);
    let ask = |url: &str| {
        let r = call(
            url,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            Some(&chat_body("m", false)),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.header("x-llm-proxy-provider").unwrap().to_string()
    };
    for _ in 0..10 {
        assert_eq!(ask(&bin.url), "old");
    }
    cfg.write(&weights(0, 1));
    bin.signal("HUP");
    bin.wait_for("reload: now serving the new config");
    for _ in 0..10 {
        assert_eq!(ask(&bin.url), "new");
    }
    assert_eq!((old.count(), new.count()), (10, 10));
    let log = bin.log_text();
    assert!(!log.contains(KEY), "{log}");
}
