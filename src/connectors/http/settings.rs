//! `kind = "http"`: JSON REST resources, declared in the config.
//!
//! ```toml
//! [systems.desk]
//! kind = "http"
//! base_url = "https://desk.example.com"
//! headers = { Accept = "application/json" }
//! timeout = 30                                   # seconds per request
//! auth = { bearer = "${DESK_TOKEN}" }            # or { header = "X-Api-Key", value = "${KEY}" },
//!                                                #    { query = "api_key", value = "${KEY}" },
//!                                                #    { basic = "user", password = "${PW}" },
//!                                                #    { oauth2 = "https://auth/token", client_id = "${ID}",
//!                                                #      client_secret = "${SECRET}", scope = "read" }
//! retries = 5                                    # on timeouts, resets, 429 and 5xx
//! max_retry_wait = 60                            # seconds, the cap on Retry-After
//! requests_per_second = 20                       # a budget; none by default
//! requests_per_window = { requests = 1000, seconds = 3600 }
//!                                                # RateLimit-Remaining: 0 waits for its reset
//!
//! [systems.desk.collections.contacts]
//! path = "/api/contacts"                         # GET lists, POST creates
//! item = "/api/contacts/{key}"                   # GET, PATCH/PUT, DELETE one (default path/{key})
//! records = "/items"                             # where a list response holds its records
//! record = "/doc"                                # where each listed element holds the record
//! created_key = "/id"                            # the new key in a create's answer
//! key = "id"
//! params = { sort = "id" }
//! pagination = { page = "page", size = "perPage", per_page = 200 }
//! create = "POST"                              # or "PUT" to the item path (the key is carried)
//! create_path = "/api/contacts"                  # where a POST creates (default: path)
//! update = "PATCH"
//! version = "_rev"                               # makes writes conditional (If-Match)
//! since = { param = "filter", template = "updated >= '{since}'" }
//! columns = ["id", "name", "email"]              # when a listing may be empty
//! batch = { path = "/api/batch", max = 50 }      # creates in batches (PocketBase's form)
//! types = { amount = "decimal(12,2)" }
//! ```

use super::{
    Auth, BatchEndpoint, Collection, HttpConnector, HttpSettings, Pagination, SinceFilter,
};
use crate::config::{ConfigError, Secret};
use crate::connectors::file::ColumnType;
use crate::connectors::kinds::{Kind, SettingsContext};
use crate::connectors::{Connector, ConnectorError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct Settings(pub HttpSettings);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Written {
    base_url: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    timeout: Option<u64>,
    auth: Option<Spanned<AuthWritten>>,
    retries: Option<u32>,
    max_retry_wait: Option<u64>,
    requests_per_second: Option<f64>,
    requests_per_window: Option<WindowWritten>,
    #[serde(default)]
    collections: BTreeMap<String, Spanned<CollectionWritten>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowWritten {
    requests: usize,
    seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthWritten {
    bearer: Option<Spanned<String>>,
    header: Option<String>,
    query: Option<String>,
    value: Option<Spanned<String>>,
    basic: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    oauth2: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<String>>,
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionWritten {
    path: String,
    item: Option<String>,
    #[serde(default)]
    records: String,
    record: Option<String>,
    created_key: Option<String>,
    key: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    pagination: Option<PaginationWritten>,
    update: Option<String>,
    create: Option<String>,
    create_path: Option<String>,
    version: Option<String>,
    since: Option<SinceWritten>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    types: HashMap<String, String>,
    batch: Option<BatchWritten>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchWritten {
    path: String,
    max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationWritten {
    page: Option<String>,
    size: Option<String>,
    per_page: Option<u32>,
    offset: Option<String>,
    limit: Option<String>,
    next: Option<String>,
    link: Option<bool>,
    cursor: Option<String>,
    param: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinceWritten {
    param: String,
    template: String,
}

impl Kind for Settings {
    const NAME: &'static str = "http";
    type Written = Written;

    fn resolve(w: Written, cx: &SettingsContext<'_>) -> Result<Settings, ConfigError> {
        let base_url = cx.text(cx.required(&w.base_url, "base_url = \"https://…\"")?)?;
        let headers = w
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), cx.secret(v)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let auth = match &w.auth {
            None => Auth::None,
            Some(a) => {
                let span = Some(a.span());
                let a = a.get_ref();
                let needs_value = |what: &str| {
                    a.value
                        .as_ref()
                        .ok_or_else(|| {
                            cx.error(
                                span.clone(),
                                format!(
                                    "system `{}`: auth by {what} needs value = \"${{SECRET}}\"",
                                    cx.system
                                ),
                            )
                        })
                        .and_then(|v| cx.secret(v))
                };
                match (&a.bearer, &a.header, &a.query, &a.basic) {
                    (None, None, None, None) if a.oauth2.is_some() => {
                        let missing = |what: &str| {
                            cx.error(
                                span.clone(),
                                format!(
                                    "system `{}`: auth by oauth2 needs {what} = \"${{…}}\"",
                                    cx.system
                                ),
                            )
                        };
                        let client_id = a.client_id.as_ref().ok_or_else(|| missing("client_id"))?;
                        let client_secret = a
                            .client_secret
                            .as_ref()
                            .ok_or_else(|| missing("client_secret"))?;
                        Auth::OAuth2 {
                            token_url: cx.text(a.oauth2.as_ref().expect("checked"))?,
                            client_id: cx.text(client_id)?,
                            client_secret: cx.secret(client_secret)?,
                            scope: a.scope.clone(),
                        }
                    }
                    (Some(token), None, None, None) => Auth::Bearer(cx.secret(token)?),
                    (None, Some(name), None, None) => {
                        Auth::Header(name.clone(), needs_value("header")?)
                    }
                    (None, None, Some(name), None) => {
                        Auth::Query(name.clone(), needs_value("query")?)
                    }
                    (None, None, None, Some(user)) => Auth::Basic(
                        cx.text(user)?,
                        match &a.password {
                            Some(p) => cx.secret(p)?,
                            None => Secret::new(String::new()),
                        },
                    ),
                    _ => {
                        return Err(cx.error(
                            span,
                            format!(
                                "system `{}`: auth is one of {{ bearer = … }}, {{ header = NAME, value = … }}, {{ query = NAME, value = … }}, {{ basic = USER, password = … }}, {{ oauth2 = TOKEN_URL, client_id = …, client_secret = …, scope = … }}",
                                cx.system
                            ),
                        ));
                    }
                }
            }
        };
        let mut collections = HashMap::new();
        for (name, c) in w.collections {
            let span = Some(c.span());
            let c = c.into_inner();
            let bad = |m: String| {
                cx.error(
                    span.clone(),
                    format!("system `{}`, collection `{name}`: {m}", cx.system),
                )
            };
            let pagination = match c.pagination {
                None => Pagination::None,
                Some(p) => {
                    let per_page = p.per_page.unwrap_or(100).max(1);
                    match (p.page, p.offset, p.next, p.link, p.cursor) {
                        (Some(page), None, None, None, None) => Pagination::Page {
                            param: page,
                            size_param: p.size,
                            per_page,
                        },
                        (None, Some(offset), None, None, None) => Pagination::Offset {
                            param: offset,
                            limit_param: p.limit,
                            per_page,
                        },
                        (None, None, Some(pointer), None, None) => Pagination::NextUrl(pointer),
                        (None, None, None, Some(true), None) => Pagination::LinkHeader,
                        (None, None, None, None, Some(pointer)) => Pagination::Cursor {
                            pointer,
                            param: p.param.ok_or_else(|| bad("a cursor pagination needs param = \"NAME\" (the query parameter that carries it)".into()))?,
                        },
                        _ => {
                            return Err(bad(
                                "pagination is one of { page = P, size = S, per_page = N }, { offset = O, limit = L, per_page = N }, { next = \"/pointer\" }, { link = true }, { cursor = \"/pointer\", param = P }".into(),
                            ));
                        }
                    }
                }
            };
            let update = match c.update.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("PATCH") => "PATCH",
                Some("PUT") => "PUT",
                Some(other) => return Err(bad(format!("update is PATCH or PUT, not {other}"))),
            };
            let create = match c.create.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("POST") => "POST",
                Some("PUT") => "PUT",
                Some(other) => return Err(bad(format!("create is POST or PUT, not {other}"))),
            };
            let types = c
                .types
                .iter()
                .map(|(col, t)| {
                    ColumnType::parse(t)
                        .map(|t| (col.clone(), t))
                        .map_err(|m| bad(format!("column `{col}`: {m}")))
                })
                .collect::<Result<_, _>>()?;
            collections.insert(
                name,
                Collection {
                    item: c
                        .item
                        .unwrap_or_else(|| format!("{}/{{key}}", c.path.trim_end_matches('/'))),
                    path: c.path.clone(),
                    records: c.records,
                    record: c.record,
                    created_key: c.created_key.unwrap_or_else(|| "/id".into()),
                    key: c.key.unwrap_or_else(|| "id".into()),
                    params: c.params.into_iter().collect(),
                    pagination,
                    update,
                    create,
                    create_path: c.create_path.clone().unwrap_or_else(|| c.path.clone()),
                    version: c.version,
                    since: c.since.map(|s| SinceFilter {
                        param: s.param,
                        template: s.template,
                    }),
                    columns: c.columns,
                    types,
                    batch: c.batch.map(|b| BatchEndpoint {
                        path: b.path,
                        max: b.max.unwrap_or(50).max(1),
                    }),
                },
            );
        }
        Ok(Settings(HttpSettings {
            base_url: base_url.trim_end_matches('/').to_string(),
            headers,
            timeout: std::time::Duration::from_secs(w.timeout.unwrap_or(30).max(1)),
            auth,
            retries: w.retries.unwrap_or(5),
            max_retry_wait: std::time::Duration::from_secs(w.max_retry_wait.unwrap_or(60)),
            requests_per_second: w.requests_per_second.filter(|r| *r > 0.0),
            requests_per_window: w
                .requests_per_window
                .filter(|b| b.requests > 0 && b.seconds > 0)
                .map(|b| (b.requests, std::time::Duration::from_secs(b.seconds))),
            collections,
        }))
    }

    fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
        Ok(Box::new(HttpConnector::open(system, &self.0)))
    }
}
