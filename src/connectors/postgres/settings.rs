//! `kind = "postgres"`: a server, `url = "${SOME_ENV_VAR}"` (a URL may hold a password, so
//! it is best kept in the environment).

use super::PostgresConnector;
use crate::config::{ConfigError, Secret};
use crate::connectors::kinds::{Kind, SettingsContext};
use crate::connectors::{Connector, ConnectorError};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: Secret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Written {
    url: Option<Spanned<String>>,
}

impl Kind for Settings {
    const NAME: &'static str = "postgres";
    type Written = Written;

    fn resolve(written: Written, cx: &SettingsContext<'_>) -> Result<Settings, ConfigError> {
        let url = cx.required(&written.url, "url = \"${SOME_ENV_VAR}\"")?;
        Ok(Settings {
            url: cx.secret(url)?,
        })
    }

    fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
        Ok(Box::new(PostgresConnector::open(
            system,
            self.url.expose(),
        )?))
    }
}
