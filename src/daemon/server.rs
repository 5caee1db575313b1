//! The operator endpoints: `/healthz`, `/readyz`, `/metrics`, the JSON API under
//! `/api/` and the dashboard at `/`. A blocking server on one thread of its own (the
//! engine is threads, not async; requests are few and short). Reads are open to whoever
//! reaches the address; changes (resolve, release) need `[watch] admin_token`, sent as
//! `Authorization: Bearer TOKEN`, and are journaled with who made them.

use super::Shared;
use crate::Error;
use crate::decide::{self, Decision};
use crate::model::{Key, Side};
use crate::state::StateStore;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tiny_http::{Header, Method, Request, Response};

pub(super) struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

pub(super) fn start(addr: std::net::SocketAddr, shared: Arc<Shared>) -> Result<Running, Error> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| Error::Refused(format!("cannot listen on {addr}: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("endpoints".into())
        .spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match server.recv_timeout(std::time::Duration::from_millis(200)) {
                    Ok(Some(request)) => handle(&shared, request),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("endpoints: {e}"),
                }
            }
        })
        .map_err(|e| Error::Refused(format!("cannot start the endpoints' thread: {e}")))?;
    Ok(Running { stop, thread })
}

/// An answer: status, content type, body.
struct Answer(u16, &'static str, String);

impl Answer {
    fn json(status: u16, value: &serde_json::Value) -> Answer {
        Answer(status, "application/json", value.to_string())
    }
    fn error(status: u16, message: &str) -> Answer {
        Answer::json(status, &serde_json::json!({ "error": message }))
    }
}

fn handle(shared: &Shared, mut request: Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let query: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let method = request.method().clone();
    let token = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer ").map(str::to_string));
    let user = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Syncline-User"))
        .map(|h| {
            h.value
                .as_str()
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        });
    let from = request
        .remote_addr()
        .map_or_else(|| "unknown".into(), |a| a.ip().to_string());
    let mut body = String::new();
    if method == Method::Post {
        let _ = request.as_reader().take(1 << 20).read_to_string(&mut body);
    }
    let answer = match (method, path) {
        (Method::Get, "/healthz") => Answer(200, "text/plain", "ok\n".into()),
        (Method::Get, "/readyz") => ready(shared),
        (Method::Get, "/metrics") => {
            Answer(200, "text/plain; version=0.0.4", shared.metrics.render())
        }
        (Method::Get, "/") => match with_state(shared, false, |state| {
            super::dashboard::page(shared, state, &query)
        }) {
            Ok(html) => Answer(200, "text/html; charset=utf-8", html),
            Err(e) => Answer(500, "text/plain", format!("{e}\n")),
        },
        (Method::Get, p) if p.starts_with("/api/") => api_read(shared, p, &query),
        (Method::Post, p) if p.starts_with("/api/") => {
            let config = shared.config();
            match (&config.watch.admin_token, token) {
                (None, _) => Answer::error(
                    403,
                    "read-only: set [watch] admin_token to allow changes from the API and dashboard",
                ),
                (Some(want), Some(got)) if constant_time_eq(want, &got) => {
                    let who = format!(
                        "{} via the dashboard from {from}",
                        user.filter(|u| !u.trim().is_empty())
                            .unwrap_or_else(|| "an admin".into())
                    );
                    api_change(shared, p, &body, &who)
                }
                _ => Answer::error(
                    401,
                    "a change needs the admin token (Authorization: Bearer …)",
                ),
            }
        }
        _ => Answer::error(404, "no such endpoint"),
    };
    let Answer(status, content_type, text) = answer;
    let mut response = Response::from_string(text).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
        response = response.with_header(h);
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!("endpoints: answer not sent: {e}");
    }
}

/// Compares a token without leaving a timing trace of where it differs.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn with_state<T>(
    shared: &Shared,
    write: bool,
    f: impl FnOnce(&mut StateStore) -> Result<T, Error>,
) -> Result<T, Error> {
    let config = shared.config();
    let mut state = StateStore::for_config(&config.state, !write)?;
    f(&mut state)
}

/// Ready: the state store answers, and no link's last cycle failed.
fn ready(shared: &Shared) -> Answer {
    let store = with_state(shared, false, |s| Ok(s.last_runs(1)?.len()));
    let failing: Vec<String> = shared
        .statuses()
        .into_iter()
        .filter(|s| s.last_outcome.as_deref() == Some("failed"))
        .map(|s| s.link)
        .collect();
    match store {
        Err(e) => Answer::json(
            503,
            &serde_json::json!({ "ready": false, "state_store": e.to_string() }),
        ),
        Ok(_) if !failing.is_empty() => Answer::json(
            503,
            &serde_json::json!({ "ready": false, "failing_links": failing }),
        ),
        Ok(_) => Answer::json(200, &serde_json::json!({ "ready": true })),
    }
}

fn api_read(shared: &Shared, path: &str, query: &HashMap<String, String>) -> Answer {
    let link = query
        .get("link")
        .map(String::as_str)
        .filter(|l| !l.is_empty());
    let limit: i64 = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, 10_000);
    let result = with_state(shared, false, |state| -> Result<serde_json::Value, Error> {
        Ok(match path {
            "/api/links" => serde_json::json!(shared.statuses()),
            "/api/runs" => serde_json::json!(state.last_runs(limit)?),
            "/api/conflicts" => serde_json::json!(
                state
                    .conflicts(link)?
                    .into_iter()
                    .map(|c| {
                        let mut v = serde_json::json!(c);
                        v["key"] = display_key(&c.left_key).into();
                        v
                    })
                    .collect::<Vec<_>>()
            ),
            "/api/quarantine" => serde_json::json!(
                state
                    .quarantine(link)?
                    .into_iter()
                    .map(|q| {
                        let mut v = serde_json::json!(q);
                        v["key_text"] = display_key(&q.key).into();
                        v
                    })
                    .collect::<Vec<_>>()
            ),
            "/api/journal" => {
                let encoded = query
                    .get("key")
                    .filter(|k| !k.is_empty())
                    .map(|k| decide::journal_key(state, link, k))
                    .transpose()?;
                serde_json::json!(state.journal(link, encoded.as_deref(), None, limit)?)
            }
            "/api/explain" => {
                let (Some(link), Some(key)) = (link, query.get("key")) else {
                    return Err(Error::NotFound("explain needs ?link=…&key=…".into()));
                };
                let config = shared.config();
                let spec = config
                    .link(link)
                    .ok_or_else(|| Error::NotFound(format!("no link named `{link}`")))?;
                serde_json::json!(crate::engine::explain(&config, spec, state, key)?)
            }
            _ => return Err(Error::NotFound("no such endpoint".into())),
        })
    });
    match result {
        Ok(v) => Answer::json(200, &v),
        Err(Error::NotFound(m)) => Answer::error(404, &m),
        Err(e) => Answer::error(500, &e.to_string()),
    }
}

pub(super) fn display_key(encoded: &str) -> String {
    Key::decode(encoded).map_or_else(|_| encoded.to_string(), |k| k.display_text())
}

#[derive(serde::Deserialize)]
struct ResolveBody {
    link: String,
    key: String,
    field: String,
    take: Option<String>,
    value: Option<String>,
}

#[derive(serde::Deserialize)]
struct ReleaseBody {
    link: String,
    key: String,
    field: Option<String>,
}

fn api_change(shared: &Shared, path: &str, body: &str, who: &str) -> Answer {
    let config = shared.config();
    let result = with_state(shared, true, |state| -> Result<serde_json::Value, Error> {
        match path {
            "/api/conflicts/resolve" => {
                let b: ResolveBody = serde_json::from_str(body).map_err(|e| {
                    Error::NotFound(format!(
                        "a resolve is {{link, key, field, take | value}}: {e}"
                    ))
                })?;
                let decision = match (b.take.as_deref(), b.value) {
                    (Some("left"), None) => Decision::Take(Side::Left),
                    (Some("right"), None) => Decision::Take(Side::Right),
                    (None, Some(v)) => Decision::Value(v),
                    _ => {
                        return Err(Error::NotFound(
                            "say take = left | right, or a value".into(),
                        ));
                    }
                };
                let chosen = decide::resolve_conflict(
                    &config, state, &b.link, &b.key, &b.field, &decision, who,
                )?;
                Ok(serde_json::json!({
                    "resolved": true,
                    "value": chosen.iter().map(crate::model::Value::to_json).collect::<Vec<_>>(),
                }))
            }
            "/api/quarantine/release" => {
                let b: ReleaseBody = serde_json::from_str(body).map_err(|e| {
                    Error::NotFound(format!("a release is {{link, key, field?}}: {e}"))
                })?;
                let n =
                    decide::release_quarantine(state, &b.link, &b.key, b.field.as_deref(), who)?;
                Ok(serde_json::json!({ "released": n }))
            }
            _ => Err(Error::NotFound("no such endpoint".into())),
        }
    });
    match result {
        Ok(v) => {
            tracing::info!(%who, endpoint = path, "decision recorded");
            Answer::json(200, &v)
        }
        Err(Error::NotFound(m)) => Answer::error(404, &m),
        Err(Error::Refused(m)) => Answer::error(400, &m),
        Err(e) => Answer::error(500, &e.to_string()),
    }
}
