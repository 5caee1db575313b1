//! What a field's values mean on each side, when the two systems say the same thing
//! differently: a value map (`active` ↔ `current`), a decimal scale (units ↔ cents), a
//! date as text in a format and a time zone (`2026-02-01` ↔ `01/02/2026`), a composed
//! field (`first_name` + `last_name` ↔ `full_name`).
//!
//! The engine compares, remembers and decides in one meaning: **the right's**. A left
//! record is translated into it as it is read (see `engine::translate`), so a mapped
//! value that arrives is an echo, not a change, and every guarantee (three-way merge,
//! per-side memory, quiescence) holds across the mapping unchanged. The way into the
//! right's meaning is always defined (a map's unmapped rule says what an unknown value
//! becomes); the way back may not be: a write to the left is translated back and checked
//! to survive the round trip, and a value that does not (a right value no left value maps
//! to, two left values mapping to it, a name with no separator to split at) is
//! quarantined with the reason, never written half-right.
//!
//! Pure: no I/O.

use crate::model::Value;
use crate::model::value::normalize_decimal;

/// How one field's left value becomes the right's meaning.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FieldMeaning {
    /// The same value on both sides.
    #[default]
    Same,
    /// Left values (as text) to right values.
    Map(ValueMap),
    /// The right holds the left's number times 10^k (`scale = 100`: k = 2, units → cents).
    /// Shifting a decimal point is exact; no float is involved.
    Scale(i32),
    /// The right holds the left's date or timestamp as text in this format.
    Format(DateFormat),
}

/// A date or time as text on the right: a `chrono` format (`%d/%m/%Y`), and the fixed
/// offset from UTC of the right's local time, where the left's is UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct DateFormat {
    pub format: String,
    pub offset_minutes: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValueMap {
    /// `(left value as text, right value)`, in the order the config gives them.
    pub pairs: Vec<(String, Value)>,
    pub unmapped: Unmapped,
}

/// What a value the map does not name becomes.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Unmapped {
    /// The record is quarantined, naming the field and the value.
    #[default]
    Quarantine,
    /// It passes unchanged.
    Pass,
    /// It becomes a default: `right` for a left value on its way right, `left` for a
    /// right value on its way left (`None`: quarantined that way).
    Default {
        left: Option<Value>,
        right: Option<Value>,
    },
}

/// Several left fields that the right keeps as one value.
#[derive(Debug, Clone, PartialEq)]
pub enum Compose {
    /// One text: joined with `separator` on the way right, split at it on the way back.
    Text { separator: String, split: SplitAt },
    /// One JSON object with a key per part, in the parts' order (`street` + `city` ↔
    /// `{"street": …, "city": …}`).
    Json { keys: Vec<String> },
}

/// Where a composed text is split when it has more separators than parts need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitAt {
    /// At the first separators: the last part takes the rest (`Ann` + `Marie Smith`).
    First,
    /// At the last separators: the first part takes the rest (`Ann Marie` + `Smith`).
    Last,
}

impl FieldMeaning {
    pub fn is_same(&self) -> bool {
        matches!(self, FieldMeaning::Same)
    }

    /// The left value `v` in the right's meaning.
    ///
    /// # Errors
    /// Why it has none: a value the map does not name (under `unmapped = "quarantine"`),
    /// text that is not a number under a scale.
    pub fn to_right(&self, v: &Value) -> Result<Value, String> {
        if matches!(v, Value::Null) {
            return Ok(Value::Null);
        }
        match self {
            FieldMeaning::Same => Ok(v.clone()),
            FieldMeaning::Map(map) => {
                if let Some((_, right)) = map.pairs.iter().find(|(k, _)| key_matches(k, v)) {
                    return Ok(right.clone());
                }
                match &map.unmapped {
                    Unmapped::Pass => Ok(v.clone()),
                    Unmapped::Default { right: Some(d), .. } => Ok(d.clone()),
                    _ => Err(format!(
                        "{v} is not in the value map (unmapped = \"quarantine\"): add it to `map`, or say `unmapped`"
                    )),
                }
            }
            FieldMeaning::Scale(k) => scaled(v, *k),
            FieldMeaning::Format(f) => f.format_value(v),
        }
    }

    /// The right value `v` in the left's form: the inverse of [`to_right`](Self::to_right).
    ///
    /// # Errors
    /// Why there is none, or more than one.
    pub fn to_left(&self, v: &Value) -> Result<Value, String> {
        if matches!(v, Value::Null) {
            return Ok(Value::Null);
        }
        match self {
            FieldMeaning::Same => Ok(v.clone()),
            FieldMeaning::Map(map) => {
                let sources: Vec<&str> = map
                    .pairs
                    .iter()
                    .filter(|(_, r)| r == v)
                    .map(|(k, _)| k.as_str())
                    .collect();
                match sources.as_slice() {
                    [one] => Ok(Value::Text((*one).to_string())),
                    [] => match &map.unmapped {
                        Unmapped::Pass => Ok(v.clone()),
                        Unmapped::Default { left: Some(d), .. } => Ok(d.clone()),
                        _ => Err(format!("no left value maps to {v} in the value map")),
                    },
                    many => Err(format!(
                        "{v} is what several left values map to ({}): which one it was cannot be told",
                        many.join(", ")
                    )),
                }
            }
            FieldMeaning::Scale(k) => scaled(v, -k),
            FieldMeaning::Format(f) => f.parse_value(v),
        }
    }

    /// Left values that map to the same right value: a map that cannot be read back.
    pub fn collisions(&self) -> Vec<(Value, Vec<String>)> {
        let FieldMeaning::Map(map) = self else {
            return Vec::new();
        };
        let mut out: Vec<(Value, Vec<String>)> = Vec::new();
        for (k, r) in &map.pairs {
            match out.iter_mut().find(|(v, _)| v == r) {
                Some((_, ks)) => ks.push(k.clone()),
                None => out.push((r.clone(), vec![k.clone()])),
            }
        }
        out.retain(|(_, ks)| ks.len() > 1);
        out
    }
}

/// Whether map key `k` (TOML keys are text) names left value `v`: its text, a number in
/// any form (`1` names `1.0`), a boolean as `true`/`false`.
fn key_matches(k: &str, v: &Value) -> bool {
    match v {
        Value::Bool(b) => {
            k.eq_ignore_ascii_case(if *b { "true" } else { "false" }) || {
                let n = if *b { "1" } else { "0" };
                k == n
            }
        }
        other => Value::Text(k.to_string()) == *other,
    }
}

impl DateFormat {
    /// Whether the format has a time of day (else it is a date).
    fn has_time(&self) -> bool {
        ["%H", "%I", "%M", "%S", "%T", "%R", "%s", "%+"]
            .iter()
            .any(|t| self.format.contains(t))
    }

    fn offset(&self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.offset_minutes))
    }

    /// A left date or timestamp (typed, or ISO text) as the right's text.
    fn format_value(&self, v: &Value) -> Result<Value, String> {
        let at = match v {
            Value::Date(d) => d.and_time(chrono::NaiveTime::MIN),
            Value::Timestamp(t) => *t,
            Value::TimestampTz(z) => z.naive_utc(),
            Value::Text(t) => iso_instant(t.trim())
                .ok_or_else(|| format!("{v} is not a date or time (YYYY-MM-DD[ HH:MM:SS])"))?,
            other => return Err(format!("{other} is not a date or time")),
        };
        Ok(Value::Text(
            (at + self.offset()).format(&self.format).to_string(),
        ))
    }

    /// The right's text as the left's date or timestamp.
    fn parse_value(&self, v: &Value) -> Result<Value, String> {
        let text = match v {
            Value::Text(t) => t.clone(),
            other => other.to_sql_text().unwrap_or_default(),
        };
        let wrong = || format!("{v} does not read as {:?}", self.format);
        if self.has_time() {
            let at =
                chrono::NaiveDateTime::parse_from_str(&text, &self.format).map_err(|_| wrong())?;
            Ok(Value::Timestamp(at - self.offset()))
        } else {
            let d = chrono::NaiveDate::parse_from_str(&text, &self.format).map_err(|_| wrong())?;
            Ok(Value::Date(d))
        }
    }
}

/// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.f]` (or with `T`), or RFC 3339 (in UTC).
fn iso_instant(t: &str) -> Option<chrono::NaiveDateTime> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Some(d.and_time(chrono::NaiveTime::MIN));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Some(at);
        }
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|z| z.naive_utc())
}

/// `v` times 10^k, exactly.
fn scaled(v: &Value, k: i32) -> Result<Value, String> {
    let d = v
        .as_decimal()
        .ok_or_else(|| format!("{v} is not a number, and the field has a scale"))?;
    Ok(Value::Numeric(shift_decimal(&d, k)))
}

/// Moves the decimal point of a normalized decimal `k` places right (left when negative).
pub fn shift_decimal(d: &str, k: i32) -> String {
    let (neg, digits) = match d.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, d),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all = format!("{int}{frac}");
    let point = int.len() as i64 + i64::from(k);
    let body = if point <= 0 {
        format!("0.{}{all}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= all.len() {
        format!("{all}{}", "0".repeat(point as usize - all.len()))
    } else {
        format!("{}.{}", &all[..point as usize], &all[point as usize..])
    };
    let signed = if neg { format!("-{body}") } else { body };
    normalize_decimal(&signed).unwrap_or(signed)
}

impl Compose {
    /// The parts as one value; NULL when every part is NULL (or, for text, empty).
    pub fn join(&self, parts: &[Value]) -> Value {
        match self {
            Compose::Text { separator, .. } => {
                if parts.iter().all(null_or_empty) {
                    return Value::Null;
                }
                Value::Text(
                    parts
                        .iter()
                        .map(|p| match p {
                            Value::Null => String::new(),
                            Value::Text(t) => t.clone(),
                            other => other.to_sql_text().unwrap_or_default(),
                        })
                        .collect::<Vec<_>>()
                        .join(separator),
                )
            }
            Compose::Json { keys } => {
                if parts.iter().all(|p| *p == Value::Null) {
                    return Value::Null;
                }
                Value::Json(serde_json::Value::Object(
                    keys.iter()
                        .zip(parts)
                        .map(|(k, p)| (k.clone(), p.to_json()))
                        .collect(),
                ))
            }
        }
    }

    /// `whole` split into `n` parts.
    ///
    /// # Errors
    /// Text with fewer than `n - 1` separators; JSON that is not an object of the keys
    /// (a key the parts do not name would be lost on the way back).
    pub fn split(&self, whole: &Value, n: usize) -> Result<Vec<Value>, String> {
        if matches!(whole, Value::Null) {
            return Ok(vec![Value::Null; n]);
        }
        match self {
            Compose::Text { separator, split } => {
                let text = match whole {
                    Value::Text(t) => t.clone(),
                    other => other.to_sql_text().unwrap_or_default(),
                };
                let mut parts: Vec<&str> = match split {
                    SplitAt::First => text.splitn(n, separator.as_str()).collect(),
                    SplitAt::Last => {
                        let mut p: Vec<&str> = text.rsplitn(n, separator.as_str()).collect();
                        p.reverse();
                        p
                    }
                };
                if parts.len() != n {
                    return Err(format!(
                        "{whole} does not split into {n} parts at {separator:?}"
                    ));
                }
                Ok(parts
                    .drain(..)
                    .map(|p| {
                        if p.is_empty() {
                            Value::Null
                        } else {
                            Value::Text(p.to_string())
                        }
                    })
                    .collect())
            }
            Compose::Json { keys } => {
                let doc = match whole {
                    Value::Json(j) => j.clone(),
                    Value::Text(t) => serde_json::from_str(t)
                        .map_err(|_| format!("{whole} is not a JSON document"))?,
                    other => return Err(format!("{other} is not a JSON object")),
                };
                let serde_json::Value::Object(obj) = doc else {
                    return Err(format!("{whole} is not a JSON object"));
                };
                if let Some(extra) = obj.keys().find(|k| !keys.contains(k)) {
                    return Err(format!(
                        "{whole} holds `{extra}`, which no field takes: it would be lost on the way back"
                    ));
                }
                Ok(keys
                    .iter()
                    .map(|k| match obj.get(k) {
                        None | Some(serde_json::Value::Null) => Value::Null,
                        Some(serde_json::Value::String(s)) => Value::Text(s.clone()),
                        Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
                        Some(serde_json::Value::Number(x)) => match x.as_i64() {
                            Some(i) => Value::Integer(i),
                            None => Value::Numeric(x.to_string()),
                        },
                        Some(other) => Value::Json(other.clone()),
                    })
                    .collect())
            }
        }
    }
}

/// NULL or `""` (a part of spaces is content: it is kept).
fn null_or_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Text(t) => t.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)], unmapped: Unmapped) -> FieldMeaning {
        FieldMeaning::Map(ValueMap {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
                .collect(),
            unmapped,
        })
    }

    #[test]
    fn a_map_reads_both_ways_and_names_what_it_cannot() {
        let m = map(
            &[("active", "current"), ("lead", "trial")],
            Unmapped::Quarantine,
        );
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(m.to_right(&t("active")), Ok(t("current")));
        assert_eq!(m.to_left(&t("trial")), Ok(t("lead")));
        assert_eq!(m.to_right(&Value::Null), Ok(Value::Null));
        assert!(
            m.to_right(&t("churned"))
                .unwrap_err()
                .contains("\"churned\"")
        );
        assert!(m.to_left(&t("cancelled")).is_err());
        let pass = map(&[("a", "b")], Unmapped::Pass);
        assert_eq!(pass.to_right(&t("x")), Ok(t("x")));
        let dflt = map(
            &[("a", "b")],
            Unmapped::Default {
                left: Some(t("a")),
                right: None,
            },
        );
        assert_eq!(dflt.to_left(&t("zz")), Ok(t("a")));
        assert!(dflt.to_right(&t("zz")).is_err());
    }

    #[test]
    fn a_many_to_one_map_reads_one_way_and_names_its_collisions() {
        let m = map(
            &[
                ("active", "current"),
                ("paying", "current"),
                ("lead", "trial"),
            ],
            Unmapped::Quarantine,
        );
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(m.to_right(&t("paying")), Ok(t("current")));
        let e = m.to_left(&t("current")).unwrap_err();
        assert!(e.contains("active, paying"), "{e}");
        assert_eq!(
            m.collisions(),
            vec![(t("current"), vec!["active".into(), "paying".into()])]
        );
    }

    #[test]
    fn booleans_and_numbers_are_named_in_any_form() {
        let m = map(&[("true", "Y"), ("false", "N")], Unmapped::Quarantine);
        assert_eq!(m.to_right(&Value::Bool(true)), Ok(Value::Text("Y".into())));
        let m = map(&[("1", "Y"), ("0", "N")], Unmapped::Quarantine);
        assert_eq!(m.to_right(&Value::Integer(0)), Ok(Value::Text("N".into())));
        assert_eq!(m.to_right(&Value::Bool(true)), Ok(Value::Text("Y".into())));
    }

    #[test]
    fn a_scale_shifts_the_decimal_point_exactly() {
        assert_eq!(shift_decimal("12.34", 2), "1234");
        assert_eq!(shift_decimal("1234", -2), "12.34");
        assert_eq!(shift_decimal("5", -3), "0.005");
        assert_eq!(shift_decimal("-0.1", 1), "-1");
        assert_eq!(shift_decimal("0.1", 20), "10000000000000000000");
        let s = FieldMeaning::Scale(2);
        // 0.1 + 0.2 in floats is 0.30000000000000004; as decimals it is 30 cents.
        assert_eq!(
            s.to_right(&Value::Numeric("0.30".into())),
            Ok(Value::Numeric("30".into()))
        );
        assert_eq!(
            s.to_left(&Value::Integer(1999)),
            Ok(Value::Numeric("19.99".into()))
        );
        assert!(s.to_right(&Value::Text("ten".into())).is_err());
    }

    #[test]
    fn a_date_format_and_an_offset_read_both_ways() {
        let f = FieldMeaning::Format(DateFormat {
            format: "%d/%m/%Y".into(),
            offset_minutes: 0,
        });
        let d = chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        assert_eq!(
            f.to_right(&Value::Date(d)),
            Ok(Value::Text("01/02/2026".into()))
        );
        assert_eq!(
            f.to_right(&Value::Text("2026-02-01".into())),
            Ok(Value::Text("01/02/2026".into()))
        );
        assert_eq!(
            f.to_left(&Value::Text("01/02/2026".into())),
            Ok(Value::Date(d))
        );
        assert!(f.to_left(&Value::Text("2026-02-01".into())).is_err());
        // The right's local time is two hours ahead of the left's UTC.
        let t = FieldMeaning::Format(DateFormat {
            format: "%Y-%m-%d %H:%M".into(),
            offset_minutes: 120,
        });
        let utc = d.and_hms_opt(23, 30, 0).unwrap();
        assert_eq!(
            t.to_right(&Value::Timestamp(utc)),
            Ok(Value::Text("2026-02-02 01:30".into()))
        );
        assert_eq!(
            t.to_left(&Value::Text("2026-02-02 01:30".into())),
            Ok(Value::Timestamp(utc))
        );
    }

    #[test]
    fn a_composed_field_joins_and_splits_where_told() {
        let t = |s: &str| Value::Text(s.into());
        let first = Compose::Text {
            separator: " ".into(),
            split: SplitAt::First,
        };
        let last = Compose::Text {
            separator: " ".into(),
            split: SplitAt::Last,
        };
        assert_eq!(first.join(&[t("Ann"), t("Smith")]), t("Ann Smith"));
        assert_eq!(first.join(&[Value::Null, Value::Null]), Value::Null);
        assert_eq!(
            first.split(&t("Ann Marie Smith"), 2),
            Ok(vec![t("Ann"), t("Marie Smith")])
        );
        assert_eq!(
            last.split(&t("Ann Marie Smith"), 2),
            Ok(vec![t("Ann Marie"), t("Smith")])
        );
        assert_eq!(
            last.split(&t(" Smith"), 2),
            Ok(vec![Value::Null, t("Smith")])
        );
        assert!(first.split(&t("Madonna"), 2).is_err());
    }

    #[test]
    fn a_json_composition_joins_to_an_object_and_splits_it_back_whole() {
        let t = |s: &str| Value::Text(s.into());
        let c = Compose::Json {
            keys: vec!["street".into(), "city".into()],
        };
        let joined = c.join(&[t("Main 1"), Value::Null]);
        assert_eq!(
            joined,
            Value::Json(serde_json::json!({"street": "Main 1", "city": null}))
        );
        assert_eq!(c.split(&joined, 2), Ok(vec![t("Main 1"), Value::Null]));
        assert_eq!(
            c.split(&t(r#"{"city": "Oslo", "street": "Storgata 2"}"#), 2),
            Ok(vec![t("Storgata 2"), t("Oslo")])
        );
        assert!(
            c.split(&t(r#"{"street": "x", "zip": "0150"}"#), 2)
                .unwrap_err()
                .contains("`zip`")
        );
        assert!(c.split(&t("Main 1, Oslo"), 2).is_err());
        assert_eq!(c.join(&[Value::Null, Value::Null]), Value::Null);
    }
}
