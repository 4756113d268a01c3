//! The `llm-proxy` binary: arguments, logging, config, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use llm_proxy::lifecycle::{Source, catch_signals, watch_signals};

const USAGE: &str = "\
llm-proxy: an OpenAI-compatible proxy with priority failover across LLM providers

Usage:
  llm-proxy --config PATH [--host ADDR] [--port N]
  llm-proxy --config PATH --check-config
  llm-proxy --version | --help

Options:
  -c, --config PATH   YAML config file (required)
      --host ADDR     bind address (overrides server.host; default 127.0.0.1)
  -p, --port N        bind port (overrides server.port; default 8000)
      --check-config  load and validate the config, print a summary with
                      secrets redacted, and exit
  -V, --version       print the version
  -h, --help          print this help

Environment:
  LLM_PROXY_LOG       log level (error, warn, info, debug, trace); overrides
                      server.log_level
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

fn parse_args() -> Result<Parsed, String> {
    let mut config = None;
    let mut host = None;
    let mut port = None;
    let mut check = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
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
