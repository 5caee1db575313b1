//! The kinds of system this build knows, registered once.
//!
//! A kind is a folder under `connectors/` holding its connector and its settings: a
//! type implementing [`Kind`] that says how `[systems.NAME]` reads for it and how to
//! open it. Adding a kind is that folder and one line in the `kinds!` call below; the
//! config loader, `open` and the messages that list the kinds follow from it.

use super::{Connector, ConnectorError};
use crate::config::{ConfigError, Secret, Source, substitute_env};
use serde::de::DeserializeOwned;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One kind of system: its settings, resolved, and how to open it.
pub trait Kind: Sized + Clone + std::fmt::Debug {
    /// The `kind = "…"` that selects it.
    const NAME: &'static str;
    /// The settings as written in `[systems.NAME]` (without `kind`), with spans.
    /// Deny unknown fields, so a misspelled key is an error at its line.
    type Written: DeserializeOwned;

    /// Settings as the connector needs them: `${ENV}` substituted, paths made absolute.
    ///
    /// # Errors
    /// A setting missing or unusable, located in the config file.
    fn resolve(written: Self::Written, cx: &SettingsContext<'_>) -> Result<Self, ConfigError>;

    /// Opens the connector for system `system`.
    ///
    /// # Errors
    /// The system cannot be reached or opened.
    fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError>;
}

/// What a kind's settings may ask of the config file they come from.
pub struct SettingsContext<'a> {
    pub system: &'a str,
    pub kind: &'static str,
    /// The span of the system's table, for a problem with no key of its own.
    pub(crate) span: Range<usize>,
    pub(crate) source: &'a Source,
    pub(crate) base_dir: &'a Path,
    pub(crate) env: &'a dyn Fn(&str) -> Option<String>,
}

impl SettingsContext<'_> {
    /// An error at `span`, or at the system's table.
    pub fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        self.source
            .error(Some(span.unwrap_or_else(|| self.span.clone())), message)
    }

    /// A setting that must be there; `example` shows how it is written.
    ///
    /// # Errors
    /// It is missing.
    pub fn required<'v, T>(
        &self,
        value: &'v Option<Spanned<T>>,
        example: &str,
    ) -> Result<&'v Spanned<T>, ConfigError> {
        value.as_ref().ok_or_else(|| {
            self.error(
                None,
                format!("system `{}` ({}) needs `{example}`", self.system, self.kind),
            )
        })
    }

    /// A text setting with `${ENV}` substituted.
    ///
    /// # Errors
    /// A referenced variable is not set.
    pub fn text(&self, value: &Spanned<String>) -> Result<String, ConfigError> {
        substitute_env(value.get_ref(), self.env).map_err(|m| self.error(Some(value.span()), m))
    }

    /// A connection string that may hold a password.
    ///
    /// # Errors
    /// A referenced variable is not set.
    pub fn secret(&self, value: &Spanned<String>) -> Result<Secret, ConfigError> {
        self.text(value).map(Secret::new)
    }

    /// A path, relative to the config file's folder unless absolute.
    ///
    /// # Errors
    /// A referenced variable is not set.
    pub fn path(&self, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        let path = PathBuf::from(self.text(value)?);
        Ok(if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        })
    }
}

/// `[systems.NAME]` of a server kind: `url = "${SOME_ENV_VAR}"` and nothing else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlWritten {
    url: Option<Spanned<String>>,
}

impl UrlWritten {
    /// The URL, `${ENV}` substituted.
    ///
    /// # Errors
    /// It is missing, or names a variable that is not set.
    pub fn resolve(&self, cx: &SettingsContext<'_>) -> Result<Secret, ConfigError> {
        cx.secret(cx.required(&self.url, "url = \"${SOME_ENV_VAR}\"")?)
    }
}

/// Kinds named in the design that this build does not have yet: a config naming one
/// is told so rather than that the kind is unknown.
const PLANNED: &[&str] = &[];

/// Reads one system's settings as kind `K`.
fn resolve_as<K: Kind>(
    table: Spanned<toml::de::DeValue<'_>>,
    cx: &SettingsContext<'_>,
) -> Result<K, ConfigError> {
    let written =
        K::Written::deserialize(toml::de::ValueDeserializer::from(table)).map_err(|e| {
            cx.error(
                e.span(),
                format!(
                    "system `{}` ({}): {}",
                    cx.system,
                    cx.kind,
                    e.message().trim_end()
                ),
            )
        })?;
    K::resolve(written, cx)
}

use serde::Deserialize as _;

macro_rules! kinds {
    ($($variant:ident($settings:ty)),* $(,)?) => {
        /// A system's settings, resolved: one variant per kind.
        #[derive(Debug, Clone)]
        pub enum SystemSpec {
            $($variant($settings)),*
        }

        impl SystemSpec {
            /// Every kind this build has, as `kind = "…"` names it.
            pub const KINDS: &'static [&'static str] = &[$(<$settings as Kind>::NAME),*];

            /// This system's kind.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(SystemSpec::$variant(_) => <$settings as Kind>::NAME),*
                }
            }

            /// Opens the connector for system `system`.
            ///
            /// # Errors
            /// The system cannot be reached or opened.
            pub fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
                match self {
                    $(SystemSpec::$variant(s) => s.open(system)),*
                }
            }

            fn resolve_kind(
                kind: &str,
                table: Spanned<toml::de::DeValue<'_>>,
                cx: &SettingsContext<'_>,
            ) -> Option<Result<SystemSpec, ConfigError>> {
                $(if kind == <$settings as Kind>::NAME {
                    return Some(resolve_as::<$settings>(table, cx).map(SystemSpec::$variant));
                })*
                None
            }
        }
    };
}

kinds! {
    Sqlite(super::sqlite::Settings),
    Postgres(super::postgres::Settings),
    Mysql(super::mysql::Settings),
    Memory(super::memory::Settings),
    Csv(super::file::CsvSettings),
    Jsonl(super::file::JsonlSettings),
    Http(super::http::Settings),
}

impl SystemSpec {
    /// Resolves `[systems.NAME]`: `kind` picks the kind, which reads the rest of the
    /// table (`table`, with `kind` taken out).
    ///
    /// # Errors
    /// An unknown or unbuilt kind (at `kind`'s line), or the kind's own settings error.
    pub(crate) fn resolve(
        kind: &Spanned<String>,
        table: Spanned<toml::de::DeValue<'_>>,
        cx: &mut SettingsContext<'_>,
    ) -> Result<SystemSpec, ConfigError> {
        let name = kind.get_ref().as_str();
        if let Some(known) = Self::KINDS.iter().find(|k| **k == name) {
            cx.kind = known;
            if let Some(spec) = Self::resolve_kind(name, table, cx) {
                return spec;
            }
        }
        let all: Vec<&str> = Self::KINDS.iter().chain(PLANNED).copied().collect();
        Err(cx.error(
            Some(kind.span()),
            if PLANNED.contains(&name) {
                format!(
                    "system `{}`: kind `{name}` is not supported by this build yet (supported: {})",
                    cx.system,
                    Self::KINDS.join(", ")
                )
            } else {
                format!(
                    "system `{}`: unknown kind `{name}` (kinds: {})",
                    cx.system,
                    all.join(", ")
                )
            },
        ))
    }
}
