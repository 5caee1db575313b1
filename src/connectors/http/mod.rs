//! `http`: JSON REST resources. A collection is a resource declared in the config: where
//! it lists (and how it pages), where one record is, its key field, and what makes a
//! write conditional where the API has it (a version field sent back as `If-Match`).
//!
//! What an API cannot give, the kind says in its capabilities and the engine adapts:
//! a listing is no snapshot (records may move between pages: a record listed twice is
//! delivered once, one a listing missed is confirmed by a fetch before anything counts it
//! deleted), a batch is not atomic, and without a version writes are not conditional
//! (`check` says the link is exposed to lost updates; syncline re-reads each record just
//! before writing it). What a write stored is the API's answer to it.
//!
//! Failures: timeouts, resets, 429 and 5xx are retried with exponential backoff and
//! jitter, honouring `Retry-After` up to a cap; a listing that still fails is an
//! incomplete read (no deletes). A 4xx other than 404/409/412/429 refuses that record
//! with the API's message; 409 and 412 (a version that moved) are stale writes; 404 on
//! an update or delete is a record gone. A write whose answer never came is an unknown
//! outcome, resolved by a fetch before anything is sent again. Secrets (auth, header
//! values) are never part of a message.

mod settings;
pub use settings::Settings;

use super::{
    BatchResult, Capabilities, ColumnInfo, Conditional, Connector, ConnectorError, ReadSpec, Write,
    WriteOutcome,
};
use crate::config::Secret;
use crate::connectors::file::ColumnType;
use crate::model::{Key, Record, Value};
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub base_url: String,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub auth: Auth,
    pub retries: u32,
    pub max_retry_wait: Duration,
    pub requests_per_second: Option<f64>,
    /// At most this many requests in any window of this many seconds.
    pub requests_per_window: Option<(usize, Duration)>,
    pub collections: HashMap<String, Collection>,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(Secret),
    Header(String, Secret),
    Query(String, Secret),
    Basic(String, Secret),
    /// OAuth2 client credentials: a token fetched from `token_url`, and fetched again
    /// before it expires or when the API answers 401.
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Collection {
    pub path: String,
    /// With `{key}` where the record's key goes.
    pub item: String,
    /// A JSON pointer to the records in a list response; empty: the body is the array.
    pub records: String,
    /// A JSON pointer to the record inside each listed element (CouchDB's `/doc`).
    pub record: Option<String>,
    /// Where a create's answer holds the new key when it is not the record itself.
    pub created_key: String,
    pub key: String,
    pub params: Vec<(String, String)>,
    pub pagination: Pagination,
    pub update: &'static str,
    /// `POST` to the list path, or `PUT` to the item path of the key the record carries.
    pub create: &'static str,
    /// Where a `POST` creates (CouchDB lists at `/db/_all_docs`, creates at `/db`).
    pub create_path: String,
    pub version: Option<String>,
    pub since: Option<SinceFilter>,
    pub columns: Vec<String>,
    pub types: HashMap<String, ColumnType>,
    /// The API's batch endpoint, for runs of creates.
    pub batch: Option<BatchEndpoint>,
}

/// A batch endpoint (PocketBase's form) and the most requests it takes at once.
#[derive(Debug, Clone)]
pub struct BatchEndpoint {
    pub path: String,
    pub max: usize,
}

#[derive(Debug, Clone)]
pub enum Pagination {
    None,
    Page {
        param: String,
        size_param: Option<String>,
        per_page: u32,
    },
    Offset {
        param: String,
        limit_param: Option<String>,
        per_page: u32,
    },
    /// A JSON pointer to the next page's URL in the body.
    NextUrl(String),
    /// RFC 8288 `Link: <…>; rel="next"`.
    LinkHeader,
    /// A JSON pointer to a token in the body, sent back as `param`.
    Cursor {
        pointer: String,
        param: String,
    },
}

/// A server-side filter for "changed since": `template` with `{since}` replaced.
#[derive(Debug, Clone)]
pub struct SinceFilter {
    pub param: String,
    pub template: String,
}

pub struct HttpConnector {
    name: String,
    settings: HttpSettings,
    agent: ureq::Agent,
    last_request: Option<Instant>,
    /// The OAuth2 access token and when to fetch another.
    token: Option<(Secret, Instant)>,
    /// When the requests of the current budget window were sent.
    window: std::collections::VecDeque<Instant>,
    /// Not before then: the API said its rate limit is used up until its reset.
    held_until: Option<Instant>,
}

/// An answer: status, `Retry-After`, `Link`'s next, `ETag`, and the body.
struct Answer {
    status: u16,
    link_next: Option<String>,
    etag: Option<String>,
    body: String,
}

/// Why a request did not get an answer worth keeping.
enum Failed {
    /// Sent, no answer (a timeout, a reset): for a write, its outcome is unknown.
    NoAnswer(String),
    /// Never sent (no connection).
    NotSent(String),
}

impl HttpConnector {
    pub fn open(name: &str, settings: &HttpSettings) -> HttpConnector {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        HttpConnector {
            name: name.to_string(),
            settings: settings.clone(),
            agent,
            last_request: None,
            token: None,
            window: std::collections::VecDeque::new(),
            held_until: None,
        }
    }

    fn collection(&self, name: &str) -> Result<&Collection, ConnectorError> {
        self.settings.collections.get(name).ok_or_else(|| {
            ConnectorError::NoCollection(format!(
                "{}.{name} (declare it: [systems.{}.collections.{name}] with its path)",
                self.name, self.name
            ))
        })
    }

    fn err(&self, what: &str, why: impl Into<String>) -> ConnectorError {
        ConnectorError::Query {
            context: format!("http `{}`: {what}", self.name),
            source: why.into().into(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.settings.base_url)
        }
    }

    /// One request, sent once: the budget kept, auth and headers added.
    fn send_once(
        &mut self,
        method: &str,
        url: &str,
        query: &[(String, String)],
        body: Option<&Json>,
        if_match: Option<&str>,
    ) -> Result<(Answer, Option<Duration>), Failed> {
        self.keep_budget();
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in &self.settings.headers {
            request = request.header(k.as_str(), v.expose());
        }
        let mut query: Vec<(String, String)> = query.to_vec();
        match &self.settings.auth {
            Auth::None => {}
            Auth::Bearer(t) => {
                request = request.header("Authorization", format!("Bearer {}", t.expose()))
            }
            Auth::Header(name, v) => request = request.header(name.as_str(), v.expose()),
            Auth::Query(name, v) => query.push((name.clone(), v.expose().to_string())),
            Auth::OAuth2 { .. } => {
                let token = self.access_token()?;
                request = request.header("Authorization", format!("Bearer {}", token.expose()));
            }
            Auth::Basic(user, password) => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()));
                request = request.header("Authorization", format!("Basic {token}"));
            }
        }
        if let Some(v) = if_match {
            request = request.header("If-Match", v);
        }
        let uri_with_query = if query.is_empty() {
            url.to_string()
        } else {
            let mut u = url.to_string();
            u.push(if u.contains('?') { '&' } else { '?' });
            u.push_str(
                &query
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
            u
        };
        let request = request.uri(uri_with_query);
        let result = match body {
            Some(b) => {
                let req = request
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .map_err(|e| Failed::NotSent(e.to_string()))?;
                self.agent.run(req)
            }
            None => {
                let req = request
                    .body(())
                    .map_err(|e| Failed::NotSent(e.to_string()))?;
                self.agent.run(req)
            }
        };
        // A transport error may quote the URL, and the query may hold a key.
        let said = |e: &ureq::Error| self.scrub(&e.to_string());
        let mut response = result.map_err(|e| match e {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => Failed::NotSent(said(&e)),
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Failed::NotSent(said(&e))
            }
            other => Failed::NoAnswer(said(&other)),
        })?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // A rate limit used up (`RateLimit-*` or `X-RateLimit-*`): the next request waits
        // for its reset — seconds from now, or a Unix time — up to max_retry_wait.
        let limit = |name: &str| {
            header(&format!("ratelimit-{name}"))
                .or_else(|| header(&format!("x-ratelimit-{name}")))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if limit("remaining") == Some(0) {
            let reset = limit("reset").unwrap_or(1);
            let now_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let wait = if reset > 1_000_000_000 {
                reset.saturating_sub(now_unix)
            } else {
                reset
            };
            let wait = Duration::from_secs(wait).min(self.settings.max_retry_wait);
            self.held_until = Some(Instant::now() + wait);
        }
        let link_next = header("link").and_then(|l| next_link(&l));
        let etag = header("etag");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Failed::NoAnswer(format!("the answer stopped part-way: {e}")))?;
        Ok((
            Answer {
                status,
                link_next,
                etag,
                body,
            },
            retry_after,
        ))
    }

    /// `text` with every secret this system holds (auth values, header values, the
    /// current token) blotted out.
    fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<&str> = self
            .settings
            .headers
            .iter()
            .map(|(_, v)| v.expose())
            .collect();
        match &self.settings.auth {
            Auth::None => {}
            Auth::Bearer(t) | Auth::Header(_, t) | Auth::Query(_, t) | Auth::Basic(_, t) => {
                secrets.push(t.expose());
            }
            Auth::OAuth2 { client_secret, .. } => secrets.push(client_secret.expose()),
        }
        if let Some((token, _)) = &self.token {
            secrets.push(token.expose());
        }
        let mut out = text.to_string();
        for s in secrets.into_iter().filter(|s| s.len() >= 4) {
            out = out.replace(s, "***");
            // As it would appear in a URL.
            out = out.replace(&encode(s), "***");
        }
        out
    }

    /// Waits as the request budget and the API's rate limit say, then counts a request.
    fn keep_budget(&mut self) {
        let wait_until = |at: Instant| {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        };
        if let Some(until) = self.held_until.take() {
            wait_until(until);
        }
        if let (Some(rps), Some(last)) = (self.settings.requests_per_second, self.last_request) {
            wait_until(last + Duration::from_secs_f64(1.0 / rps));
        }
        if let Some((most, per)) = self.settings.requests_per_window {
            while self.window.front().is_some_and(|t| t.elapsed() >= per) {
                self.window.pop_front();
            }
            if self.window.len() >= most
                && let Some(oldest) = self.window.pop_front()
            {
                wait_until(oldest + per);
            }
            self.window.push_back(Instant::now());
        }
        self.last_request = Some(Instant::now());
    }

    /// The OAuth2 access token, fetched (client credentials) when there is none or it
    /// is about to expire. A token endpoint that refuses is not retried: the
    /// credentials are wrong, and the message says so without them.
    fn access_token(&mut self) -> Result<Secret, Failed> {
        if let Some((token, until)) = &self.token
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
        } = &self.settings.auth
        else {
            unreachable!("asked for OAuth2 only")
        };
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id.clone()),
            ("client_secret", client_secret.expose().to_string()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope.clone()));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(token_url.as_str())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(body)
            .map_err(|e| Failed::NotSent(e.to_string()))?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| Failed::NotSent(format!("the OAuth2 token endpoint: {e}")))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        let Some(token) = json["access_token"].as_str().filter(|_| status == 200) else {
            return Err(Failed::NotSent(format!(
                "the OAuth2 token endpoint {} answered {status}{}",
                path_of(token_url),
                json["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        };
        // Fetched again a minute before it expires (or in an hour, if it does not say).
        let lasts = json["expires_in"].as_u64().unwrap_or(3600);
        let until = Instant::now() + Duration::from_secs(lasts.saturating_sub(60).max(1));
        let token = Secret::new(token.to_string());
        self.token = Some((token.clone(), until));
        Ok(token)
    }

    /// A request with retries on what retrying can mend. 429 and 503 say the request
    /// was not processed: retried, honouring `Retry-After`. A timeout, a reset, an answer
    /// cut short and the other 5xx may come after the server applied it: retried for
    /// reads and for the writes that repeat harmlessly (PUT, PATCH, DELETE: the same
    /// values again, or a version that moved, which is stale); a create (POST) is not
    /// sent twice — its outcome is unknown, and the engine finds it by the link's create
    /// identity. A connection never made is retried for everything.
    fn send(
        &mut self,
        method: &str,
        url: &str,
        query: &[(String, String)],
        body: Option<&Json>,
        if_match: Option<&str>,
    ) -> Result<Answer, Failed> {
        let repeats_harmlessly = method != "POST";
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let (wait, failed) = match self.send_once(method, url, query, body, if_match) {
                Ok((answer, retry_after)) if matches!(answer.status, 429 | 503) => (
                    retry_after,
                    Failed::NotSent(format!("{} answered {}", path_of(url), answer.status)),
                ),
                Ok((answer, _)) if answer.status >= 500 && repeats_harmlessly => (
                    None,
                    Failed::NoAnswer(format!("{} answered {}", path_of(url), answer.status)),
                ),
                Ok((answer, _)) if answer.status >= 500 => {
                    return Err(Failed::NoAnswer(self.answered(
                        url,
                        answer.status,
                        &answer.body,
                    )));
                }
                // An OAuth2 token the API no longer takes: fetched again, once.
                Ok((answer, _))
                    if answer.status == 401
                        && matches!(self.settings.auth, Auth::OAuth2 { .. })
                        && !refreshed =>
                {
                    refreshed = true;
                    self.token = None;
                    continue;
                }
                Ok((answer, _)) => return Ok(answer),
                Err(Failed::NoAnswer(why)) if !repeats_harmlessly => {
                    return Err(Failed::NoAnswer(why));
                }
                Err(f) => (None, f),
            };
            if attempt >= self.settings.retries {
                return Err(failed);
            }
            attempt += 1;
            let backoff = Duration::from_millis(100 * 2u64.pow(attempt.min(10)));
            let jitter = Duration::from_millis(u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos() % 100),
            ));
            let wait = wait
                .unwrap_or(backoff + jitter)
                .min(self.settings.max_retry_wait);
            tracing::warn!(system = %self.name, attempt, "{}: retrying in {:?}", path_of(url), wait);
            std::thread::sleep(wait);
        }
    }

    fn read_failed(&self, what: &str, f: Failed) -> ConnectorError {
        let (Failed::NoAnswer(why) | Failed::NotSent(why)) = f;
        ConnectorError::Query {
            context: format!("http `{}`: {what}", self.name),
            source: why.into(),
        }
    }

    fn parse(&self, what: &str, body: &str) -> Result<Json, ConnectorError> {
        serde_json::from_str(body)
            .map_err(|e| self.err(what, format!("the answer is not JSON: {e}")))
    }

    /// What the API said when it refused: where, the status, and the start of its answer
    /// (secrets blotted out).
    fn answered(&self, url: &str, status: u16, body: &str) -> String {
        format!(
            "{} answered {status}: {}",
            path_of(url),
            self.scrub(&brief(body))
        )
    }

    /// A JSON record as a record of `spec`.
    fn record(c: &Collection, spec: &ReadSpec, json: &Json) -> Record {
        let mut defect = None;
        let mut value = |column: &str| -> Value {
            let found = lookup(json, column);
            match found {
                None => Value::Null,
                Some(j) => ColumnType::read_json(c.types.get(column), j).unwrap_or_else(|why| {
                    defect.get_or_insert(format!("field `{column}`: {why}"));
                    Value::Null
                }),
            }
        };
        let key = Key(spec.key.iter().map(|k| value(k)).collect());
        let values = spec.columns.iter().map(|col| value(col)).collect();
        let mut record = Record::new(key, values);
        if record.key.0.contains(&Value::Null) {
            defect.get_or_insert(format!("no key field `{}`", spec.key.join(", ")));
        }
        record.defect = defect;
        record.version = c
            .version
            .as_ref()
            .and_then(|v| lookup(json, v))
            .map(|v| match v {
                Json::String(s) => Value::Text(s.clone()),
                other => Value::Text(other.to_string()),
            });
        record
    }

    fn item_url(&self, c: &Collection, key: &Key) -> String {
        let k = key.0.iter().map(text_of).collect::<Vec<_>>().join(",");
        self.url(&c.item.replace("{key}", &encode(&k)))
    }

    /// Lists `spec`'s collection page by page, each page's records to `each`.
    fn list(
        &mut self,
        spec: &ReadSpec,
        first_page_only: bool,
        each: &mut dyn FnMut(Vec<Json>) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        let c = self.collection(&spec.collection)?.clone();
        let mut params = c.params.clone();
        if let (Some(since), Some(filter)) = (&spec.since, &c.since) {
            params.push((
                filter.param.clone(),
                filter.template.replace("{since}", &text_of(&since.value)),
            ));
        }
        let mut url = self.url(&c.path);
        let mut page: u64 = 1;
        let mut offset: u64 = 0;
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = params.clone();
            match &c.pagination {
                Pagination::Page {
                    param,
                    size_param,
                    per_page,
                } => {
                    query.push((param.clone(), page.to_string()));
                    if let Some(s) = size_param {
                        query.push((s.clone(), per_page.to_string()));
                    }
                }
                Pagination::Offset {
                    param,
                    limit_param,
                    per_page,
                } => {
                    query.push((param.clone(), offset.to_string()));
                    if let Some(l) = limit_param {
                        query.push((l.clone(), per_page.to_string()));
                    }
                }
                Pagination::Cursor { param, .. } => {
                    if let Some(t) = &token {
                        query.push((param.clone(), t.clone()));
                    }
                }
                _ => {}
            }
            if pages > 0
                && matches!(
                    c.pagination,
                    Pagination::NextUrl(_) | Pagination::LinkHeader
                )
            {
                query.clear();
            }
            let answer = self
                .send("GET", &url, &query, None, None)
                .map_err(|f| self.read_failed(&format!("list {}", spec.collection), f))?;
            if answer.status != 200 {
                return Err(self.err(
                    &format!("list {}", spec.collection),
                    self.answered(&url, answer.status, &answer.body),
                ));
            }
            let body = self.parse(&format!("list {}", spec.collection), &answer.body)?;
            let records = match body.pointer(&c.records) {
                Some(Json::Array(items)) => items.clone(),
                // An answer without the records' array is not an empty page: it is an
                // answer syncline does not understand, and the listing is incomplete.
                Some(Json::Null) => Vec::new(),
                _ => {
                    return Err(self.err(
                        &format!("list {}", spec.collection),
                        format!("no array of records at `{}` in the answer", c.records),
                    ));
                }
            };
            let n = records.len() as u64;
            pages += 1;
            let records = match &c.record {
                Some(pointer) => records
                    .into_iter()
                    .filter_map(|e| e.pointer(pointer).cloned())
                    .collect(),
                None => records,
            };
            each(records)?;
            if first_page_only {
                return Ok(());
            }
            match &c.pagination {
                Pagination::None => return Ok(()),
                Pagination::Page { per_page, .. } => {
                    if n < u64::from(*per_page) {
                        return Ok(());
                    }
                    page += 1;
                }
                Pagination::Offset { per_page, .. } => {
                    if n < u64::from(*per_page) {
                        return Ok(());
                    }
                    offset += n;
                }
                Pagination::NextUrl(pointer) => match body.pointer(pointer) {
                    Some(Json::String(next)) if !next.is_empty() => url = self.url(next),
                    _ => return Ok(()),
                },
                Pagination::LinkHeader => match answer.link_next {
                    Some(next) => url = self.url(&next),
                    None => return Ok(()),
                },
                // The last page: no token, an empty page, or the token it was asked with
                // (a feed like CouchDB's `_changes` always answers one).
                Pagination::Cursor { pointer, .. } => {
                    let next = match body.pointer(pointer) {
                        Some(Json::String(t)) if !t.is_empty() => t.clone(),
                        Some(Json::Number(t)) => t.to_string(),
                        _ => return Ok(()),
                    };
                    if n == 0 || token.as_ref() == Some(&next) {
                        return Ok(());
                    }
                    token = Some(next);
                }
            }
        }
    }

    /// One write; its outcome, and the record as the API stored it.
    fn write(
        &mut self,
        c: &Collection,
        spec: &ReadSpec,
        w: &Write,
    ) -> Result<(WriteOutcome, Option<Record>), ConnectorError> {
        let failed = |this: &Self, f: Failed| match f {
            Failed::NoAnswer(why) => Ok((WriteOutcome::Unknown(why), None)),
            // Not sent after every retry: the batch stops here (a batch of an API is not
            // atomic: what went before stands, and the engine finds it by a fetch).
            Failed::NotSent(why) => Err(this.err(&format!("write {}", spec.collection), why)),
        };
        let mut created: Option<Key> = None;
        let (method, url, body, version, key) = match w {
            Write::Create { values } if c.create == "PUT" => {
                let carried: Option<Vec<Value>> = spec
                    .key
                    .iter()
                    .map(|k| {
                        values
                            .iter()
                            .find(|(n, _)| **n == **k)
                            .map(|(_, v)| v.clone())
                            .filter(|v| *v != Value::Null)
                    })
                    .collect();
                let Some(carried) = carried else {
                    return Ok((
                        WriteOutcome::Rejected(format!(
                            "creates are PUT to their key's path, and this record carries no {}",
                            spec.key.join(", ")
                        )),
                        None,
                    ));
                };
                let key = Key(carried);
                let url = self.item_url(c, &key);
                created = Some(key);
                ("PUT", url, Some(to_body(values)), None, None)
            }
            Write::Create { values } => (
                "POST",
                self.url(&c.create_path),
                Some(to_body(values)),
                None,
                None,
            ),
            Write::Update {
                key, set, version, ..
            } => {
                let url = self.item_url(c, key);
                let mut body = to_body(set);
                if c.update == "PUT" {
                    // PUT replaces the record: the fields this write does not set are
                    // sent as the API holds them now. The version sent is still the one
                    // read, so a record changed since is refused, not overwritten.
                    let now = match self.send("GET", &url, &[], None, None) {
                        Ok(a) if a.status == 200 => a,
                        Ok(a) if matches!(a.status, 404 | 410) => {
                            return Ok((WriteOutcome::Stale, None));
                        }
                        Ok(a) => {
                            return Ok((
                                WriteOutcome::Rejected(self.answered(&url, a.status, &a.body)),
                                None,
                            ));
                        }
                        Err(f) => return failed(self, f),
                    };
                    let mut whole = self.parse(&format!("read {}", spec.collection), &now.body)?;
                    merge(&mut whole, body);
                    body = whole;
                }
                if let (Some(field), Some(v), Json::Object(map)) = (&c.version, version, &mut body)
                {
                    // A revision-checked API (CouchDB) wants it in the body too.
                    map.insert(field.clone(), Json::String(text_of(v)));
                }
                (c.update, url, Some(body), version.clone(), Some(key))
            }
            Write::Delete { key, version, .. } => (
                "DELETE",
                self.item_url(c, key),
                None,
                version.clone(),
                Some(key),
            ),
        };
        let if_match = version.as_ref().map(text_of);
        let mut query = Vec::new();
        if method == "DELETE"
            && let (Some(field), Some(v)) = (&c.version, &if_match)
            && field == "_rev"
        {
            query.push(("rev".to_string(), v.clone()));
        }
        let answer = match self.send(method, &url, &query, body.as_ref(), if_match.as_deref()) {
            Ok(a) => a,
            Err(f) => return failed(self, f),
        };
        match answer.status {
            200..=299 => {}
            404 | 410 if key.is_some() => return Ok((WriteOutcome::Stale, None)),
            409 | 412 if key.is_some() => return Ok((WriteOutcome::Stale, None)),
            status => {
                return Ok((
                    WriteOutcome::Rejected(self.answered(&url, status, &answer.body)),
                    None,
                ));
            }
        }
        if matches!(w, Write::Delete { .. }) {
            return Ok((WriteOutcome::Applied, None));
        }
        // The answer is the record as stored, or (CouchDB) only its key and revision:
        // then the record is read back.
        let json: Json = serde_json::from_str(&answer.body).unwrap_or(Json::Null);
        let answered =
            Some(Self::record(c, spec, &json)).filter(|r| r.defect.is_none() && json.is_object());
        let key = match (key.or(created.as_ref()), &answered) {
            (Some(k), _) => k.clone(),
            (None, Some(r)) => r.key.clone(),
            (None, None) => match json.pointer(&c.created_key) {
                Some(Json::String(k)) => Key(vec![Value::Text(k.clone())]),
                Some(Json::Number(n)) => Key(vec![
                    n.as_i64()
                        .map_or_else(|| Value::Text(n.to_string()), Value::Integer),
                ]),
                _ => {
                    return Ok((
                        WriteOutcome::Unknown(
                            "the API did not answer the new record with its key".into(),
                        ),
                        None,
                    ));
                }
            },
        };
        let stored = match answered
            .filter(|r| r.key == key && (c.version.is_none() || r.version.is_some()))
        {
            Some(mut r) => {
                if r.version.is_none() {
                    r.version = answer.etag.clone().map(Value::Text);
                }
                Some(r)
            }
            None => self
                .fetch(spec, std::slice::from_ref(&key))?
                .into_iter()
                .next(),
        };
        Ok(match w {
            Write::Create { .. } => (WriteOutcome::Created(key), stored),
            _ => (WriteOutcome::Applied, stored),
        })
    }
}

impl Connector for HttpConnector {
    fn capabilities(&self) -> Capabilities {
        let versioned = !self.settings.collections.is_empty()
            && self
                .settings
                .collections
                .values()
                .all(|c| c.version.is_some());
        Capabilities {
            ordered_scan: false,
            snapshot: false,
            atomic_batch: false,
            conditional: if versioned {
                Conditional::Version
            } else {
                Conditional::None
            },
            read_back: true,
            change_feed: false,
        }
    }

    fn identity(&mut self) -> Result<String, ConnectorError> {
        Ok(format!("http:{}", self.settings.base_url))
    }

    fn describe(&mut self, collection: &str) -> Result<Vec<ColumnInfo>, ConnectorError> {
        let c = self.collection(collection)?.clone();
        let mut names: Vec<String> = vec![c.key.clone()];
        names.extend(c.columns.iter().cloned());
        // The fields the first page's records have, nested ones by path (`address.city`).
        let spec = ReadSpec {
            collection: collection.to_string(),
            key: vec![c.key.clone()],
            columns: Vec::new(),
            since: None,
            range: None,
        };
        let mut seen_names: HashSet<String> = names.iter().cloned().collect();
        // One page is enough to describe.
        self.list(&spec, true, &mut |records| {
            for r in &records {
                let mut paths = Vec::new();
                field_paths(r, "", &mut paths);
                for p in paths {
                    if seen_names.insert(p.clone()) {
                        names.push(p);
                    }
                }
            }
            Ok(())
        })?;
        Ok(names
            .into_iter()
            .map(|name| ColumnInfo {
                declared_type: c
                    .types
                    .get(&name)
                    .map_or_else(|| "json".into(), ColumnType::name),
                primary_key: name == c.key,
                unique: name == c.key,
                not_null: name == c.key,
                has_default: name == c.key,
                name,
            })
            .collect())
    }

    fn scan(
        &mut self,
        spec: &ReadSpec,
        batch_size: usize,
        consumer: &mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Result<u64, ConnectorError> {
        let c = self.collection(&spec.collection)?.clone();
        // A record that moved to a later page while the listing ran is delivered once
        // (a 64-bit fingerprint a key is all a listing keeps per record).
        let mut delivered: HashSet<u64> = HashSet::new();
        let mut batches = super::ScanBatches::new(batch_size, consumer);
        self.list(spec, false, &mut |records| {
            for json in records {
                let record = Self::record(&c, spec, &json);
                if !delivered.insert(xxhash_rust::xxh3::xxh3_64(record.key.encode().as_bytes())) {
                    continue;
                }
                // Where the API has no changed-since filter, the cursor filters here.
                let past = spec.since.as_ref().is_none_or(|s| {
                    spec.columns
                        .iter()
                        .position(|col| *col == s.column)
                        .and_then(|i| record.values[i].cursor_cmp(&s.value))
                        .is_none_or(|o| o.is_ge())
                });
                if past {
                    batches.push(record)?;
                }
            }
            Ok(())
        })?;
        batches.finish()
    }

    fn is_empty(&mut self, spec: &ReadSpec) -> Result<bool, ConnectorError> {
        let mut any = false;
        self.list(spec, true, &mut |records| {
            any = !records.is_empty();
            Ok(())
        })?;
        Ok(!any)
    }

    fn count(&mut self, _spec: &ReadSpec) -> Result<Option<u64>, ConnectorError> {
        Ok(None)
    }

    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError> {
        let c = self.collection(&spec.collection)?.clone();
        let mut out = Vec::new();
        for key in keys {
            let url = self.item_url(&c, key);
            let answer = self
                .send("GET", &url, &[], None, None)
                .map_err(|f| self.read_failed(&format!("fetch {}", spec.collection), f))?;
            match answer.status {
                200 => {
                    let json = self.parse(&format!("fetch {}", spec.collection), &answer.body)?;
                    let mut r = Self::record(&c, spec, &json);
                    if r.version.is_none() {
                        r.version = answer.etag.map(Value::Text);
                    }
                    out.push(r);
                }
                404 | 410 => {}
                status => {
                    return Err(self.err(
                        &format!("fetch {}", spec.collection),
                        self.answered(&url, status, &answer.body),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        let c = self.collection(&spec.collection)?.clone();
        let mut result = BatchResult::default();
        let mut at = 0;
        while at < writes.len() {
            // Runs of creates go through the batch endpoint where there is one.
            let creates = writes[at..]
                .iter()
                .take_while(|w| matches!(w, Write::Create { .. }))
                .count();
            if let Some(batch) = c.batch.as_ref().filter(|_| creates > 1) {
                let take = creates.min(batch.max);
                for (outcome, stored) in self.create_batch(&c, spec, &writes[at..at + take])? {
                    result.outcomes.push(outcome);
                    result.stored.push(stored);
                }
                at += take;
                continue;
            }
            let (outcome, stored) = self.write(&c, spec, &writes[at])?;
            result.outcomes.push(outcome);
            result.stored.push(stored);
            at += 1;
        }
        Ok(result)
    }
}

impl HttpConnector {
    /// Creates sent as one request to the API's batch endpoint (PocketBase's form:
    /// `{"requests": [{method, url, body}]}`, answered by a `{status, body}` per request,
    /// all or nothing). A batch the API refuses is sent again one create at a time, so
    /// each record gets its own answer; one whose answer never came is unknown, each of
    /// its creates with it.
    fn create_batch(
        &mut self,
        c: &Collection,
        spec: &ReadSpec,
        creates: &[Write],
    ) -> Result<Vec<(WriteOutcome, Option<Record>)>, ConnectorError> {
        let Some(batch) = &c.batch else {
            unreachable!("called with a batch endpoint")
        };
        let requests: Vec<Json> = creates
            .iter()
            .map(|w| match w {
                Write::Create { values } => json_request("POST", &c.create_path, to_body(values)),
                _ => unreachable!("creates only"),
            })
            .collect();
        let url = self.url(&batch.path);
        let body = serde_json::json!({ "requests": requests });
        let answer = match self.send("POST", &url, &[], Some(&body), None) {
            Ok(a) => a,
            Err(Failed::NoAnswer(why)) => {
                return Ok(creates
                    .iter()
                    .map(|_| (WriteOutcome::Unknown(why.clone()), None))
                    .collect());
            }
            Err(Failed::NotSent(why)) => {
                return Err(self.err(&format!("write {}", spec.collection), why));
            }
        };
        let answers = match (answer.status, serde_json::from_str::<Json>(&answer.body)) {
            (200..=299, Ok(Json::Array(items))) if items.len() == creates.len() => items,
            // Refused as a whole (one record's fault, all or nothing): one at a time.
            (400..=499, _) => {
                return creates.iter().map(|w| self.write(c, spec, w)).collect();
            }
            (status, _) => {
                return Ok(creates
                    .iter()
                    .map(|_| {
                        (
                            WriteOutcome::Unknown(self.answered(&url, status, &answer.body)),
                            None,
                        )
                    })
                    .collect());
            }
        };
        Ok(answers
            .iter()
            .map(|a| {
                let record = Self::record(c, spec, &a["body"]);
                match a["status"].as_u64() {
                    Some(200..=299) if record.defect.is_none() => {
                        (WriteOutcome::Created(record.key.clone()), Some(record))
                    }
                    _ => (
                        WriteOutcome::Unknown("the batch answer holds no new record".into()),
                        None,
                    ),
                }
            })
            .collect())
    }
}

/// One request of a batch, as PocketBase's batch endpoint takes it.
fn json_request(method: &str, url: &str, body: Json) -> Json {
    serde_json::json!({ "method": method, "url": url, "body": body })
}

/// A value of a field, by name or by a dotted path into nested objects.
fn lookup<'a>(json: &'a Json, field: &str) -> Option<&'a Json> {
    if let Some(v) = json.get(field) {
        return Some(v);
    }
    field.split('.').try_fold(json, |j, part| j.get(part))
}

/// The fields of a record, nested objects' by dotted path.
fn field_paths(json: &Json, prefix: &str, out: &mut Vec<String>) {
    if let Json::Object(map) = json {
        for (k, v) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Json::Object(_) => field_paths(v, &path, out),
                _ => out.push(path),
            }
        }
    }
}

/// Fields and their values as a JSON body; a dotted name nests (`address.city`).
fn to_body(values: &[(crate::model::Name, Value)]) -> Json {
    let mut body = serde_json::Map::new();
    for (name, v) in values {
        let mut parts: Vec<&str> = name.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut at = &mut body;
        for p in parts {
            let entry = at
                .entry(p.to_string())
                .or_insert_with(|| Json::Object(serde_json::Map::new()));
            if !entry.is_object() {
                *entry = Json::Object(serde_json::Map::new());
            }
            at = entry.as_object_mut().expect("an object");
        }
        at.insert(last.to_string(), v.to_json());
    }
    Json::Object(body)
}

/// The `rel="next"` target of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// A URL's path, for messages: never its query, which may carry a key.
fn path_of(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// The start of an answer's body, for a message.
fn brief(body: &str) -> String {
    let b: String = body.chars().take(300).collect();
    b.replace('\n', " ")
}

/// Percent-encodes a query component or path segment.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A value as text for a URL, a header or a filter: its SQL text; NULL is empty.
fn text_of(v: &Value) -> String {
    v.to_sql_text().unwrap_or_default()
}

/// `patch`'s fields written over `whole`'s, nested objects merged.
fn merge(whole: &mut Json, patch: Json) {
    match (whole, patch) {
        (Json::Object(w), Json::Object(p)) => {
            for (k, v) in p {
                match w.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        w.insert(k, v);
                    }
                }
            }
        }
        (w, p) => *w = p,
    }
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn a_link_header_names_its_next_page() {
        assert_eq!(
            next_link(
                r#"<https://api.example.com/c?page=2>; rel="next", <https://api.example.com/c?page=9>; rel="last""#
            ),
            Some("https://api.example.com/c?page=2".into())
        );
        assert_eq!(
            next_link(
                r#"<https://x/c?page=1>; rel="prev"; title="p", <https://x/c?page=3>; rel=next"#
            ),
            Some("https://x/c?page=3".into())
        );
        assert_eq!(next_link(r#"<https://x/c?page=1>; rel="prev""#), None);
    }
}
