//! A field's meaning keys (`map`, `unmapped`, `scale`, `format`, `offset`) read into a
//! [`FieldMeaning`] (see [`crate::meaning`]), with the span of what is wrong.

use super::raw::{RawField, RawScalar, RawUnmapped};
use super::resolve::Transform;
use crate::meaning::{DateFormat, FieldMeaning, Unmapped, ValueMap};
use crate::model::Value;
use std::ops::Range;
use toml::Spanned;

/// A field's `map` / `unmapped` / `scale` / `format` / `offset`, as a [`FieldMeaning`]. Map keys and values go
/// through the field's transform, as every value it compares does.
pub(super) fn field_meaning(
    fr: &RawField,
    transform: Transform,
) -> Result<FieldMeaning, (Range<usize>, String)> {
    let spans: Vec<Range<usize>> = [
        fr.map.as_ref().map(Spanned::span),
        fr.scale.as_ref().map(Spanned::span),
        fr.format.as_ref().map(Spanned::span),
    ]
    .into_iter()
    .flatten()
    .collect();
    if spans.len() > 1 {
        return Err((
            spans[1].clone(),
            "a field has one of `map`, `scale` or `format`, not several".into(),
        ));
    }
    if let Some(o) = &fr.offset
        && fr.format.is_none()
    {
        return Err((
            o.span(),
            "`offset` is the right's time zone for `format`; there is no `format`".into(),
        ));
    }
    if let Some(f) = &fr.format {
        let text = f.get_ref();
        if chrono::format::StrftimeItems::new(text)
            .any(|i| matches!(i, chrono::format::Item::Error))
        {
            return Err((
                f.span(),
                format!("format {text:?} is not a chrono format (%Y-%m-%d, %d/%m/%Y %H:%M, …)"),
            ));
        }
        let offset_minutes = match &fr.offset {
            None => 0,
            Some(o) => parse_offset(o.get_ref()).ok_or_else(|| {
                (
                    o.span(),
                    format!("offset {:?} is not +HH:MM, -HH:MM or UTC", o.get_ref()),
                )
            })?,
        };
        return Ok(FieldMeaning::Format(DateFormat {
            format: text.clone(),
            offset_minutes,
        }));
    }
    if let Some(u) = &fr.unmapped
        && fr.map.is_none()
    {
        return Err((
            u.span(),
            "`unmapped` says what a value not in `map` becomes; there is no `map`".into(),
        ));
    }
    if let Some(scale) = &fr.scale {
        let text = match scale.get_ref() {
            RawScalar::Integer(i) => i.to_string(),
            RawScalar::Float(f) => f.to_string(),
            RawScalar::Text(t) => t.clone(),
            RawScalar::Bool(_) => String::new(),
        };
        return power_of_ten(&text).map(FieldMeaning::Scale).ok_or_else(|| {
            (
                scale.span(),
                format!("scale `{text}` is not a power of ten (100, 1000, 0.01, …): only a shift of the decimal point is exact"),
            )
        });
    }
    let Some(map) = &fr.map else {
        return Ok(FieldMeaning::Same);
    };
    let scalar = |v: &RawScalar| -> Value {
        transform.apply(match v {
            RawScalar::Bool(b) => Value::Bool(*b),
            RawScalar::Integer(i) => Value::Integer(*i),
            RawScalar::Float(f) => Value::Numeric(f.to_string()),
            RawScalar::Text(t) => Value::Text(t.clone()),
        })
    };
    let key = |k: &str| match transform.apply(Value::Text(k.to_string())) {
        Value::Text(t) => t,
        _ => k.to_string(),
    };
    let unmapped = match fr.unmapped.as_ref().map(|u| (u.get_ref(), u.span())) {
        None => Unmapped::Quarantine,
        Some((RawUnmapped::Rule(r), span)) => match r.as_str() {
            "quarantine" => Unmapped::Quarantine,
            "pass" => Unmapped::Pass,
            other => {
                return Err((
                    span,
                    format!(
                        "unmapped `{other}` is not quarantine or pass, nor defaults {{ left = …, right = … }}"
                    ),
                ));
            }
        },
        Some((RawUnmapped::Default { left, right }, _)) => Unmapped::Default {
            left: left.as_ref().map(scalar),
            right: right.as_ref().map(scalar),
        },
    };
    Ok(FieldMeaning::Map(ValueMap {
        pairs: map
            .get_ref()
            .iter()
            .map(|(k, v)| (key(k), scalar(v)))
            .collect(),
        unmapped,
    }))
}

/// Minutes east of UTC: `+02:00`, `-0530`, `UTC`, `Z`.
fn parse_offset(text: &str) -> Option<i32> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Some(0);
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

/// `k` where `text` is 10^k (`100` → 2, `0.01` → -2).
fn power_of_ten(text: &str) -> Option<i32> {
    let d = crate::model::value::normalize_decimal(text)?;
    if let Some(frac) = d.strip_prefix("0.") {
        let zeros = frac.strip_suffix('1')?;
        return zeros
            .bytes()
            .all(|b| b == b'0')
            .then(|| -(zeros.len() as i32 + 1));
    }
    let zeros = d.strip_prefix('1')?;
    zeros
        .bytes()
        .all(|b| b == b'0')
        .then_some(zeros.len() as i32)
}
