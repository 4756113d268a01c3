//! The admin API under `/admin/` (JSON): what each provider's breaker is
//! doing, which models can be served now, and the operator's actions:
//! disable, enable and reset a provider, reload the config.
//!
//! `/health` stays the liveness check it is (`{"status":"ok"}` while the
//! process serves); whether a model can be served is answered here, by
//! `GET /admin/models`, which `llm-proxy status` reads for its exit code.
//!
//! Access: the same rule as `/metrics` (`crate::metrics::operator_access`). Every
//! action is logged at info with the caller's key name (`key=-` without
//! `auth`) and address, never the key.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Client;
use crate::error::{ErrorKind, ProxyError};

/// An admin request, parsed from its path (see `routes::Route::parse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `GET /admin/providers`
    Providers,
    /// `GET /admin/models`
    Models,
    /// `POST /admin/providers/{name}/{action}`
    Provider { name: String, action: Action },
    /// `POST /admin/reload`
    Reload,
}

/// What an operator does to one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Disable,
    Enable,
    Reset,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Reset => "reset",
        }
    }
}

/// `path` as an admin request, with the methods it answers; `None` if it
/// is no admin path.
pub fn parse(path: &str) -> Option<(&'static str, Request)> {
    const GET: &str = "GET, HEAD";
    const POST: &str = "POST";
    match path {
        "/admin/providers" => return Some((GET, Request::Providers)),
        "/admin/models" => return Some((GET, Request::Models)),
        "/admin/reload" => return Some((POST, Request::Reload)),
        _ => {}
    }
    let rest = path.strip_prefix("/admin/providers/")?;
    let (name, action) = rest.rsplit_once('/')?;
    let action = match action {
        "disable" => Action::Disable,
        "enable" => Action::Enable,
        "reset" => Action::Reset,
        _ => return None,
    };
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((
        POST,
        Request::Provider {
            name: name.to_string(),
            action,
        },
    ))
}

/// Answer an admin request: the JSON body of a 200, or the error.
pub fn handle(
    app: &App,
    request: &Request,
    client: &Client<'_>,
    peer: Option<SocketAddr>,
    rid: &str,
) -> Result<Value, ProxyError> {
    crate::metrics::operator_access(app, Some(client), peer, false)?;
    let who = format!(
        "key={} client={}",
        client.name().unwrap_or("-"),
        peer.map_or_else(|| "-".to_string(), |p| p.to_string())
    );
    match request {
        Request::Providers => Ok(json!({
            "object": "list",
            "data": (0..app.providers.len()).map(|i| provider_json(app, i)).collect::<Vec<_>>(),
        })),
        Request::Models => Ok(models_json(app)),
        Request::Provider { name, action } => {
            let Some(i) = app.config.providers.iter().position(|p| &p.name == name) else {
                log::info!(
                    "{rid} admin {} provider {name:?}: no such provider; {who}",
                    action.as_str()
                );
                return Err(ProxyError::new(
                    ErrorKind::ProviderNotFound,
                    format!("No provider named `{name}` is configured"),
                ));
            };
            let changed = match action {
                Action::Disable => app.health.disable(i),
                Action::Enable => app.health.enable(i),
                Action::Reset => {
                    app.health.reset(i);
                    true
                }
            };
            log::info!(
                "{rid} admin {} provider {name}{}; {who}",
                action.as_str(),
                if changed { "" } else { " (no change)" }
            );
            Ok(provider_json(app, i))
        }
        Request::Reload => {
            let Some(lifecycle) = app.lifecycle.upgrade() else {
                return Err(ProxyError::new(
                    ErrorKind::ReloadUnavailable,
                    "The server is shutting down; nothing to reload",
                ));
            };
            match lifecycle.reload() {
                Ok(summary) => {
                    log::info!("{rid} admin reload: config reloaded: {summary}; {who}");
                    Ok(json!({
                        "status": "reloaded",
                        "models": summary.models,
                        "providers": summary.providers,
                        "kept_breakers": summary.kept_breakers,
                        "needs_restart": summary.needs_restart,
                    }))
                }
                Err(e) => {
                    log::warn!(
                        "{rid} admin reload: config rejected, keeping the old one: {e}; {who}"
                    );
                    Err(ProxyError::new(
                        ErrorKind::InvalidConfig,
                        format!("Invalid config, the running one is kept: {e}"),
                    ))
                }
            }
        }
    }
}

fn provider_json(app: &App, i: usize) -> Value {
    let p = &app.config.providers[i];
    let s = app.health.snapshot(i);
    json!({
        "name": p.name,
        "type": p.kind.as_str(),
        "base_url": p.base_url,
        "state": s.state.as_str(),
        "available": s.available(),
        "consecutive_failures": s.consecutive_failures,
        "last_error": s.last_error,
        "last_failure_at": s.last_failure_at.map(rfc3339),
        "available_in_seconds": s.available_in.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        "requests": s.requests,
        "failures": s.failures,
    })
}

/// Each model with the providers a request could go to now.
fn models_json(app: &App) -> Value {
    let data: Vec<Value> = app
        .config
        .models
        .values()
        .map(|m| {
            let available: Vec<&str> = m
                .routes
                .iter()
                .filter(|r| app.health.snapshot(r.provider).available())
                .map(|r| app.config.providers[r.provider].name.as_str())
                .collect();
            json!({
                "id": m.name,
                "available": !available.is_empty(),
                "available_providers": available,
                "providers": m.routes.iter().map(|r| app.config.providers[r.provider].name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "object": "list", "data": data })
}

/// `t` as RFC 3339 in UTC, to the second (`2026-11-27T21:18:16Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_798_405_096), "2026-12-27T20:58:16Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn parses_admin_paths() {
        assert_eq!(
            parse("/admin/providers"),
            Some(("GET, HEAD", Request::Providers))
        );
        assert_eq!(
            parse("/admin/providers/a%20b/reset"),
            Some((
                "POST",
                Request::Provider {
                    name: "a b".into(),
                    action: Action::Reset
                }
            ))
        );
        assert_eq!(parse("/admin/providers//reset"), None);
        assert_eq!(parse("/admin/providers/x/y/reset"), None);
        assert_eq!(parse("/admin/providers/x/explode"), None);
        assert_eq!(parse("/admin/other"), None);
    }
}
