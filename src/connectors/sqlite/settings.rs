//! `kind = "sqlite"`: a database file, `path = "FILE.db"`.

use super::SqliteConnector;
use crate::config::ConfigError;
use crate::connectors::kinds::{Kind, SettingsContext};
use crate::connectors::{Connector, ConnectorError};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute, or relative to the config file's folder as written.
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Written {
    path: Option<Spanned<String>>,
}

impl Kind for Settings {
    const NAME: &'static str = "sqlite";
    type Written = Written;

    fn resolve(written: Written, cx: &SettingsContext<'_>) -> Result<Settings, ConfigError> {
        let path = cx.required(&written.path, "path = \"FILE.db\"")?;
        Ok(Settings {
            path: cx.path(path)?,
        })
    }

    fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
        Ok(Box::new(SqliteConnector::open(system, &self.path)?))
    }
}
