use serde::{Deserialize, Serialize};
use std::fmt;

/// A single column value, typed as the system stored it.
///
/// Equality is semantic where types legitimately blur: an integer equals a real with the
/// same exact value (SQLite stores `1.0` in an INTEGER column as `1`). Reals compare by bit
/// pattern otherwise, so `NaN` equals itself and a stored NaN never loops.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Integer(a), Integer(b)) => a == b,
            (Real(a), Real(b)) => a.to_bits() == b.to_bits() || (a == b),
            (Integer(i), Real(r)) | (Real(r), Integer(i)) => real_equals_integer(*r, *i),
            (Text(a), Text(b)) => a == b,
            (Blob(a), Blob(b)) => a == b,
            _ => false,
        }
    }
}

/// 2^63: the first real beyond `i64::MAX`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

fn real_equals_integer(r: f64, i: i64) -> bool {
    // Exact only: 2^63 and beyond cannot be an i64, and `as` would saturate.
    r.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&r) && r as i64 == i
}

/// A stored value could not be decoded (a corrupt or foreign state store).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode stored value {0:?}")]
pub struct ValueDecodeError(pub String);

impl Value {
    /// Null, or text that is blank after trimming.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Text(t) => t.trim().is_empty(),
            _ => false,
        }
    }

    /// Exact, type-preserving text form used in the state store. Reals keep their bits.
    pub fn encode(&self) -> String {
        match self {
            Value::Null => "N".to_string(),
            Value::Integer(i) => format!("I{i}"),
            Value::Real(r) => format!("R{:016x}", r.to_bits()),
            Value::Text(t) => format!("T{t}"),
            Value::Blob(b) => format!("B{}", hex(b)),
        }
    }

    pub fn decode(s: &str) -> Result<Value, ValueDecodeError> {
        let bad = || ValueDecodeError(s.chars().take(40).collect());
        let (tag, rest) = s.split_at_checked(1).ok_or_else(bad)?;
        Ok(match tag {
            "N" => Value::Null,
            "I" => Value::Integer(rest.parse().map_err(|_| bad())?),
            "R" => Value::Real(f64::from_bits(
                u64::from_str_radix(rest, 16).map_err(|_| bad())?,
            )),
            "T" => Value::Text(rest.to_string()),
            "B" => Value::Blob(unhex(rest).ok_or_else(bad)?),
            _ => return Err(bad()),
        })
    }

    /// JSON for `--json` output: numbers stay numbers, blobs become `{"hex": …}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => (*i).into(),
            Value::Real(r) => serde_json::Number::from_f64(*r)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(r.to_string())),
            Value::Text(t) => t.clone().into(),
            Value::Blob(b) => serde_json::json!({ "hex": hex(b) }),
        }
    }

    /// Parses a value typed by a person on the command line: integers and reals are
    /// recognised, `NULL` is null, anything else is text.
    pub fn parse_cli(s: &str) -> Value {
        if s == "NULL" {
            Value::Null
        } else if let Ok(i) = s.parse::<i64>() {
            Value::Integer(i)
        } else if let Ok(r) = s
            .parse::<f64>()
            .map_err(|_| ())
            .and_then(|r| if r.is_finite() { Ok(r) } else { Err(()) })
        {
            Value::Real(r)
        } else {
            Value::Text(s.to_string())
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r:?}"),
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Blob(b) => write!(f, "x'{}'", hex(b)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A record's key: one value per key column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Key(pub Vec<Value>);

/// Separates the parts of a composite key in its encoded form; cannot occur in an
/// encoded integer, real or blob, and a text part is escaped.
const KEY_SEP: char = '\u{1f}';

impl Key {
    pub fn single(v: Value) -> Key {
        Key(vec![v])
    }

    /// Stable text form used in the state store (id map, journal, conflicts).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(KEY_SEP);
            }
            out.push_str(&v.encode().replace('\\', "\\\\").replace(KEY_SEP, "\\u"));
        }
        out
    }

    pub fn decode(s: &str) -> Result<Key, ValueDecodeError> {
        // Undo `encode`'s escapes in one left-to-right pass: `\\` is a backslash,
        // `\u` the separator character, and a bare separator ends a part.
        let mut parts = Vec::new();
        let mut part = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('\\') => part.push('\\'),
                    Some('u') => part.push(KEY_SEP),
                    _ => return Err(ValueDecodeError(s.chars().take(40).collect())),
                },
                KEY_SEP => parts.push(Value::decode(&std::mem::take(&mut part))?),
                other => part.push(other),
            }
        }
        parts.push(Value::decode(&part)?);
        Ok(Key(parts))
    }

    /// The form a person types and reads: `42`, `alice`, or `7,eu` for a composite key.
    /// Also the value an external-id column (`right_ref`/`left_ref`) holds.
    pub fn display_text(&self) -> String {
        self.0
            .iter()
            .map(|v| match v {
                Value::Text(t) => t.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_text())
    }
}

impl From<Value> for String {
    fn from(v: Value) -> String {
        v.encode()
    }
}

impl TryFrom<String> for Value {
    type Error = ValueDecodeError;
    fn try_from(s: String) -> Result<Value, ValueDecodeError> {
        Value::decode(&s)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.encode()
    }
}

impl TryFrom<String> for Key {
    type Error = ValueDecodeError;
    fn try_from(s: String) -> Result<Key, ValueDecodeError> {
        Key::decode(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_every_type_exactly() {
        let values = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(0.1 + 0.2),
            Value::Real(f64::NAN),
            Value::Text("a\u{1f}b\\u".into()),
            Value::Blob(vec![0, 255, 16]),
        ];
        for v in &values {
            let back = Value::decode(&v.encode()).unwrap();
            assert_eq!(&back, v, "{v:?}");
        }
        let key = Key(values.to_vec());
        assert_eq!(Key::decode(&key.encode()).unwrap(), key);
    }

    #[test]
    fn integer_equals_exact_real_only() {
        assert_eq!(Value::Integer(3), Value::Real(3.0));
        assert_ne!(Value::Integer(3), Value::Real(3.5));
        assert_ne!(Value::Integer(i64::MAX), Value::Real(9.3e18));
        assert_ne!(Value::Text("3".into()), Value::Integer(3));
    }

    #[test]
    fn empty_means_null_or_blank_text() {
        assert!(Value::Null.is_empty());
        assert!(Value::Text("  ".into()).is_empty());
        assert!(!Value::Integer(0).is_empty());
    }
}
