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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub path: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
}

/// A system's settings. `kind` is checked by hand rather than by a tagged enum so a
/// wrong kind is reported at its own line with the list of kinds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub kind: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnDelete {
    pub left: Option<Spanned<String>>,
    pub right: Option<Spanned<String>>,
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
}
