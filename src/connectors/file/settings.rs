//! `kind = "csv"` and `kind = "jsonl"`: a folder of files, `dir = "exports"`, with
//! declared column types and (CSV) a dialect.
//!
//! ```toml
//! [systems.export]
//! kind = "csv"
//! dir = "exports"                       # collection `contacts` is exports/contacts.csv
//! delimiter = ";"                       # default ","
//! quote = "'"                           # default '"'
//! header = true                         # default true; false needs `columns`
//! bom = false                           # a new file starts with a UTF-8 BOM
//! line_ending = "crlf"                  # "lf" (default) or "crlf"
//! types = { amount = "decimal(12,2)", "contacts.born" = "date" }
//! columns = { contacts = ["id", "name", "amount"] }   # without a header, or before the file exists
//! ```

use super::{ColumnType, Dialect, FileConnector, FileSettings, Format};
use crate::config::ConfigError;
use crate::connectors::kinds::{Kind, SettingsContext};
use crate::connectors::{Connector, ConnectorError};
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

/// `kind = "csv"`.
#[derive(Debug, Clone)]
pub struct CsvSettings(pub FileSettings);

/// `kind = "jsonl"`.
#[derive(Debug, Clone)]
pub struct JsonlSettings(pub FileSettings);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvWritten {
    dir: Option<Spanned<String>>,
    delimiter: Option<Spanned<String>>,
    quote: Option<Spanned<String>>,
    header: Option<bool>,
    bom: Option<bool>,
    line_ending: Option<Spanned<String>>,
    #[serde(default)]
    types: HashMap<String, Spanned<String>>,
    #[serde(default)]
    columns: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlWritten {
    dir: Option<Spanned<String>>,
    #[serde(default)]
    types: HashMap<String, Spanned<String>>,
    #[serde(default)]
    columns: HashMap<String, Vec<String>>,
}

fn files(
    cx: &SettingsContext<'_>,
    dir: &Option<Spanned<String>>,
    types: HashMap<String, Spanned<String>>,
    columns: HashMap<String, Vec<String>>,
    format: Format,
) -> Result<FileSettings, ConfigError> {
    let dir = cx.path(cx.required(dir, "dir = \"FOLDER\"")?)?;
    let types = types
        .into_iter()
        .map(|(column, t)| {
            ColumnType::parse(t.get_ref())
                .map(|parsed| (column.clone(), parsed))
                .map_err(|m| {
                    cx.error(
                        Some(t.span()),
                        format!("system `{}`: column `{column}`: {m}", cx.system),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(FileSettings {
        dir,
        format,
        types,
        columns,
    })
}

/// A one-character setting, as the byte CSV uses.
fn one_byte(
    cx: &SettingsContext<'_>,
    v: &Option<Spanned<String>>,
    name: &str,
    default: u8,
) -> Result<u8, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => {
            let text = s.get_ref();
            let text = if text == "\\t" { "\t" } else { text.as_str() };
            match text.as_bytes() {
                [b] if b.is_ascii() => Ok(*b),
                _ => Err(cx.error(
                    Some(s.span()),
                    format!(
                        "system `{}`: {name} must be one ASCII character (\"\\t\" for a tab)",
                        cx.system
                    ),
                )),
            }
        }
    }
}

impl Kind for CsvSettings {
    const NAME: &'static str = "csv";
    type Written = CsvWritten;

    fn resolve(w: CsvWritten, cx: &SettingsContext<'_>) -> Result<CsvSettings, ConfigError> {
        let crlf = match &w.line_ending {
            None => false,
            Some(l) => match l.get_ref().as_str() {
                "lf" => false,
                "crlf" => true,
                _ => {
                    return Err(cx.error(
                        Some(l.span()),
                        format!("system `{}`: line_ending is \"lf\" or \"crlf\"", cx.system),
                    ));
                }
            },
        };
        let dialect = Dialect {
            delimiter: one_byte(cx, &w.delimiter, "delimiter", b',')?,
            quote: one_byte(cx, &w.quote, "quote", b'"')?,
            header: w.header.unwrap_or(true),
            bom: w.bom.unwrap_or(false),
            crlf,
        };
        if !dialect.header && w.columns.is_empty() {
            return Err(cx.error(
                None,
                format!(
                    "system `{}`: header = false needs the files' columns: columns = {{ contacts = [\"id\", \"name\"] }}",
                    cx.system
                ),
            ));
        }
        Ok(CsvSettings(files(
            cx,
            &w.dir,
            w.types,
            w.columns,
            Format::Csv(dialect),
        )?))
    }

    fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
        Ok(Box::new(FileConnector::open(system, &self.0)?))
    }
}

impl Kind for JsonlSettings {
    const NAME: &'static str = "jsonl";
    type Written = JsonlWritten;

    fn resolve(w: JsonlWritten, cx: &SettingsContext<'_>) -> Result<JsonlSettings, ConfigError> {
        Ok(JsonlSettings(files(
            cx,
            &w.dir,
            w.types,
            w.columns,
            Format::Jsonl,
        )?))
    }

    fn open(&self, system: &str) -> Result<Box<dyn Connector>, ConnectorError> {
        Ok(Box::new(FileConnector::open(system, &self.0)?))
    }
}
