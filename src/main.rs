//! The `llm-proxy` binary: arguments, logging, config, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use llm_proxy::lifecycle::{Source, catch_signals, watch_signals};

const USAGE: &str = "\
llm-proxy: an OpenAI-compatible proxy with priority failover across LLM providers

Usage:
  llm-proxy --config PATH [--host ADDR] [--port N]
  llm-proxy --config PATH --check-config
  llm-proxy status [--url URL] [--key KEY] [--config PATH]
  llm-proxy --version | --help

Options:
  -c, --config PATH   YAML config file (required)
      --host ADDR     bind address (overrides server.host; default 127.0.0.1)
  -p, --port N        bind port (overrides server.port; default 8000)
      --check-config  load and validate the config, print a summary with
                      secrets redacted, and exit
  -V, --version       print the version
  -h, --help          print this help

Status (ask a running proxy, through its admin API):
      --url URL       the proxy (default http://127.0.0.1:8000, or the
                      host and port of --config's server section)
      --key KEY       an admin client key (default: $LLM_PROXY_ADMIN_KEY)
  Exits 0 when every model has an available provider, 1 when some model
  has none, 2 when the proxy cannot be reached or refuses the key.

Environment:
  LLM_PROXY_LOG       log level (error, warn, info, debug, trace); overrides
                      server.log_level
  LLM_PROXY_ADMIN_KEY the admin key `llm-proxy status` sends
";

struct Args {
    config: PathBuf,
    host: Option<String>,
    port: Option<u16>,
    check: bool,
}

enum Parsed {
    Run(Args),
    Exit(ExitCode),
}

/// Command-line flags, `--name value` or `--name=value`, one at a time:
/// the proxy's and `status`'s parsers share it.
struct Flags<I> {
    it: I,
    /// The value of the current flag when it came as `--name=value`.
    inline: Option<String>,
}

impl<I: Iterator<Item = String>> Flags<I> {
    fn new(it: I) -> Self {
        Flags { it, inline: None }
    }

    /// The next flag's name.
    fn next_flag(&mut self) -> Option<String> {
        let arg = self.it.next()?;
        self.inline = None;
        match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => {
                self.inline = Some(v.to_string());
                Some(f.to_string())
            }
            _ => Some(arg),
        }
    }

    /// The current flag's value: after its `=`, else the next argument.
    fn value(&mut self, name: &str) -> Result<String, String> {
        self.inline
            .take()
            .or_else(|| self.it.next())
            .ok_or_else(|| format!("{name} needs a value"))
    }
}

fn parse_args() -> Result<Parsed, String> {
    let mut config = None;
    let mut host = None;
    let mut port = None;
    let mut check = false;
    let mut flags = Flags::new(std::env::args().skip(1));
    while let Some(flag) = flags.next_flag() {
        let mut value = |name: &str| flags.value(name);
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(Parsed::Exit(ExitCode::SUCCESS));
            }
            "-V" | "--version" => {
                println!("llm-proxy {}", env!("CARGO_PKG_VERSION"));
                return Ok(Parsed::Exit(ExitCode::SUCCESS));
            }
            "-c" | "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--host" => host = Some(value("--host")?),
            "-p" | "--port" => {
                let v = value("--port")?;
                port = Some(v.parse().map_err(|_| format!("invalid --port {v:?}"))?);
            }
            "--check-config" => check = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let config = config.ok_or("--config PATH is required")?;
    Ok(Parsed::Run(Args {
        config,
        host,
        port,
        check,
    }))
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("status") {
        return status::run(std::env::args().skip(2));
    }
    let args = match parse_args() {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Exit(code)) => return code,
        Err(e) => {
            eprintln!("llm-proxy: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // A reload (SIGHUP) reads the file again with the same overrides.
    let source = Source {
        path: Some(args.config.clone()),
        host: args.host,
        port: args.port,
    };
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("llm-proxy: invalid config: {e}");
            return ExitCode::from(1);
        }
    };
    if args.check {
        println!("config OK: {}", args.config.display());
        print!("{}", config.summary());
        for note in llm_proxy::endpoint_notes(&config) {
            println!("{note}");
        }
        return ExitCode::SUCCESS;
    }
    llm_proxy::init_logging(config.server.log_level, config.server.log_format);
    let signals = match catch_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("llm-proxy: cannot catch signals: {e}");
            return ExitCode::from(1);
        }
    };
    let (models, providers) = (config.models.len(), config.providers.len());
    let addr = listen_addr(&config.server.host, config.server.port);
    let handle = match llm_proxy::start_from(config, None, source) {
        Ok(h) => h,
        Err(e) => {
            let why = listen_failure(&e);
            log::error!("cannot listen on {addr}: {why}");
            eprintln!("llm-proxy: cannot listen on {addr}: {why}");
            return ExitCode::from(1);
        }
    };
    // SIGTERM/SIGINT drain (a second one exits at once), SIGHUP reloads.
    if let Err(e) = watch_signals(signals, handle.controller()) {
        log::error!("cannot watch signals: {e}");
        eprintln!("llm-proxy: cannot watch signals: {e}");
        return ExitCode::from(1);
    }
    log::info!(
        "llm-proxy {} listening on http://{} ({models} models, {providers} providers)",
        env!("CARGO_PKG_VERSION"),
        handle.addr()
    );
    match handle.join() {
        // Only a drain ends the server without an error.
        Ok(()) => ExitCode::SUCCESS,
        // The listener is gone while the process lives on: exit non-zero so
        // that systemd's Restart=on-failure starts a fresh one.
        Err(e) => {
            log::error!("exiting: {e}");
            eprintln!("llm-proxy: {e}");
            ExitCode::from(1)
        }
    }
}

/// `host:port` as an error names it (`[::1]:8000` for IPv6).
fn listen_addr(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// Why binding failed, in words an operator acts on.
fn listen_failure(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::AddrInUse => "address already in use".into(),
        ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        ErrorKind::PermissionDenied => {
            "permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE)".into()
        }
        _ => e.to_string(),
    }
}

/// `llm-proxy status`: the providers' state from a running proxy's admin
/// API, as a table, and an exit code for scripts.
mod status {
    use std::process::ExitCode;
    use std::time::Duration;

    use serde_json::Value;

    use super::USAGE;

    /// A `last error` cell: one line, at most this many characters.
    const ERROR_WIDTH: usize = 48;

    pub fn run(args: impl Iterator<Item = String>) -> ExitCode {
        match parse(args).and_then(|(url, key)| fetch(&url, key.as_deref())) {
            Ok((providers, models)) => {
                let (table, unavailable) = render(&providers, &models);
                print!("{table}");
                ExitCode::from(u8::from(unavailable > 0))
            }
            Err(e) => {
                eprintln!("llm-proxy status: {e}");
                ExitCode::from(2)
            }
        }
    }

    fn parse(it: impl Iterator<Item = String>) -> Result<(String, Option<String>), String> {
        let (mut url, mut key, mut config) = (None, None, None);
        let mut flags = super::Flags::new(it);
        while let Some(flag) = flags.next_flag() {
            let mut value = |name: &str| flags.value(name);
            match flag.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                "--url" => url = Some(value("--url")?),
                "--key" => key = Some(value("--key")?),
                "-c" | "--config" => config = Some(value("--config")?),
                // Not the argument: it may be a key.
                _ => return Err("unknown argument (see --help)".into()),
            }
        }
        let url = match (url, config) {
            (Some(u), _) => u,
            (None, Some(path)) => {
                let source = llm_proxy::lifecycle::Source {
                    path: Some(path.into()),
                    ..Default::default()
                };
                let c = source.load().map_err(|e| format!("invalid config: {e}"))?;
                let host = match c.server.host.as_str() {
                    "0.0.0.0" | "" => "127.0.0.1".to_string(),
                    "::" | "[::]" => "[::1]".to_string(),
                    h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
                    h => h.to_string(),
                };
                format!("http://{host}:{}", c.server.port)
            }
            (None, None) => "http://127.0.0.1:8000".to_string(),
        };
        let key = key.or_else(|| std::env::var("LLM_PROXY_ADMIN_KEY").ok());
        Ok((
            url.trim_end_matches('/').to_string(),
            key.filter(|k| !k.is_empty()),
        ))
    }

    /// `GET /admin/providers` and `GET /admin/models`.
    fn fetch(url: &str, key: Option<&str>) -> Result<(Value, Value), String> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let get = |path: &str| -> Result<Value, String> {
            let mut rb = agent.get(format!("{url}{path}"));
            if let Some(k) = key {
                rb = rb.header("Authorization", format!("Bearer {k}"));
            }
            let resp = rb.call().map_err(|e| format!("cannot reach {url}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp
                .into_body()
                .with_config()
                .limit(16 << 20)
                .read_to_string()
                .map_err(|e| format!("cannot read the answer of {url}{path}: {e}"))?;
            let body: Value = serde_json::from_str(&text)
                .map_err(|_| format!("{url}{path} answered {status} with no JSON"))?;
            if status != 200 {
                let msg = body["error"]["message"].as_str().unwrap_or("no message");
                return Err(format!(
                    "{url}{path} answered {status}: {}",
                    clean(msg, 200)
                ));
            }
            Ok(body)
        };
        Ok((get("/admin/providers")?, get("/admin/models")?))
    }

    /// One line of printable text, at most `max` characters.
    fn clean(s: &str, max: usize) -> String {
        let one: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if one.chars().count() <= max {
            return one;
        }
        let mut cut: String = one.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }

    /// The table, and how many models have no available provider.
    fn render(providers: &Value, models: &Value) -> (String, usize) {
        let empty = Vec::new();
        let cell = |v: &Value| match v {
            Value::String(s) => clean(s, ERROR_WIDTH),
            Value::Null => "-".to_string(),
            v => v.to_string(),
        };
        let mut rows = vec![
            [
                "PROVIDER",
                "TYPE",
                "STATE",
                "FAILURES",
                "LAST ERROR",
                "RECOVERS IN",
            ]
            .map(String::from),
        ];
        for p in providers["data"].as_array().unwrap_or(&empty) {
            let recovers = match (p["state"].as_str(), p["available_in_seconds"].as_u64()) {
                (Some("disabled"), _) => "until enabled".to_string(),
                (_, Some(s)) => format!("{s}s"),
                _ => "-".to_string(),
            };
            rows.push([
                cell(&p["name"]),
                cell(&p["type"]),
                cell(&p["state"]),
                format!(
                    "{} ({} total)",
                    cell(&p["consecutive_failures"]),
                    cell(&p["failures"])
                ),
                cell(&p["last_error"]),
                recovers,
            ]);
        }
        let widths: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        let down: Vec<String> = models["data"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter(|m| m["available"] == false)
            .map(|m| cell(&m["id"]))
            .collect();
        if down.is_empty() {
            out.push_str("\nEvery model has an available provider.\n");
        } else {
            out.push_str(&format!(
                "\nModels with no available provider: {}\n",
                down.join(", ")
            ));
        }
        (out, down.len())
    }
}
