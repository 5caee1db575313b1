//! Turns a [`RawConfig`] into validated specs: defaults applied, names cross-checked,
//! every rule parsed into an enum. Errors keep the span of what they refer to.

use super::meaning::field_meaning;
use super::raw::{RawClock, RawConfig, RawLink};
use super::{Config, ConfigError, Source, StateLocation, SystemSpec, substitute_env};
use crate::connectors::kinds::SettingsContext;
use crate::meaning::{Compose, FieldMeaning, SplitAt};
use crate::model::Value;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    OneWay,
    TwoWay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Left,
    Right,
    Both,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Left => "left",
            Owner::Right => "right",
            Owner::Both => "both",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    LeftWins,
    RightWins,
    Newest,
    PreferNonEmpty,
    Manual,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::LeftWins => "left-wins",
            Policy::RightWins => "right-wins",
            Policy::Newest => "newest",
            Policy::PreferNonEmpty => "prefer-non-empty",
            Policy::Manual => "manual",
        }
    }
}

/// What a delete on one side does to the partner on the other side.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteRule {
    /// Delete the partner too.
    Propagate,
    /// Leave the partner alone and forget the pair (the partner is not re-created).
    Ignore,
    /// Mark the partner deleted by setting a column.
    Soft { column: String, value: Value },
    /// Touch nothing; quarantine the pair until a person deletes or restores a side.
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteVsEdit {
    EditWins,
    DeleteWins,
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrift {
    Correct,
    Report,
}

/// A normalization applied to a field's value on both sides before comparing, and to
/// every value written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transform {
    pub trim: bool,
    pub lowercase: bool,
    pub uppercase: bool,
}

impl Transform {
    /// Whether `apply` returns every value as it is.
    pub fn is_identity(&self) -> bool {
        !(self.trim || self.lowercase || self.uppercase)
    }

    pub fn apply(&self, v: Value) -> Value {
        match v {
            Value::Text(t) if !self.is_identity() => {
                let mut s: &str = &t;
                if self.trim {
                    s = s.trim();
                }
                Value::Text(if self.lowercase {
                    s.to_lowercase()
                } else if self.uppercase {
                    s.to_uppercase()
                } else {
                    s.to_string()
                })
            }
            other => other,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClockSpec {
    pub left: String,
    pub right: String,
}

/// `[watch]`: what `syncline watch` serves and its links' default schedule.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// Where the operator endpoints and the dashboard listen (`None`: nowhere).
    pub listen: Option<std::net::SocketAddr>,
    /// With it, the dashboard and the API may change things (resolve, release) for a
    /// request that carries it; without it they are read-only.
    pub admin_token: Option<String>,
    pub every: std::time::Duration,
    pub debounce: std::time::Duration,
    /// A change feed's slot holding back more WAL than this is dropped and made again,
    /// and the link reconciled in full (default 1 GiB).
    pub max_feed_lag_bytes: u64,
    /// Changes a cycle takes from a feed by key (default 50,000); one transaction that
    /// changed more makes the link read in full.
    pub max_feed_changes: usize,
}

impl Default for WatchSpec {
    fn default() -> Self {
        WatchSpec {
            listen: None,
            admin_token: None,
            every: std::time::Duration::from_secs(30),
            debounce: std::time::Duration::from_millis(200),
            max_feed_lag_bytes: 1 << 30,
            max_feed_changes: 50_000,
        }
    }
}

/// One side of a link: `system.collection` and its key columns.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub system: String,
    pub collection: String,
    pub key: Vec<String>,
    pub span: Range<usize>,
    pub key_span: Option<Range<usize>>,
}

impl Endpoint {
    pub fn label(&self) -> String {
        format!("{}.{}", self.system, self.collection)
    }
}

#[derive(Debug, Clone)]
pub struct FieldSpec {
    /// The field's name, which is also its column on the left.
    pub name: crate::model::Name,
    /// Its column on the right.
    pub right: crate::model::Name,
    pub transform: Transform,
    /// How its left value reads in the right's meaning (see [`crate::meaning`]).
    pub meaning: FieldMeaning,
    /// One of several left fields the right keeps as one composed column.
    pub composed: bool,
    pub span: Range<usize>,
}

impl FieldSpec {
    /// Whether the value is compared as each side holds it: no transform, no meaning
    /// to translate. Shortcuts that compare raw values hold only for such fields.
    pub fn is_verbatim(&self) -> bool {
        self.transform.is_identity() && self.meaning.is_same() && !self.composed
    }
}

/// The unit the merge decides: one field, or a field group that wins or loses together.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    pub name: String,
    /// Indexes into [`LinkSpec::fields`].
    pub fields: Vec<usize>,
    pub owner: Owner,
    /// The policy for changes on both sides; `None` means the link's `conflict`.
    pub policy: Option<Policy>,
    pub clock: Option<ClockSpec>,
    pub owner_explicit: bool,
    /// Its fields are one composed column on the right.
    pub compose: Option<Compose>,
    pub span: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub name: String,
    pub span: Range<usize>,
    pub left: Endpoint,
    pub right: Endpoint,
    pub mode: Mode,
    pub fields: Vec<FieldSpec>,
    pub units: Vec<UnitSpec>,
    /// Indexes into `fields`.
    pub match_on: Vec<usize>,
    pub conflict: Option<Policy>,
    pub on_delete_left: Option<DeleteRule>,
    pub on_delete_right: Option<DeleteRule>,
    pub delete_vs_edit: DeleteVsEdit,
    pub max_delete_fraction: f64,
    pub on_drift: OnDrift,
    /// Column on the left holding the right record's key (for records created on the left).
    pub left_ref: Option<String>,
    /// Column on the right holding the left record's key (for records created on the right).
    pub right_ref: Option<String>,
    pub clock_skew_seconds: f64,
    pub batch_size: usize,
    /// How each side is read on a cycle; `None` reads both whole every time.
    pub changes: Option<super::ChangesSpec>,
    /// `watch`: how often the link runs (default `[watch] every`, else 30 s).
    pub every: Option<std::time::Duration>,
    /// `watch`: how long to wait after a change event for more (default 200 ms).
    pub debounce: Option<std::time::Duration>,
}

/// Records per read batch and per write transaction. Each batch pays fixed costs: a
/// commit on the receiving system (a SQLite database fsyncs four times), one on the state
/// store, a `COPY` set up on PostgreSQL — about 3 ms a batch here. At 1,000 they were a
/// third of a 1M-row first load; at 5,000 a first load is 25–30% faster, and peak memory
/// (a few batches in flight) stays near 70 MB for a 7-column table.
pub const DEFAULT_BATCH_SIZE: usize = 5000;

impl LinkSpec {
    /// The policy that decides a unit's two-sided changes. Without one it is `manual`:
    /// nothing is overwritten until a person says how.
    pub fn policy_of(&self, unit: &UnitSpec) -> Policy {
        unit.policy.or(self.conflict).unwrap_or(Policy::Manual)
    }

    pub fn delete_rule(&self, deleted_on: crate::model::Side) -> DeleteRule {
        let rule = match deleted_on {
            crate::model::Side::Left => &self.on_delete_left,
            crate::model::Side::Right => &self.on_delete_right,
        };
        rule.clone().unwrap_or(DeleteRule::Hold)
    }

    pub fn endpoint(&self, side: crate::model::Side) -> &Endpoint {
        match side {
            crate::model::Side::Left => &self.left,
            crate::model::Side::Right => &self.right,
        }
    }

    pub fn field_column(&self, field: usize, side: crate::model::Side) -> &crate::model::Name {
        match side {
            crate::model::Side::Left => &self.fields[field].name,
            crate::model::Side::Right => &self.fields[field].right,
        }
    }

    /// Whether the key is carried: each key column of one side is a field's column on
    /// that side, mapped to the other side's key column in the same place (`id = {}`,
    /// `id = { right = "order_id" }`). A record created from a record then has its key,
    /// so the key is a create identity: a create whose outcome a crash left unknown is
    /// found again by it, as by `right_ref`.
    pub fn key_is_carried(&self) -> bool {
        self.left.key.len() == self.right.key.len()
            && self.left.key.iter().zip(&self.right.key).all(|(l, r)| {
                self.fields
                    .iter()
                    .any(|f| &*f.name == l.as_str() && &*f.right == r.as_str())
            })
    }

    /// Whether records can be told apart from the other side's without the id map: by
    /// `match_on`, an external-id column, or a carried key.
    pub fn has_create_identity(&self) -> bool {
        !self.match_on.is_empty()
            || self.left_ref.is_some()
            || self.right_ref.is_some()
            || self.key_is_carried()
    }

    /// The sides syncline creates records on: the right, and on a two-way link the left.
    pub fn receiving_sides(&self) -> &'static [crate::model::Side] {
        match self.mode {
            Mode::OneWay => &[crate::model::Side::Right],
            Mode::TwoWay => &[crate::model::Side::Left, crate::model::Side::Right],
        }
    }

    pub fn external_ref(&self, side: crate::model::Side) -> Option<&str> {
        match side {
            crate::model::Side::Left => self.left_ref.as_deref(),
            crate::model::Side::Right => self.right_ref.as_deref(),
        }
    }

    /// "one-way", "two-way", or "hybrid: 9 fields left→right, 1 field right→left".
    pub fn shape(&self) -> String {
        let count = |o: Owner| -> usize {
            self.units
                .iter()
                .filter(|u| u.owner == o)
                .map(|u| u.fields.len())
                .sum()
        };
        let (l, r, b) = (count(Owner::Left), count(Owner::Right), count(Owner::Both));
        let plural = |n: usize| if n == 1 { "field" } else { "fields" };
        let mut parts = Vec::new();
        if l > 0 {
            parts.push(format!("{l} {} left→right", plural(l)));
        }
        if r > 0 {
            parts.push(format!("{r} {} right→left", plural(r)));
        }
        if b > 0 {
            parts.push(format!("{b} {} both ways", plural(b)));
        }
        let kind = match (self.mode, r + b) {
            (Mode::OneWay, 0) => "one-way",
            (Mode::TwoWay, _) if l == 0 && r == 0 => "two-way",
            _ => "hybrid",
        };
        format!("{kind}: {}", parts.join(", "))
    }

    /// A fingerprint of what identifies the link's records; a state store holding a
    /// different one belongs to another config and its id map is not trusted.
    pub fn identity(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.left.label(),
            self.left.key.join(","),
            self.right.label(),
            self.right.key.join(",")
        )
    }
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A duration setting (`"30s"`, `"200ms"`), its error placed at the setting and named
/// by `what`.
fn spanned_duration(
    source: &Source,
    d: &Option<Spanned<String>>,
    what: &str,
) -> Result<Option<std::time::Duration>, ConfigError> {
    d.as_ref()
        .map(|d| {
            super::changes::duration_seconds(d.get_ref())
                .map(std::time::Duration::from_secs_f64)
                .map_err(|m| source.error(Some(d.span()), format!("{what} {m}")))
        })
        .transpose()
}

pub(super) fn resolve(
    source: Source,
    raw: RawConfig,
    base_dir: &Path,
    env: Env,
) -> Result<Config, ConfigError> {
    let err = |span: Range<usize>, msg: String| source.error(Some(span), msg);
    let env_str = |s: &Spanned<String>| -> Result<String, ConfigError> {
        substitute_env(s.get_ref(), env).map_err(|m| err(s.span(), m))
    };
    let resolve_path = |p: String| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base_dir.join(p) }
    };

    let state = match &raw.state {
        None => StateLocation::Sqlite(resolve_path(".syncline/state.db".into())),
        Some(st) => {
            let st_ref = st.get_ref();
            match (&st_ref.path, &st_ref.url) {
                (Some(_), Some(url)) => {
                    return Err(err(
                        url.span(),
                        "[state] takes `path` or `url`, not both".into(),
                    ));
                }
                (_, Some(url)) => {
                    let resolved = env_str(url)?;
                    if !resolved.starts_with("postgres://")
                        && !resolved.starts_with("postgresql://")
                    {
                        return Err(err(url.span(), "[state] url must be a postgres:// URL (or use `path` for the embedded store)".into()));
                    }
                    StateLocation::Postgres(super::Secret::new(resolved))
                }
                (Some(p), None) => StateLocation::Sqlite(resolve_path(env_str(p)?)),
                (None, None) => StateLocation::Sqlite(resolve_path(".syncline/state.db".into())),
            }
        }
    };

    // Each kind reads the rest of its system's table with its own settings type, from
    // the document's spanned tree so its errors keep their lines.
    let document = toml::de::DeTable::parse(&source.text)
        .map_err(|e| source.error(e.span(), e.message().trim_end().to_string()))?;
    let mut systems = BTreeMap::new();
    for (name, sys) in &raw.systems {
        let mut table = document
            .get_ref()
            .get("systems")
            .and_then(|s| s.get_ref().get(name.as_str()))
            .cloned()
            .ok_or_else(|| err(sys.span(), format!("system `{name}` is not a table")))?;
        if let toml::de::DeValue::Table(t) = table.get_mut() {
            t.remove("kind");
        }
        let mut cx = SettingsContext {
            system: name,
            kind: "",
            span: sys.span(),
            source: &source,
            base_dir,
            env,
        };
        let spec = SystemSpec::resolve(&sys.get_ref().kind, table, &mut cx)?;
        systems.insert(name.clone(), spec);
    }

    let mut links = Vec::new();
    for (name, link) in &raw.links {
        links.push(resolve_link(&source, name, link, &systems)?);
    }
    let watch = match &raw.watch {
        None => WatchSpec::default(),
        Some(w) => {
            let w = w.get_ref();
            let duration = |d: &Option<Spanned<String>>, what: &str| {
                spanned_duration(&source, d, &format!("[watch] {what}"))
            };
            let listen = match &w.listen {
                None => None,
                Some(l) => Some(l.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
                    err(
                        l.span(),
                        format!(
                            "[watch] listen `{}` is not an address and port like \"127.0.0.1:9187\"",
                            l.get_ref()
                        ),
                    )
                })?),
            };
            let admin_token = w.admin_token.as_ref().map(&env_str).transpose()?;
            if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(err(
                    w.admin_token
                        .as_ref()
                        .map(Spanned::span)
                        .unwrap_or_default(),
                    "[watch] admin_token is shorter than 16 characters: anyone could guess it"
                        .into(),
                ));
            }
            let max_feed_lag_bytes = match &w.max_feed_lag_bytes {
                None => WatchSpec::default().max_feed_lag_bytes,
                Some(n) if *n.get_ref() > 0 => *n.get_ref() as u64,
                Some(n) => {
                    return Err(err(
                        n.span(),
                        "[watch] max_feed_lag_bytes must be positive".into(),
                    ));
                }
            };
            let max_feed_changes = match &w.max_feed_changes {
                None => WatchSpec::default().max_feed_changes,
                Some(n) if (1..=10_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
                Some(n) => {
                    return Err(err(
                        n.span(),
                        "[watch] max_feed_changes must be between 1 and 10000000".into(),
                    ));
                }
            };
            WatchSpec {
                listen,
                max_feed_changes,
                admin_token,
                every: duration(&w.every, "every")?.unwrap_or(WatchSpec::default().every),
                debounce: duration(&w.debounce, "debounce")?
                    .unwrap_or(WatchSpec::default().debounce),
                max_feed_lag_bytes,
            }
        }
    };
    Ok(Config {
        source,
        state,
        systems,
        links,
        watch,
    })
}

fn resolve_link(
    source: &Source,
    name: &str,
    spanned: &Spanned<RawLink>,
    systems: &BTreeMap<String, SystemSpec>,
) -> Result<LinkSpec, ConfigError> {
    let err =
        |span: Range<usize>, msg: String| source.error(Some(span), format!("link `{name}`: {msg}"));
    let raw = spanned.get_ref();

    let endpoint = |s: &Spanned<String>,
                    key: &Option<Spanned<String>>,
                    which: &str|
     -> Result<Endpoint, ConfigError> {
        let (system, collection) = s.get_ref().split_once('.').ok_or_else(|| {
            err(
                s.span(),
                format!(
                    "`{which}` must be `system.collection`, got `{}`",
                    s.get_ref()
                ),
            )
        })?;
        if !systems.contains_key(system) {
            let known: Vec<_> = systems.keys().map(String::as_str).collect();
            return Err(err(
                s.span(),
                format!(
                    "`{which}` names system `{system}`, which is not defined (defined: {})",
                    known.join(", ")
                ),
            ));
        }
        if collection.is_empty() {
            return Err(err(s.span(), format!("`{which}` names no collection")));
        }
        let key_cols = match key {
            Some(k) => k
                .get_ref()
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>(),
            None => vec!["id".to_string()],
        };
        if key_cols.is_empty() {
            return Err(err(
                key.as_ref().map_or(s.span(), Spanned::span),
                format!("`{which}_key` is empty"),
            ));
        }
        Ok(Endpoint {
            system: system.to_string(),
            collection: collection.to_string(),
            key: key_cols,
            span: s.span(),
            key_span: None,
        })
    };
    let mut left = endpoint(&raw.left, &raw.left_key, "left")?;
    left.key_span = raw.left_key.as_ref().map(Spanned::span);
    let mut right = endpoint(&raw.right, &raw.right_key, "right")?;
    right.key_span = raw.right_key.as_ref().map(Spanned::span);

    let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("one-way", _)) => Mode::OneWay,
        Some(("two-way", _)) => Mode::TwoWay,
        Some((other, span)) => {
            return Err(err(
                span,
                format!("mode `{other}` is not `one-way` or `two-way`"),
            ));
        }
    };
    let conflict = raw
        .conflict
        .as_ref()
        .map(|c| parse_policy(c).map_err(|m| err(c.span(), m)))
        .transpose()?;

    if raw.fields.is_empty() {
        return Err(err(
            spanned.span(),
            "no fields: add a [links.NAME.fields] table naming the fields to sync".into(),
        ));
    }
    let link_clock = raw.clock.as_ref().map(|c| clock(c.get_ref()));
    let mut fields = Vec::new();
    let mut per_field = Vec::new();
    for (fname, f) in &raw.fields {
        let fr = f.get_ref();
        let owner = fr
            .owner
            .as_ref()
            .map(|o| parse_owner(o).map_err(|m| err(o.span(), format!("field `{fname}`: {m}"))))
            .transpose()?;
        let policy = fr
            .conflict
            .as_ref()
            .map(|c| parse_policy(c).map_err(|m| err(c.span(), format!("field `{fname}`: {m}"))))
            .transpose()?;
        let transform = fr
            .transform
            .as_ref()
            .map(|t| {
                parse_transform(t.get_ref())
                    .map_err(|m| err(t.span(), format!("field `{fname}`: {m}")))
            })
            .transpose()?
            .unwrap_or_default();
        let meaning = field_meaning(fr, transform)
            .map_err(|(span, m)| err(span, format!("field `{fname}`: {m}")))?;
        fields.push(FieldSpec {
            name: fname.as_str().into(),
            right: fr
                .right
                .as_ref()
                .map_or_else(|| fname.as_str().into(), |r| r.get_ref().as_str().into()),
            transform,
            meaning,
            composed: false,
            span: f.span(),
        });
        per_field.push((
            owner,
            policy,
            fr.clock.as_ref().map(|c| clock(c.get_ref())),
            f.span(),
        ));
    }
    // Composed columns add their left fields, decided as one unit.
    let mut composed_units = Vec::new();
    for (column, c) in &raw.composed {
        let cr = c.get_ref();
        if cr.left.len() < 2 {
            return Err(err(
                c.span(),
                format!("composed `{column}`: `left` names the fields it joins, at least two"),
            ));
        }
        let mut idx = Vec::new();
        for part in &cr.left {
            if fields.iter().any(|f| *f.name == **part.get_ref()) {
                return Err(err(
                    part.span(),
                    format!(
                        "composed `{column}`: `{}` is also in [links.{name}.fields]; a field is synced one way only",
                        part.get_ref()
                    ),
                ));
            }
            idx.push(fields.len());
            fields.push(FieldSpec {
                name: part.get_ref().as_str().into(),
                right: column.as_str().into(),
                transform: Transform::default(),
                meaning: FieldMeaning::Same,
                composed: true,
                span: part.span(),
            });
        }
        let separator = cr
            .separator
            .as_ref()
            .map_or_else(|| " ".to_string(), |s| s.get_ref().clone());
        if separator.is_empty() {
            return Err(err(
                c.span(),
                format!("composed `{column}`: the separator cannot be empty"),
            ));
        }
        let split = match cr.split.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("first", _)) => SplitAt::First,
            Some(("last", _)) => SplitAt::Last,
            Some((other, span)) => {
                return Err(err(
                    span,
                    format!("composed `{column}`: split `{other}` is not first or last"),
                ));
            }
        };
        let compose = match cr.form.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("text", _)) => {
                if let Some(k) = &cr.keys {
                    return Err(err(
                        k.span(),
                        format!(
                            "composed `{column}`: `keys` name a JSON object's keys; say form = \"json\""
                        ),
                    ));
                }
                Compose::Text { separator, split }
            }
            Some(("json", span)) => {
                if cr.separator.is_some() || cr.split.is_some() {
                    return Err(err(
                        span,
                        format!("composed `{column}`: a JSON object has no separator or split"),
                    ));
                }
                let keys = match &cr.keys {
                    Some(k) if k.get_ref().len() != cr.left.len() => {
                        return Err(err(
                            k.span(),
                            format!(
                                "composed `{column}`: {} keys for {} fields; one key per field",
                                k.get_ref().len(),
                                cr.left.len()
                            ),
                        ));
                    }
                    Some(k) => k.get_ref().clone(),
                    None => cr.left.iter().map(|p| p.get_ref().clone()).collect(),
                };
                Compose::Json { keys }
            }
            Some((other, span)) => {
                return Err(err(
                    span,
                    format!("composed `{column}`: form `{other}` is not text or json"),
                ));
            }
        };
        let owner = cr
            .owner
            .as_ref()
            .map(|o| parse_owner(o).map_err(|m| err(o.span(), format!("composed `{column}`: {m}"))))
            .transpose()?;
        let policy = cr
            .conflict
            .as_ref()
            .map(|p| {
                parse_policy(p).map_err(|m| err(p.span(), format!("composed `{column}`: {m}")))
            })
            .transpose()?;
        composed_units.push((
            column.clone(),
            idx,
            owner,
            policy,
            cr.clock.as_ref().map(|c| clock(c.get_ref())),
            compose,
            c.span(),
        ));
    }
    let index_of = |n: &str| fields.iter().position(|f| *f.name == *n);

    let default_owner = match mode {
        Mode::OneWay => Owner::Left,
        Mode::TwoWay => Owner::Both,
    };
    let mut grouped = HashSet::new();
    let mut units = Vec::new();
    for (gname, members) in &raw.groups {
        let mut idx = Vec::new();
        for m in members.get_ref() {
            let i = index_of(m.get_ref()).ok_or_else(|| {
                err(
                    m.span(),
                    format!(
                        "group `{gname}` names `{}`, which is not in [links.{name}.fields]",
                        m.get_ref()
                    ),
                )
            })?;
            if !grouped.insert(i) {
                return Err(err(
                    m.span(),
                    format!("field `{}` is in more than one group", m.get_ref()),
                ));
            }
            idx.push(i);
        }
        if idx.is_empty() {
            return Err(err(members.span(), format!("group `{gname}` is empty")));
        }
        let first = &per_field[idx[0]];
        for &i in &idx[1..] {
            let other = &per_field[i];
            if other.0 != first.0 || other.1 != first.1 {
                return Err(err(
                    members.span(),
                    format!(
                        "group `{gname}`: `{}` and `{}` have different owner or conflict settings; a group wins or loses as one, so its fields must agree",
                        fields[idx[0]].name, fields[i].name
                    ),
                ));
            }
        }
        units.push(UnitSpec {
            name: gname.clone(),
            owner: first.0.unwrap_or(default_owner),
            owner_explicit: first.0.is_some(),
            policy: first.1,
            clock: idx
                .iter()
                .find_map(|&i| per_field[i].2.clone())
                .or_else(|| link_clock.clone()),
            fields: idx,
            compose: None,
            span: members.span(),
        });
    }
    for (column, idx, owner, policy, clk, compose, span) in composed_units {
        grouped.extend(idx.iter().copied());
        units.push(UnitSpec {
            name: column,
            fields: idx,
            owner: owner.unwrap_or(default_owner),
            owner_explicit: owner.is_some(),
            policy,
            clock: clk.or_else(|| link_clock.clone()),
            compose: Some(compose),
            span,
        });
    }
    for (i, f) in fields.iter().enumerate() {
        if grouped.contains(&i) {
            continue;
        }
        let (owner, policy, clk, span) = &per_field[i];
        units.push(UnitSpec {
            name: f.name.to_string(),
            fields: vec![i],
            owner: owner.unwrap_or(default_owner),
            owner_explicit: owner.is_some(),
            policy: *policy,
            clock: clk.clone().or_else(|| link_clock.clone()),
            compose: None,
            span: span.clone(),
        });
    }

    let mut match_on = Vec::new();
    for m in &raw.match_on {
        match_on.push(index_of(m.get_ref()).ok_or_else(|| {
            err(
                m.span(),
                format!(
                    "match_on names `{}`, which is not in [links.{name}.fields]",
                    m.get_ref()
                ),
            )
        })?);
    }

    let (mut on_delete_left, mut on_delete_right) = (None, None);
    if let Some(od) = &raw.on_delete {
        let od = od.get_ref();
        if let Some(l) = &od.left {
            on_delete_left = Some(parse_delete_rule(l.get_ref()).map_err(|m| err(l.span(), m))?);
        }
        if let Some(r) = &od.right {
            on_delete_right = Some(parse_delete_rule(r.get_ref()).map_err(|m| err(r.span(), m))?);
        }
    }
    let delete_vs_edit = match raw
        .delete_vs_edit
        .as_ref()
        .map(|d| (d.get_ref().as_str(), d.span()))
    {
        None | Some(("hold", _)) => DeleteVsEdit::Hold,
        Some(("edit-wins", _)) => DeleteVsEdit::EditWins,
        Some(("delete-wins", _)) => DeleteVsEdit::DeleteWins,
        Some((other, span)) => {
            return Err(err(
                span,
                format!("delete_vs_edit `{other}` is not edit-wins, delete-wins or hold"),
            ));
        }
    };
    let max_delete_fraction = match &raw.max_delete_fraction {
        None => 0.5,
        Some(f) if (0.0..=1.0).contains(f.get_ref()) => *f.get_ref(),
        Some(f) => {
            return Err(err(
                f.span(),
                format!(
                    "max_delete_fraction must be between 0 and 1, got {}",
                    f.get_ref()
                ),
            ));
        }
    };
    let on_drift = match raw
        .on_drift
        .as_ref()
        .map(|d| (d.get_ref().as_str(), d.span()))
    {
        None | Some(("correct", _)) => OnDrift::Correct,
        Some(("report", _)) => OnDrift::Report,
        Some((other, span)) => {
            return Err(err(
                span,
                format!("on_drift `{other}` is not correct or report"),
            ));
        }
    };
    let clock_skew_seconds = match &raw.clock_skew_seconds {
        None => 2.0,
        Some(s) if *s.get_ref() >= 0.0 => *s.get_ref(),
        Some(s) => {
            return Err(err(
                s.span(),
                "clock_skew_seconds cannot be negative".into(),
            ));
        }
    };
    let batch_size = match &raw.batch_size {
        None => DEFAULT_BATCH_SIZE,
        Some(b) if (1..=1_000_000).contains(b.get_ref()) => *b.get_ref() as usize,
        Some(b) => {
            return Err(err(
                b.span(),
                "batch_size must be between 1 and 1000000".into(),
            ));
        }
    };

    let changes = raw
        .changes
        .as_ref()
        .map(|c| super::changes::changes(c, name))
        .transpose()
        .map_err(|(span, m)| err(span, m))?;
    if let Some(c) = &changes {
        for (endpoint, feed) in [&left, &right].into_iter().zip(&c.feed) {
            let Some(feed) = feed else { continue };
            let kind = systems.get(&endpoint.system).map(SystemSpec::kind);
            if kind != Some("postgres") {
                return Err(err(
                    feed.span.clone(),
                    format!(
                        "feed = \"logical\" reads PostgreSQL's logical replication; `{}` is not a postgres system",
                        endpoint.system
                    ),
                ));
            }
        }
    }
    let schedule = |d: &Option<Spanned<String>>, what: &str| {
        spanned_duration(source, d, &format!("link `{name}`: {what}"))
    };
    let every = schedule(&raw.every, "every")?;
    let debounce = schedule(&raw.debounce, "debounce")?;

    for (side, reference) in [("left", &raw.left_ref), ("right", &raw.right_ref)] {
        if let Some(r) = reference {
            let clash = fields.iter().any(|f| {
                if side == "left" {
                    *f.name == **r.get_ref()
                } else {
                    *f.right == **r.get_ref()
                }
            });
            if clash {
                return Err(err(
                    r.span(),
                    format!(
                        "{side}_ref `{}` is also a synced field's column on the {side}; the external-id column must be its own",
                        r.get_ref()
                    ),
                ));
            }
        }
    }

    Ok(LinkSpec {
        name: name.to_string(),
        span: spanned.span(),
        left,
        right,
        mode,
        fields,
        units,
        match_on,
        conflict,
        on_delete_left,
        on_delete_right,
        delete_vs_edit,
        max_delete_fraction,
        on_drift,
        left_ref: raw.left_ref.as_ref().map(|r| r.get_ref().clone()),
        right_ref: raw.right_ref.as_ref().map(|r| r.get_ref().clone()),
        clock_skew_seconds,
        batch_size,
        changes,
        every,
        debounce,
    })
}

fn clock(c: &RawClock) -> ClockSpec {
    ClockSpec {
        left: c.left.get_ref().clone(),
        right: c.right.get_ref().clone(),
    }
}

fn parse_owner(o: &Spanned<String>) -> Result<Owner, String> {
    Ok(match o.get_ref().as_str() {
        "left" => Owner::Left,
        "right" => Owner::Right,
        "both" => Owner::Both,
        other => return Err(format!("owner `{other}` is not left, right or both")),
    })
}

fn parse_policy(s: &Spanned<String>) -> Result<Policy, String> {
    Ok(match s.get_ref().as_str() {
        "left-wins" => Policy::LeftWins,
        "right-wins" => Policy::RightWins,
        "newest" => Policy::Newest,
        "prefer-non-empty" => Policy::PreferNonEmpty,
        "manual" => Policy::Manual,
        other => {
            return Err(format!(
                "conflict policy `{other}` is not one of left-wins, right-wins, newest, prefer-non-empty, manual"
            ));
        }
    })
}

fn parse_transform(s: &str) -> Result<Transform, String> {
    let mut t = Transform::default();
    for step in s.split(['+', ',']).map(str::trim) {
        match step {
            "trim" => t.trim = true,
            "lowercase" => t.lowercase = true,
            "uppercase" => t.uppercase = true,
            other => {
                return Err(format!(
                    "transform `{other}` is not trim, lowercase or uppercase (combine with `+`)"
                ));
            }
        }
    }
    if t.lowercase && t.uppercase {
        return Err("transform cannot be both lowercase and uppercase".into());
    }
    Ok(t)
}

fn parse_delete_rule(s: &str) -> Result<DeleteRule, String> {
    Ok(match s {
        "propagate" => DeleteRule::Propagate,
        "ignore" => DeleteRule::Ignore,
        "hold" => DeleteRule::Hold,
        soft if soft.starts_with("soft:") => {
            let (column, value) = soft["soft:".len()..].split_once('=').ok_or_else(|| {
                format!("delete rule `{soft}`: a soft delete is written `soft:COLUMN=VALUE`")
            })?;
            if column.trim().is_empty() {
                return Err(format!("delete rule `{soft}` names no column"));
            }
            DeleteRule::Soft {
                column: column.trim().to_string(),
                value: Value::parse_cli(value.trim()),
            }
        }
        other => {
            return Err(format!(
                "delete rule `{other}` is not propagate, ignore, hold or soft:COLUMN=VALUE"
            ));
        }
    })
}
