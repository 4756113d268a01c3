//! Logging: the process's `log::Log` (text or JSON lines on stderr, one
//! `write_all` per line) and the access log record, one line per request.
//!
//! Text: `2026-11-27T21:18:16.123Z INFO  [llm_proxy::server] message`; under
//! journald (`JOURNAL_STREAM` set) without the timestamp, which journald
//! adds. JSON (`server.log_format: json`): one object per line, `ts`,
//! `level`, `target`, `msg`; the access line is an object of its own fields
//! (`"type": "access"`), for Loki and Vector.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde_json::json;

use crate::config::LogFormat;
use crate::metrics::Usage;

/// The target of access log lines.
pub const TARGET: &str = "llm_proxy::access";

struct Logger {
    /// For `llm_proxy` targets; other crates log at `warn` and above.
    level: LevelFilter,
    format: LogFormat,
    timestamps: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Install the logger (once per process; later calls change nothing).
pub fn init(level: LevelFilter, format: LogFormat) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty());
    let logger = LOGGER.get_or_init(|| Logger {
        level,
        format,
        timestamps: !journald,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level.max(LevelFilter::Warn));
    }
}

/// The format in use (text before `init`).
fn format() -> LogFormat {
    LOGGER.get().map_or(LogFormat::Text, |l| l.format)
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        let target = m.target();
        if target == "llm_proxy" || target.starts_with("llm_proxy::") {
            m.level() <= self.level
        } else {
            m.level() <= LevelFilter::Warn
        }
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = match self.format {
            // The access line is already its own object.
            LogFormat::Json if r.target() == TARGET => format!("{}\n", r.args()),
            LogFormat::Json => {
                let v = json!({
                    "ts": rfc3339(SystemTime::now()),
                    "level": level_name(r.level()),
                    "target": r.target(),
                    "msg": r.args().to_string(),
                });
                format!("{v}\n")
            }
            LogFormat::Text => {
                use std::fmt::Write as _;
                let mut line = String::with_capacity(256);
                if self.timestamps {
                    write_rfc3339(&mut line, SystemTime::now());
                    line.push(' ');
                }
                let _ = writeln!(line, "{:<5} [{}] {}", r.level(), r.target(), r.args());
                line
            }
        };
        // One write per line: lines from many threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// `t` as RFC 3339 in UTC with milliseconds: `2026-11-27T21:18:16.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let mut s = String::with_capacity(24);
    write_rfc3339(&mut s, t);
    s
}

/// [`rfc3339`], appended to `out`.
fn write_rfc3339(out: &mut String, t: SystemTime) {
    use std::fmt::Write as _;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What the access log says about one request. Never content, never a key:
/// only the key's name.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub client: Option<SocketAddr>,
    pub key: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub attempts: u32,
    pub status: u16,
    /// How a stream ended (`complete`, `client_gone`, ...).
    pub stream: Option<&'a dyn std::fmt::Display>,
    pub total: Duration,
    /// For streams: to the first byte written to the client.
    pub first_byte: Option<Duration>,
    pub usage: Option<Usage>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Write the access log line for one request, at `info`.
pub fn write(e: &Entry<'_>) {
    if !log::log_enabled!(target: TARGET, Level::Info) {
        return;
    }
    match format() {
        LogFormat::Json => log::info!(target: TARGET, "{}", json_line(e)),
        LogFormat::Text => log::info!(target: TARGET, "{}", Text(e)),
    }
}

/// The JSON object of one access line.
pub fn json_line(e: &Entry<'_>) -> serde_json::Value {
    json!({
        "ts": rfc3339(SystemTime::now()),
        "level": "info",
        "type": "access",
        "request_id": e.request_id,
        "client": e.client.map(|a| a.to_string()),
        "key": e.key,
        "method": e.method,
        "path": e.path,
        "model": e.model,
        "provider": e.provider,
        "attempts": e.attempts,
        "status": e.status,
        "stream": e.stream.map(|s| s.to_string()),
        "total_ms": ms(e.total),
        "first_byte_ms": e.first_byte.map(ms),
        "prompt_tokens": e.usage.map(|u| u.prompt),
        "completion_tokens": e.usage.map(|u| u.completion),
    })
}

/// The text line, written straight into the logger's line (no string of
/// its own on the request path).
struct Text<'a, 'e>(&'a Entry<'e>);

impl<'e> std::fmt::Display for Text<'_, 'e> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        let dash = |v: Option<&'e str>| v.unwrap_or("-");
        write!(
            f,
            "{} {} {} key={} model={} provider={} attempts={} status={}",
            e.request_id,
            e.method,
            e.path,
            dash(e.key),
            dash(e.model),
            dash(e.provider),
            e.attempts,
            e.status
        )?;
        if let Some(end) = &e.stream {
            write!(f, " stream={end}")?;
        }
        write!(f, " {:.1}ms", ms(e.total))?;
        if let Some(fb) = e.first_byte {
            write!(f, " first_byte={:.1}ms", ms(fb))?;
        }
        if let Some(u) = e.usage {
            write!(
                f,
                " prompt_tokens={} completion_tokens={}",
                u.prompt, u.completion
            )?;
        }
        match e.client {
            Some(a) => write!(f, " client={a}"),
            None => f.write_str(" client=-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_555_096_123);
        assert_eq!(rfc3339(t), "2026-11-24T21:18:16.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }
}
