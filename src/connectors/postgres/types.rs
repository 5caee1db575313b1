//! PostgreSQL catalog types → how their text form becomes a [`Value`].

use super::binary::BinaryForm;
use crate::model::Value;
use crate::model::value::{decimal_fits, parse_naive_timestamp, parse_timestamptz, unhex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    Int,
    Float,
    Numeric,
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Json,
    Uuid,
    Bytea,
    /// text, varchar, char, enums and everything else: kept as PostgreSQL prints it.
    Text,
}

#[derive(Debug, Clone)]
pub struct PgColumn {
    pub name: String,
    /// `format_type()` with modifiers, as declared (`numeric(12,2)`, `mood`, …).
    pub type_name: String,
    /// The type without modifiers (`numeric`, `character varying`): what values are cast
    /// to, so that the column's own limits apply on assignment and are not cut to fit.
    pub cast_type: String,
    pub kind: PgKind,
    /// How bulk creates write this column's values in `COPY`'s binary format.
    pub binary: BinaryForm,
    pub not_null: bool,
    pub primary_key: bool,
    pub unique: bool,
    /// A default, an identity or a generated column: filled when an insert leaves it out.
    pub has_default: bool,
}

impl PgColumn {
    pub fn new(
        name: String,
        type_name: String,
        not_null: bool,
        typname: String,
        cast_type: String,
        primary_key: bool,
    ) -> PgColumn {
        let binary = BinaryForm::of(&typname);
        let kind = match typname.as_str() {
            "int2" | "int4" | "int8" | "oid" => PgKind::Int,
            "float4" | "float8" => PgKind::Float,
            "numeric" => PgKind::Numeric,
            "bool" => PgKind::Bool,
            "date" => PgKind::Date,
            "timestamp" => PgKind::Timestamp,
            "timestamptz" => PgKind::TimestampTz,
            "json" | "jsonb" => PgKind::Json,
            "uuid" => PgKind::Uuid,
            "bytea" => PgKind::Bytea,
            _ => PgKind::Text,
        };
        PgColumn {
            name,
            cast_type,
            type_name,
            kind,
            binary,
            not_null,
            primary_key,
            unique: false,
            has_default: false,
        }
    }
}

impl PgColumn {
    /// `text` or `varchar`: PostgreSQL stores these exactly as sent and prints them as
    /// stored, padding nothing (unlike `character(n)`) and adding nothing (unlike `inet`).
    pub fn is_plain_text(&self) -> bool {
        self.kind == PgKind::Text && matches!(self.cast_type.as_str(), "text" | "character varying")
    }
}

impl PgKind {
    /// Types PostgreSQL's text form. A form we cannot read (`infinity` dates, say) stays
    /// text rather than being lost.
    pub fn parse(self, text: Option<String>) -> Value {
        let Some(t) = text else { return Value::Null };
        let typed = match self {
            PgKind::Numeric => return Value::Numeric(t),
            PgKind::Json => serde_json::from_str(&t).ok().map(Value::Json),
            PgKind::Uuid => Some(Value::Uuid(t.to_lowercase())),
            PgKind::Bytea => t.strip_prefix("\\x").and_then(unhex).map(Value::Blob),
            PgKind::Text => None,
            _ => self.parse_scalar(&t),
        };
        typed.unwrap_or(Value::Text(t))
    }

    /// A scalar kind's value (a number, boolean or time: it owns no text) read from its
    /// text in place; `None` for a kind that is not scalar or a form we cannot read (which
    /// [`parse`](Self::parse) keeps as text).
    pub fn parse_scalar(self, t: &str) -> Option<Value> {
        match self {
            PgKind::Int => t.parse().ok().map(Value::Integer),
            PgKind::Float => match t {
                "NaN" => Some(Value::Real(f64::NAN)),
                "Infinity" => Some(Value::Real(f64::INFINITY)),
                "-Infinity" => Some(Value::Real(f64::NEG_INFINITY)),
                _ => t.parse().ok().map(Value::Real),
            },
            PgKind::Bool => match t {
                "t" | "true" => Some(Value::Bool(true)),
                "f" | "false" => Some(Value::Bool(false)),
                _ => None,
            },
            PgKind::Date => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .map(Value::Date),
            PgKind::Timestamp => parse_naive_timestamp(t).map(Value::Timestamp),
            PgKind::TimestampTz => parse_timestamptz(t).map(Value::TimestampTz),
            _ => None,
        }
    }
}

/// Whether `value` fits column `column` without PostgreSQL rounding it: a numeric(p,s)
/// rounds extra decimals silently, which would be a lost digit and a loop.
pub fn check_fits(all: &[PgColumn], column: &str, value: &Value) -> Result<(), String> {
    check_fits_in(all.iter().find(|c| c.name == column), column, value)
}

/// [`check_fits`] with the column already looked up (`None`: not in the table).
pub fn check_fits_in(col: Option<&PgColumn>, column: &str, value: &Value) -> Result<(), String> {
    let Some(col) = col else {
        return Ok(());
    };
    if col.kind != PgKind::Numeric {
        return Ok(());
    }
    let Some((p, s)) = col
        .type_name
        .strip_prefix("numeric(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.split_once(','))
        .and_then(|(p, s)| {
            Some((
                p.trim().parse::<usize>().ok()?,
                s.trim().parse::<usize>().ok()?,
            ))
        })
    else {
        return Ok(());
    };
    match value.as_decimal() {
        Some(d) if !decimal_fits(&d, p, s) => Err(format!(
            "{column}: {d} does not fit {} without rounding",
            col.type_name
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_that_would_be_rounded_is_refused() {
        let cols = [PgColumn::new(
            "n".into(),
            "numeric(12,2)".into(),
            false,
            "numeric".into(),
            "numeric".into(),
            false,
        )];
        assert!(check_fits(&cols, "n", &Value::Numeric("1.005".into())).is_err());
        assert!(check_fits(&cols, "n", &Value::Numeric("12345678901.00".into())).is_err());
        assert!(check_fits(&cols, "n", &Value::Real(1234567890.5)).is_ok());
        assert!(check_fits(&cols, "n", &Value::Text("x".into())).is_ok());
    }
}
