//! The config exactly as written, with spans, before any rule is applied.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state: Option<Spanned<RawState>>,
    #[serde(default)]
    pub systems: BTreeMap<String, Spanned<RawSystem>>,
    #[serde(default)]
    pub links: BTreeMap<String, Spanned<RawLink>>,
    pub watch: Option<Spanned<RawWatch>>,
}

/// `[watch]`: the daemon's operator endpoints and the links' default schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub listen: Option<Spanned<String>>,
    pub admin_token: Option<Spanned<String>>,
    pub every: Option<Spanned<String>>,
    pub debounce: Option<Spanned<String>>,
    pub max_feed_lag_bytes: Option<Spanned<i64>>,
    pub max_feed_changes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub path: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
}

/// A system's kind. The rest of its table belongs to the kind, which reads it with its
/// own settings type (see `connectors::kinds`); `kind` is read here rather than by a
/// tagged enum so a wrong kind is reported at its own line with the list of kinds.
#[derive(Debug, Deserialize)]
pub struct RawSystem {
    pub kind: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub left: Spanned<String>,
    pub right: Spanned<String>,
    pub left_key: Option<Spanned<String>>,
    pub right_key: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub match_on: Vec<Spanned<String>>,
    pub conflict: Option<Spanned<String>>,
    pub on_delete: Option<Spanned<RawOnDelete>>,
    pub delete_vs_edit: Option<Spanned<String>>,
    pub max_delete_fraction: Option<Spanned<f64>>,
    pub on_drift: Option<Spanned<String>>,
    pub left_ref: Option<Spanned<String>>,
    pub right_ref: Option<Spanned<String>>,
    pub clock: Option<Spanned<RawClock>>,
    pub clock_skew_seconds: Option<Spanned<f64>>,
    pub batch_size: Option<Spanned<i64>>,
    #[serde(default)]
    pub fields: BTreeMap<String, Spanned<RawField>>,
    #[serde(default)]
    pub groups: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    /// Right columns that hold several left fields joined, by right column.
    #[serde(default)]
    pub composed: BTreeMap<String, Spanned<RawComposed>>,
    pub changes: Option<Spanned<RawChanges>>,
    /// How often `watch` runs the link (`"30s"`).
    pub every: Option<Spanned<String>>,
    /// How long `watch` waits after a change event for more before it runs the link.
    pub debounce: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComposed {
    pub left: Vec<Spanned<String>>,
    pub separator: Option<Spanned<String>>,
    pub split: Option<Spanned<String>>,
    /// `text` (joined with `separator`) or `json` (an object, a key per part).
    pub form: Option<Spanned<String>>,
    /// With `form = "json"`: the object's keys, one per part (default: the part's name).
    pub keys: Option<Spanned<Vec<String>>>,
    pub owner: Option<Spanned<String>>,
    pub conflict: Option<Spanned<String>>,
    pub clock: Option<Spanned<RawClock>>,
}

/// A map's value, or `unmapped`'s default: text, a number or a boolean.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawScalar {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

/// `unmapped = "quarantine" | "pass"`, or defaults `{ left = …, right = … }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUnmapped {
    Rule(String),
    Default {
        left: Option<RawScalar>,
        right: Option<RawScalar>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnDelete {
    pub left: Option<Spanned<String>>,
    pub right: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChanges {
    pub left: Option<Spanned<RawCursor>>,
    pub right: Option<Spanned<RawCursor>>,
    pub full_every: Option<Spanned<i64>>,
    pub reconcile: Option<Spanned<String>>,
    pub range_size: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCursor {
    pub cursor: Option<Spanned<String>>,
    pub lookback: Option<Spanned<RawLookback>>,
    /// `"logical"`: the side's changes come from PostgreSQL logical replication.
    pub feed: Option<Spanned<String>>,
    pub slot: Option<Spanned<String>>,
    pub publication: Option<Spanned<String>>,
}

/// `"5s"` for a timestamp cursor, a count for a counter.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawLookback {
    Steps(i64),
    Duration(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClock {
    pub left: Spanned<String>,
    pub right: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    pub right: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub conflict: Option<Spanned<String>>,
    pub transform: Option<Spanned<String>>,
    pub clock: Option<Spanned<RawClock>>,
    /// Left value → right value.
    pub map: Option<Spanned<BTreeMap<String, RawScalar>>>,
    pub unmapped: Option<Spanned<RawUnmapped>>,
    /// The right holds the left's number times this (a power of ten).
    pub scale: Option<Spanned<RawScalar>>,
    /// The right holds the left's date or time as text in this `chrono` format.
    pub format: Option<Spanned<String>>,
    /// With `format`: the right's local time's offset from UTC (`+02:00`).
    pub offset: Option<Spanned<String>>,
}
