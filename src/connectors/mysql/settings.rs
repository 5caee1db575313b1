//! `kind = "mysql"`: a server, `url = "${SOME_ENV_VAR}"` (a URL may hold a password, so
//! it is best kept in the environment).

use super::MysqlConnector;
use crate::config::{ConfigError, Secret};
use crate::connectors::kinds::{Kind, SettingsContext, UrlWritten};
use crate::connectors::{Connector, ConnectorError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: Secret,
}

impl Kind for Settings {
    const NAME: &'static str = "mysql";
    type Written = UrlWritten;

    fn resolve(written: UrlWritten, cx: &SettingsContext<'_>) -> Result<Settings, ConfigError> {
        Ok(Settings {
            url: written.resolve(cx)?,
        })
    }

    fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
        Ok(Box::new(MysqlConnector::open(system, self.url.expose())?))
    }
}
