//! `COPY … FROM STDIN (FORMAT binary)` for bulk creates: each value in its column type's
//! binary form, so the server stores it without parsing text (parsing `timestamptz` and
//! `numeric` text was most of a first load's target-side CPU).
//!
//! A value is encoded only where the binary form holds exactly what the text form would:
//! the same Value variant as the column's type (an integer into `int8`, a timestamp with
//! whole microseconds into `timestamptz`, a plain decimal into `numeric`), or any value
//! into a column whose binary input is its text input (`text`, `varchar`, `char(n)`,
//! enums, `json`, `jsonb`). Anything else — text into a `date` column, say — makes
//! [`encode_rows`] answer `None`, and the chunk goes as text, where PostgreSQL casts it.
//! Either way the server applies the column's modifiers (`numeric(p,s)`, `varchar(n)`):
//! binary input is given the column's typmod as text input is.

use super::types::PgColumn;
use crate::model::{Name, Value};
use chrono::{NaiveDate, NaiveDateTime};

/// How a column's values are written in binary, from its catalog type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryForm {
    Int2,
    Int4,
    Int8,
    Float8,
    Numeric,
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Uuid,
    Bytea,
    /// Types whose binary input reads the same text their text input reads.
    Text,
    Jsonb,
    /// No binary form here (`float4`, `interval`, arrays, …): chunks go as text.
    None,
}

impl BinaryForm {
    /// From `typname` as in `pg_type`. An enum's is [`BinaryForm::Text`] whatever its
    /// name (its binary input is the label, checked as text input checks it): the catalog
    /// read sets that, since only `pg_type.typtype` tells an enum.
    pub fn of(typname: &str) -> BinaryForm {
        match typname {
            "int2" => BinaryForm::Int2,
            "int4" => BinaryForm::Int4,
            "int8" => BinaryForm::Int8,
            "float8" => BinaryForm::Float8,
            "numeric" => BinaryForm::Numeric,
            "bool" => BinaryForm::Bool,
            "date" => BinaryForm::Date,
            "timestamp" => BinaryForm::Timestamp,
            "timestamptz" => BinaryForm::TimestampTz,
            "uuid" => BinaryForm::Uuid,
            "bytea" => BinaryForm::Bytea,
            "text" | "varchar" | "bpchar" | "json" => BinaryForm::Text,
            "jsonb" => BinaryForm::Jsonb,
            _ => BinaryForm::None,
        }
    }
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The whole `COPY` binary stream for `rows` (values in `columns`' order), or `None`
/// when some value has no exact binary form in its column.
pub fn encode_rows(columns: &[&PgColumn], rows: &[&Vec<(Name, Value)>]) -> Option<Vec<u8>> {
    let field_count = i16::try_from(columns.len()).ok()?;
    let mut out = Vec::with_capacity(19 + rows.len() * (2 + columns.len() * 16));
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for row in rows {
        out.extend_from_slice(&field_count.to_be_bytes());
        for (col, (_, value)) in columns.iter().zip(row.iter()) {
            encode_field(&mut out, col.binary, value)?;
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Some(out)
}

/// One field: its length, then its bytes (length −1 for NULL).
fn encode_field(out: &mut Vec<u8>, form: BinaryForm, value: &Value) -> Option<()> {
    if matches!(value, Value::Null) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Some(());
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    match (form, value) {
        (BinaryForm::Int2, Value::Integer(i)) => {
            out.extend_from_slice(&i16::try_from(*i).ok()?.to_be_bytes())
        }
        (BinaryForm::Int4, Value::Integer(i)) => {
            out.extend_from_slice(&i32::try_from(*i).ok()?.to_be_bytes())
        }
        (BinaryForm::Int8, Value::Integer(i)) => out.extend_from_slice(&i.to_be_bytes()),
        (BinaryForm::Float8, Value::Real(r)) => out.extend_from_slice(&r.to_bits().to_be_bytes()),
        (BinaryForm::Numeric, Value::Numeric(d)) => encode_numeric(out, d)?,
        (BinaryForm::Numeric, Value::Integer(i)) => encode_numeric(out, &i.to_string())?,
        (BinaryForm::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
        (BinaryForm::Date, Value::Date(d)) => {
            out.extend_from_slice(&days_since_2000(*d)?.to_be_bytes())
        }
        (BinaryForm::Timestamp, Value::Timestamp(t)) => {
            out.extend_from_slice(&micros_since_2000(*t)?.to_be_bytes())
        }
        (BinaryForm::TimestampTz, Value::TimestampTz(t)) => {
            out.extend_from_slice(&micros_since_2000(t.naive_utc())?.to_be_bytes())
        }
        (BinaryForm::Uuid, Value::Uuid(u)) => out.extend_from_slice(&uuid_bytes(u)?),
        (BinaryForm::Bytea, Value::Blob(b)) => out.extend_from_slice(b),
        (BinaryForm::Text, v) => out.extend_from_slice(v.sql_text()?.as_bytes()),
        (BinaryForm::Jsonb, v) => {
            out.push(1); // jsonb's binary format version
            out.extend_from_slice(v.sql_text()?.as_bytes());
        }
        _ => return None,
    }
    let len = i32::try_from(out.len() - at - 4).ok()?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Some(())
}

fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a valid date")
}

fn days_since_2000(d: NaiveDate) -> Option<i32> {
    i32::try_from((d - epoch().date()).num_days()).ok()
}

/// Microseconds since PostgreSQL's epoch; `None` for a time finer than a microsecond
/// (text input would round it) or a leap second.
fn micros_since_2000(t: NaiveDateTime) -> Option<i64> {
    use chrono::Timelike as _;
    if !t.nanosecond().is_multiple_of(1000) || t.nanosecond() >= 1_000_000_000 {
        return None;
    }
    (t - epoch()).num_microseconds()
}

/// The 16 bytes of a hyphenated (or bare) hexadecimal UUID.
fn uuid_bytes(u: &str) -> Option<[u8; 16]> {
    let mut bytes = [0u8; 16];
    let mut digits = u.bytes().filter(|&b| b != b'-');
    for byte in &mut bytes {
        let hi = (digits.next()? as char).to_digit(16)?;
        let lo = (digits.next()? as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    digits.next().is_none().then_some(bytes)
}

/// `numeric`'s binary form of a plain decimal (`-12.50`): digit count, weight, sign and
/// display scale, then base-10000 digits. The server strips zero digits and applies the
/// column's precision and scale itself, so this only needs to be exact, not minimal.
/// `None` for anything but `[+-]digits[.digits]` (exponents, `NaN`): those go as text.
fn encode_numeric(out: &mut Vec<u8>, decimal: &str) -> Option<()> {
    let (negative, unsigned) = match decimal.as_bytes().first()? {
        b'-' => (true, &decimal[1..]),
        b'+' => (false, &decimal[1..]),
        _ => (false, decimal),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return None;
    }
    let dscale = u16::try_from(frac_part.len()).ok().filter(|&s| s <= 1000)?;
    let int_part = int_part.trim_start_matches('0');
    // Base-10000 digits aligned on the decimal point: the integer part padded on the
    // left to whole groups, the fraction on the right.
    let int_groups = int_part.len().div_ceil(4);
    let lead = int_groups * 4 - int_part.len();
    let frac_groups = frac_part.len().div_ceil(4);
    let mut digits: Vec<i16> = Vec::with_capacity(int_groups + frac_groups);
    let padded = std::iter::repeat_n(0u8, lead)
        .chain(int_part.bytes().map(|b| b - b'0'))
        .chain(frac_part.bytes().map(|b| b - b'0'))
        .chain(std::iter::repeat_n(0u8, frac_groups * 4 - frac_part.len()))
        .collect::<Vec<u8>>();
    for group in padded.chunks(4) {
        digits.push(group.iter().fold(0i16, |acc, &d| acc * 10 + i16::from(d)));
    }
    let mut weight = i16::try_from(int_groups).ok()? - 1;
    let leading_zeros = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..leading_zeros);
    weight -= i16::try_from(leading_zeros).ok()?;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&i16::try_from(digits.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign: u16 = if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(d: &str) -> Option<(i16, i16, u16, u16, Vec<i16>)> {
        let mut out = Vec::new();
        encode_numeric(&mut out, d)?;
        let word = |i: usize| [out[i], out[i + 1]];
        let n = i16::from_be_bytes(word(0));
        let digits = (0..n as usize)
            .map(|k| i16::from_be_bytes(word(8 + 2 * k)))
            .collect();
        Some((
            n,
            i16::from_be_bytes(word(2)),
            u16::from_be_bytes(word(4)),
            u16::from_be_bytes(word(6)),
            digits,
        ))
    }

    #[test]
    fn decimals_become_base_10000_digits_around_the_point() {
        assert_eq!(numeric("12.50"), Some((2, 0, 0, 2, vec![12, 5000])));
        assert_eq!(numeric("-0.0001"), Some((1, -1, 0x4000, 4, vec![1])));
        assert_eq!(numeric("100000000"), Some((1, 2, 0, 0, vec![1])));
        assert_eq!(
            numeric("123456789.123456789"),
            Some((6, 2, 0, 9, vec![1, 2345, 6789, 1234, 5678, 9000]))
        );
        assert_eq!(numeric("0.00"), Some((0, 0, 0, 2, vec![])));
        assert_eq!(numeric("-0"), Some((0, 0, 0, 0, vec![])));
        assert_eq!(numeric("+7"), Some((1, 0, 0, 0, vec![7])));
        assert_eq!(numeric(".5"), Some((1, -1, 0, 1, vec![5000])));
        for refused in ["", "-", ".", "1e5", "NaN", "1.2.3", " 1", "1,5", "Infinity"] {
            assert_eq!(numeric(refused), None, "{refused:?}");
        }
    }

    fn column(typname: &str) -> PgColumn {
        PgColumn::new(
            typname.into(),
            typname.into(),
            false,
            typname.into(),
            typname.into(),
            false,
        )
    }

    /// Values as the connector reads them from their own column types all go in binary;
    /// a value of another type (text for a date) sends the chunk as text instead.
    #[test]
    fn values_of_their_columns_type_go_binary_and_others_do_not() {
        let typed = [
            ("int2", Value::Integer(-7)),
            ("int4", Value::Integer(1 << 30)),
            ("int8", Value::Integer(i64::MIN)),
            ("float8", Value::Real(f64::NAN)),
            ("numeric", Value::Numeric("-12.50".into())),
            ("bool", Value::Bool(true)),
            (
                "date",
                Value::Date(NaiveDate::from_ymd_opt(1, 1, 1).unwrap()),
            ),
            ("timestamp", Value::Timestamp(epoch())),
            ("timestamptz", Value::TimestampTz(epoch().and_utc())),
            (
                "uuid",
                Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            ),
            ("bytea", Value::Blob(vec![0, 255])),
            ("varchar", Value::Text("ünï".into())),
            ("jsonb", Value::Json(serde_json::json!({"a": [1]}))),
            ("json", Value::Json(serde_json::json!(null))),
            ("text", Value::Null),
        ];
        let columns: Vec<PgColumn> = typed.iter().map(|(t, _)| column(t)).collect();
        let refs: Vec<&PgColumn> = columns.iter().collect();
        let row: Vec<(Name, Value)> = typed
            .iter()
            .map(|(t, v)| (Name::from(*t), v.clone()))
            .collect();
        let stream = encode_rows(&refs, &[&row]).expect("every value has a binary form");
        assert!(stream.starts_with(SIGNATURE));
        assert!(stream.ends_with(&[0xff, 0xff]));
        for (typname, value) in [
            ("date", Value::Text("2026-01-01".into())),
            ("int4", Value::Integer(1 << 40)),
            ("float4", Value::Real(1.5)),
            ("interval", Value::Text("1 day".into())),
            ("timestamptz", Value::Text("2026-01-01T00:00:00Z".into())),
        ] {
            let col = column(typname);
            let row = vec![(Name::from("x"), value)];
            assert_eq!(encode_rows(&[&col], &[&row]), None, "{typname}");
        }
    }

    #[test]
    fn uuids_and_times_have_their_exact_binary_form_or_none() {
        assert_eq!(
            uuid_bytes("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").map(|b| b[..3].to_vec()),
            Some(vec![0xa0, 0xee, 0xbc])
        );
        assert_eq!(uuid_bytes("a0eebc99-9c0b"), None);
        assert_eq!(uuid_bytes("g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), None);
        let t = NaiveDate::from_ymd_opt(2000, 1, 2)
            .unwrap()
            .and_hms_micro_opt(0, 0, 1, 5)
            .unwrap();
        assert_eq!(micros_since_2000(t), Some(86_400_000_000 + 1_000_005));
        let finer = NaiveDate::from_ymd_opt(1999, 12, 31)
            .unwrap()
            .and_hms_nano_opt(0, 0, 0, 1)
            .unwrap();
        assert_eq!(micros_since_2000(finer), None);
        assert_eq!(
            days_since_2000(NaiveDate::from_ymd_opt(1999, 12, 31).unwrap()),
            Some(-1)
        );
    }
}
