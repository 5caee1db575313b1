use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A single column value, typed as the system stored it.
///
/// Equality is semantic where types legitimately blur: an integer equals a real with the
/// same exact value (SQLite stores `1.0` in an INTEGER column as `1`). Reals compare by bit
/// pattern otherwise, so `NaN` equals itself and a stored NaN never loops.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
    /// An exact decimal, as its system printed it (`12.50`). Never a float.
    Numeric(String),
    Date(chrono::NaiveDate),
    /// A timestamp without time zone.
    Timestamp(chrono::NaiveDateTime),
    /// A timestamp with time zone, held in UTC.
    TimestampTz(chrono::DateTime<chrono::Utc>),
    Json(serde_json::Value),
    /// Lowercase, hyphenated.
    Uuid(String),
}

impl PartialEq for Value {
    /// Equality is an equivalence (reflexive, symmetric, transitive): two values are
    /// equal when their [canonical forms](Canonical) are. A number is equal to the same
    /// number in any numeric representation (`Integer(1)` = `Real(1.0)` = `Numeric("1.0")`
    /// = `Bool(true)`), a timestamp to the same instant with or without a zone, a uuid to
    /// itself in any case; and text equals a typed value only when it is exactly that
    /// value's canonical text (`"12.5"`, `"2026-01-02"`, `"2026-01-02 10:00:00"`, a
    /// lowercase hyphenated uuid, compact JSON), so text equals text only when it is the
    /// same text. What other representations mean the same thing (`"12.50"` for
    /// `12.5`) is [`same_meaning`](Value::same_meaning), which is not transitive and
    /// only tells whether two sides already hold the same thing.
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        // Same representation, compared directly (the common case, and allocation-free);
        // anything else through the canonical forms.
        match (self, other) {
            (Text(a), Text(b)) => a == b,
            (Null, Null) => true,
            (Null, _) | (_, Null) => false,
            (Integer(a), Integer(b)) => a == b,
            (Real(a), Real(b)) => a.to_bits() == b.to_bits() || a == b,
            (Bool(a), Bool(b)) => a == b,
            (Blob(a), Blob(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (TimestampTz(a), TimestampTz(b)) => a == b,
            (Json(a), Json(b)) => a == b,
            _ => self.canonical() == other.canonical(),
        }
    }
}

/// A value's class and identity under [`Value`]'s equality: one form per value, whatever
/// its representation.
#[derive(Debug, PartialEq)]
pub enum Canonical<'a> {
    Null,
    /// A finite number, as a normalized decimal (see [`normalize_decimal`]).
    Number(Cow<'a, str>),
    /// NaN and the infinities, by their bits.
    NonFinite(u64),
    Text(&'a str),
    Blob(&'a [u8]),
    Date(chrono::NaiveDate),
    /// A timestamp, in UTC for one with a zone.
    Instant(chrono::NaiveDateTime),
    Json(Cow<'a, serde_json::Value>),
    /// The 32 lowercase hex digits.
    Uuid(String),
    /// A `Numeric` that holds no decimal: itself.
    Unparsed(&'a str),
}

impl Value {
    /// See [`Canonical`]. Text becomes a typed value only when it is exactly that
    /// value's canonical text, so that each typed value has one text form and text
    /// compares as text.
    pub fn canonical(&self) -> Canonical<'_> {
        match self {
            Value::Null => Canonical::Null,
            Value::Integer(i) => Canonical::Number(i.to_string().into()),
            Value::Bool(b) => Canonical::Number(if *b { "1" } else { "0" }.into()),
            Value::Real(r) if r.is_finite() => match normalize_decimal(&r.to_string()) {
                Some(d) => Canonical::Number(d.into()),
                None => Canonical::NonFinite(r.to_bits()),
            },
            Value::Real(r) => Canonical::NonFinite(r.to_bits()),
            Value::Numeric(n) => match normalize_decimal(n) {
                Some(d) => Canonical::Number(d.into()),
                None => Canonical::Unparsed(n),
            },
            Value::Blob(b) => Canonical::Blob(b),
            Value::Date(d) => Canonical::Date(*d),
            Value::Timestamp(n) => Canonical::Instant(*n),
            Value::TimestampTz(z) => Canonical::Instant(z.naive_utc()),
            Value::Json(j) => Canonical::Json(Cow::Borrowed(j)),
            Value::Uuid(u) => Canonical::Uuid(uuid_digits(u)),
            Value::Text(t) => text_canonical(t),
        }
    }

    /// How two values of a cursor column order (see `ReadSpec::since`): numbers by
    /// value, dates and timestamps by instant, text by its bytes as a database orders
    /// it under a binary collation. `None` for NULL, or for values that do not compare.
    pub fn cursor_cmp(&self, other: &Value) -> Option<std::cmp::Ordering> {
        match (self.canonical(), other.canonical()) {
            (Canonical::Instant(a), Canonical::Instant(b)) => Some(a.cmp(&b)),
            (Canonical::Date(a), Canonical::Date(b)) => Some(a.cmp(&b)),
            (Canonical::Date(a), Canonical::Instant(b)) => {
                Some(a.and_hms_opt(0, 0, 0).expect("midnight exists").cmp(&b))
            }
            (Canonical::Instant(a), Canonical::Date(b)) => {
                Some(a.cmp(&b.and_hms_opt(0, 0, 0).expect("midnight exists")))
            }
            _ => match (self, other) {
                (Value::Text(a), Value::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
                (Value::Integer(a), Value::Integer(b)) => Some(a.cmp(b)),
                _ => match (self.as_decimal(), other.as_decimal()) {
                    (Some(a), Some(b)) => a.parse::<f64>().ok()?.partial_cmp(&b.parse().ok()?),
                    _ => None,
                },
            },
        }
    }

    /// Whether two values mean the same thing, in any representation a system may hold
    /// it in: `Numeric("12.50")` = `Text("12.50")` = `Real(12.5)`, a date = its ISO text
    /// with spaces around, a uuid in any case with or without hyphens or braces, JSON
    /// text with any spacing. Not transitive (`"12.50"` and `"12.5"` each mean 12.5, yet
    /// are different texts), so it never decides whether a side changed — only whether
    /// the two sides already hold the same thing and a write would change nothing.
    pub fn same_meaning(&self, other: &Self) -> bool {
        if self == other {
            return true;
        }
        // Beyond equality, only text is read leniently: the forms a system may print a
        // typed value in.
        use Value::*;
        match (self, other) {
            (Numeric(_), Text(_)) | (Text(_), Numeric(_)) => {
                match (self.as_decimal(), other.as_decimal()) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                }
            }
            (Date(d), Text(t)) | (Text(t), Date(d)) => {
                chrono::NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").is_ok_and(|e| e == *d)
            }
            (Timestamp(n), Text(t)) | (Text(t), Timestamp(n)) => {
                parse_naive_timestamp(t).is_some_and(|m| m == *n)
            }
            (TimestampTz(z), Text(t)) | (Text(t), TimestampTz(z)) => {
                parse_timestamptz(t).is_some_and(|m| m == *z)
            }
            (Json(j), Text(t)) | (Text(t), Json(j)) => {
                serde_json::from_str::<serde_json::Value>(t).is_ok_and(|v| v == *j)
            }
            // Any form a uuid column accepts (braces, hyphens or none, any case) is the
            // same uuid: compared by its hex digits.
            (Uuid(u), Text(t)) | (Text(t), Uuid(u)) => uuid_digits(t) == uuid_digits(u),
            _ => false,
        }
    }
}

/// The canonical form of text: a typed value when the text is exactly its canonical
/// text (see [`Canonical`]), else the text itself.
fn text_canonical(t: &str) -> Canonical<'_> {
    let b = t.as_bytes();
    let Some(&first) = b.first() else {
        return Canonical::Text(t);
    };
    if (first.is_ascii_digit() || first == b'-')
        && let Some(d) = normalize_decimal(t)
        && d == t
    {
        return Canonical::Number(Cow::Borrowed(t));
    }
    if b.len() == 10
        && let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        && d.format("%Y-%m-%d").to_string() == t
    {
        return Canonical::Date(d);
    }
    if b.len() >= 19
        && b.get(4) == Some(&b'-')
        && b.get(10) == Some(&b' ')
        && let Some(n) = parse_naive_timestamp(t)
        && n.format("%Y-%m-%d %H:%M:%S%.f").to_string() == t
    {
        return Canonical::Instant(n);
    }
    if b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Canonical::Uuid(uuid_digits(t));
    }
    if matches!(first, b'{' | b'[')
        && let Ok(j) = serde_json::from_str::<serde_json::Value>(t)
    {
        // Compared as text: `serde_json::Value == str` would ask whether it is a string.
        let compact = j.to_string();
        if compact.as_str() == t {
            return Canonical::Json(Cow::Owned(j));
        }
    }
    Canonical::Text(t)
}

/// A uuid's hex digits, lowercase, without hyphens or braces.
fn uuid_digits(u: &str) -> String {
    u.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .chars()
        .filter(|&c| c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS[.f]` or with a `T`.
pub fn parse_naive_timestamp(t: &str) -> Option<chrono::NaiveDateTime> {
    let t = t.trim();
    if let Some((n, "")) = iso_prefix(t) {
        return Some(n);
    }
    general_naive_timestamp(t)
}

/// [`parse_naive_timestamp`] by chrono's parser alone.
fn general_naive_timestamp(t: &str) -> Option<chrono::NaiveDateTime> {
    NAIVE_TIMESTAMP_FORMATS.iter().find_map(|items| {
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, t, items.iter()).ok()?;
        parsed.to_naive_datetime_with_offset(0).ok()
    })
}

/// RFC 3339, PostgreSQL's `2026-11-26 10:00:00+00`, or a naive timestamp taken as UTC.
pub fn parse_timestamptz(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = t.trim();
    let t_separated = t.as_bytes().get(10) == Some(&b'T');
    if let Some(z) = iso_prefix(t).and_then(|(n, zone)| Some(n - utc_offset(zone, t_separated)?)) {
        return Some(z.and_utc());
    }
    general_timestamptz(t)
}

/// [`parse_timestamptz`] by chrono's parsers alone.
fn general_timestamptz(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    // PostgreSQL's form first: it is what every scan of a `timestamptz` column reads.
    let zoned = TIMESTAMPTZ_FORMATS.iter().find_map(|items| {
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, t, items.iter()).ok()?;
        parsed.to_datetime().ok()
    });
    if let Some(d) = zoned.or_else(|| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        return Some(d.with_timezone(&chrono::Utc));
    }
    general_naive_timestamp(t).map(|n| n.and_utc())
}

/// The common form of a timestamp, read without chrono's general parser (which took a
/// tenth of a PostgreSQL scan): `YYYY-MM-DD`, a space or `T`, `HH:MM:SS`, optionally `.`
/// and up to nine digits; and what follows. `None` for anything else (other years, leap
/// seconds, other layouts), which the general parser then reads.
fn iso_prefix(t: &str) -> Option<(chrono::NaiveDateTime, &str)> {
    let b = t.as_bytes();
    let digits = |from: usize, n: usize| -> Option<u32> {
        let part = b.get(from..from + n)?;
        part.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-')
        && at(7, b'-')
        && (at(10, b' ') || at(10, b'T'))
        && at(13, b':')
        && at(16, b':'))
    {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(0, 4)?).ok()?,
        digits(5, 2)?,
        digits(8, 2)?,
    )?;
    let (h, m, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let mut end = 19;
    let mut nanos = 0;
    if at(end, b'.') {
        let count = b[end + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=9).contains(&count) {
            return None;
        }
        nanos = digits(end + 1, count)? * 10u32.pow(9 - count as u32);
        end += 1 + count;
    }
    let time = chrono::NaiveTime::from_hms_nano_opt(h, m, sec, nanos)?;
    Some((date.and_time(time), &t[end..]))
}

/// A zone after `HH:MM:SS[.f]` in the forms the general parsers read: nothing (UTC);
/// `±HH:MM`, `Z`; after a space also `±HH` and `±HHMM` (PostgreSQL's forms). `None` for
/// anything else, which the general parsers then read or refuse.
fn utc_offset(zone: &str, t_separated: bool) -> Option<chrono::TimeDelta> {
    let b = zone.as_bytes();
    if b.is_empty() || b == b"Z" {
        return Some(chrono::TimeDelta::zero());
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |i: usize| -> Option<i64> {
        let (h, l) = (*b.get(i)?, *b.get(i + 1)?);
        (h.is_ascii_digit() && l.is_ascii_digit()).then(|| i64::from((h - b'0') * 10 + (l - b'0')))
    };
    let (h, m) = match (b.len(), b.get(3)) {
        (6, Some(b':')) => (two(1)?, two(4)?),
        (3, _) if !t_separated => (two(1)?, 0),
        (5, _) if !t_separated => (two(1)?, two(3)?),
        _ => return None,
    };
    (h < 24 && m < 60).then(|| chrono::TimeDelta::seconds(sign * (h * 3600 + m * 60)))
}

/// Format strings parsed once: chrono's `parse_from_str` parses its format string again
/// for every value, which was most of the cost of reading a timestamp.
type Formats = std::sync::LazyLock<Vec<Vec<chrono::format::Item<'static>>>>;

fn parsed_formats(formats: &[&str]) -> Vec<Vec<chrono::format::Item<'static>>> {
    formats
        .iter()
        .map(|f| {
            chrono::format::StrftimeItems::new(f)
                .parse_to_owned()
                .expect("a valid format")
        })
        .collect()
}

static NAIVE_TIMESTAMP_FORMATS: Formats =
    Formats::new(|| parsed_formats(&["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]));

static TIMESTAMPTZ_FORMATS: Formats =
    Formats::new(|| parsed_formats(&["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"]));

/// Whether a canonical decimal fits `decimal(precision, scale)` without rounding.
pub fn decimal_fits(decimal: &str, precision: usize, scale: usize) -> bool {
    let digits = decimal.trim_start_matches('-');
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    frac.len() <= scale && int.trim_start_matches('0').len() <= precision.saturating_sub(scale)
}

/// A decimal in canonical form: no `+`, no leading zeros, no trailing fractional zeros,
/// no `-0`. `None` when `s` is not a plain decimal.
pub fn normalize_decimal(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    Some(if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    })
}

/// A stored value could not be decoded (a corrupt or foreign state store).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode stored value {0:?}")]
pub struct ValueDecodeError(pub String);

impl Value {
    /// Roughly the bytes this value occupies in memory: its own size and what it holds.
    /// What a scan weighs its batches by (see `connectors::BATCH_BYTES`).
    pub fn weight(&self) -> usize {
        fn json_weight(j: &serde_json::Value) -> usize {
            16 + match j {
                serde_json::Value::String(s) => s.len(),
                serde_json::Value::Array(items) => items.iter().map(json_weight).sum(),
                serde_json::Value::Object(fields) => {
                    fields.iter().map(|(k, v)| k.len() + json_weight(v)).sum()
                }
                _ => 0,
            }
        }
        std::mem::size_of::<Value>()
            + match self {
                Value::Text(t) | Value::Numeric(t) | Value::Uuid(t) => t.len(),
                Value::Blob(b) => b.len(),
                Value::Json(j) => json_weight(j),
                _ => 0,
            }
    }

    /// Null, or text that is blank after trimming.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Text(t) => t.trim().is_empty(),
            _ => false,
        }
    }

    /// The value as a canonical decimal, when it is a number (or text holding one).
    pub fn as_decimal(&self) -> Option<String> {
        match self {
            Value::Integer(i) => Some(i.to_string()),
            // Display prints the shortest exact form, never an exponent.
            Value::Real(r) if r.is_finite() => normalize_decimal(&r.to_string()),
            Value::Numeric(n) | Value::Text(n) => normalize_decimal(n),
            _ => None,
        }
    }

    /// The value as text in the form SQL systems accept for its type (what text
    /// transfer and SQLite's TEXT columns carry).
    pub fn to_sql_text(&self) -> Option<String> {
        self.sql_text().map(Cow::into_owned)
    }

    /// [`to_sql_text`](Self::to_sql_text), borrowing the text a value already holds.
    pub fn sql_text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Value::Null => return None,
            Value::Text(t) | Value::Numeric(t) | Value::Uuid(t) => Cow::Borrowed(t),
            Value::Integer(i) => i.to_string().into(),
            Value::Real(r) if r.is_nan() => "NaN".into(),
            Value::Real(r) if r.is_infinite() => {
                if *r > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                }
            }
            Value::Real(r) => format!("{r:?}").into(),
            Value::Blob(b) => format!("\\x{}", hex(b)).into(),
            Value::Bool(b) => b.to_string().into(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string().into(),
            Value::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S%.f").to_string().into(),
            Value::TimestampTz(t) => t
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .into(),
            Value::Json(j) => j.to_string().into(),
        })
    }

    /// Exact, type-preserving text form used in the state store. Reals keep their bits.
    pub fn encode(&self) -> String {
        let mut encoded = String::new();
        self.write_encoded(&mut encoded)
            .expect("writing to a String cannot fail");
        encoded
    }

    pub fn decode(s: &str) -> Result<Value, ValueDecodeError> {
        let bad = || ValueDecodeError(s.chars().take(40).collect());
        let (tag, rest) = s.split_at_checked(1).ok_or_else(bad)?;
        Ok(match tag {
            "N" => Value::Null,
            "I" => Value::Integer(rest.parse().map_err(|_| bad())?),
            "P" | "M" => Value::Integer(read_sortable_integer(tag == "M", rest).ok_or_else(bad)?),
            "R" => Value::Real(f64::from_bits(
                u64::from_str_radix(rest, 16).map_err(|_| bad())?,
            )),
            "T" => Value::Text(rest.to_string()),
            "B" => Value::Blob(unhex(rest).ok_or_else(bad)?),
            "Z" => Value::Bool(rest == "1"),
            "D" => Value::Numeric(rest.to_string()),
            "d" => {
                Value::Date(chrono::NaiveDate::parse_from_str(rest, "%Y-%m-%d").map_err(|_| bad())?)
            }
            "S" => Value::Timestamp(parse_naive_timestamp(rest).ok_or_else(bad)?),
            "Y" => Value::TimestampTz(parse_timestamptz(rest).ok_or_else(bad)?),
            "J" => Value::Json(serde_json::from_str(rest).map_err(|_| bad())?),
            "U" => Value::Uuid(rest.to_string()),
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
            Value::Bool(b) => (*b).into(),
            Value::Json(j) => j.clone(),
            other => other.to_sql_text().into(),
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
            Value::Bool(b) => write!(f, "{b}"),
            Value::Numeric(n) => f.write_str(n),
            Value::Json(j) => write!(f, "{j}"),
            other => write!(f, "{:?}", other.to_sql_text().unwrap_or_default()),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Value {
    /// Writes [`encode`](Self::encode)'s form: a tag letter, then the value. Text-like
    /// values are written as they are, without a trip through `format_args!`.
    pub(crate) fn write_encoded(&self, w: &mut impl fmt::Write) -> fmt::Result {
        let tagged = |w: &mut dyn fmt::Write, tag: char, body: &str| {
            w.write_char(tag)?;
            w.write_str(body)
        };
        match self {
            Value::Null => w.write_str("N"),
            Value::Integer(i) => write!(w, "I{i}"),
            Value::Real(r) => write!(w, "R{:016x}", r.to_bits()),
            Value::Text(t) => tagged(w, 'T', t),
            Value::Blob(b) => tagged(w, 'B', &hex(b)),
            Value::Bool(b) => w.write_str(if *b { "Z1" } else { "Z0" }),
            Value::Numeric(n) => tagged(w, 'D', n),
            Value::Date(d) => write!(w, "d{}", d.format("%Y-%m-%d")),
            Value::Timestamp(t) => write!(w, "S{}", t.format("%Y-%m-%dT%H:%M:%S%.f")),
            Value::TimestampTz(t) => tagged(
                w,
                'Y',
                &t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
            Value::Json(j) => write!(w, "J{j}"),
            Value::Uuid(u) => tagged(w, 'U', u),
        }
    }
}

thread_local! {
    /// Where a value's encoded form is put together before serde escapes it: one buffer
    /// per thread instead of a string per value.
    static ENCODE_BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl Serialize for Value {
    /// The encoded form as a string. Built whole, then handed over with `serialize_str`:
    /// serde_json escapes a whole string much faster than the pieces `collect_str` gets.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ENCODE_BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            self.write_encoded(buffer)
                .expect("writing to a String cannot fail");
            serializer.serialize_str(buffer)
        })
    }
}

/// A record's key: one value per key column.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct Key(pub Vec<Value>);

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&EncodedKey(self))
    }
}

/// [`Key::encode`]'s form: the parts' encoded forms, escaped and separated.
struct EncodedKey<'a>(&'a Key);

impl fmt::Display for EncodedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        /// Escapes `\` and the separator in what is written through it.
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let mut rest = s;
                while let Some(at) = rest.find(['\\', KEY_SEP]) {
                    self.0.write_str(&rest[..at])?;
                    let c = rest[at..].chars().next().expect("found at `at`");
                    self.0.write_str(if c == '\\' { "\\\\" } else { "\\u" })?;
                    rest = &rest[at + c.len_utf8()..];
                }
                self.0.write_str(rest)
            }
        }
        for (i, v) in self.0.0.iter().enumerate() {
            if i > 0 {
                f.write_char(KEY_SEP)?;
            }
            match v {
                // Integer parts sort as their numbers: see `write_sortable_integer`.
                Value::Integer(n) => write_sortable_integer(f, *n)?,
                other => other.write_encoded(&mut Escaping(f))?,
            }
        }
        Ok(())
    }
}

/// An integer key part in a form whose byte order is the numbers' order, so that keys
/// read in key order (every connector reads so) land in the state store's indexes in
/// order, appended rather than scattered: `P` + a letter for the digit count + the
/// digits for zero and up (`7` is `Pa7`, `42` is `Pb42`); `M` + a letter that falls as
/// the digit count grows + the digits' nines' complement below zero (`-1` is `Ms8`).
fn write_sortable_integer(out: &mut impl fmt::Write, n: i64) -> fmt::Result {
    let digits = n.unsigned_abs().to_string();
    // At most 20 digits (`u64::MAX`; an `i64` has at most 19).
    let width = digits.len() as u8;
    if n >= 0 {
        out.write_char('P')?;
        out.write_char(char::from(b'a' + width - 1))?;
        out.write_str(&digits)
    } else {
        out.write_char('M')?;
        out.write_char(char::from(b'a' + 19 - width))?;
        digits
            .bytes()
            .try_for_each(|d| out.write_char(char::from(b'9' - d + b'0')))
    }
}

/// Reads [`write_sortable_integer`]'s form (without its tag).
fn read_sortable_integer(negative: bool, rest: &str) -> Option<i64> {
    let (width, digits) = rest.split_at_checked(1)?;
    let width = i64::from(width.as_bytes()[0]) - i64::from(b'a');
    let expected = if negative { 19 - width } else { width + 1 };
    // One form per number: the width must match, and no leading zero (a complemented
    // `9` below zero) but in zero itself.
    let leading_zero = if negative { b'9' } else { b'0' };
    if digits.is_empty()
        || digits.len() as i64 != expected
        || !digits.bytes().all(|d| d.is_ascii_digit())
        || (digits.len() > 1 || negative) && digits.as_bytes()[0] == leading_zero
    {
        return None;
    }
    if negative {
        let magnitude: u64 = digits
            .bytes()
            .map(|d| char::from(b'9' - d + b'0'))
            .collect::<String>()
            .parse()
            .ok()?;
        0i64.checked_sub_unsigned(magnitude).filter(|n| *n < 0)
    } else {
        digits.parse().ok()
    }
}

/// Separates the parts of a composite key in its encoded form; cannot occur in an
/// encoded integer, real or blob, and a text part is escaped.
const KEY_SEP: char = '\u{1f}';

impl Key {
    pub fn single(v: Value) -> Key {
        Key(vec![v])
    }

    /// Stable text form used in the state store (id map, journal, conflicts).
    pub fn encode(&self) -> String {
        EncodedKey(self).to_string()
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

impl TryFrom<String> for Value {
    type Error = ValueDecodeError;
    fn try_from(s: String) -> Result<Value, ValueDecodeError> {
        Value::decode(&s)
    }
}

impl TryFrom<String> for Key {
    type Error = ValueDecodeError;
    fn try_from(s: String) -> Result<Key, ValueDecodeError> {
        Key::decode(&s)
    }
}

#[cfg(test)]
mod tests;
