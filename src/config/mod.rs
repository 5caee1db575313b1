//! The TOML config: its types, loading with `${ENV}` substitution, and resolution into
//! the validated form the engine runs ([`LinkSpec`]).
//!
//! Every error names the file, line and column it comes from. Checks that need to look
//! at a database (does this column exist?) happen later, in the engine, but still point
//! back here through the spans kept in [`LinkSpec`].

mod changes;
mod meaning;
mod raw;
mod resolve;

pub use changes::{
    ChangesSpec, CursorSpec, DEFAULT_FULL_EVERY, DEFAULT_RANGE_SIZE, FeedSpec, Lookback, Reconcile,
};
pub use raw::RawConfig;
pub use resolve::{
    ClockSpec, DeleteRule, DeleteVsEdit, Endpoint, FieldSpec, LinkSpec, Mode, OnDrift, Owner,
    Policy, Transform, UnitSpec, WatchSpec,
};

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A config problem, located in the file when it comes from one.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a config file came from, to turn byte spans into line and column.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    pub text: String,
}

impl Source {
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            location: span.map(|s| self.line_col(s.start)),
            message: message.into(),
        }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// The state store's location.
#[derive(Debug, Clone)]
pub enum StateLocation {
    Sqlite(PathBuf),
    /// A PostgreSQL store shared by every machine that runs this config.
    Postgres(Secret),
}

/// A named connection, resolved: each kind's settings live with its connector.
pub use crate::connectors::SystemSpec;

/// A connection string that may hold a password: usable, never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A loaded, resolved config.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub state: StateLocation,
    pub systems: BTreeMap<String, SystemSpec>,
    pub links: Vec<LinkSpec>,
    pub watch: WatchSpec,
}

impl Config {
    /// Reads, parses and resolves a config file.
    ///
    /// # Errors
    /// A missing or unreadable file, malformed TOML, unknown keys, wrong types, a missing
    /// environment variable, or a rule that makes no sense (a field group mixing owners…).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            location: None,
            message: format!("cannot read config file: {e}"),
        })?;
        Config::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        let source = Source {
            file: path.to_path_buf(),
            text,
        };
        let raw: RawConfig = toml::from_str(&source.text).map_err(|e| {
            // The parser's message names the problem, not always the key: quote the line.
            let line = e
                .span()
                .and_then(|s| {
                    source.text[..s.start.min(source.text.len())]
                        .rsplit('\n')
                        .next()
                        .map(|before| {
                            let start = s.start - before.len();
                            source.text[start..]
                                .lines()
                                .next()
                                .unwrap_or("")
                                .trim()
                                .to_string()
                        })
                })
                .filter(|l| !l.is_empty());
            let message = e.message().trim_end().to_string();
            source.error(
                e.span(),
                match line {
                    Some(l) => format!("{message} (in `{l}`)"),
                    None => message,
                },
            )
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        resolve::resolve(source, raw, &base_dir, &|name| std::env::var(name).ok())
    }

    pub fn link(&self, name: &str) -> Option<&LinkSpec> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Replaces `${NAME}` with the environment variable's value.
///
/// # Errors
/// Names the first variable that is not set, or an unclosed `${`.
pub(crate) fn substitute_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` in value".to_string())?;
        let name = &after[..end];
        let value = env(name).ok_or_else(|| {
            format!("environment variable `{name}` is not set (referenced as `${{{name}}}`)")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
