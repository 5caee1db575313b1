//! The types a file's columns are declared as (`types = { amount = "decimal(12,2)" }`),
//! and how a cell or a JSON value reads and writes as one: a file has no types of its
//! own, so without a declaration a CSV cell is text and a JSON value is what JSON says.

use crate::model::Value;
use crate::model::value::{normalize_decimal, parse_naive_timestamp, parse_timestamptz};

/// A declared column type.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnType {
    Text,
    Integer,
    Real,
    /// An exact decimal; `Some((precision, scale))` rounds nothing and refuses what
    /// does not fit.
    Decimal(Option<(usize, usize)>),
    Boolean,
    Date,
    Timestamp,
    TimestampTz,
    Json,
}

impl ColumnType {
    /// Parses a type as written in the config.
    ///
    /// # Errors
    /// A type this kind does not know, with the ones it does.
    pub fn parse(written: &str) -> Result<ColumnType, String> {
        let t = written.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "text" | "string" => ColumnType::Text,
            "integer" | "int" | "bigint" => ColumnType::Integer,
            "real" | "float" | "double" => ColumnType::Real,
            "decimal" | "numeric" => ColumnType::Decimal(None),
            "boolean" | "bool" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "timestamptz" => ColumnType::TimestampTz,
            "json" => ColumnType::Json,
            _ => {
                let inner = t
                    .strip_prefix("decimal(")
                    .or_else(|| t.strip_prefix("numeric("))
                    .and_then(|r| r.strip_suffix(')'));
                let parsed = inner.and_then(|inner| {
                    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
                    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
                });
                match parsed {
                    Some((p, s)) if p > 0 && s <= p => ColumnType::Decimal(Some((p, s))),
                    _ => {
                        return Err(format!(
                            "unknown column type `{written}` (text, integer, real, decimal, decimal(P,S), boolean, date, timestamp, timestamptz, json)"
                        ));
                    }
                }
            }
        })
    }

    /// The name `describe` reports.
    pub fn name(&self) -> String {
        match self {
            ColumnType::Text => "text".into(),
            ColumnType::Integer => "integer".into(),
            ColumnType::Real => "real".into(),
            ColumnType::Decimal(None) => "decimal".into(),
            ColumnType::Decimal(Some((p, s))) => format!("decimal({p},{s})"),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamp".into(),
            ColumnType::TimestampTz => "timestamptz".into(),
            ColumnType::Json => "json".into(),
        }
    }

    /// A text (a CSV cell, a JSON string) read as this type.
    ///
    /// # Errors
    /// The text is not a value of the type: the record's defect.
    pub fn read_text(&self, text: &str) -> Result<Value, String> {
        let bad = || format!("`{text}` is not a {}", self.name());
        Ok(match self {
            ColumnType::Text => Value::Text(text.to_string()),
            ColumnType::Integer => Value::Integer(text.trim().parse().map_err(|_| bad())?),
            ColumnType::Real => Value::Real(text.trim().parse().map_err(|_| bad())?),
            ColumnType::Decimal(limits) => {
                let d = normalize_decimal(text).ok_or_else(bad)?;
                if let Some((p, s)) = limits
                    && !crate::model::value::decimal_fits(&d, *p, *s)
                {
                    return Err(bad());
                }
                Value::Numeric(d)
            }
            ColumnType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" => Value::Bool(true),
                "false" | "f" | "0" | "no" => Value::Bool(false),
                _ => return Err(bad()),
            },
            ColumnType::Date => Value::Date(
                chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| bad())?,
            ),
            ColumnType::Timestamp => {
                Value::Timestamp(parse_naive_timestamp(text.trim()).ok_or_else(bad)?)
            }
            ColumnType::TimestampTz => {
                Value::TimestampTz(parse_timestamptz(text.trim()).ok_or_else(bad)?)
            }
            ColumnType::Json => Value::Json(serde_json::from_str(text).map_err(|_| bad())?),
        })
    }

    /// A JSON value (of a JSON Lines file) read as this type; `None` (undeclared) reads
    /// it as JSON says: numbers as integers or reals, objects and arrays as JSON.
    ///
    /// # Errors
    /// The value is not one of the type.
    pub fn read_json(
        declared: Option<&ColumnType>,
        json: &serde_json::Value,
    ) -> Result<Value, String> {
        use serde_json::Value as J;
        match (declared, json) {
            (_, J::Null) => Ok(Value::Null),
            (Some(ColumnType::Json), j) => Ok(Value::Json(j.clone())),
            (Some(t), J::String(s)) => t.read_text(s),
            (Some(t), J::Number(n)) => t.read_text(&n.to_string()),
            (Some(ColumnType::Boolean) | None, J::Bool(b)) => Ok(Value::Bool(*b)),
            (Some(ColumnType::Text), J::Bool(b)) => Ok(Value::Text(b.to_string())),
            (Some(t), other) => Err(format!("`{other}` is not a {}", t.name())),
            (None, J::String(s)) => Ok(Value::Text(s.clone())),
            (None, J::Number(n)) => Ok(match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
            }),
            (None, j) => Ok(Value::Json(j.clone())),
        }
    }

    /// A value as a JSON value, as a JSON Lines file writes it: a decimal as a string,
    /// so it stays exact.
    pub fn write_json(value: &Value) -> serde_json::Value {
        value.to_json()
    }
}

/// A value as a CSV cell: its SQL text; NULL is the empty cell.
pub fn write_cell(value: &Value) -> String {
    value.to_sql_text().unwrap_or_default()
}
