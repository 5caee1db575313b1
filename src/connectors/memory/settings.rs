//! `kind = "memory"`: collections held in this process, `path = "STORE"` naming a store
//! the embedding program created.

use super::MemoryConnector;
use crate::config::ConfigError;
use crate::connectors::kinds::{Kind, SettingsContext};
use crate::connectors::{Connector, ConnectorError};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct Settings {
    pub store: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Written {
    path: Option<Spanned<String>>,
}

impl Kind for Settings {
    const NAME: &'static str = "memory";
    type Written = Written;

    fn resolve(written: Written, cx: &SettingsContext<'_>) -> Result<Settings, ConfigError> {
        let store = cx.required(&written.path, "path = \"STORE\"")?;
        Ok(Settings {
            store: cx.text(store)?,
        })
    }

    fn open(&self, _system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
        Ok(Box::new(MemoryConnector::open(&self.store)?))
    }
}
