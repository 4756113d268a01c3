//! The `llm-proxy` binary: flags, `--check-config`, and what reaches the
//! log (request lines, failed attempts, and never an API key).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_llm-proxy");

fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(text: &str) -> tempfile::TempPath {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.into_temp_path()
}

#[test]
fn version_help_and_bad_arguments() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("llm-proxy "), "{out}");
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in ["--config", "--host", "--port", "--check-config"] {
        assert!(out.contains(flag), "{out}");
    }
    let (code, _, err) = run(&["--frobnicate"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"), "{err}");
    let (code, _, err) = run(&[], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn check_config_prints_a_redacted_summary() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.yaml");
    let key = "sk-proj-check-config-secret-123";
    let ant_key = "sk-ant-check-config-secret-456";
    let (code, out, err) = run(
        &["--config", example, "--check-config"],
        &[("OPENAI_API_KEY", key), ("ANTHROPIC_API_KEY", ant_key)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("config OK"), "{out}");
    assert!(out.contains("gpt-4o-mini"), "{out}");
    assert!(out.contains("type=anthropic"), "{out}");
    assert!(out.contains("api_key=set (redacted)"), "{out}");
    // Each model's tiers, with each provider's share of its tier.
    assert!(
        out.contains(
            "  gpt-4o:\n    tier 0: anthropic@claude-sonnet-4-5 10%, openai@gpt-4o 90%, ollama@llama3.2 spare\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  claude-sonnet:\n    tier 0: anthropic@claude-3-5-sonnet-latest 100%\n    tier 1: openai@gpt-4o 100%\n"),
        "{out}"
    );
    assert!(!out.contains(key) && !err.contains(key));
    assert!(!out.contains(ant_key) && !err.contains(ant_key));

    // Missing variable: non-zero, naming the variable and the key.
    let (code, _, err) = Command::new(BIN)
        .args(["--config", example, "--check-config"])
        .env_remove("OPENAI_API_KEY")
        .env("ANTHROPIC_API_KEY", ant_key)
        .output()
        .map(|o| {
            (
                o.status.code().unwrap(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
    assert!(err.contains("providers.openai.api_key"), "{err}");

    let bad =
        write_config("providers: {}\nmodels:\n  m:\n    providers:\n      nope: {priority: 0}\n");
    let (code, _, err) = run(&["--config", bad.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("models.m.providers.nope: no such provider"),
        "{err}"
    );

    let (code, _, err) = run(&["--config", "/nonexistent.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent.yaml"), "{err}");
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: Vec<String>,
}

impl Running {
    /// Start the proxy with `--config config --host 127.0.0.1 --port 0` and
    /// debug logs; returns once it logged its address.
    fn start(config: &str, extra: &[&str]) -> (Running, String) {
        let mut cmd = Command::new(BIN);
        cmd.args(["--config", config, "--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .env("LLM_PROXY_LOG", "debug");
        Running::spawn(cmd)
    }

    /// Spawn `cmd` with stderr captured line by line; returns once the proxy
    /// logged the address it listens on, with that URL.
    fn spawn(mut cmd: Command) -> (Running, String) {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut r = Running {
            child,
            lines: rx,
            reader: Some(reader),
            log: Vec::new(),
        };
        let line = r.wait_for("listening on http://");
        let url = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        (r, url)
    }

    /// Block until a log line containing `needle` arrives.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}; got {:?}", self.log));
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Stop the process and return everything it logged.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
        self.log.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_each_request_and_failure_but_never_a_key() {
    let key_a = "sk-proj-AAAAsecretAAAA-0123456789";
    let key_b = "sk-ant-BBBBsecretBBBB-9876543210";
    let a = Fake::new(Reply::error(
        401,
        &format!("Incorrect API key provided: {key_a}"),
    ));
    let b = Fake::new(Reply::error(
        500,
        &format!("internal error for key {key_b}"),
    ));
    let cfg = write_config(&format!(
        r#"
server: {{port: 1}}
providers:
  alpha:
    type: openai
    api_key: ${{TEST_KEY_A}}
    base_url: {}
  beta:
    type: openai
    api_key: ${{TEST_KEY_B}}
    base_url: {}
models:
  gpt-4:
    providers:
      alpha: {{priority: 0}}
      beta: {{priority: 1}}
"#,
        a.base_url(),
        b.base_url()
    ));
    // The keys come from the environment, as in production.
    run_with_keys(&cfg, key_a, key_b, |run, url| {
        let client = agent();
        let r = client
            .post(format!("{url}/v1/chat/completions"))
            .header("x-request-id", "log-test-1")
            .send(chat_body("gpt-4", false))
            .unwrap();
        assert_eq!(r.status(), 503);
        let body = r.into_body().read_to_string().unwrap();
        assert!(!body.contains(key_a) && !body.contains(key_b), "{body}");
        assert!(body.contains("[redacted]"), "{body}");

        // The upstreams did get the real keys.
        assert_eq!(
            a.requests()[0].header("authorization").unwrap(),
            format!("Bearer {key_a}")
        );
        let line = run.wait_for("log-test-1 POST /v1/chat/completions");
        for part in [
            "model=gpt-4",
            "provider=beta",
            "attempts=2",
            "status=503",
            "ms",
        ] {
            assert!(line.contains(part), "{line}");
        }
        let r = client
            .post(format!("{url}/v1/chat/completions"))
            .header("x-request-id", "log-test-2")
            .send(chat_body("gpt-4", true))
            .unwrap();
        assert_eq!(r.status(), 503);
        run.wait_for("log-test-2 POST");
    });
}

/// Start the binary with the two keys in its environment, run `f`, then
/// check everything it logged.
fn run_with_keys(
    cfg: &tempfile::TempPath,
    key_a: &str,
    key_b: &str,
    f: impl FnOnce(&mut Running, &str),
) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", cfg.to_str().unwrap(), "--port", "0"])
        .env("LLM_PROXY_LOG", "trace")
        .env("TEST_KEY_A", key_a)
        .env("TEST_KEY_B", key_b);
    let (mut run, url) = Running::spawn(cmd);
    f(&mut run, &url);
    let all = run.finish();
    assert!(
        all.contains("provider alpha failed") && all.contains("provider beta failed"),
        "warn lines for each failed attempt:\n{all}"
    );
    assert!(all.contains("WARN"), "{all}");
    for key in [key_a, key_b] {
        assert!(!all.contains(key), "a key reached the log:\n{all}");
        // Not even a fragment long enough to matter.
        assert!(
            !all.contains(&key[..16]),
            "a key fragment reached the log:\n{all}"
        );
    }
}

#[test]
fn flags_override_the_config_and_the_demo_config_serves() {
    let fake = Fake::ok("hello");
    let cfg = write_config(&format!(
        "server: {{host: 0.0.0.0, port: 1}}\nproviders:\n  p:\n    type: openai\n    base_url: {}\nmodels:\n  m:\n    providers:\n      p: {{priority: 0}}\n",
        fake.base_url()
    ));
    let (mut run, url) = Running::start(cfg.to_str().unwrap(), &[]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let r = agent().get(format!("{url}/health")).call().unwrap();
    assert_eq!(r.status(), 200);
    run.wait_for("GET /health");
}

#[test]
fn check_config_reports_every_error_one_per_line() {
    let bad = write_config(
        "server:\n  port: 99999\nproviders:\n  p:\n    type: gemini\nmodels:\n  m:\n    providers:\n      nope: {priority: 0}\n",
    );
    let path = bad.to_str().unwrap();
    let (code, out, err) = run(&["--config", path, "--check-config"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!out.contains("config OK"), "{out}");
    let mut lines = err.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("llm-proxy: invalid config: {path}: 3 errors:")
    );
    let rest: Vec<&str> = lines.map(str::trim).collect();
    assert_eq!(
        rest,
        [
            "server.port: 99999 is out of range (0-65535)",
            "providers.p.type: unknown provider type \"gemini\" (expected one of: openai, azure, anthropic)",
            "models.m.providers.nope: no such provider",
        ],
        "{err}"
    );
}

/// Run the binary and wait for it to exit, killing it after 20 s (a proxy
/// that unexpectedly serves would never exit on its own).
fn run_to_exit(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr reaches EOF when the process exits.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        let _ = tx.send(text);
    });
    let Ok(err) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{args:?} did not exit");
    };
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn a_port_in_use_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let cfg = write_config(
        "providers:\n  p:\n    type: openai\nmodels:\n  m:\n    providers:\n      p: {priority: 0}\n",
    );
    let (code, err) = run_to_exit(&[
        "--config",
        cfg.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: address already in use"
        )),
        "{err}"
    );
}

/// `scripts/demo.sh` with the debug binaries, all ports as given (0: any
/// free one), its stdout piped and its stderr in a file. Dropping it stops
/// it as Ctrl-C would (SIGTERM; its trap stops the proxy and the mocks).
struct Demo {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: tempfile::NamedTempFile,
    shown: Vec<String>,
}

impl Demo {
    fn start(proxy_port: u16) -> Demo {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
            .env("PORT", proxy_port.to_string())
            .env("MOCK_A_PORT", "0")
            .env("MOCK_B_PORT", "0")
            .env("LLM_PROXY_BIN", BIN)
            .env("LLM_PROXY_MOCK_BIN", env!("CARGO_BIN_EXE_llm-proxy-mock"))
            .env_remove("LLM_PROXY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            stdout: rx,
            stderr,
            shown: Vec::new(),
        }
    }

    /// The next stdout line containing `needle`, or None once stdout closed.
    fn wait_for(&mut self, needle: &str) -> Option<String> {
        loop {
            match self.stdout.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    self.shown.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("demo.sh: nothing with {needle:?}; stdout: {:?}", self.shown)
                }
            }
        }
    }

    /// SIGTERM (what the trap handles), then the exit code; 30 s at most.
    fn stop(&mut self) -> Option<i32> {
        if self.child.try_wait().unwrap().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        self.exit_code()
    }

    /// Wait for the script to end by itself; 30 s at most.
    fn exit_code(&mut self) -> Option<i32> {
        let (tx, rx) = mpsc::channel();
        let pid = self.child.id();
        let waiter = std::thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(30)).is_err() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let status = self.child.wait().unwrap();
        let _ = tx.send(());
        waiter.join().unwrap();
        status.code()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn demo_refuses_a_port_another_server_answers_on() {
    // Another HTTP server on the demo's port, answering /health with 200.
    let other = Fake::ok("not the proxy");
    let port: u16 = other
        .root_url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mut demo = Demo::start(port);
    let running = demo.wait_for("is running");
    let code = demo.exit_code();
    let err = demo.stderr();
    assert!(running.is_none(), "reported as running: {running:?}\n{err}");
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("in use"),
        "no clear message naming the address: {err}"
    );
}

#[test]
fn demo_serves_through_the_mocks_and_stops_everything_on_sigterm() {
    let mut demo = Demo::start(0);
    let line = demo
        .wait_for("is running on http://")
        .unwrap_or_else(|| panic!("demo.sh ended: {}", demo.stderr()));
    let url = line
        .split("running on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let r = agent()
        .post(format!("{url}/v1/chat/completions"))
        .send(chat_body("gpt-4o-mini", false))
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().read_to_string().unwrap();
    assert!(body.contains("Hello from mock-"), "{body}");

    assert_eq!(demo.stop(), Some(143), "{}", demo.stderr());
    // The trap stopped the proxy: nothing listens on its port any more.
    let addr = url.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the proxy outlived demo.sh"
    );
}

#[test]
fn check_config_notes_a_model_no_provider_can_serve_for_an_endpoint() {
    let yaml = "providers:\n  claude:\n    type: anthropic\n    api_key: sk-ant-note-000001\n  oai:\n    type: openai\n    api_key: sk-oai-note-000001\nmodels:\n  c:\n    providers:\n      claude: {priority: 0}\n  both:\n    providers:\n      claude: {priority: 0}\n      oai: {priority: 1}\n";
    let cfg = write_config(yaml);
    let (code, out, err) = run(&["--config", cfg.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(code, 0, "a note, not an error: {err}");
    let notes: Vec<&str> = out.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(
        notes,
        [
            "note: model c cannot serve /v1/completions, /v1/embeddings: none of its providers supports it"
        ],
        "{out}"
    );
}
